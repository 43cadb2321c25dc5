//! Routes: which backend a call goes to and what Twilio is told to do with
//! it, decided from the called number. Pure, sans-IO functions; the proxy
//! reads the routes from its configuration (`[[routes]]`, see the config
//! module of the `voxproxy` crate) and calls them from its HTTP handlers.
//!
//! # Backends
//!
//! [`Backend::parse`] reads a backend address into the leg that serves it:
//! `HOST:PORT` is RTP (port 0: learn the port from the backend's first
//! packet), `sip:`/`sips:` URIs a SIP leg ([`SipUri`]), `ws://`/`wss://`
//! URLs a WebSocket leg ([`crate::url::Url`]).
//!
//! # Decisions
//!
//! [`match_route`] picks the first route whose `to` is the called number
//! (`"*"` matches any); the global settings are the implicit last route.
//! Then, for the matched route:
//!
//! | when | call | answer |
//! | --- | --- | --- |
//! | `POST /twilio/voice` | [`answer_voice`] | greeting `<Say>`; with `forward_to`: (fork mode: `<Start><Stream>` first) `<Dial action=/twilio/dial-status timeout>`; else `<Connect action=/twilio/stream-ended><Stream>` |
//! | `POST /twilio/dial-status` | [`after_dial`] | `completed`/`answered`: `<Hangup/>`; anything else (`no-answer`, `busy`, `failed`, `canceled`, or a status Twilio adds later, since the caller is still on the line): the route's `on_missed` |
//! | `POST /twilio/stream-ended` (the `<Connect action>`) | [`after_stream`] | ended normally: `<Hangup/>`; the leg failed: `fallback` `<Say>`, then `on_missed` (`sms` sends it; `stream` cannot retry a failed leg and hangs up) |
//!
//! Every stream carries a `name` `{prefix}_{CallSid}_{n}` (`n` = 1 for the
//! stream of the voice webhook, 2 for the one after a missed forward), a
//! `statusCallback` at `/twilio/stream-status`, and the `<Parameter>`s
//! `CallSid`, `From`, `To`, then the route's `parameters`. An SMS to send is
//! returned as data ([`SmsRequest`]) for the proxy to hand to the REST client.
//!
//! How the proxy wires them (its HTTP handlers, once routes are on):
//! parse and signature-check the body, `VoiceWebhook::from_form`, then
//! `match_route(&config.routes, &config.default_route, &call.to)`, then the
//! decision with an [`AnswerContext`] built once from `server.public_url`,
//! and serve `Response::to_xml()`. For `/twilio/stream-ended` the proxy
//! knows how the call's leg ended ([`StreamEnd`]) from its call record.
//!
//! ```
//! use voxproxy_adapters::form::Form;
//! use voxproxy_adapters::route::{
//!     AnswerContext, Backend, OnMissed, Route, RouteTo, after_dial, answer_voice, dial_call_status, match_route,
//! };
//! use voxproxy_adapters::url::{Scheme, Url};
//! use voxproxy_adapters::webhook::VoiceWebhook;
//!
//! // Built once from the configuration.
//! let mut clinic = Route::new(RouteTo::parse("+14155550199")?, Backend::parse("sip:frontdesk@10.0.0.7")?);
//! clinic.forward_to = Some("+14155550111".to_owned());
//! clinic.on_missed = OnMissed::Sms;
//! clinic.sms_text = Some("Sorry we missed you.".to_owned());
//! let routes = [clinic];
//! let default = Route::new(RouteTo::Any, Backend::parse("127.0.0.1:4000")?);
//! let ctx = AnswerContext::new(Url::parse_base("https://voice.example.com", &[Scheme::Https])?, "vp")?;
//!
//! // POST /twilio/voice (signature checked first).
//! let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&To=%2B14155550199&CallStatus=ringing&Direction=inbound";
//! let call = VoiceWebhook::from_form(Form::parse(body)?)?;
//! let matched = match_route(&routes, &default, &call.call.to);
//! assert_eq!(matched.label(), "routes[0]");
//! let xml = answer_voice(matched.route, &call, &ctx).to_xml()?;
//! assert!(xml.contains("<Dial action=\"https://voice.example.com/twilio/dial-status\" timeout=\"20\">"));
//!
//! // POST /twilio/dial-status: nobody answered, so an SMS goes out and the call ends.
//! let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=%2B14155550100&To=%2B14155550199&CallStatus=in-progress\
//!              &Direction=inbound&DialCallStatus=no-answer";
//! let callback = VoiceWebhook::from_form(Form::parse(body)?)?;
//! let next = after_dial(matched.route, &callback, dial_call_status(&callback).unwrap_or(""), &ctx);
//! assert_eq!(next.sms.map(|sms| sms.to), Some("+14155550100".to_owned()));
//! assert!(next.twiml.to_xml()?.ends_with("<Hangup/></Response>"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::fmt;
use std::net::SocketAddr;

