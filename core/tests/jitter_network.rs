//! The jitter buffer against a simulated network on virtual time: gaussian
//! delay, random loss and duplicates, thousands of packets, a seeded RNG so
//! every run is exact. What it measures is what a listener hears:
//!
//! - *late loss*: packets that did arrive, but after their slot had already
//!   been concealed (the buffer gave up too soon);
//! - *hold*: how long each played packet waited in the buffer, from its
//!   arrival to its release.
//!
//! `cargo test -p voxproxy-core --test jitter_network -- --nocapture` prints
//! the table quoted in README.md.

use std::time::Duration;

use voxproxy_core::jitter::{Arrival, JitterBuffer, JitterConfig, PacketMeta, Playout};
use voxproxy_core::time::Instant;

/// 20 ms packets at 8 kHz.
const PTIME_US: u64 = 20_000;
/// Mean one-way delay; a draw below zero is taken as zero (at 30 ms of
/// jitter one packet in twenty, which then arrives at once).
const BASE_DELAY_US: f64 = 50_000.0;

/// The bridge's settings for 20 ms G.711 with the default
/// `jitter.max_delay_ms` (see `adapters/src/bridge/mod.rs`).
fn bridge_config() -> JitterConfig {
    JitterConfig {
        min_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(60),
        ..JitterConfig::default()
    }
}

/// xorshift64*: small, deterministic, good enough for impairments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// What the network does to the stream.
#[derive(Clone, Copy, Debug)]
struct Network {
    /// Standard deviation of the one-way delay, in milliseconds.
    jitter_ms: f64,
    /// Probability that a packet is lost.
    loss: f64,
    /// Probability that a packet arrives twice (the copy with its own delay).
    duplicate: f64,
}

/// What the listener got.
#[derive(Debug)]
struct Outcome {
    sent: u64,
    /// Packets (first copies) that arrived after their slot was concealed.
    late: u64,
    /// Hold of every played packet, sorted, in microseconds.
    holds: Vec<u64>,
}

impl Outcome {
    fn late_percent(&self) -> f64 {
        100.0 * self.late as f64 / self.sent as f64
    }

    /// The `q` quantile of the hold, in milliseconds.
    fn hold_ms(&self, q: f64) -> f64 {
        let i = ((self.holds.len() as f64 * q).ceil() as usize).clamp(1, self.holds.len()) - 1;
        self.holds[i] as f64 / 1_000.0
    }
}

/// Sends `packets` packets 20 ms apart through `net`, into a buffer with
/// `config`, on virtual time: deadlines are served exactly when due and the
/// playout is drained after every input.
fn simulate(config: JitterConfig, net: Network, packets: u32, seed: u64) -> Outcome {
    let mut rng = Rng(seed | 1);
    // (arrival µs, packet index)
    let mut arrivals = Vec::new();
    for i in 0..packets {
        if rng.unit() <= net.loss {
            continue;
        }
        let copies = if rng.unit() <= net.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let delay = (BASE_DELAY_US + net.jitter_ms * 1_000.0 * rng.gaussian()).max(0.0);
            arrivals.push((u64::from(i) * PTIME_US + delay as u64, i));
        }
    }
    arrivals.sort_unstable();
    // Whichever copy of a packet arrives first is the one that counts.
    let mut first_seen = vec![false; packets as usize];
    let mut arrived_at = vec![None; packets as usize];
    let meta = |i: u32| PacketMeta { ssrc: 0x5eed, sequence: i as u16, timestamp: i * 160, marker: false };
    let mut jb: JitterBuffer<16, 4> = JitterBuffer::new(config, Instant::ZERO);
    let mut holds = Vec::with_capacity(packets as usize);
    let mut late = 0;
    let mut drain = |jb: &mut JitterBuffer<16, 4>, now: Instant, arrived_at: &[Option<Instant>]| {
        while let Some(entry) = jb.poll_playout() {
            if let Playout::Packet { payload, .. } = entry {
                let i = u32::from_le_bytes(payload.try_into().expect("4-byte payload"));
                let at: Instant = arrived_at[i as usize].expect("played packets arrived");
                holds.push((now - at).as_micros() as u64);
            }
        }
    };
    for (at_us, i) in arrivals {
        let now = Instant::from_micros(at_us);
        while let Some(deadline) = jb.poll_timeout().filter(|d| *d <= now) {
            jb.handle_timeout(deadline);
            drain(&mut jb, deadline, &arrived_at);
        }
        let first = !std::mem::replace(&mut first_seen[i as usize], true);
        if first {
            arrived_at[i as usize] = Some(now);
        }
        let arrival = jb.handle_packet(now, meta(i), &i.to_le_bytes());
        if first && arrival == Arrival::Late {
            late += 1;
        }
        drain(&mut jb, now, &arrived_at);
    }
    while let Some(deadline) = jb.poll_timeout() {
        jb.handle_timeout(deadline);
        drain(&mut jb, deadline, &arrived_at);
    }
    assert!(jb.stats().is_balanced(), "{:?}", jb.stats());
    holds.sort_unstable();
    Outcome { sent: u64::from(packets), late, holds }
}

