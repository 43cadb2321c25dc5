//! # voxproxy
//!
//! The voxproxy binary's library half: the command line, and (as they land)
//! the runtime, sockets, HTTP and WebSocket server, config, metrics, control
//! API and call records. It moves bytes between sockets and the sans-IO
//! pieces of `voxproxy-core` and `voxproxy-adapters` and makes no telephony
//! decisions of its own.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cdr;
pub mod cli;
pub mod config;
pub mod echo;
pub mod logging;
pub mod metrics;
pub mod ratelimit;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod tls;
pub mod wav;
