//! RTCP (RFC 3550 §6): sender and receiver reports, source description
//! (CNAME), BYE, and compound packets.
//!
//! ## Receiving
//!
//! [`packets`] walks a compound datagram and yields one [`RtcpPacket`] per
//! sub-packet, zero-copy. Each sub-packet is validated as it is reached
//! (version 2, length in 32-bit words fits, padding only on the last one,
//! report/chunk/SSRC counts fit the length); the first error ends the walk.
//! Packet types this module does not model (APP, feedback, XR) come out as
//! [`RtcpPacket::Unknown`] instead of failing the whole datagram.
//!
//! The walk accepts reduced-size RTCP (RFC 5506: a lone BYE, say). Use
//! [`validate_compound`] when the RFC 3550 §6.1 rule "a compound packet
//! starts with SR or RR" should be enforced.
//!
//! ## Sending
//!
//! The `write_*` functions build one sub-packet into a caller buffer and
//! return its length. [`CompoundBuilder`] chains them into a compound packet
//! that by construction starts with a report; add an SDES CNAME to follow
//! RFC 3550 §6.1.
//!
//! ```
//! use voxproxy_core::rtcp::{self, CompoundBuilder, NtpTimestamp, RtcpPacket, SenderInfo};
//! use core::time::Duration;
//!
//! let info = SenderInfo {
//!     ntp: NtpTimestamp::from_unix(Duration::from_secs(1_700_000_000)),
//!     rtp_timestamp: 160_000,
//!     packet_count: 1_000,
//!     octet_count: 160_000,
//! };
//! let mut buf = [0u8; 128];
//! let mut compound = CompoundBuilder::new_sender_report(&mut buf, 0x1234_5678, &info, &[])?;
//! compound.sdes_cname(0x1234_5678, b"voxproxy@example")?;
//! let len = compound.finish();
//!
//! rtcp::validate_compound(&buf[..len])?;
//! let mut cname = None;
//! for packet in rtcp::packets(&buf[..len]) {
//!     match packet? {
//!         RtcpPacket::SenderReport(sr) => assert_eq!(sr.info.packet_count, 1_000),
//!         RtcpPacket::SourceDescription(sdes) => cname = sdes.cname(0x1234_5678),
//!         _ => {}
//!     }
//! }
//! assert_eq!(cname, Some(&b"voxproxy@example"[..]));
//! # Ok::<(), rtcp::RtcpError>(())
//! ```

use core::borrow::Borrow;
use core::fmt;
use core::time::Duration;

/// Packet type of a sender report.
pub const SENDER_REPORT: u8 = 200;
/// Packet type of a receiver report.
pub const RECEIVER_REPORT: u8 = 201;
/// Packet type of a source description.
pub const SOURCE_DESCRIPTION: u8 = 202;
/// Packet type of a BYE.
pub const GOODBYE: u8 = 203;
/// Packet type of an application-defined packet (not modelled; parsed as [`RtcpPacket::Unknown`]).
pub const APPLICATION: u8 = 204;

/// Length of the common RTCP header (version, count, type, length).
pub const HEADER_LEN: usize = 4;
/// The largest report, chunk or SSRC count a 5-bit count field can carry.
pub const MAX_COUNT: usize = 31;
/// The largest RTCP packet a 16-bit length-in-words field can describe.
pub const MAX_PACKET_LEN: usize = (u16::MAX as usize + 1) * 4;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// Everything that can be wrong with an RTCP packet, read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtcpError {
    /// The datagram ends before the part named by `what`.
    Truncated {
        /// Which part was cut off.
        what: &'static str,
        /// Bytes that part needs.
        needed: usize,
        /// Bytes actually there.
        available: usize,
    },
    /// The version field is not 2.
    Version(u8),
    /// A sub-packet other than the last one has the padding bit set
    /// (RFC 3550 §6.4.1: only the last packet of a compound may be padded).
    PaddingNotLast,
    /// The padding count octet is zero or larger than the packet body.
    Padding {
        /// The padding count found in the last octet.
        count: u8,
        /// Bytes of body the padding would have to fit in.
        available: usize,
    },
    /// An SDES chunk runs to the end of the packet without its END item.
    SdesUnterminated {
        /// SSRC of the unterminated chunk.
        ssrc: u32,
    },
    /// The datagram holds no RTCP packet at all.
    Empty,
    /// A compound packet starts with this packet type instead of SR (200) or RR (201).
    FirstNotReport(u8),
    /// The caller's output buffer is too small.
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// More report blocks, chunks or SSRCs than a 5-bit count allows (31).
    TooMany {
        /// What there were too many of.
        what: &'static str,
        /// How many were given (counting stops at 32).
        count: usize,
    },
    /// A length that must be a multiple of 4 bytes is not.
    NotWordAligned {
        /// What had the wrong length.
        what: &'static str,
        /// The offending length in bytes.
        len: usize,
    },
    /// A field is longer than its length field can express.
    TooLong {
        /// What was too long.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The largest length allowed.
        max: usize,
    },
    /// An SDES item of type 0 was given to a builder; type 0 is the END marker.
    SdesEndItem,
}

impl fmt::Display for RtcpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RtcpError::Truncated { what, needed, available } => {
                write!(f, "RTCP {what} needs {needed} bytes but only {available} are there")
            }
            RtcpError::Version(v) => write!(f, "RTCP version is {v}, expected 2"),
            RtcpError::PaddingNotLast => {
                f.write_str("RTCP padding bit set on a packet that is not the last of the compound")
            }
            RtcpError::Padding { count, available } => write!(
                f,
                "RTCP padding count {count} is invalid: it must be 1..={available} (the packet body length)"
            ),
            RtcpError::SdesUnterminated { ssrc } => {
                write!(f, "RTCP SDES chunk for SSRC {ssrc:#010x} has no END item")
            }
            RtcpError::Empty => f.write_str("RTCP datagram is empty"),
            RtcpError::FirstNotReport(pt) => write!(
                f,
                "RTCP compound packet starts with packet type {pt}; it must start with SR (200) or RR (201)"
            ),
            RtcpError::BufferTooSmall { needed, available } => {
                write!(f, "output buffer too small for RTCP packet: need {needed} bytes, have {available}")
            }
            RtcpError::TooMany { what, count } => {
                write!(f, "too many RTCP {what}: {count}, at most {MAX_COUNT} fit the count field")
            }
            RtcpError::NotWordAligned { what, len } => {
                write!(f, "RTCP {what} is {len} bytes, not a multiple of 4")
            }
            RtcpError::TooLong { what, len, max } => {
                write!(f, "RTCP {what} is {len} bytes, at most {max} allowed")
            }
            RtcpError::SdesEndItem => {
                f.write_str("SDES item type 0 is the END marker and cannot be written as an item")
            }
        }
    }
}

impl core::error::Error for RtcpError {}

