//! Every kind of graph mistake is caught before anything runs, and the error
//! names the file, the line, the stage and a fix.

mod common;

use std::collections::BTreeMap;

use wzp_engine::prelude::*;
use wzp_engine::ErrorKind;

struct Case {
    name: &'static str,
    body: &'static str,
    kind: ErrorKind,
    /// Line in the whole file (the header takes 3 lines).
    line: Option<usize>,
    stage: Option<&'static str>,
    /// Text the message or help must contain.
    mentions: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "unknown kind with a suggestion",
        body: "[[stage]]\nid = \"a\"\nkind = \"test.rmap\"\n",
        kind: ErrorKind::UnknownKind,
        line: Some(4),
        stage: Some("a"),
        mentions: &["test.rmap", "did you mean `test.ramp`"],
    },
    Case {
        name: "unknown port",
        body: "[[stage]]\nid = \"a\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"c\"\nkind = \"test.check\"\n[[link]]\nfrom = \"a.outt\"\nto = \"c.in\"\n",
        kind: ErrorKind::UnknownPort,
        line: Some(10),
        stage: Some("a"),
        mentions: &["no output port `outt`", "did you mean `a.out`"],
    },
    Case {
        name: "link from an input",
        body: "[[stage]]\nid = \"a\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"c\"\nkind = \"test.check\"\n[[link]]\nfrom = \"c.in\"\nto = \"a.out\"\n",
        kind: ErrorKind::UnknownPort,
        line: Some(10),
        stage: Some("c"),
        mentions: &["is an input port"],
    },
    Case {
        name: "type mismatch between rates",
        body: "[[stage]]\nid = \"a\"\nkind = \"test.ramp\"\nparams = { rate = 16000 }\n[[stage]]\nid = \"c\"\nkind = \"test.check\"\n[[link]]\nfrom = \"a.out\"\nto = \"c.in\"\n",
        kind: ErrorKind::TypeMismatch,
        line: Some(11),
        stage: Some("c"),
        mentions: &["Pcm@16000", "Pcm@48000", "audio.resample"],
    },
    Case {
        name: "type mismatch pcm to frame",
        body: "[[stage]]\nid = \"a\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"f\"\nkind = \"test.frame_sink\"\n[[link]]\nfrom = \"a.out\"\nto = \"f.in\"\n",
        kind: ErrorKind::TypeMismatch,
        line: Some(10),
        stage: Some("f"),
        mentions: &["Pcm@48000", "Frame"],
    },
    Case {
        name: "cycle lists its stages",
        body: "[[stage]]\nid = \"x\"\nkind = \"test.add\"\nparams = { label = \"l\" }\n[[stage]]\nid = \"y\"\nkind = \"test.add\"\nparams = { label = \"l\" }\n[[link]]\nfrom = \"x.out\"\nto = \"y.in\"\n[[link]]\nfrom = \"y.out\"\nto = \"x.in\"\n",
        kind: ErrorKind::Cycle,
        line: Some(4),
        stage: None,
        mentions: &["x -> y -> x"],
    },
    Case {
        name: "a delay elsewhere does not break a cycle",
        body: "[[stage]]\nid = \"x\"\nkind = \"test.echo\"\n[[stage]]\nid = \"y\"\nkind = \"test.add\"\nparams = { label = \"l\" }\n[[link]]\nfrom = \"x.out\"\nto = \"y.in\"\n[[link]]\nfrom = \"y.out\"\nto = \"x.in\"\n[[link]]\nfrom = \"y.out\"\nto = \"x.back\"\ndelay = 1\n",
        kind: ErrorKind::Cycle,
        line: Some(4),
        stage: None,
        mentions: &["x -> y -> x", "delay = 1"],
    },
    Case {
        name: "delay on a link between domains",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"fr\"\nkind = \"test.framer\"\n[[stage]]\nid = \"sink\"\nkind = \"test.frame_sink\"\ndomain = \"packet\"\n[[link]]\nfrom = \"s.out\"\nto = \"fr.in\"\n[[link]]\nfrom = \"fr.out\"\nto = \"sink.in\"\ndelay = 1\n",
        kind: ErrorKind::BadDomain,
        line: Some(17),
        stage: Some("sink"),
        mentions: &["`fr.out` (clocked) -> `sink.in` (packet)", "drop `delay`"],
    },
    Case {
        name: "delay longer than one quantum",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"c\"\nkind = \"test.check\"\n[[link]]\nfrom = \"s.out\"\nto = \"c.in\"\ndelay = 3\n",
        kind: ErrorKind::BadLink,
        line: Some(10),
        stage: None,
        mentions: &["delay = 3", "delay = 1", "net.netem"],
    },
    Case {
        name: "missing required param",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"a\"\nkind = \"test.add\"\n[[stage]]\nid = \"c\"\nkind = \"test.check\"\n[[link]]\nfrom = \"s.out\"\nto = \"a.in\"\n[[link]]\nfrom = \"a.out\"\nto = \"c.in\"\n",
        kind: ErrorKind::MissingParam,
        line: Some(7),
        stage: Some("a"),
        mentions: &["`label`", "add `label = ...`"],
    },
    Case {
        name: "ill-typed param",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\nparams = { frames = \"many\" }\n",
        kind: ErrorKind::BadParam,
        line: Some(7),
        stage: Some("s"),
        mentions: &["frames", "integer"],
    },
    Case {
        name: "param out of range (factory check)",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"a\"\nkind = \"test.add\"\nparams = { label = \"l\", value = 1e9 }\n[[link]]\nfrom = \"s.out\"\nto = \"a.in\"\n",
        kind: ErrorKind::BadParam,
        line: Some(10),
        stage: Some("a"),
        mentions: &["value", "out of range"],
    },
    Case {
        name: "unknown param with a suggestion",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\nparams = { frmaes = 3 }\n",
        kind: ErrorKind::UnknownParam,
        line: Some(7),
        stage: Some("s"),
        mentions: &["frmaes", "did you mean `frames`"],
    },
    Case {
        name: "duplicate id",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n",
        kind: ErrorKind::DuplicateId,
        line: Some(7),
        stage: Some("s"),
        mentions: &["duplicate stage id `s`", "line 4"],
    },
    Case {
        name: "id not snake_case",
        body: "[[stage]]\nid = \"Src-1\"\nkind = \"test.ramp\"\n",
        kind: ErrorKind::DuplicateId,
        line: Some(4),
        stage: None,
        mentions: &["snake_case"],
    },
    Case {
        name: "unconnected required input",
        body: "[[stage]]\nid = \"c\"\nkind = \"test.check\"\n",
        kind: ErrorKind::UnconnectedInput,
        line: Some(4),
        stage: Some("c"),
        mentions: &["c.in", "to = \"c.in\""],
    },
    Case {
        name: "unset placeholder",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\nparams = { frames = \"${count}\" }\n",
        kind: ErrorKind::UnsetPlaceholder,
        line: Some(7),
        stage: Some("s"),
        mentions: &["${count}", "--set count="],
    },
    Case {
        name: "a placeholder with no name",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\nparams = { frames = \"${a b}\" }\n",
        kind: ErrorKind::UnsetPlaceholder,
        line: Some(7),
        stage: Some("s"),
        mentions: &["no placeholder name", "$$"],
    },
    Case {
        name: "input linked twice",
        body: "[[stage]]\nid = \"a\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"b\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"c\"\nkind = \"test.check\"\n[[link]]\nfrom = \"a.out\"\nto = \"c.in\"\n[[link]]\nfrom = \"b.out\"\nto = \"c.in\"\n",
        kind: ErrorKind::BadLink,
        line: Some(16),
        stage: Some("c"),
        mentions: &["linked twice", "audio.mix"],
    },
    Case {
        name: "endpoint without a port",
        body: "[[link]]\nfrom = \"a\"\nto = \"c.in\"\n",
        kind: ErrorKind::BadLink,
        line: Some(4),
        stage: None,
        mentions: &["stage.port"],
    },
    Case {
        name: "unknown domain",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\ndomain = \"gpu\"\n",
        kind: ErrorKind::BadDomain,
        line: Some(7),
        stage: Some("s"),
        mentions: &["\"gpu\"", "clocked"],
    },
    Case {
        name: "stage not allowed in domain",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\ndomain = \"packet\"\n",
        kind: ErrorKind::BadDomain,
        line: Some(4),
        stage: Some("s"),
        mentions: &["cannot run in the packet domain"],
    },
    Case {
        name: "factory refuses",
        body: "[[stage]]\nid = \"f\"\nkind = \"test.fail\"\n",
        kind: ErrorKind::Build,
        line: Some(4),
        stage: Some("f"),
        mentions: &["refused on purpose"],
    },
    Case {
        name: "unknown field",
        body: "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\nparms = { frames = 1 }\n",
        kind: ErrorKind::Syntax,
        line: Some(7),
        stage: None,
        mentions: &["parms", "GRAPHS.md"],
    },
    Case {
        name: "not toml",
        body: "[[stage]\nid = \n",
        kind: ErrorKind::Syntax,
        line: Some(4),
        stage: None,
        mentions: &[],
    },
];

#[test]
fn every_mistake_is_reported_with_place_and_fix() {
    let (reg, _) = common::registry();
    for c in CASES {
        let text = format!("{}{}", common::HEADER, c.body);
        let result = GraphSpec::parse(&text, "t.toml", &BTreeMap::new())
            .and_then(|spec| compile(&spec, &reg, &Resources::new()).map(|_| ()));
        let errs = match result {
            Ok(()) => panic!("{}: compiled, but should fail with {:?}", c.name, c.kind),
            Err(e) => e,
        };
        let e = errs.0.iter().find(|e| e.kind == c.kind).unwrap_or_else(|| {
            panic!(
                "{}: expected {:?}, got {:?}\n{errs}",
                c.name,
                c.kind,
                errs.kinds()
            );
        });
        assert_eq!(e.file, "t.toml", "{}", c.name);
        assert_eq!(e.line, c.line, "{}: wrong line\n{e}", c.name);
        assert_eq!(e.stage.as_deref(), c.stage, "{}: wrong stage\n{e}", c.name);
        let shown = e.to_string();
        for m in c.mentions {
            assert!(
                shown.contains(m),
                "{}: error should mention {m:?}:\n{shown}",
                c.name
            );
        }
        if c.kind != ErrorKind::Syntax {
            assert!(e.help.is_some(), "{}: no help given\n{shown}", c.name);
        }
    }
}

#[test]
fn bad_header_values_are_reported() {
    for (clock, mention) in [
        ("{ driver = \"warp\" }", "warp"),
        ("{ quantum_ms = 0 }", "quantum_ms"),
        ("{ rate = 1 }", "rate"),
    ] {
        let text = format!("[graph]\nname = \"h\"\nclock = {clock}\n");
        let errs = GraphSpec::parse(&text, "h.toml", &BTreeMap::new()).unwrap_err();
        assert_eq!(errs.kinds(), [ErrorKind::BadHeader], "{clock}");
        assert_eq!(errs.0[0].line, Some(3));
        assert!(errs.to_string().contains(mention));
    }
    let errs = GraphSpec::parse("[stage]\n", "h.toml", &BTreeMap::new()).unwrap_err();
    assert_eq!(errs.kinds(), [ErrorKind::Syntax]);
}

#[test]
fn several_errors_come_back_together() {
    let (reg, _) = common::registry();
    let spec = common::parse(
        "[[stage]]\nid = \"a\"\nkind = \"test.nope\"\n[[stage]]\nid = \"b\"\nkind = \"test.ramp\"\nparams = { bogus = 1 }\n",
    );
    let errs = compile(&spec, &reg, &Resources::new()).err().unwrap();
    assert_eq!(
        errs.kinds(),
        [ErrorKind::UnknownKind, ErrorKind::UnknownParam]
    );
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let errs = GraphSpec::load(
        std::path::Path::new("/nonexistent/g.toml"),
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert_eq!(errs.kinds(), [ErrorKind::Io]);
    assert!(errs.to_string().contains("/nonexistent/g.toml"));
}

/// Cycles that pass through a `delay = 1` link compile; the same cycles
/// without the delay are refused (the cases above).
#[test]
fn a_cycle_through_a_delayed_link_compiles() {
    let (reg, _) = common::registry();
    // A self-loop, and a two-stage loop x -> y -> (delayed) x.
    for body in [
        "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"x\"\nkind = \"test.echo\"\n[[link]]\nfrom = \"s.out\"\nto = \"x.in\"\n[[link]]\nfrom = \"x.out\"\nto = \"x.back\"\ndelay = 1\n",
        "[[stage]]\nid = \"s\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"x\"\nkind = \"test.echo\"\n[[stage]]\nid = \"y\"\nkind = \"test.add\"\nparams = { label = \"l\" }\n[[link]]\nfrom = \"s.out\"\nto = \"x.in\"\n[[link]]\nfrom = \"x.out\"\nto = \"y.in\"\n[[link]]\nfrom = \"y.out\"\nto = \"x.back\"\ndelay = 1\n",
    ] {
        let spec = common::parse(body);
        let compiled = compile(&spec, &reg, &Resources::new())
            .unwrap_or_else(|e| panic!("feedback loop refused:\n{e}\n{body}"));
        assert_eq!(compiled.delays.len(), 1);
        let plan = &compiled.domains[0];
        let order: Vec<&str> = plan
            .steps
            .iter()
            .map(|st| compiled.stages[st.stage].id.as_str())
            .collect();
        // The delay's read end runs first; its write end after the producer.
        assert!(order[0].starts_with("~delay:") && order[0].ends_with(":out"), "{order:?}");
        let w = order.iter().position(|id| id.ends_with(":in")).unwrap();
        let producer = compiled.delays[0].from.stage.as_str();
        let p = order.iter().position(|id| *id == producer).unwrap();
        assert_eq!(w, p + 1, "{order:?}");
        let text = wzp_engine::explain::explain(&compiled);
        assert!(text.contains("delay 1 quantum"), "{text}");
    }
}

/// A graph with no stages is refused by the compiler, naming the file (it
/// failed at start with "already running or has no stages", no file).
#[test]
fn a_graph_without_stages_is_refused() {
    let (reg, _) = common::registry();
    let spec = common::parse("");
    let errs = compile(&spec, &reg, &Resources::new()).err().unwrap();
    assert_eq!(errs.kinds(), [ErrorKind::Build]);
    assert!(errs.to_string().contains("no stages"), "{errs}");
    assert!(errs.0[0].help.is_some());
}

/// A domain has 1024 slots: a graph with more stages is a compile error
/// naming the limit (it was an index out of bounds when the graph was
/// made), and one with exactly 1024 is made and runs.
#[test]
fn a_graph_with_more_stages_than_a_domain_holds_is_refused() {
    let (reg, _) = common::registry();
    let body = |n: usize| {
        (0..n)
            .map(|i| {
                format!(
                    "[[stage]]\nid = \"s{i}\"\nkind = \"test.ramp\"\nparams = {{ frames = 1 }}\n"
                )
            })
            .collect::<String>()
    };
    let spec = common::parse(&body(1025));
    let errs = compile(&spec, &reg, &Resources::new()).err().unwrap();
    assert_eq!(errs.kinds(), [ErrorKind::Build]);
    let shown = errs.to_string();
    assert!(
        shown.contains("1025 stages") && shown.contains("at most 1024"),
        "{shown}"
    );
    assert_eq!(errs.0[0].stage.as_deref(), Some("s1024"));
    let spec = common::parse(&body(1024));
    let compiled = compile(&spec, &reg, &Resources::new()).unwrap();
    let mut graph = Graph::new(compiled);
    graph
        .start(RunOptions {
            driver: ClockDriver::Fast,
            ..Default::default()
        })
        .unwrap();
    assert!(graph.wait(std::time::Duration::from_secs(60)));
}
