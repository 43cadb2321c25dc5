//! The RFC 3550 interarrival jitter estimator (§6.4.1, §A.8).
//!
//! `J += (|D| - J) / 16`, where `D` is the difference between two packets'
//! spacing on arrival and their spacing in RTP timestamps, both in timestamp
//! units. Kept in fixed point (×16) as the RFC's reference code does, so the
//! value reported in RTCP is exactly what the RFC prescribes.

use crate::seq::timestamp_delta;
use crate::time::Instant;

/// Interarrival jitter of one RTP stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterarrivalJitter {
    clock_rate: u32,
    /// Transit time of the previous packet: arrival (in timestamp units) minus RTP timestamp.
    last_transit: Option<i64>,
    /// Jitter × 16, in timestamp units.
    jitter_q4: u64,
}

impl InterarrivalJitter {
    /// An estimator for a stream whose RTP clock runs at `clock_rate` Hz.
    /// A zero rate is treated as 8000 Hz rather than dividing by zero.
    #[must_use]
    pub const fn new(clock_rate: u32) -> Self {
        let clock_rate = if clock_rate == 0 { 8000 } else { clock_rate };
        InterarrivalJitter { clock_rate, last_transit: None, jitter_q4: 0 }
    }

    /// The RTP clock rate in Hz.
    #[must_use]
    pub const fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Records a packet with RTP `timestamp` that arrived at `arrival`.
    pub fn update(&mut self, arrival: Instant, timestamp: u32) {
        let arrival_ts = rtp_clock(arrival.as_nanos(), self.clock_rate);
        let transit = i64::from(timestamp_delta(arrival_ts, timestamp));
        if let Some(last) = self.last_transit {
            // Both transits are wrapped 32-bit differences; re-wrap their difference.
            let d = i64::from((transit - last) as i32).unsigned_abs();
            // J += (|D| - J) / 16, in Q4: J_q4 += |D| - J_q4 / 16.
            self.jitter_q4 = self.jitter_q4 + d.min(u64::from(u32::MAX)) - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Jitter in RTP timestamp units, as reported in RTCP reception reports.
    #[must_use]
    pub const fn jitter(&self) -> u32 {
        let j = self.jitter_q4 >> 4;
        if j > u32::MAX as u64 { u32::MAX } else { j as u32 }
    }

    /// Jitter in microseconds.
    #[must_use]
    pub const fn jitter_micros(&self) -> u64 {
        (self.jitter_q4 >> 4) * 1_000_000 / self.clock_rate as u64
    }

    /// Forgets the stream's history (new SSRC).
    pub fn reset(&mut self) {
        self.last_transit = None;
        self.jitter_q4 = 0;
    }
}

/// `nanos` on an RTP clock of `clock_rate` Hz, wrapped to 32 bits like the
/// timestamps so that transit differences are plain wrapping subtractions.
///
/// Whole seconds and the sub-second rest are scaled apart to stay in u64 (a
/// u128 division costs more than the rest of a jitter update): the seconds
/// part only matters modulo 2^32, and the rest is below 10^9 × 2^32.
fn rtp_clock(nanos: u64, clock_rate: u32) -> u32 {
    let whole = (nanos / 1_000_000_000).wrapping_mul(u64::from(clock_rate));
    let part = (nanos % 1_000_000_000) * u64::from(clock_rate) / 1_000_000_000;
    whole.wrapping_add(part) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn rtp_clock_matches_wide_arithmetic(nanos in any::<u64>(), rate in any::<u32>()) {
            let wide = (u128::from(nanos) * u128::from(rate) / 1_000_000_000) as u32;
            prop_assert_eq!(rtp_clock(nanos, rate), wide);
        }
    }

    #[test]
    fn perfectly_paced_stream_has_no_jitter() {
        let mut j = InterarrivalJitter::new(8000);
        for i in 0..100u32 {
            j.update(Instant::from_millis(1_000 + u64::from(i) * 20), 12_345u32.wrapping_add(i * 160));
        }
        assert_eq!(j.jitter(), 0);
    }

    #[test]
    fn alternating_delay_converges_to_its_amplitude() {
        // Every other packet arrives 10 ms (80 units) late: |D| = 80 each time.
        let mut j = InterarrivalJitter::new(8000);
        for i in 0..500u32 {
            let late = if i % 2 == 1 { 10 } else { 0 };
            j.update(Instant::from_millis(u64::from(i) * 20 + late), (u32::MAX - 1000).wrapping_add(i * 160));
        }
        assert!((78..=80).contains(&j.jitter()), "jitter {}", j.jitter());
        assert!((9_700..=10_000).contains(&j.jitter_micros()), "{}", j.jitter_micros());
    }

    #[test]
    fn arrival_conversion_is_exact_and_wraps() {
        // 1.5 s + 1 ns at 8 kHz: 12000 units (the nanosecond truncates away).
        // Two packets whose transit differs by exactly that many units must
        // produce |D| = 12000 and J = 12000 / 16 = 750.
        let mut j = InterarrivalJitter::new(8000);
        j.update(Instant::from_nanos(0), 0);
        j.update(Instant::from_nanos(1_500_000_001), 0);
        assert_eq!(j.jitter(), 750);
        // Near the end of the u64 nanosecond range at 48 kHz, consecutive
        // 20 ms packets are still 960 units apart: no jitter.
        let mut j = InterarrivalJitter::new(48_000);
        let start = u64::MAX - 1_000_000_000;
        for i in 0..10u64 {
            j.update(Instant::from_nanos(start + i * 20_000_000), (i as u32).wrapping_mul(960));
        }
        assert_eq!(j.jitter(), 0);
    }

    #[test]
    fn one_late_packet_decays() {
        let mut j = InterarrivalJitter::new(8000);
        for i in 0..10u32 {
            j.update(Instant::from_millis(u64::from(i) * 20), i * 160);
        }
        j.update(Instant::from_millis(10 * 20 + 40), 10 * 160);
        let peak = j.jitter();
        assert_eq!(peak, 20, "|D| = 320 units, J = 320/16");
        for i in 11..200u32 {
            j.update(Instant::from_millis(u64::from(i) * 20 + 40), i * 160);
        }
        assert!(j.jitter() < 2);
    }
}
