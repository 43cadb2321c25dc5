//! The operator's control and health routes of the `/v1` API (behind the
//! bearer token, see `http::control`): ending a call through Twilio,
//! stopping a named stream through the REST Streams resource, the running
//! configuration and the health report.
//!
//! Health is computed per request from counters the server keeps anyway
//! (worker heartbeats, the call-record queue, the RTP port pool); only the
//! check that costs a network round trip, Twilio's credentials, is cached
//! ([`CREDENTIALS_TTL`]) and bounded ([`PROBE_TIMEOUT`]), with one probe in
//! flight at a time for the whole process.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use voxproxy_adapters::rest::{RestError, TwilioClient, UpdateCall};
use voxproxy_adapters::route::{Backend, LegKind};

use super::directory::CallCommand;
use super::http::{Body, json, json_error, read_body};
use super::{Shared, WorkerContext};
use crate::cdr::CdrService;

/// How often each worker proves it still runs its event loop.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A worker whose last heartbeat is older than this is reported stuck: five
/// missed beats, far beyond any scheduling hiccup.
const WORKER_STALE: Duration = Duration::from_secs(5);
/// How long a Twilio credentials check is reused before the next probe.
const CREDENTIALS_TTL: Duration = Duration::from_secs(5);
/// The longest a credentials probe may take; past it the check says so.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Call records waiting for the disk before the check turns `degraded`.
const CDR_BACKLOG_DEGRADED: usize = CdrService::QUEUE / 4;
/// Longest stream name accepted in `POST /v1/sessions/{sid}/stream`.
const MAX_STREAM_NAME: usize = 256;

/// The health state the workers share.
pub(crate) struct HealthState {
    /// Per worker: milliseconds since `epoch` of its last heartbeat, plus
    /// one. Starts at the epoch, so a worker gets [`WORKER_STALE`] to start
    /// beating before it counts as stuck.
    beats: Box<[AtomicU64]>,
    epoch: Instant,
    /// The last credentials check and when it was made; the lock is held for
    /// the probe, so concurrent requests wait for one probe, not start many.
    credentials: tokio::sync::Mutex<Option<(Instant, Check)>>,
}

impl HealthState {
    pub(crate) fn new(workers: usize) -> Self {
        HealthState {
            beats: (0..workers).map(|_| AtomicU64::new(1)).collect(),
            epoch: Instant::now(),
            credentials: tokio::sync::Mutex::new(None),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Records that worker `index` ran its loop just now.
    pub(crate) fn beat(&self, index: usize) {
        if let Some(slot) = self.beats.get(index) {
            slot.store(self.millis(Instant::now()), Ordering::Relaxed);
        }
    }
}

/// Beats for worker `index` every [`HEARTBEAT_EVERY`] for as long as its
/// runtime runs (a worker whose loop is blocked stops beating), publishes
/// its io_uring ring's counters to metrics as often, and frees what its
/// buffer pools have not used since the last beat.
pub(crate) async fn heartbeat(shared: std::sync::Arc<Shared>, index: usize) {
    loop {
        shared.health.beat(index);
        // The ring's counters go to metrics at the same pace, and what a
        // burst left spare in the worker's buffer pools is freed.
        if let Some(stats) = crate::runtime::ring_stats() {
            shared.metrics.ring().set(index, stats);
        }
        crate::runtime::trim_ring();
        super::media_ws::trim_spares();
        tokio::time::sleep(HEARTBEAT_EVERY).await;
    }
}

/// A check's verdict. `Unknown` (nothing could be probed) does not lower
/// the overall status: an RTP backend has no probe, and reporting it as a
/// problem would keep every healthy deployment `degraded`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Verdict {
    Ok,
    Unknown,
    Degraded,
    Unhealthy,
}

/// One line of the health report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Check {
    name: &'static str,
    /// What was checked when there are several of a kind (a backend).
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    status: Verdict,
    detail: String,
}

fn check(name: &'static str, status: Verdict, detail: impl Into<String>) -> Check {
    Check { name, target: None, status, detail: detail.into() }
}

/// The overall status: the worst verdict, `unknown` counting as fine.
fn overall(checks: &[Check]) -> &'static str {
    match checks.iter().map(|c| c.status).max() {
        Some(Verdict::Unhealthy) => "unhealthy",
        Some(Verdict::Degraded) => "degraded",
        _ => "healthy",
    }
}

