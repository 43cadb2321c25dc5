//! G.711 μ-law and A-law companding, bit-exact with the ITU-T G.191 reference.
//!
//! The reference is the Software Tool Library of ITU-T G.191 (`g711.c`:
//! `ulaw_compress`, `ulaw_expand`, `alaw_compress`, `alaw_expand`) applied to
//! 16-bit linear samples. It differs from some popular tables (CPython's
//! `audioop`, ffmpeg's μ-law encoder) on negative inputs, because G.191 takes
//! the one's complement of a negative sample rather than its negation: −1
//! encodes to μ-law `0x7F` ("negative zero"), not `0xFF`.
//!
//! ## How to use it
//!
//! Everything is a pure function. Per sample: [`ulaw_encode`],
//! [`ulaw_decode`], [`alaw_encode`], [`alaw_decode`], [`ulaw_to_alaw`],
//! [`alaw_to_ulaw`]. Per frame, into a buffer the caller owns: [`encode`],
//! [`decode`] and [`transcode`], which take a [`Law`] and return how many
//! samples they wrote, or [`G711Error::OutputTooSmall`] (and write nothing)
//! when the output cannot hold the whole input.
//!
//! ```
//! use voxproxy_core::g711::{self, Law};
//!
//! // One 20 ms Twilio frame: 160 μ-law bytes in, 160 PCM samples out.
//! let frame = [0xFFu8; 160];
//! let mut pcm = [0i16; 160];
//! assert_eq!(g711::decode(Law::Mu, &frame, &mut pcm), Ok(160));
//! assert!(pcm.iter().all(|&s| s == 0)); // 0xFF is μ-law silence
//!
//! // And back, or across to A-law for a PCMA backend.
//! let mut mu = [0u8; 160];
//! assert_eq!(g711::encode(Law::Mu, &pcm, &mut mu), Ok(160));
//! assert_eq!(mu, frame);
//! let mut a = [0u8; 160];
//! assert_eq!(g711::transcode(Law::Mu, Law::A, &mu, &mut a), Ok(160));
//! assert_eq!(a[0], 0xD5); // A-law silence
//!
//! // A short output is an error, not a partial write.
//! let mut small = [0i16; 80];
//! assert!(g711::decode(Law::Mu, &frame, &mut small).is_err());
//! ```
//!
//! ## Which codes are not round-trip exact
//!
//! Decoding then re-encoding returns the same code for every code except
//! μ-law `0x7F` ("−0"): both `0x7F` and `0xFF` decode to 0, and 0 encodes to
//! `0xFF`. A-law has no such pair (its smallest levels are ±8), so all 256
//! A-law codes survive the round trip.
//!
//! ## Transcoding
//!
//! [`ulaw_to_alaw`] and [`alaw_to_ulaw`] are defined as "G.191 expand, then
//! G.191 compress", not as the conversion tables printed in G.711 itself
//! (Tables 3 and 4), so that `transcode(from, to, x)` is exactly
//! `encode(to, decode(from, x))`, which is what a proxy that decodes and
//! re-encodes would produce and what the tests can check independently.
//! μ-law → A-law → μ-law is the identity except on μ-law's quietest segment
//! (codes `0x70..=0x7F` and `0xF0..=0xFF`, levels within ±120): there μ-law
//! steps by 8 and A-law by 16, so every other μ-law level moves by 8.

use core::fmt;

/// Which G.711 companding law a byte stream uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Law {
    /// μ-law (PCMU, RTP payload type 0): North America and Japan, and Twilio Media Streams.
    Mu,
    /// A-law (PCMA, RTP payload type 8): the rest of the world.
    A,
}

impl Law {
    /// The code for one linear sample under this law.
    #[must_use]
    #[inline]
    pub const fn encode(self, sample: i16) -> u8 {
        match self {
            Law::Mu => ulaw_encode(sample),
            Law::A => alaw_encode(sample),
        }
    }

    /// The linear sample one code of this law stands for.
    #[must_use]
    #[inline]
    pub const fn decode(self, code: u8) -> i16 {
        match self {
            Law::Mu => ulaw_decode(code),
            Law::A => alaw_decode(code),
        }
    }

