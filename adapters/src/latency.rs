//! Where each millisecond of a call went: small fixed-size histograms a call
//! fills per frame without allocating, and the Twilio burstiness meter.
//!
//! A [`LatencyBreakdown`] holds, for backend → Twilio, the time each frame
//! waited in the jitter buffer and voxproxy's processing time per frame, and
//! for Twilio → backend, the processing time and how late each of Twilio's
//! frames arrived against its own media timestamp ([`BurstMeter`]). The RFC
//! 3550 jitter and the concealed frames are in
//! [`crate::bridge::CallStats`] already; [`LatencySummary`] puts them all
//! side by side, so one look says whether the network, the buffer or
//! voxproxy added the delay.

use core::time::Duration;

use voxproxy_core::Instant;

/// Upper bounds of the histogram buckets in microseconds (a value equal to
/// a bound belongs to its bucket); one more bucket takes everything above
/// the last. From 0 (a packet that did not wait) and 10 µs (a frame's
/// processing) to 1 s (a stalled buffer).
pub const BOUNDS_US: [u32; 25] = [
    0, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 20_000, 30_000, 40_000,
    60_000, 80_000, 100_000, 150_000, 200_000, 300_000, 500_000, 1_000_000,
];

/// Buckets of a [`Histogram`]: one per bound and one above.
pub const BUCKETS: usize = BOUNDS_US.len() + 1;

/// A fixed-bucket histogram of durations: 26 counters and the exact maximum.
///
/// The counters are 32-bit: a call holds two of these breakdowns (the
/// bridge's and what the proxy last reported of it), so they are memory
/// per call, and a bucket takes 2.7 years of 50 frames a second to fill.
/// They saturate rather than wrap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    counts: [u32; BUCKETS],
    count: u64,
    max_us: u64,
    sum_us: u64,
}

impl Histogram {
    /// Records one duration.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.record_us(us);
    }

    /// Records one duration in microseconds.
    pub fn record_us(&mut self, us: u64) {
        let slot = BOUNDS_US.partition_point(|&bound| u64::from(bound) < us);
        self.counts[slot] = self.counts[slot].saturating_add(1);
        self.count += 1;
        self.max_us = self.max_us.max(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    /// Values recorded.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded, exact (0 when empty).
    #[must_use]
    pub fn max_us(&self) -> u64 {
        self.max_us
    }

    /// Sum of every value recorded, in microseconds.
    #[must_use]
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }

    /// Per-bucket (not cumulative) counts, in [`BOUNDS_US`] order, the last
    /// one above every bound.
    #[must_use]
    pub fn buckets(&self) -> &[u32; BUCKETS] {
        &self.counts
    }

    /// The `permille`/1000 quantile: the upper bound of the bucket holding
    /// it, never above the exact maximum (so a histogram of equal values
    /// reports that value). 0 when empty.
    #[must_use]
    pub fn quantile_us(&self, permille: u32) -> u64 {
        if self.count == 0 {
            return 0;
        }
        // The rank of the quantile, 1-based, at least 1.
        let rank = (self.count * u64::from(permille.min(1000))).div_ceil(1000).max(1);
        let mut seen = 0;
        for (slot, &n) in self.counts.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                let bound = BOUNDS_US.get(slot).map_or(self.max_us, |&b| u64::from(b));
                return bound.min(self.max_us);
            }
        }
        self.max_us
    }
}

/// How late Twilio's frames arrive against their media timestamps.
///
/// Twilio stamps each frame with its media time; a perfectly paced sender
/// delivers frame `t` at `t` plus a constant delay. The meter keeps the
/// smallest `arrival − media time` seen (the frames that came fastest set
/// the constant) and reports each frame's excess over it: 0 for a frame on
/// time, 60 ms for one that waited three frames in a burst. A sender that
/// restarts its media clock (a jump of more than [`BurstMeter::RESYNC`])
/// starts the reference afresh rather than reporting hours of lateness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BurstMeter {
    /// Smallest `arrival − media end` seen, in microseconds.
    reference_us: Option<i64>,
}

