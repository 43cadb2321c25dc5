//! What the proxy refuses: bad signatures, oversize frames and bodies,
//! floods, calls it has no port for, and configurations it cannot run.

use std::time::Duration;

use tokio_tungstenite::tungstenite;

use crate::audio::FRAME;
use crate::harness::{
    self, AUTH_TOKEN, Backend, FromProxy, Io, Proxy, TwilioCall, WAIT, free_udp_port, is_busy_reject,
    open_media_ws, sid, voice_params,
};

both_io!(bad_signatures, oversize_frame, no_free_port, body_and_rate_limits);

async fn bad_signatures(io: Io) {
    let proxy = Proxy::start(io, &[], &[]);
    let call_sid = sid("CA");
    let params = voice_params(&call_sid);

    let unsigned = proxy.post_form("/twilio/voice", &params, None).await;
    assert_eq!(unsigned.status, 403, "webhook without X-Twilio-Signature");
    let mut tampered = params.clone();
    tampered[5] = ("From", "+15559999999");
    let signature_of_other = proxy.signer().sign_form("/twilio/voice", &tampered).expect("sign");
    let wrong = proxy.post_form("/twilio/voice", &params, Some(&signature_of_other)).await;
    assert_eq!(wrong.status, 403, "webhook signed over other parameters");
    let other_token =
        voxproxy_adapters::signature::SignatureValidator::new("not-the-token", &proxy.public_url)
            .expect("signer")
            .sign_form("/twilio/voice", &params)
            .expect("sign");
    let foreign = proxy.post_form("/twilio/voice", &params, Some(&other_token)).await;
    assert_eq!(foreign.status, 403, "webhook signed with another account's token");
    let signed = proxy.webhook(&call_sid).await;
    assert_eq!(signed.status, 200, "the same webhook, properly signed: {}", signed.text());

    for signature in [None, Some(other_token.as_str())] {
        match open_media_ws(&proxy, "/twilio/media", signature).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "media handshake with signature {signature:?}");
            }
            Err(e) => panic!("media handshake with signature {signature:?}: expected HTTP 403, got {e}"),
            Ok(_) => panic!("media handshake with signature {signature:?} was accepted"),
        }
    }

    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_signature_failures_total{kind=\"webhook\"}"), 3.0);
    assert_eq!(metrics.get("voxproxy_signature_failures_total{kind=\"websocket\"}"), 2.0);
    assert_eq!(metrics.get("voxproxy_calls_started_total"), 0.0);
}

#[test]
fn refuses_to_start_without_auth_token() {
    let (status, stderr) = harness::run_to_exit(&[("TWILIO_AUTH_TOKEN", "")], &["--io", "epoll"]);
    assert!(!status.success(), "voxproxy serve without TWILIO_AUTH_TOKEN must fail; stderr: {stderr}");
    assert!(stderr.contains("TWILIO_AUTH_TOKEN"), "the message names TWILIO_AUTH_TOKEN: {stderr}");
}

