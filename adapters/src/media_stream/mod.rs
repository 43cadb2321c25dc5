//! Twilio Media Streams messages: parse and write the JSON text frames of the
//! media WebSocket, in both directions, without allocating per frame.
//!
//! ## Twilio → us
//!
//! [`parse_inbound`] takes one text frame and a caller-owned audio buffer. It
//! returns an [`Inbound`] event that borrows from the frame; for `media` the
//! base64 payload is decoded straight into the audio buffer and
//! [`Media::payload_len`] says how many bytes it filled (size the buffer by
//! the largest frame you accept: a payload never decodes to more than ¾ of the
//! frame's length). The frame is taken `&mut` because escaped strings are
//! unescaped in place; its bytes are unspecified afterwards, as are the audio
//! buffer's unless the event is `media`.
//!
//! Nothing is allocated except for `start` (once per call: it owns its
//! custom parameters). An event name we do not know yields
//! [`Inbound::Unknown`], not an error, so a new Twilio event does not end a
//! call. Everything else that is wrong is a [`MessageError`] naming the field.
//!
//! Parsing is liberal where Twilio's documentation and third-party senders
//! disagree, and strict everywhere else:
//! - keys in any order, unknown keys ignored (but validated as JSON), the same
//!   known key twice refused;
//! - `sequenceNumber`, `media.chunk` and `media.timestamp` as strings holding
//!   digits or as JSON numbers; `mediaFormat.sampleRate` and `channels` as
//!   numbers or as strings holding digits;
//! - track names with or without the `_track` suffix in every place;
//! - `connected.protocol` and `connected.version` optional, and
//!   `start.customParameters` optional; every other field of Twilio's shapes is
//!   required; `streamSid` of `start` may be at the top level, inside `start`,
//!   or both (then they must agree);
//! - every string, count and nesting depth has a bound (the `MAX_*` constants);
//!   the frame size itself is the caller's to bound.
//!
//! ## Us → Twilio
//!
//! [`write_media`] (from μ-law), [`write_media_pcm16`] (from 16-bit PCM,
//! μ-law-encoded on the way), [`write_mark`] and [`write_clear`] write one
//! frame into a reused `Vec<u8>` (cleared first); once the vector has grown to the largest
//! frame, they never allocate. [`parse_outbound`] reads such frames back (for
//! the Twilio simulator and tests).
//!
//! ## Speed
//!
//! A `media` frame laid out exactly as Twilio writes it is matched literally
//! and its payload decoded as it is read; every other frame takes a strict
//! general JSON scanner (one pass when `event` comes first). Base64 is
//! hand-written and table-driven ([`base64`]). `benches/media_stream.rs`
//! times both against `serde_json`, `simd-json` and the `base64` crate.
//!
//! ## The simulator's side
//!
//! For the simulator, [`write_connected`], [`write_start`],
//! [`write_inbound_media`], [`write_dtmf`], [`write_inbound_mark`] and
//! [`write_stop`] write frames shaped exactly as Twilio's.
//!
//! ```
//! use voxproxy_adapters::media_stream::{self, Inbound, Outbound, StreamSid, Track};
//!
//! let mut frame = br#"{"event":"media","sequenceNumber":"4","media":{"track":"inbound",
//!     "chunk":"2","timestamp":"5","payload":"/38A"},"streamSid":"MZ0123"}"#.to_vec();
//! let mut audio = [0u8; 1024];
//! let Inbound::Media(media) = media_stream::parse_inbound(&mut frame, &mut audio)? else {
//!     unreachable!("the frame above is a media event");
//! };
//! assert_eq!((media.track, media.chunk, media.timestamp_ms), (Track::Inbound, 2, 5));
//! assert_eq!(&audio[..media.payload_len], &[0xff, 0x7f, 0x00]);
//!
//! // Echo it back to Twilio, reusing one buffer for every frame.
//! let mut out = Vec::with_capacity(512);
//! media_stream::write_media(&mut out, &media.stream_sid, &audio[..media.payload_len]);
//! assert_eq!(out, br#"{"event":"media","streamSid":"MZ0123","media":{"payload":"/38A"}}"#);
//!
//! media_stream::write_clear(&mut out, &StreamSid::new("MZ0123")?);
//! let Outbound::Clear { stream_sid } = media_stream::parse_outbound(&mut out, &mut audio)? else {
//!     unreachable!("write_clear writes a clear event");
//! };
//! assert_eq!(stream_sid, "MZ0123");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod base64;
mod error;
// The scanner and the string writer are shared with the bot leg's L16 messages.
pub(crate) mod json;
mod parse;
mod sid;
mod write;

