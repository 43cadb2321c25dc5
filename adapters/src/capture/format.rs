//! The capture file's layout (docs/capture.md): constants, record kinds,
//! and the encodings shared by the encoder and the reader.

use core::fmt;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use voxproxy_core::Instant;

use crate::bot::{BotConfig, BotProtocol, L16Rate};
use crate::bridge::{BackendCodec, BridgeConfig, BridgeEvent, EndReason};
use crate::sip::{CallInfo, SipLegConfig};

/// The first eight bytes of every capture. The CR LF catches a file
/// mangled by a text-mode transfer, as PNG's signature does.
pub const MAGIC: [u8; 8] = *b"VOXCAP\r\n";

/// The layout version after the magic (u16 LE). A reader refuses others
/// than this and [`OLDEST_VERSION`]. Version 2 added the bot call's records,
/// which a version-1 reader would refuse as unknown kinds.
pub const FORMAT_VERSION: u16 = 2;

/// The oldest layout version this reader still reads: version 1 is
/// version 2 without bot calls.
pub const OLDEST_VERSION: u16 = 1;

/// Largest record body: a Twilio frame of the largest
/// `limits.max_frame_bytes` (16 MiB) plus its time.
pub const MAX_RECORD_BYTES: usize = (16 << 20) + 64;

/// Bytes before a record's body: its kind (u8) and the body's length (u32 LE).
pub(super) const RECORD_HEAD: usize = 5;

/// Record kinds (docs/capture.md, *Records*).
pub(super) mod kind {
    pub const HEADER: u8 = 0x01;
    pub const TRUNCATED: u8 = 0x02;
    pub const END: u8 = 0x03;

    pub const TWILIO_TEXT: u8 = 0x10;
    pub const TWILIO_BINARY: u8 = 0x11;
    pub const TWILIO_ACTIVITY: u8 = 0x12;
    pub const CLOSE: u8 = 0x13;
    pub const RTP: u8 = 0x14;
    pub const TIMEOUT: u8 = 0x15;
    pub const SET_BACKEND: u8 = 0x16;
    pub const SET_MEDIA: u8 = 0x17;
    pub const SIP_START: u8 = 0x18;
    pub const SIP_DATAGRAM: u8 = 0x19;
    pub const SIP_STREAM: u8 = 0x1A;
    pub const SIP_TIMEOUT: u8 = 0x1B;
    pub const SIP_HANGUP: u8 = 0x1C;
    pub const SIP_DRIVE: u8 = 0x1D;
    pub const BOT_START: u8 = 0x1E;
    pub const BOT_TEXT: u8 = 0x1F;
    pub const BOT_BINARY: u8 = 0x20;
    pub const BOT_CLOSED: u8 = 0x21;
    pub const BOT_FAILED: u8 = 0x22;

    pub const OUT_TWILIO: u8 = 0x40;
    pub const OUT_PING: u8 = 0x41;
    pub const OUT_RTP: u8 = 0x42;
    pub const OUT_EVENT: u8 = 0x43;
    pub const OUT_CLOSE: u8 = 0x44;
    pub const OUT_SIP: u8 = 0x45;
    pub const OUT_DEADLINE: u8 = 0x46;
    pub const OUT_BOT_TEXT: u8 = 0x47;
    pub const OUT_BOT_BINARY: u8 = 0x48;
    pub const OUT_BOT_CLOSE: u8 = 0x49;
}

/// FNV-1a, 64 bits (draft-eastlake-fnv): the digest of one output.
///
/// Hand-written rather than a crate's hasher because a file format needs
/// output fixed by a specification, not by a crate version (std's and
/// foldhash's hashes may change between releases), and it is five lines.
/// It detects differences; it is no defence against a forger, and need
/// not be (the capture is not a security boundary).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) const fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }

    pub(crate) const fn finish(self) -> u64 {
        self.0
    }
}

impl fmt::Write for Fnv64 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write(s.as_bytes());
        Ok(())
    }
}

/// The digest the capture keeps of an output's bytes.
#[must_use]
pub fn digest(bytes: &[u8]) -> u64 {
    let mut h = Fnv64::new();
    h.write(bytes);
    h.finish()
}

/// Which backend leg the call had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LegKind {
    /// Plain RTP.
    Rtp,
    /// SIP signalling with RTP media.
    Sip,
    /// A WebSocket bot (`ws://`, `wss://`).
    Bot,
}

impl LegKind {
    /// `rtp`, `sip` or `bot`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            LegKind::Rtp => "rtp",
            LegKind::Sip => "sip",
            LegKind::Bot => "bot",
        }
    }
}

/// Why a capture stops before the call's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Truncation {
    /// The next record would have passed `capture.max_bytes`.
    SizeLimit,
    /// The writer's queue was full: a batch was dropped, so nothing after
    /// it could be replayed and the capture stopped there.
    QueueFull,
}

impl Truncation {
    pub(super) const fn code(self) -> u8 {
        match self {
            Truncation::SizeLimit => 1,
            Truncation::QueueFull => 2,
        }
    }

