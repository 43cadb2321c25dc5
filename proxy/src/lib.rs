//! # voxproxy
//!
//! The voxproxy binary's library half: the command line, the runtime and
//! sockets ([`runtime`]), the HTTP and WebSocket server with its control API
//! ([`server`]), config, metrics, call records, the Twilio simulator
//! ([`sim`]) and the RTP echo backend ([`echo`]). It moves bytes between sockets and the sans-IO
//! pieces of `voxproxy-core` and `voxproxy-adapters` and makes no telephony
//! decisions of its own.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod build;
pub mod cdr;
pub mod cli;
pub mod config;
pub mod echo;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod ratelimit;
pub mod recording;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod store;
pub mod tls;
pub mod wav;
