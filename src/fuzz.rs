//! Fuzz entry points: one function per cargo-fuzz target, each taking the raw
//! fuzzer input. They must never panic on any input; where a round trip is
//! possible they assert it, so a finding is a real bug and not just a crash.
//!
//! The targets in `fuzz/fuzz_targets/` are one-line wrappers over these, and
//! `tests/fuzz_corpus.rs` replays `fuzz/corpus/<target>/*` through them.

mod jitter;

pub use jitter::jitter_ops;

/// A fuzz entry point: takes the fuzzer's bytes, panics only on a real bug.
pub type Entry = fn(&[u8]);

/// Every fuzz target: its name (the directory under `fuzz/corpus/`) and entry.
pub const TARGETS: &[(&str, Entry)] = &[("jitter_ops", jitter_ops)];
