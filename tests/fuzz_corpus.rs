//! Replays every fuzz target's committed seed corpus through the same entry
//! point the fuzzer runs, on stable Rust, as part of `cargo test`.

use std::fs;
use std::path::{Path, PathBuf};

use voxproxy_suite::fuzz::TARGETS;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn every_seed_corpus_replays_without_a_finding() {
    let mut replayed = 0usize;
    for (name, entry) in TARGETS {
        let dir = root().join("fuzz/corpus").join(name);
        let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fuzz target {name} has no seed corpus at {}: {e}", dir.display()))
            .map(|entry| entry.expect("readable corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        inputs.sort();
        assert!(!inputs.is_empty(), "seed corpus of {name} is empty");
        for input in inputs {
            let data = fs::read(&input).expect("readable seed");
            // A panic here names the seed that found it.
            eprintln!("{name}: {}", input.display());
            entry(&data);
            replayed += 1;
        }
    }
    eprintln!("replayed {replayed} seeds over {} targets", TARGETS.len());
}

/// Every entry point has a cargo-fuzz target that wraps it, and every
/// cargo-fuzz target wraps a registered entry point, so the fuzzer and this
/// replay can never drift apart.
#[test]
fn fuzz_targets_and_entry_points_match() {
    let dir = root().join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().expect("file name").to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut registered: Vec<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    registered.sort();
    assert_eq!(on_disk, registered);
    let manifest = fs::read_to_string(root().join("fuzz/Cargo.toml")).expect("fuzz/Cargo.toml");
    for name in &registered {
        let body = fs::read_to_string(dir.join(format!("{name}.rs"))).expect("target source");
        assert!(
            body.contains(&format!("voxproxy_suite::fuzz::{name}(")),
            "{name}.rs must call its entry point"
        );
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml lacks a [[bin]] for {name}"
        );
    }
}
