//! An async client for the parts of Twilio's REST API voxproxy uses: placing
//! and updating calls, starting and stopping one-way media streams, and
//! sending an SMS.
//!
//! This is the one piece of the adapters crate that does I/O: it owns an
//! HTTP/1.1 client (hyper, rustls with the `ring` provider and the Mozilla
//! root store) and needs a tokio runtime with the time driver enabled.
//!
//! ## How to drive it
//!
//! 1. Build a [`RestConfig`] with [`RestConfig::new`] (account SID and auth
//!    token, which never appears in `Debug` output), adjust timeouts, retry
//!    policy or base URL if needed, and make one [`TwilioClient`] per account.
//!    The client is cheap to share behind an `Arc`; it pools connections.
//! 2. Describe the operation with a typed request ([`CreateCall`],
//!    [`UpdateCall`], [`StartStream`], [`SendSms`]); invalid requests (TwiML
//!    over 4000 characters, an empty `To`, …) fail with
//!    [`RestError::InvalidRequest`] before anything is sent.
//! 3. Await the operation. Twilio's error JSON comes back as
//!    [`RestError::Api`]. Only HTTP 429, Twilio code 20429 and 5xx responses
//!    are retried, with jittered exponential backoff that honours a
//!    `Retry-After` header up to a bound. Timeouts and transport failures are
//!    never retried: a call-creating POST that timed out may have been
//!    processed, and retrying it could place a second call.
//!
//! ```
//! use std::time::Duration;
//! use voxproxy_adapters::rest::{AuthToken, CallInstructions, CreateCall, RestConfig, TwilioClient};
//!
//! let mut config = RestConfig::new("AC00000000000000000000000000000000", AuthToken::new("secret"));
//! config.request_timeout = Duration::from_secs(10);
//! // The token never shows up in logs.
//! assert!(!format!("{config:?}").contains("secret"));
//! let client = TwilioClient::new(config)?;
//!
//! let mut call = CreateCall::new(
//!     "+15005550006",
//!     "+15005550001",
//!     CallInstructions::Twiml("<Response><Say>Hello</Say></Response>".into()),
//! );
//! call.status_callback = Some("https://proxy.example.com/twilio/status".into());
//! # let _ = (client, call);
//! // Inside a tokio runtime: `let placed = client.create_call(&call).await?;`
//! # Ok::<(), voxproxy_adapters::rest::RestError>(())
//! ```

use core::fmt;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::form::Form;
use crate::media_stream::base64;

/// Where Twilio's REST API lives.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// The API version path segment every voice and messaging resource sits under.
pub const API_VERSION: &str = "2010-04-01";
/// Twilio's limit on the `Twiml` parameter, in characters.
pub const MAX_TWIML_CHARS: usize = 4000;
/// Twilio's limit on an SMS `Body`, in characters.
pub const MAX_SMS_BODY_CHARS: usize = 1600;
/// How many `ParameterN.Name`/`ParameterN.Value` pairs a stream accepts.
pub const MAX_STREAM_PARAMETERS: usize = 99;
/// Responses larger than this are refused rather than buffered: every
/// resource voxproxy reads is a few KiB of JSON.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Error messages from the server are cut to this many characters so a
/// hostile or broken endpoint cannot flood logs.
const MAX_ERROR_TEXT_CHARS: usize = 512;
/// The only Twilio error code (besides HTTP 429 and 5xx) that means "not
/// processed, try again".
const TOO_MANY_REQUESTS_CODE: u32 = 20429;

/// A Twilio auth token. Its `Debug` output is redacted and it has no
/// `Display`, so it cannot leak into logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthToken(String);

impl AuthToken {
    /// Wraps the secret (read it from `TWILIO_AUTH_TOKEN`, never from a flag).
    #[must_use]
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(<redacted>)")
    }
}

/// When and how often a throttled or failed-on-the-server request is retried.
///
/// The delay before retry `n` (counting from 0) is drawn uniformly from
/// `[c/2, c]` with `c = min(initial_backoff × 2ⁿ, max_backoff)`, and is never
/// shorter than the server's `Retry-After` (in seconds; capped at
/// `max_retry_after`; HTTP-date values are ignored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; 1 disables retries. 0 is
    /// treated as 1.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry.
    pub initial_backoff: Duration,
    /// The backoff ceiling never grows past this.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is shortened to it.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (0 for the first retry), given
    /// the server's `Retry-After` and a uniformly random `random`.
    #[must_use]
    pub fn backoff(&self, retry: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        let ceiling = self.initial_backoff.saturating_mul(factor).min(self.max_backoff);
        let floor = ceiling / 2;
        let span = u64::try_from((ceiling - floor).as_nanos()).unwrap_or(u64::MAX);
        let extra = if span == u64::MAX { random } else { random % (span + 1) };
        let jittered = floor.saturating_add(Duration::from_nanos(extra));
        match retry_after {
            Some(wait) => jittered.max(wait.min(self.max_retry_after)),
            None => jittered,
        }
    }
}

/// Everything [`TwilioClient`] needs. `Debug` redacts the token.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RestConfig {
    /// The account the requests act for (`AC…`), also the Basic auth user.
    pub account_sid: String,
    /// The account's auth token, the Basic auth password.
    pub auth_token: AuthToken,
    /// Scheme and authority (and optional path prefix) of the API;
    /// `http://` is accepted so tests and local mocks can run without TLS.
    pub base_url: String,
    /// The API version path segment, normally [`API_VERSION`].
    pub api_version: String,
    /// How long establishing a TCP connection may take.
    pub connect_timeout: Duration,
    /// How long one attempt may take, connect, TLS, request and the whole
    /// response body included. Retries each get this much again.
    pub request_timeout: Duration,
    /// Which failures are retried and how long to wait in between.
    pub retry: RetryPolicy,
    /// Seeds the backoff jitter; `None` seeds it from the operating system.
    /// Tests set it to make delays reproducible.
    pub jitter_seed: Option<u64>,
}