use crate::twiml::{Connect, Dial, Hangup, Response, Say, Start, Stream, StreamTrack, StreamUrl, TwimlError};
use crate::url::{Url, UrlError};
use crate::webhook::VoiceWebhook;

/// Path of the `<Dial action>`: Twilio posts the forward's outcome there.
pub const DIAL_STATUS_PATH: &str = "/twilio/dial-status";
/// Path of the `<Connect action>`: Twilio posts there when the stream ends
/// and continues with the TwiML the answer holds.
pub const STREAM_ENDED_PATH: &str = "/twilio/stream-ended";
/// Path of every stream's `statusCallback`.
pub const STREAM_STATUS_PATH: &str = "/twilio/stream-status";
/// Path of the Media Streams WebSocket.
pub const MEDIA_PATH: &str = "/twilio/media";
/// Longest text of a greeting, fallback or SMS: Twilio's `<Say>` takes
/// 4,096 characters and an SMS body 1,600.
pub const MAX_TEXT_CHARS: usize = 1600;
/// Longest SIP URI accepted, in bytes.
pub const MAX_SIP_URI_LEN: usize = 1024;

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// Where a call's audio goes: the leg is chosen by the address's form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `HOST:PORT`: plain RTP to this address; port 0 learns each call's
    /// port from the backend's first packet (symmetric RTP).
    Rtp(SocketAddr),
    /// `sip:` or `sips:`: a SIP call to this URI.
    Sip(SipUri),
    /// `ws://` or `wss://`: a WebSocket bot at this URL (query passed through).
    WebSocket(Url),
}

/// Which kind of leg a [`Backend`] needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LegKind {
    /// Plain RTP.
    Rtp,
    /// SIP signalling with RTP media.
    Sip,
    /// A WebSocket bot.
    WebSocket,
}

impl LegKind {
    /// The leg's name in messages.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            LegKind::Rtp => "RTP",
            LegKind::Sip => "SIP",
            LegKind::WebSocket => "WebSocket",
        }
    }
}

impl Backend {
    /// Parses a backend address; see the [module docs](self).
    ///
    /// # Errors
    /// [`BackendError`] saying what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Backend, BackendError> {
        let lower = text.chars().take(6).collect::<String>().to_ascii_lowercase();
        if lower.starts_with("sip:") || lower.starts_with("sips:") {
            return SipUri::parse(text).map(Backend::Sip);
        }
        if lower.starts_with("ws://") || lower.starts_with("wss://") {
            return Url::parse(text).map(Backend::WebSocket).map_err(BackendError::WebSocketUrl);
        }
        if text.contains("://") {
            return Err(BackendError::Form);
        }
        let addr: SocketAddr = text.parse().map_err(|_| BackendError::Form)?;
        if addr.ip().is_unspecified() {
            return Err(BackendError::Unspecified);
        }
        Ok(Backend::Rtp(addr))
    }

    /// The leg this backend needs.
    #[must_use]
    pub fn leg(&self) -> LegKind {
        match self {
            Backend::Rtp(_) => LegKind::Rtp,
            Backend::Sip(_) => LegKind::Sip,
            Backend::WebSocket(_) => LegKind::WebSocket,
        }
    }

    /// The RTP address, for an RTP backend.
    #[must_use]
    pub fn rtp(&self) -> Option<SocketAddr> {
        match self {
            Backend::Rtp(addr) => Some(*addr),
            _ => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Rtp(addr) => write!(f, "{addr}"),
            Backend::Sip(uri) => write!(f, "{uri}"),
            Backend::WebSocket(url) => write!(f, "{url}"),
        }
    }
}

