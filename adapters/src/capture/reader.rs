//! Reading a capture held in memory: borrowed records, every length
//! checked against the bytes there are and against [`MAX_RECORD_BYTES`].

use core::fmt;
use std::net::SocketAddr;

use voxproxy_core::Instant;

use super::format::{
    Body, BotStart, CaptureHeader, FORMAT_VERSION, MAGIC, MAX_RECORD_BYTES, OLDEST_VERSION, OutputRecord,
    RECORD_HEAD, SipStart, Truncation, bot_start, codec_from_code, end_reason_from_code, event_from_code,
    kind,
};
use super::header::{decode_header, decode_sip_start};
use crate::bridge::{BackendCodec, EndReason};

/// What is wrong with a capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CaptureError {
    /// The file does not start with [`MAGIC`]: not a voxproxy capture.
    NotACapture,
    /// The file's layout version is one this voxproxy cannot read.
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
    },
    /// The file ends inside a record (a capture cut by a crash or a copy).
    Truncated {
        /// Offset of the record that is cut.
        offset: usize,
    },
    /// A record claims more bytes than any record may have.
    RecordTooLong {
        /// Offset of the record.
        offset: usize,
        /// Its claimed length.
        len: u64,
    },
    /// A record of a kind this version does not know.
    UnknownKind {
        /// Offset of the record.
        offset: usize,
        /// Its kind byte.
        kind: u8,
    },
    /// A record's body does not hold what its kind needs.
    BadRecord {
        /// Offset of the record.
        offset: usize,
        /// Its kind byte.
        kind: u8,
        /// What is wrong.
        reason: &'static str,
    },
    /// The first record is not the header, or the header is malformed.
    BadHeader {
        /// What is wrong.
        reason: &'static str,
    },
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::NotACapture => {
                f.write_str("not a voxproxy capture (the file does not start with VOXCAP)")
            }
            CaptureError::UnsupportedVersion { found } => write!(
                f,
                "capture format version {found} is not supported (this voxproxy reads versions {OLDEST_VERSION} to {FORMAT_VERSION}); replay it with the voxproxy that wrote it"
            ),
            CaptureError::Truncated { offset } => {
                write!(
                    f,
                    "the file ends inside the record at byte {offset}: the capture was cut (copy it again, or replay what precedes)"
                )
            }
            CaptureError::RecordTooLong { offset, len } => write!(
                f,
                "the record at byte {offset} claims {len} bytes, more than the {MAX_RECORD_BYTES} any record may have: the file is corrupt"
            ),
            CaptureError::UnknownKind { offset, kind } => write!(
                f,
                "the record at byte {offset} has kind 0x{kind:02x}, unknown to this voxproxy: the file is corrupt or newer"
            ),
            CaptureError::BadRecord { offset, kind, reason } => {
                write!(f, "the record at byte {offset} (kind 0x{kind:02x}) is malformed: {reason}")
            }
            CaptureError::BadHeader { reason } => write!(f, "the capture's header is malformed: {reason}"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// One record of a capture, borrowing from the file.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Record<'a> {
    /// A text frame from Twilio (after `handle_twilio_activity`).
    TwilioText {
        /// Virtual time.
        at: Instant,
        /// The frame.
        frame: &'a [u8],
    },
    /// A binary frame from Twilio.
    TwilioBinary {
        /// Virtual time.
        at: Instant,
    },
    /// Another WebSocket message from Twilio (ping, pong).
    TwilioActivity {
        /// Virtual time.
        at: Instant,
    },
    /// `handle_close`.
    Close {
        /// Virtual time.
        at: Instant,
        /// Why.
        reason: EndReason,
    },
    /// A datagram on the RTP socket.
    Rtp {
        /// Virtual time.
        at: Instant,
        /// Its source.
        from: SocketAddr,
        /// The datagram.
        datagram: &'a [u8],
    },
    /// The bridge's `handle_timeout`.
    Timeout {
        /// Virtual time.
        at: Instant,
    },
    /// `set_backend`.
    SetBackend {
        /// Virtual time.
        at: Instant,
        /// The backend.
        backend: Option<SocketAddr>,
    },
    /// `set_media`.
    SetMedia {
        /// Virtual time.
        at: Instant,
        /// Codec.
        codec: BackendCodec,
        /// Audio payload type.
        payload_type: u8,
        /// DTMF payload type.
        dtmf_payload_type: u8,
    },
    /// The SIP leg started.
    SipStart {
        /// Virtual time.
        at: Instant,
        /// Its configuration (boxed: it is far larger than other records).
        start: Box<SipStart>,
    },
    /// A SIP datagram.
    SipDatagram {
        /// Virtual time.
        at: Instant,
        /// Its source.
        from: SocketAddr,
        /// The message.
        bytes: &'a [u8],
    },
    /// SIP bytes from TCP.
    SipStream {
        /// Virtual time.
        at: Instant,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The SIP leg's `handle_timeout`.
    SipTimeout {
        /// Virtual time.
        at: Instant,
    },
    /// The SIP leg's `hangup`.
    SipHangup {
        /// Virtual time.
        at: Instant,
    },
    /// The SIP leg's `drive`.
    SipDrive {
        /// Virtual time.
        at: Instant,
    },
    /// The call became a bot call (`BotCall::new`).
    BotStart {
        /// Virtual time.
        at: Instant,
        /// The bot leg's settings.
        start: BotStart,
    },
    /// A text message from the bot.
    BotText {
        /// Virtual time.
        at: Instant,
        /// The message.
        frame: &'a [u8],
    },
    /// A binary message from the bot.
    BotBinary {
        /// Virtual time.
        at: Instant,
        /// The message.
        data: &'a [u8],
    },
    /// The bot's WebSocket closed or failed during the call.
    BotClosed {
        /// Virtual time.
        at: Instant,
    },
    /// The bot could not be reached.
    BotFailed {
        /// Virtual time.
        at: Instant,
    },
    /// An output.
    Output(OutputRecord<'a>),
    /// The capture stopped early.
    Truncated(Truncation),
    /// The call ended.
    End {
        /// Virtual time.
        at: Instant,
    },
}

impl Record<'_> {
    /// The time of an input (or of the end); `None` for outputs and marks.
    #[must_use]
    pub fn at(&self) -> Option<Instant> {
        match self {
            Record::TwilioText { at, .. }
            | Record::TwilioBinary { at }
            | Record::TwilioActivity { at }
            | Record::Close { at, .. }
            | Record::Rtp { at, .. }
            | Record::Timeout { at }
            | Record::SetBackend { at, .. }
            | Record::SetMedia { at, .. }
            | Record::SipStart { at, .. }
            | Record::SipDatagram { at, .. }
            | Record::SipStream { at, .. }
            | Record::SipTimeout { at }
            | Record::SipHangup { at }
            | Record::SipDrive { at }
            | Record::BotStart { at, .. }
            | Record::BotText { at, .. }
            | Record::BotBinary { at, .. }
            | Record::BotClosed { at }
            | Record::BotFailed { at }
            | Record::End { at } => Some(*at),
            Record::Output(_) | Record::Truncated(_) => None,
        }
    }

    /// A short name for messages.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Record::TwilioText { .. } => "twilio text frame",
            Record::TwilioBinary { .. } => "twilio binary frame",
            Record::TwilioActivity { .. } => "twilio ping/pong",
            Record::Close { .. } => "close",
            Record::Rtp { .. } => "backend datagram",
            Record::Timeout { .. } => "timer",
            Record::SetBackend { .. } => "set backend",
            Record::SetMedia { .. } => "set media",
            Record::SipStart { .. } => "SIP leg start",
            Record::SipDatagram { .. } => "SIP datagram",
            Record::SipStream { .. } => "SIP stream bytes",
            Record::SipTimeout { .. } => "SIP timer",
            Record::SipHangup { .. } => "SIP hangup",
            Record::SipDrive { .. } => "SIP drive",
            Record::BotStart { .. } => "bot leg start",
            Record::BotText { .. } => "bot text message",
            Record::BotBinary { .. } => "bot binary message",
            Record::BotClosed { .. } => "bot closed",
            Record::BotFailed { .. } => "bot unreachable",
            Record::Output(o) => o.name(),
            Record::Truncated(_) => "truncation mark",
            Record::End { .. } => "end mark",
        }
    }
}

