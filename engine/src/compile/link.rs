//! Passes 3 and 4: resolve each link to the ports of built stages (types
//! equal, one link per input), then check every required input has a link.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::build::BuiltStages;
use super::{CompiledStage, Diagnostics, ResolvedLink};
use crate::error::{did_you_mean, ErrorKind};
use crate::port::PortType;
use crate::spec::{GraphSpec, LinkSpec, Loc, PortRef};

/// The built stages and the links that resolved, in file order.
pub(super) struct Linked {
    pub stages: Vec<CompiledStage>,
    /// Where each of `stages` is declared in the graph file.
    pub locs: Vec<Loc>,
    pub links: Vec<ResolvedLink>,
    /// Links declared `delay = 1`: they deliver one cycle later, so the sort
    /// ignores them and a cycle through one is legal (see `feedback`).
    pub delayed: Vec<DelayedLink>,
}

/// A resolved link that delivers its items one cycle later.
#[derive(Clone, Debug)]
pub(super) struct DelayedLink {
    pub link: ResolvedLink,
    /// Where the link is declared.
    pub loc: Loc,
}

/// Resolves every link of `spec` against the built stages. Links that touch
/// a stage that failed to build are skipped silently: that stage's own
/// error already says what is wrong.
pub(super) fn resolve_links(
    spec: &GraphSpec,
    built: BuiltStages,
    diag: &mut Diagnostics,
) -> Linked {
    let failed: BTreeSet<&str> = spec
        .stages
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| !built.stages.iter().any(|c| c.id == *id))
        .collect();
    let resolver = Resolver {
        stages: &built.stages,
        index: built
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.as_str(), i))
            .collect(),
        failed,
    };
    let mut links: Vec<ResolvedLink> = Vec::new();
    let mut delayed: Vec<DelayedLink> = Vec::new();
    let mut linked_inputs: HashMap<(usize, usize), Loc> = HashMap::new();
    for l in &spec.links {
        let from = resolver.endpoint(l, &l.from, true, diag);
        let to = resolver.endpoint(l, &l.to, false, diag);
        let (Some(from), Some(to)) = (from, to) else {
            continue;
        };
        let fty = built.stages[from.0].outputs[from.1].ty;
        let tty = built.stages[to.0].inputs[to.1].ty;
        if fty != tty {
            diag.push(type_mismatch(l, fty, tty, diag));
            continue;
        }
        if let Some(first) = linked_inputs.insert(to, l.loc) {
            diag.push(
                diag.error(
                    ErrorKind::BadLink,
                    l.loc,
                    format!("input `{}` is linked twice", l.to),
                )
                .stage(&l.to.stage)
                .help(format!(
                    "the first link is at line {}; to combine signals, add an `audio.mix` stage",
                    first.line
                )),
            );
            continue;
        }
        let link = ResolvedLink { from, to, ty: fty };
        if l.delay > 0 {
            delayed.push(DelayedLink { link, loc: l.loc });
        } else {
            links.push(link);
        }
    }
    Linked {
        stages: built.stages,
        locs: built.locs,
        links,
        delayed,
    }
}

/// Finds link endpoints among the built stages.
struct Resolver<'a> {
    stages: &'a [CompiledStage],
    index: HashMap<&'a str, usize>,
    /// Stages that failed to build (their links are not reported again).
    failed: BTreeSet<&'a str>,
}

impl Resolver<'_> {
    /// `(stage, port)` indices of `r`, an output of `l` if `output`, else an
    /// input; `None` (reported unless its stage failed) if there is none.
    fn endpoint(
        &self,
        l: &LinkSpec,
        r: &PortRef,
        output: bool,
        diag: &mut Diagnostics,
    ) -> Option<(usize, usize)> {
        if self.failed.contains(r.stage.as_str()) {
            return None;
        }
        let Some(&si) = self.index.get(r.stage.as_str()) else {
            let mut e = diag.error(
                ErrorKind::UnknownPort,
                l.loc,
                format!("link names unknown stage `{}`", r.stage),
            );
            if let Some(s) = did_you_mean(&r.stage, self.index.keys().copied()) {
                e = e.help(format!("did you mean `{s}.{}`?", r.port));
            }
            diag.push(e);
            return None;
        };
        let st = &self.stages[si];
        let ports = if output { &st.outputs } else { &st.inputs };
        if let Some(pi) = ports.iter().position(|p| p.name == r.port) {
            return Some((si, pi));
        }
        let other = if output { &st.inputs } else { &st.outputs };
        let dir = if output { "output" } else { "input" };
        let mut e = diag
            .error(
                ErrorKind::UnknownPort,
                l.loc,
                format!("`{}` ({}) has no {dir} port `{}`", r.stage, st.kind, r.port),
            )
            .stage(&r.stage);
        e = if other.iter().any(|p| p.name == r.port) {
            e.help(format!(
                "`{}` is an {} port; links go from an output (`from`) to an input (`to`)",
                r.port,
                if output { "input" } else { "output" }
            ))
        } else if let Some(p) = did_you_mean(&r.port, ports.iter().map(|p| p.name.as_str())) {
            e.help(format!("did you mean `{}.{p}`?", r.stage))
        } else {
            e.help(format!(
                "its {dir} ports are: {}",
                if ports.is_empty() {
                    "(none)".to_string()
                } else {
                    ports
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
        };
        diag.push(e);
        None
    }
}

fn type_mismatch(
    l: &LinkSpec,
    fty: PortType,
    tty: PortType,
    diag: &Diagnostics,
) -> crate::error::GraphError {
    let help = match (fty, tty) {
        (PortType::Pcm { rate: a }, PortType::Pcm { rate: b }) => {
            format!("insert an `audio.resample` stage with params {{ from = {a}, to = {b} }} between them")
        }
        _ => format!(
            "`{}` produces {fty}, `{}` takes {tty}; link ports of the same type",
            l.from, l.to
        ),
    };
    diag.error(
        ErrorKind::TypeMismatch,
        l.loc,
        format!(
            "type mismatch: `{}` is {fty} but `{}` is {tty}",
            l.from, l.to
        ),
    )
    .stage(&l.to.stage)
    .help(help)
}

/// Reports every required input with no link. An input that a link names
/// but that did not resolve already has its own error (or its other end
/// failed to build), so it is not also reported as unconnected.
pub(super) fn check_required_inputs(spec: &GraphSpec, linked: &Linked, diag: &mut Diagnostics) {
    let linked_inputs: HashSet<(usize, usize)> = linked
        .links
        .iter()
        .chain(linked.delayed.iter().map(|d| &d.link))
        .map(|l| l.to)
        .collect();
    let named_inputs: BTreeSet<(&str, &str)> = spec
        .links
        .iter()
        .map(|l| (l.to.stage.as_str(), l.to.port.as_str()))
        .collect();
    for (si, st) in linked.stages.iter().enumerate() {
        for (pi, p) in st.inputs.iter().enumerate() {
            if p.required
                && !linked_inputs.contains(&(si, pi))
                && !named_inputs.contains(&(st.id.as_str(), p.name.as_str()))
            {
                diag.push(
                    diag.error(
                        ErrorKind::UnconnectedInput,
                        linked.locs[si],
                        format!(
                            "required input `{}.{}` ({}) has no link",
                            st.id, p.name, p.ty
                        ),
                    )
                    .stage(&st.id)
                    .help(format!("add a [[link]] with to = \"{}.{}\"", st.id, p.name)),
                );
            }
        }
    }
}
