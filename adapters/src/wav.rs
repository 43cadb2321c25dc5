//! A RIFF/WAVE reader for the 8 kHz telephone audio the CLI handles.
//!
//! [`parse`] takes the whole file and returns its format and a borrowed view
//! of its samples; [`Wav::decode`] turns PCM16 or G.711 μ-law into `i16`.
//! Anything is accepted as input and nothing panics: sizes come from the
//! file and are checked against what is really there.
//!
//! - Chunks may come in any order (`fmt ` after `data` is fine); unknown
//!   chunks (`LIST`, `fact`, `cue `…) are skipped; odd-sized chunks are
//!   followed by the pad byte RIFF requires.
//! - A second `fmt ` or `data` chunk is an error: which one is meant is
//!   anybody's guess.
//! - A `data` chunk that claims more bytes than the file holds is
//!   **tolerated**: what is there is used and [`Wav::truncated`] says so
//!   (recorders killed mid-call and streaming writers leave such files; the
//!   size 0xFFFFFFFF, "unknown length", reads to the end without being
//!   flagged). Any other chunk cut short is an error.
//! - `WAVE_FORMAT_EXTENSIBLE` is resolved to its sub-format, so an extensible
//!   PCM16 file is reported and decoded as PCM16.
//!
//! ```
//! use voxproxy_adapters::wav::{self, Encoding};
//!
//! // 44-byte canonical header followed by two PCM16 samples.
//! let mut file = Vec::new();
//! file.extend_from_slice(b"RIFF");
//! file.extend_from_slice(&40u32.to_le_bytes());
//! file.extend_from_slice(b"WAVEfmt ");
//! file.extend_from_slice(&16u32.to_le_bytes());
//! for v in [1u16, 1] { file.extend_from_slice(&v.to_le_bytes()); } // PCM, mono
//! for v in [8000u32, 16000] { file.extend_from_slice(&v.to_le_bytes()); }
//! for v in [2u16, 16] { file.extend_from_slice(&v.to_le_bytes()); }
//! file.extend_from_slice(b"data");
//! file.extend_from_slice(&4u32.to_le_bytes());
//! for s in [1000i16, -1000] { file.extend_from_slice(&s.to_le_bytes()); }
//!
//! let wav = wav::parse(&file).unwrap();
//! assert_eq!(wav.format.encoding(), Some(Encoding::Pcm16));
//! assert_eq!(wav.format.to_string(), "8000 Hz mono PCM16");
//! assert_eq!(wav.decode().unwrap(), vec![1000, -1000]);
//! ```

use std::fmt;

/// `wFormatTag` of integer PCM.
pub const FORMAT_PCM: u16 = 0x0001;
/// `wFormatTag` of IEEE float.
pub const FORMAT_FLOAT: u16 = 0x0003;
/// `wFormatTag` of G.711 A-law.
pub const FORMAT_ALAW: u16 = 0x0006;
/// `wFormatTag` of G.711 μ-law.
pub const FORMAT_MULAW: u16 = 0x0007;
/// `wFormatTag` of `WAVE_FORMAT_EXTENSIBLE` (the real format is in the sub-format GUID).
pub const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// The `data` size streaming writers use for "until the end of the file".
const UNKNOWN_LENGTH: u32 = u32::MAX;
/// Bytes 2..16 of every `KSDATAFORMAT_SUBTYPE_*` GUID whose first two bytes
/// are a classic format tag (…-0000-0010-8000-00AA00389B71, little-endian).
const SUBTYPE_GUID_TAIL: [u8; 14] =
    [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71];

