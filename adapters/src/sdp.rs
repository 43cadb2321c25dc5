//! SDP (RFC 4566) for a call's RTP leg: build the offer or answer voxproxy
//! sends to a voice stack, and parse the one it sends back (RFC 3264).
//!
//! Only what an audio RTP leg needs is modelled: where to send (connection
//! address and port), which payload types mean which codec, the DTMF
//! (`telephone-event`) payload type, the packetization time and the
//! direction. [`SessionDescription`] is both what the builder takes and what
//! the parser returns, so `parse(build(d)) == d` for every valid `d`.
//!
//! ## How to use it
//!
//! - Build: [`SessionDescription::new`], then `with_codec`,
//!   `with_telephone_event`, `with_ptime`, `with_direction`, then
//!   [`build`](SessionDescription::build), which validates and returns the
//!   text with CRLF line endings. Output is deterministic: payload types in
//!   the order given, one `a=rtpmap` for each (static ones included).
//! - Parse: [`SessionDescription::parse`] takes the raw bytes of the other
//!   side's description. It is liberal: LF-only or CR-only line endings,
//!   stray whitespace, unknown lines and attributes (`a=rtcp`, `a=ssrc`,
//!   `a=maxptime`, …) and extra media sections are accepted. The first
//!   audio section with a non-zero port and an `RTP/AVP` (or `RTP/AVPF`)
//!   profile is used; a media-level `c=`, `a=ptime` or direction overrides the
//!   session-level one. Payload types without `a=rtpmap` get their RFC 3551
//!   static meaning; dynamic ones without it are dropped, since nothing can
//!   be sent with them. Input is bounded ([`MAX_SDP_BYTES`],
//!   [`MAX_PAYLOAD_TYPES`], field lengths) and never panics.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use voxproxy_adapters::sdp::{Codec, Direction, Origin, SessionDescription};
//!
//! let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10));
//! let offer = SessionDescription::new(Origin::new(4242, 1, ip), ip, 40_000)
//!     .with_codec(Codec::Pcmu)
//!     .with_codec(Codec::Pcma)
//!     .with_telephone_event(101)
//!     .with_ptime(20)
//!     .build()?;
//! assert!(offer.contains("m=audio 40000 RTP/AVP 0 8 101\r\n"));
//!
//! // What Asterisk might answer.
//! let answer = b"v=0\r\no=- 1 2 IN IP4 198.51.100.7\r\ns=Asterisk\r\nc=IN IP4 198.51.100.7\r\n\
//!     t=0 0\r\nm=audio 17000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
//!     a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";
//! let remote = SessionDescription::parse(answer)?;
//! assert_eq!(remote.port, 17000);
//! assert_eq!(remote.first_codec(), Some((Codec::Pcma, 8)));
//! assert_eq!(remote.telephone_event(8000), Some(101));
//! assert_eq!(remote.direction, Direction::SendRecv);
//! # Ok::<(), voxproxy_adapters::sdp::SdpError>(())
//! ```

use core::fmt;
use core::fmt::Write as _;
use std::net::IpAddr;

/// Descriptions longer than this are refused unread.
pub const MAX_SDP_BYTES: usize = 16 * 1024;
/// At most this many formats on the audio `m=` line.
pub const MAX_PAYLOAD_TYPES: usize = 32;
/// Longest `s=` text accepted or written.
pub const MAX_SESSION_NAME_BYTES: usize = 256;
/// Longest `o=` username or address accepted or written.
pub const MAX_TOKEN_BYTES: usize = 255;
/// Longest encoding name in an `a=rtpmap` accepted or written.
pub const MAX_ENCODING_NAME_BYTES: usize = 32;
/// Longest `a=fmtp` parameter text kept; longer ones are ignored on input
/// and refused on output.
pub const MAX_FMTP_BYTES: usize = 256;
/// The usual dynamic payload type for RFC 4733 `telephone-event`.
pub const DEFAULT_TELEPHONE_EVENT_PT: u8 = 101;
/// Highest RTP payload type number.
const MAX_PAYLOAD_TYPE_NUMBER: u8 = 127;
/// Longest offending text quoted in an error.
const MAX_QUOTED_BYTES: usize = 64;

/// What went wrong building or parsing a description.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SdpError {
    /// The input is longer than [`MAX_SDP_BYTES`].
    TooLarge {
        /// Its length in bytes.
        len: usize,
    },
    /// The first line is not `v=0`: this is not SDP.
    NotSdp,
    /// A required line is absent.
    Missing {
        /// Which one (`o=`, `c=`).
        what: &'static str,
    },
    /// A line that matters could not be understood.
    Malformed {
        /// 1-based line number in the input.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// There is no `m=audio` section at all.
    NoAudio,
    /// Every audio section has port 0: the other side declined audio.
    AudioRejected,
    /// The accepted audio section uses a transport other than plain RTP
    /// (for example SRTP's `RTP/SAVP`), which voxproxy does not speak.
    UnsupportedProfile {
        /// The profile, as written (cut to a few dozen bytes).
        profile: String,
    },
    /// The audio `m=` line lists more formats than [`MAX_PAYLOAD_TYPES`].
    TooManyPayloadTypes {
        /// How many it lists.
        count: usize,
    },
    /// No listed payload type has a known encoding.
    NoUsablePayloadTypes,
    /// A [`SessionDescription`] field cannot be written as SDP.
    InvalidField {
        /// Which field.
        field: &'static str,
        /// Why, with the offending value where useful.
        reason: String,
    },
}

