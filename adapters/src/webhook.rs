//! Typed Twilio webhook bodies: the voice webhook ([`VoiceWebhook`]), the
//! call status callback ([`CallStatusCallback`]) and the Media Streams status
//! callback ([`StreamStatusCallback`]).
//!
//! Each is built from a parsed [`Form`] — the same one whose fields were
//! checked against `X-Twilio-Signature`, so check first, then convert:
//!
//! ```
//! use voxproxy_adapters::form::Form;
//! use voxproxy_adapters::signature::SignatureValidator;
//! use voxproxy_adapters::webhook::{CallStatus, Direction, VoiceWebhook};
//!
//! let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef\
//!              &From=%2B14155550199&To=%2B14155550100\
//!              &CallStatus=ringing&Direction=inbound&ApiVersion=2010-04-01&StirVerstat=TN-Validation-Passed-A";
//! let form = Form::parse(body).unwrap();
//!
//! let validator = SignatureValidator::new("auth-token", "https://voice.example.com").unwrap();
//! let header = validator.sign_form("/twilio/voice", form.pairs()).unwrap(); // as Twilio would send it
//! validator.validate_form("/twilio/voice", form.pairs(), Some(&header)).unwrap();
//!
//! let call = VoiceWebhook::from_form(form).unwrap();
//! assert_eq!(call.call.from, "+14155550199");
//! assert_eq!(call.call.call_status, CallStatus::Ringing);
//! assert_eq!(call.call.direction, Direction::Inbound);
//! // Fields this module does not know are kept, in body order.
//! assert_eq!(call.extra, [("StirVerstat".to_owned(), "TN-Validation-Passed-A".to_owned())]);
//! ```
//!
//! A missing required field is an error naming it; a known field sent twice
//! is an error too, since guessing which value Twilio meant would be unsafe.
//! Enumerations keep values this module does not know as `Other(String)`:
//! Twilio adds values over time and an unknown status must not turn a call
//! away. Timestamps are kept as Twilio's text (RFC 2822 for call status
//! callbacks, ISO 8601 for stream status callbacks).

use core::fmt;

use crate::form::{Form, FormError};

/// Why a webhook body could not be turned into its typed form.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookError {
    /// The body is not an acceptable form.
    Form(FormError),
    /// A field Twilio always sends is absent.
    MissingField {
        /// The field's name, as Twilio spells it.
        field: &'static str,
    },
    /// A field that Twilio sends once appears more than once.
    DuplicateField {
        /// The field's name, as Twilio spells it.
        field: &'static str,
    },
    /// A SID field does not have Twilio's shape: a two-letter prefix and 32
    /// lower-case hex digits.
    InvalidSid {
        /// The field's name, as Twilio spells it.
        field: &'static str,
        /// The prefix it must start with.
        prefix: &'static str,
        /// The value's length in bytes (the value itself may be huge or hostile).
        len: usize,
    },
    /// A text field is longer than any value Twilio sends.
    TooLong {
        /// The field's name, as Twilio spells it.
        field: &'static str,
        /// The value's length in bytes.
        len: usize,
        /// The most accepted.
        max: usize,
    },
    /// A numeric field does not hold a number in range.
    InvalidNumber {
        /// The field's name, as Twilio spells it.
        field: &'static str,
        /// The value received, cut to its first 32 characters.
        value: String,
    },
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookError::Form(err) => write!(f, "webhook body: {err}"),
            WebhookError::MissingField { field } => {
                write!(f, "webhook body has no {field} field, which Twilio always sends")
            }
            WebhookError::DuplicateField { field } => {
                write!(f, "webhook body has the {field} field more than once")
            }
            WebhookError::InvalidSid { field, prefix, len } => write!(
                f,
                "webhook field {field} ({len} bytes) is not a Twilio SID: {prefix} followed by 32 lower-case hex digits"
            ),
            WebhookError::TooLong { field, len, max } => {
                write!(f, "webhook field {field} is {len} bytes long; at most {max} are accepted")
            }
            WebhookError::InvalidNumber { field, value } => {
                write!(
                    f,
                    "webhook field {field} should be a whole number but is \"{}\"",
                    value.escape_debug()
                )
            }
        }
    }
}

impl core::error::Error for WebhookError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            WebhookError::Form(err) => Some(err),
            _ => None,
        }
    }
}

impl From<FormError> for WebhookError {
    fn from(err: FormError) -> Self {
        WebhookError::Form(err)
    }
}

/// Defines a Twilio enumeration: known values as variants, anything else kept
/// verbatim in `Other`.
macro_rules! twilio_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know, exactly as Twilio sent it.
            Other(String),
        }

        impl $name {
            /// The value as Twilio spells it; unknown values are matched exactly.
            #[must_use]
            pub fn parse(text: &str) -> Self {
                match text {
                    $($text => $name::$variant,)*
                    other => $name::Other(other.to_owned()),
                }
            }

            /// The value as Twilio spells it.
            #[must_use]
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)*
                    $name::Other(text) => text,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

