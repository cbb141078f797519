//! Pass 2: build every stage. Per stage: kind known, params known, coerced,
//! defaulted or required, domain allowed; then a running graph's stage is
//! kept if its key matches, or the factory builds a new one, whose PCM ports
//! must fit the quantum.

use std::sync::Arc;

use super::{CompiledStage, Diagnostics, Existing, ExistingStage, StageKey};
use crate::error::{did_you_mean, ErrorKind};
use crate::params::{coerce, ParamValue, Params};
use crate::port::PortType;
use crate::registry::Registry;
use crate::spec::{GraphSpec, Loc, StageSpec};
use crate::stage::{self, BuildContext, BuildError, Domain, Resources, StageInfo};
use crate::timing::StageTiming;

/// What the build pass needs besides the spec.
pub(super) struct BuildEnv<'a> {
    pub registry: &'a Registry,
    pub resources: &'a Resources,
    /// Stages of a running graph that may be kept instead of built again.
    pub existing: &'a Existing,
    /// Tell every factory not to create files, threads or sockets.
    pub dry_run: bool,
}

/// The stages that built, in file order. A stage that failed is left out:
/// its error says why, and the later passes skip the links that touch it.
pub(super) struct BuiltStages {
    pub stages: Vec<CompiledStage>,
    /// Where each of `stages` is declared in the graph file.
    pub locs: Vec<Loc>,
}

/// Builds every stage of `spec`, reporting each one that cannot be built.
pub(super) fn build_stages(
    spec: &GraphSpec,
    env: &BuildEnv,
    diag: &mut Diagnostics,
) -> BuiltStages {
    let mut built = BuiltStages {
        stages: Vec::new(),
        locs: Vec::new(),
    };
    for st in &spec.stages {
        if let Some(stage) = build_stage(spec, st, env, diag) {
            built.stages.push(stage);
            built.locs.push(st.loc);
        }
    }
    built
}

fn build_stage(
    spec: &GraphSpec,
    st: &StageSpec,
    env: &BuildEnv,
    diag: &mut Diagnostics,
) -> Option<CompiledStage> {
    let Some(factory) = env.registry.get(&st.kind) else {
        diag.push(unknown_kind(st, env.registry, diag));
        return None;
    };
    let info = factory.info();
    // Both checks run, so a stage with bad params and a bad domain gets both errors.
    let params = stage_params(st, &info, diag);
    let domain = stage_domain(st, &info, diag);
    let (Some(params), Some(domain)) = (params, domain) else {
        return None;
    };
    let key = stage_key(&st.id, &st.kind, domain, &params);
    if let Some(ex) = env.existing.stages.get(&key) {
        return Some(kept_stage(st, domain, key, ex));
    }
    let mut cx = BuildContext {
        rate: spec.clock.rate,
        quantum: spec.clock.quantum,
        batch_capacity: spec.batch_capacity,
        stage_id: &st.id,
        base_dir: spec.base_dir.as_deref(),
        dry_run: env.dry_run,
        counters: Vec::new(),
        gauges: Vec::new(),
        resources: env.resources,
    };
    match factory.build(&mut cx, &params) {
        Ok(built) => {
            if !pcm_ports_fit_quantum(spec, st, &built, diag) {
                return None;
            }
            Some(CompiledStage {
                id: st.id.clone(),
                kind: st.kind.clone(),
                domain,
                source: built.inputs.is_empty(),
                inputs: built.inputs,
                outputs: built.outputs,
                latency: built.latency,
                processor: Some(built.processor),
                counters: cx.counters,
                gauges: cx.gauges,
                timing: Arc::new(StageTiming::default()),
                key,
                bridge: false,
            })
        }
        Err(BuildError::Param(pe)) => {
            let loc = st
                .params
                .get(&pe.param)
                .map(|r| r.loc)
                .filter(|l| l.line > 0)
                .unwrap_or(st.loc);
            let doc = info
                .params
                .iter()
                .find(|p| p.name == pe.param)
                .map(|p| p.doc)
                .unwrap_or("");
            diag.push(
                diag.error(
                    ErrorKind::BadParam,
                    loc,
                    format!("param `{}`: {}", pe.param, pe.message),
                )
                .stage(&st.id)
                .help(doc.to_string()),
            );
            None
        }
        Err(BuildError::Other(msg)) => {
            diag.push(
                diag.error(
                    ErrorKind::Build,
                    st.loc,
                    format!("`{}` could not be built: {msg}", st.kind),
                )
                .stage(&st.id)
                .help(format!(
                    "check the stage's params; `wzp-client stages {}` describes them",
                    st.kind
                )),
            );
            None
        }
    }
}

fn unknown_kind(
    st: &StageSpec,
    registry: &Registry,
    diag: &Diagnostics,
) -> crate::error::GraphError {
    let e = diag
        .error(
            ErrorKind::UnknownKind,
            st.loc,
            format!("unknown stage kind `{}`", st.kind),
        )
        .stage(&st.id);
    match did_you_mean(&st.kind, registry.kinds()) {
        Some(k) => e.help(format!(
            "did you mean `{k}`? (`wzp-client stages` lists every kind)"
        )),
        None => e.help("`wzp-client stages` lists every kind"),
    }
}

