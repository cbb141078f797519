//! `net.*` stages.

use wzp_engine::prelude::*;

/// Registers every `net.*` stage kind.
pub fn register(_registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    Ok(())
}
