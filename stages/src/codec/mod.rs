//! `codec.*` stages: speech encoders and decoders.
//!
//! - [`opus_encode`] / [`opus_decode`]: libopus 1.6.1 (from `opusic-sys`,
//!   built with DRED), loss recovery by DRED, LBRR and PLC.
//! - [`codec2_encode`] / [`codec2_decode`]: Codec2 3200 and 1200 for the worst
//!   links, run in a worker thread because the `codec2` crate allocates.
//! - [`adaptive_encode`] / [`adaptive_decode`]: both codecs in one stage
//!   each, switching Opus <-> Codec2, tier and frame size mid-stream by the
//!   live cells ([`live`]) on the send side and by each frame's codec id
//!   on the receive side.
//! - [`profile`]: the quality profiles and codec ids both sides share
//!   (`docs/PROFILES.md`).

pub mod adaptive_decode;
pub mod adaptive_encode;
pub mod codec2_decode;
pub mod codec2_encode;
pub mod codec2_worker;
pub mod denormals;
pub mod live;
pub mod opus_decode;
pub mod opus_encode;
pub mod opus_ffi;
pub mod pcm_fifo;
pub mod profile;
pub mod resample6;

use wzp_engine::prelude::*;

/// Registers every `codec.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(opus_encode::OpusEncodeFactory)?;
    registry.register(opus_decode::OpusDecodeFactory)?;
    registry.register(codec2_encode::Codec2EncodeFactory)?;
    registry.register(codec2_decode::Codec2DecodeFactory)?;
    registry.register(adaptive_encode::AdaptiveEncodeFactory)?;
    registry.register(adaptive_decode::AdaptiveDecodeFactory)?;
    Ok(())
}
