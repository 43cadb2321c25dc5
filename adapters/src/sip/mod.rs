//! SIP signalling (RFC 3261), sans-IO: the message model and a strict
//! bounded parser, digest authentication, transactions, dialogs and the
//! user agents a call leg needs. Nothing here reads a clock or touches a
//! socket: the proxy hands in datagrams, stream bytes and the time, and
//! sends what it polls out.
//!
//! Why hand-written rather than a crate: the SIP parser crates on crates.io
//! (rsip, sip-rs, …) build an owned tree of every header with many small
//! allocations, accept unbounded input and are lightly maintained; the
//! subset a call leg needs is small, and this one is bounded
//! ([`MAX_MESSAGE_BYTES`], [`MAX_HEADERS`], [`MAX_LINE_BYTES`]) and fuzzed.

mod error;
pub mod auth;
pub mod message;
pub mod transaction;
pub mod uri;

pub use error::SipError;
pub use message::{Header, Message, Method, StartLine, StreamFramer};
pub use transaction::{Timers, Transmit, Transport};
pub use uri::{Scheme, SipUri};

/// Messages longer than this are refused (a UDP datagram cannot exceed
/// 65,507 bytes; real INVITEs are under 4 KiB).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Most header lines in one message.
pub const MAX_HEADERS: usize = 64;
/// Longest header line (after unfolding).
pub const MAX_LINE_BYTES: usize = 2048;
