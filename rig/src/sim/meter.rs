//! Per-call measurement of frames sent and frames that came back.
//!
//! Sans-IO: the caller says when it sent frame `n` ([`CallMeter::on_sent`])
//! and hands in every media payload received ([`CallMeter::on_media`]);
//! identities are found in the audio ([`super::identity`]) and matched with
//! the send time of the same frame. Send times are kept for the last
//! [`SEND_WINDOW`] frames only, so memory is bounded whatever the call's
//! length: a frame that has not come back when it leaves the window (over
//! ten seconds late) is counted missing, and one that comes back later still
//! is counted *late* instead of being matched.
//!
//! ```
//! use voxproxy_rig::sim::identity::FrameIdentity;
//! use voxproxy_rig::sim::meter::CallMeter;
//! use voxproxy_core::time::Instant;
//!
//! let mut meter = CallMeter::new(3);
//! let mut frame = [0xffu8; 160];
//! FrameIdentity::new(3, 0).unwrap().write(&mut frame);
//! meter.on_sent(0, Instant::from_millis(100));
//! let mut latencies = Vec::new();
//! meter.on_media(Instant::from_millis(103), &frame, |d| latencies.push(d));
//! assert_eq!(latencies, [std::time::Duration::from_millis(3)]);
//! let counts = meter.finish();
//! assert_eq!((counts.sent, counts.received, counts.missing), (1, 1, 0));
//! ```

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use voxproxy_core::time::Instant;

use super::identity::{FrameIdentity, IdentityScanner};

/// Frames whose send time is remembered: 10.24 s of 20 ms frames.
pub const SEND_WINDOW: usize = 512;

/// Largest latency a histogram records, in microseconds (a minute); larger
/// values are recorded as this.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// A duration as a histogram value: whole microseconds, at least 1 and at
/// most [`MAX_LATENCY_US`].
#[must_use]
pub fn latency_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).clamp(1, MAX_LATENCY_US)
}

/// Frame counters of a call or a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FrameCounts {
    /// Frames sent carrying an identity.
    pub sent: u64,
    /// Sent frames that came back (first copy of each).
    pub received: u64,
    /// Sent frames that never came back.
    pub missing: u64,
    /// Frames that came back after their send time was forgotten (also counted missing).
    pub late: u64,
    /// Frames that came back after a later frame had.
    pub out_of_order: u64,
    /// Further copies of frames that had already come back.
    pub duplicates: u64,
    /// Media messages received in which no identity was found.
    pub unidentified: u64,
    /// Identities of another call found in this call's audio.
    pub misrouted: u64,
}

impl FrameCounts {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &FrameCounts) {
        self.sent += other.sent;
        self.received += other.received;
        self.missing += other.missing;
        self.late += other.late;
        self.out_of_order += other.out_of_order;
        self.duplicates += other.duplicates;
        self.unidentified += other.unidentified;
        self.misrouted += other.misrouted;
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Frame number held, or `EMPTY`.
    frame: u32,
    sent_at: Instant,
    copies: u32,
}

const EMPTY: u32 = u32::MAX;

/// A histogram of latencies in microseconds with two significant figures
/// (1 %): small enough (about 10 KB) to keep one per call.
///
/// # Panics
/// Never: the bounds are constants hdrhistogram accepts.
#[must_use]
pub fn call_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
        .unwrap_or_else(|_| unreachable!("constant bounds are valid"))
}

/// One call's frame bookkeeping. See the [module docs](self).
#[derive(Debug)]
pub struct CallMeter {
    call: u16,
    slots: Box<[Slot]>,
    counts: FrameCounts,
    /// Sent frames in the window that have not come back.
    outstanding: u64,
    highest_received: Option<u32>,
    scanner: IdentityScanner,
    latency: Histogram<u32>,
}

impl CallMeter {
    /// A meter for the call with index `call`.
    #[must_use]
    pub fn new(call: u16) -> Self {
        CallMeter {
            call,
            slots: vec![Slot { frame: EMPTY, sent_at: Instant::ZERO, copies: 0 }; SEND_WINDOW]
                .into_boxed_slice(),
            counts: FrameCounts::default(),
            outstanding: 0,
            highest_received: None,
            scanner: IdentityScanner::new(),
            latency: call_histogram(),
        }
    }

