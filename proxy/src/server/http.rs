//! The HTTP surface: one hyper service per connection, routing every path of
//! docs/ARCHITECTURE.md, *The HTTP surface*. Webhooks are checked (size, rate, signature) before
//! they are parsed; the media WebSocket is checked (signature, capacity)
//! before the call task takes over the upgraded connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::Incoming;
use subtle_compare::constant_time_eq;
use voxproxy_adapters::form::Form;
use voxproxy_adapters::rest::SendSms;
use voxproxy_adapters::route::{
    OnMissed, ROUTE_PARAMETER, SIP_CALL_PARAMETER, SIP_ROUTE_LABEL, SmsRequest, StreamEnd, after_dial_tagged,
    after_stream, answer_sip_call, answer_voice_tagged, dial_call_status, match_route,
};
use voxproxy_adapters::stream_token::STREAM_TOKEN_PARAMETER;
use voxproxy_adapters::twiml::{Reject, RejectReason, Response as Twiml};
use voxproxy_adapters::webhook::{
    CallStatusCallback, RecordingStatusCallback, StreamStatusCallback, VoiceWebhook, WebhookError,
};

use super::directory::CallCommand;
use super::taps::RECORDING_STATUS_PATH;
use super::{ConnState, Surface, WorkerContext, sse};
use super::{admin, call, sip_listener, traces};
use crate::cdr::ledger::RecordingInput;
use crate::metrics::{CallbackKind, RefuseReason, Route, SignatureKind};

/// The body of every response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Longest wait for Twilio to accept a missed-call SMS: the webhook that
/// sends it must answer Twilio within its 15 s limit.
const SMS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    full(status, "text/plain; charset=utf-8", Bytes::from_static(body.as_bytes()))
}

pub(super) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    full(status, "application/json", body)
}

