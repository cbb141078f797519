//! The executor's cycle (and the swap it performs) allocates nothing.

mod common;

use wzp_engine::prelude::*;
use wzp_engine::rt_check::{assert_rt_safe, checker_installed, count_allocs};

wzp_engine::install_alloc_checker!();

#[test]
fn checker_detects_allocations() {
    assert!(checker_installed());
    let (_, n) = count_allocs(|| vec![1u8; 10]);
    assert!(n > 0, "an allocation went unseen");
}

#[test]
fn whole_graph_cycles_do_not_allocate() {
    let (reg, _) = common::registry();
    let spec = common::parse(
        r#"
[[stage]]
id = "src"
kind = "test.ramp"
[[stage]]
id = "add"
kind = "test.add"
params = { label = "x" }
[[stage]]
id = "fr"
kind = "test.framer"
[[stage]]
id = "sink"
kind = "test.frame_sink"
domain = "packet"
[[stage]]
id = "chk"
kind = "test.check"
[[link]]
from = "src.out"
to = "add.in"
[[link]]
from = "add.out"
to = "chk.in"
[[link]]
from = "add.out"
to = "fr.in"
[[link]]
from = "fr.out"
to = "sink.in"
"#,
    );
    let mut g = Graph::new(compile(&spec, &reg, &Resources::new()).unwrap());
    assert_rt_safe("graph step", 200, || {
        g.step();
    });
    assert_eq!(
        g.stats().stage("sink").unwrap().counter("frames"),
        Some(200)
    );
}

#[test]
fn applying_a_swap_does_not_allocate_on_the_runner() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let a = common::parse("[[stage]]\nid = \"src\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"chk\"\nkind = \"test.check\"\n[[link]]\nfrom = \"src.out\"\nto = \"chk.in\"\n");
    let b = common::parse("[[stage]]\nid = \"src\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"add\"\nkind = \"test.add\"\nparams = { label = \"y\" }\n[[stage]]\nid = \"chk\"\nkind = \"test.check\"\n[[link]]\nfrom = \"src.out\"\nto = \"add.in\"\n[[link]]\nfrom = \"add.out\"\nto = \"chk.in\"\n");
    let mut g = Graph::new(compile(&a, &reg, &res).unwrap());
    g.step();
    for spec in [&b, &a, &b] {
        g.reconfigure(spec, &reg, &res).unwrap();
        // `step` runs the cycle (which applies the update) and then collects
        // garbage; only the cycle is measured here.
        let ((), n) = count_allocs(|| {
            let _ = step_without_gc(&mut g);
        });
        assert_eq!(
            n, 0,
            "the cycle that applied a swap allocated or freed {n} times"
        );
        assert_eq!(g.collect_garbage(), 1, "old schedule was not sent back");
    }
    assert_eq!(g.stats().stage("chk").unwrap().counter("broken"), Some(0));
}

fn step_without_gc(g: &mut Graph) -> wzp_engine::exec::CycleOutcome {
    g.step_cycle_only()
}

#[test]
fn delayed_links_do_not_allocate() {
    let (reg, last) = common::registry();
    // A PCM self-loop and a delayed frame link, both through delay rings.
    let spec = common::parse(
        r#"
[[stage]]
id = "src"
kind = "test.ramp"
[[stage]]
id = "x"
kind = "test.echo"
[[stage]]
id = "fr"
kind = "test.framer"
[[stage]]
id = "sink"
kind = "test.frame_sink"
domain = "clocked"
[[link]]
from = "src.out"
to = "x.in"
[[link]]
from = "x.out"
to = "x.back"
delay = 1
[[link]]
from = "x.out"
to = "fr.in"
[[link]]
from = "fr.out"
to = "sink.in"
delay = 1
"#,
    );
    let mut g = Graph::new(compile(&spec, &reg, &Resources::new()).unwrap());
    assert_rt_safe("graph step with delays", 100, || {
        g.step();
    });
    assert_eq!(g.stats().stage("sink").unwrap().counter("frames"), Some(99));
    assert_eq!(last.load(std::sync::atomic::Ordering::Relaxed), 98 * 960);
}
