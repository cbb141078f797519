//! A live RaptorQ ratio: one stage (the quality controller's
//! `quality.adapt`) publishes the repair ratio, `fec.raptorq_encode` reads
//! it at the start of each block. Lock-free: one atomic word.
//!
//! ```
//! use wzp_stages::fec::live::FecLive;
//! let cell = FecLive::new();
//! assert_eq!(cell.get(), None);
//! cell.set(100).unwrap();
//! assert_eq!(cell.get(), Some(100));
//! assert!(cell.set(201).is_err());
//! ```

use std::sync::atomic::{AtomicU32, Ordering};

/// Highest ratio a cell takes, repair symbols per 100 source symbols (the
/// encoder's `fec_ratio` range).
pub const MAX_LIVE_RATIO: u8 = 200;

/// The cell: 0 until the first `set`, then the ratio plus one.
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

    /// The ratio last published, if any.
    pub fn get(&self) -> Option<u8> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            v => Some((v - 1) as u8),
        }
    }
}