/// Errors reading a WAV file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WavError {
    /// The file does not start with `RIFF` (or is shorter than a RIFF header).
    NotRiff,
    /// A RIFF file whose form type is not `WAVE`.
    NotWave {
        /// The form type found instead.
        form: [u8; 4],
    },
    /// A chunk other than `data` claims more bytes than the file holds.
    TruncatedChunk {
        /// The chunk's id.
        id: [u8; 4],
        /// Bytes the chunk header declares.
        declared: u32,
        /// Bytes actually left in the file.
        available: usize,
    },
    /// Two chunks with the same id where only one makes sense.
    DuplicateChunk {
        /// `fmt ` or `data`.
        id: [u8; 4],
    },
    /// No `fmt ` chunk.
    MissingFormat,
    /// No `data` chunk.
    MissingData,
    /// The `fmt ` chunk is shorter than its format needs.
    ShortFormat {
        /// Its length.
        len: usize,
        /// The length the format needs (16, or 40 for `WAVE_FORMAT_EXTENSIBLE`).
        needed: usize,
    },
    /// [`Wav::decode`] was asked for an encoding it does not decode.
    Unsupported {
        /// The file's format, for the message.
        format: WavFormat,
    },
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::NotRiff => write!(f, "not a WAV file (it does not start with a RIFF header)"),
            WavError::NotWave { form } => {
                write!(f, "a RIFF file of type {:?}, not WAVE", String::from_utf8_lossy(form))
            }
            WavError::TruncatedChunk { id, declared, available } => write!(
                f,
                "WAV chunk {:?} declares {declared} bytes but only {available} are left in the file",
                String::from_utf8_lossy(id)
            ),
            WavError::DuplicateChunk { id } => {
                write!(f, "WAV file has more than one {:?} chunk", String::from_utf8_lossy(id))
            }
            WavError::MissingFormat => write!(f, "WAV file has no \"fmt \" chunk"),
            WavError::MissingData => write!(f, "WAV file has no \"data\" chunk"),
            WavError::ShortFormat { len, needed } => {
                write!(f, "WAV \"fmt \" chunk is {len} bytes; its format needs at least {needed}")
            }
            WavError::Unsupported { format } => {
                write!(f, "WAV audio is {format}; only PCM16 and μ-law can be decoded")
            }
        }
    }
}

impl std::error::Error for WavError {}

/// The sample encodings [`Wav::decode`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Little-endian signed 16-bit PCM.
    Pcm16,
    /// G.711 μ-law, one byte per sample.
    MuLaw,
}

/// What the `fmt ` chunk says, with `WAVE_FORMAT_EXTENSIBLE` resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WavFormat {
    /// The format tag ([`FORMAT_PCM`], [`FORMAT_MULAW`]…), the sub-format's
    /// for an extensible file; `None` for an extensible file whose
    /// sub-format GUID is not a classic tag.
    pub format_tag: Option<u16>,
    /// Interleaved channels.
    pub channels: u16,
    /// Samples per second per channel.
    pub sample_rate: u32,
    /// Bits per sample as stored (the container size).
    pub bits_per_sample: u16,
}

impl WavFormat {
    /// The encoding, if it is one [`Wav::decode`] handles.
    #[must_use]
    pub fn encoding(&self) -> Option<Encoding> {
        match (self.format_tag, self.bits_per_sample) {
            (Some(FORMAT_PCM), 16) => Some(Encoding::Pcm16),
            (Some(FORMAT_MULAW), 8) => Some(Encoding::MuLaw),
            _ => None,
        }
    }
}

impl fmt::Display for WavFormat {
    /// For example "44100 Hz stereo PCM16" or "8000 Hz mono A-law".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz ", self.sample_rate)?;
        match self.channels {
            1 => write!(f, "mono ")?,
            2 => write!(f, "stereo ")?,
            n => write!(f, "{n}-channel ")?,
        }
        let bits = self.bits_per_sample;
        match self.format_tag {
            Some(FORMAT_PCM) => write!(f, "PCM{bits}"),
            Some(FORMAT_FLOAT) => write!(f, "{bits}-bit float"),
            Some(FORMAT_ALAW) => write!(f, "A-law"),
            Some(FORMAT_MULAW) if bits == 8 => write!(f, "μ-law"),
            Some(FORMAT_MULAW) => write!(f, "μ-law with {bits}-bit samples"),
            Some(tag) => write!(f, "audio in format 0x{tag:04X}"),
            None => write!(f, "audio in an unknown extensible sub-format"),
        }
    }
}

