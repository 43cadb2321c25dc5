//! The one error type of the bot leg.

use core::fmt;

use crate::media_stream::{Excerpt, MessageError};

/// What was wrong with a bot message (or with the leg's configuration).
///
/// The leg has already counted the message in [`BotStats::bad_messages`]
/// and dropped it; the call goes on. None of these is fatal: a bot that keeps
/// sending garbage is the proxy's to disconnect, by rate or count.
///
/// [`BotStats::bad_messages`]: super::BotStats::bad_messages
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BotError {
    /// A setting is out of range (only from [`BotLeg::new`](super::BotLeg::new)).
    Config {
        /// The setting, as the future config key will name it.
        key: &'static str,
        /// What the value must be.
        reason: &'static str,
    },
    /// A message is larger than the leg accepts.
    TooLarge {
        /// Whether it was a text (JSON) message, else binary.
        text: bool,
        /// The message's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A text message is not valid JSON, or a field is malformed or missing.
    Message(MessageError),
    /// `protocol = "twilio"`: an `event` other than `media`, `mark` or `clear`.
    UnknownEvent {
        /// The start of the event name.
        event: Excerpt,
    },
    /// `protocol = "l16"`: an `action` other than `clear` or `notify`.
    UnknownAction {
        /// The start of the action name.
        action: Excerpt,
    },
    /// `protocol = "l16"`: a text message without an `action`.
    MissingAction,
    /// `protocol = "l16"`: `action` is not a JSON string.
    ActionNotAString,
    /// `protocol = "l16"`: a key the leg reads came twice.
    DuplicateKey {
        /// The key.
        key: &'static str,
    },
    /// `protocol = "twilio"`: the message's `streamSid` is not this call's.
    StreamSidMismatch,
    /// `protocol = "twilio"`: a binary message (Twilio's protocol is text only).
    UnexpectedBinary,
    /// `protocol = "l16"`: a binary message whose length is not a whole
    /// number of 16-bit samples.
    OddLength {
        /// The message's length in bytes.
        len: usize,
    },
    /// A mark (or notify) arrived while the most the leg tracks were already
    /// waiting to be played.
    TooManyMarks {
        /// The limit.
        max: usize,
    },
    /// `protocol = "l16"`: a `notify` payload longer than the leg keeps.
    PayloadTooLarge {
        /// The payload's length in bytes, as JSON.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A message after the call ended (the caller hung up or the bot closed).
    Finished,
}

impl From<MessageError> for BotError {
    fn from(e: MessageError) -> Self {
        BotError::Message(e)
    }
}

impl fmt::Display for BotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BotError::Config { key, reason } => write!(f, "bot leg setting `{key}`: {reason}"),
            BotError::TooLarge { text, len, max } => write!(
                f,
                "bot sent a {len}-byte {} message; at most {max} bytes are accepted, send smaller chunks",
                if *text { "text" } else { "binary" }
            ),
            BotError::Message(e) => write!(f, "bot sent a malformed message: {e}"),
            BotError::UnknownEvent { event } => {
                write!(f, "bot sent event {event}; a Twilio-protocol bot may send only media, mark and clear")
            }
            BotError::UnknownAction { action } => {
                write!(f, "bot sent action {action}; an L16-protocol bot may send only clear and notify")
            }
            BotError::MissingAction => f.write_str("bot sent a text message without an \"action\" field"),
            BotError::ActionNotAString => {
                f.write_str("bot sent an \"action\" that is not a string; use \"clear\" or \"notify\"")
            }
            BotError::DuplicateKey { key } => write!(f, "bot sent a message with \"{key}\" twice"),
            BotError::StreamSidMismatch => {
                f.write_str("bot sent a message with another call's streamSid; use the one from `start`")
            }
            BotError::UnexpectedBinary => f.write_str(
                "bot sent a binary message on the Twilio protocol, which is JSON text only \
                 (set ws.protocol = \"l16\" for binary PCM)",
            ),
            BotError::OddLength { len } => write!(
                f,
                "bot sent {len} bytes of audio, not a whole number of 16-bit samples; the message was dropped"
            ),
            BotError::TooManyMarks { max } => write!(
                f,
                "bot has {max} marks or notifies waiting to be played already; wait for their echoes"
            ),
            BotError::PayloadTooLarge { len, max } => {
                write!(f, "bot sent a {len}-byte notify payload; at most {max} bytes are echoed")
            }
            BotError::Finished => f.write_str("bot sent a message after the call ended"),
        }
    }
}

impl std::error::Error for BotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BotError::Message(e) => Some(e),
            _ => None,
        }
    }
}
