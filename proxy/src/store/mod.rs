//! Several instances, one PostgreSQL database (`store.url`).
//!
//! Everything here runs on the store's own thread (`voxproxy-store`, a
//! one-thread tokio runtime), never on a worker: a database that hangs
//! delays records reaching the table and the cross-instance view, never a
//! call. Workers talk to it through a bounded channel and wait for answers
//! with a timeout.
//!
//! - **Call records** (`spool.rs`): the JSON-lines file stays where a call's
//!   record is made durable; this thread copies it into
//!   `voxproxy_call_records` in order, one row per call.
//! - **Sessions registry** (`registry.rs`): this instance's row in
//!   `voxproxy_instances` (id, admin URL, start, heartbeat) and its live
//!   sessions in `voxproxy_sessions`, synchronised every [`SYNC_EVERY`];
//!   an instance whose heartbeat is older than [`INSTANCE_TTL`] is expired
//!   by whichever instance sees it first, its sessions with it.
//! - **Events**: this instance's call events go out with `NOTIFY
//!   voxproxy_events` and the other instances' come in with `LISTEN`, so a
//!   `/v1/events` subscriber of any instance sees every call.
//! - **Forwarding**: a `/v1/sessions/{sid}` request for a session another
//!   instance carries is sent to that instance's admin URL over HTTP.
//!
//! Bounds: two connections (records; registry with `LISTEN`), each round
//! trip within `store.query_timeout`, [`REQUEST_QUEUE`] requests waiting,
//! [`MAX_FORWARDS`] forwards at once, notifications of at most
//! [`MAX_NOTIFY_BYTES`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::server::directory::{Directory, EventHub};

mod registry;
pub mod schema;
mod spool;

/// How often the registry is brought up to date (heartbeat included).
pub const SYNC_EVERY: Duration = Duration::from_millis(500);
/// An instance silent for this long is gone: its sessions are removed.
pub const INSTANCE_TTL: Duration = Duration::from_secs(10);
/// Requests from the workers waiting for the store thread.
pub const REQUEST_QUEUE: usize = 256;
/// Requests forwarded to other instances at once.
pub const MAX_FORWARDS: usize = 32;
/// The largest `NOTIFY` payload sent; PostgreSQL refuses 8000 bytes and more.
pub const MAX_NOTIFY_BYTES: usize = 7900;
/// The longest a forwarded request may take (the owner may be asking
/// Twilio to end the call).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest answer accepted from another instance.
pub const MAX_FORWARD_BODY: usize = 1 << 20;
/// How long a stopping instance keeps sending spooled records.
pub const FLUSH_ON_STOP: Duration = Duration::from_secs(3);
/// The header that marks a forwarded request, so it is never forwarded again.
pub const FORWARDED_HEADER: &str = "x-voxproxy-forwarded-by";

/// What went wrong starting the store.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// `cdr.path` is not a regular file, so it cannot be the spool.
    Spool {
        /// `cdr.path`.
        path: PathBuf,
    },
    /// The store thread could not be started.
    Thread(std::io::Error),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Spool { path } => write!(
                f,
                "store.url needs cdr.path to be a regular file, the spool records wait in while the \
                 database is away; {} is not one",
                path.display()
            ),
            StoreError::Thread(e) => write!(f, "cannot start the store thread: {e}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// What the store is started with.
#[derive(Debug)]
pub struct StoreOptions {
    /// `store.url` (may hold a password; never logged).
    pub url: crate::config::StoreUrl,
    /// This instance's id.
    pub instance_id: String,
    /// Where the other instances reach this one's `/v1` API.
    pub admin_url: String,
    /// `store.query_timeout`.
    pub query_timeout: Duration,
    /// `cdr.path`, the spool.
    pub spool: PathBuf,
}

/// A session another instance carries, as `/v1/sessions` lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RemoteSession {
    /// The instance carrying it.
    pub instance: String,
    /// `MZ…`.
    pub stream_sid: String,
    /// `CA…`.
    pub call_sid: String,
    /// `routes[N]` or `default`.
    pub route: Option<String>,
    /// The backend leg, as local sessions show it.
    pub leg: LegKindView,
    /// RFC 3339 UTC.
    pub started_at: String,
}

/// `{"kind": "rtp"}`, the shape of a local session's `leg`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LegKindView {
    /// `rtp`, `sip` or `ws`.
    pub kind: String,
}

/// A request to forward to the instance that carries a session.
#[derive(Debug)]
pub struct Forward {
    /// The session's stream SID.
    pub stream_sid: String,
    /// The HTTP method.
    pub method: http::Method,
    /// Path and query, as received.
    pub path: String,
    /// The `Authorization` header, as received (the instances share a token).
    pub authorization: Option<http::HeaderValue>,
    /// The request body (already bounded by `limits.max_body_bytes`).
    pub body: Bytes,
}

