//! A worker's spare byte buffers, lent to whoever has bytes waiting (a
//! media socket's read or write, an io_uring stream's write) and given
//! back once they are empty, so a call at rest between messages holds
//! none. One type for every such pool: a stack, bounded, that remembers
//! the fewest buffers it held since its last [`Spares::trim`], so a trim
//! frees exactly the ones nobody took in that interval (the bottom of the
//! stack) and a stall's surplus does not stay for the worker's life.
//! Taking and giving back allocate nothing.

/// At most `KEPT` spare buffers; more given back are freed.
#[derive(Debug, Default)]
pub(crate) struct Spares<const KEPT: usize> {
    buffers: Vec<Vec<u8>>,
    /// The fewest spares since the last trim: the bottom this many were
    /// not taken since.
    low: usize,
}

impl<const KEPT: usize> Spares<KEPT> {
    pub(crate) const fn new() -> Self {
        Spares { buffers: Vec::new(), low: 0 }
    }

    /// A spare buffer, as it was given back; `None` when there is none.
    pub(crate) fn take(&mut self) -> Option<Vec<u8>> {
        let buffer = self.buffers.pop();
        self.low = self.low.min(self.buffers.len());
        buffer
    }

    /// Keeps `buffer` for the next taker, unless `KEPT` are kept already.
    pub(crate) fn give(&mut self, buffer: Vec<u8>) {
        if self.buffers.len() < KEPT {
            self.buffers.push(buffer);
        }
    }

    /// Frees the spares not taken since the last trim.
    pub(crate) fn trim(&mut self) {
        self.buffers.drain(..self.low.min(self.buffers.len()));
        self.low = self.buffers.len();
    }

    /// How many are spare.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buffers.len()
    }

    /// Bytes the spares hold (capacity, not contents).
    pub(crate) fn bytes(&self) -> usize {
        self.buffers.iter().map(Vec::capacity).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_untaken_for_a_whole_interval_are_freed() {
        let mut pool = Spares::<8>::new();
        for _ in 0..5 {
            pool.give(vec![0; 512]);
        }
        pool.trim();
        assert_eq!(pool.len(), 5, "the first trim only starts the interval");
        let taken = [pool.take().unwrap(), pool.take().unwrap()];
        pool.trim();
        assert_eq!(pool.len(), 0, "the three never taken are freed");
        for buffer in taken {
            pool.give(buffer);
        }
        pool.trim();
        assert_eq!(pool.len(), 2, "given back during the interval: kept");
        for _ in 0..8 + 3 {
            pool.give(Vec::new());
        }
        assert_eq!(pool.len(), 8, "bounded");
    }
}
