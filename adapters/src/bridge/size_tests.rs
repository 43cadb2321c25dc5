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
    // slots, 13,768 with 16 of them, 10,712 with 8, 10,368 with the
    // caller's VAD framing μ-law and the VADs' ring positions in bytes
    // (x86-64). The bound stops silent growth; the heap a call holds is
    // bounded by `tests/no_alloc.rs`.
    let size = size_of::<CallBridge>();
    assert!(size <= 10_400, "CallBridge grew to {size} bytes");
}

#[test]
fn a_new_output_buffer_holds_a_media_frame_and_any_g711_datagram() {
    // The pool's buffers start at OUTPUT_BUFFER_BYTES: the steady state's
    // outputs must fit without growing them.
    let sid = StreamSid::new(&"M".repeat(media_stream::MAX_SID_LEN)).expect("sid");
    let mut buf = Vec::new();
    media_stream::write_media(&mut buf, &sid, &[0xFF; super::FRAME_SAMPLES]);
    assert!(buf.len() <= super::OUTPUT_BUFFER_BYTES, "a media frame is {} bytes", buf.len());
    let longest_g711 = super::datagram_len(BackendCodec::Pcmu, MAX_G711_RTP_PAYLOAD);
    assert_eq!(longest_g711, 12 + MAX_G711_RTP_PAYLOAD);
    assert!(longest_g711 <= super::OUTPUT_BUFFER_BYTES);
    // L16 datagrams are sized to their payload, never past the largest.
    assert_eq!(super::datagram_len(BackendCodec::L16Narrowband, 160), 12 + 320);
    assert_eq!(super::datagram_len(BackendCodec::L16Wideband, 160), 12 + 640);
    assert_eq!(super::datagram_len(BackendCodec::L16Wideband, 320), 12 + MAX_RTP_PAYLOAD);
}

/// A bridge on `config` whose Twilio stream has started.
fn started_bridge(config: BridgeConfig) -> CallBridge {
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
    bridge
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
    let mut bridge = started_bridge(config);
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

#[test]
fn g711_calls_with_a_short_hold_get_the_small_inline_buffer() {
    use super::{DownlinkJitter, JitterConfig, SHORT_JITTER_SLOTS};
    use core::time::Duration;
    let ms = Duration::from_millis;
    let jitter = |hold: u64| JitterConfig { max_delay: ms(hold), ..JitterConfig::default() };
    let pick = |codec, ptime: u64, hold: u64| match DownlinkJitter::new(
        codec,
        ms(ptime),
        jitter(hold),
        Instant::ZERO,
    ) {
        DownlinkJitter::G711(_) => "short",
        DownlinkJitter::G711Long(_) => "long",
        DownlinkJitter::L16(_) => "l16",
    };
    // The defaults (20 ms, a 60 ms hold) and any hold up to six packets: 8 slots inline.
    assert_eq!(pick(BackendCodec::Pcmu, 20, 60), "short");
    assert_eq!(pick(BackendCodec::Pcma, 20, 120), "short");
    assert_eq!(pick(BackendCodec::Pcmu, 10, 60), "short");
    // A longer hold could fill 8 slots with packets waiting on one gap.
    assert_eq!(pick(BackendCodec::Pcmu, 20, 121), "long");
    assert_eq!(pick(BackendCodec::Pcmu, 10, 70), "long");
    assert_eq!(pick(BackendCodec::L16Narrowband, 20, 60), "l16");
    assert_eq!(SHORT_JITTER_SLOTS, 8);
}

#[test]
fn a_reordered_burst_within_the_default_hold_loses_nothing() {
    // Packets 1..=6 arrive in reverse within 60 ms, after packet 0: the 8
    // slots hold them all, and every one is played in order.
    let config = BridgeConfig {
        backend: Some(SocketAddr::from(BACKEND)),
        codec: BackendCodec::Pcmu,
        payload_type: 0,
        ..BridgeConfig::default()
    };
    let mut bridge = started_bridge(config);
    let payload = [0x55u8; 160];
    let mut datagram = [0u8; 12 + 160];
    for (i, seq) in [0u16, 6, 5, 4, 3, 2, 1].into_iter().enumerate() {
        let len =
            RtpHeader::new(0, seq, u32::from(seq) * 160, 7).write(&payload, &mut datagram).expect("fits");
        bridge.handle_rtp(Instant::from_millis(i as u64 * 5), SocketAddr::from(BACKEND), &datagram[..len]);
        while bridge.poll_output().is_some() {}
    }
    let stats = bridge.stats();
    assert_eq!(stats.twilio_audio_bytes_out, 7 * 160);
    assert_eq!(stats.concealed_frames, 0);
}
