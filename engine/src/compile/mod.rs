//! Validation and compilation of a [`GraphSpec`] into per-domain schedules.
//!
//! Runs on the control side. Every problem is reported with the file, line,
//! stage id and a fix; as many as can be found in one compile are returned
//! together.
//!
//! `compile_inner` runs the passes in order, one module each. Each pass takes
//! what the one before produced and returns a new value:
//!
//! | Pass | Module | Takes | Gives |
//! |---|---|---|---|
//! | ids: snake_case, unique | `validate` | [`GraphSpec`] | errors |
//! | build stages | `build` | [`GraphSpec`] | `Built` |
//! | resolve links | `link` | `Built` | `Linked` |
//! | required inputs linked | `link` | `Linked` | errors |
//! | sort (Kahn), cycle check | `sort` | `Linked` | `Sorted` |
//! | domain bridges | `bridges` | `Sorted` | `Bridged` |
//! | per-domain schedules, buffer reuse | `schedule` | `Bridged` | [`DomainPlan`]s |
//! | latency paths | `latency` | `Bridged` | [`LatencyPath`]s |
//!
//! The checking passes (ids to sort) report into one `Diagnostics` and carry
//! on, so one compile reports as many mistakes as it can; the compile stops
//! after the sort if there were any. The passes after that run only on a
//! graph that passed every check.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::bridge::{bridge_pair, DomainWaker};
use crate::error::{ErrorKind, GraphError, GraphErrors};
use crate::port::{PortDecl, PortType};
use crate::registry::Registry;
use crate::spec::{ClockSpec, GraphSpec, Loc, PortRef};
use crate::stage::{Counter, Domain, Gauge, Processor, Resources};
use crate::timing::StageTiming;

mod build;
mod link;
mod sort;
mod validate;

/// A stage after compilation.
pub struct CompiledStage {
    pub id: String,
    pub kind: String,
    pub domain: Domain,
    pub inputs: Vec<PortDecl>,
    pub outputs: Vec<PortDecl>,
    pub latency: Duration,
    /// The processor, until the executor takes it. `None` for a stage kept
    /// from a running graph (see [`StageKey`]).
    pub processor: Option<Box<dyn Processor>>,
    pub counters: Vec<(String, Counter)>,
    pub gauges: Vec<(String, Gauge)>,
    pub timing: Arc<StageTiming>,
    /// Identity for reuse when a running graph is reconfigured.
    pub key: StageKey,
    /// Inserted by the compiler to carry items across domains.
    pub bridge: bool,
    /// Has no inputs; its `Finished` counts toward the end of the graph.
    pub source: bool,
}

/// What makes two stages the same across a reconfiguration: same id, kind,
/// domain and parameters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StageKey(pub String);

/// One step of a schedule: run a stage with these buffers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepPlan {
    /// Index into [`CompiledGraph::stages`].
    pub stage: usize,
    pub ins: Vec<u32>,
    pub outs: Vec<u32>,
}

/// Everything one domain runs.
#[derive(Clone, Debug)]
pub struct DomainPlan {
    pub domain: Domain,
    pub steps: Vec<StepPlan>,
    /// Type of each buffer in the pool.
    pub buffers: Vec<PortType>,
}

/// A link after resolution.
#[derive(Clone, Debug)]
pub struct ResolvedLink {
    pub from: (usize, usize),
    pub to: (usize, usize),
    pub ty: PortType,
}

/// A ring the compiler inserted between two domains.
#[derive(Clone, Debug)]
pub struct BridgeInfo {
    pub from: PortRef,
    pub to: PortRef,
    pub ty: PortType,
    pub from_domain: Domain,
    pub to_domain: Domain,
    pub capacity: usize,
}

/// The declared latency along one source-to-sink path.
#[derive(Clone, Debug)]
pub struct LatencyPath {
    pub stages: Vec<String>,
    pub total: Duration,
}

/// A compiled graph: stages built, schedules planned. Immutable once made;
/// the executor takes the processors out of it.
pub struct CompiledGraph {
    pub name: String,
    pub file: String,
    pub clock: ClockSpec,
    pub batch_capacity: usize,
    pub stages: Vec<CompiledStage>,
    pub links: Vec<ResolvedLink>,
    pub bridges: Vec<BridgeInfo>,
    pub domains: Vec<DomainPlan>,
    pub paths: Vec<LatencyPath>,
    pub wakers: Wakers,
}