/// The network: 2 % loss, 1 % duplicates, gaussian delay.
fn lossy(jitter_ms: f64) -> Network {
    Network { jitter_ms, loss: 0.02, duplicate: 0.01 }
}

/// 30,000 packets: ten minutes of 20 ms audio.
const PACKETS: u32 = 30_000;

#[test]
fn heavy_gaussian_jitter_costs_at_most_one_percent_late_loss_within_forty_ms() {
    let mut worst_late: f64 = 0.0;
    let mut worst_p95: f64 = 0.0;
    for seed in [1, 2, 3] {
        let outcome = simulate(bridge_config(), lossy(15.0), PACKETS, seed);
        worst_late = worst_late.max(outcome.late_percent());
        worst_p95 = worst_p95.max(outcome.hold_ms(0.95));
    }
    assert!(worst_late <= 1.0, "late loss {worst_late:.2} % > 1 % under 15 ms jitter");
    assert!(worst_p95 <= 40.0, "hold p95 {worst_p95:.1} ms > 40 ms under 15 ms jitter");
}

#[test]
fn a_clean_network_holds_nothing() {
    let clean = Network { jitter_ms: 0.0, loss: 0.0, duplicate: 0.0 };
    let outcome = simulate(bridge_config(), clean, PACKETS, 7);
    assert_eq!(outcome.late, 0);
    assert_eq!(outcome.holds.len(), PACKETS as usize);
    assert_eq!(outcome.holds.last(), Some(&0), "no packet waited");
}

#[test]
fn loss_alone_does_not_make_in_order_packets_wait() {
    // 2 % loss on an otherwise perfect network: the packet after a lost one
    // waits (it is behind a gap), every other packet leaves at once.
    let outcome =
        simulate(bridge_config(), Network { jitter_ms: 0.0, loss: 0.02, duplicate: 0.0 }, PACKETS, 9);
    assert_eq!(outcome.late, 0);
    assert_eq!(outcome.hold_ms(0.95), 0.0);
}

#[test]
fn print_late_loss_and_hold_by_jitter_level() {
    println!(
        "jitter σ | late loss | hold p50 | hold p95 | hold p99 | (2 % loss, 1 % duplicates, {PACKETS} packets, seed 1)"
    );
    for jitter_ms in [0.0, 5.0, 15.0, 30.0] {
        let o = simulate(bridge_config(), lossy(jitter_ms), PACKETS, 1);
        println!(
            "{jitter_ms:>5} ms | {:>7.2} % | {:>5.1} ms | {:>5.1} ms | {:>5.1} ms",
            o.late_percent(),
            o.hold_ms(0.50),
            o.hold_ms(0.95),
            o.hold_ms(0.99)
        );
        // Every packet is accounted for: played once, or late, or lost on the wire.
        assert!(o.holds.len() as u64 + o.late <= o.sent);
    }
}
