//! The one declaration of every scalar configuration key.
//!
//! Each row of `keys!` gives a key its dotted name, its type, its default
//! (as it would be written in the file, so the default goes through the same
//! parser and checks as any value), the documentation of what it accepts and
//! what a wrongly typed value is told. From that row come: the [`Setting`]
//! variant, the `VOXPROXY_*` variable ([`KeyInfo::env`]), which keys the file
//! may hold and of which TOML type, the "keys allowed there" of unknown-key
//! messages, the default, and the key table of the module docs
//! ([`doc_table`], which a test keeps equal to the one in `mod.rs`).

/// The TOML type of a key, and how the docs call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Int,
    Bool,
    /// A string parsed by [`super::parse_duration`].
    Duration,
}

impl Kind {
    fn doc(self) -> &'static str {
        match self {
            Kind::Text => "string",
            Kind::Int => "integer",
            Kind::Bool => "boolean",
            Kind::Duration => "duration",
        }
    }
}

/// A key's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DefaultValue {
    /// A value as the file would hold it (`"\"5s\""`, `60`, `true`).
    Value(&'static str),
    /// No single value: the text says what applies (`none`, `the number of CPUs`).
    Described(&'static str),
}

/// What the loader, the messages and the docs know about a key.
#[derive(Debug)]
pub(super) struct KeyInfo {
    pub(super) key: Setting,
    pub(super) path: &'static str,
    pub(super) kind: Kind,
    pub(super) default: DefaultValue,
    /// The docs' "accepted" column.
    pub(super) accepted: &'static str,
    /// What a wrongly typed value is told is expected.
    pub(super) expected: &'static str,
}

impl KeyInfo {
    /// `VOXPROXY_` and the key upper-cased, dots turned into underscores.
    pub(super) fn env(&self) -> String {
        format!("VOXPROXY_{}", self.path.to_ascii_uppercase().replace('.', "_"))
    }

    /// The default as it is shown in messages and the docs.
    pub(super) fn default_shown(&self) -> &'static str {
        match self.default {
            Value(text) | Described(text) => text,
        }
    }
}

macro_rules! keys {
    ($( $variant:ident $path:literal $kind:ident $default:expr, $accepted:expr, $expected:expr; )+) => {
        /// Every scalar key, in the order of the docs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum Setting { $( $variant, )+ }

        pub(super) const KEYS: &[KeyInfo] = &[ $( KeyInfo {
            key: Setting::$variant,
            path: $path,
            kind: Kind::$kind,
            default: $default,
            accepted: $accepted,
            expected: $expected,
        }, )+ ];
    };
}

use DefaultValue::{Described, Value};

const EXPECT_PAYLOAD_TYPE: &str =
    "expected an RTP payload type from 0 to 127, other than 72 to 76 (those collide with RTCP packet types)";
pub(super) const EXPECT_DURATION: &str =
    "expected a duration string such as \"250ms\", \"5s\", \"1m30s\" or \"1h\"";
const EXPECT_BOOL: &str = "expected true or false";
const PAYLOAD_TYPES: &str = "0 to 127 but not 72 to 76";

