//! # voxproxy-suite
//!
//! Not a library for users: the root package of the workspace. It owns the
//! end-to-end tests in `tests/`, the criterion benches in `benches/`, and
//! [`fixtures`] the benches and tests share, and [`fuzz`], the entry points that the cargo-fuzz targets in `fuzz/` wrap.
//! Keeping the entry points here lets `tests/fuzz_corpus.rs` replay every
//! seed corpus on stable Rust through exactly the code the fuzzer runs.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod fixtures;
pub mod fuzz;
