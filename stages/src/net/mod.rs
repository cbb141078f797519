//! `net.*` stages.

use wzp_engine::prelude::*;

pub mod netem;

/// Registers every `net.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(netem::Netem)?;
    registry.register(netem::NetemFrames)?;
    Ok(())
}