impl fmt::Display for SdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len } => {
                write!(f, "SDP of {len} bytes is over the {MAX_SDP_BYTES}-byte limit")
            }
            Self::NotSdp => f.write_str("not an SDP description: the first line must be `v=0`"),
            Self::Missing { what } => write!(f, "SDP has no `{what}` line for the audio stream"),
            Self::Malformed { line, reason } => write!(f, "SDP line {line}: {reason}"),
            Self::NoAudio => f.write_str("SDP has no `m=audio` section"),
            Self::AudioRejected => {
                f.write_str("the remote side rejected the audio stream (port 0 in every `m=audio` line)")
            }
            Self::UnsupportedProfile { profile } => write!(
                f,
                "the audio stream uses transport `{profile}`; only plain RTP (RTP/AVP) is supported"
            ),
            Self::TooManyPayloadTypes { count } => write!(
                f,
                "the `m=audio` line lists {count} payload types, more than the limit of {MAX_PAYLOAD_TYPES}"
            ),
            Self::NoUsablePayloadTypes => {
                f.write_str("no payload type of the audio stream has a known encoding (missing `a=rtpmap`?)")
            }
            Self::InvalidField { field, reason } => write!(f, "cannot write SDP field `{field}`: {reason}"),
        }
    }
}

impl core::error::Error for SdpError {}

/// Whether each side sends and receives (RFC 3264 section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `a=sendrecv` (the default when none is given)
    #[default]
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

impl Direction {
    /// The attribute name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn from_attribute(name: &str) -> Option<Self> {
        [Self::SendRecv, Self::SendOnly, Self::RecvOnly, Self::Inactive]
            .into_iter()
            .find(|d| name.eq_ignore_ascii_case(d.as_str()))
    }
}

/// An `a=rtpmap` encoding name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// `PCMU`: G.711 μ-law.
    Pcmu,
    /// `PCMA`: G.711 A-law.
    Pcma,
    /// `L16`: linear 16-bit big-endian PCM.
    L16,
    /// `telephone-event`: RFC 4733 DTMF.
    TelephoneEvent,
    /// Any other encoding, as written. Must be a token of at most
    /// [`MAX_ENCODING_NAME_BYTES`] bytes without `/`, and not one of the
    /// names above in any letter case.
    Other(String),
}

impl Encoding {
    const KNOWN: [(Self, &'static str); 4] = [
        (Self::Pcmu, "PCMU"),
        (Self::Pcma, "PCMA"),
        (Self::L16, "L16"),
        (Self::TelephoneEvent, "telephone-event"),
    ];

    /// The name as written in `a=rtpmap`.
    #[must_use]
    pub fn name(&self) -> &str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
            Self::L16 => "L16",
            Self::TelephoneEvent => "telephone-event",
            Self::Other(name) => name,
        }
    }

    /// Encoding names are case-insensitive (RFC 4855).
    fn from_name(name: &str) -> Self {
        Self::KNOWN
            .into_iter()
            .find(|(_, known)| name.eq_ignore_ascii_case(known))
            .map_or_else(|| Self::Other(name.to_owned()), |(encoding, _)| encoding)
    }
}

/// The codecs voxproxy can carry on its RTP leg: the call bridge's
/// [`BackendCodec`], so a negotiated answer configures the bridge directly.
pub use crate::bridge::BackendCodec as Codec;

impl Codec {
    /// The SDP encoding name.
    #[must_use]
    pub fn encoding(self) -> Encoding {
        match self {
            Self::Pcmu => Encoding::Pcmu,
            Self::Pcma => Encoding::Pcma,
            Self::L16Narrowband | Self::L16Wideband => Encoding::L16,
        }
    }
}

/// One format of the audio stream: an `m=` format with its `a=rtpmap` and
/// `a=fmtp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadType {
    /// The RTP payload type, 0–127.
    pub number: u8,
    /// What it carries.
    pub encoding: Encoding,
    /// The RTP clock rate in Hz, non-zero.
    pub clock_rate: u32,
    /// Audio channels, non-zero (written only when not 1).
    pub channels: u8,
    /// The `a=fmtp` parameters, if any: non-empty, at most
    /// [`MAX_FMTP_BYTES`], no leading or trailing whitespace, no line breaks.
    pub fmtp: Option<String>,
}

impl PayloadType {
    /// `codec` under `number`, mono, without `a=fmtp`.
    #[must_use]
    pub fn for_codec(codec: Codec, number: u8) -> Self {
        Self { number, encoding: codec.encoding(), clock_rate: codec.clock_rate(), channels: 1, fmtp: None }
    }

    /// `telephone-event/8000` under `number`, announcing events 0–16
    /// (digits, `*`, `#`, A–D and flash).
    #[must_use]
    pub fn telephone_event(number: u8) -> Self {
        Self {
            number,
            encoding: Encoding::TelephoneEvent,
            clock_rate: 8000,
            channels: 1,
            fmtp: Some("0-16".to_owned()),
        }
    }

    /// Which [`Codec`] this is, if voxproxy can carry it.
    #[must_use]
    pub fn codec(&self) -> Option<Codec> {
        if self.channels != 1 {
            return None;
        }
        match (&self.encoding, self.clock_rate) {
            (Encoding::Pcmu, 8000) => Some(Codec::Pcmu),
            (Encoding::Pcma, 8000) => Some(Codec::Pcma),
            (Encoding::L16, 8000) => Some(Codec::L16Narrowband),
            (Encoding::L16, 16_000) => Some(Codec::L16Wideband),
            _ => None,
        }
    }

    /// The RFC 3551 meaning of a static audio payload type.
    fn from_static_table(number: u8) -> Option<Self> {
        let (name, clock_rate, channels) = match number {
            0 => ("PCMU", 8000, 1),
            3 => ("GSM", 8000, 1),
            4 => ("G723", 8000, 1),
            5 => ("DVI4", 8000, 1),
            6 => ("DVI4", 16_000, 1),
            7 => ("LPC", 8000, 1),
            8 => ("PCMA", 8000, 1),
            9 => ("G722", 8000, 1),
            10 => ("L16", 44_100, 2),
            11 => ("L16", 44_100, 1),
            12 => ("QCELP", 8000, 1),
            13 => ("CN", 8000, 1),
            14 => ("MPA", 90_000, 1),
            15 => ("G728", 8000, 1),
            16 => ("DVI4", 11_025, 1),
            17 => ("DVI4", 22_050, 1),
            18 => ("G729", 8000, 1),
            _ => return None,
        };
        Some(Self { number, encoding: Encoding::from_name(name), clock_rate, channels, fmtp: None })
    }
}

