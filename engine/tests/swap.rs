//! A new schedule swaps into a running executor between two cycles: no
//! quantum is dropped or repeated, kept stages keep their state, and the old
//! schedule is dropped on the control side.

mod common;

use std::time::Duration;

use wzp_engine::prelude::*;

fn chain(offset: f32, extra: bool) -> GraphSpec {
    let mut body = String::from(
        "[[stage]]\nid = \"src\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"chk\"\nkind = \"test.check\"\n",
    );
    if extra {
        body.push_str(&format!(
            "[[stage]]\nid = \"add\"\nkind = \"test.add\"\nparams = {{ label = \"x\", value = {offset} }}\n\
             [[link]]\nfrom = \"src.out\"\nto = \"add.in\"\n[[link]]\nfrom = \"add.out\"\nto = \"chk.in\"\n"
        ));
    } else {
        body.push_str("[[link]]\nfrom = \"src.out\"\nto = \"chk.in\"\n");
    }
    common::parse(&body)
}

#[test]
fn manual_swap_keeps_state_and_drops_no_quantum() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let mut g = Graph::new(compile(&chain(0.0, false), &reg, &res).unwrap());
    for _ in 0..10 {
        g.step();
    }
    // Insert a stage that adds 0: the ramp must continue exactly.
    g.reconfigure(&chain(0.0, true), &reg, &res).unwrap();
    for _ in 0..10 {
        g.step();
    }
    // Remove it again.
    g.reconfigure(&chain(0.0, false), &reg, &res).unwrap();
    for _ in 0..10 {
        g.step();
    }
    let stats = g.stats();
    let chk = stats.stage("chk").unwrap();
    assert_eq!(
        chk.counter("good"),
        Some(30),
        "checker kept its state across two swaps"
    );
    assert_eq!(chk.counter("broken"), Some(0));
    assert_eq!(chk.gauge("last"), Some(30 * 960 - 1));
    assert!(
        stats.stage("add").is_none(),
        "the removed stage is gone from the stats"
    );
}

#[test]
fn changing_a_param_rebuilds_that_stage_only() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let mut g = Graph::new(compile(&chain(0.0, true), &reg, &res).unwrap());
    for _ in 0..5 {
        g.step();
    }
    g.reconfigure(&chain(1000.0, true), &reg, &res).unwrap();
    for _ in 0..5 {
        g.step();
    }
    let stats = g.stats();
    let chk = stats.stage("chk").unwrap();
    // The jump by 1000 breaks the ramp exactly once, at the swap.
    assert_eq!(chk.counter("good"), Some(9));
    assert_eq!(chk.counter("broken"), Some(1));
    assert_eq!(chk.gauge("last"), Some(10 * 960 - 1 + 1000));
}

#[test]
fn swaps_into_a_running_timer_graph_without_losing_a_quantum() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let mut g = Graph::new(compile(&chain(0.0, false), &reg, &res).unwrap());
    g.start(RunOptions {
        driver: ClockDriver::Timer,
        duration: Some(Duration::from_millis(1200)),
        ..Default::default()
    })
    .unwrap();
    // A swap every few cycles the graph really ran (not every guessed
    // interval: a loaded machine may run fewer cycles in it), while the
    // graph runs, six times.
    let cycles = |g: &Graph| g.stats().snapshot().domains[0].cycles;
    let mut swaps = 0;
    let mut at = cycles(&g);
    while swaps < 6 && !g.is_finished() {
        if cycles(&g) < at + 3 {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        if g.reconfigure(&chain(0.0, swaps % 2 == 0), &reg, &res)
            .is_ok()
        {
            swaps += 1;
        }
        at = cycles(&g);
        g.collect_garbage();
    }
    assert!(g.wait(Duration::from_secs(30)));
    g.collect_garbage();
    let collected = g.collected_total();
    let stats = g.stats();
    let chk = stats.stage("chk").unwrap();
    assert!(swaps >= 6, "only {swaps} swaps happened");
    assert_eq!(
        collected, swaps,
        "every old schedule came back to be dropped off the real-time thread"
    );
    assert_eq!(
        chk.counter("broken"),
        Some(0),
        "a quantum was lost or repeated during a swap"
    );
    assert_eq!(chk.counter("good"), Some(60));
}

