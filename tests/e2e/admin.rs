//! Control and health through the control API: hanging up and stopping a
//! stream through a fake Twilio REST API, the redacted configuration, and
//! the health report (RTP ports running out, credentials Twilio refuses).

use serde_json::Value;

use crate::audio::FRAME;
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, AUTH_TOKEN, Backend, FakeRest, Io, Proxy, TwilioCall, WAIT, free_udp_port,
};

both_io!(
    hangup_and_stream_stop_through_twilio,
    hangup_without_credentials,
    config_hides_secrets,
    health_reports_ports_and_credentials
);

/// A fake Twilio REST API: the account answers `account_status` (200 or
/// 401), a call update answers a completed call, a stream update a stopped
/// stream named as in the path.
async fn fake_twilio(account_status: u16) -> FakeRest {
    FakeRest::start(move |request| answer(&request.path, account_status)).await
}

fn answer(path: &str, account_status: u16) -> (u16, Value) {
    if path.ends_with(&format!("/Accounts/{ACCOUNT_SID}.json")) {
        if account_status == 200 {
            (200, serde_json::json!({"sid": ACCOUNT_SID, "status": "active"}))
        } else {
            (account_status, serde_json::json!({"code": 20003, "message": "Authenticate", "status": 401}))
        }
    } else if let Some((_, name)) = path.rsplit_once("/Streams/") {
        let name = name.trim_end_matches(".json");
        (
            200,
            serde_json::json!({"sid": "MZ0123456789abcdef0123456789abcdef", "status": "stopped", "name": name}),
        )
    } else {
        (200, serde_json::json!({"sid": "CA0123456789abcdef0123456789abcdef", "status": "completed"}))
    }
}

fn with_twilio(base: &str) -> Vec<(&str, &str)> {
    vec![
        ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("VOXPROXY_TWILIO_API_BASE", base),
    ]
}

fn check<'a>(health: &'a Value, name: &str) -> &'a Value {
    let checks = health["checks"].as_array().expect("checks");
    checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name} check in {health}"))
}

async fn hangup_and_stream_stop_through_twilio(io: Io) {
    let api = fake_twilio(200).await;
    let base = api.base();
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &with_twilio(&base), &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&[0x41; FRAME]).await;
    backend.recv_audio(1, 0).await;
    let prefix = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}", call.call_sid);
    let session = format!("/v1/sessions/{}", call.stream_sid);

    let health = proxy.admin("GET", "/v1/health", Vec::new()).await;
    assert_eq!(health.status, 200, "{}", health.text());
    let health = health.json();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(check(&health, "twilio_credentials")["status"], "ok", "{health}");
    assert_eq!(check(&health, "backend")["status"], "unknown", "RTP has no probe: {health}");

    let bad = proxy.admin("POST", &format!("{session}/stream"), br#"{"action":"pause"}"#.to_vec()).await;
    assert_eq!(bad.status, 400, "{}", bad.text());
    let own = proxy.admin("POST", &format!("{session}/stream"), br#"{"action":"stop"}"#.to_vec()).await;
    assert_eq!(own.status, 200, "{}", own.text());
    let named = br#"{"action":"stop","name":"fork_1"}"#.to_vec();
    let named = proxy.admin("POST", &format!("{session}/stream"), named).await;
    assert_eq!((named.status, &named.json()["name"]), (200, &Value::from("fork_1")), "{}", named.text());

    let hangup = proxy.admin("POST", &format!("{session}/hangup"), Vec::new()).await;
    assert_eq!(hangup.status, 200, "{}", hangup.text());
    assert_eq!(hangup.json()["call_status"], "completed");
    assert_eq!(call.wait_closed(WAIT).await, Some(1000), "the stream is closed after Twilio ended the call");
    assert_eq!(proxy.wait_record(&call.stream_sid).await["end_reason"], "hangup");

    let posts: Vec<(String, String, String)> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| (r.method, r.path, r.body))
        .collect();
    let expected = [
        (format!("{prefix}/Streams/{}.json", call.stream_sid), "Status=stopped"),
        (format!("{prefix}/Streams/fork_1.json"), "Status=stopped"),
        (format!("{prefix}.json"), "Status=completed"),
    ];
    let got: Vec<(String, &str)> = posts.iter().map(|(_, p, b)| (p.clone(), b.as_str())).collect();
    assert_eq!(got, expected.iter().map(|(p, b)| (p.clone(), *b)).collect::<Vec<_>>());
    let records = proxy.records();
    let mine = records.iter().filter(|r| r["call_sid"] == call.call_sid.as_str()).count();
    assert_eq!(mine, 1, "one record for the call: {records:?}");
}

