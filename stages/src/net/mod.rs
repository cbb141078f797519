//! `net.*` stages: QUIC transport and network impairment.

use wzp_engine::prelude::*;

pub mod canonical_sni;
pub mod client_hello;
pub mod coalesce;
pub mod media_window;
pub mod netem;
pub mod netem_core;
pub mod netem_schedule;
pub mod quic;
pub mod quic_egress;
pub mod quic_ingress;
pub mod signal_stream;

/// Registers every `net.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(netem::Netem)?;
    registry.register(netem::NetemFrames)?;
    registry.register(quic_ingress::QuicIngress)?;
    registry.register(quic_egress::QuicEgress)?;
    Ok(())
}

/// Stands in for a transport stage when a graph is only being described.
pub(crate) struct DryRun;

impl Processor for DryRun {
    fn process(&mut self, _io: &mut Io<'_>, _cx: &Cx) -> Flow {
        Flow::Continue
    }
}