    /// The code of the silent sample (linear 0) under this law: `0xFF` for μ-law, `0xD5` for A-law.
    #[must_use]
    pub const fn silence(self) -> u8 {
        self.encode(0)
    }
}

impl fmt::Display for Law {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Law::Mu => "μ-law",
            Law::A => "A-law",
        })
    }
}

/// What went wrong in a G.711 slice conversion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum G711Error {
    /// The output buffer is shorter than the input; nothing was written.
    OutputTooSmall {
        /// Samples in the input, which is how many the output must hold.
        input: usize,
        /// Samples the output buffer can hold.
        output: usize,
    },
}

impl fmt::Display for G711Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            G711Error::OutputTooSmall { input, output } => write!(
                f,
                "G.711 output buffer holds {output} samples but the input has {input}; \
                 give it at least {input}"
            ),
        }
    }
}

impl core::error::Error for G711Error {}

/// One μ-law code for one 16-bit linear sample (G.191 `ulaw_compress`).
///
/// μ-law keeps the 14 most significant bits; the sign of a negative sample is
/// removed by one's complement, so −1 gives `0x7F` and 0 gives `0xFF`.
#[must_use]
#[inline]
pub const fn ulaw_encode(sample: i16) -> u8 {
    // `sample ^ (sample >> 15)` is the one's complement of negative samples
    // and the sample itself otherwise; G.191 relies on exactly that.
    let sign = sample >> 15;
    let biased = ((sample ^ sign) >> 2) as i32 + 33;
    let biased = if biased > 0x1FFF { 0x1FFF } else { biased };
    // `biased` >= 33, so its bit length is 6..=13 and the segment 1..=8.
    let segment = (32 - biased.leading_zeros()) as i32 - 5;
    let step = (biased >> segment) & 0xF;
    let magnitude_code = 0x7F - (((segment - 1) << 4) | step);
    let sign_bit = if sample >= 0 { 0x80 } else { 0 };
    (magnitude_code | sign_bit) as u8
}