    pub(super) const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Truncation::SizeLimit),
            2 => Some(Truncation::QueueFull),
            _ => None,
        }
    }
}

impl fmt::Display for Truncation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Truncation::SizeLimit => "capture.max_bytes reached",
            Truncation::QueueFull => "the capture writer's queue was full (disk too slow)",
        })
    }
}

/// What rebuilds the call's bridge: the first record of every capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureHeader {
    /// The voxproxy that wrote the file (`--version`).
    pub voxproxy_version: String,
    /// The backend leg.
    pub leg: LegKind,
    /// The virtual time the bridge was created at.
    pub created_at: Instant,
    /// The bridge's settings. The stream-token key is never captured: a
    /// replay accepts the recorded `start` without it.
    pub bridge: BridgeConfig,
}

/// The input that started a SIP leg: its configuration and the call it
/// places. Credentials are never captured, only whether there were any;
/// a replay answers challenges with placeholders, and the digests of
/// outputs leave `Authorization` values out (see [`redact`](super::redact)).
#[derive(Clone, Debug)]
pub struct SipStart {
    /// The leg's settings, `credentials` replaced by placeholders.
    pub config: SipLegConfig,
    /// The call, as the INVITE names it.
    pub info: CallInfo,
}

/// The input that made a call a bot call: what `BotCall::new` takes
/// besides the bridge (whose `start` gives the bot its call's facts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BotStart {
    /// The bot leg's settings.
    pub config: BotConfig,
    /// `ws.barge_in`.
    pub barge_in: bool,
}

/// `BotStart`'s body: protocol (0 twilio, 1 L16), L16 rate in Hz (u32 LE,
/// 0 for twilio), `max_queued_ms` (u32 LE), barge-in (u8).
pub(super) fn put_bot_start(out: &mut Vec<u8>, start: &BotStart) {
    let (protocol, hz) = match start.config.protocol {
        BotProtocol::Twilio => (0, 0),
        BotProtocol::L16(rate) => (1, rate.hz()),
    };
    out.push(protocol);
    put_u32(out, hz);
    put_u32(out, start.config.max_queued_ms);
    out.push(u8::from(start.barge_in));
}

pub(super) fn bot_start(b: &mut Body<'_>) -> Result<BotStart, &'static str> {
    let short = "the bot start is cut short";
    let (protocol, hz) = (b.u8().ok_or(short)?, b.u32().ok_or(short)?);
    let protocol = match protocol {
        0 => BotProtocol::Twilio,
        1 => BotProtocol::L16(L16Rate::from_hz(hz).ok_or("unknown L16 sample rate")?),
        _ => return Err("unknown bot protocol"),
    };
    let max_queued_ms = b.u32().ok_or(short)?;
    let barge_in = b.u8().ok_or(short)? != 0;
    Ok(BotStart { config: BotConfig { protocol, max_queued_ms }, barge_in })
}

/// One output, as the capture keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRecord<'a> {
    /// A text frame to Twilio: its length and digest.
    Twilio {
        /// Bytes.
        len: u32,
        /// [`digest`] of them.
        digest: u64,
    },
    /// A WebSocket ping to Twilio.
    Ping,
    /// A datagram to the backend: its length and digest.
    Rtp {
        /// Bytes.
        len: u32,
        /// [`digest`] of them.
        digest: u64,
    },
    /// A bridge event, whole.
    Event(BridgeEvent),
    /// The WebSocket close.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: &'a str,
    },
    /// A SIP message sent: its length and the digest of it with
    /// credentials redacted.
    Sip {
        /// Bytes.
        len: u32,
        /// [`digest`] of the redacted message and its destination.
        digest: u64,
    },
    /// The machine's next deadline changed to this.
    Deadline(Option<Instant>),
    /// A message to the bot: whether binary, its length and digest.
    Bot {
        /// A binary message (else text).
        binary: bool,
        /// Bytes.
        len: u32,
        /// [`digest`] of them.
        digest: u64,
    },
    /// The bot's WebSocket closed by the leg.
    BotClose,
}

impl OutputRecord<'_> {
    /// A short name for messages.
    #[must_use]
    pub const fn name(&self) -> &'static str {
        match self {
            OutputRecord::Twilio { .. } => "twilio frame",
            OutputRecord::Ping => "ping",
            OutputRecord::Rtp { .. } => "backend datagram",
            OutputRecord::Event(_) => "event",
            OutputRecord::Close { .. } => "close",
            OutputRecord::Sip { .. } => "SIP message",
            OutputRecord::Deadline(_) => "deadline",
            OutputRecord::Bot { .. } => "bot message",
            OutputRecord::BotClose => "bot close",
        }
    }
}

