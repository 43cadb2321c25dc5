//! Call recording and the latency breakdown through the real binary: the
//! WAV's channels against what the test sent and heard, the file after a
//! `kill -9` mid-call, a jitter-buffer wait the test injects, and the
//! Twilio-side recording (`recording.twilio`) against a fake REST API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use voxproxy_adapters::wav;

use crate::audio::{self, FRAME};
use crate::harness::{
    ACCOUNT_SID, ADMIN_TOKEN, Backend, FakeRest, FromProxy, Io, Proxy, TwilioCall, WAIT, voice_params,
};

both_io!(
    recorded_call_matches_both_directions,
    recording_survives_kill_9,
    breakdown_shows_injected_buffer_wait,
    twilio_recording_status_lands_in_the_record,
    a_failed_twilio_recording_is_counted_and_the_call_goes_on
);

const NO_BARGE_IN: (&str, &str) = ("VOXPROXY_VAD_BARGE_IN", "false");
/// 20 ms, Twilio's frame pace.
const PACE: Duration = Duration::from_millis(20);

/// A proxy recording every call into a fresh directory (kept by the caller).
fn recording_proxy(io: Io, backend: &Backend, extra: &[(&str, &str)]) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_text = dir.path().to_string_lossy().into_owned();
    let mut env =
        vec![NO_BARGE_IN, ("VOXPROXY_RECORDING_ENABLED", "true"), ("VOXPROXY_RECORDING_DIR", &dir_text)];
    env.extend_from_slice(extra);
    let proxy = Proxy::start(io, &env, &["--backend", &backend.arg()]);
    (proxy, dir)
}

/// Channels 1 and 2 of a two-channel PCM16 WAV; fails on anything else.
fn channels(bytes: &[u8]) -> (Vec<i16>, Vec<i16>, bool) {
    let parsed = wav::parse(bytes).unwrap_or_else(|e| panic!("the recording is not a readable WAV: {e}"));
    assert_eq!(parsed.format.to_string(), "8000 Hz stereo PCM16");
    let samples = parsed.decode().expect("PCM16 decodes");
    let caller = samples.iter().step_by(2).copied().collect();
    let heard = samples.iter().skip(1).step_by(2).copied().collect();
    (caller, heard, parsed.truncated)
}

/// Sends `frames` at Twilio's pace; the backend echoes each packet as it
/// comes. Returns the audio that came back to Twilio meanwhile.
async fn paced_echo_call(call: &mut TwilioCall, backend: &mut Backend, frames: &[&[u8]]) -> Vec<u8> {
    let mut heard = Vec::new();
    let start = tokio::time::Instant::now();
    for (i, frame) in frames.iter().enumerate() {
        tokio::time::sleep_until(start + PACE * i as u32).await;
        call.send_media(frame).await;
        let packet = backend.recv_rtp(WAIT).await.expect("the caller's frame reaches the backend");
        backend.echo(&packet, FRAME as u32).await;
        while let Some(FromProxy::Media(audio)) = call.next(Duration::from_millis(1)).await {
            heard.extend_from_slice(&audio);
        }
    }
    heard
}

fn nonzero(samples: &[i16]) -> Vec<i16> {
    samples.iter().copied().filter(|&s| s != 0).collect()
}

