//! RTP packets (RFC 3550 §5): a validating zero-copy view, a builder that
//! writes into caller buffers, RTP/RTCP demultiplexing (RFC 5761), clock
//! arithmetic, and per-source reception statistics (RFC 3550 §A.1, §A.3).
//!
//! ## Receiving
//!
//! [`RtpPacket::parse`] checks everything the header claims against the
//! datagram (version, CSRC list, header extension, padding) and then hands
//! out fields and slices without copying. Before parsing, a socket that
//! carries RTP and RTCP together asks [`is_probably_rtcp`] which it is.
//! Each parsed packet then goes to the stream's [`ReceptionStats`], which
//! yields the [`ReportBlock`] for the next RTCP report.
//!
//! ## Sending
//!
//! [`RtpHeader::write`] writes header, payload and padding in one go. To
//! encode a payload in place instead, [`RtpHeader::write_header`] writes
//! only the header and returns where the payload starts:
//!
//! ```
//! use voxproxy_core::rtp::{RtpHeader, RtpPacket, HEADER_LEN};
//!
//! let mut datagram = [0u8; HEADER_LEN + 160];
//! let header = RtpHeader { marker: true, ..RtpHeader::new(0, 4_711, 160_000, 0xcafe_f00d) };
//! let at = header.write_header(&mut datagram)?;
//! datagram[at..].fill(0xff); // μ-law silence, encoded straight into the datagram
//!
//! let packet = RtpPacket::parse(&datagram)?;
//! assert!(packet.marker());
//! assert_eq!(packet.sequence_number(), 4_711);
//! assert_eq!(packet.payload().len(), 160);
//! # Ok::<(), voxproxy_core::rtp::RtpError>(())
//! ```

use core::fmt;
use core::time::Duration;

use crate::interarrival::InterarrivalJitter;
use crate::rtcp::{NtpTimestamp, ReportBlock, clamp_cumulative_lost, compact_from_duration};
use crate::seq::{SeqExtender, seq_delta, timestamp_delta};
use crate::time::Instant;

/// The RTP version this module speaks.
pub const VERSION: u8 = 2;
/// Length of a header without CSRCs or extension.
pub const HEADER_LEN: usize = 12;
/// The most CSRCs a 4-bit count can carry.
pub const MAX_CSRCS: usize = 15;

/// Everything that can be wrong with an RTP packet, read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtpError {
    /// The datagram ends before the part named by `what`.
    Truncated {
        /// Which part was cut off.
        what: &'static str,
        /// Bytes the packet needs up to the end of that part.
        needed: usize,
        /// Bytes the datagram has.
        len: usize,
    },
    /// The version field is not 2.
    Version(u8),
    /// The padding bit is set but the count octet is zero or larger than
    /// what follows the header.
    Padding {
        /// The padding count in the last octet.
        count: u8,
        /// Bytes after the header that padding could occupy.
        available: usize,
    },
    /// The second octet reads as RTCP packet type 200-204 (SR, RR, SDES,
    /// BYE, APP): payload type 72-76 with the marker bit set collides with
    /// RTCP (RFC 3550 §A.1, RFC 5761 §4), so it is refused on both paths.
    RtcpPacketType(u8),
    /// A payload type above 127 was given to the builder.
    PayloadType(u8),
    /// More than 15 CSRCs were given to the builder.
    TooManyCsrcs(usize),
    /// Header-extension data given to the builder is not whole 32-bit words
    /// or longer than 65535 words.
    ExtensionLength(usize),
    /// The caller's output buffer is too small.
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
}

impl fmt::Display for RtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtpError::Truncated { what, needed, len } => {
                write!(f, "RTP packet truncated: the {what} needs {needed} bytes, the datagram has {len}")
            }
            RtpError::Version(v) => write!(f, "RTP version is {v}, expected 2"),
            RtpError::Padding { count, available } => write!(
                f,
                "RTP padding count {count} is invalid: it must be 1..={available} (bytes after the header)"
            ),
            RtpError::RtcpPacketType(octet) => write!(
                f,
                "second octet {octet} is an RTCP packet type: payload type {} with the marker bit \
                 collides with RTCP (RFC 5761)",
                octet & 0x7f
            ),
            RtpError::PayloadType(pt) => write!(f, "RTP payload type {pt} is out of range 0-127"),
            RtpError::TooManyCsrcs(n) => write!(f, "{n} CSRCs given, at most {MAX_CSRCS} fit an RTP header"),
            RtpError::ExtensionLength(len) => write!(
                f,
                "RTP header extension data is {len} bytes; it must be a multiple of 4 and at most {} bytes",
                u16::MAX as usize * 4
            ),
            RtpError::BufferTooSmall { needed, available } => {
                write!(f, "output buffer too small for RTP packet: need {needed} bytes, have {available}")
            }
        }
    }
}

impl core::error::Error for RtpError {}

/// Whether a datagram on a port shared by RTP and RTCP (RFC 5761 §4) is
/// RTCP: at least an RTCP header (4 bytes), version 2, and a second octet
/// in 192-223, the range RFC 5761 keeps free of RTP (payload types 64-95
/// with the marker set).
#[must_use]
pub fn is_probably_rtcp(datagram: &[u8]) -> bool {
    match datagram {
        [first, second, _, _, ..] => first >> 6 == VERSION && (192..=223).contains(second),
        _ => false,
    }
}