/// A record's kind, body and offset.
type RawRecord<'a> = (u8, &'a [u8], usize);

/// Walks a capture's records. See the [module docs](super).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Reader<'a> {
    /// Checks the prelude and reads the header; the reader then yields the
    /// records after it.
    ///
    /// # Errors
    /// [`CaptureError`] when the file is not a capture this version reads.
    pub fn new(bytes: &'a [u8]) -> Result<(Reader<'a>, CaptureHeader), CaptureError> {
        if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
            return Err(CaptureError::NotACapture);
        }
        let mut reader = Reader { bytes, offset: MAGIC.len(), failed: false };
        let version =
            Body { bytes: &bytes[MAGIC.len()..] }.u16().ok_or(CaptureError::Truncated { offset: 8 })?;
        if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(CaptureError::UnsupportedVersion { found: version });
        }
        reader.offset += 2;
        let (kind, body, _) =
            reader.raw()?.ok_or(CaptureError::BadHeader { reason: "the file has no header" })?;
        if kind != kind::HEADER {
            return Err(CaptureError::BadHeader { reason: "the first record is not the header" });
        }
        let header = decode_header(body).map_err(|reason| CaptureError::BadHeader { reason })?;
        Ok((reader, header))
    }

    /// The next record's kind, body and offset; `None` at the end.
    fn raw(&mut self) -> Result<Option<RawRecord<'a>>, CaptureError> {
        let offset = self.offset;
        let rest = &self.bytes[offset..];
        if rest.is_empty() {
            return Ok(None);
        }
        let mut head = Body { bytes: rest };
        let (Some(kind), Some(len)) = (head.u8(), head.u32()) else {
            return Err(CaptureError::Truncated { offset });
        };
        let len = len as usize;
        if len > MAX_RECORD_BYTES {
            return Err(CaptureError::RecordTooLong { offset, len: len as u64 });
        }
        let body = head.take(len).ok_or(CaptureError::Truncated { offset })?;
        self.offset = offset + RECORD_HEAD + len;
        Ok(Some((kind, body, offset)))
    }

    /// Byte offset of the next record.
    #[must_use]
    pub fn offset(&self) -> usize {
        self.offset
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Record<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let result = match self.raw() {
            Ok(None) => return None,
            Ok(Some((kind, body, offset))) => decode(kind, body).map_err(|reason| match reason {
                Bad::Unknown => CaptureError::UnknownKind { offset, kind },
                Bad::Reason(reason) => CaptureError::BadRecord { offset, kind, reason },
            }),
            Err(e) => Err(e),
        };
        self.failed = result.is_err();
        Some(result)
    }
}