impl core::str::FromStr for Backend {
    type Err = BackendError;

    fn from_str(text: &str) -> Result<Backend, BackendError> {
        Backend::parse(text)
    }
}

/// SIP transport (`;transport=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SipTransport {
    /// UDP, the default for `sip:`.
    Udp,
    /// TCP.
    Tcp,
    /// TLS, the only transport of `sips:`.
    Tls,
}

impl SipTransport {
    /// The transport as SIP spells it, lower case.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            SipTransport::Udp => "udp",
            SipTransport::Tcp => "tcp",
            SipTransport::Tls => "tls",
        }
    }
}

/// A SIP URI to call: `sip:[user@]host[:port][;transport=udp|tcp|tls]` or
/// `sips:…`. The user part may hold `{to}` and `{from}`, replaced per call by
/// the called and calling numbers ([`SipUri::request_uri`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SipUri {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part as written (placeholders unexpanded), if any.
    pub user: Option<String>,
    /// The host: a DNS name, an IPv4 address or a bracketed IPv6 address,
    /// lower case.
    pub host: String,
    /// The port, if written.
    pub port: Option<u16>,
    /// The transport: as written, else UDP for `sip:` and TLS for `sips:`.
    pub transport: SipTransport,
    /// Whether `;transport=` was written (kept when writing the URI back).
    pub transport_written: bool,
}

/// Characters of a SIP user part besides letters and digits (RFC 3261
/// `unreserved` and `user-unreserved`, without `;` `?` which start
/// parameters and headers here).
const SIP_USER_MARKS: &[u8] = b"-_.!~*'()&=+$,/";

impl SipUri {
    /// Parses and checks a SIP URI.
    ///
    /// # Errors
    /// [`BackendError`] naming the part at fault.
    pub fn parse(text: &str) -> Result<SipUri, BackendError> {
        if text.len() > MAX_SIP_URI_LEN {
            return Err(BackendError::SipTooLong);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(BackendError::Sip("it contains spaces or control characters"));
        }
        let (scheme, rest) = text.split_once(':').ok_or(BackendError::Form)?;
        let secure = scheme.eq_ignore_ascii_case("sips");
        if rest.contains('?') {
            return Err(BackendError::Sip("headers (\"?…\") are not accepted in a backend URI"));
        }
        let (address, params) = rest.split_once(';').unwrap_or((rest, ""));
        let (user, host_port) = match address.rsplit_once('@') {
            Some((user, host_port)) => (Some(check_sip_user(user)?), host_port),
            None => (None, address),
        };
        let (host, port) = split_sip_host_port(host_port)?;
        let default = if secure { SipTransport::Tls } else { SipTransport::Udp };
        let transport = parse_sip_params(params)?;
        if secure && transport.is_some_and(|t| t != SipTransport::Tls) {
            return Err(BackendError::Sip("a sips: URI runs over TLS only; drop ;transport or use sip:"));
        }
        Ok(SipUri {
            secure,
            user,
            host,
            port,
            transport: transport.unwrap_or(default),
            transport_written: transport.is_some(),
        })
    }

    /// The Request-URI for one call: `{to}` and `{from}` in the user part
    /// replaced by the called and calling numbers, any character a SIP user
    /// part cannot hold percent-encoded (a caller ID is untrusted text).
    #[must_use]
    pub fn request_uri(&self, to: &str, from: &str) -> String {
        let mut out = String::from(if self.secure { "sips:" } else { "sip:" });
        if let Some(user) = &self.user {
            let expanded =
                user.replace("{to}", &escape_sip_user(to)).replace("{from}", &escape_sip_user(from));
            out.push_str(&expanded);
            out.push('@');
        }
        self.push_host(&mut out);
        out
    }

