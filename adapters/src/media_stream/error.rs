//! The one error type of Media Streams messages, and what it names.

use core::fmt;

use super::base64::Base64Error;
use super::sid::SidError;

/// A JSON field of a Media Streams message, named by its path in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `event`
    Event,
    /// `sequenceNumber`
    SequenceNumber,
    /// `streamSid` (top level)
    StreamSid,
    /// `protocol` (`connected`)
    Protocol,
    /// `version` (`connected`)
    Version,
    /// `start`
    Start,
    /// `start.accountSid`
    StartAccountSid,
    /// `start.streamSid`
    StartStreamSid,
    /// `start.callSid`
    StartCallSid,
    /// `start.tracks`
    StartTracks,
    /// `start.mediaFormat`
    MediaFormat,
    /// `start.mediaFormat.encoding`
    MediaFormatEncoding,
    /// `start.mediaFormat.sampleRate`
    MediaFormatSampleRate,
    /// `start.mediaFormat.channels`
    MediaFormatChannels,
    /// `start.customParameters`
    CustomParameters,
    /// `media`
    Media,
    /// `media.track`
    MediaTrack,
    /// `media.chunk`
    MediaChunk,
    /// `media.timestamp`
    MediaTimestamp,
    /// `media.payload`
    MediaPayload,
    /// `dtmf`
    Dtmf,
    /// `dtmf.track`
    DtmfTrack,
    /// `dtmf.digit`
    DtmfDigit,
    /// `mark`
    Mark,
    /// `mark.name`
    MarkName,
    /// `stop`
    Stop,
    /// `stop.accountSid`
    StopAccountSid,
    /// `stop.callSid`
    StopCallSid,
}

impl Field {
    /// The field's path in the message, as Twilio spells it (`media.payload`).
    #[must_use]
    pub const fn path(self) -> &'static str {
        match self {
            Field::Event => "event",
            Field::SequenceNumber => "sequenceNumber",
            Field::StreamSid => "streamSid",
            Field::Protocol => "protocol",
            Field::Version => "version",
            Field::Start => "start",
            Field::StartAccountSid => "start.accountSid",
            Field::StartStreamSid => "start.streamSid",
            Field::StartCallSid => "start.callSid",
            Field::StartTracks => "start.tracks",
            Field::MediaFormat => "start.mediaFormat",
            Field::MediaFormatEncoding => "start.mediaFormat.encoding",
            Field::MediaFormatSampleRate => "start.mediaFormat.sampleRate",
            Field::MediaFormatChannels => "start.mediaFormat.channels",
            Field::CustomParameters => "start.customParameters",
            Field::Media => "media",
            Field::MediaTrack => "media.track",
            Field::MediaChunk => "media.chunk",
            Field::MediaTimestamp => "media.timestamp",
            Field::MediaPayload => "media.payload",
            Field::Dtmf => "dtmf",
            Field::DtmfTrack => "dtmf.track",
            Field::DtmfDigit => "dtmf.digit",
            Field::Mark => "mark",
            Field::MarkName => "mark.name",
            Field::Stop => "stop",
            Field::StopAccountSid => "stop.accountSid",
            Field::StopCallSid => "stop.callSid",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.path())
    }
}

/// What made a frame invalid JSON (RFC 8259).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyntaxError {
    /// The frame ended in the middle of a value.
    UnexpectedEnd,
    /// A byte that cannot appear at this point.
    UnexpectedByte(u8),
    /// A raw control character (below U+0020) inside a string.
    ControlCharacter(u8),
    /// A backslash escape other than `\" \\ \/ \b \f \n \r \t \uXXXX`.
    InvalidEscape,
    /// A `\u` escape naming half of a UTF-16 surrogate pair without the other half.
    LoneSurrogate,
    /// Bytes inside a string that are not UTF-8.
    InvalidUtf8,
    /// A number that breaks the JSON number grammar.
    InvalidNumber,
    /// A number too large for a 64-bit float (other JSON parsers refuse it too).
    NumberOutOfRange,
    /// Arrays and objects nested deeper than [`MAX_NESTING`](super::MAX_NESTING).
    TooDeep,
    /// Something other than whitespace after the message's closing brace.
    TrailingData,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SyntaxError::UnexpectedEnd => f.write_str("the frame ends in the middle of a value"),
            SyntaxError::UnexpectedByte(b) => write!(f, "unexpected byte {:?}", char::from(b)),
            SyntaxError::ControlCharacter(b) => write!(f, "raw control character 0x{b:02x} inside a string"),
            SyntaxError::InvalidEscape => f.write_str("invalid backslash escape in a string"),
            SyntaxError::LoneSurrogate => f.write_str("\\u escape with an unpaired UTF-16 surrogate"),
            SyntaxError::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            SyntaxError::InvalidNumber => f.write_str("malformed number"),
            SyntaxError::NumberOutOfRange => f.write_str("number too large for a 64-bit float"),
            SyntaxError::TooDeep => {
                write!(f, "arrays/objects nested deeper than {}", super::MAX_NESTING)
            }
            SyntaxError::TrailingData => f.write_str("data after the end of the message"),
        }
    }
}

