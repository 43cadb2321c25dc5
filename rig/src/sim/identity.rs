//! Frame identity carried in the audio itself, so that a frame can be
//! recognised when it comes back through a proxy and an echo backend that
//! only pass μ-law bytes through.
//!
//! A [`FrameIdentity`] (call index and frame number) is written as
//! [`IDENTITY_LEN`] μ-law bytes at the start of each 20 ms frame. Each byte
//! carries one 4-bit nibble as `0xF0 | nibble`: μ-law codes `0xF0`–`0xFF` are
//! the quietest positive levels (at most 120 of 32,767, below −48 dBFS), so
//! the 2 ms of identity neither sounds nor looks like speech to a VAD, and
//! they survive μ-law → linear → μ-law transcoding unchanged (unlike `0x7F`,
//! negative zero, which comes back as `0xFF`). The nibbles are a 16-bit magic
//! (`5 A 3 C`), the call index (16 bits), the frame number (20 bits: 5.8 hours
//! of 20 ms frames) and a 12-bit check of the two numbers, most significant
//! nibble first. Random audio decodes as an identity at a given offset with
//! odds below 2⁻⁶⁴, and quiet audio made only of `0xF_` codes below 2⁻²⁸.
//!
//! [`IdentityScanner`] finds every identity in a received payload at any
//! offset, including one split across two payloads, since a proxy may
//! repacketize audio on boundaries of its own.
//!
//! ```
//! use voxproxy_rig::sim::identity::{FrameIdentity, IDENTITY_LEN, IdentityScanner};
//!
//! let id = FrameIdentity::new(7, 1234).unwrap();
//! let mut frame = [0xffu8; 160];
//! id.write(&mut frame);
//! assert_eq!(FrameIdentity::read(&frame), Some(id));
//!
//! // Found again after being cut at an arbitrary point.
//! let mut scanner = IdentityScanner::new();
//! let mut found = Vec::new();
//! scanner.scan(&frame[..5], |id| found.push(id));
//! scanner.scan(&frame[5..], |id| found.push(id));
//! assert_eq!(found, [id]);
//! # let _ = IDENTITY_LEN;
//! ```

/// Bytes of μ-law an identity takes at the start of a frame.
pub const IDENTITY_LEN: usize = 16;

/// Largest call index an identity carries.
pub const MAX_CALL: u32 = u16::MAX as u32;

/// Largest frame number an identity carries (20 bits).
pub const MAX_FRAME: u32 = (1 << 20) - 1;

const MAGIC: [u8; 4] = [0x5, 0xA, 0x3, 0xC];
const HIGH: u8 = 0xF0;

/// Which call and which of its frames a piece of audio is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameIdentity {
    /// Index of the call in the run, from 0.
    pub call: u16,
    /// Frame number within the call, from 0 (20 bits).
    pub frame: u32,
}

impl FrameIdentity {
    /// An identity, or `None` if `frame` exceeds [`MAX_FRAME`].
    #[must_use]
    pub fn new(call: u16, frame: u32) -> Option<Self> {
        (frame <= MAX_FRAME).then_some(FrameIdentity { call, frame })
    }

    /// Writes the identity over the first [`IDENTITY_LEN`] bytes of `out`
    /// (fewer if `out` is shorter).
    pub fn write(&self, out: &mut [u8]) {
        let nibbles = self.nibbles();
        for (byte, nibble) in out.iter_mut().zip(nibbles) {
            *byte = HIGH | nibble;
        }
    }

    /// The identity at the start of `bytes`, if there is a valid one.
    #[must_use]
    pub fn read(bytes: &[u8]) -> Option<FrameIdentity> {
        let bytes: &[u8; IDENTITY_LEN] = bytes.first_chunk()?;
        if bytes.iter().any(|&b| b & HIGH != HIGH) {
            return None;
        }
        let nibble = |i: usize| bytes[i] & 0x0f;
        if (0..4).any(|i| nibble(i) != MAGIC[i]) {
            return None;
        }
        let number = |from: usize, count: usize| {
            (from..from + count).fold(0u32, |n, i| (n << 4) | u32::from(nibble(i)))
        };
        let call = number(4, 4) as u16;
        let frame = number(8, 5);
        let check = number(13, 3);
        (check == check_of(call, frame)).then_some(FrameIdentity { call, frame })
    }

    fn nibbles(&self) -> [u8; IDENTITY_LEN] {
        let mut n = [0u8; IDENTITY_LEN];
        n[..4].copy_from_slice(&MAGIC);
        let mut put = |from: usize, count: usize, value: u32| {
            for k in 0..count {
                n[from + k] = ((value >> (4 * (count - 1 - k))) & 0xf) as u8;
            }
        };
        put(4, 4, u32::from(self.call));
        put(8, 5, self.frame);
        put(13, 3, check_of(self.call, self.frame));
        n
    }
}

/// 12 bits that depend on every bit of the call index and frame number.
fn check_of(call: u16, frame: u32) -> u32 {
    let key = (u64::from(call) << 20) | u64::from(frame & MAX_FRAME);
    (key.wrapping_add(0x1234_5678).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 52) as u32
}

/// Finds identities in a stream of payloads, including ones split across
/// two payloads. One per call and direction; allocation-free.
#[derive(Clone, Debug, Default)]
pub struct IdentityScanner {
    /// The last `IDENTITY_LEN - 1` bytes of the previous payload.
    carry: [u8; IDENTITY_LEN - 1],
    carry_len: usize,
}

impl IdentityScanner {
    /// A scanner with nothing carried over.
    #[must_use]
    pub fn new() -> Self {
        IdentityScanner::default()
    }

