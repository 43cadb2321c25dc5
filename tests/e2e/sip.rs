//! Twilio → SIP through the real binary, against baresip (a real SIP user
//! agent from Debian) on loopback: `--backend sip:agent@127.0.0.1:PORT`.
//! baresip's `aubridge` module (player and source on one device) plays the caller's audio back, so
//! what Twilio hears must be what it sent, bit for bit in PCMU.

use std::io::{Read as _, Write as _};
use std::net::TcpStream as StdTcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::audio::FRAME;
use crate::harness::{
    ADMIN_TOKEN, FromProxy, Io, Proxy, TwilioCall, WAIT, free_tcp_port, free_udp_port, free_udp_tcp_port,
    udp_port_bound,
};

both_io!(
    sip_pcmu_echo_and_caller_hangup,
    sip_pbx_hangs_up,
    sip_busy_closes_the_stream_for_the_fallback,
    sip_no_answer_cancels_at_the_ring_timeout,
    sip_pcma_echo_correlates,
    sip_l16_echo_correlates,
    sip_over_tcp,
    sip_cancel_while_ringing,
    sip_hold_and_resume,
    sip_through_kamailio,
    sip_auth_challenge,
    sip_call_is_captured_and_replays_without_its_password,
);

/// Ports in baresip's RTP range. It binds a call's RTP and RTCP pair only
/// when the INVITE arrives, seconds after the probe found the first pair
/// free, and other tests bind ports meanwhile. A two-port range made that a
/// `500 Call Error` ("rtp_listen failed … Address already in use") whenever
/// another socket took either port; over a wider range baresip's `rtp_listen`
/// tries other pairs.
const RTP_RANGE: u16 = 64;

/// A baresip child with its own config directory, killed when dropped.
struct Baresip {
    child: Child,
    dir: tempfile::TempDir,
    sip_port: u16,
    ctrl_port: u16,
}

/// How baresip treats incoming calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// `answermode=auto`: 200 at once, the echo module loops the audio.
    Auto,
    /// `answermode=manual`: it rings until a command answers or rejects.
    Manual,
}

impl Baresip {
    /// Starts baresip on loopback; `None` (after saying why) when it is not installed.
    fn start(answer: Answer) -> Option<Baresip> {
        if !Path::new("/usr/bin/baresip").exists() {
            eprintln!(
                "skipped: /usr/bin/baresip is not installed (apt-get install baresip, as .ci/run does)"
            );
            return None;
        }
        // Other tests bind ports meanwhile: a port taken between the probe
        // and baresip's bind is retried with fresh ones.
        for _ in 0..4 {
            if let Some(baresip) = Self::try_start(answer) {
                return Some(baresip);
            }
        }
        panic!("baresip could not bind free ports in 4 attempts");
    }

