//! The one error type of the SIP subsystem.

use core::fmt;

/// What went wrong parsing, authenticating or setting up SIP.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SipError {
    /// The message is longer than [`MAX_MESSAGE_BYTES`](super::MAX_MESSAGE_BYTES).
    TooLarge {
        /// Its length in bytes (or how much was buffered on a stream).
        len: usize,
    },
    /// The message stops before its header block or body is complete. On a
    /// stream this means "wait for more bytes"; on a datagram it is final.
    Incomplete,
    /// A header line is longer than [`MAX_LINE_BYTES`](super::MAX_LINE_BYTES).
    LineTooLong {
        /// 1-based line number.
        line: usize,
    },
    /// More headers than [`MAX_HEADERS`](super::MAX_HEADERS).
    TooManyHeaders,
    /// A line could not be understood.
    Malformed {
        /// 1-based line number (0 when not tied to one line).
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A header every SIP message must carry is absent or unreadable.
    MissingHeader {
        /// Its name.
        name: &'static str,
    },
    /// `Content-Length` is missing on a stream, or larger than the bytes that follow.
    BadContentLength,
    /// A SIP URI could not be parsed.
    BadUri {
        /// Why.
        reason: &'static str,
    },
    /// A digest challenge could not be understood or answered.
    BadChallenge {
        /// Why.
        reason: &'static str,
    },
    /// A configuration value of a SIP leg or server is unusable.
    InvalidConfig {
        /// Which field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for SipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => {
                write!(f, "SIP message of {len} bytes is over the {}-byte limit", super::MAX_MESSAGE_BYTES)
            }
            Self::Incomplete => f.write_str("SIP message is truncated (header block or body incomplete)"),
            Self::LineTooLong { line } => {
                write!(f, "SIP line {line} is longer than {} bytes", super::MAX_LINE_BYTES)
            }
            Self::TooManyHeaders => write!(f, "SIP message has more than {} headers", super::MAX_HEADERS),
            Self::Malformed { line, reason } => write!(f, "SIP line {line}: {reason}"),
            Self::MissingHeader { name } => write!(f, "SIP message lacks a valid `{name}` header"),
            Self::BadContentLength => {
                f.write_str("SIP Content-Length is missing (required on TCP) or exceeds the bytes received")
            }
            Self::BadUri { reason } => write!(f, "bad SIP URI: {reason}"),
            Self::BadChallenge { reason } => write!(f, "cannot answer the digest challenge: {reason}"),
            Self::InvalidConfig { field, reason } => write!(f, "SIP setting `{field}`: {reason}"),
        }
    }
}

impl core::error::Error for SipError {}
