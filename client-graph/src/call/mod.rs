//! A call: options, the call graph ([`graph`]) and the media connection
//! ([`media`]). `wzp-client join` and `demo` run one with [`run_call`].

pub mod controls;
pub mod graph;
pub mod media;
pub mod ring;
pub mod roster;
pub mod top;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::prelude::*;
use wzp_engine::stats::Report;
use wzp_proto::{Seed, TlsFingerprint};
use wzp_stages::net::quic;
use wzp_stages::quality::journal::{DecisionJournal, DEFAULT_NAME as ADAPT_JOURNAL};
use wzp_stages::quality::path::PathLive;

use crate::trust::{KnownRelays, Trust};
use graph::{call_spec, profile_for_path, room_secret, sending_profile, with_profile};

#[derive(Clone, Debug)]
pub struct CallOptions {
    pub relay: String,
    pub room: String,
    pub room_secret: Option<String>,
    pub input: String,
    pub output: String,
    pub duration: Option<Duration>,
    pub alias: Option<String>,
    pub identity: PathBuf,
    pub relay_fingerprint: Option<TlsFingerprint>,
    /// Relays to move to, in order, when `relay` cannot be reached, refuses
    /// the room, or goes away mid-call (each with its pinned fingerprint,
    /// if given): relays that bridge the room (`[[global_rooms]]`), so the
    /// room is the same one through any of them. Empty: `relay` only.
    pub more_relays: Vec<(String, Option<TlsFingerprint>)>,
    pub known_relays: PathBuf,
    pub graph: Option<PathBuf>,
    pub sets: BTreeMap<String, String>,
    pub realtime: bool,
    /// Set to end the call (signal handlers, `demo`).
    pub stop: Arc<AtomicBool>,
    /// Prefix for progress lines on stdout (e.g. `[alice] `).
    pub label: String,
    /// A direct call's room and end-to-end keys (instead of a room secret).
    pub direct: Option<DirectMedia>,
    /// Where the per-stage figures are written as JSON, every
    /// [`STATS_JSON_INTERVAL`] during the call (replaced whole, so a reader
    /// never sees half a file) and once more at the end.
    pub stats_json: Option<PathBuf>,
    /// `--record`: the call recorded to this WAV file (both sides, mixed),
    /// and the others told.
    pub record: Option<PathBuf>,
    /// Print the `--top` view ([`top::Top`]) once a second instead of each
    /// quality decision as it comes.
    pub top: bool,
    /// The process's in-call controls (mute, hang up); `None`: the
    /// microphone is never muted.
    pub controls: Option<Arc<controls::Controls>>,
    /// Joined with another call of this process ([`Joined`]).
    pub joined: Option<Joined>,
}

/// A call joined with another running in this process (`c` in `listen`,
/// docs/DESIGN.md decision 32): the two graphs meet at two PCM buses.
#[derive(Clone)]
pub enum Joined {
    /// The call with the microphone and speaker: it plays the other party
    /// (`from`) and sends it on with this end's voice, and sends `to` this
    /// end's voice with this call's party's.
    Main {
        from: (String, Arc<wzp_stages::audio::bus::PcmBus>),
        to: (String, Arc<wzp_stages::audio::bus::PcmBus>),
        /// The other call's figures, for this call's `--top` view.
        leg_stats: LegStats,
    },
    /// The other call: `from` is its input (this end and the main call's
    /// party), its output goes to `to`; no device, no controls of its own.
    /// `recording`: the main call records both (`--record`), so this
    /// call's party is told too.
    Leg {
        from: (String, Arc<wzp_stages::audio::bus::PcmBus>),
        to: (String, Arc<wzp_stages::audio::bus::PcmBus>),
        recording: bool,
        /// Where this call's graph puts its figures (the main call's
        /// `--top` shows them beside its own).
        stats_to: LegStats,
    },
}

/// The other call of two joined: who it is with, and its figures as its
/// graph last gave them (a graph rebuilt for another profile gives new ones).
pub type LegStats = Arc<std::sync::Mutex<Option<(String, Arc<wzp_engine::stats::GraphStats>)>>>;

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Joined::Main { from, to, .. } => write!(f, "Main({} -> , -> {})", from.0, to.0),
            Joined::Leg { from, to, .. } => write!(f, "Leg({} -> , -> {})", from.0, to.0),
        }
    }
}

impl Joined {
    /// The two buses, to insert as resources.
    fn buses(&self) -> [&(String, Arc<wzp_stages::audio::bus::PcmBus>); 2] {
        match self {
            Joined::Main { from, to, .. } | Joined::Leg { from, to, .. } => [from, to],
        }
    }
}

/// How often a call rewrites its `--stats-json` file.
pub const STATS_JSON_INTERVAL: Duration = Duration::from_secs(1);

/// How often `--top` shows a new screen.
pub const TOP_INTERVAL: Duration = Duration::from_secs(1);

