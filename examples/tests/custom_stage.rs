//! A stage kind defined outside wzp-stages registers and runs in a graph.

use std::time::Duration;

use wzp_engine::prelude::*;

#[test]
fn custom_stage_runs_beside_shipped_ones() {
    let registry = wzp_examples::registry();
    assert!(registry.get("demo.tremolo").is_some());
    assert!(registry.get("audio.tone_source").is_some());
    let spec = GraphSpec::parse(
        wzp_examples::TREMOLO_GRAPH,
        "tremolo.toml",
        &Default::default(),
    )
    .unwrap();
    let mut graph = Graph::new(compile(&spec, &registry, &Resources::new()).unwrap());
    graph
        .start(RunOptions {
            driver: ClockDriver::Fast,
            ..Default::default()
        })
        .unwrap();
    assert!(
        graph.wait(Duration::from_secs(20)),
        "2 s tone should end the graph"
    );
    let stats = graph.stats();
    // 2 s of 20 ms quanta, plus the drain cycles after the tone ends.
    let quanta = stats.stage("wobble").unwrap().counter("quanta").unwrap();
    assert!((100..=110).contains(&quanta), "tremolo ran {quanta} quanta");
}

#[test]
fn custom_stage_params_are_validated() {
    let registry = wzp_examples::registry();
    let text = wzp_examples::TREMOLO_GRAPH.replace("depth = 0.8", "depth = 3.0");
    let spec = GraphSpec::parse(&text, "tremolo.toml", &Default::default()).unwrap();
    let err = compile(&spec, &registry, &Resources::new())
        .err()
        .expect("depth 3 is out of range");
    assert_eq!(err.kinds(), [wzp_engine::ErrorKind::BadParam]);
    assert!(err.to_string().contains("depth"));
}