twilio_enum! {
    /// `CallStatus`: where the call is in its life.
    CallStatus {
        /// Waiting to be dialled.
        Queued = "queued",
        /// Dialling has started.
        Initiated = "initiated",
        /// The far end is ringing.
        Ringing = "ringing",
        /// Answered and connected.
        InProgress = "in-progress",
        /// Answered, then ended normally.
        Completed = "completed",
        /// The far end was busy.
        Busy = "busy",
        /// The call could not be completed (bad number, carrier error).
        Failed = "failed",
        /// Rang out without an answer.
        NoAnswer = "no-answer",
        /// Hung up by the API while queued or ringing.
        Canceled = "canceled",
    }
}

impl CallStatus {
    /// Whether the call has ended: no further status will follow except
    /// out-of-order callbacks for earlier states.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            CallStatus::Completed
                | CallStatus::Busy
                | CallStatus::Failed
                | CallStatus::NoAnswer
                | CallStatus::Canceled
        )
    }
}

twilio_enum! {
    /// `Direction`: who placed the call.
    Direction {
        /// A caller dialled one of the account's numbers.
        Inbound = "inbound",
        /// Placed through the REST API.
        OutboundApi = "outbound-api",
        /// Placed by `<Dial>` from another call.
        OutboundDial = "outbound-dial",
    }
}

twilio_enum! {
    /// `StreamEvent`: what happened to a Media Stream.
    StreamEvent {
        /// The WebSocket connected and media started flowing.
        Started = "stream-started",
        /// The stream ended.
        Stopped = "stream-stopped",
        /// The stream failed; `StreamError` says why.
        Error = "stream-error",
    }
}

/// Where a number is registered, as far as Twilio knows (`FromCity`,
/// `FromState`, `FromZip`, `FromCountry`, or the `To…` equivalents).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// City.
    pub city: Option<String>,
    /// State or province.
    pub state: Option<String>,
    /// Postal code.
    pub zip: Option<String>,
    /// ISO 3166-1 alpha-2 country code.
    pub country: Option<String>,
}

/// The fields common to the voice webhook and the call status callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallDetails {
    /// `CallSid` (`CA…`).
    pub call_sid: String,
    /// `AccountSid` (`AC…`).
    pub account_sid: String,
    /// `From`: the caller (E.164 number, client or SIP identity; may be empty
    /// for withheld numbers).
    pub from: String,
    /// `To`: the called party.
    pub to: String,
    /// `CallStatus`.
    pub call_status: CallStatus,
    /// `Direction`.
    pub direction: Direction,
    /// `ApiVersion` (`2010-04-01`).
    pub api_version: Option<String>,
    /// `ForwardedFrom`: the number that forwarded the call, if the carrier says.
    pub forwarded_from: Option<String>,
    /// `CallerName`: CNAM lookup result, if enabled.
    pub caller_name: Option<String>,
    /// `ParentCallSid`: the call that `<Dial>`ed this one.
    pub parent_call_sid: Option<String>,
    /// `FromCity`, `FromState`, `FromZip`, `FromCountry`.
    pub from_place: Place,
    /// `ToCity`, `ToState`, `ToZip`, `ToCountry`.
    pub to_place: Place,
}

/// The voice webhook: Twilio asks what to do with a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoiceWebhook {
    /// The call's fields.
    pub call: CallDetails,
    /// Every other field, in body order.
    pub extra: Vec<(String, String)>,
}

/// The call status callback: the call moved to another state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallStatusCallback {
    /// The call's fields.
    pub call: CallDetails,
    /// `CallDuration`: seconds the call was connected (on completion).
    pub call_duration: Option<u32>,
    /// `Timestamp`: when the event happened, as Twilio wrote it (RFC 2822).
    pub timestamp: Option<String>,
    /// `SequenceNumber`: order of this callback for the call, from 0;
    /// callbacks may arrive out of order, so order by this, not by arrival.
    pub sequence_number: Option<u32>,
    /// `CallbackSource` (`call-progress-events`).
    pub callback_source: Option<String>,
    /// `SipResponseCode`: final SIP response of the call leg.
    pub sip_response_code: Option<u16>,
    /// Every other field, in body order.
    pub extra: Vec<(String, String)>,
}

/// The Media Streams status callback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamStatusCallback {
    /// `AccountSid`.
    pub account_sid: String,
    /// `CallSid`.
    pub call_sid: String,
    /// `StreamSid` (`MZ…`).
    pub stream_sid: String,
    /// `StreamName`, if the stream was given one.
    pub stream_name: Option<String>,
    /// `StreamEvent`.
    pub stream_event: StreamEvent,
    /// `StreamError`: why the stream failed (with `stream-error`).
    pub stream_error: Option<String>,
    /// `Timestamp`: when the event happened, as Twilio wrote it (ISO 8601).
    pub timestamp: Option<String>,
    /// Every other field, in body order.
    pub extra: Vec<(String, String)>,
}

