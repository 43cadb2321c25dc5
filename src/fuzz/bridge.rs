//! `bridge_events`: a [`CallBridge`] driven by an arbitrary sequence of
//! Twilio frames (well-formed, mangled or random), backend datagrams (RTP
//! of every payload type, RTCP, garbage, foreign sources), clock steps,
//! timeouts and closes, with its invariants checked after every step.

use core::time::Duration;
use std::net::SocketAddr;

use arbitrary::{Arbitrary, Unstructured};
use voxproxy_adapters::bridge::{BackendCodec, BridgeConfig, CallBridge, EndReason, Output};
use voxproxy_adapters::media_stream::{self, Outbound};
use voxproxy_core::Instant;
use voxproxy_core::rtp::{RtpHeader, RtpPacket};

const BACKEND: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);
const STREAM: &str = "MZ00000000000000000000000000000001";

#[derive(Arbitrary, Debug)]
enum Step {
    Start,
    Media {
        timestamp_ms: u16,
        len: u8,
        fill: u8,
    },
    Dtmf {
        digit: u8,
    },
    MarkEcho {
        id: u8,
    },
    Stop,
    TwilioBytes(Vec<u8>),
    /// A Twilio frame with one byte flipped.
    MangledMedia {
        at: u8,
        byte: u8,
    },
    Rtp {
        payload_type: u8,
        sequence: u16,
        timestamp: u32,
        marker: bool,
        len: u8,
        ssrc: u8,
    },
    RtpFromElsewhere,
    DatagramBytes(Vec<u8>),
    Advance {
        ms: u16,
    },
    Timeout,
    Close {
        reason: u8,
    },
}