/// The `o=` line: who made the description and which version it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The user name, `-` when there is none; a token (no whitespace or
    /// control characters) of at most [`MAX_TOKEN_BYTES`].
    pub username: String,
    /// Identifies the session; stays the same across re-offers.
    pub session_id: u64,
    /// Rises by one with every changed description of the session.
    pub session_version: u64,
    /// The originator's address (IP literal or host name), a token. Written
    /// as `IP6` when it contains `:`, else `IP4`.
    pub address: String,
}

impl Origin {
    /// An origin with user name `-`.
    #[must_use]
    pub fn new(session_id: u64, session_version: u64, address: IpAddr) -> Self {
        Self { username: "-".to_owned(), session_id, session_version, address: address.to_string() }
    }
}

/// An audio RTP session: what an offer says and what a parsed answer gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The `o=` line.
    pub origin: Origin,
    /// The `s=` text; non-empty, at most [`MAX_SESSION_NAME_BYTES`], no
    /// leading or trailing whitespace, no line breaks. `-` when absent.
    pub session_name: String,
    /// Where RTP for this side goes (the effective `c=` address).
    pub connection: IpAddr,
    /// The RTP port. 0 rejects the stream; a parsed description never has 0.
    pub port: u16,
    /// Formats in order of preference, numbers unique, 1 to
    /// [`MAX_PAYLOAD_TYPES`] of them.
    pub payload_types: Vec<PayloadType>,
    /// `a=ptime` in milliseconds, non-zero.
    pub ptime: Option<u16>,
    /// The effective direction.
    pub direction: Direction,
}

impl SessionDescription {
    /// A `sendrecv` description named `voxproxy` with no formats yet: add at
    /// least one before [`build`](Self::build).
    #[must_use]
    pub fn new(origin: Origin, connection: IpAddr, port: u16) -> Self {
        Self {
            origin,
            session_name: "voxproxy".to_owned(),
            connection,
            port,
            payload_types: Vec::new(),
            ptime: None,
            direction: Direction::SendRecv,
        }
    }

    /// Adds `codec` under its [default payload type](Codec::default_payload_type).
    #[must_use]
    pub fn with_codec(self, codec: Codec) -> Self {
        self.with_payload_type(PayloadType::for_codec(codec, codec.default_payload_type()))
    }

    /// Adds `telephone-event/8000` with `a=fmtp:<number> 0-16`.
    #[must_use]
    pub fn with_telephone_event(self, number: u8) -> Self {
        self.with_payload_type(PayloadType::telephone_event(number))
    }

    /// Adds any format.
    #[must_use]
    pub fn with_payload_type(mut self, payload_type: PayloadType) -> Self {
        self.payload_types.push(payload_type);
        self
    }

    /// Sets `a=ptime`.
    #[must_use]
    pub fn with_ptime(mut self, ms: u16) -> Self {
        self.ptime = Some(ms);
        self
    }

