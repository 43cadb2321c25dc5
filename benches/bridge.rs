//! The call bridge per 20 ms frame, each way: what the proxy adds to a
//! call's latency besides socket I/O. Uplink: one Twilio `media` frame in,
//! drained to one RTP datagram out (VAD included). Downlink: one backend RTP
//! packet in, through the jitter buffer, drained to one Twilio `media`
//! frame out (backend VAD and playout tracking included).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use voxproxy_adapters::bridge::{BackendCodec, BridgeConfig, CallBridge, Output, SipBackend};
use voxproxy_adapters::media_stream::{
    self, AccountSid, CallSid, MediaFormat, Start, StreamSid, Track, Tracks,
};
use voxproxy_core::Instant;
use voxproxy_core::g711;
use voxproxy_core::rtp::RtpHeader;
use voxproxy_suite::fixtures::answered_sip_leg;

const SID: &str = "MZ18ad3ab5a668481ce02b83e7395059f0";

fn started_bridge(codec: BackendCodec, backend: SocketAddr) -> CallBridge {
    let config =
        BridgeConfig { backend: Some(backend), barge_in: false, ..BridgeConfig::default().with_codec(codec) };
    let mut bridge = CallBridge::new(config, Instant::ZERO).expect("valid config");
    let start = Start {
        sequence_number: 1,
        stream_sid: StreamSid::new(SID).expect("sid"),
        account_sid: AccountSid::new("AC25e16e9a716a4a1786a7c83f58e30482").expect("sid"),
        call_sid: CallSid::new("CA8f5f5b6e8f1b4b1e8e3c8a0e2d1c0b9a").expect("sid"),
        tracks: Tracks { inbound: true, outbound: false },
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: Vec::new(),
    };
    let mut frame = Vec::new();
    media_stream::write_start(&mut frame, &start);
    bridge.handle_twilio(Instant::ZERO, &mut frame).expect("start");
    while bridge.poll_output().is_some() {}
    bridge
}

/// A voiced-speech-like μ-law frame (so the VAD does real work).
fn voice_frame(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let s = 6000.0 * (t * 2.0 * std::f64::consts::PI * 180.0).sin()
                + 2500.0 * (t * 2.0 * std::f64::consts::PI * 720.0).sin();
            g711::ulaw_encode(s as i16)
        })
        .collect()
}

fn drain(bridge: &mut CallBridge) -> usize {
    let mut bytes = 0;
    while let Some(output) = bridge.poll_output() {
        bytes += match output {
            Output::Twilio(frame) | Output::Rtp(frame) => black_box(frame).len(),
            _ => 0,
        };
    }
    bytes
}

fn uplink(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_uplink_20ms");
    let backend: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let audio = voice_frame(160);
    for codec in [BackendCodec::Pcmu, BackendCodec::Pcma, BackendCodec::L16Wideband] {
        let mut bridge = started_bridge(codec, backend);
        let sid = StreamSid::new(SID).expect("sid");
        let mut frame = Vec::with_capacity(512);
        let mut i = 0u64;
        group.bench_function(codec.name(), |b| {
            b.iter(|| {
                i += 1;
                let media = media_stream::Media {
                    sequence_number: i + 1,
                    stream_sid: sid,
                    track: Track::Inbound,
                    chunk: i,
                    timestamp_ms: i * 20,
                    payload_len: 160,
                };
                // The frame is parsed in place, so it is written anew each
                // time, as Twilio's next frame would arrive anew (~100 ns of
                // the figure is this write: see the media_stream bench).
                media_stream::write_inbound_media(&mut frame, &media, &audio);
                bridge.handle_twilio(Instant::from_millis(i * 20), &mut frame).expect("media");
                black_box(drain(&mut bridge))
            });
        });
    }
    group.finish();
}