fn collides_with_rtcp(second_octet: u8) -> bool {
    (200..=204).contains(&second_octet)
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

/// A validated RTP packet, read in place. See the [module docs](self).
#[derive(Clone, Copy, Debug)]
pub struct RtpPacket<'a> {
    data: &'a [u8],
    /// End of the CSRC list (start of the extension or payload).
    csrc_end: usize,
    /// Start of the payload (end of the header, extension included).
    payload_start: usize,
    /// End of the payload (start of the padding).
    payload_end: usize,
}

impl<'a> RtpPacket<'a> {
    /// Validates `data` as one RTP packet. The payload may be empty.
    pub fn parse(data: &'a [u8]) -> Result<Self, RtpError> {
        let len = data.len();
        let Some((fixed, _)) = data.split_first_chunk::<HEADER_LEN>() else {
            return Err(RtpError::Truncated { what: "fixed header", needed: HEADER_LEN, len });
        };
        let version = fixed[0] >> 6;
        if version != VERSION {
            return Err(RtpError::Version(version));
        }
        if collides_with_rtcp(fixed[1]) {
            return Err(RtpError::RtcpPacketType(fixed[1]));
        }
        let csrc_end = HEADER_LEN + usize::from(fixed[0] & 0x0f) * 4;
        if csrc_end > len {
            return Err(RtpError::Truncated { what: "CSRC list", needed: csrc_end, len });
        }
        let mut payload_start = csrc_end;
        if fixed[0] & 0x10 != 0 {
            let Some(ext) = data.get(csrc_end..csrc_end + 4) else {
                return Err(RtpError::Truncated { what: "header extension", needed: csrc_end + 4, len });
            };
            let words = usize::from(u16::from_be_bytes([ext[2], ext[3]]));
            payload_start = csrc_end + 4 + words * 4;
            if payload_start > len {
                return Err(RtpError::Truncated { what: "header extension", needed: payload_start, len });
            }
        }
        let mut payload_end = len;
        if fixed[0] & 0x20 != 0 {
            let count = data[len - 1];
            let available = len - payload_start;
            if count == 0 || usize::from(count) > available {
                return Err(RtpError::Padding { count, available });
            }
            payload_end = len - usize::from(count);
        }
        Ok(RtpPacket { data, csrc_end, payload_start, payload_end })
    }

    /// The whole datagram.
    #[must_use]
    pub fn as_bytes(&self) -> &'a [u8] {
        self.data
    }

    /// The marker bit: first packet of a talkspurt (audio) or of an event.
    #[must_use]
    pub fn marker(&self) -> bool {
        self.data[1] & 0x80 != 0
    }

    /// The 7-bit payload type.
    #[must_use]
    pub fn payload_type(&self) -> u8 {
        self.data[1] & 0x7f
    }

    /// The 16-bit sequence number.
    #[must_use]
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.data[2], self.data[3]])
    }

    /// The 32-bit media timestamp.
    #[must_use]
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.data[4], self.data[5], self.data[6], self.data[7]])
    }

    /// The synchronization source.
    #[must_use]
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.data[8], self.data[9], self.data[10], self.data[11]])
    }

    /// The contributing sources, read in place.
    #[must_use]
    pub fn csrcs(&self) -> Csrcs<'a> {
        Csrcs { bytes: &self.data[HEADER_LEN..self.csrc_end] }
    }

    /// The header extension, if the X bit is set.
    #[must_use]
    pub fn extension(&self) -> Option<HeaderExtension<'a>> {
        if self.data[0] & 0x10 == 0 {
            return None;
        }
        let ext = &self.data[self.csrc_end..self.payload_start];
        Some(HeaderExtension { profile: u16::from_be_bytes([ext[0], ext[1]]), data: &ext[4..] })
    }

    /// Length of the header, CSRCs and extension included.
    #[must_use]
    pub fn header_len(&self) -> usize {
        self.payload_start
    }

    /// The payload, without padding.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        &self.data[self.payload_start..self.payload_end]
    }

    /// Number of padding bytes at the end (0 if the P bit is clear).
    #[must_use]
    pub fn padding_len(&self) -> u8 {
        // At most 255: it was read from one octet.
        (self.data.len() - self.payload_end) as u8
    }

    /// The header fields as an [`RtpHeader`], e.g. to forward the packet
    /// with a new SSRC or sequence number.
    #[must_use]
    pub fn header(&self) -> RtpHeader<'a> {
        let mut csrcs = CsrcList::new();
        for csrc in self.csrcs() {
            // At most 15 by construction of the 4-bit count.
            let _ = csrcs.push(csrc);
        }
        RtpHeader {
            marker: self.marker(),
            payload_type: self.payload_type(),
            sequence_number: self.sequence_number(),
            timestamp: self.timestamp(),
            ssrc: self.ssrc(),
            csrcs,
            extension: self.extension(),
            padding: self.padding_len(),
        }
    }
}

/// CSRCs read in place from a packet. An iterator of `u32`.
#[derive(Clone, Debug)]
pub struct Csrcs<'a> {
    bytes: &'a [u8],
}

impl Iterator for Csrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (csrc, rest) = self.bytes.split_first_chunk::<4>()?;
        self.bytes = rest;
        Some(u32::from_be_bytes(*csrc))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bytes.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Csrcs<'_> {}

