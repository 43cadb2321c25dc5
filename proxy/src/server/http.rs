//! The HTTP surface: one hyper service per connection, routing every path of
//! docs/ARCHITECTURE.md, *The HTTP surface*. Webhooks are checked (size, rate, signature) before
//! they are parsed; the media WebSocket is checked (signature, capacity)
//! before the call task takes over the upgraded connection.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::Incoming;
use subtle_compare::constant_time_eq;
use voxproxy_adapters::form::Form;
use voxproxy_adapters::stream_token::STREAM_TOKEN_PARAMETER;
use voxproxy_adapters::twiml::{Connect, Reject, RejectReason, Response as Twiml, Stream};
use voxproxy_adapters::webhook::VoiceWebhook;

use super::directory::CallCommand;
use super::{ConnState, WorkerContext, sse};
use super::{admin, call};
use crate::metrics::{RefuseReason, Route, SignatureKind};

/// The body of every response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

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
    let (route, response) = match (method, path.as_str()) {
        (Method::POST, "/twilio/voice") => (Route::Voice, voice(&ctx, peer, req).await),
        (Method::POST, "/twilio/status") => (Route::Status, callback(&ctx, peer, req).await),
        (Method::POST, "/twilio/stream-status") => (Route::StreamStatus, callback(&ctx, peer, req).await),
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
    let Some(limiter) = &ctx.shared.rate_limiter else { return false };
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
    let limit = ctx.shared.config.limits.max_body_bytes as usize;
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
    let call = &webhook.call;
    let shared = &ctx.shared;
    let refuse = if shared.draining.load(Ordering::Acquire) {
        Some(RefuseReason::Draining)
    } else if shared.active_calls.load(Ordering::Acquire) >= shared.config.limits.max_calls as usize {
        Some(RefuseReason::MaxCalls)
    } else if shared.ports.available() == 0 {
        Some(RefuseReason::NoRtpPort)
    } else if !shared.fds_for_one_more_call() {
        Some(RefuseReason::FdLimit)
    } else {
        None
    };
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
        let mut stream = match Stream::new(shared.media_url.clone()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "server.public_url does not make a valid stream URL");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "misconfigured public URL\n");
            }
        };
        stream.status_callback = Some(format!("{}/twilio/stream-status", shared.config.server.public_url));
        stream = stream
            .parameter("CallSid", call.call_sid.clone())
            .parameter("From", call.from.clone())
            .parameter("To", call.to.clone());
        for (name, value) in &shared.config.twilio.stream_parameters {
            if name != STREAM_TOKEN_PARAMETER {
                stream = stream.parameter(name.clone(), value.clone());
            }
        }
        if let Some(key) = &shared.stream_token {
            // Twilio echoes it in `start`: proof that this deployment answered the call.
            stream = stream.parameter(STREAM_TOKEN_PARAMETER, key.token(&call.call_sid));
        }
        tracing::info!(call_sid = %call.call_sid, from = %call.from, to = %call.to, "voice webhook answered with <Connect><Stream>");
        Twiml::new().connect(Connect::new().stream(stream))
    };
    match twiml.to_xml() {
        Ok(xml) => full(StatusCode::OK, "text/xml; charset=utf-8", xml),
        Err(e) => {
            tracing::error!(error = %e, "could not write TwiML");
            text(StatusCode::INTERNAL_SERVER_ERROR, "could not write TwiML\n")
        }
    }
}

async fn callback(ctx: &WorkerContext, peer: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match signed_form(ctx, peer, req).await {
        Ok(form) => {
            tracing::info!(
                path,
                call_sid = form.get("CallSid").unwrap_or(""),
                status = form.get("CallStatus").or_else(|| form.get("StreamEvent")).unwrap_or(""),
                "status callback"
            );
            empty(StatusCode::NO_CONTENT)
        }
        Err(response) => response,
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
    let Some(token) = &ctx.shared.config.secrets.admin_token else { return false };
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
    if ctx.shared.config.secrets.admin_token.is_none() {
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
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/v1/sessions") => {
            json(StatusCode::OK, &serde_json::json!({ "sessions": directory.list() }))
        }
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
    let voice_url = format!("{}/twilio/voice", ctx.shared.config.server.public_url);
    let create = voxproxy_adapters::rest::CreateCall::new(
        request.to,
        request.from,
        voxproxy_adapters::rest::CallInstructions::Url(voice_url),
    );
    match client.create_call(&create).await {
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
