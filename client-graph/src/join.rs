//! `wzp-client join`: the client control plane. Builds the call graph
//! (graphs/call.toml), connects to the relay over QUIC, joins the room with a
//! signed Join, moves datagrams between the connection and the graph's rings,
//! and reconnects by itself when the relay goes away.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::prelude::*;
use wzp_engine::spec::RawParam;
use wzp_engine::stats::Report;
use wzp_proto::identity::Identity;
use wzp_proto::join::Join;
use wzp_proto::signal::{decode_message, Decoded, SignalMessage};
use wzp_proto::{Seed, TlsFingerprint};
use wzp_relay::join::read_frame;
use wzp_stages::codec::profile::{Profile, PROFILES};
use wzp_stages::net::quic;

/// The call graph that ships, built into the binary.
pub const CALL_GRAPH: &str = include_str!("../../graphs/call.toml");

/// Everything `join` needs.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    pub relay: String,
    pub room: String,
    pub room_secret: Option<String>,
    pub input: String,
    pub output: String,
    pub duration: Option<Duration>,
    pub alias: Option<String>,
    pub identity: PathBuf,
    pub relay_fingerprint: Option<TlsFingerprint>,
    pub known_relays: PathBuf,
    pub graph: Option<PathBuf>,
    pub sets: BTreeMap<String, String>,
    pub realtime: bool,
    /// Set to end the call (signal handlers, `demo`).
    pub stop: Arc<AtomicBool>,
    /// Prefix for progress lines on stdout (e.g. `[alice] `).
    pub label: String,
}

/// What a call leaves behind.
pub struct CallOutcome {
    pub report: Report,
    /// Times the client was admitted to the room (1 + reconnections).
    pub joins: u32,
}

/// Default paths under `~/.wzp`.
pub fn wzp_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".wzp")
}

/// The `known_relays` file: one `ADDRESS FINGERPRINT` per line, `#` comments.
pub struct KnownRelays {
    path: PathBuf,
    entries: Vec<(String, TlsFingerprint)>,
}

impl KnownRelays {
    pub fn load(path: &Path) -> Result<KnownRelays> {
        let mut entries = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let mut parts = line.split_whitespace();
                    let (Some(addr), Some(fp)) = (parts.next(), parts.next()) else {
                        bail!(
                            "{}:{}: expected `ADDRESS FINGERPRINT`",
                            path.display(),
                            n + 1
                        );
                    };
                    let fp: TlsFingerprint = fp.parse().map_err(|e| {
                        anyhow!("{}:{}: bad fingerprint: {e}", path.display(), n + 1)
                    })?;
                    entries.push((addr.to_string(), fp));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        Ok(KnownRelays {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn get(&self, addr: &str) -> Option<TlsFingerprint> {
        self.entries
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, f)| *f)
    }

    /// Records (or replaces) `addr`'s fingerprint and writes the file.
    pub fn set(&mut self, addr: &str, fp: TlsFingerprint) -> Result<()> {
        self.entries.retain(|(a, _)| a != addr);
        self.entries.push((addr.to_string(), fp));
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut text = String::from("# wzp relays this client trusts: ADDRESS TLS-FINGERPRINT\n");
        for (a, f) in &self.entries {
            text.push_str(&format!("{a} {f}\n"));
        }
        std::fs::write(&self.path, text).with_context(|| format!("writing {}", self.path.display()))
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn set_stage(
    spec: &mut GraphSpec,
    id: &str,
    kind: &str,
    params: &[(&str, toml::Value)],
) -> Result<()> {
    let st = spec
        .stages
        .iter_mut()
        .find(|s| s.id == id)
        .ok_or_else(|| anyhow!("the call graph has no `{id}` stage"))?;
    st.kind = kind.to_string();
    st.params = params
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                RawParam {
                    value: v.clone(),
                    loc: Default::default(),
                },
            )
        })
        .collect();
    Ok(())
}

