//! `wzp-bench mouth-to-ear`: the lag from one client's source to another
//! client's sink through a real relay process, real QUIC and the full call
//! graph (`graphs/call.toml`: Opus, FEC, seal, jitter buffer, decode, mix).
//!
//! Both call graphs run in this process, wired as `wzp-client join` wires
//! them (`quic::ingress_channel` / `quic::egress_channel`, a signed Join,
//! the datagram pumps), each on its own timer clock. Both join the room
//! first and are started back to back, and each graph's start instant is
//! taken from `Graph::elapsed`, so sample `n` of the sender's source and
//! sample `m` of the receiver's recording have known wall times: the
//! sender's source is silence with a 20 ms chirp every second, and each
//! chirp is found in the recording by normalised cross-correlation. The
//! lag is graph-to-graph: a real capture device adds its buffer before the
//! source and a playout device its buffer after the sink.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::prelude::*;
use wzp_engine::stats::Report;
use wzp_stages::net::quic;

use crate::relay_load::join_relay;
use crate::relay_proc::{self, RelayProc, TempDir};

/// The call graph that ships.
pub const CALL_GRAPH: &str = include_str!("../../graphs/call.toml");

const RATE: u32 = 48_000;
/// Chirp length and sweep.
const CHIRP_LEN: usize = 960;
const CHIRP_F0: f32 = 300.0;
const CHIRP_F1: f32 = 3_000.0;
/// Where the chirp sits in each second of the sender's source.
const CHIRP_AT: usize = 24_000;
/// A chirp counts as found above this normalised correlation.
const MIN_CORRELATION: f32 = 0.5;
/// Chirps before this second are reported but not in the steady figure:
/// the jitter buffer's target may rise up to `initial_delay` during its
/// first 50 arrivals (1 s) when the first frames show jitter.
const WARMUP_CHIRPS: usize = 2;

/// What one run measures.
#[derive(Clone, Debug)]
pub struct M2eOptions {
    pub relay_bin: Option<PathBuf>,
    /// Extra `KEY=VALUE` lines for the relay's config file.
    pub relay_config: Vec<String>,
    /// Graph time per setting.
    pub duration: Duration,
    /// Each entry: a label and the `--set` values of one call-graph setting.
    pub settings: Vec<(String, BTreeMap<String, String>)>,
    /// Keep the recordings in this folder.
    pub keep: Option<PathBuf>,
    /// The receiver's clock starts this long after the sender's.
    pub phase: Duration,
    pub progress: bool,
    /// The two graphs connect straight to each other (one QUIC connection,
    /// as a direct call's direct path) instead of through the relay.
    pub direct: bool,
}

/// The settings measured when none are given.
pub fn default_settings() -> Vec<(String, BTreeMap<String, String>)> {
    ["", "lookahead=1", "jb_min=40ms,jb_initial=60ms,lookahead=1"]
        .iter()
        .map(|s| parse_setting(s).expect("the built-in settings parse"))
        .collect()
}

/// `name=value,name=value` into a label and the `--set` map.
pub fn parse_setting(s: &str) -> Result<(String, BTreeMap<String, String>)> {
    let mut m = BTreeMap::new();
    for kv in s.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--setting {s:?}: `{kv}` is not NAME=VALUE"))?;
        if k.is_empty() {
            bail!("--setting {s:?}: empty name in `{kv}`");
        }
        m.insert(k.to_string(), v.to_string());
    }
    let label = if m.is_empty() {
        "graphs/call.toml defaults".to_string()
    } else {
        s.to_string()
    };
    Ok((label, m))
}

/// One chirp's fate.
#[derive(Clone, Debug)]
pub struct Arrival {
    /// Second of the sender's source the chirp was in.
    pub index: usize,
    pub lag: Option<Duration>,
    pub correlation: f32,
}

/// The figures of one setting.
#[derive(Clone, Debug)]
pub struct M2eResult {
    pub label: String,
    pub declared_send: Duration,
    pub declared_receive: Duration,
    pub arrivals: Vec<Arrival>,
    /// How far the two graphs' start instants were apart.
    pub start_skew: Duration,
    /// The receiver's jitter buffer after the run.
    pub jb_target_ms: i64,
    pub jb_current_ms: i64,
    pub concealed: u64,
    pub warnings: Vec<String>,
}

