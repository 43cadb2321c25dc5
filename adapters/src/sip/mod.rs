//! SIP signalling (RFC 3261), sans-IO: the message model and a strict
//! bounded parser, digest authentication, transactions, dialogs and the
//! user agents a call leg needs. Nothing here reads a clock or touches a
//! socket: the proxy hands in datagrams, stream bytes and the time, and
//! sends what it polls out.
//!
//! Why hand-written rather than a crate (rsip was the candidate; its
//! bounds were not evaluated in depth): the subset a call leg needs is small; this one
//! enforces the limits below before allocating, keeps compact forms and
//! folding under test, and is fuzzed with the rest of voxproxy. A crate
//! would still need those bounds wrapped around it.

pub mod auth;
pub mod counters;
pub mod dialog;
mod error;
pub mod leg;
pub mod message;
pub mod server;
pub mod transaction;
pub mod uri;

pub use counters::SipCounters;
pub use error::SipError;
pub use leg::{CallInfo, EndReason, LegEvent, LegState, Media, MediaOffer, SipLeg, SipLegConfig};
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

/// Tags, branches, Call-IDs and cnonces (SplitMix64). The caller seeds it
/// from the OS per leg, so values are unpredictable across legs; within a
/// leg they only need to be unique (RFC 3261 §19.3 asks for 32 random bits
/// per tag, which 64-bit tokens exceed).
#[derive(Debug, Clone)]
pub(crate) struct Ids(u64);

impl Ids {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 16 lower-case hex digits.
    pub(crate) fn token(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }
}