/// A parsed WAV file: its format and a view of its sample bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wav<'a> {
    /// The format.
    pub format: WavFormat,
    /// The bytes of the `data` chunk that the file really holds.
    pub data: &'a [u8],
    /// Whether the `data` chunk declared more bytes than the file holds.
    pub truncated: bool,
}

impl Wav<'_> {
    /// The samples as `i16`, channels interleaved; a trailing partial sample is dropped.
    ///
    /// # Errors
    ///
    /// [`WavError::Unsupported`] unless the format is PCM16 or μ-law.
    pub fn decode(&self) -> Result<Vec<i16>, WavError> {
        match self.format.encoding() {
            Some(Encoding::Pcm16) => {
                Ok(self.data.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect())
            }
            Some(Encoding::MuLaw) => {
                Ok(self.data.iter().map(|&c| voxproxy_core::g711::ulaw_decode(c)).collect())
            }
            None => Err(WavError::Unsupported { format: self.format }),
        }
    }
}

/// Parses a whole WAV file. See the [module docs](self) for what is tolerated.
///
/// # Errors
///
/// Any [`WavError`] but [`WavError::Unsupported`].
pub fn parse(file: &[u8]) -> Result<Wav<'_>, WavError> {
    let (Some(riff), Some(form)) = (file.get(0..4), file.get(8..12)) else {
        return Err(WavError::NotRiff);
    };
    if riff != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if form != b"WAVE" {
        return Err(WavError::NotWave { form: id4(form) });
    }
    // The RIFF size bounds the chunks unless the file is shorter (truncated).
    // A size too small to hold even the form type is a streaming writer's
    // placeholder: read to the end of the file.
    let riff_end = usize::try_from(read_u32(file, 4)).map_or(file.len(), |n| n.saturating_add(8));
    let end = if riff_end < 12 { file.len() } else { riff_end.min(file.len()) };

    let mut format = None;
    let mut data = None;
    let mut pos = 12usize;
    while let Some(header) = file.get(pos..pos.saturating_add(8)).filter(|_| pos + 8 <= end) {
        let id = id4(&header[..4]);
        let declared = read_u32(header, 4);
        let body_start = pos + 8;
        let available = end - body_start;
        let size = usize::try_from(declared).unwrap_or(usize::MAX);
        if &id == b"data" {
            if data.is_some() {
                return Err(WavError::DuplicateChunk { id });
            }
            let truncated = size > available && declared != UNKNOWN_LENGTH;
            let len = size.min(available);
            data = Some((&file[body_start..body_start + len], truncated));
            if size > available {
                break;
            }
        } else {
            if size > available {
                return Err(WavError::TruncatedChunk { id, declared, available });
            }
            if &id == b"fmt " {
                if format.is_some() {
                    return Err(WavError::DuplicateChunk { id });
                }
                format = Some(parse_format(&file[body_start..body_start + size])?);
            }
        }
        // Odd-sized chunks are followed by one pad byte.
        pos = body_start.saturating_add(size).saturating_add(size & 1);
    }
    let format = format.ok_or(WavError::MissingFormat)?;
    let (data, truncated) = data.ok_or(WavError::MissingData)?;
    Ok(Wav { format, data, truncated })
}

fn parse_format(body: &[u8]) -> Result<WavFormat, WavError> {
    if body.len() < 16 {
        return Err(WavError::ShortFormat { len: body.len(), needed: 16 });
    }
    let tag = read_u16(body, 0);
    let mut format = WavFormat {
        format_tag: Some(tag),
        channels: read_u16(body, 2),
        sample_rate: read_u32(body, 4),
        bits_per_sample: read_u16(body, 14),
    };
    if tag == FORMAT_EXTENSIBLE {
        // cbSize(2) validBits(2) channelMask(4) subFormat GUID(16) after the 16 basic bytes.
        let Some(guid) = body.get(24..40) else {
            return Err(WavError::ShortFormat { len: body.len(), needed: 40 });
        };
        format.format_tag = (guid[2..] == SUBTYPE_GUID_TAIL).then(|| u16::from_le_bytes([guid[0], guid[1]]));
    }
    Ok(format)
}

