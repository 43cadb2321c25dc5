//! OpenTelemetry: `voxproxy serve --otel-endpoint` exports one trace per
//! call to an OTLP/HTTP receiver the test runs (it decodes the protobuf
//! `ExportTraceServiceRequest`s that arrive). An RTP call and a bot call
//! give their spans with the call's ids and the parent/child structure, the
//! bot's handshake carries a `traceparent` of the same trace, JSON logs
//! carry the ids, and a collector that is not there costs the calls nothing
//! but is counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use tokio::net::{TcpListener, UdpSocket};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::audio::all_codes_frames;
use crate::harness::{ACCOUNT_SID, ADMIN_TOKEN, Backend, FakeRest, Io, Proxy, TwilioCall, WAIT};

both_io!(
    an_rtp_call_is_one_trace,
    a_bot_joins_the_call_trace,
    a_pbx_gets_the_trace_in_the_invite,
    rest_requests_are_spans_of_their_call,
    an_unreachable_collector_costs_calls_nothing
);

/// A span as the receiver decoded it.
#[derive(Clone, Debug)]
struct Span {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
    failed: bool,
    service: String,
}

/// An OTLP/HTTP trace receiver on loopback: decodes every
/// `POST /v1/traces` and keeps its spans.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let kept = Arc::clone(&kept);
                            async move {
                                let path_ok = req.uri().path() == "/v1/traces";
                                let protobuf = req
                                    .headers()
                                    .get("content-type")
                                    .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
                                let body =
                                    req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                                let decoded = ExportTraceServiceRequest::decode(body);
                                let status = match decoded {
                                    Ok(request) if path_ok && protobuf => {
                                        kept.lock().expect("spans").extend(spans_of(request));
                                        200
                                    }
                                    _ => 400,
                                };
                                let answer = ExportTraceServiceResponse::default().encode_to_vec();
                                let mut response = http::Response::new(Full::new(Bytes::from(answer)));
                                *response.status_mut() = http::StatusCode::from_u16(status).expect("status");
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Collector { addr, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the trace `trace_id` has a span of each of `names`; returns the trace.
    async fn wait_trace(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let trace: Vec<Span> = self
                .spans
                .lock()
                .expect("spans")
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if names.iter().all(|n| trace.iter().any(|s| s.name == *n)) {
                return trace;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id} lacks some of {names:?} after {WAIT:?}: {trace:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                    .collect();
                out.push(Span {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes,
                    // STATUS_CODE_ERROR
                    failed: span.status.is_some_and(|s| s.code == 2),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn text(value: Option<&AnyValue>) -> String {
    match value {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The trace id voxproxy derives from a Twilio CallSid: its 32 hex digits.
fn trace_of(call_sid: &str) -> String {
    call_sid.strip_prefix("CA").expect("a CallSid").to_ascii_lowercase()
}

fn one<'a>(trace: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<&Span> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name} span: {trace:#?}");
    found[0]
}

async fn an_rtp_call_is_one_trace(io: Io) {
    let collector = Collector::start().await;
    let mut backend = Backend::bind().await;
    let env = [("VOXPROXY_LOG_FORMAT", "json"), ("VOXPROXY_OTEL_SERVICE_NAME", "voxproxy-e2e")];
    let proxy =
        Proxy::start(io, &env, &["--backend", &backend.arg(), "--otel-endpoint", &collector.endpoint()]);
    let mut call = TwilioCall::start(&proxy).await;
    let frames = all_codes_frames(50);
    for frame in &frames {
        call.send_media(frame).await;
    }
    backend.recv_audio(frames.len(), 0).await;
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    proxy.wait_record(&call.stream_sid).await;

    let trace_id = trace_of(&call.call_sid);
    let trace = collector.wait_trace(&trace_id, &["call", "call.end", "twilio.webhook", "rtp.setup"]).await;
    // 50 frames, four spans: none per frame.
    assert_eq!(trace.len(), 4, "{trace:#?}");
    let root = one(&trace, "call");
    assert_eq!(root.parent_span_id, "", "the call span is the root");
    assert_eq!(root.attributes["twilio.call_sid"], call.call_sid);
    assert_eq!(root.attributes["twilio.stream_sid"], call.stream_sid);
    assert_eq!(root.attributes["voxproxy.leg"], "rtp");
    assert_eq!(root.attributes["voxproxy.route"], "default");
    assert_eq!(root.attributes["voxproxy.io_backend"], io.as_str());
    assert_eq!(root.service, "voxproxy-e2e");
    for name in ["twilio.webhook", "rtp.setup", "call.end"] {
        assert_eq!(one(&trace, name).parent_span_id, root.span_id, "{name} is a child of the call");
    }
    assert_eq!(one(&trace, "twilio.webhook").attributes["voxproxy.answer"], "twiml");
    assert_eq!(one(&trace, "call.end").attributes["voxproxy.end_reason"], "twilio_stop");
    assert!(trace.iter().all(|s| !s.failed), "{trace:#?}");
    proxy.wait_metric("voxproxy_otel_spans_total{result=\"exported\"}", 4.0).await;

    // The call's log lines carry the trace and the root span.
    let logs = proxy.stderr_text();
    let started = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "stream started")
        .unwrap_or_else(|| panic!("no `stream started` line: {logs}"));
    assert_eq!(started["trace_id"], trace_id.as_str(), "{started}");
    assert_eq!(started["span_id"], root.span_id.as_str(), "{started}");
}

async fn a_bot_joins_the_call_trace(io: Io) {
    let collector = Collector::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the bot");
    let bot_url = format!("ws://{}/agent?token=secret", listener.local_addr().expect("bot address"));
    let proxy = Proxy::start(io, &[], &["--backend", &bot_url, "--otel-endpoint", &collector.endpoint()]);
    let mut call = TwilioCall::start(&proxy).await;

    let (tcp, _) =
        tokio::time::timeout(WAIT, listener.accept()).await.expect("the proxy dials").expect("accept");
    let mut traceparent = None;
    #[allow(clippy::result_large_err)] // tungstenite's callback type
    let callback = |request: &Request, response: Response| {
        traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(response)
    };
    let mut bot = tokio_tungstenite::accept_hdr_async(tcp, callback).await.expect("bot handshake");
    let traceparent = traceparent.expect("the bot's handshake carries a traceparent");
    // Wait for the bot's `start`, then hang up as the bot.
    while let Some(Ok(message)) = tokio::time::timeout(WAIT, bot.next()).await.expect("bot message") {
        if message.to_text().is_ok_and(|t| t.contains("\"start\"")) {
            break;
        }
    }
    bot.close(None).await.expect("bot closes");
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));

    let trace_id = trace_of(&call.call_sid);
    let trace = collector.wait_trace(&trace_id, &["call", "call.end", "twilio.webhook", "ws.connect"]).await;
    let connect = one(&trace, "ws.connect");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts, ["00", trace_id.as_str(), connect.span_id.as_str(), "01"], "{traceparent}");
    let root = one(&trace, "call");
    assert_eq!(connect.parent_span_id, root.span_id);
    assert_eq!(root.attributes["voxproxy.leg"], "ws");
    assert_eq!(connect.attributes["url.path"], "/agent", "never the query: {connect:?}");
    let end = one(&trace, "call.end");
    assert_eq!(end.attributes["voxproxy.end_reason"], "backend_hangup");
    assert_eq!(end.attributes["voxproxy.hung_up_by"], "bot");
}

/// A PBX on UDP that answers the first INVITE with 486 Busy Here, and
/// returns that INVITE.
async fn busy_pbx(socket: &UdpSocket) -> String {
    let mut buf = vec![0u8; 8192];
    let (n, from) =
        tokio::time::timeout(WAIT, socket.recv_from(&mut buf)).await.expect("an INVITE").expect("recv");
    let invite = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(invite.starts_with("INVITE "), "{invite}");
    let header = |name: &str| {
        invite
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with(&format!("{}:", name.to_ascii_lowercase())))
            .unwrap_or_else(|| panic!("no {name} in {invite}"))
            .trim_end()
            .to_owned()
    };
    let busy = format!(
        "SIP/2.0 486 Busy Here\r\n{}\r\n{}\r\n{};tag=pbx1\r\n{}\r\n{}\r\nContent-Length: 0\r\n\r\n",
        header("Via"),
        header("From"),
        header("To"),
        header("Call-ID"),
        header("CSeq"),
    );
    socket.send_to(busy.as_bytes(), from).await.expect("send 486");
    invite
}

async fn a_pbx_gets_the_trace_in_the_invite(io: Io) {
    let collector = Collector::start().await;
    let pbx = UdpSocket::bind("127.0.0.1:0").await.expect("bind the PBX");
    let uri = format!("sip:agent@{}", pbx.local_addr().expect("PBX address"));
    let proxy = Proxy::start(io, &[], &["--backend", &uri, "--otel-endpoint", &collector.endpoint()]);
    let mut call = TwilioCall::start(&proxy).await;
    let invite = busy_pbx(&pbx).await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1011), "a failed leg");

    let trace_id = trace_of(&call.call_sid);
    let trace = collector.wait_trace(&trace_id, &["call", "call.end", "twilio.webhook", "sip.invite"]).await;
    let sip = one(&trace, "sip.invite");
    let expected = format!("traceparent: 00-{trace_id}-{}-01", sip.span_id);
    assert!(invite.lines().any(|l| l.trim_end() == expected), "{expected} not in\n{invite}");
    assert_eq!(sip.parent_span_id, one(&trace, "call").span_id);
    assert_eq!(sip.attributes["sip.status_code"], "486");
    assert!(sip.failed, "a 486 is a failed INVITE: {sip:?}");
    assert_eq!(one(&trace, "call").attributes["voxproxy.leg"], "sip");
    assert_eq!(one(&trace, "call.end").attributes["voxproxy.end_reason"], "backend_failed");
    assert!(trace.iter().all(|s| s.name != "rtp.setup"), "a SIP leg's setup is its INVITE");
}