    /// Sets the direction.
    #[must_use]
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }

    /// The first format (in the other side's order of preference) that
    /// voxproxy can carry, with its payload type.
    #[must_use]
    pub fn first_codec(&self) -> Option<(Codec, u8)> {
        self.payload_types.iter().find_map(|pt| pt.codec().map(|codec| (codec, pt.number)))
    }

    /// The payload type carrying `codec`, if listed.
    #[must_use]
    pub fn payload_type_of(&self, codec: Codec) -> Option<u8> {
        self.payload_types.iter().find(|pt| pt.codec() == Some(codec)).map(|pt| pt.number)
    }

    /// The `telephone-event` payload type at `clock_rate` (RFC 4733 wants it
    /// to match the audio codec's rate), if listed.
    #[must_use]
    pub fn telephone_event(&self, clock_rate: u32) -> Option<u8> {
        self.payload_types
            .iter()
            .find(|pt| pt.encoding == Encoding::TelephoneEvent && pt.clock_rate == clock_rate)
            .map(|pt| pt.number)
    }

    /// Writes the description as SDP with CRLF line endings, after checking
    /// every field against the limits documented on it.
    pub fn build(&self) -> Result<String, SdpError> {
        self.validate()?;
        let mut out = String::with_capacity(256 + 48 * self.payload_types.len());
        // Writing to a String cannot fail.
        let _ = self.write(&mut out);
        Ok(out)
    }

    fn write(&self, out: &mut String) -> fmt::Result {
        let origin = &self.origin;
        let origin_type = if origin.address.contains(':') { "IP6" } else { "IP4" };
        let connection_type = if self.connection.is_ipv6() { "IP6" } else { "IP4" };
        write!(out, "v=0\r\n")?;
        write!(
            out,
            "o={} {} {} IN {origin_type} {}\r\n",
            origin.username, origin.session_id, origin.session_version, origin.address
        )?;
        write!(out, "s={}\r\n", self.session_name)?;
        write!(out, "c=IN {connection_type} {}\r\n", self.connection)?;
        write!(out, "t=0 0\r\n")?;
        write!(out, "m=audio {} RTP/AVP", self.port)?;
        for pt in &self.payload_types {
            write!(out, " {}", pt.number)?;
        }
        write!(out, "\r\n")?;
        for pt in &self.payload_types {
            write!(out, "a=rtpmap:{} {}/{}", pt.number, pt.encoding.name(), pt.clock_rate)?;
            if pt.channels != 1 {
                write!(out, "/{}", pt.channels)?;
            }
            write!(out, "\r\n")?;
        }
        for pt in &self.payload_types {
            if let Some(fmtp) = &pt.fmtp {
                write!(out, "a=fmtp:{} {fmtp}\r\n", pt.number)?;
            }
        }
        if let Some(ptime) = self.ptime {
            write!(out, "a=ptime:{ptime}\r\n")?;
        }
        write!(out, "a={}\r\n", self.direction.as_str())
    }

    fn validate(&self) -> Result<(), SdpError> {
        let invalid = |field, reason: String| Err(SdpError::InvalidField { field, reason });
        if !is_token(&self.origin.username, MAX_TOKEN_BYTES) {
            return invalid("origin.username", format!("`{}` is not a token", quote(&self.origin.username)));
        }
        if !is_token(&self.origin.address, MAX_TOKEN_BYTES) {
            return invalid("origin.address", format!("`{}` is not a token", quote(&self.origin.address)));
        }
        if !is_text(&self.session_name, MAX_SESSION_NAME_BYTES) {
            return invalid(
                "session_name",
                format!(
                    "`{}` must be 1 to {MAX_SESSION_NAME_BYTES} bytes, trimmed, on one line",
                    quote(&self.session_name)
                ),
            );
        }
        let count = self.payload_types.len();
        if count == 0 || count > MAX_PAYLOAD_TYPES {
            return invalid("payload_types", format!("{count} formats, need 1 to {MAX_PAYLOAD_TYPES}"));
        }
        for (index, pt) in self.payload_types.iter().enumerate() {
            if pt.number > MAX_PAYLOAD_TYPE_NUMBER {
                return invalid("payload_types.number", format!("{} is over 127", pt.number));
            }
            if self.payload_types[..index].iter().any(|earlier| earlier.number == pt.number) {
                return invalid("payload_types.number", format!("{} is listed twice", pt.number));
            }
            if let Encoding::Other(name) = &pt.encoding {
                let known = Encoding::KNOWN.iter().any(|(_, k)| name.eq_ignore_ascii_case(k));
                if known || !is_encoding_name(name) {
                    return invalid(
                        "payload_types.encoding",
                        format!("`{}` is not a valid other encoding name", quote(name)),
                    );
                }
            }
            if pt.clock_rate == 0 || pt.channels == 0 {
                return invalid(
                    "payload_types",
                    format!("payload type {}: zero clock rate or channels", pt.number),
                );
            }
            if let Some(fmtp) = &pt.fmtp
                && !is_text(fmtp, MAX_FMTP_BYTES)
            {
                return invalid(
                    "payload_types.fmtp",
                    format!("`{}` must be 1 to {MAX_FMTP_BYTES} bytes, trimmed, on one line", quote(fmtp)),
                );
            }
        }
        if self.ptime == Some(0) {
            return invalid("ptime", "must not be 0".to_owned());
        }
        Ok(())
    }

    /// Parses the other side's description (see the [module docs](self) for
    /// what is accepted).
    pub fn parse(input: &[u8]) -> Result<Self, SdpError> {
        if input.len() > MAX_SDP_BYTES {
            return Err(SdpError::TooLarge { len: input.len() });
        }
        let text = String::from_utf8_lossy(input);
        let mut parser = Parser::default();
        let mut first = true;
        'lines: for (index, physical) in text.split('\n').enumerate() {
            // A bare CR also ends a line: accept old Mac-style endings too.
            for line in physical.split('\r') {
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                if first {
                    if line != "v=0" {
                        return Err(SdpError::NotSdp);
                    }
                    first = false;
                    continue;
                }
                if parser.line(index.saturating_add(1), line)? == Flow::Done {
                    break 'lines;
                }
            }
        }
        if first {
            return Err(SdpError::NotSdp);
        }
        parser.finish()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    More,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Section {
    #[default]
    Session,
    /// The audio section being used.
    Selected,
    /// Any other media section: its lines are ignored.
    Skipped,
}

/// Session-level or media-level values of the attributes that can be at
/// either level.
#[derive(Debug, Default)]
struct Level {
    connection: Option<IpAddr>,
    ptime: Option<u16>,
    direction: Option<Direction>,
}

#[derive(Debug, Default)]
struct Parser {
    section: Section,
    origin: Option<Origin>,
    session_name: Option<String>,
    session: Level,
    media: Level,
    port: u16,
    formats: Vec<u8>,
    rtpmaps: Vec<PayloadType>,
    fmtps: Vec<(u8, String)>,
    saw_audio: bool,
    unsupported_profile: Option<String>,
}

impl Parser {
    fn line(&mut self, number: usize, line: &str) -> Result<Flow, SdpError> {
        let malformed = |reason| SdpError::Malformed { line: number, reason };
        let Some((kind, value)) = line.split_once('=') else { return Ok(Flow::More) };
        let value = value.trim_ascii();
        match (kind, self.section) {
            ("m", Section::Selected) => return Ok(Flow::Done),
            ("m", _) => self.media_line(number, value)?,
            ("o", Section::Session) if self.origin.is_none() => {
                self.origin = Some(parse_origin(value).map_err(malformed)?);
            }
            ("s", Section::Session) if self.session_name.is_none() => {
                if value.len() > MAX_SESSION_NAME_BYTES {
                    return Err(malformed("s= is too long"));
                }
                self.session_name = Some(if value.is_empty() { "-".to_owned() } else { value.to_owned() });
            }
            ("c", Section::Session) if self.session.connection.is_none() => {
                self.session.connection = Some(parse_connection(value).map_err(malformed)?);
            }
            ("c", Section::Selected) if self.media.connection.is_none() => {
                self.media.connection = Some(parse_connection(value).map_err(malformed)?);
            }
            ("a", Section::Session) => {
                // rtpmap and fmtp are media-level only; anything else here is ignored.
                let _ = Self::level_attribute(&mut self.session, value);
            }
            ("a", Section::Selected) => self.media_attribute(value),
            _ => {}
        }
        Ok(Flow::More)
    }

    /// Handles `a=ptime` and the direction attributes; false if `value` is
    /// neither.
    fn level_attribute(level: &mut Level, value: &str) -> bool {
        let (name, rest) = value.split_once(':').unwrap_or((value, ""));
        if name.eq_ignore_ascii_case("ptime") {
            if level.ptime.is_none() {
                // A zero or unreadable ptime is ignored: the codec default applies.
                level.ptime = rest.trim_ascii().parse::<u16>().ok().filter(|&ms| ms != 0);
            }
            return true;
        }
        match Direction::from_attribute(name) {
            Some(direction) => {
                level.direction.get_or_insert(direction);
                true
            }
            None => false,
        }
    }

