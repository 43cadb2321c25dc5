//! `jitter_ops`: a [`JitterBuffer`] driven by an arbitrary schedule of
//! packets and clock ticks, with its invariants checked after every step.

use core::time::Duration;
use std::collections::HashSet;
use std::vec::Vec;

use arbitrary::{Arbitrary, Unstructured};
use voxproxy_core::jitter::{Arrival, JitterBuffer, JitterConfig, JitterStats, PacketMeta, Playout};
use voxproxy_core::time::Instant;

/// Slots and slot size of the buffer under test: few slots so that early
/// releases happen; small slots so that oversized payloads do.
const SLOTS: usize = 8;
const MAX_PAYLOAD: usize = 64;
/// Bound on the steps of one input.
const MAX_STEPS: usize = 4_096;

/// The first bytes of an input: the buffer's settings.
#[derive(Arbitrary, Debug)]
struct Settings {
    min_delay_ms: u8,
    max_delay_ms: u8,
    jitter_multiplier: u8,
    max_gap: u8,
}

/// One step of the schedule.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A packet arrives now. `source`'s low bit picks one of two SSRCs; the
    /// payload is 4 + `extra_len` bytes and carries the packet's arrival number.
    Packet { source: u8, sequence: u16, timestamp: u32, marker: bool, extra_len: u8 },
    /// The clock moves on by `micros`, firing every deadline on the way.
    Advance { micros: u32 },
    /// `handle_timeout` now, due or not.
    Timeout,
}

/// What the checker remembers between steps.
struct Checker {
    jb: JitterBuffer<SLOTS, MAX_PAYLOAD>,
    now: Instant,
    /// Arrival time of every packet handed in, by arrival number.
    arrivals: Vec<Instant>,
    /// Arrival numbers already played: each packet is played at most once.
    played: HashSet<u32>,
    /// Sequence number of the last entry handed out.
    last_sequence: Option<u16>,
    packets_out: u64,
    lost_out: u64,
    resyncs: u64,
}

impl Checker {
    /// Drains the playout and checks everything that must hold after an input.
    /// `arrived_in_order`: the arrival number of a packet that had to leave at once.
    fn settle(&mut self, arrived_in_order: Option<u32>) {
        let stats = self.jb.stats();
        let resyncs = stats.discontinuities + stats.source_changes;
        // Each resynchronisation in this step may break the sequence once.
        let mut breaks_allowed = resyncs - self.resyncs;
        self.resyncs = resyncs;
        let mut must_leave = arrived_in_order;
        let max_delay = self.jb.config().max_delay;
        while let Some(entry) = self.jb.poll_playout() {
            let sequence = match entry {
                Playout::Packet { meta, payload } => {
                    let id = u32::from_le_bytes(payload[..4].try_into().expect("payloads carry 4 bytes"));
                    assert!(self.played.insert(id), "packet {id} played twice");
                    let held = self.now - self.arrivals[id as usize];
                    assert!(held <= max_delay, "packet {id} held {held:?} > {max_delay:?}");
                    if must_leave == Some(id) {
                        must_leave = None;
                    }
                    self.packets_out += 1;
                    meta.sequence
                }
                Playout::Lost { sequence, .. } => {
                    self.lost_out += 1;
                    sequence
                }
            };
            if let Some(last) = self.last_sequence
                && sequence != last.wrapping_add(1)
            {
                assert!(breaks_allowed > 0, "sequence {sequence} after {last} without a resynchronisation");
                breaks_allowed -= 1;
            }
            self.last_sequence = Some(sequence);
        }
        assert_eq!(must_leave, None, "an in-order packet was held");
        let stats: JitterStats = self.jb.stats();
        assert!(stats.is_balanced(), "unbalanced: {stats:?}");
        assert_eq!((stats.played, stats.lost), (self.packets_out, self.lost_out));
        assert!(
            self.jb.poll_timeout().is_none_or(|deadline| deadline > self.now),
            "a deadline at or before now was left pending"
        );
    }
}