impl M2eResult {
    fn steady(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .arrivals
            .iter()
            .filter(|a| a.index >= WARMUP_CHIRPS)
            .filter_map(|a| a.lag)
            .collect();
        v.sort();
        v
    }

    pub fn median(&self) -> Option<Duration> {
        let v = self.steady();
        v.get(v.len() / 2).copied()
    }

    pub fn min_max(&self) -> Option<(Duration, Duration)> {
        let v = self.steady();
        Some((*v.first()?, *v.last()?))
    }
}

/// The chirp: a Hann-windowed linear sweep.
pub fn chirp() -> Vec<f32> {
    let n = CHIRP_LEN as f32;
    let dur = n / RATE as f32;
    (0..CHIRP_LEN)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            let phase = 2.0
                * std::f32::consts::PI
                * (CHIRP_F0 * t + (CHIRP_F1 - CHIRP_F0) * t * t / (2.0 * dur));
            let w = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / (n - 1.0)).cos();
            0.5 * w * phase.sin()
        })
        .collect()
}

fn write_wav(path: &Path, samples: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    for s in samples {
        w.write_sample(*s)?;
    }
    w.finalize()?;
    Ok(())
}

fn read_wav(path: &Path) -> Result<Vec<f32>> {
    let mut r =
        hound::WavReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let spec = r.spec();
    if spec.channels != 1 || spec.sample_rate != RATE {
        bail!(
            "{}: expected mono {RATE} Hz, found {} channels at {} Hz",
            path.display(),
            spec.channels,
            spec.sample_rate
        );
    }
    match spec.sample_format {
        hound::SampleFormat::Float => Ok(r.samples::<f32>().collect::<Result<_, _>>()?),
        hound::SampleFormat::Int => {
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            Ok(r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?)
        }
    }
}

/// The best normalised correlation of `template` in `signal` at offsets
/// `from..to` (clamped to the signal): `(offset, correlation)`.
pub fn best_match(signal: &[f32], template: &[f32], from: i64, to: i64) -> Option<(i64, f32)> {
    let tn: f32 = template.iter().map(|x| x * x).sum::<f32>().sqrt();
    let last = signal.len() as i64 - template.len() as i64;
    let (from, to) = (from.max(0), to.min(last));
    let mut best: Option<(i64, f32)> = None;
    for off in from..=to {
        let w = &signal[off as usize..off as usize + template.len()];
        let (mut dot, mut e) = (0.0f32, 0.0f32);
        for (a, b) in w.iter().zip(template) {
            dot += a * b;
            e += a * a;
        }
        if e <= 1e-12 {
            continue;
        }
        let c = dot / (e.sqrt() * tn);
        if best.is_none_or(|(_, bc)| c > bc) {
            best = Some((off, c));
        }
    }
    best
}

/// Finds every chirp the sender played in the receiver's recording.
/// `offset_samples` = (sender start - receiver start) in samples: sample
/// `n` of the sender's source has the wall time of sample `n + offset` of
/// the recording.
pub fn find_arrivals(recording: &[f32], seconds: usize, offset_samples: i64) -> Vec<Arrival> {
    let tpl = chirp();
    (0..seconds)
        .map(|k| {
            let sent = (k * RATE as usize + CHIRP_AT) as i64 + offset_samples;
            // A little before "now" to catch an alignment error, then up to
            // half a second late (chirps are a second apart).
            match best_match(recording, &tpl, sent - 480, sent + RATE as i64 / 2) {
                Some((at, c)) if c >= MIN_CORRELATION => Arrival {
                    index: k,
                    lag: u64::try_from(at - sent)
                        .ok()
                        .map(|s| Duration::from_nanos(s * 1_000_000_000 / u64::from(RATE))),
                    correlation: c,
                },
                Some((_, c)) => Arrival {
                    index: k,
                    lag: None,
                    correlation: c,
                },
                None => Arrival {
                    index: k,
                    lag: None,
                    correlation: 0.0,
                },
            }
        })
        .collect()
}

