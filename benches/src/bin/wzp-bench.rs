//! `wzp-bench`: load and latency benches that need real processes and
//! sockets, beside the criterion benches.

#[path = "../mouth_to_ear.rs"]
mod mouth_to_ear;
#[path = "../relay_load.rs"]
mod relay_load;
#[path = "../relay_memory.rs"]
mod relay_memory;
#[path = "../relay_proc.rs"]
mod relay_proc;
#[path = "../signal_load.rs"]
mod signal_load;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples:
  cargo build --release -p wzp-relay -p wzp-benches
  ./target/release/wzp-bench relay-load --clients 100 --rooms 10 --duration 10
      100 QUIC clients in 10 rooms of 10 through a real wzp-relay, 50 packets/s
      each (5k in, 45k out), then the same traffic through a raw UDP forwarder.
  ./target/release/wzp-bench relay-load --clients 200 --rooms 100 --rate 100 --duration 5
      Many small rooms at 10 ms frames.
  ./target/release/wzp-bench relay-load --clients 40 --rooms 1 --duration 5 --skip-raw
  ./target/release/wzp-bench relay-load --clients 200 --rooms 20 --skip-raw --federation
      One big room (fan-out 39) through the relay only.
  ./target/release/wzp-bench mouth-to-ear
      Source-to-sink lag of two call graphs through the relay, for the default
      settings, with one frame of decoder look-ahead, and with a deeper
      jitter buffer.
  ./target/release/wzp-bench mouth-to-ear --setting jb_min=0ms,jb_initial=0ms --keep out/
      One setting; keeps the received recording in out/.
  ./target/release/wzp-bench mouth-to-ear --phase-ms 19.5
      The receiver's clock ticks 19.5 ms after the sender's.
  ./target/release/wzp-bench mouth-to-ear --direct
      The same two graphs straight to each other (a direct call's direct
      path, no relay): what the relay's hop adds.
  ./target/release/wzp-bench signal-load --clients 10000
      Registers 10 000 identities on a real relay's _signal service, then
      1 000 call offers/s for 10 s between registered pairs: registrations/s,
      relay RSS per registration, relay CPU, offer -> ringing p50/p99.
  ./target/release/wzp-bench signal-load --clients 1000 --calls-per-s 0
      Registrations only.
  ./target/release/wzp-bench relay-memory --connections 100,500,1000
      The relay's heap (its wzp_relay_heap_bytes gauge) per idle QUIC connection
      and per joined session sending 50 packets/s in rooms of 2, each count
      against a fresh relay, and what is left after everyone leaves.
  ./target/release/wzp-bench relay-memory --connections 200 --room-size 10 --hold 5
      Sessions in rooms of ten, five seconds of media before the reading.";

#[derive(Parser)]
#[command(name = "wzp-bench", version, about = "wzp load and latency benches (loopback only)", after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulated clients through a real wzp-relay, beside a raw UDP forwarder:
    /// forwarded packets/s, CPU per core, one-way latency p50/p99, loss.
    #[command(after_help = EXAMPLES)]
    RelayLoad(RelayLoadArgs),
    /// Source-to-sink latency of two in-process call graphs through a real
    /// wzp-relay, measured by cross-correlating chirps, beside the declared budget.
    #[command(after_help = EXAMPLES)]
    MouthToEar(MouthToEarArgs),
    /// Many real QUIC `_signal` connections registered on a real wzp-relay,
    /// then call offers at a fixed rate: registrations/s, relay RSS per
    /// registration and CPU, offer -> ringing latency p50/p99.
    #[command(after_help = EXAMPLES)]
    SignalLoad(SignalLoadArgs),
    /// The relay's heap per idle connection and per joined session (from its
    /// `wzp_relay_heap_bytes` gauge), for several connection counts, and
    /// what is left once everyone has left.
    #[command(after_help = EXAMPLES)]
    RelayMemory(RelayMemoryArgs),
}