// ---------------------------------------------------------------------------
// NTP time
// ---------------------------------------------------------------------------

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, binary
/// fraction of a second in the low 32 bits (RFC 3550 §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTimestamp(u64);

impl NtpTimestamp {
    /// The timestamp with these raw 64 bits.
    #[must_use]
    pub const fn from_bits(bits: u64) -> Self {
        NtpTimestamp(bits)
    }

    /// The raw 64 bits.
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// The timestamp of a wall-clock time given as time since the Unix
    /// epoch. Core reads no clock: the caller supplies it. The seconds wrap
    /// at the NTP era boundary (2036), as they do on the wire.
    #[must_use]
    pub fn from_unix(since_unix_epoch: Duration) -> Self {
        let seconds = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS) as u32;
        let fraction = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
        NtpTimestamp((u64::from(seconds) << 32) | fraction)
    }

    /// Whole seconds since 1900 (modulo the era).
    #[must_use]
    pub const fn seconds(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Fraction of a second in units of 2^-32 s.
    #[must_use]
    pub const fn fraction(self) -> u32 {
        self.0 as u32
    }

    /// The middle 32 bits (16.16 fixed point seconds): what a receiver
    /// echoes as LSR, and the unit of DLSR and round-trip arithmetic.
    #[must_use]
    pub const fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// A duration in the 16.16 fixed-point seconds of LSR and DLSR (units of
/// 1/65536 s), saturating at `u32::MAX` (about 18 hours).
#[must_use]
pub fn compact_from_duration(d: Duration) -> u32 {
    let units = d.as_nanos().saturating_mul(65_536) / 1_000_000_000;
    u32::try_from(units).unwrap_or(u32::MAX)
}

/// A 16.16 fixed-point duration (DLSR, round-trip time) as a [`Duration`].
#[must_use]
pub fn compact_to_duration(compact: u32) -> Duration {
    // 2^32 × 10^9 < 2^62: no overflow.
    Duration::from_nanos((u64::from(compact) * 1_000_000_000) >> 16)
}

/// Round-trip time from a report block that echoes one of our sender
/// reports (RFC 3550 §6.4.1): arrival time minus LSR minus DLSR.
///
/// `None` when the block echoes no sender report (LSR is zero) or the
/// result would be negative (clock trouble or a forged block).
#[must_use]
pub fn round_trip_time(arrival: NtpTimestamp, last_sr: u32, delay_since_last_sr: u32) -> Option<Duration> {
    if last_sr == 0 {
        return None;
    }
    let since_sr = arrival.middle32().wrapping_sub(last_sr);
    // A wrapped difference above 2^31 means the SR is "from the future".
    if since_sr > i32::MAX as u32 {
        return None;
    }
    since_sr.checked_sub(delay_since_last_sr).map(compact_to_duration)
}

// ---------------------------------------------------------------------------
// Report blocks and sender info
// ---------------------------------------------------------------------------

/// Clamps a cumulative loss count to the signed 24-bit range of the report
/// block field (RFC 3550 §A.3): `-0x800000..=0x7FFFFF`.
#[must_use]
pub const fn clamp_cumulative_lost(lost: i64) -> i32 {
    if lost > 0x7F_FFFF {
        0x7F_FFFF
    } else if lost < -0x80_0000 {
        -0x80_0000
    } else {
        lost as i32
    }
}

/// One reception report block (RFC 3550 §6.4.1), 24 bytes on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Packets lost since the previous report, as a fraction of 256.
    pub fraction_lost: u8,
    /// Packets lost since reception began; negative with duplicates. A
    /// signed 24-bit field: out-of-range values are clamped when written.
    pub cumulative_lost: i32,
    /// Highest sequence number received, with the wrap count in the high 16 bits.
    pub extended_highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP timestamp of the last sender report received (0: none).
    pub last_sr: u32,
    /// Time since that sender report arrived, in 1/65536 s.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Size of a report block on the wire.
    pub const LEN: usize = 24;

    /// Reads a report block from the first 24 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, RtcpError> {
        let b: &[u8; Self::LEN] =
            bytes.get(..Self::LEN).and_then(|b| b.try_into().ok()).ok_or(RtcpError::Truncated {
                what: "report block",
                needed: Self::LEN,
                available: bytes.len(),
            })?;
        Ok(Self::from_array(b))
    }

    fn from_array(b: &[u8; Self::LEN]) -> Self {
        // Sign-extend the 24-bit field through the top of an i32.
        let cumulative_lost = i32::from_be_bytes([b[5], b[6], b[7], 0]) >> 8;
        ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: be32(b, 8),
            jitter: be32(b, 12),
            last_sr: be32(b, 16),
            delay_since_last_sr: be32(b, 20),
        }
    }

    /// Writes the block into the first 24 bytes of `out`; returns 24.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtcpError> {
        let available = out.len();
        let b = out.get_mut(..Self::LEN).ok_or(RtcpError::BufferTooSmall { needed: Self::LEN, available })?;
        b[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        b[4] = self.fraction_lost;
        let lost = clamp_cumulative_lost(i64::from(self.cumulative_lost)).to_be_bytes();
        b[5..8].copy_from_slice(&lost[1..4]);
        b[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        b[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
        Ok(Self::LEN)
    }
}

/// The sender-info section of a sender report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SenderInfo {
    /// Wall-clock time at which this report was sent.
    pub ntp: NtpTimestamp,
    /// The same instant on the RTP media clock.
    pub rtp_timestamp: u32,
    /// RTP packets sent since the stream began (wraps).
    pub packet_count: u32,
    /// RTP payload octets sent since the stream began (wraps).
    pub octet_count: u32,
}

impl SenderInfo {
    /// Size of the sender info on the wire.
    pub const LEN: usize = 20;
}

/// The report blocks of an SR or RR, read in place. An iterator of
/// [`ReportBlock`]; `Clone` it to walk the blocks again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportBlocks<'a> {
    /// Always a whole number of 24-byte blocks.
    bytes: &'a [u8],
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let (block, rest) = self.bytes.split_first_chunk::<{ ReportBlock::LEN }>()?;
        self.bytes = rest;
        Some(ReportBlock::from_array(block))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bytes.len() / ReportBlock::LEN;
        (n, Some(n))
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

// ---------------------------------------------------------------------------
// Parsed packets
// ---------------------------------------------------------------------------

/// A sender report (packet type 200), read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SenderReport<'a> {
    /// The sender.
    pub ssrc: u32,
    /// What and when it sent.
    pub info: SenderInfo,
    /// Reception reports on the sources it hears.
    pub reports: ReportBlocks<'a>,
    /// Profile-specific extension after the report blocks (usually empty).
    pub profile_extension: &'a [u8],
}

/// A receiver report (packet type 201), read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    /// The reporter.
    pub ssrc: u32,
    /// Reception reports on the sources it hears.
    pub reports: ReportBlocks<'a>,
    /// Profile-specific extension after the report blocks (usually empty).
    pub profile_extension: &'a [u8],
}

