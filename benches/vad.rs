//! VAD cost per 20 ms frame, per mode, on speech-like and noise input, and
//! the talkspurt detector per frame.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use voxproxy_core::time::Instant;
use voxproxy_core::vad::{FRAME_20MS, TalkspurtConfig, TalkspurtDetector, Vad, VadConfig, VadMode};

/// Seconds of audio cycled through, so the detector sees changing input.
const SECONDS: usize = 4;
const RATE: usize = 8_000;

/// Deterministic uniform noise in -1..1 (xorshift).
fn noise(state: &mut u32) -> f32 {
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    (*state as f32 / u32::MAX as f32) * 2.0 - 1.0
}

/// Vowel-like bursts: a 120–180 Hz glottal pulse train through two
/// formant-ish resonances, 300 ms on / 200 ms off, over a faint noise floor.
fn speech_like() -> Vec<i16> {
    let mut state = 0x1234_5678;
    let mut out = Vec::with_capacity(SECONDS * RATE);
    let (mut y1, mut y2, mut z1, mut z2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
    let mut phase = 0.0f32;
    for n in 0..SECONDS * RATE {
        let t = n as f32 / RATE as f32;
        let on = (n % 4_000) < 2_400;
        let f0 = 150.0 + 30.0 * (t * 2.0).sin();
        phase += f0 / RATE as f32;
        let pulse = if phase >= 1.0 {
            phase -= 1.0;
            1.0
        } else {
            0.0
        };
        let excitation = if on { pulse } else { 0.0 };
        // Resonators at about 700 Hz and 1200 Hz.
        let y = excitation + 1.80 * y1 - 0.90 * y2;
        y2 = y1;
        y1 = y;
        let z = y + 1.35 * z1 - 0.88 * z2;
        z2 = z1;
        z1 = z;
        let v = 300.0 * z + 40.0 * noise(&mut state);
        out.push(v.clamp(-32_768.0, 32_767.0) as i16);
    }
    out
}

fn white_noise() -> Vec<i16> {
    let mut state = 0x9e37_79b9;
    (0..SECONDS * RATE).map(|_| (noise(&mut state) * 3_000.0) as i16).collect()
}

fn classify(c: &mut Criterion) {
    let inputs = [("speech", speech_like()), ("noise", white_noise())];
    let mut group = c.benchmark_group("vad/classify_20ms");
    for mode in VadMode::ALL {
        for (name, audio) in &inputs {
            let mut vad = Vad::new(VadConfig { mode });
            let mut frames = audio.chunks_exact(FRAME_20MS).cycle();
            group.bench_function(format!("mode{}/{name}", mode.level()), |b| {
                b.iter(|| {
                    let frame = frames.next().unwrap_or(&[0; FRAME_20MS]);
                    black_box(vad.classify(black_box(frame)))
                });
            });
        }
    }
    group.finish();
}

fn talkspurt(c: &mut Criterion) {
    let mut spurts = TalkspurtDetector::new(TalkspurtConfig::default(), Instant::ZERO)
        .expect("the default config is valid");
    let mut now = Instant::ZERO;
    let mut n = 0u32;
    c.bench_function("vad/talkspurt_frame", |b| {
        b.iter(|| {
            // One second of speech, one of silence, alternating.
            let speech = (n / 50).is_multiple_of(2);
            n = n.wrapping_add(1);
            now += Duration::from_millis(20);
            spurts.handle_frame(black_box(now), black_box(speech));
            while let Some(event) = spurts.poll_event() {
                black_box(event);
            }
        });
    });
}

criterion_group!(benches, classify, talkspurt);
criterion_main!(benches);