const CALL_FIELDS: &[&str] = &[
    "CallSid",
    "AccountSid",
    "From",
    "To",
    "CallStatus",
    "Direction",
    "ApiVersion",
    "ForwardedFrom",
    "CallerName",
    "ParentCallSid",
    "FromCity",
    "FromState",
    "FromZip",
    "FromCountry",
    "ToCity",
    "ToState",
    "ToZip",
    "ToCountry",
];

const STATUS_FIELDS: &[&str] =
    &["CallDuration", "Timestamp", "SequenceNumber", "CallbackSource", "SipResponseCode"];

const STREAM_FIELDS: &[&str] =
    &["AccountSid", "CallSid", "StreamSid", "StreamName", "StreamEvent", "StreamError", "Timestamp"];

const RECORDING_FIELDS: &[&str] = &[
    "AccountSid",
    "CallSid",
    "RecordingSid",
    "RecordingUrl",
    "RecordingStatus",
    "RecordingDuration",
    "RecordingChannels",
    "RecordingSource",
    "ErrorCode",
];

/// Longest `RecordingUrl` accepted: Twilio's are about 130 bytes.
pub const MAX_RECORDING_URL_LEN: usize = 512;
/// Longest `RecordingStatus` (and other short words) accepted.
const MAX_WORD_LEN: usize = 32;

/// A form split into the fields one webhook knows and the rest.
struct Fields {
    known: Vec<(&'static str, String)>,
    extra: Vec<(String, String)>,
}

impl Fields {
    fn split(form: Form, groups: &[&[&'static str]]) -> Result<Fields, WebhookError> {
        let mut known: Vec<(&'static str, String)> = Vec::new();
        let mut extra = Vec::new();
        for (name, value) in form.into_pairs() {
            match groups.iter().flat_map(|group| group.iter()).find(|known| **known == name) {
                Some(&field) if known.iter().any(|(seen, _)| *seen == field) => {
                    return Err(WebhookError::DuplicateField { field });
                }
                Some(&field) => known.push((field, value)),
                None => extra.push((name, value)),
            }
        }
        Ok(Fields { known, extra })
    }

    fn optional(&mut self, field: &'static str) -> Option<String> {
        let at = self.known.iter().position(|(name, _)| *name == field)?;
        Some(self.known.swap_remove(at).1)
    }

    fn required(&mut self, field: &'static str) -> Result<String, WebhookError> {
        self.optional(field).ok_or(WebhookError::MissingField { field })
    }

    /// An optional number; an empty value counts as absent, as Twilio sends
    /// some fields empty when they do not apply.
    fn number<T: core::str::FromStr>(&mut self, field: &'static str) -> Result<Option<T>, WebhookError> {
        match self.optional(field) {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| WebhookError::InvalidNumber { field, value: text.chars().take(32).collect() }),
        }
    }

    fn place(
        &mut self,
        city: &'static str,
        state: &'static str,
        zip: &'static str,
        country: &'static str,
    ) -> Place {
        Place {
            city: self.optional(city),
            state: self.optional(state),
            zip: self.optional(zip),
            country: self.optional(country),
        }
    }

    fn call_details(&mut self) -> Result<CallDetails, WebhookError> {
        Ok(CallDetails {
            call_sid: self.required("CallSid")?,
            account_sid: self.required("AccountSid")?,
            from: self.required("From")?,
            to: self.required("To")?,
            call_status: CallStatus::parse(&self.required("CallStatus")?),
            direction: Direction::parse(&self.required("Direction")?),
            api_version: self.optional("ApiVersion"),
            forwarded_from: self.optional("ForwardedFrom"),
            caller_name: self.optional("CallerName"),
            parent_call_sid: self.optional("ParentCallSid"),
            from_place: self.place("FromCity", "FromState", "FromZip", "FromCountry"),
            to_place: self.place("ToCity", "ToState", "ToZip", "ToCountry"),
        })
    }
}

impl VoiceWebhook {
    /// Parses a voice webhook body.
    ///
    /// # Errors
    /// [`WebhookError::Form`] for a malformed body, else as
    /// [`VoiceWebhook::from_form`].
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_form(Form::parse(body)?)
    }

    /// Converts a parsed form. Its answer echoes `CallSid`, `From` and `To`
    /// into TwiML and logs, so their shape and length are checked here.
    ///
    /// # Errors
    /// [`WebhookError::MissingField`] when `CallSid`, `AccountSid`, `From`,
    /// `To`, `CallStatus` or `Direction` is absent;
    /// [`WebhookError::DuplicateField`] when a known field repeats;
    /// [`WebhookError::InvalidSid`] when `CallSid` or `AccountSid` is not
    /// Twilio-shaped; [`WebhookError::TooLong`] when `From` or `To` is
    /// longer than [`MAX_ADDRESS_LEN`].
    pub fn from_form(form: Form) -> Result<Self, WebhookError> {
        let mut fields = Fields::split(form, &[CALL_FIELDS])?;
        let call = fields.call_details()?;
        check_sid("CallSid", &call.call_sid, "CA")?;
        check_sid("AccountSid", &call.account_sid, "AC")?;
        for (field, value) in [("From", &call.from), ("To", &call.to)] {
            if value.len() > MAX_ADDRESS_LEN {
                return Err(WebhookError::TooLong { field, len: value.len(), max: MAX_ADDRESS_LEN });
            }
        }
        Ok(VoiceWebhook { call, extra: fields.extra })
    }
}

/// Longest `From` or `To` accepted, in bytes: E.164 numbers are at most 16,
/// `client:` identities and SIP URIs far below this.
pub const MAX_ADDRESS_LEN: usize = 256;

fn check_sid(field: &'static str, value: &str, prefix: &'static str) -> Result<(), WebhookError> {
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if value.len() == 34 && value.starts_with(prefix) && value.bytes().skip(2).all(hex) {
        Ok(())
    } else {
        Err(WebhookError::InvalidSid { field, prefix, len: value.len() })
    }
}

impl CallStatusCallback {
    /// Parses a call status callback body.
    ///
    /// # Errors
    /// [`WebhookError::Form`] for a malformed body, else as
    /// [`CallStatusCallback::from_form`].
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_form(Form::parse(body)?)
    }