pub use error::{Excerpt, Field, MessageError, SyntaxError};
pub use parse::{parse_inbound, parse_inbound_pcm16, parse_outbound};
pub use sid::{AccountSid, CallSid, MAX_SID_LEN, SidError, StreamSid};
pub(crate) use write::push_string;
pub use write::{
    write_clear, write_connected, write_dtmf, write_inbound_mark, write_inbound_media, write_mark,
    write_media, write_media_pcm16, write_start, write_stop,
};

/// Deepest nesting of arrays and objects accepted, the message itself counting as one.
pub const MAX_NESTING: usize = 32;
/// Longest `event` name accepted, in bytes.
pub const MAX_EVENT_LEN: usize = 64;
/// Longest `mark.name` accepted, in bytes (after JSON unescaping, as for every length).
pub const MAX_MARK_NAME_LEN: usize = 256;
/// Longest `connected.protocol` or `connected.version` accepted, in bytes.
pub const MAX_CONNECTED_FIELD_LEN: usize = 64;
/// Longest `start.mediaFormat.encoding` accepted, in bytes.
pub const MAX_ENCODING_LEN: usize = 64;
/// Most entries accepted in `start.tracks`.
pub const MAX_TRACKS: usize = 4;
/// Most entries accepted in `start.customParameters`.
pub const MAX_CUSTOM_PARAMETERS: usize = 64;
/// Longest custom parameter name accepted, in bytes.
pub const MAX_PARAMETER_NAME_LEN: usize = 256;
/// Longest custom parameter value accepted, in bytes.
pub const MAX_PARAMETER_VALUE_LEN: usize = 2048;

/// The one encoding Twilio uses: μ-law, 8000 Hz, mono.
pub const MULAW_ENCODING: &str = "audio/x-mulaw";

/// One direction of the call's audio, from Twilio's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Track {
    /// Audio from the caller to Twilio (`inbound`, `inbound_track`).
    Inbound,
    /// Audio Twilio plays to the caller (`outbound`, `outbound_track`).
    Outbound,
}

impl Track {
    /// The name in `start.tracks` and `media.track`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Track::Inbound => "inbound",
            Track::Outbound => "outbound",
        }
    }

    /// The name in `dtmf.track` and in TwiML's `track` attribute.
    #[must_use]
    pub const fn track_name(self) -> &'static str {
        match self {
            Track::Inbound => "inbound_track",
            Track::Outbound => "outbound_track",
        }
    }
}

/// The set of tracks a stream carries (`start.tracks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tracks {
    /// The caller's audio is streamed.
    pub inbound: bool,
    /// The audio played to the caller is streamed.
    pub outbound: bool,
}

impl Tracks {
    /// Whether `track` is in the set.
    #[must_use]
    pub const fn contains(self, track: Track) -> bool {
        match track {
            Track::Inbound => self.inbound,
            Track::Outbound => self.outbound,
        }
    }
}

/// `start.mediaFormat`: how the stream's audio is encoded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MediaFormat {
    /// MIME type, [`MULAW_ENCODING`] from Twilio.
    pub encoding: String,
    /// Samples per second, 8000 from Twilio.
    pub sample_rate: u32,
    /// Channel count, 1 from Twilio.
    pub channels: u16,
}

impl MediaFormat {
    /// What Twilio always sends: μ-law, 8000 Hz, mono.
    #[must_use]
    pub fn mulaw_8k_mono() -> Self {
        MediaFormat { encoding: MULAW_ENCODING.to_owned(), sample_rate: 8000, channels: 1 }
    }

    /// Whether this is the format Twilio always sends, the only one the
    /// bridge can relay.
    #[must_use]
    pub fn is_mulaw_8k_mono(&self) -> bool {
        self.encoding == MULAW_ENCODING && self.sample_rate == 8000 && self.channels == 1
    }
}

