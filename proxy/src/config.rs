//! Layered, validated configuration of `voxproxy serve`.
//!
//! # How a setting gets its value
//!
//! Four layers, each overriding the one before it, key by key:
//!
//! 1. the built-in default (every key has one that works on one machine, so
//!    `voxproxy serve` with nothing at all starts on 127.0.0.1);
//! 2. the TOML file named by `--config FILE`;
//! 3. `VOXPROXY_*` environment variables: `VOXPROXY_` followed by the key with
//!    dots turned into underscores and letters upper-cased, so `rtp.backend`
//!    is `VOXPROXY_RTP_BACKEND` and `server.tls.cert` is
//!    `VOXPROXY_SERVER_TLS_CERT`. Values are written as they would be in the
//!    file but without quotes (`VOXPROXY_VAD_BARGE_IN=false`,
//!    `VOXPROXY_KEEPALIVE_PING_INTERVAL=5s`); booleans also accept `1`/`0`,
//!    `yes`/`no` and `on`/`off`. An empty variable counts as
//!    unset. A `VOXPROXY_` variable that names no setting is an error, so a
//!    typo cannot silently leave a default in place;
//! 4. the `serve` flags ([`ServeArgs`]), which exist for `server.listen`,
//!    `server.public_url`, `rtp.backend`, `rtp.ports`, `server.workers` and
//!    `server.io`.
//!
//! Secrets come only from the environment, never from the file or a flag:
//! `TWILIO_AUTH_TOKEN`, `VOXPROXY_ADMIN_TOKEN`, and `TWILIO_ACCOUNT_SID`
//! (which, not being secret, may also be written as `twilio.account_sid` in
//! the file or `VOXPROXY_TWILIO_ACCOUNT_SID`; if both variables are set they
//! must agree). Secrets are held in [`Secret`], whose `Debug` and `Display`
//! never show the value.
//!
//! # Keys
//!
//! | key | type | default | accepted |
//! | --- | --- | --- | --- |
//! | `server.listen` | string | `"127.0.0.1:8080"` | IP address and port |
//! | `server.public_url` | string | `"http://127.0.0.1:8080"` | `http://` or `https://` URL Twilio reaches this proxy at, without query or fragment; a trailing `/` is dropped |
//! | `server.workers` | integer | usable CPUs (at most 1024) | 1 to 1024 |
//! | `server.io` | string | `"auto"` | `auto`, `uring`, `epoll` |
//! | `server.tls.cert`, `server.tls.key` | string | none (plain HTTP) | paths of readable files, both or neither |
//! | `twilio.account_sid` | string | none | `AC` and 32 hex digits |
//! | `twilio.api_base` | string | `"https://api.twilio.com"` | `http://` or `https://` URL without query or fragment |
//! | `twilio.validate_signatures` | boolean | `true` | |
//! | `twilio.stream_parameters` | string | `""` | `"Name=value,Name2=value2"`: extra `<Parameter>`s on every stream (names of letters, digits, `_` and `-`; values without `,`) |
//! | `rtp.bind` | string | `"127.0.0.1"` | IP address the RTP sockets bind to |
//! | `rtp.ports` | string | `"40000-44999"` | `"LO-HI"`, 1024 to 65535; one port per call, so at least `limits.max_calls` ports |
//! | `rtp.allow_privileged_ports` | boolean | `false` | `true` lets `rtp.ports` go below 1024 |
//! | `rtp.backend` | string | `"127.0.0.1:4000"` | IP address and port of the voice stack; port 0 learns each call's port from the backend's first packet (symmetric RTP, e.g. Asterisk external media) |
//! | `rtp.codec` | string | `"pcmu"` | `pcmu`, `pcma`, `l16-8k`, `l16-16k` |
//! | `rtp.ptime_ms` | integer | `20` | 10, 20, 30, 40 |
//! | `rtp.dtmf_payload_type` | integer | `101` | 0 to 127 but not 72 to 76 |
//! | `rtp.payload_type` | integer | the codec's: PCMU 0, PCMA 8, L16 96 | 0 to 127 but not 72 to 76, not the DTMF type |
//! | `jitter.max_delay_ms` | integer | `60` | 0 to 1000 |
//! | `vad.mode` | integer | `2` | 0 (least aggressive) to 3 |
//! | `vad.barge_in` | boolean | `true` | |
//! | `keepalive.ping_interval` | duration | `"10s"` | more than 0, at most 1 h, shorter than `idle_timeout` |
//! | `keepalive.idle_timeout` | duration | `"30s"` | more than 0, at most 24 h |
//! | `limits.max_calls` | integer | `2000` | 1 to 1 000 000 |
//! | `limits.max_frame_bytes` | integer | `16384` | 1024 to 16 MiB: largest WebSocket message |
//! | `limits.webhook_rate_per_ip` | integer | `20` | webhook requests per second per client IP, 0 = no limit |
//! | `limits.max_body_bytes` | integer | `65536` | 1024 to 16 MiB: largest HTTP request body |
//! | `cdr.path` | string | `"voxproxy-cdr.jsonl"` (working directory) | file path, not a directory |
//! | `drain.timeout` | duration | `"5s"` | 0 to 1 h |
//! | `log.format` | string | `"text"` | `text` (human-readable lines) or `json` (one JSON object per line) |
//! | `log.level` | string | `"info"` | a tracing filter such as `info`, `warn`, `voxproxy=debug` |
//!
//! Durations are strings of one or more `<integer><unit>` parts with the units
//! `h`, `m`, `s` and `ms`, largest first and each at most once: `"250ms"`,
//! `"5s"`, `"1m30s"`, `"1h"`, `"2s500ms"`. No fractions, signs or spaces; see
//! [`parse_duration`].
//!
//! # Validation
//!
//! [`Config::load`] checks every key and the keys that depend on each other,
//! and stops at the first problem with a [`ConfigError`] whose one-sentence
//! `Display` names the key as written in the file, the bad value, where that
//! value came from, and what is expected, for example
//! `rtp.ports = "5000-4000" (from VOXPROXY_RTP_PORTS): the low port must not
//! exceed the high port`. An unknown key in the file is an error naming the
//! key. The only file system access is opening the TLS certificate and key to
//! make sure they can be read; `cdr.path` is opened by the call-record writer
//! when the server starts.
//!
//! ```
//! use std::path::Path;
//! use std::time::Duration;
//! use voxproxy::config::{Config, ServeArgs};
//!
//! let file = "[cdr]\npath = \"/var/lib/voxproxy/cdr.jsonl\"\n[drain]\ntimeout = \"5s\"\n";
//! let args = ServeArgs { listen: Some("127.0.0.1:9000".into()), ..ServeArgs::default() };
//! let env = [("VOXPROXY_RTP_PORTS", "50000-50099"), ("TWILIO_AUTH_TOKEN", "0123456789abcdef")];
//! let config = Config::from_sources(Some((Path::new("voxproxy.toml"), file)), &args, env)?;
//!
//! assert_eq!(config.server.listen.port(), 9000); // from the flag
//! assert_eq!(config.rtp.ports.to_string(), "50000-50099"); // from the environment
//! assert_eq!(config.drain.timeout, Duration::from_secs(5)); // from the file
//! assert_eq!(config.vad.mode, 2); // built-in default
//! assert!(!format!("{config:?}").contains("0123456789abcdef")); // secrets stay hidden
//! # Ok::<(), voxproxy::config::ConfigError>(())
//! ```

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use voxproxy_adapters::url::{Scheme, Url};

// ---------------------------------------------------------------------------
// Public result types
// ---------------------------------------------------------------------------

/// The validated settings of `voxproxy serve`. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Config {
    /// `[server]`: the HTTP and WebSocket listener and the worker threads.
    pub server: ServerSettings,
    /// `[twilio]`: the Twilio account and how its requests are checked.
    pub twilio: TwilioSettings,
    /// `[rtp]`: the media leg towards the voice stack.
    pub rtp: RtpSettings,
    /// `[jitter]`: the jitter buffer on audio from the voice stack.
    pub jitter: JitterSettings,
    /// `[vad]`: voice activity detection on the caller's audio.
    pub vad: VadSettings,
    /// `[keepalive]`: WebSocket pings and idle timeouts.
    pub keepalive: KeepaliveSettings,
    /// `[limits]`: bounds on load and on message sizes.
    pub limits: Limits,
    /// `[cdr]`: call records.
    pub cdr: CdrSettings,
    /// `[log]`: structured logs on stderr.
    pub log: LogSettings,
    /// `[drain]`: graceful shutdown.
    pub drain: DrainSettings,
    /// Secrets, read only from the environment.
    pub secrets: Secrets,
}

/// `[server]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSettings {
    /// `server.listen`: address of the HTTP and WebSocket listener.
    pub listen: SocketAddr,
    /// `server.public_url`: the base URL Twilio reaches this proxy at, scheme
    /// and host lower-case and without a trailing `/` (so `{public_url}/path`
    /// formats a URL); webhooks and the media stream URL are built from it.
    pub public_url: Url,
    /// `server.workers`: number of worker threads, 1 to 1024.
    pub workers: NonZeroU16,
    /// `server.io`: which I/O backend the workers use.
    pub io: IoMode,
    /// `server.tls`: certificate and key when the listener speaks TLS itself.
    pub tls: Option<TlsFiles>,
}

/// Which I/O backend the worker runtimes use (`server.io`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IoMode {
    /// Probe io_uring at start and fall back to epoll, saying why.
    Auto,
    /// io_uring; starting fails if the kernel refuses it.
    Uring,
    /// A plain epoll-based runtime.
    Epoll,
}

impl IoMode {
    /// The spelling used in the file, the environment and `--io`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::Uring => "uring",
            IoMode::Epoll => "epoll",
        }
    }
}

impl fmt::Display for IoMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The listener's TLS certificate chain and private key (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `server.tls.cert`.
    pub cert: PathBuf,
    /// `server.tls.key`.
    pub key: PathBuf,
}

/// `[twilio]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TwilioSettings {
    /// `twilio.account_sid` or `TWILIO_ACCOUNT_SID`: needed to place calls.
    pub account_sid: Option<String>,
    /// `twilio.api_base`: base URL of the REST API, without a trailing `/`.
    pub api_base: Url,
    /// `twilio.validate_signatures`: whether Twilio's requests must carry a
    /// valid `X-Twilio-Signature`.
    pub validate_signatures: bool,
    /// `twilio.stream_parameters`: extra `<Parameter>`s the voice webhook's
    /// TwiML puts on every stream, after `CallSid`, `From` and `To`.
    pub stream_parameters: Vec<(String, String)>,
}

/// `[rtp]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpSettings {
    /// `rtp.bind`: local address of the per-call RTP sockets.
    pub bind: IpAddr,
    /// `rtp.ports`: the local port range the RTP sockets are taken from.
    pub ports: PortRange,
    /// `rtp.backend`: where the voice stack receives RTP; datagrams from any
    /// other source are dropped.
    pub backend: SocketAddr,
    /// `rtp.codec`: the audio encoding on the RTP leg.
    pub codec: Codec,
    /// `rtp.ptime_ms`: milliseconds of audio per RTP packet (10, 20, 30 or 40).
    pub ptime_ms: u8,
    /// `rtp.dtmf_payload_type`: payload type of RFC 4733 telephone events.
    pub dtmf_payload_type: u8,
    /// `rtp.payload_type`, or the codec's usual type when not set.
    pub payload_type: u8,
}

/// An inclusive range of UDP ports (`rtp.ports`), displayed as `LO-HI`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port of the range.
    pub low: u16,
    /// Last port of the range (inclusive); never below `low`.
    pub high: u16,
}

