//! Capture and replay through the real binary: a call captured by `serve`
//! replays bit for bit with `voxproxy replay`, also one whose backend lost
//! and reordered packets; a damaged capture is a clear error, not a panic;
//! the stream token is not in the file. (The SIP leg's capture, with a
//! digest challenge, is in `sip.rs`, beside its PBX.)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use voxproxy_core::rtp::RtpHeader;

use crate::audio::{self, FRAME};
use crate::harness::{Backend, FromProxy, Io, Proxy, TwilioCall, WAIT, binary};
use crate::ws_leg::BotServer;

both_io!(
    captured_call_replays_identically,
    captured_call_with_loss_and_reordering_replays_identically,
    captured_bot_call_replays_identically
);

/// 20 ms, Twilio's frame pace.
const PACE: Duration = Duration::from_millis(20);

/// A proxy capturing every call into a fresh directory (kept by the caller).
fn capturing_proxy(io: Io, backend: &Backend) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_text = dir.path().to_string_lossy().into_owned();
    // Without barge-in the backend's audio all reaches Twilio (the caller
    // talks over it the whole call).
    let env = [
        ("VOXPROXY_CAPTURE_ENABLED", "true"),
        ("VOXPROXY_CAPTURE_DIR", dir_text.as_str()),
        ("VOXPROXY_VAD_BARGE_IN", "false"),
    ];
    let proxy = Proxy::start(io, &env, &["--backend", &backend.arg()]);
    (proxy, dir)
}

