//! The recording tap: lines up what the caller said and what the caller
//! heard on one clock, in 20 ms slots of two-channel 8 kHz PCM16, for a
//! writer to append to a WAV file. Sans-IO and allocation-free per frame:
//! its window is allocated once, when the call starts recording.
//!
//! Any leg that carries a call's audio feeds it through two calls:
//! [`RecordingTap::handle_from_twilio`] with the μ-law Twilio sent and its
//! media timestamp, and [`RecordingTap::handle_to_twilio`] with the μ-law
//! sent back (and [`RecordingTap::handle_clear`] when a `clear` empties
//! Twilio's playout buffer). [`RecordingTap::poll_block`] then yields the
//! slots that are final, oldest first; [`RecordingTap::finish`] makes the
//! rest final at the end of the call.
//!
//! # The clock
//!
//! The timeline is voxproxy's own clock, from the first audio of the call:
//! sample 0 is where the caller's first frame began, or one slot before the
//! first audio sent to Twilio when that came first.
//!
//! - **Channel 1, the caller**, is placed by Twilio's media timestamps,
//!   mapped onto the timeline once, by the first frame (which lands at 0):
//!   a burst of late frames still lands where its timestamps say, each
//!   frame exactly after the one before, and a gap in the timestamps is
//!   silence. A frame more than [`RESYNC`] early or late against that
//!   mapping means Twilio restarted its media clock: the mapping is taken
//!   afresh from it. (Clocks drifting 100 ppm apart take 80 minutes to
//!   make frames later than the slack below; then they are dropped and
//!   counted until the drift reaches [`RESYNC`].)
//! - **Channel 2, what the caller heard**, is placed when it was sent, one
//!   frame after the other like Twilio's playout buffer plays it: a frame
//!   sent while earlier audio is still playing follows that audio; a frame
//!   sent after a pause starts at its send time. A `clear` cuts what was
//!   queued but not yet played.
//! - A slot becomes final [`LATE_SLOTS`] slots after the clock passed its
//!   end; caller audio arriving later than that is dropped and counted.
//!   Audio sent more than the window ahead of the clock (a bot pushing a
//!   long prompt at once) is dropped and counted too: the window is bounded.

use core::time::Duration;

use voxproxy_core::{Instant, g711};

/// Samples per slot: 20 ms at 8 kHz.
pub const SLOT_SAMPLES: usize = 160;
/// Bytes of one emitted slot: two channels of little-endian PCM16, interleaved.
pub const BLOCK_BYTES: usize = SLOT_SAMPLES * 4;
/// Slots the tap holds: 2.56 s, 41 KB of μ-law per call. A candidate for a
/// config key if bots that push long prompts at once must be recorded whole.
pub const WINDOW_SLOTS: usize = 128;
/// How long a slot stays open after the clock passed it: 500 ms of slack
/// for Twilio's bursts before late caller audio is dropped.
pub const LATE_SLOTS: u64 = 25;
/// Caller audio this far from where the clock says it should be means a
/// new media clock. Less than the window minus the slack, so audio early
/// by less than this still fits in the window.
pub const RESYNC: Duration = Duration::from_secs(2);

const WINDOW: u64 = (WINDOW_SLOTS * SLOT_SAMPLES) as u64;
const SLOT: u64 = SLOT_SAMPLES as u64;
/// μ-law's positive zero: the silence both channels start as.
const MULAW_SILENCE: u8 = 0xFF;

/// What the tap dropped, for the call record and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapCounters {
    /// Slots emitted by [`RecordingTap::poll_block`].
    pub slots: u64,
    /// Caller samples that arrived after their slot was final.
    pub late_samples: u64,
    /// Samples (either channel) too far ahead of the clock for the window.
    pub overrun_samples: u64,
    /// Times Twilio's media clock jumped and the mapping was taken afresh.
    pub resyncs: u64,
}

