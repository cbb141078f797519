//! `wzp-netem`: a UDP impairment proxy for real processes. Loss (random,
//! bursty or from a trace), delay, jitter, reordering, duplication and a rate
//! limit, in both directions, changing over time with `--schedule`.

#[path = "../log_filter.rs"]
mod log_filter;
#[path = "../netem_proxy.rs"]
mod netem_proxy;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use wzp_stages::net::netem_core::load_trace;
use wzp_stages::net::netem_schedule::{
    parse_percent, parse_rate, parse_schedule, parse_setting_duration, NetemSettings, Phase,
};

const EXAMPLES: &str = "\
Every option applies to both directions (client -> target and back); each
direction draws its own losses. The durations of --delay, --jitter, --queue
and schedule phases are milliseconds (`40`) or carry a unit (`40ms`, `1.5s`);
--duration needs a unit (`30s`).

Examples:
  wzp-netem --listen 127.0.0.1:5000 --to 127.0.0.1:4433 --loss 5 --delay 40 --jitter 10
      Clients use 127.0.0.1:5000 as the relay: 5 % loss, 40 ± 10 ms each way.
  wzp-client join --relay 127.0.0.1:5000 --relay-fingerprint FP --room test ...
      A client through the proxy; pinning is unchanged (the relay's fingerprint).
  wzp-netem --listen 127.0.0.1:5000 --to relay.example:4433 --loss 10 --burst 60
      10 % loss on average, in bursts of 60 ms.
  wzp-netem --listen 127.0.0.1:5000 --to 127.0.0.1:4433 --rate 32
      A 32 kbit/s link: datagrams wait for their turn, up to 100 ms, then drop.
  wzp-netem --listen 127.0.0.1:5000 --to 127.0.0.1:4433 --rate 12 --queue 0 --only c2s
      A 12 kbit/s policer on the way to the relay only: what the rate cannot
      carry is dropped at once; the way back is clean.
  wzp-netem --listen 127.0.0.1:5000 --to 127.0.0.1:4433 --trace loss.txt
      Lose exactly the datagrams marked 1 in loss.txt (one 0/1 per datagram, looped).
  wzp-netem --listen 127.0.0.1:0 --to 127.0.0.1:4433 --duration 30s \\
            --schedule \"10s:loss=0;10s:loss=20;10s:rate=16\"
      Clean for 10 s, then 20 % loss, then 16 kbit/s: each phase is the flags
      with its KEY=VALUE changes (loss, burst, delay, jitter, reorder, duplicate,
      rate, queue); the last phase holds until the end.

Prints `listening udp=ADDR to=ADDR t0_unix_ms=MS` once bound (use --listen
127.0.0.1:0 for a free port; t0: when the schedule's clock started), a `phase N/M` line at each change, and per-direction counters at
exit (Ctrl-C, SIGTERM or --duration).";

#[derive(Parser)]
#[command(
    name = "wzp-netem",
    version,
    about = "UDP impairment proxy: loss, bursts, delay, jitter, reorder, duplicates, rate limit",
    after_help = EXAMPLES
)]
struct Cli {
    /// Address clients send to, IP:PORT (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Where datagrams go, HOST:PORT (e.g. the relay's QUIC address).
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Average loss, percent (0 to 100).
    #[arg(long, value_name = "PCT", value_parser = parse_percent, default_value = "0")]
    loss: f64,
    /// Mean burst length: --loss comes in Gilbert-Elliott bursts this long.
    #[arg(long, value_name = "MS", value_parser = parse_setting_duration)]
    burst: Option<Duration>,
    /// Fixed one-way delay.
    #[arg(long, value_name = "MS", value_parser = parse_setting_duration)]
    delay: Option<Duration>,
    /// Delay variation: each datagram's delay is uniform in delay ± jitter.
    #[arg(long, value_name = "MS", value_parser = parse_setting_duration)]
    jitter: Option<Duration>,
    /// Datagrams held 40 ms longer so later ones overtake them, percent.
    #[arg(long, value_name = "PCT", value_parser = parse_percent, default_value = "0")]
    reorder: f64,
    /// Datagrams sent twice, percent.
    #[arg(long, value_name = "PCT", value_parser = parse_percent, default_value = "0")]
    duplicate: f64,
    /// Rate limit (token bucket) in kbit/s; 0 = unlimited.
    #[arg(long, value_name = "KBPS", value_parser = parse_rate, default_value = "0")]
    rate: f64,
    /// How long the rate limit queues a datagram before dropping it; 0 =
    /// a policer, which drops what the rate cannot carry at once.
    #[arg(long, value_name = "MS", value_parser = parse_setting_duration, default_value = "100ms")]
    queue: Duration,
    /// Loss trace: one 0 (kept) or 1 (lost) per datagram, looped; each
    /// direction replays it on its own datagrams.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Phases that change the settings over time: `DURATION[:KEY=VALUE,...]`
    /// separated by `;`.
    #[arg(long, value_name = "PHASES")]
    schedule: Option<String>,
    /// Impair only this direction (`c2s`: client to target, `s2c`: the way
    /// back); the other passes clean. Default: both.
    #[arg(long, value_name = "DIR")]
    only: Option<netem_proxy::Direction>,
    /// Seed of the random draws; the same seed and traffic give the same losses.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Stop after this long (`30s`, `2m`).
    #[arg(long, value_name = "D", value_parser = wzp_engine::params::parse_duration_flag)]
    duration: Option<Duration>,
    /// Log filter (e.g. `info`) [default: RUST_LOG, else warn].
    #[arg(long)]
    log: Option<String>,
}