    /// Calls `found` for every identity in `payload` (and in the seam with
    /// the previous payload), in order.
    pub fn scan(&mut self, payload: &[u8], mut found: impl FnMut(FrameIdentity)) {
        const FIRST: u8 = HIGH | MAGIC[0];
        // The seam: identities that start in the carried bytes. Each of
        // those ends in `payload`, so none was reported before.
        if self.carry_len > 0 {
            let mut seam = [0u8; 2 * IDENTITY_LEN];
            let take = payload.len().min(IDENTITY_LEN);
            seam[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            seam[self.carry_len..self.carry_len + take].copy_from_slice(&payload[..take]);
            let seam = &seam[..self.carry_len + take];
            for start in 0..self.carry_len {
                if seam[start] == FIRST
                    && let Some(id) = seam.get(start..).and_then(FrameIdentity::read)
                {
                    found(id);
                }
            }
        }
        let mut at = 0;
        while at + IDENTITY_LEN <= payload.len() {
            if payload[at] == FIRST
                && let Some(id) = FrameIdentity::read(&payload[at..])
            {
                found(id);
                at += IDENTITY_LEN;
                continue;
            }
            at += 1;
        }
        self.remember_tail(payload);
    }

    /// Forgets the carried bytes (after a `clear`, or a gap).
    pub fn reset(&mut self) {
        self.carry_len = 0;
    }

    fn remember_tail(&mut self, payload: &[u8]) {
        let keep = IDENTITY_LEN - 1;
        if payload.len() >= keep {
            self.carry.copy_from_slice(&payload[payload.len() - keep..]);
            self.carry_len = keep;
        } else {
            // A short payload extends the carry; keep its newest bytes.
            let total = self.carry_len + payload.len();
            let mut joined = [0u8; 2 * IDENTITY_LEN];
            joined[..self.carry_len].copy_from_slice(&self.carry[..self.carry_len]);
            joined[self.carry_len..total].copy_from_slice(payload);
            let from = total.saturating_sub(keep);
            self.carry_len = total - from;
            self.carry[..self.carry_len].copy_from_slice(&joined[from..total]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_the_documented_one() {
        let id = FrameIdentity::new(0x1234, 0xABCDE).unwrap();
        let mut out = [0u8; IDENTITY_LEN];
        id.write(&mut out);
        assert_eq!(
            &out[..13],
            &[0xF5, 0xFA, 0xF3, 0xFC, 0xF1, 0xF2, 0xF3, 0xF4, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE]
        );
        assert!(out.iter().all(|&b| b >= 0xF0));
    }

    #[test]
    fn identity_bytes_are_quiet_and_survive_transcoding() {
        use voxproxy_core::g711::{ulaw_decode, ulaw_encode};
        for code in 0xF0u8..=0xFF {
            assert!(ulaw_decode(code).unsigned_abs() <= 120, "code {code:#x} is quiet");
            assert_eq!(ulaw_encode(ulaw_decode(code)), code);
        }
    }

    #[test]
    fn frame_number_is_bounded() {
        assert!(FrameIdentity::new(0, MAX_FRAME).is_some());
        assert!(FrameIdentity::new(0, MAX_FRAME + 1).is_none());
    }

    #[test]
    fn a_damaged_identity_does_not_decode() {
        let id = FrameIdentity::new(3, 99).unwrap();
        let mut out = [0u8; IDENTITY_LEN];
        id.write(&mut out);
        for i in 0..IDENTITY_LEN {
            for flip in [0x01u8, 0x08, 0x10, 0x80] {
                let mut damaged = out;
                damaged[i] ^= flip;
                assert_eq!(FrameIdentity::read(&damaged), None, "byte {i} ^ {flip:#x}");
            }
        }
        assert_eq!(FrameIdentity::read(&out[..IDENTITY_LEN - 1]), None, "too short");
    }

    #[test]
    fn silence_and_tones_hold_no_identity() {
        let mut found = 0;
        let mut scanner = IdentityScanner::new();
        scanner.scan(&[0xFF; 4000], |_| found += 1);
        let tone: Vec<u8> = (0..8000)
            .map(|i| voxproxy_core::g711::ulaw_encode((f64::from(i) * 0.3).sin().mul_add(8000.0, 0.0) as i16))
            .collect();
        scanner.scan(&tone, |_| found += 1);
        assert_eq!(found, 0);
    }

    #[test]
    fn scanner_finds_identities_at_any_offset_and_across_payloads() {
        let ids: Vec<FrameIdentity> = (0..5).map(|f| FrameIdentity::new(9, f).unwrap()).collect();
        let mut stream = Vec::new();
        for id in &ids {
            let mut frame = [0x55u8; 160];
            id.write(&mut frame);
            stream.extend_from_slice(&frame);
        }
        for cut in [1usize, 7, 15, 16, 17, 80, 100, 159, 160, 240] {
            let mut scanner = IdentityScanner::new();
            let mut found = Vec::new();
            // Skew the stream by 3 bytes and cut it into pieces of `cut` bytes.
            let mut skewed = vec![0x55u8; 3];
            skewed.extend_from_slice(&stream);
            for piece in skewed.chunks(cut) {
                scanner.scan(piece, |id| found.push(id));
            }
            assert_eq!(found, ids, "pieces of {cut} bytes");
        }
    }

    proptest! {
        #[test]
        fn round_trip(call: u16, frame in 0..=MAX_FRAME) {
            let id = FrameIdentity::new(call, frame).unwrap();
            let mut out = [0u8; IDENTITY_LEN];
            id.write(&mut out);
            prop_assert_eq!(FrameIdentity::read(&out), Some(id));
        }

        #[test]
        fn random_bytes_do_not_decode(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut scanner = IdentityScanner::new();
            let mut found = 0;
            scanner.scan(&bytes, |_| found += 1);
            prop_assert_eq!(found, 0);
        }
    }
}
