//! The round trip second by second: when in a run its tail happened.
//!
//! A run's percentiles say how long the tail is, not when it happened: a
//! p99 of 20 ms can be every second a little slow, one stall of a few
//! hundred milliseconds, or a hiccup every second (a periodic job in the
//! proxy). [`Timeline`] summarises each second of the run, counted from
//! the run's start, as [`SecondSummary`]: the frames that came back in it,
//! their round trip's p50, p99 and maximum, the frames sent in it and how
//! late the simulator itself sent its latest one (a tail the rig caused shows there).
//!
//! Sans-IO: the caller hands in when (since the run's start) each value was
//! seen. Values are filed under the second they were seen in; one seen
//! after a later second has begun (another worker's, a moment behind) is
//! filed in the later second. One second's histogram is held at a time and
//! at most [`MAX_SECONDS`] summaries, so memory is bounded whatever the
//! run's length.
//!
//! ```
//! use std::time::Duration;
//! use voxproxy_rig::sim::timeline::Timeline;
//!
//! let mut timeline = Timeline::default();
//! timeline.record_round_trip(Duration::from_millis(300), 900);
//! timeline.record_round_trip(Duration::from_millis(2_100), 40_000);
//! let seconds = timeline.finish();
//! assert_eq!(seconds.len(), 3, "the empty second between is kept: a stall shows as one");
//! assert_eq!((seconds[0].frames, seconds[1].frames, seconds[2].frames), (1, 0, 1));
//! assert!(seconds[2].max_us >= 40_000);
//! ```

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::meter::MAX_LATENCY_US;

/// Seconds summarised at most (a day); later seconds are not kept.
pub const MAX_SECONDS: usize = 86_400;

/// One second of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SecondSummary {
    /// Seconds since the run started (the first call's ramp).
    pub second: u32,
    /// Frames the simulator sent in this second.
    pub sent: u64,
    /// Frames that came back in this second.
    pub frames: u64,
    /// Round-trip median of those frames, µs (0 when none came back).
    pub p50_us: u64,
    /// Round-trip 99th percentile, µs.
    pub p99_us: u64,
    /// Longest round trip, µs.
    pub max_us: u64,
    /// How late the simulator sent its latest frame of this second against
    /// its 20 ms schedule, µs (0 when it sent none).
    pub send_late_max_us: u64,
}

/// Per-second summaries of a run. See the [module docs](self).
#[derive(Debug)]
pub struct Timeline {
    /// The second being filled.
    current: u32,
    round_trip: Histogram<u64>,
    sent: u64,
    send_late_max: u64,
    /// Summaries of the seconds before `current`.
    done: Vec<SecondSummary>,
}

impl Default for Timeline {
    fn default() -> Self {
        // Two significant figures: a per-second tail needs no more, and the
        // histogram reset every second stays small (cleared, not rebuilt).
        let round_trip = Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
            .unwrap_or_else(|_| unreachable!("constant bounds are valid"));
        Timeline { current: 0, round_trip, sent: 0, send_late_max: 0, done: Vec::new() }
    }
}

impl Timeline {
    /// A frame seen `at` after the run's start came back after `micros`.
    pub fn record_round_trip(&mut self, at: Duration, micros: u64) {
        if self.advance(at) {
            self.round_trip.saturating_record(micros.clamp(1, MAX_LATENCY_US));
        }
    }

    /// A frame sent `at` after the run's start left `micros` late.
    pub fn record_send_lateness(&mut self, at: Duration, micros: u64) {
        if self.advance(at) {
            self.sent += 1;
            self.send_late_max = self.send_late_max.max(micros);
        }
    }

    /// The summaries from the first second to the last one with anything
    /// seen, empty seconds included.
    #[must_use]
    pub fn finish(mut self) -> Vec<SecondSummary> {
        if !self.round_trip.is_empty() || self.sent > 0 {
            self.close_current();
        }
        self.done
    }

    /// Moves on to the second of `at`, closing the seconds before it;
    /// `false` when it lies past [`MAX_SECONDS`].
    fn advance(&mut self, at: Duration) -> bool {
        let second = u32::try_from(at.as_secs()).unwrap_or(u32::MAX);
        if second as usize >= MAX_SECONDS {
            return false;
        }
        while self.current < second {
            self.close_current();
        }
        true
    }

    /// Summarises the current second and starts the next one.
    fn close_current(&mut self) {
        let h = &self.round_trip;
        let frames = h.len();
        let quantile = |q| if frames == 0 { 0 } else { h.value_at_quantile(q) };
        self.done.push(SecondSummary {
            second: self.current,
            sent: self.sent,
            frames,
            p50_us: quantile(0.5),
            p99_us: quantile(0.99),
            max_us: if frames == 0 { 0 } else { h.max() },
            send_late_max_us: self.send_late_max,
        });
        self.round_trip.reset();
        self.sent = 0;
        self.send_late_max = 0;
        self.current += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn each_second_summarises_what_was_seen_in_it() {
        let mut t = Timeline::default();
        for i in 0..100 {
            t.record_round_trip(ms(10 * i), 1_000);
            t.record_send_lateness(ms(10 * i), 200);
        }
        t.record_round_trip(ms(1_500), 1_000);
        t.record_round_trip(ms(1_600), 30_000);
        t.record_send_lateness(ms(1_700), 4_000);
        let s = t.finish();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].second, s[0].sent, s[0].frames, s[0].send_late_max_us), (0, 100, 100, 200));
        assert!((995..=1_005).contains(&s[0].p50_us) && (995..=1_005).contains(&s[0].p99_us), "{:?}", s[0]);
        assert_eq!((s[1].second, s[1].sent, s[1].frames, s[1].send_late_max_us), (1, 1, 2, 4_000));
        assert!((29_800..=30_200).contains(&s[1].max_us), "{:?}", s[1]);
    }

    /// The summaries of round trips `(ms since the start, µs)`, in order.
    fn round_trips(trips: &[(u64, u64)]) -> Vec<SecondSummary> {
        let mut t = Timeline::default();
        for &(at, micros) in trips {
            t.record_round_trip(ms(at), micros);
        }
        t.finish()
    }

    #[test]
    fn a_second_with_nothing_is_kept_as_zeros() {
        let s = round_trips(&[(500, 700), (3_200, 700)]);
        assert_eq!(s.iter().map(|s| s.second).collect::<Vec<_>>(), [0, 1, 2, 3]);
        assert_eq!(s[1], SecondSummary { second: 1, ..SecondSummary::default() });
        assert_eq!(s[2].frames, 0);
    }

    #[test]
    fn a_value_seen_after_a_later_second_began_is_filed_in_the_later_one() {
        let s = round_trips(&[(1_100, 500), (900, 9_000)]);
        assert_eq!((s[0].frames, s[1].frames), (0, 2));
        assert!(s[1].max_us >= 9_000);
    }

    #[test]
    fn seconds_past_the_bound_are_not_kept() {
        let mut t = Timeline::default();
        t.record_round_trip(Duration::from_secs(MAX_SECONDS as u64 - 1), 100);
        t.record_round_trip(Duration::from_secs(MAX_SECONDS as u64), 100);
        t.record_send_lateness(Duration::MAX, 100);
        let s = t.finish();
        assert_eq!(s.len(), MAX_SECONDS);
        assert_eq!(s.last().map(|s| s.frames), Some(1));
    }

    #[test]
    fn an_empty_run_has_no_seconds() {
        assert!(Timeline::default().finish().is_empty());
    }
}
