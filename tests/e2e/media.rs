//! The media path through the real binary: bit-exact PCMU, transcoding,
//! DTMF, marks and barge-in, a backend that goes away, a WebSocket that
//! drops, and datagrams the proxy must refuse.

use std::time::Duration;

use voxproxy_core::g711;
use voxproxy_core::telephone_event::TelephoneEvent;

use crate::audio::{self, FRAME};
use crate::harness::{
    ADMIN_TOKEN, Backend, FromProxy, Io, Proxy, Rtp, TwilioCall, WAIT, free_udp_port, udp_port_bound,
};

both_io!(
    pcmu_round_trip,
    transcode_pcma,
    transcode_l16_8k,
    transcode_l16_16k,
    dtmf_becomes_rfc4733,
    marks_played,
    barge_in_clears,
    backend_timeout_and_resume,
    websocket_drop_frees_port,
    foreign_and_malformed_rtp,
    slow_twilio_is_dropped_not_buffered,
);

/// Barge-in off: these tests send loud audio both ways and want all of it back.
const NO_BARGE_IN: (&str, &str) = ("VOXPROXY_VAD_BARGE_IN", "false");

/// Checks what every uplink stream must be: one SSRC, sequence +1, timestamp
/// + `step`, marker on the first packet only.
fn assert_rtp_stream(packets: &[Rtp], pt: u8, step: u32) {
    for (i, pair) in packets.windows(2).enumerate() {
        assert_eq!(pair[1].ssrc, pair[0].ssrc, "one SSRC per call");
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1), "sequence +1 at packet {}", i + 1);
        assert_eq!(
            pair[1].timestamp,
            pair[0].timestamp.wrapping_add(step),
            "timestamp +{step} at packet {}",
            i + 1
        );
    }
    assert!(packets.iter().all(|p| p.payload_type == pt));
    assert!(packets[0].marker, "the first packet of a talkspurt has the marker bit");
    assert!(packets[1..].iter().all(|p| !p.marker), "no marker inside the talkspurt");
}

/// Sends `frames` from Twilio; returns the RTP packets the backend got.
async fn uplink(call: &mut TwilioCall, backend: &mut Backend, frames: &[Vec<u8>], pt: u8) -> Vec<Rtp> {
    for frame in frames {
        call.send_media(frame).await;
    }
    backend.recv_audio(frames.len(), pt).await
}

async fn stop_and_record(proxy: &Proxy, mut call: TwilioCall) -> serde_json::Value {
    call.send_stop().await;
    assert_eq!(call.wait_closed(WAIT).await, Some(1000), "the proxy closes normally after `stop`");
    proxy.wait_record(&call.stream_sid).await
}

async fn pcmu_round_trip(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[NO_BARGE_IN], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    let frames = audio::all_codes_frames(50);

    let packets = uplink(&mut call, &mut backend, &frames, 0).await;
    assert_rtp_stream(&packets, 0, 160);
    for (i, (packet, frame)) in packets.iter().zip(&frames).enumerate() {
        assert_eq!(&packet.payload, frame, "PCMU payload of packet {i} is Twilio's μ-law, untouched");
    }

    for packet in &packets {
        backend.echo(packet, 160).await;
    }
    let back = call.collect_media(50 * FRAME, WAIT).await;
    assert_eq!(back, frames.concat(), "the echo reaches Twilio bit-exact and in order");

    let record = stop_and_record(&proxy, call).await;
    assert_eq!(record["end_reason"], "twilio_stop");
    assert_eq!(record["io_backend"], io.as_str());
    assert_eq!(record["inbound_frames"], 50);
    assert_eq!(record["inbound_bytes"], 8000);
    assert_eq!(record["outbound_frames"], 50);
    assert_eq!(record["outbound_bytes"], 8000);
    assert_eq!(record["rtp_lost"], 0);
    let parameters = &record["custom_parameters"];
    assert_eq!(parameters["From"], "+15550001111", "the TwiML <Parameter>s reach the record: {record}");
    assert_eq!(parameters["CallSid"], record["call_sid"]);
    // The io_uring workers publish their rings' counters with their
    // heartbeat; epoll has no ring to report.
    match io {
        Io::Uring => {
            // The backend's 50 echoed packets at least, and the WebSocket's chunks.
            proxy.wait_metric("voxproxy_uring_received_total", 50.0).await;
            let metrics = proxy.metrics().await;
            assert!(metrics.get("voxproxy_uring_submits_total") > 0.0);
            assert_eq!(metrics.get("voxproxy_uring_dropped_total"), 0.0);
            assert_eq!(metrics.get("voxproxy_uring_send_errors_total"), 0.0);
        }
        Io::Epoll => {
            let text = proxy.get("/metrics").await.text();
            assert!(!text.contains("voxproxy_uring_"), "no ring on epoll");
        }
    }
}

