//! A backend outage through the real binary: the backend goes silent for
//! longer than `rtp.backend_timeout` (5 s) mid-call and comes back. The
//! outage must show outside the event stream: one log line when it starts
//! and one when it ends, the outage metrics, and the call record.

use std::time::Duration;

use crate::audio::FRAME;
use crate::harness::{Backend, Io, Proxy, TwilioCall, WAIT};

both_io!(backend_outage_is_logged_counted_and_recorded);

/// The bridge's `backend_timeout` (not a config key yet).
const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits until the proxy's log has a line containing `needle`; returns it.
async fn wait_log_line(proxy: &Proxy, needle: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(line) = proxy.stderr_text().lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "no log line with {needle:?} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn backend_outage_is_logged_counted_and_recorded(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    // One frame up, so the backend knows the proxy's RTP port.
    call.send_media(&[0xFF; FRAME]).await;
    backend.recv_audio(1, 0).await;
    let silence = [0xFFu8; FRAME];
    for _ in 0..5 {
        backend.send_audio(0, &silence, 160, false).await;
    }
    call.collect_media(5 * FRAME, WAIT).await;
    let quiet_from = tokio::time::Instant::now();
    assert_eq!(proxy.metrics().await.get("voxproxy_backend_outages_total"), 0.0);

    // The backend goes quiet; after the timeout the proxy says so, once.
    let started = wait_log_line(&proxy, "backend outage: no RTP", BACKEND_TIMEOUT + WAIT).await;
    assert!(quiet_from.elapsed() >= BACKEND_TIMEOUT - Duration::from_millis(200), "not before the timeout");
    assert!(started.contains("silent_ms=5000"), "the line says how long: {started}");
    proxy.wait_metric("voxproxy_backend_outages_total", 1.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for _ in 0..5 {
        backend.send_audio(0, &silence, 160, false).await;
    }
    let silent = quiet_from.elapsed();
    let ended = wait_log_line(&proxy, "backend outage over", WAIT).await;
    let logged_ms: u64 = ended
        .split("silent_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no silent_ms in {ended}"));
    // The proxy measures from the last packet it received to the first one
    // back: what this side waited, less loopback latency.
    assert!(
        logged_ms >= 6_000 && u128::from(logged_ms) <= silent.as_millis() + 50,
        "silent_ms={logged_ms}, the backend was quiet {silent:?}"
    );
    let seconds = proxy.wait_metric("voxproxy_backend_outage_seconds_total", 6.0).await;
    assert_eq!(seconds, logged_ms as f64 / 1_000.0);

    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["backend_outages"], 1, "{record}");
    assert_eq!(record["backend_outage_ms"], logged_ms, "{record}");
    assert_eq!(proxy.stderr_text().matches("backend outage: no RTP").count(), 1, "one line per outage start");
}