/// One waker per domain, so producers can wake a domain's thread.
#[derive(Clone, Debug, Default)]
pub struct Wakers {
    pub clocked: Arc<DomainWaker>,
    pub packet: Arc<DomainWaker>,
}

impl Wakers {
    pub fn get(&self, d: Domain) -> &Arc<DomainWaker> {
        match d {
            Domain::Clocked => &self.clocked,
            Domain::Packet => &self.packet,
        }
    }
}

impl CompiledGraph {
    pub fn stage_index(&self, id: &str) -> Option<usize> {
        self.stages.iter().position(|s| s.id == id)
    }

    pub fn domain(&self, d: Domain) -> Option<&DomainPlan> {
        self.domains.iter().find(|p| p.domain == d)
    }

    /// The longest declared latency over all paths.
    pub fn max_path_latency(&self) -> Duration {
        self.paths.iter().map(|p| p.total).max().unwrap_or_default()
    }
}

/// Stages of a running graph that a recompilation may keep.
#[derive(Default)]
pub struct Existing {
    pub stages: HashMap<StageKey, ExistingStage>,
}

/// A kept stage's ports and figures (its processor stays in the executor).
#[derive(Clone)]
pub struct ExistingStage {
    pub inputs: Vec<PortDecl>,
    pub outputs: Vec<PortDecl>,
    pub latency: Duration,
    pub counters: Vec<(String, Counter)>,
    pub gauges: Vec<(String, Gauge)>,
    pub timing: Arc<StageTiming>,
}

/// Compiles a graph.
pub fn compile(
    spec: &GraphSpec,
    registry: &Registry,
    resources: &Resources,
) -> Result<CompiledGraph, GraphErrors> {
    compile_with(
        spec,
        registry,
        resources,
        &Existing::default(),
        Wakers::default(),
    )
}

/// Compiles a graph, keeping the stages listed in `existing` instead of
/// building them again.
pub fn compile_with(
    spec: &GraphSpec,
    registry: &Registry,
    resources: &Resources,
    existing: &Existing,
    wakers: Wakers,
) -> Result<CompiledGraph, GraphErrors> {
    compile_inner(spec, registry, resources, existing, wakers, false)
}

/// Compiles a graph only to describe it (`graph explain`): every factory is
/// told it is a dry run, so no file, thread or socket is created. The
/// result must not be run.
pub fn compile_dry_run(
    spec: &GraphSpec,
    registry: &Registry,
    resources: &Resources,
) -> Result<CompiledGraph, GraphErrors> {
    compile_inner(
        spec,
        registry,
        resources,
        &Existing::default(),
        Wakers::default(),
        true,
    )
}