impl BurstMeter {
    /// A lateness beyond this is a new media clock, not a burst.
    pub const RESYNC: Duration = Duration::from_secs(5);

    /// A frame whose audio ends at media time `media_end_ms` arrived at
    /// `now`; returns how late it was against the fastest frame so far.
    pub fn handle_frame(&mut self, now: Instant, media_end_ms: u64) -> Duration {
        let arrival_us = i64::try_from(now.as_nanos() / 1_000).unwrap_or(i64::MAX);
        let media_us = i64::try_from(media_end_ms.saturating_mul(1_000)).unwrap_or(i64::MAX);
        let offset = arrival_us.saturating_sub(media_us);
        let reference = match self.reference_us {
            Some(r) if offset >= r => r,
            _ => {
                self.reference_us = Some(offset);
                return Duration::ZERO;
            }
        };
        let late = u64::try_from(offset - reference).unwrap_or(0);
        if late > Self::RESYNC.as_micros() as u64 {
            self.reference_us = Some(offset);
            return Duration::ZERO;
        }
        Duration::from_micros(late)
    }
}

/// A call's latency histograms. Filled per frame, summarised with
/// [`LatencyBreakdown::summary`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyBreakdown {
    /// Backend → Twilio: time each backend packet waited in the jitter
    /// buffer, from its arrival to its release for playout.
    pub jitter_wait: Histogram,
    /// Backend → Twilio: voxproxy's time per backend datagram, from waking
    /// up with it to having handed everything it produced to the sockets.
    pub backend_processing: Histogram,
    /// Twilio → backend: voxproxy's time per Twilio frame, likewise.
    pub twilio_processing: Histogram,
    /// Twilio → backend: each frame's lateness against its media timestamp.
    pub twilio_burst: Histogram,
    /// The reference of `twilio_burst`.
    pub burst_meter: BurstMeter,
}

/// Percentiles of one [`Histogram`] in microseconds: bucket upper bounds,
/// capped by the exact maximum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Exact maximum.
    pub max_us: u64,
}

impl From<&Histogram> for Percentiles {
    fn from(h: &Histogram) -> Self {
        Percentiles {
            count: h.count(),
            p50_us: h.quantile_us(500),
            p99_us: h.quantile_us(990),
            max_us: h.max_us(),
        }
    }
}

/// The breakdown as the call record and the control API show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Backend → Twilio: jitter buffer wait per packet.
    pub jitter_buffer_wait: Percentiles,
    /// Backend → Twilio: RFC 3550 interarrival jitter of the backend's RTP, µs.
    pub network_jitter_us: u64,
    /// Backend → Twilio: the largest of that jitter during the call, µs.
    pub max_network_jitter_us: u64,
    /// Backend → Twilio: frames the concealer made up for lost packets.
    pub concealed_frames: u64,
    /// Backend → Twilio: voxproxy's processing time per datagram.
    pub backend_processing: Percentiles,
    /// Twilio → backend: voxproxy's processing time per frame.
    pub twilio_processing: Percentiles,
    /// Twilio → backend: lateness of Twilio's frames against their timestamps.
    pub twilio_burst: Percentiles,
}

