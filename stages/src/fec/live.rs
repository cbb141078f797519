//! A live RaptorQ ratio: one stage (the quality controller's
//! `quality.adapt`) publishes the repair ratio, and with it optionally the
//! block size, and `fec.raptorq_encode` reads them at the start of each
//! block. It publishes too whether repair may ride in source packets
//! (its receivers take codec `0x41`), which `wire.packetize` reads each
//! cycle. Lock-free: an atomic word and an atomic flag.
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
//! assert!(!cell.riding());
//! cell.set_riding(true);
//! assert!(cell.riding());
//! ```

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Highest ratio a cell takes, repair symbols per 100 source symbols (the
/// encoder's `fec_ratio` range).
pub const MAX_LIVE_RATIO: u8 = 200;

/// Largest block size a cell takes (the encoder's `frames_per_block` range).
pub const MAX_LIVE_BLOCK: u8 = super::block::MAX_SOURCE_SYMBOLS as u8;

/// The cell: a word 0 until the first `set`, then the ratio plus one in
/// the low byte, and the block size (0: the encoder's own) in the next;
/// and whether repair may ride.
#[derive(Debug, Default)]
pub struct FecLive {
    word: AtomicU32,
    riding: AtomicBool,
}

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
        self.word
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
        self.word.store(word, Ordering::Release);
        Ok(())
    }

    /// The ratio last published, if any.
    pub fn get(&self) -> Option<u8> {
        match self.word.load(Ordering::Acquire) & 0xff {
            0 => None,
            v => Some((v - 1) as u8),
        }
    }

    /// The block size last published with a ratio ([`FecLive::set_block`]);
    /// `None` when none was (the encoder keeps its `frames_per_block`).
    pub fn block(&self) -> Option<u8> {
        match (self.word.load(Ordering::Acquire) >> 8) as u8 {
            0 => None,
            k => Some(k),
        }
    }

    /// Publishes whether repair may ride in source packets (every receiver
    /// reporting lately takes codec `0x41`).
    pub fn set_riding(&self, riding: bool) {
        self.riding.store(riding, Ordering::Release);
    }

    /// Whether repair may ride in source packets; false until published.
    pub fn riding(&self) -> bool {
        self.riding.load(Ordering::Acquire)
    }
}