/// Workers whose heartbeat is missing or older than [`WORKER_STALE`].
fn workers_check(beats: &[u64], now_ms: u64) -> Check {
    let stale_ms = u64::try_from(WORKER_STALE.as_millis()).unwrap_or(u64::MAX);
    let stuck: Vec<usize> = beats
        .iter()
        .enumerate()
        .filter(|&(_, &beat)| beat == 0 || now_ms.saturating_sub(beat) > stale_ms)
        .map(|(i, _)| i)
        .collect();
    if stuck.is_empty() {
        check("workers", Verdict::Ok, format!("all {} workers ran their loop within 5 s", beats.len()))
    } else {
        check(
            "workers",
            Verdict::Unhealthy,
            format!(
                "workers {stuck:?} of {} have not run their loop for over 5 s (stuck or exited)",
                beats.len()
            ),
        )
    }
}

fn cdr_check(alive: bool, queued: usize) -> Check {
    if !alive {
        check(
            "call_records",
            Verdict::Unhealthy,
            "the call-record writer thread has stopped: records are lost",
        )
    } else if queued >= CdrService::QUEUE {
        check(
            "call_records",
            Verdict::Unhealthy,
            format!("{queued} records wait for the disk (queue full): ending calls wait for it"),
        )
    } else if queued >= CDR_BACKLOG_DEGRADED {
        check("call_records", Verdict::Degraded, format!("{queued} records wait for the disk (slow disk?)"))
    } else {
        check("call_records", Verdict::Ok, format!("writer running, {queued} records queued"))
    }
}

/// The store (`store.url`): `degraded` while it cannot be reached, since
/// calls go on and their records wait in the spool, but other instances'
/// sessions and events are not seen meanwhile.
fn store_check(up: bool, spool_bytes: u64) -> Check {
    if up {
        check("store", Verdict::Ok, format!("connected; {spool_bytes} bytes of call records not yet in it"))
    } else {
        check(
            "store",
            Verdict::Degraded,
            format!(
                "the database cannot be reached: call records wait in the spool ({spool_bytes} bytes), \
                 other instances' sessions and events are not seen"
            ),
        )
    }
}

/// Free RTP ports: `degraded` under 10 % of the range, `unhealthy` at none.
fn ports_check(free: usize, total: usize) -> Check {
    let detail = format!("{free} of {total} RTP ports free (rtp.ports)");
    let status = if free == 0 {
        Verdict::Unhealthy
    } else if free.saturating_mul(10) < total {
        Verdict::Degraded
    } else {
        Verdict::Ok
    };
    check("rtp_ports", status, detail)
}

/// A backend's reachability. Plain RTP has no handshake to probe, so it is
/// `unknown`, never a made-up `ok`; `serve` refuses SIP and WebSocket legs
/// until they are wired in, so there is nothing of theirs to probe yet.
fn backend_check(backend: &Backend) -> Check {
    let detail = match backend.leg() {
        LegKind::Rtp => "plain RTP has no probe: reachability shows only in live calls' RTP counters",
        _ => "this leg is not served by this version, so it is not probed",
    };
    Check {
        name: "backend",
        target: Some(backend.to_string()),
        status: Verdict::Unknown,
        detail: detail.into(),
    }
}

/// Twilio's verdict on the account credentials, cached.
async fn credentials_check(ctx: &WorkerContext) -> Option<Check> {
    let live = ctx.shared.live_arc();
    let config = &live.config;
    if config.twilio.account_sid.is_none() || config.secrets.twilio_auth_token.is_none() {
        return None;
    }
    let mut cached = ctx.shared.health.credentials.lock().await;
    if let Some((at, result)) = cached.as_ref()
        && at.elapsed() < CREDENTIALS_TTL
    {
        return Some(result.clone());
    }
    let result = match ctx.rest_client() {
        Err(message) => check("twilio_credentials", Verdict::Degraded, message),
        Ok(client) => match tokio::time::timeout(PROBE_TIMEOUT, client.fetch_account()).await {
            Ok(Ok(account)) => check(
                "twilio_credentials",
                Verdict::Ok,
                format!(
                    "Twilio accepted the credentials (account status {})",
                    account.status.as_deref().unwrap_or("?")
                ),
            ),
            Ok(Err(e @ RestError::Api { status: 401 | 403, .. })) => check(
                "twilio_credentials",
                Verdict::Degraded,
                format!("Twilio refused TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN: {e}"),
            ),
            Ok(Err(e)) => {
                check("twilio_credentials", Verdict::Degraded, format!("could not check them: {e}"))
            }
            Err(_) => check(
                "twilio_credentials",
                Verdict::Degraded,
                format!("Twilio did not answer the credentials check within {PROBE_TIMEOUT:?}"),
            ),
        },
    };
    *cached = Some((Instant::now(), result.clone()));
    Some(result)
}

