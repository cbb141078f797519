//! Registers a stage kind defined in this crate (`demo.tremolo`) beside the
//! shipped ones and runs a graph that uses it.
//!
//! cargo run -p wzp-examples --example custom_stage

use std::time::Duration;

use wzp_engine::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = wzp_examples::registry();
    let spec = GraphSpec::parse(
        wzp_examples::TREMOLO_GRAPH,
        "tremolo.toml",
        &Default::default(),
    )?;
    let compiled = compile(&spec, &registry, &Resources::new())?;
    print!("{}", wzp_engine::explain::explain(&compiled));
    let mut graph = Graph::new(compiled);
    graph.start(RunOptions {
        driver: ClockDriver::Fast,
        ..Default::default()
    })?;
    graph.wait(Duration::from_secs(30));
    let stats = graph.stats();
    graph.stop();
    println!("\n{}", stats.report(&stats.snapshot(), None).table());
    Ok(())
}