impl PortRange {
    /// How many ports the range holds (at least 1 in a validated config).
    #[must_use]
    pub fn len(self) -> u32 {
        (u32::from(self.high) + 1).saturating_sub(u32::from(self.low))
    }

    /// Whether the range holds no port, which only a hand-built range with
    /// `high < low` can do.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.high < self.low
    }

    /// Whether `port` lies in the range.
    #[must_use]
    pub fn contains(self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.low, self.high)
    }
}

/// The audio encoding on the RTP leg (`rtp.codec`): the call bridge's own
/// codec type, so the config, SDP and the bridge cannot disagree on names.
pub use voxproxy_adapters::bridge::BackendCodec as Codec;

/// `[jitter]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterSettings {
    /// `jitter.max_delay_ms`: the longest an out-of-order packet is waited for.
    pub max_delay_ms: u16,
}

/// `[vad]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VadSettings {
    /// `vad.mode`: how aggressively non-speech is filtered out, 0 (least,
    /// more audio counts as speech) to 3 (most), as in WebRTC's VAD.
    pub mode: u8,
    /// `vad.barge_in`: whether caller speech clears unplayed outbound audio.
    pub barge_in: bool,
}

/// `[keepalive]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepaliveSettings {
    /// `keepalive.ping_interval`: quiet time after which a WebSocket ping is sent.
    pub ping_interval: Duration,
    /// `keepalive.idle_timeout`: silence from Twilio after which the call is closed.
    pub idle_timeout: Duration,
}

/// `[limits]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `limits.max_calls`: concurrent calls; the rest are refused.
    pub max_calls: u32,
    /// `limits.max_frame_bytes`: largest WebSocket message accepted.
    pub max_frame_bytes: u32,
    /// `limits.webhook_rate_per_ip`: webhook requests per second per client
    /// address; `None` when set to 0 (no limit, e.g. behind a load balancer
    /// whose address every request carries).
    pub webhook_rate_per_ip: Option<u32>,
    /// `limits.max_body_bytes`: largest HTTP request body accepted.
    pub max_body_bytes: u32,
}

/// `[cdr]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdrSettings {
    /// `cdr.path`: the JSON-lines file call records are appended to.
    pub path: PathBuf,
}

/// `[log]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    /// `log.format`: how each log event is written.
    pub format: LogFormat,
    /// `log.level`: which events are written (a `tracing` filter directive).
    pub level: String,
}

/// How log events are written (`log.format`).
pub use crate::logging::LogFormat;

/// `[drain]` settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DrainSettings {
    /// `drain.timeout`: how long running calls may go on after shutdown begins.
    pub timeout: Duration,
}

/// Secrets read from the environment only.
#[derive(Clone, Debug, Default)]
pub struct Secrets {
    /// `TWILIO_AUTH_TOKEN`: signs Twilio's requests and authenticates REST calls.
    pub twilio_auth_token: Option<Secret>,
    /// `VOXPROXY_ADMIN_TOKEN`: the bearer token of the `/v1` control API.
    pub admin_token: Option<Secret>,
}

/// A secret string whose `Debug` and `Display` print `<redacted>`.
///
/// Compare a secret against untrusted input in constant time (`subtle`),
/// never with `==` on [`Secret::expose`].
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    #[must_use]
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that has to use it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

// ---------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------

/// The flags of `voxproxy serve`. Each one overrides the file and the
/// environment for its key; values are checked like the file's.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file; every key is optional.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address of the HTTP and WebSocket listener (server.listen) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Base URL Twilio reaches this proxy at (server.public_url) [default: http://127.0.0.1:8080].
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Address and port the voice stack receives RTP on (rtp.backend) [default: 127.0.0.1:4000].
    #[arg(long, value_name = "ADDR")]
    pub backend: Option<String>,
    /// Local UDP port range for RTP (rtp.ports) [default: 40000-44999].
    #[arg(long, value_name = "LO-HI")]
    pub rtp_ports: Option<String>,
    /// Number of worker threads, 1 to 1024 (server.workers) [default: number of CPUs].
    #[arg(long, value_name = "N")]
    pub workers: Option<String>,
    /// I/O backend of the workers (server.io) [default: auto].
    #[arg(long, value_name = "MODE", value_parser = ["auto", "uring", "epoll"])]
    pub io: Option<String>,
    /// Start without TWILIO_AUTH_TOKEN and let unsigned Twilio requests in,
    /// logging a warning on every one. For local experiments only.
    #[arg(long)]
    pub insecure_skip_signature: bool,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// Where a setting's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The configuration file, at a line (counted from 1).
    File {
        /// The file as named by `--config`.
        path: PathBuf,
        /// Line of the value.
        line: usize,
    },
    /// An environment variable.
    Env {
        /// The variable's name.
        name: String,
    },
    /// A command-line flag.
    Flag {
        /// The flag, such as `--listen`.
        name: &'static str,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File { path, line } => write!(f, "from {} line {line}", path.display()),
            Origin::Env { name } => write!(f, "from {name}"),
            Origin::Flag { name } => write!(f, "from {name}"),
        }
    }
}

/// Why the configuration could not be loaded. `Display` is one sentence that
/// names the file, key or variable at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    ReadFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line of the problem, counted from 1.
        line: usize,
        /// Column of the problem, counted from 1.
        column: usize,
        /// The TOML parser's description.
        message: String,
    },
    /// The file holds a key that is not a setting (a typo, or a key this
    /// version does not know).
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Line of the key, counted from 1.
        line: usize,
        /// The key in dotted form, such as `server.listne`.
        key: String,
        /// The keys that may stand where it stands, comma-separated.
        known: String,
    },
    /// The file holds a secret; secrets come only from the environment.
    SecretInFile {
        /// The file.
        path: PathBuf,
        /// Line of the key, counted from 1.
        line: usize,
        /// The key as written, such as `twilio.auth_token`.
        key: String,
        /// The environment variable to use instead.
        variable: &'static str,
    },
    /// A `VOXPROXY_` environment variable names no setting.
    UnknownVariable {
        /// The variable.
        name: String,
    },
    /// An environment variable this program reads is not valid UTF-8.
    NotUnicode {
        /// The variable.
        name: String,
    },
    /// A setting has a value that is not accepted.
    Invalid {
        /// The key in dotted form, as written in the file.
        key: String,
        /// The value as written (strings quoted), shortened if very long.
        value: String,
        /// Where the value came from.
        origin: Box<Origin>,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// A secret in the environment is malformed; its value is never shown.
    BadSecret {
        /// The environment variable.
        variable: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ReadFile { path, source } => {
                write!(f, "cannot read the configuration file {}: {source}", path.display())
            }
            ConfigError::Syntax { path, line, column, message } => {
                write!(f, "{} is not valid TOML at line {line}, column {column}: {message}", path.display())
            }
            ConfigError::UnknownKey { path, line, key, known } => write!(
                f,
                "unknown key `{key}` in {} line {line}: the keys allowed there are {known}",
                path.display()
            ),
            ConfigError::SecretInFile { path, line, key, variable } => write!(
                f,
                "`{key}` in {} line {line} is a secret, and secrets are read only from the \
                 environment: remove it from the file and set {variable} instead",
                path.display()
            ),
            ConfigError::UnknownVariable { name } => write!(
                f,
                "environment variable {name} is not a voxproxy setting: VOXPROXY_ variables are \
                 section and key upper-cased, such as VOXPROXY_RTP_BACKEND for rtp.backend"
            ),
            ConfigError::NotUnicode { name } => {
                write!(f, "environment variable {name} is not valid UTF-8")
            }
            ConfigError::Invalid { key, value, origin, problem } => {
                write!(f, "{key} = {value} ({origin}): {problem}")
            }
            ConfigError::BadSecret { variable, problem } => {
                write!(f, "environment variable {variable} {problem} (its value is not shown)")
            }
        }
    }
}

impl core::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ConfigError::ReadFile { source, .. } => Some(source),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

/// Why a duration string was refused by [`parse_duration`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// The string is empty.
    Empty,
    /// A number is not followed by a unit, such as `"5"`.
    MissingUnit,
    /// A unit is not preceded by a number, such as `"s"`.
    MissingNumber,
    /// A unit other than `h`, `m`, `s` and `ms`.
    UnknownUnit {
        /// The unit as written (at most 16 characters of it).
        unit: String,
    },
    /// A character that has no place in a duration (sign, fraction, space).
    UnexpectedCharacter {
        /// The character.
        found: char,
    },
    /// Units are not from largest to smallest, or one is repeated.
    UnitOrder,
    /// The total does not fit in 2^64 milliseconds.
    TooLarge,
}

const DURATION_FORMS: &str = "such as \"250ms\", \"5s\", \"1m30s\" or \"1h\"";

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Empty => write!(f, "expected a duration {DURATION_FORMS}"),
            DurationError::MissingUnit => {
                write!(f, "a number has no unit; expected a duration {DURATION_FORMS}")
            }
            DurationError::MissingNumber => {
                write!(f, "a unit has no number before it; expected a duration {DURATION_FORMS}")
            }
            DurationError::UnknownUnit { unit } => write!(
                f,
                "unknown unit \"{unit}\"; the units are h, m, s and ms, as in a duration {DURATION_FORMS}"
            ),
            DurationError::UnexpectedCharacter { found } => write!(
                f,
                "unexpected {found:?}: write whole numbers with units and nothing else, \
                 such as \"1500ms\" rather than \"1.5s\""
            ),
            DurationError::UnitOrder => {
                f.write_str("units must go from largest to smallest, each at most once (h, m, s, ms)")
            }
            DurationError::TooLarge => f.write_str("the duration is too large"),
        }
    }
}

impl core::error::Error for DurationError {}

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;

/// Parses a duration written as one or more `<integer><unit>` parts, units
/// `h`, `m`, `s`, `ms`, largest first and each at most once: `"250ms"`,
/// `"5s"`, `"1h30m"`, `"1m0s500ms"`. Millisecond resolution.
///
/// ```
/// use std::time::Duration;
/// use voxproxy::config::parse_duration;
///
/// assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
/// assert!(parse_duration("1.5s").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return Err(DurationError::Empty);
    }
    let mut pos = 0;
    let mut total_ms: u64 = 0;
    // Rank of the last unit seen; every next unit must rank lower.
    let mut last_rank = u8::MAX;
    while pos < bytes.len() {
        let digits_start = pos;
        let mut number: u64 = 0;
        while let Some(&b) = bytes.get(pos).filter(|b| b.is_ascii_digit()) {
            number = number
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(b - b'0')))
                .ok_or(DurationError::TooLarge)?;
            pos += 1;
        }
        let unit_start = pos;
        while bytes.get(pos).is_some_and(u8::is_ascii_alphabetic) {
            pos += 1;
        }
        // Both loops stopped on ASCII or at the end, so these are char boundaries.
        let unit = &text[unit_start..pos];
        if unit.is_empty() {
            return match text[pos..].chars().next() {
                None => Err(DurationError::MissingUnit),
                Some(found) => Err(DurationError::UnexpectedCharacter { found }),
            };
        }
        if digits_start == unit_start {
            return Err(DurationError::MissingNumber);
        }
        let (rank, factor) = match unit {
            "h" => (3, MS_PER_HOUR),
            "m" => (2, MS_PER_MINUTE),
            "s" => (1, MS_PER_SECOND),
            "ms" => (0, 1),
            _ => return Err(DurationError::UnknownUnit { unit: unit.chars().take(16).collect() }),
        };
        if rank >= last_rank {
            return Err(DurationError::UnitOrder);
        }
        last_rank = rank;
        total_ms = number
            .checked_mul(factor)
            .and_then(|part| part.checked_add(total_ms))
            .ok_or(DurationError::TooLarge)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way [`parse_duration`] reads it, largest units first