/// The call graph for these options, with `src` and `sink` matching
/// `--input` and `--output`.
pub fn call_spec(opts: &JoinOptions, room_secret: &str) -> Result<GraphSpec> {
    let mut vars = BTreeMap::new();
    vars.insert("room".to_string(), opts.room.clone());
    vars.insert("room_secret".to_string(), room_secret.to_string());
    let input = opts.input.as_str();
    let output = opts.output.as_str();
    if input == "tone" || input.starts_with("tone:") || input == "mic" {
        vars.insert("input_rate".into(), "48000".into());
    }
    if output == "speaker" {
        vars.insert("output_rate".into(), "48000".into());
    }
    if !matches!(output, "null" | "speaker") {
        vars.insert("output".into(), output.to_string());
    }
    if !(input == "tone" || input.starts_with("tone:") || input == "mic") {
        let path = if input == "builtin" {
            "builtin:speech"
        } else {
            input
        };
        vars.insert("input".into(), path.to_string());
    }
    vars.extend(opts.sets.clone());
    let mut spec = match &opts.graph {
        Some(path) => GraphSpec::load(path, &vars).map_err(|e| anyhow!("{e}"))?,
        None => GraphSpec::parse(CALL_GRAPH, "graphs/call.toml (built in)", &vars)
            .map_err(|e| anyhow!("{e}"))?,
    };
    let v = |x: &str| toml::Value::String(x.to_string());
    if let Some(freq) = input
        .strip_prefix("tone:")
        .or((input == "tone").then_some("440"))
    {
        let f: f64 = freq
            .parse()
            .map_err(|_| anyhow!("--input {input}: expected tone or tone:FREQ_HZ"))?;
        set_stage(
            &mut spec,
            "src",
            "audio.tone_source",
            &[
                ("freq", toml::Value::Float(f)),
                ("level_db", toml::Value::Float(-12.0)),
                ("rate", toml::Value::Integer(48_000)),
            ],
        )?;
    } else if input == "mic" {
        set_stage(
            &mut spec,
            "src",
            "audio.device_capture",
            &[("rate", toml::Value::Integer(48_000))],
        )?;
    }
    match output {
        "null" => set_stage(
            &mut spec,
            "sink",
            "audio.null_sink",
            &[("rate", v(vars_get(&vars, "output_rate", "16000")))],
        )?,
        "speaker" => set_stage(
            &mut spec,
            "sink",
            "audio.device_playout",
            &[("rate", toml::Value::Integer(48_000))],
        )?,
        _ => {}
    }
    Ok(spec)
}

/// The profile the call graph's Opus encoder sends with (`None` when the
/// graph has no Opus encoder, or names no known profile).
pub fn sending_profile(spec: &GraphSpec) -> Option<&'static Profile> {
    let enc = spec.stages.iter().find(|s| s.kind == OPUS_ENCODE)?;
    let name = match enc.params.get("profile") {
        Some(p) => p.value.as_str()?,
        None => "good",
    };
    Profile::by_name(name).filter(|p| p.is_opus())
}

/// `spec` with every Opus encoder and decoder set to `profile`.
pub fn with_profile(spec: &GraphSpec, profile: &Profile) -> GraphSpec {
    let mut spec = spec.clone();
    for st in spec
        .stages
        .iter_mut()
        .filter(|s| s.kind == OPUS_ENCODE || s.kind == "codec.opus_decode")
    {
        st.params.insert(
            "profile".into(),
            RawParam {
                value: toml::Value::String(profile.name.into()),
                loc: Default::default(),
            },
        );
    }
    spec
}