/// The start of an offending value, copied out of the frame so an error needs
/// neither a lifetime nor an allocation. Displays as a quoted, escaped string,
/// with `…` when it was cut.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Excerpt {
    bytes: [u8; Excerpt::CAPACITY],
    len: u8,
    truncated: bool,
}

impl Excerpt {
    /// Most bytes an excerpt keeps.
    pub const CAPACITY: usize = 32;

    /// Keeps the first [`Excerpt::CAPACITY`] bytes of `value`, cut back to a
    /// character boundary.
    #[must_use]
    pub fn new(value: &str) -> Self {
        let mut end = value.len().min(Self::CAPACITY);
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; Self::CAPACITY];
        bytes[..end].copy_from_slice(&value.as_bytes()[..end]);
        Excerpt { bytes, len: end as u8, truncated: end < value.len() }
    }

    pub(crate) fn from_bytes(value: &[u8]) -> Self {
        match core::str::from_utf8(value) {
            Ok(s) => Self::new(s),
            Err(e) => {
                let mut excerpt = Self::new(core::str::from_utf8(&value[..e.valid_up_to()]).unwrap_or(""));
                excerpt.truncated = true;
                excerpt
            }
        }
    }

    /// The kept text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }

    /// Whether the value was longer than what is kept.
    #[must_use]
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

impl fmt::Debug for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}{}\"", self.as_str().escape_debug(), if self.truncated { "…" } else { "" })
    }
}

/// Why a Media Streams message was refused.
///
/// Every variant that concerns one field names it ([`Field`]), so a log line
/// says exactly which part of which message was wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    /// The frame is not valid JSON.
    Syntax {
        /// Byte offset in the frame where the problem was found.
        offset: usize,
        /// What was wrong.
        error: SyntaxError,
    },
    /// The frame is valid JSON but not an object.
    NotAnObject,
    /// A field this event requires is absent.
    MissingField {
        /// The absent field.
        field: Field,
    },
    /// A field appears twice in the same object.
    DuplicateField {
        /// The repeated field.
        field: Field,
    },
    /// A field holds the wrong kind of JSON value.
    WrongType {
        /// The field.
        field: Field,
        /// What it should hold.
        expected: &'static str,
    },
    /// A field that holds a count or a time is not a non-negative integer
    /// that fits 64 bits (as a JSON number or a string of digits).
    InvalidInteger {
        /// The field.
        field: Field,
        /// The text that was found.
        value: Excerpt,
    },
    /// A field holds a value outside its allowed set.
    InvalidValue {
        /// The field.
        field: Field,
        /// The text that was found.
        value: Excerpt,
        /// What is allowed.
        expected: &'static str,
    },
    /// A SID field does not hold a usable SID.
    InvalidSid {
        /// The field.
        field: Field,
        /// What was wrong with it.
        error: SidError,
    },
    /// A string is longer than its documented bound.
    TooLong {
        /// The field.
        field: Field,
        /// Its length in bytes (after JSON unescaping).
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An array or object has more entries than its documented bound.
    TooManyEntries {
        /// The field.
        field: Field,
        /// The bound.
        max: usize,
    },
    /// `media.payload` is not strict base64.
    Payload(Base64Error),
    /// The decoded payload does not fit the caller's audio buffer.
    AudioBufferTooSmall {
        /// Bytes the payload decodes to.
        needed: usize,
        /// Bytes the buffer holds.
        capacity: usize,
    },
    /// `start.streamSid` and the top-level `streamSid` disagree.
    StreamSidMismatch,
}

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageError::Syntax { offset, error } => {
                write!(f, "Media Streams frame is not valid JSON at byte {offset}: {error}")
            }
            MessageError::NotAnObject => f.write_str("Media Streams frame is not a JSON object"),
            MessageError::MissingField { field } => write!(f, "Media Streams message lacks `{field}`"),
            MessageError::DuplicateField { field } => {
                write!(f, "Media Streams message has `{field}` more than once")
            }
            MessageError::WrongType { field, expected } => {
                write!(f, "`{field}` in a Media Streams message must be {expected}")
            }
            MessageError::InvalidInteger { field, value } => write!(
                f,
                "`{field}` must be a non-negative 64-bit integer (number or string of digits), found {value}"
            ),
            MessageError::InvalidValue { field, value, expected } => {
                write!(f, "`{field}` must be {expected}, found {value}")
            }
            MessageError::InvalidSid { field, error } => write!(f, "`{field}` is not a usable SID: {error}"),
            MessageError::TooLong { field, len, max } => {
                write!(f, "`{field}` is {len} bytes long, more than the limit of {max}")
            }
            MessageError::TooManyEntries { field, max } => {
                write!(f, "`{field}` has more than the limit of {max} entries")
            }
            MessageError::Payload(error) => write!(f, "`media.payload` is not valid base64: {error}"),
            MessageError::AudioBufferTooSmall { needed, capacity } => write!(
                f,
                "`media.payload` decodes to {needed} bytes but the audio buffer holds {capacity}; \
                 raise the buffer or lower the frame size limit"
            ),
            MessageError::StreamSidMismatch => {
                f.write_str("`start.streamSid` and the top-level `streamSid` name different streams")
            }
        }
    }
}

impl core::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            MessageError::InvalidSid { error, .. } => Some(error),
            MessageError::Payload(error) => Some(error),
            _ => None,
        }
    }
}
