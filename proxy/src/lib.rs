//! # voxproxy
//!
//! The voxproxy daemon's library: the runtime and sockets ([`runtime`]), the
//! HTTP and WebSocket server with its control API ([`server`]), config,
//! metrics and call records. It moves bytes between sockets and the sans-IO
//! pieces of `voxproxy-core` and `voxproxy-adapters` and makes no telephony
//! decisions of its own. The command line is the binary's (`src/cli/`); the
//! Twilio simulator and the echo backends it drives are `voxproxy-rig`'s,
//! which this library does not depend on.
#![deny(unsafe_code)] // allowed in `runtime::ring` only (the io_uring driver)
#![deny(missing_docs)]

pub mod build;
pub mod capture;
pub mod cdr;
pub mod config;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod otel;
pub mod ratelimit;
pub mod recording;
pub mod runtime;
pub mod server;
pub mod store;
pub mod tls;