/// A frame from Twilio, as returned by [`parse_inbound`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// The WebSocket is open; nothing about the call yet.
    Connected(Connected<'a>),
    /// The stream's metadata, once per stream (boxed: it is large and rare).
    Start(Box<Start>),
    /// One chunk of audio, decoded into the caller's buffer.
    Media(Media),
    /// A key press (bidirectional streams only).
    Dtmf(Dtmf),
    /// A mark we sent has played, or was cleared (bidirectional streams only).
    Mark(Mark<'a>),
    /// The stream has ended.
    Stop(Stop),
    /// An event this version does not know; ignore it.
    Unknown {
        /// The `event` value.
        event: &'a str,
    },
}

/// The `connected` event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Connected<'a> {
    /// `protocol`, `"Call"` from Twilio.
    pub protocol: Option<&'a str>,
    /// `version`, `"1.0.0"` from Twilio.
    pub version: Option<&'a str>,
}

/// The `start` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Start {
    /// `sequenceNumber`, 1 from Twilio.
    pub sequence_number: u64,
    /// `start.streamSid` (or the top-level `streamSid`).
    pub stream_sid: StreamSid,
    /// `start.accountSid`.
    pub account_sid: AccountSid,
    /// `start.callSid`.
    pub call_sid: CallSid,
    /// `start.tracks`.
    pub tracks: Tracks,
    /// `start.mediaFormat`.
    pub media_format: MediaFormat,
    /// `start.customParameters` in the order they came: the `<Parameter>`s of
    /// the TwiML. A repeated name is kept as often as it came.
    pub custom_parameters: Vec<(String, String)>,
}

impl Start {
    /// The value of the first custom parameter called `name`.
    #[must_use]
    pub fn custom_parameter(&self, name: &str) -> Option<&str> {
        self.custom_parameters.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// The `media` event. The audio itself is in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Media {
    /// `sequenceNumber`.
    pub sequence_number: u64,
    /// `streamSid`.
    pub stream_sid: StreamSid,
    /// `media.track`.
    pub track: Track,
    /// `media.chunk`: 1 for the first chunk of the track, then +1.
    pub chunk: u64,
    /// `media.timestamp`: milliseconds since the stream started.
    pub timestamp_ms: u64,
    /// Bytes of μ-law the payload decoded to, at the start of the audio
    /// buffer. Ignored by [`write_inbound_media`], which writes the payload it
    /// is given.
    pub payload_len: usize,
}

/// The `dtmf` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dtmf {
    /// `sequenceNumber`.
    pub sequence_number: u64,
    /// `streamSid`.
    pub stream_sid: StreamSid,
    /// `dtmf.track` (`inbound_track` from Twilio).
    pub track: Track,
    /// `dtmf.digit`: one of `0`–`9`, `*`, `#`, `A`–`D` (a lower-case letter is
    /// accepted and given here in upper case).
    pub digit: char,
}

/// The `mark` event Twilio sends back: the audio before the mark has played,
/// or a `clear` flushed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark<'a> {
    /// `sequenceNumber`.
    pub sequence_number: u64,
    /// `streamSid`.
    pub stream_sid: StreamSid,
    /// `mark.name`, as we sent it.
    pub name: &'a str,
}

/// The `stop` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stop {
    /// `sequenceNumber`.
    pub sequence_number: u64,
    /// `streamSid`.
    pub stream_sid: StreamSid,
    /// `stop.accountSid`.
    pub account_sid: AccountSid,
    /// `stop.callSid`.
    pub call_sid: CallSid,
}

/// A frame to Twilio, as returned by [`parse_outbound`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// Audio to queue for playing, decoded into the caller's buffer.
    Media {
        /// `streamSid`.
        stream_sid: StreamSid,
        /// Bytes of μ-law the payload decoded to.
        payload_len: usize,
    },
    /// A mark to echo once the audio queued before it has played.
    Mark {
        /// `streamSid`.
        stream_sid: StreamSid,
        /// `mark.name`.
        name: &'a str,
    },
    /// Drop all queued audio and echo every pending mark.
    Clear {
        /// `streamSid`.
        stream_sid: StreamSid,
    },
    /// An event this version does not know.
    Unknown {
        /// The `event` value.
        event: &'a str,
    },
}
