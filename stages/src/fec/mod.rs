//! `fec.*` stages: RaptorQ forward error correction over blocks of frames.
//!
//! `fec.raptorq_encode` tags frames in blocks and adds repair frames (at a
//! ratio fixed at build or published live in a [`live::FecLive`] cell);
//! `fec.raptorq_decode` rebuilds lost frames. The block format lives in
//! [`block`], the worker thread that keeps RaptorQ's allocations off the
//! real-time path in `worker`.

use wzp_engine::prelude::*;

pub mod block;
pub mod live;
pub mod raptorq_decode;
pub mod raptorq_encode;
pub mod symbol;
mod worker;

/// Registers every `fec.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(raptorq_encode::RaptorqEncode)?;
    registry.register(raptorq_decode::RaptorqDecode)?;
    Ok(())
}
