//! SIGHUP reloads the configuration for new calls: a running call keeps
//! what it started with, the next call gets the new route and limits,
//! restart-only keys keep their running value (named in the log), and a
//! broken file keeps the old configuration and is counted.

use std::time::Duration;

use crate::audio::FRAME;
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, Backend, HttpResponse, Io, Proxy, TwilioCall, WAIT, is_busy_reject, sid,
};

both_io!(sighup_reloads_routes_and_limits_for_new_calls);

const CALLER: &str = "+15550001111";
const CLINIC: &str = "+15550002222";

/// Five frames in one `media` message: over 1024 bytes of JSON.
const BIG: usize = 5 * FRAME;

fn config_text(greeting: &str, max_calls: u32, max_frame_bytes: u32, workers: u16) -> String {
    format!(
        "[server]\nworkers = {workers}\n[limits]\nmax_calls = {max_calls}\n\
         max_frame_bytes = {max_frame_bytes}\n\n\
         [[routes]]\nto = \"{CLINIC}\"\ngreeting = \"{greeting}\"\n"
    )
}

async fn voice(proxy: &Proxy, call_sid: &str) -> HttpResponse {
    let params = [
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("CallSid", call_sid),
        ("CallStatus", "ringing"),
        ("Direction", "inbound"),
        ("From", CALLER),
        ("To", CLINIC),
    ];
    let signature = proxy.signer().sign_form("/twilio/voice", &params).expect("sign");
    let response = proxy.post_form("/twilio/voice", &params, Some(&signature)).await;
    assert_eq!(response.status, 200, "voice webhook: {}", response.text());
    response
}

/// Sends SIGHUP and waits for the reload's `result` counter to reach `n`.
async fn hup(proxy: &Proxy, result: &str, n: f64) {
    proxy.signal("HUP");
    proxy.wait_metric(&format!("voxproxy_config_reloads_total{{result=\"{result}\"}}"), n).await;
}

async fn sighup_reloads_routes_and_limits_for_new_calls(io: Io) {
    let mut backend = Backend::bind().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("voxproxy.toml");
    std::fs::write(&path, config_text("Hello one.", 4, 16384, 1)).expect("write config");
    let path_arg = path.to_str().expect("UTF-8 path").to_owned();
    let mut proxy = Proxy::start(
        io,
        &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)],
        &["--config", &path_arg, "--backend", &backend.arg()],
    );

    // A call under the first configuration.
    let first = sid("CA");
    let answer = voice(&proxy, &first).await;
    assert!(answer.text().contains("<Say>Hello one.</Say>"), "{}", answer.text());
    let mut running = TwilioCall::follow(&proxy, first.clone(), &answer.twiml()).await;
    running.send_media(&[0x11; FRAME]).await;
    assert!(backend.recv_datagram(WAIT).await.is_some(), "RTP before the reload");
    proxy.wait_metric("voxproxy_calls_active", 1.0).await;

    // New greeting, max_calls 4 -> 1, max_frame_bytes 16384 -> 1024, and a
    // restart-only key changed.
    std::fs::write(&path, config_text("Hello two.", 1, 1024, 2)).expect("rewrite config");
    hup(&proxy, "ok", 1.0).await;
    assert!(proxy.child_alive(), "SIGHUP must not stop the daemon\n{}", proxy.stderr_text());

    // The running call goes on, with the message size it started with.
    running.send_media(&[0x22; BIG]).await;
    recv_audio_of(&mut backend, 0x22).await;
    // A new call sees the new limit: one call is running, max_calls is 1.
    let refused = voice(&proxy, &sid("CA")).await;
    assert!(is_busy_reject(&refused.twiml()), "max_calls 1 after the reload: {}", refused.text());
    running.send_stop().await;
    assert_eq!(running.wait_closed(WAIT).await, Some(1000), "the running call ends normally");
    wait_active_zero(&proxy).await;

    // The next call gets the new route and streams.
    let next = sid("CA");
    let answer = voice(&proxy, &next).await;
    assert!(answer.text().contains("<Say>Hello two.</Say>"), "{}", answer.text());
    let mut call = TwilioCall::follow(&proxy, next, &answer.twiml()).await;
    call.send_media(&[0x33; FRAME]).await;
    recv_audio_of(&mut backend, 0x33).await;
    // The new limit: a message the running call could send closes this one.
    call.send_media(&[0x33; BIG]).await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1009), "max_frame_bytes 1024 for the new call");

    // /v1/config shows the new configuration; server.workers kept its value.
    let config = proxy.admin("GET", "/v1/config", Vec::new()).await.json();
    assert_eq!(config["keys"]["limits.max_calls"], 1, "{config}");
    assert_eq!(config["routes"][0]["greeting"], "Hello two.", "{config}");
    assert_eq!(config["keys"]["server.workers"], 1, "restart-only: {config}");
    let log = proxy.stderr_text();
    assert!(log.contains("server.workers") && log.contains("take effect only at a restart"), "{log}");

    // A broken file: the old configuration stays, the error names the key.
    std::fs::write(&path, "[limits]\nmax_calls = \"many\"\n").expect("break config");
    hup(&proxy, "error", 1.0).await;
    let answer = voice(&proxy, &sid("CA")).await;
    assert!(answer.text().contains("<Say>Hello two.</Say>"), "the old config stays: {}", answer.text());
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_config_reloads_total{result=\"ok\"}"), 1.0);
    let log = proxy.stderr_text();
    assert!(log.contains("configuration not reloaded") && log.contains("limits.max_calls"), "{log}");

    proxy.signal("TERM");
    assert!(proxy.wait_exit(WAIT).await.success());
}

/// `voxproxy_calls_active` falls before the call's place is given back to
/// the webhook's check; wait until a webhook would be admitted again.
async fn wait_active_zero(proxy: &Proxy) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while proxy.metrics().await.get("voxproxy_calls_active") > 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "the call never ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for RTP carrying `byte` (after what earlier frames left queued);
/// at most 10 datagrams, each within [`WAIT`].
async fn recv_audio_of(backend: &mut Backend, byte: u8) {
    for _ in 0..10 {
        let (datagram, _) = backend.recv_datagram(WAIT).await.expect("RTP");
        if datagram.ends_with(&[byte; FRAME]) {
            return;
        }
    }
    panic!("no RTP carrying {byte:#04x} in 10 datagrams");
}
