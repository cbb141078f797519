//! Pass 7: one schedule per domain: the sorted order filtered to the
//! domain's stages, and a buffer for every port, reused once its last reader
//! has run.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::bridges::Bridged;
use super::{CompiledStage, DomainPlan, ResolvedLink, StepPlan};
use crate::port::PortType;
use crate::stage::Domain;

/// One plan per domain the stages use, in `Domain` order.
pub(super) fn plan_domains(bridged: &Bridged) -> Vec<DomainPlan> {
    let domains_used: BTreeSet<Domain> = bridged.stages.iter().map(|s| s.domain).collect();
    let mut domains = Vec::new();
    for d in domains_used {
        let steps_order: Vec<usize> = bridged
            .order
            .iter()
            .copied()
            .filter(|&i| bridged.stages[i].domain == d)
            .collect();
        domains.push(plan_domain(
            d,
            &steps_order,
            &bridged.stages,
            &bridged.links,
        ));
    }
    domains
}

/// Steps in `order` (one domain's stages), each output taking a free buffer
/// of exactly its type or a new one, released after its last reader's step.
fn plan_domain(
    domain: Domain,
    order: &[usize],
    stages: &[CompiledStage],
    links: &[ResolvedLink],
) -> DomainPlan {
    // Readers of each output, in schedule position.
    let pos: HashMap<usize, usize> = order.iter().enumerate().map(|(p, &s)| (s, p)).collect();
    let mut last_reader: HashMap<(usize, usize), usize> = HashMap::new();
    let mut input_src: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
    for l in links {
        if let Some(&p) = pos.get(&l.to.0) {
            let e = last_reader.entry(l.from).or_insert(p);
            *e = (*e).max(p);
            input_src.insert(l.to, l.from);
        }
    }
    let mut buffers: Vec<PortType> = Vec::new();
    let mut free: BTreeMap<PortType, Vec<u32>> = BTreeMap::new();
    let mut assigned: HashMap<(usize, usize), u32> = HashMap::new();
    // Never-written buffers that unlinked optional inputs read.
    let mut silent: HashMap<PortType, u32> = HashMap::new();
    let mut release_at: BTreeMap<usize, Vec<(PortType, u32)>> = BTreeMap::new();
    let mut steps = Vec::new();
    for (p, &si) in order.iter().enumerate() {
        let st = &stages[si];
        let mut ins = Vec::new();
        for (pi, decl) in st.inputs.iter().enumerate() {
            let b = match input_src.get(&(si, pi)).and_then(|src| assigned.get(src)) {
                Some(&b) => b,
                None => *silent.entry(decl.ty).or_insert_with(|| {
                    buffers.push(decl.ty);
                    buffers.len() as u32 - 1
                }),
            };
            ins.push(b);
        }
        let mut outs = Vec::new();
        for (po, decl) in st.outputs.iter().enumerate() {
            let b = match free.get_mut(&decl.ty).and_then(Vec::pop) {
                Some(b) => b,
                None => {
                    buffers.push(decl.ty);
                    buffers.len() as u32 - 1
                }
            };
            assigned.insert((si, po), b);
            outs.push(b);
            // An output nobody reads is scratch, free after this step.
            let until = last_reader.get(&(si, po)).copied().unwrap_or(p);
            release_at.entry(until).or_default().push((decl.ty, b));
        }
        if let Some(rel) = release_at.remove(&p) {
            for (ty, b) in rel {
                free.entry(ty).or_default().push(b);
            }
        }
        steps.push(StepPlan {
            stage: si,
            ins,
            outs,
        });
    }
    DomainPlan {
        domain,
        steps,
        buffers,
    }
}

impl PartialOrd for PortType {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PortType {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let k = |t: &PortType| match t {
            PortType::Pcm { rate } => (0, *rate),
            PortType::Frame => (1, 0),
            PortType::Packet => (2, 0),
        };
        k(self).cmp(&k(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::test_util::{link, stage};
    use crate::port::PortDecl;

    const PCM: PortType = PortType::Pcm { rate: 48_000 };
    const F: PortType = PortType::Frame;

    fn steps(plan: &DomainPlan) -> Vec<(usize, Vec<u32>, Vec<u32>)> {
        plan.steps
            .iter()
            .map(|s| (s.stage, s.ins.clone(), s.outs.clone()))
            .collect()
    }

    #[test]
    fn a_buffer_is_reused_once_its_last_reader_has_run() {
        // src -> enc -> dec -> sink needs two buffers (the DESIGN.md table).
        let c = Domain::Clocked;
        let stages = vec![
            stage("src", c, &[], &[("out", PCM)], 0),
            stage("enc", c, &[("in", PCM)], &[("out", F)], 0),
            stage("dec", c, &[("in", F)], &[("out", PCM)], 0),
            stage("sink", c, &[("in", PCM)], &[], 0),
        ];
        let links = [
            link((0, 0), (1, 0), PCM),
            link((1, 0), (2, 0), F),
            link((2, 0), (3, 0), PCM),
        ];
        let plan = plan_domain(c, &[0, 1, 2, 3], &stages, &links);
        assert_eq!(plan.buffers, vec![PCM, F]);
        assert_eq!(
            steps(&plan),
            vec![
                (0, vec![], vec![0]),
                (1, vec![0], vec![1]),
                (2, vec![1], vec![0]),
                (3, vec![0], vec![]),
            ]
        );
    }

    #[test]
    fn outputs_never_alias_inputs_and_silent_buffers_are_kept() {
        // `mix` reads `a` and an unlinked optional input; its output must not
        // reuse `a`'s buffer (released only after the step) nor the silent one.
        let c = Domain::Clocked;
        let mut mix = stage("mix", c, &[("a", PCM)], &[("out", PCM)], 0);
        mix.inputs.push(PortDecl::optional("b", PCM));
        let stages = vec![
            stage("src", c, &[], &[("out", PCM)], 0),
            mix,
            stage("sink", c, &[("in", PCM)], &[("out", PCM)], 0),
        ];
        let links = [link((0, 0), (1, 0), PCM), link((1, 0), (2, 0), PCM)];
        let plan = plan_domain(c, &[0, 1, 2], &stages, &links);
        assert_eq!(
            steps(&plan),
            vec![
                (0, vec![], vec![0]),
                (1, vec![0, 1], vec![2]),
                // `src`'s buffer is free again; the silent buffer 1 never is.
                (2, vec![2], vec![0]),
            ]
        );
        assert_eq!(plan.buffers, vec![PCM, PCM, PCM]);
    }

    #[test]
    fn plans_each_domain_in_the_sorted_order() {
        let stages = vec![
            stage("p", Domain::Packet, &[], &[("out", F)], 0),
            stage("c", Domain::Clocked, &[], &[("out", F)], 0),
            stage("q", Domain::Packet, &[("in", F)], &[], 0),
        ];
        let bridged = Bridged {
            stages,
            links: vec![link((0, 0), (2, 0), F)],
            bridges: Vec::new(),
            bridge_edges: Vec::new(),
            order: vec![1, 0, 2],
            delayed: Vec::new(),
            delays: Vec::new(),
        };
        let plans = plan_domains(&bridged);
        let shape: Vec<(Domain, Vec<usize>)> = plans
            .iter()
            .map(|p| (p.domain, p.steps.iter().map(|s| s.stage).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![(Domain::Clocked, vec![1]), (Domain::Packet, vec![0, 2])]
        );
    }
}
