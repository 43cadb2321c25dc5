//! Test audio: the repository's recorded caller, tones, G.711 helpers,
//! WAV files for ffmpeg, and alignment by cross-correlation.

use std::path::Path;

use voxproxy_core::g711;

/// Bytes of one 20 ms μ-law frame.
pub const FRAME: usize = 160;

/// `examples/caller.wav` (μ-law, 8 kHz, mono): the μ-law bytes of its data chunk.
pub fn caller_mulaw() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/caller.wav");
    let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(file.len() > 12 && &file[..4] == b"RIFF" && &file[8..12] == b"WAVE", "caller.wav is a WAV file");
    let mut at = 12;
    let mut format = None;
    while at + 8 <= file.len() {
        let id = &file[at..at + 4];
        let size = u32::from_le_bytes(file[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let body = &file[at + 8..(at + 8 + size).min(file.len())];
        if id == b"fmt " {
            let tag = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes(body[4..8].try_into().expect("4 bytes"));
            format = Some((tag, channels, rate));
        } else if id == b"data" {
            assert_eq!(format, Some((7, 1, 8000)), "caller.wav is μ-law (tag 7), mono, 8 kHz");
            return body.to_vec();
        }
        at += 8 + size + (size & 1);
    }
    panic!("caller.wav has no data chunk");
}

/// `seconds` of the recorded caller from `from` seconds on, whole 20 ms frames.
/// The recording speaks from 0.3 s to 1.6 s, 1.8 s to 2.9 s and 3.2 s to 4.1 s.
pub fn caller_speech(from: f64, seconds: f64) -> Vec<u8> {
    let all = caller_mulaw();
    let start = (from * 8000.0) as usize;
    let len = (seconds * 50.0) as usize * FRAME;
    all[start..start + len].to_vec()
}

/// μ-law → linear, with the codec under the proxy (for expected values only).
pub fn decode(mulaw: &[u8]) -> Vec<i16> {
    mulaw.iter().map(|&c| g711::ulaw_decode(c)).collect()
}

/// Linear → μ-law.
pub fn encode(pcm: &[i16]) -> Vec<u8> {
    pcm.iter().map(|&s| g711::ulaw_encode(s)).collect()
}

/// A sum of tones at `rate`, `n` samples.
pub fn tones(freqs: &[f64], amplitude: f64, rate: f64, n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let v: f64 = freqs.iter().map(|f| (2.0 * std::f64::consts::PI * f * t).sin()).sum();
            (amplitude * v / freqs.len() as f64).round() as i16
        })
        .collect()
}

/// 50 frames of μ-law in which every code appears: (160·i + j)·7 mod 256.
pub fn all_codes_frames(frames: usize) -> Vec<Vec<u8>> {
    (0..frames).map(|i| (0..FRAME).map(|j| (((i * FRAME + j) * 7) % 256) as u8).collect()).collect()
}

/// Normalised cross-correlation of `a[i]` with `b[i + lag]` over their overlap.
pub fn correlation(a: &[i16], b: &[i16], lag: isize) -> f64 {
    let (a, b) = if lag >= 0 {
        (a, b.get(lag as usize..).unwrap_or(&[]))
    } else {
        (a.get(lag.unsigned_abs()..).unwrap_or(&[]), b)
    };
    let n = a.len().min(b.len());
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a[..n].iter().zip(&b[..n]) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa * bb).sqrt() }
}

/// The lag in `-max_lag..=max_lag` where `b` best matches `a`, and that correlation.
pub fn align(a: &[i16], b: &[i16], max_lag: usize) -> (isize, f64) {
    let max_lag = max_lag as isize;
    (-max_lag..=max_lag)
        .map(|lag| (lag, correlation(a, b, lag)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .expect("at least one lag")
}

/// Writes 16-bit mono PCM as a WAV file.
pub fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Big-endian 16-bit samples (RFC 3551 L16).
pub fn read_l16(payload: &[u8]) -> Vec<i16> {
    assert_eq!(payload.len() % 2, 0, "L16 payloads hold whole samples");
    payload.chunks_exact(2).map(|b| i16::from_be_bytes([b[0], b[1]])).collect()
}

/// Power of `samples` at `freq` (Goertzel) as a fraction of their total power.
pub fn tone_fraction(samples: &[i16], freq: f64, rate: f64) -> f64 {
    let n = samples.len() as f64;
    let w = 2.0 * std::f64::consts::PI * freq / rate;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    let mut total = 0.0f64;
    for &x in samples {
        let x = f64::from(x);
        total += x * x;
        let s0 = x + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    // A pure tone of amplitude A over n samples: power ≈ (A·n/2)², total ≈ A²·n/2.
    if total == 0.0 { 0.0 } else { power * 2.0 / (n * total) }
}

/// How each audible 20 ms frame of `said` survives in `heard`, over a path
/// that delays the audio by any number of samples (a resampler's filter,
/// 23 samples through L16 at 16 kHz and back) and may insert or drop whole
/// packets (a jitter buffer's waits and skips): each frame is looked for
/// within `drift` samples of where the previous frame places it, and its
/// best correlation there is its score. Quiet frames (no sample above 256)
/// are not scored: they carry too little to correlate.
pub fn followed(said: &[i16], heard: &[i16], drift: usize) -> Vec<f64> {
    let audible = |frame: &&[i16]| frame.iter().any(|s| s.unsigned_abs() > 256);
    let Some(last) = heard.len().checked_sub(FRAME) else {
        return said.chunks_exact(FRAME).filter(audible).map(|_| 0.0).collect();
    };
    let mut previous: Option<(usize, usize)> = None;
    let mut scores = Vec::new();
    for (i, frame) in said.chunks_exact(FRAME).enumerate() {
        if !audible(&frame) {
            continue;
        }
        let range = match previous {
            None => 0..=last,
            Some((j, at)) => {
                let expect = at + (i - j) * FRAME;
                expect.saturating_sub(drift)..=(expect + drift).min(last)
            }
        };
        let best = range
            .map(|at| (at, correlation(frame, &heard[at..at + FRAME], 0)))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let (at, score) = best.unwrap_or((last, 0.0));
        previous = Some((i, at));
        scores.push(score);
    }
    scores
}