    /// Converts a parsed form.
    ///
    /// # Errors
    /// As [`VoiceWebhook::from_form`], plus [`WebhookError::InvalidNumber`]
    /// when `CallDuration`, `SequenceNumber` or `SipResponseCode` is not a
    /// number in range.
    pub fn from_form(form: Form) -> Result<Self, WebhookError> {
        let mut fields = Fields::split(form, &[CALL_FIELDS, STATUS_FIELDS])?;
        let call = fields.call_details()?;
        Ok(CallStatusCallback {
            call,
            call_duration: fields.number("CallDuration")?,
            timestamp: fields.optional("Timestamp"),
            sequence_number: fields.number("SequenceNumber")?,
            callback_source: fields.optional("CallbackSource"),
            sip_response_code: fields.number("SipResponseCode")?,
            extra: fields.extra,
        })
    }
}

impl StreamStatusCallback {
    /// Parses a stream status callback body.
    ///
    /// # Errors
    /// [`WebhookError::Form`] for a malformed body, else as
    /// [`StreamStatusCallback::from_form`].
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_form(Form::parse(body)?)
    }

    /// Converts a parsed form.
    ///
    /// # Errors
    /// [`WebhookError::MissingField`] when `AccountSid`, `CallSid`,
    /// `StreamSid` or `StreamEvent` is absent;
    /// [`WebhookError::DuplicateField`] when a known field repeats.
    pub fn from_form(form: Form) -> Result<Self, WebhookError> {
        let mut fields = Fields::split(form, &[STREAM_FIELDS])?;
        Ok(StreamStatusCallback {
            account_sid: fields.required("AccountSid")?,
            call_sid: fields.required("CallSid")?,
            stream_sid: fields.required("StreamSid")?,
            stream_name: fields.optional("StreamName"),
            stream_event: StreamEvent::parse(&fields.required("StreamEvent")?),
            stream_error: fields.optional("StreamError"),
            timestamp: fields.optional("Timestamp"),
            extra: fields.extra,
        })
    }
}

/// The recording status callback (`RecordingStatusCallback`) of a
/// recording started through the REST API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingStatusCallback {
    /// `AccountSid`.
    pub account_sid: String,
    /// `CallSid`.
    pub call_sid: String,
    /// `RecordingSid` (`RE…`).
    pub recording_sid: String,
    /// `RecordingUrl`: where the audio can be fetched (with the account's
    /// credentials), without an extension.
    pub recording_url: Option<String>,
    /// `RecordingStatus`: `in-progress`, `completed` or `absent`.
    pub recording_status: String,
    /// `RecordingDuration`: seconds, on `completed`.
    pub recording_duration: Option<u32>,
    /// `RecordingChannels`: 1 or 2.
    pub recording_channels: Option<u8>,
    /// `RecordingSource` (`StartCallRecordingAPI`).
    pub recording_source: Option<String>,
    /// `ErrorCode`: Twilio's error code when the recording failed (`0` otherwise).
    pub error_code: Option<u32>,
    /// Every other field, in body order.
    pub extra: Vec<(String, String)>,
}

impl RecordingStatusCallback {
    /// Parses a recording status callback body.
    ///
    /// # Errors
    /// [`WebhookError::Form`] for a malformed body, else as
    /// [`RecordingStatusCallback::from_form`].
    pub fn parse(body: &[u8]) -> Result<Self, WebhookError> {
        Self::from_form(Form::parse(body)?)
    }