fn twilio_frame(step: &Step) -> Option<Vec<u8>> {
    let sid = STREAM;
    Some(match *step {
        Step::Start => format!(
            r#"{{"event":"start","sequenceNumber":"1","start":{{"accountSid":"AC1","streamSid":"{sid}","callSid":"CA1","tracks":["inbound"],"mediaFormat":{{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}},"customParameters":{{"a":"b"}}}},"streamSid":"{sid}"}}"#
        )
        .into_bytes(),
        Step::Media { timestamp_ms, len, fill } => media_frame(timestamp_ms, len, fill),
        Step::MangledMedia { at, byte } => {
            let mut frame = media_frame(40, 160, 0x55);
            let i = usize::from(at) % frame.len();
            frame[i] = byte;
            frame
        }
        Step::Dtmf { digit } => {
            let d = b"0123456789*#ABCDx"[usize::from(digit) % 17] as char;
            format!(r#"{{"event":"dtmf","streamSid":"{sid}","sequenceNumber":"5","dtmf":{{"track":"inbound_track","digit":"{d}"}}}}"#)
                .into_bytes()
        }
        Step::MarkEcho { id } => {
            format!(r#"{{"event":"mark","sequenceNumber":"4","streamSid":"{sid}","mark":{{"name":"vp-{id}"}}}}"#).into_bytes()
        }
        Step::Stop => format!(
            r#"{{"event":"stop","sequenceNumber":"9","stop":{{"accountSid":"AC1","callSid":"CA1"}},"streamSid":"{sid}"}}"#
        )
        .into_bytes(),
        Step::TwilioBytes(ref bytes) => bytes.clone(),
        _ => return None,
    })
}

fn media_frame(timestamp_ms: u16, len: u8, fill: u8) -> Vec<u8> {
    let audio = vec![fill; usize::from(len)];
    let media = media_stream::Media {
        sequence_number: 3,
        stream_sid: media_stream::StreamSid::new(STREAM).expect("valid sid"),
        track: media_stream::Track::Inbound,
        chunk: 1,
        timestamp_ms: u64::from(timestamp_ms),
        payload_len: audio.len(),
    };
    let mut out = Vec::new();
    media_stream::write_inbound_media(&mut out, &media, &audio);
    out
}

/// Drains the bridge and checks every output: frames for Twilio parse as
/// outbound Media Streams messages, datagrams parse as RTP of a payload
/// type the bridge may send, and nothing follows a close.
fn drain(bridge: &mut CallBridge, config: &BridgeConfig, closed: &mut bool) {
    let mut audio = vec![0u8; 8192];
    for _ in 0..10_000 {
        let Some(output) = bridge.poll_output() else { return };
        assert!(!*closed, "output after close: {output:?}");
        match output {
            Output::Twilio(frame) => {
                let mut frame = frame.to_vec();
                let parsed = media_stream::parse_outbound(&mut frame, &mut audio);
                assert!(
                    matches!(
                        parsed,
                        Ok(Outbound::Media { .. } | Outbound::Mark { .. } | Outbound::Clear { .. })
                    ),
                    "the bridge sent Twilio an invalid frame: {parsed:?}"
                );
            }
            Output::Rtp(datagram) => {
                let packet = RtpPacket::parse(datagram).expect("the bridge sends valid RTP");
                let pt = packet.payload_type();
                assert!(
                    pt == config.payload_type || pt == config.dtmf_payload_type || pt == 13,
                    "unexpected payload type {pt}"
                );
            }
            Output::Close { .. } => *closed = true,
            Output::Ping | Output::Event(_) => {}
        }
    }
    panic!("the bridge kept producing output");
}

/// Drives a bridge through the steps decoded from `data`.
pub fn bridge_events(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let codec = BackendCodec::ALL[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % 4];
    let ptime = [10u64, 20, 30, 40][usize::from(u.arbitrary::<u8>().unwrap_or(1)) % 4];
    let ptime = if codec == BackendCodec::L16Wideband { ptime.min(20) } else { ptime };
    let backend = SocketAddr::from(BACKEND);
    let config = BridgeConfig {
        backend: Some(backend),
        ptime: Duration::from_millis(ptime),
        barge_in: u.arbitrary().unwrap_or(true),
        ..BridgeConfig::default().with_codec(codec)
    };
    let mut bridge = CallBridge::new(config.clone(), Instant::ZERO).expect("valid config");
    let mut now = Instant::ZERO;
    let mut closed = false;
    let mut datagram = vec![0u8; 2048];
    for _ in 0..512 {
        let Ok(step) = u.arbitrary::<Step>() else { break };
        if let Some(mut frame) = twilio_frame(&step) {
            let _ = bridge.handle_twilio(now, &mut frame);
        }
        match step {
            Step::Rtp { payload_type, sequence, timestamp, marker, len, ssrc } => {
                let mut header = RtpHeader::new(payload_type & 0x7f, sequence, timestamp, u32::from(ssrc));
                header.marker = marker;
                let payload = vec![0x5a; usize::from(len) * 4];
                if let Ok(n) = header.write(&payload, &mut datagram) {
                    bridge.handle_rtp(now, backend, &datagram[..n]);
                }
            }
            Step::RtpFromElsewhere => {
                let n = RtpHeader::new(0, 1, 0, 1).write(&[0xff; 160], &mut datagram).expect("fits");
                bridge.handle_rtp(now, SocketAddr::from(([10, 0, 0, 9], 5004)), &datagram[..n]);
            }
            Step::DatagramBytes(ref bytes) => bridge.handle_rtp(now, backend, bytes),
            Step::Advance { ms } => now += Duration::from_millis(u64::from(ms)),
            Step::Timeout => {
                if let Some(deadline) = bridge.poll_timeout() {
                    now = now.max(deadline);
                    bridge.handle_timeout(now);
                    drain(&mut bridge, &config, &mut closed);
                    // A deadline at or before `now` right after handling it
                    // would make a runtime spin.
                    assert!(bridge.poll_timeout().is_none_or(|next| next > now), "timer did not advance");
                }
            }
            Step::Close { reason } => {
                let reason = [EndReason::WebSocketClosed, EndReason::Hangup, EndReason::Drain]
                    [usize::from(reason) % 3];
                bridge.handle_close(now, reason);
            }
            _ => {}
        }
        drain(&mut bridge, &config, &mut closed);
        let stats = bridge.stats();
        assert!(stats.marks_played + stats.marks_cleared <= stats.marks_sent, "{stats:?}");
        assert!(stats.concealed_frames <= stats.rtp_lost, "{stats:?}");
        if bridge.is_finished() {
            assert_eq!(bridge.poll_timeout(), None, "a finished call wants no wake-ups");
        }
    }
}
