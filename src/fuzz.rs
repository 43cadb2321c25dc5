//! Fuzz entry points: one function per cargo-fuzz target, each taking the raw
//! fuzzer input. They must never panic on any input; where a round trip is
//! possible they assert it, so a finding is a real bug and not just a crash.
//!
//! The targets in `fuzz/fuzz_targets/` are one-line wrappers over these, and
//! `tests/fuzz_corpus.rs` replays `fuzz/corpus/<target>/*` through them.

use voxproxy_adapters::sdp::SessionDescription;

/// A fuzz entry point: takes the fuzzer's bytes, panics only on a real bug.
pub type Entry = fn(&[u8]);

/// Every fuzz target: its name (the directory under `fuzz/corpus/`) and entry.
pub const TARGETS: &[(&str, Entry)] = &[("sdp_parse", sdp_parse)];

/// Parses arbitrary bytes as an SDP answer. Whatever parses must build, and
/// the built text must parse back to the same description.
pub fn sdp_parse(data: &[u8]) {
    let Ok(parsed) = SessionDescription::parse(data) else { return };
    let built = match parsed.build() {
        Ok(built) => built,
        Err(error) => panic!("parsed description does not build: {error}\n{parsed:?}"),
    };
    match SessionDescription::parse(built.as_bytes()) {
        Ok(again) => assert_eq!(again, parsed, "build → parse changed the description:\n{built}"),
        Err(error) => panic!("built description does not parse: {error}\n{built}"),
    }
}
