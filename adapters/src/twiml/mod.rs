//! TwiML voice documents: a typed model with builders, a deterministic
//! writer, and a strict, bounded parser that reads them back.
//!
//! How to use it:
//!
//! - **Answer a webhook**: build a [`Response`] with its builder methods and
//!   serve [`Response::to_xml`] as `text/xml`. A [`Stream`] url is checked when
//!   the `Stream` is made ([`Stream::new`]): `ws://`/`wss://`, no query string
//!   (values go in `<Parameter>`s, which reach the WebSocket server in
//!   `start.customParameters`).
//! - **Follow an answer** (the simulator): [`Response::from_xml`] the body,
//!   walk [`Response::verbs`], or take [`Response::bidirectional_stream`] for
//!   the `<Connect><Stream>` url and parameters.
//!
//! ```
//! use voxproxy_adapters::twiml::{Response, Stream, StreamTrack, TwimlError};
//!
//! # fn main() -> Result<(), TwimlError> {
//! let answer = Response::new()
//!     .connect_stream(
//!         Stream::new("wss://proxy.example.com/twilio/media")?
//!             .track(StreamTrack::InboundTrack)
//!             .parameter("CallSid", "CA123")
//!             .parameter("From", "+15550001111"),
//!     )
//!     .say("Goodbye & thanks");
//! let xml = answer.to_xml()?;
//! assert_eq!(
//!     xml,
//!     "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Connect>\
//!      <Stream url=\"wss://proxy.example.com/twilio/media\" track=\"inbound_track\">\
//!      <Parameter name=\"CallSid\" value=\"CA123\"/><Parameter name=\"From\" value=\"+15550001111\"/>\
//!      </Stream></Connect><Say>Goodbye &amp; thanks</Say></Response>"
//! );
//!
//! let followed = Response::from_xml(&xml)?;
//! assert_eq!(followed, answer);
//! let stream = followed.bidirectional_stream().expect("a <Connect><Stream>");
//! assert_eq!(stream.url.as_str(), "wss://proxy.example.com/twilio/media");
//! assert_eq!(stream.parameter_value("From"), Some("+15550001111"));
//!
//! // Twilio would drop the query string: refused when the Stream is made.
//! assert!(matches!(Stream::new("wss://x.example/m?sid=1"), Err(TwimlError::InvalidStreamUrl { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! Decisions where TwiML or XML leave room:
//!
//! - **Output** is the XML declaration and the document without
//!   insignificant whitespace; attributes in a fixed order (as each type
//!   lists them), then `extra_attributes` in order. The same value always
//!   writes the same bytes.
//! - **Escaping**: `& < > "` in text; `& < > " '` and tab, LF, CR (as `&#9;`
//!   `&#10;` `&#13;`) in attributes, and CR in text, so that every string
//!   reads back exactly despite XML's line-end and attribute normalization.
//! - **Characters XML 1.0 cannot carry** (controls other than tab, LF, CR;
//!   U+FFFE, U+FFFF) make writing fail with [`TwimlError::ForbiddenChar`]
//!   rather than vanish silently; [`remove_forbidden_chars`] cleans untrusted
//!   text (caller names, custom parameters) beforehand.
//! - **Unknown elements** (verbs and nouns this module does not model, or
//!   misspelt ones: names are case-sensitive) are kept verbatim as
//!   [`Element`] in an `Other` variant, because a simulator following real
//!   applications' TwiML must go on past `<Enqueue>` or `<Dial><Client>`
//!   and can report what it skipped. Where TwiML fixes the content —
//!   `<Gather>` nests only Say/Play/Pause, `<Stream>` only `<Parameter>`,
//!   `<Play>`/`<Redirect>`/`<Number>` only text, `<Pause>`/`<Hangup>`/
//!   `<Reject>`/`<Record>` nothing — anything else is an error that names
//!   the element. **Unknown attributes** are kept in `extra_attributes`; a
//!   modelled attribute with a value TwiML does not define is an error.
//! - **Text** of `<Say>`, `<Play>`, `<Redirect>`, `<Number>` and a plain
//!   `<Dial>` number is kept exactly, whitespace included; whitespace between
//!   elements is insignificant. An empty `<Dial/>` reads back as
//!   `DialTarget::Number("")`.
//! - **Parsing** is hand-written rather than a dependency: TwiML needs a
//!   small XML subset, and owning it keeps every bound and error message
//!   here. It refuses `<!DOCTYPE>` (no entity expansion), knows only the five
//!   predefined entities and numeric references, and enforces
//!   [`ParseLimits`] on size, depth, element and attribute counts. It never
//!   panics, and whatever it accepts writes back and reads back equal.

mod codec;
mod error;
mod model;
mod xml;

use std::borrow::Cow;

pub use error::TwimlError;
pub use model::{
    CallProgressEvent, Connect, Dial, DialNoun, DialRecord, DialTarget, Gather, GatherInput, GatherPrompt,
    Hangup, HttpMethod, MediaNoun, Number, Parameter, Pause, Play, Record, RecordTrim, Redirect, Reject,
    RejectReason, Response, Say, SpeechTimeout, Start, Stop, StopNoun, StopStream, Stream, StreamTrack,
    StreamUrl, Verb,
};
pub use xml::{Attribute, Element, Node, ParseLimits};

/// `text` without the characters XML 1.0 cannot carry (controls other than
/// tab, LF and CR; U+FFFE and U+FFFF), borrowed when there are none.
///
/// ```
/// use voxproxy_adapters::twiml::remove_forbidden_chars;
/// assert_eq!(remove_forbidden_chars("Jane\u{0}Doe\u{1b}"), "JaneDoe");
/// assert!(matches!(remove_forbidden_chars("plain"), std::borrow::Cow::Borrowed("plain")));
/// ```
#[must_use]
pub fn remove_forbidden_chars(text: &str) -> Cow<'_, str> {
    if text.chars().any(xml::is_forbidden_char) {
        Cow::Owned(text.chars().filter(|&c| !xml::is_forbidden_char(c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}
