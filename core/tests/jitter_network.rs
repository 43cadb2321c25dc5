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

use std::collections::BTreeMap;
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
    let mut arrivals = Vec::new();
    for i in 0..packets {
        if rng.unit() <= net.loss {
            continue;
        }
        let copies = if rng.unit() <= net.duplicate { 2 } else { 1 };
        for _ in 0..copies {
            let delay = (BASE_DELAY_US + net.jitter_ms * 1_000.0 * rng.gaussian()).max(0.0);
            arrivals.push((u64::from(i) * PTIME_US + delay as u64, i, i * 160));
        }
    }
    arrivals.sort_unstable();
    play(config, &arrivals, packets)
}

/// Feeds `arrivals` (arrival µs, packet index = sequence number, RTP
/// timestamp), sorted by time, into a buffer with `config` on virtual time.
/// `packets` bounds the indices.
fn play(config: JitterConfig, arrivals: &[(u64, u32, u32)], packets: u32) -> Outcome {
    // Whichever copy of a packet arrives first is the one that counts.
    let mut first_seen = vec![false; packets as usize];
    let mut arrived_at = vec![None; packets as usize];
    let meta =
        |i: u32, timestamp: u32| PacketMeta { ssrc: 0x5eed, sequence: i as u16, timestamp, marker: false };
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
    for &(at_us, i, timestamp) in arrivals {
        let now = Instant::from_micros(at_us);
        while let Some(deadline) = jb.poll_timeout().filter(|d| *d <= now) {
            jb.handle_timeout(deadline);
            drain(&mut jb, deadline, &arrived_at);
        }
        let first = !std::mem::replace(&mut first_seen[i as usize], true);
        if first {
            arrived_at[i as usize] = Some(now);
        }
        let arrival = jb.handle_packet(now, meta(i, timestamp), &i.to_le_bytes());
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

/// Backend → proxy RTP streams in a classic pcap file (`tcpdump -i lo -w`,
/// Ethernet or Linux "cooked" link type, IPv4): for every UDP datagram from
/// `from_port` that looks like RTP, its capture time (µs), sequence number
/// and timestamp, grouped by destination port (one call each).
fn read_pcap(data: &[u8], from_port: u16) -> BTreeMap<u16, Vec<(u64, u16, u32)>> {
    let u32_at = |b: &[u8], at: usize, le: bool| {
        let bytes: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
        if le { u32::from_le_bytes(bytes) } else { u32::from_be_bytes(bytes) }
    };
    let (le, nanos) = match u32_at(data, 0, true) {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        magic => panic!("not a pcap file (magic {magic:#x})"),
    };
    let link_header = match u32_at(data, 20, le) {
        1 => 14,
        113 => 16,
        276 => 20,
        other => panic!("link type {other} not handled"),
    };
    let mut streams: BTreeMap<u16, Vec<(u64, u16, u32)>> = BTreeMap::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let secs = u64::from(u32_at(data, at, le));
        let frac = u64::from(u32_at(data, at + 4, le));
        let len = u32_at(data, at + 8, le) as usize;
        let frame = &data[at + 16..(at + 16 + len).min(data.len())];
        at += 16 + len;
        let us = secs * 1_000_000 + if nanos { frac / 1_000 } else { frac };
        let Some(ip) = frame.get(link_header..) else { continue };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let udp = &ip[usize::from(ip[0] & 0xf) * 4..];
        if udp.len() < 8 + 12 || u16::from_be_bytes([udp[0], udp[1]]) != from_port {
            continue;
        }
        let rtp = &udp[8..];
        if rtp[0] >> 6 != 2 || (72..=95).contains(&(rtp[1] & 0x7f)) {
            continue;
        }
        let sequence = u16::from_be_bytes([rtp[2], rtp[3]]);
        let timestamp = u32::from_be_bytes([rtp[4], rtp[5], rtp[6], rtp[7]]);
        streams.entry(u16::from_be_bytes([udp[2], udp[3]])).or_default().push((us, sequence, timestamp));
    }
    streams
}

/// Turns one captured stream into `play`'s input: times from the stream's
/// first packet, sequence numbers unwrapped to indices from 0.
fn captured_arrivals(stream: &[(u64, u16, u32)]) -> (Vec<(u64, u32, u32)>, u32) {
    let mut extended = Vec::with_capacity(stream.len());
    let mut last = i64::from(stream[0].1);
    for &(_, sequence, _) in stream {
        last += i64::from(sequence.wrapping_sub(last as u16) as i16);
        extended.push(last);
    }
    let first = *extended.iter().min().expect("a packet");
    let t0 = stream[0].0;
    let arrivals: Vec<_> = stream
        .iter()
        .zip(&extended)
        .map(|(&(us, _, timestamp), &ext)| (us - t0, (ext - first) as u32, timestamp))
        .collect();
    let packets = arrivals.iter().map(|a| a.1).max().expect("a packet") + 1;
    (arrivals, packets)
}

/// Replays a capture of a real path through the buffer with the bridge's
/// settings and prints late loss and hold, per call and overall. How the
/// capture is made is in README.md (jitter buffer, measured on netem).
#[test]
#[ignore = "needs VOXPROXY_JITTER_PCAP=FILE and VOXPROXY_JITTER_FROM_PORT=PORT"]
fn replay_capture() {
    let path = std::env::var("VOXPROXY_JITTER_PCAP").expect("VOXPROXY_JITTER_PCAP");
    let port = std::env::var("VOXPROXY_JITTER_FROM_PORT").expect("VOXPROXY_JITTER_FROM_PORT");
    let data = std::fs::read(&path).expect("read the capture");
    let streams = read_pcap(&data, port.parse().expect("a port number"));
    let (mut sent, mut late, mut holds) = (0, 0, Vec::new());
    for (to, stream) in &streams {
        let (arrivals, packets) = captured_arrivals(stream);
        let o = play(bridge_config(), &arrivals, packets);
        println!(
            "port {to}: {} packets, late {:.2} %, hold p95 {:.1} ms",
            o.sent,
            o.late_percent(),
            o.hold_ms(0.95)
        );
        (sent, late) = (sent + o.sent, late + o.late);
        holds.extend(o.holds);
    }
    holds.sort_unstable();
    let all = Outcome { sent, late, holds };
    println!(
        "{} calls, {sent} packets: late {:.2} %, hold p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms",
        streams.len(),
        all.late_percent(),
        all.hold_ms(0.5),
        all.hold_ms(0.95),
        all.hold_ms(0.99)
    );
}

#[test]
fn pcap_reader_keeps_only_rtp_from_the_port_and_unwraps_sequences() {
    let mut pcap = Vec::new();
    for word in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65_535, 1] {
        pcap.extend_from_slice(&word.to_le_bytes());
    }
    // (seconds, µs, source port, RTP payload type, sequence, timestamp)
    let packets = [
        (1u32, 0u32, 4001u16, 0u8, 65_535u16, 160u32),
        (1, 20_000, 4001, 0, 1, 480),
        (1, 30_000, 5000, 0, 2, 640),
        (1, 32_000, 4001, 72, 3, 0),
        (1, 35_000, 4001, 0, 0, 320),
    ];
    for (secs, us, from, pt, sequence, timestamp) in packets {
        let mut frame = vec![0u8; 14];
        let mut ip = vec![0u8; 20];
        (ip[0], ip[9]) = (0x45, 17);
        frame.extend_from_slice(&ip);
        for port in [from, 40_000] {
            frame.extend_from_slice(&port.to_be_bytes());
        }
        frame.extend_from_slice(&[0, 20, 0, 0, 0x80, pt]);
        frame.extend_from_slice(&sequence.to_be_bytes());
        frame.extend_from_slice(&timestamp.to_be_bytes());
        frame.extend_from_slice(&[0; 4]);
        for word in [secs, us, frame.len() as u32, frame.len() as u32] {
            pcap.extend_from_slice(&word.to_le_bytes());
        }
        pcap.extend_from_slice(&frame);
    }
    let streams = read_pcap(&pcap, 4001);
    let stream = &streams[&40_000];
    assert_eq!(stream, &[(1_000_000, 65_535, 160), (1_020_000, 1, 480), (1_035_000, 0, 320)]);
    let (arrivals, packets) = captured_arrivals(stream);
    assert_eq!(arrivals, [(0, 0, 160), (20_000, 2, 480), (35_000, 1, 320)]);
    assert_eq!(packets, 3);
    let outcome = play(bridge_config(), &arrivals, packets);
    assert_eq!(
        (outcome.late, outcome.holds.len()),
        (0, 3),
        "packet 1 fills the gap 15 ms into its 20 ms hold"
    );
}
