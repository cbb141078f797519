//! `wzp-client`: run any graph, explain it, list stage kinds.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use wzp_engine::params::parse_duration;
use wzp_engine::prelude::*;
use wzp_engine::stats::Snapshot;

const EXAMPLES: &str = "\
Examples:
  wzp-client run graphs/loopback.toml
      Run the loopback graph on the built-in speech sample; writes out/loopback.wav.
  wzp-client run graphs/loopback.toml --set input=talk.wav --set output=/tmp/o.wav --top
      Run it on your own WAV with a live per-stage table.
  wzp-client run graphs/loopback.toml --clock timer --duration 10s --stats-json stats.json
      Run in real time for 10 s and save the per-stage figures.
  wzp-client graph explain graphs/loopback.toml
      Show stages, ports, domains, bridges and the latency budget per path.
  wzp-client stages
      List every stage kind; `wzp-client stages audio.gain` shows one in full.";

#[derive(Parser)]
#[command(name = "wzp-client", version, about = "wzp client: run and inspect media graphs", after_help = EXAMPLES)]
struct Cli {
    /// Log filter (e.g. `info`, `wzp_engine=debug`); also read from RUST_LOG.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a graph file until its sources end, `--duration` passes, or Ctrl-C.
    #[command(after_help = EXAMPLES)]
    Run(RunArgs),
    /// Inspect a graph without running it.
    Graph {
        #[command(subcommand)]
        command: GraphCommand,
    },
    /// List the registered stage kinds, or describe one.
    Stages {
        /// A kind to describe in full (e.g. `audio.gain`).
        kind: Option<String>,
    },
}

#[derive(Subcommand)]
enum GraphCommand {
    /// Print stages, ports, domains, inserted bridges and the latency budget per path.
    Explain {
        /// The graph file.
        graph: PathBuf,
        /// Fill a `${name}` placeholder (repeatable).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The graph file (e.g. graphs/loopback.toml).
    graph: PathBuf,
    /// Fill a `${name}` placeholder (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Stop after this long (graph time): `5s`, `500ms`, `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    duration: Option<Duration>,
    /// Override the graph's clock driver: `timer` (real time), `fast` (as fast as possible).
    #[arg(long, value_parser = ["timer", "fast"])]
    clock: Option<String>,
    /// Show a live per-stage table, refreshed each second.
    #[arg(long)]
    top: bool,
    /// Write the final per-stage figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
    /// Do not ask for real-time (SCHED_FIFO) priority.
    #[arg(long)]
    no_realtime: bool,
    /// Do not print the final per-stage table.
    #[arg(long)]
    quiet: bool,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

fn main() {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Graph {
            command: GraphCommand::Explain { graph, set },
        } => explain(&graph, &set),
        Command::Stages { kind } => stages(kind.as_deref()),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn parse_sets(set: &[String]) -> Result<BTreeMap<String, String>> {
    set.iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| anyhow!("--set {kv:?}: expected NAME=VALUE"))?;
            if k.is_empty() {
                bail!("--set {kv:?}: the name is empty");
            }
            Ok((k.to_string(), v.to_string()))
        })
        .collect()
}

fn load(graph: &Path, set: &[String]) -> Result<(GraphSpec, Registry)> {
    let vars = parse_sets(set)?;
    let spec = GraphSpec::load(graph, &vars).map_err(|e| anyhow!("{e}"))?;
    Ok((spec, wzp_stages::registry()))
}

fn explain(graph: &Path, set: &[String]) -> Result<()> {
    let (spec, registry) = load(graph, set)?;
    let compiled = wzp_engine::compile::compile_dry_run(&spec, &registry, &Resources::new())
        .map_err(|e| anyhow!("{e}"))?;
    print!("{}", wzp_engine::explain::explain(&compiled));
    Ok(())
}