fn downlink(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_downlink_20ms");
    let backend: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    for codec in [BackendCodec::Pcmu, BackendCodec::Pcma, BackendCodec::L16Wideband] {
        let mut bridge = started_bridge(codec, backend);
        let payload: Vec<u8> = match codec {
            BackendCodec::L16Wideband => {
                (0..320).flat_map(|i| (((i * 97) % 4000) as i16 - 2000).to_be_bytes()).collect()
            }
            _ => voice_frame(160),
        };
        let mut datagram = vec![0u8; 12 + payload.len()];
        let mut seq = 0u16;
        group.bench_function(codec.name(), |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let now = Instant::ZERO + Duration::from_millis(u64::from(seq) * 20);
                let ts = u32::from(seq) * (codec.clock_rate() / 50);
                let n = RtpHeader::new(codec.default_payload_type(), seq, ts, 7)
                    .write(&payload, &mut datagram)
                    .expect("fits");
                bridge.handle_rtp(now, backend, &datagram[..n]);
                black_box(drain(&mut bridge))
            });
        });
    }
    group.finish();
}

/// One 20 ms step both ways (a Twilio frame in, a PCMU packet from the
/// backend), without and with the call recorded: the recording tap's cost
/// per frame is the difference.
fn recorded(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_both_ways_20ms");
    let backend: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let audio = voice_frame(160);
    for record in [false, true] {
        let mut bridge = started_bridge(BackendCodec::Pcmu, backend);
        if record {
            bridge.start_recording();
        }
        let sid = StreamSid::new(SID).expect("sid");
        let mut frame = Vec::with_capacity(512);
        let mut datagram = vec![0u8; 12 + audio.len()];
        let mut i = 0u64;
        group.bench_function(if record { "recorded" } else { "not_recorded" }, |b| {
            b.iter(|| {
                i += 1;
                let now = Instant::from_millis(i * 20);
                let media = media_stream::Media {
                    sequence_number: i + 1,
                    stream_sid: sid,
                    track: Track::Inbound,
                    chunk: i,
                    timestamp_ms: i * 20,
                    payload_len: 160,
                };
                media_stream::write_inbound_media(&mut frame, &media, &audio);
                bridge.handle_twilio(now, &mut frame).expect("media");
                let mut n = drain(&mut bridge);
                let n_rtp = RtpHeader::new(0, i as u16, (i as u32).wrapping_mul(160), 7)
                    .write(&audio, &mut datagram)
                    .expect("fits");
                bridge.handle_rtp(now, backend, &datagram[..n_rtp]);
                n += drain(&mut bridge);
                while let Some(block) = bridge.poll_recording(now) {
                    n += usize::from(block[0]);
                }
                black_box(n)
            });
        });
    }
    group.finish();
}

/// One 20 ms step both ways as in [`recorded`], without and with the call
/// captured for `voxproxy replay` the way the call loop captures it: the
/// Twilio frame and the backend datagram recorded before the bridge sees
/// them, a digest of every output drained, the next deadline, and a 64 KiB
/// batch handed off (a fresh `Vec`, as `proxy/src/capture.rs` does) when
/// full. The capture's cost per frame is the difference.
fn captured(c: &mut Criterion) {
    use voxproxy_adapters::capture::{CaptureHeader, Encoder, LegKind};
    let mut group = c.benchmark_group("bridge_both_ways_20ms");
    let backend: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let audio = voice_frame(160);
    for capture in [false, true] {
        let mut bridge = started_bridge(BackendCodec::Pcmu, backend);
        let header = CaptureHeader {
            voxproxy_version: "bench".to_owned(),
            leg: LegKind::Rtp,
            created_at: Instant::ZERO,
            bridge: bridge.config().clone(),
        };
        let mut encoder = capture.then(|| Encoder::new(&header, u64::MAX, 64 * 1024));
        let sid = StreamSid::new(SID).expect("sid");
        let mut frame = Vec::with_capacity(512);
        let mut datagram = vec![0u8; 12 + audio.len()];
        let mut i = 0u64;
        group.bench_function(if capture { "captured" } else { "not_captured" }, |b| {
            b.iter(|| {
                i += 1;
                let now = Instant::from_millis(i * 20);
                let media = media_stream::Media {
                    sequence_number: i + 1,
                    stream_sid: sid,
                    track: Track::Inbound,
                    chunk: i,
                    timestamp_ms: i * 20,
                    payload_len: 160,
                };
                media_stream::write_inbound_media(&mut frame, &media, &audio);
                if let Some(e) = &mut encoder {
                    e.twilio_text(now, &frame);
                }
                bridge.handle_twilio_activity(now);
                bridge.handle_twilio(now, &mut frame).expect("media");
                let mut n = drain_captured(&mut bridge, encoder.as_mut());
                let n_rtp = RtpHeader::new(0, i as u16, (i as u32).wrapping_mul(160), 7)
                    .write(&audio, &mut datagram)
                    .expect("fits");
                if let Some(e) = &mut encoder {
                    e.rtp(now, backend, &datagram[..n_rtp]);
                }
                bridge.handle_rtp(now, backend, &datagram[..n_rtp]);
                n += drain_captured(&mut bridge, encoder.as_mut());
                if let Some(e) = &mut encoder
                    && e.pending() >= 64 * 1024
                {
                    let mut batch = Vec::with_capacity(e.pending());
                    e.take_into(&mut batch);
                    black_box(batch);
                }
                black_box(n)
            });
        });
    }
    group.finish();
}