/// `GET /v1/health`: 200 when healthy or degraded, 503 when unhealthy (so a
/// load balancer takes the instance out only when it cannot carry calls).
pub(crate) async fn health(ctx: &WorkerContext) -> Response<Body> {
    let shared = &ctx.shared;
    let live = shared.live_arc();
    let now_ms = shared.health.millis(Instant::now());
    let beats: Vec<u64> = shared.health.beats.iter().map(|b| b.load(Ordering::Relaxed)).collect();
    let mut checks = vec![
        workers_check(&beats, now_ms),
        cdr_check(shared.cdr.is_alive(), shared.cdr.queued()),
        ports_check(shared.ports.available(), live.config.rtp.ports.len() as usize),
    ];
    if shared.store.is_some() {
        let store = shared.metrics.store();
        checks.push(store_check(store.is_up(), store.spool_bytes()));
    }
    let mut backends = vec![&live.config.rtp.backend];
    for route in &live.config.routes {
        if !backends.contains(&&route.backend) {
            backends.push(&route.backend);
        }
    }
    checks.extend(backends.into_iter().map(backend_check));
    checks.extend(credentials_check(ctx).await);
    let status = overall(&checks);
    let code = if status == "unhealthy" { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = serde_json::json!({
        "status": status,
        "active_calls": shared.active_calls.load(Ordering::Acquire),
        "draining": shared.draining.load(Ordering::Acquire),
        "checks": checks,
    });
    json(code, &body)
}

/// `GET /v1/config`.
pub(crate) fn config(ctx: &WorkerContext) -> Response<Body> {
    json(StatusCode::OK, &ctx.shared.live().config.redacted_json())
}

/// The REST client for an operation on a live call, or the status and
/// sentence saying why there is none: 409 when the credentials are not
/// configured (the request cannot work on this deployment), 503 when they do
/// not make a client.
fn rest_for(ctx: &WorkerContext, what: &str, sid: &str) -> Result<Rc<TwilioClient>, (StatusCode, String)> {
    let live = ctx.shared.live();
    let config = &live.config;
    if config.twilio.account_sid.is_none() || config.secrets.twilio_auth_token.is_none() {
        return Err((
            StatusCode::CONFLICT,
            format!(
                "{what} goes through Twilio's REST API, which needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN; \
                 without them DELETE /v1/sessions/{sid} closes the media stream only"
            ),
        ));
    }
    ctx.rest_client().map_err(|message| (StatusCode::SERVICE_UNAVAILABLE, message))
}

/// `POST /v1/sessions/{streamSid}/hangup`: ends the Twilio call
/// (`Status=completed`), then closes its stream.
pub(crate) async fn hangup(ctx: &WorkerContext, sid: &str) -> Response<Body> {
    let directory = &ctx.shared.directory;
    let Some(session) = directory.get(sid) else {
        return json_error(StatusCode::NOT_FOUND, "no such session");
    };
    let client = match rest_for(ctx, "hanging up the call", sid) {
        Ok(client) => client,
        Err((status, message)) => return json_error(status, &message),
    };
    let call_sid = session.info.call_sid;
    let started = std::time::SystemTime::now();
    let result = client.update_call(&call_sid, &UpdateCall::Complete).await;
    super::traces::rest(&ctx.shared, "twilio.call.update", Some(&call_sid), started, &result);
    match result {
        Ok(call) => {
            // Twilio would close the stream too; closing it here writes the
            // record now instead of when (or whether) Twilio's stop arrives.
            let closing = directory.command(sid, CallCommand::Hangup);
            tracing::info!(stream_sid = sid, call_sid, "control API: call completed through Twilio");
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "stream_sid": sid,
                    "call_sid": call_sid,
                    "call_status": call.status.as_str(),
                    "stream": if closing { "ending" } else { "already_ended" },
                }),
            )
        }
        Err(e) => {
            tracing::warn!(stream_sid = sid, call_sid, error = %e, "control API: Twilio did not end the call");
            json_error(StatusCode::BAD_GATEWAY, &format!("Twilio did not end call {call_sid}: {e}"))
        }
    }
}

/// The body of `POST /v1/sessions/{streamSid}/stream`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamRequest {
    action: StreamAction,
    /// The stream's name or SID; absent: this session's own stream.
    name: Option<String>,
}

