//! Adaptive call quality: what a receiver measures about each sender and
//! reports back ([`receive_stats`], wire format in `wzp_proto::feedback`),
//! how a sender turns those reports into codec, redundancy and tier
//! decisions ([`controller`]), both sans-IO; and the two stages that run
//! them in a graph: [`feedback_report`] (`quality.feedback_report`, on the
//! receive path) and [`adapt`] (`quality.adapt`, on the send path, writing
//! the encoder's live settings). See docs/PROFILES.md, "Adaptation".

pub mod adapt;
pub mod controller;
pub mod feedback_report;
pub mod input_line;
pub mod inputs;
pub mod journal;
pub mod path;
pub mod receive_stats;

use wzp_engine::Registry;

/// Registers the quality stages.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(feedback_report::FeedbackReportFactory)?;
    registry.register(adapt::AdaptFactory)?;
    Ok(())
}