pub(super) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// Handles one request. Never fails: every problem is a status code.
pub async fn handle(
    ctx: Rc<WorkerContext>,
    peer: SocketAddr,
    connection: Rc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if !reachable(connection.surface, &path) {
        // Not on this listener: as if it did not exist, so the public
        // listener tells nothing about the admin surface.
        let response = text(StatusCode::NOT_FOUND, "not found\n");
        ctx.metrics().http_request(Route::NotFound, response.status().as_u16());
        return Ok(response);
    }
    let (route, response) = match (method, path.as_str()) {
        (Method::POST, "/twilio/voice") => (Route::Voice, voice(&ctx, peer, req).await),
        (Method::POST, "/twilio/status") => (Route::Status, call_status(&ctx, peer, req).await),
        (Method::POST, "/twilio/stream-status") => {
            (Route::StreamStatus, stream_status(&ctx, peer, req).await)
        }
        (Method::POST, "/twilio/dial-status") => (Route::DialStatus, dial_status(&ctx, peer, req).await),
        (Method::POST, "/twilio/stream-ended") => (Route::StreamEnded, stream_ended(&ctx, peer, req).await),
        (Method::POST, RECORDING_STATUS_PATH) => {
            (Route::RecordingStatus, recording_status(&ctx, peer, req).await)
        }
        (Method::GET, "/twilio/media") => (Route::Media, media(&ctx, peer, &connection, req)),
        (Method::GET, "/healthz") => (Route::Healthz, text(StatusCode::OK, "ok\n")),
        (Method::GET, "/readyz") => (Route::Readyz, readyz(&ctx)),
        (Method::GET, "/metrics") => (Route::Metrics, metrics(&ctx)),
        (_, p) if p == "/v1" || p.starts_with("/v1/") => {
            (route_of_v1(p), control(&ctx, &connection, req).await)
        }
        (
            _,
            "/twilio/voice"
            | "/twilio/status"
            | "/twilio/stream-status"
            | "/twilio/dial-status"
            | "/twilio/stream-ended"
            | RECORDING_STATUS_PATH
            | "/twilio/media"
            | "/healthz"
            | "/readyz"
            | "/metrics",
        ) => (Route::NotFound, text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")),
        _ => (Route::NotFound, text(StatusCode::NOT_FOUND, "not found\n")),
    };
    ctx.metrics().http_request(route, response.status().as_u16());
    Ok(response)
}

/// Whether `path` is served on a connection of `surface`: with
/// `server.admin_listen` set, `/metrics` and `/v1/*` only there, Twilio's
/// routes only on `server.listen`, the health probes on both.
fn reachable(surface: Surface, path: &str) -> bool {
    let admin_only = path == "/metrics" || path == "/v1" || path.starts_with("/v1/");
    let both = path == "/healthz" || path == "/readyz";
    match surface {
        Surface::All => true,
        Surface::Public => !admin_only,
        Surface::Admin => admin_only || both,
    }
}

fn route_of_v1(path: &str) -> Route {
    if path.starts_with("/v1/sessions") {
        Route::Sessions
    } else if path == "/v1/events" {
        Route::Events
    } else if path == "/v1/calls" {
        Route::Calls
    } else if path == "/v1/config" {
        Route::Config
    } else if path == "/v1/health" {
        Route::Health
    } else {
        Route::NotFound
    }
}

fn readyz(ctx: &WorkerContext) -> Response<Body> {
    if ctx.shared.draining.load(Ordering::Acquire) {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else {
        text(StatusCode::OK, "ready\n")
    }
}

fn metrics(ctx: &WorkerContext) -> Response<Body> {
    let mut out = String::with_capacity(16 * 1024);
    ctx.shared.metrics.render(&mut out);
    full(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", out)
}

/// The request target Twilio signed: path and query as received.
fn target(req: &Request<Incoming>) -> String {
    req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned())
}

fn signature_header(req: &Request<Incoming>) -> Option<String> {
    req.headers().get("x-twilio-signature").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Per-IP rate limit of webhooks.
fn rate_limited(ctx: &WorkerContext, peer: IpAddr) -> bool {
    let live = ctx.shared.live();
    let Some(limiter) = &live.rate_limiter else { return false };
    let allowed = limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .check(peer, std::time::Instant::now());
    if !allowed {
        ctx.metrics().rate_limited();
    }
    !allowed
}

/// Reads a body of at most `limits.max_body_bytes` within the read timeout.
pub(super) async fn read_body(ctx: &WorkerContext, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let limit = ctx.shared.live().config.limits.max_body_bytes as usize;
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > limit as u64
    {
        ctx.metrics().body_too_large();
        return Err(text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"));
    }
    let body = Limited::new(req.into_body(), limit);
    match tokio::time::timeout(BODY_READ_TIMEOUT, body.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            ctx.metrics().body_too_large();
            Err(text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n"))
        }
        Ok(Err(_)) => Err(text(StatusCode::BAD_REQUEST, "could not read the request body\n")),
        Err(_) => Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow\n")),
    }
}

/// Checks a form webhook's signature; `Ok` carries the parsed form.
async fn signed_form(
    ctx: &WorkerContext,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Form, Response<Body>> {
    if rate_limited(ctx, peer.ip()) {
        return Err(text(StatusCode::TOO_MANY_REQUESTS, "too many requests\n"));
    }
    let target = target(&req);
    let signature = signature_header(&req);
    let body = read_body(ctx, req).await?;
    let form = Form::parse(&body).map_err(|e| {
        tracing::info!(%peer, error = %e, "webhook body is not a form");
        text(StatusCode::BAD_REQUEST, "body is not application/x-www-form-urlencoded\n")
    })?;
    match &ctx.shared.validator {
        Some(validator) => {
            if let Err(e) = validator.validate_form(&target, form.pairs(), signature.as_deref()) {
                ctx.metrics().signature_failure(SignatureKind::Webhook);
                tracing::warn!(%peer, target, error = %e, "webhook refused: bad X-Twilio-Signature");
                return Err(text(StatusCode::FORBIDDEN, "invalid X-Twilio-Signature\n"));
            }
        }
        None => tracing::warn!(%peer, target, "signature NOT checked (--insecure-skip-signature)"),
    }
    Ok(form)
}

async fn voice(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let started = SystemTime::now();
    // Covered by the signature: Twilio signs the URL with its query.
    let sip_key = sip_listener::key_of_query(req.uri().query()).map(str::to_owned);
    let form = match signed_form(ctx, peer, req).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let webhook = match VoiceWebhook::from_form(form) {
        Ok(w) => w,
        Err(e) => {
            ctx.metrics().call_refused(RefuseReason::InvalidWebhook);
            tracing::info!(%peer, error = %e, "voice webhook refused");
            // The message names the field, never echoes its value.
            let body = format!("not a Twilio voice webhook: {e}\n");
            return full(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", body);
        }
    };
    if let Some(key) = sip_key {
        return sip_voice(ctx, &webhook, &key, started);
    }
    let call = &webhook.call;
    let shared = &ctx.shared;
    // One generation for the whole answer: limits and route agree.
    let live = shared.live_arc();
    let config = &live.config;
    let refuse = if shared.draining.load(Ordering::Acquire) {
        Some(RefuseReason::Draining)
    } else if shared.active_calls.load(Ordering::Acquire) >= config.limits.max_calls as usize {
        Some(RefuseReason::MaxCalls)
    } else if shared.ports.available() == 0 {
        Some(RefuseReason::NoRtpPort)
    } else if !shared.fds_for_one_more_call() {
        Some(RefuseReason::FdLimit)
    } else if !caller_allowed(shared, &call.from) {
        Some(RefuseReason::CallerRate)
    } else {
        None
    };
    let matched = match_route(&config.routes, &config.default_route, &call.to);
    let label = matched.label();
    // Every call gets its one record, the rejected ones too.
    shared.calls.voice(call, &label);
    let twiml = if let Some(reason) = refuse {
        ctx.metrics().call_refused(reason);
        if reason == RefuseReason::FdLimit {
            // One line per LOG_EVERY, not per call: a shortage refuses many.
            shared.fds.refused_near_limit();
        } else {
            tracing::warn!(call_sid = %call.call_sid, ?reason, "call rejected with TwiML <Reject reason=\"busy\">");
        }
        Twiml::new().reject(Reject::new().reason(RejectReason::Busy))
    } else {
        let tags = proxy_tags(shared, &call.call_sid, &label);
        tracing::info!(call_sid = %call.call_sid, from = %call.from, to = %call.to, route = %label, "voice webhook answered");
        answer_voice_tagged(matched.route, &webhook, &shared.answer, &tags)
    };
    let answer = if refuse.is_some() { "busy" } else { "twiml" };
    traces::webhook(shared, &call.call_sid, started, &label, answer);
    twiml_response(&twiml)
}

/// The voice webhook of a call placed for a PBX (`sip.listen`): a stream
/// back to this proxy naming the SIP call, or a hang-up when that SIP call
/// is no longer in progress (the PBX cancelled as Twilio answered).
fn sip_voice(ctx: &WorkerContext, webhook: &VoiceWebhook, key: &str, started: SystemTime) -> Response<Body> {
    let shared = &ctx.shared;
    let call = &webhook.call;
    shared.calls.voice(call, SIP_ROUTE_LABEL);
    if shared.sip.as_ref().and_then(|sip| sip.media(key)).is_none() {
        tracing::info!(call_sid = %call.call_sid, "voice webhook of a SIP call no longer in progress; hanging up");
        traces::webhook(shared, &call.call_sid, started, SIP_ROUTE_LABEL, "hangup");
        return twiml_response(&Twiml::new().hangup());
    }
    traces::webhook(shared, &call.call_sid, started, SIP_ROUTE_LABEL, "twiml");
    let mut tags = Vec::with_capacity(2);
    if let Some(token) = &shared.stream_token {
        tags.push((STREAM_TOKEN_PARAMETER.to_owned(), token.token(&call.call_sid)));
    }
    tags.push((SIP_CALL_PARAMETER.to_owned(), key.to_owned()));
    tracing::info!(call_sid = %call.call_sid, to = %call.to, "voice webhook of a SIP call answered");
    twiml_response(&answer_sip_call(webhook, &shared.answer, &tags))
}

/// `limits.calls_per_caller_per_minute`: whether `caller` may place one
/// more call now (checked last, so a call refused for another reason takes
/// no token).
fn caller_allowed(shared: &super::Shared, caller: &str) -> bool {
    let live = shared.live();
    let Some(limiter) = &live.caller_limiter else { return true };
    limiter.lock().unwrap_or_else(std::sync::PoisonError::into_inner).check(caller, std::time::Instant::now())
}

/// The proxy's own `<Parameter>`s on every stream it asks for: the route's
/// label and, when signatures are checked, the stream token (proof that this
/// deployment answered the call, checked on `start`).
fn proxy_tags(shared: &super::Shared, call_sid: &str, label: &str) -> Vec<(String, String)> {
    let mut tags = vec![(ROUTE_PARAMETER.to_owned(), label.to_owned())];
    if let Some(key) = &shared.stream_token {
        tags.push((STREAM_TOKEN_PARAMETER.to_owned(), key.token(call_sid)));
    }
    tags
}

/// A callback body that is signed but not a valid callback: 400 naming the
/// field (never echoing its value), counted by kind.
fn refused_callback(
    ctx: &WorkerContext,
    peer: SocketAddr,
    kind: CallbackKind,
    e: &WebhookError,
) -> Response<Body> {
    ctx.metrics().callback_refused(kind);
    tracing::info!(%peer, kind = kind.name(), error = %e, "status callback refused");
    let body = format!("not a Twilio {} callback: {e}\n", kind.name().replace('_', " "));
    full(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", body)
}

/// `POST /twilio/status`: a call status callback.
async fn call_status(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let sip_key = sip_listener::key_of_query(req.uri().query()).map(str::to_owned);
    let form = match signed_form(ctx, peer, req).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let callback = match CallStatusCallback::from_form(form) {
        Ok(c) => c,
        Err(e) => return refused_callback(ctx, peer, CallbackKind::CallStatus, &e),
    };
    let call = &callback.call;
    let status = call.call_status.as_str();
    ctx.metrics().callback(CallbackKind::CallStatus, status);
    tracing::info!(call_sid = %call.call_sid, status, "call status callback");
    ctx.shared.events.publish_fields(
        "call_status",
        &[("call_sid", &call.call_sid), ("status", status), ("from", &call.from), ("to", &call.to)],
    );
    if let (Some(key), Some(sip)) = (&sip_key, &ctx.shared.sip) {
        // First, so the record the final status writes has the SIP outcome.
        sip.apply_status(key, status).await;
    }
    ctx.shared.calls.status(call);
    empty(StatusCode::NO_CONTENT)
}

/// `POST /twilio/recording-status`: the status of a Twilio-side recording
/// voxproxy started (`recording.twilio`); lands in the call's record.
async fn recording_status(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let form = match signed_form(ctx, peer, req).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let callback = match RecordingStatusCallback::from_form(form) {
        Ok(c) => c,
        Err(e) => return refused_callback(ctx, peer, CallbackKind::RecordingStatus, &e),
    };
    let status = callback.recording_status.as_str();
    ctx.metrics().callback(CallbackKind::RecordingStatus, status);
    tracing::info!(call_sid = %callback.call_sid, recording_sid = %callback.recording_sid, status, "recording status callback");
    let error = callback.error_code.filter(|&code| code != 0).map(|code| format!("Twilio error {code}"));
    let input = RecordingInput {
        call_sid: &callback.call_sid,
        sid: Some(&callback.recording_sid),
        status,
        url: callback.recording_url.as_deref(),
        duration_s: callback.recording_duration,
        channels: callback.recording_channels,
        error: error.as_deref(),
        is_final: callback.is_final(),
    };
    if !ctx.shared.calls.recording(&input) {
        tracing::info!(call_sid = %callback.call_sid, "recording status after the call's record was written; dropped");
    }
    empty(StatusCode::NO_CONTENT)
}

/// `POST /twilio/stream-status`: a Media Streams status callback.
async fn stream_status(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let form = match signed_form(ctx, peer, req).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let callback = match StreamStatusCallback::from_form(form) {
        Ok(c) => c,
        Err(e) => return refused_callback(ctx, peer, CallbackKind::StreamStatus, &e),
    };
    let event = callback.stream_event.as_str();
    ctx.metrics().callback(CallbackKind::StreamStatus, event);
    tracing::info!(call_sid = %callback.call_sid, stream_sid = %callback.stream_sid, event, error = ?callback.stream_error, "stream status callback");
    let mut fields = vec![
        ("call_sid", callback.call_sid.as_str()),
        ("stream_sid", callback.stream_sid.as_str()),
        ("status", event),
    ];
    if let Some(name) = &callback.stream_name {
        fields.push(("stream_name", name));
    }
    if let Some(error) = &callback.stream_error {
        fields.push(("error", error));
    }
    ctx.shared.events.publish_fields("stream_status", &fields);
    empty(StatusCode::NO_CONTENT)
}

/// A signed webhook Twilio posts while the call is still up (the `<Dial>`
/// and `<Connect>` actions): parsed, or the 400 answer.
async fn action_webhook(
    ctx: &WorkerContext,
    peer: SocketAddr,
    req: Request<Incoming>,
    kind: CallbackKind,
) -> Result<VoiceWebhook, Response<Body>> {
    let form = signed_form(ctx, peer, req).await?;
    VoiceWebhook::from_form(form).map_err(|e| refused_callback(ctx, peer, kind, &e))
}

/// `POST /twilio/dial-status`: the forward's `<Dial action>`. The route is
/// matched again from `To` (stateless: any instance can answer it).
async fn dial_status(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let webhook = match action_webhook(ctx, peer, req, CallbackKind::DialStatus).await {
        Ok(w) => w,
        Err(response) => return response,
    };
    let Some(dial) = dial_call_status(&webhook).map(str::to_owned) else {
        let e = WebhookError::MissingField { field: "DialCallStatus" };
        return refused_callback(ctx, peer, CallbackKind::DialStatus, &e);
    };
    ctx.metrics().callback(CallbackKind::DialStatus, &dial);
    let shared = &ctx.shared;
    let call = &webhook.call;
    let live = shared.live_arc();
    let matched = match_route(&live.config.routes, &live.config.default_route, &call.to);
    let label = matched.label();
    let tags = proxy_tags(shared, &call.call_sid, &label);
    let next = after_dial_tagged(matched.route, &webhook, &dial, &shared.answer, &tags);
    let missed = next.missed_action.map_or("", OnMissed::as_str);
    tracing::info!(call_sid = %call.call_sid, dial_status = %dial, route = %label, missed_action = missed, "forward ended");
    shared.events.publish_fields(
        "dial_status",
        &[("call_sid", &call.call_sid), ("status", &dial), ("route", &label), ("missed_action", missed)],
    );
    // The answer hangs up unless the stream takes over: then its end ends the call.
    let ends_call = next.missed_action != Some(OnMissed::Stream);
    shared.calls.dial(&call.call_sid, Some(&dial), next.missed_action.map(OnMissed::as_str), ends_call);
    if let Some(sms) = next.sms {
        send_sms(ctx, &call.call_sid, sms).await;
    }
    twiml_response(&next.twiml)
}

/// `POST /twilio/stream-ended`: the stream's `<Connect action>`, posted when
/// the stream ends with the caller still on the line.
async fn stream_ended(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let webhook = match action_webhook(ctx, peer, req, CallbackKind::StreamStatus).await {
        Ok(w) => w,
        Err(response) => return response,
    };
    let shared = &ctx.shared;
    let call = &webhook.call;
    let live = shared.live_arc();
    let matched = match_route(&live.config.routes, &live.config.default_route, &call.to);
    // Twilio posts here only when voxproxy closed the stream with the caller
    // still on the line: a failed leg (the call task marks it before it
    // closes the stream) gets the fallback; a hang-up through the control
    // API, a drain or an idle Twilio ends the call.
    let end =
        if shared.calls.leg_failed_of(&call.call_sid) { StreamEnd::LegFailed } else { StreamEnd::Normal };
    let next = after_stream(matched.route, &webhook, end);
    tracing::info!(call_sid = %call.call_sid, route = %matched.label(), ?end, "stream ended with the caller on the line");
    shared.calls.dial(&call.call_sid, None, next.missed_action.map(OnMissed::as_str), true);
    if let Some(sms) = next.sms {
        send_sms(ctx, &call.call_sid, sms).await;
    }
    twiml_response(&next.twiml)
}

/// Sends a missed-call SMS through the REST API. A failure is logged and
/// the call goes on: the caller still hears the hang-up, not an error.
async fn send_sms(ctx: &WorkerContext, call_sid: &str, sms: SmsRequest) {
    let client = match ctx.rest_client() {
        Ok(client) => client,
        Err(message) => {
            tracing::warn!(call_sid, problem = %message, "missed-call SMS not sent");
            return;
        }
    };
    let request = SendSms::new(sms.to, sms.from, sms.body);
    let started = SystemTime::now();
    let result = tokio::time::timeout(SMS_TIMEOUT, client.send_sms(&request)).await;
    let traced =
        result.as_ref().map_err(|_| "no answer in time").and_then(|r| r.as_ref().map_err(|_| "refused"));
    traces::rest(&ctx.shared, "twilio.message.create", Some(call_sid), started, &traced);
    match result {
        Ok(Ok(message)) => tracing::info!(call_sid, message_sid = %message.sid, "missed-call SMS sent"),
        Ok(Err(e)) => tracing::warn!(call_sid, error = %e, "missed-call SMS refused by Twilio"),
        Err(_) => tracing::warn!(call_sid, "missed-call SMS: Twilio did not answer within {SMS_TIMEOUT:?}"),
    }
}

fn twiml_response(twiml: &Twiml) -> Response<Body> {
    match twiml.to_xml() {
        Ok(xml) => full(StatusCode::OK, "text/xml; charset=utf-8", xml),
        Err(e) => {
            tracing::error!(error = %e, "could not write TwiML");
            text(StatusCode::INTERNAL_SERVER_ERROR, "could not write TwiML\n")
        }
    }
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn media(
    ctx: &Rc<WorkerContext>,
    peer: SocketAddr,
    connection: &ConnState,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let is_upgrade = header_has_token(&req, header::CONNECTION, "upgrade")
        && header_has_token(&req, header::UPGRADE, "websocket");
    let version_ok = req.headers().get(header::SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key.filter(|_| is_upgrade && version_ok) else {
        ctx.metrics().websocket_error(crate::metrics::WsErrorKind::Handshake);
        let mut response =
            text(StatusCode::UPGRADE_REQUIRED, "this is the Media Streams WebSocket endpoint\n");
        response.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    };
    let target = target(&req);
    match &ctx.shared.validator {
        Some(validator) => {
            if let Err(e) = validator.validate_websocket(&target, signature_header(&req).as_deref()) {
                ctx.metrics().signature_failure(SignatureKind::WebSocket);
                tracing::warn!(%peer, target, error = %e, "media WebSocket refused: bad X-Twilio-Signature");
                return text(StatusCode::FORBIDDEN, "invalid X-Twilio-Signature\n");
            }
        }
        None => tracing::warn!(%peer, target, "signature NOT checked (--insecure-skip-signature)"),
    }
    // No call place or RTP port yet: the stream takes them once its `start`
    // is accepted (see `call`), so sockets that never start hold neither.
    let upgrade = hyper::upgrade::on(&mut req);
    let ctx = Rc::clone(ctx);
    // The WebSocket outlives this HTTP connection's task: it keeps the
    // connection's place in the worker's bounds until the call ends.
    tokio::task::spawn_local(call::run(ctx, peer, upgrade, connection.take_place()));
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    response
}

/// Whether the request carries `Authorization: Bearer <VOXPROXY_ADMIN_TOKEN>`.
fn authorized(ctx: &WorkerContext, req: &Request<Incoming>) -> bool {
    let live = ctx.shared.live();
    let Some(token) = &live.config.secrets.admin_token else { return false };
    let Some(given) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(given) = given.strip_prefix("Bearer ").or_else(|| given.strip_prefix("bearer ")) else {
        return false;
    };
    constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes())
}

async fn control(ctx: &WorkerContext, connection: &ConnState, req: Request<Incoming>) -> Response<Body> {
    // Without an admin token the control API does not exist.
    if ctx.shared.live().config.secrets.admin_token.is_none() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !authorized(ctx, &req) {
        let mut response =
            json_error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (VOXPROXY_ADMIN_TOKEN)");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"voxproxy\""));
        return response;
    }
    let path = req.uri().path().to_owned();
    let directory = &ctx.shared.directory;
    if let Some(store) = &ctx.shared.store
        && let Some(sid) = session_of(&path)
        && !directory.contains(sid)
        && !req.headers().contains_key(crate::store::FORWARDED_HEADER)
    {
        return forward(ctx, store, sid.to_owned(), req).await;
    }
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/sessions") => sessions(ctx).await,
        (method, p) if p.starts_with("/v1/sessions/") && p.matches('/').count() == 4 => {
            session_action(ctx, method, &p["/v1/sessions/".len()..], req).await
        }
        (method, p) if p.starts_with("/v1/sessions/") => {
            let sid = &p["/v1/sessions/".len()..];
            match method {
                Method::GET => match directory.get(sid) {
                    Some(view) => json(StatusCode::OK, &view),
                    None => json_error(StatusCode::NOT_FOUND, "no such session"),
                },
                Method::DELETE => {
                    if directory.command(sid, CallCommand::Hangup) {
                        json(
                            StatusCode::ACCEPTED,
                            &serde_json::json!({ "stream_sid": sid, "status": "ending" }),
                        )
                    } else {
                        json_error(StatusCode::NOT_FOUND, "no such session")
                    }
                }
                _ => json_error(StatusCode::METHOD_NOT_ALLOWED, "use GET or DELETE"),
            }
        }
        (Method::GET, "/v1/events") => events(ctx, connection),
        (Method::POST, "/v1/calls") => place_call(ctx, req).await,
        (Method::GET, "/v1/config") => admin::config(ctx),
        (Method::GET, "/v1/health") => admin::health(ctx).await,
        (_, "/v1/sessions" | "/v1/events" | "/v1/calls" | "/v1/config" | "/v1/health") => {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        }
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// The stream SID a `/v1/sessions/{sid}` or `/v1/sessions/{sid}/{action}` path names.
fn session_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/sessions/")?;
    let sid = rest.split_once('/').map_or(rest, |(sid, _)| sid);
    (!sid.is_empty()).then_some(sid)
}

/// `GET /v1/sessions`: this instance's calls, and with a store every other
/// live instance's (each with its `instance`). When the store cannot be
/// reached the local calls are still listed, with `store_error` saying so.
async fn sessions(ctx: &WorkerContext) -> Response<Body> {
    let local = ctx.shared.directory.list();
    let Some(store) = &ctx.shared.store else {
        return json(StatusCode::OK, &serde_json::json!({ "sessions": local }));
    };
    let mut sessions = Vec::with_capacity(local.len());
    for view in local {
        let mut value = serde_json::to_value(view).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("instance".into(), store.instance_id().into());
        }
        sessions.push(value);
    }
    match store.remote_sessions().await {
        Ok(remote) => {
            sessions.extend(remote.into_iter().map(|r| serde_json::to_value(r).unwrap_or_default()));
            json(StatusCode::OK, &serde_json::json!({ "sessions": sessions }))
        }
        Err(e) => json(StatusCode::OK, &serde_json::json!({ "sessions": sessions, "store_error": e })),
    }
}

/// A session request for a call this instance does not carry: sent to the
/// instance that does (found in the store), its answer passed back as is.
async fn forward(
    ctx: &WorkerContext,
    store: &crate::store::Store,
    stream_sid: String,
    req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let path =
        req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let body = match read_body(ctx, req).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let request = crate::store::Forward { stream_sid, method, path, authorization, body };
    match store.forward(request).await {
        crate::store::Forwarded::NotFound => json_error(StatusCode::NOT_FOUND, "no such session"),
        crate::store::Forwarded::Answer { status, body } => full(status, "application/json", body),
        crate::store::Forwarded::Unavailable(message) => {
            json_error(StatusCode::SERVICE_UNAVAILABLE, &message)
        }
    }
}

/// `/v1/sessions/{streamSid}/{action}`: what the operator does to a call
/// through Twilio (see `admin`).
async fn session_action(
    ctx: &WorkerContext,
    method: Method,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some((sid, action)) = rest.split_once('/') else {
        return json_error(StatusCode::NOT_FOUND, "not found");
    };
    match (method, action) {
        (Method::POST, "hangup") => admin::hangup(ctx, sid).await,
        (Method::POST, "stream") => admin::stream(ctx, sid, req).await,
        (_, "hangup" | "stream") => json_error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
        _ => json_error(StatusCode::NOT_FOUND, "not found"),
    }
}

fn events(ctx: &WorkerContext, connection: &ConnState) -> Response<Body> {
    let receiver = ctx.shared.events.subscribe();
    let watch = connection.watch_sse();
    let body = sse::event_stream(receiver, sse::SSE_HEARTBEAT, watch, ctx.metrics_handle());
    let mut response = Response::new(StreamBody::new(body).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaceCall {
    to: String,
    from: String,
}

async fn place_call(ctx: &WorkerContext, req: Request<Incoming>) -> Response<Body> {
    let body = match read_body(ctx, req).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let request: PlaceCall = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"to\": \"+1…\", \"from\": \"+1…\"}}: {e}"),
            );
        }
    };
    let client = match ctx.rest_client() {
        Ok(client) => client,
        Err(message) => return json_error(StatusCode::SERVICE_UNAVAILABLE, &message),
    };
    let voice_url = format!("{}/twilio/voice", ctx.shared.live().config.server.public_url);
    let create = voxproxy_adapters::rest::CreateCall::new(
        request.to,
        request.from,
        voxproxy_adapters::rest::CallInstructions::Url(voice_url),
    );
    let started = SystemTime::now();
    let result = client.create_call(&create).await;
    let call_sid = result.as_ref().ok().map(|call| call.sid.as_str());
    traces::rest(&ctx.shared, "twilio.call.create", call_sid, started, &result);
    match result {
        Ok(call) => json(
            StatusCode::CREATED,
            &serde_json::json!({ "call_sid": call.sid, "status": call.status.as_str() }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "POST /v1/calls: Twilio refused the call");
            json_error(StatusCode::BAD_GATEWAY, &e.to_string())
        }
    }
}

/// Constant-time comparison of the bearer token.
mod subtle_compare {
    use subtle::ConstantTimeEq as _;

    pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_listener_takes_metrics_and_the_control_api_away() {
        let paths =
            ["/twilio/voice", "/twilio/media", "/metrics", "/v1/sessions", "/v1", "/healthz", "/readyz"];
        let served = |surface| paths.iter().filter(|p| reachable(surface, p)).copied().collect::<Vec<_>>();
        assert_eq!(served(Surface::All), paths);
        assert_eq!(served(Surface::Public), ["/twilio/voice", "/twilio/media", "/healthz", "/readyz"]);
        assert_eq!(served(Surface::Admin), ["/metrics", "/v1/sessions", "/v1", "/healthz", "/readyz"]);
        // A path that only starts like the control API is not it.
        assert!(reachable(Surface::Public, "/v1x"));
        assert!(!reachable(Surface::Admin, "/v1x"));
    }
}