#[derive(clap::Args)]
struct RelayMemoryArgs {
    /// Connection counts, comma-separated; each runs against a fresh relay.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    connections: Vec<usize>,
    /// Members per room in the joined phase.
    #[arg(long, default_value_t = 2)]
    room_size: usize,
    /// Media packets per second per joined client (50 = 20 ms frames).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Payload bytes after the media header.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Seconds of media before the joined heap is read.
    #[arg(long, default_value_t = 4)]
    hold: u64,
    /// The wzp-relay binary (default: next to wzp-bench).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// A line for the relay's config file, KEY=VALUE (repeatable).
    #[arg(long = "relay-set", value_name = "KEY=VALUE")]
    relay_set: Vec<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct SignalLoadArgs {
    /// Clients to register (even: client 2i calls client 2i+1).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Call offers per second in the call phase (0: register only).
    #[arg(long, default_value_t = 1000)]
    calls_per_s: u32,
    /// Seconds of call offers.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Registrations in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// QUIC connections per client endpoint (one UDP socket each).
    #[arg(long, default_value_t = 1000)]
    per_endpoint: usize,
    /// QUIC keep-alive interval per connection, in ms (wzp-client uses 500).
    #[arg(long, default_value_t = 500)]
    quic_keepalive_ms: u64,
    /// The wzp-relay binary (default: next to wzp-bench).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// A line for the relay's config file, KEY=VALUE (repeatable).
    #[arg(long = "relay-set", value_name = "KEY=VALUE")]
    relay_set: Vec<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct RelayLoadArgs {
    /// Simulated clients (each sends and receives).
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Rooms; client i joins room i % rooms.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// Seconds of sending per phase.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Packets per second per client (50 = 20 ms frames).
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Payload bytes after the 22-byte header.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// The wzp-relay binary (default: next to wzp-bench).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// Only the raw UDP forwarder.
    #[arg(long, conflicts_with = "skip_raw")]
    skip_relay: bool,
    /// Only the relay.
    #[arg(long)]
    skip_raw: bool,
    /// Also the federation phase: two relays joined by one federation
    /// link, every room a global room, clients alternating between them
    /// (forwarded packets/s per core beside the single relay's).
    #[arg(long)]
    federation: bool,
    /// A line for the relay's config file, KEY=VALUE (repeatable), e.g.
    /// `--relay-set io_threads=1 --relay-set shards=2`
    #[arg(long = "relay-set", value_name = "KEY=VALUE")]
    relay_set: Vec<String>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[derive(clap::Args)]
struct MouthToEarArgs {
    /// The wzp-relay binary (default: next to wzp-bench).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
    /// A line for the relay's config file, KEY=VALUE (repeatable), e.g.
    /// `--relay-set egress_coalesce_us=5000`
    #[arg(long = "relay-set", value_name = "KEY=VALUE")]
    relay_set: Vec<String>,
    /// A call-graph setting to measure, as NAME=VALUE,NAME=VALUE (the
    /// `--set` values of `wzp-client join`); repeatable; `""` = defaults.
    /// Without any: the defaults, then lookahead=1, then
    /// jb_min=40ms,jb_initial=60ms,lookahead=1.
    #[arg(long = "setting", value_name = "NAME=VALUE,...")]
    settings: Vec<String>,
    /// Seconds of call per setting (one chirp per second; 4..=300).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Keep the received recordings in this folder.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// The receiver's 20 ms clock ticks this many ms after the sender's
    /// (0..20). A packet waits for the receiver's next cycle, so this adds
    /// up to a quantum; real devices run at a random phase, 10 on average.
    #[arg(long, default_value_t = 10.0)]
    phase_ms: f64,
    /// Connect the two graphs straight to each other (one QUIC connection,
    /// a direct call's direct path) instead of through a relay.
    #[arg(long)]
    direct: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::RelayLoad(a) => relay_load_cmd(a),
        Command::MouthToEar(a) => mouth_to_ear_cmd(a),
        Command::SignalLoad(a) => signal_load_cmd(a),
        Command::RelayMemory(a) => relay_memory_cmd(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn relay_memory_cmd(a: RelayMemoryArgs) -> Result<()> {
    let o = relay_memory::MemoryOptions {
        counts: a.connections,
        room_size: a.room_size,
        rate: a.rate,
        payload: a.payload,
        hold: Duration::from_secs(a.hold),
        relay_bin: a.relay_bin,
        relay_config: a.relay_set,
        progress: !a.quiet,
    };
    let results = relay_memory::run(&o).context("relay-memory")?;
    print!("{}", relay_memory::report(&o, &results));
    Ok(())
}

fn relay_load_cmd(a: RelayLoadArgs) -> Result<()> {
    let o = relay_load::LoadOptions {
        clients: a.clients,
        rooms: a.rooms,
        duration: Duration::from_secs(a.duration),
        rate: a.rate,
        payload: a.payload,
        relay_bin: a.relay_bin,
        skip_relay: a.skip_relay,
        skip_raw: a.skip_raw,
        federation: a.federation,
        relay_config: a.relay_set.clone(),
        progress: !a.quiet,
    };
    let results = relay_load::run(&o).context("relay-load")?;
    print!("{}", relay_load::report(&o, &results));
    Ok(())
}

fn mouth_to_ear_cmd(a: MouthToEarArgs) -> Result<()> {
    let settings = if a.settings.is_empty() {
        mouth_to_ear::default_settings()
    } else {
        a.settings
            .iter()
            .map(|s| mouth_to_ear::parse_setting(s))
            .collect::<Result<_>>()?
    };
    let o = mouth_to_ear::M2eOptions {
        relay_bin: a.relay_bin,
        relay_config: a.relay_set,
        duration: Duration::from_secs(a.duration),
        settings,
        keep: a.keep,
        phase: Duration::try_from_secs_f64(a.phase_ms / 1e3)
            .map_err(|_| anyhow::anyhow!("--phase-ms {}: use 0..20", a.phase_ms))?,
        progress: !a.quiet,
        direct: a.direct,
    };
    let results = mouth_to_ear::run(&o).context("mouth-to-ear")?;
    print!("{}", mouth_to_ear::report(&o, &results));
    Ok(())
}

fn signal_load_cmd(a: SignalLoadArgs) -> Result<()> {
    if a.quic_keepalive_ms == 0 {
        anyhow::bail!("--quic-keepalive-ms 0: use at least 1");
    }
    let o = signal_load::SignalOptions {
        clients: a.clients,
        calls_per_s: a.calls_per_s,
        seconds: a.seconds,
        concurrency: a.concurrency,
        per_endpoint: a.per_endpoint,
        quic_keepalive: Duration::from_millis(a.quic_keepalive_ms),
        relay_bin: a.relay_bin,
        relay_config: a.relay_set,
        progress: !a.quiet,
    };
    let results = signal_load::run(&o).context("signal-load")?;
    print!("{}", signal_load::report(&o, &results));
    Ok(())
}