fn resolve(what: &str, s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("{what} {s:?}: expected HOST:PORT (e.g. 127.0.0.1:4433)"))?
        .next()
        .ok_or_else(|| anyhow!("{what} {s:?}: the name resolves to no address"))
}

fn config(cli: &Cli) -> Result<netem_proxy::ProxyConfig> {
    let listen: SocketAddr = cli.listen.parse().map_err(|_| {
        anyhow!(
            "--listen {:?}: expected IP:PORT (e.g. 127.0.0.1:5000, or port 0 for a free one)",
            cli.listen
        )
    })?;
    let to = resolve("--to", &cli.to)?;
    if to.port() == 0 {
        bail!(
            "--to {:?}: port 0 is nowhere to send to; give the relay's port",
            cli.to
        );
    }
    // Sending to itself: one datagram would loop and fill every mapping.
    if to == listen {
        bail!(
            "--to {:?} is the proxy's own --listen address; give the relay's",
            cli.to
        );
    }
    // A trace says exactly which datagrams are lost; random loss on top
    // would make it say something else.
    if cli.trace.is_some() && cli.loss > 0.0 {
        bail!("--trace decides which datagrams are lost; give it or --loss, not both");
    }
    if cli.burst.is_some_and(|b| !b.is_zero()) && cli.loss == 0.0 {
        bail!("--burst sets how long the losses of --loss last; give --loss PCT too");
    }
    if cli.duration.is_some_and(|d| d.is_zero()) {
        bail!("--duration 0 would stop at once; leave it out to run until Ctrl-C");
    }
    let trace = match &cli.trace {
        Some(p) => load_trace(p).map_err(|e| anyhow!("--trace: {e}"))?,
        None => Vec::new(),
    };
    let schedule: Vec<Phase> = match &cli.schedule {
        Some(s) => parse_schedule(s).map_err(|e| anyhow!("--schedule: {e}"))?,
        None => Vec::new(),
    };
    Ok(netem_proxy::ProxyConfig {
        listen,
        to,
        base: NetemSettings {
            loss: cli.loss,
            burst: cli.burst.unwrap_or_default(),
            delay: cli.delay.unwrap_or_default(),
            jitter: cli.jitter.unwrap_or_default(),
            reorder: cli.reorder,
            duplicate: cli.duplicate,
            rate: cli.rate,
            queue: Some(cli.queue),
        },
        schedule,
        trace,
        seed: cli.seed,
        duration: cli.duration,
        only: cli.only,
    })
}

fn main() {
    let cli = Cli::parse();
    let filter = match log_filter::log_filter(cli.log.as_deref()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = config(&cli).and_then(|cfg| {
        netem_proxy::validate(&cfg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        rt.block_on(netem_proxy::run(cfg))
    });
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
