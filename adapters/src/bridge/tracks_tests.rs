//! A fork with both tracks: Twilio's `outbound` track reaches the backend as
//! a second RTP stream, and nothing goes back to Twilio. Virtual time only.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use voxproxy_core::Instant;
use voxproxy_core::rtp::{RtpHeader, RtpPacket};

use super::{BridgeConfig, CallBridge, Output};
use crate::media_stream::{self, AccountSid, CallSid, Media, MediaFormat, Start, StreamSid, Track, Tracks};

const BACKEND: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

fn config() -> BridgeConfig {
    BridgeConfig {
        backend: Some(SocketAddr::from(BACKEND)),
        ssrc: 0x1111_1111,
        initial_sequence: 100,
        initial_timestamp: 5_000,
        outbound_ssrc: 0x2222_2222,
        // Both wrap during the test: the streams must stay continuous.
        outbound_initial_sequence: u16::MAX - 3,
        outbound_initial_timestamp: u32::MAX - 500,
        ..BridgeConfig::default()
    }
}

fn sid() -> StreamSid {
    StreamSid::new("MZ00000000000000000000000000000001").expect("sid")
}

fn start(bridge: &mut CallBridge, tracks: Tracks) {
    let start = Start {
        sequence_number: 1,
        stream_sid: sid(),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("sid"),
        call_sid: CallSid::new("CA00000000000000000000000000000001").expect("sid"),
        tracks,
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: Vec::new(),
    };
    let mut frame = Vec::new();
    media_stream::write_start(&mut frame, &start);
    bridge.handle_twilio(Instant::ZERO, &mut frame).expect("start");
}

/// 20 ms of μ-law unique to this track and frame, with 0x7F (which a
/// decode/encode round trip turns into 0xFF) to prove passthrough.
fn payload(track: Track, i: u64) -> Vec<u8> {
    let base = if track == Track::Inbound { 0 } else { 128 };
    (0..160u64).map(|k| if k == 7 { 0x7F } else { ((base + i * 3 + k) % 256) as u8 }).collect()
}

fn send_media(bridge: &mut CallBridge, track: Track, i: u64, mulaw: &[u8]) {
    let media = Media {
        sequence_number: i + 2,
        stream_sid: sid(),
        track,
        chunk: i + 1,
        timestamp_ms: i * 20,
        payload_len: mulaw.len(),
    };
    let mut frame = Vec::new();
    media_stream::write_inbound_media(&mut frame, &media, mulaw);
    bridge.handle_twilio(Instant::from_millis(i * 20), &mut frame).expect("media");
}

/// RTP audio packets by SSRC: (sequence, timestamp, marker, payload); and
/// how many frames went to Twilio.
type Streams = BTreeMap<u32, Vec<(u16, u32, bool, Vec<u8>)>>;

fn drain(bridge: &mut CallBridge, streams: &mut Streams) -> usize {
    let mut to_twilio = 0;
    while let Some(output) = bridge.poll_output() {
        match output {
            Output::Rtp(datagram) => {
                let p = RtpPacket::parse(datagram).expect("valid RTP");
                if p.payload_type() == 0 {
                    streams.entry(p.ssrc()).or_default().push((
                        p.sequence_number(),
                        p.timestamp(),
                        p.marker(),
                        p.payload().to_vec(),
                    ));
                }
            }
            Output::Twilio(_) => to_twilio += 1,
            Output::Event(_) | Output::Ping | Output::Close { .. } => {}
        }
    }
    to_twilio
}

#[test]
fn both_tracks_reach_the_backend_on_two_ssrcs_bit_exact() {
    let config = config();
    let mut bridge = CallBridge::new(config.clone(), Instant::ZERO).expect("config");
    start(&mut bridge, Tracks { inbound: true, outbound: true });
    let mut streams = Streams::new();
    drain(&mut bridge, &mut streams);
    let frames = 50u64;
    for i in 0..frames {
        send_media(&mut bridge, Track::Inbound, i, &payload(Track::Inbound, i));
        send_media(&mut bridge, Track::Outbound, i, &payload(Track::Outbound, i));
        drain(&mut bridge, &mut streams);
    }
    assert_eq!(streams.keys().copied().collect::<Vec<_>>(), [config.ssrc, config.outbound_ssrc]);
    for (ssrc, track, seq0, ts0) in [
        (config.ssrc, Track::Inbound, config.initial_sequence, config.initial_timestamp),
        (
            config.outbound_ssrc,
            Track::Outbound,
            config.outbound_initial_sequence,
            config.outbound_initial_timestamp,
        ),
    ] {
        let packets = &streams[&ssrc];
        assert_eq!(packets.len() as u64, frames, "{track:?}");
        for (i, (seq, ts, marker, body)) in packets.iter().enumerate() {
            let i16 = i as u16;
            assert_eq!(*seq, seq0.wrapping_add(i16), "{track:?} sequence continuous");
            assert_eq!(*ts, ts0.wrapping_add(160 * i as u32), "{track:?} timestamp from media.timestamp");
            assert_eq!(*marker, i == 0, "{track:?} marker on the first packet only");
            assert_eq!(*body, payload(track, i as u64), "{track:?} PCMU passes through bit-exact");
        }
    }
    let stats = bridge.stats();
    assert_eq!(stats.twilio_frames_in, frames);
    assert_eq!(stats.twilio_outbound_track_frames_in, frames);
    assert_eq!(stats.rtp_outbound_track_packets_out, frames);
    assert_eq!(stats.rtp_packets_out, 2 * frames);
}

