//! What a hostile client tries against the real binary: idle connections
//! from one address, media WebSockets that never start, starts for calls
//! no webhook answered, a replayed `streamSid`, oversize or malformed ids,
//! and a newline in `From` aimed at the text log.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite;
use voxproxy_adapters::stream_token::STREAM_TOKEN_PARAMETER;

use crate::audio::FRAME;
use crate::harness::{Backend, FromProxy, Io, Proxy, TwilioCall, WAIT, open_media_ws, sid, voice_params};

both_io!(
    one_address_cannot_lock_out_the_others,
    streams_that_never_start_hold_no_call_place,
    start_must_carry_the_webhooks_token,
    a_live_stream_sid_cannot_be_started_twice,
    malformed_webhook_ids_get_400,
    newline_in_from_forges_no_log_line,
);

/// Makes sure this test process (and the proxy it starts, which inherits
/// the limit) may hold `wanted` descriptors, as far as the hard limit allows.
fn raise_nofile(wanted: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    let target = limit.maximum.map_or(wanted, |max| max.min(wanted));
    let raised = rustix::process::Rlimit { current: Some(target), maximum: limit.maximum };
    setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE up to the hard limit");
    target
}

fn metric_refused(reason: &str) -> String {
    format!("voxproxy_calls_refused_total{{reason=\"{reason}\"}}")
}

/// With one worker and `limits.max_calls = 1` the worker holds at most
/// 1 + 1024 connections, of which one address may take all but 256.
async fn one_address_cannot_lock_out_the_others(io: Io) {
    const WORKER_BOUND: usize = 1 + 1024;
    const PER_ADDRESS: usize = WORKER_BOUND - 256;
    // More than the whole worker bound: without a per-address cap nothing is left.
    const IDLE: usize = WORKER_BOUND + 40;
    let limit = raise_nofile(4096);
    assert!(limit >= 2 * IDLE as u64, "RLIMIT_NOFILE {limit} is too low for this test");
    let proxy =
        Proxy::start(io, &[("VOXPROXY_SERVER_WORKERS", "1"), ("VOXPROXY_LIMITS_MAX_CALLS", "1")], &[]);
    let attacker = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(proxy.connect_from(attacker).await.expect("the kernel completes every handshake"));
    }
    // The header timeout (10 s) has not run out: every accepted one is still held.
    let refused =
        proxy.wait_metric(&metric_refused("address_connection_limit"), (IDLE - PER_ADDRESS) as f64).await;
    assert_eq!(refused, (IDLE - PER_ADDRESS) as f64, "exactly the connections over the address's share");

    let honest = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let answer = proxy
        .webhook_from(honest, &sid("CA"))
        .await
        .expect("a webhook from another address is answered while one address holds its maximum");
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(answer.twiml().bidirectional_stream().is_some(), "{}", answer.text());
    assert_eq!(proxy.metrics().await.get(&metric_refused("connection_limit")), 0.0);
    drop(idle);
}

/// Three media WebSockets that send `connected` and never `start` while a
/// real call needs the only call place.
async fn streams_that_never_start_hold_no_call_place(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_LIMITS_MAX_CALLS", "1")], &["--backend", &backend.arg()]);
    let signature = proxy.signer().sign_websocket("/twilio/media").expect("sign");
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut ws = open_media_ws(&proxy, "/twilio/media", Some(&signature)).await.expect("handshake");
        let connected = r#"{"event":"connected","protocol":"Call","version":"1.0.0"}"#;
        futures_util::SinkExt::send(&mut ws, tungstenite::Message::Text(connected.into()))
            .await
            .expect("send");
        idle.push(ws);
    }
    let mut call = TwilioCall::start(&proxy).await;
    call.send_media(&[0x33; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x33; FRAME], "the real call runs");

    // Each idle socket is closed at the start deadline (10 s after it
    // opened), although reading here answers every ping.
    for ws in &mut idle {
        let close = tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                match ws.next().await {
                    Some(Ok(tungstenite::Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => panic!("expected a close frame, got {e}"),
                    None => return None,
                }
            }
        })
        .await
        .expect("a stream without start is closed by the deadline");
        assert_eq!(close, Some(1008), "policy violation: no start in time");
    }
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get(&metric_refused("no_start")), 3.0);
    assert_eq!(metrics.get("voxproxy_calls_started_total"), 1.0, "only the real call took a place");
    call.send_stop().await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["call_sid"], call.call_sid.as_str());
    assert_eq!(
        proxy.records().len(),
        1,
        "no record for the streams that never started: {:?}",
        proxy.records()
    );
}

