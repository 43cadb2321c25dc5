//! The bridge's taps: the recording of the call ([`RecordingTap`]) and its
//! latency breakdown ([`LatencyBreakdown`]). The bridge feeds both as audio
//! passes; the caller drains the recording and adds the processing times
//! only it can measure.

use core::time::Duration;

use voxproxy_core::time::Instant;

use super::CallBridge;
use crate::latency::{LatencyBreakdown, LatencySummary};
use crate::recording::{BLOCK_BYTES, RecordingTap, TapCounters};

impl CallBridge {
    /// Starts recording the call from now on: both directions go to a
    /// [`RecordingTap`] (allocated here, once), drained with
    /// [`CallBridge::poll_recording`]. Calling it again changes nothing.
    pub fn start_recording(&mut self) {
        if self.recording.is_none() {
            self.recording = Some(Box::new(RecordingTap::new()));
        }
    }

    /// Whether the call is being recorded.
    #[must_use]
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    /// The next final 20 ms of the recording (see [`RecordingTap::poll_block`]);
    /// `None` when nothing is final yet or the call is not recorded. Call
    /// until `None` after every `handle_*`; after the call ended, call
    /// [`CallBridge::finish_recording`] first to get the rest.
    #[must_use]
    pub fn poll_recording(&mut self, now: Instant) -> Option<&[u8; BLOCK_BYTES]> {
        self.recording.as_deref_mut()?.poll_block(now)
    }

    /// The call is over: every slot up to the last audio becomes final.
    pub fn finish_recording(&mut self) {
        if let Some(tap) = self.recording.as_deref_mut() {
            tap.finish();
        }
    }

    /// What the recording emitted and dropped, while recording.
    #[must_use]
    pub fn recording_counters(&self) -> Option<TapCounters> {
        self.recording.as_deref().map(RecordingTap::counters)
    }

    /// The latency histograms so far.
    #[must_use]
    pub fn latency(&self) -> &LatencyBreakdown {
        &self.latency
    }

    /// The breakdown with the RFC 3550 jitter and concealment beside it.
    #[must_use]
    pub fn latency_summary(&self) -> LatencySummary {
        let stats = self.stats();
        self.latency.summary(stats.jitter_us, stats.max_jitter_us, stats.concealed_frames)
    }

    /// Records the time the caller spent on one input, measured around its
    /// `handle_*` call and the draining of the outputs: `from_twilio` for a
    /// WebSocket frame, otherwise a backend datagram.
    pub fn record_processing(&mut self, from_twilio: bool, spent: Duration) {
        if from_twilio {
            self.latency.twilio_processing.record(spent);
        } else {
            self.latency.backend_processing.record(spent);
        }
    }

    /// Audio a leg outside the bridge (a bot's, on a WebSocket leg) sent
    /// to Twilio at `now`: what the caller hears, for the recording. The
    /// bridge taps its own backend audio itself.
    pub fn record_heard(&mut self, now: Instant, mulaw: &[u8]) {
        if let Some(tap) = self.recording.as_deref_mut() {
            tap.handle_to_twilio(now, mulaw);
        }
    }

    /// A `clear` a leg outside the bridge sent to Twilio at `now`: what was
    /// queued there is never heard.
    pub fn record_clear(&mut self, now: Instant) {
        if let Some(tap) = self.recording.as_deref_mut() {
            tap.handle_clear(now);
        }
    }

    /// A caller frame of μ-law `audio` at media time `timestamp_ms`.
    pub(super) fn tap_from_twilio(&mut self, now: Instant, timestamp_ms: u64, audio: &[u8]) {
        let late = self.latency.burst_meter.handle_frame(now, timestamp_ms + audio.len() as u64 / 8);
        self.latency.twilio_burst.record(late);
        if let Some(tap) = self.recording.as_deref_mut() {
            tap.handle_from_twilio(now, timestamp_ms, audio);
        }
    }