impl RestConfig {
    /// A configuration with Twilio's public endpoint, a 5 s connect timeout,
    /// a 30 s request timeout and the default [`RetryPolicy`].
    #[must_use]
    pub fn new(account_sid: impl Into<String>, auth_token: AuthToken) -> Self {
        Self {
            account_sid: account_sid.into(),
            auth_token,
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: API_VERSION.to_owned(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            jitter_seed: None,
        }
    }
}

/// Everything that can go wrong talking to Twilio.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestError {
    /// The [`RestConfig`] cannot work; nothing was sent.
    InvalidConfig {
        /// The offending field of [`RestConfig`].
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request breaks one of Twilio's documented rules; nothing was sent.
    InvalidRequest {
        /// The offending Twilio parameter.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Twilio (or something in front of it) answered with a non-2xx status.
    Api {
        /// The HTTP status code.
        status: u16,
        /// Twilio's error code (`20001`, `21211`, …) when the body had one.
        code: Option<u32>,
        /// Twilio's message, or the start of a non-JSON body.
        message: String,
        /// Twilio's link to the error's documentation, when given.
        more_info: Option<String>,
    },
    /// The request failed before a response arrived: DNS, connect, TLS, or
    /// the connection broke. It may or may not have reached Twilio.
    Transport {
        /// The URL that was requested.
        url: String,
        /// The underlying failure, its causes joined with `: `.
        reason: String,
    },
    /// No complete response arrived within [`RestConfig::request_timeout`].
    /// The request may still be processed by Twilio.
    Timeout {
        /// The URL that was requested.
        url: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// A 2xx response whose body was not the JSON resource expected, or a
    /// response over [`MAX_RESPONSE_BYTES`].
    Decode {
        /// The HTTP status code of the response.
        status: u16,
        /// What could not be decoded.
        reason: String,
    },
    /// Every attempt was throttled or failed on the server side.
    RetriesExhausted {
        /// How many attempts were made.
        attempts: u32,
        /// The error of the last attempt.
        last: Box<RestError>,
    },
}

impl RestError {
    /// Whether Twilio documented this failure as "not processed, safe to
    /// retry": HTTP 429, Twilio code 20429, or a 5xx status.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Api { status, code, .. } => {
                *status == 429 || (500..600).contains(status) || *code == Some(TOO_MANY_REQUESTS_CODE)
            }
            _ => false,
        }
    }
}

impl fmt::Display for RestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig { field, reason } => {
                write!(f, "invalid Twilio REST configuration `{field}`: {reason}")
            }
            Self::InvalidRequest { field, reason } => {
                write!(f, "invalid Twilio request parameter `{field}`: {reason} (nothing was sent)")
            }
            Self::Api { status, code, message, more_info } => {
                write!(f, "Twilio answered HTTP {status}")?;
                if let Some(code) = code {
                    write!(f, " with error {code}")?;
                }
                write!(f, ": {message}")?;
                if let Some(link) = more_info {
                    write!(f, " (see {link})")?;
                }
                Ok(())
            }
            Self::Transport { url, reason } => write!(
                f,
                "could not complete the request to {url}: {reason}; check network access and `base_url`"
            ),
            Self::Timeout { url, after } => write!(
                f,
                "no response from {url} within {after:?}; it may still have been processed, so check before \
                 repeating it"
            ),
            Self::Decode { status, reason } => {
                write!(f, "unexpected response body from Twilio (HTTP {status}): {reason}")
            }
            Self::RetriesExhausted { attempts, last } => {
                write!(f, "gave up after {attempts} attempts; last error: {last}")
            }
        }
    }
}

impl core::error::Error for RestError {}

/// What Twilio should do with a call: run this TwiML or fetch it from a URL.
/// Being an enum, a request has exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallInstructions {
    /// Inline TwiML, at most [`MAX_TWIML_CHARS`] characters (`Twiml`).
    Twiml(String),
    /// A URL Twilio requests the TwiML from (`Url`).
    Url(String),
}

/// The HTTP method Twilio uses for a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET`
    Get,
    /// `POST` (Twilio's default)
    Post,
}

impl HttpMethod {
    /// The spelling Twilio expects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }
}

/// A call progress event a status callback can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallProgressEvent {
    /// `initiated`
    Initiated,
    /// `ringing`
    Ringing,
    /// `answered`
    Answered,
    /// `completed` (the only one sent when none is requested)
    Completed,
}

impl CallProgressEvent {
    /// The spelling Twilio expects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::Answered => "answered",
            Self::Completed => "completed",
        }
    }
}

/// `POST /Accounts/{AccountSid}/Calls.json`: place an outbound call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CreateCall {
    /// Who to call (E.164 number, `client:`, `sip:` URI).
    pub to: String,
    /// The caller ID: a Twilio number or verified caller ID.
    pub from: String,
    /// What to do once the call connects.
    pub instructions: CallInstructions,
    /// Where call progress is reported (`StatusCallback`).
    pub status_callback: Option<String>,
    /// How the status callback is requested (`StatusCallbackMethod`).
    pub status_callback_method: Option<HttpMethod>,
    /// Which events are reported; each becomes its own
    /// `StatusCallbackEvent` field, as Twilio rejects a comma-joined value.
    pub status_callback_events: Vec<CallProgressEvent>,
    /// Seconds to let the phone ring (`Timeout`).
    pub timeout_secs: Option<u32>,
}

