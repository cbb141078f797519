//! `jitter.*` stages.

use wzp_engine::prelude::*;

/// Registers every `jitter.*` stage kind.
pub fn register(_registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    Ok(())
}