/// One SDES item: a type and a value of at most 255 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SdesItem<'a> {
    /// Item type (1 = CNAME, …); 0 is the END marker and never an item.
    pub kind: u8,
    /// Item text, normally UTF-8 (not checked: it is the peer's business).
    pub value: &'a [u8],
}

impl<'a> SdesItem<'a> {
    /// Canonical end-point identifier, the one item RFC 3550 requires.
    pub const CNAME: u8 = 1;
    /// User name.
    pub const NAME: u8 = 2;
    /// E-mail address.
    pub const EMAIL: u8 = 3;
    /// Phone number.
    pub const PHONE: u8 = 4;
    /// Geographic location.
    pub const LOC: u8 = 5;
    /// Application or tool name.
    pub const TOOL: u8 = 6;
    /// Notice or status.
    pub const NOTE: u8 = 7;
    /// Private extension.
    pub const PRIV: u8 = 8;

    /// A CNAME item.
    #[must_use]
    pub const fn cname(value: &'a [u8]) -> Self {
        SdesItem { kind: Self::CNAME, value }
    }
}

/// The items of one SDES chunk, read in place. An iterator of [`SdesItem`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdesItems<'a> {
    /// Exactly the item bytes, without the END octet and chunk padding.
    bytes: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = SdesItem<'a>;

    fn next(&mut self) -> Option<SdesItem<'a>> {
        let (&kind, rest) = self.bytes.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        self.bytes = rest.get(usize::from(len)..)?;
        Some(SdesItem { kind, value })
    }
}

/// One SDES chunk: a source and its items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: u32,
    /// Its items.
    pub items: SdesItems<'a>,
}

/// Reads the chunk that starts at `pos` of an SDES body; returns the chunk
/// and the position of the next one (on a 32-bit boundary, or the end).
fn sdes_chunk_at(body: &[u8], pos: usize) -> Result<(SdesChunk<'_>, usize), RtcpError> {
    let rest = body.get(pos..).unwrap_or_default();
    let Some((ssrc, _)) = rest.split_first_chunk::<4>() else {
        return Err(RtcpError::Truncated { what: "SDES chunk", needed: 4, available: rest.len() });
    };
    let ssrc = u32::from_be_bytes(*ssrc);
    let items_start = pos + 4;
    let mut at = items_start;
    loop {
        match body.get(at) {
            None => return Err(RtcpError::SdesUnterminated { ssrc }),
            Some(0) => break,
            Some(_) => {
                let item_start = at;
                let len = usize::from(*body.get(at + 1).ok_or(RtcpError::SdesUnterminated { ssrc })?);
                at = item_start + 2 + len;
                if at > body.len() {
                    return Err(RtcpError::Truncated {
                        what: "SDES item",
                        needed: 2 + len,
                        available: body.len() - item_start,
                    });
                }
            }
        }
    }
    let items = SdesItems { bytes: &body[items_start..at] };
    // Past the END octet, null padding runs to the next 32-bit boundary; the
    // body starts on one. A sender that stopped short at the end of the
    // packet is tolerated.
    let next = ((at + 1 + 3) & !3).min(body.len());
    Ok((SdesChunk { ssrc, items }, next))
}

/// A source description (packet type 202), read in place.
#[derive(Clone, Copy, Debug)]
pub struct SourceDescription<'a> {
    count: u8,
    body: &'a [u8],
}

impl<'a> SourceDescription<'a> {
    fn parse(count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let mut pos = 0;
        for _ in 0..count {
            pos = sdes_chunk_at(body, pos)?.1;
        }
        Ok(SourceDescription { count, body })
    }

    /// The chunks, one per source.
    #[must_use]
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks { remaining: self.count, pos: 0, body: self.body }
    }

    /// The CNAME of `ssrc`, if this packet carries one.
    #[must_use]
    pub fn cname(&self, ssrc: u32) -> Option<&'a [u8]> {
        self.chunks()
            .filter(|chunk| chunk.ssrc == ssrc)
            .find_map(|mut chunk| chunk.items.find(|item| item.kind == SdesItem::CNAME))
            .map(|item| item.value)
    }
}

/// Equal when the chunks are equal; padding bytes do not count.
impl PartialEq for SourceDescription<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.chunks().eq(other.chunks())
    }
}

impl Eq for SourceDescription<'_> {}

/// The chunks of an SDES packet. An iterator of [`SdesChunk`].
#[derive(Clone, Debug)]
pub struct SdesChunks<'a> {
    remaining: u8,
    pos: usize,
    body: &'a [u8],
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;

    fn next(&mut self) -> Option<SdesChunk<'a>> {
        self.remaining = self.remaining.checked_sub(1)?;
        // Validated at parse time, so an error here cannot happen; ending the
        // walk is the panic-free answer if it somehow did.
        let (chunk, next) = sdes_chunk_at(self.body, self.pos).ok()?;
        self.pos = next;
        Some(chunk)
    }
}

/// A BYE (packet type 203), read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bye<'a> {
    /// Whole 4-byte SSRCs.
    ssrcs: &'a [u8],
    reason: Option<&'a [u8]>,
}

impl<'a> Bye<'a> {
    fn parse(count: u8, body: &'a [u8]) -> Result<Self, RtcpError> {
        let ssrc_len = usize::from(count) * 4;
        let Some((ssrcs, rest)) = body.split_at_checked(ssrc_len) else {
            return Err(RtcpError::Truncated {
                what: "BYE SSRC list",
                needed: ssrc_len,
                available: body.len(),
            });
        };
        let reason = match rest.split_first() {
            None => None,
            Some((&len, text)) => Some(text.get(..usize::from(len)).ok_or(RtcpError::Truncated {
                what: "BYE reason",
                needed: usize::from(len),
                available: text.len(),
            })?),
        };
        Ok(Bye { ssrcs, reason })
    }

    /// The sources that are leaving.
    #[must_use]
    pub fn ssrcs(&self) -> Ssrcs<'a> {
        Ssrcs { bytes: self.ssrcs }
    }

    /// Why they are leaving, if said.
    #[must_use]
    pub fn reason(&self) -> Option<&'a [u8]> {
        self.reason
    }
}

/// A list of SSRCs read in place. An iterator of `u32`.
#[derive(Clone, Debug)]
pub struct Ssrcs<'a> {
    bytes: &'a [u8],
}

impl Iterator for Ssrcs<'_> {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let (ssrc, rest) = self.bytes.split_first_chunk::<4>()?;
        self.bytes = rest;
        Some(u32::from_be_bytes(*ssrc))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bytes.len() / 4;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Ssrcs<'_> {}

