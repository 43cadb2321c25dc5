//! The operator's side: graceful drain on SIGTERM, the control API
//! (sessions, hang-up, outbound calls through a fake Twilio REST API), and
//! TLS on the listener.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;

use crate::audio::{self, FRAME};
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, Backend, Io, Proxy, TwilioCall, WAIT, is_busy_reject, sid,
    test_cert, test_key,
};

both_io!(sigterm_drains, control_api_needs_token, sessions_and_hangup, place_outbound_call, tls_round_trip);

async fn sigterm_drains(io: Io) {
    let mut backend = Backend::bind().await;
    let mut proxy = Proxy::start(io, &[("VOXPROXY_DRAIN_TIMEOUT", "2s")], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&[0x21; FRAME]).await;
    backend.recv_audio(1, 0).await;
    assert_eq!(proxy.get("/readyz").await.status, 200);

    proxy.signal("TERM");
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.get("/readyz").await.status != 503 {
        assert!(tokio::time::Instant::now() < deadline, "/readyz never turned 503 after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(proxy.get("/healthz").await.status, 200, "still alive while draining");
    let answer = proxy.webhook(&sid("CA")).await.twiml();
    assert!(is_busy_reject(&answer), "a new call while draining is rejected: {answer:?}");

    // The running call still flows both ways.
    call.send_media(&[0x22; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x22; FRAME]);
    backend.send_audio(0, &[0x23; FRAME], 160, true).await;
    assert_eq!(call.collect_media(FRAME, WAIT).await, vec![0x23; FRAME]);

    assert_eq!(
        call.wait_closed(Duration::from_secs(8)).await,
        Some(1001),
        "drain.timeout ends the call with 1001"
    );
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "drain");
    let status = proxy.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "voxproxy exits 0 after draining, got {status}");
}

async fn control_api_needs_token(io: Io) {
    let proxy = Proxy::start(io, &[], &[]);
    for path in ["/v1/sessions", "/v1/events"] {
        assert_eq!(proxy.get(path).await.status, 404, "{path} without VOXPROXY_ADMIN_TOKEN does not exist");
        assert_eq!(proxy.admin("GET", path, Vec::new()).await.status, 404, "{path}: no token configured");
    }
    drop(proxy);

    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &[]);
    assert_eq!(proxy.get("/v1/sessions").await.status, 401, "no bearer token");
    let wrong = proxy.http("GET", "/v1/sessions", &[("authorization", "Bearer nope")], Vec::new()).await;
    assert_eq!(wrong.status, 401, "wrong bearer token");
    assert!(wrong.headers.contains_key("www-authenticate"));
    let ok = proxy.admin("GET", "/v1/sessions", Vec::new()).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["sessions"], serde_json::json!([]));
}

async fn sessions_and_hangup(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&[0x31; FRAME]).await;
    backend.recv_audio(1, 0).await;
    let rtp_port = backend.proxy.expect("the call's RTP address").port();

    let list = proxy.admin("GET", "/v1/sessions", Vec::new()).await;
    assert_eq!(list.status, 200);
    let sessions = list.json()["sessions"].as_array().cloned().expect("a list");
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let session = &sessions[0];
    assert_eq!(session["stream_sid"], call.stream_sid.as_str());
    assert_eq!(session["call_sid"], call.call_sid.as_str());
    assert_eq!(session["from"], "+15550001111");
    assert_eq!(session["rtp_port"], rtp_port, "the port the call's RTP comes from");

    let one = proxy.admin("GET", &format!("/v1/sessions/{}", call.stream_sid), Vec::new()).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["stream_sid"], call.stream_sid.as_str());
    assert!(one.json()["stats"]["inbound_frames"].is_u64());
    assert_eq!(proxy.admin("GET", "/v1/sessions/MZnothing", Vec::new()).await.status, 404);

    let hangup = proxy.admin("DELETE", &format!("/v1/sessions/{}", call.stream_sid), Vec::new()).await;
    assert!(hangup.status == 202 || hangup.status == 200, "DELETE: {} {}", hangup.status, hangup.text());
    assert_eq!(call.wait_closed(WAIT).await, Some(1000), "hang-up closes the WebSocket normally");
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "hangup");
    // The call leaves the directory right after its record is written.
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.admin("GET", "/v1/sessions", Vec::new()).await.json()["sessions"] != serde_json::json!([]) {
        assert!(tokio::time::Instant::now() < deadline, "the ended call stayed in /v1/sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        proxy.admin("DELETE", &format!("/v1/sessions/{}", call.stream_sid), Vec::new()).await.status,
        404
    );
}

