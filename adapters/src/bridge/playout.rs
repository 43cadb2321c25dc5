//! Mark-based playout tracking for the audio voxproxy sends to Twilio.
//!
//! Twilio plays outbound audio from its own buffer and echoes a `mark` once
//! the audio queued before it has played. A `clear` empties that buffer and
//! echoes every pending mark at once, indistinguishable from a played one, so
//! the tracker remembers which marks were pending when `clear` went out and
//! reports their echoes as *cleared*, not *played*.
//!
//! Marks voxproxy sends are named `vp-<n>` with `n` counting from 1 per
//! call, so tracking them needs no strings, only a bounded ring of numbers.

use std::collections::VecDeque;

/// Prefix of the marks the bridge sends; the rest of the name is a decimal id.
pub const MARK_PREFIX: &str = "vp-";

/// Bound on marks in flight. At one mark per talkspurt this is minutes of
/// unplayed audio; beyond it the oldest mark is forgotten (and counted), so
/// a Twilio side that never echoes cannot grow memory.
pub const MAX_MARKS_IN_FLIGHT: usize = 64;

/// Marks a new tracker has room for before its ring grows: a call has one
/// per backend talkspurt waiting for Twilio to play it, rarely more than a few.
const INITIAL_MARKS: usize = 4;

/// What a mark echoed by Twilio turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MarkEcho {
    /// The audio before mark `id` has played.
    Played(u64),
    /// Mark `id` was pending when a `clear` was sent: its audio was discarded.
    Cleared(u64),
    /// Not a mark this tracker is waiting for (foreign name, or echoed twice).
    Unknown,
}

/// Tracks which of our marks Twilio has yet to echo.
#[derive(Debug)]
pub struct PlayoutTracker {
    next_id: u64,
    pending: VecDeque<u64>,
    cleared: VecDeque<u64>,
    forgotten: u64,
}

impl Default for PlayoutTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl PlayoutTracker {
    /// A tracker with no marks in flight. Its rings start with room for the
    /// few marks a call usually has in flight (none cleared) and grow by
    /// doubling up to [`MAX_MARKS_IN_FLIGHT`], where they stay: a full ring
    /// forgets its oldest mark instead of growing further.
    #[must_use]
    pub fn new() -> Self {
        PlayoutTracker {
            next_id: 1,
            pending: VecDeque::with_capacity(INITIAL_MARKS),
            cleared: VecDeque::new(),
            forgotten: 0,
        }
    }

    /// Registers a new mark about to be sent and returns its id; the caller
    /// names it with [`write_mark_name`].
    pub fn next_mark(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.pending.len() == MAX_MARKS_IN_FLIGHT {
            self.pending.pop_front();
            self.forgotten += 1;
        }
        self.pending.push_back(id);
        id
    }

    /// A `clear` was sent: every pending mark will come back as cleared.
    pub fn handle_clear(&mut self) {
        for id in self.pending.drain(..) {
            if self.cleared.len() == MAX_MARKS_IN_FLIGHT {
                self.cleared.pop_front();
                self.forgotten += 1;
            }
            self.cleared.push_back(id);
        }
    }

    /// Twilio echoed the mark called `name`.
    pub fn handle_echo(&mut self, name: &str) -> MarkEcho {
        let Some(id) = parse_mark_name(name) else { return MarkEcho::Unknown };
        if let Some(pos) = self.cleared.iter().position(|&c| c == id) {
            self.cleared.remove(pos);
            return MarkEcho::Cleared(id);
        }
        if let Some(pos) = self.pending.iter().position(|&p| p == id) {
            // Twilio plays in order: marks queued before this one have played
            // too, even if their echoes were somehow lost.
            self.pending.drain(..=pos);
            return MarkEcho::Played(id);
        }
        MarkEcho::Unknown
    }

    /// Whether audio sent before a mark is still waiting to be played.
    #[must_use]
    pub fn has_unplayed(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Marks sent and not yet echoed as played.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Marks dropped from tracking because too many were in flight.
    #[must_use]
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }
}