impl CreateCall {
    /// A call with no callbacks and Twilio's default ring timeout.
    #[must_use]
    pub fn new(to: impl Into<String>, from: impl Into<String>, instructions: CallInstructions) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            instructions,
            status_callback: None,
            status_callback_method: None,
            status_callback_events: Vec::new(),
            timeout_secs: None,
        }
    }

    fn to_form(&self) -> Result<String, RestError> {
        let mut form = Form::new();
        form.push("To", non_empty("To", &self.to)?);
        form.push("From", non_empty("From", &self.from)?);
        instructions_to_form(&mut form, &self.instructions)?;
        if let Some(url) = &self.status_callback {
            form.push("StatusCallback", non_empty("StatusCallback", url)?);
        }
        if let Some(method) = self.status_callback_method {
            form.push("StatusCallbackMethod", method.as_str());
        }
        for event in &self.status_callback_events {
            form.push("StatusCallbackEvent", event.as_str());
        }
        if let Some(secs) = self.timeout_secs {
            form.push("Timeout", secs.to_string());
        }
        Ok(form.encode())
    }
}

/// `POST /Accounts/{AccountSid}/Calls/{CallSid}.json`: change a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateCall {
    /// Replace the running TwiML with this document (`Twiml`).
    Twiml(String),
    /// Fetch new TwiML from this URL (`Url`).
    Url(String),
    /// Hang up a call in progress (`Status=completed`).
    Complete,
    /// Cancel a call that is queued or ringing (`Status=canceled`).
    Cancel,
}

impl UpdateCall {
    fn to_form(&self) -> Result<String, RestError> {
        let mut form = Form::new();
        match self {
            Self::Twiml(twiml) => push_twiml(&mut form, twiml)?,
            Self::Url(url) => form.push("Url", non_empty("Url", url)?),
            Self::Complete => form.push("Status", "completed"),
            Self::Cancel => form.push("Status", "canceled"),
        }
        Ok(form.encode())
    }
}

/// Which audio of the call a one-way stream forks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTrack {
    /// `inbound_track` (Twilio's default): what the far end says.
    Inbound,
    /// `outbound_track`: what Twilio plays to the far end.
    Outbound,
    /// `both_tracks`
    Both,
}

impl StreamTrack {
    /// The spelling Twilio expects.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound_track",
            Self::Outbound => "outbound_track",
            Self::Both => "both_tracks",
        }
    }
}

/// `POST …/Calls/{CallSid}/Streams.json`: fork a call's audio to a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartStream {
    /// The `wss://` URL Twilio connects to (no query string: use
    /// [`parameters`](Self::parameters)).
    pub url: String,
    /// A name unique within the call, usable to stop the stream.
    pub name: Option<String>,
    /// Which track to fork.
    pub track: Option<StreamTrack>,
    /// Where stream status events are reported.
    pub status_callback: Option<String>,
    /// How the status callback is requested.
    pub status_callback_method: Option<HttpMethod>,
    /// Custom parameters, delivered in the `start` message's
    /// `customParameters`; at most [`MAX_STREAM_PARAMETERS`].
    pub parameters: Vec<(String, String)>,
}

impl StartStream {
    /// A stream of the inbound track to `url`, unnamed, without callbacks.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: None,
            track: None,
            status_callback: None,
            status_callback_method: None,
            parameters: Vec::new(),
        }
    }

    fn to_form(&self) -> Result<String, RestError> {
        if self.parameters.len() > MAX_STREAM_PARAMETERS {
            return Err(RestError::InvalidRequest {
                field: "Parameter",
                reason: format!(
                    "{} custom parameters, Twilio accepts at most {MAX_STREAM_PARAMETERS}",
                    self.parameters.len()
                ),
            });
        }
        let mut form = Form::new();
        form.push("Url", non_empty("Url", &self.url)?);
        if let Some(name) = &self.name {
            form.push("Name", non_empty("Name", name)?);
        }
        if let Some(track) = self.track {
            form.push("Track", track.as_str());
        }
        if let Some(url) = &self.status_callback {
            form.push("StatusCallback", non_empty("StatusCallback", url)?);
        }
        if let Some(method) = self.status_callback_method {
            form.push("StatusCallbackMethod", method.as_str());
        }
        for (index, (name, value)) in (1..).zip(&self.parameters) {
            form.push(format!("Parameter{index}.Name"), non_empty("Parameter.Name", name)?);
            form.push(format!("Parameter{index}.Value"), value);
        }
        Ok(form.encode())
    }
}

/// `POST …/Calls/{CallSid}/Recordings.json`: record a live call on
/// Twilio's side, from now until it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StartRecording {
    /// Where Twilio posts the recording's status (`RecordingSid`,
    /// `RecordingUrl`, `RecordingStatus`, `RecordingDuration`, …).
    pub status_callback: Option<String>,
    /// `RecordingChannels=dual`: the two parties on separate channels
    /// (otherwise mixed to one).
    pub dual_channel: bool,
}

impl StartRecording {
    /// A dual-channel recording reporting to `status_callback`.
    #[must_use]
    pub fn dual(status_callback: impl Into<String>) -> Self {
        Self { status_callback: Some(status_callback.into()), dual_channel: true }
    }

