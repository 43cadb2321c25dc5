//! The store thread's two tasks: call records from the spool, and the
//! registry connection (heartbeat, sessions, events, lookups). See the
//! [module documentation](super).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::spool::{self, Cursor, Line};
use super::{
    FLUSH_ON_STOP, FORWARD_TIMEOUT, FORWARDED_HEADER, Forward, Forwarded, INSTANCE_TTL, LegKindView,
    MAX_FORWARD_BODY, MAX_FORWARDS, MAX_NOTIFY_BYTES, RemoteSession, Request, SYNC_EVERY, StoreOptions,
};
use crate::metrics::{Metrics, StoreEvent};
use crate::server::directory::{Directory, EventHub, PublishedEvent, SessionInfo};

/// The first wait before connecting again; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the spool is looked at when it was empty.
const SPOOL_POLL: Duration = Duration::from_millis(200);
/// Notifications received and not yet passed on; more are dropped and counted.
const NOTIFICATION_QUEUE: usize = 1024;
/// Sessions of other instances listed at most.
const MAX_REMOTE_SESSIONS: i64 = 10_000;
/// The `LISTEN`/`NOTIFY` channel.
const CHANNEL: &str = "voxproxy_events";

/// Why a round trip failed.
#[derive(Debug)]
enum Failure {
    TimedOut,
    Db(tokio_postgres::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::TimedOut => f.write_str("the database did not answer within store.query_timeout"),
            Failure::Db(e) => write!(f, "{e}"),
        }
    }
}

impl Failure {
    /// The database refused this data (SQLSTATE class 22, data exception):
    /// the row, not the connection, is at fault.
    fn is_bad_data(&self) -> bool {
        matches!(self, Failure::Db(e) if e.code().is_some_and(|c| c.code().starts_with("22")))
    }
}

async fn bounded<T>(
    limit: Duration,
    round_trip: impl Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, round_trip).await {
        Ok(result) => result.map_err(Failure::Db),
        Err(_) => Err(Failure::TimedOut),
    }
}

/// Connects, migrates, and drives the connection on a task of its own;
/// notifications arrive on the returned channel, which closes when the
/// connection does.
async fn connect(
    options: &StoreOptions,
    metrics: &Arc<Metrics>,
) -> Result<(Client, mpsc::Receiver<String>), String> {
    let mut config: tokio_postgres::Config =
        options.url.expose().parse().map_err(|e| format!("store.url: {e}"))?;
    if config.get_password().is_none()
        && let Ok(password) = std::env::var("PGPASSWORD")
    {
        config.password(password);
    }
    config.application_name("voxproxy").connect_timeout(options.query_timeout);
    let (mut client, mut connection) =
        bounded(options.query_timeout, config.connect(NoTls)).await.map_err(|e| e.to_string())?;
    let (sender, receiver) = mpsc::channel(NOTIFICATION_QUEUE);
    let metrics = Arc::clone(metrics);
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if sender.try_send(n.payload().to_owned()).is_err() && !sender.is_closed() {
                        metrics.store().event(StoreEvent::Dropped);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "store: connection closed");
                    break;
                }
            }
        }
    });
    let found = bounded(options.query_timeout, super::schema::migrate(&mut client))
        .await
        .map_err(|e| e.to_string())?;
    if found < super::schema::MIGRATIONS.len() as i32 {
        tracing::info!(from = found, to = super::schema::MIGRATIONS.len(), "store: schema migrated");
    }
    Ok((client, receiver))
}

/// Sleeps `how_long`, or less when the store is told to stop.
async fn pause(stop: &mut watch::Receiver<bool>, how_long: Duration) {
    if *stop.borrow() {
        tokio::time::sleep(how_long.min(SPOOL_POLL)).await;
        return;
    }
    tokio::select! {
        () = tokio::time::sleep(how_long) => {}
        changed = stop.changed() => if changed.is_err() { tokio::time::sleep(how_long).await },
    }
}

