//! Graph files: TOML parsed into a [`GraphSpec`], placeholders filled.
//!
//! ```toml
//! [graph]
//! name = "loopback"
//! clock = { driver = "timer", quantum_ms = 20, rate = 48000 }
//!
//! [vars]
//! input = "builtin:speech"
//!
//! [[stage]]
//! id = "src"
//! kind = "audio.wav_source"
//! params = { path = "${input}" }
//!
//! [[link]]
//! from = "src.out"
//! to = "sink.in"
//! ```
//!
//! The full schema is in `docs/GRAPHS.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{did_you_mean, ErrorKind, GraphError, GraphErrors};
use crate::stage::Domain;

/// How the clocked domain is driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockDriver {
    /// A timer thread, one cycle per quantum of wall time.
    Timer,
    /// As fast as the machine goes (file-to-file).
    Fast,
    /// Cycles are stepped by the caller (tests).
    Manual,
}

impl ClockDriver {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "timer" => Some(ClockDriver::Timer),
            "fast" => Some(ClockDriver::Fast),
            "manual" => Some(ClockDriver::Manual),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClockDriver::Timer => "timer",
            ClockDriver::Fast => "fast",
            ClockDriver::Manual => "manual",
        }
    }
}

/// The graph clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockSpec {
    pub driver: ClockDriver,
    pub quantum: Duration,
    /// Graph sample rate, Hz.
    pub rate: u32,
}

impl Default for ClockSpec {
    fn default() -> Self {
        ClockSpec {
            driver: ClockDriver::Timer,
            quantum: Duration::from_millis(20),
            rate: 48_000,
        }
    }
}

/// A place in the graph file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    /// 1-based line; 0 when the spec was built in code.
    pub line: usize,
}

impl Loc {
    pub fn line(self) -> Option<usize> {
        (self.line > 0).then_some(self.line)
    }
}

/// A parameter value as written, with its place.
#[derive(Clone, Debug, PartialEq)]
pub struct RawParam {
    pub value: toml::Value,
    pub loc: Loc,
}

/// One `[[stage]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct StageSpec {
    pub id: String,
    pub kind: String,
    pub params: BTreeMap<String, RawParam>,
    pub domain: Option<Domain>,
    pub loc: Loc,
}

impl StageSpec {
    pub fn new(id: &str, kind: &str) -> Self {
        StageSpec {
            id: id.into(),
            kind: kind.into(),
            params: BTreeMap::new(),
            domain: None,
            loc: Loc::default(),
        }
    }

    pub fn param(mut self, name: &str, value: impl Into<toml::Value>) -> Self {
        self.params.insert(
            name.into(),
            RawParam {
                value: value.into(),
                loc: Loc::default(),
            },
        );
        self
    }

    pub fn in_domain(mut self, domain: Domain) -> Self {
        self.domain = Some(domain);
        self
    }
}

/// `stage.port`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRef {
    pub stage: String,
    pub port: String,
}

impl std::fmt::Display for PortRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.stage, self.port)
    }
}

impl PortRef {
    pub fn parse(s: &str) -> Option<PortRef> {
        let (stage, port) = s.rsplit_once('.')?;
        if stage.is_empty() || port.is_empty() {
            return None;
        }
        Some(PortRef {
            stage: stage.into(),
            port: port.into(),
        })
    }
}

/// One `[[link]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSpec {
    pub from: PortRef,
    pub to: PortRef,
    pub loc: Loc,
    /// Quanta the link holds its items back: 0 (the default) delivers them
    /// in the same cycle; 1 delivers them one cycle later, which makes a
    /// cycle through this link legal (a feedback edge, docs/GRAPHS.md).
    pub delay: u32,
}

/// A whole graph, placeholders filled.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphSpec {
    pub name: String,
    pub clock: ClockSpec,
    /// Items per frame/packet batch.
    pub batch_capacity: usize,
    pub stages: Vec<StageSpec>,
    pub links: Vec<LinkSpec>,
    /// The file it came from (`<memory>` when built in code).
    pub file: String,
    pub base_dir: Option<PathBuf>,
}

/// Default items per batch.
pub const DEFAULT_BATCH_CAPACITY: usize = 64;