    fn to_form(&self) -> Result<String, RestError> {
        let mut form = Form::new();
        if let Some(url) = &self.status_callback {
            form.push("RecordingStatusCallback", non_empty("RecordingStatusCallback", url)?);
            // Every state, so a recording that fails (`absent`) is reported
            // too, not only one that completes.
            form.push("RecordingStatusCallbackEvent", "in-progress completed absent");
            form.push("RecordingStatusCallbackMethod", HttpMethod::Post.as_str());
        }
        form.push("RecordingChannels", if self.dual_channel { "dual" } else { "mono" });
        Ok(form.encode())
    }
}

/// `POST /Accounts/{AccountSid}/Messages.json`: send a text message.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendSms {
    /// The recipient.
    pub to: String,
    /// A Twilio number (or messaging service sender) to send from.
    pub from: String,
    /// The text, at most [`MAX_SMS_BODY_CHARS`] characters.
    pub body: String,
}

impl SendSms {
    /// A message from `from` to `to`.
    #[must_use]
    pub fn new(to: impl Into<String>, from: impl Into<String>, body: impl Into<String>) -> Self {
        Self { to: to.into(), from: from.into(), body: body.into() }
    }

    fn to_form(&self) -> Result<String, RestError> {
        let chars = self.body.chars().count();
        if chars > MAX_SMS_BODY_CHARS {
            return Err(RestError::InvalidRequest {
                field: "Body",
                reason: format!("{chars} characters, Twilio accepts at most {MAX_SMS_BODY_CHARS}"),
            });
        }
        let mut form = Form::new();
        form.push("To", non_empty("To", &self.to)?);
        form.push("From", non_empty("From", &self.from)?);
        form.push("Body", non_empty("Body", &self.body)?);
        Ok(form.encode())
    }
}

fn instructions_to_form(form: &mut Form, instructions: &CallInstructions) -> Result<(), RestError> {
    match instructions {
        CallInstructions::Twiml(twiml) => push_twiml(form, twiml),
        CallInstructions::Url(url) => {
            form.push("Url", non_empty("Url", url)?);
            Ok(())
        }
    }
}

fn push_twiml(form: &mut Form, twiml: &str) -> Result<(), RestError> {
    let chars = twiml.chars().count();
    if chars > MAX_TWIML_CHARS {
        return Err(RestError::InvalidRequest {
            field: "Twiml",
            reason: format!(
                "{chars} characters, Twilio accepts at most {MAX_TWIML_CHARS}; serve it from a Url instead"
            ),
        });
    }
    form.push("Twiml", non_empty("Twiml", twiml)?);
    Ok(())
}

fn non_empty<'a>(field: &'static str, value: &'a str) -> Result<&'a str, RestError> {
    if value.trim().is_empty() {
        Err(RestError::InvalidRequest { field, reason: "must not be empty".to_owned() })
    } else {
        Ok(value)
    }
}

/// Defines a Twilio status enum that keeps unknown values instead of failing,
/// since Twilio adds states over time.
macro_rules! twilio_status {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know, kept verbatim.
            Other(String),
        }

        impl $name {
            /// Maps Twilio's spelling; unknown values become `Other`.
            #[must_use]
            pub fn from_twilio(text: &str) -> Self {
                match text {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }

            /// Twilio's spelling.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(other) => other,
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                Ok(Self::from_twilio(&text))
            }
        }
    };
}

twilio_status! {
    /// A call's `status`.
    CallStatus {
        /// `queued`
        Queued => "queued",
        /// `initiated`
        Initiated => "initiated",
        /// `ringing`
        Ringing => "ringing",
        /// `in-progress`
        InProgress => "in-progress",
        /// `completed`
        Completed => "completed",
        /// `busy`
        Busy => "busy",
        /// `failed`
        Failed => "failed",
        /// `no-answer`
        NoAnswer => "no-answer",
        /// `canceled`
        Canceled => "canceled",
    }
}

twilio_status! {
    /// A stream's `status`.
    StreamStatus {
        /// `in-progress`
        InProgress => "in-progress",
        /// `stopped`
        Stopped => "stopped",
    }
}

twilio_status! {
    /// A message's `status`.
    MessageStatus {
        /// `accepted`
        Accepted => "accepted",
        /// `scheduled`
        Scheduled => "scheduled",
        /// `queued`
        Queued => "queued",
        /// `sending`
        Sending => "sending",
        /// `sent`
        Sent => "sent",
        /// `delivered`
        Delivered => "delivered",
        /// `undelivered`
        Undelivered => "undelivered",
        /// `failed`
        Failed => "failed",
        /// `canceled`
        Canceled => "canceled",
    }
}

/// The call resource Twilio returns (only the fields voxproxy reads; others
/// are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Call {
    /// `CA…`
    pub sid: String,
    /// The call's state.
    pub status: CallStatus,
    /// `AC…`
    #[serde(default)]
    pub account_sid: Option<String>,
    /// The called party.
    #[serde(default)]
    pub to: Option<String>,
    /// The caller.
    #[serde(default)]
    pub from: Option<String>,
    /// `inbound`, `outbound-api`, `outbound-dial`, …
    #[serde(default)]
    pub direction: Option<String>,
    /// The parent call's SID for a leg created by `<Dial>`.
    #[serde(default)]
    pub parent_call_sid: Option<String>,
}

/// The stream resource Twilio returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Stream {
    /// `MZ…`, the `streamSid` of the Media Streams messages.
    pub sid: String,
    /// The stream's state.
    pub status: StreamStatus,
    /// The call it belongs to.
    #[serde(default)]
    pub call_sid: Option<String>,
    /// The name given when it started.
    #[serde(default)]
    pub name: Option<String>,
}

/// The recording resource Twilio returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Recording {
    /// `RE…`
    pub sid: String,
    /// `in-progress`, `paused`, `stopped`, `processing`, `completed`, `absent`.
    #[serde(default)]
    pub status: Option<String>,
    /// The call it records.
    #[serde(default)]
    pub call_sid: Option<String>,
}

