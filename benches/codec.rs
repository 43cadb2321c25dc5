//! G.711 and resampler throughput.
//!
//! Two buffer sizes: one 20 ms frame at 8 kHz (160 samples, what a call
//! converts per packet) and 64 KiB of input (the bulk rate, which the
//! targets in docs/ARCHITECTURE.md are stated in). Throughput is in bytes of *input*:
//! μ-law/A-law bytes for decode and transcode, PCM bytes (2 per sample) for
//! encode. The resampler is timed per 20 ms frame (ns/frame).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use voxproxy_core::g711::{self, Law};
use voxproxy_core::resample::{Downsampler, Upsampler};
use voxproxy_core::resample3::{Downsampler3, Upsampler3};

const FRAME: usize = 160;
const BULK_BYTES: usize = 64 * 1024;

/// Speech-like PCM: a few mixed tones at telephone levels, so the encoder
/// sees every segment rather than one repeated value.
fn pcm(samples: usize) -> Vec<i16> {
    (0..samples)
        .map(|n| {
            let t = n as f64 / 8000.0;
            let x = 9000.0 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()
                + 4000.0 * (2.0 * std::f64::consts::PI * 1230.0 * t).sin()
                + 600.0 * (2.0 * std::f64::consts::PI * 3100.0 * t).sin();
            x as i16
        })
        .collect()
}

fn codes(law: Law, samples: usize) -> Vec<u8> {
    let pcm = pcm(samples);
    let mut out = vec![0u8; samples];
    g711::encode(law, &pcm, &mut out).expect("sized to fit");
    out
}

fn laws() -> [(Law, &'static str); 2] {
    [(Law::Mu, "mu"), (Law::A, "a")]
}

fn g711_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("g711_decode");
    for (law, name) in laws() {
        for samples in [FRAME, BULK_BYTES] {
            let input = codes(law, samples);
            let mut out = vec![0i16; samples];
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function(BenchmarkId::new(name, samples), |b| {
                b.iter(|| g711::decode(law, black_box(&input), black_box(&mut out)))
            });
        }
    }
    group.finish();
}

fn g711_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("g711_encode");
    for (law, name) in laws() {
        for samples in [FRAME, BULK_BYTES / 2] {
            let input = pcm(samples);
            let mut out = vec![0u8; samples];
            group.throughput(Throughput::Bytes(2 * input.len() as u64));
            group.bench_function(BenchmarkId::new(name, samples), |b| {
                b.iter(|| g711::encode(law, black_box(&input), black_box(&mut out)))
            });
        }
    }
    group.finish();
}

fn g711_transcode(c: &mut Criterion) {
    let mut group = c.benchmark_group("g711_transcode");
    for (from, to, name) in [(Law::Mu, Law::A, "mu_to_a"), (Law::A, Law::Mu, "a_to_mu")] {
        for samples in [FRAME, BULK_BYTES] {
            let input = codes(from, samples);
            let mut out = vec![0u8; samples];
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function(BenchmarkId::new(name, samples), |b| {
                b.iter(|| g711::transcode(from, to, black_box(&input), black_box(&mut out)))
            });
        }
    }
    group.finish();
}

/// One 20 ms frame per iteration: 160 samples up to 320 (or 480), or 320
/// (or 480) down to 160.
fn resample(c: &mut Criterion) {
    let mut group = c.benchmark_group("resample_20ms_frame");
    let narrow = pcm(FRAME);
    let mut up = Upsampler::new();
    let mut wide = vec![0i16; 2 * FRAME];
    group
        .bench_function("up_8k_to_16k", |b| b.iter(|| up.upsample(black_box(&narrow), black_box(&mut wide))));
    let mut down = Downsampler::new();
    let mut back = vec![0i16; FRAME];
    let wide = pcm(2 * FRAME);
    group.bench_function("down_16k_to_8k", |b| {
        b.iter(|| down.downsample(black_box(&wide), black_box(&mut back)))
    });
    let mut up3 = Upsampler3::new();
    let mut wide3 = vec![0i16; 3 * FRAME];
    group.bench_function("up_8k_to_24k", |b| {
        b.iter(|| up3.upsample(black_box(&narrow), black_box(&mut wide3)))
    });
    let mut down3 = Downsampler3::new();
    let wide3 = pcm(3 * FRAME);
    group.bench_function("down_24k_to_8k", |b| {
        b.iter(|| down3.downsample(black_box(&wide3), black_box(&mut back)))
    });
    group.finish();
}

criterion_group!(benches, g711_decode, g711_encode, g711_transcode, resample);
criterion_main!(benches);