impl GraphSpec {
    pub fn new(name: &str, clock: ClockSpec) -> Self {
        GraphSpec {
            name: name.into(),
            clock,
            batch_capacity: DEFAULT_BATCH_CAPACITY,
            stages: Vec::new(),
            links: Vec::new(),
            file: "<memory>".into(),
            base_dir: None,
        }
    }

    pub fn stage(mut self, s: StageSpec) -> Self {
        self.stages.push(s);
        self
    }

    /// Adds a link; `from` and `to` are `stage.port`. Panics on a malformed
    /// endpoint, since this is for graphs written in code.
    pub fn link(mut self, from: &str, to: &str) -> Self {
        let p = |s: &str| {
            PortRef::parse(s).unwrap_or_else(|| panic!("link endpoint {s:?} is not `stage.port`"))
        };
        self.links.push(LinkSpec {
            from: p(from),
            to: p(to),
            loc: Loc::default(),
            delay: 0,
        });
        self
    }

    /// Adds a feedback link that delivers one cycle later (`delay = 1`).
    pub fn link_delayed(mut self, from: &str, to: &str) -> Self {
        self = self.link(from, to);
        if let Some(l) = self.links.last_mut() {
            l.delay = 1;
        }
        self
    }

    pub fn find_stage(&self, id: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|s| s.id == id)
    }

    /// Reads and parses a graph file.
    pub fn load(path: &Path, vars: &BTreeMap<String, String>) -> Result<GraphSpec, GraphErrors> {
        let file = path.display().to_string();
        let text = crate::files::read_text(path, crate::files::MAX_TEXT).map_err(|e| {
            GraphError::new(ErrorKind::Io, format!("cannot read graph file: {e}"))
                .at(&file, None)
                .help("check the path; shipped graphs are in graphs/")
        })?;
        let mut spec = GraphSpec::parse(&text, &file, vars)?;
        spec.base_dir = path.parent().map(Path::to_path_buf);
        Ok(spec)
    }

    /// Parses graph text. `file` names it in errors; `vars` fill `${name}`.
    pub fn parse(
        text: &str,
        file: &str,
        vars: &BTreeMap<String, String>,
    ) -> Result<GraphSpec, GraphErrors> {
        let lines = LineIndex::new(text);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line(s.start));
            GraphError::new(ErrorKind::Syntax, e.message().trim().to_string())
                .at(file, line)
                .help("see docs/GRAPHS.md for the graph file schema")
        })?;
        let mut errors = Vec::new();
        let loc = |span: std::ops::Range<usize>| Loc {
            line: lines.line(span.start),
        };

        // Placeholder values: the file's [vars], overridden by the caller's.
        let mut all_vars: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &raw.vars {
            let s = match v.get_ref() {
                toml::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            all_vars.insert(k.clone(), s);
        }
        all_vars.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));

        let header_loc = loc(raw.graph.span());
        let header = raw.graph.into_inner();
        let mut clock = ClockSpec::default();
        if let Some(c) = header.clock {
            let cloc = loc(c.span());
            let c = c.into_inner();
            if let Some(d) = c.driver {
                let d = fill(&d, &all_vars).unwrap_or(d);
                match ClockDriver::parse(&d) {
                    Some(d) => clock.driver = d,
                    None => errors.push(
                        GraphError::new(
                            ErrorKind::BadHeader,
                            format!("unknown clock driver {d:?}"),
                        )
                        .at(file, cloc.line())
                        .help("use \"timer\", \"fast\" or \"manual\""),
                    ),
                }
            }
            if let Some(q) = c.quantum_ms {
                if !(1..=1000).contains(&q) {
                    errors.push(
                        GraphError::new(
                            ErrorKind::BadHeader,
                            format!("quantum_ms = {q} is out of range"),
                        )
                        .at(file, cloc.line())
                        .help("use 1..=1000; voice graphs use 10 or 20"),
                    );
                } else {
                    clock.quantum = Duration::from_millis(q as u64);
                }
            }
            if let Some(r) = c.rate {
                if !(8_000..=192_000).contains(&r) {
                    errors.push(
                        GraphError::new(
                            ErrorKind::BadHeader,
                            format!("rate = {r} is out of range"),
                        )
                        .at(file, cloc.line())
                        .help("use 8000..=192000; Opus graphs use 48000"),
                    );
                } else {
                    clock.rate = r as u32;
                }
            }
        }
        let batch_capacity = match header.batch_capacity {
            None => DEFAULT_BATCH_CAPACITY,
            Some(n) if (1..=65_536).contains(&n) => n as usize,
            Some(n) => {
                errors.push(
                    GraphError::new(
                        ErrorKind::BadHeader,
                        format!("batch_capacity = {n} is out of range"),
                    )
                    .at(file, header_loc.line())
                    .help("use 1..=65536"),
                );
                DEFAULT_BATCH_CAPACITY
            }
        };

        let mut stages = Vec::new();
        for st in raw.stage {
            let sloc = loc(st.span());
            let st = st.into_inner();
            let id = st.id.into_inner();
            let kind = st.kind.into_inner();
            let mut params = BTreeMap::new();
            for (name, v) in st.params {
                let ploc = loc(v.span());
                let value = match fill_value(v.into_inner(), &all_vars) {
                    Ok(v) => v,
                    Err(missing) => {
                        errors.push(
                            GraphError::new(
                                ErrorKind::UnsetPlaceholder,
                                format!("param `{name}` uses ${{{missing}}}, which is not set"),
                            )
                            .at(file, ploc.line())
                            .stage(&id)
                            .help(
                                if !missing.is_empty()
                                    && missing
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                                {
                                    format!(
                                        "pass --set {missing}=VALUE, add `{missing} = ...` under [vars], or write ${{{missing}:-default}}"
                                    )
                                } else {
                                    format!(
                                        "${{{missing}}} is no placeholder name: use letters, digits and `_` \
                                         (e.g. ${{rate}}), or write $$ for a literal `$`"
                                    )
                                },
                            ),
                        );
                        continue;
                    }
                };
                params.insert(name, RawParam { value, loc: ploc });
            }
            let domain = match st.domain {
                None => None,
                Some(d) => {
                    let dloc = loc(d.span());
                    let d = d.into_inner();
                    match Domain::parse(&d) {
                        Some(d) => Some(d),
                        None => {
                            errors.push(
                                GraphError::new(
                                    ErrorKind::BadDomain,
                                    format!("unknown domain {d:?}"),
                                )
                                .at(file, dloc.line())
                                .stage(&id)
                                .help("use \"clocked\" or \"packet\""),
                            );
                            None
                        }
                    }
                }
            };
            stages.push(StageSpec {
                id,
                kind,
                params,
                domain,
                loc: sloc,
            });
        }

        let mut links = Vec::new();
        for l in raw.link {
            let lloc = loc(l.span());
            let l = l.into_inner();
            let mut end = |s: String| match PortRef::parse(&s) {
                Some(p) => Some(p),
                None => {
                    errors.push(
                        GraphError::new(
                            ErrorKind::BadLink,
                            format!("link endpoint {s:?} is not `stage.port`"),
                        )
                        .at(file, lloc.line())
                        .help("write it as \"stage_id.port\", e.g. \"src.out\""),
                    );
                    None
                }
            };
            let from = end(l.from.into_inner());
            let to = end(l.to.into_inner());
            let delay = match l.delay.map(Spanned::into_inner) {
                None | Some(0) => Some(0),
                Some(1) => Some(1),
                Some(d) => {
                    errors.push(
                        GraphError::new(
                            ErrorKind::BadLink,
                            format!("link delay = {d} is not supported"),
                        )
                        .at(file, lloc.line())
                        .help(
                            "write `delay = 1` (one quantum, for a feedback link) or leave it out; \
                             for a longer delay put a `net.netem` stage with `delay` on the path",
                        ),
                    );
                    None
                }
            };
            if let (Some(from), Some(to), Some(delay)) = (from, to, delay) {
                links.push(LinkSpec {
                    from,
                    to,
                    loc: lloc,
                    delay,
                });
            }
        }

        if !errors.is_empty() {
            return Err(GraphErrors(errors));
        }
        Ok(GraphSpec {
            name: header.name.unwrap_or_else(|| "graph".into()),
            clock,
            batch_capacity,
            stages,
            links,
            file: file.to_string(),
            base_dir: None,
        })
    }
}

