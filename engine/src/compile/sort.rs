//! Pass 5: order the stages so every producer runs before its consumers
//! (Kahn), or report a cycle by its stages.

use std::collections::{BTreeSet, HashMap};

use super::link::Linked;
use super::{CompiledStage, Diagnostics, ResolvedLink};
use crate::error::ErrorKind;

/// The linked stages in an order where every link goes forward.
pub(super) struct Sorted {
    pub stages: Vec<CompiledStage>,
    pub links: Vec<ResolvedLink>,
    /// Indices into `stages`, producers first. Empty if the graph has a
    /// cycle: that is reported, and the compile stops after the checks.
    pub order: Vec<usize>,
}

/// Sorts the stages along the links, smallest index (file order) first
/// among those ready, so the order is deterministic and follows the file.
pub(super) fn sort(linked: Linked, diag: &mut Diagnostics) -> Sorted {
    let Linked {
        stages,
        locs,
        links,
    } = linked;
    let n = stages.len();
    let mut succ: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for l in &links {
        succ[l.from.0].insert(l.to.0);
    }
    let order = match topo_order(n, &succ) {
        Ok(o) => o,
        Err(rest) => {
            let cyc = find_cycle(&rest, &succ);
            let names: Vec<&str> = cyc.iter().map(|&i| stages[i].id.as_str()).collect();
            let first = cyc.first().copied().unwrap_or(0);
            diag.push(
                diag.error(ErrorKind::Cycle, locs.get(first).copied().unwrap_or_default(), format!(
                    "the graph has a cycle: {} -> {}",
                    names.join(" -> "),
                    names.first().unwrap_or(&"?")
                ))
                .help("graphs must be acyclic; remove one of these links (feedback needs a delay stage)"),
            );
            Vec::new()
        }
    };
    Sorted {
        stages,
        links,
        order,
    }
}

/// Kahn's algorithm, smallest index first so the order is deterministic.
/// `Err` holds the stages left over (those on or behind a cycle).
fn topo_order(n: usize, succ: &[BTreeSet<usize>]) -> Result<Vec<usize>, Vec<usize>> {
    let mut indeg = vec![0usize; n];
    for s in succ {
        for &t in s {
            indeg[t] += 1;
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &t in &succ[i] {
            indeg[t] -= 1;
            if indeg[t] == 0 {
                ready.insert(t);
            }
        }
    }
    if order.len() == n {
        Ok(order)
    } else {
        Err((0..n).filter(|&i| indeg[i] > 0).collect())
    }
}

/// Walks successors among `rest` until a stage repeats; returns that loop.
fn find_cycle(rest: &[usize], succ: &[BTreeSet<usize>]) -> Vec<usize> {
    let set: BTreeSet<usize> = rest.iter().copied().collect();
    let Some(&start) = rest.first() else {
        return Vec::new();
    };
    let mut path = vec![start];
    let mut pos: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    loop {
        let Some(&next) = succ[cur].iter().find(|t| set.contains(t)) else {
            return path;
        };
        if let Some(&p) = pos.get(&next) {
            return path[p..].to_vec();
        }
        pos.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}
