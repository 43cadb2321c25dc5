//! `voxproxy serve`: the daemon.
//!
//! [`Server::start`] binds one listener per worker on the same address
//! (`SO_REUSEPORT`, so the kernel spreads connections), starts the workers
//! (see [`crate::runtime`]) and returns a [`Server`] handle. The HTTP surface
//! is in `http`, a call's life in `call`, the control plane's view of calls
//! in [`directory`]. [`Server::drain`] is the graceful stop: `/readyz` turns
//! 503, new calls are refused, running calls get `drain.timeout` to finish
//! and are then closed with their records written.
//!
//! ```no_run
//! use voxproxy::config::{Config, ServeArgs};
//! use voxproxy::server::Server;
//!
//! let args = ServeArgs { insecure_skip_signature: true, ..ServeArgs::default() };
//! let config = Config::load(&args, std::env::vars_os()).unwrap();
//! let server = Server::start(config, &args).unwrap();
//! println!("listening on {}", server.local_addr());
//! server.drain(); // returns when every call has ended and its record is written
//! ```

use std::cell::{Cell, OnceCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt as _;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Notify, watch};
use voxproxy_adapters::rest::{AuthToken, RestConfig, TwilioClient};
use voxproxy_adapters::route::AnswerContext;
use voxproxy_adapters::signature::SignatureValidator;
use voxproxy_adapters::stream_token::StreamTokenKey;

use crate::cdr::CdrService;
use crate::config::{Config, IoMode, ServeArgs};
use crate::metrics::{Metrics, WorkerMetrics};
use crate::runtime::{Clock, IoBackend, Worker, usable_cpus};
use arc_swap::ArcSwap;
use live::Live;

mod admin;
mod bot_call;
mod call;
mod calls;
pub mod directory;
mod drain;
pub mod fds;
mod http;
mod live;
mod media_ws;
mod peers;
pub mod ports;
mod sip_client;
mod sip_listener;
mod sse;
mod taps;
mod traces;

use directory::{Directory, EventHub};
use fds::FdBudget;
use ports::PortPool;