/// One request the fake Twilio REST API received.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    authorization: Option<String>,
    body: String,
}

/// A tiny Twilio REST API: answers every request with a queued call.
async fn fake_rest_api() -> (std::net::SocketAddr, Arc<Mutex<Vec<Recorded>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_owned();
                        let authorization = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        log.lock().expect("log").push(Recorded {
                            method,
                            path,
                            authorization,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        let call = serde_json::json!({
                            "sid": "CAfeedfacefeedfacefeedfacefeedface",
                            "status": "queued",
                            "account_sid": ACCOUNT_SID,
                            "to": "+15550003333",
                            "from": "+15550004444",
                            "direction": "outbound-api",
                        });
                        let mut response = http::Response::new(Full::new(Bytes::from(call.to_string())));
                        *response.status_mut() = http::StatusCode::CREATED;
                        response
                            .headers_mut()
                            .insert("content-type", http::HeaderValue::from_static("application/json"));
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let bytes = v.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
                    out.push(u8::from_str_radix(hex, 16).expect("hex"));
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).expect("UTF-8")
        })
    })
}

async fn place_outbound_call(io: Io) {
    let (api, seen) = fake_rest_api().await;
    let api_base = format!("http://{api}");
    let proxy = Proxy::start(
        io,
        &[
            ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("VOXPROXY_TWILIO_API_BASE", &api_base),
        ],
        &[],
    );
    let request = serde_json::json!({"to": "+15550003333", "from": "+15550004444"}).to_string();
    let wrong = proxy
        .http("POST", "/v1/calls", &[("authorization", "Bearer nope")], request.clone().into_bytes())
        .await;
    assert_eq!(wrong.status, 401);
    assert!(seen.lock().expect("log").is_empty(), "nothing reaches Twilio without the admin token");

    let response = proxy.admin("POST", "/v1/calls", request.into_bytes()).await;
    assert_eq!(response.status, 201, "POST /v1/calls: {}", response.text());
    assert_eq!(response.json()["call_sid"], "CAfeedfacefeedfacefeedfacefeedface");

    let seen = seen.lock().expect("log").clone();
    assert_eq!(seen.len(), 1, "one request to Twilio: {seen:?}");
    let sent = &seen[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    assert_eq!(sent.authorization.as_deref(), Some(format!("Basic {basic}").as_str()), "HTTP basic auth");
    assert_eq!(form_value(&sent.body, "To").as_deref(), Some("+15550003333"), "body {}", sent.body);
    assert_eq!(form_value(&sent.body, "From").as_deref(), Some("+15550004444"), "body {}", sent.body);
    assert_eq!(
        form_value(&sent.body, "Url"),
        Some(format!("{}/twilio/voice", proxy.public_url)),
        "Twilio fetches its TwiML from this proxy's voice webhook"
    );
}

async fn tls_round_trip(io: Io) {
    let mut backend = Backend::bind().await;
    let (cert, key) = (test_cert(), test_key());
    let proxy = Proxy::start(
        io,
        &[
            ("VOXPROXY_SERVER_TLS_CERT", cert.to_str().expect("path")),
            ("VOXPROXY_SERVER_TLS_KEY", key.to_str().expect("path")),
            ("VOXPROXY_VAD_BARGE_IN", "false"),
        ],
        &["--backend", &backend.arg()],
    );
    assert!(proxy.public_url.starts_with("https://"));
    assert_eq!(proxy.get("/healthz").await.status, 200, "https works");
    // TwilioCall::start checks the TwiML names a wss:// stream URL.
    let mut call = TwilioCall::start(&proxy).await;
    let frames = audio::all_codes_frames(20);
    for frame in &frames {
        call.send_media(frame).await;
    }
    let packets = backend.recv_audio(frames.len(), 0).await;
    for (packet, frame) in packets.iter().zip(&frames) {
        assert_eq!(&packet.payload, frame);
    }
    for packet in &packets {
        backend.echo(packet, 160).await;
    }
    assert_eq!(call.collect_media(20 * FRAME, WAIT).await, frames.concat(), "PCMU round trip over wss");
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    assert_eq!(proxy.wait_record(&call.stream_sid).await["end_reason"], "twilio_stop");
}