/// The message resource Twilio returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// `SM…`
    pub sid: String,
    /// The message's state.
    pub status: MessageStatus,
    /// The recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// The sender.
    #[serde(default)]
    pub from: Option<String>,
}

/// The account resource Twilio returns (see [`TwilioClient::fetch_account`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Account {
    /// `AC…`
    pub sid: String,
    /// `active`, `suspended` or `closed`.
    #[serde(default)]
    pub status: Option<String>,
}

/// A Twilio REST client for one account. Operations may run concurrently.
pub struct TwilioClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `{base}/{version}/Accounts/{AccountSid}`, every resource's prefix.
    account_url: String,
    authorization: HeaderValue,
    request_timeout: Duration,
    retry: RetryPolicy,
    jitter: Mutex<Jitter>,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("account_url", &self.account_url)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    /// Validates `config` and builds the client. Needs no runtime; the
    /// operations need a tokio runtime with time enabled.
    pub fn new(config: RestConfig) -> Result<Self, RestError> {
        let account_url = account_url(&config)?;
        let authorization = basic_auth(&config.account_sid, &config.auth_token)?;

        let provider = rustls::crypto::ring::default_provider();
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(config.connect_timeout));
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| RestError::InvalidConfig { field: "tls", reason: e.to_string() })?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);

        let seed = config.jitter_seed.unwrap_or_else(os_seed);
        Ok(Self {
            http,
            account_url,
            authorization,
            request_timeout: config.request_timeout,
            retry: config.retry,
            jitter: Mutex::new(Jitter::new(seed)),
        })
    }

    /// Places an outbound call.
    pub async fn create_call(&self, call: &CreateCall) -> Result<Call, RestError> {
        let form = call.to_form()?;
        self.post("/Calls.json", form).await
    }

    /// Redirects, hangs up or cancels a call.
    pub async fn update_call(&self, call_sid: &str, update: &UpdateCall) -> Result<Call, RestError> {
        let form = update.to_form()?;
        let path = format!("/Calls/{}.json", path_segment("CallSid", call_sid)?);
        self.post(&path, form).await
    }

    /// Starts a one-way media stream on a live call.
    pub async fn start_stream(&self, call_sid: &str, stream: &StartStream) -> Result<Stream, RestError> {
        let form = stream.to_form()?;
        let path = format!("/Calls/{}/Streams.json", path_segment("CallSid", call_sid)?);
        self.post(&path, form).await
    }

    /// Starts recording a live call on Twilio's side.
    pub async fn start_recording(
        &self,
        call_sid: &str,
        recording: &StartRecording,
    ) -> Result<Recording, RestError> {
        let form = recording.to_form()?;
        let path = format!("/Calls/{}/Recordings.json", path_segment("CallSid", call_sid)?);
        self.post(&path, form).await
    }

    /// Stops a stream, named by its SID (`MZ…`) or by the name it was given.
    pub async fn stop_stream(&self, call_sid: &str, sid_or_name: &str) -> Result<Stream, RestError> {
        let path = format!(
            "/Calls/{}/Streams/{}.json",
            path_segment("CallSid", call_sid)?,
            path_segment("Sid", sid_or_name)?
        );
        let mut form = Form::new();
        form.push("Status", "stopped");
        self.post(&path, form.encode()).await
    }

    /// Sends an SMS.
    pub async fn send_sms(&self, sms: &SendSms) -> Result<Message, RestError> {
        let form = sms.to_form()?;
        self.post("/Messages.json", form).await
    }

    /// `GET /Accounts/{AccountSid}.json`: the account itself. Changes
    /// nothing, so it is the cheap way to check that the credentials work
    /// (a wrong token is [`RestError::Api`] with status 401).
    pub async fn fetch_account(&self) -> Result<Account, RestError> {
        self.request(Method::GET, ".json", None).await
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, form: String) -> Result<T, RestError> {
        self.request(Method::POST, path, Some(form)).await
    }

    /// One operation: `path` is appended to the account URL; `form` is the
    /// body of a POST (`None` sends a GET without a body).
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: Option<String>,
    ) -> Result<T, RestError> {
        let url = format!("{}{path}", self.account_url);
        let uri: Uri = url.parse().map_err(|e: http::uri::InvalidUri| RestError::InvalidConfig {
            field: "base_url",
            reason: e.to_string(),
        })?;
        let body = form.map(Bytes::from);
        let max_attempts = self.retry.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            let (status, headers, bytes) =
                match tokio::time::timeout(self.request_timeout, self.send_once(&method, &uri, body.clone()))
                    .await
                {
                    Ok(result) => {
                        result.map_err(|reason| RestError::Transport { url: url.clone(), reason })?
                    }
                    Err(_) => return Err(RestError::Timeout { url, after: self.request_timeout }),
                };
            if status.is_success() {
                return serde_json::from_slice(&bytes)
                    .map_err(|e| RestError::Decode { status: status.as_u16(), reason: e.to_string() });
            }
            if status.is_informational() || status.is_redirection() {
                return Err(RestError::Decode {
                    status: status.as_u16(),
                    reason: "unexpected non-final or redirect status".to_owned(),
                });
            }
            let error = api_error(status, &bytes);
            if !error.is_retryable() {
                return Err(error);
            }
            if attempt >= max_attempts {
                return Err(if attempt == 1 {
                    error
                } else {
                    RestError::RetriesExhausted { attempts: attempt, last: Box::new(error) }
                });
            }
            let random = self.jitter.lock().map_or(0, |mut jitter| jitter.next());
            let delay = self.retry.backoff(attempt - 1, retry_after(&headers), random);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One HTTP exchange; the error is the flattened cause chain.
    async fn send_once(
        &self,
        method: &Method,
        uri: &Uri,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, HeaderMap, Bytes), String> {
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri.clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("voxproxy/", env!("CARGO_PKG_VERSION")));
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
        }
        let request = builder.body(Full::new(body.unwrap_or_default())).map_err(|e| cause_chain(&e))?;
        let response = self.http.request(request).await.map_err(|e| cause_chain(&e))?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE_BYTES).collect().await;
        match collected {
            Ok(collected) => Ok((parts.status, parts.headers, collected.to_bytes())),
            Err(e) if e.is::<LengthLimitError>() => {
                Err(format!("response body larger than {MAX_RESPONSE_BYTES} bytes"))
            }
            Err(e) => Err(cause_chain(e.as_ref())),
        }
    }
}

