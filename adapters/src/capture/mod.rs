//! Capture and replay of one call's state machine (docs/capture.md).
//!
//! A capture is everything the call's sans-IO machines were handed — each
//! Twilio WebSocket message as received, each backend datagram with its
//! source, each SIP message, each timer firing, each with its virtual time
//! — and a digest of everything they produced, in the order the proxy
//! polled it. [`replay`] rebuilds the same machines from the file's header,
//! feeds them the same inputs on the same virtual clock and checks every
//! output against its digest, so a call that sounded wrong can be run
//! again, bit for bit, away from production.
//!
//! The three parts:
//!
//! * [`Encoder`] appends records to a buffer the caller owns and hands off
//!   (to the proxy's writer thread), within a byte budget; secrets are
//!   redacted before they reach the buffer ([`redact`]).
//! * [`Reader`] walks a file held in memory and yields borrowed
//!   [`Record`]s, every length bounded, every defect a [`CaptureError`].
//! * [`replay`] drives a fresh [`CallBridge`](crate::bridge::CallBridge)
//!   (and its [`SipBackend`](crate::bridge::SipBackend) for a SIP call).

mod encode;
mod format;
mod header;
mod reader;
pub mod redact;
mod replay;
#[cfg(test)]
mod tests;

pub use encode::Encoder;
pub use format::{
    BotStart, CaptureHeader, FORMAT_VERSION, LegKind, MAGIC, MAX_RECORD_BYTES, OLDEST_VERSION, OutputRecord,
    SipStart, Truncation, digest,
};
pub use reader::{CaptureError, Reader, Record};
pub use replay::{Difference, ReplayReport, Timeline, TimelineEntry, replay};