    /// An attribute of the selected audio section. Malformed `a=rtpmap` and
    /// `a=fmtp` are ignored, as if absent.
    fn media_attribute(&mut self, value: &str) {
        if Self::level_attribute(&mut self.media, value) {
            return;
        }
        let Some((name, rest)) = value.split_once(':') else { return };
        let Some((number, params)) = rest.trim_ascii().split_once(|c: char| c.is_ascii_whitespace()) else {
            return;
        };
        let Some(number) = number.parse::<u8>().ok().filter(|&n| n <= MAX_PAYLOAD_TYPE_NUMBER) else {
            return;
        };
        let params = params.trim_ascii();
        if name.eq_ignore_ascii_case("rtpmap") {
            if self.rtpmaps.iter().any(|pt| pt.number == number) {
                return;
            }
            if let Some(pt) = parse_rtpmap(number, params) {
                self.rtpmaps.push(pt);
            }
        } else if name.eq_ignore_ascii_case("fmtp")
            && !params.is_empty()
            && params.len() <= MAX_FMTP_BYTES
            && !self.fmtps.iter().any(|(n, _)| *n == number)
        {
            self.fmtps.push((number, params.to_owned()));
        }
    }

    fn media_line(&mut self, number: usize, value: &str) -> Result<(), SdpError> {
        let malformed = |reason| SdpError::Malformed { line: number, reason };
        self.section = Section::Skipped;
        let mut fields = value.split_ascii_whitespace();
        let media = fields.next().unwrap_or("");
        if !media.eq_ignore_ascii_case("audio") {
            return Ok(());
        }
        self.saw_audio = true;
        let port = fields.next().ok_or(malformed("m= has no port"))?;
        // `port/count` asks for several ports; only the first carries RTP here.
        let port = port.split('/').next().unwrap_or("");
        let port: u16 = port.parse().map_err(|_| malformed("m= port is not a number from 0 to 65535"))?;
        let profile = fields.next().ok_or(malformed("m= has no transport profile"))?;
        if port == 0 {
            return Ok(());
        }
        if !profile.eq_ignore_ascii_case("RTP/AVP") && !profile.eq_ignore_ascii_case("RTP/AVPF") {
            self.unsupported_profile.get_or_insert_with(|| quote(profile));
            return Ok(());
        }
        let count = fields.clone().count();
        if count > MAX_PAYLOAD_TYPES {
            return Err(SdpError::TooManyPayloadTypes { count });
        }
        let mut formats = Vec::with_capacity(count);
        for format in fields {
            let payload_type: u8 = format
                .parse()
                .ok()
                .filter(|&n| n <= MAX_PAYLOAD_TYPE_NUMBER)
                .ok_or(malformed("m= format is not a payload type from 0 to 127"))?;
            if !formats.contains(&payload_type) {
                formats.push(payload_type);
            }
        }
        self.port = port;
        self.formats = formats;
        self.section = Section::Selected;
        Ok(())
    }

    fn finish(self) -> Result<SessionDescription, SdpError> {
        let origin = self.origin.ok_or(SdpError::Missing { what: "o=" })?;
        // Only a selected section sets a port, and it never sets 0.
        if self.port == 0 {
            return Err(match (self.unsupported_profile, self.saw_audio) {
                (Some(profile), _) => SdpError::UnsupportedProfile { profile },
                (None, true) => SdpError::AudioRejected,
                (None, false) => SdpError::NoAudio,
            });
        }
        let connection =
            self.media.connection.or(self.session.connection).ok_or(SdpError::Missing { what: "c=" })?;
        let mut payload_types = Vec::with_capacity(self.formats.len());
        for number in self.formats {
            let mapped = self.rtpmaps.iter().find(|pt| pt.number == number).cloned();
            let Some(mut pt) = mapped.or_else(|| PayloadType::from_static_table(number)) else { continue };
            pt.fmtp = self.fmtps.iter().find(|(n, _)| *n == number).map(|(_, params)| params.clone());
            payload_types.push(pt);
        }
        if payload_types.is_empty() {
            return Err(SdpError::NoUsablePayloadTypes);
        }
        Ok(SessionDescription {
            origin,
            session_name: self.session_name.unwrap_or_else(|| "-".to_owned()),
            connection,
            port: self.port,
            payload_types,
            ptime: self.media.ptime.or(self.session.ptime),
            direction: self.media.direction.or(self.session.direction).unwrap_or_default(),
        })
    }
}

fn parse_origin(value: &str) -> Result<Origin, &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().take(7).collect();
    let &[username, session_id, session_version, _network, _address_type, address] = fields.as_slice() else {
        return Err("o= needs six fields: username id version IN IP4|IP6 address");
    };
    if !is_token(username, MAX_TOKEN_BYTES) || !is_token(address, MAX_TOKEN_BYTES) {
        return Err("o= username or address is too long or has control characters");
    }
    Ok(Origin {
        username: username.to_owned(),
        session_id: session_id.parse().map_err(|_| "o= session id is not a number")?,
        session_version: session_version.parse().map_err(|_| "o= session version is not a number")?,
        address: address.to_owned(),
    })
}

fn parse_connection(value: &str) -> Result<IpAddr, &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().take(4).collect();
    let &[_network, _address_type, address] = fields.as_slice() else {
        return Err("c= needs three fields: IN IP4|IP6 address");
    };
    // Multicast addresses carry `/ttl[/count]`; the address is what matters.
    let address = address.split('/').next().unwrap_or("");
    address.parse().map_err(|_| "c= address is not an IP address (host names are not supported)")
}

fn parse_rtpmap(number: u8, params: &str) -> Option<PayloadType> {
    let mut parts = params.split('/');
    let name = parts.next()?;
    let clock_rate: u32 = parts.next()?.parse().ok().filter(|&rate| rate != 0)?;
    let channels: u8 = match parts.next() {
        Some(channels) => channels.parse().ok().filter(|&c| c != 0)?,
        None => 1,
    };
    if parts.next().is_some() || !is_encoding_name(name) {
        return None;
    }
    Some(PayloadType { number, encoding: Encoding::from_name(name), clock_rate, channels, fmtp: None })
}