async fn hangup_without_credentials(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&[0x42; FRAME]).await;
    backend.recv_audio(1, 0).await;
    let session = format!("/v1/sessions/{}", call.stream_sid);

    let refused = proxy.admin("POST", &format!("{session}/hangup"), Vec::new()).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    let why = refused.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("TWILIO_ACCOUNT_SID") && why.contains("DELETE"), "{why}");
    let stream = proxy.admin("POST", &format!("{session}/stream"), br#"{"action":"stop"}"#.to_vec()).await;
    assert_eq!(stream.status, 409, "{}", stream.text());
    assert_eq!(proxy.admin("POST", "/v1/sessions/MZnothing/hangup", Vec::new()).await.status, 404);

    // The call goes on, and DELETE still closes the stream.
    call.send_media(&[0x43; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x43; FRAME]);
    assert_eq!(proxy.admin("DELETE", &session, Vec::new()).await.status, 202);
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
}

async fn config_hides_secrets(io: Io) {
    let backend = Backend::bind().await;
    let env = [("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN), ("TWILIO_ACCOUNT_SID", ACCOUNT_SID)];
    let proxy = Proxy::start(io, &env, &["--backend", &backend.arg()]);
    assert_eq!(proxy.get("/v1/config").await.status, 401, "the configuration needs the bearer token");
    let response = proxy.admin("GET", "/v1/config", Vec::new()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let text = response.text();
    assert!(!text.contains(AUTH_TOKEN), "the auth token leaked: {text}");
    assert!(!text.contains(ADMIN_TOKEN), "the admin token leaked: {text}");
    let config = response.json();
    assert_eq!(config["keys"]["rtp.backend"], backend.arg().as_str());
    assert_eq!(config["keys"]["twilio.account_sid"], ACCOUNT_SID);
    assert_eq!(config["keys"]["server.public_url"], proxy.public_url.as_str());
    assert_eq!(config["secrets"]["TWILIO_AUTH_TOKEN"], "<redacted>");
    assert_eq!(config["secrets"]["VOXPROXY_ADMIN_TOKEN"], "<redacted>");
}

async fn health_reports_ports_and_credentials(io: Io) {
    let api = fake_twilio(401).await;
    let base = api.base();
    let mut backend = Backend::bind().await;
    let port = free_udp_port(false);
    let range = format!("{port}-{port}");
    let proxy = Proxy::start(io, &with_twilio(&base), &["--backend", &backend.arg(), "--rtp-ports", &range]);

    let first_probe = std::time::Instant::now();
    let before = proxy.admin("GET", "/v1/health", Vec::new()).await;
    assert_eq!(before.status, 200, "degraded still serves: {}", before.text());
    let before = before.json();
    assert_eq!(before["status"], "degraded", "{before}");
    let credentials = check(&before, "twilio_credentials");
    assert_eq!(credentials["status"], "degraded", "{before}");
    assert!(credentials["detail"].as_str().is_some_and(|d| d.contains("401")), "{before}");
    assert_eq!(check(&before, "rtp_ports")["status"], "ok", "{before}");
    assert_eq!(check(&before, "workers")["status"], "ok", "{before}");
    assert_eq!(check(&before, "call_records")["status"], "ok", "{before}");

    // The only RTP port taken: no call can be carried.
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&[0x44; FRAME]).await;
    backend.recv_audio(1, 0).await;
    let during = proxy.admin("GET", "/v1/health", Vec::new()).await;
    assert_eq!(during.status, 503, "{}", during.text());
    let during = during.json();
    assert_eq!(during["status"], "unhealthy", "{during}");
    assert_eq!(during["active_calls"], 1, "{during}");
    assert_eq!(check(&during, "rtp_ports")["status"], "unhealthy", "{during}");
    let probes = api.requests().iter().filter(|r| r.method == "GET").count();
    // Cached for 5 s: a second probe only if this machine took longer than that.
    let cached = first_probe.elapsed() < std::time::Duration::from_secs(5);
    assert!(probes == 1 || (!cached && probes == 2), "{probes} credential probes for two health requests");

    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    proxy.wait_record(&call.stream_sid).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let after = proxy.admin("GET", "/v1/health", Vec::new()).await.json();
        if check(&after, "rtp_ports")["status"] == "ok" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the port was never given back: {after}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