/// and zero parts left out (`"1h30m"`, `"250ms"`, `"0s"`). Below a
/// millisecond is dropped; beyond 2^64 ms saturates.
#[must_use]
pub fn format_duration(duration: Duration) -> String {
    let total = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if total == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut rest = total;
    for (factor, unit) in [(MS_PER_HOUR, "h"), (MS_PER_MINUTE, "m"), (MS_PER_SECOND, "s"), (1, "ms")] {
        let part = rest / factor;
        rest %= factor;
        if part > 0 {
            out.push_str(&part.to_string());
            out.push_str(unit);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    ServerListen,
    ServerPublicUrl,
    ServerWorkers,
    ServerIo,
    ServerTlsCert,
    ServerTlsKey,
    TwilioAccountSid,
    TwilioApiBase,
    TwilioValidateSignatures,
    TwilioStreamParameters,
    RtpBind,
    RtpPorts,
    RtpAllowPrivilegedPorts,
    RtpBackend,
    RtpCodec,
    RtpPtimeMs,
    RtpDtmfPayloadType,
    RtpPayloadType,
    JitterMaxDelayMs,
    VadMode,
    VadBargeIn,
    KeepalivePingInterval,
    KeepaliveIdleTimeout,
    LimitsMaxCalls,
    LimitsMaxFrameBytes,
    LimitsWebhookRatePerIp,
    LimitsMaxBodyBytes,
    CdrPath,
    DrainTimeout,
    LogFormat,
    LogLevel,
}

/// What the messages need to know about a key. Indexed by `Setting as usize`.
struct KeyInfo {
    key: Setting,
    path: &'static str,
    env: &'static str,
    /// The default as it would be written in the file, for messages that
    /// blame a key nobody set.
    default: &'static str,
    /// What a wrongly typed value is told is expected.
    expected: &'static str,
}

const fn info(
    key: Setting,
    path: &'static str,
    env: &'static str,
    default: &'static str,
    expected: &'static str,
) -> KeyInfo {
    KeyInfo { key, path, env, default, expected }
}

const EXPECT_PAYLOAD_TYPE: &str =
    "expected an RTP payload type from 0 to 127, other than 72 to 76 (those collide with RTCP packet types)";
const EXPECT_DURATION: &str = "expected a duration string such as \"250ms\", \"5s\", \"1m30s\" or \"1h\"";
const EXPECT_BOOL: &str = "expected true or false";

const KEYS: [KeyInfo; 31] = [
    info(
        Setting::ServerListen,
        "server.listen",
        "VOXPROXY_SERVER_LISTEN",
        "\"127.0.0.1:8080\"",
        "expected an IP address and port such as \"127.0.0.1:8080\" or \"[::]:8080\"",
    ),
    info(
        Setting::ServerPublicUrl,
        "server.public_url",
        "VOXPROXY_SERVER_PUBLIC_URL",
        "\"http://127.0.0.1:8080\"",
        "expected the http:// or https:// URL Twilio reaches this proxy at",
    ),
    info(
        Setting::ServerWorkers,
        "server.workers",
        "VOXPROXY_SERVER_WORKERS",
        "the number of CPUs",
        "expected an integer from 1 to 1024",
    ),
    info(
        Setting::ServerIo,
        "server.io",
        "VOXPROXY_SERVER_IO",
        "\"auto\"",
        "expected \"auto\", \"uring\" or \"epoll\"",
    ),
    info(
        Setting::ServerTlsCert,
        "server.tls.cert",
        "VOXPROXY_SERVER_TLS_CERT",
        "none",
        "expected the path of a PEM certificate file",
    ),
    info(
        Setting::ServerTlsKey,
        "server.tls.key",
        "VOXPROXY_SERVER_TLS_KEY",
        "none",
        "expected the path of a PEM private key file",
    ),
    info(
        Setting::TwilioAccountSid,
        "twilio.account_sid",
        "VOXPROXY_TWILIO_ACCOUNT_SID",
        "none",
        "expected \"AC\" followed by 32 hexadecimal digits",
    ),
    info(
        Setting::TwilioApiBase,
        "twilio.api_base",
        "VOXPROXY_TWILIO_API_BASE",
        "\"https://api.twilio.com\"",
        "expected an http:// or https:// URL such as \"https://api.twilio.com\"",
    ),
    info(
        Setting::TwilioValidateSignatures,
        "twilio.validate_signatures",
        "VOXPROXY_TWILIO_VALIDATE_SIGNATURES",
        "true",
        EXPECT_BOOL,
    ),
    info(
        Setting::TwilioStreamParameters,
        "twilio.stream_parameters",
        "VOXPROXY_TWILIO_STREAM_PARAMETERS",
        "\"\"",
        "expected comma-separated Name=value pairs such as \"Tenant=acme,Queue=sales\"",
    ),
    info(
        Setting::RtpBind,
        "rtp.bind",
        "VOXPROXY_RTP_BIND",
        "\"127.0.0.1\"",
        "expected an IP address such as \"127.0.0.1\" or \"::\"",
    ),
    info(
        Setting::RtpPorts,
        "rtp.ports",
        "VOXPROXY_RTP_PORTS",
        "\"40000-44999\"",
        "expected a port range \"LO-HI\" such as \"40000-44999\"",
    ),
    info(
        Setting::RtpAllowPrivilegedPorts,
        "rtp.allow_privileged_ports",
        "VOXPROXY_RTP_ALLOW_PRIVILEGED_PORTS",
        "false",
        EXPECT_BOOL,
    ),
    info(
        Setting::RtpBackend,
        "rtp.backend",
        "VOXPROXY_RTP_BACKEND",
        "\"127.0.0.1:4000\"",
        "expected the IP address and port of the voice stack, such as \"127.0.0.1:4000\"",
    ),
    info(
        Setting::RtpCodec,
        "rtp.codec",
        "VOXPROXY_RTP_CODEC",
        "\"pcmu\"",
        "expected \"pcmu\", \"pcma\", \"l16-8k\" or \"l16-16k\"",
    ),
    info(Setting::RtpPtimeMs, "rtp.ptime_ms", "VOXPROXY_RTP_PTIME_MS", "20", "expected 10, 20, 30 or 40"),
    info(
        Setting::RtpDtmfPayloadType,
        "rtp.dtmf_payload_type",
        "VOXPROXY_RTP_DTMF_PAYLOAD_TYPE",
        "101",
        EXPECT_PAYLOAD_TYPE,
    ),
    info(
        Setting::RtpPayloadType,
        "rtp.payload_type",
        "VOXPROXY_RTP_PAYLOAD_TYPE",
        "the codec's usual type",
        EXPECT_PAYLOAD_TYPE,
    ),
    info(
        Setting::JitterMaxDelayMs,
        "jitter.max_delay_ms",
        "VOXPROXY_JITTER_MAX_DELAY_MS",
        "60",
        "expected a number of milliseconds from 0 to 1000",
    ),
    info(Setting::VadMode, "vad.mode", "VOXPROXY_VAD_MODE", "2", "expected an integer from 0 to 3"),
    info(Setting::VadBargeIn, "vad.barge_in", "VOXPROXY_VAD_BARGE_IN", "true", EXPECT_BOOL),
    info(
        Setting::KeepalivePingInterval,
        "keepalive.ping_interval",
        "VOXPROXY_KEEPALIVE_PING_INTERVAL",
        "\"10s\"",
        EXPECT_DURATION,
    ),
    info(
        Setting::KeepaliveIdleTimeout,
        "keepalive.idle_timeout",
        "VOXPROXY_KEEPALIVE_IDLE_TIMEOUT",
        "\"30s\"",
        EXPECT_DURATION,
    ),
    info(
        Setting::LimitsMaxCalls,
        "limits.max_calls",
        "VOXPROXY_LIMITS_MAX_CALLS",
        "2000",
        "expected an integer from 1 to 1000000",
    ),
    info(
        Setting::LimitsMaxFrameBytes,
        "limits.max_frame_bytes",
        "VOXPROXY_LIMITS_MAX_FRAME_BYTES",
        "16384",
        "expected a number of bytes from 1024 to 16777216",
    ),
    info(
        Setting::LimitsWebhookRatePerIp,
        "limits.webhook_rate_per_ip",
        "VOXPROXY_LIMITS_WEBHOOK_RATE_PER_IP",
        "20",
        "expected requests per second from 0 (no limit) to 1000000",
    ),
    info(
        Setting::LimitsMaxBodyBytes,
        "limits.max_body_bytes",
        "VOXPROXY_LIMITS_MAX_BODY_BYTES",
        "65536",
        "expected a number of bytes from 1024 to 16777216",
    ),
    info(Setting::CdrPath, "cdr.path", "VOXPROXY_CDR_PATH", "\"voxproxy-cdr.jsonl\"", "expected a file path"),
    info(Setting::DrainTimeout, "drain.timeout", "VOXPROXY_DRAIN_TIMEOUT", "\"5s\"", EXPECT_DURATION),
    info(
        Setting::LogFormat,
        "log.format",
        "VOXPROXY_LOG_FORMAT",
        "\"text\"",
        "expected \"text\" or \"json\"",
    ),
    info(
        Setting::LogLevel,
        "log.level",
        "VOXPROXY_LOG_LEVEL",
        "\"info\"",
        "expected a filter such as \"info\" or \"voxproxy=debug,warn\"",
    ),
];

impl Setting {
    fn info(self) -> &'static KeyInfo {
        &KEYS[self as usize]
    }

    fn from_env(name: &str) -> Option<Setting> {
        KEYS.iter().find(|i| i.env == name).map(|i| i.key)
    }

    fn from_path(path: &str) -> Option<Setting> {
        KEYS.iter().find(|i| i.path == path).map(|i| i.key)
    }
}

const ENV_ADMIN_TOKEN: &str = "VOXPROXY_ADMIN_TOKEN";
const ENV_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
const ENV_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";

/// Keys people are likely to try to put secrets under, and where the secret
/// belongs instead.
const SECRET_KEYS: [(&str, &str); 4] = [
    ("twilio.auth_token", ENV_AUTH_TOKEN),
    ("server.admin_token", ENV_ADMIN_TOKEN),
    ("admin_token", ENV_ADMIN_TOKEN),
    ("auth_token", ENV_AUTH_TOKEN),
];

/// The names that may follow `prefix` (a section in dotted form, or "" for
/// the top level) one level down, for "allowed keys" messages.
fn children_of(prefix: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    for info in &KEYS {
        let rest = if prefix.is_empty() {
            Some(info.path)
        } else {
            info.path.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
        };
        if let Some(rest) = rest {
            let name = rest.split('.').next().unwrap_or(rest);
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.join(", ")
}

// ---------------------------------------------------------------------------
// The file as serde sees it
// ---------------------------------------------------------------------------

type Text = Option<Spanned<String>>;
type Int = Option<Spanned<i64>>;
type Flag = Option<Spanned<bool>>;

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    server: FileServer,
    twilio: FileTwilio,
    rtp: FileRtp,
    jitter: FileJitter,
    vad: FileVad,
    keepalive: FileKeepalive,
    limits: FileLimits,
    cdr: FileCdr,
    drain: FileDrain,
    log: FileLog,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileServer {
    listen: Text,
    public_url: Text,
    workers: Int,
    io: Text,
    tls: FileTls,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileTls {
    cert: Text,
    key: Text,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileTwilio {
    account_sid: Text,
    api_base: Text,
    validate_signatures: Flag,
    stream_parameters: Text,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileRtp {
    bind: Text,
    ports: Text,
    allow_privileged_ports: Flag,
    backend: Text,
    codec: Text,
    ptime_ms: Int,
    dtmf_payload_type: Int,
    payload_type: Int,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileJitter {
    max_delay_ms: Int,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileVad {
    mode: Int,
    barge_in: Flag,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileKeepalive {
    ping_interval: Text,
    idle_timeout: Text,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileLimits {
    max_calls: Int,
    max_frame_bytes: Int,
    webhook_rate_per_ip: Int,
    max_body_bytes: Int,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileCdr {
    path: Text,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileLog {
    format: Text,
    level: Text,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileDrain {
    timeout: Text,
}

/// `"A=1,B=2"` → `[("A", "1"), ("B", "2")]`; an empty string is no parameter.
fn parse_stream_parameters(text: &str) -> Result<Vec<(String, String)>, String> {
    let expected = Setting::TwilioStreamParameters.info().expected;
    let mut pairs = Vec::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let Some((name, value)) = item.split_once('=') else {
            return Err(format!("{expected}; {item:?} has no '='"));
        };
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return Err(format!("{expected}; {name:?} is not a parameter name (letters, digits, _ and -)"));
        }
        if pairs.len() >= 32 {
            return Err(format!("{expected}; at most 32 parameters"));
        }
        pairs.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(pairs)
}

// ---------------------------------------------------------------------------
// Layers
// ---------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Raw {
    Str(String),
    Int(i64),
    Bool(bool),
}

#[derive(Clone, Debug)]
struct Entry {
    raw: Raw,
    /// The value as the person wrote it, for messages.
    shown: String,
    origin: Origin,
}

/// Longest value echoed back in a message; config values are short, and a
/// runaway environment variable should not flood the terminal.
const MAX_SHOWN: usize = 120;

fn quote(value: &str) -> String {
    if value.chars().count() > MAX_SHOWN {
        let cut: String = value.chars().take(MAX_SHOWN).collect();
        format!("{cut:?}…")
    } else {
        format!("{value:?}")
    }
}

struct Layers {
    entries: Vec<Option<Entry>>,
}

/// The file text and name, for turning spans into lines and quoted values.
struct FileSource<'a> {
    path: &'a Path,
    text: &'a str,
}

impl FileSource<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }

    fn origin(&self, span: &std::ops::Range<usize>) -> Origin {
        Origin::File { path: self.path.to_path_buf(), line: self.line_col(span.start).0 }
    }

    fn shown(&self, span: &std::ops::Range<usize>) -> String {
        let text = self.text.get(span.clone()).unwrap_or("");
        if text.chars().count() > MAX_SHOWN {
            let cut: String = text.chars().take(MAX_SHOWN).collect();
            format!("{cut}…")
        } else {
            text.to_owned()
        }
    }
}

impl Layers {
    fn new() -> Self {
        Layers { entries: vec![None; KEYS.len()] }
    }

    fn set(&mut self, key: Setting, entry: Entry) {
        self.entries[key as usize] = Some(entry);
    }

    fn get(&self, key: Setting) -> Option<&Entry> {
        self.entries[key as usize].as_ref()
    }

    fn is_set(&self, key: Setting) -> bool {
        self.get(key).is_some()
    }

    fn put_file<T>(
        &mut self,
        file: &FileSource<'_>,
        key: Setting,
        value: Option<Spanned<T>>,
        raw: fn(T) -> Raw,
    ) {
        if let Some(value) = value {
            let span = value.span();
            self.set(
                key,
                Entry { raw: raw(value.into_inner()), shown: file.shown(&span), origin: file.origin(&span) },
            );
        }
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let file = FileSource { path, text };
        let parsed = parse_file(&file)?;
        let s = Raw::Str;
        let i = Raw::Int;
        let b = Raw::Bool;
        let FileConfig { server, twilio, rtp, jitter, vad, keepalive, limits, cdr, drain, log } = parsed;
        self.put_file(&file, Setting::ServerListen, server.listen, s);
        self.put_file(&file, Setting::ServerPublicUrl, server.public_url, s);
        self.put_file(&file, Setting::ServerWorkers, server.workers, i);
        self.put_file(&file, Setting::ServerIo, server.io, s);
        self.put_file(&file, Setting::ServerTlsCert, server.tls.cert, s);
        self.put_file(&file, Setting::ServerTlsKey, server.tls.key, s);
        self.put_file(&file, Setting::TwilioAccountSid, twilio.account_sid, s);
        self.put_file(&file, Setting::TwilioApiBase, twilio.api_base, s);
        self.put_file(&file, Setting::TwilioValidateSignatures, twilio.validate_signatures, b);
        self.put_file(&file, Setting::TwilioStreamParameters, twilio.stream_parameters, s);
        self.put_file(&file, Setting::RtpBind, rtp.bind, s);
        self.put_file(&file, Setting::RtpPorts, rtp.ports, s);
        self.put_file(&file, Setting::RtpAllowPrivilegedPorts, rtp.allow_privileged_ports, b);
        self.put_file(&file, Setting::RtpBackend, rtp.backend, s);
        self.put_file(&file, Setting::RtpCodec, rtp.codec, s);
        self.put_file(&file, Setting::RtpPtimeMs, rtp.ptime_ms, i);
        self.put_file(&file, Setting::RtpDtmfPayloadType, rtp.dtmf_payload_type, i);
        self.put_file(&file, Setting::RtpPayloadType, rtp.payload_type, i);
        self.put_file(&file, Setting::JitterMaxDelayMs, jitter.max_delay_ms, i);
        self.put_file(&file, Setting::VadMode, vad.mode, i);
        self.put_file(&file, Setting::VadBargeIn, vad.barge_in, b);
        self.put_file(&file, Setting::KeepalivePingInterval, keepalive.ping_interval, s);
        self.put_file(&file, Setting::KeepaliveIdleTimeout, keepalive.idle_timeout, s);
        self.put_file(&file, Setting::LimitsMaxCalls, limits.max_calls, i);
        self.put_file(&file, Setting::LimitsMaxFrameBytes, limits.max_frame_bytes, i);
        self.put_file(&file, Setting::LimitsWebhookRatePerIp, limits.webhook_rate_per_ip, i);
        self.put_file(&file, Setting::LimitsMaxBodyBytes, limits.max_body_bytes, i);
        self.put_file(&file, Setting::CdrPath, cdr.path, s);
        self.put_file(&file, Setting::DrainTimeout, drain.timeout, s);
        self.put_file(&file, Setting::LogFormat, log.format, s);
        self.put_file(&file, Setting::LogLevel, log.level, s);
        Ok(())
    }

    /// Applies `VOXPROXY_*` variables and collects the secrets.
    fn apply_env<I, K, V>(&mut self, env: I) -> Result<Secrets, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut secrets = Secrets::default();
        // (value, variable) of each spelling of the account SID, to check they agree.
        let mut sids: Vec<(String, &'static str)> = Vec::new();
        for (name, value) in env {
            let Ok(name) = name.into().into_string() else {
                // A name that is not UTF-8 cannot be one of ours.
                continue;
            };
            let key = if name == ENV_AUTH_TOKEN || name == ENV_ADMIN_TOKEN || name == ENV_ACCOUNT_SID {
                None
            } else if name.starts_with("VOXPROXY_") {
                match Setting::from_env(&name) {
                    Some(key) => Some(key),
                    None => return Err(ConfigError::UnknownVariable { name }),
                }
            } else {
                continue;
            };
            let value =
                value.into().into_string().map_err(|_| ConfigError::NotUnicode { name: name.clone() })?;
            if value.is_empty() {
                continue;
            }
            match key {
                Some(Setting::TwilioAccountSid) => sids.push((value, Setting::TwilioAccountSid.info().env)),
                Some(key) => {
                    let shown = quote(&value);
                    self.set(key, Entry { raw: Raw::Str(value), shown, origin: Origin::Env { name } });
                }
                None if name == ENV_AUTH_TOKEN => {
                    check_secret(ENV_AUTH_TOKEN, &value, 1)?;
                    secrets.twilio_auth_token = Some(Secret(value));
                }
                None if name == ENV_ADMIN_TOKEN => {
                    check_secret(ENV_ADMIN_TOKEN, &value, MIN_ADMIN_TOKEN_LEN)?;
                    secrets.admin_token = Some(Secret(value));
                }
                None => sids.push((value, ENV_ACCOUNT_SID)),
            }
        }
        if let Some((first, first_name)) = sids.first()
            && let Some((other, other_name)) = sids.iter().find(|(value, _)| value != first)
        {
            return Err(ConfigError::Invalid {
                key: Setting::TwilioAccountSid.info().path.to_owned(),
                value: quote(other),
                origin: Box::new(Origin::Env { name: (*other_name).to_owned() }),
                problem: format!(
                    "{first_name} is also set, to {}; set only one of them, or both to the same SID",
                    quote(first)
                ),
            });
        }
        if let Some((value, name)) = sids.pop() {
            let shown = quote(&value);
            self.set(
                Setting::TwilioAccountSid,
                Entry { raw: Raw::Str(value), shown, origin: Origin::Env { name: name.to_owned() } },
            );
        }
        Ok(secrets)
    }

    fn apply_flags(&mut self, args: &ServeArgs) {
        let flags = [
            (Setting::ServerListen, "--listen", &args.listen),
            (Setting::ServerPublicUrl, "--public-url", &args.public_url),
            (Setting::RtpBackend, "--backend", &args.backend),
            (Setting::RtpPorts, "--rtp-ports", &args.rtp_ports),
            (Setting::ServerWorkers, "--workers", &args.workers),
            (Setting::ServerIo, "--io", &args.io),
        ];
        for (key, name, value) in flags {
            if let Some(value) = value {
                self.set(
                    key,
                    Entry {
                        raw: Raw::Str(value.clone()),
                        shown: quote(value),
                        origin: Origin::Flag { name },
                    },
                );
            }
        }
    }
}

/// Shortest admin token accepted: a bearer token guessable by brute force
/// protects nothing.
const MIN_ADMIN_TOKEN_LEN: usize = 16;

fn check_secret(variable: &'static str, value: &str, min_len: usize) -> Result<(), ConfigError> {
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::BadSecret {
            variable,
            problem: "contains spaces, a line break or a control character; set it without them",
        });
    }
    if value.chars().count() < min_len {
        return Err(ConfigError::BadSecret {
            variable,
            problem: "is shorter than 16 characters; use a long random token such as the output of \
                      `openssl rand -hex 16`",
        });
    }
    Ok(())
}

fn parse_file(file: &FileSource<'_>) -> Result<FileConfig, ConfigError> {
    let deserializer = toml::Deserializer::parse(file.text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| file.line_col(s.start));
        ConfigError::Syntax {
            path: file.path.to_path_buf(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // toml's Spanned adds a private field name to the path; the key ends before it.
        let key = e
            .path()
            .iter()
            .map(ToString::to_string)
            .take_while(|s| !s.starts_with('$'))
            .collect::<Vec<_>>()
            .join(".");
        let inner = e.into_inner();
        let span = inner.span().unwrap_or(0..0);
        let (line, _) = file.line_col(span.start);
        if let Some(known) = Setting::from_path(&key) {
            ConfigError::Invalid {
                key,
                value: file.shown(&span),
                origin: Box::new(file.origin(&span)),
                problem: known.info().expected.to_owned(),
            }
        } else if let Some((_, variable)) = SECRET_KEYS.iter().find(|(k, _)| *k == key) {
            ConfigError::SecretInFile { path: file.path.to_path_buf(), line, key, variable }
        } else if !key.is_empty() && !children_of(&key).is_empty() {
            // A known section holding something other than a table.
            ConfigError::Invalid {
                value: file.shown(&span),
                origin: Box::new(file.origin(&span)),
                problem: format!(
                    "expected a table of settings ([{key}]) with the keys {}",
                    children_of(&key)
                ),
                key,
            }
        } else {
            let parent = key.rsplit_once('.').map_or("", |(p, _)| p);
            ConfigError::UnknownKey { path: file.path.to_path_buf(), line, known: children_of(parent), key }
        }
    })
}

// ---------------------------------------------------------------------------
// Resolution: typed values with messages that blame the right layer
// ---------------------------------------------------------------------------

impl Layers {
    fn invalid(&self, key: Setting, problem: impl Into<String>) -> ConfigError {
        let info = key.info();
        let (value, origin) = match self.get(key) {
            Some(entry) => (entry.shown.clone(), entry.origin.clone()),
            None => (info.default.to_owned(), Origin::Default),
        };
        ConfigError::Invalid {
            key: info.path.to_owned(),
            value,
            origin: Box::new(origin),
            problem: problem.into(),
        }
    }

    fn text(&self, key: Setting) -> Result<Option<&str>, ConfigError> {
        match self.get(key).map(|e| &e.raw) {
            None => Ok(None),
            Some(Raw::Str(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(key, key.info().expected)),
        }
    }

    /// A string key turned into a `T` by `parse`, whose error is the problem.
    fn parsed<T>(
        &self,
        key: Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        match self.text(key)? {
            None => Ok(None),
            Some(s) => parse(s).map(Some).map_err(|problem| self.invalid(key, problem)),
        }
    }

    /// An integer key within `range`, narrowed to the type it is stored in.
    fn integer<T: TryFrom<i64>>(
        &self,
        key: Setting,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<T>, ConfigError> {
        let value = match self.get(key).map(|e| &e.raw) {
            None => return Ok(None),
            Some(Raw::Int(n)) => Some(*n),
            Some(Raw::Str(s)) => s.trim().parse::<i64>().ok(),
            Some(Raw::Bool(_)) => None,
        };
        value
            .filter(|n| range.contains(n))
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| self.invalid(key, key.info().expected))
    }

    fn boolean(&self, key: Setting) -> Result<Option<bool>, ConfigError> {
        let value = match self.get(key).map(|e| &e.raw) {
            None => return Ok(None),
            Some(Raw::Bool(b)) => Some(*b),
            Some(Raw::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            },
            Some(Raw::Int(_)) => None,
        };
        value.map(Some).ok_or_else(|| self.invalid(key, key.info().expected))
    }

    fn duration(
        &self,
        key: Setting,
        max: Duration,
        allow_zero: bool,
    ) -> Result<Option<Duration>, ConfigError> {
        let Some(d) = self.parsed(key, |s| parse_duration(s).map_err(|e| e.to_string()))? else {
            return Ok(None);
        };
        if d.is_zero() && !allow_zero {
            return Err(self.invalid(key, "must be longer than zero"));
        }
        if d > max {
            return Err(self.invalid(key, format!("must be at most {}", format_duration(max))));
        }
        Ok(Some(d))
    }

    /// The key that set-by-someone checks should blame: `preferred` when it
    /// was set, else `other`.
    fn blame(&self, preferred: Setting, other: Setting) -> Setting {
        if self.is_set(preferred) || !self.is_set(other) { preferred } else { other }
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| String::new())
}

/// An `http`/`https` base URL ([`Url::parse_base`]): the one URL type of
/// the code base, so the config, the signature check and the server agree.
fn check_base_url(s: &str) -> Result<Url, String> {
    Url::parse_base(s, &[Scheme::Http, Scheme::Https]).map_err(|e| e.to_string())
}

fn default_url(text: &str) -> Url {
    Url::parse_base(text, &[Scheme::Http, Scheme::Https])
        .unwrap_or_else(|e| unreachable!("default {text}: {e}"))
}

fn parse_port_range(s: &str) -> Result<PortRange, String> {
    let expected = Setting::RtpPorts.info().expected;
    let (low, high) = s.split_once('-').ok_or_else(|| expected.to_owned())?;
    let port = |p: &str| {
        let p = p.trim();
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            Err(expected.to_owned())
        } else {
            p.parse::<u16>().map_err(|_| "each port must be a number from 1 to 65535".to_owned())
        }
    };
    let (low, high) = (port(low)?, port(high)?);
    if low == 0 {
        return Err(
            "port 0 is not a port a socket can be bound to; the range must start at 1 or more".to_owned()
        );
    }
    if low > high {
        return Err("the low port must not exceed the high port".to_owned());
    }
    Ok(PortRange { low, high })
}

fn check_account_sid(s: &str) -> Result<String, String> {
    let valid = s.len() == 34 && s.starts_with("AC") && s.bytes().skip(2).all(|b| b.is_ascii_hexdigit());
    if valid { Ok(s.to_owned()) } else { Err(Setting::TwilioAccountSid.info().expected.to_owned()) }
}

fn check_readable_file(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("expected a file path, not an empty string".to_owned());
    }
    let path = PathBuf::from(s);
    match std::fs::File::open(&path).and_then(|f| f.metadata()) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err("this is not a regular file".to_owned()),
        Err(e) => Err(format!("cannot open the file: {e}")),
    }
}

/// Payload types 72 to 76 would make an RTP packet's second byte read as an
/// RTCP packet type (200 to 204) when the marker bit is set (RFC 5761).
fn is_usable_payload_type(pt: u8) -> bool {
    pt <= 127 && !(72..=76).contains(&pt)
}

/// Usable CPUs, the default number of workers.
fn available_cpus() -> NonZeroU16 {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 1024);
    NonZeroU16::new(u16::try_from(cpus).unwrap_or(1)).unwrap_or(NonZeroU16::MIN)
}

impl Layers {
    fn resolve(&self, secrets: Secrets) -> Result<Config, ConfigError> {
        Ok(Config {
            server: self.server()?,
            twilio: self.twilio()?,
            rtp: self.rtp()?,
            jitter: JitterSettings {
                max_delay_ms: self.integer(Setting::JitterMaxDelayMs, 0..=1000)?.unwrap_or(60),
            },
            vad: VadSettings {
                mode: self.integer(Setting::VadMode, 0..=3)?.unwrap_or(2),
                barge_in: self.boolean(Setting::VadBargeIn)?.unwrap_or(true),
            },
            keepalive: self.keepalive()?,
            limits: Limits {
                max_calls: self.integer(Setting::LimitsMaxCalls, 1..=1_000_000)?.unwrap_or(2000),
                max_frame_bytes: self
                    .integer(Setting::LimitsMaxFrameBytes, 1024..=16 << 20)?
                    .unwrap_or(16_384),
                webhook_rate_per_ip: match self.integer(Setting::LimitsWebhookRatePerIp, 0..=1_000_000)? {
                    None => Some(20),
                    Some(0) => None,
                    Some(n) => Some(n),
                },
                max_body_bytes: self.integer(Setting::LimitsMaxBodyBytes, 1024..=16 << 20)?.unwrap_or(65_536),
            },
            cdr: CdrSettings {
                path: self
                    .parsed(Setting::CdrPath, |s| {
                        if s.is_empty() {
                            Err("expected a file path, not an empty string".to_owned())
                        } else if Path::new(s).is_dir() {
                            Err("this is a directory; name the file the records go in".to_owned())
                        } else {
                            Ok(PathBuf::from(s))
                        }
                    })?
                    .unwrap_or_else(|| PathBuf::from("voxproxy-cdr.jsonl")),
            },
            drain: DrainSettings {
                timeout: self
                    .duration(Setting::DrainTimeout, Duration::from_secs(3600), true)?
                    .unwrap_or(Duration::from_secs(5)),
            },
            log: LogSettings {
                format: self
                    .parsed(Setting::LogFormat, |s| match s {
                        "text" => Ok(LogFormat::Text),
                        "json" => Ok(LogFormat::Json),
                        _ => Err(Setting::LogFormat.info().expected.to_owned()),
                    })?
                    .unwrap_or(LogFormat::Text),
                level: self
                    .parsed(Setting::LogLevel, |s| {
                        if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_whitespace) {
                            Err(Setting::LogLevel.info().expected.to_owned())
                        } else {
                            Ok(s.to_owned())
                        }
                    })?
                    .unwrap_or_else(|| "info".to_owned()),
            },
            secrets,
        })
    }

    fn server(&self) -> Result<ServerSettings, ConfigError> {
        let listen_expected = Setting::ServerListen.info().expected;
        let listen = self
            .parsed(Setting::ServerListen, |s| parse_socket_addr(s).map_err(|_| listen_expected.to_owned()))?
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080));
        let public_url = self
            .parsed(Setting::ServerPublicUrl, check_base_url)?
            .unwrap_or_else(|| default_url("http://127.0.0.1:8080"));
        let workers = self
            .integer::<u16>(Setting::ServerWorkers, 1..=1024)?
            .and_then(NonZeroU16::new)
            .unwrap_or_else(available_cpus);
        let io = self
            .parsed(Setting::ServerIo, |s| match s {
                "auto" => Ok(IoMode::Auto),
                "uring" => Ok(IoMode::Uring),
                "epoll" => Ok(IoMode::Epoll),
                _ => Err(Setting::ServerIo.info().expected.to_owned()),
            })?
            .unwrap_or(IoMode::Auto);
        let cert = self.parsed(Setting::ServerTlsCert, check_readable_file)?;
        let key = self.parsed(Setting::ServerTlsKey, check_readable_file)?;
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => {
                return Err(self.invalid(
                    Setting::ServerTlsCert,
                    "server.tls.key must be set too: the certificate and its private key come as a pair",
                ));
            }
            (None, Some(_)) => {
                return Err(self.invalid(
                    Setting::ServerTlsKey,
                    "server.tls.cert must be set too: the certificate and its private key come as a pair",
                ));
            }
        };
        Ok(ServerSettings { listen, public_url, workers, io, tls })
    }

    fn twilio(&self) -> Result<TwilioSettings, ConfigError> {
        Ok(TwilioSettings {
            account_sid: self.parsed(Setting::TwilioAccountSid, check_account_sid)?,
            api_base: self
                .parsed(Setting::TwilioApiBase, check_base_url)?
                .unwrap_or_else(|| default_url("https://api.twilio.com")),
            validate_signatures: self.boolean(Setting::TwilioValidateSignatures)?.unwrap_or(true),
            stream_parameters: self
                .parsed(Setting::TwilioStreamParameters, parse_stream_parameters)?
                .unwrap_or_default(),
        })
    }

    fn rtp(&self) -> Result<RtpSettings, ConfigError> {
        let bind = self
            .parsed(Setting::RtpBind, |s| {
                s.parse::<IpAddr>().map_err(|_| Setting::RtpBind.info().expected.to_owned())
            })?
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let ports = self
            .parsed(Setting::RtpPorts, parse_port_range)?
            .unwrap_or(PortRange { low: 40_000, high: 44_999 });
        let allow_privileged = self.boolean(Setting::RtpAllowPrivilegedPorts)?.unwrap_or(false);
        if ports.low < 1024 && !allow_privileged {
            return Err(self.invalid(
                Setting::RtpPorts,
                "ports below 1024 are reserved for system services; choose ports from 1024 to 65535 \
                 or set rtp.allow_privileged_ports = true",
            ));
        }
        let backend = self
            .parsed(Setting::RtpBackend, |s| {
                let addr =
                    parse_socket_addr(s).map_err(|_| Setting::RtpBackend.info().expected.to_owned())?;
                if addr.ip().is_unspecified() {
                    Err("the backend needs a concrete address, not the unspecified address".to_owned())
                } else {
                    Ok(addr)
                }
            })?
            .unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000));
        let codec = self
            .parsed(Setting::RtpCodec, |s| {
                Codec::from_name(s).ok_or_else(|| Setting::RtpCodec.info().expected.to_owned())
            })?
            .unwrap_or(Codec::Pcmu);
        let ptime_ms = match self.integer(Setting::RtpPtimeMs, 10..=40)? {
            None => 20,
            Some(n @ (10 | 20 | 30 | 40)) => n,
            Some(_) => return Err(self.invalid(Setting::RtpPtimeMs, Setting::RtpPtimeMs.info().expected)),
        };
        let payload_type_of = |key: Setting| -> Result<Option<u8>, ConfigError> {
            match self.integer::<u8>(key, 0..=127)? {
                Some(pt) if !is_usable_payload_type(pt) => Err(self.invalid(key, EXPECT_PAYLOAD_TYPE)),
                pt => Ok(pt),
            }
        };
        let dtmf_payload_type = payload_type_of(Setting::RtpDtmfPayloadType)?.unwrap_or(101);
        let payload_type = payload_type_of(Setting::RtpPayloadType)?.unwrap_or(codec.default_payload_type());
        if payload_type == dtmf_payload_type {
            let key = self.blame(Setting::RtpPayloadType, Setting::RtpDtmfPayloadType);
            return Err(self.invalid(
                key,
                format!(
                    "the audio payload type and rtp.dtmf_payload_type are both {payload_type}; \
                     they must differ so the backend can tell audio from DTMF"
                ),
            ));
        }
        Ok(RtpSettings { bind, ports, backend, codec, ptime_ms, dtmf_payload_type, payload_type })
    }

    fn keepalive(&self) -> Result<KeepaliveSettings, ConfigError> {
        let ping_interval = self
            .duration(Setting::KeepalivePingInterval, Duration::from_secs(3600), false)?
            .unwrap_or(Duration::from_secs(10));
        let idle_timeout = self
            .duration(Setting::KeepaliveIdleTimeout, Duration::from_secs(86_400), false)?
            .unwrap_or(Duration::from_secs(30));
        if idle_timeout <= ping_interval {
            let key = self.blame(Setting::KeepaliveIdleTimeout, Setting::KeepalivePingInterval);
            return Err(self.invalid(
                key,
                format!(
                    "keepalive.idle_timeout ({}) must be longer than keepalive.ping_interval ({}), \
                     or calls are closed before a ping can be answered",
                    format_duration(idle_timeout),
                    format_duration(ping_interval)
                ),
            ));
        }
        Ok(KeepaliveSettings { ping_interval, idle_timeout })
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

impl Config {
    /// Loads the configuration for `voxproxy serve`: reads the file named by
    /// `--config` (if any), then applies `env` (pass `std::env::vars_os()`)
    /// and the flags, and validates the result.
    pub fn load<I, K, V>(args: &ServeArgs, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let text = match &args.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::ReadFile { path: path.clone(), source })?,
            ),
            None => None,
        };
        let file = args.config.as_deref().zip(text.as_deref());
        Config::from_sources(file, args, env)
    }

    /// Builds the configuration from the file's name and text (already read;
    /// `args.config` is not looked at), the environment and the flags.
    pub fn from_sources<I, K, V>(
        file: Option<(&Path, &str)>,
        args: &ServeArgs,
        env: I,
    ) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        let mut layers = Layers::new();
        if let Some((path, text)) = file {
            layers.apply_file(path, text)?;
        }
        let secrets = layers.apply_env(env)?;
        layers.apply_flags(args);
        layers.resolve(secrets)
    }

    /// Settings that are valid but probably not what an operator wants, one
    /// sentence each, for the log at start.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if !self.twilio.validate_signatures {
            warnings.push(
                "twilio.validate_signatures is false: anyone who can reach this proxy can start \
                 media streams and post webhooks"
                    .to_owned(),
            );
        } else if self.secrets.twilio_auth_token.is_none() {
            warnings.push(
                "TWILIO_AUTH_TOKEN is not set, so no signature can be checked and every Twilio \
                 request will be refused with 403"
                    .to_owned(),
            );
        }
        if self.secrets.admin_token.is_none() {
            warnings.push(
                "VOXPROXY_ADMIN_TOKEN is not set, so the /v1 control API is off (its routes answer 404)"
                    .to_owned(),
            );
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::Parser;
    use proptest::prelude::*;

    use super::*;

    const NO_ENV: [(&str, &str); 0] = [];

    fn from_file(text: &str) -> Result<Config, ConfigError> {
        Config::from_sources(Some((Path::new("test.toml"), text)), &ServeArgs::default(), NO_ENV)
    }

    fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(None, &ServeArgs::default(), pairs.iter().copied())
    }

    fn error_text(result: Result<Config, ConfigError>) -> String {
        match result {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[derive(Parser)]
    struct TestCli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn flags(argv: &[&str]) -> ServeArgs {
        TestCli::try_parse_from(std::iter::once("serve").chain(argv.iter().copied())).unwrap().serve
    }

    #[test]
    fn empty_config_is_valid_and_uses_documented_defaults() {
        let c = Config::from_sources(None, &ServeArgs::default(), NO_ENV).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.server.public_url.as_str(), "http://127.0.0.1:8080");
        assert_eq!(c.server.io, IoMode::Auto);
        assert_eq!(c.server.tls, None);
        assert_eq!(c.twilio.account_sid, None);
        assert_eq!(c.twilio.api_base.as_str(), "https://api.twilio.com");
        assert!(c.twilio.validate_signatures);
        assert_eq!(c.rtp.bind, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(c.rtp.ports, PortRange { low: 40000, high: 44999 });
        assert_eq!(c.rtp.ports.len(), 5000);
        assert_eq!(c.rtp.backend, "127.0.0.1:4000".parse().unwrap());
        assert_eq!(c.rtp.codec, Codec::Pcmu);
        assert_eq!(c.rtp.ptime_ms, 20);
        assert_eq!(c.rtp.dtmf_payload_type, 101);
        assert_eq!(c.rtp.payload_type, 0);
        assert_eq!(c.jitter.max_delay_ms, 60);
        assert_eq!(c.vad, VadSettings { mode: 2, barge_in: true });
        assert_eq!(
            c.keepalive,
            KeepaliveSettings {
                ping_interval: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(30)
            }
        );
        assert_eq!(
            c.limits,
            Limits {
                max_calls: 2000,
                max_frame_bytes: 16384,
                webhook_rate_per_ip: Some(20),
                max_body_bytes: 65536
            }
        );
        assert_eq!(c.cdr.path, PathBuf::from("voxproxy-cdr.jsonl"));
        assert_eq!(c.drain.timeout, Duration::from_secs(5));
        assert!(c.secrets.twilio_auth_token.is_none() && c.secrets.admin_token.is_none());
        // An empty file is the same as no file.
        let from_empty_file = from_file("").unwrap();
        assert_eq!(from_empty_file.server, c.server);
        assert_eq!(from_empty_file.rtp, c.rtp);
    }

    #[test]
    fn minimal_file_from_the_design_loads() {
        let c = from_file("[cdr]\npath = \"/var/lib/voxproxy/cdr.jsonl\"\n\n[drain]\ntimeout = \"5s\"\n")
            .unwrap();
        assert_eq!(c.cdr.path, PathBuf::from("/var/lib/voxproxy/cdr.jsonl"));
        assert_eq!(c.drain.timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_full_file_sets_every_key() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "cert").unwrap();
        std::fs::write(&key, "key").unwrap();
        let text = format!(
            r#"
[server]
listen = "[::1]:9443"
public_url = "https://voice.example.com/proxy/"
workers = 3
io = "epoll"
tls = {{ cert = {cert:?}, key = {key:?} }}

[twilio]
account_sid = "AC0123456789abcdef0123456789ABCDEF"
api_base = "http://127.0.0.1:9999"
validate_signatures = false

[rtp]
bind = "0.0.0.0"
ports = "20000-20009"
backend = "10.1.2.3:5004"
codec = "l16-16k"
ptime_ms = 40
dtmf_payload_type = 110
payload_type = 98

[jitter]
max_delay_ms = 120

[vad]
mode = 0
barge_in = false

[keepalive]
ping_interval = "2s500ms"
idle_timeout = "1m"

[limits]
max_calls = 10
max_frame_bytes = 4096
webhook_rate_per_ip = 0
max_body_bytes = 2048

[cdr]
path = "calls.jsonl"

[drain]
timeout = "0s"
"#
        );
        let c = from_file(&text).unwrap();
        assert_eq!(c.server.listen, "[::1]:9443".parse().unwrap());
        assert_eq!(c.server.public_url.as_str(), "https://voice.example.com/proxy");
        assert_eq!(c.server.workers.get(), 3);
        assert_eq!(c.server.io, IoMode::Epoll);
        assert_eq!(c.server.tls, Some(TlsFiles { cert, key }));
        assert_eq!(c.twilio.account_sid.as_deref(), Some("AC0123456789abcdef0123456789ABCDEF"));
        assert_eq!(c.twilio.api_base.as_str(), "http://127.0.0.1:9999");
        assert!(!c.twilio.validate_signatures);
        assert_eq!(c.rtp.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(c.rtp.ports, PortRange { low: 20000, high: 20009 });
        assert_eq!(c.rtp.backend, "10.1.2.3:5004".parse().unwrap());
        assert_eq!(c.rtp.codec, Codec::L16Wideband);
        assert_eq!((c.rtp.ptime_ms, c.rtp.dtmf_payload_type, c.rtp.payload_type), (40, 110, 98));
        assert_eq!(c.jitter.max_delay_ms, 120);
        assert_eq!(c.vad, VadSettings { mode: 0, barge_in: false });
        assert_eq!(c.keepalive.ping_interval, Duration::from_millis(2500));
        assert_eq!(c.keepalive.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            c.limits,
            Limits { max_calls: 10, max_frame_bytes: 4096, webhook_rate_per_ip: None, max_body_bytes: 2048 }
        );
        assert_eq!(c.cdr.path, PathBuf::from("calls.jsonl"));
        assert_eq!(c.drain.timeout, Duration::ZERO);
        assert_eq!(c.warnings().len(), 2, "{:?}", c.warnings());
    }

    #[test]
    fn file_then_env_then_flag_for_the_same_key() {
        let file = Some((Path::new("p.toml"), "[server]\nlisten = \"127.0.0.1:1001\"\n"));
        let env = [("VOXPROXY_SERVER_LISTEN", "127.0.0.1:1002")];
        let flag = flags(&["--listen", "127.0.0.1:1003"]);
        let none = ServeArgs::default();

        let port = |file, args: &ServeArgs, env: &[(&str, &str)]| {
            Config::from_sources(file, args, env.iter().copied()).unwrap().server.listen.port()
        };
        assert_eq!(port(None, &none, &[]), 8080);
        assert_eq!(port(file, &none, &[]), 1001);
        assert_eq!(port(file, &none, &env), 1002);
        assert_eq!(port(file, &flag, &env), 1003);
        assert_eq!(port(None, &flag, &[]), 1003);
        assert_eq!(port(file, &flag, &[]), 1003);
    }

    #[test]
    fn every_flag_overrides_its_key() {
        let args = flags(&[
            "--listen",
            "0.0.0.0:80",
            "--public-url",
            "https://a.example",
            "--backend",
            "192.0.2.1:7000",
            "--rtp-ports",
            "30000-30001",
            "--workers",
            "7",
            "--io",
            "uring",
        ]);
        let file = "[server]\nworkers = 2\nio = \"epoll\"\n[rtp]\nports = \"50000-50001\"\n";
        let c =
            Config::from_sources(Some((Path::new("f.toml"), file)), &args, [("VOXPROXY_SERVER_IO", "auto")])
                .unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(c.server.public_url.as_str(), "https://a.example");
        assert_eq!(c.rtp.backend, "192.0.2.1:7000".parse().unwrap());
        assert_eq!(c.rtp.ports, PortRange { low: 30000, high: 30001 });
        assert_eq!(c.server.workers.get(), 7);
        assert_eq!(c.server.io, IoMode::Uring);
    }

    #[test]
    fn clap_rejects_an_io_mode_it_does_not_know() {
        assert!(TestCli::try_parse_from(["serve", "--io", "kqueue"]).is_err());
    }

    #[test]
    fn env_names_follow_section_and_key_upper_cased() {
        for (i, info) in KEYS.iter().enumerate() {
            assert_eq!(info.key as usize, i, "KEYS is out of order at {}", info.path);
            let derived = format!("VOXPROXY_{}", info.path.to_ascii_uppercase().replace('.', "_"));
            assert_eq!(info.env, derived);
        }
    }

    #[test]
    fn every_key_can_be_set_from_the_environment() {
        let c = from_env(&[
            ("VOXPROXY_SERVER_PUBLIC_URL", "https://b.example:8443"),
            ("VOXPROXY_SERVER_WORKERS", "5"),
            ("VOXPROXY_TWILIO_VALIDATE_SIGNATURES", "no"),
            ("VOXPROXY_RTP_CODEC", "pcma"),
            ("VOXPROXY_RTP_PTIME_MS", "10"),
            ("VOXPROXY_RTP_DTMF_PAYLOAD_TYPE", "96"),
            ("VOXPROXY_JITTER_MAX_DELAY_MS", "0"),
            ("VOXPROXY_VAD_MODE", "3"),
            ("VOXPROXY_VAD_BARGE_IN", "FALSE"),
            ("VOXPROXY_KEEPALIVE_PING_INTERVAL", "250ms"),
            ("VOXPROXY_KEEPALIVE_IDLE_TIMEOUT", "1h"),
            ("VOXPROXY_LIMITS_MAX_CALLS", "1"),
            ("VOXPROXY_CDR_PATH", "/tmp/x.jsonl"),
            ("VOXPROXY_DRAIN_TIMEOUT", "1m"),
            ("VOXPROXY_RTP_PORTS", "80-81"),
            ("VOXPROXY_RTP_ALLOW_PRIVILEGED_PORTS", "true"),
            ("PATH", "/usr/bin"),
            ("TWILIO_OTHER_THING", "ignored"),
        ])
        .unwrap();
        assert_eq!(c.server.public_url.as_str(), "https://b.example:8443");
        assert_eq!(c.server.workers.get(), 5);
        assert!(!c.twilio.validate_signatures);
        assert_eq!((c.rtp.codec, c.rtp.payload_type), (Codec::Pcma, 8));
        assert_eq!((c.rtp.ptime_ms, c.rtp.dtmf_payload_type), (10, 96));
        assert_eq!(c.jitter.max_delay_ms, 0);
        assert_eq!(c.vad, VadSettings { mode: 3, barge_in: false });
        assert_eq!(c.keepalive.ping_interval, Duration::from_millis(250));
        assert_eq!(c.keepalive.idle_timeout, Duration::from_secs(3600));
        assert_eq!(c.limits.max_calls, 1);
        assert_eq!(c.cdr.path, PathBuf::from("/tmp/x.jsonl"));
        assert_eq!(c.drain.timeout, Duration::from_secs(60));
        assert_eq!(c.rtp.ports, PortRange { low: 80, high: 81 });
    }

    #[test]
    fn empty_env_variable_counts_as_unset() {
        let file = Some((Path::new("f.toml"), "[rtp]\ncodec = \"pcma\"\n"));
        let c = Config::from_sources(file, &ServeArgs::default(), [("VOXPROXY_RTP_CODEC", "")]).unwrap();
        assert_eq!(c.rtp.codec, Codec::Pcma);
    }

    #[test]
    fn unknown_voxproxy_variable_is_rejected() {
        let msg = error_text(from_env(&[("VOXPROXY_SERVER_LISTNE", "127.0.0.1:1")]));
        assert!(msg.contains("VOXPROXY_SERVER_LISTNE"), "{msg}");
    }

    #[test]
    fn secrets_come_from_the_environment_and_never_show() {
        let token = "f00dfeedf00dfeedf00dfeedf00dfeed";
        let admin = "admin-token-long-enough-42";
        let c = from_env(&[
            ("TWILIO_AUTH_TOKEN", token),
            ("VOXPROXY_ADMIN_TOKEN", admin),
            ("TWILIO_ACCOUNT_SID", "ACffffffffffffffffffffffffffffffff"),
        ])
        .unwrap();
        assert_eq!(c.secrets.twilio_auth_token.as_ref().map(Secret::expose), Some(token));
        assert_eq!(c.secrets.admin_token.as_ref().map(Secret::expose), Some(admin));
        assert_eq!(c.twilio.account_sid.as_deref(), Some("ACffffffffffffffffffffffffffffffff"));
        let debug = format!("{c:?} {:?} {}", c.secrets, c.secrets.admin_token.as_ref().unwrap());
        assert!(!debug.contains(token) && !debug.contains(admin), "{debug}");
        assert!(debug.contains("<redacted>"));
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn secret_errors_never_show_the_value() {
        let msg = error_text(from_env(&[("TWILIO_AUTH_TOKEN", "abc def")]));
        assert!(msg.contains("TWILIO_AUTH_TOKEN") && !msg.contains("abc"), "{msg}");
        let msg = error_text(from_env(&[("VOXPROXY_ADMIN_TOKEN", "short1")]));
        assert!(msg.contains("VOXPROXY_ADMIN_TOKEN") && !msg.contains("short1"), "{msg}");
    }

    #[test]
    fn secrets_in_the_file_are_refused() {
        let msg = error_text(from_file("[twilio]\nauth_token = \"hunter2\"\n"));
        assert!(msg.contains("twilio.auth_token") && msg.contains("TWILIO_AUTH_TOKEN"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn account_sid_spellings_must_agree() {
        let a = "AC00000000000000000000000000000000";
        let b = "AC11111111111111111111111111111111";
        let msg = error_text(from_env(&[("TWILIO_ACCOUNT_SID", a), ("VOXPROXY_TWILIO_ACCOUNT_SID", b)]));
        assert!(msg.starts_with("twilio.account_sid = "), "{msg}");
        let c = from_env(&[("TWILIO_ACCOUNT_SID", a), ("VOXPROXY_TWILIO_ACCOUNT_SID", a)]).unwrap();
        assert_eq!(c.twilio.account_sid.as_deref(), Some(a));
    }

    #[test]
    fn unknown_keys_are_named_with_their_section() {
        for (text, key) in [
            ("[server]\nlistne = \"x\"\n", "server.listne"),
            ("server.tls.crt = \"a\"\n", "server.tls.crt"),
            ("[bogus]\na = 1\n", "bogus"),
            ("listen = \"127.0.0.1:1\"\n", "listen"),
            ("[rtp]\ncodec = \"pcmu\"\n[rtp.extra]\nx = 1\n", "rtp.extra"),
        ] {
            let msg = error_text(from_file(text));
            assert!(msg.contains(&format!("unknown key `{key}`")), "{text:?}: {msg}");
        }
        let msg = error_text(from_file("\n\n[server]\nlistne = \"x\"\n"));
        assert!(msg.contains("test.toml line 4"), "{msg}");
        assert!(msg.contains("listen, public_url, workers, io, tls"), "{msg}");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let msg = error_text(from_file("[server]\nlisten = \n"));
        assert!(msg.starts_with("test.toml is not valid TOML at line 2"), "{msg}");
    }

    #[test]
    fn a_section_that_is_not_a_table_is_refused() {
        let msg = error_text(from_file("server = 5\n"));
        assert!(msg.starts_with("server = 5 (from test.toml line 1)"), "{msg}");
    }

    /// Each case: file text, the key its error must name, the value shown.
    const BAD_FILE_VALUES: &[(&str, &str, &str)] = &[
        ("[server]\nlisten = \"localhost\"", "server.listen", "\"localhost\""),
        ("[server]\nlisten = 8080", "server.listen", "8080"),
        ("[server]\npublic_url = \"ftp://x\"", "server.public_url", "\"ftp://x\""),
        ("[server]\npublic_url = \"https://x/?a=1\"", "server.public_url", "\"https://x/?a=1\""),
        ("[server]\npublic_url = \"https://x/#f\"", "server.public_url", "\"https://x/#f\""),
        ("[server]\npublic_url = \"https://\"", "server.public_url", "\"https://\""),
        ("[server]\npublic_url = \"https://u:p@x\"", "server.public_url", "\"https://u:p@x\""),
        ("[server]\npublic_url = \"https://x:99999\"", "server.public_url", "\"https://x:99999\""),
        ("[server]\npublic_url = \"https://[::1\"", "server.public_url", "\"https://[::1\""),
        ("[server]\nworkers = 0", "server.workers", "0"),
        ("[server]\nworkers = 1025", "server.workers", "1025"),
        ("[server]\nworkers = \"four\"", "server.workers", "\"four\""),
        ("[server]\nio = \"kqueue\"", "server.io", "\"kqueue\""),
        ("[server.tls]\ncert = \"/nonexistent/cert.pem\"", "server.tls.cert", "\"/nonexistent/cert.pem\""),
        ("[server.tls]\nkey = \"/\"", "server.tls.key", "\"/\""),
        ("[twilio]\naccount_sid = \"AC123\"", "twilio.account_sid", "\"AC123\""),
        ("[twilio]\naccount_sid = \"XX0123456789abcdef0123456789abcdef\"", "twilio.account_sid", "\"XX"),
        ("[twilio]\napi_base = \"api.twilio.com\"", "twilio.api_base", "\"api.twilio.com\""),
        ("[twilio]\nvalidate_signatures = \"yes\"", "twilio.validate_signatures", "\"yes\""),
        ("[rtp]\nbind = \"127.0.0.1:5\"", "rtp.bind", "\"127.0.0.1:5\""),
        ("[rtp]\nports = \"5000-4000\"", "rtp.ports", "\"5000-4000\""),
        ("[log]\nformat = \"xml\"", "log.format", "\"xml\""),
        ("[twilio]\nstream_parameters = \"Tenant\"", "twilio.stream_parameters", "\"Tenant\""),
        ("[log]\nlevel = \"info debug\"", "log.level", "\"info debug\""),
        ("[rtp]\nports = \"5000\"", "rtp.ports", "\"5000\""),
        ("[rtp]\nports = \"0-10\"", "rtp.ports", "\"0-10\""),
        ("[rtp]\nports = \"5000-70000\"", "rtp.ports", "\"5000-70000\""),
        ("[rtp]\nports = \"80-90\"", "rtp.ports", "\"80-90\""),
        ("[rtp]\nports = 5000", "rtp.ports", "5000"),
        ("[rtp]\nallow_privileged_ports = 1", "rtp.allow_privileged_ports", "1"),
        ("[rtp]\nbackend = \"0.0.0.0:4000\"", "rtp.backend", "\"0.0.0.0:4000\""),
        ("[rtp]\nbackend = \"backend:4000\"", "rtp.backend", "\"backend:4000\""),
        ("[rtp]\ncodec = \"opus\"", "rtp.codec", "\"opus\""),
        ("[rtp]\nptime_ms = 25", "rtp.ptime_ms", "25"),
        ("[rtp]\nptime_ms = 60", "rtp.ptime_ms", "60"),
        ("[rtp]\ndtmf_payload_type = 128", "rtp.dtmf_payload_type", "128"),
        ("[rtp]\ndtmf_payload_type = 72", "rtp.dtmf_payload_type", "72"),
        ("[rtp]\ndtmf_payload_type = -1", "rtp.dtmf_payload_type", "-1"),
        ("[rtp]\npayload_type = 200", "rtp.payload_type", "200"),
        ("[rtp]\npayload_type = 101", "rtp.payload_type", "101"),
        ("[rtp]\ndtmf_payload_type = 0", "rtp.dtmf_payload_type", "0"),
        ("[jitter]\nmax_delay_ms = 1001", "jitter.max_delay_ms", "1001"),
        ("[jitter]\nmax_delay_ms = \"60ms\"", "jitter.max_delay_ms", "\"60ms\""),
        ("[vad]\nmode = 4", "vad.mode", "4"),
        ("[vad]\nbarge_in = \"true\"", "vad.barge_in", "\"true\""),
        ("[keepalive]\nping_interval = \"0s\"", "keepalive.ping_interval", "\"0s\""),
        ("[keepalive]\nping_interval = \"2h\"", "keepalive.ping_interval", "\"2h\""),
        ("[keepalive]\nping_interval = 10", "keepalive.ping_interval", "10"),
        ("[keepalive]\nping_interval = \"40s\"", "keepalive.ping_interval", "\"40s\""),
        ("[keepalive]\nidle_timeout = \"10s\"", "keepalive.idle_timeout", "\"10s\""),
        ("[keepalive]\nidle_timeout = \"30 s\"", "keepalive.idle_timeout", "\"30 s\""),
        ("[keepalive]\nidle_timeout = \"25h\"", "keepalive.idle_timeout", "\"25h\""),
        ("[limits]\nmax_calls = 0", "limits.max_calls", "0"),
        ("[limits]\nmax_frame_bytes = 100", "limits.max_frame_bytes", "100"),
        ("[limits]\nwebhook_rate_per_ip = -5", "limits.webhook_rate_per_ip", "-5"),
        ("[limits]\nmax_body_bytes = 99999999999", "limits.max_body_bytes", "99999999999"),
        ("[cdr]\npath = \"\"", "cdr.path", "\"\""),
        ("[cdr]\npath = \"/\"", "cdr.path", "\"/\""),
        ("[drain]\ntimeout = \"5\"", "drain.timeout", "\"5\""),
        ("[drain]\ntimeout = \"2h\"", "drain.timeout", "\"2h\""),
    ];

    #[test]
    fn backend_port_zero_means_learn_it_from_the_backend() {
        let c = from_file("[rtp]\nbackend = \"10.0.0.7:0\"\n").expect("port 0 latches");
        assert_eq!(c.rtp.backend, "10.0.0.7:0".parse().unwrap());
    }

    #[test]
    fn every_bad_file_value_names_its_key_and_value() {
        for (text, key, value) in BAD_FILE_VALUES {
            let msg = error_text(from_file(text));
            let start = format!("{key} = {value}");
            assert!(msg.starts_with(&start), "{text:?} gave: {msg}");
            assert!(msg.contains("(from test.toml line 2)"), "{text:?} gave: {msg}");
            assert!(!msg.contains('\n'), "{text:?} gave a multi-line message: {msg}");
        }
    }

    #[test]
    fn every_key_is_exercised_by_a_bad_value() {
        for info in &KEYS {
            let covered = BAD_FILE_VALUES.iter().any(|(_, key, _)| *key == info.path);
            assert!(covered, "no bad-value test for {}", info.path);
        }
    }

    #[test]
    fn bad_env_values_name_the_key_and_the_variable() {
        let msg = error_text(from_env(&[("VOXPROXY_RTP_PORTS", "5000-4000")]));
        assert_eq!(
            msg,
            "rtp.ports = \"5000-4000\" (from VOXPROXY_RTP_PORTS): the low port must not exceed the high port"
        );
        let msg = error_text(from_env(&[("VOXPROXY_JITTER_MAX_DELAY_MS", "lots")]));
        assert!(
            msg.starts_with("jitter.max_delay_ms = \"lots\" (from VOXPROXY_JITTER_MAX_DELAY_MS): "),
            "{msg}"
        );
        let msg = error_text(from_env(&[("VOXPROXY_VAD_BARGE_IN", "maybe")]));
        assert!(
            msg.starts_with("vad.barge_in = \"maybe\" (from VOXPROXY_VAD_BARGE_IN): expected true"),
            "{msg}"
        );
    }

    #[test]
    fn bad_flag_values_name_the_key_and_the_flag() {
        let args = flags(&["--workers", "0"]);
        let msg = error_text(Config::from_sources(None, &args, NO_ENV));
        assert!(
            msg.starts_with("server.workers = \"0\" (from --workers): expected an integer from 1"),
            "{msg}"
        );
    }

    #[test]
    fn cross_field_errors_blame_the_key_that_was_set() {
        // ping set above the default idle timeout: the ping is at fault.
        let msg = error_text(from_env(&[("VOXPROXY_KEEPALIVE_PING_INTERVAL", "45s")]));
        assert!(msg.starts_with("keepalive.ping_interval = \"45s\""), "{msg}");
        // Both set: the idle timeout is named.
        let msg = error_text(from_env(&[
            ("VOXPROXY_KEEPALIVE_PING_INTERVAL", "5s"),
            ("VOXPROXY_KEEPALIVE_IDLE_TIMEOUT", "5s"),
        ]));
        assert!(msg.starts_with("keepalive.idle_timeout = \"5s\""), "{msg}");
        // The DTMF type collides with L16's default dynamic type 96.
        let msg = error_text(from_env(&[
            ("VOXPROXY_RTP_CODEC", "l16-8k"),
            ("VOXPROXY_RTP_DTMF_PAYLOAD_TYPE", "96"),
        ]));
        assert!(msg.starts_with("rtp.dtmf_payload_type = \"96\""), "{msg}");
    }

    #[test]
    fn tls_needs_cert_and_key_together() {
        let mut cert = tempfile::NamedTempFile::new().unwrap();
        cert.write_all(b"pem").unwrap();
        let path = cert.path().to_str().unwrap().to_owned();
        let msg = error_text(from_env(&[("VOXPROXY_SERVER_TLS_CERT", &path)]));
        assert!(
            msg.starts_with("server.tls.cert = ") && msg.contains("server.tls.key must be set too"),
            "{msg}"
        );
        let msg = error_text(from_env(&[("VOXPROXY_SERVER_TLS_KEY", &path)]));
        assert!(
            msg.starts_with("server.tls.key = ") && msg.contains("server.tls.cert must be set too"),
            "{msg}"
        );
        let c = from_env(&[("VOXPROXY_SERVER_TLS_CERT", &path), ("VOXPROXY_SERVER_TLS_KEY", &path)]).unwrap();
        assert_eq!(c.server.tls.map(|t| t.key), Some(PathBuf::from(&path)));
    }

    #[test]
    fn load_reads_the_named_file_or_says_which_it_could_not_read() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"[vad]\nmode = 1\n").unwrap();
        let args = ServeArgs { config: Some(file.path().to_path_buf()), ..ServeArgs::default() };
        assert_eq!(Config::load(&args, NO_ENV).unwrap().vad.mode, 1);

        let missing = file.path().with_extension("missing");
        let args = ServeArgs { config: Some(missing.clone()), ..ServeArgs::default() };
        let msg = error_text(Config::load(&args, NO_ENV));
        assert!(msg.contains(&missing.display().to_string()), "{msg}");
    }

    #[test]
    fn base_urls_lose_trailing_slashes() {
        let base = |s| check_base_url(s).map(|u| u.to_string());
        assert_eq!(base("https://x.example/"), Ok("https://x.example".to_owned()));
        assert_eq!(base("HTTP://[::1]:80/a/"), Ok("http://[::1]:80/a".to_owned()));
        assert!(check_base_url("https://x.example:0").is_err());
        assert!(check_base_url("https://bad host").is_err());
    }

    #[test]
    fn upper_case_scheme_and_host_are_accepted_and_normalised() {
        // Issue 9 item 8: this was refused with a wrong message.
        let c = from_env(&[
            ("VOXPROXY_SERVER_PUBLIC_URL", "HTTPS://Voice.Example.com/"),
            ("VOXPROXY_TWILIO_API_BASE", "Http://API.Example.com:8080/Base/"),
        ])
        .unwrap();
        assert_eq!(c.server.public_url.as_str(), "https://voice.example.com");
        assert_eq!(c.twilio.api_base.as_str(), "http://api.example.com:8080/Base");
        let msg = error_text(from_env(&[("VOXPROXY_SERVER_PUBLIC_URL", "wss://x.example")]));
        assert_eq!(
            msg,
            "server.public_url = \"wss://x.example\" (from VOXPROXY_SERVER_PUBLIC_URL): the URL's scheme is \
             \"wss\"; it must start with http:// or https://"
        );
    }

    #[test]
    fn durations_parse_as_documented() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("5s"), Ok(ms(5_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1h2m3s4ms"), Ok(ms(3_723_004)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("007s"), Ok(ms(7_000)));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("5"), Err(DurationError::MissingUnit));
        assert_eq!(parse_duration("s"), Err(DurationError::MissingNumber));
        assert_eq!(parse_duration("5sec"), Err(DurationError::UnknownUnit { unit: "sec".into() }));
        assert_eq!(parse_duration("1.5s"), Err(DurationError::UnexpectedCharacter { found: '.' }));
        assert_eq!(parse_duration("-1s"), Err(DurationError::UnexpectedCharacter { found: '-' }));
        assert_eq!(parse_duration("5 s"), Err(DurationError::UnexpectedCharacter { found: ' ' }));
        assert_eq!(parse_duration("1s1m"), Err(DurationError::UnitOrder));
        assert_eq!(parse_duration("1s1s"), Err(DurationError::UnitOrder));
        assert_eq!(parse_duration("5µs"), Err(DurationError::UnexpectedCharacter { found: 'µ' }));
        assert_eq!(parse_duration("99999999999999999999ms"), Err(DurationError::TooLarge));
        assert_eq!(parse_duration("18446744073709551615h"), Err(DurationError::TooLarge));
        assert_eq!(parse_duration("18446744073709551615ms"), Ok(ms(u64::MAX)));
    }

    #[test]
    fn durations_format_canonically() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_micros(1500)), "1ms");
    }

    proptest! {
        #[test]
        fn duration_round_trips(total_ms in 0u64..=u64::MAX / 2) {
            let d = Duration::from_millis(total_ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn duration_parts_add_up(
            h in proptest::option::of(0u64..100_000),
            m in proptest::option::of(0u64..100_000),
            s in proptest::option::of(0u64..100_000),
            ms in proptest::option::of(0u64..100_000),
        ) {
            prop_assume!(h.is_some() || m.is_some() || s.is_some() || ms.is_some());
            let mut text = String::new();
            let mut expected = 0u64;
            for (part, unit, factor) in [(h, "h", 3_600_000), (m, "m", 60_000), (s, "s", 1_000), (ms, "ms", 1)] {
                if let Some(n) = part {
                    text.push_str(&format!("{n}{unit}"));
                    expected += n * factor;
                }
            }
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_millis(expected)));
        }

        #[test]
        fn duration_parser_never_panics(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }

        #[test]
        fn any_env_value_gives_a_config_or_a_one_line_error(
            key in proptest::sample::select(KEYS.iter().map(|i| i.env).collect::<Vec<_>>()),
            value in "\\PC{0,40}",
        ) {
            if let Err(e) = from_env(&[(key, value.as_str())]) {
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n'));
                // Cross-field errors may blame the partner key; either way the
                // message starts by naming a key.
                prop_assert!(KEYS.iter().any(|i| msg.starts_with(&format!("{} = ", i.path))), "{}", msg);
            }
        }
    }
}
