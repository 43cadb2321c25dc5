//! Twilio's playout of a bidirectional stream, as the simulator models it:
//! outbound audio is queued and played at real time (8,000 μ-law bytes per
//! second); a `mark` is echoed once every byte queued before it has played;
//! a `clear` drops the queue and echoes every pending mark at once.
//!
//! Sans-IO: time comes in as `now`. After each `handle_*`, drain
//! [`Playout::poll_event`]; sleep until [`Playout::poll_timeout`] and then
//! call [`Playout::handle_timeout`].
//!
//! ```
//! use std::time::Duration;
//! use voxproxy_rig::sim::playout::{Playout, PlayoutEvent};
//! use voxproxy_core::time::Instant;
//!
//! let t0 = Instant::ZERO;
//! let mut playout = Playout::new(t0);
//! playout.handle_media(t0, 1600); // 200 ms of audio
//! playout.handle_mark(t0, "end-of-prompt");
//! assert_eq!(playout.poll_event(), None, "the audio has not played yet");
//! assert_eq!(playout.poll_timeout(), Some(t0 + Duration::from_millis(200)));
//!
//! playout.handle_timeout(t0 + Duration::from_millis(200));
//! assert_eq!(playout.poll_event(), Some(PlayoutEvent::MarkPlayed("end-of-prompt".into())));
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use voxproxy_core::time::Instant;

/// μ-law bytes Twilio plays per second.
pub const BYTES_PER_SECOND: u64 = 8_000;

/// Most audio Twilio keeps queued; more is discarded (Twilio's warning 31931).
pub const MAX_BUFFERED: Duration = Duration::from_secs(600);

/// Most marks waiting at once; a further mark is echoed at once and counted.
pub const MAX_PENDING_MARKS: usize = 4_096;

/// What the playout reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlayoutEvent {
    /// Every byte queued before this mark has played: echo it.
    MarkPlayed(String),
    /// A `clear` flushed the audio before this mark: Twilio echoes it too,
    /// exactly as if it had played.
    MarkCleared(String),
}

impl PlayoutEvent {
    /// The mark's name, which Twilio echoes either way.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            PlayoutEvent::MarkPlayed(name) | PlayoutEvent::MarkCleared(name) => name,
        }
    }
}

/// Counters of one call's playout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlayoutStats {
    /// μ-law bytes received for playing.
    pub media_bytes: u64,
    /// μ-law bytes discarded because more than [`MAX_BUFFERED`] was queued.
    pub discarded_bytes: u64,
    /// μ-law bytes dropped unplayed by `clear`.
    pub cleared_bytes: u64,
    /// Marks echoed after their audio played.
    pub marks_played: u64,
    /// Marks echoed because of a `clear`.
    pub marks_cleared: u64,
    /// Marks echoed at once because too many were pending.
    pub marks_overflowed: u64,
    /// `clear` messages received.
    pub clears: u64,
}

#[derive(Clone, Debug)]
struct PendingMark {
    due: Instant,
    name: String,
}

/// One call's playout buffer. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Playout {
    /// When the queued audio will have finished playing (≤ now: nothing queued).
    played_until: Instant,
    now: Instant,
    marks: VecDeque<PendingMark>,
    events: VecDeque<PlayoutEvent>,
    stats: PlayoutStats,
}

impl Playout {
    /// An empty playout buffer.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Playout {
            played_until: now,
            now,
            marks: VecDeque::new(),
            events: VecDeque::new(),
            stats: PlayoutStats::default(),
        }
    }

    /// Queues `bytes` of μ-law audio for playing.
    pub fn handle_media(&mut self, now: Instant, bytes: usize) {
        self.advance(now);
        let bytes = bytes as u64;
        self.stats.media_bytes = self.stats.media_bytes.saturating_add(bytes);
        let start = self.played_until.max(self.now);
        let room = MAX_BUFFERED.saturating_sub(start.saturating_duration_since(self.now));
        let room_bytes = duration_to_bytes(room);
        let kept = bytes.min(room_bytes);
        self.stats.discarded_bytes += bytes - kept;
        self.played_until = start.saturating_add(bytes_to_duration(kept));
    }

    /// A `mark`: echoed once the audio queued so far has played.
    pub fn handle_mark(&mut self, now: Instant, name: &str) {
        self.advance(now);
        if self.played_until <= self.now && self.marks.is_empty() {
            self.stats.marks_played += 1;
            self.events.push_back(PlayoutEvent::MarkPlayed(name.to_owned()));
        } else if self.marks.len() >= MAX_PENDING_MARKS {
            self.stats.marks_overflowed += 1;
            self.events.push_back(PlayoutEvent::MarkPlayed(name.to_owned()));
        } else {
            self.marks.push_back(PendingMark { due: self.played_until.max(self.now), name: name.to_owned() });
        }
    }

    /// A `clear`: drop the queued audio and echo every pending mark.
    pub fn handle_clear(&mut self, now: Instant) {
        self.advance(now);
        self.stats.clears += 1;
        self.stats.cleared_bytes += duration_to_bytes(self.played_until.saturating_duration_since(self.now));
        self.played_until = self.now;
        for mark in self.marks.drain(..) {
            self.stats.marks_cleared += 1;
            self.events.push_back(PlayoutEvent::MarkCleared(mark.name));
        }
    }

    /// Time has passed: marks whose audio has played become events.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next mark to echo.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PlayoutEvent> {
        self.events.pop_front()
    }

    /// Whether [`poll_event`](Self::poll_event) has something.
    #[must_use]
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When the next pending mark is due.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.marks.front().map(|m| m.due)
    }

    /// Audio queued and not yet played at `now`.
    #[must_use]
    pub fn buffered(&self, now: Instant) -> Duration {
        self.played_until.saturating_duration_since(now.max(self.now))
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> PlayoutStats {
        self.stats
    }

    fn advance(&mut self, now: Instant) {
        self.now = self.now.max(now);
        while let Some(mark) = self.marks.front() {
            if mark.due > self.now {
                break;
            }
            if let Some(mark) = self.marks.pop_front() {
                self.stats.marks_played += 1;
                self.events.push_back(PlayoutEvent::MarkPlayed(mark.name));
            }
        }
    }
}

