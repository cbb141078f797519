//! Pass 8: the declared latency along every source-to-sink path.

use std::collections::BTreeSet;

use super::{CompiledStage, LatencyPath, ResolvedLink};

/// Stop after this many paths: a wide fan-out multiplies them.
const MAX_PATHS: usize = 256;

/// Every path from a stage with no incoming link to one with no outgoing
/// link, following links and bridge `tx -> rx` edges; each path's total
/// counts every stage on it, bridges included, which are left out of its
/// names.
pub(super) fn latency_paths(
    stages: &[CompiledStage],
    links: &[ResolvedLink],
    bridge_edges: &[(usize, usize)],
) -> Vec<LatencyPath> {
    let n = stages.len();
    let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    let mut has_in = vec![false; n];
    let edges = links
        .iter()
        .map(|l| (l.from.0, l.to.0))
        .chain(bridge_edges.iter().copied());
    for (a, b) in edges {
        succ[a].insert(b);
        has_in[b] = true;
    }
    let mut paths = Vec::new();
    fn walk(
        i: usize,
        succ: &[BTreeSet<usize>],
        stages: &[CompiledStage],
        path: &mut Vec<usize>,
        out: &mut Vec<LatencyPath>,
    ) {
        if out.len() >= MAX_PATHS {
            return;
        }
        path.push(i);
        if succ[i].is_empty() {
            let total = path.iter().map(|&s| stages[s].latency).sum();
            let names = path
                .iter()
                .filter(|&&s| !stages[s].bridge)
                .map(|&s| stages[s].id.clone())
                .collect();
            out.push(LatencyPath {
                stages: names,
                total,
            });
        } else {
            for &t in &succ[i] {
                walk(t, succ, stages, path, out);
            }
        }
        path.pop();
    }
    for (i, _) in has_in.iter().enumerate().filter(|(_, h)| !**h) {
        {
            walk(i, &succ, stages, &mut Vec::new(), &mut paths);
        }
    }
    paths
}