impl fmt::Display for OutputRecord<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputRecord::Twilio { len, digest } => {
                write!(f, "twilio frame of {len} bytes, digest {digest:016x}")
            }
            OutputRecord::Ping => f.write_str("ping"),
            OutputRecord::Rtp { len, digest } => {
                write!(f, "backend datagram of {len} bytes, digest {digest:016x}")
            }
            OutputRecord::Event(e) => write!(f, "event {e:?}"),
            OutputRecord::Close { code, reason } => write!(f, "close {code} \"{reason}\""),
            OutputRecord::Sip { len, digest } => {
                write!(f, "SIP message of {len} bytes, digest {digest:016x}")
            }
            OutputRecord::Deadline(Some(at)) => write!(f, "deadline at {} µs", at.as_micros()),
            OutputRecord::Deadline(None) => f.write_str("no deadline"),
            OutputRecord::Bot { binary, len, digest } => {
                let what = if *binary { "binary" } else { "text" };
                write!(f, "bot {what} message of {len} bytes, digest {digest:016x}")
            }
            OutputRecord::BotClose => f.write_str("bot close"),
        }
    }
}

/// Bridge events as (code, value) pairs.
pub(super) fn event_code(event: BridgeEvent) -> (u8, u64) {
    match event {
        BridgeEvent::StreamStarted => (1, 0),
        BridgeEvent::SpeechStarted { media_ms } => (2, media_ms),
        BridgeEvent::SpeechStopped { media_ms } => (3, media_ms),
        BridgeEvent::Dtmf { digit } => (4, u64::from(digit)),
        BridgeEvent::BackendDtmf { digit } => (5, u64::from(digit)),
        BridgeEvent::MarkPlayed { id } => (6, id),
        BridgeEvent::MarkCleared { id } => (7, id),
        BridgeEvent::BargeIn { media_ms } => (8, media_ms),
        BridgeEvent::BackendTimeout => (9, 0),
        BridgeEvent::BackendResumed { silent_ms } => (10, silent_ms),
        BridgeEvent::StreamStopped => (11, 0),
    }
}

pub(super) fn event_from_code(code: u8, value: u64) -> Option<BridgeEvent> {
    let digit = || u32::try_from(value).ok().and_then(char::from_u32);
    Some(match code {
        1 => BridgeEvent::StreamStarted,
        2 => BridgeEvent::SpeechStarted { media_ms: value },
        3 => BridgeEvent::SpeechStopped { media_ms: value },
        4 => BridgeEvent::Dtmf { digit: digit()? },
        5 => BridgeEvent::BackendDtmf { digit: digit()? },
        6 => BridgeEvent::MarkPlayed { id: value },
        7 => BridgeEvent::MarkCleared { id: value },
        8 => BridgeEvent::BargeIn { media_ms: value },
        9 => BridgeEvent::BackendTimeout,
        10 => BridgeEvent::BackendResumed { silent_ms: value },
        11 => BridgeEvent::StreamStopped,
        _ => return None,
    })
}

/// End reasons in code order (the code is the index plus one).
const END_REASONS: [EndReason; 11] = [
    EndReason::TwilioStop,
    EndReason::WebSocketClosed,
    EndReason::IdleTimeout,
    EndReason::Hangup,
    EndReason::Drain,
    EndReason::Refused,
    EndReason::StartTimeout,
    EndReason::Unauthorized,
    EndReason::DuplicateStream,
    EndReason::BackendFailed,
    EndReason::BackendHangup,
];

pub(super) fn end_reason_code(reason: EndReason) -> u8 {
    END_REASONS.iter().position(|&r| r == reason).map_or(0, |i| i as u8 + 1)
}

pub(super) fn end_reason_from_code(code: u8) -> Option<EndReason> {
    END_REASONS.get(usize::from(code).checked_sub(1)?).copied()
}

pub(super) fn codec_code(codec: BackendCodec) -> u8 {
    BackendCodec::ALL.iter().position(|&c| c == codec).map_or(0, |i| i as u8)
}

pub(super) fn codec_from_code(code: u8) -> Option<BackendCodec> {
    BackendCodec::ALL.get(usize::from(code)).copied()
}

pub(super) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// An optional address: family (0 none, 4, 6), the IP's bytes, the port (u16 LE).
pub(super) fn put_addr(out: &mut Vec<u8>, addr: Option<SocketAddr>) {
    match addr {
        None => out.push(0),
        Some(SocketAddr::V4(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            put_u16(out, a.port());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(6);
            out.extend_from_slice(&a.ip().octets());
            put_u16(out, a.port());
        }
    }
}

/// A cursor over a record's body; every read is bounds-checked.
#[derive(Debug, Clone, Copy)]
pub(super) struct Body<'a> {
    pub(super) bytes: &'a [u8],
}

impl<'a> Body<'a> {
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(super) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }

    pub(super) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }

    pub(super) fn time(&mut self) -> Option<Instant> {
        self.u64().map(Instant::from_nanos)
    }

    pub(super) fn addr(&mut self) -> Option<Option<SocketAddr>> {
        let ip: IpAddr = match self.u8()? {
            0 => return Some(None),
            4 => Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)?).ok()?).into(),
            6 => Ipv6Addr::from(<[u8; 16]>::try_from(self.take(16)?).ok()?).into(),
            _ => return None,
        };
        Some(Some(SocketAddr::new(ip, self.u16()?)))
    }

    pub(super) fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.bytes)
    }
}

/// Durations are kept as u64 nanoseconds.
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