/// One call's recording tap. See the [module docs](self).
#[derive(Debug)]
pub struct RecordingTap {
    caller: Box<[u8]>,
    heard: Box<[u8]>,
    block: [u8; BLOCK_BYTES],
    /// Timeline sample 0 on the monotonic clock, in samples since
    /// [`Instant::ZERO`] (before it, for audio in the first 20 ms of the
    /// clock); `None` before the first audio.
    origin: Option<i64>,
    /// First sample not emitted yet (a slot boundary).
    base: u64,
    /// `timeline sample − media sample` of the caller's audio.
    media_offset: Option<i64>,
    /// Where the next audio sent to Twilio plays.
    heard_cursor: u64,
    /// End of the latest audio placed in either channel.
    high: u64,
    finishing: bool,
    counters: TapCounters,
}

impl Default for RecordingTap {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingTap {
    /// An empty tap; allocates its window (2 × 20 KB) once.
    #[must_use]
    pub fn new() -> Self {
        RecordingTap {
            caller: vec![MULAW_SILENCE; WINDOW as usize].into_boxed_slice(),
            heard: vec![MULAW_SILENCE; WINDOW as usize].into_boxed_slice(),
            block: [0; BLOCK_BYTES],
            origin: None,
            base: 0,
            media_offset: None,
            heard_cursor: 0,
            high: 0,
            finishing: false,
            counters: TapCounters::default(),
        }
    }

    /// What was emitted and dropped so far.
    #[must_use]
    pub fn counters(&self) -> TapCounters {
        self.counters
    }

    /// μ-law audio from Twilio (the caller) whose first sample is at media
    /// time `timestamp_ms`, received at `now`.
    pub fn handle_from_twilio(&mut self, now: Instant, timestamp_ms: u64, mulaw: &[u8]) {
        if self.finishing || mulaw.is_empty() {
            return;
        }
        // The first frame arrives as its audio ends: the timeline starts
        // where that audio began.
        let first = samples_at(now) - mulaw.len() as i64;
        self.origin.get_or_insert(first);
        let clock = self.clock(now);
        let media_start = timestamp_ms.saturating_mul(8);
        let media_end = media_start.saturating_add(mulaw.len() as u64);
        // The offset that would end this frame now.
        let arriving =
            i64::try_from(clock).unwrap_or(i64::MAX) - i64::try_from(media_end).unwrap_or(i64::MAX);
        let limit = RESYNC.as_millis() as i64 * 8;
        let offset = match self.media_offset {
            Some(o) if (arriving - o).abs() <= limit => o,
            Some(_) => {
                self.counters.resyncs += 1;
                arriving
            }
            None => arriving,
        };
        self.media_offset = Some(offset);
        let Some(at) = media_start.checked_add_signed(offset) else {
            self.counters.late_samples += mulaw.len() as u64;
            return;
        };
        self.place(Channel::Caller, at, mulaw);
    }

    /// μ-law audio voxproxy sent to Twilio at `now` (what the caller hears).
    pub fn handle_to_twilio(&mut self, now: Instant, mulaw: &[u8]) {
        if self.finishing || mulaw.is_empty() {
            return;
        }
        let clock = self.clock(now);
        let at = self.heard_cursor.max(clock);
        self.heard_cursor = at + mulaw.len() as u64;
        self.place(Channel::Heard, at, mulaw);
    }

    /// A `clear` went to Twilio at `now`: whatever was queued and not yet
    /// played is never heard.
    pub fn handle_clear(&mut self, now: Instant) {
        if self.origin.is_none() || self.finishing {
            return;
        }
        let clock = self.clock(now).max(self.base);
        let end = self.heard_cursor.min(self.base + WINDOW);
        for_each_run(clock, end, |at, _, len| self.heard[at..at + len].fill(MULAW_SILENCE));
        self.heard_cursor = self.heard_cursor.min(clock);
    }

    /// The call is over: every slot up to the last audio becomes final.
    pub fn finish(&mut self) {
        self.finishing = true;
    }

