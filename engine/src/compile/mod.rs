//! Validation and compilation of a [`GraphSpec`] into per-domain schedules.
//!
//! Runs on the control side. Every problem is reported with the file, line,
//! stage id and a fix; as many as can be found in one compile are returned
//! together.
//!
//! `compile_inner` runs the passes in order, one module each. Each pass takes
//! what the one before produced and returns a new value. To add a pass, add a
//! module and one call in `compile_inner`; a pass that checks the graph runs
//! before `Diagnostics::finish` and reports through it.
//!
//! | Pass | Module | Takes | Gives |
//! |---|---|---|---|
//! | ids: snake_case, unique | `validate` | [`GraphSpec`] | errors |
//! | build stages | `build` | [`GraphSpec`] | `BuiltStages` |
//! | resolve links | `link` | `BuiltStages` | `Linked` |
//! | required inputs linked | `link` | `Linked` | errors |
//! | delayed (feedback) links in one domain | `feedback` | `Linked` | errors |
//! | sort (Kahn, delayed links left out), cycle check | `sort` | `Linked` | `Sorted` |
//! | domain bridges | `bridges` | `Sorted` | `Bridged` |
//! | one-cycle delays for delayed links | `feedback` | `Bridged` | `Bridged` |
//! | per-domain schedules, buffer reuse | `schedule` | `Bridged` | [`DomainPlan`]s |
//! | latency paths | `latency` | `Bridged` | [`LatencyPath`]s |
//!
//! The checking passes (ids to sort) report into one `Diagnostics` and carry
//! on, so one compile reports as many mistakes as it can; the compile stops
//! after the sort if there were any. The passes after that run only on a
//! graph that passed every check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::bridge::DomainWaker;
use crate::error::{ErrorKind, GraphError, GraphErrors};
use crate::port::{PortDecl, PortType};
use crate::registry::Registry;
use crate::spec::{ClockSpec, GraphSpec, Loc, PortRef};
use crate::stage::{Counter, Domain, Gauge, Processor, Resources};
use crate::timing::StageTiming;

mod bridges;
mod build;
mod feedback;
mod latency;
mod link;
mod schedule;
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

/// A one-cycle delay the compiler put on a `delay = 1` link.
#[derive(Clone, Debug)]
pub struct DelayInfo {
    pub from: PortRef,
    pub to: PortRef,
    pub ty: PortType,
    pub domain: Domain,
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
    /// Delayed (feedback) links, each carried by a compiler stage pair.
    pub delays: Vec<DelayInfo>,
    pub domains: Vec<DomainPlan>,
    pub paths: Vec<LatencyPath>,
    pub wakers: Wakers,
    /// What compiled but looks wrong (a shared cell only one stage uses);
    /// each is also logged as a warning.
    pub warnings: Vec<String>,
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

/// The pipeline. Every pass is a function of what the passes before it
/// produced; see the module doc for the table.
fn compile_inner(
    spec: &GraphSpec,
    registry: &Registry,
    resources: &Resources,
    existing: &Existing,
    wakers: Wakers,
    dry_run: bool,
) -> Result<CompiledGraph, GraphErrors> {
    // Checking passes: each reports what it finds and lets the next one run.
    let mut diag = Diagnostics::new(&spec.file);
    validate::check_ids(spec, &mut diag);
    if spec.stages.is_empty() {
        return Err(GraphErrors(vec![GraphError::new(
            ErrorKind::Build,
            "the graph has no stages",
        )
        .at(&spec.file, None)
        .help("add [[stage]] tables; `wzp-client stages` lists the kinds")]));
    }
    // More stages than a domain has slots: refused before any is built (a
    // stage's build may open files or devices).
    if let Some(over) = spec.stages.get(crate::exec::DEFAULT_SLOTS) {
        diag.push(
            diag.error(
                ErrorKind::Build,
                over.loc,
                format!(
                    "the graph has {} stages; a graph holds at most {}",
                    spec.stages.len(),
                    crate::exec::DEFAULT_SLOTS
                ),
            )
            .stage(&over.id)
            .help("split it into several graphs"),
        );
        return Err(diag.finish().expect_err("an error was pushed"));
    }
    let env = build::BuildEnv {
        registry,
        resources,
        existing,
        dry_run,
    };
    let built = build::build_stages(spec, &env, &mut diag);
    let mut linked = link::resolve_links(spec, built, &mut diag);
    link::check_required_inputs(spec, &linked, &mut diag);
    feedback::check_delayed(&mut linked, &mut diag);
    let sorted = sort::sort(linked, &mut diag);
    diag.finish()?;
    // A cell one stage writes and no other reads (or the reverse) is a
    // name typed two ways: the graph runs, but a controller's decisions go
    // nowhere. Only on a fresh graph: a reconfiguration keeps stages that
    // do not ask again.
    let mut warnings = Vec::new();
    if existing.stages.is_empty() {
        for (name, stage) in resources.lonely_shared() {
            let w = format!(
                "{}: stage `{stage}` is the only one using the shared cell {name:?}; no other \
                 stage writes or reads it (is the name the same on both sides?)",
                spec.file
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }

    // Planning passes, on a graph that passed every check.
    let bridged = bridges::insert_bridges(spec, existing, &wakers, sorted)?;
    let bridged = feedback::insert_delays(spec, existing, bridged);
    let domains = schedule::plan_domains(&bridged);
    // Bridges and delays add stages of their own.
    if let Some(plan) = domains
        .iter()
        .find(|p| p.steps.len() > crate::exec::DEFAULT_SLOTS)
    {
        return Err(GraphErrors(vec![GraphError::new(
            ErrorKind::Build,
            format!(
                "the {:?} domain has {} stages with its bridges; a domain holds at most {}",
                plan.domain,
                plan.steps.len(),
                crate::exec::DEFAULT_SLOTS
            ),
        )
        .at(&spec.file, None)
        .help("split the graph into several graphs")]));
    }
    let paths = latency::latency_paths(&bridged.stages, &bridged.links, &bridged.bridge_edges);
    Ok(CompiledGraph {
        name: spec.name.clone(),
        file: spec.file.clone(),
        clock: spec.clock,
        batch_capacity: spec.batch_capacity,
        stages: bridged.stages,
        links: bridged.links,
        bridges: bridged.bridges,
        delays: bridged.delays,
        domains,
        paths,
        wakers,
        warnings,
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

#[cfg(test)]
mod test_util {
    use super::*;

    /// A stage for pass tests: no processor, ports `(name, type)`.
    pub(super) fn stage(
        id: &str,
        domain: Domain,
        inputs: &[(&str, PortType)],
        outputs: &[(&str, PortType)],
        latency_ms: u64,
    ) -> CompiledStage {
        let decls = |ports: &[(&str, PortType)]| {
            ports
                .iter()
                .map(|&(name, ty)| PortDecl::new(name, ty))
                .collect::<Vec<_>>()
        };
        CompiledStage {
            id: id.to_string(),
            kind: "test.stage".into(),
            domain,
            source: inputs.is_empty(),
            inputs: decls(inputs),
            outputs: decls(outputs),
            latency: Duration::from_millis(latency_ms),
            processor: None,
            counters: Vec::new(),
            gauges: Vec::new(),
            timing: Arc::new(StageTiming::default()),
            key: StageKey(id.to_string()),
            bridge: false,
        }
    }

    /// A link from output `from.1` of stage `from.0` to input `to.1` of `to.0`.
    pub(super) fn link(from: (usize, usize), to: (usize, usize), ty: PortType) -> ResolvedLink {
        ResolvedLink { from, to, ty }
    }
}