/// A field with no whitespace or control characters.
fn is_token(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && !text.chars().any(|c| c.is_ascii_whitespace() || c.is_control())
}

fn is_encoding_name(name: &str) -> bool {
    is_token(name, MAX_ENCODING_NAME_BYTES) && !name.contains('/')
}

/// Free text on one line, as the parser hands it out: trimmed and non-empty.
fn is_text(text: &str, max: usize) -> bool {
    !text.is_empty() && text.len() <= max && text.trim_ascii() == text && !text.contains(['\r', '\n'])
}

/// Offending input for an error message, cut to a readable length.
fn quote(text: &str) -> String {
    let mut end = text.len().min(MAX_QUOTED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    /// An answer in the shape Asterisk's chan_pjsip produces (session-level
    /// c=, static types listed with rtpmap, a=maxptime, a=rtcp-less), with
    /// a second, video, section after the audio.
    const ASTERISK_ANSWER: &str = "v=0\r\n\
        o=- 1702469400 1702469402 IN IP4 203.0.113.5\r\n\
        s=Asterisk\r\n\
        c=IN IP4 203.0.113.5\r\n\
        t=0 0\r\n\
        m=audio 18346 RTP/AVP 0 101\r\n\
        a=rtpmap:0 PCMU/8000\r\n\
        a=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-16\r\n\
        a=ptime:20\r\n\
        a=maxptime:150\r\n\
        a=sendrecv\r\n\
        m=video 0 RTP/AVP 99\r\n\
        a=rtpmap:99 H264/90000\r\n";

    /// An answer in the shape FreeSWITCH produces: session-level c= then a
    /// media-level one, a=rtcp, a=ssrc, telephone-event in its own numbering,
    /// LF-only line endings, and no direction attribute.
    const FREESWITCH_ANSWER: &str = "v=0\n\
        o=FreeSWITCH 1702455040 1702455041 IN IP4 198.51.100.20\n\
        s=FreeSWITCH\n\
        c=IN IP4 198.51.100.20\n\
        t=0 0\n\
        m=audio 27624 RTP/AVP 8 96 101\n\
        c=IN IP4 198.51.100.21\n\
        a=rtpmap:8 PCMA/8000\n\
        a=rtpmap:96 L16/16000\n\
        a=rtpmap:101 telephone-event/8000\n\
        a=fmtp:101 0-15\n\
        a=ptime:20\n\
        a=rtcp:27625 IN IP4 198.51.100.20\n\
        a=ssrc:1234567 cname:abcDEF\n";

    #[test]
    fn builds_an_offer_line_by_line() {
        let ip = v4(192, 0, 2, 10);
        let offer = SessionDescription::new(Origin::new(42, 7, ip), ip, 40_000)
            .with_codec(Codec::Pcmu)
            .with_codec(Codec::Pcma)
            .with_codec(Codec::L16Narrowband)
            .with_codec(Codec::L16Wideband)
            .with_telephone_event(DEFAULT_TELEPHONE_EVENT_PT)
            .with_ptime(20)
            .with_direction(Direction::SendRecv)
            .build()
            .unwrap();
        let expected = "v=0\r\n\
            o=- 42 7 IN IP4 192.0.2.10\r\n\
            s=voxproxy\r\n\
            c=IN IP4 192.0.2.10\r\n\
            t=0 0\r\n\
            m=audio 40000 RTP/AVP 0 8 96 97 101\r\n\
            a=rtpmap:0 PCMU/8000\r\n\
            a=rtpmap:8 PCMA/8000\r\n\
            a=rtpmap:96 L16/8000\r\n\
            a=rtpmap:97 L16/16000\r\n\
            a=rtpmap:101 telephone-event/8000\r\n\
            a=fmtp:101 0-16\r\n\
            a=ptime:20\r\n\
            a=sendrecv\r\n";
        assert_eq!(offer, expected);
    }

    #[test]
    fn builds_ipv6_and_directions() {
        let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let sdp = SessionDescription::new(Origin::new(1, 1, ip), ip, 5004)
            .with_codec(Codec::Pcma)
            .with_direction(Direction::RecvOnly)
            .build()
            .unwrap();
        assert!(sdp.contains("o=- 1 1 IN IP6 2001:db8::1\r\n"), "{sdp}");
        assert!(sdp.contains("c=IN IP6 2001:db8::1\r\n"), "{sdp}");
        assert!(sdp.ends_with("a=rtpmap:8 PCMA/8000\r\na=recvonly\r\n"), "{sdp}");
        assert!(!sdp.contains("ptime"));
    }

    #[test]
    fn builder_refuses_what_it_cannot_write() {
        let ip = v4(10, 0, 0, 1);
        let base = SessionDescription::new(Origin::new(1, 1, ip), ip, 4000);
        let field = |d: &SessionDescription| match d.build() {
            Err(SdpError::InvalidField { field, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        };
        assert_eq!(field(&base), "payload_types");
        assert_eq!(
            field(&base.clone().with_codec(Codec::Pcmu).with_codec(Codec::Pcmu)),
            "payload_types.number"
        );
        let mut d = base.clone().with_codec(Codec::Pcmu);
        d.session_name = " padded".into();
        assert_eq!(field(&d), "session_name");
        let mut d = base.clone().with_codec(Codec::Pcmu);
        d.origin.username = "two words".into();
        assert_eq!(field(&d), "origin.username");
        let other = |name: &str| PayloadType {
            number: 98,
            encoding: Encoding::Other(name.into()),
            clock_rate: 8000,
            channels: 1,
            fmtp: None,
        };
        assert_eq!(field(&base.clone().with_payload_type(other("pcmu"))), "payload_types.encoding");
        assert_eq!(field(&base.clone().with_payload_type(other("a/b"))), "payload_types.encoding");
        assert!(base.clone().with_payload_type(other("G722")).build().is_ok());
        let mut pt = PayloadType::telephone_event(101);
        pt.fmtp = Some("0-16\r\na=evil".into());
        assert_eq!(field(&base.clone().with_payload_type(pt)), "payload_types.fmtp");
        assert_eq!(field(&base.clone().with_codec(Codec::Pcmu).with_ptime(0)), "ptime");
        let many = (0..=MAX_PAYLOAD_TYPES as u8)
            .fold(base, |d, n| d.with_payload_type(PayloadType::for_codec(Codec::Pcmu, n)));
        assert_eq!(field(&many), "payload_types");
    }

    #[test]
    fn parses_an_asterisk_answer() {
        let d = SessionDescription::parse(ASTERISK_ANSWER.as_bytes()).unwrap();
        assert_eq!(d.origin.username, "-");
        assert_eq!((d.origin.session_id, d.origin.session_version), (1_702_469_400, 1_702_469_402));
        assert_eq!(d.session_name, "Asterisk");
        assert_eq!(d.connection, v4(203, 0, 113, 5));
        assert_eq!(d.port, 18346);
        assert_eq!(
            d.payload_types,
            vec![PayloadType::for_codec(Codec::Pcmu, 0), PayloadType::telephone_event(101)]
        );
        assert_eq!(d.first_codec(), Some((Codec::Pcmu, 0)));
        assert_eq!(d.telephone_event(8000), Some(101));
        assert_eq!(d.ptime, Some(20));
        assert_eq!(d.direction, Direction::SendRecv);
    }

    #[test]
    fn parses_a_freeswitch_answer_with_media_level_connection() {
        let d = SessionDescription::parse(FREESWITCH_ANSWER.as_bytes()).unwrap();
        assert_eq!(d.origin.username, "FreeSWITCH");
        assert_eq!(d.connection, v4(198, 51, 100, 21), "media-level c= wins");
        assert_eq!(d.port, 27624);
        assert_eq!(d.first_codec(), Some((Codec::Pcma, 8)));
        assert_eq!(d.payload_type_of(Codec::L16Wideband), Some(96));
        assert_eq!(d.payload_type_of(Codec::Pcmu), None);
        assert_eq!(d.telephone_event(8000), Some(101));
        assert_eq!(d.payload_types[2].fmtp.as_deref(), Some("0-15"));
        assert_eq!(d.ptime, Some(20));
        assert_eq!(d.direction, Direction::SendRecv);
    }

    #[test]
    fn picks_the_first_accepted_plain_rtp_audio_section() {
        // Best-effort SRTP offers duplicate the audio line; the answerer
        // rejects one and accepts the other.
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
            a=sendonly\r\na=ptime:30\r\n\
            m=audio 0 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:xxxx\r\n\
            m=audio 30000 RTP/AVP 9 0\r\na=ptime:40\r\n\
            m=audio 30002 RTP/AVP 8\r\n";
        let d = SessionDescription::parse(sdp.as_bytes()).unwrap();
        assert_eq!(d.port, 30000);
        // Static types without rtpmap keep their RFC 3551 meaning.
        assert_eq!(d.payload_types[0].encoding, Encoding::Other("G722".into()));
        assert_eq!(d.first_codec(), Some((Codec::Pcmu, 0)));
        assert_eq!(d.ptime, Some(40), "media-level ptime wins");
        assert_eq!(d.direction, Direction::SendOnly, "session-level direction applies");
        assert_eq!(d.session_name, "-");
    }

    #[test]
    fn reports_rejected_missing_and_unsupported_audio() {
        let head = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n";
        let parse = |media: &str| SessionDescription::parse(format!("{head}{media}").as_bytes());
        assert_eq!(parse("m=audio 0 RTP/AVP 0\r\n"), Err(SdpError::AudioRejected));
        assert_eq!(parse("m=video 4000 RTP/AVP 96\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            parse("m=audio 4000 RTP/SAVP 0\r\n"),
            Err(SdpError::UnsupportedProfile { profile: "RTP/SAVP".into() })
        );
        assert_eq!(parse("m=audio 4000 RTP/AVP 96\r\n"), Err(SdpError::NoUsablePayloadTypes));
        assert_eq!(parse("m=audio 4000 RTP/AVP\r\n"), Err(SdpError::NoUsablePayloadTypes));
        assert_eq!(
            parse("m=audio 70000 RTP/AVP 0\r\n"),
            Err(SdpError::Malformed { line: 6, reason: "m= port is not a number from 0 to 65535" })
        );
        assert_eq!(
            parse("m=audio 4000 RTP/AVP 128\r\n"),
            Err(SdpError::Malformed { line: 6, reason: "m= format is not a payload type from 0 to 127" })
        );
        let formats: String = (0..=MAX_PAYLOAD_TYPES).map(|n| format!(" {n}")).collect();
        assert_eq!(
            parse(&format!("m=audio 4000 RTP/AVP{formats}\r\n")),
            Err(SdpError::TooManyPayloadTypes { count: MAX_PAYLOAD_TYPES + 1 })
        );
    }

    #[test]
    fn refuses_what_is_not_sdp_or_lacks_essentials() {
        assert_eq!(SessionDescription::parse(b""), Err(SdpError::NotSdp));
        assert_eq!(SessionDescription::parse(b"HTTP/1.1 200 OK\r\n"), Err(SdpError::NotSdp));
        assert_eq!(
            SessionDescription::parse(&vec![b' '; MAX_SDP_BYTES + 1]),
            Err(SdpError::TooLarge { len: MAX_SDP_BYTES + 1 })
        );
        let no_c = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(SessionDescription::parse(no_c.as_bytes()), Err(SdpError::Missing { what: "c=" }));
        let no_o = "v=0\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert_eq!(SessionDescription::parse(no_o.as_bytes()), Err(SdpError::Missing { what: "o=" }));
        let bad_c =
            "v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 pbx.example.com\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert!(matches!(
            SessionDescription::parse(bad_c.as_bytes()),
            Err(SdpError::Malformed { line: 4, .. })
        ));
        let bad_o = "v=0\r\no=- x 1 IN IP4 h\r\n";
        assert!(matches!(
            SessionDescription::parse(bad_o.as_bytes()),
            Err(SdpError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn tolerates_sloppy_formatting() {
        let sdp = "\n v=0 \r\r\no=root 5 6 IN IP4 pbx.example.com\rs= \n\
            c=IN IP4 224.2.1.1/127\n\
            m=audio 4000/2 rtp/avp 101 0 0\n\
            a=RTPMAP:0 pcmu/8000\n\
            a=rtpmap:101 Telephone-Event/8000/1\n\
            a=rtpmap:101 broken/8000\n\
            a=fmtp:101   0-15  \n\
            a=ptime:zero\n\
            a=inactive\n\
            garbage line\n";
        let d = SessionDescription::parse(sdp.as_bytes()).unwrap();
        assert_eq!(d.origin.address, "pbx.example.com");
        assert_eq!(d.session_name, "-");
        assert_eq!(d.connection, v4(224, 2, 1, 1));
        assert_eq!(d.port, 4000);
        assert_eq!(
            d.payload_types,
            vec![
                PayloadType {
                    number: 101,
                    encoding: Encoding::TelephoneEvent,
                    clock_rate: 8000,
                    channels: 1,
                    fmtp: Some("0-15".into())
                },
                PayloadType::for_codec(Codec::Pcmu, 0),
            ]
        );
        assert_eq!(d.ptime, None);
        assert_eq!(d.direction, Direction::Inactive);
    }

    #[test]
    fn round_trips_the_realistic_answers() {
        for answer in [ASTERISK_ANSWER, FREESWITCH_ANSWER] {
            let parsed = SessionDescription::parse(answer.as_bytes()).unwrap();
            let rebuilt = parsed.build().unwrap();
            assert!(rebuilt.lines().all(|line| !line.contains('\n')));
            assert!(rebuilt.split_terminator("\r\n").all(|line| !line.contains('\r')));
            assert_eq!(SessionDescription::parse(rebuilt.as_bytes()).unwrap(), parsed);
        }
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            SdpError::Malformed { line: 3, reason: "o= session id is not a number" }.to_string(),
            "SDP line 3: o= session id is not a number"
        );
        assert_eq!(
            SdpError::UnsupportedProfile { profile: "RTP/SAVP".into() }.to_string(),
            "the audio stream uses transport `RTP/SAVP`; only plain RTP (RTP/AVP) is supported"
        );
        assert_eq!(quote(&"é".repeat(100)).len(), 64);
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,20}"
    }

    fn ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u16; 8]>().prop_map(IpAddr::from),]
    }

    fn encoding() -> impl Strategy<Value = Encoding> {
        prop_oneof![
            Just(Encoding::Pcmu),
            Just(Encoding::Pcma),
            Just(Encoding::L16),
            Just(Encoding::TelephoneEvent),
            "[A-Za-z][A-Za-z0-9.+-]{0,15}"
                .prop_filter("not a known name", |n| !Encoding::KNOWN
                    .iter()
                    .any(|(_, k)| n.eq_ignore_ascii_case(k)))
                .prop_map(Encoding::Other),
        ]
    }

    fn payload_types() -> impl Strategy<Value = Vec<PayloadType>> {
        proptest::sample::subsequence((0..=127u8).collect::<Vec<_>>(), 1..=MAX_PAYLOAD_TYPES)
            .prop_shuffle()
            .prop_flat_map(|numbers| {
                let n = numbers.len();
                (
                    Just(numbers),
                    proptest::collection::vec(
                        (
                            encoding(),
                            1..=u32::MAX,
                            1..=u8::MAX,
                            proptest::option::of("[!-~]([ -~]{0,30}[!-~])?"),
                        ),
                        n,
                    ),
                )
            })
            .prop_map(|(numbers, specs)| {
                numbers
                    .into_iter()
                    .zip(specs)
                    .map(|(number, (encoding, clock_rate, channels, fmtp))| PayloadType {
                        number,
                        encoding,
                        clock_rate,
                        channels,
                        fmtp,
                    })
                    .collect()
            })
    }

    fn description() -> impl Strategy<Value = SessionDescription> {
        let direction = prop_oneof![
            Just(Direction::SendRecv),
            Just(Direction::SendOnly),
            Just(Direction::RecvOnly),
            Just(Direction::Inactive)
        ];
        (
            (token(), any::<u64>(), any::<u64>(), ip()),
            "[!-~]([ -~]{0,40}[!-~])?",
            ip(),
            1..=u16::MAX,
            payload_types(),
            proptest::option::of(1..=u16::MAX),
            direction,
        )
            .prop_map(
                |(
                    (username, id, version, origin_ip),
                    session_name,
                    connection,
                    port,
                    payload_types,
                    ptime,
                    direction,
                )| {
                    SessionDescription {
                        origin: Origin {
                            username,
                            session_id: id,
                            session_version: version,
                            address: origin_ip.to_string(),
                        },
                        session_name,
                        connection,
                        port,
                        payload_types,
                        ptime,
                        direction,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn build_then_parse_gives_the_same_description(d in description()) {
            let text = d.build().unwrap();
            prop_assert!(text.len() <= MAX_SDP_BYTES);
            prop_assert_eq!(&SessionDescription::parse(text.as_bytes()).unwrap(), &d);
            // LF-only endings mean the same.
            let lf = text.replace("\r\n", "\n");
            prop_assert_eq!(&SessionDescription::parse(lf.as_bytes()).unwrap(), &d);
        }

        /// Damaged descriptions either fail cleanly or parse into something
        /// that itself round-trips.
        #[test]
        fn damaged_descriptions_parse_into_buildable_ones(
            d in description(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = d.build().unwrap().into_bytes();
            for (at, byte) in edits {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            if let Ok(parsed) = SessionDescription::parse(&bytes) {
                let rebuilt = parsed.build().unwrap();
                prop_assert_eq!(SessionDescription::parse(rebuilt.as_bytes()).unwrap(), parsed);
            }
        }
    }
}