/// The 16-bit linear sample a μ-law code stands for (G.191 `ulaw_expand`).
///
/// Outputs lie in ±32124; `0x7F` and `0xFF` both give 0.
#[must_use]
#[inline]
pub const fn ulaw_decode(code: u8) -> i16 {
    let inverted = !code as i32;
    let exponent = (inverted >> 4) & 0x7;
    let mantissa = inverted & 0xF;
    // The segment's first level is 0x80 << exponent on a scale biased by 4 * 33.
    let magnitude = ((2 * mantissa + 33) << (exponent + 2)) - 4 * 33;
    (if code & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// One A-law code for one 16-bit linear sample (G.191 `alaw_compress`).
///
/// A-law keeps the 12 most significant bits and toggles the even bits of the
/// code (`^ 0x55`); 0 gives `0xD5` and −1 gives `0x55`.
#[must_use]
#[inline]
pub const fn alaw_encode(sample: i16) -> u8 {
    let sign = sample >> 15;
    let level = ((sample ^ sign) >> 4) as i32; // 0..=2047
    // Segments 0 and 1 share a step of one level, so the lowest 32 levels are their own code.
    let magnitude_code = if level < 32 {
        level
    } else {
        let exponent = (32 - level.leading_zeros()) as i32 - 4; // 2..=7
        (exponent << 4) | ((level >> (exponent - 1)) & 0xF)
    };
    let sign_bit = if sample >= 0 { 0x80 } else { 0 };
    ((magnitude_code | sign_bit) ^ 0x55) as u8
}

/// The 16-bit linear sample an A-law code stands for (G.191 `alaw_expand`).
///
/// Outputs lie in ±32256 and are never 0: the quietest levels are ±8.
#[must_use]
#[inline]
pub const fn alaw_decode(code: u8) -> i16 {
    let bits = (code ^ 0x55) as i32;
    let exponent = (bits >> 4) & 0x7;
    let mantissa = bits & 0xF;
    let magnitude =
        if exponent == 0 { (2 * mantissa + 1) << 3 } else { (2 * mantissa + 33) << (exponent + 2) };
    (if code & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// The A-law code for the level a μ-law code stands for (decode, then encode).
#[must_use]
#[inline]
pub const fn ulaw_to_alaw(code: u8) -> u8 {
    ULAW_TO_ALAW[code as usize]
}

/// The μ-law code for the level an A-law code stands for (decode, then encode).
#[must_use]
#[inline]
pub const fn alaw_to_ulaw(code: u8) -> u8 {
    ALAW_TO_ULAW[code as usize]
}

const ULAW_TO_ALAW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = alaw_encode(ulaw_decode(code as u8));
        code += 1;
    }
    table
};

const ALAW_TO_ULAW: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut code = 0;
    while code < 256 {
        table[code] = ulaw_encode(alaw_decode(code as u8));
        code += 1;
    }
    table
};

/// Encodes linear samples into `out`, one code per sample.
///
/// Returns the number of codes written (`pcm.len()`); `out` may be longer.
///
/// # Errors
///
/// [`G711Error::OutputTooSmall`] if `out` is shorter than `pcm`; nothing is written then.
pub fn encode(law: Law, pcm: &[i16], out: &mut [u8]) -> Result<usize, G711Error> {
    let out = fit(pcm.len(), out)?;
    match law {
        Law::Mu => {
            for (code, &sample) in out.iter_mut().zip(pcm) {
                *code = lanes::ulaw_encode(sample);
            }
        }
        Law::A => {
            for (code, &sample) in out.iter_mut().zip(pcm) {
                *code = lanes::alaw_encode(sample);
            }
        }
    }
    Ok(pcm.len())
}

/// Decodes codes into `out`, one linear sample per code.
///
/// Returns the number of samples written (`codes.len()`); `out` may be longer.
///
/// # Errors
///
/// [`G711Error::OutputTooSmall`] if `out` is shorter than `codes`; nothing is written then.
pub fn decode(law: Law, codes: &[u8], out: &mut [i16]) -> Result<usize, G711Error> {
    let out = fit(codes.len(), out)?;
    match law {
        Law::Mu => {
            for (sample, &code) in out.iter_mut().zip(codes) {
                *sample = lanes::ulaw_decode(code);
            }
        }
        Law::A => {
            for (sample, &code) in out.iter_mut().zip(codes) {
                *sample = lanes::alaw_decode(code);
            }
        }
    }
    Ok(codes.len())
}

/// Converts codes of law `from` into codes of law `to`, as decoding then encoding would.
///
/// With `from == to` it copies. Returns the number of codes written (`codes.len()`).
///
/// # Errors
///
/// [`G711Error::OutputTooSmall`] if `out` is shorter than `codes`; nothing is written then.
pub fn transcode(from: Law, to: Law, codes: &[u8], out: &mut [u8]) -> Result<usize, G711Error> {
    let out = fit(codes.len(), out)?;
    out.copy_from_slice(codes);
    transcode_in_place(from, to, out);
    Ok(codes.len())
}

/// Converts codes of law `from` into codes of law `to` where they lie.
pub fn transcode_in_place(from: Law, to: Law, codes: &mut [u8]) {
    let table = match (from, to) {
        (Law::Mu, Law::A) => &ULAW_TO_ALAW,
        (Law::A, Law::Mu) => &ALAW_TO_ULAW,
        (Law::Mu, Law::Mu) | (Law::A, Law::A) => return,
    };
    for code in codes {
        *code = table[usize::from(*code)];
    }
}

/// The bulk kernels behind the slice functions: the same mappings as the
/// per-sample functions, rewritten so that LLVM vectorizes a loop over them
/// with baseline SSE2 (no variable per-lane shifts, no `leading_zeros`, no
/// table gathers, no branches).
///
/// Both directions lean on the IEEE-754 single-precision layout, because a
/// G.711 code *is* a tiny floating-point number: 3 exponent bits and 4
/// mantissa bits.
///
/// - Decoding builds the f32 whose exponent and top mantissa bits are the
///   code's exponent and mantissa, so that the float's value is the segment's
///   level; adding 1.5 × 2²³ then leaves that integer in the low mantissa
///   bits, where an integer subtraction picks it up. This replaces the
///   per-lane shift `x << exponent` that SSE2 cannot do.
/// - Encoding converts the magnitude to f32 (`cvtdq2ps`) and reads the code's
///   exponent and mantissa straight out of the float's exponent and top
///   mantissa bits. This replaces the segment search (`leading_zeros`).
///
/// All conversions are exact: every integer involved is below 2²⁴.
mod lanes {
    /// 1.5 × 2²³: adding it to a float holding an integer |v| < 2²² leaves
    /// `MAGIC_BITS + v` in the float's bits.
    const MAGIC: f32 = 12_582_912.0;
    const MAGIC_BITS: i32 = 0x4B40_0000;

    /// The sign mask of a code: −1 when bit 7 is set (a positive level), else 0.
    #[inline(always)]
    fn positive_mask(code: u8) -> i16 {
        i16::from(code.cast_signed() >> 7)
    }

    /// `-level` from the float bits left by the magic addition; `clamp` is
    /// a no-op on the values that occur and lets LLVM narrow with `packssdw`.
    #[inline(always)]
    fn negated_level(magic_sum: f32) -> i16 {
        MAGIC_BITS.wrapping_sub(magic_sum.to_bits().cast_signed()).clamp(-32768, 32767) as i16
    }

    #[inline(always)]
    pub(super) fn ulaw_decode(code: u8) -> i16 {
        // The high half of the f32 2^(e+7) × (1 + (2m+1)/32) = (2m+33) << (e+2),
        // with e and m taken from the complemented code: 0x46FC - (code7 << 3).
        let high = 0x46FC - ((u16::from(code) << 3) & 0x3F8);
        let sum = f32::from_bits(u32::from(high) << 16) + (MAGIC - 132.0);
        let negative = negated_level(sum);
        let flip = positive_mask(code);
        (negative ^ flip).wrapping_sub(flip)
    }

    #[inline(always)]
    pub(super) fn alaw_decode(code: u8) -> i16 {
        let bits = u16::from((code ^ 0x55) & 0x7F);
        // Segment 0 has no implied leading one: give it segment 1's exponent
        // and take the leading one (256) back off afterwards.
        let segment_zero = bits < 16;
        let high = (bits << 3) + ((134 << 7) | 4) + if segment_zero { 128 } else { 0 };
        let sum = f32::from_bits(u32::from(high) << 16) + MAGIC;
        let negative = negated_level(sum) + if segment_zero { 256 } else { 0 };
        let flip = positive_mask(code);
        (negative ^ flip).wrapping_sub(flip)
    }

    #[inline(always)]
    pub(super) fn ulaw_encode(sample: i16) -> u8 {
        let sign = sample >> 15;
        let biased = (((sample ^ sign) >> 2) + 33).min(0x1FFF);
        // (biased_exponent << 7) | top 7 mantissa bits; the code is 0x7F
        // minus ((segment - 1) << 4 | top 4 mantissa bits).
        let high = (f32::from(biased).to_bits() >> 16) as u16;
        let magnitude_code = 2239 - (high >> 3);
        (magnitude_code | (!sign).cast_unsigned() & 0x80) as u8
    }

    #[inline(always)]
    pub(super) fn alaw_encode(sample: i16) -> u8 {
        let sign = sample >> 15;
        let level = (sample ^ sign) >> 4; // 0..=2047
        // Levels below 32 are their own code; the float path handles 32 and
        // up, so feed it at least 32 and add back how far below 32 we were.
        let high = (f32::from(level.max(32)).to_bits() >> 16) as u16;
        let magnitude_code = (high >> 3) - (2080 + 32) + level.min(32).cast_unsigned();
        ((magnitude_code | (!sign).cast_unsigned() & 0x80) ^ 0x55) as u8
    }
}

/// The first `needed` elements of `out`, or the error naming both lengths.
fn fit<T>(needed: usize, out: &mut [T]) -> Result<&mut [T], G711Error> {
    let available = out.len();
    out.get_mut(..needed).ok_or(G711Error::OutputTooSmall { input: needed, output: available })
}

#[cfg(test)]
mod tests {
    //! The reference here is a deliberately literal transcription of the loops
    //! in ITU-T G.191 `g711.c`, written with C's integer promotions spelled
    //! out (`short` operands become `int`, results are stored back into
    //! `short`). It shares nothing with the implementation above.

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// C's `short` -> `int` promotion, then `~`.
    fn c_not(x: i16) -> i32 {
        !i32::from(x)
    }

    fn ref_ulaw_compress(linbuf: &[i16], logbuf: &mut [i16]) {
        for n in 0..linbuf.len() {
            let mut absno: i16 = if linbuf[n] < 0 {
                ((c_not(linbuf[n]) >> 2) + 33) as i16
            } else {
                ((i32::from(linbuf[n]) >> 2) + 33) as i16
            };
            if absno > 0x1FFF {
                absno = 0x1FFF;
            }
            let mut i: i16 = absno >> 6;
            let mut segno: i16 = 1;
            while i != 0 {
                segno += 1;
                i >>= 1;
            }
            let high_nibble: i16 = 0x0008 - segno;
            let mut low_nibble: i16 = (absno >> segno) & 0x000F;
            low_nibble = 0x000F - low_nibble;
            logbuf[n] = (high_nibble << 4) | low_nibble;
            if linbuf[n] >= 0 {
                logbuf[n] |= 0x0080;
            }
        }
    }

    fn ref_ulaw_expand(logbuf: &[i16], linbuf: &mut [i16]) {
        for n in 0..logbuf.len() {
            let sign: i32 = if logbuf[n] < 0x0080 { -1 } else { 1 };
            let mut mantissa: i16 = c_not(logbuf[n]) as i16;
            let exponent: i16 = (mantissa >> 4) & 0x0007;
            let segment: i16 = exponent + 1;
            mantissa &= 0x000F;
            let step: i16 = 4 << segment;
            let step = i32::from(step);
            linbuf[n] =
                (sign * ((0x0080 << exponent) + step * i32::from(mantissa) + step / 2 - 4 * 33)) as i16;
        }
    }

    fn ref_alaw_compress(linbuf: &[i16], logbuf: &mut [i16]) {
        for n in 0..linbuf.len() {
            let mut ix: i16 = if linbuf[n] < 0 { (c_not(linbuf[n]) >> 4) as i16 } else { linbuf[n] >> 4 };
            if ix > 15 {
                let mut iexp: i16 = 1;
                while ix > 16 + 15 {
                    ix >>= 1;
                    iexp += 1;
                }
                ix -= 16;
                ix += iexp << 4;
            }
            if linbuf[n] >= 0 {
                ix |= 0x0080;
            }
            logbuf[n] = ix ^ 0x0055;
        }
    }

    fn ref_alaw_expand(logbuf: &[i16], linbuf: &mut [i16]) {
        for n in 0..logbuf.len() {
            let mut ix: i16 = logbuf[n] ^ 0x0055;
            ix &= 0x007F;
            let iexp: i16 = ix >> 4;
            let mut mant: i16 = ix & 0x000F;
            if iexp > 0 {
                mant += 16;
            }
            mant = (mant << 4) + 0x0008;
            if iexp > 1 {
                mant <<= iexp - 1;
            }
            linbuf[n] = if logbuf[n] > 127 { mant } else { -mant };
        }
    }

    fn all_pcm() -> Vec<i16> {
        (i16::MIN..=i16::MAX).collect()
    }

    fn all_codes() -> Vec<u8> {
        (0..=u8::MAX).collect()
    }

    /// The reference's output codes, as bytes (G.191 keeps them in `short`s).
    fn ref_compress(law: Law, pcm: &[i16]) -> Vec<u8> {
        let mut log = vec![0i16; pcm.len()];
        match law {
            Law::Mu => ref_ulaw_compress(pcm, &mut log),
            Law::A => ref_alaw_compress(pcm, &mut log),
        }
        log.iter().map(|&c| u8::try_from(c).expect("G.191 codes are 8 bits")).collect()
    }

    fn ref_expand(law: Law, codes: &[u8]) -> Vec<i16> {
        let log: Vec<i16> = codes.iter().map(|&c| i16::from(c)).collect();
        let mut lin = vec![0i16; codes.len()];
        match law {
            Law::Mu => ref_ulaw_expand(&log, &mut lin),
            Law::A => ref_alaw_expand(&log, &mut lin),
        }
        lin
    }

    #[test]
    fn reference_transcription_matches_known_values() {
        // Spot values from G.711's tables, to check the transcription itself.
        assert_eq!(ref_compress(Law::Mu, &[0, -1, 32767, -32768]), [0xFF, 0x7F, 0x80, 0x00]);
        assert_eq!(ref_compress(Law::A, &[0, -1, 32767, -32768]), [0xD5, 0x55, 0xAA, 0x2A]);
        assert_eq!(ref_expand(Law::Mu, &[0xFF, 0x7F, 0x80, 0x00, 0xFE]), [0, 0, 32124, -32124, 8]);
        assert_eq!(ref_expand(Law::A, &[0xD5, 0x55, 0xAA, 0x2A]), [8, -8, 32256, -32256]);
    }

    #[test]
    fn per_sample_encoders_match_g191_on_every_pcm_value() {
        let pcm = all_pcm();
        for law in [Law::Mu, Law::A] {
            let expected = ref_compress(law, &pcm);
            for (&sample, &want) in pcm.iter().zip(&expected) {
                assert_eq!(law.encode(sample), want, "{law} encode({sample})");
            }
        }
        for (&sample, &want) in pcm.iter().zip(&ref_compress(Law::Mu, &pcm)) {
            assert_eq!(ulaw_encode(sample), want, "ulaw_encode({sample})");
        }
        for (&sample, &want) in pcm.iter().zip(&ref_compress(Law::A, &pcm)) {
            assert_eq!(alaw_encode(sample), want, "alaw_encode({sample})");
        }
    }

    #[test]
    fn per_sample_decoders_match_g191_on_every_code() {
        let codes = all_codes();
        for (&code, &want) in codes.iter().zip(&ref_expand(Law::Mu, &codes)) {
            assert_eq!(ulaw_decode(code), want, "ulaw_decode({code:#04x})");
            assert_eq!(Law::Mu.decode(code), want);
        }
        for (&code, &want) in codes.iter().zip(&ref_expand(Law::A, &codes)) {
            assert_eq!(alaw_decode(code), want, "alaw_decode({code:#04x})");
            assert_eq!(Law::A.decode(code), want);
        }
    }

    #[test]
    fn slice_encoders_match_g191_on_every_pcm_value() {
        let pcm = all_pcm();
        for law in [Law::Mu, Law::A] {
            let mut out = vec![0u8; pcm.len()];
            assert_eq!(encode(law, &pcm, &mut out), Ok(pcm.len()));
            assert!(out == ref_compress(law, &pcm), "{law} slice encode differs from G.191");
        }
    }

    #[test]
    fn slice_decoders_match_g191_on_every_code() {
        // Several copies in varying order, so any block-wise fast path sees
        // every code in every lane position and a ragged tail.
        let mut codes = Vec::new();
        for k in 0..67u8 {
            codes.extend(all_codes().iter().map(|&c| c.wrapping_mul(29).wrapping_add(k)));
        }
        for law in [Law::Mu, Law::A] {
            let mut out = vec![0i16; codes.len()];
            assert_eq!(decode(law, &codes, &mut out), Ok(codes.len()));
            assert!(out == ref_expand(law, &codes), "{law} slice decode differs from G.191");
        }
    }

    #[test]
    fn bulk_kernels_match_g191_one_value_at_a_time() {
        // Called directly, so no vector loop can hide a wrong scalar tail.
        let pcm = all_pcm();
        let (mu, a) = (ref_compress(Law::Mu, &pcm), ref_compress(Law::A, &pcm));
        for (i, &sample) in pcm.iter().enumerate() {
            assert_eq!(lanes::ulaw_encode(sample), mu[i], "μ-law {sample}");
            assert_eq!(lanes::alaw_encode(sample), a[i], "A-law {sample}");
        }
        let codes = all_codes();
        let (mu, a) = (ref_expand(Law::Mu, &codes), ref_expand(Law::A, &codes));
        for (i, &code) in codes.iter().enumerate() {
            assert_eq!(lanes::ulaw_decode(code), mu[i], "μ-law {code:#04x}");
            assert_eq!(lanes::alaw_decode(code), a[i], "A-law {code:#04x}");
        }
    }

    #[test]
    fn round_trip_is_identity_except_mu_law_negative_zero() {
        for code in all_codes() {
            let expected_mu = if code == 0x7F { 0xFF } else { code };
            assert_eq!(ulaw_encode(ulaw_decode(code)), expected_mu, "μ-law {code:#04x}");
            assert_eq!(alaw_encode(alaw_decode(code)), code, "A-law {code:#04x}");
        }
        // The pair that collapses, per the reference itself.
        assert_eq!(ref_expand(Law::Mu, &[0x7F, 0xFF]), [0, 0]);
        // No other μ-law level is shared by two codes.
        let mut levels = ref_expand(Law::Mu, &all_codes());
        levels.sort_unstable();
        levels.dedup();
        assert_eq!(levels.len(), 255);
    }

    #[test]
    fn transcoding_is_g191_decode_then_encode() {
        for code in all_codes() {
            let via_mu = ref_compress(Law::A, &ref_expand(Law::Mu, &[code]));
            assert_eq!(ulaw_to_alaw(code), via_mu[0], "μ→A {code:#04x}");
            let via_a = ref_compress(Law::Mu, &ref_expand(Law::A, &[code]));
            assert_eq!(alaw_to_ulaw(code), via_a[0], "A→μ {code:#04x}");
        }
    }

    #[test]
    fn mu_to_a_to_mu_moves_only_the_finest_mu_law_levels() {
        for code in all_codes() {
            let back = alaw_to_ulaw(ulaw_to_alaw(code));
            let finest_segment = code & 0x70 == 0x70;
            if finest_segment {
                let moved = (i32::from(ulaw_decode(back)) - i32::from(ulaw_decode(code))).abs();
                assert!(moved <= 8, "μ-law {code:#04x} moved by {moved}");
            } else {
                assert_eq!(back, code, "μ-law {code:#04x}");
            }
        }
    }

    #[test]
    fn silence_codes() {
        assert_eq!(Law::Mu.silence(), 0xFF);
        assert_eq!(Law::A.silence(), 0xD5);
    }

    #[test]
    fn short_output_is_an_error_naming_both_lengths() {
        let mut out = [0xAAu8; 3];
        let err = encode(Law::Mu, &[1, 2, 3, 4], &mut out).unwrap_err();
        assert_eq!(err, G711Error::OutputTooSmall { input: 4, output: 3 });
        assert_eq!(out, [0xAA; 3], "nothing written on error");
        let text = std::format!("{err}");
        assert!(text.contains('4') && text.contains('3'), "{text}");
        let mut pcm = [7i16; 1];
        assert!(decode(Law::A, &[1, 2], &mut pcm).is_err());
        assert_eq!(pcm, [7]);
        let mut codes = [0u8; 0];
        assert_eq!(
            transcode(Law::Mu, Law::A, &[9], &mut codes),
            Err(G711Error::OutputTooSmall { input: 1, output: 0 })
        );
    }

    proptest! {
        #[test]
        fn slices_agree_with_per_sample(pcm in proptest::collection::vec(any::<i16>(), 0..600), extra in 0usize..5) {
            for law in [Law::Mu, Law::A] {
                let mut codes = vec![0u8; pcm.len() + extra];
                prop_assert_eq!(encode(law, &pcm, &mut codes), Ok(pcm.len()));
                prop_assert_eq!(&codes[pcm.len()..], &vec![0u8; extra][..], "wrote past the input length");
                let codes = &codes[..pcm.len()];
                prop_assert_eq!(codes, &ref_compress(law, &pcm)[..]);
                let mut back = vec![0i16; pcm.len()];
                prop_assert_eq!(decode(law, codes, &mut back), Ok(pcm.len()));
                prop_assert_eq!(&back, &ref_expand(law, codes));
            }
        }

        #[test]
        fn slice_transcode_agrees_with_decode_then_encode(codes in proptest::collection::vec(any::<u8>(), 0..600)) {
            for (from, to) in [(Law::Mu, Law::A), (Law::A, Law::Mu), (Law::Mu, Law::Mu), (Law::A, Law::A)] {
                let mut out = vec![0u8; codes.len()];
                prop_assert_eq!(transcode(from, to, &codes, &mut out), Ok(codes.len()));
                let expected = if from == to {
                    codes.clone()
                } else {
                    ref_compress(to, &ref_expand(from, &codes))
                };
                prop_assert_eq!(&out, &expected);
                let mut in_place = codes.clone();
                transcode_in_place(from, to, &mut in_place);
                prop_assert_eq!(&in_place, &expected);
            }
        }
    }
}