/// The profile to send with on a path that takes `limit`-byte datagrams:
/// `wanted` when it fits, else the best Opus profile that does (studio
/// tiers only where they fit). `None`: keep `wanted` (nothing better fits).
pub fn profile_for_path(wanted: &'static Profile, limit: usize) -> Option<&'static Profile> {
    wanted.fitting(limit).filter(|p| p.is_opus()).or_else(|| {
        PROFILES
            .iter()
            .filter(|p| p.is_opus() && p.max_datagram_bytes() <= limit)
            .max_by_key(|p| p.bitrate)
    })
}

const OPUS_ENCODE: &str = "codec.opus_encode";

fn vars_get<'a>(vars: &'a BTreeMap<String, String>, k: &str, d: &'a str) -> &'a str {
    vars.get(k).map(String::as_str).unwrap_or(d)
}

/// The secret the room key comes from. Without one, a secret derived from
/// the room name is used, and anyone who knows the name can listen: say so.
pub fn room_secret(opts: &JoinOptions) -> String {
    match &opts.room_secret {
        Some(s) => s.clone(),
        None => {
            eprintln!(
                "{}warning: no --room-secret; the media key comes from the room name, so anyone who knows `{}` can listen",
                opts.label, opts.room
            );
            format!("wzp-open-room:{}", opts.room)
        }
    }
}

/// How the relay's certificate is checked.
enum Trust {
    Pinned(TlsFingerprint),
    FirstUse,
}

/// Runs a call until `--duration`, the stop flag, or a fatal error.
pub fn run_join(opts: JoinOptions) -> Result<CallOutcome> {
    let seed = Seed::load_or_create(&opts.identity)
        .map_err(|e| anyhow!("identity {}: {e}", opts.identity.display()))?;
    let identity = seed.identity();
    let addr: SocketAddr = opts
        .relay
        .to_socket_addrs()
        .with_context(|| format!("--relay {}: not an address", opts.relay))?
        .next()
        .ok_or_else(|| anyhow!("--relay {}: resolves to no address", opts.relay))?;
    let mut known = KnownRelays::load(&opts.known_relays)?;
    let trust = match (opts.relay_fingerprint, known.get(&opts.relay)) {
        (Some(fp), _) => {
            known.set(&opts.relay, fp)?;
            Trust::Pinned(fp)
        }
        (None, Some(fp)) => Trust::Pinned(fp),
        (None, None) => Trust::FirstUse,
    };

    let secret = room_secret(&opts);
    let spec = call_spec(&opts, &secret)?;
    let wakers = Wakers::default();
    let epoch = Instant::now();
    let (feed, ingress_port) = quic::ingress_channel(1024, wakers.clocked.clone(), epoch);
    let (peers, pump, egress_port) = quic::egress_channel(1024);
    let mut res = Resources::new();
    res.insert("quic.ingress", Arc::new(ingress_port));
    res.insert("quic.egress", Arc::new(egress_port));
    let registry = wzp_stages::registry();
    let compiled = compile_with(&spec, &registry, &res, &Existing::default(), wakers)
        .map_err(|e| anyhow!("{e}"))?;
    let mut graph = Graph::new(compiled);
    let wanted = sending_profile(&spec);
    let mut sending = wanted;
    let path_limit = Arc::new(AtomicUsize::new(0));
    let pump_stop = Arc::new(AtomicBool::new(false));
    let pump_thread = pump
        .spawn(pump_stop.clone())
        .context("starting the egress thread")?;
    graph
        .start(RunOptions {
            driver: ClockDriver::Timer,
            duration: opts.duration,
            realtime: opts.realtime,
            ..Default::default()
        })
        .map_err(|e| anyhow!("{e}"))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    let graph_done = Arc::new(AtomicBool::new(false));
    let net = {
        let opts = opts.clone();
        let graph_done = graph_done.clone();
        let path_limit = path_limit.clone();
        rt.spawn(async move {
            connection_loop(
                &opts, &identity, addr, trust, &mut known, feed, peers, graph_done, path_limit,
            )
            .await
        })
    };
    // Wait for the graph to end (duration) or a stop request.
    while !graph.is_finished() && !opts.stop.load(Ordering::Relaxed) {
        graph.wait(Duration::from_millis(50));
        if net.is_finished() {
            break;
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
    let stats = graph.stats();
    graph.stop();
    let report = stats.report(&stats.snapshot(), None);
    drop(graph);
    pump_stop.store(true, Ordering::Relaxed);
    let _ = pump_thread.join();
    rt.shutdown_timeout(Duration::from_millis(500));
    Ok(CallOutcome {
        report,
        joins: joins?,
    })
}

#[allow(clippy::too_many_arguments)]
async fn connection_loop(
    opts: &JoinOptions,
    identity: &Identity,
    addr: SocketAddr,
    mut trust: Trust,
    known: &mut KnownRelays,
    feed: Arc<quic::IngressFeed>,
    peers: quic::EgressPeers,
    done: Arc<AtomicBool>,
    path_limit: Arc<AtomicUsize>,
) -> Result<u32> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("a bind address");
    let endpoint = quic::client_endpoint(bind)?;
    let sni = wzp_proto::room_hash(&opts.room);
    let mut joins = 0u32;
    let mut lost_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let finished = || done.load(Ordering::Relaxed) || opts.stop.load(Ordering::Relaxed);
    while !finished() {
        let seen = Arc::new(Mutex::new(None));
        let mut cfg = match trust {
            Trust::Pinned(fp) => quic::client_config(fp)?,
            Trust::FirstUse => quic::client_config_first_use(seen.clone())?,
        };
        // A call notices a silent relay within seconds, not the relay's 30 s
        // idle timeout (a restarted relay says so at once with a stateless
        // reset; this covers one that is simply gone).
        let mut transport = quic::transport_config();
        transport.keep_alive_interval(Some(Duration::from_millis(500)));
        transport.max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(3))
                .expect("3 s is a valid idle timeout"),
        ));
        cfg.transport_config(Arc::new(transport));
        let conn = match endpoint.connect_with(cfg, addr, &sni) {
            Ok(c) => tokio::time::timeout(Duration::from_secs(3), c).await,
            Err(e) => bail!("cannot connect to {addr}: {e}"),
        };
        let conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let text = e.to_string();
                if let (Trust::Pinned(fp), true) = (&trust, text.contains("is not the pinned")) {
                    bail!(
                        "the relay at {} presented a different certificate than the one pinned ({fp}): {text}\n  \
                         if the relay's identity changed on purpose, accept it with --relay-fingerprint NEW_FINGERPRINT \
                         (the relay prints it at start), or remove its line from {}",
                        opts.relay,
                        known.path.display()
                    );
                }
                tracing::debug!("connecting to {addr}: {text}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let relay_fp = match trust {
            Trust::Pinned(fp) => fp,
            Trust::FirstUse => {
                let fp = seen
                    .lock()
                    .ok()
                    .and_then(|s| *s)
                    .ok_or_else(|| anyhow!("the relay showed no certificate"))?;
                known.set(&opts.relay, fp)?;
                println!(
                    "{}trusting relay {} on first use: {fp} (recorded in {})",
                    opts.label,
                    opts.relay,
                    known.path.display()
                );
                trust = Trust::Pinned(fp);
                fp
            }
        };
        backoff = Duration::from_millis(100);
        let (mut send, mut recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let mut frames = wzp_proto::signal::encode_frame(&SignalMessage::hello(Some(format!(
            "wzp-client {}",
            env!("CARGO_PKG_VERSION")
        ))))?;
        frames.extend(
            Join::signed(identity, &sni, &relay_fp, opts.alias.clone(), now_ms()).to_frame(),
        );
        if send.write_all(&frames).await.is_err() {
            continue;
        }
        let me = identity.fingerprint();
        let mut admitted = false;
        let stats = Arc::new(quic::PeerIoStats::default());
        let mut pump_in: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            tokio::select! {
                frame = read_frame(&mut recv, 1 << 20) => {
                    let body = match frame {
                        Ok(Some(b)) => b,
                        _ => break,
                    };
                    let Ok(Decoded::Message(msg)) = decode_message(&body) else { continue };
                    if let SignalMessage::RoomUpdate { participants, count, .. } = msg {
                        if !admitted && participants.iter().any(|p| p.fingerprint == me) {
                            admitted = true;
                            joins += 1;
                            peers.add(0, quic::EgressPeer { conn: conn.clone(), stats: stats.clone(), observer: None });
                            let c = conn.clone();
                            let f = feed.clone();
                            let s = stats.clone();
                            pump_in = Some(tokio::spawn(async move { let _ = quic::pump_datagrams_in(c, 0, f, s, |_| {}).await; }));
                            let limit = quic::max_datagram_size(&conn).unwrap_or(0);
                            tracing::debug!(limit, "path datagram limit");
                            path_limit.store(limit, Ordering::Relaxed);
                            match lost_at.take() {
                                Some(t) => println!("{}rejoined room {} after {} ms", opts.label, opts.room, t.elapsed().as_millis()),
                                None => println!("{}joined room {} via {} ({} in the room)", opts.label, opts.room, opts.relay, count),
                            }
                        } else {
                            let names: Vec<String> = participants.iter().map(|p| p.alias.clone().unwrap_or_else(|| p.fingerprint.to_string())).collect();
                            println!("{}room {}: {} ({})", opts.label, opts.room, count, names.join(", "));
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if finished() { break; }
                }
            }
        }
        peers.remove(0);
        if let Some(h) = pump_in {
            h.abort();
        }
        if finished() {
            conn.close(0u32.into(), b"bye");
            break;
        }
        if let Some(reason) = conn.close_reason() {
            if let quinn::ConnectionError::ApplicationClosed(c) = &reason {
                let code = c.error_code.into_inner();
                if (0x10..=0x15).contains(&code) && !admitted {
                    bail!(
                        "the relay refused to let us into `{}`: {}",
                        opts.room,
                        String::from_utf8_lossy(&c.reason)
                    );
                }
            }
            println!(
                "{}connection to {} lost ({reason}); reconnecting",
                opts.label, opts.relay
            );
        }
        lost_at.get_or_insert_with(Instant::now);
    }
    endpoint.wait_idle().await;
    Ok(joins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(sets: &[(&str, &str)]) -> JoinOptions {
        JoinOptions {
            relay: "127.0.0.1:1".into(),
            room: "r".into(),
            room_secret: Some("0123456789abcdef0123".into()),
            input: "tone".into(),
            output: "null".into(),
            duration: None,
            alias: None,
            identity: PathBuf::from("/nonexistent"),
            relay_fingerprint: None,
            known_relays: PathBuf::from("/nonexistent"),
            graph: None,
            sets: sets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            realtime: false,
            stop: Arc::new(AtomicBool::new(false)),
            label: String::new(),
        }
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
            .filter(|s| s.kind == "codec.opus_decode")
            .map(|s| s.params["profile"].value.as_str().unwrap())
            .collect::<Vec<_>>();
        assert_eq!(decoders, ["studio_48k"; 4]);
        assert_eq!(
            sending_profile(&call_spec(&opts(&[]), "0123456789abcdef0123").unwrap())
                .unwrap()
                .name,
            "good"
        );
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