fn cause_chain(error: &(dyn core::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn account_url(config: &RestConfig) -> Result<String, RestError> {
    let base = config.base_url.trim_end_matches('/');
    let uri: Uri = base.parse().map_err(|e: http::uri::InvalidUri| RestError::InvalidConfig {
        field: "base_url",
        reason: e.to_string(),
    })?;
    let scheme_ok = matches!(uri.scheme_str(), Some("https" | "http"));
    if !scheme_ok || uri.authority().is_none() || uri.query().is_some() {
        return Err(RestError::InvalidConfig {
            field: "base_url",
            reason: format!("`{base}` is not an absolute http(s) URL without a query"),
        });
    }
    let version = &config.api_version;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err(RestError::InvalidConfig {
            field: "api_version",
            reason: format!("`{version}` is not a version such as {API_VERSION}"),
        });
    }
    let sid = &config.account_sid;
    if sid.is_empty() || !sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(RestError::InvalidConfig {
            field: "account_sid",
            reason: format!("`{sid}` is not an account SID (AC followed by 32 hex digits)"),
        });
    }
    Ok(format!("{base}/{version}/Accounts/{sid}"))
}

fn basic_auth(account_sid: &str, token: &AuthToken) -> Result<HeaderValue, RestError> {
    if token.0.is_empty() {
        return Err(RestError::InvalidConfig { field: "auth_token", reason: "must not be empty".to_owned() });
    }
    let credentials = format!("{account_sid}:{}", token.0);
    let mut header = b"Basic ".to_vec();
    base64::encode_append(credentials.as_bytes(), &mut header);
    let mut value = HeaderValue::from_bytes(&header).map_err(|_| RestError::InvalidConfig {
        field: "auth_token",
        reason: "unusable characters".to_owned(),
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn path_segment(field: &'static str, value: &str) -> Result<String, RestError> {
    non_empty(field, value)?;
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            push_percent(&mut out, byte);
        }
    }
    Ok(out)
}

fn push_percent(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 15)]));
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    code: Option<u32>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    more_info: Option<String>,
}

fn api_error(status: StatusCode, body: &[u8]) -> RestError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let (code, message, more_info) = match parsed {
        Some(ErrorBody { code, message, more_info }) => (code, message, more_info),
        None => (None, None, None),
    };
    let message = message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        if text.is_empty() {
            status.canonical_reason().unwrap_or("no error description").to_owned()
        } else {
            text.to_owned()
        }
    });
    RestError::Api {
        status: status.as_u16(),
        code,
        message: truncate(message),
        more_info: more_info.map(truncate),
    }
}

fn truncate(mut text: String) -> String {
    if let Some((index, _)) = text.char_indices().nth(MAX_ERROR_TEXT_CHARS) {
        text.truncate(index);
        text.push('…');
    }
    text
}

/// `Retry-After` in delta-seconds; HTTP-dates would need a wall clock and
/// Twilio sends seconds, so they are ignored.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    text.parse::<u64>().ok().map(Duration::from_secs)
}