async fn rest_requests_are_spans_of_their_call(io: Io) {
    const PLACED: &str = "CAfeedfacefeedfacefeedfacefeedface";
    let collector = Collector::start().await;
    let api = FakeRest::start(|request| {
        let call = serde_json::json!({
            "sid": PLACED,
            "status": "queued",
            "account_sid": ACCOUNT_SID,
            "to": "+15550003333",
            "from": "+15550004444",
        });
        (if request.path.ends_with("/Calls.json") { 201 } else { 200 }, call)
    })
    .await;
    let mut backend = Backend::bind().await;
    let api_base = api.base();
    let env = [
        ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("VOXPROXY_TWILIO_API_BASE", api_base.as_str()),
    ];
    let proxy =
        Proxy::start(io, &env, &["--backend", &backend.arg(), "--otel-endpoint", &collector.endpoint()]);

    // An outbound call: its create request starts the trace of the call it made.
    let request = serde_json::json!({"to": "+15550003333", "from": "+15550004444"}).to_string();
    assert_eq!(proxy.admin("POST", "/v1/calls", request.into_bytes()).await.status, 201);
    let placed = collector.wait_trace(&trace_of(PLACED), &["twilio.call.create"]).await;
    let create = one(&placed, "twilio.call.create");
    assert_eq!(create.attributes["twilio.call_sid"], PLACED);
    assert_eq!(create.parent_span_id.len(), 16, "a child of the placed call's root: {create:?}");

    // Hanging up a live call through the control API: twilio.call.update in its trace.
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&all_codes_frames(1)[0]).await;
    backend.recv_audio(1, 0).await;
    let path = format!("/v1/sessions/{}/hangup", call.stream_sid);
    let answer = proxy.admin("POST", &path, Vec::new()).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    call.wait_closed(WAIT).await;
    let trace =
        collector.wait_trace(&trace_of(&call.call_sid), &["call", "call.end", "twilio.call.update"]).await;
    let update = one(&trace, "twilio.call.update");
    assert_eq!(update.parent_span_id, one(&trace, "call").span_id);
    assert!(!update.failed, "{update:?}");
}

