//! `wzp-client graph explain`: a graph's stages, ports, domains, bridges and
//! latency budget, before anything runs.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use clap::Subcommand;
use wzp_engine::prelude::*;

use super::load;

#[derive(Subcommand)]
pub enum GraphCommand {
    /// Print stages, ports, domains, inserted bridges and the latency budget per path.
    Explain {
        /// The graph file.
        graph: PathBuf,
        /// Fill a `${name}` placeholder (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
}

pub fn explain(graph: &Path, set: &[String]) -> Result<()> {
    let (spec, registry) = load(graph, set)?;
    let compiled = wzp_engine::compile::compile_dry_run(&spec, &registry, &Resources::new())
        .map_err(|e| anyhow!("{e}"))?;
    print!("{}", wzp_engine::explain::explain(&compiled));
    Ok(())
}
