//! `codec.*` stages.

use wzp_engine::prelude::*;

/// Registers every `codec.*` stage kind.
pub fn register(_registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    Ok(())
}