#[test]
fn reconfigure_rejects_a_bad_graph_and_keeps_running() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let mut g = Graph::new(compile(&chain(0.0, false), &reg, &res).unwrap());
    g.step();
    let bad = common::parse("[[stage]]\nid = \"c\"\nkind = \"test.check\"\n");
    assert!(g.reconfigure(&bad, &reg, &res).is_err());
    g.step();
    assert_eq!(g.stats().stage("chk").unwrap().counter("good"), Some(2));
}

#[test]
fn bridges_survive_many_swaps_without_leaking_slots() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let body = |extra: bool| {
        let mut b = String::from(
            "[[stage]]\nid = \"src\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"fr\"\nkind = \"test.framer\"\n\
             [[stage]]\nid = \"sink\"\nkind = \"test.frame_sink\"\ndomain = \"packet\"\n\
             [[link]]\nfrom = \"fr.out\"\nto = \"sink.in\"\n",
        );
        if extra {
            b.push_str(
                "[[stage]]\nid = \"add\"\nkind = \"test.add\"\nparams = { label = \"x\" }\n\
                 [[link]]\nfrom = \"src.out\"\nto = \"add.in\"\n[[link]]\nfrom = \"add.out\"\nto = \"fr.in\"\n",
            );
        } else {
            b.push_str("[[link]]\nfrom = \"src.out\"\nto = \"fr.in\"\n");
        }
        common::parse(&b)
    };
    let mut g = Graph::new(compile(&body(false), &reg, &res).unwrap());
    // More swaps than a domain has slots: a leak of even one slot per swap fails.
    let swaps = wzp_engine::exec::DEFAULT_SLOTS + 100;
    for i in 0..swaps {
        g.reconfigure(&body(i % 2 == 0), &reg, &res)
            .unwrap_or_else(|e| panic!("swap {i}: {e}"));
        g.step();
    }
    let stats = g.stats();
    assert_eq!(
        stats.stage("sink").unwrap().counter("frames"),
        Some(swaps as u64),
        "a frame was lost in a swap"
    );
}

/// A delayed (feedback) link survives a reconfiguration with what it holds:
/// the consumer still sees the producer's previous quantum in the first
/// cycle after the swap.
#[test]
fn a_delayed_link_keeps_its_held_quantum_across_a_swap() {
    let (reg, _) = common::registry();
    let res = Resources::new();
    let spec = |extra: bool| {
        let mut body = String::from(
            "[[stage]]\nid = \"src\"\nkind = \"test.ramp\"\n[[stage]]\nid = \"x\"\nkind = \"test.echo\"\n\
             [[link]]\nfrom = \"src.out\"\nto = \"x.in\"\n[[link]]\nfrom = \"x.out\"\nto = \"x.back\"\ndelay = 1\n",
        );
        if extra {
            body.push_str("[[stage]]\nid = \"chk\"\nkind = \"test.check\"\n[[link]]\nfrom = \"x.out\"\nto = \"chk.in\"\n");
        }
        common::parse(&body)
    };
    let mut g = Graph::new(compile(&spec(false), &reg, &res).unwrap());
    for _ in 0..5 {
        g.step();
    }
    g.reconfigure(&spec(true), &reg, &res).unwrap();
    for cycle in 5..10i64 {
        g.step();
        let stats = g.stats();
        let x = stats.stage("x").unwrap();
        assert_eq!(x.gauge("in_first"), Some(cycle * 960));
        assert_eq!(
            x.gauge("back_first"),
            Some((cycle - 1) * 960),
            "cycle {cycle}"
        );
    }
    assert_eq!(g.stats().stage("chk").unwrap().counter("broken"), Some(0));
}