fn stages(kind: Option<&str>) -> Result<()> {
    let registry = wzp_stages::registry();
    let mut out = String::new();
    match kind {
        None => {
            for info in registry.infos() {
                let ins: Vec<String> = info
                    .inputs
                    .iter()
                    .map(|p| format!("{}:{}", p.name, p.ty))
                    .collect();
                let outs: Vec<String> = info
                    .outputs
                    .iter()
                    .map(|p| format!("{}:{}", p.name, p.ty))
                    .collect();
                out.push_str(&format!("{:<24} {}\n", info.kind, info.summary));
                out.push_str(&format!(
                    "{:<24} in [{}]  out [{}]\n",
                    "",
                    ins.join(", "),
                    outs.join(", ")
                ));
                if !info.params.is_empty() {
                    let ps: Vec<String> = info
                        .params
                        .iter()
                        .map(|p| match &p.default {
                            Some(d) => format!("{}={d}", p.name),
                            None => format!("{} (required)", p.name),
                        })
                        .collect();
                    out.push_str(&format!("{:<24} params: {}\n", "", ps.join(", ")));
                }
            }
            out.push_str(&format!(
                "\n{} kinds. `wzp-client stages KIND` describes one.\n",
                registry.len()
            ));
        }
        Some(k) => {
            let f = registry.get(k).ok_or_else(|| {
                let hint = wzp_engine::error::did_you_mean(k, registry.kinds())
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                anyhow!("unknown stage kind `{k}`{hint}; `wzp-client stages` lists them")
            })?;
            let info = f.info();
            out.push_str(&format!("{}\n  {}\n\n", info.kind, info.summary));
            out.push_str(&format!(
                "  domain: {} (can run in: {})\n",
                info.default_domain.name(),
                info.domains
                    .iter()
                    .map(|d| d.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push_str("  inputs:\n");
            for p in &info.inputs {
                out.push_str(&format!("    {:<10} {:<10} {}\n", p.name, p.ty, p.doc));
            }
            out.push_str("  outputs:\n");
            for p in &info.outputs {
                out.push_str(&format!("    {:<10} {:<10} {}\n", p.name, p.ty, p.doc));
            }
            out.push_str("  params:\n");
            for p in &info.params {
                let d = p
                    .default
                    .as_ref()
                    .map(|d| format!("default {d}"))
                    .unwrap_or_else(|| "required".into());
                out.push_str(&format!(
                    "    {:<16} {:<10} {:<18} {}\n",
                    p.name,
                    p.ty.to_string(),
                    d,
                    p.doc
                ));
            }
        }
    }
    print!("{out}");
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let (mut spec, registry) = load(&args.graph, &args.set)?;
    if let Some(c) = &args.clock {
        spec.clock.driver = ClockDriver::parse(c).context("clock")?;
    }
    let driver = match spec.clock.driver {
        ClockDriver::Manual => ClockDriver::Fast,
        d => d,
    };
    let compiled = compile(&spec, &registry, &Resources::new()).map_err(|e| anyhow!("{e}"))?;
    let mut graph = Graph::new(compiled);
    let stop = graph.stop_flag();
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing SIGTERM handler")?;
    graph
        .start(RunOptions {
            driver,
            duration: args.duration,
            realtime: !args.no_realtime,
            ..Default::default()
        })
        .map_err(|e| anyhow!("{e}"))?;
    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut last: Option<Snapshot> = None;
    let mut next_refresh = started + Duration::from_secs(1);
    loop {
        if graph.wait(Duration::from_millis(50)) || stop.load(Ordering::Relaxed) {
            break;
        }
        if args.top && Instant::now() >= next_refresh {
            next_refresh += Duration::from_secs(1);
            let stats = graph.stats();
            let snap = stats.snapshot();
            let report = stats.report(&snap, last.as_ref());
            let mut o = std::io::stdout().lock();
            if tty {
                let _ = write!(o, "\x1b[2J\x1b[H");
            }
            let _ = writeln!(
                o,
                "wzp top — {} — {:.1}s (last second)\n{}",
                report.graph,
                started.elapsed().as_secs_f64(),
                report.table()
            );
            let _ = o.flush();
            last = Some(snap);
        }
    }
    let interrupted = stop.load(Ordering::Relaxed) && !graph.is_finished();
    let stats = graph.stats();
    graph.stop();
    let wall = started.elapsed();
    let snap = stats.snapshot();
    let report = stats.report(&snap, None);
    // Dropping the graph drops the processors, which closes output files.
    drop(graph);
    if let Some(path) = &args.stats_json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if !args.quiet {
        let media = Duration::from_nanos(
            report
                .domains
                .iter()
                .find(|d| d.domain == "clocked")
                .map(|d| d.cycles)
                .unwrap_or(0)
                * spec.clock.quantum.as_nanos() as u64,
        );
        println!(
            "graph `{}`: {:.2}s of audio in {:.2}s wall ({}){}",
            report.graph,
            media.as_secs_f64(),
            wall.as_secs_f64(),
            driver.name(),
            if interrupted { ", interrupted" } else { "" }
        );
        print!("{}", report.table());
    }
    Ok(())
}