async fn an_unreachable_collector_costs_calls_nothing(io: Io) {
    // A collector that takes connections and never answers: each export
    // waits out otel.export_timeout on the export thread.
    let hole = TcpListener::bind("127.0.0.1:0").await.expect("bind the black hole");
    let endpoint = format!("http://{}", hole.local_addr().expect("address"));
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((tcp, _)) = hole.accept().await {
            conns.push(tcp);
        }
    });
    let mut backend = Backend::bind().await;
    let env = [("VOXPROXY_OTEL_EXPORT_TIMEOUT", "1s")];
    let proxy = Proxy::start(io, &env, &["--backend", &backend.arg(), "--otel-endpoint", &endpoint]);
    for n in 0..3 {
        // Each call sends from its own RTP port.
        backend.proxy = None;
        let asked = std::time::Instant::now();
        let mut call = TwilioCall::start(&proxy).await;
        let setup = asked.elapsed();
        assert!(setup < Duration::from_millis(500), "call {n}: webhook and stream start took {setup:?}");
        let frames = all_codes_frames(10);
        for frame in &frames {
            call.send_media(frame).await;
        }
        backend.recv_audio(frames.len(), 0).await;
        call.send_stop().await;
        assert_eq!(call.wait_closed(WAIT).await, Some(1000));
        let record = proxy.wait_record(&call.stream_sid).await;
        assert_eq!(record["end_reason"], "twilio_stop");
        assert_eq!(record["inbound_frames"], 10);
    }
    // The exporter gave up on the collector, and counted it.
    proxy.wait_metric("voxproxy_otel_export_errors_total", 1.0).await;
    let metrics = proxy.metrics().await;
    assert!(metrics.get("voxproxy_otel_spans_total{result=\"recorded\"}") >= 12.0);
    assert_eq!(metrics.get("voxproxy_otel_spans_total{result=\"exported\"}"), 0.0);
    assert!(proxy.stderr_text().contains("export to otel.endpoint failed"), "{}", proxy.stderr_text());
    held.abort();
}
