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
//! Every key is declared once, in `config/keys.rs`: its name, type, default
//! (written as in the file, and checked like any value), what it accepts and
//! what a wrongly typed value is told. The environment variable names, the
//! keys the file may hold, the defaults and this table all come from there
//! (a test keeps this table equal to [`key_table`]). Adding a key is one row
//! there, one field in the settings types below and one line that resolves
//! it.
//!
//! | key | type | default | accepted |
//! | --- | --- | --- | --- |
//! | `server.listen` | string | `"127.0.0.1:8080"` | IP address and port |
//! | `server.public_url` | string | `"http://127.0.0.1:8080"` | `http://` or `https://` URL Twilio reaches this proxy at, without query or fragment; scheme and host are case-insensitive (written lower-case), a trailing `/` is dropped |
//! | `server.workers` | integer | usable CPUs (at most 1024) | 1 to 1024 |
//! | `server.io` | string | `"auto"` | `auto`, `uring`, `epoll` |
//! | `server.tls.cert` | string | none (plain HTTP) | path of a readable PEM certificate chain; with `server.tls.key` |
//! | `server.tls.key` | string | none (plain HTTP) | path of a readable PEM private key; with `server.tls.cert` |
//! | `server.admin_listen` | string | none (all routes on `server.listen`) | IP address and port of a second, plain-HTTP listener that alone serves `/metrics`, `/v1/*` and `/readyz` plus `/healthz`; `server.listen` then serves Twilio's routes and `/healthz`, `/readyz` only |
//! | `twilio.account_sid` | string | none | `AC` and 32 hex digits |
//! | `twilio.api_base` | string | `"https://api.twilio.com"` | `http://` or `https://` URL without query or fragment |
//! | `twilio.validate_signatures` | boolean | `true` |  |
//! | `twilio.stream_parameters` | string | `""` | `"Name=value,Name2=value2"`: extra `<Parameter>`s on every stream of the global route (names of letters, digits, `_` and `-`; values without `,`) |
//! | `twilio.caller_id` | string | none (the INVITE's From user) | E.164 number (`+` and 8 to 15 digits): the From of calls a PBX places through `sip.listen` |
//! | `rtp.bind` | string | `"127.0.0.1"` | IP address the RTP sockets bind to |
//! | `rtp.ports` | string | `"40000-44999"` | `"LO-HI"`, 1024 to 65535; one port per call, so at least `limits.max_calls` ports |
//! | `rtp.allow_privileged_ports` | boolean | `false` | `true` lets `rtp.ports` go below 1024 |
//! | `rtp.backend` | string | `"127.0.0.1:4000"` | the voice stack: `IP:PORT` for RTP (port 0 learns each call's port from the backend's first packet, e.g. Asterisk external media), a `sip:` URI (each call INVITEs it; `{to}`/`{from}` in the user part; `;transport=tcp`; `sips:` is refused so far) or a `ws://`/`wss://` URL of a WebSocket bot (`ws.*`) |
//! | `rtp.codec` | string | `"pcmu"` | `pcmu`, `pcma`, `l16-8k`, `l16-16k` |
//! | `rtp.ptime_ms` | integer | `20` | 10, 20, 30, 40 |
//! | `rtp.dtmf_payload_type` | integer | `101` | 0 to 127 but not 72 to 76 |
//! | `rtp.payload_type` | integer | the codec's: PCMU 0, PCMA 8, L16 96 | 0 to 127 but not 72 to 76, not the DTMF type |
//! | `rtp.advertise` | string | `rtp.bind` | IP address put in the SDP `c=` line of SIP calls, when the PBX reaches this host at another address (NAT); not unspecified |
//! | `sip.listen` | string | none (no SIP listener) | IP address and port of the SIP listener (UDP and TCP) a PBX sends INVITEs to, to place calls through Twilio; needs `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN` |
//! | `sip.allow` | string | `""` | comma-separated CIDRs (`10.0.0.0/8,192.0.2.7`, at most 64) whose INVITEs are accepted; empty: none (every INVITE gets 403) |
//! | `sip.username` | string | none | user name answering a PBX's 401/407 challenge to voxproxy's INVITEs, with `VOXPROXY_SIP_PASSWORD` (a secret, environment only) |
//! | `sip.ring_timeout` | duration | `"30s"` | more than 0, at most 10 m: how long a `sip:` backend may ring without answering before voxproxy cancels the INVITE and the leg fails (the route's `fallback`) |
//! | `sip.max_calls` | integer | `256` | 1 to 100000: calls `sip.listen` carries at once on each transport (UDP, TCP); more INVITEs get 503 |
//! | `sip.max_calls_per_source` | integer | `16` | 1 to `sip.max_calls`: calls at once from one source IP address; more INVITEs get 503 |
//! | `sip.invites_per_second` | integer | `10` | 1 to 10000: new INVITEs a second (and burst) taken from one source IP address; more are dropped unanswered (the PBX sends them again) and counted |
//! | `sip.max_tcp_connections` | integer | `64` | 1 to 100000: TCP connections to `sip.listen` at once (at most 8 from one address); more are closed and counted |
//! | `jitter.max_delay_ms` | integer | `60` | 0 to 1000 |
//! | `vad.mode` | integer | `2` | 0 (least aggressive) to 3 |
//! | `vad.barge_in` | boolean | `true` |  |
//! | `keepalive.ping_interval` | duration | `"10s"` | more than 0, at most 1 h, shorter than `idle_timeout` |
//! | `keepalive.idle_timeout` | duration | `"30s"` | more than 0, at most 24 h |
//! | `ws.protocol` | string | `"twilio"` | what a `ws://`/`wss://` bot speaks: `twilio` (Media Streams JSON) or `l16` (Vonage's binary 16-bit PCM) |
//! | `ws.sample_rate` | integer | `16000` | 8000, 16000, 24000: the PCM rate of `ws.protocol = "l16"` |
//! | `ws.connect_timeout` | duration | `"3s"` | more than 0, at most 1 m: the bot's TCP, TLS and WebSocket handshakes; past it the leg failed (the route's `fallback`) |
//! | `ws.barge_in` | boolean | `true` | caller speech (voxproxy's VAD) over the bot's audio clears it, for bots that do not clear by themselves |
//! | `ws.max_queued_ms` | integer | `30000` | 20 to 300000: the bot's audio kept waiting for Twilio; more is dropped and counted |
//! | `limits.max_calls` | integer | `2000` | 1 to 1 000 000 |
//! | `limits.max_frame_bytes` | integer | `16384` | 1024 to 16 MiB: largest WebSocket message |
//! | `limits.webhook_rate_per_ip` | integer | `20` | webhook requests per second per client IP, 0 = no limit |
//! | `limits.max_body_bytes` | integer | `65536` | 1024 to 16 MiB: largest HTTP request body |
//! | `limits.calls_per_caller_per_minute` | integer | `0` | new calls per minute per calling number (`From`), the rest answered busy; 0 = no limit |
//! | `cdr.path` | string | `"voxproxy-cdr.jsonl"` | file path, not a directory (relative to the working directory) |
//! | `drain.timeout` | duration | `"5s"` | 0 to 1 h |
//! | `log.format` | string | `"text"` | `text` (human-readable lines) or `json` (one JSON object per line) |
//! | `log.level` | string | `"info"` | a tracing filter such as `info`, `warn`, `voxproxy=debug` |
//! | `recording.enabled` | boolean | `false` | `true` records every call to a two-channel WAV in `recording.dir` (a route's `recording.enabled` overrides it) |
//! | `recording.dir` | string | `"recordings"` | directory the WAV files go in (created at start when recording is on anywhere) |
//! | `recording.twilio` | boolean | `false` | `true` also records every streamed call on Twilio's side (REST, dual-channel; the status callback lands in the record; a route's `recording.twilio` overrides it) |
//! | `capture.enabled` | boolean | `false` | `true` captures every call's inputs for `voxproxy replay` in `capture.dir` (a route's `capture.enabled` overrides it) |
//! | `capture.dir` | string | `"captures"` | directory the capture files go in (created at start when capture is on anywhere) |
//! | `capture.max_bytes` | integer | `67108864` | 64 KiB to 4 GiB: largest capture file per call (the default holds about 35 minutes of a call); the capture stops there, marked truncated |
//! | `otel.endpoint` | string | none (no traces) | `http://` or `https://` base URL of an OTLP/HTTP collector (`http://127.0.0.1:4318`); spans go to `<endpoint>/v1/traces` as protobuf |
//! | `otel.service_name` | string | `"voxproxy"` | 1 to 128 printable characters: the `service.name` of every span |
//! | `otel.sample_percent` | integer | `100` | 0 to 100: the share of calls traced, decided from the trace id (so every instance and every peer decides alike) |
//! | `otel.max_queue` | integer | `4096` | 64 to 1 000 000: finished spans waiting for export; more are dropped (about 6 per call) |
//! | `otel.export_timeout` | duration | `"5s"` | more than 0, at most 1 m: one export to the collector, retries included |
//! | `store.url` | string | none (records only in `cdr.path`) | `postgres://` or `postgresql://` URL of a PostgreSQL database (the password from the URL or `PGPASSWORD`, never logged): call records, every instance's sessions and events go there, `cdr.path` becomes the spool |
//! | `store.instance_id` | string | the host name and the process id | 1 to 64 letters, digits, `.`, `_`, `-`: this instance's name in the store |
//! | `store.admin_url` | string | `http://` and the bound `server.admin_listen`, else `server.listen` | `http://` URL at which the other instances reach this one's `/v1` API (session requests are forwarded there) |
//! | `store.query_timeout` | duration | `"5s"` | more than 0, at most 1 m: the longest one database round trip may take; past it the connection is dropped and made again |
//!
//! Durations are strings of one or more `<integer><unit>` parts with the units
//! `h`, `m`, `s` and `ms`, largest first and each at most once: `"250ms"`,
//! `"5s"`, `"1m30s"`, `"1h"`, `"2s500ms"`. No fractions, signs or spaces; see
//! [`parse_duration`].
//!
//! # Routes
//!
//! `[[routes]]` tables, in the file only (an environment variable cannot
//! express a list of tables, and no flag sets them), route calls by the
//! called number: the first route whose `to` matches wins, `"*"` matches any
//! number, and the global settings (`rtp.backend`,
//! `twilio.stream_parameters`) are the implicit last route
//! ([`Config::default_route`]). `examples/voxproxy.toml` is a complete,
//! commented file.
//!
//! | key | accepted |
//! | --- | --- |
//! | `to` | `"*"` or the called number in E.164 form (`"+14155550199"`); required; a route that an earlier one shadows is an error |
//! | `backend` | as `rtp.backend`; absent: `rtp.backend` |
//! | `greeting` | text said first (`<Say>`), at most 1600 characters |
//! | `voice`, `language` | Twilio `<Say>` voice and language of `greeting` and `fallback` |
//! | `parameters` | table of extra `<Parameter>`s (`{ tenant_id = "clinic_123" }`), after `CallSid`, `From`, `To`; at most 32 |
//! | `mode` | `"connect"` (default: `<Connect><Stream>`, both ways) or `"fork"` (`<Start><Stream>`, listen-only while a forward goes on; needs `forward_to`) |
//! | `track` | fork mode only: `"inbound_track"`, `"outbound_track"`, `"both_tracks"` |
//! | `forward_to` | a number (E.164) `<Dial>`led first |
//! | `forward_timeout` | how long it rings, `"5s"` to `"10m"` in whole seconds; default `"20s"` |
//! | `on_missed` | forward not answered or leg failed: `"stream"` (default: the backend takes the call), `"sms"` (send `sms_text` and hang up), `"hangup"` |
//! | `sms_text` | the SMS of `on_missed = "sms"` (required there, refused elsewhere) |
//! | `fallback` | text said when the backend cannot take the call or drops it |
//!
//! Errors name `routes[N].key`, for example `routes[1].forward_timeout =
//! "20x" (from voxproxy.toml line 14): …`. What each key does to the TwiML is
//! decided in `voxproxy_adapters::route`. `voxproxy serve` runs RTP and SIP
//! (UDP, TCP) backends; it refuses `sips:`/TLS and `ws://` backends, of the
//! global settings or of a route, until those legs are wired in
//! ([`Config::not_runnable_yet`]).
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
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};
use std::time::Duration;