/// How long request headers may take to arrive.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections per worker beyond the calls it may carry (webhooks, scrapes).
const EXTRA_CONNECTIONS: usize = 1024;
/// Clients the webhook rate limiter tracks at once.
const RATE_LIMIT_CLIENTS: usize = 65_536;
/// Callers with a bucket of their own under
/// `limits.calls_per_caller_per_minute` (a few MB at most); beyond that,
/// new callers share one bucket until a sweep frees room.
const RATE_LIMIT_CALLERS: usize = 65_536;
/// After the drain timeout, how long closed calls get to write their records.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Why the server did not start, or why a SIGHUP reload was refused. Each
/// message names what to fix.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServeError {
    /// Neither `TWILIO_AUTH_TOKEN` nor `--insecure-skip-signature`.
    NoAuthToken,
    /// `server.io = "uring"` but the kernel refuses io_uring.
    UringUnavailable(std::io::Error),
    /// The admin listener (`server.admin_listen`) could not be bound.
    AdminListen {
        /// `server.admin_listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listener could not be bound.
    Listen {
        /// `server.listen`.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration could not be loaded again on SIGHUP.
    Reload(crate::config::ConfigError),
    /// `server.tls` could not be loaded.
    Tls(crate::tls::TlsError),
    /// `cdr.path` could not be opened.
    Cdr(crate::cdr::CdrError),
    /// `server.public_url` is not a URL signatures can be checked against.
    PublicUrl(String),
    /// A worker thread could not be started.
    Worker(std::io::Error),
    /// `recording.dir` could not be created, or the recording writer not started.
    Recording {
        /// `recording.dir`.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The open-file limit cannot hold `limits.max_calls` even raised to
    /// the hard limit; the text says how many fit and what to raise.
    TooFewDescriptors(String),
    /// The configuration asks for what this version cannot run yet
    /// ([`Config::not_runnable_yet`]); the text names the key.
    NotRunnableYet(String),
    /// `sip.listen` is set without what placing Twilio calls needs (the
    /// text names it), or its address could not be bound.
    SipListen(String),
    /// `recording.twilio` is on (globally or for a route) without the
    /// account's credentials the REST API needs (the text names them).
    TwilioRecording(String),
    /// `capture.dir` could not be created, or the capture writer not started.
    Capture {
        /// `capture.dir`.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `otel.endpoint` is set but the trace exporter could not start.
    Otel(crate::otel::OtelError),
    /// `store.url` is set but the store cannot start.
    Store(crate::store::StoreError),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeError::NoAuthToken => f.write_str(
                "TWILIO_AUTH_TOKEN is not set, so Twilio's signatures cannot be checked; set it, or pass \
                 --insecure-skip-signature for a local experiment",
            ),
            ServeError::UringUnavailable(e) => write!(
                f,
                "server.io = \"uring\" but this kernel refuses io_uring ({e}); use io = \"auto\" or \"epoll\""
            ),
            ServeError::Listen { addr, source } => {
                write!(f, "cannot listen on {addr} (server.listen): {source}")
            }
            ServeError::AdminListen { addr, source } => {
                write!(f, "cannot listen on {addr} (server.admin_listen): {source}")
            }
            ServeError::Tls(e) => write!(f, "server.tls: {e}"),
            ServeError::Reload(e) => write!(f, "{e}"),
            ServeError::Cdr(e) => write!(f, "cdr.path: {e}"),
            ServeError::Store(e) => write!(f, "store.url: {e}"),
            ServeError::PublicUrl(e) => write!(f, "server.public_url: {e}"),
            ServeError::Worker(e) => write!(f, "cannot start a worker thread: {e}"),
            ServeError::Recording { dir, source } => {
                write!(f, "recording.dir = {}: cannot create it or start its writer: {source}", dir.display())
            }
            ServeError::NotRunnableYet(problem) | ServeError::TooFewDescriptors(problem) => {
                f.write_str(problem)
            }
            ServeError::SipListen(problem) => write!(f, "sip.listen: {problem}"),
            ServeError::TwilioRecording(problem) => write!(f, "recording.twilio: {problem}"),
            ServeError::Capture { dir, source } => {
                write!(f, "capture.dir = {}: cannot create it or start its writer: {source}", dir.display())
            }
            ServeError::Otel(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// What every worker shares.
pub(crate) struct Shared {
    /// What a SIGHUP can replace; read with [`Shared::live`].
    live: ArcSwap<Live>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) directory: Arc<Directory>,
    pub(crate) events: Arc<EventHub>,
    pub(crate) ports: Arc<PortPool>,
    pub(crate) cdr: CdrService,
    /// Calls in progress, for their one record each.
    pub(crate) calls: Arc<calls::Calls>,
    /// The call recordings' writer thread.
    pub(crate) recorder: crate::recording::RecordingWriter,
    /// The call captures' writer thread.
    pub(crate) capturer: crate::capture::CaptureWriter,
    /// `None` with `--insecure-skip-signature`.
    pub(crate) validator: Option<SignatureValidator>,
    /// Issues and checks stream tokens whenever signatures are checked.
    pub(crate) stream_token: Option<StreamTokenKey>,
    pub(crate) draining: AtomicBool,
    pub(crate) active_calls: AtomicUsize,
    /// Open HTTP connections on all workers (each one a descriptor), not
    /// counting those upgraded to a call's WebSocket.
    pub(crate) connections: AtomicUsize,
    /// How many descriptors are left for calls.
    pub(crate) fds: FdBudget,
    /// Set when drain.timeout runs out: every call closes now.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Set when the workers should stop accepting and exit.
    stop: watch::Sender<bool>,
    /// What the route decisions need (public URL, stream name prefix).
    pub(crate) answer: AnswerContext,
    pub(crate) clock: Clock,
    /// Worker heartbeats and the cached probes of `/v1/health`.
    pub(crate) health: admin::HealthState,
    /// The SIP calls a PBX placed through `sip.listen`; `None` without it.
    pub(crate) sip: Option<Arc<sip_listener::SipCalls>>,
    /// The trace exporter; `None` without `otel.endpoint` (no span is made).
    pub(crate) otel: Option<crate::otel::Telemetry>,
    /// The PostgreSQL store shared with other instances; `None` without `store.url`.
    pub(crate) store: Option<crate::store::Store>,
}

impl Shared {
    /// The configuration (and TLS, rate limiters) new calls and webhooks
    /// use now: one lock-free load. Hold it for one request; a call keeps
    /// [`Shared::live_arc`] for its whole life instead.
    pub(crate) fn live(&self) -> arc_swap::Guard<Arc<Live>> {
        self.live.load()
    }

    /// Like [`Shared::live`], as an `Arc` to keep across awaits.
    pub(crate) fn live_arc(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Whether the descriptors left hold one more call (see [`fds`]).
    pub(crate) fn fds_for_one_more_call(&self) -> bool {
        // An upgraded connection leaves hyper (and `connections`) for its
        // call task, so each call is counted by its RTP port: the port's
        // socket and the call's WebSocket.
        let calls = self.ports.leased() as u64;
        self.fds.room_for_call(self.connections.load(Ordering::Relaxed) as u64 + calls * fds::FDS_PER_CALL)
    }
}

/// One worker's state, owned by its thread.
pub(crate) struct WorkerContext {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
    pub(crate) backend: IoBackend,
    /// Calls running on this worker.
    pub(crate) local_calls: Cell<usize>,
    pub(crate) calls_changed: Notify,
    /// The drain timeout's word to this worker's calls (`drain`).
    pub(crate) drain: drain::DrainSignal,
    connections: Cell<usize>,
    /// This worker's connections by client address.
    peers: peers::PeerConnections,
    rest: OnceCell<Result<Rc<TwilioClient>, String>>,
}

impl fmt::Debug for WorkerContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerContext")
            .field("index", &self.index)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// A worker's metrics that can move into a `'static` body stream.
#[derive(Clone)]
pub(crate) struct MetricsHandle {
    metrics: Arc<Metrics>,
    index: usize,
}

impl MetricsHandle {
    pub(crate) fn get(&self) -> &WorkerMetrics {
        self.metrics.worker(self.index)
    }
}

impl WorkerContext {
    pub(crate) fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.index)
    }

    pub(crate) fn metrics_handle(&self) -> MetricsHandle {
        MetricsHandle { metrics: Arc::clone(&self.shared.metrics), index: self.index }
    }

    /// The REST client of this worker, made on first use.
    pub(crate) fn rest_client(&self) -> Result<Rc<TwilioClient>, String> {
        self.rest
            .get_or_init(|| {
                let live = self.shared.live();
                let config = &live.config;
                let sid = config.twilio.account_sid.clone().ok_or_else(|| {
                    "placing calls needs TWILIO_ACCOUNT_SID (or twilio.account_sid)".to_owned()
                })?;
                let token = config
                    .secrets
                    .twilio_auth_token
                    .as_ref()
                    .ok_or_else(|| "placing calls needs TWILIO_AUTH_TOKEN".to_owned())?;
                let mut rest = RestConfig::new(sid, AuthToken::new(token.expose()));
                rest.base_url = config.twilio.api_base.to_string();
                TwilioClient::new(rest).map(Rc::new).map_err(|e| e.to_string())
            })
            .clone()
    }
}

/// A running `voxproxy serve`.
pub struct Server {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    backend: IoBackend,
    workers: Vec<Worker<()>>,
    /// The flags it started with: a reload applies them again.
    args: ServeArgs,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Picks the I/O backend for `server.io`, logging why `auto` fell back.
pub fn choose_backend(mode: IoMode) -> Result<IoBackend, ServeError> {
    match mode {
        IoMode::Epoll => Ok(IoBackend::Epoll),
        IoMode::Uring => {
            IoBackend::probe_uring().map(|()| IoBackend::Uring).map_err(ServeError::UringUnavailable)
        }
        IoMode::Auto => match IoBackend::probe_uring() {
            Ok(()) => Ok(IoBackend::Uring),
            Err(e) => {
                tracing::warn!(error = %e, "io_uring is not available here, using epoll");
                Ok(IoBackend::Epoll)
            }
        },
    }
}

fn listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The `{prefix}` of stream names (`{prefix}_{CallSid}_{n}`): names are
/// per call, so one fixed prefix is enough to tell voxproxy's streams from
/// others on the account (a candidate for a config key).
pub const STREAM_NAME_PREFIX: &str = "voxproxy";

/// Longest a drain waits for the recording writer to write what the calls
/// queued last (a disk that slow loses those batches, not the shutdown).
const RECORDING_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Creates `recording.dir` when any call may be recorded (so a directory
/// that cannot be made stops the start, not every call) and starts the
/// writer thread.
fn start_recorder(
    config: &Config,
    metrics: &Metrics,
) -> Result<crate::recording::RecordingWriter, ServeError> {
    let dir = &config.recording.dir;
    let failed = |source| ServeError::Recording { dir: dir.clone(), source };
    if config.records_anything() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let stats = Arc::new(crate::recording::RecordingStats::default());
    metrics.breakdown().set_recording(Arc::clone(&stats));
    crate::recording::RecordingWriter::spawn(stats).map_err(failed)
}

/// Creates `capture.dir` when any call may be captured (so a directory
/// that cannot be made stops the start, not every call) and starts the
/// writer thread.
fn start_capturer(config: &Config, metrics: &Metrics) -> Result<crate::capture::CaptureWriter, ServeError> {
    let dir = &config.capture.dir;
    let failed = |source| ServeError::Capture { dir: dir.clone(), source };
    if config.captures_anything() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let stats = Arc::new(crate::capture::CaptureStats::default());
    metrics.capture().set(Arc::clone(&stats));
    crate::capture::CaptureWriter::spawn(stats).map_err(failed)
}

impl Server {
    /// Validates what only the server can (token, io_uring, TLS files, the
    /// call-record file), binds the listeners and starts the workers.
    pub fn start(config: Config, args: &ServeArgs) -> Result<Server, ServeError> {
        if let Some(problem) = config.not_runnable_yet() {
            return Err(ServeError::NotRunnableYet(problem));
        }
        let skip_signatures = args.insecure_skip_signature || !config.twilio.validate_signatures;
        let validator = match (&config.secrets.twilio_auth_token, skip_signatures) {
            (_, true) => {
                tracing::warn!(
                    "Twilio signatures are NOT checked: anyone who can reach this proxy can start calls"
                );
                None
            }
            (Some(token), false) => Some(
                SignatureValidator::new(token.expose(), config.server.public_url.as_str())
                    .map_err(|e| ServeError::PublicUrl(e.to_string()))?,
            ),
            (None, false) => return Err(ServeError::NoAuthToken),
        };
        let backend = choose_backend(config.server.io)?;
        let answer = AnswerContext::new(config.server.public_url.clone(), STREAM_NAME_PREFIX)
            .map_err(|e| ServeError::PublicUrl(e.to_string()))?;
        let workers = usize::from(config.server.workers.get());
        // Before anything is opened: a refused start leaves no file behind.
        check_descriptors(config.limits.max_calls, workers)?;
        let ports = PortPool::new(config.rtp.bind, config.rtp.ports);
        let live = Live::new(config, None)?;
        let config = &live.config;
        let metrics = Arc::new(Metrics::new(workers, backend.name()));
        check_sip_listen(config)?;
        check_twilio_recording(config)?;
        // Before serving: this writes the records of calls a crash cut.
        let cdr = CdrService::spawn(&config.cdr.path, Arc::clone(&metrics)).map_err(ServeError::Cdr)?;
        let calls = calls::Calls::spawn(cdr.clone(), Arc::clone(&metrics)).map_err(|source| {
            ServeError::Cdr(crate::cdr::CdrError::Open {
                path: std::path::PathBuf::from("<calls in progress thread>"),
                source,
            })
        })?;
        let recorder = start_recorder(config, &metrics)?;
        let capturer = start_capturer(config, &metrics)?;
        let otel =
            crate::otel::Telemetry::start(&config.otel, Arc::clone(&metrics)).map_err(ServeError::Otel)?;
        let first = listener(config.server.listen)
            .map_err(|source| ServeError::Listen { addr: config.server.listen, source })?;
        let local_addr =
            first.local_addr().map_err(|source| ServeError::Listen { addr: config.server.listen, source })?;
        let mut listeners = vec![first];
        for _ in 1..workers {
            // Same concrete port, so `server.listen` with port 0 works too.
            listeners.push(
                listener(local_addr).map_err(|source| ServeError::Listen { addr: local_addr, source })?,
            );
        }
        let sip_socket = sip_socket(config)?;
        let (sip, sip_queue) = match &sip_socket {
            Some(_) => {
                let (calls, queue) = sip_listener::SipCalls::new();
                (Some(calls), Some(queue))
            }
            None => (None, None),
        };
        let mut sip_parts = sip_socket.zip(sip_queue);
        let (admin_addr, mut admin_listeners) = admin_listeners(config.server.admin_listen, workers)?;
        let stream_token = match (&validator, &config.secrets.twilio_auth_token) {
            (Some(_), Some(token)) => StreamTokenKey::new(token.expose()),
            _ => None,
        };
        let directory = Directory::new();
        let events = EventHub::new();
        let store = start_store(config, admin_addr.unwrap_or(local_addr), &directory, &events, &metrics)?;
        let shared = Arc::new(Shared {
            ports,
            live: ArcSwap::from_pointee(live),
            metrics,
            directory,
            events,
            cdr,
            calls,
            recorder,
            capturer,
            validator,
            stream_token,
            draining: AtomicBool::new(false),
            active_calls: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            fds: FdBudget::new(crate::metrics::own_fds().1),
            shutdown: watch::channel(false).0,
            stop: watch::channel(false).0,
            answer,
            clock: Clock::new(),
            health: admin::HealthState::new(workers),
            sip,
            otel,
            store,
        });
        shared.metrics.set_max_calls(shared.live().config.limits.max_calls);
        shared.metrics.watch_rtp_ports(Arc::clone(&shared.ports));
        let cpus = usable_cpus();
        let mut handles = Vec::with_capacity(workers);
        for (index, listener) in listeners.into_iter().enumerate() {
            let cpu = if cpus.is_empty() { None } else { Some(cpus[index % cpus.len()]) };
            let shared = Arc::clone(&shared);
            // The SIP listener runs on the first worker.
            let sip = sip_parts.take();
            let listeners = Listeners { public: listener, admin: admin_listeners.pop() };
            let worker = Worker::spawn(index, backend, cpu, move || {
                worker_main(shared, index, backend, listeners, sip)
            })
            .map_err(ServeError::Worker)?;
            handles.push(worker);
        }
        tracing::info!(
            %local_addr,
            admin = admin_addr.map(|a| a.to_string()),
            io = backend.name(),
            workers,
            public_url = %shared.live().config.server.public_url,
            backend = %shared.live().config.rtp.backend,
            rtp_ports = %shared.live().config.rtp.ports,
            tls = shared.live().tls.is_some(),
            "voxproxy serving"
        );
        Ok(Server { shared, local_addr, admin_addr, backend, workers: handles, args: args.clone() })
    }

    /// The bound address of the admin listener (`server.admin_listen`), if any.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The bound address of the listener.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The I/O backend the workers run.
    #[must_use]
    pub fn io_backend(&self) -> IoBackend {
        self.backend
    }

    /// The server's metrics (for in-process use such as `voxproxy demo`).
    #[must_use]
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// Calls running now.
    #[must_use]
    pub fn active_calls(&self) -> usize {
        self.shared.active_calls.load(Ordering::Acquire)
    }

    /// What SIGHUP does: everything the daemon takes up again without a
    /// restart. First the call-record file, reopened at `cdr.path` so
    /// records after the signal go to a fresh file there (log rotation:
    /// move the file, then send SIGHUP); then the configuration, see
    /// [`Server::reload_config`]. Calls go on untouched. Counts
    /// `voxproxy_sighup_total`.
    pub async fn reload(&self) {
        self.shared.metrics.sighup();
        let path = self.shared.live().config.cdr.path.display().to_string();
        match self.shared.cdr.reopen().await {
            Ok(()) => tracing::info!(cdr = %path, "SIGHUP: reopened the call-record file"),
            Err(e) => tracing::error!(
                cdr = %path,
                error = %e,
                "SIGHUP: could not reopen the call-record file; records keep going to the old one"
            ),
        }
        self.reload_config(std::env::vars_os());
    }

    /// Loads the configuration again the way `serve` did at start (file,
    /// then `env`, then the original flags) and makes it the one new calls
    /// and webhooks use; running calls keep theirs. Keys in
    /// [`crate::config::RESTART_ONLY_KEYS`] keep their running value, named
    /// in one warning when the file changed them. A file that does not
    /// load, or whose TLS files do not, changes nothing: the error is
    /// logged and counted (`voxproxy_config_reloads_total{result="error"}`).
    pub fn reload_config<I, K, V>(&self, env: I)
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        match self.next_live(env) {
            Ok(next) => {
                for warning in next.config.warnings() {
                    tracing::warn!("{warning}");
                }
                self.shared.metrics.set_max_calls(next.config.limits.max_calls);
                self.shared.live.store(Arc::new(next));
                self.shared.metrics.config_reload(true);
                tracing::info!("SIGHUP: configuration reloaded; new calls use it, running calls keep theirs");
            }
            Err(e) => {
                self.shared.metrics.config_reload(false);
                tracing::error!(error = %e, "SIGHUP: configuration not reloaded, the old one stays");
            }
        }
    }

    fn next_live<I, K, V>(&self, env: I) -> Result<Live, ServeError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<std::ffi::OsString>,
        V: Into<std::ffi::OsString>,
    {
        let mut config = Config::load(&self.args, env).map_err(ServeError::Reload)?;
        if let Some(problem) = config.not_runnable_yet() {
            return Err(ServeError::NotRunnableYet(problem));
        }
        let running = self.shared.live_arc();
        let kept = config.keep_restart_only(&running.config);
        if !kept.is_empty() {
            tracing::warn!(
                keys = %kept.join(", "),
                "SIGHUP: these keys changed but take effect only at a restart; they keep their running value"
            );
        }
        Live::new(config, Some(&running))
    }

    /// Graceful stop: refuse new calls (`/readyz` 503), let running calls go
    /// on for up to `drain.timeout`, then close them (records written) and
    /// stop the workers. Returns when every worker has exited.
    pub fn drain(self) {
        let shared = &self.shared;
        shared.draining.store(true, Ordering::Release);
        shared.metrics.set_draining(true);
        let timeout = shared.live().config.drain.timeout;
        tracing::info!(
            active_calls = self.active_calls(),
            timeout_ms = timeout.as_millis() as u64,
            "draining"
        );
        let deadline = std::time::Instant::now() + timeout;
        while self.active_calls() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.active_calls() > 0 {
            tracing::warn!(
                active_calls = self.active_calls(),
                "drain.timeout reached: closing the remaining calls"
            );
            shared.shutdown.send_replace(true);
            let grace = std::time::Instant::now() + CLOSE_GRACE;
            while self.active_calls() > 0 && std::time::Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        shared.stop.send_replace(true);
        for worker in self.workers {
            if worker.join().is_err() {
                tracing::error!("a worker thread panicked while stopping");
            }
        }
        // Every call has queued the end of its recording: written before
        // the process exits (the writer otherwise wakes only every 250 ms).
        if !shared.recorder.shutdown(RECORDING_FLUSH_TIMEOUT) {
            tracing::warn!(
                "the recording writer did not finish within 5 s; the last second of some recordings may be missing"
            );
        }
        // Calls still waiting for their final status get their record now.
        shared.calls.stop();
        if let Some(otel) = &shared.otel {
            otel.shutdown();
        }
        if let Some(store) = &shared.store {
            store.stop_blocking();
        }
        tracing::info!("drained; exiting");
    }
}

/// Starts the store when `store.url` is set. `admin` is the bound address
/// of the listener serving `/v1` (the default `store.admin_url`).
fn start_store(
    config: &Config,
    admin: SocketAddr,
    directory: &Arc<Directory>,
    events: &Arc<EventHub>,
    metrics: &Arc<Metrics>,
) -> Result<Option<crate::store::Store>, ServeError> {
    let Some(url) = &config.store.url else { return Ok(None) };
    let admin_url = config.store.admin_url.clone().unwrap_or_else(|| {
        if admin.ip().is_unspecified() {
            tracing::warn!(
                %admin,
                "store.admin_url is not set and /v1 listens on every address: other instances are told \
                 to use loopback, which works only on this host; set store.admin_url"
            );
            format!("http://{}", SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), admin.port()))
        } else {
            format!("http://{admin}")
        }
    });
    if config.server.admin_listen.is_none() && config.server.tls.is_some() && config.store.admin_url.is_none()
    {
        tracing::warn!(
            "store.admin_url defaults to http:// but server.listen serves TLS; set server.admin_listen"
        );
    }
    let options = crate::store::StoreOptions {
        url: url.clone(),
        instance_id: config.store.instance_id.clone().unwrap_or_else(crate::store::default_instance_id),
        admin_url,
        query_timeout: config.store.query_timeout,
        spool: config.cdr.path.clone(),
    };
    tracing::info!(store = %url, instance = %options.instance_id, "store: starting");
    crate::store::Store::spawn(options, Arc::clone(directory), Arc::clone(events), Arc::clone(metrics))
        .map(Some)
        .map_err(ServeError::Store)
}

/// Refuses a `sip.listen` that could not place calls (no Twilio
/// credentials), before anything is opened or written.
fn check_sip_listen(config: &Config) -> Result<(), ServeError> {
    if config.sip.listen.is_some()
        && (config.twilio.account_sid.is_none() || config.secrets.twilio_auth_token.is_none())
    {
        return Err(ServeError::SipListen(
            "placing Twilio calls for a PBX needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; set both, \
             or unset sip.listen"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Refuses `recording.twilio` (global or a route's) that could not start a
/// recording: every call's request would fail.
fn check_twilio_recording(config: &Config) -> Result<(), ServeError> {
    let wanted = config.recording.twilio || config.routes.iter().any(|r| r.twilio_recording == Some(true));
    if wanted && (config.twilio.account_sid.is_none() || config.secrets.twilio_auth_token.is_none()) {
        return Err(ServeError::TwilioRecording(
            "starting Twilio recordings needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; set both, or set \
             recording.twilio = false"
                .to_owned(),
        ));
    }
    Ok(())
}

/// The bound `sip.listen` socket, when set.
fn sip_socket(config: &Config) -> Result<Option<sip_listener::Sockets>, ServeError> {
    let Some(addr) = config.sip.listen else { return Ok(None) };
    if config.sip.allow.is_empty() {
        tracing::warn!("sip.listen is set but sip.allow is empty: every INVITE is answered 403");
    }
    if config.rtp.bind.is_unspecified() {
        tracing::warn!(
            rtp_bind = %config.rtp.bind,
            "sip.listen answers PBXs with c= rtp.bind, and an unspecified address is not one a PBX can \
             send RTP to; set rtp.bind to the address the PBX reaches voxproxy on"
        );
    }
    sip_listener::bind(addr)
        .map(Some)
        .map_err(|e| ServeError::SipListen(format!("cannot bind {addr} (UDP and TCP): {e}")))
}

/// Raises the open-file soft limit to the hard one and refuses to start
/// when `max_calls` calls still cannot fit, counting what is open now (the
/// listeners, the call-record files) and what the workers will open.
fn check_descriptors(max_calls: u32, workers: usize) -> Result<(), ServeError> {
    let limit = fds::raise_nofile_limit();
    if limit.now != limit.before {
        tracing::info!(
            before = limit.before,
            now = limit.now,
            "raised the open-file soft limit to the hard limit"
        );
    }
    let Some(open) = crate::metrics::own_fds().0 else { return Ok(()) };
    let fit = fds::calls_that_fit(limit.now, open, workers as u64);
    match fds::too_few_descriptors(max_calls, limit.now, fit) {
        Some(problem) => Err(ServeError::TooFewDescriptors(problem)),
        None => Ok(()),
    }
}

/// A descriptor held back so that, when `accept` fails for want of
/// descriptors, one can be freed to take the waiting connection off the
/// queue and close it: the client learns at once instead of waiting in the
/// backlog, and the accept loop does not spin on the same error.
fn spare_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// `server.admin_listen` bound once per worker on one port, like
/// `server.listen`, so a busy or stuck worker does not take the admin
/// surface down with it.
fn admin_listeners(
    addr: Option<SocketAddr>,
    workers: usize,
) -> Result<(Option<SocketAddr>, Vec<std::net::TcpListener>), ServeError> {
    let Some(addr) = addr else { return Ok((None, Vec::new())) };
    let first = listener(addr).map_err(|source| ServeError::AdminListen { addr, source })?;
    let bound = first.local_addr().map_err(|source| ServeError::AdminListen { addr, source })?;
    let mut all = vec![first];
    for _ in 1..workers {
        all.push(listener(bound).map_err(|source| ServeError::AdminListen { addr: bound, source })?);
    }
    Ok((Some(bound), all))
}

/// A worker's listening sockets.
struct Listeners {
    /// `server.listen`.
    public: std::net::TcpListener,
    /// `server.admin_listen`, when set.
    admin: Option<std::net::TcpListener>,
}

/// Which routes a connection may reach, by the listener that accepted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Surface {
    /// `server.listen` without an admin listener: every route.
    All,
    /// `server.listen` beside an admin listener: Twilio's routes, `/healthz`, `/readyz`.
    Public,
    /// `server.admin_listen`: `/metrics`, `/v1/*`, `/healthz`, `/readyz`.
    Admin,
}

/// The next connection on either listener, with the surface it reaches.
async fn accept(
    public: &tokio::net::TcpListener,
    admin: Option<&tokio::net::TcpListener>,
) -> (std::io::Result<(tokio::net::TcpStream, SocketAddr)>, Surface) {
    match admin {
        None => (public.accept().await, Surface::All),
        Some(admin) => tokio::select! {
            accepted = public.accept() => (accepted, Surface::Public),
            accepted = admin.accept() => (accepted, Surface::Admin),
        },
    }
}

async fn worker_main(
    shared: Arc<Shared>,
    index: usize,
    backend: IoBackend,
    listeners: Listeners,
    sip: Option<(sip_listener::Sockets, tokio::sync::mpsc::Receiver<sip_listener::ToListener>)>,
) {
    let listener = tokio::net::TcpListener::from_std(listeners.public);
    let admin = listeners.admin.map(tokio::net::TcpListener::from_std).transpose();
    let (listener, admin) = match (listener, admin) {
        (Ok(l), Ok(a)) => (l, a),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(worker = index, error = %e, "worker cannot use its listener");
            return;
        }
    };
    // Fixed for the worker's life: a reload of limits.max_calls changes
    // admission, not this cap on open connections.
    let live = shared.live_arc();
    let max_connections = live.config.limits.max_calls as usize
        / usize::from(live.config.server.workers.get()).max(1)
        + EXTRA_CONNECTIONS;
    let ctx = Rc::new(WorkerContext {
        shared: Arc::clone(&shared),
        index,
        backend,
        local_calls: Cell::new(0),
        calls_changed: Notify::new(),
        drain: drain::DrainSignal::default(),
        connections: Cell::new(0),
        peers: peers::PeerConnections::new(max_connections),
        rest: OnceCell::new(),
    });
    tracing::debug!(
        worker = index,
        max_connections,
        per_address = ctx.peers.per_address(),
        "connection bounds"
    );
    // Ends with the worker's runtime; a blocked loop stops it beating.
    tokio::task::spawn_local(admin::heartbeat(Arc::clone(&shared), index));
    {
        let ctx = Rc::clone(&ctx);
        tokio::task::spawn_local(async move { ctx.drain.watch(ctx.shared.shutdown.subscribe()).await });
    }
    if let Some((socket, queue)) = sip {
        tokio::task::spawn_local(sip_listener::run(Rc::clone(&ctx), socket, queue));
    }
    let mut stop = shared.stop.subscribe();
    let mut spare = spare_descriptor();
    loop {
        tokio::select! {
            // `wait_for` looks at the current value first: a worker whose
            // thread only got here after the drain began (a SIGTERM right
            // after start) stops too, where `changed()` waited forever.
            _ = stop.wait_for(|stopped| *stopped) => break,
            (accepted, surface) = accept(&listener, admin.as_ref()) => match accepted {
                Ok((tcp, peer)) => {
                    if ctx.connections.get() >= max_connections {
                        // Over the bound: close at once rather than queue.
                        ctx.metrics().call_refused(crate::metrics::RefuseReason::ConnectionLimit);
                        drop(tcp);
                        continue;
                    }
                    if !ctx.peers.try_add(peer.ip()) {
                        // One client holds its share: the rest stays for others.
                        ctx.metrics().call_refused(crate::metrics::RefuseReason::AddressConnectionLimit);
                        drop(tcp);
                        continue;
                    }
                    let _ = tcp.set_nodelay(true);
                    ctx.connections.set(ctx.connections.get() + 1);
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    let place = ConnectionPlace { ctx: Rc::clone(&ctx), ip: peer.ip() };
                    let ctx = Rc::clone(&ctx);
                    tokio::task::spawn_local(async move {
                        serve_connection(&ctx, tcp, peer, place, surface).await;
                    });
                }
                Err(e) if fds::is_exhaustion(&e) => {
                    shared.fds.exhausted(&shared.metrics, "accept", &e);
                    ctx.metrics().call_refused(crate::metrics::RefuseReason::FdLimit);
                    if spare.take().is_some() {
                        // The freed descriptor takes the connection that is waiting.
                        if let Some(Ok((tcp, _))) = listener.accept().now_or_never() {
                            drop(tcp);
                        }
                        spare = spare_descriptor();
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        spare = spare_descriptor();
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(worker = index, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    drop(admin);
    // Calls closed by drain are writing their records: wait for them.
    let grace = tokio::time::Instant::now() + CLOSE_GRACE;
    while ctx.local_calls.get() > 0 {
        let notified = ctx.calls_changed.notified();
        if tokio::time::timeout_at(grace, notified).await.is_err() {
            tracing::error!(worker = index, calls = ctx.local_calls.get(), "calls still running at exit");
            break;
        }
    }
}

/// A connection's place in its worker's bounds (per worker and per client
/// address), given back when dropped: by the connection task, or by the
/// call task once a media WebSocket has taken the connection over.
#[derive(Debug)]
pub(crate) struct ConnectionPlace {
    ctx: Rc<WorkerContext>,
    ip: std::net::IpAddr,
}

impl Drop for ConnectionPlace {
    fn drop(&mut self) {
        self.ctx.connections.set(self.ctx.connections.get().saturating_sub(1));
        self.ctx.shared.connections.fetch_sub(1, Ordering::Relaxed);
        self.ctx.peers.remove(self.ip);
    }
}

/// What a connection's task shares with the requests it serves.
pub(crate) struct ConnState {
    /// The connection's place, until a media WebSocket takes it over.
    place: Cell<Option<ConnectionPlace>>,
    /// Set when the connection carries `GET /v1/events`.
    sse: Arc<sse::SseWatch>,
    sse_opened: Notify,
    /// The routes this connection may reach.
    pub(crate) surface: Surface,
}

impl fmt::Debug for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnState").field("sse", &self.sse).finish_non_exhaustive()
    }
}

impl ConnState {
    /// Hands the connection's place to whoever outlives the HTTP task.
    pub(crate) fn take_place(&self) -> Option<ConnectionPlace> {
        self.place.take()
    }

    /// Marks the connection as an event stream and returns its watch.
    pub(crate) fn watch_sse(&self) -> Arc<sse::SseWatch> {
        self.sse_opened.notify_one();
        Arc::clone(&self.sse)
    }
}

async fn serve_connection(
    ctx: &Rc<WorkerContext>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    place: ConnectionPlace,
    surface: Surface,
) {
    let state = Rc::new(ConnState {
        place: Cell::new(Some(place)),
        sse: Arc::default(),
        sse_opened: Notify::new(),
        surface,
    });
    // The acceptor of now: a reload with a new certificate serves the next
    // connection with it, and this one keeps the one it started with. The
    // admin listener speaks plain HTTP (loopback or a private network).
    let tls = if surface == Surface::Admin { None } else { ctx.shared.live().tls.clone() };
    match &tls {
        Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => serve_http(ctx, TokioIo::new(tls), peer, state).await,
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
        None => serve_http(ctx, TokioIo::new(tcp), peer, state).await,
    }
}

async fn serve_http<I>(ctx: &Rc<WorkerContext>, io: I, peer: SocketAddr, state: Rc<ConnState>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service_ctx = Rc::clone(ctx);
    let service_state = Rc::clone(&state);
    let service =
        service_fn(move |req| http::handle(Rc::clone(&service_ctx), peer, Rc::clone(&service_state), req));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    loop {
        // Only an event stream is watched for stalls; other connections
        // wait on hyper alone.
        let watch = async {
            if state.sse.is_active() {
                tokio::time::sleep(sse::SSE_STALL_CHECK).await;
            } else {
                state.sse_opened.notified().await;
            }
        };
        tokio::select! {
            result = &mut connection => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            () = watch => {
                if state.sse.stalled(std::time::Instant::now(), sse::SSE_STALL_TIMEOUT) {
                    ctx.metrics().sse_subscriber_dropped(crate::metrics::SseDrop::Stalled);
                    tracing::info!(%peer, "event subscriber took no data for 30 s; disconnected");
                    // Dropping the connection closes the socket.
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use voxproxy_adapters::url::{Scheme, Url};

    #[test]
    fn media_url_follows_the_public_scheme() {
        // The media URL `AnswerContext` builds: `http(s)://host/path` →
        // `ws(s)://host/path/twilio/media`.
        fn media_url(public_url: &Url) -> String {
            format!("{}/twilio/media", public_url.websocket_twin())
        }
        let media = |base: &str| media_url(&Url::parse_base(base, &[Scheme::Http, Scheme::Https]).unwrap());
        assert_eq!(media("https://voice.example.com"), "wss://voice.example.com/twilio/media");
        assert_eq!(media("http://127.0.0.1:8080/vp/"), "ws://127.0.0.1:8080/vp/twilio/media");
        assert_eq!(media("HTTPS://Voice.Example.com"), "wss://voice.example.com/twilio/media");
    }
}
