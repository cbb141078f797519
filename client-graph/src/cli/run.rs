//! `wzp-client run`: run any graph file.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use wzp_engine::prelude::*;
use wzp_stages::quality::journal::{DecisionJournal, DEFAULT_NAME as ADAPT_JOURNAL};

use crate::call::top::Top;

use super::{load, parse_duration_arg};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The graph file (e.g. graphs/loopback.toml).
    pub graph: PathBuf,
    /// Fill a `${name}` placeholder (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Stop after this long (graph time): `5s`, `500ms`, `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Override the graph's clock driver: `timer` (real time), `fast` (as fast as possible).
    #[arg(long, value_parser = ["timer", "fast"])]
    pub clock: Option<String>,
    /// Show a live per-stage table, refreshed each second.
    #[arg(long)]
    pub top: bool,
    /// Write the final per-stage figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Do not ask for real-time (SCHED_FIFO) priority.
    #[arg(long)]
    pub no_realtime: bool,
    /// Do not print the final per-stage table, nor the quality
    /// controller's decisions.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: RunArgs) -> Result<()> {
    if let Some(p) = &args.stats_json {
        super::check_writable("--stats-json", p)?;
    }
    let (mut spec, registry) = load(&args.graph, &args.set)?;
    if let Some(c) = &args.clock {
        spec.clock.driver = ClockDriver::parse(c).context("clock")?;
    }
    let driver = match spec.clock.driver {
        ClockDriver::Manual => ClockDriver::Fast,
        d => d,
    };
    // A graph with a `quality.adapt` stage writes each decision here; they
    // are printed as they come (`adapt: REASON -> ... at T s`, graph time),
    // unless --quiet or --top.
    let journal = Arc::new(DecisionJournal::default());
    let mut res = Resources::new();
    res.insert(ADAPT_JOURNAL, journal.clone());
    let print_decisions = !args.quiet && !args.top;
    // With --top the view shows the last decisions instead.
    let mut top = args.top.then(|| Top::new(spec.name.clone()));
    let decisions = |j: &DecisionJournal, top: &mut Option<Top>| {
        // Drained either way: a journal left full counts every later
        // decision as dropped.
        let mut o = std::io::stdout().lock();
        j.drain(|r| {
            if let Some(t) = top.as_mut() {
                t.decision(&r.line());
            } else if print_decisions {
                let _ = writeln!(o, "{}", r.line());
            }
        });
    };
    let compiled = compile(&spec, &registry, &res).map_err(|e| anyhow!("{e}"))?;
    // Nothing makes audio or packets of its own: the graph would run
    // forever (and a recording grow until the disk is full).
    if args.duration.is_none() && !compiled.stages.iter().any(|s| s.inputs.is_empty()) {
        return Err(anyhow!(
            "{}: the graph has no source (a stage without inputs), so it never ends by itself; \
             give --duration",
            args.graph.display()
        ));
    }
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
    let mut next_refresh = started + Duration::from_secs(1);
    loop {
        if graph.wait(Duration::from_millis(50)) || stop.load(Ordering::Relaxed) {
            break;
        }
        decisions(&journal, &mut top);
        if let Some(t) = top.as_mut() {
            if Instant::now() >= next_refresh {
                next_refresh += Duration::from_secs(1);
                t.show(&graph.stats(), started.elapsed().as_secs_f64());
            }
        }
    }
    let interrupted = stop.load(Ordering::Relaxed) && !graph.is_finished();
    let stats = graph.stats();
    graph.stop();
    // What is left after the last screen is printed as lines.
    top = None;
    decisions(&journal, &mut top);
    let wall = started.elapsed();
    let snap = stats.snapshot();
    let report = stats.report(&snap, None);
    // Dropping the graph drops the processors, which closes output files.
    drop(graph);
    // A recording that could not be written (disk full, file too large) is
    // a failed run, whatever else went well.
    let failed_writes: Vec<String> = stats
        .stages
        .iter()
        .filter_map(|s| {
            let n = s.counter("write_errors").filter(|&n| n > 0)?;
            Some(format!("stage '{}' ({}): {n} write error(s)", s.id, s.kind))
        })
        .collect();
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
        let summary = format!(
            "graph `{}`: {:.2}s of audio in {:.2}s wall ({}){}\n{}",
            report.graph,
            media.as_secs_f64(),
            wall.as_secs_f64(),
            driver.name(),
            if interrupted { ", interrupted" } else { "" },
            report.table()
        );
        // The files are complete by now; a reader that went away early
        // (`| head`) is not an error, a full disk is.
        let mut out = std::io::stdout().lock();
        match out.write_all(summary.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(anyhow!("writing the summary to standard output: {e}"));
            }
            _ => {}
        }
    }
    if !failed_writes.is_empty() {
        return Err(anyhow!(
            "the output could not be written completely: {} (see the warning above)",
            failed_writes.join("; ")
        ));
    }
    Ok(())
}
