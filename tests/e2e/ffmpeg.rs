//! Interop with a real RTP stack: ffmpeg as the voice backend, receiving
//! the caller's audio (from an SDP) and sending its own (`-f rtp`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::audio::{self, FRAME};
use crate::harness::{ADMIN_TOKEN, FromProxy, Io, Proxy, TwilioCall, WAIT, free_udp_port, udp_port_bound};

both_io!(ffmpeg_receives_the_caller, ffmpeg_speaks_to_the_caller);

/// An ffmpeg child, killed when dropped.
struct Ffmpeg {
    child: Child,
    log: PathBuf,
}

impl Ffmpeg {
    fn spawn(args: &[&str], log: PathBuf) -> Ffmpeg {
        let found = Command::new("ffmpeg")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            found,
            "ffmpeg is required by the interop tests and is not on PATH; install it \
             (`apt-get install ffmpeg`, as .ci/run does)"
        );
        let stderr = std::fs::File::create(&log).expect("ffmpeg log file");
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "warning"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("ffmpeg starts");
        Ffmpeg { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGINT: ffmpeg finishes its output and exits.
    fn interrupt(&self) {
        let status =
            Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status().expect("kill runs");
        assert!(status.success(), "kill -INT ffmpeg");
    }

    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for ffmpeg") {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "ffmpeg still runs after {timeout:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- ffmpeg log ---\n{}", self.log());
        }
    }
}

async fn wait_bound(port: u16, ffmpeg: &Ffmpeg) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !udp_port_bound(port) {
        assert!(tokio::time::Instant::now() < deadline, "ffmpeg did not bind UDP {port}:\n{}", ffmpeg.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write_sdp(path: &Path, port: u16) {
    let sdp = format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=voxproxy e2e\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    );
    std::fs::write(path, sdp).expect("write SDP");
}

async fn ffmpeg_receives_the_caller(io: Io) {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_udp_port(true);
    let sdp = dir.path().join("backend.sdp");
    write_sdp(&sdp, port);
    let out = dir.path().join("received.s16le");
    let mut ffmpeg = Ffmpeg::spawn(
        &[
            "-protocol_whitelist",
            "file,udp,rtp",
            "-analyzeduration",
            "100000",
            "-i",
            sdp.to_str().expect("path"),
            "-f",
            "s16le",
            "-c:a",
            "pcm_s16le",
            "-y",
            out.to_str().expect("path"),
        ],
        dir.path().join("ffmpeg.log"),
    );
    wait_bound(port, &ffmpeg).await;

    let backend = format!("127.0.0.1:{port}");
    let proxy = Proxy::start(io, &[], &["--backend", &backend]);
    let mut call = TwilioCall::start(&proxy).await;
    let sent = audio::caller_speech(0.3, 2.0);
    // Twice real time: ffmpeg goes by RTP timestamps, not arrival times.
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for frame in sent.chunks(FRAME) {
        tick.tick().await;
        call.send_media(frame).await;
    }
    // `stop` ends the call, so no comfort-noise keep-alive follows the audio.
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    ffmpeg.interrupt();
    ffmpeg.wait(Duration::from_secs(10)).await;

    let raw = std::fs::read(&out).expect("ffmpeg's output");
    let received: Vec<i16> = raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let expected = audio::decode(&sent);
    assert!(
        received.len() >= expected.len() * 9 / 10,
        "ffmpeg decoded {} samples of {}:\n{}",
        received.len(),
        expected.len(),
        ffmpeg.log()
    );
    let (lag, corr) = audio::align(&expected, &received, 1600);
    assert!(corr > 0.999, "ffmpeg hears the caller: correlation {corr:.5} at lag {lag}");
    // μ-law decoding is exact in both: after alignment the samples match.
    let overlap: Vec<(i16, i16)> = if lag >= 0 {
        expected.iter().copied().zip(received[lag as usize..].iter().copied()).collect()
    } else {
        expected[lag.unsigned_abs()..].iter().copied().zip(received.iter().copied()).collect()
    };
    let same = overlap.iter().filter(|(a, b)| a == b).count();
    assert!(
        same * 100 >= overlap.len() * 99 && overlap.len() >= expected.len() * 9 / 10,
        "{same} of {} aligned samples identical (lag {lag})",
        overlap.len()
    );
}

async fn ffmpeg_speaks_to_the_caller(io: Io) {
    let dir = tempfile::tempdir().expect("temp dir");
    let local = free_udp_port(true);
    let backend = format!("127.0.0.1:{local}");
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend]);
    let mut call = TwilioCall::start(&proxy).await;

    // The call's RTP port, from the control API.
    let deadline = tokio::time::Instant::now() + WAIT;
    let rtp_port = loop {
        let sessions = proxy.admin("GET", "/v1/sessions", Vec::new()).await.json();
        if let Some(port) = sessions["sessions"][0]["rtp_port"].as_u64() {
            break port;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call never showed up in /v1/sessions");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let speech = audio::decode(&audio::caller_speech(0.3, 2.0));
    let wav = dir.path().join("backend.wav");
    audio::write_wav(&wav, 8000, &speech);
    // `pkt_size=172`: 160-byte payloads, the 20 ms packets a voice stack
    // sends (ffmpeg's default fills the MTU).
    let url = format!("rtp://127.0.0.1:{rtp_port}?localport={local}&pkt_size=172");
    let mut ffmpeg = Ffmpeg::spawn(
        &[
            "-re",
            "-i",
            wav.to_str().expect("path"),
            "-ar",
            "8000",
            "-ac",
            "1",
            "-c:a",
            "pcm_mulaw",
            "-f",
            "rtp",
            &url,
        ],
        dir.path().join("ffmpeg.log"),
    );

    let mut heard = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while heard.len() < speech.len() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match call.next(left).await {
            Some(FromProxy::Media(payload)) => heard.extend_from_slice(&payload),
            Some(FromProxy::Mark(_) | FromProxy::Clear) => {}
            other => panic!(
                "after {} of {} samples from ffmpeg: {other:?}\n{}",
                heard.len(),
                speech.len(),
                ffmpeg.log()
            ),
        }
    }
    let status = ffmpeg.wait(Duration::from_secs(10)).await;
    assert!(status.success(), "ffmpeg -re -f rtp: {status}\n{}", ffmpeg.log());
    let heard = audio::decode(&heard);
    let (lag, corr) = audio::align(&speech, &heard, 1600);
    assert!(corr > 0.99, "Twilio hears ffmpeg's audio: correlation {corr:.5} at lag {lag}");
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["rtp_lost"], 0, "{record}");
}