impl GraphSpec {
    /// The placeholder names graph `text` knows: its `[vars]` keys and every
    /// `${name}` / `${name:-default}` in its clock driver and stage params,
    /// sorted. A `--set` of any other name would change nothing. `file`
    /// names the text in a syntax error.
    pub fn placeholder_names(text: &str, file: &str) -> Result<BTreeSet<String>, GraphErrors> {
        let lines = LineIndex::new(text);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| lines.line(s.start));
            GraphError::new(ErrorKind::Syntax, e.message().trim().to_string())
                .at(file, line)
                .help("see docs/GRAPHS.md for the graph file schema")
        })?;
        let mut names: BTreeSet<String> = raw.vars.keys().cloned().collect();
        if let Some(driver) = raw
            .graph
            .get_ref()
            .clock
            .as_ref()
            .and_then(|c| c.get_ref().driver.as_ref())
        {
            placeholders_in(driver, &mut names);
        }
        for st in &raw.stage {
            for v in st.get_ref().params.values() {
                placeholders_in_value(v.get_ref(), &mut names);
            }
        }
        Ok(names)
    }

    /// Checks that every name in `given` (the caller's `--set` names) is a
    /// placeholder of graph `text` (see [`GraphSpec::placeholder_names`]):
    /// a name the graph does not have is a mistake that would otherwise be
    /// silently ignored. The error names it, the file, and the known names.
    pub fn check_var_names<'a>(
        text: &str,
        file: &str,
        given: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), GraphErrors> {
        let known = GraphSpec::placeholder_names(text, file)?;
        let errors: Vec<GraphError> = given
            .into_iter()
            .filter(|name| !known.contains(*name))
            .map(|name| {
                let list = if known.is_empty() {
                    "it has none".to_string()
                } else {
                    format!(
                        "it has: {}",
                        known
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                };
                let help = match did_you_mean(name, known.iter().map(String::as_str)) {
                    Some(m) => format!("did you mean `{m}`? {list}"),
                    None => format!("set only the graph's own placeholders; {list}"),
                };
                GraphError::new(
                    ErrorKind::UnknownPlaceholder,
                    format!("--set {name}: the graph has no placeholder `{name}`"),
                )
                .at(file, None)
                .help(help)
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(GraphErrors(errors))
        }
    }
}

/// Adds the names of the `${name}` / `${name:-default}` placeholders in `s`,
/// scanned as [`fill`] does (`$$` is a literal `$`).
fn placeholders_in(s: &str, names: &mut BTreeSet<String>) {
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                rest = after;
                continue;
            };
            let inner = &body[..end];
            let name = inner.split_once(":-").map_or(inner, |(n, _)| n);
            names.insert(name.to_string());
            rest = &body[end + 1..];
        } else {
            rest = after;
        }
    }
}