/// One sub-packet of a compound RTCP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// Packet type 200.
    SenderReport(SenderReport<'a>),
    /// Packet type 201.
    ReceiverReport(ReceiverReport<'a>),
    /// Packet type 202.
    SourceDescription(SourceDescription<'a>),
    /// Packet type 203.
    Bye(Bye<'a>),
    /// Any other packet type (APP, RTPFB, PSFB, XR, …), structurally valid.
    Unknown {
        /// The packet type octet.
        packet_type: u8,
        /// The 5-bit count / subtype field.
        count: u8,
        /// Everything after the 4-byte header, without padding.
        body: &'a [u8],
    },
}

impl RtcpPacket<'_> {
    /// The packet type octet.
    #[must_use]
    pub fn packet_type(&self) -> u8 {
        match self {
            RtcpPacket::SenderReport(_) => SENDER_REPORT,
            RtcpPacket::ReceiverReport(_) => RECEIVER_REPORT,
            RtcpPacket::SourceDescription(_) => SOURCE_DESCRIPTION,
            RtcpPacket::Bye(_) => GOODBYE,
            RtcpPacket::Unknown { packet_type, .. } => *packet_type,
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = b.get(at..at + 4) {
        word.copy_from_slice(src);
    }
    u32::from_be_bytes(word)
}

fn parse_reports<'a>(
    what: &'static str,
    count: u8,
    fixed: usize,
    body: &'a [u8],
) -> Result<(ReportBlocks<'a>, &'a [u8]), RtcpError> {
    let needed = fixed + usize::from(count) * ReportBlock::LEN;
    if body.len() < needed {
        return Err(RtcpError::Truncated { what, needed, available: body.len() });
    }
    Ok((ReportBlocks { bytes: &body[fixed..needed] }, &body[needed..]))
}

fn parse_body(packet_type: u8, count: u8, body: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    Ok(match packet_type {
        SENDER_REPORT => {
            let fixed = 4 + SenderInfo::LEN;
            let (reports, profile_extension) = parse_reports("sender report", count, fixed, body)?;
            let info = SenderInfo {
                ntp: NtpTimestamp((u64::from(be32(body, 4)) << 32) | u64::from(be32(body, 8))),
                rtp_timestamp: be32(body, 12),
                packet_count: be32(body, 16),
                octet_count: be32(body, 20),
            };
            RtcpPacket::SenderReport(SenderReport { ssrc: be32(body, 0), info, reports, profile_extension })
        }
        RECEIVER_REPORT => {
            let (reports, profile_extension) = parse_reports("receiver report", count, 4, body)?;
            RtcpPacket::ReceiverReport(ReceiverReport { ssrc: be32(body, 0), reports, profile_extension })
        }
        SOURCE_DESCRIPTION => RtcpPacket::SourceDescription(SourceDescription::parse(count, body)?),
        GOODBYE => RtcpPacket::Bye(Bye::parse(count, body)?),
        packet_type => RtcpPacket::Unknown { packet_type, count, body },
    })
}

/// The sub-packets of a compound RTCP datagram; see the [module docs](self).
#[must_use]
pub fn packets(compound: &[u8]) -> Packets<'_> {
    Packets { rest: compound }
}

/// Iterator over the sub-packets of a compound RTCP datagram, made by
/// [`packets`]. Yields `Err` once at the first malformed sub-packet, then ends.
#[derive(Clone, Debug)]
pub struct Packets<'a> {
    rest: &'a [u8],
}

impl<'a> Packets<'a> {
    fn parse_next(&mut self) -> Result<RtcpPacket<'a>, RtcpError> {
        let rest = self.rest;
        let Some((header, _)) = rest.split_first_chunk::<HEADER_LEN>() else {
            return Err(RtcpError::Truncated { what: "header", needed: HEADER_LEN, available: rest.len() });
        };
        let version = header[0] >> 6;
        if version != 2 {
            return Err(RtcpError::Version(version));
        }
        let padded = header[0] & 0x20 != 0;
        let count = header[0] & 0x1f;
        let packet_type = header[1];
        let len = (usize::from(u16::from_be_bytes([header[2], header[3]])) + 1) * 4;
        let Some((packet, after)) = rest.split_at_checked(len) else {
            return Err(RtcpError::Truncated { what: "packet", needed: len, available: rest.len() });
        };
        let mut body = &packet[HEADER_LEN..];
        if padded {
            if !after.is_empty() {
                return Err(RtcpError::PaddingNotLast);
            }
            let pad = packet[len - 1];
            let keep = body.len().checked_sub(usize::from(pad)).filter(|_| pad != 0);
            let Some(keep) = keep else {
                return Err(RtcpError::Padding { count: pad, available: body.len() });
            };
            body = &body[..keep];
        }
        let parsed = parse_body(packet_type, count, body)?;
        self.rest = after;
        Ok(parsed)
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let parsed = self.parse_next();
        if parsed.is_err() {
            self.rest = &[];
        }
        Some(parsed)
    }
}

/// Checks a datagram against RFC 3550 §6.1/§A.2: at least one packet, the
/// first one an SR or RR, every sub-packet well formed, padding only on the
/// last.
pub fn validate_compound(compound: &[u8]) -> Result<(), RtcpError> {
    let mut first = true;
    for packet in packets(compound) {
        let packet = packet?;
        if first && !matches!(packet, RtcpPacket::SenderReport(_) | RtcpPacket::ReceiverReport(_)) {
            return Err(RtcpError::FirstNotReport(packet.packet_type()));
        }
        first = false;
    }
    if first { Err(RtcpError::Empty) } else { Ok(()) }
}

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// Bounds-checked cursor over a caller buffer.
struct Writer<'b> {
    out: &'b mut [u8],
    len: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), RtcpError> {
        let end = self.len + bytes.len();
        let available = self.out.len();
        let dst =
            self.out.get_mut(self.len..end).ok_or(RtcpError::BufferTooSmall { needed: end, available })?;
        dst.copy_from_slice(bytes);
        self.len = end;
        Ok(())
    }

    fn zeros(&mut self, n: usize) -> Result<(), RtcpError> {
        let end = self.len + n;
        let available = self.out.len();
        let dst =
            self.out.get_mut(self.len..end).ok_or(RtcpError::BufferTooSmall { needed: end, available })?;
        dst.fill(0);
        self.len = end;
        Ok(())
    }

    /// Fills in the header reserved at offset 0 once the packet is complete.
    fn finish_header(self, count: usize, packet_type: u8) -> Result<usize, RtcpError> {
        if !self.len.is_multiple_of(4) {
            return Err(RtcpError::NotWordAligned { what: "packet", len: self.len });
        }
        if self.len > MAX_PACKET_LEN {
            return Err(RtcpError::TooLong { what: "packet", len: self.len, max: MAX_PACKET_LEN });
        }
        let words = (self.len / 4 - 1) as u16;
        self.out[0] = 0x80 | (count as u8 & 0x1f);
        self.out[1] = packet_type;
        self.out[2..4].copy_from_slice(&words.to_be_bytes());
        Ok(self.len)
    }
}

