//! Wrap-around arithmetic for RTP sequence numbers (16 bit) and timestamps
//! (32 bit), in the spirit of RFC 1982 serial numbers, plus the extension of
//! 16-bit sequence numbers to a monotonic 64-bit count (RFC 3550 §A.1).

/// Signed distance `a - b` between two sequence numbers, taking the shorter
/// way round the 16-bit circle: `seq_delta(1, 65535) == 2`.
#[must_use]
pub const fn seq_delta(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// Signed distance `a - b` between two RTP timestamps, the shorter way round.
#[must_use]
pub const fn timestamp_delta(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

/// Extends 16-bit sequence numbers to 64-bit ones that keep counting across
/// wrap-around. The first number seen becomes `65536 + seq` so that packets
/// slightly older than the first one still get an extended number (no
/// underflow) without a special case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// A tracker that has seen no packet yet.
    #[must_use]
    pub const fn new() -> Self {
        SeqExtender { highest: None }
    }

    /// The extended number of `seq`: the candidate closest to the highest
    /// number seen so far. Advances the highest number if `seq` is newer.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let ext = self.peek(seq);
        if self.highest.is_none_or(|h| ext > h) {
            self.highest = Some(ext);
        }
        ext
    }

    /// Like [`SeqExtender::extend`] but without advancing the state.
    #[must_use]
    pub fn peek(&self, seq: u16) -> u64 {
        match self.highest {
            None => (1 << 16) + u64::from(seq),
            Some(h) => {
                let delta = i64::from(seq_delta(seq, h as u16));
                // `h >= 65536` always holds, so `h + delta` cannot underflow.
                h.saturating_add_signed(delta)
            }
        }
    }

    /// The highest extended number seen, if any.
    #[must_use]
    pub const fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Forgets everything (a new SSRC, a stream restart).
    pub fn reset(&mut self) {
        self.highest = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deltas_take_the_short_way_round() {
        assert_eq!(seq_delta(1, 65535), 2);
        assert_eq!(seq_delta(65535, 1), -2);
        assert_eq!(seq_delta(100, 100), 0);
        assert_eq!(timestamp_delta(80, u32::MAX - 79), 160);
        assert_eq!(timestamp_delta(u32::MAX - 79, 80), -160);
    }

    #[test]
    fn extension_counts_across_wrap_and_tolerates_old_packets() {
        let mut ext = SeqExtender::new();
        let first = ext.extend(65534);
        assert_eq!(ext.extend(65535), first + 1);
        assert_eq!(ext.extend(0), first + 2);
        assert_eq!(ext.extend(1), first + 3);
        // A reordered packet from before the wrap keeps its old number.
        assert_eq!(ext.extend(65533), first - 1);
        assert_eq!(ext.highest(), Some(first + 3));
        let mut fresh = SeqExtender::new();
        let f = fresh.extend(0);
        assert_eq!(fresh.extend(65535), f - 1, "older than the first packet, no underflow");
    }

    proptest! {
        /// Walking forward by steps below 2^15 yields a strictly increasing
        /// extended sequence whose differences equal the steps.
        #[test]
        fn forward_walk_is_monotonic(start in any::<u16>(), steps in proptest::collection::vec(1u16..32768, 1..200)) {
            let mut ext = SeqExtender::new();
            let mut seq = start;
            let mut prev = ext.extend(seq);
            for step in steps {
                seq = seq.wrapping_add(step);
                let next = ext.extend(seq);
                prop_assert_eq!(next - prev, u64::from(step));
                prev = next;
            }
        }
    }
}
