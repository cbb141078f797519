//! # wzp-stages
//!
//! Every stage of wzp, one folder per concern, one file per stage. Each
//! stage's doc comment gives its ports, params with defaults, declared
//! latency and a TOML snippet; `wzp-client stages` lists them all.

pub mod audio;
mod cell;
pub mod codec;
pub mod crypto;
mod delay_floor;
pub mod fec;
pub mod federation;
pub mod jitter;
pub mod net;
pub mod quality;
pub mod sfu;
pub mod wire;

use wzp_engine::registry::RegisterError;
use wzp_engine::Registry;

/// Registers every stage kind in this crate.
pub fn register_all(registry: &mut Registry) -> Result<(), RegisterError> {
    audio::register(registry)?;
    codec::register(registry)?;
    fec::register(registry)?;
    jitter::register(registry)?;
    net::register(registry)?;
    wire::register(registry)?;
    crypto::register(registry)?;
    sfu::register(registry)?;
    federation::register(registry)?;
    quality::register(registry)?;
    Ok(())
}

/// A registry with every stage kind of this crate.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    // Kind names are fixed strings in this crate; a clash is a bug caught by tests.
    register_all(&mut r).expect("stage kinds register without clashes");
    r
}