/// The outcome of a [`Forward`].
#[derive(Debug)]
pub enum Forwarded {
    /// No live instance carries the session.
    NotFound,
    /// The owner's answer.
    Answer {
        /// Its status.
        status: http::StatusCode,
        /// Its body (JSON).
        body: Bytes,
    },
    /// The store or the owner could not be reached; a sentence for the operator.
    Unavailable(String),
}

enum Request {
    Sessions(oneshot::Sender<Result<Vec<RemoteSession>, String>>),
    Forward(Forward, oneshot::Sender<Forwarded>),
}

/// The handle workers keep; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    requests: mpsc::Sender<Request>,
    instance_id: Arc<str>,
    query_timeout: Duration,
    stop: Arc<watch::Sender<bool>>,
    stopped: Arc<std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Request::Sessions(_) => "Sessions",
            Request::Forward(..) => "Forward",
        })
    }
}

impl Store {
    /// Starts the store thread. It connects (and keeps reconnecting) on its
    /// own: a database that is down at start delays the registry and the
    /// table, not serving.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when `cdr.path` cannot be the spool or the thread
    /// cannot start.
    pub fn spawn(
        options: StoreOptions,
        directory: Arc<Directory>,
        events: Arc<EventHub>,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        if !std::fs::metadata(&options.spool).is_ok_and(|m| m.is_file()) {
            return Err(StoreError::Spool { path: options.spool });
        }
        metrics.store().enable();
        let (requests, receiver) = mpsc::channel(REQUEST_QUEUE);
        let (stop, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let instance_id: Arc<str> = options.instance_id.clone().into();
        let query_timeout = options.query_timeout;
        // Subscribed before any call starts, so no event is missed.
        let local_events = events.subscribe();
        std::thread::Builder::new()
            .name("voxproxy-store".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "store: cannot build its runtime; no store");
                        return;
                    }
                };
                let options = Arc::new(options);
                runtime.block_on(async move {
                    let records = tokio::spawn(registry::records(
                        Arc::clone(&options),
                        Arc::clone(&metrics),
                        stop_rx.clone(),
                    ));
                    let ctx = registry::Registry::new(options, directory, events, metrics);
                    ctx.run(receiver, local_events, stop_rx).await;
                    let _ = records.await;
                });
                let _ = stopped_tx.send(());
            })
            .map_err(StoreError::Thread)?;
        Ok(Store {
            requests,
            instance_id,
            query_timeout,
            stop: Arc::new(stop),
            stopped: Arc::new(std::sync::Mutex::new(Some(stopped_rx))),
        })
    }

    /// This instance's id.
    #[must_use]
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The sessions of every other live instance.
    ///
    /// # Errors
    ///
    /// A sentence when the store is unreachable or slow.
    pub async fn remote_sessions(&self) -> Result<Vec<RemoteSession>, String> {
        let (reply, answer) = oneshot::channel();
        self.ask(Request::Sessions(reply))?;
        match tokio::time::timeout(self.query_timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            _ => Err(format!("the store did not answer within {:?}", self.query_timeout * 2)),
        }
    }

    /// Sends `request` to the instance carrying its session.
    pub async fn forward(&self, request: Forward) -> Forwarded {
        let (reply, answer) = oneshot::channel();
        if let Err(e) = self.ask(Request::Forward(request, reply)) {
            return Forwarded::Unavailable(e);
        }
        match tokio::time::timeout(self.query_timeout + FORWARD_TIMEOUT, answer).await {
            Ok(Ok(forwarded)) => forwarded,
            _ => Forwarded::Unavailable("the instance carrying the session did not answer in time".into()),
        }
    }

    fn ask(&self, request: Request) -> Result<(), String> {
        self.requests.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                format!("{REQUEST_QUEUE} store requests are already waiting; try again")
            }
            mpsc::error::TrySendError::Closed(_) => "the store thread has stopped".to_owned(),
        })
    }

    /// Stops the store: spooled records keep going to the database for up
    /// to [`FLUSH_ON_STOP`] (the rest go at the next start), then this
    /// instance and its sessions leave the registry. Blocks until done, or
    /// at most `FLUSH_ON_STOP` plus two query timeouts.
    pub fn stop_blocking(&self) {
        self.stop.send_replace(true);
        let waited = self.stopped.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(stopped) = waited {
            let bound = FLUSH_ON_STOP + self.query_timeout * 2;
            if stopped.recv_timeout(bound).is_err() {
                tracing::warn!("store: did not stop within {bound:?}; leaving it");
            }
        }
    }
}

/// The default `store.instance_id`: the host name (its plain characters)
/// and the process id.
#[must_use]
pub fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(48)
        .collect();
    let host = if host.is_empty() { "voxproxy".to_owned() } else { host };
    format!("{host}-{}", std::process::id())
}