/// An RTP header extension (RFC 3550 §5.3.1): a profile-defined 16-bit
/// identifier and whole 32-bit words of data (RFC 8285 elements live inside).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeaderExtension<'a> {
    /// The "defined by profile" field (0xBEDE for RFC 8285 one-byte elements).
    pub profile: u16,
    /// The extension data, a multiple of 4 bytes.
    pub data: &'a [u8],
}

// ---------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------

/// Up to 15 CSRCs held inline (no allocation).
#[derive(Clone, Copy, Default)]
pub struct CsrcList {
    ids: [u32; MAX_CSRCS],
    len: u8,
}

impl CsrcList {
    /// An empty list.
    #[must_use]
    pub const fn new() -> Self {
        CsrcList { ids: [0; MAX_CSRCS], len: 0 }
    }

    /// A list holding `csrcs`, if there are at most 15.
    pub fn from_slice(csrcs: &[u32]) -> Result<Self, RtpError> {
        let mut list = CsrcList::new();
        let dst = list.ids.get_mut(..csrcs.len()).ok_or(RtpError::TooManyCsrcs(csrcs.len()))?;
        dst.copy_from_slice(csrcs);
        list.len = csrcs.len() as u8;
        Ok(list)
    }

    /// Appends one CSRC; fails when 15 are already there.
    pub fn push(&mut self, csrc: u32) -> Result<(), RtpError> {
        let slot = self.ids.get_mut(usize::from(self.len)).ok_or(RtpError::TooManyCsrcs(MAX_CSRCS + 1))?;
        *slot = csrc;
        self.len += 1;
        Ok(())
    }

    /// The CSRCs.
    #[must_use]
    pub fn as_slice(&self) -> &[u32] {
        &self.ids[..usize::from(self.len)]
    }

    /// How many CSRCs.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl PartialEq for CsrcList {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for CsrcList {}

impl fmt::Debug for CsrcList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

/// The fields of an RTP header, for writing a packet into a caller buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpHeader<'a> {
    /// Marker bit: first packet of a talkspurt or event.
    pub marker: bool,
    /// Payload type, 0-127.
    pub payload_type: u8,
    /// Sequence number.
    pub sequence_number: u16,
    /// Media timestamp.
    pub timestamp: u32,
    /// Synchronization source.
    pub ssrc: u32,
    /// Contributing sources (a mixer's inputs); usually empty.
    pub csrcs: CsrcList,
    /// Header extension; usually none.
    pub extension: Option<HeaderExtension<'a>>,
    /// Padding bytes appended after the payload (0: none, P bit clear).
    pub padding: u8,
}

impl RtpHeader<'static> {
    /// A plain header: no marker, CSRCs, extension or padding.
    #[must_use]
    pub const fn new(payload_type: u8, sequence_number: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpHeader {
            marker: false,
            payload_type,
            sequence_number,
            timestamp,
            ssrc,
            csrcs: CsrcList::new(),
            extension: None,
            padding: 0,
        }
    }
}

impl RtpHeader<'_> {
    /// Length of the header this writes: 12, plus 4 per CSRC, plus the
    /// extension (4 + its data).
    #[must_use]
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.csrcs.len() * 4 + self.extension.map_or(0, |ext| 4 + ext.data.len())
    }

    fn check(&self) -> Result<(), RtpError> {
        if self.payload_type > 0x7f {
            return Err(RtpError::PayloadType(self.payload_type));
        }
        let second = (u8::from(self.marker) << 7) | self.payload_type;
        if collides_with_rtcp(second) {
            return Err(RtpError::RtcpPacketType(second));
        }
        if let Some(ext) = self.extension
            && (!ext.data.len().is_multiple_of(4) || ext.data.len() / 4 > usize::from(u16::MAX))
        {
            return Err(RtpError::ExtensionLength(ext.data.len()));
        }
        Ok(())
    }

    /// Writes only the header (with the P bit set if `padding` is non-zero)
    /// and returns its length, which is where the payload goes. If
    /// `padding` is non-zero, finish with [`RtpHeader::write_padding`].
    pub fn write_header(&self, out: &mut [u8]) -> Result<usize, RtpError> {
        self.check()?;
        let len = self.header_len();
        let available = out.len();
        let out = out.get_mut(..len).ok_or(RtpError::BufferTooSmall { needed: len, available })?;
        out[0] = (VERSION << 6)
            | (u8::from(self.padding > 0) << 5)
            | (u8::from(self.extension.is_some()) << 4)
            | self.csrcs.len() as u8;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type;
        out[2..4].copy_from_slice(&self.sequence_number.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let mut at = HEADER_LEN;
        for csrc in self.csrcs.as_slice() {
            out[at..at + 4].copy_from_slice(&csrc.to_be_bytes());
            at += 4;
        }
        if let Some(ext) = self.extension {
            out[at..at + 2].copy_from_slice(&ext.profile.to_be_bytes());
            // `check` bounded the word count to 16 bits.
            out[at + 2..at + 4].copy_from_slice(&((ext.data.len() / 4) as u16).to_be_bytes());
            out[at + 4..len].copy_from_slice(ext.data);
        }
        Ok(len)
    }

    /// Appends `self.padding` bytes (zeros, then the count) at `end`, the
    /// end of a payload written after [`RtpHeader::write_header`]; returns
    /// the packet length.
    pub fn write_padding(&self, out: &mut [u8], end: usize) -> Result<usize, RtpError> {
        if self.padding == 0 {
            return Ok(end);
        }
        let total = end.saturating_add(usize::from(self.padding));
        let available = out.len();
        let pad = out.get_mut(end..total).ok_or(RtpError::BufferTooSmall { needed: total, available })?;
        pad.fill(0);
        pad[pad.len() - 1] = self.padding;
        Ok(total)
    }

    /// Writes header, `payload` and padding into `out`; returns the packet length.
    pub fn write(&self, payload: &[u8], out: &mut [u8]) -> Result<usize, RtpError> {
        let needed = self.header_len() + payload.len() + usize::from(self.padding);
        if out.len() < needed {
            self.check()?;
            return Err(RtpError::BufferTooSmall { needed, available: out.len() });
        }
        let at = self.write_header(out)?;
        out[at..at + payload.len()].copy_from_slice(payload);
        self.write_padding(out, at + payload.len())
    }
}