use voxproxy_adapters::route::{Backend, LegKind, Route, RouteTo, SipTransport};
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
    /// `[sip]`: the SIP calls voxproxy places to `sip:` backends, and the
    /// listener through which a PBX places calls via Twilio.
    pub sip: SipSettings,
    /// `[jitter]`: the jitter buffer on audio from the voice stack.
    pub jitter: JitterSettings,
    /// `[vad]`: voice activity detection on the caller's audio.
    pub vad: VadSettings,
    /// `[keepalive]`: WebSocket pings and idle timeouts.
    pub keepalive: KeepaliveSettings,
    /// `[ws]` settings: the WebSocket bot leg.
    pub ws: WsSettings,
    /// `[limits]`: bounds on load and on message sizes.
    pub limits: Limits,
    /// `[cdr]`: call records.
    pub cdr: CdrSettings,
    /// `[recording]`.
    pub recording: RecordingSettings,
    /// `[capture]`: inputs of calls for `voxproxy replay`.
    pub capture: CaptureSettings,
    /// `[otel]`: OpenTelemetry traces.
    pub otel: OtelSettings,
    /// `[store]`: PostgreSQL shared by several instances.
    pub store: StoreSettings,
    /// `[log]`: structured logs on stderr.
    pub log: LogSettings,
    /// `[drain]`: graceful shutdown.
    pub drain: DrainSettings,
    /// `[[routes]]`: per-number routes in file order, first match wins
    /// (`voxproxy_adapters::route::match_route`).
    pub routes: Vec<Route>,
    /// The global settings as the implicit last route: `rtp.backend`,
    /// `twilio.stream_parameters`, connect mode, no greeting or forward.
    pub default_route: Route,
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
    /// `server.admin_listen`: when set, the address of the admin listener
    /// (plain HTTP), the only one serving `/metrics` and `/v1/*`.
    pub admin_listen: Option<SocketAddr>,
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
    /// `twilio.caller_id`: the From number of calls a PBX places through
    /// `sip.listen`; `None` passes on the INVITE's From user.
    pub caller_id: Option<String>,
}

