//! `wzp-client join`: join a room through a relay.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{finish_report, parse_duration_arg, parse_sets};
use crate::call::{self, CallOptions};
use crate::trust::or_home;

#[derive(clap::Args)]
pub struct JoinArgs {
    /// Relay address, HOST:PORT [default: $WZP_RELAY]. Give several
    /// (`--relay A --relay B`, or `A,B`) of relays that bridge the room
    /// (`[[global_rooms]]`): the call goes through the first that takes it,
    /// and moves to the next when its relay stops or goes silent.
    #[arg(long, value_delimiter = ',')]
    pub relay: Vec<String>,
    /// Room name (the relay only ever sees its hash).
    #[arg(long)]
    pub room: String,
    /// Secret shared by the room's members; the media key comes from it.
    /// Without it, anyone who knows the room name can listen.
    #[arg(long)]
    pub room_secret: Option<String>,
    /// What to send: `tone`, `tone:FREQ`, `builtin`, a WAV file, `mic` (the
    /// default device) or `mic:NAME` (`wzp-client devices` lists them).
    #[arg(long, default_value = "mic")]
    pub input: String,
    /// Where the room goes: a WAV file, `speaker` (the default device),
    /// `speaker:NAME`, or `null`. With `--input
    /// mic` and `speaker` the speaker's echo is cancelled in the microphone.
    #[arg(long, default_value = "speaker")]
    pub output: String,
    /// End the call after this long: `10s`, `2m`.
    #[arg(long, value_parser = parse_duration_arg)]
    pub duration: Option<Duration>,
    /// Name shown to the others (at most 64 bytes).
    #[arg(long, value_parser = super::parse_alias)]
    pub alias: Option<String>,
    /// Identity seed file (created on first use, mode 0600). Default ~/.wzp/identity.
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// The relay's TLS fingerprint to pin. Without it, the fingerprint seen on
    /// first contact is recorded in the known-relays file and pinned after.
    /// With several relays, one per relay in the same order, or none.
    #[arg(long, value_delimiter = ',')]
    pub relay_fingerprint: Vec<String>,
    /// Known-relays file. Default ~/.wzp/known_relays.
    #[arg(long)]
    pub known_relays: Option<PathBuf>,
    /// A call graph to run instead of the built-in graphs/call.toml.
    #[arg(long)]
    pub graph: Option<PathBuf>,
    /// Fill a call graph placeholder (repeatable): profile, fec_ratio, jb_min, ...
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub set: Vec<String>,
    /// Record the call to this WAV file (48 kHz mono: what you send, as the
    /// others hear it, mixed with what you hear). The others are told: their
    /// room line shows you as `(recording)`. An existing file is never
    /// replaced: the recording takes the next free name (`call-2.wav`, ...).
    #[arg(long, value_name = "FILE.wav")]
    pub record: Option<PathBuf>,
    /// Write the per-stage figures as JSON to this file: every second during
    /// the call (replaced whole) and once more at the end.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Do not ask for real-time (SCHED_FIFO) priority.
    #[arg(long)]
    pub no_realtime: bool,
    /// Do not print the final per-stage table.
    #[arg(long)]
    pub quiet: bool,
    /// Show, once a second, what the call sends and why (tier, codec,
    /// redundancy, what the receivers report), what it hears (delay,
    /// concealment and its kinds per sender), the quality controller's last
    /// decisions, and the per-stage table.
    #[arg(long)]
    pub top: bool,
    /// Start with the microphone muted (the others hear silence). On a
    /// terminal `m` mutes and unmutes, `q` hangs up; SIGUSR1 mutes, SIGUSR2
    /// unmutes.
    #[arg(long)]
    pub muted: bool,
}

pub fn join_cmd(args: JoinArgs) -> Result<()> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())
        .context("installing SIGINT handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())
        .context("installing SIGTERM handler")?;
    let controls = std::sync::Arc::new(call::controls::Controls::new(args.muted, false)?);
    let mut relays = super::relay_addresses(&args.relay)?.into_iter();
    let mut fingerprints =
        super::relay_fingerprints(&args.relay_fingerprint, relays.len())?.into_iter();
    let relay = relays.next().expect("relay_addresses gives at least one");
    let relay_fingerprint = fingerprints.next().flatten();
    let more_relays: Vec<_> = relays.zip(fingerprints).collect();
    let opts = CallOptions {
        relay,
        room: args.room,
        room_secret: args.room_secret,
        input: args.input,
        output: args.output,
        duration: args.duration,
        alias: args.alias,
        identity: or_home(args.identity, "identity")?,
        relay_fingerprint,
        more_relays,
        known_relays: or_home(args.known_relays, "known_relays")?,
        graph: args.graph,
        sets: parse_sets(&args.set)?,
        realtime: !args.no_realtime,
        stop,
        label: String::new(),
        direct: None,
        stats_json: args.stats_json.clone(),
        record: args.record.clone(),
        top: args.top,
        controls: Some(controls),
        joined: None,
    };
    call::graph::check_options(&opts)?;
    if let Some(p) = &args.stats_json {
        super::check_writable("--stats-json", p)?;
    }
    let relay = std::iter::once(opts.relay.clone())
        .chain(opts.more_relays.iter().map(|(r, _)| r.clone()))
        .collect::<Vec<_>>()
        .join(", ");
    let outcome = call::run_call(opts)?;
    finish_report(
        &outcome.report,
        outcome.room.as_ref(),
        args.stats_json.as_deref(),
        args.quiet,
    )?;
    // The call ended (--duration, Ctrl-C) before the relay ever answered:
    // nothing was sent or heard, which is no success.
    if outcome.joins == 0 {
        anyhow::bail!(
            "the call ended before the relay at {relay} admitted it; check the address and that the relay runs"
        );
    }
    Ok(())
}
