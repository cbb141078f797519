//! `wzp-client`: join a room through a relay, run the demo, run any graph,
//! explain it, list stage kinds.

mod join;

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
  wzp-client demo
      A relay and two clients on this machine: the built-in sample goes from one
      client to the other through the relay; writes out/demo-received.wav.
  wzp-client join --relay 203.0.113.7:4433 --room standup --room-secret \"$(cat room.secret)\"
      Join a room (microphone in, speaker out; --input/--output change that).
  wzp-client join --relay 127.0.0.1:4433 --room test --input talk.wav --output heard.wav --duration 10s
      Join headless: send a WAV, record what the room says.
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
    /// Join a room through a relay (runs graphs/call.toml).
    #[command(after_help = EXAMPLES)]
    Join(JoinArgs),
    /// A relay and two clients on this machine, one playing the built-in
    /// sample to the other.
    Demo(DemoArgs),
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
struct JoinArgs {
    /// Relay address, HOST:PORT.
    #[arg(long)]
    relay: String,
    /// Room name (the relay only ever sees its hash).
    #[arg(long)]
    room: String,
    /// Secret shared by the room's members; the media key comes from it.
    /// Without it, anyone who knows the room name can listen.
    #[arg(long)]
    room_secret: Option<String>,
    /// What to send: `tone`, `tone:FREQ`, `builtin`, a WAV file, or `mic`.
    #[arg(long, default_value = "mic")]
    input: String,
    /// Where the room goes: a WAV file, `speaker`, or `null`.
    #[arg(long, default_value = "speaker")]
    output: String,
    /// End the call after this long: `10s`, `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    duration: Option<Duration>,
    /// Name shown to the others.
    #[arg(long)]
    alias: Option<String>,
    /// Identity seed file (created on first use, mode 0600). Default ~/.wzp/identity.
    #[arg(long)]
    identity: Option<PathBuf>,
    /// The relay's TLS fingerprint to pin. Without it, the fingerprint seen on
    /// first contact is recorded in the known-relays file and pinned after.
    #[arg(long)]
    relay_fingerprint: Option<String>,
    /// Known-relays file. Default ~/.wzp/known_relays.
    #[arg(long)]
    known_relays: Option<PathBuf>,
    /// A call graph to run instead of the built-in graphs/call.toml.
    #[arg(long)]
    graph: Option<PathBuf>,
    /// Fill a call graph placeholder (repeatable): profile, fec_ratio, jb_min, ...
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
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

#[derive(clap::Args)]
struct DemoArgs {
    /// Where the receiving client writes what it heard.
    #[arg(long, default_value = "out/demo-received.wav")]
    output: PathBuf,
    /// How long the call lasts.
    #[arg(long, default_value = "6s", value_parser = parse_duration_arg)]
    duration: Duration,
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
        Command::Join(args) => join_cmd(args),
        Command::Demo(args) => demo(args),
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

fn join_cmd(args: JoinArgs) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing SIGTERM handler")?;
    let relay_fingerprint = match &args.relay_fingerprint {
        Some(f) => Some(
            f.parse()
                .map_err(|e| anyhow!("--relay-fingerprint {f}: {e}"))?,
        ),
        None => None,
    };
    let opts = join::JoinOptions {
        relay: args.relay,
        room: args.room,
        room_secret: args.room_secret,
        input: args.input,
        output: args.output,
        duration: args.duration,
        alias: args.alias,
        identity: args
            .identity
            .unwrap_or_else(|| join::wzp_home().join("identity")),
        relay_fingerprint,
        known_relays: args
            .known_relays
            .unwrap_or_else(|| join::wzp_home().join("known_relays")),
        graph: args.graph,
        sets: parse_sets(&args.set)?,
        realtime: !args.no_realtime,
        stop,
        label: String::new(),
    };
    let outcome = join::run_join(opts)?;
    finish_report(&outcome.report, args.stats_json.as_deref(), args.quiet)
}

fn finish_report(
    report: &wzp_engine::stats::Report,
    json: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !quiet {
        print!("{}", report.table());
    }
    Ok(())
}

fn demo(args: DemoArgs) -> Result<()> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let dir = std::env::temp_dir().join(format!("wzp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cert = wzp_relay::relay::load_identity(&dir.join("relay.seed"))?;
    let relay_stop = Arc::new(AtomicBool::new(false));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let relay_thread = {
        let cert = cert.clone();
        let relay_stop = relay_stop.clone();
        std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let cfg = wzp_relay::config::Config {
                    listen: "127.0.0.1:0".parse().expect("literal address"),
                    label: "demo-relay".into(),
                    ..Default::default()
                };
                let relay = match wzp_relay::relay::Relay::start(cfg, &cert) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = addr_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = addr_tx.send(Ok(relay.local_addr));
                tokio::select! {
                    _ = relay.serve() => {}
                    _ = async { while !relay_stop.load(std::sync::atomic::Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    } } => {}
                }
                relay.shutdown();
            });
            Ok(())
        })
    };
    let relay_addr = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| anyhow!("the demo relay did not start"))?
        .map_err(|e| anyhow!("the demo relay did not start: {e}"))?;
    println!(
        "demo: relay on {relay_addr}, fingerprint {}",
        cert.tls_fingerprint()
    );
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let secret = "demo room secret, shared by both".to_string();
    let client = |name: &str, input: &str, output: String| join::JoinOptions {
        relay: relay_addr.to_string(),
        room: "demo".into(),
        room_secret: Some(secret.clone()),
        input: input.into(),
        output,
        duration: Some(args.duration),
        alias: Some(name.into()),
        identity: dir.join(format!("{name}.seed")),
        relay_fingerprint: Some(cert.tls_fingerprint()),
        known_relays: dir.join("known_relays"),
        graph: None,
        sets: BTreeMap::new(),
        realtime: false,
        stop: stop.clone(),
        label: format!("[{name}] "),
    };
    let alice = client("alice", "builtin", "null".into());
    let bob = client("bob", "tone:220", args.output.display().to_string());
    let a = std::thread::spawn(move || join::run_join(alice));
    let b = std::thread::spawn(move || join::run_join(bob));
    let ra = a.join().map_err(|_| anyhow!("alice's client panicked"))??;
    let rb = b.join().map_err(|_| anyhow!("bob's client panicked"))??;
    relay_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = relay_thread.join();
    let _ = std::fs::remove_dir_all(&dir);
    println!("\n[alice] sends the built-in sample ({} join)", ra.joins);
    print!("{}", ra.report.table());
    println!(
        "\n[bob] receives it and writes {} ({} join)",
        args.output.display(),
        rb.joins
    );
    print!("{}", rb.report.table());
    let c = |id: &str, k: &str| {
        rb.report
            .stages
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.counters.get(k))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "\nloss recovery at bob: frames_decoded={} dred_reconstructions={} fec_recovered={} classical_plc_invocations={}",
        c("dec0", "frames_decoded"),
        c("dec0", "dred_reconstructions"),
        c("dec0", "fec_recovered"),
        c("dec0", "classical_plc_invocations")
    );
    println!("wrote {}", args.output.display());
    Ok(())
}
