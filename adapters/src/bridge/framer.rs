//! Re-cuts a stream of samples into fixed-size frames.
//!
//! The backend may send 10, 20, 30 or 40 ms packets, and Twilio may send
//! frames of any size; Twilio gets 20 ms `media` frames from us and the VAD
//! wants exact 20 ms frames. A [`Framer`] carries the remainder between
//! pushes in a fixed array, so re-cutting allocates nothing.

/// Accumulates samples and hands out complete frames of `N` samples.
#[derive(Clone, Debug)]
pub struct Framer<T, const N: usize> {
    buf: [T; N],
    len: usize,
}

impl<T: Copy + Default, const N: usize> Default for Framer<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> Framer<T, N> {
    /// An empty framer.
    #[must_use]
    pub fn new() -> Self {
        Framer { buf: [T::default(); N], len: 0 }
    }

    /// Appends `samples`, calling `emit` once per completed frame, in order.
    pub fn push(&mut self, mut samples: &[T], mut emit: impl FnMut(&[T; N])) {
        while !samples.is_empty() {
            // A whole frame with nothing buffered (the common case: 20 ms
            // packets, or aligned 10 ms pairs already joined) is handed on
            // where it lies, not copied into the buffer first.
            if self.len == 0
                && let Some((frame, rest)) = samples.split_first_chunk::<N>()
            {
                emit(frame);
                samples = rest;
                continue;
            }
            let take = (N - self.len).min(samples.len());
            self.buf[self.len..self.len + take].copy_from_slice(&samples[..take]);
            self.len += take;
            samples = &samples[take..];
            if self.len == N {
                emit(&self.buf);
                self.len = 0;
            }
        }
    }

    /// Samples waiting for a frame to complete.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.len
    }

    /// Takes the incomplete remainder (at the end of a talkspurt, a short
    /// frame now is better than holding audio back), leaving the framer empty.
    pub fn take_partial(&mut self) -> Option<&[T]> {
        if self.len == 0 {
            return None;
        }
        let len = core::mem::take(&mut self.len);
        Some(&self.buf[..len])
    }

    /// Drops the remainder.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ten_ms_packets_pair_into_twenty_ms_frames() {
        let mut f = Framer::<u8, 160>::new();
        let mut frames = Vec::new();
        for i in 0..4u8 {
            f.push(&[i; 80], |fr| frames.push(fr.to_vec()));
        }
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0][..80], &[0; 80]);
        assert_eq!(&frames[0][80..], &[1; 80]);
        assert_eq!(&frames[1][80..], &[3; 80]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn thirty_ms_packets_carry_the_remainder() {
        let mut f = Framer::<u8, 160>::new();
        let mut n = 0;
        f.push(&[7; 240], |_| n += 1);
        assert_eq!((n, f.buffered()), (1, 80));
        f.push(&[7; 240], |_| n += 1);
        assert_eq!((n, f.buffered()), (3, 0));
        assert_eq!(f.take_partial(), None);
    }

    proptest! {
        /// Whatever the packet sizes, the frames plus the remainder are the
        /// input, in order, and every emitted frame is full.
        #[test]
        fn recutting_preserves_the_stream(chunks in proptest::collection::vec(proptest::collection::vec(any::<i16>(), 0..400), 0..40)) {
            let mut f = Framer::<i16, 160>::new();
            let mut out = Vec::new();
            for c in &chunks {
                f.push(c, |fr| out.extend_from_slice(fr));
            }
            prop_assert_eq!(out.len() % 160, 0);
            if let Some(rest) = f.take_partial() {
                out.extend_from_slice(rest);
            }
            let input: Vec<i16> = chunks.concat();
            prop_assert_eq!(out, input);
        }
    }
}