    /// Converts a parsed form.
    ///
    /// # Errors
    /// [`WebhookError::MissingField`] when `AccountSid`, `CallSid`,
    /// `RecordingSid` or `RecordingStatus` is absent;
    /// [`WebhookError::InvalidSid`] when a SID is not shaped like one;
    /// [`WebhookError::TooLong`] for a URL or status longer than Twilio
    /// sends; [`WebhookError::InvalidNumber`] for a bad duration, channel
    /// count or error code; [`WebhookError::DuplicateField`] when a known
    /// field repeats.
    pub fn from_form(form: Form) -> Result<Self, WebhookError> {
        let mut fields = Fields::split(form, &[RECORDING_FIELDS])?;
        let account_sid = fields.required("AccountSid")?;
        check_sid("AccountSid", &account_sid, "AC")?;
        let call_sid = fields.required("CallSid")?;
        check_sid("CallSid", &call_sid, "CA")?;
        let recording_sid = fields.required("RecordingSid")?;
        check_sid("RecordingSid", &recording_sid, "RE")?;
        let recording_url = fields.optional("RecordingUrl");
        if let Some(url) = &recording_url {
            check_len("RecordingUrl", url, MAX_RECORDING_URL_LEN)?;
        }
        let recording_status = fields.required("RecordingStatus")?;
        check_len("RecordingStatus", &recording_status, MAX_WORD_LEN)?;
        let recording_source = fields.optional("RecordingSource");
        if let Some(source) = &recording_source {
            check_len("RecordingSource", source, MAX_WORD_LEN)?;
        }
        Ok(RecordingStatusCallback {
            account_sid,
            call_sid,
            recording_sid,
            recording_url,
            recording_status,
            recording_duration: fields.number("RecordingDuration")?,
            recording_channels: fields.number("RecordingChannels")?,
            recording_source,
            error_code: fields.number("ErrorCode")?,
            extra: fields.extra,
        })
    }

