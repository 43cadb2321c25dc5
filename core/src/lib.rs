//! # voxproxy-core
//!
//! The telephony media core of voxproxy: `#![no_std]`, no allocation, no
//! I/O, no clock. Everything here is either a pure function over caller-owned
//! buffers or a sans-IO state machine.
//!
//! ## The call contract
//!
//! Every stateful piece has the same outline, so a reader who has seen one
//! has seen them all:
//!
//! - `new(config, now)` creates it; time is always an argument ([`time::Instant`]).
//! - `handle_*(now, input)` feeds it one input: a packet, a frame, traffic.
//! - `poll_*()` returns the next output (`Option<_>`); call it until it
//!   returns `None` after **every** input, or outputs pile up.
//! - `poll_timeout()` says when it next wants `handle_timeout(now)`; `None`
//!   means "not until the next input".
//!
//! Buffers belong to the caller: encoders and builders write into `&mut [u8]`
//! or `&mut [i16]` and return how much they wrote.
//!
//! ```
//! use core::time::Duration;
//! use voxproxy_core::keepalive::{Keepalive, KeepaliveConfig, KeepaliveEvent};
//! use voxproxy_core::time::Instant;
//!
//! // A virtual clock: the caller decides what "now" is.
//! let mut now = Instant::ZERO;
//! let mut ka = Keepalive::new(KeepaliveConfig::default(), now);
//! let mut pings = 0;
//! while let Some(deadline) = ka.poll_timeout() {
//!     now = deadline;
//!     ka.handle_timeout(now);
//!     while let Some(event) = ka.poll_event() {
//!         match event {
//!             KeepaliveEvent::SendKeepalive => { pings += 1; ka.handle_sent(now); }
//!             KeepaliveEvent::IdleTimeout | KeepaliveEvent::Unresponsive => {}
//!         }
//!     }
//! }
//! assert!(ka.is_dead());
//! assert!(pings > 0);
//! assert!(now - Instant::ZERO <= Duration::from_secs(30));
//! ```
//!
//! ## Features
//!
//! - `std` (off by default): `std::error::Error` impls for the error types.
//!   Nothing else changes; the crate never allocates either way.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod g711;
pub mod interarrival;
pub mod jitter;
pub mod keepalive;
pub mod plc;
pub mod resample;
pub mod resample3;
pub mod rtcp;
pub mod rtp;
pub mod seq;
pub mod telephone_event;
pub mod time;
pub mod vad;

pub use time::Instant;