    fn push_host(&self, out: &mut String) {
        out.push_str(&self.host);
        if let Some(port) = self.port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        if self.transport_written {
            out.push_str(";transport=");
            out.push_str(self.transport.as_str());
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::from(if self.secure { "sips:" } else { "sip:" });
        if let Some(user) = &self.user {
            out.push_str(user);
            out.push('@');
        }
        self.push_host(&mut out);
        f.write_str(&out)
    }
}

fn check_sip_user(user: &str) -> Result<String, BackendError> {
    // Placeholders are the only braces allowed; check the rest with them removed.
    let plain = user.replace("{to}", "").replace("{from}", "");
    if user.is_empty() {
        return Err(BackendError::Sip("the user part before \"@\" is empty"));
    }
    if plain.contains(['{', '}']) {
        return Err(BackendError::Sip("the only placeholders in the user part are {to} and {from}"));
    }
    let bytes = plain.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3).filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            if hex.is_none() {
                return Err(BackendError::Sip("a \"%\" in the user part is not followed by two hex digits"));
            }
            i += 3;
        } else if b.is_ascii_alphanumeric() || SIP_USER_MARKS.contains(&b) {
            i += 1;
        } else {
            return Err(BackendError::Sip(
                "the user part holds a character a SIP URI cannot carry unescaped (letters, digits, \
                 -_.!~*'()&=+$,/ and %HH escapes are allowed)",
            ));
        }
    }
    Ok(user.to_owned())
}

fn escape_sip_user(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || SIP_USER_MARKS.contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn split_sip_host_port(text: &str) -> Result<(String, Option<u16>), BackendError> {
    // A SIP host and port are an URL authority: reuse the one URL parser.
    let url = Url::parse(&format!("http://{text}")).map_err(|e| match e {
        UrlError::Port => BackendError::Sip("the port must be a number from 1 to 65535"),
        UrlError::NoHost | UrlError::Syntax if text.is_empty() => BackendError::Sip("the URI has no host"),
        _ => BackendError::Sip("the host must be a DNS name, an IPv4 address or an IPv6 address in brackets"),
    })?;
    if !url.path_and_query().is_empty() {
        return Err(BackendError::Sip("a SIP URI has no path: the host and port end it"));
    }
    Ok((url.host().to_owned(), url.port()))
}

fn parse_sip_params(params: &str) -> Result<Option<SipTransport>, BackendError> {
    let mut transport = None;
    for param in params.split(';').filter(|p| !p.is_empty()) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if !name.eq_ignore_ascii_case("transport") {
            return Err(BackendError::Sip("the only URI parameter accepted is ;transport=udp|tcp|tls"));
        }
        if transport.is_some() {
            return Err(BackendError::Sip(";transport is given twice"));
        }
        transport = Some(match value.to_ascii_lowercase().as_str() {
            "udp" => SipTransport::Udp,
            "tcp" => SipTransport::Tcp,
            "tls" => SipTransport::Tls,
            _ => return Err(BackendError::Sip(";transport must be udp, tcp or tls")),
        });
    }
    Ok(transport)
}

/// Why a backend address was refused. `Display` says what is expected.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// None of the three forms.
    Form,
    /// An RTP address on the unspecified address (`0.0.0.0`, `::`).
    Unspecified,
    /// A `sip:`/`sips:` URI that is malformed; the text says where.
    Sip(&'static str),
    /// A SIP URI longer than [`MAX_SIP_URI_LEN`].
    SipTooLong,
    /// A `ws://`/`wss://` URL that is malformed.
    WebSocketUrl(UrlError),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Form => f.write_str(
                "expected the IP address and port of an RTP voice stack (\"127.0.0.1:4000\"), a SIP URI \
                 (\"sip:agent@10.0.0.7;transport=tcp\") or a WebSocket URL (\"wss://bot.example.com/media\")",
            ),
            BackendError::Unspecified => {
                f.write_str("the backend needs a concrete address, not the unspecified address")
            }
            BackendError::Sip(problem) => write!(f, "not a usable SIP URI: {problem}"),
            BackendError::SipTooLong => write!(f, "the SIP URI is longer than {MAX_SIP_URI_LEN} bytes"),
            BackendError::WebSocketUrl(e) => write!(f, "not a usable WebSocket URL: {e}"),
        }
    }
}