    /// Whether Twilio sends nothing more about this recording after it.
    #[must_use]
    pub fn is_final(&self) -> bool {
        matches!(self.recording_status.as_str(), "completed" | "absent" | "failed")
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), WebhookError> {
    if value.len() > max { Err(WebhookError::TooLong { field, len: value.len(), max }) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like Twilio's recording status callback, with made-up SIDs.
    const RECORDING_BODY: &[u8] = b"RecordingSource=StartCallRecordingAPI&RecordingTrack=both\
        &RecordingSid=RE0123456789abcdef0123456789abcdef\
        &RecordingUrl=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2FAC0123456789abcdef0123456789abcdef%2FRecordings%2FRE0123456789abcdef0123456789abcdef\
        &RecordingStatus=completed&RecordingChannels=2&ErrorCode=0\
        &CallSid=CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c&RecordingStartTime=Tue%2C+14+May+2024+18%3A02%3A29+%2B0000\
        &AccountSid=AC0123456789abcdef0123456789abcdef&RecordingDuration=42";

    #[test]
    fn a_recording_status_callback_parses() {
        let r = RecordingStatusCallback::parse(RECORDING_BODY).unwrap();
        assert_eq!(r.recording_sid, "RE0123456789abcdef0123456789abcdef");
        assert_eq!(r.call_sid, "CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c");
        assert!(
            r.recording_url.as_deref().unwrap().ends_with("/Recordings/RE0123456789abcdef0123456789abcdef")
        );
        assert_eq!((r.recording_status.as_str(), r.recording_duration), ("completed", Some(42)));
        assert_eq!((r.recording_channels, r.error_code), (Some(2), Some(0)));
        assert_eq!(r.recording_source.as_deref(), Some("StartCallRecordingAPI"));
        assert!(r.is_final());
        assert_eq!(r.extra.len(), 2, "RecordingTrack and RecordingStartTime kept: {:?}", r.extra);
    }

    #[test]
    fn a_hostile_recording_status_callback_is_refused_with_the_field() {
        let body = String::from_utf8(RECORDING_BODY.to_vec()).unwrap();
        let refused = |from: &str, to: &str| {
            RecordingStatusCallback::parse(body.replacen(from, to, 1).as_bytes()).unwrap_err()
        };
        let sid = "RE0123456789abcdef0123456789abcdef";
        assert!(matches!(refused(sid, "RE../../x"), WebhookError::InvalidSid { field: "RecordingSid", .. }));
        let long = format!("RecordingUrl={}", "x".repeat(MAX_RECORDING_URL_LEN + 1));
        assert!(matches!(
            refused("RecordingUrl=", &format!("{long}&Ignored=")),
            WebhookError::TooLong { field: "RecordingUrl", .. }
        ));
        assert!(matches!(
            refused("RecordingDuration=42", "RecordingDuration=-1"),
            WebhookError::InvalidNumber { field: "RecordingDuration", .. }
        ));
        assert!(matches!(
            refused("RecordingStatus=completed&", ""),
            WebhookError::MissingField { field: "RecordingStatus" }
        ));
    }

    // Shaped like real Twilio bodies (field set and order as Twilio sends
    // them), with made-up SIDs and numbers.
    const VOICE_BODY: &[u8] = b"Called=%2B14155550100&ToState=CA&CallerCountry=US&Direction=inbound\
        &CallerState=CA&ToZip=94105&CallSid=CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c&To=%2B14155550100\
        &CallerZip=94016&ToCountry=US&StirVerstat=TN-Validation-Passed-A&CalledZip=94105\
        &ApiVersion=2010-04-01&CalledCity=SAN+FRANCISCO&CallStatus=ringing&From=%2B14155550199\
        &AccountSid=AC0123456789abcdef0123456789abcdef&CalledCountry=US&CallerCity=SAN+MATEO\
        &ToCity=SAN+FRANCISCO&FromCountry=US&Caller=%2B14155550199&FromCity=SAN+MATEO\
        &CalledState=CA&FromZip=94016&FromState=CA";

    const STATUS_BODY: &[u8] = b"Called=%2B14155550100&ToState=CA&CallerCountry=US&Direction=outbound-api\
        &Timestamp=Tue%2C+14+May+2024+18%3A03%3A11+%2B0000&CallbackSource=call-progress-events\
        &SipResponseCode=200&CallerState=CA&ToZip=94105&SequenceNumber=3\
        &CallSid=CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c&To=%2B14155550100&CallerZip=94016\
        &ToCountry=US&CalledZip=94105&ApiVersion=2010-04-01&CalledCity=SAN+FRANCISCO\
        &CallStatus=completed&Duration=1&From=%2B14155550199&CallDuration=42\
        &AccountSid=AC0123456789abcdef0123456789abcdef&CalledCountry=US&CallerCity=SAN+MATEO\
        &ToCity=SAN+FRANCISCO&FromCountry=US&Caller=%2B14155550199&FromCity=SAN+MATEO\
        &CalledState=CA&FromZip=94016&FromState=CA&ParentCallSid=CAffffffffffffffffffffffffffffffff";

    const STREAM_BODY: &[u8] = b"AccountSid=AC0123456789abcdef0123456789abcdef\
        &CallSid=CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c&StreamSid=MZ18ad3ab5a668481ce02b83e7395059f0\
        &StreamName=voxproxy&StreamEvent=stream-error\
        &StreamError=Stream+-+WebSocket+-+Connection+Refused&Timestamp=2024-05-14T18%3A03%3A11.123Z";

    fn pair(name: &str, value: &str) -> (String, String) {
        (name.to_owned(), value.to_owned())
    }

    #[test]
    fn voice_webhook_from_a_realistic_body() {
        let hook = VoiceWebhook::parse(VOICE_BODY).unwrap();
        let call = &hook.call;
        assert_eq!(call.call_sid, "CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c");
        assert_eq!(call.account_sid, "AC0123456789abcdef0123456789abcdef");
        assert_eq!((call.from.as_str(), call.to.as_str()), ("+14155550199", "+14155550100"));
        assert_eq!(call.call_status, CallStatus::Ringing);
        assert_eq!(call.direction, Direction::Inbound);
        assert_eq!(call.api_version.as_deref(), Some("2010-04-01"));
        assert_eq!((call.forwarded_from.as_deref(), call.caller_name.as_deref()), (None, None));
        assert_eq!(
            call.from_place,
            Place {
                city: Some("SAN MATEO".into()),
                state: Some("CA".into()),
                zip: Some("94016".into()),
                country: Some("US".into())
            }
        );
        assert_eq!(call.to_place.city.as_deref(), Some("SAN FRANCISCO"));
        assert_eq!(call.to_place.zip.as_deref(), Some("94105"));
        // Unknown fields keep body order.
        let names: Vec<&str> = hook.extra.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Called",
                "CallerCountry",
                "CallerState",
                "CallerZip",
                "StirVerstat",
                "CalledZip",
                "CalledCity",
                "CalledCountry",
                "CallerCity",
                "Caller",
                "CalledState"
            ]
        );
        assert_eq!(hook.extra[0], pair("Called", "+14155550100"));
    }