    /// The next final slot as two-channel PCM16 ([`BLOCK_BYTES`] bytes,
    /// caller first), oldest first; `None` until another is final. Call
    /// until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_block(&mut self, now: Instant) -> Option<&[u8; BLOCK_BYTES]> {
        let origin = self.origin?;
        let final_until = if self.finishing {
            self.high.next_multiple_of(SLOT)
        } else {
            let clock = u64::try_from(samples_at(now) - origin).unwrap_or(0);
            clock.saturating_sub(LATE_SLOTS * SLOT)
        };
        if self.base + SLOT > final_until {
            return None;
        }
        let start = (self.base % WINDOW) as usize;
        let caller = &self.caller[start..start + SLOT_SAMPLES];
        let heard = &self.heard[start..start + SLOT_SAMPLES];
        for ((pair, &c), &h) in self.block.chunks_exact_mut(4).zip(caller).zip(heard) {
            let (c, h) = (ULAW[usize::from(c)].to_le_bytes(), ULAW[usize::from(h)].to_le_bytes());
            pair.copy_from_slice(&[c[0], c[1], h[0], h[1]]);
        }
        self.caller[start..start + SLOT_SAMPLES].fill(MULAW_SILENCE);
        self.heard[start..start + SLOT_SAMPLES].fill(MULAW_SILENCE);
        self.base += SLOT;
        self.high = self.high.max(self.base);
        self.counters.slots += 1;
        Some(&self.block)
    }

    /// `now` on the timeline, starting the timeline at the first audio.
    /// Audio sent to Twilio before any came from it (a bot's greeting)
    /// starts it one slot early: the caller's first frame, which arrives
    /// as its 20 ms end, may have begun just before that audio was sent,
    /// and must not fall before sample 0 (it did: a bot call lost it).
    fn clock(&mut self, now: Instant) -> u64 {
        let samples = samples_at(now);
        let origin = *self.origin.get_or_insert(samples - SLOT as i64);
        u64::try_from(samples - origin).unwrap_or(0)
    }

    /// Copies `mulaw` into `channel` at timeline sample `at`, within the
    /// window; what falls before it (already emitted) or beyond is counted.
    fn place(&mut self, channel: Channel, at: u64, mulaw: &[u8]) {
        let len = mulaw.len() as u64;
        let end = at + len;
        let limit = self.base + WINDOW;
        let before = self.base.saturating_sub(at).min(len);
        let beyond = end.saturating_sub(limit).min(len - before);
        if channel == Channel::Caller {
            self.counters.late_samples += before;
        } else {
            // Sent audio is never placed before the clock, so only a tap
            // whose clock ran far ahead of its polling gets here.
            self.counters.overrun_samples += before;
        }
        self.counters.overrun_samples += beyond;
        let (from, to) = (at + before, end - beyond);
        if from >= to {
            return;
        }
        let track = match channel {
            Channel::Caller => &mut self.caller,
            Channel::Heard => &mut self.heard,
        };
        let skip = (from - at) as usize;
        for_each_run(from, to, |i, done, len| {
            track[i..i + len].copy_from_slice(&mulaw[skip + done..skip + done + len]);
        });
        self.high = self.high.max(to);
    }
}

/// Calls `run(index, done, len)` for the contiguous pieces of the window
/// that timeline samples `from..to` (at most a window long) occupy: at
/// most two, split where the ring wraps. `done` is how many samples came
/// before the piece. Slice copies, not a modulo per sample.
fn for_each_run(from: u64, to: u64, mut run: impl FnMut(usize, usize, usize)) {
    let mut sample = from;
    while sample < to {
        let index = (sample % WINDOW) as usize;
        let len = (to - sample).min(WINDOW - index as u64) as usize;
        run(index, (sample - from) as usize, len);
        sample += len as u64;
    }
}

/// μ-law decoded, by code: a table lookup per sample where the recording
/// decodes two channels of every slot.
const ULAW: [i16; 256] = {
    let mut table = [0i16; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = g711::ulaw_decode(code as u8);
        code += 1;
    }
    table
};

