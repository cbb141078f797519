//! Pass 8: the declared latency along every source-to-sink path.

use std::collections::BTreeSet;

use super::feedback::DELAY_KIND;
use super::{CompiledStage, LatencyPath, ResolvedLink};

/// Stop after this many paths: a wide fan-out multiplies them.
const MAX_PATHS: usize = 256;

/// Every path from a stage with no incoming link (a delay's read end
/// excepted) to one with no outgoing link, following links (not those into
/// a side input) and bridge `tx -> rx` edges; each path's total
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
    // A link into a side input carries nothing on to the stage's outputs.
    let side = |l: &&ResolvedLink| stages[l.to.0].inputs.get(l.to.1).is_some_and(|p| p.side);
    let edges = links
        .iter()
        .filter(|l| !side(l))
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
    // A delay's read end has no incoming link but starts no path of its
    // own: what it hands on went round a feedback loop that a path from a
    // real source already covers up to the delay's write end.
    let delay_read_end = |i: usize| stages[i].kind == DELAY_KIND && stages[i].inputs.is_empty();
    let starts = has_in
        .iter()
        .enumerate()
        .filter(|&(i, h)| !*h && !delay_read_end(i));
    for (i, _) in starts {
        {
            walk(i, &succ, stages, &mut Vec::new(), &mut paths);
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::test_util::{link, stage};
    use crate::port::PortType;
    use crate::stage::Domain;
    use std::time::Duration;

    const F: PortType = PortType::Frame;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn names(p: &LatencyPath) -> Vec<&str> {
        p.stages.iter().map(String::as_str).collect()
    }

    #[test]
    fn sums_declared_latency_along_each_path() {
        // a -> b -> c and a -> d (fan-out): two paths.
        let stages = vec![
            stage("a", Domain::Packet, &[], &[("out", F)], 1),
            stage("b", Domain::Packet, &[("in", F)], &[("out", F)], 2),
            stage("c", Domain::Packet, &[("in", F)], &[], 4),
            stage("d", Domain::Packet, &[("in", F)], &[], 8),
        ];
        let links = [
            link((0, 0), (1, 0), F),
            link((1, 0), (2, 0), F),
            link((0, 0), (3, 0), F),
        ];
        let paths = latency_paths(&stages, &links, &[]);
        assert_eq!(paths.len(), 2);
        assert_eq!(names(&paths[0]), ["a", "b", "c"]);
        assert_eq!(paths[0].total, ms(7));
        assert_eq!(names(&paths[1]), ["a", "d"]);
        assert_eq!(paths[1].total, ms(9));
    }

    #[test]
    fn a_side_input_carries_no_path() {
        // far -> speaker, and far -> aec.ref (a side input); mic -> aec -> out.
        let mut aec = stage(
            "aec",
            Domain::Packet,
            &[("mic", F), ("ref", F)],
            &[("out", F)],
            0,
        );
        aec.inputs[1].side = true;
        let stages = vec![
            stage("far", Domain::Packet, &[], &[("out", F)], 40),
            stage("speaker", Domain::Packet, &[("in", F)], &[], 1),
            stage("mic", Domain::Packet, &[], &[("out", F)], 2),
            aec,
            stage("send", Domain::Packet, &[("in", F)], &[], 4),
        ];
        let links = [
            link((0, 0), (1, 0), F),
            link((0, 0), (3, 1), F),
            link((2, 0), (3, 0), F),
            link((3, 0), (4, 0), F),
        ];
        let paths = latency_paths(&stages, &links, &[]);
        let all: Vec<Vec<&str>> = paths.iter().map(names).collect();
        assert_eq!(all, [vec!["far", "speaker"], vec!["mic", "aec", "send"]]);
        assert_eq!(paths[1].total, ms(6));
    }

    #[test]
    fn follows_bridges_counts_their_latency_and_hides_their_names() {
        // a -> tx ~ring~ rx -> b, with the rx entering the clocked domain (20 ms).
        let mut tx = stage("tx", Domain::Packet, &[("in", F)], &[], 0);
        let mut rx = stage("rx", Domain::Clocked, &[], &[("out", F)], 20);
        tx.bridge = true;
        rx.bridge = true;
        let stages = vec![
            stage("a", Domain::Packet, &[], &[("out", F)], 3),
            stage("b", Domain::Clocked, &[("in", F)], &[], 5),
            tx,
            rx,
        ];
        let links = [link((0, 0), (2, 0), F), link((3, 0), (1, 0), F)];
        let paths = latency_paths(&stages, &links, &[(2, 3)]);
        assert_eq!(paths.len(), 1);
        assert_eq!(names(&paths[0]), ["a", "b"]);
        assert_eq!(paths[0].total, ms(28));
    }

    #[test]
    fn stops_at_max_paths() {
        // Nine diamonds in a row: 2^9 = 512 paths from the first stage to the last.
        let mut stages = vec![stage("s0", Domain::Packet, &[], &[("out", F)], 0)];
        let mut links = Vec::new();
        for d in 0..9 {
            let join = stages.len() - 1;
            for side in ["l", "r"] {
                stages.push(stage(
                    &format!("{side}{d}"),
                    Domain::Packet,
                    &[("in", F)],
                    &[("out", F)],
                    1,
                ));
            }
            stages.push(stage(
                &format!("s{}", d + 1),
                Domain::Packet,
                &[("in", F)],
                &[("out", F)],
                0,
            ));
            let (l, r, next) = (join + 1, join + 2, join + 3);
            links.extend([
                link((join, 0), (l, 0), F),
                link((join, 0), (r, 0), F),
                link((l, 0), (next, 0), F),
                link((r, 0), (next, 0), F),
            ]);
        }
        let paths = latency_paths(&stages, &links, &[]);
        assert_eq!(paths.len(), MAX_PATHS);
        assert!(paths
            .iter()
            .all(|p| p.total == ms(9) && p.stages.len() == 19));
    }
}