    #[test]
    fn status_callback_adds_progress_fields() {
        let status = CallStatusCallback::parse(STATUS_BODY).unwrap();
        assert_eq!(status.call.call_status, CallStatus::Completed);
        assert!(status.call.call_status.is_final());
        assert_eq!(status.call.direction, Direction::OutboundApi);
        assert_eq!(status.call.parent_call_sid.as_deref(), Some("CAffffffffffffffffffffffffffffffff"));
        assert_eq!(status.call_duration, Some(42));
        assert_eq!(status.timestamp.as_deref(), Some("Tue, 14 May 2024 18:03:11 +0000"));
        assert_eq!(status.sequence_number, Some(3));
        assert_eq!(status.callback_source.as_deref(), Some("call-progress-events"));
        assert_eq!(status.sip_response_code, Some(200));
        assert!(status.extra.contains(&pair("Duration", "1")));
        assert!(!status.extra.iter().any(|(n, _)| n == "CallDuration" || n == "CallStatus"));
    }

    #[test]
    fn status_fields_are_extra_in_a_voice_webhook() {
        let hook = VoiceWebhook::parse(STATUS_BODY).unwrap();
        assert!(hook.extra.contains(&pair("CallDuration", "42")));
        assert!(hook.extra.contains(&pair("SequenceNumber", "3")));
    }

    #[test]
    fn stream_status_callback() {
        let stream = StreamStatusCallback::parse(STREAM_BODY).unwrap();
        assert_eq!(stream.account_sid, "AC0123456789abcdef0123456789abcdef");
        assert_eq!(stream.call_sid, "CA5b7f1b2b6a0c4e0f9d0a1c2e3f4a5b6c");
        assert_eq!(stream.stream_sid, "MZ18ad3ab5a668481ce02b83e7395059f0");
        assert_eq!(stream.stream_name.as_deref(), Some("voxproxy"));
        assert_eq!(stream.stream_event, StreamEvent::Error);
        assert_eq!(stream.stream_error.as_deref(), Some("Stream - WebSocket - Connection Refused"));
        assert_eq!(stream.timestamp.as_deref(), Some("2024-05-14T18:03:11.123Z"));
        assert!(stream.extra.is_empty());

        let started = StreamStatusCallback::parse(
            b"AccountSid=AC1&CallSid=CA1&StreamSid=MZ1&StreamEvent=stream-started",
        )
        .unwrap();
        assert_eq!(started.stream_event, StreamEvent::Started);
        assert_eq!((started.stream_name, started.stream_error, started.timestamp), (None, None, None));
    }

    #[test]
    fn every_status_and_direction_spelling() {
        let statuses = [
            ("queued", CallStatus::Queued, false),
            ("initiated", CallStatus::Initiated, false),
            ("ringing", CallStatus::Ringing, false),
            ("in-progress", CallStatus::InProgress, false),
            ("completed", CallStatus::Completed, true),
            ("busy", CallStatus::Busy, true),
            ("failed", CallStatus::Failed, true),
            ("no-answer", CallStatus::NoAnswer, true),
            ("canceled", CallStatus::Canceled, true),
        ];
        for (text, status, is_final) in statuses {
            assert_eq!(CallStatus::parse(text), status);
            assert_eq!(status.as_str(), text);
            assert_eq!(status.is_final(), is_final, "{text}");
        }
        for (text, direction) in [
            ("inbound", Direction::Inbound),
            ("outbound-api", Direction::OutboundApi),
            ("outbound-dial", Direction::OutboundDial),
        ] {
            assert_eq!(Direction::parse(text), direction);
            assert_eq!(direction.to_string(), text);
        }
        for (text, event) in [
            ("stream-started", StreamEvent::Started),
            ("stream-stopped", StreamEvent::Stopped),
            ("stream-error", StreamEvent::Error),
        ] {
            assert_eq!(StreamEvent::parse(text), event);
            assert_eq!(event.as_str(), text);
        }
    }

    #[test]
    fn unknown_enum_values_are_preserved() {
        let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=&To=sip%3Abot%40example.com&CallStatus=answered\
                     &Direction=trunking-originating";
        let hook = VoiceWebhook::parse(body).unwrap();
        assert_eq!(hook.call.call_status, CallStatus::Other("answered".into()));
        assert!(!hook.call.call_status.is_final());
        assert_eq!(hook.call.direction, Direction::Other("trunking-originating".into()));
        assert_eq!(hook.call.direction.as_str(), "trunking-originating");
        // Matching is exact: Twilio's spellings are lower case.
        assert_eq!(CallStatus::parse("Completed"), CallStatus::Other("Completed".into()));
        assert_eq!(hook.call.from, "", "an empty From (withheld number) is present, not missing");
        assert_eq!(hook.call.to, "sip:bot@example.com");
        let stream =
            StreamStatusCallback::parse(b"AccountSid=A&CallSid=C&StreamSid=M&StreamEvent=stream-paused")
                .unwrap();
        assert_eq!(stream.stream_event, StreamEvent::Other("stream-paused".into()));
    }

