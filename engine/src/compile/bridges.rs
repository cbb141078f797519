//! Pass 6: every link between two domains becomes `producer -> tx` in the
//! producer's domain and `rx -> consumer` in the consumer's, the two joined
//! by a ring. PCM may not cross.

use std::sync::Arc;
use std::time::Duration;

use super::sort::Sorted;
use super::{BridgeInfo, CompiledStage, Existing, ResolvedLink, StageKey, Wakers};
use crate::bridge::bridge_pair;
use crate::error::{ErrorKind, GraphError, GraphErrors};
use crate::port::PortDecl;
use crate::spec::{GraphSpec, PortRef};
use crate::stage::Domain;
use crate::timing::StageTiming;

/// The sorted graph with its bridges in place: no link crosses domains.
pub(super) struct Bridged {
    /// The stages, then the bridge stages (`tx`, `rx` per bridge).
    pub stages: Vec<CompiledStage>,
    /// Links within one domain, a crossing link replaced by its two halves.
    pub links: Vec<ResolvedLink>,
    pub bridges: Vec<BridgeInfo>,
    /// `(tx, rx)` stage indices of each bridge: the edge its ring carries.
    pub bridge_edges: Vec<(usize, usize)>,
    /// Still a topological order: each `tx` right after its producer, each
    /// `rx` right before its consumer.
    pub order: Vec<usize>,
}

/// Inserts the bridges. A running graph's bridge for the same link is kept,
/// with what is queued in its ring. `Err` lists every link that cannot
/// cross (PCM is bound to its clock).
pub(super) fn insert_bridges(
    spec: &GraphSpec,
    existing: &Existing,
    wakers: &Wakers,
    sorted: Sorted,
) -> Result<Bridged, GraphErrors> {
    let Sorted {
        stages,
        links,
        order,
    } = sorted;
    let mut errors = Vec::new();
    let mut out = Bridged {
        stages,
        links: Vec::new(),
        bridges: Vec::new(),
        bridge_edges: Vec::new(),
        order,
    };
    for l in links {
        let (fd, td) = (out.stages[l.from.0].domain, out.stages[l.to.0].domain);
        if fd == td {
            out.links.push(l);
            continue;
        }
        let from_ref = PortRef {
            stage: out.stages[l.from.0].id.clone(),
            port: out.stages[l.from.0].outputs[l.from.1].name.clone(),
        };
        let to_ref = PortRef {
            stage: out.stages[l.to.0].id.clone(),
            port: out.stages[l.to.0].inputs[l.to.1].name.clone(),
        };
        if !l.ty.can_bridge() {
            errors.push(
                GraphError::new(
                    ErrorKind::BadDomain,
                    format!("`{from_ref}` ({}) and `{to_ref}` ({}) are in different domains, and {} cannot cross domains", fd.name(), td.name(), l.ty),
                )
                .at(&spec.file, spec.links.iter().find(|x| x.from == from_ref && x.to == to_ref).and_then(|x| x.loc.line()))
                .stage(&to_ref.stage)
                .help("PCM is bound to its clock: put both stages in the same domain, or encode to frames before crossing"),
            );
            continue;
        }
        let info = BridgeInfo {
            from: from_ref,
            to: to_ref,
            ty: l.ty,
            from_domain: fd,
            to_domain: td,
            capacity: spec.batch_capacity.max(16) * 4,
        };
        let (tx_stage, rx_stage) = bridge_stages(spec, &info, existing, wakers);
        let tx_i = out.stages.len();
        out.stages.push(tx_stage);
        let rx_i = out.stages.len();
        out.stages.push(rx_stage);
        out.links.push(ResolvedLink {
            from: l.from,
            to: (tx_i, 0),
            ty: l.ty,
        });
        out.links.push(ResolvedLink {
            from: (rx_i, 0),
            to: l.to,
            ty: l.ty,
        });
        out.bridge_edges.push((tx_i, rx_i));
        // Keep a valid topological order: tx right after its producer, rx
        // right before its consumer.
        let order = &mut out.order;
        let p = order.iter().position(|&x| x == l.from.0).unwrap_or(0);
        order.insert(p + 1, tx_i);
        let c = order
            .iter()
            .position(|&x| x == l.to.0)
            .unwrap_or(order.len());
        order.insert(c, rx_i);
        out.bridges.push(info);
    }
    if !errors.is_empty() {
        return Err(GraphErrors(errors));
    }
    Ok(out)
}

/// The `tx` and `rx` stages of one bridge: with a new ring, or with the
/// running graph's ring if it has the same bridge.
fn bridge_stages(
    spec: &GraphSpec,
    info: &BridgeInfo,
    existing: &Existing,
    wakers: &Wakers,
) -> (CompiledStage, CompiledStage) {
    let (fd, td, ty) = (info.from_domain, info.to_domain, info.ty);
    let base = format!("~bridge:{}->{}", info.from, info.to);
    let (tx_id, rx_id) = (format!("{base}:tx"), format!("{base}:rx"));
    let key = |id: &str| StageKey(format!("{id}|{}|{}|{}", fd.name(), td.name(), ty));
    // Entering the clocked domain, items wait up to one quantum for the next cycle.
    let rx_latency = if td == Domain::Clocked {
        spec.clock.quantum
    } else {
        Duration::ZERO
    };
    let tx_ports = (vec![PortDecl::new("in", ty)], vec![]);
    let rx_ports = (vec![], vec![PortDecl::new("out", ty)]);
    let mk = |id: &str, domain, ports: (Vec<PortDecl>, Vec<PortDecl>), latency| CompiledStage {
        key: key(id),
        id: id.to_string(),
        kind: "engine.bridge".into(),
        domain,
        source: false,
        inputs: ports.0,
        outputs: ports.1,
        latency,
        processor: None,
        counters: Vec::new(),
        gauges: Vec::new(),
        timing: Arc::new(StageTiming::default()),
        bridge: true,
    };
    let mut tx_stage = mk(&tx_id, fd, tx_ports, Duration::ZERO);
    let mut rx_stage = mk(&rx_id, td, rx_ports, rx_latency);
    match (
        existing.stages.get(&tx_stage.key),
        existing.stages.get(&rx_stage.key),
    ) {
        // The same link in a running graph: keep its ring (and what is queued in it).
        (Some(etx), Some(erx)) => {
            tx_stage.counters = etx.counters.clone();
            tx_stage.timing = etx.timing.clone();
            rx_stage.timing = erx.timing.clone();
        }
        _ => {
            let (tx, rx) = bridge_pair(
                ty,
                info.capacity,
                spec.batch_capacity,
                wakers.get(td).clone(),
            );
            tx_stage.processor = Some(tx.processor);
            tx_stage.counters = tx.counters;
            rx_stage.processor = Some(rx.processor);
            rx_stage.counters = rx.counters;
        }
    }
    (tx_stage, rx_stage)
}