impl core::error::Error for BackendError {}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// Which called numbers a route takes (`to`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteTo {
    /// `"*"`: every call.
    Any,
    /// One number in E.164 form (`+` and 8 to 15 digits), compared exactly
    /// with the webhook's `To`.
    Number(String),
}

impl RouteTo {
    /// Parses `"*"` or an E.164 number.
    ///
    /// # Errors
    /// A sentence saying what is expected.
    pub fn parse(text: &str) -> Result<RouteTo, &'static str> {
        if text == "*" {
            Ok(RouteTo::Any)
        } else {
            check_e164(text).map(|()| RouteTo::Number(text.to_owned()))
        }
    }

    /// Whether a call to `to` takes this route.
    #[must_use]
    pub fn matches(&self, to: &str) -> bool {
        match self {
            RouteTo::Any => true,
            RouteTo::Number(number) => number == to,
        }
    }
}

/// Checks an E.164 number: `+`, then 8 to 15 digits, the first not 0.
///
/// # Errors
/// A sentence saying what is expected.
pub fn check_e164(text: &str) -> Result<(), &'static str> {
    let digits = text.strip_prefix('+').unwrap_or_default();
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if valid { Ok(()) } else { Err("expected a phone number in E.164 form, such as \"+14155550199\"") }
}

/// How the stream is attached to the call (`mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StreamMode {
    /// `<Connect><Stream>`: bidirectional, the backend talks to the caller.
    #[default]
    Connect,
    /// `<Start><Stream>`: listen-only, while the call goes on with the next
    /// verb (the forward).
    Fork,
}

/// What happens when a forward is not answered, or the leg fails (`on_missed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnMissed {
    /// Connect the stream: the backend (an AI agent) takes the call.
    #[default]
    Stream,
    /// Send `sms_text` to the caller and hang up.
    Sms,
    /// Hang up.
    Hangup,
}

/// A `<Say>`: text and, optionally, Twilio's voice and language.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Spoken {
    /// What is said.
    pub text: String,
    /// `voice` (such as `Polly.Joanna`), Twilio's default when `None`.
    pub voice: Option<String>,
    /// `language` (such as `en-US`), Twilio's default when `None`.
    pub language: Option<String>,
}

impl Spoken {
    fn say(&self, text: &str) -> Say {
        let mut say = Say::new(text);
        say.voice.clone_from(&self.voice);
        say.language.clone_from(&self.language);
        say
    }
}

/// One route: what a call to a number gets. Built and validated by the
/// proxy's configuration; see the [module docs](self) for what each field
/// does to the TwiML.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// `to`: the called numbers this route takes.
    pub to: RouteTo,
    /// `backend`: where the stream's audio goes.
    pub backend: Backend,
    /// `greeting` (with `voice`, `language`): said before anything else.
    pub greeting: Option<Spoken>,
    /// `parameters`: extra `<Parameter>`s after `CallSid`, `From`, `To`.
    pub parameters: Vec<(String, String)>,
    /// `mode`.
    pub mode: StreamMode,
    /// `track`: what a fork carries (fork mode only; Twilio's default
    /// `inbound_track` when `None`).
    pub track: Option<StreamTrack>,
    /// `forward_to`: a number dialled before the stream.
    pub forward_to: Option<String>,
    /// `forward_timeout` in seconds (Twilio's `<Dial timeout>`).
    pub forward_timeout_secs: u32,
    /// `on_missed`.
    pub on_missed: OnMissed,
    /// `sms_text`: the SMS of `on_missed = "sms"`.
    pub sms_text: Option<String>,
    /// `fallback`: said when the leg fails.
    pub fallback: Option<String>,
    /// `recording.enabled`: whether this route's calls are recorded;
    /// `None` follows the global `recording.enabled`.
    pub recording: Option<bool>,
    /// `recording.twilio`: whether this route's calls are also recorded
    /// on Twilio's side; `None` follows the global `recording.twilio`.
    pub twilio_recording: Option<bool>,

    /// `capture.enabled`: whether this route's calls are captured for
    /// `voxproxy replay`; `None` follows the global `capture.enabled`.
    pub capture: Option<bool>,
}

