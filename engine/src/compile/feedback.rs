//! Feedback links (`delay = 1`): pass 5 checks them, between link resolution
//! and the sort (which leaves them out, so a cycle through one is legal);
//! pass 8, after the bridges, turns each into a pair of compiler stages
//! joined by a small ring in the link's domain:
//!
//! - `~delay:FROM->TO:in` runs right after the producer and queues the
//!   cycle's items (or samples);
//! - `~delay:FROM->TO:out` runs first in the domain's cycle and hands the
//!   consumer what `in` queued in the cycle before.
//!
//! So the consumer sees the producer's output exactly one cycle later,
//! whatever their order, and no cycle is left in the schedule. Both ends run
//! on the domain's thread: the ring only keeps the two processors apart.

use std::sync::Arc;

use super::bridges::Bridged;
use super::link::Linked;
use super::{CompiledStage, DelayInfo, Diagnostics, Existing, ResolvedLink, StageKey};
use crate::bridge::delay_pair;
use crate::error::ErrorKind;
use crate::port::{samples_per_quantum, PortDecl, PortType};
use crate::spec::{GraphSpec, PortRef};
use crate::timing::StageTiming;

/// Kind of the two stages that carry a delayed link.
pub(super) const DELAY_KIND: &str = "engine.delay";

/// Pass 5: a delayed link must join two stages of one domain. A link between
/// domains already passes through a ring that delivers in the consumer's own
/// cycle; a delay on top of it would have no defined length. Offending links
/// are reported and dropped.
pub(super) fn check_delayed(linked: &mut Linked, diag: &mut Diagnostics) {
    let stages = &linked.stages;
    linked.delayed.retain(|d| {
        let (a, b) = (&stages[d.link.from.0], &stages[d.link.to.0]);
        if a.domain == b.domain {
            return true;
        }
        let from = format!("{}.{}", a.id, a.outputs[d.link.from.1].name);
        let to = format!("{}.{}", b.id, b.inputs[d.link.to.1].name);
        diag.push(
            diag.error(
                ErrorKind::BadDomain,
                d.loc,
                format!(
                    "delayed link `{from}` ({}) -> `{to}` ({}) crosses domains; \
                     `delay = 1` is only supported within one domain",
                    a.domain.name(),
                    b.domain.name()
                ),
            )
            .stage(&b.id)
            .help(
                "a link between domains already goes through a ring that delivers in the \
                 consumer's next cycle, so a cycle through it is legal: drop `delay`, or put \
                 both stages in one domain",
            ),
        );
        false
    });
}

/// Pass 8: each delayed link becomes its `in` and `out` stages. A running
/// graph's pair for the same link is kept, with what is queued in its ring.
pub(super) fn insert_delays(spec: &GraphSpec, existing: &Existing, mut g: Bridged) -> Bridged {
    let quantum_ns = spec.clock.quantum.as_nanos() as u64;
    for d in std::mem::take(&mut g.delayed) {
        let l = d.link;
        let (p, c) = (&g.stages[l.from.0], &g.stages[l.to.0]);
        let info = DelayInfo {
            from: PortRef {
                stage: p.id.clone(),
                port: p.outputs[l.from.1].name.clone(),
            },
            to: PortRef {
                stage: c.id.clone(),
                port: c.inputs[l.to.1].name.clone(),
            },
            ty: l.ty,
            domain: p.domain,
        };
        let (in_stage, out_stage) = delay_stages(spec, &info, existing, quantum_ns);
        let in_i = g.stages.len();
        g.stages.push(in_stage);
        let out_i = g.stages.len();
        g.stages.push(out_stage);
        g.links.push(ResolvedLink {
            from: l.from,
            to: (in_i, 0),
            ty: l.ty,
        });
        g.links.push(ResolvedLink {
            from: (out_i, 0),
            to: l.to,
            ty: l.ty,
        });
        // `out` first of all, `in` right after the producer: in every cycle
        // `out` hands on the previous cycle's items before `in` queues new ones.
        let at = g
            .order
            .iter()
            .position(|&x| x == l.from.0)
            .map_or(g.order.len(), |i| i + 1);
        g.order.insert(at, in_i);
        g.order.insert(0, out_i);
        g.delays.push(info);
    }
    g
}

fn delay_stages(
    spec: &GraphSpec,
    info: &DelayInfo,
    existing: &Existing,
    quantum_ns: u64,
) -> (CompiledStage, CompiledStage) {
    let ty = info.ty;
    let base = format!("~delay:{}->{}", info.from, info.to);
    let key = |id: &str| StageKey(format!("{id}|{}|{}", info.domain.name(), ty));
    let mk = |id: String, inputs, outputs, latency| CompiledStage {
        key: key(&id),
        id,
        kind: DELAY_KIND.into(),
        domain: info.domain,
        source: false,
        inputs,
        outputs,
        latency,
        processor: None,
        counters: Vec::new(),
        gauges: Vec::new(),
        timing: Arc::new(StageTiming::default()),
        bridge: true,
    };
    let mut in_stage = mk(
        format!("{base}:in"),
        vec![PortDecl::new("in", ty)],
        vec![],
        std::time::Duration::ZERO,
    );
    // The read end holds items one quantum: that is the link's latency.
    let mut out_stage = mk(
        format!("{base}:out"),
        vec![],
        vec![PortDecl::new("out", ty)],
        spec.clock.quantum,
    );
    match (
        existing.stages.get(&in_stage.key),
        existing.stages.get(&out_stage.key),
    ) {
        (Some(ein), Some(eout)) => {
            in_stage.counters = ein.counters.clone();
            in_stage.timing = ein.timing.clone();
            out_stage.timing = eout.timing.clone();
        }
        _ => {
            let samples = match ty {
                PortType::Pcm { rate } => samples_per_quantum(rate, quantum_ns),
                _ => 0,
            };
            let (tx, rx) = delay_pair(ty, samples, spec.batch_capacity);
            in_stage.processor = Some(tx.processor);
            in_stage.counters = tx.counters;
            out_stage.processor = Some(rx.processor);
            out_stage.counters = rx.counters;
        }
    }
    (in_stage, out_stage)
}