/// The stage's params, coerced to their declared types with defaults filled
/// in; `None` if any is unknown, ill-typed or missing (each is reported).
fn stage_params(st: &StageSpec, info: &StageInfo, diag: &mut Diagnostics) -> Option<Params> {
    let mut params = Params::default();
    let mut ok = true;
    for (name, raw) in &st.params {
        if !info.params.iter().any(|p| p.name == name) {
            let mut e = diag
                .error(
                    ErrorKind::UnknownParam,
                    if raw.loc.line > 0 { raw.loc } else { st.loc },
                    format!("`{}` has no param `{name}`", st.kind),
                )
                .stage(&st.id);
            let names = info.params.iter().map(|p| p.name);
            e = match did_you_mean(name, names) {
                Some(n) => e.help(format!("did you mean `{n}`?")),
                None => e.help(format!(
                    "its params are: {}",
                    info.params
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            };
            diag.push(e);
            ok = false;
        }
    }
    for p in &info.params {
        match st.params.get(p.name) {
            Some(raw) => match coerce(p.ty, &raw.value) {
                Ok(v) => params.insert(p.name, v),
                Err(msg) => {
                    diag.push(
                        diag.error(
                            ErrorKind::BadParam,
                            if raw.loc.line > 0 { raw.loc } else { st.loc },
                            format!("param `{}`: {msg}", p.name),
                        )
                        .stage(&st.id)
                        .help(format!("`{}` is a {}: {}", p.name, p.ty, p.doc)),
                    );
                    ok = false;
                }
            },
            None => match &p.default {
                Some(d) => params.insert(p.name, d.clone()),
                None => {
                    diag.push(
                        diag.error(
                            ErrorKind::MissingParam,
                            st.loc,
                            format!("missing required param `{}`", p.name),
                        )
                        .stage(&st.id)
                        .help(format!(
                            "add `{} = ...` to its params ({}: {})",
                            p.name, p.ty, p.doc
                        )),
                    );
                    ok = false;
                }
            },
        }
    }
    ok.then_some(params)
}

/// The domain the stage runs in (the graph's choice or the kind's default);
/// `None`, reported, if the kind cannot run there.
fn stage_domain(st: &StageSpec, info: &StageInfo, diag: &mut Diagnostics) -> Option<Domain> {
    let domain = st.domain.unwrap_or(info.default_domain);
    if info.domains.contains(&domain) {
        return Some(domain);
    }
    diag.push(
        diag.error(
            ErrorKind::BadDomain,
            st.loc,
            format!("`{}` cannot run in the {} domain", st.kind, domain.name()),
        )
        .stage(&st.id)
        .help(format!(
            "use one of: {}",
            info.domains
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    );
    None
}

/// A stage of the running graph, kept with its processor, counters and timing.
fn kept_stage(st: &StageSpec, domain: Domain, key: StageKey, ex: &ExistingStage) -> CompiledStage {
    CompiledStage {
        id: st.id.clone(),
        kind: st.kind.clone(),
        domain,
        source: ex.inputs.is_empty(),
        inputs: ex.inputs.clone(),
        outputs: ex.outputs.clone(),
        latency: ex.latency,
        processor: None,
        counters: ex.counters.clone(),
        gauges: ex.gauges.clone(),
        timing: ex.timing.clone(),
        key,
        bridge: false,
    }
}

/// Every PCM port of a built stage must have a whole number of samples per
/// quantum; `false` (each port reported) if one does not.
fn pcm_ports_fit_quantum(
    spec: &GraphSpec,
    st: &StageSpec,
    built: &stage::Built,
    diag: &mut Diagnostics,
) -> bool {
    let quantum_ns = spec.clock.quantum.as_nanos() as u64;
    let mut fit = true;
    for p in built.inputs.iter().chain(&built.outputs) {
        if let PortType::Pcm { rate } = p.ty {
            if (rate as u64 * quantum_ns) % 1_000_000_000 != 0 {
                diag.push(
                    diag.error(
                        ErrorKind::BadHeader,
                        st.loc,
                        format!(
                            "port `{}` runs at {rate} Hz, which has no whole number of samples in a {} ms quantum",
                            p.name,
                            spec.clock.quantum.as_millis()
                        ),
                    )
                    .stage(&st.id)
                    .help("pick a quantum of 10 or 20 ms, or a rate that divides it"),
                );
                fit = false;
            }
        }
    }
    fit
}

/// Same id, kind, domain and params: the same stage across a reconfiguration.
fn stage_key(id: &str, kind: &str, domain: Domain, params: &Params) -> StageKey {
    let mut s = format!("{id}|{kind}|{}", domain.name());
    for (k, v) in params.iter() {
        let v = match v {
            ParamValue::Float(x) => format!("{:?}", x.to_bits()),
            other => other.to_string(),
        };
        s.push_str(&format!("|{k}={v}"));
    }
    StageKey(s)
}