/// The call graph for one client, with the I/O rings it needs.
struct Client {
    graph: Graph,
    declared_send: Duration,
    declared_receive: Duration,
    feed: Arc<quic::IngressFeed>,
    peers: quic::EgressPeers,
    pump: Option<std::thread::JoinHandle<()>>,
    pump_stop: Arc<AtomicBool>,
}

fn build_client(
    room: &str,
    input: &Path,
    output: &Path,
    sets: &BTreeMap<String, String>,
) -> Result<Client> {
    let mut vars = BTreeMap::new();
    vars.insert("room".to_string(), room.to_string());
    vars.insert("room_secret".into(), "wzp-bench mouth-to-ear".into());
    vars.insert("input".into(), input.display().to_string());
    vars.insert("output".into(), output.display().to_string());
    vars.insert("input_rate".into(), RATE.to_string());
    vars.insert("output_rate".into(), RATE.to_string());
    // A --setting the graph has no placeholder for would measure the
    // defaults under its label.
    GraphSpec::check_var_names(
        CALL_GRAPH,
        "graphs/call.toml (built in)",
        sets.keys().map(String::as_str),
    )
    .map_err(|e| anyhow!("--setting: {e}"))?;
    vars.extend(sets.clone());
    let spec = GraphSpec::parse(CALL_GRAPH, "graphs/call.toml (built in)", &vars)
        .map_err(|e| anyhow!("{e}"))?;
    let wakers = Wakers::default();
    let (feed, ingress) = quic::ingress_channel(1024, wakers.clocked.clone(), Instant::now());
    let (peers, pump, egress) = quic::egress_channel(1024);
    let mut res = Resources::new();
    res.insert("quic.ingress", Arc::new(ingress));
    res.insert("quic.egress", Arc::new(egress));
    let compiled = compile_with(
        &spec,
        &wzp_stages::registry(),
        &res,
        &Existing::default(),
        wakers,
    )
    .map_err(|e| anyhow!("{e}"))?;
    let path_total = |first: &str, last: &str| {
        compiled
            .paths
            .iter()
            .filter(|p| p.stages.first().map(String::as_str) == Some(first))
            .filter(|p| p.stages.last().map(String::as_str) == Some(last))
            .map(|p| p.total)
            .max()
    };
    let declared_send =
        path_total("src", "tx").ok_or_else(|| anyhow!("the call graph has no src -> tx path"))?;
    let declared_receive =
        path_total("rx", "sink").ok_or_else(|| anyhow!("the call graph has no rx -> sink path"))?;
    let graph = Graph::new(compiled);
    let pump_stop = Arc::new(AtomicBool::new(false));
    let pump = pump
        .spawn(pump_stop.clone())
        .context("starting an egress thread")?;
    Ok(Client {
        graph,
        declared_send,
        declared_receive,
        feed,
        peers,
        pump: Some(pump),
        pump_stop,
    })
}

impl Client {
    fn finish(mut self) -> Report {
        let stats = self.graph.stats();
        self.graph.stop();
        let report = stats.report(&stats.snapshot(), None);
        // Dropping the graph closes the WAV sink.
        drop(self.graph);
        self.pump_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
        report
    }
}

/// Joins `room` and wires the connection to the client's rings.
async fn connect(
    relay: &RelayProc,
    room: &str,
    index: usize,
    c: &Client,
) -> Result<quinn::Connection> {
    let q = join_relay(relay.quic, relay.fingerprint, room, index).await?;
    let conn = q.conn.clone();
    Ok(wire(c, conn, q))
}