enum Bad {
    Unknown,
    Reason(&'static str),
}

impl From<&'static str> for Bad {
    fn from(reason: &'static str) -> Self {
        Bad::Reason(reason)
    }
}

const SHORT: &str = "the body is shorter than its kind needs";

fn decode(kind: u8, body: &[u8]) -> Result<Record<'_>, Bad> {
    let mut b = Body { bytes: body };
    let record = match kind {
        kind::TRUNCATED => {
            Record::Truncated(b.u8().and_then(Truncation::from_code).ok_or("unknown truncation")?)
        }
        kind::OUT_TWILIO | kind::OUT_RTP | kind::OUT_SIP | kind::OUT_BOT_TEXT | kind::OUT_BOT_BINARY => {
            let (len, digest) = (b.u32().ok_or(SHORT)?, b.u64().ok_or(SHORT)?);
            Record::Output(match kind {
                kind::OUT_TWILIO => OutputRecord::Twilio { len, digest },
                kind::OUT_RTP => OutputRecord::Rtp { len, digest },
                kind::OUT_BOT_TEXT | kind::OUT_BOT_BINARY => {
                    OutputRecord::Bot { binary: kind == kind::OUT_BOT_BINARY, len, digest }
                }
                _ => OutputRecord::Sip { len, digest },
            })
        }
        kind::OUT_PING => Record::Output(OutputRecord::Ping),
        kind::OUT_BOT_CLOSE => Record::Output(OutputRecord::BotClose),
        kind::OUT_EVENT => {
            let (code, value) = (b.u8().ok_or(SHORT)?, b.u64().ok_or(SHORT)?);
            Record::Output(OutputRecord::Event(event_from_code(code, value).ok_or("unknown event")?))
        }
        kind::OUT_CLOSE => {
            let code = b.u16().ok_or(SHORT)?;
            let reason = core::str::from_utf8(b.rest()).map_err(|_| "the close reason is not UTF-8")?;
            Record::Output(OutputRecord::Close { code, reason })
        }
        kind::OUT_DEADLINE => Record::Output(OutputRecord::Deadline(match b.u8().ok_or(SHORT)? {
            0 => None,
            1 => Some(b.time().ok_or(SHORT)?),
            _ => return Err("a deadline flag is neither 0 nor 1".into()),
        })),
        _ => return timed(kind, b),
    };
    if !b.bytes.is_empty() {
        return Err("the body is longer than its kind has".into());
    }
    Ok(record)
}

