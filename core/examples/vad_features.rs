//! Dumps the VAD's per-10 ms features for retraining its model.
//!
//! Reads raw 8 kHz mono little-endian PCM16 on stdin and writes, for every
//! 10 ms block, `FEATURES` little-endian `f32` values (named by
//! `voxproxy_core::vad::FEATURE_NAMES`) followed by the model's score to
//! stdout. `vad-eval/train.py` drives it:
//!
//! ```text
//! cargo run --release -p voxproxy-core --example vad_features < speech.s16 > speech.f32
//! ```

use std::io::{self, Read, Write};
use std::process::ExitCode;

use voxproxy_core::vad::{FRAME_10MS, Vad, VadConfig};

fn main() -> ExitCode {
    let mut raw = Vec::new();
    if let Err(e) = io::stdin().lock().read_to_end(&mut raw) {
        eprintln!("vad_features: cannot read stdin: {e}");
        return ExitCode::FAILURE;
    }
    let samples: Vec<i16> = raw.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
    let mut vad = Vad::new(VadConfig::default());
    let mut out = Vec::with_capacity(samples.len() / FRAME_10MS * (vad.features().len() + 1) * 4);
    for frame in samples.chunks_exact(FRAME_10MS) {
        if let Err(e) = vad.classify(frame) {
            eprintln!("vad_features: {e}");
            return ExitCode::FAILURE;
        }
        for v in vad.features().iter().chain([vad.score()].iter()) {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    if let Err(e) = io::stdout().lock().write_all(&out) {
        eprintln!("vad_features: cannot write stdout: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