fn id4(b: &[u8]) -> [u8; 4] {
    let mut id = [0u8; 4];
    for (dst, src) in id.iter_mut().zip(b) {
        *dst = *src;
    }
    id
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    let mut v = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        v.copy_from_slice(s);
    }
    u16::from_le_bytes(v)
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut c = id.to_vec();
        c.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        c.extend_from_slice(body);
        if body.len() % 2 == 1 {
            c.push(0);
        }
        c
    }

    fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut b = Vec::new();
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        b.extend_from_slice(&align.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b
    }

    fn extensible_body(sub: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut b = fmt_body(FORMAT_EXTENSIBLE, channels, rate, bits);
        b.extend_from_slice(&22u16.to_le_bytes());
        b.extend_from_slice(&bits.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&sub.to_le_bytes());
        b.extend_from_slice(&SUBTYPE_GUID_TAIL);
        b
    }

    fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = chunks.concat();
        let mut f = b"RIFF".to_vec();
        f.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_le_bytes());
        f.extend_from_slice(b"WAVE");
        f.extend_from_slice(&body);
        f
    }

    fn pcm_bytes(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn canonical_pcm16() {
        let file =
            riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)), chunk(b"data", &pcm_bytes(&[1, -2, 32767]))]);
        let wav = parse(&file).unwrap();
        assert_eq!(wav.format.encoding(), Some(Encoding::Pcm16));
        assert!(!wav.truncated);
        assert_eq!(wav.decode().unwrap(), vec![1, -2, 32767]);
    }

    #[test]
    fn mulaw_with_fact_chunk_and_18_byte_fmt() {
        let mut fmt = fmt_body(7, 1, 8000, 8);
        fmt.extend_from_slice(&0u16.to_le_bytes());
        // 0xFF and 0x7F are μ-law's two zeros; 0x80 and 0x00 its extremes (±32124 in G.711).
        let codes = [0xFFu8, 0x7F, 0x80, 0x00, 0xFF];
        let file = riff(&[chunk(b"fmt ", &fmt), chunk(b"fact", &5u32.to_le_bytes()), chunk(b"data", &codes)]);
        let wav = parse(&file).unwrap();
        assert_eq!(wav.format.to_string(), "8000 Hz mono μ-law");
        assert_eq!(wav.decode().unwrap(), vec![0, 0, 32124, -32124, 0]);
    }

    #[test]
    fn chunks_in_any_order_with_odd_padding() {
        let file = riff(&[
            chunk(b"LIST", b"INFOodd"),
            chunk(b"data", &pcm_bytes(&[7, 8])),
            chunk(b"junk", b"x"),
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
        ]);
        let wav = parse(&file).unwrap();
        assert_eq!(wav.decode().unwrap(), vec![7, 8]);
    }

    #[test]
    fn extensible_resolves_to_subformat() {
        let file =
            riff(&[chunk(b"fmt ", &extensible_body(1, 1, 8000, 16)), chunk(b"data", &pcm_bytes(&[5]))]);
        assert_eq!(parse(&file).unwrap().format.encoding(), Some(Encoding::Pcm16));
        let file = riff(&[chunk(b"fmt ", &extensible_body(7, 1, 8000, 8)), chunk(b"data", &[0xFF])]);
        assert_eq!(parse(&file).unwrap().format.encoding(), Some(Encoding::MuLaw));
    }

    #[test]
    fn extensible_with_foreign_guid_is_unknown() {
        let mut body = extensible_body(1, 1, 8000, 16);
        let last = body.len() - 1;
        body[last] ^= 0xFF;
        let file = riff(&[chunk(b"fmt ", &body), chunk(b"data", &[0, 0])]);
        let wav = parse(&file).unwrap();
        assert_eq!(wav.format.format_tag, None);
        assert!(matches!(wav.decode(), Err(WavError::Unsupported { .. })));
    }

    #[test]
    fn short_extensible_fmt_is_rejected() {
        let body = fmt_body(FORMAT_EXTENSIBLE, 1, 8000, 16);
        let file = riff(&[chunk(b"fmt ", &body), chunk(b"data", &[0, 0])]);
        assert_eq!(parse(&file), Err(WavError::ShortFormat { len: 16, needed: 40 }));
    }

    #[test]
    fn truncated_data_is_used_and_flagged() {
        let mut file =
            riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)), chunk(b"data", &pcm_bytes(&[1, 2, 3]))]);
        file.truncate(file.len() - 3); // sample 3 and half of sample 2 are gone
        let wav = parse(&file).unwrap();
        assert!(wav.truncated);
        assert_eq!(wav.decode().unwrap(), vec![1]);
    }

    #[test]
    fn unknown_length_data_reads_to_end_unflagged() {
        let mut file =
            riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)), chunk(b"data", &pcm_bytes(&[4, 5]))]);
        let at = file.len() - 8;
        file[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        file[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let wav = parse(&file).unwrap();
        assert!(!wav.truncated);
        assert_eq!(wav.decode().unwrap(), vec![4, 5]);
    }

    #[test]
    fn truncated_fmt_is_an_error() {
        let mut file = riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16))]);
        file.truncate(file.len() - 4);
        assert_eq!(parse(&file), Err(WavError::TruncatedChunk { id: *b"fmt ", declared: 16, available: 12 }));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(parse(b""), Err(WavError::NotRiff));
        assert_eq!(parse(b"RIFX\0\0\0\0WAVE"), Err(WavError::NotRiff));
        assert_eq!(parse(b"RIFF\x04\0\0\0AVI "), Err(WavError::NotWave { form: *b"AVI " }));
        let fmt = chunk(b"fmt ", &fmt_body(1, 1, 8000, 16));
        let data = chunk(b"data", &[0, 0]);
        assert_eq!(parse(&riff(std::slice::from_ref(&fmt))), Err(WavError::MissingData));
        assert_eq!(parse(&riff(std::slice::from_ref(&data))), Err(WavError::MissingFormat));
        assert_eq!(
            parse(&riff(&[fmt.clone(), fmt.clone(), data.clone()])),
            Err(WavError::DuplicateChunk { id: *b"fmt " })
        );
        assert_eq!(parse(&riff(&[fmt, data.clone(), data])), Err(WavError::DuplicateChunk { id: *b"data" }));
        assert_eq!(
            parse(&riff(&[chunk(b"fmt ", &[1, 0, 1, 0]), chunk(b"data", &[])])),
            Err(WavError::ShortFormat { len: 4, needed: 16 })
        );
    }

    #[test]
    fn describes_formats_for_error_messages() {
        let f = |tag, ch, rate, bits| {
            WavFormat { format_tag: Some(tag), channels: ch, sample_rate: rate, bits_per_sample: bits }
                .to_string()
        };
        assert_eq!(f(1, 2, 44100, 16), "44100 Hz stereo PCM16");
        assert_eq!(f(1, 1, 8000, 8), "8000 Hz mono PCM8");
        assert_eq!(f(3, 6, 48000, 32), "48000 Hz 6-channel 32-bit float");
        assert_eq!(f(6, 1, 8000, 8), "8000 Hz mono A-law");
        assert_eq!(f(0x55, 1, 8000, 0), "8000 Hz mono audio in format 0x0055");
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(wav) = parse(&bytes) {
                let _ = wav.decode();
            }
        }

        #[test]
        fn mutated_valid_files_never_panic(
            pos in 0usize..64,
            value in any::<u8>(),
            cut in 0usize..64,
        ) {
            let mut file = riff(&[chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)), chunk(b"data", &pcm_bytes(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))]);
            let n = file.len();
            file[pos % n] = value;
            file.truncate(n - cut % n);
            if let Ok(wav) = parse(&file) {
                prop_assert!(wav.data.len() <= file.len());
                let _ = wav.decode();
            }
        }
    }
}