fn start(out: &mut [u8]) -> Result<Writer<'_>, RtcpError> {
    let mut w = Writer { out, len: 0 };
    w.zeros(HEADER_LEN)?;
    Ok(w)
}

fn write_reports<B: Borrow<ReportBlock>>(
    w: &mut Writer<'_>,
    reports: impl IntoIterator<Item = B>,
) -> Result<usize, RtcpError> {
    let mut count = 0;
    for block in reports {
        if count == MAX_COUNT {
            return Err(RtcpError::TooMany { what: "report blocks", count: count + 1 });
        }
        let mut bytes = [0u8; ReportBlock::LEN];
        block.borrow().write(&mut bytes)?;
        w.put(&bytes)?;
        count += 1;
    }
    Ok(count)
}

fn check_extension(profile_extension: &[u8]) -> Result<(), RtcpError> {
    if !profile_extension.len().is_multiple_of(4) {
        return Err(RtcpError::NotWordAligned { what: "profile extension", len: profile_extension.len() });
    }
    Ok(())
}

/// Writes a sender report into `out`; returns its length. `reports` takes
/// `&[ReportBlock]`, an array, or a parsed [`ReportBlocks`]; at most 31.
/// `profile_extension` must be whole 32-bit words (usually empty).
pub fn write_sender_report<B: Borrow<ReportBlock>>(
    out: &mut [u8],
    ssrc: u32,
    info: &SenderInfo,
    reports: impl IntoIterator<Item = B>,
    profile_extension: &[u8],
) -> Result<usize, RtcpError> {
    check_extension(profile_extension)?;
    let mut w = start(out)?;
    w.put(&ssrc.to_be_bytes())?;
    w.put(&info.ntp.to_bits().to_be_bytes())?;
    w.put(&info.rtp_timestamp.to_be_bytes())?;
    w.put(&info.packet_count.to_be_bytes())?;
    w.put(&info.octet_count.to_be_bytes())?;
    let count = write_reports(&mut w, reports)?;
    w.put(profile_extension)?;
    w.finish_header(count, SENDER_REPORT)
}

/// Writes a receiver report into `out`; returns its length. An RR with no
/// blocks is how a source that neither sends nor hears anything still
/// starts a compound packet.
pub fn write_receiver_report<B: Borrow<ReportBlock>>(
    out: &mut [u8],
    ssrc: u32,
    reports: impl IntoIterator<Item = B>,
    profile_extension: &[u8],
) -> Result<usize, RtcpError> {
    check_extension(profile_extension)?;
    let mut w = start(out)?;
    w.put(&ssrc.to_be_bytes())?;
    let count = write_reports(&mut w, reports)?;
    w.put(profile_extension)?;
    w.finish_header(count, RECEIVER_REPORT)
}

/// Writes a source description with any chunks and items into `out`;
/// returns its length. Each chunk is `(ssrc, items)`; a parsed
/// [`SdesChunk`] converts with `(chunk.ssrc, chunk.items)`.
pub fn write_sdes<'i, C, I>(out: &mut [u8], chunks: C) -> Result<usize, RtcpError>
where
    C: IntoIterator<Item = (u32, I)>,
    I: IntoIterator<Item = SdesItem<'i>>,
{
    let mut w = start(out)?;
    let mut count = 0;
    for (ssrc, items) in chunks {
        if count == MAX_COUNT {
            return Err(RtcpError::TooMany { what: "SDES chunks", count: count + 1 });
        }
        w.put(&ssrc.to_be_bytes())?;
        for item in items {
            if item.kind == 0 {
                return Err(RtcpError::SdesEndItem);
            }
            let len = u8::try_from(item.value.len()).map_err(|_| RtcpError::TooLong {
                what: "SDES item",
                len: item.value.len(),
                max: 255,
            })?;
            w.put(&[item.kind, len])?;
            w.put(item.value)?;
        }
        // The END octet plus null padding to the next 32-bit boundary: 1 to 4 zeros.
        w.zeros(4 - w.len % 4)?;
        count += 1;
    }
    w.finish_header(count, SOURCE_DESCRIPTION)
}

/// Writes an SDES packet with one chunk holding only a CNAME; returns its length.
pub fn write_sdes_cname(out: &mut [u8], ssrc: u32, cname: &[u8]) -> Result<usize, RtcpError> {
    write_sdes(out, [(ssrc, [SdesItem::cname(cname)])])
}

/// Writes a BYE for `ssrcs` (at most 31) with an optional reason of at
/// most 255 bytes; returns its length.
pub fn write_bye<S: Borrow<u32>>(
    out: &mut [u8],
    ssrcs: impl IntoIterator<Item = S>,
    reason: Option<&[u8]>,
) -> Result<usize, RtcpError> {
    let mut w = start(out)?;
    let mut count = 0;
    for ssrc in ssrcs {
        if count == MAX_COUNT {
            return Err(RtcpError::TooMany { what: "BYE SSRCs", count: count + 1 });
        }
        w.put(&ssrc.borrow().to_be_bytes())?;
        count += 1;
    }
    if let Some(reason) = reason {
        let len = u8::try_from(reason.len()).map_err(|_| RtcpError::TooLong {
            what: "BYE reason",
            len: reason.len(),
            max: 255,
        })?;
        w.put(&[len])?;
        w.put(reason)?;
        w.zeros((4 - w.len % 4) % 4)?;
    }
    w.finish_header(count, GOODBYE)
}

/// Writes a packet of any type from its parts (for APP, feedback, or
/// forwarding an [`RtcpPacket::Unknown`]); `body` must be whole 32-bit
/// words and `count` at most 31. Returns its length.
pub fn write_packet(out: &mut [u8], packet_type: u8, count: u8, body: &[u8]) -> Result<usize, RtcpError> {
    if usize::from(count) > MAX_COUNT {
        return Err(RtcpError::TooMany { what: "count field", count: usize::from(count) });
    }
    if !body.len().is_multiple_of(4) {
        return Err(RtcpError::NotWordAligned { what: "packet body", len: body.len() });
    }
    let mut w = start(out)?;
    w.put(body)?;
    w.finish_header(usize::from(count), packet_type)
}

/// Builds a compound RTCP packet in a caller buffer. It can only be started
/// with a report, so what it builds always satisfies RFC 3550 §6.1's first
/// rule; add [`CompoundBuilder::sdes_cname`] to satisfy the second.
#[derive(Debug)]
pub struct CompoundBuilder<'b> {
    out: &'b mut [u8],
    len: usize,
    last_start: usize,
}

impl<'b> CompoundBuilder<'b> {
    /// Starts a compound packet with a sender report.
    pub fn new_sender_report<B: Borrow<ReportBlock>>(
        out: &'b mut [u8],
        ssrc: u32,
        info: &SenderInfo,
        reports: impl IntoIterator<Item = B>,
    ) -> Result<Self, RtcpError> {
        let len = write_sender_report(out, ssrc, info, reports, &[])?;
        Ok(CompoundBuilder { out, len, last_start: 0 })
    }

