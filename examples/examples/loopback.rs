//! Runs the shipped loopback graph on the built-in input, faster than real
//! time, and prints the per-stage table.
//!
//! cargo run -p wzp-examples --example loopback [-- OUTPUT.wav]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use wzp_engine::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "out/loopback-example.wav".into());
    if let Some(dir) = Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    let graph_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/loopback.toml");
    let vars = BTreeMap::from([("output".to_string(), out.clone())]);
    let spec = GraphSpec::load(&graph_file, &vars)?;
    let compiled = compile(&spec, &wzp_stages::registry(), &Resources::new())?;
    let mut graph = Graph::new(compiled);
    graph.start(RunOptions {
        driver: ClockDriver::Fast,
        ..Default::default()
    })?;
    graph.wait(Duration::from_secs(60));
    let stats = graph.stats();
    graph.stop();
    drop(graph);
    println!("{}", stats.report(&stats.snapshot(), None).table());
    println!("wrote {out}");
    Ok(())
}
