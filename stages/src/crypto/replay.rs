//! The anti-replay window of `crypto.open`: one per sender.
//!
//! Packets are indexed by `(key_epoch << 32) | seq`, a 40-bit counter that
//! only grows: the sender bumps the epoch whenever its 32-bit `seq` would go
//! backwards (wrap or restart), so the index never repeats. The window
//! remembers which of the last [`REPLAY_WINDOW`] indices below the highest
//! authentic one have been seen (RFC 6479-style bitmap, fixed size).
//!
//! The window is only updated with packets whose tag verified, so forged
//! packets can neither advance it nor mark indices as seen.

/// Indices remembered below the highest one seen.
pub const REPLAY_WINDOW: u64 = 1024;
const WORDS: usize = (REPLAY_WINDOW / 64) as usize;

/// Why a packet index is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Already seen.
    Duplicate,
    /// Further than the window below the highest index seen.
    TooOld,
}

/// A sliding bitmap over packet indices.
#[derive(Clone, Copy, Debug)]
pub struct ReplayWindow {
    highest: u64,
    bits: [u64; WORDS],
    started: bool,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: the first index is always new.
    pub const fn new() -> Self {
        ReplayWindow {
            highest: 0,
            bits: [0; WORDS],
            started: false,
        }
    }

    /// The index of a packet: epoch in bits 32..40, seq below.
    #[inline]
    pub fn index(epoch: u8, seq: u32) -> u64 {
        (u64::from(epoch) << 32) | u64::from(seq)
    }

    /// The highest index accepted so far, if any.
    pub fn highest(&self) -> Option<u64> {
        self.started.then_some(self.highest)
    }

    /// The epoch of the highest index accepted so far, if any.
    pub fn epoch(&self) -> Option<u8> {
        self.highest().map(|h| (h >> 32) as u8)
    }

    #[inline]
    fn position(idx: u64) -> (usize, u64) {
        let bit = idx % REPLAY_WINDOW;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    /// Whether `idx` may be accepted; does not change the window.
    #[inline]
    pub fn check(&self, idx: u64) -> Result<(), Refusal> {
        if !self.started || idx > self.highest {
            return Ok(());
        }
        if self.highest - idx >= REPLAY_WINDOW {
            return Err(Refusal::TooOld);
        }
        let (word, mask) = Self::position(idx);
        if self.bits[word] & mask != 0 {
            Err(Refusal::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Marks `idx` as seen (after [`check`](Self::check) passed and the
    /// packet authenticated), sliding the window forward if it is new.
    pub fn accept(&mut self, idx: u64) {
        if !self.started {
            self.bits = [0; WORDS];
            self.highest = idx;
            self.started = true;
        } else if idx > self.highest {
            let step = idx - self.highest;
            if step >= REPLAY_WINDOW {
                self.bits = [0; WORDS];
            } else {
                // The slots of the indices skipped over still hold bits from
                // one window ago: clear them.
                for i in self.highest + 1..=idx {
                    let (word, mask) = Self::position(i);
                    self.bits[word] &= !mask;
                }
            }
            self.highest = idx;
        }
        let (word, mask) = Self::position(idx);
        self.bits[word] |= mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_new_and_reordered_refuses_dups_and_old() {
        let mut w = ReplayWindow::new();
        for i in [10u64, 12, 11, 2000, 1500, 977] {
            assert_eq!(w.check(i), Ok(()), "{i}");
            w.accept(i);
        }
        assert_eq!(w.check(12), Err(Refusal::TooOld));
        assert_eq!(w.check(976), Err(Refusal::TooOld), "2000 - 976 = 1024");
        assert_eq!(w.check(977), Err(Refusal::Duplicate));
        assert_eq!(w.check(1500), Err(Refusal::Duplicate));
        assert_eq!(w.check(1501), Ok(()));
        assert_eq!(w.check(2001), Ok(()));
    }

    #[test]
    fn slots_reused_after_slide_are_cleared() {
        let mut w = ReplayWindow::new();
        w.accept(0);
        w.accept(5);
        // 1029 lands in the slot of 5; 1024 + 3 = 1027 in the slot of 3 (never seen).
        w.accept(1029);
        assert_eq!(w.check(1027), Ok(()));
        assert_eq!(w.check(1029), Err(Refusal::Duplicate));
        assert_eq!(w.check(6), Ok(()), "1029 - 6 < 1024, never seen");
        assert_eq!(w.check(5), Err(Refusal::TooOld));
    }

    #[test]
    fn epoch_index_orders_across_seq_wrap() {
        let last_of_epoch0 = ReplayWindow::index(0, u32::MAX);
        let first_of_epoch1 = ReplayWindow::index(1, 0);
        assert_eq!(first_of_epoch1 - last_of_epoch0, 1);
        let mut w = ReplayWindow::new();
        w.accept(first_of_epoch1);
        assert_eq!(w.check(last_of_epoch0), Ok(()));
        assert_eq!(w.epoch(), Some(1));
    }
}