/// Writes `report` to `path` through a temporary file and a rename, so a
/// reader sees the old figures or the new ones, never half a file.
pub fn write_stats_json(
    report: &Report,
    room: Option<&serde_json::Value>,
    path: &std::path::Path,
) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut doc = serde_json::to_value(report)?;
    if let (Some(room), Some(obj)) = (room, doc.as_object_mut()) {
        obj.insert("room".into(), room.clone());
    }
    std::fs::write(&tmp, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The media side of a direct call set up on the signal plane: the call
/// room (the media connection's server name) and the keys both clients
/// derived from the signed handshake. The relay never has them.
#[derive(Clone, Debug)]
pub struct DirectMedia {
    /// The `call-*` room.
    pub room: String,
    /// Per-direction media keys.
    pub keys: wzp_proto::handshake::SessionKeys,
    /// A direct path to try beside the relay (`None`: the relay only).
    pub path: Option<crate::nat::DirectPath>,
    /// Who the call is with, as the `--top` view names them (a contact's
    /// name, else the fingerprint).
    pub with: String,
}

/// The resource name the call graph's seal/open stages take a direct
/// call's keys from.
pub const CALL_KEYS: &str = "call.keys";

/// The resource name of the call's own sender id cell
/// ([`wzp_stages::wire::LocalSender`]).
pub const LOCAL_SENDER: &str = "call.local_sender";

/// The resource name of the call's first-hop samples
/// ([`wzp_stages::quality::path::PathLive`]), which the media connection
/// publishes and `quality.adapt`'s `path_live` reads.
pub const PATH_LIVE: &str = "call.path";

/// What a call leaves behind.
pub struct CallOutcome {
    pub report: Report,
    /// The room as last written to `--stats-json` ([`top::room_json`]).
    pub room: Option<serde_json::Value>,
    /// Times the client was admitted to the room (1 + reconnections).
    pub joins: u32,
}

/// Runs a call until `--duration`, the stop flag, or a fatal error.
/// `path`, or when a file is there already the first free
/// `STEM-N.EXT` (N from 2): a recording never replaces another.
pub fn fresh_path(path: &std::path::Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (2u32..)
        .map(|n| path.with_file_name(format!("{stem}-{n}{ext}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

pub fn run_call(mut opts: CallOptions) -> Result<CallOutcome> {
    if let Some(p) = opts.record.take() {
        let p = fresh_path(&p);
        println!(
            "{}recording the call to {} (the others are told)",
            opts.label,
            p.display()
        );
        opts.record = Some(p);
    }
    let seed = Seed::load_or_create(&opts.identity)
        .map_err(|e| anyhow!("identity {}: {e}", opts.identity.display()))?;
    let identity = seed.identity();
    let mut known = KnownRelays::load(&opts.known_relays)?;
    let mut relays = Vec::new();
    for (name, pinned) in std::iter::once((&opts.relay, opts.relay_fingerprint))
        .chain(opts.more_relays.iter().map(|(n, f)| (n, *f)))
    {
        relays.push(media::RelayChoice {
            addr: crate::signal::relay_addr(name)?,
            trust: Trust::for_relay(name, pinned, &mut known)?,
            name: name.clone(),
        });
    }

    let mut spec = match &opts.direct {
        None => call_spec(&opts, &room_secret(&opts))?,
        Some(_) => {
            // The room secret is not used: seal and open take the call keys.
            let mut spec = call_spec(&opts, "direct call: keys from the handshake")?;
            graph::use_session_keys(&mut spec, CALL_KEYS)?;
            spec
        }
    };
    let wakers = Wakers::default();
    let epoch = Instant::now();
    let (feed, ingress_port) = quic::ingress_channel(1024, wakers.clocked.clone(), epoch);
    let (peers, pump, egress_port) = quic::egress_channel(1024);
    let mut res = Resources::new();
    res.insert("quic.ingress", Arc::new(ingress_port));
    res.insert("quic.egress", Arc::new(egress_port));
    // Every decision of the quality controller, printed as it is drained.
    let journal = Arc::new(DecisionJournal::default());
    res.insert(ADAPT_JOURNAL, journal.clone());
    if let Some(d) = &opts.direct {
        res.insert(CALL_KEYS, Arc::new(d.keys.clone()));
    }
    if let Some(j) = &opts.joined {
        for (name, bus) in j.buses() {
            res.insert(name, bus.clone());
        }
    }
    // The random sender id packetize draws reaches open, which drops our
    // own packets if anyone (a relay, a replaying member) sends them back.
    if graph::use_local_sender(&mut spec, LOCAL_SENDER) {
        res.insert(LOCAL_SENDER, Arc::new(wzp_stages::wire::LocalSender::new()));
    }
    // What the media connection sees of its first hop, for `quality.adapt`.
    let path_live = Arc::new(PathLive::new());
    res.insert(PATH_LIVE, path_live.clone());
    // The microphone's mute switch, thrown by keys and signals.
    let has_switch = controls::graph_has_switch(&spec);
    if let Some(c) = &opts.controls {
        res.insert(controls::MUTE_CELL, c.mute.clone());
        res.insert(controls::WAITING_CELL, c.waiting_tone.clone());
        res.insert(controls::HOLD_CELL, c.hold.clone());
        res.insert(controls::HELD_CELL, c.held_tone.clone());
        if c.keys() {
            let hold = if opts.direct.is_some() {
                ", h holds the call and takes it back"
            } else {
                ""
            };
            println!(
                "{}keys: m mutes or unmutes the microphone{hold}, q hangs up",
                opts.label
            );
        }
        if c.is_muted() {
            println!("{}{}", opts.label, controls::announce(true));
        }
        if !has_switch && (c.is_muted() || c.keys()) {
            eprintln!(
                "{}warning: this graph has no audio.mute stage thrown by `{}`: muting does nothing",
                opts.label,
                controls::MUTE_CELL
            );
        }
    }
    let registry = wzp_stages::registry();
    let compiled = compile_with(&spec, &registry, &res, &Existing::default(), wakers)
        .map_err(|e| anyhow!("{e}"))?;
    let mut graph = Graph::new(compiled);
    let wanted = sending_profile(&spec);
    let mut sending = wanted;
    let path_limit = Arc::new(AtomicUsize::new(0));
    let pump_stop = Arc::new(AtomicBool::new(false));
    // With a real-time clock, the threads that carry its packets to the
    // network (the egress pump, the network runtime below) run real-time
    // too, under it: at normal priority they waited behind whatever else
    // the machine ran, and a packet the clock made on time left 20-30 ms
    // late now and then (docs/PERFORMANCE.md, "egress jitter").
    let net_fifo = opts
        .realtime
        .then_some(wzp_engine::rt::NETWORK_FIFO_PRIORITY);
    let pump_thread = pump
        .spawn_with_priority(pump_stop.clone(), net_fifo)
        .context("starting the egress thread")?;
    graph
        .start(RunOptions {
            driver: ClockDriver::Timer,
            duration: opts.duration,
            realtime: opts.realtime,
            ..Default::default()
        })
        .map_err(|e| anyhow!("{e}"))?;
    // When the graph's clock started: frame k of the input leaves k quanta
    // later (benches/quality/live.sh lines its loss schedule up with it).
    tracing::info!(
        unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()) as u64,
        "graph started"
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(move || {
            if let Some(p) = net_fifo {
                wzp_engine::rt::promote_current_thread_to(p);
            }
        })
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    let graph_done = Arc::new(AtomicBool::new(false));
    let (telemetry_tx, telemetry_rx) = tokio::sync::mpsc::channel::<media::Telemetry>(4);
    let route = crate::nat::Route::new(peers, path_limit.clone());
    let direct = opts
        .direct
        .as_ref()
        .and_then(|d| d.path.clone())
        .map(|plan| {
            let io = crate::nat::PathIo {
                route: route.clone(),
                feed: feed.clone(),
                path_live: path_live.clone(),
                label: opts.label.clone(),
                totals: Arc::default(),
            };
            let (graph_done, stop) = (graph_done.clone(), opts.stop.clone());
            let finished =
                move || graph_done.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed);
            rt.spawn(crate::nat::run(plan, identity.clone(), io, finished))
        });
    let media_route = route.clone();
    let roster = roster::SharedRoster::default();
    let room_state = media::RoomState {
        roster: roster.clone(),
        mute: opts.controls.clone().filter(|_| has_switch),
        printed: None,
        peer_muted: false,
        // The other call of two joined is recorded by the main one's graph.
        recording: opts.record.is_some()
            || matches!(
                opts.joined,
                Some(Joined::Leg {
                    recording: true,
                    ..
                })
            ),
        peer_recording: false,
    };
    let net = {
        let opts = opts.clone();
        let graph_done = graph_done.clone();
        let path_live = path_live.clone();
        rt.spawn(async move {
            media::connection_loop(
                &opts,
                &identity,
                relays,
                &mut known,
                feed,
                route,
                graph_done,
                path_live,
                telemetry_rx,
                room_state,
            )
            .await
        })
    };
    let mut stats = graph.stats();
    // The other call of two joined gives the main one its figures.
    let publish = |stats: &Arc<wzp_engine::stats::GraphStats>| {
        if let Some(Joined::Leg { stats_to, .. }) = &opts.joined {
            let with = opts
                .direct
                .as_ref()
                .map_or(String::new(), |d| d.with.clone());
            *stats_to.lock().unwrap_or_else(|p| p.into_inner()) = Some((with, stats.clone()));
        }
    };
    publish(&stats);
    // The main call's view of the other call's figures.
    let leg_stats = match &opts.joined {
        Some(Joined::Main { leg_stats, .. }) => Some(leg_stats.clone()),
        _ => None,
    };
    let mut leg_top: Option<(Arc<wzp_engine::stats::GraphStats>, top::Top)> = None;
    let mut telemetry = media::TelemetrySampler::default();
    let mut next_report = Instant::now() + media::TELEMETRY_INTERVAL;
    let mut next_stats_json = Instant::now() + STATS_JSON_INTERVAL;
    let mut stats_json_warned = false;
    // The room written with the figures, and the figures of the write
    // before (who is talking is read over the last second).
    let mut room_json: Option<serde_json::Value> = None;
    let mut last_stats_report: Option<Report> = None;
    let mut top = opts.top.then(|| {
        top::Top::new(match &opts.direct {
            Some(d) => format!("direct call with {}", d.with),
            None => format!("call — room {}", opts.room),
        })
        .with_roster(roster.clone())
    });
    let call_started = Instant::now();
    let mut next_top = call_started + TOP_INTERVAL;
    // Someone talking into the muted microphone is told once per mute.
    let mut talk_check = controls::TalkingWhileMuted::default();
    let mut next_talk_check = call_started + Duration::from_secs(1);
    // Wait for the graph to end (duration) or a stop request.
    while !graph.is_finished() && !opts.stop.load(Ordering::Relaxed) {
        graph.wait(Duration::from_millis(50));
        if net.is_finished() {
            break;
        }
        if opts.controls.as_ref().is_some_and(|c| c.take_hangup()) {
            if opts.direct.is_none() {
                println!("{}hanging up", opts.label);
            }
            break;
        }
        if let Some(muted) = opts.controls.as_ref().and_then(|c| c.changed()) {
            if has_switch {
                println!("{}{}", opts.label, controls::announce(muted));
            } else {
                eprintln!(
                    "{}warning: this graph has no audio.mute stage thrown by `{}`: muting does nothing",
                    opts.label,
                    controls::MUTE_CELL
                );
            }
        }
        if Instant::now() >= next_talk_check {
            next_talk_check += Duration::from_secs(1);
            // The microphone's switch, not the hold's (whose `hold_in`
            // hears the far end).
            let voiced: u64 = stats
                .stages_of_kind("audio.mute")
                .filter(|m| !controls::is_hold_stage(&m.id))
                .filter_map(|m| m.counter("voiced_muted_frames"))
                .sum();
            let muted = opts.controls.as_ref().is_some_and(|c| c.is_muted());
            if talk_check.second(voiced, muted && has_switch) {
                let how = match &opts.controls {
                    Some(c) if c.keys() => "m unmutes",
                    _ => "SIGUSR2 unmutes",
                };
                println!(
                    "{}you are talking while muted: the others hear nothing ({how})",
                    opts.label
                );
            }
        }
        if Instant::now() >= next_report {
            next_report += media::TELEMETRY_INTERVAL;
            // Dropped when the connection is between sessions: the next
            // report carries the same monotonic counters.
            let mut t = telemetry.sample(&stats);
            t.direct = media_route.direct_up();
            let _ = telemetry_tx.try_send(t);
        }
        match &mut top {
            Some(t) => {
                journal.drain(|r| t.decision(&r.line()));
                if Instant::now() >= next_top {
                    next_top += TOP_INTERVAL;
                    if let Some(d) = &opts.direct {
                        t.set_title(format!(
                            "direct call with {} — media {}",
                            d.with,
                            if media_route.direct_up() {
                                "straight to the peer"
                            } else {
                                "through the relay"
                            }
                        ));
                    }
                    let elapsed = call_started.elapsed().as_secs_f64();
                    let mut screen = t.render(&stats, elapsed);
                    // Two calls joined: the other call's figures below.
                    let other = leg_stats
                        .as_ref()
                        .and_then(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone());
                    if let Some((with, other)) = other {
                        let fresh = !leg_top
                            .as_ref()
                            .is_some_and(|(s, _)| Arc::ptr_eq(s, &other));
                        if fresh {
                            let title = format!(
                                "joined: the call with {with} (no device; {with} hears this call too)"
                            );
                            leg_top = Some((other.clone(), top::Top::new(title)));
                        }
                        if let Some((_, lt)) = &mut leg_top {
                            screen.push('\n');
                            screen.push_str(&lt.render(&other, elapsed));
                        }
                    } else {
                        leg_top = None;
                    }
                    t.print(&screen);
                }
            }
            None => {
                journal.drain(|r| println!("{}{}", opts.label, r.line()));
            }
        }
        if let Some(path) = &opts.stats_json {
            if Instant::now() >= next_stats_json {
                next_stats_json += STATS_JSON_INTERVAL;
                let report = stats.report(&stats.snapshot(), None);
                room_json = roster
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|r| top::room_json(&report, last_stats_report.as_ref(), r));
                if let Err(e) = write_stats_json(&report, room_json.as_ref(), path) {
                    if !std::mem::replace(&mut stats_json_warned, true) {
                        eprintln!("{}warning: --stats-json: {e:#}", opts.label);
                    }
                }
                last_stats_report = Some(report);
            }
        }
        // Each (re)join reports the path's datagram limit: send with the
        // best profile that fits it.
        let limit = path_limit.swap(0, Ordering::Relaxed);
        if let (Some(w), Some(cur), true) = (wanted, sending, limit > 0) {
            match profile_for_path(w, limit) {
                Some(p) if p != cur => {
                    let respec = with_profile(&spec, p);
                    match graph.reconfigure(&respec, &registry, &res) {
                        Ok(()) => {
                            // Rebuilt stages have new figures.
                            stats = graph.stats();
                            publish(&stats);
                            if let Some(t) = &mut top {
                                t.restart();
                            }
                            println!(
                                "{}the path takes {limit}-byte datagrams: sending {} (up to {} bytes) instead of {}",
                                opts.label,
                                p.name,
                                p.max_datagram_bytes(),
                                cur.name
                            );
                            sending = Some(p);
                        }
                        Err(e) => eprintln!("{}cannot switch to profile {}: {e}", opts.label, p.name),
                    }
                }
                Some(_) => {}
                None => eprintln!(
                    "{}warning: the path takes only {limit}-byte datagrams; profile {} needs up to {}, and no Opus profile fits",
                    opts.label,
                    cur.name,
                    cur.max_datagram_bytes()
                ),
            }
        }
    }
    graph_done.store(true, Ordering::Relaxed);
    let joins = rt.block_on(async {
        match tokio::time::timeout(Duration::from_secs(3), net).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(anyhow!("network task: {e}")),
            Err(_) => Err(anyhow!("the network task did not stop")),
        }
    });
    if let Some(d) = direct {
        let _ = rt.block_on(async { tokio::time::timeout(Duration::from_secs(1), d).await });
    }
    let stats = graph.stats();
    graph.stop();
    journal.drain(|r| println!("{}{}", opts.label, r.line()));
    let report = stats.report(&stats.snapshot(), None);
    drop(graph);
    pump_stop.store(true, Ordering::Relaxed);
    let _ = pump_thread.join();
    rt.shutdown_timeout(Duration::from_millis(500));
    Ok(CallOutcome {
        report,
        room: room_json,
        joins: joins?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use wzp_stages::codec::profile::Profile;

    fn opts(sets: &[(&str, &str)]) -> CallOptions {
        CallOptions {
            relay: "127.0.0.1:1".into(),
            room: "r".into(),
            room_secret: Some("0123456789abcdef0123".into()),
            input: "tone".into(),
            output: "null".into(),
            duration: None,
            alias: None,
            identity: PathBuf::from("/nonexistent"),
            relay_fingerprint: None,
            more_relays: Vec::new(),
            known_relays: PathBuf::from("/nonexistent"),
            graph: None,
            sets: sets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            realtime: false,
            stop: Arc::new(AtomicBool::new(false)),
            label: String::new(),
            direct: None,
            stats_json: None,
            record: None,
            top: false,
            controls: None,
            joined: None,
        }
    }

    /// Panics with why unless `spec` compiles with the QUIC channels a call
    /// has, and `res`.
    fn compiles(spec: &GraphSpec, mut res: Resources) {
        let (_, ingress) = quic::ingress_channel(8, Wakers::default().clocked, Instant::now());
        let (_, _, egress) = quic::egress_channel(8);
        res.insert("quic.ingress", Arc::new(ingress));
        res.insert("quic.egress", Arc::new(egress));
        if let Err(e) = wzp_engine::compile::compile_dry_run(spec, &wzp_stages::registry(), &res) {
            panic!("{e}");
        }
    }

    #[test]
    fn a_recorded_call_mixes_what_is_sent_with_what_is_heard_into_a_wav() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(&[]);
        o.record = Some(dir.path().join("call.wav"));
        let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
        let kind = |id: &str| {
            spec.stages
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.kind.as_str())
        };
        assert_eq!(kind("rec_mix"), Some("audio.mix"));
        assert_eq!(kind("rec"), Some("audio.wav_sink"));
        let links: Vec<(String, String)> = spec
            .links
            .iter()
            .filter(|l| l.to.stage.starts_with("rec"))
            .map(|l| (l.from.to_string(), l.to.to_string()))
            .collect();
        assert_eq!(
            links,
            [
                ("mute.out".to_string(), "rec_mix.in0".to_string()),
                ("mix.out".to_string(), "rec_mix.in1".to_string()),
                ("rec_mix.out".to_string(), "rec.in".to_string()),
            ]
        );
        // It compiles: the ports and rates fit.
        compiles(&spec, Resources::new());
        // A graph without the stages it taps is refused with why; so is one
        // that has the stages it would add.
        let mut bare = call_spec(&opts(&[]), "0123456789abcdef0123").unwrap();
        bare.stages.retain(|s| s.id != "mix");
        let e = graph::with_recording(bare, &dir.path().join("x.wav")).unwrap_err();
        assert!(e.to_string().contains("has no `mix`"), "{e}");
        let e = graph::with_recording(spec, &dir.path().join("x.wav")).unwrap_err();
        assert!(e.to_string().contains("already has a `rec_mix`"), "{e}");
    }

    #[test]
    fn a_persons_call_beeps_under_it_while_a_second_call_waits() {
        let spec_of = |controls: bool, sets: &[(&str, &str)]| {
            let mut o = opts(sets);
            if controls {
                o.controls = Some(Arc::new(controls::Controls::new(false, false).unwrap()));
            }
            call_spec(&o, "0123456789abcdef0123").unwrap()
        };
        let pattern = |spec: &GraphSpec| {
            let s = spec.stages.iter().find(|s| s.id == "waiting_tone").unwrap();
            (
                s.params["pattern"].value.as_str().unwrap().to_string(),
                s.params["gate"].value.as_str().unwrap().to_string(),
            )
        };
        let spec = spec_of(true, &[]);
        assert_eq!(
            pattern(&spec),
            ("waiting".into(), controls::WAITING_CELL.into())
        );
        assert!(spec
            .links
            .iter()
            .any(|l| l.from.to_string() == "waiting_tone.out" && l.to.to_string() == "mix.in5"));
        // No person at the call (a bench, `run`), or turned off: silence.
        assert_eq!(pattern(&spec_of(false, &[])).0, "none");
        assert_eq!(
            pattern(&spec_of(true, &[("waiting_tone", "none")])).0,
            "none"
        );
        // It compiles with the gate the client inserts.
        let mut res = Resources::new();
        res.insert(
            controls::WAITING_CELL,
            Arc::new(wzp_stages::audio::ring_source::RingGate::new(false)),
        );
        compiles(&spec, res);
    }

    #[test]
    fn a_call_on_a_speaker_starts_with_the_connect_chime() {
        let pattern = |input: &str, output: &str, sets: &[(&str, &str)]| {
            let mut o = opts(sets);
            o.input = input.into();
            o.output = output.into();
            let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
            let chime = spec.stages.iter().find(|s| s.id == "chime").unwrap();
            chime.params["pattern"].value.as_str().unwrap().to_string()
        };
        assert_eq!(pattern("mic", "speaker", &[]), "connected");
        assert_eq!(pattern("mic", "speaker", &[("chime", "none")]), "none");
        // No echo to find: a headless call, a WAV, a tone.
        assert_eq!(pattern("builtin", "null", &[]), "none");
        assert_eq!(pattern("tone", "speaker", &[]), "none");
        assert_eq!(pattern("mic", "heard.wav", &[]), "none");
    }

    #[test]
    fn a_recording_never_replaces_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("call.wav");
        assert_eq!(fresh_path(&p), p);
        std::fs::write(&p, b"x").unwrap();
        assert_eq!(fresh_path(&p), dir.path().join("call-2.wav"));
        std::fs::write(dir.path().join("call-2.wav"), b"x").unwrap();
        assert_eq!(fresh_path(&p), dir.path().join("call-3.wav"));
        let bare = dir.path().join("take");
        std::fs::write(&bare, b"x").unwrap();
        assert_eq!(fresh_path(&bare), dir.path().join("take-2"));
    }

    #[test]
    fn the_shipped_call_graph_has_the_mute_switch() {
        let spec = call_spec(&opts(&[]), "0123456789abcdef0123").unwrap();
        assert!(controls::graph_has_switch(&spec));
        // A graph without the stage is told apart.
        let mut bare = spec.clone();
        bare.stages.retain(|s| s.kind != "audio.mute");
        assert!(!controls::graph_has_switch(&bare));
    }

    #[test]
    fn the_sending_profile_follows_the_graph_and_the_path() {
        let o = opts(&[("profile", "studio_64k")]);
        let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
        let wanted = sending_profile(&spec).unwrap();
        assert_eq!(wanted.name, "studio_64k");
        // Every real QUIC path carries it.
        assert_eq!(profile_for_path(wanted, 1150), Some(wanted));
        // A narrower one gets the best tier that fits.
        let limit = Profile::by_name("studio_48k").unwrap().max_datagram_bytes();
        let p = profile_for_path(wanted, limit).unwrap();
        assert_eq!(p.name, "studio_48k");
        // Below every Opus profile: keep sending what was asked.
        assert_eq!(profile_for_path(wanted, 100), None);
        let respec = with_profile(&spec, p);
        assert_eq!(sending_profile(&respec).unwrap().name, "studio_48k");
        let decoders = respec
            .stages
            .iter()
            .filter(|s| graph::DECODERS.contains(&s.kind.as_str()))
            .map(|s| s.params["profile"].value.as_str().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(decoders, ["studio_48k"; 4]);
        // The quality controller's best tier follows.
        let adapt = respec.stages.iter().find(|s| s.id == "adapt").unwrap();
        assert_eq!(adapt.params["top_tier"].value.as_str(), Some("studio_48k"));
        assert_eq!(
            sending_profile(&call_spec(&opts(&[]), "0123456789abcdef0123").unwrap())
                .unwrap()
                .name,
            "good"
        );
    }

    /// The echo canceller runs where the microphone hears a speaker: on for
    /// `--input mic --output speaker` unless `--set echo_cancel=false`, off
    /// for anything else (a WAV, a tone, a recording).
    #[test]
    fn echo_cancellation_is_on_for_a_microphone_with_a_speaker_only() {
        let enabled = |input: &str, output: &str, sets: &[(&str, &str)]| {
            let mut o = opts(sets);
            o.input = input.into();
            o.output = output.into();
            let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
            let aec = spec.stages.iter().find(|s| s.id == "aec").unwrap();
            assert_eq!(aec.kind, "audio.echo_cancel");
            aec.params["enabled"].value.as_str().unwrap().to_string()
        };
        assert_eq!(enabled("mic", "speaker", &[]), "true");
        assert_eq!(enabled("mic:USB", "speaker:USB", &[]), "true");
        assert_eq!(enabled("mic", "speaker:HDMI", &[]), "true");
        assert_eq!(
            enabled("mic", "speaker", &[("echo_cancel", "false")]),
            "false"
        );
        assert_eq!(enabled("mic", "null", &[]), "false");
        assert_eq!(enabled("mic", "/tmp/x.wav", &[]), "false");
        assert_eq!(enabled("tone", "speaker", &[]), "false");
        assert_eq!(enabled("builtin", "/tmp/x.wav", &[]), "false");
        // Asked for by hand where no speaker is heard: it finds no echo and
        // passes the input untouched (stages/tests/audio_echo_cancel.rs).
        assert_eq!(
            enabled("builtin", "/tmp/x.wav", &[("echo_cancel", "true")]),
            "true"
        );
    }

    /// The gain control runs on a microphone only, as the noise suppressor.
    #[test]
    fn gain_control_is_on_for_a_microphone_only() {
        let enabled = |input: &str, sets: &[(&str, &str)]| {
            let mut o = opts(sets);
            o.input = input.into();
            let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
            let agc = spec.stages.iter().find(|s| s.id == "agc").unwrap();
            assert_eq!(agc.kind, "audio.agc");
            agc.params["enabled"].value.as_str().unwrap().to_string()
        };
        assert_eq!(enabled("mic", &[]), "true");
        assert_eq!(enabled("mic:USB", &[]), "true");
        assert_eq!(enabled("mic", &[("agc", "false")]), "false");
        assert_eq!(enabled("talk.wav", &[]), "false");
        assert_eq!(enabled("tone", &[("agc", "true")]), "true");
    }

    /// `mic:NAME` and `speaker:NAME` pick the device stages' devices; `mic`
    /// and `speaker` the defaults; an empty name is refused.
    #[test]
    fn named_devices_reach_the_device_stages() {
        let device = |input: &str, output: &str| {
            let mut o = opts(&[]);
            o.input = input.into();
            o.output = output.into();
            let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
            let param = |id: &str, kind: &str| {
                let st = spec.stages.iter().find(|s| s.id == id).unwrap();
                assert_eq!(st.kind, kind);
                st.params["device"].value.as_str().unwrap().to_string()
            };
            (
                param("src", "audio.device_capture"),
                param("sink", "audio.device_playout"),
            )
        };
        assert_eq!(
            device("mic", "speaker"),
            ("default".into(), "default".into())
        );
        assert_eq!(
            device("mic:USB Headset", "speaker:hw:CARD=PCH,DEV=0"),
            ("USB Headset".into(), "hw:CARD=PCH,DEV=0".into())
        );
        for (input, output, flag) in [
            ("mic:", "speaker", "--input \"mic:\""),
            ("mic", "speaker: ", "--output \"speaker: \""),
        ] {
            let mut o = opts(&[]);
            o.input = input.into();
            o.output = output.into();
            let err = call_spec(&o, "0123456789abcdef0123")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(flag) && err.contains("wzp-client devices"),
                "{err}"
            );
        }
        // A WAV named like a device word stays a WAV.
        let mut o = opts(&[]);
        o.input = "microphone.wav".into();
        let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
        assert_eq!(
            spec.stages.iter().find(|s| s.id == "src").unwrap().kind,
            "audio.wav_source"
        );
    }

    /// The noise suppressor runs on a microphone: on for `--input mic`
    /// (any output) unless `--set noise_suppress=false`, off for a WAV, a
    /// tone or the built-in speech, which have no room in them.
    #[test]
    fn noise_suppression_is_on_for_a_microphone_only() {
        let enabled = |input: &str, output: &str, sets: &[(&str, &str)]| {
            let mut o = opts(sets);
            o.input = input.into();
            o.output = output.into();
            let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
            let ns = spec.stages.iter().find(|s| s.id == "ns").unwrap();
            assert_eq!(ns.kind, "audio.denoise");
            ns.params["enabled"].value.as_str().unwrap().to_string()
        };
        assert_eq!(enabled("mic", "speaker", &[]), "true");
        assert_eq!(enabled("mic", "/tmp/x.wav", &[]), "true");
        assert_eq!(
            enabled("mic", "speaker", &[("noise_suppress", "false")]),
            "false"
        );
        assert_eq!(enabled("tone", "speaker", &[]), "false");
        assert_eq!(enabled("builtin", "/tmp/x.wav", &[]), "false");
        assert_eq!(enabled("talk.wav", "null", &[]), "false");
        assert_eq!(
            enabled("talk.wav", "null", &[("noise_suppress", "true")]),
            "true"
        );
    }

    /// `--set jb_burst_hold=...` reaches every receive chain's jitter
    /// buffer; by default they hold at most the issue's 60 ms.
    #[test]
    fn the_burst_hold_is_one_setting_for_every_receive_chain() {
        let holds = |sets: &[(&str, &str)]| -> Vec<String> {
            let spec = call_spec(&opts(sets), "0123456789abcdef0123").unwrap();
            spec.stages
                .iter()
                .filter(|s| s.kind == "jitter.adaptive")
                .map(|s| {
                    s.params
                        .get("burst_hold")
                        .and_then(|p| p.value.as_str().map(str::to_string))
                        .unwrap_or_default()
                })
                .collect()
        };
        let default = holds(&[]);
        assert!(default.len() >= 2, "{default:?}");
        assert!(default.iter().all(|h| h == "60ms"), "{default:?}");
        let set = holds(&[("jb_burst_hold", "80ms")]);
        assert_eq!(set.len(), default.len());
        assert!(set.iter().all(|h| h == "80ms"), "{set:?}");
    }

    /// The one sender id cell reaches packetize (which fills it), open
    /// (which drops it) and adapt (which reads the reports about it).
    #[test]
    fn the_local_sender_cell_reaches_packetize_open_and_adapt() {
        let mut spec = call_spec(&opts(&[]), "0123456789abcdef0123").unwrap();
        assert!(graph::use_local_sender(&mut spec, LOCAL_SENDER));
        let param = |id: &str, k: &str| {
            let st = spec.stages.iter().find(|s| s.id == id).unwrap();
            st.params
                .get(k)
                .and_then(|p| p.value.as_str().map(str::to_string))
        };
        assert_eq!(
            param("pack", "publish_sender").as_deref(),
            Some(LOCAL_SENDER)
        );
        assert_eq!(param("open", "local_sender").as_deref(), Some(LOCAL_SENDER));
        assert_eq!(
            param("adapt", "local_sender").as_deref(),
            Some(LOCAL_SENDER)
        );
        // And the graph compiles with it.
        let wakers = Wakers::default();
        let (_feed, ingress_port) =
            quic::ingress_channel(64, wakers.clocked.clone(), Instant::now());
        let (_peers, _pump, egress_port) = quic::egress_channel(64);
        let mut res = Resources::new();
        res.insert("quic.ingress", Arc::new(ingress_port));
        res.insert("quic.egress", Arc::new(egress_port));
        res.insert(LOCAL_SENDER, Arc::new(wzp_stages::wire::LocalSender::new()));
        compile_with(
            &spec,
            &wzp_stages::registry(),
            &res,
            &Existing::default(),
            wakers,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Switching profile on a running call graph replaces the encoder (and
    /// the decoders) and keeps the QUIC stages, whose rings cannot be made
    /// twice.
    #[test]
    fn a_profile_switch_reconfigures_the_running_call_graph() {
        let o = opts(&[]);
        let spec = call_spec(&o, "0123456789abcdef0123").unwrap();
        let wakers = Wakers::default();
        let (_feed, ingress_port) =
            quic::ingress_channel(64, wakers.clocked.clone(), Instant::now());
        let (_peers, _pump, egress_port) = quic::egress_channel(64);
        let mut res = Resources::new();
        res.insert("quic.ingress", Arc::new(ingress_port));
        res.insert("quic.egress", Arc::new(egress_port));
        let registry = wzp_stages::registry();
        let compiled = compile_with(&spec, &registry, &res, &Existing::default(), wakers).unwrap();
        let mut graph = Graph::new(compiled);
        for _ in 0..5 {
            graph.step();
        }
        let respec = with_profile(&spec, Profile::by_name("studio_32k").unwrap());
        graph
            .reconfigure(&respec, &registry, &res)
            .unwrap_or_else(|e| panic!("{e}"));
        let before = graph.collected_total();
        for _ in 0..5 {
            graph.step();
        }
        // The encoder and four decoders went back to the control side.
        assert_eq!(graph.collected_total() - before, 1, "one update returned");
        let stats = graph.stats();
        let enc = stats.stage("enc").expect("enc stage");
        // A new encoder: its count started at the switch (an encoder kept
        // from before would show all ten frames).
        assert_eq!(enc.counter("frames_encoded"), Some(5));
        let src = stats.stage("src").expect("src stage");
        assert_eq!(src.kind, "audio.tone_source");
        // Switching to the same profile again changes nothing.
        graph.reconfigure(&respec, &registry, &res).unwrap();
    }
}