/// `[sip]` settings: the calls voxproxy places (Twilio → PBX) and the
/// listener for SIP → Twilio calls (a PBX dials out through Twilio).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SipSettings {
    /// `sip.username`: answers 401/407 challenges to voxproxy's INVITEs,
    /// with `VOXPROXY_SIP_PASSWORD`.
    pub username: Option<String>,
    /// `sip.ring_timeout`: how long a `sip:` backend may ring unanswered.
    pub ring_timeout: Duration,
    /// `sip.listen`: where INVITEs are accepted (UDP and TCP); `None`: no listener.
    pub listen: Option<SocketAddr>,
    /// `sip.allow`: source networks whose INVITEs are accepted; empty
    /// accepts none (every INVITE is answered 403), so a listener opened
    /// without a list places no call for anyone.
    pub allow: Vec<voxproxy_adapters::sip::server::Cidr>,
    /// `sip.max_calls` and `sip.max_calls_per_source`: the listener's call bounds.
    pub limits: voxproxy_adapters::sip::server::ServerLimits,
    /// `sip.invites_per_second`: new INVITEs a second from one source address.
    pub invites_per_second: u32,
    /// `sip.max_tcp_connections`: TCP connections to the listener at once.
    pub max_tcp_connections: usize,
}

/// `[rtp]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpSettings {
    /// `rtp.bind`: local address of the per-call RTP sockets.
    pub bind: IpAddr,
    /// `rtp.ports`: the local port range the RTP sockets are taken from.
    pub ports: PortRange,
    /// `rtp.allow_privileged_ports`: whether `ports` may go below 1024.
    pub allow_privileged_ports: bool,
    /// `rtp.backend`: the voice stack, and the leg that reaches it. For
    /// RTP, datagrams from any other source are dropped.
    pub backend: Backend,
    /// `rtp.codec`: the audio encoding on the RTP leg.
    pub codec: Codec,
    /// `rtp.ptime_ms`: milliseconds of audio per RTP packet (10, 20, 30 or 40).
    pub ptime_ms: u8,
    /// `rtp.dtmf_payload_type`: payload type of RFC 4733 telephone events.
    pub dtmf_payload_type: u8,
    /// `rtp.payload_type`, or the codec's usual type when not set.
    pub payload_type: u8,
    /// `rtp.advertise`: the address SIP calls put in their SDP, when not `bind`.
    pub advertise: Option<IpAddr>,
}

