//! Pass 6: every link between two domains becomes `producer -> tx` in the
//! producer's domain and `rx -> consumer` in the consumer's, the two joined
//! by a ring. PCM may not cross.

use std::sync::Arc;
use std::time::Duration;

use super::link::DelayedLink;
use super::sort::Sorted;
use super::{BridgeInfo, CompiledStage, DelayInfo, Existing, ResolvedLink, StageKey, Wakers};
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
    /// Delayed links, until `feedback::insert_delays` replaces them by stages.
    pub delayed: Vec<DelayedLink>,
    /// The delays `feedback::insert_delays` put in.
    pub delays: Vec<DelayInfo>,
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
        delayed,
        order,
    } = sorted;
    let mut errors = Vec::new();
    let mut out = Bridged {
        stages,
        links: Vec::new(),
        bridges: Vec::new(),
        bridge_edges: Vec::new(),
        order,
        delayed,
        delays: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::test_util::{link, stage};
    use crate::port::PortType;
    use crate::spec::{ClockSpec, Loc};

    fn sorted(from: Domain, to: Domain, ty: PortType) -> Sorted {
        Sorted {
            stages: vec![
                stage("p", from, &[], &[("out", ty)], 0),
                stage("c", to, &[("in", ty)], &[], 0),
            ],
            links: vec![link((0, 0), (1, 0), ty)],
            delayed: Vec::new(),
            order: vec![0, 1],
        }
    }

    #[test]
    fn a_link_between_domains_becomes_tx_and_rx_in_order() {
        let spec = GraphSpec::new("g", ClockSpec::default()).link("p.out", "c.in");
        let bridged = insert_bridges(
            &spec,
            &Existing::default(),
            &Wakers::default(),
            sorted(Domain::Packet, Domain::Clocked, PortType::Frame),
        )
        .unwrap();
        let ids: Vec<&str> = bridged.stages.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            ["p", "c", "~bridge:p.out->c.in:tx", "~bridge:p.out->c.in:rx"]
        );
        let (tx, rx) = (&bridged.stages[2], &bridged.stages[3]);
        assert_eq!((tx.domain, rx.domain), (Domain::Packet, Domain::Clocked));
        assert!(tx.bridge && rx.bridge && tx.processor.is_some() && rx.processor.is_some());
        // Entering the clocked domain waits up to one quantum.
        assert_eq!(rx.latency, ClockSpec::default().quantum);
        assert_eq!(bridged.order, vec![0, 2, 3, 1]);
        let links: Vec<_> = bridged.links.iter().map(|l| (l.from, l.to)).collect();
        assert_eq!(links, vec![((0, 0), (2, 0)), ((3, 0), (1, 0))]);
        assert_eq!(bridged.bridge_edges, vec![(2, 3)]);
        assert_eq!(bridged.bridges.len(), 1);
        assert_eq!(bridged.bridges[0].capacity, 256);
    }

    #[test]
    fn links_within_a_domain_are_left_alone() {
        let spec = GraphSpec::new("g", ClockSpec::default());
        let bridged = insert_bridges(
            &spec,
            &Existing::default(),
            &Wakers::default(),
            sorted(Domain::Packet, Domain::Packet, PortType::Packet),
        )
        .unwrap();
        assert_eq!(bridged.stages.len(), 2);
        assert_eq!(bridged.order, vec![0, 1]);
        assert!(bridged.bridges.is_empty() && bridged.bridge_edges.is_empty());
    }

    #[test]
    fn pcm_may_not_cross_and_the_error_names_the_link_line() {
        let mut spec = GraphSpec::new("g", ClockSpec::default()).link("p.out", "c.in");
        spec.links[0].loc = Loc { line: 12 };
        let pcm = PortType::Pcm { rate: 48_000 };
        let Err(errors) = insert_bridges(
            &spec,
            &Existing::default(),
            &Wakers::default(),
            sorted(Domain::Clocked, Domain::Packet, pcm),
        ) else {
            panic!("a PCM link between domains must be refused");
        };
        assert_eq!(errors.kinds(), vec![ErrorKind::BadDomain]);
        let e = &errors.0[0];
        assert_eq!((e.line, e.stage.as_deref()), (Some(12), Some("c")));
        assert!(e.message.contains("cannot cross domains"), "{}", e.message);
    }
}