fn bytes_to_duration(bytes: u64) -> Duration {
    Duration::from_nanos(bytes.saturating_mul(1_000_000_000 / BYTES_PER_SECOND))
}

fn duration_to_bytes(d: Duration) -> u64 {
    u64::try_from(d.as_nanos() / u128::from(1_000_000_000 / BYTES_PER_SECOND)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn drain(p: &mut Playout) -> Vec<PlayoutEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    #[test]
    fn mark_on_an_empty_buffer_is_echoed_at_once() {
        let mut p = Playout::new(ms(0));
        p.handle_mark(ms(5), "a");
        assert_eq!(drain(&mut p), [PlayoutEvent::MarkPlayed("a".into())]);
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn audio_plays_at_real_time_and_marks_wait_for_it() {
        let mut p = Playout::new(ms(0));
        // Three 20 ms frames arrive at once, then a mark, then one more frame and a mark.
        for _ in 0..3 {
            p.handle_media(ms(0), 160);
        }
        p.handle_mark(ms(0), "after-60");
        p.handle_media(ms(10), 160);
        p.handle_mark(ms(10), "after-80");
        assert_eq!(p.buffered(ms(10)), Duration::from_millis(70));
        assert_eq!(p.poll_timeout(), Some(ms(60)));
        p.handle_timeout(ms(59));
        assert!(drain(&mut p).is_empty());
        p.handle_timeout(ms(60));
        assert_eq!(drain(&mut p), [PlayoutEvent::MarkPlayed("after-60".into())]);
        assert_eq!(p.poll_timeout(), Some(ms(80)));
        p.handle_timeout(ms(500));
        assert_eq!(drain(&mut p), [PlayoutEvent::MarkPlayed("after-80".into())]);
        assert_eq!(p.stats().marks_played, 2);
    }

    #[test]
    fn audio_arriving_after_a_gap_starts_playing_when_it_arrives() {
        let mut p = Playout::new(ms(0));
        p.handle_media(ms(0), 160);
        p.handle_media(ms(100), 160); // the first frame finished at 20 ms
        p.handle_mark(ms(100), "m");
        assert_eq!(p.poll_timeout(), Some(ms(120)));
    }

    #[test]
    fn clear_drops_audio_and_echoes_every_pending_mark_in_order() {
        let mut p = Playout::new(ms(0));
        p.handle_media(ms(0), 8_000); // one second
        p.handle_mark(ms(0), "one");
        p.handle_media(ms(0), 800);
        p.handle_mark(ms(0), "two");
        p.handle_clear(ms(250));
        assert_eq!(
            drain(&mut p),
            [PlayoutEvent::MarkCleared("one".into()), PlayoutEvent::MarkCleared("two".into())]
        );
        let s = p.stats();
        assert_eq!((s.clears, s.marks_cleared, s.marks_played), (1, 2, 0));
        // 1.1 s queued, 0.25 s played: 0.85 s = 6,800 bytes dropped.
        assert_eq!(s.cleared_bytes, 6_800);
        assert_eq!(p.buffered(ms(250)), Duration::ZERO);
        // After a clear, new audio plays from now.
        p.handle_media(ms(300), 160);
        p.handle_mark(ms(300), "three");
        assert_eq!(p.poll_timeout(), Some(ms(320)));
    }

    #[test]
    fn marks_already_due_come_out_before_a_later_one() {
        let mut p = Playout::new(ms(0));
        p.handle_media(ms(0), 160);
        p.handle_mark(ms(0), "first");
        p.handle_mark(ms(30), "second"); // the buffer emptied at 20 ms
        assert_eq!(
            drain(&mut p),
            [PlayoutEvent::MarkPlayed("first".into()), PlayoutEvent::MarkPlayed("second".into())]
        );
    }

    #[test]
    fn more_than_ten_minutes_of_audio_is_discarded() {
        let mut p = Playout::new(ms(0));
        p.handle_media(ms(0), 8_000 * 599);
        p.handle_media(ms(0), 8_000 * 2);
        assert_eq!(p.stats().discarded_bytes, 8_000);
        assert_eq!(p.buffered(ms(0)), MAX_BUFFERED);
    }

    #[test]
    fn pending_marks_are_bounded() {
        let mut p = Playout::new(ms(0));
        p.handle_media(ms(0), 8_000);
        for i in 0..MAX_PENDING_MARKS + 3 {
            p.handle_mark(ms(0), &i.to_string());
        }
        assert_eq!(p.stats().marks_overflowed, 3);
        assert_eq!(drain(&mut p).len(), 3);
    }
}
