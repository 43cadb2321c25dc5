//! Jitter buffer and loss concealment on the backend → Twilio path: what one
//! packet costs on its way through the buffer, and what one concealed 20 ms
//! frame costs.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use voxproxy_core::jitter::{JitterBuffer, JitterConfig, PacketMeta, Playout};
use voxproxy_core::plc::{ConcealerConfig, LossConcealer};
use voxproxy_core::time::Instant;

/// 20 ms of G.711 at 8 kHz.
const PTIME_MS: u64 = 20;
const PAYLOAD: [u8; 160] = [0xd5; 160];

fn meta(seq: u16) -> PacketMeta {
    PacketMeta {
        ssrc: 0x1234_5678,
        sequence: seq,
        timestamp: u32::from(seq).wrapping_mul(160),
        marker: false,
    }
}

fn at(n: u64) -> Instant {
    Instant::from_millis(n * PTIME_MS)
}

/// Hands out everything ready; returns the payload bytes seen so the work is not optimised away.
fn drain(jb: &mut JitterBuffer<16, 160>) -> usize {
    let mut bytes = 0;
    while let Some(entry) = jb.poll_playout() {
        bytes += match entry {
            Playout::Packet { payload, .. } => black_box(payload).len(),
            Playout::Lost { duration, .. } => black_box(duration) as usize,
        };
    }
    bytes
}

fn jitter_buffer(c: &mut Criterion) {
    let mut group = c.benchmark_group("jitter");
    // A hold of at least 20 ms, so that a reordered packet waits for its gap.
    let config = JitterConfig { min_delay: Duration::from_millis(PTIME_MS), ..JitterConfig::default() };

    group.throughput(Throughput::Bytes(PAYLOAD.len() as u64));
    group.bench_function("in_order_push_poll", |b| {
        let mut jb: JitterBuffer<16, 160> = JitterBuffer::new(config, Instant::ZERO);
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let arrival = jb.handle_packet(at(n), meta(n as u16), black_box(&PAYLOAD));
            black_box(arrival);
            drain(&mut jb)
        })
    });

    // Two packets per iteration: n + 1 arrives first and is held, n fills the gap.
    group.throughput(Throughput::Bytes(2 * PAYLOAD.len() as u64));
    group.bench_function("reordered_pair", |b| {
        let mut jb: JitterBuffer<16, 160> = JitterBuffer::new(config, Instant::ZERO);
        let _ = jb.handle_packet(at(0), meta(0), &PAYLOAD);
        let _ = drain(&mut jb);
        let mut n = 1u64;
        b.iter(|| {
            black_box(jb.handle_packet(at(n + 1), meta((n + 1) as u16), black_box(&PAYLOAD)));
            black_box(jb.handle_packet(at(n + 1), meta(n as u16), black_box(&PAYLOAD)));
            n += 2;
            drain(&mut jb)
        })
    });

    // Packet n + 1 never comes: n + 2 waits for the deadline, then a Lost entry and n + 2 leave.
    group.bench_function("lost_packet_with_timeout", |b| {
        let mut jb: JitterBuffer<16, 160> = JitterBuffer::new(config, Instant::ZERO);
        let _ = jb.handle_packet(at(0), meta(0), &PAYLOAD);
        let _ = drain(&mut jb);
        let mut n = 1u64;
        b.iter(|| {
            black_box(jb.handle_packet(at(n), meta(n as u16), black_box(&PAYLOAD)));
            black_box(jb.handle_packet(at(n + 2), meta((n + 2) as u16), black_box(&PAYLOAD)));
            let deadline = jb.poll_timeout().expect("n + 2 is held");
            jb.handle_timeout(deadline);
            n += 3;
            drain(&mut jb)
        })
    });
    group.finish();
}

/// Speech-like 8 kHz material: a 180 Hz voiced tone over low noise.
fn voiced(n: usize) -> i16 {
    let t = n as f64 / 8000.0;
    let noise = ((n.wrapping_mul(2_654_435_761) >> 7) % 200) as f64 - 100.0;
    (6000.0 * (t * 180.0 * std::f64::consts::TAU).sin() + noise) as i16
}

fn concealment(c: &mut Criterion) {
    let mut group = c.benchmark_group("plc");
    group.throughput(Throughput::Bytes(320));
    let mut frames = [[0i16; 160]; 50];
    for (f, frame) in frames.iter_mut().enumerate() {
        for (i, s) in frame.iter_mut().enumerate() {
            *s = voiced(f * 160 + i);
        }
    }
    let primed = || {
        let mut plc: LossConcealer<640> = LossConcealer::new(ConcealerConfig::default());
        for frame in &frames {
            plc.handle_frame(&mut frame.clone());
        }
        plc
    };

    // Deep inside a loss: repetition or comfort noise, no pitch search.
    group.bench_function("conceal_20ms_continued", |b| {
        let mut plc = primed();
        let mut out = [0i16; 160];
        plc.conceal(&mut out);
        b.iter(|| {
            plc.conceal(black_box(&mut out));
            out[0]
        })
    });

    // A fresh loss every time: resumption crossfade and history update of a
    // real frame, then the first concealed frame with its pitch search.
    group.bench_function("resume_then_conceal_20ms_first", |b| {
        let mut plc = primed();
        let mut out = [0i16; 160];
        let mut f = 0;
        b.iter(|| {
            let mut frame = frames[f % frames.len()];
            f += 1;
            plc.handle_frame(black_box(&mut frame));
            plc.conceal(black_box(&mut out));
            out[0]
        })
    });

    group.bench_function("handle_frame_20ms", |b| {
        let mut plc = primed();
        let mut f = 0;
        b.iter(|| {
            let mut frame = frames[f % frames.len()];
            f += 1;
            plc.handle_frame(black_box(&mut frame));
            frame[0]
        })
    });
    group.finish();
}

criterion_group!(benches, jitter_buffer, concealment);
criterion_main!(benches);