// ---------------------------------------------------------------------------
// Media clock
// ---------------------------------------------------------------------------

/// Timestamp units spanned by `d` at `clock_rate` Hz (truncated, wrapping
/// like RTP timestamps do). A zero clock rate gives 0.
#[must_use]
pub fn timestamp_for(d: Duration, clock_rate: u32) -> u32 {
    (d.as_nanos().wrapping_mul(u128::from(clock_rate)) / 1_000_000_000) as u32
}

/// The duration of `units` timestamp units at `clock_rate` Hz (truncated to
/// the nanosecond). A zero clock rate gives zero.
#[must_use]
pub fn duration_for(units: u32, clock_rate: u32) -> Duration {
    if clock_rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(u64::from(units) * 1_000_000_000 / u64::from(clock_rate))
}

/// Media time from timestamp `earlier` to `later`, the short way round the
/// 32-bit circle; `None` if `later` is in fact before `earlier`.
#[must_use]
pub fn timestamp_elapsed(later: u32, earlier: u32, clock_rate: u32) -> Option<Duration> {
    u32::try_from(timestamp_delta(later, earlier)).ok().map(|units| duration_for(units, clock_rate))
}

// ---------------------------------------------------------------------------
// Reception statistics
// ---------------------------------------------------------------------------

/// A forward jump in sequence numbers at least this large is not believed
/// until the next packet confirms it (RFC 3550 §A.1's MAX_DROPOUT).
pub const MAX_DROPOUT: u16 = 3000;
/// A backward step larger than this is a jump, not a reordered packet
/// (RFC 3550 §A.1's MAX_MISORDER).
pub const MAX_MISORDER: u16 = 100;

/// How [`ReceptionStats::handle_packet`] classified a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reception {
    /// The first packet from this source (or from a new SSRC, which
    /// restarted the statistics).
    NewSource,
    /// Newer than any before; `skipped` sequence numbers were jumped over
    /// (0 when in order).
    Advanced {
        /// Sequence numbers between the previous highest and this one.
        skipped: u16,
    },
    /// Not newer than the highest seen: reordered, or a duplicate. Counted
    /// as received, which is why cumulative loss can go negative.
    Late,
    /// A jump too large to be loss or reordering. Not counted; if the next
    /// packet follows on from this one, the sender restarted.
    Discarded,
    /// The packet confirmed a sequence restart: the statistics started over
    /// from it (RFC 3550 §A.1's resync).
    Restarted,
}

/// Reception statistics of one RTP source, as RFC 3550 §A.1 and §A.3
/// compute them for reception report blocks.
///
/// Feed every packet of the stream to [`ReceptionStats::handle_packet`],
/// every sender report from that source to
/// [`ReceptionStats::handle_sender_report`], and call
/// [`ReceptionStats::report_block`] when an RTCP report is due.
///
/// Choices where the RFC leaves room:
/// - No probation: the first packet is believed. The bridge only accepts
///   datagrams from the configured backend address, so probation would only
///   delay the statistics of the first talkspurt.
/// - A new SSRC restarts everything (sequence state, counts, jitter, LSR);
///   [`ReceptionStats::ssrc_changes`] counts how often.
/// - A confirmed sequence restart also restarts the jitter estimate: the
///   timestamps of a restarted sender have no relation to the old ones.
///
/// ```
/// use voxproxy_core::rtp::{Reception, ReceptionStats};
/// use voxproxy_core::time::Instant;
///
/// let mut stats = ReceptionStats::new(8_000);
/// for (i, seq) in [10u16, 11, 13, 14].into_iter().enumerate() {
///     let now = Instant::from_millis(20 * i as u64);
///     stats.handle_packet(now, 0xabcd, seq, u32::from(seq) * 160);
/// }
/// let block = stats.report_block(Instant::from_millis(100)).unwrap();
/// assert_eq!(block.cumulative_lost, 1); // seq 12
/// assert_eq!(block.fraction_lost, 51); // 1 of 5 expected: 256 / 5, truncated
/// assert_eq!(block.extended_highest_seq, 14);
/// ```
#[derive(Clone, Debug)]
pub struct ReceptionStats {
    ssrc: Option<u32>,
    seq: SeqExtender,
    /// Extended number of the first packet since (re)start.
    base: u64,
    /// After an unbelievable jump, the sequence number that would confirm it.
    bad_seq: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    jitter: InterarrivalJitter,
    /// Middle 32 bits of the last SR's NTP time, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    ssrc_changes: u64,
    restarts: u64,
    discarded: u64,
}

