//! `jitter.*` stages.

use std::time::Duration;

use wzp_engine::prelude::*;

pub mod adaptive;

/// How far back DRED reaches: no hold to rebuild loss from it is longer.
pub const DRED_REACH: Duration = Duration::from_secs(1);

/// A hold param (`burst_hold`, a `hold_budget`): a duration within
/// [`DRED_REACH`], refused with its name beyond it.
pub(crate) fn hold_param(p: &Params, name: &'static str) -> Result<Duration, ParamError> {
    let d = p.duration(name)?;
    if d > DRED_REACH {
        return Err(ParamError::new(
            name,
            format!("{d:?} is above 1s (DRED reaches 1 s back at most); use a smaller value"),
        ));
    }
    Ok(d)
}

/// Registers every `jitter.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(adaptive::Adaptive)?;
    Ok(())
}