/// Runs a schedule and returns the final stats; `None` if the input ended
/// before the settings.
fn run(data: &[u8]) -> Option<JitterStats> {
    let mut u = Unstructured::new(data);
    let settings = Settings::arbitrary(&mut u).ok()?;
    let config = JitterConfig {
        clock_rate: 8000,
        min_delay: Duration::from_millis(u64::from(settings.min_delay_ms)),
        max_delay: Duration::from_millis(u64::from(settings.max_delay_ms)),
        jitter_multiplier: u32::from(settings.jitter_multiplier),
        max_gap: u16::from(settings.max_gap),
    };
    let mut c = Checker {
        jb: JitterBuffer::new(config, Instant::ZERO),
        now: Instant::ZERO,
        arrivals: Vec::new(),
        played: HashSet::new(),
        last_sequence: None,
        packets_out: 0,
        lost_out: 0,
        resyncs: 0,
    };
    let mut payload = [0u8; 4 + 255];
    for _ in 0..MAX_STEPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        match op {
            Op::Packet { source, sequence, timestamp, marker, extra_len } => {
                let ssrc = if source & 1 == 0 { 0x1111_1111 } else { 0x2222_2222 };
                let id = c.arrivals.len() as u32;
                c.arrivals.push(c.now);
                payload[..4].copy_from_slice(&id.to_le_bytes());
                let len = 4 + usize::from(extra_len);
                let meta = PacketMeta { ssrc, sequence, timestamp, marker };
                let arrival = c.jb.handle_packet(c.now, meta, &payload[..len]);
                assert_eq!(arrival == Arrival::TooLarge, len > MAX_PAYLOAD);
                let leaves_at_once =
                    matches!(arrival, Arrival::InOrder | Arrival::NewSource | Arrival::Discontinuity);
                c.settle(leaves_at_once.then_some(id));
            }
            Op::Advance { micros } => {
                let target = c.now + Duration::from_micros(u64::from(micros));
                while let Some(deadline) = c.jb.poll_timeout().filter(|d| *d <= target) {
                    c.now = c.now.max(deadline);
                    c.jb.handle_timeout(c.now);
                    c.settle(None);
                }
                c.now = target;
            }
            Op::Timeout => {
                c.jb.handle_timeout(c.now);
                c.settle(None);
            }
        }
    }
    Some(c.jb.stats())
}

/// Drives a jitter buffer through an arbitrary schedule of packets (any
/// sequence number, timestamp, SSRC of two, marker, payload length) and clock
/// steps, on virtual time. After every step: output strictly in sequence
/// except once per counted resynchronisation, no packet played twice, no
/// packet held longer than `max_delay`, in-order packets released at once,
/// no overdue deadline left, and the accounting identity.
pub fn jitter_ops(data: &[u8]) {
    let _ = run(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed(name: &str) -> Vec<u8> {
        let path = format!("{}/fuzz/corpus/jitter_ops/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The seeds decode to the scenarios their names promise.
    #[test]
    fn seeds_exercise_their_scenarios() {
        let s = run(&seed("in_order")).unwrap();
        assert_eq!((s.received, s.played, s.lost, s.max_hold), (10, 10, 0, Duration::ZERO));
        let s = run(&seed("reorder")).unwrap();
        assert_eq!((s.reordered, s.lost, s.played), (1, 0, 4));
        let s = run(&seed("loss_then_late")).unwrap();
        assert_eq!((s.lost, s.late, s.played), (1, 1, 4));
        let s = run(&seed("wrap")).unwrap();
        assert_eq!((s.played, s.lost, s.reordered), (6, 0, 1));
        let s = run(&seed("ssrc_change")).unwrap();
        assert_eq!((s.source_changes, s.played), (1, 6));
        let s = run(&seed("jump_and_restart")).unwrap();
        assert_eq!((s.discontinuities, s.late), (2, 1));
        let s = run(&seed("duplicate_and_too_large")).unwrap();
        assert_eq!((s.duplicate, s.too_large, s.played), (2, 1, 3));
        assert!(s.is_balanced());
        let s = run(&seed("full_buffer")).unwrap();
        assert_eq!((s.early_releases, s.lost), (1, 1));
        // A truncated input still decodes (missing bytes read as zero).
        let _ = run(&seed("truncated"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_hold_the_invariants(data in proptest::collection::vec(any::<u8>(), 0..2_000)) {
            jitter_ops(&data);
        }

        /// Denser in packets: mostly packets near each other, small time steps.
        #[test]
        fn packet_heavy_schedules_hold_the_invariants(
            header in proptest::collection::vec(any::<u8>(), 4),
            steps in proptest::collection::vec((0u8..4, 0u16..40, 0u32..30_000, any::<u8>()), 0..300),
        ) {
            let mut data = header;
            for (kind, seq, micros, extra) in steps {
                match kind {
                    0 | 1 => {
                        data.extend_from_slice(&0u32.to_le_bytes());
                        data.push(extra >> 7);
                        data.extend_from_slice(&seq.to_le_bytes());
                        data.extend_from_slice(&(u32::from(seq) * 160).to_le_bytes());
                        data.push(0);
                        data.push(extra & 0x3f);
                    }
                    2 => {
                        data.extend_from_slice(&0x6000_0000u32.to_le_bytes());
                        data.extend_from_slice(&micros.to_le_bytes());
                    }
                    _ => data.extend_from_slice(&0xC000_0000u32.to_le_bytes()),
                }
            }
            jitter_ops(&data);
        }
    }
}