impl RtpSettings {
    /// The address a PBX sends RTP to: `rtp.advertise`, else `rtp.bind`.
    #[must_use]
    pub fn media_address(&self) -> IpAddr {
        self.advertise.unwrap_or(self.bind)
    }
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

/// `[ws]` settings: how calls reach a `ws://`/`wss://` bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsSettings {
    /// `ws.protocol` and `ws.sample_rate`: what the bot speaks.
    pub protocol: voxproxy_adapters::bot::BotProtocol,
    /// `ws.sample_rate`, as configured (used by the `l16` protocol only).
    pub sample_rate: u32,
    /// `ws.connect_timeout`: TCP, TLS and WebSocket handshakes together.
    pub connect_timeout: Duration,
    /// `ws.barge_in`: caller speech clears the bot's unplayed audio.
    pub barge_in: bool,
    /// `ws.max_queued_ms`: the bot's audio kept waiting for Twilio.
    pub max_queued_ms: u32,
}

impl WsSettings {
    /// `ws.protocol` as written.
    #[must_use]
    pub fn protocol_name(&self) -> &'static str {
        match self.protocol {
            voxproxy_adapters::bot::BotProtocol::Twilio => "twilio",
            voxproxy_adapters::bot::BotProtocol::L16(_) => "l16",
        }
    }

    /// The bot leg's settings.
    #[must_use]
    pub fn bot_config(&self) -> voxproxy_adapters::bot::BotConfig {
        voxproxy_adapters::bot::BotConfig { protocol: self.protocol, max_queued_ms: self.max_queued_ms }
    }
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
    /// `limits.calls_per_caller_per_minute`: new calls per minute per
    /// calling number; `None` when set to 0 (no limit).
    pub calls_per_caller_per_minute: Option<u32>,
}

/// `[cdr]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CdrSettings {
    /// `cdr.path`: the JSON-lines file call records are appended to.
    pub path: PathBuf,
}

/// `[store]` settings: several instances, one PostgreSQL database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// `store.url`; `None`: call records go to `cdr.path` only.
    pub url: Option<StoreUrl>,
    /// `store.instance_id`; `None`: the host name and the process id.
    pub instance_id: Option<String>,
    /// `store.admin_url`; `None`: the bound admin (or public) listener.
    pub admin_url: Option<String>,
    /// `store.query_timeout`: the longest one database round trip may take.
    pub query_timeout: Duration,
}

/// A `postgres://` URL whose `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The URL with its password, for the one place that connects.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `<redacted>`.
    #[must_use]
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.clone() };
        let authority_end = url[scheme_end..].find(['/', '?']).map_or(url.len(), |i| scheme_end + i);
        let mut out = url[..scheme_end].to_owned();
        match url[scheme_end..authority_end].rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                out.push_str(user);
                if userinfo.contains(':') {
                    out.push_str(":<redacted>");
                }
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(&url[scheme_end..authority_end]),
        }
        // A `password=` query parameter is a password too.
        for (i, part) in url[authority_end..].split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match part.find("password=") {
                Some(at) => {
                    out.push_str(&part[..at]);
                    out.push_str("password=<redacted>");
                }
                None => out.push_str(part),
            }
        }
        out
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.redacted())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Checks a `store.url`: a scheme PostgreSQL's clients know, and a URL
/// `tokio-postgres` parses (so a typo fails at start, not at the first call).
fn parse_store_url(text: &str) -> Result<StoreUrl, String> {
    let expected = Setting::StoreUrl.info().expected;
    if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) || text.len() > 2048 {
        return Err(expected.to_owned());
    }
    match text.parse::<tokio_postgres::Config>() {
        Ok(config) if !config.get_hosts().is_empty() => Ok(StoreUrl(text.to_owned())),
        Ok(_) => Err(format!("{expected}: the URL names no host")),
        // tokio-postgres's message does not quote the URL (it may hold a password).
        Err(e) => Err(format!("{expected}: {e}")),
    }
}

/// Checks a `store.instance_id`: it goes into SQL parameters, JSON and logs,
/// so a short, plain name.
fn parse_instance_id(text: &str) -> Result<String, String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if (1..=64).contains(&text.len()) && text.chars().all(plain) {
        Ok(text.to_owned())
    } else {
        Err(Setting::StoreInstanceId.info().expected.to_owned())
    }
}

/// `[recording]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingSettings {
    /// `recording.enabled`: record calls whose route does not say otherwise.
    pub enabled: bool,
    /// `recording.dir`: where the WAV files go.
    pub dir: PathBuf,
    /// `recording.twilio`: start a Twilio-side recording of calls whose
    /// route does not say otherwise.
    pub twilio: bool,
}

/// `[capture]` settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSettings {
    /// `capture.enabled`: capture calls whose route does not say otherwise.
    pub enabled: bool,
    /// `capture.dir`: where the capture files go.
    pub dir: PathBuf,
    /// `capture.max_bytes`: largest capture file per call.
    pub max_bytes: u64,
}

