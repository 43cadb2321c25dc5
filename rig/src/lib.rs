//! # voxproxy-rig
//!
//! The test rig around voxproxy, a product of its own beside the daemon:
//!
//! - [`sim`]: a Twilio simulator and load generator. N concurrent calls post
//!   the signed voice webhook, follow the TwiML, open the signed Media Streams
//!   WebSocket and send paced μ-law audio; every frame that comes back is
//!   matched with its send time (round trip, missing, late, reordered), and
//!   the report can include the proxy's CPU and memory ([`sim::cost`]).
//! - [`echo`]: an RTP echo backend (symmetric RTP, optional delay, jitter and
//!   loss), the voice stack the simulator's calls talk to.
//! - [`ws_echo`]: a WebSocket bot echo speaking Twilio's Media Streams
//!   protocol, for the proxy's WebSocket leg.
//!
//! `voxproxy sim`, `voxproxy echo` and `voxproxy demo` are this crate behind
//! the `voxproxy` command line; the daemon's library does not depend on it.
//!
//! ```no_run
//! use std::time::Duration;
//! use voxproxy_rig::echo::{EchoConfig, EchoServer};
//! use voxproxy_rig::sim::{self, SimConfig};
//!
//! // An RTP echo for the proxy's backend, then 10 calls against the proxy.
//! let echo = EchoServer::spawn(&EchoConfig::default())?;
//! println!("point the proxy's backend at {}", echo.local_addr());
//! let mut config = SimConfig::new("http://127.0.0.1:8080");
//! config.calls = 10;
//! config.media = Duration::from_secs(5);
//! let report = sim::run_blocking(config)?;
//! print!("{}", report.render_table());
//! echo.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)] // allowed in `mmsg` only (recvmmsg and sendmmsg for the echo)
#![deny(missing_docs)]

pub mod echo;
mod mmsg;
pub mod sim;
pub mod ws_echo;