impl LatencyBreakdown {
    /// The percentiles, with the RFC 3550 jitter and concealment counts
    /// (from [`crate::bridge::CallStats`]) beside them.
    #[must_use]
    pub fn summary(&self, jitter_us: u64, max_jitter_us: u64, concealed_frames: u64) -> LatencySummary {
        LatencySummary {
            jitter_buffer_wait: (&self.jitter_wait).into(),
            network_jitter_us: jitter_us,
            max_network_jitter_us: max_jitter_us,
            concealed_frames,
            backend_processing: (&self.backend_processing).into(),
            twilio_processing: (&self.twilio_processing).into(),
            twilio_burst: (&self.twilio_burst).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn quantiles_are_bucket_bounds_capped_by_the_maximum() {
        let mut h = Histogram::default();
        assert_eq!((h.quantile_us(500), h.max_us()), (0, 0));
        for _ in 0..98 {
            h.record(Duration::from_micros(900));
        }
        h.record(Duration::from_millis(25));
        h.record(Duration::from_millis(33));
        assert_eq!(h.quantile_us(500), 1_000);
        assert_eq!(h.quantile_us(990), 30_000, "the 99th of 100 is the 25 ms one, in (20, 30] ms");
        assert_eq!(h.quantile_us(1000), 33_000, "the top bucket is capped by the exact maximum");
        assert_eq!(h.max_us(), 33_000);
        let mut same = Histogram::default();
        same.record_us(17_000);
        assert_eq!(same.quantile_us(500), 17_000);
    }

    #[test]
    fn values_above_every_bound_land_in_the_last_bucket() {
        let mut h = Histogram::default();
        h.record(Duration::from_secs(3));
        assert_eq!(h.buckets()[BUCKETS - 1], 1);
        assert_eq!(h.quantile_us(990), 3_000_000);
    }

    #[test]
    fn a_full_bucket_saturates_and_the_breakdown_stays_small() {
        let mut h = Histogram::default();
        h.counts[3] = u32::MAX;
        h.record_us(40);
        assert_eq!(h.buckets()[3], u32::MAX, "saturates, never wraps to 0");
        assert_eq!(h.count(), 1);
        // Two breakdowns live per call (the bridge's and the proxy's last
        // report): 944 bytes each with 64-bit counters.
        assert!(size_of::<LatencyBreakdown>() <= 528, "{}", size_of::<LatencyBreakdown>());
    }

    #[test]
    fn burst_meter_measures_against_the_fastest_frame() {
        let mut m = BurstMeter::default();
        let at = |ms: u64| Instant::from_millis(1_000 + ms);
        assert_eq!(m.handle_frame(at(20), 20), Duration::ZERO);
        assert_eq!(m.handle_frame(at(40), 40), Duration::ZERO);
        // Three frames held back and delivered together.
        assert_eq!(m.handle_frame(at(120), 60), Duration::from_millis(60));
        assert_eq!(m.handle_frame(at(120), 80), Duration::from_millis(40));
        assert_eq!(m.handle_frame(at(120), 100), Duration::from_millis(20));
        // A frame faster than all before lowers the reference.
        assert_eq!(m.handle_frame(at(125), 130), Duration::ZERO);
        assert_eq!(m.handle_frame(at(150), 150), Duration::from_millis(5));
    }

    #[test]
    fn burst_meter_resyncs_on_a_media_clock_restart() {
        let mut m = BurstMeter::default();
        assert_eq!(m.handle_frame(Instant::from_millis(60_000), 60_000), Duration::ZERO);
        // The sender restarted at media time 0.
        assert_eq!(m.handle_frame(Instant::from_millis(60_020), 20), Duration::ZERO);
        assert_eq!(m.handle_frame(Instant::from_millis(60_060), 40), Duration::from_millis(20));
    }

    proptest! {
        #[test]
        fn quantiles_are_ordered_and_bounded(values in proptest::collection::vec(0u64..5_000_000, 1..200)) {
            let mut h = Histogram::default();
            for v in &values {
                h.record_us(*v);
            }
            let max = *values.iter().max().unwrap();
            prop_assert_eq!(h.max_us(), max);
            prop_assert_eq!(h.count(), values.len() as u64);
            let (p50, p99, p100) = (h.quantile_us(500), h.quantile_us(990), h.quantile_us(1000));
            prop_assert!(p50 <= p99 && p99 <= p100 && p100 == max);
            // The quantile's bucket bound is at or above the true value.
            let mut sorted = values.clone();
            sorted.sort_unstable();
            let rank = (values.len() * 990).div_ceil(1000).max(1);
            prop_assert!(p99 >= sorted[rank - 1]);
        }
    }
}
