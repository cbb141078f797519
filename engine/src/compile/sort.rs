//! Pass 6: order the stages so every producer runs before its consumers
//! (Kahn), or report a cycle by its stages. Delayed links (`delay = 1`)
//! are not edges here: they deliver a cycle later, so their consumer may
//! run first.

use std::collections::{BTreeSet, HashMap};

use super::link::{DelayedLink, Linked};
use super::{CompiledStage, Diagnostics, ResolvedLink};
use crate::error::ErrorKind;

/// The linked stages in an order where every link goes forward.
pub(super) struct Sorted {
    pub stages: Vec<CompiledStage>,
    pub links: Vec<ResolvedLink>,
    /// Delayed links, left out of the order.
    pub delayed: Vec<DelayedLink>,
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
        delayed,
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
                .help("remove one of these links, or if one carries feedback, mark it `delay = 1` so it delivers one quantum later (docs/GRAPHS.md, feedback links)"),
            );
            Vec::new()
        }
    };
    Sorted {
        stages,
        links,
        delayed,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::test_util::{link, stage};
    use crate::port::PortType;
    use crate::spec::Loc;
    use crate::stage::Domain;

    const F: PortType = PortType::Frame;

    /// Stages `ids`, each with input `in` and output `out`, declared on
    /// lines 10, 20, 30, ...
    fn linked(ids: &[&str], links: &[(usize, usize)]) -> Linked {
        Linked {
            stages: ids
                .iter()
                .map(|id| stage(id, Domain::Packet, &[("in", F)], &[("out", F)], 0))
                .collect(),
            locs: (1..=ids.len()).map(|i| Loc { line: i * 10 }).collect(),
            links: links
                .iter()
                .map(|&(a, b)| link((a, 0), (b, 0), F))
                .collect(),
            delayed: Vec::new(),
        }
    }

    #[test]
    fn producers_come_first_then_file_order() {
        let mut diag = Diagnostics::new("g.toml");
        // d -> a, c -> b: a and b wait for their producers; c before d by file order.
        let sorted = sort(linked(&["a", "b", "c", "d"], &[(3, 0), (2, 1)]), &mut diag);
        assert!(diag.errors.is_empty());
        assert_eq!(sorted.order, vec![2, 1, 3, 0]);
        assert_eq!(sorted.stages.len(), 4);
        assert_eq!(sorted.links.len(), 2);
    }

    #[test]
    fn a_cycle_is_reported_by_its_stages_at_the_first_ones_line() {
        let mut diag = Diagnostics::new("g.toml");
        // src -> x -> y -> x: x and y form the loop; src is not on it.
        let sorted = sort(
            linked(&["src", "x", "y"], &[(0, 1), (1, 2), (2, 1)]),
            &mut diag,
        );
        assert!(sorted.order.is_empty());
        assert_eq!(diag.errors.len(), 1);
        let e = &diag.errors[0];
        assert_eq!(e.kind, ErrorKind::Cycle);
        assert_eq!(e.message, "the graph has a cycle: x -> y -> x");
        assert_eq!((e.file.as_str(), e.line), ("g.toml", Some(20)));
    }

    #[test]
    fn find_cycle_skips_stages_behind_the_loop() {
        // 0 -> 1 -> 2 -> 1, 2 -> 3: Kahn leaves 1, 2, 3 over; the loop is 1, 2.
        let succ: Vec<BTreeSet<usize>> = vec![
            BTreeSet::from([1]),
            BTreeSet::from([2]),
            BTreeSet::from([1, 3]),
            BTreeSet::new(),
        ];
        let rest = topo_order(4, &succ).unwrap_err();
        assert_eq!(rest, vec![1, 2, 3]);
        assert_eq!(find_cycle(&rest, &succ), vec![1, 2]);
    }
}