keys! {
    ServerListen "server.listen" Text Value("\"127.0.0.1:8080\""), "IP address and port",
        "expected an IP address and port such as \"127.0.0.1:8080\" or \"[::]:8080\"";
    ServerPublicUrl "server.public_url" Text Value("\"http://127.0.0.1:8080\""),
        "`http://` or `https://` URL Twilio reaches this proxy at, without query or fragment; scheme and host are case-insensitive (written lower-case), a trailing `/` is dropped",
        "expected the http:// or https:// URL Twilio reaches this proxy at";
    ServerWorkers "server.workers" Int Described("usable CPUs (at most 1024)"), "1 to 1024",
        "expected an integer from 1 to 1024";
    ServerIo "server.io" Text Value("\"auto\""), "`auto`, `uring`, `epoll`",
        "expected \"auto\", \"uring\" or \"epoll\"";
    ServerTlsCert "server.tls.cert" Text Described("none (plain HTTP)"),
        "path of a readable PEM certificate chain; with `server.tls.key`",
        "expected the path of a PEM certificate file";
    ServerTlsKey "server.tls.key" Text Described("none (plain HTTP)"),
        "path of a readable PEM private key; with `server.tls.cert`",
        "expected the path of a PEM private key file";
    ServerAdminListen "server.admin_listen" Text Described("none (all routes on `server.listen`)"),
        "IP address and port of a second, plain-HTTP listener that alone serves `/metrics`, `/v1/*` and `/readyz` plus `/healthz`; `server.listen` then serves Twilio's routes and `/healthz`, `/readyz` only",
        "expected an IP address and port such as \"127.0.0.1:9090\"";
    TwilioAccountSid "twilio.account_sid" Text Described("none"), "`AC` and 32 hex digits",
        "expected \"AC\" followed by 32 hexadecimal digits";
    TwilioApiBase "twilio.api_base" Text Value("\"https://api.twilio.com\""),
        "`http://` or `https://` URL without query or fragment",
        "expected an http:// or https:// URL such as \"https://api.twilio.com\"";
    TwilioValidateSignatures "twilio.validate_signatures" Bool Value("true"), "", EXPECT_BOOL;
    TwilioStreamParameters "twilio.stream_parameters" Text Value("\"\""),
        "`\"Name=value,Name2=value2\"`: extra `<Parameter>`s on every stream of the global route (names of letters, digits, `_` and `-`; values without `,`)",
        "expected comma-separated Name=value pairs such as \"Tenant=acme,Queue=sales\"";
    TwilioCallerId "twilio.caller_id" Text Described("none (the INVITE's From user)"),
        "E.164 number (`+` and 8 to 15 digits): the From of calls a PBX places through `sip.listen`",
        "expected a number in E.164 form such as \"+14155550100\"";
    RtpBind "rtp.bind" Text Value("\"127.0.0.1\""), "IP address the RTP sockets bind to",
        "expected an IP address such as \"127.0.0.1\" or \"::\"";
    RtpPorts "rtp.ports" Text Value("\"40000-44999\""),
        "`\"LO-HI\"`, 1024 to 65535; one port per call, so at least `limits.max_calls` ports",
        "expected a port range \"LO-HI\" such as \"40000-44999\"";
    RtpAllowPrivilegedPorts "rtp.allow_privileged_ports" Bool Value("false"),
        "`true` lets `rtp.ports` go below 1024", EXPECT_BOOL;
    RtpBackend "rtp.backend" Text Value("\"127.0.0.1:4000\""),
        "the voice stack: `IP:PORT` for RTP (port 0 learns each call's port from the backend's first packet, e.g. Asterisk external media), a `sip:` URI (each call INVITEs it; `{to}`/`{from}` in the user part; `;transport=tcp`; `sips:` is refused so far) or a `ws://`/`wss://` URL of a WebSocket bot (`ws.*`)",
        "expected the IP address and port of the voice stack, such as \"127.0.0.1:4000\"";
    RtpCodec "rtp.codec" Text Value("\"pcmu\""), "`pcmu`, `pcma`, `l16-8k`, `l16-16k`",
        "expected \"pcmu\", \"pcma\", \"l16-8k\" or \"l16-16k\"";
    RtpPtimeMs "rtp.ptime_ms" Int Value("20"), "10, 20, 30, 40", "expected 10, 20, 30 or 40";
    RtpDtmfPayloadType "rtp.dtmf_payload_type" Int Value("101"), PAYLOAD_TYPES, EXPECT_PAYLOAD_TYPE;
    RtpPayloadType "rtp.payload_type" Int Described("the codec's: PCMU 0, PCMA 8, L16 96"),
        "0 to 127 but not 72 to 76, not the DTMF type", EXPECT_PAYLOAD_TYPE;
    RtpAdvertise "rtp.advertise" Text Described("`rtp.bind`"),
        "IP address put in the SDP `c=` line of SIP calls, when the PBX reaches this host at another address (NAT); not unspecified",
        "expected an IP address such as \"203.0.113.7\"";
    SipListen "sip.listen" Text Described("none (no SIP listener)"),
        "IP address and port of the SIP listener (UDP and TCP) a PBX sends INVITEs to, to place calls through Twilio; needs `TWILIO_ACCOUNT_SID` and `TWILIO_AUTH_TOKEN`",
        "expected an IP address and port such as \"0.0.0.0:5060\"";
    SipAllow "sip.allow" Text Value("\"\""),
        "comma-separated CIDRs (`10.0.0.0/8,192.0.2.7`, at most 64) whose INVITEs are accepted; empty: none (every INVITE gets 403)",
        "expected comma-separated IP networks such as \"10.0.0.0/8,192.0.2.7\"";
    SipUsername "sip.username" Text Described("none"),
        "user name answering a PBX's 401/407 challenge to voxproxy's INVITEs, with `VOXPROXY_SIP_PASSWORD` (a secret, environment only)",
        "expected a user name";
    SipRingTimeout "sip.ring_timeout" Duration Value("\"30s\""),
        "more than 0, at most 10 m: how long a `sip:` backend may ring without answering before voxproxy cancels the INVITE and the leg fails (the route's `fallback`)",
        EXPECT_DURATION;
    SipMaxCalls "sip.max_calls" Int Value("256"),
        "1 to 100000: calls `sip.listen` carries at once on each transport (UDP, TCP); more INVITEs get 503",
        "expected an integer from 1 to 100000";
    SipMaxCallsPerSource "sip.max_calls_per_source" Int Value("16"),
        "1 to `sip.max_calls`: calls at once from one source IP address; more INVITEs get 503",
        "expected an integer from 1 to 100000";
    SipInvitesPerSecond "sip.invites_per_second" Int Value("10"),
        "1 to 10000: new INVITEs a second (and burst) taken from one source IP address; more are dropped unanswered (the PBX sends them again) and counted",
        "expected an integer from 1 to 10000";
    SipMaxTcpConnections "sip.max_tcp_connections" Int Value("64"),
        "1 to 100000: TCP connections to `sip.listen` at once (at most 8 from one address); more are closed and counted",
        "expected an integer from 1 to 100000";
    JitterMaxDelayMs "jitter.max_delay_ms" Int Value("60"), "0 to 1000",
        "expected a number of milliseconds from 0 to 1000";
    VadMode "vad.mode" Int Value("2"), "0 (least aggressive) to 3", "expected an integer from 0 to 3";
    VadBargeIn "vad.barge_in" Bool Value("true"), "", EXPECT_BOOL;
    KeepalivePingInterval "keepalive.ping_interval" Duration Value("\"10s\""),
        "more than 0, at most 1 h, shorter than `idle_timeout`", EXPECT_DURATION;
    KeepaliveIdleTimeout "keepalive.idle_timeout" Duration Value("\"30s\""), "more than 0, at most 24 h",
        EXPECT_DURATION;
    WsProtocol "ws.protocol" Text Value("\"twilio\""),
        "what a `ws://`/`wss://` bot speaks: `twilio` (Media Streams JSON) or `l16` (Vonage's binary 16-bit PCM)",
        "expected \"twilio\" or \"l16\"";
    WsSampleRate "ws.sample_rate" Int Value("16000"), "8000, 16000, 24000: the PCM rate of `ws.protocol = \"l16\"`",
        "expected 8000, 16000 or 24000";
    WsConnectTimeout "ws.connect_timeout" Duration Value("\"3s\""),
        "more than 0, at most 1 m: the bot's TCP, TLS and WebSocket handshakes; past it the leg failed (the route's `fallback`)",
        EXPECT_DURATION;
    WsBargeIn "ws.barge_in" Bool Value("true"),
        "caller speech (voxproxy's VAD) over the bot's audio clears it, for bots that do not clear by themselves",
        EXPECT_BOOL;
    WsMaxQueuedMs "ws.max_queued_ms" Int Value("30000"),
        "20 to 300000: the bot's audio kept waiting for Twilio; more is dropped and counted",
        "expected a number of milliseconds from 20 to 300000";
    LimitsMaxCalls "limits.max_calls" Int Value("2000"), "1 to 1 000 000",
        "expected an integer from 1 to 1000000";
    LimitsMaxFrameBytes "limits.max_frame_bytes" Int Value("16384"), "1024 to 16 MiB: largest WebSocket message",
        "expected a number of bytes from 1024 to 16777216";
    LimitsWebhookRatePerIp "limits.webhook_rate_per_ip" Int Value("20"),
        "webhook requests per second per client IP, 0 = no limit",
        "expected requests per second from 0 (no limit) to 1000000";
    LimitsMaxBodyBytes "limits.max_body_bytes" Int Value("65536"), "1024 to 16 MiB: largest HTTP request body",
        "expected a number of bytes from 1024 to 16777216";
    LimitsCallsPerCallerPerMinute "limits.calls_per_caller_per_minute" Int Value("0"),
        "new calls per minute per calling number (`From`), the rest answered busy; 0 = no limit",
        "expected calls per minute from 0 (no limit) to 100000";
    CdrPath "cdr.path" Text Value("\"voxproxy-cdr.jsonl\""),
        "file path, not a directory (relative to the working directory)", "expected a file path";
    DrainTimeout "drain.timeout" Duration Value("\"5s\""), "0 to 1 h", EXPECT_DURATION;
    LogFormat "log.format" Text Value("\"text\""),
        "`text` (human-readable lines) or `json` (one JSON object per line)", "expected \"text\" or \"json\"";
    LogLevel "log.level" Text Value("\"info\""), "a tracing filter such as `info`, `warn`, `voxproxy=debug`",
        "expected a filter such as \"info\" or \"voxproxy=debug,warn\"";
    RecordingEnabled "recording.enabled" Bool Value("false"),
        "`true` records every call to a two-channel WAV in `recording.dir` (a route's `recording.enabled` overrides it)",
        EXPECT_BOOL;
    RecordingDir "recording.dir" Text Value("\"recordings\""),
        "directory the WAV files go in (created at start when recording is on anywhere)",
        "expected a directory path";
    RecordingTwilio "recording.twilio" Bool Value("false"),
        "`true` also records every streamed call on Twilio's side (REST, dual-channel; the status callback lands in the record; a route's `recording.twilio` overrides it)",
        EXPECT_BOOL;
    CaptureEnabled "capture.enabled" Bool Value("false"),
        "`true` captures every call's inputs for `voxproxy replay` in `capture.dir` (a route's `capture.enabled` overrides it)",
        EXPECT_BOOL;
    CaptureDir "capture.dir" Text Value("\"captures\""),
        "directory the capture files go in (created at start when capture is on anywhere)",
        "expected a directory path";
    CaptureMaxBytes "capture.max_bytes" Int Value("67108864"),
        "64 KiB to 4 GiB: largest capture file per call (the default holds about 35 minutes of a call); the capture stops there, marked truncated",
        "expected a number of bytes from 65536 to 4294967296";
    OtelEndpoint "otel.endpoint" Text Described("none (no traces)"),
        "`http://` or `https://` base URL of an OTLP/HTTP collector (`http://127.0.0.1:4318`); spans go to `<endpoint>/v1/traces` as protobuf",
        "expected the http:// or https:// URL of an OTLP collector such as \"http://127.0.0.1:4318\"";
    OtelServiceName "otel.service_name" Text Value("\"voxproxy\""),
        "1 to 128 printable characters: the `service.name` of every span",
        "expected a service name of 1 to 128 printable characters";
    OtelSamplePercent "otel.sample_percent" Int Value("100"),
        "0 to 100: the share of calls traced, decided from the trace id (so every instance and every peer decides alike)",
        "expected a percentage from 0 to 100";
    OtelMaxQueue "otel.max_queue" Int Value("4096"),
        "64 to 1 000 000: finished spans waiting for export; more are dropped (about 6 per call)",
        "expected a number of spans from 64 to 1000000";
    OtelExportTimeout "otel.export_timeout" Duration Value("\"5s\""),
        "more than 0, at most 1 m: one export to the collector, retries included",
        EXPECT_DURATION;
    StoreUrl "store.url" Text Described("none (records only in `cdr.path`)"),
        "`postgres://` or `postgresql://` URL of a PostgreSQL database (the password from the URL or `PGPASSWORD`, never logged): call records, every instance's sessions and events go there, `cdr.path` becomes the spool",
        "expected a URL such as \"postgres://voxproxy@db.internal:5432/voxproxy\"";
    StoreInstanceId "store.instance_id" Text Described("the host name and the process id"),
        "1 to 64 letters, digits, `.`, `_`, `-`: this instance's name in the store",
        "expected 1 to 64 letters, digits, '.', '_' or '-'";
    StoreAdminUrl "store.admin_url" Text Described("`http://` and the bound `server.admin_listen`, else `server.listen`"),
        "`http://` URL at which the other instances reach this one's `/v1` API (session requests are forwarded there)",
        "expected an http:// URL such as \"http://10.0.0.5:9090\"";
    StoreQueryTimeout "store.query_timeout" Duration Value("\"5s\""),
        "more than 0, at most 1 m: the longest one database round trip may take; past it the connection is dropped and made again",
        EXPECT_DURATION;
}