/// `now` in 8 kHz samples since [`Instant::ZERO`].
fn samples_at(now: Instant) -> i64 {
    i64::try_from(now.as_nanos() / 125_000).unwrap_or(i64::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Caller,
    Heard,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A frame of one constant μ-law code.
    fn frame(code: u8) -> [u8; SLOT_SAMPLES] {
        [code; SLOT_SAMPLES]
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(10_000 + n)
    }

    /// Every block until `None` as (caller, heard) sample pairs.
    fn drain(tap: &mut RecordingTap, now: Instant) -> Vec<(i16, i16)> {
        let mut out = Vec::new();
        while let Some(block) = tap.poll_block(now) {
            for s in block.chunks_exact(4) {
                out.push((i16::from_le_bytes([s[0], s[1]]), i16::from_le_bytes([s[2], s[3]])));
            }
        }
        out
    }

    fn caller_codes(samples: &[(i16, i16)]) -> Vec<u8> {
        samples.iter().step_by(SLOT_SAMPLES).map(|s| g711::ulaw_encode(s.0)).collect()
    }

    fn heard_codes(samples: &[(i16, i16)]) -> Vec<u8> {
        samples.iter().step_by(SLOT_SAMPLES).map(|s| g711::ulaw_encode(s.1)).collect()
    }

    #[test]
    fn both_channels_line_up_on_one_clock() {
        let mut tap = RecordingTap::new();
        // Twilio's frame of media time t arrives at t + 20 ms (when its
        // audio ends); voxproxy answers each 5 ms later.
        for i in 0..10u8 {
            let t = u64::from(i) * 20;
            tap.handle_from_twilio(ms(t + 20), t, &frame(0x10 + i));
            tap.handle_to_twilio(ms(t + 25), &frame(0x40 + i));
        }
        tap.finish();
        let samples = drain(&mut tap, ms(220));
        assert_eq!(samples.len(), 12 * SLOT_SAMPLES, "the last answer ends 25 ms after the last frame");
        let caller = caller_codes(&samples);
        assert_eq!(&caller[..10], &(0x10..0x1A).collect::<Vec<u8>>()[..]);
        // Each answer plays 25 ms (200 samples) after its frame started.
        let heard: Vec<u8> =
            samples.iter().skip(200).step_by(SLOT_SAMPLES).map(|s| g711::ulaw_encode(s.1)).collect();
        assert_eq!(&heard[..10], &(0x40..0x4A).collect::<Vec<u8>>()[..]);
        assert_eq!(g711::ulaw_encode(samples[199].1), 0xFF, "silence before the first answer");
        assert_eq!(tap.counters().late_samples, 0);
        assert_eq!(tap.counters().slots, 12);
    }

    #[test]
    fn gaps_are_silence_and_bursts_land_by_timestamp() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(20), 0, &frame(0x10));
        // Media 20..60 never arrives; media 60 and 80 come in one burst, late.
        tap.handle_from_twilio(ms(150), 60, &frame(0x13));
        tap.handle_from_twilio(ms(150), 80, &frame(0x14));
        tap.finish();
        let caller = caller_codes(&drain(&mut tap, ms(150)));
        assert_eq!(caller, vec![0x10, 0xFF, 0xFF, 0x13, 0x14]);
    }

    #[test]
    fn nothing_sent_is_silence_and_queued_audio_plays_back_to_back() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(20), 0, &frame(0x10));
        // Three frames sent at once at 40 ms: they play one after the other.
        for code in [0x41, 0x42, 0x43] {
            tap.handle_to_twilio(ms(40), &frame(code));
        }
        tap.finish();
        let heard = heard_codes(&drain(&mut tap, ms(100)));
        assert_eq!(heard, vec![0xFF, 0xFF, 0x41, 0x42, 0x43]);
    }

    #[test]
    fn a_clear_cuts_what_was_not_played_yet() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(20), 0, &frame(0x10));
        for code in [0x41, 0x42, 0x43, 0x44] {
            tap.handle_to_twilio(ms(20), &frame(code));
        }
        tap.handle_clear(ms(60));
        tap.handle_to_twilio(ms(80), &frame(0x50));
        tap.finish();
        let heard = heard_codes(&drain(&mut tap, ms(100)));
        assert_eq!(heard, vec![0xFF, 0x41, 0x42, 0xFF, 0x50]);
    }

    #[test]
    fn slots_become_final_only_after_the_late_margin() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(0), 0, &frame(0x10));
        assert!(tap.poll_block(ms(0)).is_none());
        let margin = LATE_SLOTS * 20;
        assert!(tap.poll_block(ms(margin - 1)).is_none());
        assert!(tap.poll_block(ms(margin)).is_some());
        assert!(tap.poll_block(ms(margin)).is_none());
        // Audio for the emitted slot now is late: counted, not written.
        tap.handle_from_twilio(ms(margin), 0, &frame(0x11));
        assert_eq!(tap.counters().late_samples, SLOT);
    }

    #[test]
    fn late_caller_audio_is_dropped_and_counted() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(20), 0, &frame(0x10));
        tap.handle_from_twilio(ms(40), 20, &frame(0x11));
        let now = ms(40 + LATE_SLOTS * 20);
        assert_eq!(drain(&mut tap, now).len(), 2 * SLOT_SAMPLES);
        // Media 20 again (a duplicate) now falls in an emitted slot.
        tap.handle_from_twilio(now, 20, &frame(0x12));
        assert_eq!(tap.counters().late_samples, SLOT);
    }

    #[test]
    fn audio_beyond_the_window_is_dropped_and_counted() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(20), 0, &frame(0x10));
        // Sent from slot 1 on: the window (slots 0..128) takes 127 of them.
        for _ in 0..WINDOW_SLOTS + 3 {
            tap.handle_to_twilio(ms(20), &frame(0x41));
        }
        assert_eq!(tap.counters().overrun_samples, 4 * SLOT);
    }

    #[test]
    fn the_caller_stays_on_its_first_mapping_when_later_frames_come_faster() {
        let mut tap = RecordingTap::new();
        // The first frame took 7 ms longer than the rest to arrive.
        tap.handle_from_twilio(ms(27), 0, &frame(0x10));
        for i in 1..5u8 {
            let t = u64::from(i) * 20;
            tap.handle_from_twilio(ms(t + 20), t, &frame(0x10 + i));
        }
        tap.finish();
        let samples = drain(&mut tap, ms(120));
        assert_eq!(samples.len(), 5 * SLOT_SAMPLES, "back to back, nothing overwritten");
        for (i, slot) in samples.chunks(SLOT_SAMPLES).enumerate() {
            let codes: Vec<u8> = slot.iter().map(|s| g711::ulaw_encode(s.0)).collect();
            assert_eq!(codes, vec![0x10 + i as u8; SLOT_SAMPLES], "frame {i} whole, in its own slot");
        }
    }

    #[test]
    fn a_call_in_the_clocks_first_frame_starts_at_zero_too() {
        let mut tap = RecordingTap::new();
        // 13.75 ms after the clock's epoch: the frame began before it.
        tap.handle_from_twilio(Instant::from_micros(13_750), 0, &frame(0x10));
        tap.handle_from_twilio(Instant::from_micros(33_750), 20, &frame(0x11));
        tap.finish();
        let samples = drain(&mut tap, Instant::from_millis(40));
        assert_eq!(samples.len(), 2 * SLOT_SAMPLES);
        assert!(samples[..SLOT_SAMPLES].iter().all(|s| g711::ulaw_encode(s.0) == 0x10), "frame 0 whole at 0");
        assert_eq!(tap.counters().late_samples, 0);
    }

    #[test]
    fn a_media_clock_restart_resyncs() {
        let mut tap = RecordingTap::new();
        tap.handle_from_twilio(ms(20), 60_000, &frame(0x10));
        tap.handle_from_twilio(ms(40), 0, &frame(0x11));
        tap.handle_from_twilio(ms(60), 20, &frame(0x12));
        tap.finish();
        assert_eq!(caller_codes(&drain(&mut tap, ms(60))), vec![0x10, 0x11, 0x12]);
        assert_eq!(tap.counters().resyncs, 1);
    }

    #[test]
    fn audio_sent_before_the_callers_first_frame_leaves_that_frame_whole() {
        let mut tap = RecordingTap::new();
        // A bot's greeting goes out 1 ms before Twilio's first frame arrives.
        tap.handle_to_twilio(ms(19), &frame(0x41));
        tap.handle_from_twilio(ms(20), 0, &frame(0x10));
        tap.handle_from_twilio(ms(40), 20, &frame(0x11));
        tap.finish();
        let samples = drain(&mut tap, ms(40));
        let caller: Vec<u8> = samples.iter().map(|s| g711::ulaw_encode(s.0)).filter(|&c| c != 0xFF).collect();
        assert_eq!(caller.len(), 2 * SLOT_SAMPLES, "both frames whole");
        assert_eq!(tap.counters().late_samples, 0);
        let heard = samples.iter().position(|s| g711::ulaw_encode(s.1) == 0x41);
        assert_eq!(heard, Some(SLOT_SAMPLES), "the greeting one slot in");
    }

    #[test]
    fn the_decoding_table_is_the_decoder() {
        for code in 0..=255u8 {
            assert_eq!(ULAW[usize::from(code)], g711::ulaw_decode(code), "code {code:#04x}");
        }
    }

    #[test]
    fn audio_across_the_end_of_the_window_wraps_whole() {
        let mut tap = RecordingTap::new();
        let mut slots = Vec::new();
        // 130 frames at 20 ms: the window (128 slots) wraps during the call.
        for i in 0..130u64 {
            let now = ms(20 + 20 * i);
            let code = 0x10 + (i % 0x60) as u8;
            tap.handle_from_twilio(now, 20 * i, &frame(code));
            // Answers of 30 ms, so they straddle slots and the wrap.
            tap.handle_to_twilio(now, &[code; 240]);
            slots.extend(drain(&mut tap, now));
        }
        tap.finish();
        slots.extend(drain(&mut tap, ms(3_000)));
        let caller = caller_codes(&slots);
        assert_eq!(caller[..130], (0..130u64).map(|i| 0x10 + (i % 0x60) as u8).collect::<Vec<_>>()[..]);
        let heard: Vec<u8> = slots.iter().map(|s| g711::ulaw_encode(s.1)).filter(|&c| c != 0xFF).collect();
        assert_eq!(heard.len(), 130 * 240, "every answer sample, back to back, none lost at the wrap");
        assert_eq!(tap.counters().overrun_samples + tap.counters().late_samples, 0);
    }

    proptest! {
        /// Whatever the timestamps and times, the tap stays bounded, never
        /// panics, and emits whole slots in order up to the last audio.
        #[test]
        fn bounded_and_panic_free(events in proptest::collection::vec((0u8..3, 0u64..100_000, 0u64..3_000, 1usize..400), 1..60)) {
            let mut tap = RecordingTap::new();
            let mut now = 0u64;
            let audio = [0x55u8; 400];
            let mut emitted = 0u64;
            for (kind, ts, step, len) in events {
                now += step;
                let t = Instant::from_millis(now);
                match kind {
                    0 => tap.handle_from_twilio(t, ts, &audio[..len]),
                    1 => tap.handle_to_twilio(t, &audio[..len]),
                    _ => tap.handle_clear(t),
                }
                while tap.poll_block(t).is_some() {
                    emitted += 1;
                }
            }
            tap.finish();
            let mut tail = 0;
            while tap.poll_block(Instant::from_millis(now)).is_some() {
                tail += 1;
                prop_assert!(tail <= WINDOW_SLOTS as u64 + 1, "the tail is bounded by the window");
            }
            prop_assert_eq!(tap.counters().slots, emitted + tail);
            prop_assert!(emitted <= now / 20 + 1, "at most one slot per 20 ms of clock");
        }
    }
}