impl Config {
    /// Whether any call may be captured: globally or by a route.
    #[must_use]
    pub fn captures_anything(&self) -> bool {
        self.capture.enabled || self.routes.iter().any(|r| r.capture == Some(true))
    }
}

/// `[otel]` settings: one OpenTelemetry trace per call, exported over
/// OTLP/HTTP (see `crate::otel`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtelSettings {
    /// `otel.endpoint`: the collector's base URL; `None` turns tracing off.
    pub endpoint: Option<Url>,
    /// `otel.service_name`: the `service.name` resource attribute.
    pub service_name: String,
    /// `otel.sample_percent`: the share of calls traced, 0 to 100.
    pub sample_percent: u8,
    /// `otel.max_queue`: finished spans waiting for export at most.
    pub max_queue: u32,
    /// `otel.export_timeout`: one export, retries included.
    pub export_timeout: Duration,
}

impl Config {
    /// Whether any call may be recorded locally: globally or by a route.
    #[must_use]
    pub fn records_anything(&self) -> bool {
        self.recording.enabled || self.routes.iter().any(|r| r.recording == Some(true))
    }
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
    /// `VOXPROXY_SIP_PASSWORD`: the password of `sip.username`.
    pub sip_password: Option<Secret>,
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
    /// Check FILE (with the environment and the other flags, as `serve
    /// --config FILE` would load them) and exit without starting: 0 when it
    /// would start, 2 with one sentence per problem on stderr.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
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
    /// Base URL of an OTLP/HTTP collector that gets one trace per call (otel.endpoint) [default: none, no traces].
    #[arg(long, value_name = "URL")]
    pub otel_endpoint: Option<String>,
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

mod duration;
pub use duration::{DurationError, format_duration, parse_duration};

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

mod file;
mod keys;
mod reload;
pub use reload::RESTART_ONLY_KEYS;
mod routes;
mod show;
pub use show::REDACTED;

use keys::{DefaultValue, KEYS, Setting};

/// The key table of these docs (Markdown), rendered from the one
/// declaration of the keys; a test keeps the docs equal to it.
#[must_use]
pub fn key_table() -> String {
    keys::doc_table()
}

/// Every key with its environment variable and default, for the long
/// help (`voxproxy serve --help`) and the man page.
#[must_use]
pub fn key_help() -> String {
    keys::help_list()
}

const ENV_ADMIN_TOKEN: &str = "VOXPROXY_ADMIN_TOKEN";
const ENV_AUTH_TOKEN: &str = "TWILIO_AUTH_TOKEN";
const ENV_ACCOUNT_SID: &str = "TWILIO_ACCOUNT_SID";
const ENV_SIP_PASSWORD: &str = "VOXPROXY_SIP_PASSWORD";

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
    /// What the file, the environment and the flags set, by [`Setting`].
    entries: Vec<Option<Entry>>,
    /// The built-in defaults that are values ([`DefaultValue::Value`]).
    defaults: Vec<Option<Entry>>,
    /// `[[routes]]` as the file holds them.
    routes: Vec<routes::RawRoute>,
}

/// A default as the table writes it (`"\"5s\""`, `60`, `true`), as a value.
fn default_raw(literal: &str) -> Raw {
    if let Some(text) = literal.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Raw::Str(text.to_owned())
    } else if let Ok(b) = literal.parse::<bool>() {
        Raw::Bool(b)
    } else if let Ok(n) = literal.parse::<i64>() {
        Raw::Int(n)
    } else {
        // Not a literal: checked like any value, so the start fails naming the key.
        Raw::Str(literal.to_owned())
    }
}

impl Layers {
    fn new() -> Self {
        let defaults = KEYS
            .iter()
            .map(|info| match info.default {
                DefaultValue::Value(literal) => Some(Entry {
                    raw: default_raw(literal),
                    shown: literal.to_owned(),
                    origin: Origin::Default,
                }),
                DefaultValue::Described(_) => None,
            })
            .collect();
        Layers { entries: vec![None; KEYS.len()], defaults, routes: Vec::new() }
    }

    fn set(&mut self, key: Setting, entry: Entry) {
        self.entries[key as usize] = Some(entry);
    }

    /// The value that applies: set by someone, else the built-in default.
    fn get(&self, key: Setting) -> Option<&Entry> {
        self.entries[key as usize].as_ref().or(self.defaults[key as usize].as_ref())
    }