async fn start_must_carry_the_webhooks_token(io: Io) {
    let proxy = Proxy::start(io, &[], &[]);
    let call_sid = sid("CA");
    let answer = proxy.webhook(&call_sid).await.twiml();
    let stream = answer.bidirectional_stream().expect("<Connect><Stream>");
    let parameters: Vec<(String, String)> =
        stream.parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
    assert!(parameters.iter().any(|(name, _)| name == STREAM_TOKEN_PARAMETER), "{parameters:?}");
    let without_token: Vec<(String, String)> =
        parameters.iter().filter(|(name, _)| name != STREAM_TOKEN_PARAMETER).cloned().collect();

    // A call no webhook announced, with the token of another call; and the
    // announced call without its token.
    let mut replayed = TwilioCall::open_stream(&proxy, sid("CA"), sid("MZ"), parameters.clone()).await;
    assert_eq!(replayed.wait_closed(WAIT).await, Some(1008), "a token is bound to its call");
    let mut tokenless = TwilioCall::open_stream(&proxy, call_sid.clone(), sid("MZ"), without_token).await;
    assert_eq!(tokenless.wait_closed(WAIT).await, Some(1008), "no token, no stream");
    assert_eq!(proxy.metrics().await.get(&metric_refused("invalid_start")), 2.0);

    let mut call = TwilioCall::open_stream(&proxy, call_sid, sid("MZ"), parameters).await;
    call.send_media(&[0xFF; FRAME]).await;
    call.send_stop().await;
    assert!(matches!(call.next(WAIT).await, Some(FromProxy::Closed(Some(1000)))));
    let record = proxy.wait_record(&call.stream_sid).await;
    let custom = record["custom_parameters"].as_object().expect("custom parameters");
    assert!(custom.contains_key("From"), "{record}");
    assert!(!custom.contains_key(STREAM_TOKEN_PARAMETER), "the token is not reported: {record}");
    assert_eq!(proxy.records().len(), 1, "refused starts write no record");
}

async fn a_live_stream_sid_cannot_be_started_twice(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[], &["--backend", &backend.arg()]);
    let mut first = TwilioCall::start(&proxy).await;
    // The first call is registered once its audio flows; before that its
    // `start` may still be in flight and the second stream could win.
    first.send_media(&[0x43; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x43; FRAME]);
    let second_sid = sid("CA");
    let answer = proxy.webhook(&second_sid).await.twiml();
    let stream = answer.bidirectional_stream().expect("<Connect><Stream>");
    let parameters = stream.parameters.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
    let mut second = TwilioCall::open_stream(&proxy, second_sid, first.stream_sid.clone(), parameters).await;
    assert_eq!(second.wait_closed(WAIT).await, Some(1008), "the second stream with a live streamSid");
    assert_eq!(proxy.metrics().await.get(&metric_refused("duplicate_stream")), 1.0);
    first.send_media(&[0x44; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x44; FRAME], "the first call is untouched");
    first.send_stop().await;
    let record = proxy.wait_record(&first.stream_sid).await;
    assert_eq!(record["call_sid"], first.call_sid.as_str());
    assert_eq!(proxy.records().len(), 1);
}

async fn malformed_webhook_ids_get_400(io: Io) {
    let proxy = Proxy::start(io, &[], &[]);
    let huge_sid = format!("CA{}", "a".repeat(10_000));
    let long_from = "9".repeat(300);
    let short_sid = "CA1".to_owned();
    let cases: [(&str, Vec<(&str, &str)>); 3] = [
        ("a 10 KB CallSid", voice_params(&huge_sid)),
        ("a CallSid without 32 hex digits", voice_params(&short_sid)),
        ("a 300-byte From", {
            let mut p = voice_params("CA0123456789abcdef0123456789abcdef");
            p[5] = ("From", &long_from);
            p
        }),
    ];
    for (what, params) in &cases {
        let signature = proxy.signer().sign_form("/twilio/voice", params).expect("sign");
        let response = proxy.post_form("/twilio/voice", params, Some(&signature)).await;
        assert_eq!(response.status, 400, "{what}: {}", response.text());
        assert!(response.text().len() < 300, "{what}: the answer does not echo the value");
        assert!(!response.text().contains("<Response>"), "{what}");
    }
    assert_eq!(proxy.metrics().await.get(&metric_refused("invalid_webhook")), 3.0);
}

async fn newline_in_from_forges_no_log_line(io: Io) {
    let proxy = Proxy::start(io, &[], &[]);
    let call_sid = sid("CA");
    let forged = "+15550001111\n2026-01-01T00:00:00.000000Z  INFO voxproxy: FORGED admin login";
    let mut params = voice_params(&call_sid);
    params[5] = ("From", forged);
    let signature = proxy.signer().sign_form("/twilio/voice", &params).expect("sign");
    let response = proxy.post_form("/twilio/voice", &params, Some(&signature)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let deadline = tokio::time::Instant::now() + WAIT;
    let log = loop {
        let log = proxy.stderr_text();
        if log.contains(&call_sid) || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let line = log.lines().find(|l| l.contains(&call_sid)).unwrap_or_else(|| panic!("no log line: {log}"));
    assert!(line.contains("FORGED"), "the From is logged, on the webhook's own line: {line}");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01")), "a forged line: {log}");
}