/// What can be done to a stream through the REST Streams resource; Twilio's
/// update of a stream takes only `Status=stopped`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum StreamAction {
    Stop,
}

/// `POST /v1/sessions/{streamSid}/stream` with `{"action": "stop"}` and an
/// optional `"name"`: `POST …/Calls/{CallSid}/Streams/{name}.json
/// Status=stopped` on the session's call. Twilio stops only unidirectional
/// streams this way; its refusal for a `<Connect><Stream>` is passed on.
pub(crate) async fn stream(ctx: &WorkerContext, sid: &str, req: Request<Incoming>) -> Response<Body> {
    let body = match read_body(ctx, req).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let request: StreamRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "expected {{\"action\": \"stop\"}} with an optional \"name\" (stream name or SID): {e}"
                ),
            );
        }
    };
    let StreamAction::Stop = request.action;
    let name = request.name.unwrap_or_else(|| sid.to_owned());
    if name.is_empty() || name.chars().count() > MAX_STREAM_NAME {
        return json_error(StatusCode::BAD_REQUEST, "\"name\" must be 1 to 256 characters");
    }
    let Some(session) = ctx.shared.directory.get(sid) else {
        return json_error(StatusCode::NOT_FOUND, "no such session");
    };
    let client = match rest_for(ctx, "stopping a stream", sid) {
        Ok(client) => client,
        Err((status, message)) => return json_error(status, &message),
    };
    let call_sid = session.info.call_sid;
    let started = std::time::SystemTime::now();
    let result = client.stop_stream(&call_sid, &name).await;
    super::traces::rest(&ctx.shared, "twilio.stream.update", Some(&call_sid), started, &result);
    match result {
        Ok(stream) => json(
            StatusCode::OK,
            &serde_json::json!({
                "stream_sid": sid,
                "call_sid": call_sid,
                "stopped": stream.sid,
                "name": stream.name,
                "status": stream.status.as_str(),
            }),
        ),
        Err(e) => {
            tracing::warn!(stream_sid = sid, call_sid, error = %e, "control API: Twilio did not stop the stream");
            json_error(StatusCode::BAD_GATEWAY, &format!("Twilio did not stop stream {name:?}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_degrade_under_ten_percent_and_fail_at_none() {
        assert_eq!(ports_check(10, 100).status, Verdict::Ok);
        assert_eq!(ports_check(9, 100).status, Verdict::Degraded);
        assert_eq!(ports_check(1, 2).status, Verdict::Ok);
        assert_eq!(ports_check(0, 1).status, Verdict::Unhealthy);
    }

    #[test]
    fn a_store_that_cannot_be_reached_degrades_and_says_where_records_wait() {
        assert_eq!(store_check(true, 0).status, Verdict::Ok);
        let down = store_check(false, 4096);
        assert_eq!(down.status, Verdict::Degraded, "calls go on without it");
        assert!(down.detail.contains("4096 bytes"), "{}", down.detail);
    }

    #[test]
    fn workers_that_never_beat_or_stopped_beating_are_unhealthy() {
        assert_eq!(workers_check(&[9_000, 8_000], 10_000).status, Verdict::Ok);
        let stuck = workers_check(&[9_000, 4_000], 10_000);
        assert_eq!(stuck.status, Verdict::Unhealthy);
        assert!(stuck.detail.contains("[1]"), "{}", stuck.detail);
        assert_eq!(workers_check(&[0], 10).status, Verdict::Unhealthy);
    }

    #[test]
    fn call_record_backlog_and_a_dead_writer() {
        assert_eq!(cdr_check(true, 0).status, Verdict::Ok);
        assert_eq!(cdr_check(true, CDR_BACKLOG_DEGRADED).status, Verdict::Degraded);
        assert_eq!(cdr_check(true, CdrService::QUEUE).status, Verdict::Unhealthy);
        assert_eq!(cdr_check(false, 0).status, Verdict::Unhealthy);
    }

    #[test]
    fn unknown_does_not_lower_the_overall_status_but_anything_worse_does() {
        let rtp = backend_check(&Backend::parse("127.0.0.1:4000").unwrap());
        assert_eq!(rtp.status, Verdict::Unknown);
        assert_eq!(overall(&[ports_check(5, 5), rtp.clone()]), "healthy");
        assert_eq!(overall(&[ports_check(0, 5), rtp.clone()]), "unhealthy");
        assert_eq!(overall(&[ports_check(1, 50), rtp]), "degraded");
    }
}
