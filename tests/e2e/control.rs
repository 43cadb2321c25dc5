//! The operator's side: graceful drain on SIGTERM, the control API
//! (sessions, hang-up, outbound calls through a fake Twilio REST API), and
//! TLS on the listener.

use std::time::Duration;

use base64::Engine as _;

use crate::audio::{self, FRAME};
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, Backend, FakeRest, Io, Proxy, TwilioCall, WAIT, is_busy_reject,
    sid, test_cert, test_key,
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

/// A Twilio REST API that answers every request with a queued call.
async fn fake_rest_api() -> FakeRest {
    FakeRest::start(|_| {
        let call = serde_json::json!({
            "sid": "CAfeedfacefeedfacefeedfacefeedface",
            "status": "queued",
            "account_sid": ACCOUNT_SID,
            "to": "+15550003333",
            "from": "+15550004444",
            "direction": "outbound-api",
        });
        (201, call)
    })
    .await
}

async fn place_outbound_call(io: Io) {
    let api = fake_rest_api().await;
    let api_base = api.base();
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
    assert!(api.requests().is_empty(), "nothing reaches Twilio without the admin token");

    let response = proxy.admin("POST", "/v1/calls", request.into_bytes()).await;
    assert_eq!(response.status, 201, "POST /v1/calls: {}", response.text());
    assert_eq!(response.json()["call_sid"], "CAfeedfacefeedfacefeedfacefeedface");

    let seen = api.requests();
    assert_eq!(seen.len(), 1, "one request to Twilio: {seen:?}");
    let sent = &seen[0];
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.path, format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    assert_eq!(sent.authorization.as_deref(), Some(format!("Basic {basic}").as_str()), "HTTP basic auth");
    assert_eq!(sent.form("To").as_deref(), Some("+15550003333"), "body {}", sent.body);
    assert_eq!(sent.form("From").as_deref(), Some("+15550004444"), "body {}", sent.body);
    assert_eq!(
        sent.form("Url"),
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