#[test]
fn config_error_names_the_key() {
    let (status, stderr) =
        harness::run_to_exit(&[("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("VOXPROXY_RTP_PORTS", "5000-4000")], &[]);
    assert!(!status.success(), "rtp.ports = 5000-4000 must not start; stderr: {stderr}");
    assert!(stderr.contains("rtp.ports"), "the message names the key: {stderr}");
    assert!(stderr.contains("VOXPROXY_RTP_PORTS"), "and where the value came from: {stderr}");

    let (status, stderr) =
        harness::run_to_exit(&[("TWILIO_AUTH_TOKEN", AUTH_TOKEN), ("VOXPROXY_RTP_CODEC", "opus")], &[]);
    assert!(!status.success());
    assert!(stderr.contains("rtp.codec"), "the message names the key: {stderr}");
}

async fn oversize_frame(io: Io) {
    let backend = Backend::bind().await;
    let proxy =
        Proxy::start(io, &[("VOXPROXY_LIMITS_MAX_FRAME_BYTES", "2048")], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    // A frame of 2 KiB passes; one of 4 KiB is over the limit.
    call.send_media(&[0xFF; 1200]).await;
    call.send_text(format!("{{\"event\":\"media\",\"padding\":\"{}\"}}", "x".repeat(4096))).await;
    let code = call.wait_closed(WAIT).await;
    assert_eq!(code, Some(1009), "a message over limits.max_frame_bytes closes the WebSocket with 1009");
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["inbound_frames"], 1);
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_websocket_errors_total{kind=\"oversize\"}"), 1.0);
}

async fn no_free_port(io: Io) {
    let mut backend = Backend::bind().await;
    let port = free_udp_port(false);
    let range = format!("{port}-{port}");
    let proxy = Proxy::start(io, &[], &["--backend", &backend.arg(), "--rtp-ports", &range]);
    // A call answered while the port was still free, whose stream comes late.
    let late_sid = sid("CA");
    let late_answer = proxy.webhook(&late_sid).await.twiml();
    let mut first = TwilioCall::start(&proxy).await;
    first.send_media(&[0x33; FRAME]).await;
    backend.recv_audio(1, 0).await;

    // The only port is taken: the webhook answers busy…
    let answer = proxy.webhook(&sid("CA")).await.twiml();
    assert!(is_busy_reject(&answer), "second call while the port is taken: {answer:?}");
    // …and a stream that starts anyway is closed with 1013.
    let mut late = TwilioCall::follow(&proxy, late_sid, &late_answer).await;
    let close = late.wait_closed(WAIT).await;
    assert_eq!(close, Some(1013), "no RTP port: close code 1013 (try again later)");

    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_calls_refused_total{reason=\"no_rtp_port\"}"), 2.0);
    // The first call is untouched.
    first.send_media(&[0x44; FRAME]).await;
    assert_eq!(backend.recv_audio(1, 0).await[0].payload, vec![0x44; FRAME]);
    backend.send_audio(0, &[0x45; FRAME], 160, true).await;
    assert_eq!(first.collect_media(FRAME, WAIT).await, vec![0x45; FRAME]);
    first.send_stop().await;
    assert!(matches!(first.next(WAIT).await, Some(FromProxy::Closed(Some(1000)))));
}

async fn body_and_rate_limits(io: Io) {
    let proxy = Proxy::start(io, &[("VOXPROXY_LIMITS_MAX_BODY_BYTES", "1024")], &[]);
    let call_sid = sid("CA");
    let mut params = voice_params(&call_sid);
    let padding = "p".repeat(2000);
    params.push(("Padding", &padding));
    let signature = proxy.signer().sign_form("/twilio/voice", &params).expect("sign");
    let response = proxy.post_form("/twilio/voice", &params, Some(&signature)).await;
    assert_eq!(response.status, 413, "a body over limits.max_body_bytes");
    assert_eq!(proxy.metrics().await.get("voxproxy_http_body_too_large_total"), 1.0);
    drop(proxy);

    let proxy = Proxy::start(io, &[("VOXPROXY_LIMITS_WEBHOOK_RATE_PER_IP", "2")], &[]);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(proxy.webhook(&sid("CA")).await.status);
    }
    // A burst of 2 is allowed, then about 2 per second: eight requests in
    // well under a second cannot all pass.
    assert_eq!(&statuses[..2], &[200, 200], "the burst passes: {statuses:?}");
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert!(limited >= 1, "requests beyond the rate get 429: {statuses:?}");
    assert!(statuses.iter().all(|&s| s == 200 || s == 429), "{statuses:?}");
    assert_eq!(proxy.metrics().await.get("voxproxy_rate_limited_requests_total"), limited as f64);
    // The limit is per second: a little later a webhook passes again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(proxy.webhook(&sid("CA")).await.status, 200, "tokens refill");
}
