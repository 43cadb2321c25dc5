//! The simulator's one error type.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use voxproxy_adapters::twiml::TwimlError;

/// What went wrong in the simulator: a run that cannot start, or one call
/// that failed (then [`SimError::reason`] groups it in the report).
#[derive(Debug)]
#[non_exhaustive]
pub enum SimError {
    /// A setting is out of range.
    InvalidConfig {
        /// The setting and what is wrong with it.
        what: String,
    },
    /// A URL cannot be used.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The audio file cannot be used.
    Audio {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A TCP connection could not be made.
    Connect {
        /// What was being reached ("voice webhook" or "media stream").
        what: &'static str,
        /// The `host:port` tried.
        authority: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The voice webhook failed at the HTTP level.
    Http {
        /// What failed.
        reason: String,
    },
    /// The voice webhook answered with a status other than 2xx.
    WebhookStatus {
        /// The HTTP status code.
        status: u16,
    },
    /// The webhook's answer is not TwiML.
    Twiml(TwimlError),
    /// The TwiML has no `<Stream>` to connect to.
    NoStream {
        /// What the document does instead, e.g. `<Reject>` or `<Say>, <Hangup>`.
        verbs: String,
    },
    /// The stream URL is `wss://`, which the simulator does not speak.
    SecureWebSocket {
        /// The stream URL.
        url: String,
    },
    /// The WebSocket handshake failed.
    Handshake {
        /// What failed (with the HTTP status when there was one).
        reason: String,
    },
    /// The WebSocket failed during the call.
    WebSocket {
        /// What failed.
        reason: String,
    },
    /// The server sent a frame that is not a Media Streams message.
    Protocol {
        /// What was wrong with it.
        reason: String,
    },
    /// The server closed the stream before the call's media was over.
    ClosedEarly {
        /// How long after the stream started.
        after: Duration,
    },
    /// Something took longer than allowed.
    Timeout {
        /// What was being waited for.
        what: &'static str,
    },
    /// The simulator could not start its threads or runtimes.
    Runtime(io::Error),
}

impl SimError {
    /// A short, stable description used to count failed calls by reason
    /// (no per-call details, so equal failures group together).
    #[must_use]
    pub fn reason(&self) -> String {
        match self {
            SimError::InvalidConfig { .. } => "invalid configuration".into(),
            SimError::InvalidUrl { reason, .. } => format!("invalid URL: {reason}"),
            SimError::Audio { .. } => "audio file unusable".into(),
            SimError::Connect { what, source, .. } => {
                format!("cannot connect to the {what}: {}", source.kind())
            }
            SimError::Http { .. } => "voice webhook HTTP error".into(),
            SimError::WebhookStatus { status } => format!("voice webhook answered HTTP {status}"),
            SimError::Twiml(_) => "voice webhook answer is not valid TwiML".into(),
            SimError::NoStream { verbs } => format!("TwiML has no <Stream> ({verbs})"),
            SimError::SecureWebSocket { .. } => "wss:// stream URL (not supported)".into(),
            SimError::Handshake { .. } => "WebSocket handshake failed".into(),
            SimError::WebSocket { .. } => "WebSocket error during the call".into(),
            SimError::Protocol { .. } => "server sent an invalid Media Streams message".into(),
            SimError::ClosedEarly { .. } => "server closed the stream early".into(),
            SimError::Timeout { what } => format!("timed out waiting for {what}"),
            SimError::Runtime(_) => "runtime error".into(),
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::InvalidConfig { what } => write!(f, "{what}"),
            SimError::InvalidUrl { url, reason } => {
                write!(f, "URL \"{}\" cannot be used: {reason}", url.escape_debug())
            }
            SimError::Audio { path, reason } => {
                write!(f, "audio file {} cannot be used: {reason}", path.display())
            }
            SimError::Connect { what, authority, source } => {
                write!(f, "cannot connect to the {what} at {authority}: {source}")
            }
            SimError::Http { reason } => write!(f, "voice webhook request failed: {reason}"),
            SimError::WebhookStatus { status } => {
                write!(f, "voice webhook answered HTTP {status} instead of 200 with TwiML")
            }
            SimError::Twiml(e) => write!(f, "voice webhook answer is not valid TwiML: {e}"),
            SimError::NoStream { verbs } => write!(
                f,
                "the TwiML answer has no <Connect><Stream> or <Start><Stream>; it does {verbs} instead"
            ),
            SimError::SecureWebSocket { url } => write!(
                f,
                "stream URL {} is wss://, which the simulator does not speak: give the server a ws:// public URL for testing",
                url.escape_debug()
            ),
            SimError::Handshake { reason } => write!(f, "media stream WebSocket handshake failed: {reason}"),
            SimError::WebSocket { reason } => write!(f, "media stream WebSocket failed: {reason}"),
            SimError::Protocol { reason } => {
                write!(f, "server sent an invalid Media Streams message: {reason}")
            }
            SimError::ClosedEarly { after } => {
                write!(
                    f,
                    "server closed the media stream {:.1} s after it started, before the call ended",
                    after.as_secs_f64()
                )
            }
            SimError::Timeout { what } => write!(f, "timed out waiting for {what}"),
            SimError::Runtime(e) => write!(f, "cannot start the simulator's runtime: {e}"),
        }
    }
}

impl std::error::Error for SimError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SimError::Connect { source, .. } | SimError::Runtime(source) => Some(source),
            SimError::Twiml(e) => Some(e),
            _ => None,
        }
    }
}

impl From<TwimlError> for SimError {
    fn from(e: TwimlError) -> Self {
        SimError::Twiml(e)
    }
}
