//! `crypto.*` stages: end-to-end media encryption.
//!
//! - [`seal`] (`crypto.seal`): encrypts payloads, owns the sender's nonce
//!   space and rekeys by epoch before a nonce could repeat.
//! - [`open`] (`crypto.open`): authenticates, decrypts, drops replays.
//!
//! Both take the same key params ([`keys`]). The design (key sources, epoch
//! keys, nonce, replay window, sender ids) is in docs/WIRE.md §6.

use wzp_engine::prelude::*;

pub mod keys;
pub mod open;
pub mod replay;
pub mod seal;

pub use keys::epoch_key;
pub use replay::{ReplayWindow, REPLAY_WINDOW};

/// Length of the ChaCha20-Poly1305 tag appended to every sealed payload.
pub const TAG_LEN: usize = 16;

/// Registers every `crypto.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(seal::Seal)?;
    registry.register(open::Open)?;
    Ok(())
}