/// Writes `vp-<id>` into `out` (cleared first) without allocating once `out`
/// has grown to fit.
pub fn write_mark_name(id: u64, out: &mut String) {
    use std::fmt::Write;
    out.clear();
    out.push_str(MARK_PREFIX);
    // Writing into a String cannot fail.
    let _ = write!(out, "{id}");
}

/// The id of a mark named `vp-<id>`, or `None` for any other name.
#[must_use]
pub fn parse_mark_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(MARK_PREFIX)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(id: u64) -> String {
        let mut s = String::new();
        write_mark_name(id, &mut s);
        s
    }

    #[test]
    fn played_marks_are_reported_as_played() {
        let mut t = PlayoutTracker::new();
        let a = t.next_mark();
        let b = t.next_mark();
        assert_eq!((a, b), (1, 2));
        assert!(t.has_unplayed());
        assert_eq!(t.handle_echo("vp-1"), MarkEcho::Played(1));
        assert_eq!(t.handle_echo("vp-2"), MarkEcho::Played(2));
        assert!(!t.has_unplayed());
        assert_eq!(t.handle_echo("vp-2"), MarkEcho::Unknown, "an echo counts once");
    }

    #[test]
    fn marks_pending_at_a_clear_come_back_cleared() {
        let mut t = PlayoutTracker::new();
        t.next_mark();
        t.next_mark();
        t.handle_clear();
        assert!(!t.has_unplayed());
        let after = t.next_mark();
        // Twilio echoes the two cleared marks at once, then plays the new one.
        assert_eq!(t.handle_echo(&name(1)), MarkEcho::Cleared(1));
        assert_eq!(t.handle_echo(&name(2)), MarkEcho::Cleared(2));
        assert_eq!(t.handle_echo(&name(after)), MarkEcho::Played(3));
    }

    #[test]
    fn an_echo_implies_earlier_marks_played() {
        let mut t = PlayoutTracker::new();
        t.next_mark();
        t.next_mark();
        t.next_mark();
        assert_eq!(t.handle_echo("vp-2"), MarkEcho::Played(2));
        assert_eq!(t.pending(), 1);
        assert_eq!(t.handle_echo("vp-1"), MarkEcho::Unknown);
    }

    #[test]
    fn foreign_and_malformed_names_are_unknown() {
        let mut t = PlayoutTracker::new();
        t.next_mark();
        for n in ["", "vp-", "vp-x", "VP-1", "vp-1 ", "my label", "vp-99999999999999999999999", "vp--1"] {
            assert_eq!(t.handle_echo(n), MarkEcho::Unknown, "{n:?}");
        }
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn marks_in_flight_are_bounded() {
        let mut t = PlayoutTracker::new();
        for _ in 0..MAX_MARKS_IN_FLIGHT + 10 {
            t.next_mark();
        }
        assert_eq!(t.pending(), MAX_MARKS_IN_FLIGHT);
        assert_eq!(t.forgotten(), 10);
        assert_eq!(t.handle_echo("vp-1"), MarkEcho::Unknown, "the oldest were forgotten");
        assert_eq!(t.handle_echo(&name(11)), MarkEcho::Played(11));
    }

    #[test]
    fn rings_start_small_and_grow_no_further_than_the_bound() {
        let mut t = PlayoutTracker::new();
        assert_eq!((t.pending.capacity(), t.cleared.capacity()), (INITIAL_MARKS, 0));
        for _ in 0..3 * MAX_MARKS_IN_FLIGHT {
            t.next_mark();
        }
        t.handle_clear();
        for _ in 0..3 * MAX_MARKS_IN_FLIGHT {
            t.next_mark();
        }
        assert_eq!((t.pending(), t.cleared.len()), (MAX_MARKS_IN_FLIGHT, MAX_MARKS_IN_FLIGHT));
        assert!(t.pending.capacity() <= MAX_MARKS_IN_FLIGHT, "{}", t.pending.capacity());
        assert!(t.cleared.capacity() <= MAX_MARKS_IN_FLIGHT, "{}", t.cleared.capacity());
    }

    #[test]
    fn names_round_trip() {
        for id in [1, 9, 10, 12345, u64::MAX] {
            assert_eq!(parse_mark_name(&name(id)), Some(id));
        }
    }
}