/// `forward_timeout` when the route sets none: the seeds' business phones
/// ring 20 s before the AI or the SMS takes over (Twilio's own default is 30 s).
pub const DEFAULT_FORWARD_TIMEOUT_SECS: u32 = 20;

impl Route {
    /// A route to `backend` for `to`, with everything else at its default:
    /// connect mode, no greeting, no forward.
    #[must_use]
    pub fn new(to: RouteTo, backend: Backend) -> Route {
        Route {
            to,
            backend,
            greeting: None,
            parameters: Vec::new(),
            mode: StreamMode::Connect,
            track: None,
            forward_to: None,
            forward_timeout_secs: DEFAULT_FORWARD_TIMEOUT_SECS,
            on_missed: OnMissed::Stream,
            sms_text: None,
            fallback: None,
            recording: None,
            twilio_recording: None,

            capture: None,
        }
    }
}

/// The route a call took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchedRoute<'a> {
    /// Index in `routes`, `None` for the global settings.
    pub index: Option<usize>,
    /// The route.
    pub route: &'a Route,
}

impl MatchedRoute<'_> {
    /// `routes[N]` or `default`, for call records and logs.
    #[must_use]
    pub fn label(&self) -> String {
        self.index.map_or_else(|| "default".to_owned(), |i| format!("routes[{i}]"))
    }
}

/// The `<Parameter>` naming the route a call took (its [`MatchedRoute::label`]):
/// the stream's `start` carries it back, so the instance taking the stream
/// uses the route the webhook chose and the call record names it.
pub const ROUTE_PARAMETER: &str = "voxproxy_route";

/// The `<Parameter>` naming the SIP call (a PBX's INVITE through
/// `sip.listen`) a Twilio call was placed for: the voice webhook of that
/// call learns it from its signed URL's query (`?sip=`), and the stream's
/// `start` carries it back to the call task that bridges the two.
pub const SIP_CALL_PARAMETER: &str = "voxproxy_sip_call";

/// The route label of calls placed for a PBX through `sip.listen`: they
/// take no route (the PBX chose where to call), so a record says so.
pub const SIP_ROUTE_LABEL: &str = "sip";

/// The TwiML answering the voice webhook of a call placed for a PBX: one
/// `<Connect><Stream>` back to this proxy carrying `tags` (the proxy's own
/// `<Parameter>`s: the stream token and [`SIP_CALL_PARAMETER`]), and no
/// `action`, so Twilio hangs up when the stream ends (the PBX's BYE or
/// the bridge closing it): there is no route to fall back to.
#[must_use]
pub fn answer_sip_call(call: &VoiceWebhook, ctx: &AnswerContext, tags: &[(String, String)]) -> Response {
    let route = Route::new(RouteTo::Any, Backend::Rtp(SocketAddr::from(([0, 0, 0, 0], 0))));
    let connect = Connect::new().stream(ctx.stream(&route, call, 1, tags));
    Response::new().connect(connect)
}

/// The route a [`MatchedRoute::label`] names: `routes[N]` or `default`;
/// `None` for any other text or an index past the end (a stream answered
/// with a config since changed).
#[must_use]
pub fn route_by_label<'a>(routes: &'a [Route], default: &'a Route, label: &str) -> Option<MatchedRoute<'a>> {
    if label == "default" {
        return Some(MatchedRoute { index: None, route: default });
    }
    let index: usize = label.strip_prefix("routes[")?.strip_suffix(']')?.parse().ok()?;
    routes.get(index).map(|route| MatchedRoute { index: Some(index), route })
}

/// The first route whose `to` matches the called number; `default` (the
/// global settings) when none does.
#[must_use]
pub fn match_route<'a>(routes: &'a [Route], default: &'a Route, to: &str) -> MatchedRoute<'a> {
    routes.iter().enumerate().find(|(_, route)| route.to.matches(to)).map_or(
        MatchedRoute { index: None, route: default },
        |(index, route)| MatchedRoute { index: Some(index), route },
    )
}