    /// Starts a compound packet with a receiver report.
    pub fn new_receiver_report<B: Borrow<ReportBlock>>(
        out: &'b mut [u8],
        ssrc: u32,
        reports: impl IntoIterator<Item = B>,
    ) -> Result<Self, RtcpError> {
        let len = write_receiver_report(out, ssrc, reports, &[])?;
        Ok(CompoundBuilder { out, len, last_start: 0 })
    }

    /// Appends a packet written by `write` (any `write_*` function of this
    /// module) into the rest of the buffer.
    pub fn push(
        &mut self,
        write: impl FnOnce(&mut [u8]) -> Result<usize, RtcpError>,
    ) -> Result<&mut Self, RtcpError> {
        let written = write(&mut self.out[self.len..])?;
        self.last_start = self.len;
        self.len += written;
        Ok(self)
    }

    /// Appends an SDES packet with one CNAME.
    pub fn sdes_cname(&mut self, ssrc: u32, cname: &[u8]) -> Result<&mut Self, RtcpError> {
        self.push(|out| write_sdes_cname(out, ssrc, cname))
    }

    /// Appends a BYE.
    pub fn bye(&mut self, ssrcs: &[u32], reason: Option<&[u8]>) -> Result<&mut Self, RtcpError> {
        self.push(|out| write_bye(out, ssrcs, reason))
    }

    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a compound packet starts with its report.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length of the finished compound packet in the buffer.
    #[must_use]
    pub fn finish(self) -> usize {
        self.len
    }