impl ReceptionStats {
    /// Statistics for a stream whose RTP clock runs at `clock_rate` Hz.
    #[must_use]
    pub const fn new(clock_rate: u32) -> Self {
        ReceptionStats {
            ssrc: None,
            seq: SeqExtender::new(),
            base: 0,
            bad_seq: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter: InterarrivalJitter::new(clock_rate),
            last_sr: None,
            ssrc_changes: 0,
            restarts: 0,
            discarded: 0,
        }
    }

    fn start_over(&mut self, seq: u16) {
        self.seq.reset();
        self.base = self.seq.extend(seq);
        self.bad_seq = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.jitter.reset();
    }

    /// Records a packet from `ssrc` with sequence number `seq` and media
    /// `timestamp` that arrived at `now`.
    pub fn handle_packet(&mut self, now: Instant, ssrc: u32, seq: u16, timestamp: u32) -> Reception {
        let verdict = match (self.ssrc, self.seq.highest()) {
            (Some(known), Some(highest)) if known == ssrc => {
                let delta = seq_delta(seq, highest as u16);
                if (1..MAX_DROPOUT as i16).contains(&delta) {
                    self.seq.extend(seq);
                    Reception::Advanced { skipped: delta as u16 - 1 }
                } else if delta <= 0 && delta.unsigned_abs() <= MAX_MISORDER {
                    Reception::Late
                } else if self.bad_seq == Some(seq) {
                    self.start_over(seq);
                    self.restarts += 1;
                    Reception::Restarted
                } else {
                    self.bad_seq = Some(seq.wrapping_add(1));
                    self.discarded += 1;
                    return Reception::Discarded;
                }
            }
            (previous, _) => {
                if previous.is_some() {
                    self.ssrc_changes += 1;
                    self.last_sr = None;
                }
                self.ssrc = Some(ssrc);
                self.start_over(seq);
                Reception::NewSource
            }
        };
        self.received += 1;
        self.jitter.update(now, timestamp);
        verdict
    }

    /// Records a sender report from the tracked source that arrived at
    /// `now`, so the next report block can echo it (LSR, DLSR). Reports from
    /// other SSRCs are ignored.
    pub fn handle_sender_report(&mut self, now: Instant, ssrc: u32, ntp: NtpTimestamp) {
        if self.ssrc == Some(ssrc) {
            self.last_sr = Some((ntp.middle32(), now));
        }
    }