    fn try_start(answer: Answer) -> Option<Baresip> {
        let dir = tempfile::tempdir().expect("temp dir");
        let sip_port = free_udp_tcp_port();
        let ctrl_port = free_tcp_port();
        let rtp = free_udp_port(true);
        let mode = if answer == Answer::Auto { "auto" } else { "manual" };
        // `net_interface 127.0.0.1` keeps baresip's SDP on loopback (by
        // default it advertises the first interface's address, eth0's).
        let config = format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nnet_interface 127.0.0.1\n\
             audio_player aubridge,x\naudio_source aubridge,x\naudio_alert aubridge,x\n\
             rtp_ports {rtp}-{}\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule l16.so\nmodule aubridge.so\nmodule_app account.so\nmodule_app menu.so\n\
             module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl_port}\n",
            rtp + RTP_RANGE - 1
        );
        std::fs::write(dir.path().join("config"), config).expect("baresip config");
        std::fs::write(
            dir.path().join("accounts"),
            format!("<sip:agent@127.0.0.1:{sip_port}>;regint=0;answermode={mode}\n"),
        )
        .expect("baresip accounts");
        let log = std::fs::File::create(dir.path().join("log")).expect("baresip log");
        let child = Command::new("/usr/bin/baresip")
            .arg("-f")
            .arg(dir.path())
            .args(["-v", "-s"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("baresip starts");
        let mut baresip = Baresip { child, dir, sip_port, ctrl_port };
        let deadline = std::time::Instant::now() + WAIT;
        while !(udp_port_bound(sip_port) && StdTcpStream::connect(("127.0.0.1", ctrl_port)).is_ok()) {
            if let Ok(Some(_)) = baresip.child.try_wait() {
                assert!(
                    baresip.log().contains("Address already in use"),
                    "baresip exited:\n{}",
                    baresip.log()
                );
                return None;
            }
            assert!(std::time::Instant::now() < deadline, "baresip did not start:\n{}", baresip.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(baresip)
    }

    fn uri(&self) -> String {
        format!("sip:agent@127.0.0.1:{}", self.sip_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// One ctrl_tcp command (a JSON netstring).
    fn command(&self, command: &str, params: &str) {
        let mut conn = StdTcpStream::connect(("127.0.0.1", self.ctrl_port)).expect("ctrl_tcp");
        conn.set_read_timeout(Some(WAIT)).expect("timeout");
        let body = format!(r#"{{"command":"{command}","params":"{params}","token":"t"}}"#);
        conn.write_all(format!("{}:{body},", body.len()).as_bytes()).expect("ctrl_tcp write");
        let mut reply = [0u8; 512];
        let _ = conn.read(&mut reply);
    }

    /// Waits until the log says `text`.
    async fn wait_log(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !self.log().contains(text) {
            assert!(tokio::time::Instant::now() < deadline, "baresip never logged {text:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// μ-law frames that survive baresip's decode → encode unchanged: every
/// code but 0x7F (negative zero, which encodes back as 0xFF).
fn echo_safe_frames(frames: usize) -> Vec<Vec<u8>> {
    (0..frames)
        .map(|f| {
            (0..FRAME)
                .map(|i| ((f * 31 + i * 7) % 256) as u8)
                .map(|c| if c == 0x7F { 0x7E } else { c })
                .collect()
        })
        .collect()
}

/// Sends `frames` at Twilio's pace and collects the media payloads that
/// come back meanwhile and for a second after.
async fn talk(call: &mut TwilioCall, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut heard = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for frame in frames {
        tick.tick().await;
        call.send_media(frame).await;
        while let Some(message) = call.next(Duration::ZERO).await {
            match message {
                FromProxy::Media(payload) => heard.push(payload),
                FromProxy::Closed(code) => panic!("the stream closed ({code:?}) mid-call"),
                FromProxy::Mark(_) | FromProxy::Clear => {}
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Some(message) = call.next(deadline.saturating_duration_since(tokio::time::Instant::now())).await
    {
        match message {
            FromProxy::Media(payload) => heard.push(payload),
            FromProxy::Closed(code) => panic!("the stream closed ({code:?}) mid-call"),
            FromProxy::Mark(_) | FromProxy::Clear => {}
        }
    }
    heard
}

fn start_proxy(io: Io, baresip: &Baresip, codec: &str) -> Proxy {
    start_proxy_at(io, &baresip.uri(), codec)
}

fn start_proxy_at(io: Io, uri: &str, codec: &str) -> Proxy {
    start_proxy_with(io, uri, codec, &[])
}

fn start_proxy_with(io: Io, uri: &str, codec: &str, env: &[(&str, &str)]) -> Proxy {
    let mut all = vec![
        ("VOXPROXY_VAD_BARGE_IN", "false"),
        ("VOXPROXY_RTP_CODEC", codec),
        ("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    all.extend_from_slice(env);
    Proxy::start(io, &all, &["--backend", uri])
}

async fn sip_pcmu_echo_and_caller_hangup(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let proxy = start_proxy(io, &baresip, "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    let frames = echo_safe_frames(100);
    let heard = talk(&mut call, &frames).await;
    // baresip's jitter buffer plays silence (0xFF) while it waits for
    // packets, at the start and when the caller stops; every other frame
    // must be the caller's, bit for bit and in order.
    let audio: Vec<&Vec<u8>> = heard.iter().filter(|f| f.iter().any(|&b| b != 0xFF)).collect();
    let start = audio.iter().position(|f| **f == frames[0]).unwrap_or_else(|| {
        panic!("the first frame never came back; heard {} frames\n{}", heard.len(), baresip.log())
    });
    let back = &audio[start..];
    let same = back.iter().zip(&frames).take_while(|(a, b)| **a == *b).count();
    assert!(
        same >= 90 && same == back.len(),
        "the echo is bit-exact for {same} of {} frames ({} came back)\n{}",
        frames.len(),
        back.len(),
        proxy.stderr_text()
    );

    // Stream start to baresip's 200 OK, as the proxy logged it. A lost
    // first INVITE would cost T1 (500 ms) before its retransmission.
    let log = proxy.stderr_text();
    let setup_ms: u64 = log
        .split("setup_ms=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `SIP call answered` line:\n{log}"));
    eprintln!("call setup (stream start to 200 OK): {setup_ms} ms");
    assert!(setup_ms < 400, "call setup took {setup_ms} ms");

    let session = proxy.admin("GET", &format!("/v1/sessions/{}", call.stream_sid), Vec::new()).await.json();
    assert_eq!(session["leg"]["kind"], "sip", "{session}");
    assert_eq!(session["leg"]["state"], "confirmed", "{session}");

    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    baresip.wait_log("terminated").await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["sip_status"], 200, "{record}");
    assert_eq!(record["hung_up_by"], "twilio", "{record}");
    assert!(record["sip_call_id"].as_str().is_some_and(|id| id.ends_with("@voxproxy")), "{record}");
    let metrics = proxy.metrics().await;
    assert!(metrics.get(r#"voxproxy_sip_requests_total{side="uac",direction="out",method="INVITE"}"#) >= 1.0);
    assert!(metrics.get(r#"voxproxy_sip_requests_total{side="uac",direction="out",method="BYE"}"#) >= 1.0);
}

async fn sip_pbx_hangs_up(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let proxy = start_proxy(io, &baresip, "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    let _ = talk(&mut call, &echo_safe_frames(10)).await;
    baresip.command("hangup", "");
    assert_eq!(call.wait_closed(WAIT).await, Some(1000), "the PBX's BYE ends the stream");
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_hangup", "{record}");
    assert_eq!(record["hung_up_by"], "backend", "{record}");
    assert_eq!(record["sip_status"], 200, "{record}");
}

async fn sip_busy_closes_the_stream_for_the_fallback(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Manual) else { return };
    let proxy = start_proxy(io, &baresip, "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Incoming call").await;
    // Rejecting a ringing call: baresip answers the INVITE with 486.
    baresip.command("hangup", "");
    assert_eq!(call.wait_closed(WAIT).await, Some(1011), "a failed leg closes the stream: Twilio goes on");
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_failed", "{record}");
    assert!(record["sip_status"].as_u64().is_some_and(|s| s >= 400), "{record}");
    assert_eq!(record["hung_up_by"], "backend", "the PBX rejected the call: {record}");
}

async fn sip_no_answer_cancels_at_the_ring_timeout(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Manual) else { return };
    let proxy = start_proxy_with(io, &baresip.uri(), "pcmu", &[("VOXPROXY_SIP_RING_TIMEOUT", "2s")]);
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Incoming call").await;
    let rang = std::time::Instant::now();
    // Nobody answers: at the ring timeout voxproxy cancels and the stream
    // closes as a failed leg, so Twilio plays the route's fallback.
    assert_eq!(call.wait_closed(WAIT).await, Some(1011), "no answer closes the stream: Twilio goes on");
    let waited = rang.elapsed();
    assert!(waited >= Duration::from_millis(1500), "not before the ring timeout: {waited:?}");
    baresip.wait_log("CANCEL sip:agent@").await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_failed", "{record}");
    assert_eq!(record["sip_status"], 480, "the leg failed for want of an answer: {record}");
    assert_eq!(record["hung_up_by"], "voxproxy", "voxproxy's ring timeout gave up: {record}");
}

async fn sip_pcma_echo_correlates(io: Io) {
    echo_correlates(io, "pcma").await;
}

/// L16 at 8 and 16 kHz. At 16 kHz voxproxy resamples both ways, which
/// delays the echo by 23 samples (2.9 ms): a jitter-buffer gap then straddles
/// two Twilio frames, which is why this compares frame by frame
/// ([`crate::audio::followed`]) rather than dropping silent frames and
/// correlating the rest as one stream (that measured 0.78, while baresip
/// returned every L16/16000 packet bit for bit, seen with tcpdump).
async fn sip_l16_echo_correlates(io: Io) {
    echo_correlates(io, "l16-8k").await;
    echo_correlates(io, "l16-16k").await;
}

/// The caller's speech through the PBX's echo and back, in `codec`:
/// transcoded both ways, so it correlates rather than matches.
async fn echo_correlates(io: Io, codec: &str) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let proxy = start_proxy(io, &baresip, codec);
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    let speech = crate::audio::caller_speech(0.3, 1.2);
    let mut frames: Vec<Vec<u8>> = speech.chunks(FRAME).map(<[u8]>::to_vec).collect();
    // Quiet frames after the speech push its last packets out of baresip's
    // jitter buffer (it holds them while no newer packet comes).
    frames.extend(std::iter::repeat_n(vec![0xFF; FRAME], 25));
    let heard: Vec<u8> = talk(&mut call, &frames).await.concat();
    // baresip's jitter buffer plays silence while it waits and so moves the
    // rest of the echo later by whole packets: each caller frame is found
    // near where the previous one was, not at one lag for the whole call.
    let said = crate::audio::decode(&frames.concat());
    let scores = crate::audio::followed(&said, &crate::audio::decode(&heard), 2 * FRAME);
    let good = scores.iter().filter(|&&s| s > 0.9).count();
    assert!(
        scores.len() >= 30 && good * 10 >= scores.len() * 9,
        "{codec}: {good} of {} audible frames come back correlated > 0.9: {scores:.2?}",
        scores.len()
    );
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
}

async fn sip_over_tcp(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let proxy = start_proxy_at(io, &format!("{};transport=tcp", baresip.uri()), "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    assert!(baresip.log().contains("TCP 127.0.0.1:"), "the INVITE came over TCP:\n{}", baresip.log());
    let frames = echo_safe_frames(25);
    let heard = talk(&mut call, &frames).await;
    assert!(heard.iter().any(|f| *f == frames[10]), "audio flows on a call signalled over TCP");
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    baresip.wait_log("terminated").await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["hung_up_by"], "twilio", "{record}");
    assert_eq!(record["sip_status"], 200, "{record}");
}

async fn sip_cancel_while_ringing(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Manual) else { return };
    let proxy = start_proxy(io, &baresip, "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Incoming call").await;
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    baresip.wait_log("CANCEL sip:agent@").await;
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "twilio_stop", "{record}");
    assert_eq!(record["sip_status"], 487, "the INVITE ended cancelled: {record}");
    assert_eq!(record["hung_up_by"], "twilio", "{record}");
}

async fn sip_hold_and_resume(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let proxy = start_proxy(io, &baresip, "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    let _ = talk(&mut call, &echo_safe_frames(10)).await;
    baresip.command("hold", "");
    baresip.wait_log("a=sendonly").await;
    let _ = talk(&mut call, &echo_safe_frames(25)).await;
    let held = proxy.metrics().await.get(r#"voxproxy_rtp_rejected_total{reason="on_hold"}"#);
    assert!(held >= 20.0, "no audio to a PBX that holds the call ({held} packets dropped)");
    baresip.command("resume", "");
    baresip.wait_log("call: resume").await;
    // Counters reach the metrics once a second: let the last held ones in.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let before = proxy.metrics().await;
    let _ = talk(&mut call, &echo_safe_frames(50)).await;
    let after = proxy.metrics().await;
    let out = r#"voxproxy_rtp_packets_total{direction="out"}"#;
    let hold = r#"voxproxy_rtp_rejected_total{reason="on_hold"}"#;
    // What baresip does after a resume is its business (its aubridge loop
    // does not restart); voxproxy's part is to send again, to the new port.
    assert!(after.get(out) - before.get(out) >= 45.0, "audio goes to the PBX again after the resume");
    assert_eq!(after.get(hold), before.get(hold), "nothing is held back any more");
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
}

/// kamailio as a stateful proxy between voxproxy and baresip, from
/// `tests/e2e/testdata/kamailio.cfg`; SIGTERM when dropped (its children
/// follow the main process).
struct Kamailio {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Kamailio {
    fn start(ua: &Baresip, defines: &[&str]) -> Option<Kamailio> {
        if !Path::new("/usr/sbin/kamailio").exists() {
            eprintln!(
                "skipped: /usr/sbin/kamailio is not installed (apt-get install kamailio, as .ci/run does)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_udp_tcp_port();
        let template = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/testdata/kamailio.cfg"),
        )
        .expect("kamailio.cfg");
        let config = template
            .replace("LISTEN", &format!("127.0.0.1:{port}"))
            .replace("UA_ADDR", &format!("127.0.0.1:{}", ua.sip_port));
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, config).expect("kamailio config");
        let log = std::fs::File::create(dir.path().join("log")).expect("kamailio log");
        let child = Command::new("/usr/sbin/kamailio")
            .arg("-f")
            .arg(&cfg)
            .args(defines.iter().flat_map(|d| ["-A", d]))
            .args(["-DD", "-E", "-m", "16", "-M", "4", "-P"])
            .arg(dir.path().join("pid"))
            .arg("-Y")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("kamailio starts");
        let kamailio = Kamailio { child, dir, port };
        let deadline = std::time::Instant::now() + WAIT;
        while !udp_port_bound(port) {
            assert!(std::time::Instant::now() < deadline, "kamailio did not start:\n{}", kamailio.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(kamailio)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sip_through_kamailio(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let Some(kamailio) = Kamailio::start(&baresip, &[]) else { return };
    let proxy = start_proxy_at(io, &format!("sip:agent@127.0.0.1:{}", kamailio.port), "pcmu");
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    assert!(baresip.log().contains("Record-Route:"), "the INVITE came through kamailio:\n{}", baresip.log());
    let frames = echo_safe_frames(50);
    let heard = talk(&mut call, &frames).await;
    let audio: Vec<&Vec<u8>> = heard.iter().filter(|f| f.iter().any(|&b| b != 0xFF)).collect();
    let start = audio.iter().position(|f| **f == frames[0]).expect("the echo comes back");
    let same = audio[start..].iter().zip(&frames).take_while(|(a, b)| **a == *b).count();
    assert!(same >= 40, "bit-exact through kamailio for {same} frames\n{}", kamailio.log());
    // The PBX's BYE follows the route set back through kamailio.
    baresip.command("hangup", "");
    assert_eq!(call.wait_closed(WAIT).await, Some(1000), "kamailio log:\n{}", kamailio.log());
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_hangup", "{record}");
    assert_eq!(record["sip_status"], 200, "{record}");
}

/// kamailio challenges the INVITE (407, qop=auth): the right credentials
/// get the call through, a wrong password fails it like a busy PBX.
async fn sip_auth_challenge(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let Some(kamailio) = Kamailio::start(&baresip, &["WITH_AUTH"]) else { return };
    let uri = format!("sip:agent@127.0.0.1:{}", kamailio.port);
    let user = ("VOXPROXY_SIP_USERNAME", "voxproxy");
    let proxy = start_proxy_with(io, &uri, "pcmu", &[user, ("VOXPROXY_SIP_PASSWORD", "e2e-sip-secret")]);
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    let _ = talk(&mut call, &echo_safe_frames(5)).await;
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["sip_status"], 200, "{record}\n{}", kamailio.log());
    let metrics = proxy.metrics().await;
    assert!(
        metrics.get(r#"voxproxy_sip_responses_total{side="uac",direction="in",class="4xx"}"#) >= 1.0,
        "the 407 was counted"
    );
    drop(proxy);

    let proxy = start_proxy_with(io, &uri, "pcmu", &[user, ("VOXPROXY_SIP_PASSWORD", "wrong")]);
    let mut call = TwilioCall::start(&proxy).await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1011), "a refused password fails the leg");
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["end_reason"], "backend_failed", "{record}");
    assert_eq!(record["sip_status"], 407, "{record}");
}

/// A SIP call through kamailio's digest challenge, captured: the capture
/// holds neither the password nor the digest response, and replays bit
/// for bit (its SIP messages included) without them.
async fn sip_call_is_captured_and_replays_without_its_password(io: Io) {
    let Some(baresip) = Baresip::start(Answer::Auto) else { return };
    let Some(kamailio) = Kamailio::start(&baresip, &["WITH_AUTH"]) else { return };
    let uri = format!("sip:agent@127.0.0.1:{}", kamailio.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_text = dir.path().to_string_lossy().into_owned();
    let env = [
        ("VOXPROXY_SIP_USERNAME", "voxproxy"),
        ("VOXPROXY_SIP_PASSWORD", "e2e-sip-secret"),
        ("VOXPROXY_CAPTURE_ENABLED", "true"),
        ("VOXPROXY_CAPTURE_DIR", dir_text.as_str()),
    ];
    let proxy = start_proxy_with(io, &uri, "pcmu", &env);
    let mut call = TwilioCall::start(&proxy).await;
    baresip.wait_log("Call established").await;
    let _ = talk(&mut call, &echo_safe_frames(50)).await;
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000));
    let record = proxy.wait_record(&call.stream_sid).await;
    assert_eq!(record["sip_status"], 200, "{record}\n{}", kamailio.log());
    let path = crate::capture::wait_capture(dir.path(), &call).await;
    let bytes = std::fs::read(&path).expect("the capture exists");
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"e2e-sip-secret") && !has(b"response="), "a credential is in the capture");
    assert!(has(b"Proxy-Authenticate"), "kamailio's challenge is captured as an input");

    let (code, text) = crate::capture::replay(&path, true);
    eprintln!("{text}");
    assert_eq!(code, 0, "{text}");
    assert!(text.lines().last().unwrap_or_default().ends_with("outputs: identical"), "{text}");
    for line in ["sip leg", "SIP INVITE to", "SIP leg answered (200)", "stream closed 1000", "call ended"] {
        assert!(text.contains(line), "the report has no {line:?}:\n{text}");
    }
}