    /// A frame about to go to Twilio.
    pub(super) fn tap_to_twilio(&mut self, mulaw: &[u8]) {
        if let Some(tap) = self.recording.as_deref_mut() {
            tap.handle_to_twilio(self.now, mulaw);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use voxproxy_core::g711;
    use voxproxy_core::rtp::RtpHeader;

    use super::*;
    use crate::bridge::{BridgeConfig, Output};
    use crate::media_stream::{
        self, AccountSid, CallSid, Media, MediaFormat, Start, StreamSid, Track, Tracks,
    };

    const BACKEND: ([u8; 4], u16) = ([127, 0, 0, 1], 40_000);

    fn sid() -> StreamSid {
        StreamSid::new("MZ00000000000000000000000000000001").expect("sid")
    }

    fn started_bridge() -> CallBridge {
        let config = BridgeConfig {
            backend: Some(SocketAddr::from(BACKEND)),
            barge_in: false,
            ..BridgeConfig::default()
        };
        let mut bridge = CallBridge::new(config, Instant::ZERO).expect("config");
        let start = Start {
            sequence_number: 1,
            stream_sid: sid(),
            account_sid: AccountSid::new("AC00000000000000000000000000000001").expect("sid"),
            call_sid: CallSid::new("CA00000000000000000000000000000001").expect("sid"),
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

    /// A frame of Twilio audio: one μ-law code (never 0x7F, which decodes
    /// to the same zero as 0xFF) per frame.
    fn code(i: u64) -> u8 {
        0x10 + (i % 0x60) as u8
    }

    fn send_media(bridge: &mut CallBridge, now: Instant, i: u64) {
        let media = Media {
            sequence_number: i + 2,
            stream_sid: sid(),
            track: Track::Inbound,
            chunk: i + 1,
            timestamp_ms: i * 20,
            payload_len: 160,
        };
        let mut frame = Vec::new();
        media_stream::write_inbound_media(&mut frame, &media, &[code(i); 160]);
        bridge.handle_twilio(now, &mut frame).expect("media");
    }

    fn send_rtp(bridge: &mut CallBridge, now: Instant, seq: u16) {
        let mut datagram = [0u8; 200];
        let payload = [0x80 + (seq % 0x60) as u8; 160];
        let len =
            RtpHeader::new(0, seq, u32::from(seq) * 160, 9).write(&payload, &mut datagram).expect("fits");
        bridge.handle_rtp(now, SocketAddr::from(BACKEND), &datagram[..len]);
    }

    fn drain(bridge: &mut CallBridge, now: Instant, wav: &mut Vec<(u8, u8)>) {
        while let Some(output) = bridge.poll_output() {
            assert!(!matches!(output, Output::Close { .. }));
        }
        while let Some(block) = bridge.poll_recording(now) {
            for s in block.chunks_exact(4) {
                let (a, b) = (i16::from_le_bytes([s[0], s[1]]), i16::from_le_bytes([s[2], s[3]]));
                wav.push((g711::ulaw_encode(a), g711::ulaw_encode(b)));
            }
        }
    }

    #[test]
    fn records_both_directions_and_measures_the_buffer_wait() {
        let mut bridge = started_bridge();
        bridge.start_recording();
        let mut wav = Vec::new();
        // 50 frames each way; the backend's packet 20 arrives 30 ms late,
        // after 21, so 21 waits in the jitter buffer for it.
        for i in 0..50u64 {
            let now = Instant::from_millis(20 + i * 20);
            send_media(&mut bridge, now, i);
            drain(&mut bridge, now, &mut wav);
            let rtp_at = now + Duration::from_millis(2);
            match i {
                20 => {}
                21 => {
                    send_rtp(&mut bridge, rtp_at, 21);
                    drain(&mut bridge, rtp_at, &mut wav);
                    let late = rtp_at + Duration::from_millis(10);
                    send_rtp(&mut bridge, late, 20);
                    drain(&mut bridge, late, &mut wav);
                }
                _ => {
                    send_rtp(&mut bridge, rtp_at, i as u16);
                    drain(&mut bridge, rtp_at, &mut wav);
                }
            }
        }
        bridge.finish_recording();
        drain(&mut bridge, Instant::from_millis(1_100), &mut wav);

        let caller: Vec<u8> = wav.iter().step_by(160).map(|s| s.0).take(50).collect();
        assert_eq!(
            caller,
            (0..50).map(code).collect::<Vec<_>>(),
            "the caller channel holds every frame in order"
        );
        let heard: Vec<u8> = wav.iter().map(|s| s.1).filter(|&c| c != 0xFF).collect();
        assert_eq!(heard.len(), 50 * 160, "every backend frame was heard");
        let frames: Vec<u8> = heard.iter().step_by(160).copied().collect();
        assert_eq!(frames, (0..50u16).map(|s| 0x80 + (s % 0x60) as u8).collect::<Vec<_>>());

        let summary = bridge.latency_summary();
        assert_eq!(summary.jitter_buffer_wait.count, 50);
        assert_eq!(summary.jitter_buffer_wait.max_us, 10_000, "packet 21 waited 10 ms for 20");
        assert_eq!(summary.jitter_buffer_wait.p50_us, 0);
        assert_eq!(summary.twilio_burst.count, 50);
        assert_eq!(summary.twilio_burst.max_us, 0, "Twilio's frames came on time");
        assert_eq!(bridge.recording_counters().map(|c| c.late_samples), Some(0));
    }

    #[test]
    fn not_recording_costs_nothing_and_yields_nothing() {
        let mut bridge = started_bridge();
        send_media(&mut bridge, Instant::from_millis(20), 0);
        assert!(!bridge.is_recording());
        assert!(bridge.poll_recording(Instant::from_millis(10_000)).is_none());
        assert_eq!(bridge.recording_counters(), None);
        assert_eq!(bridge.latency().twilio_burst.count(), 1, "the breakdown runs either way");
    }
}