/// Copies the spool into `voxproxy_call_records` for as long as the store
/// runs, then for at most [`FLUSH_ON_STOP`].
pub(super) async fn records(
    options: Arc<StoreOptions>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut cursor = Cursor::load(&options.spool);
    let mut client: Option<Client> = None;
    let mut backoff = BACKOFF_MIN;
    let mut flush_until: Option<Instant> = None;
    let mut reported = false;
    loop {
        if flush_until.is_none() && *stop.borrow() {
            flush_until = Some(Instant::now() + FLUSH_ON_STOP);
        }
        if flush_until.is_some_and(|until| Instant::now() >= until) {
            break;
        }
        metrics.store().set_spool_bytes(cursor.behind());
        let (lines, skipped) = match cursor.read() {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(spool = %options.spool.display(), error = %e, "store: cannot read the spool");
                pause(&mut stop, BACKOFF_MAX).await;
                continue;
            }
        };
        for _ in 0..skipped {
            metrics.store().record_unreadable();
        }
        if lines.is_empty() {
            if skipped > 0 {
                let at = cursor.offset();
                save(&mut cursor, at);
                continue;
            }
            if flush_until.is_some() {
                break;
            }
            pause(&mut stop, SPOOL_POLL).await;
            continue;
        }
        let connected = match client.as_ref() {
            Some(c) => c,
            None => match connect(&options, &metrics).await {
                Ok((c, _)) => {
                    if reported {
                        tracing::info!("store: records connection back; replaying the spool");
                    }
                    reported = false;
                    &*client.insert(c)
                }
                Err(e) => {
                    metrics.store().error();
                    if !reported {
                        tracing::error!(error = %e, "store: cannot reach the database; records wait in the spool");
                        reported = true;
                    }
                    if flush_until.is_some() {
                        break;
                    }
                    pause(&mut stop, backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        match ship(connected, &options, &metrics, &lines).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                let at = lines.last().map_or(cursor.offset(), |l| l.end);
                save(&mut cursor, at);
            }
            Err(e) => {
                metrics.store().error();
                tracing::warn!(error = %e, "store: records not written; reconnecting, they wait in the spool");
                client = None;
                pause(&mut stop, backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    let behind = cursor.behind();
    metrics.store().set_spool_bytes(behind);
    if behind > 0 {
        tracing::warn!(
            bytes = behind,
            "store: stopping with records still in the spool; they go at the next start"
        );
    }
}

fn save(cursor: &mut Cursor, end: u64) {
    if let Err(e) = cursor.advance(end) {
        // The cursor stays behind: those records are sent again, harmlessly.
        tracing::warn!(error = %e, "store: cannot save the spool cursor");
    }
}

/// Upserts one batch; a record the database refuses as bad data is logged
/// and left out (it stays in the spool file) rather than blocking all later
/// ones.
async fn ship(
    client: &Client,
    options: &StoreOptions,
    metrics: &Metrics,
    lines: &[Line],
) -> Result<(), Failure> {
    let limit = options.query_timeout;
    match bounded(limit, spool::upsert(client, &options.instance_id, lines)).await {
        Ok(()) => {
            metrics.store().records_written(lines.len() as u64);
            Ok(())
        }
        Err(e) if e.is_bad_data() => {
            for line in lines {
                match bounded(limit, spool::upsert(client, &options.instance_id, std::slice::from_ref(line)))
                    .await
                {
                    Ok(()) => metrics.store().records_written(1),
                    Err(e) if e.is_bad_data() => {
                        metrics.store().record_unreadable();
                        tracing::error!(call_sid = %line.record.call_sid, error = %e,
                            "store: the database refused this call's record; it stays only in the spool file");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The registry connection's state.
pub(super) struct Registry {
    options: Arc<StoreOptions>,
    directory: Arc<Directory>,
    events: Arc<EventHub>,
    metrics: Arc<Metrics>,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    forwards: Arc<Semaphore>,
}

impl Registry {
    pub(super) fn new(
        options: Arc<StoreOptions>,
        directory: Arc<Directory>,
        events: Arc<EventHub>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(FORWARD_TIMEOUT));
        let http = HttpClient::builder(TokioExecutor::new()).build(connector);
        Registry {
            options,
            directory,
            events,
            metrics,
            http,
            forwards: Arc::new(Semaphore::new(MAX_FORWARDS)),
        }
    }

    fn limit(&self) -> Duration {
        self.options.query_timeout
    }

    fn id(&self) -> &str {
        &self.options.instance_id
    }

    /// Connects, serves until the connection fails, and again, until stopped.
    pub(super) async fn run(
        self,
        mut requests: mpsc::Receiver<Request>,
        mut local_events: broadcast::Receiver<PublishedEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut backoff = BACKOFF_MIN;
        let mut reported = false;
        while !*stop.borrow() {
            match self.connect_registered().await {
                Ok((client, notifications)) => {
                    tracing::info!(instance = self.id(), admin_url = %self.options.admin_url, "store: registered");
                    reported = false;
                    backoff = BACKOFF_MIN;
                    self.metrics.store().set_up(true);
                    let stopped =
                        self.serve(&client, notifications, &mut requests, &mut local_events, &mut stop).await;
                    self.metrics.store().set_up(false);
                    if stopped {
                        self.deregister(&client).await;
                        return;
                    }
                }
                Err(e) => {
                    self.metrics.store().error();
                    if !reported {
                        tracing::error!(error = %e, "store: cannot reach the database; sessions of other instances are not listed meanwhile");
                        reported = true;
                    }
                }
            }
            self.idle(backoff, &mut requests, &mut local_events, &mut stop).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn connect_registered(&self) -> Result<(Client, mpsc::Receiver<String>), String> {
        let (client, notifications) = connect(&self.options, &self.metrics).await?;
        let limit = self.limit();
        bounded(limit, client.batch_execute(&format!("LISTEN {CHANNEL}")))
            .await
            .map_err(|e| e.to_string())?;
        self.register(&client).await.map_err(|e| e.to_string())?;
        Ok((client, notifications))
    }

    /// (Re)writes this instance's row and forgets its old sessions: the
    /// next sync writes the live ones.
    async fn register(&self, client: &Client) -> Result<(), Failure> {
        let limit = self.limit();
        bounded(
            limit,
            client.execute(
                "INSERT INTO voxproxy_instances (instance_id, admin_url, started_at, heartbeat_at)
                 VALUES ($1, $2, now(), now())
                 ON CONFLICT (instance_id) DO UPDATE SET admin_url = EXCLUDED.admin_url, heartbeat_at = now()",
                &[&self.id(), &self.options.admin_url],
            ),
        )
        .await?;
        bounded(limit, client.execute("DELETE FROM voxproxy_sessions WHERE instance_id = $1", &[&self.id()]))
            .await?;
        Ok(())
    }

    async fn deregister(&self, client: &Client) {
        let gone = bounded(
            self.limit(),
            client.execute("DELETE FROM voxproxy_instances WHERE instance_id = $1", &[&self.id()]),
        )
        .await;
        if let Err(e) = gone {
            tracing::warn!(error = %e, "store: could not leave the registry; the instance expires by its heartbeat");
        }
    }

    /// While disconnected: requests get an error, events are counted lost.
    async fn idle(
        &self,
        how_long: Duration,
        requests: &mut mpsc::Receiver<Request>,
        local_events: &mut broadcast::Receiver<PublishedEvent>,
        stop: &mut watch::Receiver<bool>,
    ) {
        let until = tokio::time::Instant::now() + how_long;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return,
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
                request = requests.recv() => match request {
                    Some(request) => refuse(request),
                    None => tokio::time::sleep_until(until).await,
                },
                event = local_events.recv() => match event {
                    Ok(event) if !event.remote => self.metrics.store().event(StoreEvent::Dropped),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        for _ in 0..n {
                            self.metrics.store().event(StoreEvent::Dropped);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => tokio::time::sleep_until(until).await,
                },
            }
        }
    }

    /// Serves one connection; `true` when told to stop, `false` when the
    /// connection failed.
    async fn serve(
        &self,
        client: &Client,
        mut notifications: mpsc::Receiver<String>,
        requests: &mut mpsc::Receiver<Request>,
        local_events: &mut broadcast::Receiver<PublishedEvent>,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut synced: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(SYNC_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let outcome = tokio::select! {
                _ = tick.tick() => self.sync(client, &mut synced).await,
                request = requests.recv() => match request {
                    Some(request) => self.answer(client, request).await,
                    None => return true,
                },
                event = local_events.recv() => match event {
                    Ok(event) if !event.remote => self.notify(client, &event).await,
                    Ok(_) => Ok(()),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        for _ in 0..n {
                            self.metrics.store().event(StoreEvent::Dropped);
                        }
                        Ok(())
                    }
                    Err(broadcast::error::RecvError::Closed) => return true,
                },
                notification = notifications.recv() => match notification {
                    Some(payload) => {
                        self.receive(&payload);
                        Ok(())
                    }
                    None => Err("the connection closed".to_owned()),
                },
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        return true;
                    }
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                self.metrics.store().error();
                tracing::warn!(error = %e, "store: registry connection lost; reconnecting");
                return false;
            }
        }
    }

    /// Heartbeat, this instance's sessions, and the expiry of silent instances.
    async fn sync(&self, client: &Client, synced: &mut HashSet<String>) -> Result<(), String> {
        let limit = self.limit();
        let id = self.id();
        let infos = self.directory.infos();
        let beat = bounded(
            limit,
            client
                .execute("UPDATE voxproxy_instances SET heartbeat_at = now() WHERE instance_id = $1", &[&id]),
        )
        .await
        .map_err(|e| e.to_string())?;
        if beat == 0 {
            // Another instance expired this one (it was silent too long): again.
            tracing::warn!(
                instance = id,
                "store: this instance had expired from the registry; registering again"
            );
            self.register(client).await.map_err(|e| e.to_string())?;
            synced.clear();
        }
        let live: HashMap<&str, &SessionInfo> = infos.iter().map(|i| (i.stream_sid.as_str(), i)).collect();
        let gone: Vec<&str> =
            synced.iter().map(String::as_str).filter(|sid| !live.contains_key(sid)).collect();
        if !gone.is_empty() {
            bounded(
                limit,
                client.execute(
                    "DELETE FROM voxproxy_sessions WHERE instance_id = $1 AND stream_sid = ANY($2)",
                    &[&id, &gone],
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        let new: Vec<&SessionInfo> = infos.iter().filter(|i| !synced.contains(&i.stream_sid)).collect();
        if !new.is_empty() {
            let sids: Vec<&str> = new.iter().map(|i| i.stream_sid.as_str()).collect();
            let calls: Vec<&str> = new.iter().map(|i| i.call_sid.as_str()).collect();
            let routes: Vec<Option<&str>> = new.iter().map(|i| i.route.as_deref()).collect();
            let legs: Vec<&str> = new.iter().map(|i| i.leg).collect();
            let started: Vec<&str> = new.iter().map(|i| i.started_at.as_str()).collect();
            bounded(
                limit,
                client.execute(
                    "INSERT INTO voxproxy_sessions (instance_id, stream_sid, call_sid, route, leg, started_at)
                     SELECT $1, s, c, r, l, t::timestamptz
                     FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(s, c, r, l, t)
                     ON CONFLICT (stream_sid) DO UPDATE SET instance_id = EXCLUDED.instance_id,
                        call_sid = EXCLUDED.call_sid, route = EXCLUDED.route, leg = EXCLUDED.leg,
                        started_at = EXCLUDED.started_at",
                    &[&id, &sids, &calls, &routes, &legs, &started],
                ),
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        *synced = live.keys().map(|sid| (*sid).to_owned()).collect();
        let expire = format!(
            "DELETE FROM voxproxy_instances WHERE heartbeat_at < now() - interval '{} seconds'",
            INSTANCE_TTL.as_secs()
        );
        bounded(limit, client.execute(&expire, &[])).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn answer(&self, client: &Client, request: Request) -> Result<(), String> {
        match request {
            Request::Sessions(reply) => {
                let result = self.sessions(client).await.map_err(|e| e.to_string());
                let failed = result.as_ref().err().cloned();
                let _ = reply.send(result);
                failed.map_or(Ok(()), Err)
            }
            Request::Forward(forward, reply) => {
                let owner = match self.owner(client, &forward.stream_sid).await {
                    Ok(owner) => owner,
                    Err(e) => {
                        let message = e.to_string();
                        let _ = reply
                            .send(Forwarded::Unavailable(format!("the store did not answer: {message}")));
                        return Err(message);
                    }
                };
                let Some((instance, admin_url)) = owner else {
                    let _ = reply.send(Forwarded::NotFound);
                    return Ok(());
                };
                let Ok(permit) = Arc::clone(&self.forwards).try_acquire_owned() else {
                    let _ = reply.send(Forwarded::Unavailable(format!(
                        "{MAX_FORWARDS} requests are already being forwarded; try again"
                    )));
                    return Ok(());
                };
                let http = self.http.clone();
                let me = self.id().to_owned();
                tokio::spawn(async move {
                    let answer = send(&http, &me, &instance, &admin_url, forward).await;
                    let _ = reply.send(answer);
                    drop(permit);
                });
                Ok(())
            }
        }
    }

    async fn sessions(&self, client: &Client) -> Result<Vec<RemoteSession>, Failure> {
        let query = format!(
            "SELECT s.instance_id, s.stream_sid, s.call_sid, s.route, s.leg,
                    to_char(s.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')
             FROM voxproxy_sessions s JOIN voxproxy_instances i USING (instance_id)
             WHERE s.instance_id <> $1 AND i.heartbeat_at > now() - interval '{} seconds'
             ORDER BY s.started_at, s.stream_sid LIMIT $2",
            INSTANCE_TTL.as_secs()
        );
        let rows = bounded(self.limit(), client.query(&query, &[&self.id(), &MAX_REMOTE_SESSIONS])).await?;
        Ok(rows
            .iter()
            .map(|row| RemoteSession {
                instance: row.get(0),
                stream_sid: row.get(1),
                call_sid: row.get(2),
                route: row.get(3),
                leg: LegKindView { kind: row.get(4) },
                started_at: row.get(5),
            })
            .collect())
    }

    /// The live instance (other than this one) carrying `stream_sid`, and its admin URL.
    async fn owner(&self, client: &Client, stream_sid: &str) -> Result<Option<(String, String)>, Failure> {
        let query = format!(
            "SELECT i.instance_id, i.admin_url
             FROM voxproxy_sessions s JOIN voxproxy_instances i USING (instance_id)
             WHERE s.stream_sid = $1 AND s.instance_id <> $2
               AND i.heartbeat_at > now() - interval '{} seconds'",
            INSTANCE_TTL.as_secs()
        );
        let row = bounded(self.limit(), client.query_opt(&query, &[&stream_sid, &self.id()])).await?;
        Ok(row.map(|row| (row.get(0), row.get(1))))
    }

    async fn notify(&self, client: &Client, event: &PublishedEvent) -> Result<(), String> {
        let (payload, truncated) = notify_payload(self.id(), &event.json);
        bounded(self.limit(), client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]))
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.store().event(if truncated { StoreEvent::Truncated } else { StoreEvent::Sent });
        Ok(())
    }

    /// Passes another instance's event to this one's subscribers.
    fn receive(&self, payload: &str) {
        match remote_event(payload, self.id()) {
            Some(Some(name)) => {
                self.events.publish_remote(name, payload.into());
                self.metrics.store().event(StoreEvent::Received);
            }
            Some(None) => {}
            None => self.metrics.store().event(StoreEvent::Dropped),
        }
    }
}

fn refuse(request: Request) {
    let message = "the store is unreachable now; sessions of other instances are unknown";
    match request {
        Request::Sessions(reply) => {
            let _ = reply.send(Err(message.to_owned()));
        }
        Request::Forward(_, reply) => {
            let _ = reply.send(Forwarded::Unavailable(message.to_owned()));
        }
    }
}

/// Sends one forwarded request to `admin_url`, bounded in time and size.
async fn send(
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    me: &str,
    owner: &str,
    admin_url: &str,
    forward: Forward,
) -> Forwarded {
    let mut request = http::Request::builder()
        .method(forward.method)
        .uri(format!("{admin_url}{}", forward.path))
        .header(FORWARDED_HEADER, me)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(authorization) = forward.authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    let request = match request.body(Full::new(forward.body)) {
        Ok(request) => request,
        Err(e) => {
            return Forwarded::Unavailable(format!(
                "instance {owner}'s admin URL {admin_url} is unusable: {e}"
            ));
        }
    };
    let exchange = async {
        let response = http.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_FORWARD_BODY)
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body.to_bytes()))
    };
    match tokio::time::timeout(FORWARD_TIMEOUT, exchange).await {
        Ok(Ok((status, body))) => Forwarded::Answer { status, body },
        Ok(Err(e)) => {
            Forwarded::Unavailable(format!("instance {owner} ({admin_url}) carries the session but: {e}"))
        }
        Err(_) => Forwarded::Unavailable(format!(
            "instance {owner} ({admin_url}) carries the session but did not answer within {FORWARD_TIMEOUT:?}"
        )),
    }
}

/// This instance's event as a `NOTIFY` payload: the event's JSON with
/// `instance` first. Over [`MAX_NOTIFY_BYTES`] only its ids go, with
/// `"truncated": true` (the whole event is still delivered to this
/// instance's own subscribers). Returns the payload and whether it was cut.
pub(super) fn notify_payload(instance: &str, json: &str) -> (String, bool) {
    // `instance` is plain (letters, digits, `._-`: checked by the config),
    // so it needs no escaping.
    let full = match json.strip_prefix('{').filter(|rest| rest.len() > 1) {
        Some(rest) => format!("{{\"instance\":\"{instance}\",{rest}"),
        None => format!("{{\"instance\":\"{instance}\"}}"),
    };
    if full.len() <= MAX_NOTIFY_BYTES {
        return (full, false);
    }
    let event: Value = serde_json::from_str(json).unwrap_or_default();
    let mut ids = Map::new();
    ids.insert("instance".into(), instance.into());
    for key in ["event", "stream_sid", "call_sid"] {
        if let Some(value) = event.get(key).and_then(Value::as_str).filter(|v| v.len() <= 128) {
            ids.insert(key.into(), value.into());
        }
    }
    ids.insert("truncated".into(), true.into());
    (Value::Object(ids).to_string(), true)
}

/// Another instance's event: `Some(Some(name))` to pass on,
/// `Some(None)` for this instance's own, `None` for an unreadable one.
pub(super) fn remote_event(payload: &str, me: &str) -> Option<Option<String>> {
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(payload) else { return None };
    let instance = object.get("instance").and_then(Value::as_str)?;
    if instance == me {
        return Some(None);
    }
    let name = object.get("event").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 64)?;
    Some(Some(name.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_instance_and_big_ones_only_their_ids() {
        let (payload, cut) = notify_payload("a-1", r#"{"event":"dtmf","stream_sid":"MZ1","digit":"5"}"#);
        assert!(!cut);
        assert_eq!(payload, r#"{"instance":"a-1","event":"dtmf","stream_sid":"MZ1","digit":"5"}"#);
        assert_eq!(remote_event(&payload, "b-2"), Some(Some("dtmf".to_owned())));
        assert_eq!(remote_event(&payload, "a-1"), Some(None), "its own events come back and are ignored");

        let big = format!(r#"{{"event":"call_status","call_sid":"CA1","note":"{}"}}"#, "x".repeat(9000));
        let (payload, cut) = notify_payload("a-1", &big);
        assert!(cut && payload.len() <= MAX_NOTIFY_BYTES);
        let value: Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(value["call_sid"], "CA1");
        assert_eq!(value["truncated"], true);
        assert_eq!(value.get("note"), None);
    }

    #[test]
    fn unreadable_notifications_are_refused() {
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"instance":"b"}"#,
            r#"{"instance":1,"event":"x"}"#,
            r#"{"instance":"b","event":""}"#,
        ] {
            assert_eq!(remote_event(bad, "a"), None, "{bad}");
        }
    }
}