/// `voxproxy replay` on `file`: exit code and stdout (stderr appended).
pub(crate) fn replay(file: &Path, report: bool) -> (i32, String) {
    let mut command = Command::new(binary());
    command.arg("replay").arg(file);
    if report {
        command.arg("--report");
    }
    let out = command.output().expect("voxproxy replay runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Waits until the call's capture is whole (the writer closes it after the
/// call's record); returns its path.
pub(crate) async fn wait_capture(dir: &Path, call: &TwilioCall) -> PathBuf {
    let path = dir.join(format!("{}_{}.vxcap", call.call_sid, call.stream_sid));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if path.exists() {
            let (_, text) = replay(&path, false);
            if !text.contains("no end mark") && !text.contains("ends inside") {
                // To look at later, or to seed fuzz/corpus/capture_reader.
                if let Some(keep) = std::env::var_os("VOXPROXY_E2E_KEEP_CAPTURES") {
                    let _ = std::fs::copy(&path, Path::new(&keep).join(path.file_name().unwrap_or_default()));
                }
                return path;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "{} never completed", path.display());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `frames` at Twilio's pace; the backend answers each caller
/// packet with what `answer(i, payload)` returns: (sequence number,
/// payload) pairs, sent in that order on the backend's own stream.
/// Returns how many media frames Twilio received.
async fn paced_call(
    call: &mut TwilioCall,
    backend: &mut Backend,
    frames: &[&[u8]],
    mut answer: impl FnMut(u16, Vec<u8>) -> Vec<(u16, Vec<u8>)>,
) -> usize {
    let mut heard = 0;
    let start = tokio::time::Instant::now();
    for (i, frame) in frames.iter().enumerate() {
        tokio::time::sleep_until(start + PACE * i as u32).await;
        call.send_media(frame).await;
        let packet = backend.recv_rtp(WAIT).await.expect("the caller's frame reaches the backend");
        let to = backend.proxy.expect("the call's RTP port");
        for (seq, payload) in answer(i as u16, packet.payload) {
            let header = RtpHeader::new(0, 7_000 + seq, 80_000 + u32::from(seq) * FRAME as u32, 0x0bac_4e2d);
            let mut buf = vec![0u8; 12 + payload.len()];
            let n = header.write(&payload, &mut buf).expect("RTP fits");
            backend.socket.send_to(&buf[..n], to).await.expect("send RTP");
        }
        while let Some(message) = call.next(Duration::from_millis(1)).await {
            heard += usize::from(matches!(message, FromProxy::Media(_)));
        }
    }
    heard
}

async fn captured_call_replays_identically(io: Io) {
    let mut backend = Backend::bind().await;
    let (proxy, dir) = capturing_proxy(io, &backend);
    let mut call = TwilioCall::start(&proxy).await;
    let sent = audio::caller_speech(0.3, 2.0);
    let frames: Vec<&[u8]> = sent.chunks(FRAME).collect();
    let heard = paced_call(&mut call, &mut backend, &frames, |seq, payload| vec![(seq, payload)]).await;
    call.send_dtmf('5').await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let _ = proxy.wait_record(&call.stream_sid).await;
    let path = wait_capture(dir.path(), &call).await;
    let bytes = std::fs::read(&path).expect("the capture exists");
    eprintln!("capture of a 2 s call: {} bytes; {heard} frames heard", bytes.len());

    let (code, text) = replay(&path, true);
    eprintln!("{text}");
    assert_eq!(code, 0, "{text}");
    let verdict = text.lines().last().unwrap_or_default();
    assert!(verdict.starts_with("replayed ") && verdict.ends_with("outputs: identical"), "{text}");
    for line in
        ["stream started", "caller DTMF 5", "Twilio stop", "stream closed 1000", "call ended", "stats:"]
    {
        assert!(text.contains(line), "the report has no {line:?}:\n{text}");
    }

    // The stream token is in the start frame Twilio sent, and not in the file.
    let name = b"\"voxproxy_stream_token\":\"";
    let at =
        bytes.windows(name.len()).position(|w| w == name).expect("the start frame is captured") + name.len();
    let value: Vec<u8> = bytes[at..].iter().copied().take_while(|&b| b != b'"').collect();
    assert!(value.len() > 20 && value.iter().all(|&b| b == b'x'), "{}", String::from_utf8_lossy(&value));

    let metrics = proxy.metrics().await;
    assert!(metrics.get("voxproxy_capture_files_total") >= 1.0);
    assert!(metrics.get("voxproxy_capture_written_bytes_total") >= bytes.len() as f64);
    assert_eq!(metrics.get("voxproxy_capture_truncated_total"), 0.0);

    damaged_captures_are_clear_errors(&path, &bytes);
}

/// A cut file, another file and a changed output: each named, none a panic.
fn damaged_captures_are_clear_errors(path: &Path, bytes: &[u8]) {
    let dir = path.parent().expect("capture dir");
    let cut = dir.join("cut.vxcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let (code, text) = replay(&cut, false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("ends inside the record at byte"), "{text}");

    let other = dir.join("other.vxcap");
    std::fs::write(&other, b"RIFF\0\0\0\0WAVEfmt ").expect("write");
    let (code, text) = replay(&other, false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("not a voxproxy capture"), "{text}");

    // The last backend datagram's digest (kind 0x42: kind, length, bytes,
    // then the digest) changed: the replay names the difference.
    let mut changed = bytes.to_vec();
    let last_rtp = last_record(&changed, 0x42).expect("a backend datagram");
    changed[last_rtp + 5 + 4] ^= 0x01;
    let changed_path = dir.join("changed.vxcap");
    std::fs::write(&changed_path, &changed).expect("write");
    let (code, text) = replay(&changed_path, false);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("DIFFERENT at output #") && text.contains("backend datagram"), "{text}");
}

/// Offset of the last record of `kind` in a capture.
fn last_record(file: &[u8], kind: u8) -> Option<usize> {
    let header_len = u32::from_le_bytes(file[11..15].try_into().ok()?) as usize;
    let mut at = 10 + 5 + header_len;
    let mut found = None;
    while at + 5 <= file.len() {
        if file[at] == kind {
            found = Some(at);
        }
        at += 5 + u32::from_le_bytes(file[at + 1..at + 5].try_into().ok()?) as usize;
    }
    found
}

async fn captured_call_with_loss_and_reordering_replays_identically(io: Io) {
    let mut backend = Backend::bind().await;
    let (proxy, dir) = capturing_proxy(io, &backend);
    let mut call = TwilioCall::start(&proxy).await;
    let sent = audio::caller_speech(0.3, 3.0);
    let frames: Vec<&[u8]> = sent.chunks(FRAME).collect();
    // The backend's own stream: every 10th packet lost, and every 7th sent
    // after the next one (reordered).
    let mut late: Option<(u16, Vec<u8>)> = None;
    let _ = paced_call(&mut call, &mut backend, &frames, |seq, payload| {
        if seq % 10 == 9 {
            return Vec::new();
        }
        if seq % 7 == 6 {
            late = Some((seq, payload));
            return Vec::new();
        }
        let mut out = vec![(seq, payload)];
        out.extend(late.take());
        out
    })
    .await;
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert!(record["rtp_lost"].as_u64().unwrap_or(0) > 0, "{record}");
    assert!(
        record["rtp_reordered"].as_u64().unwrap_or(0) + record["rtp_late"].as_u64().unwrap_or(0) > 0,
        "{record}"
    );
    let path = wait_capture(dir.path(), &call).await;
    let (code, text) = replay(&path, true);
    eprintln!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().last().unwrap_or_default().ends_with("outputs: identical"), "{text}");
    let stats = text.lines().find(|l| l.starts_with("stats:")).unwrap_or_default();
    let lost = format!("lost {}", record["rtp_lost"]);
    assert!(stats.contains(&lost), "the replay counts the loss the call did ({lost}): {stats}");
}

/// A call to a WebSocket bot (`--backend ws://…`, ws_leg.rs's bot server):
/// caller audio to the bot, the bot's audio and mark back, the mark's echo,
/// then Twilio's stop; its capture replays bit for bit.
async fn captured_bot_call_replays_identically(io: Io) {
    let mut bot = BotServer::bind().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_text = dir.path().to_string_lossy().into_owned();
    let env = [("VOXPROXY_CAPTURE_ENABLED", "true"), ("VOXPROXY_CAPTURE_DIR", dir_text.as_str())];
    let proxy = Proxy::start(io, &env, &["--backend", &bot.url("/agent")]);
    let mut call = TwilioCall::start(&proxy).await;
    let (_, mut conn) = bot.accept().await;
    let _ = conn.event("start").await;
    let sent = audio::caller_speech(0.3, 1.0);
    let start = tokio::time::Instant::now();
    for (i, frame) in sent.chunks(FRAME).enumerate() {
        tokio::time::sleep_until(start + PACE * i as u32).await;
        call.send_media(frame).await;
    }
    for _ in sent.chunks(FRAME) {
        let _ = conn.event("media").await;
    }
    let answer = vec![0x55u8; FRAME * 10];
    conn.send_media(&call.stream_sid, &answer).await;
    conn.send_json(
        serde_json::json!({"event": "mark", "streamSid": call.stream_sid, "mark": {"name": "m1"}}),
    )
    .await;
    let played = call.collect_media(answer.len(), WAIT).await;
    assert_eq!(played, answer, "the bot's audio reaches Twilio");
    if let Some(FromProxy::Mark(name)) = call.next(WAIT).await {
        call.send_mark(&name).await;
        let _ = conn.event("mark").await;
    }
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let _ = proxy.wait_record(&call.stream_sid).await;
    let path = wait_capture(dir.path(), &call).await;
    let bytes = std::fs::read(&path).expect("the capture exists");
    eprintln!("capture of a 1 s bot call: {} bytes", bytes.len());

    let (code, text) = replay(&path, true);
    eprintln!("{text}");
    assert_eq!(code, 0, "{text}");
    let verdict = text.lines().last().unwrap_or_default();
    assert!(verdict.starts_with("replayed ") && verdict.ends_with("outputs: identical"), "{text}");
    for line in ["bot leg, ", "bot leg started", "stream started", "Twilio stop", "call ended"] {
        assert!(text.contains(line), "the report has no {line:?}:\n{text}");
    }
}