    /// The report block for the next RTCP report, or `None` before the
    /// first packet. Starts a new interval for `fraction_lost`.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            // lost <= expected, so the quotient is at most 256; a whole
            // interval lost reads 255, the largest the field holds.
            ((lost_interval << 8) / expected_interval).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((lsr, at)) => (lsr, compact_from_duration(now - at)),
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: clamp_cumulative_lost(self.cumulative_lost()),
            extended_highest_seq: self.extended_highest_seq()?,
            jitter: self.jitter.jitter(),
            last_sr,
            delay_since_last_sr,
        })
    }

    /// The source being tracked.
    #[must_use]
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Highest sequence number received, with the number of wraps in the
    /// high 16 bits, as the report block carries it.
    #[must_use]
    pub fn extended_highest_seq(&self) -> Option<u32> {
        // SeqExtender numbers the first packet 65536 + seq.
        self.seq.highest().map(|h| (h - (1 << 16)) as u32)
    }

    /// Packets counted as received since the (re)start, duplicates included.
    #[must_use]
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected since the (re)start: highest minus first, plus one.
    #[must_use]
    pub fn expected(&self) -> u64 {
        self.seq.highest().map_or(0, |h| h.saturating_sub(self.base) + 1)
    }

    /// Expected minus received, unclamped; negative with duplicates.
    #[must_use]
    pub fn cumulative_lost(&self) -> i64 {
        // Both are bounded by packet counts far below 2^63.
        self.expected() as i64 - self.received as i64
    }

    /// Interarrival jitter in timestamp units.
    #[must_use]
    pub fn jitter(&self) -> u32 {
        self.jitter.jitter()
    }

    /// Interarrival jitter in microseconds.
    #[must_use]
    pub fn jitter_micros(&self) -> u64 {
        self.jitter.jitter_micros()
    }

    /// How many times the SSRC changed.
    #[must_use]
    pub fn ssrc_changes(&self) -> u64 {
        self.ssrc_changes
    }

    /// How many sequence restarts were confirmed.
    #[must_use]
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// How many packets were discarded as unbelievable jumps.
    #[must_use]
    pub fn discarded(&self) -> u64 {
        self.discarded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// A PCMU packet laid out by hand from RFC 3550 §5.1.
    const PCMU_HEADER: [u8; 12] = [
        0x80, // V=2, no padding, no extension, CC=0
        0x80, // marker, PT 0
        0x12, 0x34, // seq 0x1234
        0x00, 0x01, 0xe2, 0x40, // timestamp 123456
        0xde, 0xad, 0xbe, 0xef, // SSRC
    ];

    #[test]
    fn parses_a_hand_made_pcmu_packet() {
        let mut datagram = PCMU_HEADER.to_vec();
        datagram.extend(std::iter::repeat_n(0xffu8, 160));
        let p = RtpPacket::parse(&datagram).unwrap();
        assert!(p.marker());
        assert_eq!(p.payload_type(), 0);
        assert_eq!(p.sequence_number(), 0x1234);
        assert_eq!(p.timestamp(), 123_456);
        assert_eq!(p.ssrc(), 0xdead_beef);
        assert_eq!(p.csrcs().count(), 0);
        assert_eq!(p.extension(), None);
        assert_eq!(p.header_len(), 12);
        assert_eq!(p.payload(), &[0xff; 160][..]);
        assert_eq!(p.padding_len(), 0);
    }

    #[test]
    fn parses_csrcs_extension_and_padding() {
        let datagram = [
            0xb2, 0x08, 0x00, 0x01, 0, 0, 0, 160, 0, 0, 0, 9, // P, X, CC=2; PT 8
            0, 0, 0, 1, 0, 0, 0, 2, // CSRCs 1, 2
            0xbe, 0xde, 0x00, 0x01, 0x10, 0xaa, 0x00, 0x00, // extension: 1 word
            0x55, 0x56, // payload
            0x00, 0x00, 0x03, // 3 bytes of padding
        ];
        let p = RtpPacket::parse(&datagram).unwrap();
        assert_eq!(p.payload_type(), 8);
        assert!(!p.marker());
        assert_eq!(p.csrcs().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(p.extension(), Some(HeaderExtension { profile: 0xbede, data: &[0x10, 0xaa, 0, 0] }));
        assert_eq!(p.header_len(), 28);
        assert_eq!(p.payload(), &[0x55, 0x56]);
        assert_eq!(p.padding_len(), 3);

        let mut out = [0u8; 64];
        let n = p.header().write(p.payload(), &mut out).unwrap();
        assert_eq!(&out[..n], &datagram[..]);
    }

    #[test]
    fn rejects_malformed_packets() {
        let ok = PCMU_HEADER;
        assert!(RtpPacket::parse(&ok).is_ok(), "an empty payload is fine");
        assert!(matches!(RtpPacket::parse(&ok[..11]), Err(RtpError::Truncated { needed: 12, len: 11, .. })));
        let mut v1 = ok;
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1).unwrap_err(), RtpError::Version(1));
        let mut csrc = ok;
        csrc[0] = 0x81;
        assert!(matches!(RtpPacket::parse(&csrc), Err(RtpError::Truncated { what: "CSRC list", .. })));
        let mut ext = ok.to_vec();
        ext[0] = 0x90;
        ext.extend_from_slice(&[0xbe, 0xde, 0x00, 0x02, 0, 0, 0, 0]); // claims 2 words, has 1
        assert!(matches!(
            RtpPacket::parse(&ext),
            Err(RtpError::Truncated { what: "header extension", needed: 24, len: 20 })
        ));
        assert!(matches!(RtpPacket::parse(&ext[..14]), Err(RtpError::Truncated { needed: 16, .. })));
        let mut pad = ok.to_vec();
        pad[0] = 0xa0;
        pad.extend_from_slice(&[1, 2, 0]);
        assert_eq!(RtpPacket::parse(&pad).unwrap_err(), RtpError::Padding { count: 0, available: 3 });
        *pad.last_mut().unwrap() = 4;
        assert_eq!(RtpPacket::parse(&pad).unwrap_err(), RtpError::Padding { count: 4, available: 3 });
        *pad.last_mut().unwrap() = 3;
        let p = RtpPacket::parse(&pad).unwrap();
        assert!(p.payload().is_empty());
        assert_eq!(p.padding_len(), 3);
        for octet in 200..=204u8 {
            let mut rtcp = ok;
            rtcp[1] = octet;
            assert_eq!(RtpPacket::parse(&rtcp).unwrap_err(), RtpError::RtcpPacketType(octet));
        }
        let mut pt72 = ok;
        pt72[1] = 72;
        assert!(RtpPacket::parse(&pt72).is_ok(), "PT 72 without the marker is no RTCP type");
    }

    #[test]
    fn demultiplexes_rtcp_from_rtp() {
        let sr = [0x80, 200, 0x00, 0x06];
        let rr = [0x81, 201, 0x00, 0x07];
        let psfb = [0x81, 206, 0x00, 0x02];
        assert!(is_probably_rtcp(&sr));
        assert!(is_probably_rtcp(&rr));
        assert!(is_probably_rtcp(&psfb));
        assert!(!is_probably_rtcp(&PCMU_HEADER));
        assert!(!is_probably_rtcp(&[0x80, 101, 0, 0]), "telephone-event");
        assert!(!is_probably_rtcp(&[0x80, 0x80 | 101, 0, 0]), "telephone-event with marker = 229");
        assert!(!is_probably_rtcp(&[0x40, 200, 0, 0]), "wrong version");
        assert!(!is_probably_rtcp(&[0x80, 200]), "too short for an RTCP header");
    }

    #[test]
    fn builder_rejects_invalid_headers() {
        let mut out = [0u8; 64];
        let h = RtpHeader::new(128, 0, 0, 0);
        assert_eq!(h.write(&[], &mut out), Err(RtpError::PayloadType(128)));
        let h = RtpHeader { marker: true, ..RtpHeader::new(73, 0, 0, 0) };
        assert_eq!(h.write(&[], &mut out), Err(RtpError::RtcpPacketType(201)));
        let h = RtpHeader {
            extension: Some(HeaderExtension { profile: 1, data: &[1, 2, 3] }),
            ..RtpHeader::new(0, 0, 0, 0)
        };
        assert_eq!(h.write(&[], &mut out), Err(RtpError::ExtensionLength(3)));
        let h = RtpHeader::new(0, 0, 0, 0);
        assert_eq!(h.write(&[0; 60], &mut out), Err(RtpError::BufferTooSmall { needed: 72, available: 64 }));
        assert_eq!(CsrcList::from_slice(&[0; 16]).unwrap_err(), RtpError::TooManyCsrcs(16));
        let mut list = CsrcList::from_slice(&[0; 15]).unwrap();
        assert!(list.push(1).is_err());
    }

    #[test]
    fn in_place_payload_with_padding() {
        let h = RtpHeader { padding: 4, ..RtpHeader::new(0, 1, 2, 3) };
        let mut out = [0xeeu8; 12 + 3 + 4];
        let at = h.write_header(&mut out).unwrap();
        out[at..at + 3].copy_from_slice(b"abc");
        let end = h.write_padding(&mut out, at + 3).unwrap();
        assert_eq!(end, 19);
        assert_eq!(&out[15..], &[0, 0, 0, 4]);
        let p = RtpPacket::parse(&out).unwrap();
        assert_eq!(p.payload(), b"abc");
        assert_eq!(p.padding_len(), 4);
    }

    #[test]
    fn media_clock_conversions() {
        assert_eq!(timestamp_for(Duration::from_millis(20), 8_000), 160);
        assert_eq!(timestamp_for(Duration::from_millis(20), 48_000), 960);
        assert_eq!(timestamp_for(Duration::from_micros(125), 8_000), 1);
        assert_eq!(timestamp_for(Duration::from_secs(1), 0), 0);
        // 2^32 units at 8 kHz is 536870.912 s: one more second wraps to 8000.
        assert_eq!(timestamp_for(Duration::from_millis(536_870_912 + 1_000), 8_000), 8_000);
        assert_eq!(duration_for(160, 8_000), Duration::from_millis(20));
        assert_eq!(duration_for(1, 3), Duration::from_nanos(333_333_333));
        assert_eq!(duration_for(5, 0), Duration::ZERO);
        assert_eq!(timestamp_elapsed(80, u32::MAX - 79, 8_000), Some(Duration::from_millis(20)));
        assert_eq!(timestamp_elapsed(u32::MAX - 79, 80, 8_000), None);
    }

    #[test]
    fn reception_stats_follow_rfc3550_a3() {
        let mut s = ReceptionStats::new(8_000);
        assert_eq!(s.report_block(Instant::ZERO), None);
        let ms = Instant::from_millis;
        // Seqs 65534, 65535, (0 lost), 1, 2, 2 again, then 0 arrives late.
        assert_eq!(s.handle_packet(ms(0), 7, 65_534, 0), Reception::NewSource);
        assert_eq!(s.handle_packet(ms(20), 7, 65_535, 160), Reception::Advanced { skipped: 0 });
        assert_eq!(s.handle_packet(ms(60), 7, 1, 480), Reception::Advanced { skipped: 1 });
        assert_eq!(s.handle_packet(ms(80), 7, 2, 640), Reception::Advanced { skipped: 0 });
        // Expected 65534..=65538 (5), received 4 → 1 lost; fraction 1/5 → 51.
        let b = s.report_block(ms(100)).unwrap();
        assert_eq!(b.ssrc, 7);
        assert_eq!(b.extended_highest_seq, 0x0001_0002, "one wrap, highest 2");
        assert_eq!(b.cumulative_lost, 1);
        assert_eq!(b.fraction_lost, 51);
        assert_eq!((b.last_sr, b.delay_since_last_sr), (0, 0));
        assert_eq!(b.jitter, 0, "perfectly paced");
        // Duplicate of 2 and the late 0: 2 received, nothing new expected.
        assert_eq!(s.handle_packet(ms(81), 7, 2, 640), Reception::Late);
        assert_eq!(s.handle_packet(ms(82), 7, 0, 320), Reception::Late);
        let b = s.report_block(ms(200)).unwrap();
        assert_eq!(b.cumulative_lost, -1, "duplicates push loss below zero");
        assert_eq!(b.fraction_lost, 0, "negative interval loss reads as zero");
        assert_eq!((s.received(), s.expected()), (6, 5));
    }

    #[test]
    fn reception_stats_echo_the_last_sender_report() {
        let mut s = ReceptionStats::new(8_000);
        s.handle_packet(Instant::from_millis(0), 7, 1, 0);
        let ntp = NtpTimestamp::from_bits(0x0000_1234_5678_0000);
        s.handle_sender_report(Instant::from_millis(1_000), 8, NtpTimestamp::from_bits(1 << 40));
        s.handle_sender_report(Instant::from_millis(1_000), 7, ntp);
        let b = s.report_block(Instant::from_millis(1_250)).unwrap();
        assert_eq!(b.last_sr, 0x1234_5678);
        assert_eq!(b.delay_since_last_sr, 0x4000, "0.25 s in 1/65536 s");
    }

    #[test]
    fn reception_stats_handle_jumps_restarts_and_new_sources() {
        let mut s = ReceptionStats::new(8_000);
        let t = Instant::ZERO;
        for seq in 100..110u16 {
            s.handle_packet(t, 1, seq, 0);
        }
        // One wild packet is discarded, not counted.
        assert_eq!(s.handle_packet(t, 1, 30_000, 0), Reception::Discarded);
        assert_eq!(s.handle_packet(t, 1, 110, 0), Reception::Advanced { skipped: 0 });
        assert_eq!((s.received(), s.expected(), s.discarded()), (11, 11, 1));
        // Two consecutive ones after a jump: the sender restarted.
        assert_eq!(s.handle_packet(t, 1, 5_000, 0), Reception::Discarded);
        assert_eq!(s.handle_packet(t, 1, 5_001, 0), Reception::Restarted);
        assert_eq!((s.received(), s.expected(), s.restarts()), (1, 1, 1));
        assert_eq!(s.extended_highest_seq(), Some(5_001));
        // A reordered packet from before the restart point is just late.
        assert_eq!(s.handle_packet(t, 1, 4_990, 0), Reception::Late);
        // A new SSRC starts over.
        assert_eq!(s.handle_packet(t, 2, 7, 0), Reception::NewSource);
        assert_eq!((s.ssrc(), s.received(), s.ssrc_changes()), (Some(2), 1, 1));
        // A packet older than the first of the stream: expected is still 1.
        assert_eq!(s.handle_packet(t, 2, 6, 0), Reception::Late);
        assert_eq!(s.cumulative_lost(), -1);
    }

    #[test]
    fn heavy_loss_reads_as_a_large_fraction() {
        let mut s = ReceptionStats::new(8_000);
        s.handle_packet(Instant::ZERO, 1, 0, 0);
        let _ = s.report_block(Instant::ZERO);
        s.handle_packet(Instant::ZERO, 1, 1000, 0);
        let b = s.report_block(Instant::ZERO).unwrap();
        // 1000 expected in the interval, 1 received: 999 × 256 / 1000 = 255.7 → 255.
        assert_eq!(b.fraction_lost, 255);
        assert_eq!(b.cumulative_lost, 999);
    }

    /// A header, a payload, and an optional extension (profile, data) to attach.
    type Generated = (RtpHeader<'static>, Vec<u8>, Option<(u16, Vec<u8>)>);

    fn header_strategy() -> impl Strategy<Value = Generated> {
        (
            any::<bool>(),
            (0u8..128),
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u32>(), 0..=15),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..400),
            proptest::option::of((any::<u16>(), proptest::collection::vec(any::<[u8; 4]>(), 0..8))),
        )
            .prop_filter("RTCP collision", |(m, pt, ..)| !(*m && (72..=76).contains(pt)))
            .prop_map(|(marker, pt, seq, ts, ssrc, csrcs, padding, payload, ext)| {
                let header = RtpHeader {
                    marker,
                    csrcs: CsrcList::from_slice(&csrcs).unwrap(),
                    padding,
                    ..RtpHeader::new(pt, seq, ts, ssrc)
                };
                (header, payload, ext.map(|(profile, words)| (profile, words.concat())))
            })
    }

    proptest! {
        #[test]
        fn build_then_parse_gives_every_field_back((header, payload, ext) in header_strategy()) {
            let header = RtpHeader {
                extension: ext.as_ref().map(|(profile, data)| HeaderExtension { profile: *profile, data }),
                ..header
            };
            let mut out = vec![0u8; 2048];
            let n = header.write(&payload, &mut out).unwrap();
            prop_assert_eq!(n, header.header_len() + payload.len() + usize::from(header.padding));
            let p = RtpPacket::parse(&out[..n]).unwrap();
            prop_assert_eq!(p.header(), header);
            prop_assert_eq!(p.payload(), &payload[..]);
            prop_assert_eq!(p.csrcs().collect::<Vec<_>>(), header.csrcs.as_slice());
        }

        #[test]
        fn parse_then_rebuild_gives_the_bytes_back(first in 0x80u8..0xc0, rest in proptest::collection::vec(any::<u8>(), 11..300)) {
            let mut datagram = vec![first];
            datagram.extend_from_slice(&rest);
            if let Ok(p) = RtpPacket::parse(&datagram) {
                let mut out = vec![0u8; datagram.len()];
                let n = p.header().write(p.payload(), &mut out).unwrap();
                prop_assert_eq!(n, datagram.len());
                // Padding content other than the count octet is the sender's business.
                let pad = usize::from(p.padding_len());
                let start = datagram.len() - pad;
                let end = if pad > 0 { datagram.len() - 1 } else { datagram.len() };
                out[start..end].copy_from_slice(&datagram[start..end]);
                prop_assert_eq!(out, datagram);
            }
        }

        #[test]
        fn reception_counts_add_up(seqs in proptest::collection::vec(0u16..100, 1..300)) {
            // Within a window far smaller than MAX_MISORDER/MAX_DROPOUT every
            // packet is counted, so received == number of packets and
            // expected == highest - first + 1 (first = the first packet).
            let mut s = ReceptionStats::new(8_000);
            let base = 40_000u16;
            for (i, seq) in seqs.iter().enumerate() {
                s.handle_packet(Instant::from_millis(i as u64), 9, base.wrapping_add(*seq), 0);
            }
            prop_assert_eq!(s.received(), seqs.len() as u64);
            let first = i64::from(seqs[0]);
            let highest = i64::from(*seqs.iter().max().unwrap());
            prop_assert_eq!(s.expected() as i64, highest - first + 1);
            prop_assert_eq!(s.cumulative_lost(), highest - first + 1 - seqs.len() as i64);
            prop_assert_eq!(s.extended_highest_seq(), Some(u32::from(base) + highest as u32));
        }
    }
}
