//! `jitter.*` stages.

use wzp_engine::prelude::*;

pub mod adaptive;

/// Registers every `jitter.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(adaptive::Adaptive)?;
    Ok(())
}