fn timed(kind: u8, mut b: Body<'_>) -> Result<Record<'_>, Bad> {
    if kind == kind::HEADER {
        return Err("a second header".into());
    }
    if !(kind == kind::END || (kind::TWILIO_TEXT..=kind::BOT_FAILED).contains(&kind)) {
        return Err(Bad::Unknown);
    }
    let at = b.time().ok_or(SHORT)?;
    let record = match kind {
        kind::END => Record::End { at },
        kind::TWILIO_TEXT => Record::TwilioText { at, frame: b.rest() },
        kind::TWILIO_BINARY => Record::TwilioBinary { at },
        kind::TWILIO_ACTIVITY => Record::TwilioActivity { at },
        kind::CLOSE => {
            Record::Close { at, reason: b.u8().and_then(end_reason_from_code).ok_or("unknown end reason")? }
        }
        kind::RTP => {
            let from = b.addr().flatten().ok_or("the source address is malformed")?;
            Record::Rtp { at, from, datagram: b.rest() }
        }
        kind::TIMEOUT => Record::Timeout { at },
        kind::SET_BACKEND => {
            Record::SetBackend { at, backend: b.addr().ok_or("the backend address is malformed")? }
        }
        kind::SET_MEDIA => {
            let codec = b.u8().and_then(codec_from_code).ok_or("unknown codec")?;
            let (payload_type, dtmf_payload_type) = (b.u8().ok_or(SHORT)?, b.u8().ok_or(SHORT)?);
            Record::SetMedia { at, codec, payload_type, dtmf_payload_type }
        }
        kind::SIP_START => Record::SipStart { at, start: Box::new(decode_sip_start(b.rest())?) },
        kind::SIP_DATAGRAM => {
            let from = b.addr().flatten().ok_or("the source address is malformed")?;
            Record::SipDatagram { at, from, bytes: b.rest() }
        }
        kind::SIP_STREAM => Record::SipStream { at, bytes: b.rest() },
        kind::SIP_TIMEOUT => Record::SipTimeout { at },
        kind::SIP_HANGUP => Record::SipHangup { at },
        kind::SIP_DRIVE => Record::SipDrive { at },
        kind::BOT_START => Record::BotStart { at, start: bot_start(&mut b)? },
        kind::BOT_TEXT => Record::BotText { at, frame: b.rest() },
        kind::BOT_BINARY => Record::BotBinary { at, data: b.rest() },
        kind::BOT_CLOSED => Record::BotClosed { at },
        kind::BOT_FAILED => Record::BotFailed { at },
        _ => return Err(Bad::Unknown),
    };
    if !b.bytes.is_empty() {
        return Err("the body is longer than its kind has".into());
    }
    Ok(record)
}
