//! A live RaptorQ ratio: one stage (the quality controller's
//! `quality.adapt`) publishes the repair ratio, and with it optionally the
//! block size, and `fec.raptorq_encode` reads them at the start of each
//! block. Lock-free: one atomic word.
//!
//! ```
//! use wzp_stages::fec::live::FecLive;
//! let cell = FecLive::new();
//! assert_eq!(cell.get(), None);
//! cell.set(100).unwrap();
//! assert_eq!(cell.get(), Some(100));
//! assert_eq!(cell.block(), None); // the encoder's own frames_per_block
//! cell.set_block(100, 2).unwrap();
//! assert_eq!((cell.get(), cell.block()), (Some(100), Some(2)));
//! assert!(cell.set(201).is_err());
//! assert!(cell.set_block(100, 65).is_err());
//! ```

use std::sync::atomic::{AtomicU32, Ordering};

/// Highest ratio a cell takes, repair symbols per 100 source symbols (the
/// encoder's `fec_ratio` range).
pub const MAX_LIVE_RATIO: u8 = 200;

/// Largest block size a cell takes (the encoder's `frames_per_block` range).
pub const MAX_LIVE_BLOCK: u8 = super::block::MAX_SOURCE_SYMBOLS as u8;

/// The cell: 0 until the first `set`, then the ratio plus one in the low
/// byte, and the block size (0: the encoder's own) in the next.
#[derive(Debug, Default)]
pub struct FecLive(AtomicU32);

impl FecLive {
    /// An empty cell: the encoder keeps its build-time `fec_ratio` until the
    /// first `set`.
    pub fn new() -> FecLive {
        FecLive::default()
    }

    /// Publishes a ratio (repair symbols per 100 source symbols, 0 = no
    /// repair); refused, and nothing changes, above [`MAX_LIVE_RATIO`].
    pub fn set(&self, ratio_percent: u8) -> Result<(), String> {
        if ratio_percent > MAX_LIVE_RATIO {
            return Err(format!(
                "fec ratio {ratio_percent} % is above {MAX_LIVE_RATIO} %"
            ));
        }
        self.0
            .store(u32::from(ratio_percent) + 1, Ordering::Release);
        Ok(())
    }

    /// Publishes a ratio and the block size (source frames per block) it
    /// goes with; refused, and nothing changes, for a ratio above
    /// [`MAX_LIVE_RATIO`] or a block size outside 1..=[`MAX_LIVE_BLOCK`].
    pub fn set_block(&self, ratio_percent: u8, frames_per_block: u8) -> Result<(), String> {
        if ratio_percent > MAX_LIVE_RATIO {
            return Err(format!(
                "fec ratio {ratio_percent} % is above {MAX_LIVE_RATIO} %"
            ));
        }
        if !(1..=MAX_LIVE_BLOCK).contains(&frames_per_block) {
            return Err(format!(
                "{frames_per_block} frames per block is outside 1..={MAX_LIVE_BLOCK}"
            ));
        }
        let word = (u32::from(ratio_percent) + 1) | u32::from(frames_per_block) << 8;
        self.0.store(word, Ordering::Release);
        Ok(())
    }

    /// The ratio last published, if any.
    pub fn get(&self) -> Option<u8> {
        match self.0.load(Ordering::Acquire) & 0xff {
            0 => None,
            v => Some((v - 1) as u8),
        }
    }

    /// The block size last published with a ratio ([`FecLive::set_block`]);
    /// `None` when none was (the encoder keeps its `frames_per_block`).
    pub fn block(&self) -> Option<u8> {
        match (self.0.load(Ordering::Acquire) >> 8) as u8 {
            0 => None,
            k => Some(k),
        }
    }
}