impl Setting {
    pub(super) fn info(self) -> &'static KeyInfo {
        &KEYS[self as usize]
    }

    pub(super) fn from_env(name: &str) -> Option<Setting> {
        KEYS.iter().find(|i| i.env() == name).map(|i| i.key)
    }

    pub(super) fn from_path(path: &str) -> Option<Setting> {
        KEYS.iter().find(|i| i.path == path).map(|i| i.key)
    }
}

/// Top-level names that are not sections of scalar keys.
pub(super) const ARRAY_SECTIONS: [&str; 1] = ["routes"];

/// The names that may follow `prefix` (a section in dotted form, or "" for
/// the top level) one level down, for "allowed keys" messages.
pub(super) fn children_of(prefix: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    for info in KEYS {
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
    if prefix.is_empty() {
        names.extend(ARRAY_SECTIONS);
    }
    names.join(", ")
}

/// Whether `path` is a section (a table some key lives in).
pub(super) fn is_section(path: &str) -> bool {
    KEYS.iter().any(|i| i.path.strip_prefix(path).is_some_and(|rest| rest.starts_with('.')))
}

/// The key table of the module docs, rendered from [`KEYS`].
/// The keys as `serve --help` lists them: key, environment variable and
/// default, one per line, from the same declaration as the docs' table.
pub(super) fn help_list() -> String {
    let mut out = String::from(
        "Every configuration key (TOML key, environment variable, default); flags override the \
         environment, which overrides the file. README's configuration table says what each accepts.\n",
    );
    for info in KEYS {
        out.push_str(&format!("\n  {:<34} {:<40} {}", info.path, info.env(), info.default_shown()));
    }
    out
}

pub(super) fn doc_table() -> String {
    let mut out = String::from("| key | type | default | accepted |\n| --- | --- | --- | --- |\n");
    for info in KEYS {
        let default = match info.default {
            Value(text) => format!("`{text}`"),
            Described(text) => text.to_owned(),
        };
        out.push_str(&format!("| `{}` | {} | {default} | {} |\n", info.path, info.kind.doc(), info.accepted));
    }
    out
}