/// xorshift64*: plenty for spreading retries, and reproducible from a seed.
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn new(seed: u64) -> Self {
        // xorshift has a fixed point at zero.
        Self(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A seed from the OS: std's `RandomState` keys are drawn from the operating
/// system's random source, which avoids a dependency for eight bytes.
fn os_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x766f_7870_726f_7879);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form_of(pairs: &[(&str, &str)]) -> String {
        let mut form = Form::new();
        for (name, value) in pairs {
            form.push(*name, *value);
        }
        form.encode()
    }

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(form_of(&[("To", "+1 415")]), "To=%2B1+415");
        assert_eq!(form_of(&[("a", "x&y=z"), ("b", "é")]), "a=x%26y%3Dz&b=%C3%A9");
        assert_eq!(form_of(&[("k", "A-z.0_9*~")]), "k=A-z.0_9*%7E");
    }

    #[test]
    fn basic_auth_header_is_sensitive_and_correct() {
        let value = basic_auth("Aladdin", &AuthToken::new("open sesame")).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn debug_output_never_contains_the_token() {
        let config = RestConfig::new("AC123", AuthToken::new("hunter2-token"));
        assert!(!format!("{config:?}").contains("hunter2"));
        let client = TwilioClient::new(config).unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    #[test]
    fn create_call_repeats_status_callback_event_per_event() {
        let mut call =
            CreateCall::new("+15551230000", "+15559870000", CallInstructions::Url("https://a/b?c=d".into()));
        call.status_callback = Some("https://x/status".into());
        call.status_callback_method = Some(HttpMethod::Post);
        call.status_callback_events =
            vec![CallProgressEvent::Initiated, CallProgressEvent::Ringing, CallProgressEvent::Completed];
        call.timeout_secs = Some(25);
        assert_eq!(
            call.to_form().unwrap(),
            "To=%2B15551230000&From=%2B15559870000&Url=https%3A%2F%2Fa%2Fb%3Fc%3Dd\
             &StatusCallback=https%3A%2F%2Fx%2Fstatus&StatusCallbackMethod=POST\
             &StatusCallbackEvent=initiated&StatusCallbackEvent=ringing&StatusCallbackEvent=completed&Timeout=25"
        );
    }

    #[test]
    fn twiml_limit_counts_characters_not_bytes() {
        let at_limit = "é".repeat(MAX_TWIML_CHARS);
        let call = CreateCall::new("+1", "+2", CallInstructions::Twiml(at_limit.clone()));
        assert!(call.to_form().is_ok());
        let over = format!("{at_limit}x");
        let call = CreateCall::new("+1", "+2", CallInstructions::Twiml(over));
        assert!(matches!(call.to_form(), Err(RestError::InvalidRequest { field: "Twiml", .. })));
        assert!(matches!(
            UpdateCall::Twiml("x".repeat(MAX_TWIML_CHARS + 1)).to_form(),
            Err(RestError::InvalidRequest { field: "Twiml", .. })
        ));
    }

    #[test]
    fn empty_required_fields_are_refused() {
        let call = CreateCall::new("", "+2", CallInstructions::Url("https://a".into()));
        assert!(matches!(call.to_form(), Err(RestError::InvalidRequest { field: "To", .. })));
        let call = CreateCall::new("+1", "+2", CallInstructions::Twiml(" ".into()));
        assert!(matches!(call.to_form(), Err(RestError::InvalidRequest { field: "Twiml", .. })));
        assert!(matches!(
            SendSms::new("+1", "+2", "").to_form(),
            Err(RestError::InvalidRequest { field: "Body", .. })
        ));
    }

    #[test]
    fn update_call_forms() {
        assert_eq!(UpdateCall::Complete.to_form().unwrap(), "Status=completed");
        assert_eq!(UpdateCall::Cancel.to_form().unwrap(), "Status=canceled");
        assert_eq!(UpdateCall::Url("https://h/p".into()).to_form().unwrap(), "Url=https%3A%2F%2Fh%2Fp");
        assert_eq!(
            UpdateCall::Twiml("<Response><Hangup/></Response>".into()).to_form().unwrap(),
            "Twiml=%3CResponse%3E%3CHangup%2F%3E%3C%2FResponse%3E"
        );
    }

    #[test]
    fn start_stream_numbers_parameters_from_one() {
        let mut stream = StartStream::new("wss://p.example.com/twilio/media");
        stream.name = Some("fork 1".into());
        stream.track = Some(StreamTrack::Both);
        stream.parameters = vec![("FirstName".into(), "Jane".into()), ("Tier".into(), "gold & up".into())];
        assert_eq!(
            stream.to_form().unwrap(),
            "Url=wss%3A%2F%2Fp.example.com%2Ftwilio%2Fmedia&Name=fork+1&Track=both_tracks\
             &Parameter1.Name=FirstName&Parameter1.Value=Jane\
             &Parameter2.Name=Tier&Parameter2.Value=gold+%26+up"
        );
        stream.parameters = vec![("k".into(), "v".into()); MAX_STREAM_PARAMETERS + 1];
        assert!(matches!(stream.to_form(), Err(RestError::InvalidRequest { field: "Parameter", .. })));
    }

    #[test]
    fn start_recording_asks_for_both_channels_and_every_status() {
        let recording = StartRecording::dual("https://p.example.com/twilio/recording-status");
        assert_eq!(
            recording.to_form().unwrap(),
            "RecordingStatusCallback=https%3A%2F%2Fp.example.com%2Ftwilio%2Frecording-status\
             &RecordingStatusCallbackEvent=in-progress+completed+absent\
             &RecordingStatusCallbackMethod=POST&RecordingChannels=dual"
        );
        let empty = StartRecording { status_callback: Some(String::new()), dual_channel: false };
        assert!(matches!(
            empty.to_form(),
            Err(RestError::InvalidRequest { field: "RecordingStatusCallback", .. })
        ));
    }

    #[test]
    fn sms_body_limit() {
        assert_eq!(
            SendSms::new("+1", "+2", "hi there").to_form().unwrap(),
            "To=%2B1&From=%2B2&Body=hi+there"
        );
        let long = SendSms::new("+1", "+2", "x".repeat(MAX_SMS_BODY_CHARS + 1));
        assert!(matches!(long.to_form(), Err(RestError::InvalidRequest { field: "Body", .. })));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(path_segment("Sid", "my stream/1").unwrap(), "my%20stream%2F1");
        assert_eq!(path_segment("Sid", "MZ0123abc").unwrap(), "MZ0123abc");
        assert!(path_segment("Sid", "").is_err());
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut config = RestConfig::new("AC1", AuthToken::new("t"));
        config.base_url = "ftp://example.com".into();
        assert!(matches!(TwilioClient::new(config), Err(RestError::InvalidConfig { field: "base_url", .. })));
        let config = RestConfig::new("AC/../x", AuthToken::new("t"));
        assert!(matches!(
            TwilioClient::new(config),
            Err(RestError::InvalidConfig { field: "account_sid", .. })
        ));
        let config = RestConfig::new("AC1", AuthToken::new(""));
        assert!(matches!(
            TwilioClient::new(config),
            Err(RestError::InvalidConfig { field: "auth_token", .. })
        ));
        let mut config = RestConfig::new("AC1", AuthToken::new("t"));
        config.base_url = "http://127.0.0.1:9/".into();
        assert_eq!(account_url(&config).unwrap(), "http://127.0.0.1:9/2010-04-01/Accounts/AC1");
    }

    #[test]
    fn backoff_grows_doubles_and_caps() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(5),
        };
        // random = 0 gives the floor (half the ceiling); u64::MAX % (span+1)
        // lands anywhere, so test the floor and the bound separately.
        assert_eq!(policy.backoff(0, None, 0), Duration::from_millis(50));
        assert_eq!(policy.backoff(1, None, 0), Duration::from_millis(100));
        assert_eq!(policy.backoff(2, None, 0), Duration::from_millis(200));
        assert_eq!(policy.backoff(5, None, 0), Duration::from_millis(500));
        assert_eq!(policy.backoff(40, None, 0), Duration::from_millis(500));
        // span for retry 0 is 50 ms = 50_000_000 ns; random = span gives the ceiling.
        assert_eq!(policy.backoff(0, None, 50_000_000), Duration::from_millis(100));
        let mut jitter = Jitter::new(7);
        for retry in 0..12 {
            let delay = policy.backoff(retry, None, jitter.next());
            assert!(delay <= Duration::from_millis(1000), "{delay:?}");
            assert!(delay >= Duration::from_millis(50), "{delay:?}");
        }
    }

    #[test]
    fn retry_after_is_honoured_but_bounded() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            max_retry_after: Duration::from_secs(5),
        };
        assert_eq!(policy.backoff(0, Some(Duration::from_secs(2)), 0), Duration::from_secs(2));
        assert_eq!(policy.backoff(0, Some(Duration::from_secs(3600)), 0), Duration::from_secs(5));
        // A Retry-After shorter than the backoff does not shorten it.
        assert_eq!(policy.backoff(3, Some(Duration::ZERO), 0), Duration::from_millis(400));
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn jitter_is_reproducible_from_its_seed() {
        let (mut a, mut b, mut c) = (Jitter::new(42), Jitter::new(42), Jitter::new(43));
        let xs: Vec<u64> = (0..4).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next()).collect();
        let zs: Vec<u64> = (0..4).map(|_| c.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert_ne!(Jitter::new(0).next(), 0);
    }

    #[test]
    fn error_json_maps_to_api_error() {
        let body = br#"{"code":20404,"message":"The requested resource was not found","more_info":"https://www.twilio.com/docs/errors/20404","status":404,"extra":true}"#;
        assert_eq!(
            api_error(StatusCode::NOT_FOUND, body),
            RestError::Api {
                status: 404,
                code: Some(20404),
                message: "The requested resource was not found".into(),
                more_info: Some("https://www.twilio.com/docs/errors/20404".into()),
            }
        );
        let html = api_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(
            html,
            RestError::Api {
                status: 502,
                code: None,
                message: "<html>bad gateway</html>".into(),
                more_info: None
            }
        );
        let empty = api_error(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert!(matches!(empty, RestError::Api { ref message, .. } if message == "Service Unavailable"));
        let long = api_error(StatusCode::BAD_REQUEST, "x".repeat(10_000).as_bytes());
        assert!(
            matches!(long, RestError::Api { ref message, .. } if message.chars().count() == MAX_ERROR_TEXT_CHARS + 1)
        );
    }

    #[test]
    fn only_throttling_and_server_errors_are_retryable() {
        let api = |status, code| RestError::Api { status, code, message: String::new(), more_info: None };
        assert!(api(429, Some(20429)).is_retryable());
        assert!(api(429, None).is_retryable());
        assert!(api(400, Some(20429)).is_retryable());
        assert!(api(500, None).is_retryable());
        assert!(api(503, Some(20500)).is_retryable());
        assert!(!api(400, Some(21211)).is_retryable());
        assert!(!api(401, Some(20003)).is_retryable());
        assert!(!api(404, None).is_retryable());
        assert!(!RestError::Timeout { url: String::new(), after: Duration::ZERO }.is_retryable());
    }

    #[test]
    fn responses_decode_leniently() {
        let call: Call = serde_json::from_str(
            r#"{"sid":"CA1","status":"in-progress","to":"+1","from":null,"price":null,"subresource_uris":{}}"#,
        )
        .unwrap();
        assert_eq!(call.sid, "CA1");
        assert_eq!(call.status, CallStatus::InProgress);
        assert_eq!(call.to.as_deref(), Some("+1"));
        assert_eq!(call.from, None);
        let stream: Stream =
            serde_json::from_str(r#"{"sid":"MZ1","status":"brand-new","name":"n"}"#).unwrap();
        assert_eq!(stream.status, StreamStatus::Other("brand-new".into()));
        assert_eq!(stream.status.as_str(), "brand-new");
        let message: Message = serde_json::from_str(r#"{"sid":"SM1","status":"queued"}"#).unwrap();
        assert_eq!(message.status, MessageStatus::Queued);
    }

    #[test]
    fn display_is_actionable() {
        let error = RestError::Api {
            status: 400,
            code: Some(21211),
            message: "Invalid 'To' Phone Number".into(),
            more_info: Some("https://www.twilio.com/docs/errors/21211".into()),
        };
        assert_eq!(
            error.to_string(),
            "Twilio answered HTTP 400 with error 21211: Invalid 'To' Phone Number \
             (see https://www.twilio.com/docs/errors/21211)"
        );
        let exhausted = RestError::RetriesExhausted { attempts: 3, last: Box::new(error) };
        assert!(
            exhausted
                .to_string()
                .starts_with("gave up after 3 attempts; last error: Twilio answered HTTP 400")
        );
    }
}