/// [`drain`], each output (and then the next deadline) also captured.
fn drain_captured(
    bridge: &mut CallBridge,
    mut encoder: Option<&mut voxproxy_adapters::capture::Encoder>,
) -> usize {
    let mut bytes = 0;
    while let Some(output) = bridge.poll_output() {
        if let Some(e) = encoder.as_deref_mut() {
            e.output(&output);
        }
        bytes += match output {
            Output::Twilio(frame) | Output::Rtp(frame) => black_box(frame).len(),
            _ => 0,
        };
    }
    if let Some(e) = encoder {
        e.deadline(bridge.poll_timeout());
    }
    bytes
}

/// A PCMU call whose backend is a SIP leg, answered: the bridge as above,
/// plus what the proxy does with the leg on every wake of the call loop
/// (`SipBackend::drive`, draining `poll_transmit`, `poll_timeout` for the
/// next deadline). The difference to `pcmu` is a SIP call's added cost.
fn sip_call(backend: SocketAddr) -> (CallBridge, SipBackend) {
    let mut bridge = started_bridge(BackendCodec::Pcmu, backend);
    let (sip, _) = answered_sip_leg(&mut bridge, backend, 1);
    (bridge, sip)
}

/// What the call loop does with the leg after each input.
fn pump(sip: &mut SipBackend, bridge: &mut CallBridge, now: Instant) -> Option<Instant> {
    black_box(sip.drive(now, bridge));
    while let Some(t) = sip.poll_transmit() {
        black_box(t);
    }
    sip.poll_timeout()
}

fn sip_uplink(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_uplink_20ms");
    let backend: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let audio = voice_frame(160);
    let (mut bridge, mut sip) = sip_call(backend);
    let sid = StreamSid::new(SID).expect("sid");
    let mut frame = Vec::with_capacity(512);
    let mut i = 0u64;
    group.bench_function("pcmu_sip", |b| {
        b.iter(|| {
            i += 1;
            let media = media_stream::Media {
                sequence_number: i + 1,
                stream_sid: sid,
                track: Track::Inbound,
                chunk: i,
                timestamp_ms: i * 20,
                payload_len: 160,
            };
            media_stream::write_inbound_media(&mut frame, &media, &audio);
            let now = Instant::from_millis(i * 20);
            bridge.handle_twilio(now, &mut frame).expect("media");
            black_box(pump(&mut sip, &mut bridge, now));
            black_box(drain(&mut bridge))
        });
    });
    group.finish();
}

fn sip_downlink(c: &mut Criterion) {
    let mut group = c.benchmark_group("bridge_downlink_20ms");
    let backend: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let (mut bridge, mut sip) = sip_call(backend);
    let payload = voice_frame(160);
    let mut datagram = vec![0u8; 12 + payload.len()];
    let mut seq = 0u16;
    group.bench_function("pcmu_sip", |b| {
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let now = Instant::ZERO + Duration::from_millis(u64::from(seq) * 20);
            let n =
                RtpHeader::new(0, seq, u32::from(seq) * 160, 7).write(&payload, &mut datagram).expect("fits");
            bridge.handle_rtp(now, backend, &datagram[..n]);
            black_box(pump(&mut sip, &mut bridge, now));
            black_box(drain(&mut bridge))
        });
    });
    group.finish();
}

criterion_group!(benches, uplink, downlink, recorded, captured, sip_uplink, sip_downlink);
criterion_main!(benches);
