//! What one call's bridge costs in memory, and the G.711 jitter slots that
//! keep it down. Virtual time only.

use std::net::SocketAddr;

use voxproxy_core::Instant;
use voxproxy_core::rtp::RtpHeader;

use super::{BackendCodec, BridgeConfig, CallBridge, MAX_G711_RTP_PAYLOAD, MAX_RTP_PAYLOAD};
use crate::media_stream::{self, AccountSid, CallSid, MediaFormat, Start, StreamSid, Tracks};

const BACKEND: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

#[test]
fn the_bridge_stays_small() {
    // Every call holds one (boxed by the proxy's call task), so its size is
    // memory per call: 18,912 bytes while G.711 calls had L16-sized jitter
    // slots, 13,792 since. The bound stops silent growth.
    let size = size_of::<CallBridge>();
    assert!(size <= 14 * 1024, "CallBridge grew to {size} bytes");
}

/// A started bridge for `codec` and the backend payload sizes it took:
/// (bytes of audio sent on to Twilio, payloads counted bad).
fn play(codec: BackendCodec, payload_bytes: usize) -> (u64, u64) {
    let config = BridgeConfig {
        backend: Some(SocketAddr::from(BACKEND)),
        codec,
        payload_type: if codec == BackendCodec::Pcmu { 0 } else { 96 },
        barge_in: false,
        ..BridgeConfig::default()
    };
    let mut bridge = CallBridge::new(config, Instant::ZERO).expect("config");
    let start = Start {
        sequence_number: 1,
        stream_sid: StreamSid::new("MZ00000000000000000000000000000001").expect("sid"),
        account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("sid"),
        call_sid: CallSid::new("CA00000000000000000000000000000001").expect("sid"),
        tracks: Tracks { inbound: true, outbound: false },
        media_format: MediaFormat::mulaw_8k_mono(),
        custom_parameters: Vec::new(),
    };
    let mut frame = Vec::new();
    media_stream::write_start(&mut frame, &start);
    bridge.handle_twilio(Instant::ZERO, &mut frame).expect("start");
    let payload = vec![0x55u8; payload_bytes];
    let mut datagram = vec![0u8; 12 + payload_bytes];
    let pt = bridge.config().payload_type;
    for i in 0..3u16 {
        let len = RtpHeader::new(pt, i, u32::from(i) * 320, 7).write(&payload, &mut datagram).expect("fits");
        let now = Instant::from_millis(u64::from(i) * 40);
        bridge.handle_rtp(now, SocketAddr::from(BACKEND), &datagram[..len]);
        while bridge.poll_output().is_some() {}
    }
    let stats = bridge.stats();
    (stats.twilio_audio_bytes_out, stats.rtp_bad_payload)
}

#[test]
fn g711_slots_hold_the_longest_ptime_and_l16_keeps_its_wide_ones() {
    // 40 ms of G.711, the longest rtp.ptime_ms, is played...
    let (out, bad) = play(BackendCodec::Pcmu, MAX_G711_RTP_PAYLOAD);
    assert_eq!((out, bad), (3 * MAX_G711_RTP_PAYLOAD as u64, 0));
    // ...a longer packet is counted bad, not stored.
    let (out, bad) = play(BackendCodec::Pcmu, MAX_G711_RTP_PAYLOAD + 8);
    assert_eq!((out, bad), (0, 3));
    // L16 at 8 kHz keeps its 40 ms (640 bytes = 320 samples sent as μ-law).
    let (out, bad) = play(BackendCodec::L16Narrowband, MAX_RTP_PAYLOAD);
    assert_eq!((out, bad), (3 * MAX_RTP_PAYLOAD as u64 / 2, 0));
}