fn compile_inner(
    spec: &GraphSpec,
    registry: &Registry,
    resources: &Resources,
    existing: &Existing,
    wakers: Wakers,
    dry_run: bool,
) -> Result<CompiledGraph, GraphErrors> {
    let mut diag = Diagnostics::new(&spec.file);
    validate::check_ids(spec, &mut diag);
    let env = build::BuildEnv {
        registry,
        resources,
        existing,
        dry_run,
    };
    let built = build::build_stages(spec, &env, &mut diag);
    let linked = link::resolve_links(spec, built, &mut diag);
    link::check_required_inputs(spec, &linked, &mut diag);
    let sorted = sort::sort(linked, &mut diag);
    diag.finish()?;

    let file = spec.file.as_str();
    let mut errors: Vec<GraphError> = Vec::new();
    let sort::Sorted {
        mut stages,
        links,
        order,
    } = sorted;

    // Domain bridges: every link between domains becomes ring tx -> ring rx.
    let mut bridges = Vec::new();
    let mut bridge_edges = Vec::new();
    let mut final_links = Vec::new();
    let mut order = order;
    for l in links {
        let (fd, td) = (stages[l.from.0].domain, stages[l.to.0].domain);
        if fd == td {
            final_links.push(l);
            continue;
        }
        let from_ref = PortRef {
            stage: stages[l.from.0].id.clone(),
            port: stages[l.from.0].outputs[l.from.1].name.clone(),
        };
        let to_ref = PortRef {
            stage: stages[l.to.0].id.clone(),
            port: stages[l.to.0].inputs[l.to.1].name.clone(),
        };
        if !l.ty.can_bridge() {
            errors.push(
                GraphError::new(
                    ErrorKind::BadDomain,
                    format!("`{from_ref}` ({}) and `{to_ref}` ({}) are in different domains, and {} cannot cross domains", fd.name(), td.name(), l.ty),
                )
                .at(file, spec.links.iter().find(|x| x.from == from_ref && x.to == to_ref).and_then(|x| x.loc.line()))
                .stage(&to_ref.stage)
                .help("PCM is bound to its clock: put both stages in the same domain, or encode to frames before crossing"),
            );
            continue;
        }
        let capacity = spec.batch_capacity.max(16) * 4;
        let base = format!("~bridge:{from_ref}->{to_ref}");
        let (tx_id, rx_id) = (format!("{base}:tx"), format!("{base}:rx"));
        let key = |id: &str| StageKey(format!("{id}|{}|{}|{}", fd.name(), td.name(), l.ty));
        // Entering the clocked domain, items wait up to one quantum for the next cycle.
        let rx_latency = if td == Domain::Clocked {
            spec.clock.quantum
        } else {
            Duration::ZERO
        };
        let tx_ports = (vec![PortDecl::new("in", l.ty)], vec![]);
        let rx_ports = (vec![], vec![PortDecl::new("out", l.ty)]);
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
                let (tx, rx) =
                    bridge_pair(l.ty, capacity, spec.batch_capacity, wakers.get(td).clone());
                tx_stage.processor = Some(tx.processor);
                tx_stage.counters = tx.counters;
                rx_stage.processor = Some(rx.processor);
                rx_stage.counters = rx.counters;
            }
        }
        let tx_i = stages.len();
        stages.push(tx_stage);
        let rx_i = stages.len();
        stages.push(rx_stage);
        final_links.push(ResolvedLink {
            from: l.from,
            to: (tx_i, 0),
            ty: l.ty,
        });
        final_links.push(ResolvedLink {
            from: (rx_i, 0),
            to: l.to,
            ty: l.ty,
        });
        bridge_edges.push((tx_i, rx_i));
        // Keep a valid topological order: tx right after its producer, rx
        // right before its consumer.
        let p = order.iter().position(|&x| x == l.from.0).unwrap_or(0);
        order.insert(p + 1, tx_i);
        let c = order
            .iter()
            .position(|&x| x == l.to.0)
            .unwrap_or(order.len());
        order.insert(c, rx_i);
        bridges.push(BridgeInfo {
            from: from_ref,
            to: to_ref,
            ty: l.ty,
            from_domain: fd,
            to_domain: td,
            capacity,
        });
    }
    if !errors.is_empty() {
        return Err(GraphErrors(errors));
    }

    // Per-domain schedules with buffer reuse.
    let domains_used: BTreeSet<Domain> = stages.iter().map(|s| s.domain).collect();
    let mut domains = Vec::new();
    for d in domains_used {
        let steps_order: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| stages[i].domain == d)
            .collect();
        domains.push(plan_domain(d, &steps_order, &stages, &final_links));
    }

    let paths = latency_paths(&stages, &final_links, &bridge_edges);
    Ok(CompiledGraph {
        name: spec.name.clone(),
        file: spec.file.clone(),
        clock: spec.clock,
        batch_capacity: spec.batch_capacity,
        stages,
        links: final_links,
        bridges,
        domains,
        paths,
        wakers,
    })
}

/// The errors the checking passes find, located in the graph's file.
struct Diagnostics<'a> {
    file: &'a str,
    errors: Vec<GraphError>,
}

impl<'a> Diagnostics<'a> {
    fn new(file: &'a str) -> Self {
        Diagnostics {
            file,
            errors: Vec::new(),
        }
    }

    /// An error at `loc` in the graph's file; the caller adds the stage and help.
    fn error(&self, kind: ErrorKind, loc: Loc, message: String) -> GraphError {
        GraphError::new(kind, message).at(self.file, loc.line())
    }

    fn push(&mut self, e: GraphError) {
        self.errors.push(e);
    }

    /// Ends the checks: `Err` with every error found, sorted by line. The
    /// sort is stable, so errors on one line keep the order of the passes.
    fn finish(mut self) -> Result<(), GraphErrors> {
        if self.errors.is_empty() {
            return Ok(());
        }
        self.errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        Err(GraphErrors(self.errors))
    }
}

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

const MAX_PATHS: usize = 256;

fn latency_paths(
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