async fn recorded_call_matches_both_directions(io: Io) {
    let mut backend = Backend::bind().await;
    let (proxy, dir) = recording_proxy(io, &backend, &[]);
    let mut call = TwilioCall::start(&proxy).await;
    // 3 s of the recorded caller, speech and pauses.
    let sent = audio::caller_speech(0.3, 3.0);
    let frames: Vec<&[u8]> = sent.chunks(FRAME).collect();
    let mut heard = paced_echo_call(&mut call, &mut backend, &frames).await;
    heard.extend(call.collect_media(sent.len().saturating_sub(heard.len()), WAIT).await);
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;

    let file = PathBuf::from(
        record["recording_file"].as_str().unwrap_or_else(|| panic!("no recording_file: {record}")),
    );
    assert!(file.starts_with(dir.path()), "{} is in recording.dir", file.display());
    assert_eq!(
        file.file_name().unwrap().to_string_lossy(),
        format!("{}_{}.wav", call.call_sid, call.stream_sid)
    );
    let (caller, ch2, truncated) = channels(&std::fs::read(&file).expect("the recording exists"));
    assert!(!truncated, "the header covers the whole file once the call ended");

    // Channel 1 is the caller placed by media timestamp: the sent audio as is.
    let sent_pcm = audio::decode(&sent);
    let (lag, corr) = audio::align(&sent_pcm, &caller, 800);
    eprintln!("caller channel: correlation {corr:.5} at lag {lag} samples; {} samples", caller.len());
    assert!(corr >= 0.99, "channel 1 correlates {corr} with what Twilio sent");
    assert_eq!(lag, 0, "the caller channel starts with the call's first frame");

    // Channel 2 is what went back to Twilio, placed by when it was sent,
    // with silence wherever nothing was being sent: the same audio in the
    // same order once that silence is left out, and little of it.
    let heard_pcm = audio::decode(&heard);
    let (a, b) = (nonzero(&heard_pcm), nonzero(&ch2));
    let (lag2, corr2) = audio::align(&a, &b, 40);
    eprintln!("heard channel: correlation {corr2:.5} at lag {lag2} over {} non-silent samples", a.len());
    assert!(corr2 >= 0.99, "channel 2 correlates {corr2} with what Twilio received");
    assert!(
        a.len().abs_diff(b.len()) < FRAME,
        "every sample heard is in channel 2: {} vs {}",
        a.len(),
        b.len()
    );
    let span = ch2.len() as f64 / 8000.0;
    assert!(
        span < 3.0 + 1.5,
        "channel 2 spans {span:.2} s for 3 s of audio: the silence inserted is bounded"
    );

    let latency = &record["latency"];
    assert_eq!(latency["jitter_buffer_packets"], 150, "{record}");
    assert!(latency["twilio_processing_p50_us"].as_u64().unwrap() > 0, "{record}");
    let metrics = proxy.metrics().await;
    assert!(metrics.get("voxproxy_recording_files_total") >= 1.0);
    assert!(metrics.get("voxproxy_recording_written_bytes_total") >= 3.0 * 8000.0 * 4.0);
    assert_eq!(metrics.get("voxproxy_recording_dropped_bytes_total"), 0.0);
    assert!(metrics.get("voxproxy_jitter_buffer_wait_seconds_count") >= 150.0);
}