    /// Pads the last packet with `padding` bytes (a multiple of 4; 0 means
    /// none), as encryption with a block cipher may need, and returns the
    /// total length.
    pub fn finish_padded(self, padding: u8) -> Result<usize, RtcpError> {
        if padding == 0 {
            return Ok(self.len);
        }
        if !padding.is_multiple_of(4) {
            return Err(RtcpError::NotWordAligned { what: "padding", len: usize::from(padding) });
        }
        let end = self.len + usize::from(padding);
        let available = self.out.len();
        let pad =
            self.out.get_mut(self.len..end).ok_or(RtcpError::BufferTooSmall { needed: end, available })?;
        pad.fill(0);
        pad[pad.len() - 1] = padding;
        let last_len = end - self.last_start;
        let words = u16::try_from(last_len / 4 - 1).map_err(|_| RtcpError::TooLong {
            what: "packet",
            len: last_len,
            max: MAX_PACKET_LEN,
        })?;
        let header = &mut self.out[self.last_start..self.last_start + HEADER_LEN];
        header[0] |= 0x20;
        header[2..4].copy_from_slice(&words.to_be_bytes());
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// A sender report written out by hand from the RFC 3550 §6.4.1 layout.
    fn hand_made_sr() -> Vec<u8> {
        let mut p = vec![
            0x81, 200, 0x00, 0x0c, // V=2, RC=1, SR, length 12 words
            0xde, 0xad, 0xbe, 0xef, // SSRC of sender
            0xe9, 0x4f, 0x2c, 0x80, 0x40, 0x00, 0x00, 0x00, // NTP: 0xe94f2c80 s + 0.25 s
            0x00, 0x01, 0x00, 0x00, // RTP timestamp 65536
            0x00, 0x00, 0x00, 0x32, // 50 packets
            0x00, 0x00, 0x1f, 0x40, // 8000 octets
            // report block
            0x01, 0x02, 0x03, 0x04, // SSRC_1
            0x40, 0xff, 0xff, 0xfe, // fraction 64/256, cumulative lost -2
            0x00, 0x01, 0x00, 0x10, // extended highest seq: 1 cycle, seq 16
            0x00, 0x00, 0x00, 0x50, // jitter 80
            0x2c, 0x80, 0x40, 0x00, // LSR
            0x00, 0x01, 0x80, 0x00, // DLSR 1.5 s
        ];
        // SDES: header 4 + SSRC 4 + item "ab" 4 + END and 3 null octets 4 = 16 bytes, length 3.
        p.extend_from_slice(&[0x81, 202, 0x00, 0x03, 0xde, 0xad, 0xbe, 0xef, 1, 2, b'a', b'b', 0, 0, 0, 0]);
        p
    }

    #[test]
    fn parses_a_hand_made_sender_report_and_sdes() {
        let bytes = hand_made_sr();
        let mut it = packets(&bytes);
        let Some(Ok(RtcpPacket::SenderReport(sr))) = it.next() else { panic!("no SR") };
        assert_eq!(sr.ssrc, 0xdead_beef);
        assert_eq!(sr.info.ntp.seconds(), 0xe94f_2c80);
        assert_eq!(sr.info.ntp.fraction(), 0x4000_0000);
        assert_eq!(sr.info.ntp.middle32(), 0x2c80_4000);
        assert_eq!(sr.info.rtp_timestamp, 65_536);
        assert_eq!(sr.info.packet_count, 50);
        assert_eq!(sr.info.octet_count, 8_000);
        let blocks: Vec<_> = sr.reports.collect();
        assert_eq!(
            blocks,
            [ReportBlock {
                ssrc: 0x0102_0304,
                fraction_lost: 64,
                cumulative_lost: -2,
                extended_highest_seq: 65_536 + 16,
                jitter: 80,
                last_sr: 0x2c80_4000,
                delay_since_last_sr: 0x0001_8000,
            }]
        );
        assert!(sr.profile_extension.is_empty());
        let Some(Ok(RtcpPacket::SourceDescription(sdes))) = it.next() else { panic!("no SDES") };
        assert_eq!(sdes.cname(0xdead_beef), Some(&b"ab"[..]));
        assert_eq!(sdes.cname(1), None);
        assert!(it.next().is_none());
        assert_eq!(validate_compound(&bytes), Ok(()));
        assert_eq!(compact_to_duration(blocks[0].delay_since_last_sr), Duration::from_millis(1_500));
    }

    #[test]
    fn builds_the_same_bytes_as_the_hand_made_packet() {
        let expected = hand_made_sr();
        let info = SenderInfo {
            ntp: NtpTimestamp::from_bits(0xe94f_2c80_4000_0000),
            rtp_timestamp: 65_536,
            packet_count: 50,
            octet_count: 8_000,
        };
        let block = ReportBlock {
            ssrc: 0x0102_0304,
            fraction_lost: 64,
            cumulative_lost: -2,
            extended_highest_seq: 0x0001_0010,
            jitter: 80,
            last_sr: 0x2c80_4000,
            delay_since_last_sr: 0x0001_8000,
        };
        let mut buf = [0u8; 256];
        let mut b = CompoundBuilder::new_sender_report(&mut buf, 0xdead_beef, &info, [block]).unwrap();
        b.sdes_cname(0xdead_beef, b"ab").unwrap();
        let len = b.finish();
        assert_eq!(&buf[..len], &expected[..]);
    }

    #[test]
    fn rr_bye_and_unknown_in_one_compound() {
        let bytes = [
            0x80, 201, 0x00, 0x01, 0, 0, 0, 7, // empty RR from SSRC 7
            0x82, 206, 0x00, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, // PSFB (FMT 2), body 8 bytes
            0x81, 203, 0x00, 0x03, 0, 0, 0, 7, 5, b'h', b'u', b'n', b'g', b' ', 0, 0, // BYE "hung " (5)
        ];
        let parsed: Vec<_> = packets(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(parsed.len(), 3);
        let RtcpPacket::ReceiverReport(rr) = parsed[0] else { panic!() };
        assert_eq!((rr.ssrc, rr.reports.len()), (7, 0));
        assert_eq!(
            parsed[1],
            RtcpPacket::Unknown { packet_type: 206, count: 2, body: &[1, 2, 3, 4, 5, 6, 7, 8] }
        );
        let RtcpPacket::Bye(bye) = parsed[2] else { panic!() };
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [7]);
        assert_eq!(bye.reason(), Some(&b"hung "[..]));

        let mut out = [0u8; 64];
        let n = write_bye(&mut out, [7u32], Some(b"hung ")).unwrap();
        assert_eq!(&out[..n], &bytes[20..]);
    }

    #[test]
    fn rejects_broken_compounds() {
        let rr = [0x80, 201, 0x00, 0x01, 0, 0, 0, 7];
        assert_eq!(validate_compound(&rr), Ok(()));
        assert_eq!(validate_compound(&[]), Err(RtcpError::Empty));
        // Version 1.
        assert_eq!(packets(&[0x40, 201, 0, 1, 0, 0, 0, 7]).next(), Some(Err(RtcpError::Version(1))));
        // Length says 3 words, datagram has 2.
        assert!(matches!(
            packets(&[0x80, 201, 0, 2, 0, 0, 0, 7]).next(),
            Some(Err(RtcpError::Truncated { needed: 12, available: 8, .. }))
        ));
        // RC=1 but no room for the block.
        assert!(matches!(
            packets(&[0x81, 201, 0, 1, 0, 0, 0, 7]).next(),
            Some(Err(RtcpError::Truncated { needed: 28, available: 4, .. }))
        ));
        // Padding on the first of two packets.
        let mut two = [0u8; 16];
        two[..8].copy_from_slice(&[0xa0, 201, 0, 1, 0, 0, 0, 4]);
        two[8..].copy_from_slice(&rr);
        assert_eq!(packets(&two).next(), Some(Err(RtcpError::PaddingNotLast)));
        // Padding count 0, and larger than the body.
        assert!(matches!(
            packets(&[0xa0, 201, 0, 1, 0, 0, 0, 0]).next(),
            Some(Err(RtcpError::Padding { .. }))
        ));
        assert!(matches!(
            packets(&[0xa0, 201, 0, 1, 0, 0, 0, 5]).next(),
            Some(Err(RtcpError::Padding { .. }))
        ));
        // Compound starting with a BYE.
        assert_eq!(validate_compound(&[0x81, 203, 0, 1, 0, 0, 0, 7]), Err(RtcpError::FirstNotReport(203)));
        // SDES chunk without an END item.
        assert_eq!(
            packets(&[0x81, 202, 0, 2, 0, 0, 0, 9, 1, 2, b'a', b'b']).next(),
            Some(Err(RtcpError::SdesUnterminated { ssrc: 9 }))
        );
        // The walk stops after the first error.
        let mut bad_then_good = [0u8; 16];
        bad_then_good[..8].copy_from_slice(&[0x40, 201, 0, 1, 0, 0, 0, 7]);
        bad_then_good[8..].copy_from_slice(&rr);
        assert_eq!(packets(&bad_then_good).count(), 1);
    }

    #[test]
    fn padded_last_packet() {
        let mut buf = [0u8; 64];
        let b = CompoundBuilder::new_receiver_report(&mut buf, 9, &[] as &[ReportBlock]).unwrap();
        let len = b.finish_padded(8).unwrap();
        assert_eq!(&buf[..len], &[0xa0, 201, 0, 3, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 8]);
        let parsed: Vec<_> = packets(&buf[..len]).collect::<Result<_, _>>().unwrap();
        let RtcpPacket::ReceiverReport(rr) = parsed[0] else { panic!() };
        assert_eq!((rr.ssrc, rr.reports.len(), rr.profile_extension), (9, 0, &[][..]));
        let b = CompoundBuilder::new_receiver_report(&mut buf, 9, &[] as &[ReportBlock]).unwrap();
        assert!(matches!(b.finish_padded(3), Err(RtcpError::NotWordAligned { .. })));
    }

    #[test]
    fn builders_refuse_what_does_not_fit() {
        let mut small = [0u8; 10];
        assert!(matches!(
            write_receiver_report(&mut small, 1, [ReportBlock::default()], &[]),
            Err(RtcpError::BufferTooSmall { .. })
        ));
        let mut buf = [0u8; 2048];
        let many = [ReportBlock::default(); 32];
        assert_eq!(
            write_receiver_report(&mut buf, 1, many, &[]),
            Err(RtcpError::TooMany { what: "report blocks", count: 32 })
        );
        assert!(write_receiver_report(&mut buf, 1, &many[..31], &[]).is_ok());
        assert!(matches!(write_bye(&mut buf, [1u32], Some(&[b'x'; 256])), Err(RtcpError::TooLong { .. })));
        assert_eq!(
            write_sdes(&mut buf, [(1, [SdesItem { kind: 0, value: b"" }])]),
            Err(RtcpError::SdesEndItem)
        );
        assert!(matches!(write_packet(&mut buf, 204, 0, &[1, 2, 3]), Err(RtcpError::NotWordAligned { .. })));
        assert!(write_sender_report(&mut buf, 1, &SenderInfo::default(), &many[..0], &[1]).is_err());
    }

    #[test]
    fn cumulative_lost_is_clamped_to_24_bits() {
        assert_eq!(clamp_cumulative_lost(10_000_000), 0x7f_ffff);
        assert_eq!(clamp_cumulative_lost(-10_000_000), -0x80_0000);
        assert_eq!(clamp_cumulative_lost(-3), -3);
        let mut b = [0u8; 24];
        ReportBlock { cumulative_lost: i32::MIN, ..ReportBlock::default() }.write(&mut b).unwrap();
        assert_eq!(&b[5..8], &[0x80, 0x00, 0x00]);
        ReportBlock { cumulative_lost: i32::MAX, ..ReportBlock::default() }.write(&mut b).unwrap();
        assert_eq!(&b[5..8], &[0x7f, 0xff, 0xff]);
    }

    #[test]
    fn ntp_time_and_round_trip() {
        // 1970-01-01 is 2208988800 s after 1900-01-01; half a second is 2^31.
        let t = NtpTimestamp::from_unix(Duration::from_millis(500));
        assert_eq!(t.seconds(), 2_208_988_800);
        assert_eq!(t.fraction(), 1 << 31);
        assert_eq!(compact_from_duration(Duration::from_millis(250)), 0x4000);
        assert_eq!(compact_from_duration(Duration::from_secs(1 << 20)), u32::MAX);
        // SR sent at 10.0 s (middle32 = 10 << 16), held 1.0 s at the peer,
        // echo arrives at 11.5 s → RTT 0.5 s.
        let arrival = NtpTimestamp::from_bits((11u64 << 32) | (1 << 31));
        assert_eq!(round_trip_time(arrival, 10 << 16, 1 << 16), Some(Duration::from_millis(500)));
        assert_eq!(round_trip_time(arrival, 0, 0), None, "LSR 0: no SR echoed");
        assert_eq!(round_trip_time(arrival, 10 << 16, 2 << 16), None, "negative RTT");
        assert_eq!(round_trip_time(arrival, 12 << 16, 0), None, "SR from the future");
    }

    /// SDES chunks as plain data: (SSRC, [(item type, value)]).
    type Chunks = Vec<(u32, Vec<(u8, Vec<u8>)>)>;

    fn block() -> impl Strategy<Value = ReportBlock> {
        (any::<[u32; 5]>(), any::<u8>(), -0x80_0000i32..=0x7f_ffff).prop_map(|(w, fraction_lost, lost)| {
            ReportBlock {
                ssrc: w[0],
                fraction_lost,
                cumulative_lost: lost,
                extended_highest_seq: w[1],
                jitter: w[2],
                last_sr: w[3],
                delay_since_last_sr: w[4],
            }
        })
    }

    fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<[u8; 4]>(), 0..max).prop_map(|w| w.concat())
    }

    proptest! {
        #[test]
        fn sender_report_round_trips(
            ssrc in any::<u32>(), ntp in any::<u64>(), rtp in any::<u32>(), pc in any::<u32>(), oc in any::<u32>(),
            blocks in proptest::collection::vec(block(), 0..=31), ext in words(4),
        ) {
            let info = SenderInfo { ntp: NtpTimestamp::from_bits(ntp), rtp_timestamp: rtp, packet_count: pc, octet_count: oc };
            let mut buf = [0u8; 1024];
            let n = write_sender_report(&mut buf, ssrc, &info, &blocks, &ext).unwrap();
            prop_assert_eq!(n, 28 + 24 * blocks.len() + ext.len());
            let parsed: Vec<_> = packets(&buf[..n]).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(parsed.len(), 1);
            let RtcpPacket::SenderReport(sr) = parsed[0] else { panic!("not an SR") };
            prop_assert_eq!(sr.ssrc, ssrc);
            prop_assert_eq!(sr.info, info);
            prop_assert_eq!(sr.reports.collect::<Vec<_>>(), blocks);
            prop_assert_eq!(sr.profile_extension, &ext[..]);
        }

        #[test]
        fn receiver_report_round_trips(ssrc in any::<u32>(), blocks in proptest::collection::vec(block(), 0..=31)) {
            let mut buf = [0u8; 1024];
            let n = write_receiver_report(&mut buf, ssrc, &blocks, &[]).unwrap();
            let parsed: Vec<_> = packets(&buf[..n]).collect::<Result<_, _>>().unwrap();
            let RtcpPacket::ReceiverReport(rr) = parsed[0] else { panic!("not an RR") };
            prop_assert_eq!(rr.ssrc, ssrc);
            prop_assert_eq!(rr.reports.collect::<Vec<_>>(), blocks);
        }

        #[test]
        fn sdes_round_trips(
            chunks in proptest::collection::vec(
                (any::<u32>(), proptest::collection::vec((1u8..=255, proptest::collection::vec(any::<u8>(), 0..40)), 0..4)),
                0..=31),
        ) {
            let mut buf = [0u8; 8192];
            let n = write_sdes(&mut buf, chunks.iter().map(|(ssrc, items)| {
                (*ssrc, items.iter().map(|(kind, value)| SdesItem { kind: *kind, value }))
            })).unwrap();
            prop_assert_eq!(n % 4, 0);
            let parsed: Vec<_> = packets(&buf[..n]).collect::<Result<_, _>>().unwrap();
            let RtcpPacket::SourceDescription(sdes) = parsed[0] else { panic!("not SDES") };
            let got: Chunks = sdes
                .chunks()
                .map(|c| (c.ssrc, c.items.map(|i| (i.kind, i.value.to_vec())).collect()))
                .collect();
            prop_assert_eq!(got, chunks);
        }

        #[test]
        fn bye_round_trips(ssrcs in proptest::collection::vec(any::<u32>(), 0..=31),
                           reason in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255))) {
            let mut buf = [0u8; 512];
            let n = write_bye(&mut buf, &ssrcs, reason.as_deref()).unwrap();
            let parsed: Vec<_> = packets(&buf[..n]).collect::<Result<_, _>>().unwrap();
            let RtcpPacket::Bye(bye) = parsed[0] else { panic!("not a BYE") };
            prop_assert_eq!(bye.ssrcs().collect::<Vec<_>>(), ssrcs);
            prop_assert_eq!(bye.reason(), reason.as_deref());
        }

        #[test]
        fn compound_round_trips(blocks in proptest::collection::vec(block(), 0..3),
                                cname in proptest::collection::vec(any::<u8>(), 0..=255),
                                unknown in words(8), padding in (0u8..64).prop_map(|p| p * 4)) {
            let mut buf = [0u8; 2048];
            let mut b = CompoundBuilder::new_receiver_report(&mut buf, 42, &blocks).unwrap();
            b.sdes_cname(42, &cname).unwrap();
            b.push(|out| write_packet(out, APPLICATION, 3, &unknown)).unwrap();
            b.bye(&[42], None).unwrap();
            let len = b.finish_padded(padding).unwrap();
            prop_assert_eq!(validate_compound(&buf[..len]), Ok(()));
            let parsed: Vec<_> = packets(&buf[..len]).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(parsed.len(), 4);
            let RtcpPacket::SourceDescription(sdes) = parsed[1] else { panic!("not SDES") };
            prop_assert_eq!(sdes.cname(42), Some(&cname[..]));
            prop_assert_eq!(parsed[2], RtcpPacket::Unknown { packet_type: APPLICATION, count: 3, body: &unknown });
            let RtcpPacket::Bye(bye) = parsed[3] else { panic!("not a BYE") };
            prop_assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [42]);
        }

        #[test]
        fn parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for packet in packets(&bytes) {
                let _ = packet;
            }
            let _ = validate_compound(&bytes);
        }
    }
}