async fn transcode_pcma(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy =
        Proxy::start(io, &[NO_BARGE_IN, ("VOXPROXY_RTP_CODEC", "pcma")], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    let frames = audio::all_codes_frames(50);

    let packets = uplink(&mut call, &mut backend, &frames, 8).await;
    assert_rtp_stream(&packets, 8, 160);
    for (packet, frame) in packets.iter().zip(&frames) {
        // G.711 defines μ→A as decode then encode.
        let expected: Vec<u8> = frame.iter().map(|&u| g711::alaw_encode(g711::ulaw_decode(u))).collect();
        assert_eq!(packet.payload, expected, "PCMA payload is the A-law of Twilio's μ-law");
    }

    for packet in &packets {
        backend.echo(packet, 160).await;
    }
    let back = call.collect_media(50 * FRAME, WAIT).await;
    let sent = frames.concat();
    // Exact: A→μ is decode then encode too.
    let expected: Vec<u8> = sent
        .iter()
        .map(|&u| g711::ulaw_encode(g711::alaw_decode(g711::alaw_encode(g711::ulaw_decode(u)))))
        .collect();
    assert_eq!(back, expected, "μ→A→μ");
    // And close to the original level: A-law's step is 16 below 512 and at
    // most 1/16 of the level above, and μ-law's is finer, so one round of
    // requantisation to the nearest level moves a sample by at most half of
    // max(16, |x|/16); the bound allows truncating encoders too.
    for (&got, &orig) in back.iter().zip(&sent) {
        let (got, orig) = (i32::from(g711::ulaw_decode(got)), i32::from(g711::ulaw_decode(orig)));
        assert!((got - orig).abs() <= 16.max(orig.abs() / 16), "μ {orig} came back as {got}");
    }
    stop_and_record(&proxy, call).await;
}

async fn transcode_l16_8k(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy =
        Proxy::start(io, &[NO_BARGE_IN, ("VOXPROXY_RTP_CODEC", "l16-8k")], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    let frames = audio::all_codes_frames(50);

    let packets = uplink(&mut call, &mut backend, &frames, 96).await;
    assert_rtp_stream(&packets, 96, 160);
    for (packet, frame) in packets.iter().zip(&frames) {
        assert_eq!(packet.payload.len(), 2 * FRAME, "20 ms of L16 at 8 kHz");
        assert_eq!(
            audio::read_l16(&packet.payload),
            audio::decode(frame),
            "L16 is the linear value of each μ-law code"
        );
    }

    for packet in &packets {
        backend.echo(packet, 160).await;
    }
    let back = call.collect_media(50 * FRAME, WAIT).await;
    // μ-law decoding is one-to-one except that 0x7F and 0xFF both mean 0,
    // so μ→linear→μ returns every code except 0x7F, which comes back as
    // 0xFF: tolerance zero.
    let expected: Vec<u8> = frames.concat().iter().map(|&u| if u == 0x7F { 0xFF } else { u }).collect();
    assert_eq!(back, expected, "μ→L16→μ is the identity up to the two zeros");
    stop_and_record(&proxy, call).await;
}

async fn transcode_l16_16k(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy =
        Proxy::start(io, &[NO_BARGE_IN, ("VOXPROXY_RTP_CODEC", "l16-16k")], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    let sent = audio::encode(&audio::tones(&[1000.0], 8000.0, 8000.0, 50 * FRAME));
    let frames: Vec<Vec<u8>> = sent.chunks(FRAME).map(<[u8]>::to_vec).collect();

    let packets = uplink(&mut call, &mut backend, &frames, 97).await;
    assert_rtp_stream(&packets, 97, 320);
    assert!(packets.iter().all(|p| p.payload.len() == 640), "20 ms of L16 at 16 kHz is 640 bytes");
    let wide: Vec<i16> = packets.iter().flat_map(|p| audio::read_l16(&p.payload)).collect();
    // Skip the resampler's first packet (filter warm-up).
    let fraction = audio::tone_fraction(&wide[320..], 1000.0, 16_000.0);
    assert!(fraction > 0.95, "the 16 kHz stream is still a 1 kHz tone: {fraction:.3} of its power at 1 kHz");

    for packet in &packets {
        backend.echo(packet, 320).await;
    }
    let back = call.collect_media(50 * FRAME, WAIT).await;
    // Up- then down-sampling delays and slightly colours the tone; compare
    // after the best alignment, away from the start.
    let (sent_pcm, back_pcm) = (audio::decode(&sent), audio::decode(&back));
    let (lag, corr) = audio::align(&sent_pcm[400..7600], &back_pcm[400..7600], 16);
    assert!(corr > 0.99, "the tone survives 8→16→8 kHz: correlation {corr:.4} at lag {lag}");
    stop_and_record(&proxy, call).await;
}

async fn dtmf_becomes_rfc4733(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut events = proxy.events().await;
    let mut call = TwilioCall::start(&proxy).await;
    let audio_packet = uplink(&mut call, &mut backend, &[vec![0xFF; FRAME]], 0).await.remove(0);

    // Twilio keeps streaming the caller's audio around key presses: 10
    // frames (200 ms, longer than one event) go before each digit.
    let mut last_audio = audio_packet;
    let mut last_timestamp = None;
    for (digit, code) in [('5', 5u8), ('#', 11)] {
        if last_timestamp.is_some() {
            let silence = vec![vec![0xFF; FRAME]; 10];
            last_audio = uplink(&mut call, &mut backend, &silence, 0).await.pop().expect("10 packets");
        }
        call.send_dtmf(digit).await;
        let mut packets: Vec<(Rtp, TelephoneEvent)> = Vec::new();
        while packets.iter().filter(|(_, e)| e.end).count() < 3 {
            let rtp = backend.recv_rtp(WAIT).await.unwrap_or_else(|| panic!("RFC 4733 packets for {digit}"));
            assert_eq!(rtp.payload_type, 101, "telephone events use payload type 101");
            let event = TelephoneEvent::parse(&rtp.payload).expect("a 4-byte telephone-event payload");
            packets.push((rtp, event));
        }
        let first = packets[0].0.clone();
        assert!(first.marker, "the first packet of an event has the marker bit");
        assert_eq!(first.ssrc, last_audio.ssrc, "same SSRC as the audio");
        for (i, (rtp, event)) in packets.iter().enumerate() {
            assert_eq!(event.event, code, "event code of {digit}");
            assert!(event.volume <= 63);
            assert_eq!(rtp.timestamp, first.timestamp, "one timestamp for the whole event");
            assert_eq!(rtp.sequence, first.sequence.wrapping_add(i as u16), "consecutive sequence numbers");
            assert_eq!(rtp.marker, i == 0, "marker on the first packet only");
        }
        let (updates, finals) = packets.split_at(packets.len() - 3);
        assert!(!updates.is_empty() && updates.iter().all(|(_, e)| !e.end), "updates before the end");
        assert!(finals.iter().all(|(_, e)| e.end), "the final packet is sent three times with the end bit");
        let durations: Vec<u16> = packets.iter().map(|(_, e)| e.duration).collect();
        assert!(durations.windows(2).all(|w| w[0] <= w[1]), "durations grow: {durations:?}");
        assert!(
            finals.iter().all(|(_, e)| e.duration == finals[0].1.duration && e.duration >= 320),
            "the end packets repeat the full duration (at least 40 ms): {durations:?}"
        );
        // The event starts where the caller's audio stopped.
        assert_eq!(
            first.timestamp,
            last_audio.timestamp.wrapping_add(160),
            "event timestamp on the media clock"
        );
        if let Some(previous) = last_timestamp {
            assert_ne!(first.timestamp, previous, "a new event, a new timestamp");
        }
        last_timestamp = Some(first.timestamp);
        let event = events.wait_for("dtmf", &call.stream_sid, WAIT).await;
        assert_eq!(event["digit"], digit.to_string());
    }
    let record = stop_and_record(&proxy, call).await;
    assert_eq!(record["dtmf_digits"], 2);
}

async fn marks_played(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut events = proxy.events().await;
    let mut call = TwilioCall::start(&proxy).await;
    uplink(&mut call, &mut backend, &[vec![0xFF; FRAME]], 0).await;

    // One utterance of the backend (0.5 s of speech), then it pauses.
    let speech = audio::caller_speech(0.3, 0.5);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for (i, frame) in speech.chunks(FRAME).enumerate() {
        tick.tick().await;
        backend.send_audio(0, frame, 160, i == 0).await;
    }
    // Twilio gets the utterance, then a mark behind it (the VAD may cut
    // the utterance in two, so more than one mark is fine).
    let mut media = Vec::new();
    let mut marks = Vec::new();
    loop {
        match call.next(WAIT).await {
            Some(FromProxy::Media(payload)) => media.extend_from_slice(&payload),
            Some(FromProxy::Mark(name)) => {
                marks.push(name);
                if media.len() >= speech.len() {
                    break;
                }
            }
            other => panic!("expected media then a mark after the backend's talkspurt, got {other:?}"),
        }
    }
    assert_eq!(media, speech, "the whole utterance comes before its last mark");

    for mark in &marks {
        let id: u64 = mark
            .strip_prefix("vp-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("mark name {mark:?}"));
        call.send_mark(mark).await;
        let played = events.wait_for("mark_played", &call.stream_sid, WAIT).await;
        assert_eq!(played["mark"], id);
    }
    proxy.wait_metric("voxproxy_marks_total{outcome=\"played\"}", marks.len() as f64).await;
    let record = stop_and_record(&proxy, call).await;
    assert_eq!(record["marks_sent"].as_u64(), Some(marks.len() as u64));
    assert_eq!(record["marks_played"].as_u64(), Some(marks.len() as u64));
}

async fn barge_in_clears(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut events = proxy.events().await;
    let mut call = TwilioCall::start(&proxy).await;
    uplink(&mut call, &mut backend, &[vec![0xFF; FRAME]], 0).await;

    // The backend talks without pause; after 0.4 s the caller talks over it.
    // Twilio never echoes marks, so the backend's audio stays unplayed.
    let backend_speech = audio::caller_speech(0.3, 1.2);
    let caller_speech = audio::caller_speech(1.8, 1.0);
    let mut backend_frames = backend_speech.chunks(FRAME).cycle();
    let mut caller_frames = caller_speech.chunks(FRAME);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut media_before_clear = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    let mut ticks = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no `clear` within 4 s of the caller talking over the backend"
        );
        tokio::select! {
            _ = tick.tick() => {
                backend.send_audio(0, backend_frames.next().expect("cycle"), 160, ticks == 0).await;
                ticks += 1;
                if ticks > 20 {
                    let frame = caller_frames.next().expect("a `clear` within 1 s of caller speech");
                    call.send_media(frame).await;
                }
            }
            message = call.next(Duration::from_secs(5)) => match message {
                Some(FromProxy::Clear) => break,
                Some(FromProxy::Media(_)) => media_before_clear += 1,
                Some(FromProxy::Mark(_)) => {}
                other => panic!("unexpected {other:?} before the barge-in"),
            },
        }
    }
    assert!(media_before_clear > 0, "the backend's audio reached Twilio before the barge-in");
    let event = events.wait_for("barge_in", &call.stream_sid, WAIT).await;
    assert!(
        event["media_ms"].as_u64().is_some_and(|ms| ms >= 20),
        "barge-in at the caller's speech: {event}"
    );
    proxy.wait_metric("voxproxy_barge_ins_total", 1.0).await;
    let record = stop_and_record(&proxy, call).await;
    assert!(record["barge_ins"].as_u64() >= Some(1));
}

async fn backend_timeout_and_resume(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[("VOXPROXY_ADMIN_TOKEN", ADMIN_TOKEN)], &["--backend", &backend.arg()]);
    let mut events = proxy.events().await;
    let mut call = TwilioCall::start(&proxy).await;
    uplink(&mut call, &mut backend, &[vec![0xFF; FRAME]], 0).await;

    let silence = vec![0xFFu8; FRAME];
    for _ in 0..5 {
        backend.send_audio(0, &silence, 160, false).await;
    }
    call.collect_media(5 * FRAME, WAIT).await;
    // The backend goes quiet: after 5 s the proxy says so.
    events.wait_for("backend_timeout", &call.stream_sid, Duration::from_secs(8)).await;
    let resumed: Vec<u8> = (0..5 * FRAME).map(|i| (i % 200) as u8).collect();
    for frame in resumed.chunks(FRAME) {
        backend.send_audio(0, frame, 160, false).await;
    }
    events.wait_for("backend_resumed", &call.stream_sid, WAIT).await;
    assert_eq!(
        call.collect_media(5 * FRAME, WAIT).await,
        resumed,
        "audio flows again after the backend returns"
    );
    stop_and_record(&proxy, call).await;
}

async fn websocket_drop_frees_port(io: Io) {
    let mut backend = Backend::bind().await;
    let port = free_udp_port(false);
    let range = format!("{port}-{port}");
    let proxy = Proxy::start(io, &[], &["--backend", &backend.arg(), "--rtp-ports", &range]);
    let mut call = TwilioCall::start(&proxy).await;
    uplink(&mut call, &mut backend, &[vec![0x55; FRAME]], 0).await;
    assert_eq!(backend.proxy.map(|a| a.port()), Some(port), "the call's RTP comes from the only port");
    let stream_sid = call.stream_sid.clone();
    call.drop_connection();

    let record = proxy.wait_record(&stream_sid).await;
    assert_eq!(record["end_reason"], "websocket_closed");
    assert_eq!(record["inbound_frames"], 1);
    proxy.wait_metric("voxproxy_calls_ended_total{reason=\"websocket_closed\"}", 1.0).await;

    // The port comes back once the record is written: a second call gets
    // it (the webhook may still say busy for a moment).
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut second = loop {
        if let Some(call) = TwilioCall::try_start(&proxy).await {
            break call;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the webhook kept answering busy after the call ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    backend.proxy = None;
    second.send_media(&[0x66; FRAME]).await;
    match backend.recv_rtp(WAIT).await {
        Some(packet) => assert_eq!(packet.payload, vec![0x66; FRAME]),
        None => panic!(
            "the second call got no RTP port although the first call's record was written \
             (UDP {port} still bound: {}); its WebSocket: {:?}",
            udp_port_bound(port),
            second.next(Duration::from_millis(100)).await
        ),
    }
    assert_eq!(backend.proxy.map(|a| a.port()), Some(port));
    stop_and_record(&proxy, second).await;
}

async fn foreign_and_malformed_rtp(io: Io) {
    let mut backend = Backend::bind().await;
    let proxy = Proxy::start(io, &[], &["--backend", &backend.arg()]);
    let mut call = TwilioCall::start(&proxy).await;
    uplink(&mut call, &mut backend, &[vec![0xFF; FRAME]], 0).await;
    let port = backend.proxy.expect("the call's RTP port");

    // Not RTP (version 0), from the backend's own address.
    for _ in 0..3 {
        backend.socket.send_to(b"\x00\x00 this is not RTP", port).await.expect("send");
    }
    // Valid RTP, from somewhere else.
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut foreign = vec![0u8; 12 + FRAME];
    foreign[0] = 0x80;
    foreign[12..].fill(0x11);
    for seq in 0..2u8 {
        foreign[3] = seq;
        stranger.send_to(&foreign, port).await.expect("send");
    }
    // The call goes on: the backend's next packet is what Twilio hears.
    let real: Vec<u8> = (0..FRAME as u8).collect();
    backend.send_audio(0, &real, 160, true).await;
    assert_eq!(call.collect_media(FRAME, WAIT).await, real, "only the backend's RTP reaches Twilio");
    let echoed = uplink(&mut call, &mut backend, &[vec![0x42; FRAME]], 0).await.remove(0);
    assert_eq!(echoed.payload, vec![0x42; FRAME], "and Twilio's audio still reaches the backend");

    let record = stop_and_record(&proxy, call).await;
    assert_eq!(record["rtp_malformed"], 3);
    assert_eq!(record["rtp_foreign_source"], 2);
    let metrics = proxy.metrics().await;
    assert_eq!(metrics.get("voxproxy_rtp_rejected_total{reason=\"malformed\"}"), 3.0);
    assert_eq!(metrics.get("voxproxy_rtp_rejected_total{reason=\"foreign_source\"}"), 2.0);
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

async fn slow_twilio_is_dropped_not_buffered(io: Io) {
    let mut backend = Backend::bind().await;
    let mut proxy = Proxy::start(io, &[("VOXPROXY_VAD_BARGE_IN", "false")], &["--backend", &backend.arg()]);
    proxy.client_receive_buffer = Some(4096);
    let mut call = TwilioCall::start(&proxy).await;
    uplink(&mut call, &mut backend, &[vec![0xFF; FRAME]], 0).await;
    let before = rss_bytes(proxy.pid());
    // Twilio stops reading (and its receive buffer is small) while the
    // backend sends audio as fast as it can: the proxy's WebSocket blocks.
    // Paced so the proxy's UDP receive buffer mostly keeps up, until the
    // WebSocket has blocked and frames are being dropped (a bounded number
    // of rounds: ~38 MB of media messages at most).
    let mut dropped = 0.0;
    for _round in 0..100 {
        for i in 0..1_000u32 {
            backend.send_audio(0, &[0x55; FRAME], 160, false).await;
            if i % 32 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        dropped = proxy.metrics().await.get("voxproxy_websocket_dropped_frames_total");
        if dropped > 0.0 {
            break;
        }
    }
    assert!(dropped > 0.0, "the proxy never dropped a frame for the slow Twilio side");
    let after = rss_bytes(proxy.pid());
    assert!(
        after < before + (8 << 20),
        "memory grew by {} KiB while Twilio was not reading ({dropped} frames dropped)",
        (after.saturating_sub(before)) / 1024
    );
    call.drop_connection();
}