fn placeholders_in_value(v: &toml::Value, names: &mut BTreeSet<String>) {
    match v {
        toml::Value::String(s) => placeholders_in(s, names),
        toml::Value::Array(a) => a.iter().for_each(|x| placeholders_in_value(x, names)),
        toml::Value::Table(t) => t.values().for_each(|x| placeholders_in_value(x, names)),
        _ => {}
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    graph: Spanned<RawHeader>,
    #[serde(default)]
    vars: BTreeMap<String, Spanned<toml::Value>>,
    #[serde(default)]
    stage: Vec<Spanned<RawStage>>,
    #[serde(default)]
    link: Vec<Spanned<RawLink>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: Option<String>,
    clock: Option<Spanned<RawClock>>,
    batch_capacity: Option<i64>,
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    driver: Option<String>,
    quantum_ms: Option<i64>,
    rate: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    id: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    params: BTreeMap<String, Spanned<toml::Value>>,
    domain: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    from: Spanned<String>,
    to: Spanned<String>,
    delay: Option<Spanned<i64>>,
}

/// Fills `${name}` and `${name:-default}` in `s`. `Err(name)` names the first
/// placeholder with no value. `$$` stands for a literal `$`.
pub fn fill(s: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                out.push('$');
                rest = after;
                continue;
            };
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match vars.get(name).map(String::as_str).or(default) {
                Some(v) => out.push_str(v),
                None => return Err(name.to_string()),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn fill_value(v: toml::Value, vars: &BTreeMap<String, String>) -> Result<toml::Value, String> {
    Ok(match v {
        toml::Value::String(s) => toml::Value::String(fill(&s, vars)?),
        toml::Value::Array(a) => toml::Value::Array(
            a.into_iter()
                .map(|x| fill_value(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => toml::Value::Table(
            t.into_iter()
                .map(|(k, x)| Ok((k, fill_value(x, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn placeholders() {
        let v = vars(&[("a", "1"), ("name", "x")]);
        assert_eq!(fill("${a}", &v).unwrap(), "1");
        assert_eq!(fill("p/${name}.wav", &v).unwrap(), "p/x.wav");
        assert_eq!(fill("${zz:-7}", &v).unwrap(), "7");
        assert_eq!(fill("$$5 and $x", &v).unwrap(), "$5 and $x");
        assert_eq!(fill("${missing}", &v), Err("missing".to_string()));
        assert_eq!(fill("${unterminated", &v).unwrap(), "${unterminated");
    }

    #[test]
    fn parses_a_graph_with_lines() {
        let text = r#"
[graph]
name = "t"
clock = { driver = "fast", quantum_ms = 10, rate = 16000 }

[vars]
g = "3"

[[stage]]
id = "a"
kind = "test.src"
params = { gain = "${g}" }

[[link]]
from = "a.out"
to = "b.in"
"#;
        let spec = GraphSpec::parse(text, "t.toml", &vars(&[])).unwrap();
        assert_eq!(spec.clock.driver, ClockDriver::Fast);
        assert_eq!(spec.clock.quantum, Duration::from_millis(10));
        assert_eq!(spec.clock.rate, 16000);
        assert_eq!(spec.stages[0].loc.line, 9);
        assert_eq!(
            spec.stages[0].params["gain"].value,
            toml::Value::String("3".into())
        );
        assert_eq!(
            spec.links[0].to,
            PortRef {
                stage: "b".into(),
                port: "in".into()
            }
        );
        let spec = GraphSpec::parse(text, "t.toml", &vars(&[("g", "9")])).unwrap();
        assert_eq!(
            spec.stages[0].params["gain"].value,
            toml::Value::String("9".into())
        );
    }

    #[test]
    fn placeholder_names_are_the_vars_and_every_use() {
        let text = r#"
[graph]
name = "t"
clock = { driver = "${drv:-fast}" }

[vars]
g = "3"
unused = 1

[[stage]]
id = "a"
kind = "test.src"
params = { gain = "${g}", path = "${dir:-out}/${file}.wav", cost = "$${not_one}", list = ["${in_list}"], t = { k = "${in_table}" } }
"#;
        let names = GraphSpec::placeholder_names(text, "t.toml").unwrap();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            ["dir", "drv", "file", "g", "in_list", "in_table", "unused"]
        );
        GraphSpec::check_var_names(text, "t.toml", ["g", "file", "unused"]).unwrap();
        let e = GraphSpec::check_var_names(text, "t.toml", ["g", "fiel", "zzzzzzzz"]).unwrap_err();
        assert_eq!(e.kinds(), [ErrorKind::UnknownPlaceholder; 2]);
        assert_eq!(e.0[0].file, "t.toml");
        assert!(e.0[0].message.contains("`fiel`"), "{e}");
        let help = e.0[0].help.as_deref().unwrap();
        assert!(help.contains("did you mean `file`?"), "{help}");
        assert!(
            help.contains("dir, drv, file, g, in_list, in_table, unused"),
            "{help}"
        );
        assert!(!e.0[1].help.as_deref().unwrap().contains("did you mean"));
        // Not TOML: the syntax error, as parse gives it.
        let e = GraphSpec::placeholder_names("[graph", "bad.toml").unwrap_err();
        assert_eq!(e.kinds(), [ErrorKind::Syntax]);
        // A graph without placeholders says so.
        let e = GraphSpec::check_var_names("[graph]\n", "n.toml", ["x"]).unwrap_err();
        assert!(
            e.0[0].help.as_deref().unwrap().contains("it has none"),
            "{e}"
        );
    }
}