/// Sends `c`'s packets on `conn` and feeds it what arrives; `keep` (the
/// endpoint) lives as long as the connection.
fn wire(c: &Client, conn: quinn::Connection, keep: impl Send + 'static) -> quinn::Connection {
    let stats = Arc::new(quic::PeerIoStats::default());
    c.peers.add(
        0,
        quic::EgressPeer {
            conn: conn.clone(),
            stats: stats.clone(),
            observer: None,
        },
    );
    let (pumped, feed) = (conn.clone(), c.feed.clone());
    tokio::spawn(async move {
        let _keep = keep;
        let _ = quic::pump_datagrams_in(pumped, 0, feed, stats, |_| {}).await;
    });
    conn
}

/// Connects two clients straight to each other: one QUIC connection with a
/// direct path's configs (`quic::direct_server_config`,
/// `quic::direct_client_config`), no relay between.
async fn connect_direct(a: &Client, b: &Client) -> Result<(quinn::Connection, quinn::Connection)> {
    let seed = wzp_proto::identity::Seed::generate().map_err(|e| anyhow!("{e}"))?;
    let cert =
        wzp_proto::identity::RelayCertificate::from_seed(&seed).map_err(|e| anyhow!("{e}"))?;
    let server = quinn::Endpoint::server(
        quic::direct_server_config(&cert)?,
        "127.0.0.1:0".parse().expect("an address"),
    )?;
    let to = server.local_addr()?;
    let client = quic::client_endpoint("127.0.0.1:0".parse().expect("an address"))?;
    let dial = client.connect_with(quic::direct_client_config()?, to, "call-m2e")?;
    let accept = async {
        server
            .accept()
            .await
            .ok_or_else(|| anyhow!("the endpoint closed"))?
            .await
            .map_err(anyhow::Error::from)
    };
    let (accepted, dialed) = tokio::join!(accept, dial);
    Ok((wire(a, accepted?, server), wire(b, dialed?, client)))
}

fn start_instant(g: &Graph) -> Instant {
    Instant::now() - g.elapsed()
}