/// Waits until the file at `path` holds at least `bytes`.
async fn wait_file_len(path: &Path, bytes: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::metadata(path).map_or(0, |m| m.len()) < bytes {
        assert!(tokio::time::Instant::now() < deadline, "{} never reached {bytes} bytes", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn recording_survives_kill_9(io: Io) {
    let mut backend = Backend::bind().await;
    let (mut proxy, dir) = recording_proxy(io, &backend, &[]);
    let mut call = TwilioCall::start(&proxy).await;
    let path = dir.path().join(format!("{}_{}.wav", call.call_sid, call.stream_sid));
    let sent = audio::caller_speech(0.3, 2.5);
    let frames: Vec<&[u8]> = sent.chunks(FRAME).collect();
    let _ = paced_echo_call(&mut call, &mut backend, &frames).await;
    // At least one second is on disk (slots are final 0.5 s after their
    // time, go out in 1 s batches, written within 250 ms); the call is
    // still running.
    wait_file_len(&path, 44 + 8000 * 4).await;
    proxy.signal("KILL");
    let status = proxy.wait_exit(WAIT).await;
    assert!(!status.success(), "killed: {status:?}");

    let bytes = std::fs::read(&path).expect("the recording outlives the process");
    let (caller, _, truncated) = channels(&bytes);
    assert!(!truncated, "the header was fixed up with the last batch: a player reads it all");
    assert_eq!(bytes.len() as u64, 44 + caller.len() as u64 * 4, "no audio beyond what the header says");
    assert!(caller.len() >= 8000, "at least a second of the call: {} samples", caller.len());
    let sent_pcm = audio::decode(&sent[..caller.len().min(sent.len())]);
    let (lag, corr) = audio::align(&sent_pcm, &caller, 800);
    eprintln!(
        "after kill -9: {} s recorded, correlation {corr:.5} at lag {lag}",
        caller.len() as f64 / 8000.0
    );
    assert!(corr >= 0.99, "what was recorded before the crash is the caller: {corr}");
}

/// The backend's own stream of 100 packets at 20 ms; packet 50 arrives
/// `delay` after packet 51, so 51 waits that long in the jitter buffer.
async fn send_with_one_reordered(backend: &mut Backend, delay: Duration) -> Duration {
    let tone = audio::encode(&audio::tones(&[440.0], 8000.0, 8000.0, 100 * FRAME));
    let packets: Vec<Vec<u8>> = tone.chunks(FRAME).map(<[u8]>::to_vec).collect();
    let header = |seq: usize| (seq as u16, seq as u32 * FRAME as u32);
    let start = tokio::time::Instant::now();
    let mut injected = Duration::ZERO;
    for seq in 0..100usize {
        if seq == 50 {
            continue;
        }
        tokio::time::sleep_until(start + PACE * seq as u32).await;
        send_raw(backend, header(seq), &packets[seq]).await;
        if seq == 51 {
            let sent_51 = tokio::time::Instant::now();
            tokio::time::sleep(delay).await;
            send_raw(backend, header(50), &packets[50]).await;
            injected = sent_51.elapsed();
        }
    }
    injected
}

async fn send_raw(backend: &Backend, (seq, ts): (u16, u32), payload: &[u8]) {
    let to = backend.proxy.expect("the proxy's RTP port is known");
    let header = voxproxy_core::rtp::RtpHeader::new(0, seq, ts, 0x5eed_0001);
    let mut buf = vec![0u8; 12 + payload.len()];
    let n = header.write(payload, &mut buf).expect("RTP fits");
    backend.socket.send_to(&buf[..n], to).await.expect("send RTP");
}

async fn breakdown_shows_injected_buffer_wait(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(
        io,
        &[NO_BARGE_IN, ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)],
        &["--backend", &backend.arg()],
    );
    let mut call = TwilioCall::start(&proxy).await;
    // One frame from the caller tells the backend where the call's port is.
    call.send_media(&[0xFF; FRAME]).await;
    let _ = backend.recv_rtp(WAIT).await.expect("first RTP");
    // Under the jitter buffer's 20 ms minimum hold: the gap is waited for, not concealed.
    let injected = send_with_one_reordered(&mut backend, Duration::from_millis(12)).await;
    let _ = call.collect_media(100 * FRAME, WAIT).await;

    // The live view, refreshed once a second.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let session = proxy.admin("GET", &format!("/v1/sessions/{}", call.stream_sid), Vec::new()).await;
    assert_eq!(session.status, 200);
    let live: Value = session.json();
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    let latency = &record["latency"];
    eprintln!("injected {injected:?}; record latency {latency}");
    assert_eq!(live["latency"]["jitter_buffer_wait_max_us"], latency["jitter_buffer_wait_max_us"], "{live}");

    assert_eq!(latency["jitter_buffer_packets"], 100);
    assert_eq!(latency["concealed_frames"], 0, "packet 50 came in time");
    assert_eq!(latency["jitter_buffer_wait_p50_us"], 0, "packets in order do not wait");
    let max = Duration::from_micros(latency["jitter_buffer_wait_max_us"].as_u64().unwrap());
    // The proxy sees the two arrivals a little closer or further apart
    // than the test sent them, by its own scheduling.
    let slack = Duration::from_millis(6);
    assert!(
        max + slack >= injected && max <= injected + slack,
        "the longest buffer wait {max:?} is the injected {injected:?}"
    );
    let metrics = proxy.metrics().await;
    assert!(metrics.get("voxproxy_jitter_buffer_wait_seconds_count") >= 100.0);
    assert!(metrics.get("voxproxy_jitter_buffer_wait_seconds_bucket{le=\"0.005\"}") >= 98.0);
}

/// A proxy with `recording.twilio = true` whose REST API is `api`.
fn twilio_recording_proxy(io: Io, backend: &Backend, api: &FakeRest) -> Proxy {
    let base = api.base();
    let env = [
        NO_BARGE_IN,
        ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
        ("VOXPROXY_TWILIO_API_BASE", base.as_str()),
        ("VOXPROXY_RECORDING_TWILIO", "true"),
    ];
    Proxy::start(io, &env, &["--backend", &backend.arg()])
}

/// Posts a signed Twilio callback to `path`; its status code.
async fn post_signed(proxy: &Proxy, path: &str, form: &[(&str, &str)]) -> u16 {
    let signature = proxy.signer().sign_form(path, form).expect("sign");
    proxy.post_form(path, form, Some(&signature)).await.status
}

/// A short call: a second of caller audio echoed, then `stop`.
async fn short_call(proxy: &Proxy, backend: &mut Backend) -> TwilioCall {
    let mut call = TwilioCall::start(proxy).await;
    let sent = audio::caller_speech(0.3, 1.0);
    let frames: Vec<&[u8]> = sent.chunks(FRAME).collect();
    let heard = paced_echo_call(&mut call, backend, &frames).await;
    assert!(!heard.is_empty(), "the call's audio flows");
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    call
}

async fn twilio_recording_status_lands_in_the_record(io: Io) {
    let recording_sid = crate::harness::sid("RE");
    let answer_sid = recording_sid.clone();
    let api = FakeRest::start(move |_| {
        (201, serde_json::json!({"sid": answer_sid, "status": "in-progress", "call_sid": "CA"}))
    })
    .await;
    let mut backend = Backend::bind().await;
    let proxy = twilio_recording_proxy(io, &backend, &api);
    let call = short_call(&proxy, &mut backend).await;

    let path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{}/Recordings.json", call.call_sid);
    let request = api.wait_for(|r| r.path == path).await;
    assert_eq!(request.method, "POST");
    assert_eq!(request.form("RecordingChannels").as_deref(), Some("dual"));
    let callback = format!("{}/twilio/recording-status", proxy.public_url);
    assert_eq!(request.form("RecordingStatusCallback"), Some(callback), "{}", request.body);

    // The call completes; its record waits for the recording's status.
    let mut status = voice_params(&call.call_sid);
    status.retain(|(k, _)| *k != "CallStatus");
    status.push(("CallStatus", "completed"));
    assert_eq!(post_signed(&proxy, "/twilio/status", &status).await, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        proxy.records().iter().all(|r| r["call_sid"] != call.call_sid.as_str()),
        "the record waits for the recording's final status"
    );

    let url = format!("https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/{recording_sid}");
    let mut form = vec![
        ("AccountSid", ACCOUNT_SID),
        ("CallSid", call.call_sid.as_str()),
        ("RecordingSid", recording_sid.as_str()),
        ("RecordingUrl", url.as_str()),
        ("RecordingStatus", "completed"),
        ("RecordingDuration", "2"),
        ("RecordingChannels", "2"),
        ("RecordingSource", "StartCallRecordingAPI"),
        ("ErrorCode", "0"),
    ];
    // Unsigned, it is refused like any webhook.
    let response = proxy.post_form("/twilio/recording-status", &form, None).await;
    assert_eq!(response.status, 403, "{}", response.text());
    form.push(("RecordingTrack", "both"));
    assert_eq!(post_signed(&proxy, "/twilio/recording-status", &form).await, 204);

    let record = proxy.wait_record(&call.stream_sid).await;
    let twilio = &record["twilio_recording"];
    assert_eq!(twilio["sid"], recording_sid.as_str(), "{record}");
    assert_eq!(twilio["status"], "completed", "{record}");
    assert_eq!(twilio["url"], url.as_str(), "{record}");
    assert_eq!((twilio["duration_s"].as_u64(), twilio["channels"].as_u64()), (Some(2), Some(2)), "{record}");
    assert_eq!(twilio["error"], Value::Null, "{record}");
    let lines = proxy.records().iter().filter(|r| r["call_sid"] == call.call_sid.as_str()).count();
    assert_eq!(lines, 1, "one record per call");
    // A repeat after the record is counted as late, never a second line.
    assert_eq!(post_signed(&proxy, "/twilio/recording-status", &form).await, 204);
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_twilio_recordings_total{result=\"started\"}"), 1.0);
    assert_eq!(
        metrics.get("voxproxy_twilio_callbacks_total{kind=\"recording_status\",status=\"completed\"}"),
        2.0
    );
    assert!(metrics.get("voxproxy_call_ledger_total{event=\"late_callback\"}") >= 1.0);
}

async fn a_failed_twilio_recording_is_counted_and_the_call_goes_on(io: Io) {
    let api = FakeRest::start(|_| {
        (404, serde_json::json!({"code": 20404, "message": "The requested resource was not found", "status": 404}))
    })
    .await;
    let mut backend = Backend::bind().await;
    let proxy = twilio_recording_proxy(io, &backend, &api);
    let call = short_call(&proxy, &mut backend).await;
    let mut status = voice_params(&call.call_sid);
    status.retain(|(k, _)| *k != "CallStatus");
    status.push(("CallStatus", "completed"));
    assert_eq!(post_signed(&proxy, "/twilio/status", &status).await, 204);
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "twilio_stop", "{record}");
    let twilio = &record["twilio_recording"];
    assert_eq!(twilio["status"], "failed", "{record}");
    assert!(twilio["error"].as_str().is_some_and(|e| e.contains("404")), "{record}");
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_twilio_recordings_total{result=\"failed\"}"), 1.0);
}

#[test]
fn recording_twilio_without_credentials_refuses_to_start() {
    let env = [("TWILIO_AUTH_TOKEN", crate::harness::AUTH_TOKEN), ("VOXPROXY_RECORDING_TWILIO", "true")];
    let (status, stderr) = crate::harness::run_to_exit(&env, &["--io", "epoll"]);
    assert!(!status.success(), "recording.twilio without TWILIO_ACCOUNT_SID must refuse to start: {stderr}");
    assert!(
        stderr.contains(
            "recording.twilio: starting Twilio recordings needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
        ),
        "{stderr}"
    );
}