    /// Frame `frame` (carrying this call's identity) was sent at `now`.
    /// Frames are numbered from 0 and sent in order.
    pub fn on_sent(&mut self, frame: u32, now: Instant) {
        let Some(slot) = self.slots.get_mut(frame as usize % SEND_WINDOW) else { return };
        if slot.frame != EMPTY && slot.copies == 0 {
            self.counts.missing += 1;
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        *slot = Slot { frame, sent_at: now, copies: 0 };
        self.counts.sent += 1;
        self.outstanding += 1;
    }

    /// A media payload arrived at `now`: `latency` is called with the round
    /// trip of every frame of this call found in it for the first time.
    pub fn on_media(&mut self, now: Instant, payload: &[u8], mut latency: impl FnMut(Duration)) {
        let mut identified = false;
        let CallMeter { call, slots, counts, outstanding, highest_received, scanner, latency: histogram } =
            self;
        scanner.scan(payload, |id: FrameIdentity| {
            identified = true;
            if id.call != *call {
                counts.misrouted += 1;
                return;
            }
            let Some(slot) = slots.get_mut(id.frame as usize % SEND_WINDOW) else { return };
            if slot.frame != id.frame {
                counts.late += 1;
                return;
            }
            slot.copies = slot.copies.saturating_add(1);
            if slot.copies > 1 {
                counts.duplicates += 1;
                return;
            }
            counts.received += 1;
            *outstanding = outstanding.saturating_sub(1);
            match highest_received {
                Some(high) if id.frame < *high => counts.out_of_order += 1,
                _ => *highest_received = Some(id.frame),
            }
            let rtt = now.saturating_duration_since(slot.sent_at);
            let micros = latency_micros(rtt);
            histogram.saturating_record(micros);
            latency(rtt);
        });
        if !identified {
            self.counts.unidentified += 1;
        }
    }

    /// Forgets a partial identity carried between payloads (after a `clear`).
    pub fn reset_scanner(&mut self) {
        self.scanner.reset();
    }

    /// Sent frames still waiting to come back.
    #[must_use]
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Counters so far (frames still in flight are not yet missing).
    #[must_use]
    pub fn counts(&self) -> FrameCounts {
        self.counts
    }

    /// This call's round-trip latencies in microseconds.
    #[must_use]
    pub fn latency(&self) -> &Histogram<u32> {
        &self.latency
    }

    /// Ends the measurement: every frame still out counts as missing.
    pub fn finish(&mut self) -> FrameCounts {
        for slot in self.slots.iter_mut() {
            if slot.frame != EMPTY && slot.copies == 0 {
                self.counts.missing += 1;
            }
            slot.frame = EMPTY;
        }
        self.outstanding = 0;
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(call: u16, n: u32) -> [u8; 160] {
        let mut f = [0x55u8; 160];
        FrameIdentity::new(call, n).unwrap().write(&mut f);
        f
    }

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    #[test]
    fn counts_received_missing_duplicates_and_reordering() {
        let mut m = CallMeter::new(1);
        for n in 0..6 {
            m.on_sent(n, ms(u64::from(n) * 20));
        }
        let mut rtts = Vec::new();
        // Frames come back as 0, 2, 1, 1 (again), 4, then a frame of call 2 and plain audio.
        for (n, at) in [(0, 5), (2, 50), (1, 51), (1, 52), (4, 90)] {
            m.on_media(ms(at), &frame(1, n), |d| rtts.push(d.as_millis()));
        }
        m.on_media(ms(95), &frame(2, 5), |_| {});
        m.on_media(ms(96), &[0x55; 160], |_| {});
        assert_eq!(rtts, [5, 10, 31, 10]);
        assert_eq!(m.outstanding(), 2);
        let c = m.finish();
        assert_eq!(
            c,
            FrameCounts {
                sent: 6,
                received: 4,
                missing: 2,
                late: 0,
                out_of_order: 1,
                duplicates: 1,
                unidentified: 1,
                misrouted: 1
            }
        );
        assert_eq!(m.latency().len(), 4);
    }

    #[test]
    fn frames_leaving_the_window_unanswered_are_missing_and_late_ones_are_not_matched() {
        let mut m = CallMeter::new(0);
        let total = SEND_WINDOW as u32 + 10;
        for n in 0..total {
            m.on_sent(n, ms(u64::from(n) * 20));
        }
        // The first 10 frames were pushed out of the window unanswered.
        assert_eq!(m.counts().missing, 10);
        m.on_media(ms(100_000), &frame(0, 3), |_| panic!("frame 3 is no longer matched"));
        let c = m.finish();
        assert_eq!((c.late, c.missing, c.received), (1, u64::from(total), 0));
    }

    #[test]
    fn several_identities_in_one_payload_are_all_counted() {
        let mut m = CallMeter::new(4);
        m.on_sent(0, ms(0));
        m.on_sent(1, ms(20));
        let mut joined = frame(4, 0).to_vec();
        joined.extend_from_slice(&frame(4, 1));
        let mut n = 0;
        m.on_media(ms(40), &joined, |_| n += 1);
        assert_eq!(n, 2);
        assert_eq!(m.finish().missing, 0);
    }
}