/// Runs every setting through one relay.
pub fn run(o: &M2eOptions) -> Result<Vec<M2eResult>> {
    if o.phase >= Duration::from_millis(20) {
        bail!("--phase-ms: use 0..20 (a phase is less than one 20 ms quantum)");
    }
    if o.duration < Duration::from_secs(WARMUP_CHIRPS as u64 + 2)
        || o.duration > Duration::from_secs(300)
    {
        bail!("--duration: use {}..=300 (seconds)", WARMUP_CHIRPS + 2);
    }
    let dir = TempDir::new("m2e")?;
    let relay = if o.direct {
        None
    } else {
        let bin = relay_proc::find_relay_bin(o.relay_bin.as_deref())?;
        let mut config = "# written by wzp-bench mouth-to-ear\n".to_string();
        crate::relay_proc::append_config(&mut config, &o.relay_config)?;
        Some(RelayProc::start(&bin, &dir.0, &config)?)
    };
    let out_dir = o.keep.clone().unwrap_or_else(|| dir.0.clone());
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let chirp_wav = dir.0.join("chirp.wav");
    let mut second = vec![0.0f32; RATE as usize];
    second[CHIRP_AT..CHIRP_AT + CHIRP_LEN].copy_from_slice(&chirp());
    write_wav(&chirp_wav, &second)?;
    let silence_wav = dir.0.join("silence.wav");
    write_wav(&silence_wav, &vec![0.0f32; RATE as usize])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut results = Vec::new();
    for (n, (label, sets)) in o.settings.iter().enumerate() {
        if o.progress {
            eprintln!(
                "[mouth-to-ear] {label}: {} s {}",
                o.duration.as_secs(),
                relay
                    .as_ref()
                    .map_or("on a direct path".to_string(), |r| format!(
                        "through {}",
                        r.quic
                    ))
            );
        }
        let room = format!("m2e-{n}-{}", std::process::id());
        let rx_wav = out_dir.join(format!("m2e-{n}-received.wav"));
        let tx = build_client(
            &room,
            &chirp_wav,
            &dir.0.join(format!("m2e-{n}-sender-heard.wav")),
            sets,
        )?;
        let rx = build_client(&room, &silence_wav, &rx_wav, sets)?;
        let conns = rt.block_on(async {
            match &relay {
                Some(relay) => {
                    let a = connect(relay, &room, 2 * n, &rx).await?;
                    let b = connect(relay, &room, 2 * n + 1, &tx).await?;
                    anyhow::Ok((a, b))
                }
                None => connect_direct(&rx, &tx).await,
            }
        })?;
        let mut tx = tx;
        let mut rx = rx;
        let opts = RunOptions {
            driver: ClockDriver::Timer,
            duration: Some(o.duration),
            realtime: true,
            drain_cycles: 0,
        };
        // Two devices' clocks tick at an arbitrary phase to each other; a
        // packet waits for the receiver's next cycle. `phase` fixes it.
        tx.graph.start(opts.clone()).map_err(|e| anyhow!("{e}"))?;
        let t_tx = start_instant(&tx.graph);
        std::thread::sleep((t_tx + o.phase).saturating_duration_since(Instant::now()));
        rx.graph.start(opts).map_err(|e| anyhow!("{e}"))?;
        let t_rx = start_instant(&rx.graph);
        let deadline = Instant::now() + o.duration + Duration::from_secs(10);
        let mut warnings = Vec::new();
        let mut wall = [None, None];
        while wall.iter().any(Option::is_none) && Instant::now() < deadline {
            for (i, g) in [&mut rx.graph, &mut tx.graph].into_iter().enumerate() {
                if wall[i].is_none() && g.wait(Duration::from_millis(10)) {
                    wall[i] = Some(g.elapsed());
                }
            }
        }
        for (who, w) in ["receiver", "sender"].iter().zip(wall) {
            match w {
                None => warnings.push(format!("the {who}'s graph did not finish in time")),
                Some(w) if w > o.duration + Duration::from_millis(60) => warnings.push(format!(
                    "the {who}'s clock ran {:.0} ms late over the run (a stalled machine; the timer may have skipped cycles, so lags can be off by that much)",
                    (w - o.duration).as_secs_f64() * 1e3
                )),
                _ => {}
            }
        }
        let declared = (tx.declared_send, rx.declared_receive);
        let _tx_report = tx.finish();
        let rx_report = rx.finish();
        for c in [conns.0, conns.1] {
            c.close(0u32.into(), b"bye");
        }
        let recording = read_wav(&rx_wav)?;
        let offset_ns = t_tx.saturating_duration_since(t_rx).as_nanos() as i64
            - t_rx.saturating_duration_since(t_tx).as_nanos() as i64;
        let offset = offset_ns * i64::from(RATE) / 1_000_000_000;
        let seconds = (o.duration.as_secs() as usize).saturating_sub(1);
        let arrivals = find_arrivals(&recording, seconds, offset);
        let jb = rx_report.stages.iter().find(|s| s.id == "jb0");
        let gauge = |k: &str| jb.and_then(|s| s.gauges.get(k)).copied().unwrap_or(-1);
        results.push(M2eResult {
            label: label.clone(),
            declared_send: declared.0,
            declared_receive: declared.1,
            arrivals,
            start_skew: Duration::from_nanos(offset_ns.unsigned_abs()),
            jb_target_ms: gauge("target_delay_ms"),
            jb_current_ms: gauge("current_delay_ms"),
            concealed: jb
                .and_then(|s| s.counters.get("concealed"))
                .copied()
                .unwrap_or(0),
            warnings,
        });
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(relay);
    Ok(results)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The table printed at the end.
pub fn report(o: &M2eOptions, results: &[M2eResult]) -> String {
    let mut s = format!(
        "mouth-to-ear {} on loopback: graphs/call.toml x2, 20 ms frames, {} s per setting\n\
         lag = sender source sample -> receiver sink sample (graph to graph; devices add their buffers)\n\
         the receiver's clock ticks {:.1} ms after the sender's (a packet waits for the receiver's next cycle)\n\n",
        if o.direct {
            "on a direct path (no relay)"
        } else {
            "through wzp-relay"
        },
        o.duration.as_secs(),
        ms(o.phase)
    );
    s.push_str(&format!(
        "{:<44} {:>9} {:>9} {:>9} {:>15} {:>7} {:>6}\n",
        "setting", "declared", "measured", "min..max", "", "jb ms", "found"
    ));
    for r in results {
        let declared = r.declared_send + r.declared_receive;
        let found = r.arrivals.iter().filter(|a| a.lag.is_some()).count();
        let (med, range) = match (r.median(), r.min_max()) {
            (Some(m), Some((a, b))) => (
                format!("{:.1} ms", ms(m)),
                format!("{:.1}..{:.1} ms", ms(a), ms(b)),
            ),
            _ => ("-".into(), "-".into()),
        };
        s.push_str(&format!(
            "{:<44} {:>6.0} ms {:>9} {:>25} {:>3}/{:<3} {:>3}/{}\n",
            r.label,
            ms(declared),
            med,
            range,
            r.jb_target_ms,
            r.jb_current_ms,
            found,
            r.arrivals.len()
        ));
    }
    s.push('\n');
    for r in results {
        let lags: Vec<String> = r
            .arrivals
            .iter()
            .map(|a| match a.lag {
                Some(l) => format!("{:.1}", ms(l)),
                None => format!("miss({:.2})", a.correlation),
            })
            .collect();
        s.push_str(&format!(
            "{}: declared send {:.0} ms + receive {:.0} ms; per chirp (ms, first {} are warm-up): {}; starts {:.2} ms apart (wanted {:.2}); receiver concealed {} frames\n",
            r.label,
            ms(r.declared_send),
            ms(r.declared_receive),
            WARMUP_CHIRPS,
            lags.join(" "),
            ms(r.start_skew),
            ms(o.phase),
            r.concealed
        ));
        for w in &r.warnings {
            s.push_str(&format!("{}: warning: {w}\n", r.label));
        }
    }
    s.push_str("\ngoal: <= 45 ms with 20 ms frames\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delayed_chirp_is_found_at_its_delay() {
        // Three seconds of source, recorded 37 ms late with a start offset
        // of -5 ms and a little noise.
        let delay = 37 * 48;
        let offset = -5 * 48i64;
        let mut rec = vec![0.0f32; 4 * RATE as usize];
        let c = chirp();
        let mut x = 1u32;
        for v in rec.iter_mut() {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = ((x >> 8) as f32 / (1 << 24) as f32 - 0.5) * 0.01;
        }
        for k in 0..3 {
            let at = (k * RATE as usize + CHIRP_AT) as i64 + offset + delay;
            for (i, s) in c.iter().enumerate() {
                rec[at as usize + i] += 0.7 * s;
            }
        }
        let a = find_arrivals(&rec, 3, offset);
        assert_eq!(a.len(), 3);
        for ar in &a {
            let lag = ar.lag.expect("found");
            assert_eq!(lag.as_micros(), 37_000, "chirp {}", ar.index);
            assert!(ar.correlation > 0.9);
        }
    }

    #[test]
    fn silence_and_noise_find_no_chirp() {
        let rec = vec![0.0f32; 2 * RATE as usize];
        assert!(find_arrivals(&rec, 2, 0).iter().all(|a| a.lag.is_none()));
        let mut x = 7u32;
        let noise: Vec<f32> = (0..2 * RATE as usize)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect();
        assert!(find_arrivals(&noise, 2, 0).iter().all(|a| a.lag.is_none()));
        // A recording shorter than the search window is no panic.
        assert!(find_arrivals(&[0.1; 100], 3, 0)
            .iter()
            .all(|a| a.lag.is_none()));
    }

    #[test]
    fn settings_parse_and_bad_ones_are_refused() {
        let (label, m) = parse_setting("jb_min=20ms, lookahead=0").unwrap();
        assert_eq!(label, "jb_min=20ms, lookahead=0");
        assert_eq!(m.get("lookahead").map(String::as_str), Some("0"));
        assert!(parse_setting("").unwrap().1.is_empty());
        for bad in ["jb_min", "=3", "a=1,b"] {
            assert!(parse_setting(bad).is_err(), "{bad}");
        }
        assert_eq!(default_settings().len(), 3);
    }
}