// ---------------------------------------------------------------------------
// Decisions
// ---------------------------------------------------------------------------

/// What the decisions need from the proxy, built once at start.
#[derive(Clone, Debug)]
pub struct AnswerContext {
    /// `server.public_url` (`http`/`https`).
    pub public_url: Url,
    /// The `{prefix}` of stream names.
    pub stream_name_prefix: String,
    /// The WebSocket URL streams connect to, `ws(s)://…/twilio/media`.
    media_url: StreamUrl,
}

impl AnswerContext {
    /// The context for `public_url` and the stream name prefix.
    ///
    /// # Errors
    /// [`TwimlError::InvalidStreamUrl`] if the media URL cannot be a stream
    /// URL (a public URL with a query, which config refuses).
    pub fn new(public_url: Url, stream_name_prefix: impl Into<String>) -> Result<Self, TwimlError> {
        let media_url = StreamUrl::new(format!("{}{MEDIA_PATH}", public_url.websocket_twin()))?;
        Ok(AnswerContext { public_url, stream_name_prefix: stream_name_prefix.into(), media_url })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// The `n`th stream of `call`, its parameters and status callback set;
    /// `tags` (the proxy's own parameters) go last, and a route parameter
    /// of the same name is dropped so a route cannot forge one.
    fn stream(&self, route: &Route, call: &VoiceWebhook, n: u32, tags: &[(String, String)]) -> Stream {
        let details = &call.call;
        let mut stream = Stream::from_url(self.media_url.clone())
            .parameter("CallSid", details.call_sid.clone())
            .parameter("From", details.from.clone())
            .parameter("To", details.to.clone());
        stream.name = Some(format!("{}_{}_{n}", self.stream_name_prefix, details.call_sid));
        stream.status_callback = Some(self.url(STREAM_STATUS_PATH));
        for (name, value) in &route.parameters {
            if !tags.iter().any(|(tag, _)| tag == name) {
                stream = stream.parameter(name.clone(), value.clone());
            }
        }
        for (name, value) in tags {
            stream = stream.parameter(name.clone(), value.clone());
        }
        stream
    }

    fn connect(&self, route: &Route, call: &VoiceWebhook, n: u32, tags: &[(String, String)]) -> Connect {
        let mut connect = Connect::new().stream(self.stream(route, call, n, tags));
        connect.action = Some(self.url(STREAM_ENDED_PATH));
        connect
    }
}

/// The TwiML answering the voice webhook `call` on `route`.
#[must_use]
pub fn answer_voice(route: &Route, call: &VoiceWebhook, ctx: &AnswerContext) -> Response {
    answer_voice_tagged(route, call, ctx, &[])
}

/// As [`answer_voice`], every stream also carrying `tags` as its last
/// `<Parameter>`s: the proxy's own (the stream token, the route's label),
/// which Twilio echoes in the stream's `start`, so whichever instance takes
/// the stream knows them.
#[must_use]
pub fn answer_voice_tagged(
    route: &Route,
    call: &VoiceWebhook,
    ctx: &AnswerContext,
    tags: &[(String, String)],
) -> Response {
    let mut response = Response::new();
    if let Some(greeting) = &route.greeting {
        response = response.say(greeting.say(&greeting.text));
    }
    match (&route.forward_to, route.mode) {
        (Some(number), mode) => {
            if mode == StreamMode::Fork {
                let mut stream = ctx.stream(route, call, 1, tags);
                stream.track = route.track;
                response = response.verb(Start::new().stream(stream));
            }
            let mut dial = Dial::number(number.clone());
            dial.action = Some(ctx.url(DIAL_STATUS_PATH));
            dial.timeout = Some(route.forward_timeout_secs);
            response.dial(dial)
        }
        (None, StreamMode::Connect) => response.connect(ctx.connect(route, call, 1, tags)),
        // Config refuses fork mode without a forward (nothing would keep the
        // call up); should one arrive anyway, listen and hang up rather than
        // fail the call.
        (None, StreamMode::Fork) => {
            let mut stream = ctx.stream(route, call, 1, tags);
            stream.track = route.track;
            response.verb(Start::new().stream(stream)).hangup()
        }
    }
}

/// An SMS the proxy is to send through the REST API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmsRequest {
    /// The caller (`From` of the call).
    pub to: String,
    /// The number the caller dialled (`To` of the call).
    pub from: String,
    /// The text (`sms_text`).
    pub body: String,
}

