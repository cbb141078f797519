//! Running graphs: manual stepping, fast and timer drivers, bridges.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use wzp_engine::prelude::*;

const CHAIN: &str = r#"
[[stage]]
id = "src"
kind = "test.ramp"
[[stage]]
id = "add"
kind = "test.add"
params = { label = "x", value = 0, latency_ms = 7 }
[[stage]]
id = "chk"
kind = "test.check"
[[link]]
from = "src.out"
to = "add.in"
[[link]]
from = "add.out"
to = "chk.in"
"#;

#[test]
fn manual_steps_run_every_stage_in_order() {
    let (reg, _) = common::registry();
    let spec = common::parse(CHAIN);
    let compiled = compile(&spec, &reg, &Resources::new()).unwrap();
    assert_eq!(compiled.paths.len(), 1);
    assert_eq!(compiled.paths[0].stages, ["src", "add", "chk"]);
    assert_eq!(compiled.paths[0].total, Duration::from_millis(7));
    let mut g = Graph::new(compiled);
    for _ in 0..50 {
        g.step();
    }
    let stats = g.stats();
    let chk = stats.stage("chk").unwrap();
    assert_eq!(chk.counter("good"), Some(50));
    assert_eq!(chk.counter("broken"), Some(0));
    assert_eq!(chk.gauge("last"), Some(50 * 960 - 1));
    let snap = stats.snapshot();
    assert!(
        snap.stages.iter().all(|s| s.busy.count == 50),
        "every stage timed every cycle"
    );
}

#[test]
fn fast_driver_stops_after_sources_finish_and_drains() {
    let (reg, _) = common::registry();
    let spec = common::parse(&CHAIN.replace(
        "kind = \"test.ramp\"",
        "kind = \"test.ramp\"\nparams = { frames = 25 }",
    ));
    let compiled = compile(&spec, &reg, &Resources::new()).unwrap();
    let mut g = Graph::new(compiled);
    g.start(RunOptions {
        driver: ClockDriver::Fast,
        ..Default::default()
    })
    .unwrap();
    assert!(
        g.wait(Duration::from_secs(5)),
        "graph should end once its source finished"
    );
    let stats = g.stats();
    assert_eq!(stats.stage("chk").unwrap().counter("good"), Some(25));
    let cycles = stats.snapshot().domains[0].cycles;
    // 25 frames + 1 finished cycle + drain (7 ms latency -> 1 quantum + 3 extra).
    assert!((26..=32).contains(&cycles), "ran {cycles} cycles");
}

#[test]
fn timer_driver_paces_cycles_by_the_quantum() {
    let (reg, _) = common::registry();
    let spec = common::parse(CHAIN);
    let mut g = Graph::new(compile(&spec, &reg, &Resources::new()).unwrap());
    g.start(RunOptions {
        driver: ClockDriver::Timer,
        duration: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .unwrap();
    assert!(g.wait(Duration::from_secs(5)));
    let elapsed = g.elapsed();
    let cycles = g.stats().snapshot().domains[0].cycles;
    assert_eq!(cycles, 10, "200 ms of 20 ms quanta");
    assert!(
        elapsed >= Duration::from_millis(180),
        "ran in {elapsed:?}: not paced"
    );
    assert_eq!(g.stats().stage("chk").unwrap().counter("broken"), Some(0));
}

#[test]
fn frames_cross_into_the_packet_domain_through_a_bridge() {
    let (reg, last) = common::registry();
    let spec = common::parse(
        r#"
[[stage]]
id = "src"
kind = "test.ramp"
params = { frames = 40 }
[[stage]]
id = "fr"
kind = "test.framer"
[[stage]]
id = "sink"
kind = "test.frame_sink"
domain = "packet"
[[link]]
from = "src.out"
to = "fr.in"
[[link]]
from = "fr.out"
to = "sink.in"
"#,
    );
    let compiled = compile(&spec, &reg, &Resources::new()).unwrap();
    assert_eq!(compiled.bridges.len(), 1);
    assert_eq!(compiled.domains.len(), 2);
    assert_eq!(compiled.paths[0].stages, ["src", "fr", "sink"]);
    let mut g = Graph::new(compiled);
    g.start(RunOptions {
        driver: ClockDriver::Timer,
        duration: Some(Duration::from_millis(400)),
        ..Default::default()
    })
    .unwrap();
    assert!(g.wait(Duration::from_secs(5)));
    // Wait (bounded) for the packet thread to drain the ring.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while g.stats().stage("sink").unwrap().counter("frames") != Some(20)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    g.stop();
    assert_eq!(g.stats().stage("sink").unwrap().counter("frames"), Some(20));
    assert_eq!(last.load(Ordering::Relaxed), 19 * 960);
}

/// A `delay = 1` link hands its consumer the producer's output of the
/// cycle before: here a self-loop (`x.out -> x.back`) on a ramp, and frames
/// into a sink (no cycle at all), stepped by hand.
#[test]
fn a_delayed_link_delivers_one_quantum_later() {
    let (reg, last) = common::registry();
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
    let compiled = compile(&spec, &reg, &Resources::new()).unwrap();
    assert_eq!(compiled.delays.len(), 2);
    let mut g = Graph::new(compiled);
    let q = 960;
    for cycle in 0..30i64 {
        g.step();
        let stats = g.stats();
        let x = stats.stage("x").unwrap();
        assert_eq!(x.gauge("in_first"), Some(cycle * q));
        // Cycle 0 has nothing from before: silence.
        let back = if cycle == 0 { 0 } else { (cycle - 1) * q };
        assert_eq!(x.gauge("back_first"), Some(back), "cycle {cycle}");
        let sink = stats.stage("sink").unwrap();
        assert_eq!(sink.counter("frames"), Some(cycle as u64), "cycle {cycle}");
        if cycle >= 1 {
            assert_eq!(last.load(Ordering::Relaxed) as i64, (cycle - 1) * q);
        }
    }
}