    #[test]
    fn missing_required_fields_are_named() {
        let full = "CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=a&To=b&CallStatus=ringing&Direction=inbound";
        for field in ["CallSid", "AccountSid", "From", "To", "CallStatus", "Direction"] {
            let body: Vec<&str> =
                full.split('&').filter(|kv| !kv.starts_with(&format!("{field}="))).collect();
            let err = VoiceWebhook::parse(body.join("&").as_bytes()).unwrap_err();
            assert_eq!(err, WebhookError::MissingField { field });
            assert!(err.to_string().contains(field));
        }
        let err =
            StreamStatusCallback::parse(b"AccountSid=A&CallSid=C&StreamEvent=stream-stopped").unwrap_err();
        assert_eq!(err, WebhookError::MissingField { field: "StreamSid" });
        assert_eq!(
            StreamStatusCallback::parse(b"AccountSid=A&CallSid=C&StreamSid=M").unwrap_err(),
            WebhookError::MissingField { field: "StreamEvent" }
        );
    }

    #[test]
    fn duplicate_known_fields_are_refused_but_unknown_ones_kept() {
        let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=a&To=b\
                     &CallStatus=ringing&Direction=inbound&CallSid=CA2";
        assert_eq!(VoiceWebhook::parse(body).unwrap_err(), WebhookError::DuplicateField { field: "CallSid" });
        let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=a&To=b&CallStatus=ringing&Direction=inbound&X=1&X=2";
        assert_eq!(VoiceWebhook::parse(body).unwrap().extra, [pair("X", "1"), pair("X", "2")]);
        let body = b"CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=a&To=b&CallStatus=completed&Direction=inbound\
                     &SequenceNumber=1&SequenceNumber=2";
        assert_eq!(
            CallStatusCallback::parse(body).unwrap_err(),
            WebhookError::DuplicateField { field: "SequenceNumber" }
        );
    }

    #[test]
    fn malformed_sids_and_oversize_addresses_are_refused_without_echoing_them() {
        let good = "CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef\
                    &From=a&To=b&CallStatus=ringing&Direction=inbound";
        assert!(VoiceWebhook::parse(good.as_bytes()).is_ok());
        let huge = "9".repeat(10_000);
        let cases = [
            ("CallSid=CA0123456789abcdef0123456789abcdef", "CallSid=CA1".to_owned(), "CallSid"),
            ("CallSid=CA0123456789abcdef0123456789abcdef", format!("CallSid=CA{huge}"), "CallSid"),
            (
                "CallSid=CA0123456789abcdef0123456789abcdef",
                "CallSid=CA0123456789ABCDEF0123456789abcdef".into(),
                "CallSid",
            ),
            (
                "CallSid=CA0123456789abcdef0123456789abcdef",
                "CallSid=AC0123456789abcdef0123456789abcdef".into(),
                "CallSid",
            ),
            (
                "AccountSid=AC0123456789abcdef0123456789abcdef",
                "AccountSid=AC0123456789abcdef0123456789abcdeg".into(),
                "AccountSid",
            ),
            ("From=a", format!("From={huge}"), "From"),
            ("To=b", format!("To={huge}"), "To"),
        ];
        for (from, to, field) in cases {
            let err = VoiceWebhook::parse(good.replace(from, &to).as_bytes()).unwrap_err();
            assert!(
                matches!(err, WebhookError::InvalidSid { field: f, .. } | WebhookError::TooLong { field: f, .. } if f == field),
                "{field}: {err:?}"
            );
            assert!(err.to_string().len() < 200, "the message does not echo the value: {err}");
        }
        let at_limit = good.replace("From=a", &format!("From={}", "9".repeat(MAX_ADDRESS_LEN)));
        assert!(VoiceWebhook::parse(at_limit.as_bytes()).is_ok());
    }

    #[test]
    fn numbers_are_checked() {
        let base = "CallSid=CA0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef&From=a&To=b&CallStatus=completed&Direction=inbound";
        let with = |extra: &str| CallStatusCallback::parse(format!("{base}&{extra}").as_bytes());
        assert_eq!(with("SipResponseCode=").unwrap().sip_response_code, None);
        assert_eq!(with("CallDuration=0").unwrap().call_duration, Some(0));
        assert_eq!(
            with("SipResponseCode=70000").unwrap_err(),
            WebhookError::InvalidNumber { field: "SipResponseCode", value: "70000".into() }
        );
        assert_eq!(
            with("SequenceNumber=-1").unwrap_err(),
            WebhookError::InvalidNumber { field: "SequenceNumber", value: "-1".into() }
        );
        let long = "9".repeat(100);
        let err = with(&format!("CallDuration={long}")).unwrap_err();
        assert_eq!(err, WebhookError::InvalidNumber { field: "CallDuration", value: "9".repeat(32) });
        assert!(err.to_string().contains("CallDuration"));
    }

    #[test]
    fn form_errors_pass_through() {
        let err = VoiceWebhook::parse(b"CallSid=%G1").unwrap_err();
        assert_eq!(err, WebhookError::Form(FormError::InvalidPercentEscape { offset: 8 }));
        assert!(core::error::Error::source(&err).is_some());
    }
}
