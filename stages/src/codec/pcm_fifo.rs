//! A fixed-capacity FIFO of samples, for stages whose output arrives in
//! chunks of a different size than the quantum (a 40 ms decoded frame
//! played out over two 20 ms quanta).

/// Ring of `f32` samples allocated once. Pushing more than fits drops the
/// oldest samples (bounded latency beats unbounded memory).
pub struct PcmFifo {
    buf: Box<[f32]>,
    read: usize,
    len: usize,
}

impl PcmFifo {
    pub fn new(capacity: usize) -> Self {
        PcmFifo {
            buf: vec![0.0; capacity.max(1)].into_boxed_slice(),
            read: 0,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Appends `samples`; returns how many samples were dropped (old ones to
    /// make room, or the oldest of `samples` when it alone overfills).
    pub fn push(&mut self, samples: &[f32]) -> usize {
        let cap = self.buf.len();
        // Only the newest `cap` samples can survive.
        let truncated = samples.len().saturating_sub(cap);
        let samples = &samples[truncated..];
        let overflow = (self.len + samples.len()).saturating_sub(cap);
        if overflow > 0 {
            self.read = (self.read + overflow) % cap;
            self.len -= overflow.min(self.len);
        }
        let mut write = (self.read + self.len) % cap;
        let mut rest = samples;
        while !rest.is_empty() {
            let n = (cap - write).min(rest.len());
            self.buf[write..write + n].copy_from_slice(&rest[..n]);
            write = (write + n) % cap;
            rest = &rest[n..];
        }
        self.len += samples.len();
        truncated + overflow
    }

    /// Fills `out` from the front; zero-fills what is missing. Returns how
    /// many samples came from the FIFO.
    pub fn pop_into(&mut self, out: &mut [f32]) -> usize {
        let cap = self.buf.len();
        let take = self.len.min(out.len());
        let mut done = 0;
        while done < take {
            let n = (cap - self.read).min(take - done);
            out[done..done + n].copy_from_slice(&self.buf[self.read..self.read + n]);
            self.read = (self.read + n) % cap;
            done += n;
        }
        self.len -= take;
        out[take..].fill(0.0);
        take
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_and_keeps_order() {
        let mut f = PcmFifo::new(5);
        assert_eq!(f.push(&[1.0, 2.0, 3.0]), 0);
        let mut o = [0.0; 2];
        assert_eq!(f.pop_into(&mut o), 2);
        assert_eq!(o, [1.0, 2.0]);
        assert_eq!(f.push(&[4.0, 5.0, 6.0, 7.0]), 0);
        let mut o = [9.0; 6];
        assert_eq!(f.pop_into(&mut o), 5);
        assert_eq!(o, [3.0, 4.0, 5.0, 6.0, 7.0, 0.0]);
        assert!(f.is_empty());
    }

    #[test]
    fn overflow_drops_oldest() {
        let mut f = PcmFifo::new(4);
        f.push(&[1.0, 2.0, 3.0]);
        assert_eq!(f.push(&[4.0, 5.0]), 1);
        let mut o = [0.0; 4];
        f.pop_into(&mut o);
        assert_eq!(o, [2.0, 3.0, 4.0, 5.0]);
        // A push larger than the whole FIFO keeps its newest samples.
        assert_eq!(f.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 2);
        f.pop_into(&mut o);
        assert_eq!(o, [3.0, 4.0, 5.0, 6.0]);
    }
}