/// A decision: the TwiML to serve and, maybe, an SMS to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    /// What Twilio does next.
    pub twiml: Response,
    /// The SMS to send, for `on_missed = "sms"`.
    pub sms: Option<SmsRequest>,
    /// What happened, for the call record's `missed_action`: `None` when the
    /// forward was answered or the stream ended normally.
    pub missed_action: Option<OnMissed>,
}

impl OnMissed {
    /// The value as written in the config and the call record.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            OnMissed::Stream => "stream",
            OnMissed::Sms => "sms",
            OnMissed::Hangup => "hangup",
        }
    }
}

fn sms_for(route: &Route, call: &VoiceWebhook) -> Option<SmsRequest> {
    route.sms_text.as_ref().map(|body| SmsRequest {
        to: call.call.from.clone(),
        from: call.call.to.clone(),
        body: body.clone(),
    })
}

/// The TwiML after the forward's `<Dial>` ended with `DialCallStatus`
/// `dial_status` (the dial-status callback's field; [`dial_call_status`]
/// reads it from the webhook).
#[must_use]
pub fn after_dial(route: &Route, call: &VoiceWebhook, dial_status: &str, ctx: &AnswerContext) -> Next {
    after_dial_tagged(route, call, dial_status, ctx, &[])
}

/// As [`after_dial`], a stream it connects also carrying `tags` (see
/// [`answer_voice_tagged`]).
#[must_use]
pub fn after_dial_tagged(
    route: &Route,
    call: &VoiceWebhook,
    dial_status: &str,
    ctx: &AnswerContext,
    tags: &[(String, String)],
) -> Next {
    if matches!(dial_status, "completed" | "answered") {
        return Next { twiml: Response::new().hangup(), sms: None, missed_action: None };
    }
    let (twiml, sms) = match route.on_missed {
        OnMissed::Stream => (Response::new().connect(ctx.connect(route, call, 2, tags)), None),
        OnMissed::Sms => (Response::new().hangup(), sms_for(route, call)),
        OnMissed::Hangup => (Response::new().hangup(), None),
    };
    Next { twiml, sms, missed_action: Some(route.on_missed) }
}

/// `DialCallStatus` of a dial-status callback parsed as a voice webhook
/// (its unknown fields are kept in `extra`).
#[must_use]
pub fn dial_call_status(call: &VoiceWebhook) -> Option<&str> {
    call.extra.iter().find(|(name, _)| name == "DialCallStatus").map(|(_, value)| value.as_str())
}

/// How a call's stream ended, as the proxy saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamEnd {
    /// The stream stopped and the leg was fine: the conversation is over.
    Normal,
    /// The leg could not be set up (refused, timeout, SIP 4xx–6xx, bot
    /// down) or dropped mid-call.
    LegFailed,
}

/// The TwiML after the `<Connect><Stream>` ended (the `<Connect action>`).
#[must_use]
pub fn after_stream(route: &Route, call: &VoiceWebhook, end: StreamEnd) -> Next {
    if end == StreamEnd::Normal {
        return Next { twiml: Response::new().hangup(), sms: None, missed_action: None };
    }
    let mut twiml = Response::new();
    if let Some(fallback) = &route.fallback {
        let mut say = Say::new(fallback.as_str());
        if let Some(greeting) = &route.greeting {
            say = greeting.say(fallback);
        }
        twiml = twiml.say(say);
    }
    // A failed leg cannot take the call again, so `stream` hangs up too.
    let (sms, action) = match route.on_missed {
        OnMissed::Sms => (sms_for(route, call), OnMissed::Sms),
        OnMissed::Stream | OnMissed::Hangup => (None, OnMissed::Hangup),
    };
    Next { twiml: twiml.verb(Hangup::default()), sms, missed_action: Some(action) }
}

#[cfg(test)]
mod tests;