#[test]
fn outbound_track_gap_keeps_timestamps_true_and_sets_the_marker() {
    let config = config();
    let mut bridge = CallBridge::new(config.clone(), Instant::ZERO).expect("config");
    start(&mut bridge, Tracks { inbound: true, outbound: true });
    let mut streams = Streams::new();
    // Frames 0, 1, then Twilio's outbound track is silent until frame 5.
    for i in [0, 1, 5, 6] {
        send_media(&mut bridge, Track::Outbound, i, &payload(Track::Outbound, i));
    }
    drain(&mut bridge, &mut streams);
    let packets = &streams[&config.outbound_ssrc];
    let seqs: Vec<u16> = packets.iter().map(|p| p.0.wrapping_sub(config.outbound_initial_sequence)).collect();
    let times: Vec<u32> =
        packets.iter().map(|p| p.1.wrapping_sub(config.outbound_initial_timestamp)).collect();
    let markers: Vec<bool> = packets.iter().map(|p| p.2).collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
    assert_eq!(times, [0, 160, 800, 960]);
    assert_eq!(markers, [true, false, true, false]);
}

#[test]
fn a_fork_sends_nothing_back_to_twilio() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("config");
    start(&mut bridge, Tracks { inbound: true, outbound: true });
    assert!(bridge.is_one_way());
    let mut streams = Streams::new();
    let mut datagram = [0u8; 200];
    let mut to_twilio = 0;
    for i in 0..20u16 {
        let n = RtpHeader::new(0, i, u32::from(i) * 160, 9).write(&[0x55; 160], &mut datagram).expect("fits");
        bridge.handle_rtp(Instant::from_millis(u64::from(i) * 20), SocketAddr::from(BACKEND), &datagram[..n]);
        to_twilio += drain(&mut bridge, &mut streams);
    }
    bridge.handle_timeout(Instant::from_millis(1_000));
    to_twilio += drain(&mut bridge, &mut streams);
    assert_eq!(to_twilio, 0, "no media, mark or clear on a one-way stream");
    assert_eq!(bridge.stats().rtp_dropped_one_way, 20);
    assert_eq!(bridge.stats().twilio_frames_out, 0);
}

#[test]
fn an_inbound_only_stream_ignores_outbound_media_and_still_plays_backend_audio() {
    let config = config();
    let mut bridge = CallBridge::new(config.clone(), Instant::ZERO).expect("config");
    start(&mut bridge, Tracks { inbound: true, outbound: false });
    assert!(!bridge.is_one_way());
    let mut streams = Streams::new();
    send_media(&mut bridge, Track::Outbound, 0, &payload(Track::Outbound, 0));
    send_media(&mut bridge, Track::Inbound, 0, &payload(Track::Inbound, 0));
    drain(&mut bridge, &mut streams);
    assert_eq!(streams.keys().copied().collect::<Vec<_>>(), [config.ssrc]);
    let mut datagram = [0u8; 200];
    let n = RtpHeader::new(0, 1, 160, 9).write(&[0x55; 160], &mut datagram).expect("fits");
    bridge.handle_rtp(Instant::from_millis(20), SocketAddr::from(BACKEND), &datagram[..n]);
    assert_eq!(drain(&mut bridge, &mut streams), 1, "a bidirectional stream plays backend audio");
    assert_eq!(bridge.stats().rtp_dropped_one_way, 0);
}

#[test]
fn equal_ssrcs_are_refused() {
    let config = BridgeConfig { outbound_ssrc: 7, ssrc: 7, ..BridgeConfig::default() };
    assert!(CallBridge::new(config, Instant::ZERO).is_err());
}

#[test]
fn a_negotiated_format_applies_before_media_and_never_after() {
    let mut bridge = CallBridge::new(config(), Instant::ZERO).expect("bridge");
    start(&mut bridge, Tracks { inbound: true, outbound: false });
    assert!(
        bridge.set_media(Instant::ZERO, super::BackendCodec::Pcma, 8, 8).is_err(),
        "audio and DTMF on one payload type is refused"
    );
    bridge.set_media(Instant::ZERO, super::BackendCodec::Pcma, 8, 100).expect("before media");
    let mut payload_types = Vec::new();
    for i in 0..3 {
        send_media(&mut bridge, Track::Inbound, i, &payload(Track::Inbound, i));
        while let Some(output) = bridge.poll_output() {
            if let Output::Rtp(datagram) = output {
                payload_types.push(RtpPacket::parse(datagram).expect("RTP").payload_type());
            }
        }
    }
    assert_eq!(payload_types, [8, 8, 8], "PCMA on the negotiated payload type");
    assert!(
        bridge.set_media(Instant::from_millis(60), super::BackendCodec::Pcmu, 0, 101).is_err(),
        "media already flowed"
    );
}