    fn is_set(&self, key: Setting) -> bool {
        self.entries[key as usize].is_some()
    }

    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let parsed = file::parse(&file::FileSource { path, text })?;
        for (key, entry) in parsed.entries {
            self.set(key, entry);
        }
        self.routes = parsed.routes;
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
        let mut sids: Vec<(String, String)> = Vec::new();
        for (name, value) in env {
            let Ok(name) = name.into().into_string() else {
                // A name that is not UTF-8 cannot be one of ours.
                continue;
            };
            let key = if name == ENV_AUTH_TOKEN
                || name == ENV_ADMIN_TOKEN
                || name == ENV_ACCOUNT_SID
                || name == ENV_SIP_PASSWORD
            {
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
                Some(Setting::TwilioAccountSid) => sids.push((value, Setting::TwilioAccountSid.info().env())),
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
                None if name == ENV_SIP_PASSWORD => {
                    check_secret(ENV_SIP_PASSWORD, &value, 1)?;
                    secrets.sip_password = Some(Secret(value));
                }
                None => sids.push((value, ENV_ACCOUNT_SID.to_owned())),
            }
        }
        if let Some((first, first_name)) = sids.first()
            && let Some((other, other_name)) = sids.iter().find(|(value, _)| value != first)
        {
            return Err(ConfigError::Invalid {
                key: Setting::TwilioAccountSid.info().path.to_owned(),
                value: quote(other),
                origin: Box::new(Origin::Env { name: other_name.clone() }),
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
                Entry { raw: Raw::Str(value), shown, origin: Origin::Env { name } },
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
            (Setting::OtelEndpoint, "--otel-endpoint", &args.otel_endpoint),
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

// ---------------------------------------------------------------------------
// Resolution: typed values with messages that blame the right layer
// ---------------------------------------------------------------------------

impl Layers {
    fn invalid(&self, key: Setting, problem: impl Into<String>) -> ConfigError {
        let info = key.info();
        let (value, origin) = match self.get(key) {
            // A refused store.url may still hold a password: never echo it.
            Some(entry) if key == Setting::StoreUrl => match &entry.raw {
                Raw::Str(s) => (format!("\"{}\"", StoreUrl(s.clone()).redacted()), entry.origin.clone()),
                _ => ("<not a string>".to_owned(), entry.origin.clone()),
            },
            Some(entry) => (entry.shown.clone(), entry.origin.clone()),
            None => (info.default_shown().to_owned(), Origin::Default),
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

/// A value every key with a [`DefaultValue::Value`] has; `None` only for a
/// key whose table row lacks one, which the tests would catch.
fn required<T>(layers: &Layers, key: Setting, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| layers.invalid(key, "has no value and no built-in default"))
}

impl Layers {
    fn resolve(&self, secrets: Secrets) -> Result<Config, ConfigError> {
        let rtp = self.rtp()?;
        let twilio = self.twilio()?;
        let routes = routes::resolve(&self.routes, &rtp.backend)?;
        let mut default_route = Route::new(RouteTo::Any, rtp.backend.clone());
        default_route.parameters.clone_from(&twilio.stream_parameters);
        Ok(Config {
            server: self.server()?,
            twilio,
            rtp,
            sip: self.sip()?,
            jitter: JitterSettings { max_delay_ms: self.int(Setting::JitterMaxDelayMs, 0..=1000)? },
            vad: VadSettings {
                mode: self.int(Setting::VadMode, 0..=3)?,
                barge_in: self.flag(Setting::VadBargeIn)?,
            },
            keepalive: self.keepalive()?,
            ws: self.ws()?,
            limits: Limits {
                max_calls: self.int(Setting::LimitsMaxCalls, 1..=1_000_000)?,
                max_frame_bytes: self.int(Setting::LimitsMaxFrameBytes, 1024..=16 << 20)?,
                webhook_rate_per_ip: Some(self.int(Setting::LimitsWebhookRatePerIp, 0..=1_000_000)?)
                    .filter(|&n| n > 0),
                max_body_bytes: self.int(Setting::LimitsMaxBodyBytes, 1024..=16 << 20)?,
                calls_per_caller_per_minute: Some(
                    self.int(Setting::LimitsCallsPerCallerPerMinute, 0..=100_000)?,
                )
                .filter(|&n| n > 0),
            },
            cdr: CdrSettings {
                path: self.value(Setting::CdrPath, |s| {
                    if s.is_empty() {
                        Err("expected a file path, not an empty string".to_owned())
                    } else if Path::new(s).is_dir() {
                        Err("this is a directory; name the file the records go in".to_owned())
                    } else {
                        Ok(PathBuf::from(s))
                    }
                })?,
            },
            drain: DrainSettings {
                timeout: self.time(Setting::DrainTimeout, Duration::from_secs(3600), true)?,
            },
            recording: RecordingSettings {
                enabled: self.flag(Setting::RecordingEnabled)?,
                dir: self.value(Setting::RecordingDir, |s| {
                    if s.is_empty() {
                        Err("expected a directory path, not an empty string".to_owned())
                    } else if Path::new(s).is_file() {
                        Err("this is a file; name the directory the recordings go in".to_owned())
                    } else {
                        Ok(PathBuf::from(s))
                    }
                })?,
                twilio: self.flag(Setting::RecordingTwilio)?,
            },
            capture: CaptureSettings {
                enabled: self.flag(Setting::CaptureEnabled)?,
                dir: self.value(Setting::CaptureDir, |s| {
                    if s.is_empty() {
                        Err("expected a directory path, not an empty string".to_owned())
                    } else if Path::new(s).is_file() {
                        Err("this is a file; name the directory the captures go in".to_owned())
                    } else {
                        Ok(PathBuf::from(s))
                    }
                })?,
                max_bytes: self.int(Setting::CaptureMaxBytes, 65_536..=1 << 32)?,
            },
            otel: self.otel()?,
            store: self.store()?,
            log: LogSettings {
                format: self.value(Setting::LogFormat, |s| match s {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    _ => Err(Setting::LogFormat.info().expected.to_owned()),
                })?,
                level: self.value(Setting::LogLevel, |s| {
                    if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_whitespace) {
                        Err(Setting::LogLevel.info().expected.to_owned())
                    } else {
                        Ok(s.to_owned())
                    }
                })?,
            },
            routes,
            default_route,
            secrets,
        })
    }

    /// A string key with a built-in default, parsed.
    fn value<T>(
        &self,
        key: Setting,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let value = self.parsed(key, parse)?;
        required(self, key, value)
    }

    /// An integer key with a built-in default.
    fn int<T: TryFrom<i64>>(
        &self,
        key: Setting,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<T, ConfigError> {
        let value = self.integer(key, range)?;
        required(self, key, value)
    }

    /// A boolean key with a built-in default.
    fn flag(&self, key: Setting) -> Result<bool, ConfigError> {
        let value = self.boolean(key)?;
        required(self, key, value)
    }

    /// A duration key with a built-in default.
    fn time(&self, key: Setting, max: Duration, allow_zero: bool) -> Result<Duration, ConfigError> {
        let value = self.duration(key, max, allow_zero)?;
        required(self, key, value)
    }

    fn otel(&self) -> Result<OtelSettings, ConfigError> {
        Ok(OtelSettings {
            endpoint: self.parsed(Setting::OtelEndpoint, check_base_url)?,
            service_name: self.value(Setting::OtelServiceName, |s| {
                let printable =
                    s.chars().all(|c| c.is_ascii_graphic() || c == ' ' || (!c.is_control() && !c.is_ascii()));
                if s.is_empty() || s.chars().count() > 128 || !printable {
                    Err(Setting::OtelServiceName.info().expected.to_owned())
                } else {
                    Ok(s.to_owned())
                }
            })?,
            sample_percent: self.int(Setting::OtelSamplePercent, 0..=100)?,
            max_queue: self.int(Setting::OtelMaxQueue, 64..=1_000_000)?,
            export_timeout: self.time(Setting::OtelExportTimeout, Duration::from_secs(60), false)?,
        })
    }

    fn server(&self) -> Result<ServerSettings, ConfigError> {
        let listen_expected = Setting::ServerListen.info().expected;
        let listen = self
            .value(Setting::ServerListen, |s| parse_socket_addr(s).map_err(|_| listen_expected.to_owned()))?;
        let public_url = self.value(Setting::ServerPublicUrl, check_base_url)?;
        let workers = self
            .integer::<u16>(Setting::ServerWorkers, 1..=1024)?
            .and_then(NonZeroU16::new)
            .unwrap_or_else(available_cpus);
        let io = self.value(Setting::ServerIo, |s| match s {
            "auto" => Ok(IoMode::Auto),
            "uring" => Ok(IoMode::Uring),
            "epoll" => Ok(IoMode::Epoll),
            _ => Err(Setting::ServerIo.info().expected.to_owned()),
        })?;
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
        let admin_listen = self.parsed(Setting::ServerAdminListen, |s| {
            parse_socket_addr(s).map_err(|_| Setting::ServerAdminListen.info().expected.to_owned())
        })?;
        if let Some(admin) = admin_listen
            && admin.port() != 0
            && admin == listen
        {
            return Err(self.invalid(
                Setting::ServerAdminListen,
                "is the address of server.listen; the admin listener needs an address or port of its own",
            ));
        }
        Ok(ServerSettings { listen, public_url, workers, io, tls, admin_listen })
    }

    fn twilio(&self) -> Result<TwilioSettings, ConfigError> {
        Ok(TwilioSettings {
            account_sid: self.parsed(Setting::TwilioAccountSid, check_account_sid)?,
            api_base: self.value(Setting::TwilioApiBase, check_base_url)?,
            validate_signatures: self.flag(Setting::TwilioValidateSignatures)?,
            stream_parameters: self.value(Setting::TwilioStreamParameters, parse_stream_parameters)?,
            caller_id: self.parsed(Setting::TwilioCallerId, |s| {
                voxproxy_adapters::route::check_e164(s)
                    .map(|()| s.to_owned())
                    .map_err(|_| Setting::TwilioCallerId.info().expected.to_owned())
            })?,
        })
    }

    fn rtp(&self) -> Result<RtpSettings, ConfigError> {
        let bind = self.value(Setting::RtpBind, |s| {
            s.parse::<IpAddr>().map_err(|_| Setting::RtpBind.info().expected.to_owned())
        })?;
        let ports = self.value(Setting::RtpPorts, parse_port_range)?;
        let allow_privileged = self.flag(Setting::RtpAllowPrivilegedPorts)?;
        if ports.low < 1024 && !allow_privileged {
            return Err(self.invalid(
                Setting::RtpPorts,
                "ports below 1024 are reserved for system services; choose ports from 1024 to 65535 \
                 or set rtp.allow_privileged_ports = true",
            ));
        }
        let backend = self.value(Setting::RtpBackend, |s| Backend::parse(s).map_err(|e| e.to_string()))?;
        let codec = self.value(Setting::RtpCodec, |s| {
            Codec::from_name(s).ok_or_else(|| Setting::RtpCodec.info().expected.to_owned())
        })?;
        let ptime_ms = match self.int(Setting::RtpPtimeMs, 10..=40)? {
            n @ (10 | 20 | 30 | 40) => n,
            _ => return Err(self.invalid(Setting::RtpPtimeMs, Setting::RtpPtimeMs.info().expected)),
        };
        let payload_type_of = |key: Setting| -> Result<Option<u8>, ConfigError> {
            match self.integer::<u8>(key, 0..=127)? {
                Some(pt) if !is_usable_payload_type(pt) => Err(self.invalid(key, key.info().expected)),
                pt => Ok(pt),
            }
        };
        let dtmf_payload_type =
            required(self, Setting::RtpDtmfPayloadType, payload_type_of(Setting::RtpDtmfPayloadType)?)?;
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
        Ok(RtpSettings {
            bind,
            ports,
            allow_privileged_ports: allow_privileged,
            backend,
            codec,
            ptime_ms,
            dtmf_payload_type,
            payload_type,
            advertise: self.parsed(Setting::RtpAdvertise, |s| match s.parse::<IpAddr>() {
                Ok(ip) if !ip.is_unspecified() => Ok(ip),
                Ok(_) => {
                    Err("the PBX needs a concrete address to send RTP to, not the unspecified address"
                        .to_owned())
                }
                Err(_) => Err(Setting::RtpAdvertise.info().expected.to_owned()),
            })?,
        })
    }

    fn sip(&self) -> Result<SipSettings, ConfigError> {
        let listen = self.parsed(Setting::SipListen, |s| {
            s.parse::<SocketAddr>().map_err(|_| Setting::SipListen.info().expected.to_owned())
        })?;
        let allow = self.value(Setting::SipAllow, |s| {
            voxproxy_adapters::sip::server::parse_allow(s).map_err(|e| e.to_string())
        })?;
        let username = self.parsed(Setting::SipUsername, |s| {
            // It goes into an Authorization header: printable, no quotes.
            if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c == '"') {
                Err("expected a user name of at most 256 printable characters without `\"`".to_owned())
            } else {
                Ok(s.to_owned())
            }
        })?;
        let ring_timeout = self.time(Setting::SipRingTimeout, Duration::from_secs(600), false)?;
        let max_calls: usize = self.int(Setting::SipMaxCalls, 1..=100_000)?;
        let max_calls_per_source: usize = self.int(Setting::SipMaxCallsPerSource, 1..=100_000)?;
        if max_calls_per_source > max_calls {
            let key = self.blame(Setting::SipMaxCallsPerSource, Setting::SipMaxCalls);
            return Err(self.invalid(
                key,
                format!(
                    "sip.max_calls_per_source ({max_calls_per_source}) must not exceed sip.max_calls ({max_calls})"
                ),
            ));
        }
        let limits = voxproxy_adapters::sip::server::ServerLimits { max_calls, max_calls_per_source };
        let invites_per_second = self.int(Setting::SipInvitesPerSecond, 1..=10_000)?;
        let max_tcp_connections = self.int(Setting::SipMaxTcpConnections, 1..=100_000)?;
        Ok(SipSettings {
            username,
            ring_timeout,
            listen,
            allow,
            limits,
            invites_per_second,
            max_tcp_connections,
        })
    }

    fn store(&self) -> Result<StoreSettings, ConfigError> {
        Ok(StoreSettings {
            url: self.parsed(Setting::StoreUrl, parse_store_url)?,
            instance_id: self.parsed(Setting::StoreInstanceId, parse_instance_id)?,
            admin_url: self.parsed(Setting::StoreAdminUrl, |s| {
                let expected = Setting::StoreAdminUrl.info().expected;
                match Url::parse(s) {
                    Ok(url) if url.scheme() == Scheme::Http && url.query().is_none() => {
                        Ok(s.trim_end_matches('/').to_owned())
                    }
                    _ => Err(expected.to_owned()),
                }
            })?,
            query_timeout: self.time(Setting::StoreQueryTimeout, Duration::from_secs(60), false)?,
        })
    }

    fn keepalive(&self) -> Result<KeepaliveSettings, ConfigError> {
        let ping_interval = self.time(Setting::KeepalivePingInterval, Duration::from_secs(3600), false)?;
        let idle_timeout = self.time(Setting::KeepaliveIdleTimeout, Duration::from_secs(86_400), false)?;
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

    fn ws(&self) -> Result<WsSettings, ConfigError> {
        use voxproxy_adapters::bot::{BotProtocol, L16Rate};
        let sample_rate: u32 = self.int(Setting::WsSampleRate, 8000..=24000)?;
        let Some(rate) = L16Rate::from_hz(sample_rate) else {
            return Err(self.invalid(Setting::WsSampleRate, Setting::WsSampleRate.info().expected));
        };
        let protocol = self.value(Setting::WsProtocol, |s| match s {
            "twilio" => Ok(BotProtocol::Twilio),
            "l16" => Ok(BotProtocol::L16(rate)),
            _ => Err(Setting::WsProtocol.info().expected.to_owned()),
        })?;
        Ok(WsSettings {
            protocol,
            sample_rate,
            connect_timeout: self.time(Setting::WsConnectTimeout, Duration::from_secs(60), false)?,
            barge_in: self.flag(Setting::WsBargeIn)?,
            max_queued_ms: self.int(Setting::WsMaxQueuedMs, 20..=300_000)?,
        })
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

    /// Why `voxproxy serve` cannot run this configuration yet, as one
    /// sentence naming the key: a backend, global or of a route, whose leg is
    /// not wired into the daemon (SIP and WebSocket legs are parsed and
    /// checked, never treated as RTP).
    #[must_use]
    pub fn not_runnable_yet(&self) -> Option<String> {
        let check = |key: String, backend: &Backend| match backend.leg() {
            LegKind::Rtp | LegKind::WebSocket => None,
            LegKind::Sip => match backend {
                Backend::Sip(uri) if uri.secure || uri.transport == SipTransport::Tls => Some(format!(
                    "{key} = \"{backend}\" needs SIP over TLS, which this version of voxproxy serve cannot \
                     run yet; use sip: over UDP or ;transport=tcp"
                )),
                _ => None,
            },
        };
        if let Some(problem) = check("rtp.backend".to_owned(), &self.rtp.backend) {
            return Some(problem);
        }
        for (i, route) in self.routes.iter().enumerate() {
            if let Some(problem) = check(format!("routes[{i}].backend"), &route.backend) {
                return Some(problem);
            }
        }
        None
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
mod tests;
