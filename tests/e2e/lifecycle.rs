//! The daemon's life: SIGHUP with calls running (log rotation), running out
//! of file descriptors, and `kill -9` with calls running followed by a
//! restart that writes their records from the journal.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use crate::audio::FRAME;
use crate::harness::{Backend, Io, Proxy, TwilioCall, WAIT};

both_io!(
    sighup_reopens_records_and_keeps_calls,
    fd_exhaustion_answers_busy,
    kill_9_then_restart_records_every_call
);

fn read_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("record is not JSON ({e}): {l}")))
        .collect()
}

async fn stop(mut call: TwilioCall) -> String {
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000), "normal close after `stop`");
    call.stream_sid.clone()
}

/// logrotate's way: move the file, send SIGHUP. The process lives, both
/// calls go on, the record of a call that ended before goes to the moved
/// file, records after go to a fresh file at `cdr.path`.
async fn sighup_reopens_records_and_keeps_calls(io: Io) {
    let mut backend = Backend::bind().await;
    let mut proxy = Proxy::start(io, &[], &["--backend", &backend.arg()]);
    let before = TwilioCall::start(&proxy).await;
    let before_sid = stop(before).await;
    proxy.wait_record(&before_sid).await;

    let mut a = TwilioCall::start(&proxy).await;
    let mut b = TwilioCall::start(&proxy).await;
    proxy.wait_metric("voxproxy_calls_active", 2.0).await;
    let rotated = proxy.cdr_path.with_extension("jsonl.1");
    std::fs::rename(&proxy.cdr_path, &rotated).expect("rotate the call-record file");
    proxy.signal("HUP");
    proxy.wait_metric("voxproxy_sighup_total", 1.0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(proxy.child_alive(), "SIGHUP must not stop the daemon\n{}", proxy.stderr_text());
    assert!(proxy.cdr_path.exists(), "SIGHUP reopened (created) the file at cdr.path");

    // Both calls still carry audio after the signal.
    for call in [&mut a, &mut b] {
        call.send_media(&[0x55; FRAME]).await;
    }
    for _ in 0..2 {
        assert!(backend.recv_datagram(WAIT).await.is_some(), "RTP after SIGHUP");
    }
    assert_eq!(proxy.metrics().await.get("voxproxy_calls_active"), 2.0);
    let a_sid = stop(a).await;
    let b_sid = stop(b).await;
    proxy.wait_record(&a_sid).await;
    proxy.wait_record(&b_sid).await;

    let fresh: Vec<Value> = read_records(&proxy.cdr_path);
    let old: Vec<Value> = read_records(&rotated);
    assert_eq!(old.len(), 1, "the moved file keeps what was written before: {old:?}");
    assert_eq!(old[0]["stream_sid"], before_sid.as_str());
    let fresh_sids: Vec<&str> = fresh.iter().filter_map(|r| r["stream_sid"].as_str()).collect();
    assert_eq!(fresh_sids.len(), 2, "{fresh:?}");
    assert!(fresh_sids.contains(&a_sid.as_str()) && fresh_sids.contains(&b_sid.as_str()));
    assert!(fresh.iter().all(|r| r["end_reason"] == "twilio_stop"), "{fresh:?}");
    assert!(proxy.stderr_text().contains("SIGHUP: reopened the call-record file"));

    // SIGTERM still drains and exits 0.
    proxy.signal("TERM");
    assert!(proxy.wait_exit(WAIT).await.success());
}

/// Under a low `RLIMIT_NOFILE`, calls beyond what the descriptors hold are
/// answered busy at the webhook (never a `<Connect>` whose stream then
/// fails), the log says so in a line or two, and a metric counts it.
/// `limits.max_calls` fits the limit at start (else the start is refused);
/// idle connections then take the descriptors the last calls would need.
async fn fd_exhaustion_answers_busy(io: Io) {
    const NOFILE: u64 = 64;
    const MAX_CALLS: &str = "12";
    const IDLE_CONNECTIONS: usize = 14;
    const MAX_TRIES: usize = 40;
    let backend = Backend::bind().await;
    let low = 40_000 + (crate::harness::unique() % 20_000) as u16;
    let ports = format!("{low}-{}", low + 99);
    let proxy = Proxy::start_limited(
        io,
        &[("VOXPROXY_LIMITS_MAX_CALLS", MAX_CALLS)],
        &["--backend", &backend.arg(), "--rtp-ports", &ports, "--workers", "1"],
        Some(NOFILE),
    );
    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        idle.push(proxy.connect().await);
    }
    let mut calls = Vec::new();
    let mut busy = 0;
    for _ in 0..MAX_TRIES {
        // try_start fails the test if a <Connect><Stream> answer is followed
        // by a media WebSocket that does not open.
        match TwilioCall::try_start(&proxy).await {
            Some(call) => calls.push(call),
            None => busy += 1,
        }
        if busy >= 3 {
            break;
        }
    }
    assert!(busy >= 3, "{} calls taken under ulimit -n {NOFILE}, none refused", calls.len());
    assert!(!calls.is_empty(), "some calls fit under ulimit -n {NOFILE}");
    // Every admitted call is really running.
    proxy.wait_metric("voxproxy_calls_active", calls.len() as f64).await;
    let metrics = proxy.metrics().await;
    assert!(metrics.get("voxproxy_calls_refused_total{reason=\"fd_limit\"}") >= 3.0);
    assert_eq!(metrics.get("voxproxy_calls_refused_total{reason=\"no_rtp_port\"}"), 0.0);
    assert_eq!(metrics.get("voxproxy_calls_refused_total{reason=\"max_calls\"}"), 0.0);
    let stderr = proxy.stderr_text();
    let lines = stderr.lines().filter(|l| l.contains("descriptor")).count();
    assert!((1..=3).contains(&lines), "{lines} log lines about descriptors:\n{stderr}");
    assert!(!stderr.contains("could not bind"), "no per-port warnings:\n{stderr}");

    // Hanging up frees descriptors: calls are taken again.
    let count = calls.len();
    for call in calls.drain(..count / 2 + 1) {
        stop(call).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let again = TwilioCall::try_start(&proxy).await;
    assert!(again.is_some(), "after hang-ups the webhook takes calls again\n{}", proxy.stderr_text());
}

/// `kill -9` with calls running; the restart writes one record per call
/// with `end_reason` `crash`, and none for the call whose record was
/// already written.
async fn kill_9_then_restart_records_every_call(io: Io) {
    const CALLS: usize = 8;
    let backend = Backend::bind().await;
    let mut first = Proxy::start(io, &[], &["--backend", &backend.arg()]);
    let finished = TwilioCall::start(&first).await;
    let finished_sid = stop(finished).await;
    first.wait_record(&finished_sid).await;
    let mut live = Vec::new();
    for _ in 0..CALLS {
        live.push(TwilioCall::start(&first).await);
    }
    first.wait_metric("voxproxy_calls_active", CALLS as f64).await;
    // The journal has every stream's start entry once the stream started.
    let journal = first.cdr_path.with_file_name(".cdr.jsonl.journal");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&journal).unwrap_or_default();
        if live.iter().all(|c| text.contains(&c.stream_sid)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "journal entries missing: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.signal("KILL");
    first.wait_exit(WAIT).await;
    assert_eq!(read_records(&first.cdr_path).len(), 1, "only the finished call has a record");

    let cdr = first.cdr_path.to_string_lossy().into_owned();
    let second = Proxy::start(io, &[("VOXPROXY_CDR_PATH", cdr.as_str())], &["--backend", &backend.arg()]);
    // Recovery runs before serving: the records are there at once.
    let records = read_records(&first.cdr_path);
    let mut per_stream: HashMap<String, Vec<&Value>> = HashMap::new();
    for r in &records {
        per_stream.entry(r["stream_sid"].as_str().unwrap_or_default().to_owned()).or_default().push(r);
    }
    assert_eq!(records.len(), CALLS + 1, "{records:#?}");
    assert_eq!(per_stream[&finished_sid].len(), 1);
    assert_eq!(per_stream[&finished_sid][0]["end_reason"], "twilio_stop");
    for call in &live {
        let Some(rs) = per_stream.get(&call.stream_sid) else { panic!("no record for {}", call.stream_sid) };
        assert_eq!(rs.len(), 1, "exactly one record for {}", call.stream_sid);
        assert_eq!(rs[0]["end_reason"], "crash");
        assert_eq!(rs[0]["call_sid"], call.call_sid.as_str());
        assert!(rs[0]["ended_at"].as_str() >= rs[0]["started_at"].as_str());
    }
    assert_eq!(second.metrics().await.get("voxproxy_journal_recovered_calls_total"), CALLS as f64);
    assert!(second.stderr_text().contains("the previous run stopped with calls in progress"));
    drop(live);

    // A second crash with nothing live recovers nothing and duplicates nothing.
    drop(second);
    let third = Proxy::start(io, &[("VOXPROXY_CDR_PATH", cdr.as_str())], &[]);
    assert_eq!(read_records(&first.cdr_path).len(), CALLS + 1);
    assert_eq!(third.metrics().await.get("voxproxy_journal_recovered_calls_total"), 0.0);
}
