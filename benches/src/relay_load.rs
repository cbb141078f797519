//! `wzp-bench relay-load`: many simulated clients through a real
//! `wzp-relay` process, beside a raw UDP forwarder doing the same job.
//!
//! Both phases run the same traffic: `clients` senders spread round-robin
//! over `rooms`, each sending `rate` packets/s of `HEADER_LEN + payload`
//! bytes; every packet goes to every other member of its room. Each packet
//! carries its send time (nanoseconds since the bench's epoch, same process,
//! same monotonic clock) right after the header, so receivers measure the
//! one-way latency through the forwarder.
//!
//! The relay phase uses real QUIC clients (quinn, one endpoint each) that
//! join with a signed Join exactly as `wzp-client` does; payloads are random
//! bytes behind a valid header (the relay never decrypts, so sealing them
//! would change nothing it does). The raw phase is the floor: one thread,
//! one UDP socket, `recvmmsg`/`sendmmsg`, a hash lookup of the source
//! address, no QUIC, no crypto, no engine.
//!
//! A relay member gets the room's media only once the relay has heard from
//! it (`sfu.fanout`'s `unheard_grace_ms` in `graphs/relay.toml`). With the
//! senders' phases spread over a period, each member would miss the first
//! packet of every member whose phase comes before its own: a loss of
//! 1 / (2 x rate x duration) the raw forwarder does not have. So before the
//! window every relay client announces itself ([`announce_all`]), as a
//! real client is heard by the media it sends from its admission on.
//!
//! CPU is read from `/proc/<pid>/stat` (the relay process, all its threads)
//! and `/proc/self/task/<tid>/stat` (the raw forwarder thread) before and
//! after the sending window; forwarded packets/s per core is packets
//! delivered divided by that CPU time.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use wzp_proto::join::RoomAdmissionKey;
use wzp_proto::room_client::{JoinEvent, JoinExchange};
use wzp_proto::{MediaHeader, Seed, TlsFingerprint, HEADER_LEN};
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader};

use crate::relay_proc::{self, RelayProc, TempDir};

/// What one run does.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub clients: usize,
    pub rooms: usize,
    pub duration: Duration,
    /// Packets per second per client.
    pub rate: u32,
    /// Bytes after the 22-byte header (the send time takes the first 8).
    pub payload: usize,
    pub relay_bin: Option<PathBuf>,
    pub skip_relay: bool,
    pub skip_raw: bool,
    /// Also run the federation phase: two relays, one link.
    pub federation: bool,
    /// Extra `KEY=VALUE` lines for the relay's config file.
    pub relay_config: Vec<String>,
    /// Print the `\r` progress line.
    pub progress: bool,
}

/// Time allowed after the last send for packets in flight to arrive.
const DRAIN: Duration = Duration::from_millis(500);
/// Every join, connect and start-up wait is bounded by this.
const WAIT: Duration = Duration::from_secs(15);

/// The figures of one phase.
#[derive(Clone, Debug)]
pub struct PhaseResult {
    pub name: &'static str,
    /// The sending window.
    pub window: Duration,
    pub sent: u64,
    pub send_failures: u64,
    pub expected: u64,
    pub received: u64,
    /// CPU time of the forwarder (relay process / raw thread) over the
    /// window and the drain after it.
    pub cpu: Duration,
    /// CPU time of this bench process over the same span (clients + raw
    /// forwarder): what competes with the forwarder on a small machine.
    pub bench_cpu: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Extra lines (the relay's own drop counters).
    pub notes: Vec<String>,
}

impl PhaseResult {
    pub fn forwarded_pps(&self) -> f64 {
        self.received as f64 / self.window.as_secs_f64()
    }

    /// Cores the forwarder kept busy on average.
    pub fn cores(&self) -> f64 {
        self.cpu.as_secs_f64() / (self.window + DRAIN).as_secs_f64()
    }

    /// Packets delivered per CPU-second of the forwarder.
    pub fn pps_per_core(&self) -> f64 {
        let cpu = self.cpu.as_secs_f64();
        if cpu <= 0.0 {
            f64::INFINITY
        } else {
            self.received as f64 / cpu
        }
    }

    pub fn loss(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            1.0 - self.received.min(self.expected) as f64 / self.expected as f64
        }
    }
}

/// Runs the phases `opts` asks for and returns their figures.
pub fn run(opts: &LoadOptions) -> Result<Vec<PhaseResult>> {
    check(opts)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the client runtime")?;
    let mut out = Vec::new();
    if !opts.skip_relay || opts.federation {
        let bin = relay_proc::find_relay_bin(opts.relay_bin.as_deref())?;
        if !opts.skip_relay {
            out.push(rt.block_on(relay_phase(opts, &bin))?);
        }
        if opts.federation {
            out.push(rt.block_on(federation_phase(opts, &bin))?);
        }
    }
    if !opts.skip_raw {
        out.push(rt.block_on(raw_phase(opts))?);
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(out)
}

fn check(o: &LoadOptions) -> Result<()> {
    if o.clients < 2 {
        bail!(
            "--clients {}: need at least 2 (someone must hear)",
            o.clients
        );
    }
    if o.rooms == 0 || o.rooms > o.clients / 2 {
        bail!(
            "--rooms {}: need 1..={} so that every room has at least 2 of the {} clients",
            o.rooms,
            o.clients / 2,
            o.clients
        );
    }
    if o.federation && o.rooms > 1024 {
        bail!(
            "--rooms {} with --federation: at most 1024 (global rooms a relay bridges)",
            o.rooms
        );
    }
    if o.clients > 60_000 {
        bail!("--clients {}: at most 60000 (relay max_peers)", o.clients);
    }
    if !(1..=1000).contains(&o.rate) {
        bail!("--rate {}: use 1..=1000 packets/s per client", o.rate);
    }
    if !(8..=1200).contains(&o.payload) {
        bail!("--payload {}: use 8..=1200 bytes", o.payload);
    }
    if o.duration.is_zero() || o.duration > Duration::from_secs(600) {
        bail!("--duration: use 1s..=600s");
    }
    Ok(())
}

/// Members per room: client `i` is in room `i % rooms`.
fn room_sizes(o: &LoadOptions) -> Vec<u64> {
    let mut s = vec![0u64; o.rooms];
    for i in 0..o.clients {
        s[i % o.rooms] += 1;
    }
    s
}

/// Shared tallies of one phase.
struct Tally {
    sent_per_room: Vec<AtomicU64>,
    send_failures: AtomicU64,
    received: AtomicU64,
    short: AtomicU64,
    hist: Histogram,
}

impl Tally {
    fn new(rooms: usize) -> Tally {
        Tally {
            sent_per_room: (0..rooms).map(|_| AtomicU64::new(0)).collect(),
            send_failures: AtomicU64::new(0),
            received: AtomicU64::new(0),
            short: AtomicU64::new(0),
            hist: Histogram::new(),
        }
    }

    fn sent(&self) -> u64 {
        self.sent_per_room
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    fn expected(&self, sizes: &[u64]) -> u64 {
        self.sent_per_room
            .iter()
            .zip(sizes)
            .map(|(a, n)| a.load(Ordering::Relaxed) * n.saturating_sub(1))
            .sum()
    }

    /// A packet arrived at a client: count it, take its latency.
    fn record(&self, bytes: &[u8], epoch: Instant) {
        let Some(ts) = bytes.get(HEADER_LEN..HEADER_LEN + 8) else {
            self.short.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let sent_ns = u64::from_le_bytes(ts.try_into().unwrap_or([0; 8]));
        let now_ns = epoch.elapsed().as_nanos() as u64;
        self.hist.record(now_ns.saturating_sub(sent_ns) / 1000);
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// A log-linear histogram of microseconds (64 sub-buckets per octave, so
/// about 1.5 % resolution), lock-free so every receiver task writes to it.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const SUB_BITS: u32 = 6;
const LINEAR: u64 = 1 << (SUB_BITS + 1);

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: (0..Self::index(u64::MAX) + 1)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
        (LINEAR + u64::from(e - SUB_BITS - 1) * (1 << SUB_BITS) + sub) as usize
    }

    /// The middle of bucket `i`'s range.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < LINEAR {
            return i;
        }
        let e = (i - LINEAR) / (1 << SUB_BITS) + u64::from(SUB_BITS) + 1;
        let sub = (i - LINEAR) % (1 << SUB_BITS);
        let low = (1u64 << e) | (sub << (e - u64::from(SUB_BITS)));
        low + (1u64 << (e - u64::from(SUB_BITS))) / 2
    }

    fn record(&self, us: u64) {
        self.buckets[Self::index(us)].fetch_add(1, Ordering::Relaxed);
    }

    fn quantile(&self, q: f64) -> Duration {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(Self::value(i));
            }
        }
        Duration::ZERO
    }
}

/// The packet client `index` sends as number `seq`: a valid clear header,
/// the send time, filler.
fn packet(template: &mut [u8], index: usize, seq: u32, epoch: Instant) -> &[u8] {
    let h = MediaHeader {
        sender_id: index as u32 + 1,
        seq,
        timestamp: seq.wrapping_mul(960),
        ..Default::default()
    };
    // The template is always longer than the header (checked options).
    let _ = h.encode_into(template);
    let now = epoch.elapsed().as_nanos() as u64;
    template[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&now.to_le_bytes());
    template
}

fn template(o: &LoadOptions, index: usize) -> Vec<u8> {
    // Deterministic filler that does not compress to nothing.
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ index as u64;
    (0..HEADER_LEN + o.payload)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Sends client `index`'s packets over `window`, one every `1/rate`,
/// phase-shifted so the clients do not all send at once, numbered from
/// `first_seq` (after its announces: a relay link passes a sequence number
/// once).
async fn send_loop(
    o: LoadOptions,
    index: usize,
    window: std::ops::Range<tokio::time::Instant>,
    first_seq: u32,
    epoch: Instant,
    tally: Arc<Tally>,
    mut send: impl FnMut(&[u8]) -> bool,
) {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(o.rate));
    let phase = period.mul_f64(index as f64 / o.clients as f64);
    let mut tick = tokio::time::interval_at(window.start + phase, period);
    let mut buf = template(&o, index);
    let room = index % o.rooms;
    let mut seq = first_seq;
    loop {
        let t = tick.tick().await;
        if t >= window.end {
            break;
        }
        if send(packet(&mut buf, index, seq, epoch)) {
            tally.sent_per_room[room].fetch_add(1, Ordering::Relaxed);
        } else {
            tally.send_failures.fetch_add(1, Ordering::Relaxed);
        }
        seq = seq.wrapping_add(1);
    }
}

/// Prints the progress line until `end`, then waits out the drain.
async fn progress(name: &str, o: &LoadOptions, start: Instant, tally: &Tally) {
    let total = o.duration + DRAIN;
    let mut last = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let el = start.elapsed();
        if o.progress {
            let rx = tally.received.load(Ordering::Relaxed);
            let now = Instant::now();
            let rate = (rx - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-3);
            last = (now, rx);
            eprint!(
                "\r[{name}] {:>5.1}/{:.1} s  sent {:>9}  delivered {:>10}  {:>9.0} pkt/s   ",
                el.as_secs_f64().min(total.as_secs_f64()),
                total.as_secs_f64(),
                tally.sent(),
                rx,
                rate
            );
            let _ = std::io::stderr().flush();
        }
        if el >= total {
            break;
        }
    }
    if o.progress {
        eprintln!();
    }
}

// ---------------------------------------------------------------- relay ---

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One admitted QUIC client.
pub(crate) struct QuicClient {
    _endpoint: quinn::Endpoint,
    pub(crate) conn: quinn::Connection,
}

/// Connects client `index` to room `room`, sends Hello and a signed Join,
/// and waits for the RoomUpdate that lists it. The signal stream is then
/// drained in the background so the relay's room updates never back up.
pub(crate) async fn join_relay(
    relay: SocketAddr,
    fp: TlsFingerprint,
    room: &str,
    index: usize,
) -> Result<QuicClient> {
    let mut endpoint = quic::client_endpoint("127.0.0.1:0".parse().expect("literal address"))?;
    endpoint.set_default_client_config(quic::client_config(fp)?);
    // The room's admission key (from a bench-only secret) names it and
    // proves membership over this connection's nonce.
    let key = RoomAdmissionKey::derive(ROOM_SECRET, room);
    let sni = key.sni();
    let conn = tokio::time::timeout(WAIT, endpoint.connect(relay, &sni)?)
        .await
        .map_err(|_| anyhow!("client {index}: no handshake within {WAIT:?}"))??;
    let (mut send, recv) = conn.open_bi().await?;
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
    seed[8] = 0xB7;
    let id = Seed::from_bytes(seed).identity();
    let nonce = quic::join_nonce(&conn)
        .ok_or_else(|| anyhow!("client {index}: the TLS session exports no join nonce"))?;
    let mut exchange = JoinExchange::start_with_room_proof(
        &id,
        &sni,
        &fp,
        Some(format!("load{index}")),
        "wzp-bench relay-load",
        unix_ms(),
        &key,
        &nonce,
    );
    let mut recv = SignalReader::new(recv, wzp_proto::signal::MAX_FRAME_LEN);
    let admitted = async {
        loop {
            if let Some(bytes) = exchange.poll_transmit() {
                signal_stream::write_frames(&mut send, &bytes).await?;
            }
            match exchange.poll_event() {
                Some(JoinEvent::Admitted { .. }) => return Ok(()),
                Some(JoinEvent::Refused { message, .. }) => {
                    bail!("refused: {}", message.unwrap_or_default())
                }
                Some(JoinEvent::Failed(why)) => bail!("{why}"),
                Some(_) => continue,
                None => {}
            }
            match recv.next().await? {
                Some(SignalFrame::Message(m)) => exchange.handle_message(m),
                Some(SignalFrame::Malformed(_)) => {}
                None => bail!("the relay closed the signal stream before admitting us"),
            }
        }
    };
    match tokio::time::timeout(WAIT, admitted).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = conn
                .close_reason()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            bail!("client {index}: {e}{why}");
        }
        Err(_) => bail!("client {index}: not admitted within {WAIT:?}"),
    }
    tokio::spawn(async move {
        let _keep = send;
        while let Ok(Some(_)) = recv.next().await {}
    });
    Ok(QuicClient {
        _endpoint: endpoint,
        conn,
    })
}

async fn relay_phase(o: &LoadOptions, bin: &std::path::Path) -> Result<PhaseResult> {
    let dir = TempDir::new("relay-load")?;
    let mut config = base_config(o);
    relay_proc::append_config(&mut config, &o.relay_config)?;
    let mut relay = RelayProc::start(bin, &dir.0, &config)?;
    if o.progress {
        eprintln!(
            "[relay] {} pid {} on {}; joining {} clients to {} rooms",
            bin.display(),
            relay.pid,
            relay.quic,
            o.clients,
            o.rooms
        );
    }
    let (addr, fp) = (relay.quic, relay.fingerprint);
    let clients = join_all(o, "relay", move |_| (addr, fp)).await?;
    drive(o, "relay", clients, &mut [&mut relay]).await
}

/// The config every bench relay starts from.
fn base_config(o: &LoadOptions) -> String {
    format!(
        "# written by wzp-bench relay-load\nmax_peers = {}\nmax_rooms = {}\n",
        o.clients + 16,
        (o.rooms + 16).min(65_536)
    )
}

/// `wzp-relay fingerprint -i SEED`: creates a relay identity, returns its
/// fingerprint.
fn relay_fingerprint(bin: &std::path::Path, seed: &std::path::Path) -> Result<TlsFingerprint> {
    let out = std::process::Command::new(bin)
        .arg("fingerprint")
        .arg("-i")
        .arg(seed)
        .output()
        .with_context(|| format!("running {} fingerprint", bin.display()))?;
    if !out.status.success() {
        bail!(
            "{} fingerprint failed: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| anyhow!("wzp-relay fingerprint printed no fingerprint: {e}"))
}

/// Waits until `relay`'s metric `name` reaches `want`.
async fn wait_metric(relay: &RelayProc, name: &str, want: f64, what: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        if relay.metrics().iter().any(|(k, v)| k == name && *v >= want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: {name} did not reach {want} within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two relays A and B with one federation link, every room a global room;
/// a room's members alternate between A and B (client i is member
/// `i / rooms` of room `i % rooms`), so every room has members on both and
/// each packet crosses the link once towards the other side.
async fn federation_phase(o: &LoadOptions, bin: &std::path::Path) -> Result<PhaseResult> {
    let dir_a = TempDir::new("relay-load-a")?;
    let dir_b = TempDir::new("relay-load-b")?;
    let fp_a = relay_fingerprint(bin, &dir_a.0.join("relay.seed"))?;
    let mut rooms = String::new();
    for r in 0..o.rooms {
        let key = RoomAdmissionKey::derive(ROOM_SECRET, &format!("load-{r}"));
        rooms.push_str(&format!("[[global_rooms]]\nname = \"{}\"\n", key.sni()));
    }
    let mut config_b = base_config(o);
    relay_proc::append_config(&mut config_b, &o.relay_config)?;
    config_b.push_str(&format!(
        "[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n{rooms}"
    ));
    let mut b = RelayProc::start(bin, &dir_b.0, &config_b)?;
    let mut config_a = base_config(o);
    relay_proc::append_config(&mut config_a, &o.relay_config)?;
    config_a.push_str(&format!(
        "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n{rooms}",
        b.quic, b.fingerprint
    ));
    let mut a = RelayProc::start(bin, &dir_a.0, &config_a)?;
    wait_metric(
        &a,
        "wzp_federation_peer_status{peer=\"b\"}",
        2.0,
        "link A-B",
    )
    .await?;
    if o.progress {
        eprintln!(
            "[federation] relays A {} and B {} linked; joining {} clients to {} global rooms",
            a.quic, b.quic, o.clients, o.rooms
        );
    }
    let ends = [(a.quic, a.fingerprint), (b.quic, b.fingerprint)];
    let rooms_n = o.rooms;
    let clients = join_all(o, "federation", move |i| ends[(i / rooms_n) % 2]).await?;
    // Both relays know every room's members on the other side.
    let both = (o.rooms as f64).min(o.clients as f64);
    wait_metric(&a, "wzp_federation_active_rooms", both, "rooms on A").await?;
    wait_metric(&b, "wzp_federation_active_rooms", both, "rooms on B").await?;
    let (cpu_a0, cpu_b0) = (a.cpu_time()?, b.cpu_time()?);
    let mut r = drive(o, "fed", clients, &mut [&mut a, &mut b]).await?;
    let (cpu_a, cpu_b) = (
        a.cpu_time()?.saturating_sub(cpu_a0),
        b.cpu_time()?.saturating_sub(cpu_b0),
    );
    for (name, relay, cpu) in [("A", &a, cpu_a), ("B", &b, cpu_b)] {
        let m = relay.metrics();
        let get = |k: &str| {
            m.iter()
                .filter(|(s, _)| s.starts_with(k))
                .map(|(_, v)| *v)
                .sum::<f64>()
        };
        let link_in = get("wzp_federation_packets_forwarded_total{peer=\"b\",direction=\"in\"}")
            + get("wzp_federation_packets_forwarded_total{peer=\"a\",direction=\"in\"}");
        let link_out = get("wzp_federation_packets_forwarded_total{peer=\"b\",direction=\"out\"}")
            + get("wzp_federation_packets_forwarded_total{peer=\"a\",direction=\"out\"}");
        // Packets this relay sent: the fan-out's copies (to its clients,
        // and to each room's federation member, which become the link
        // datagrams).
        let sent_out: f64 = m
            .iter()
            .filter(|(k, _)| {
                k.starts_with("wzp_stage_events_total{")
                    && k.contains("stage=\"fanout\"")
                    && k.contains("name=\"copies\"")
            })
            .map(|(_, v)| *v)
            .sum();
        r.notes.push(format!(
            "relay {name}: cpu {:.2} s (incl. joins and drain), link in {link_in:.0}, link out \
             {link_out:.0}, packets out {sent_out:.0}: {:.0} pkt/s per core",
            cpu.as_secs_f64(),
            if cpu.is_zero() {
                0.0
            } else {
                sent_out / cpu.as_secs_f64()
            }
        ));
        let dropped = get("wzp_federation_media_dropped_total")
            + get("wzp_federation_packets_rate_limited_total")
            + get("wzp_federation_packets_deduped_total");
        if dropped > 0.0 {
            r.notes.push(format!(
                "relay {name}: {dropped:.0} forwarded packets dropped"
            ));
        }
    }
    Ok(r)
}

/// The bench's room secret (rooms are admitted by proof of it).
const ROOM_SECRET: &[u8] = b"wzp-bench relay-load room secret";

/// Joins every client, a few at a time (a burst of thousands of handshakes
/// at once would only measure the handshake queue); client i goes to the
/// relay `place(i)` names.
async fn join_all(
    o: &LoadOptions,
    phase: &str,
    place: impl Fn(usize) -> (SocketAddr, TlsFingerprint),
) -> Result<Vec<QuicClient>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut joins = Vec::with_capacity(o.clients);
    for i in 0..o.clients {
        let sem = sem.clone();
        let (addr, fp) = place(i);
        let rooms = o.rooms;
        joins.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            join_relay(addr, fp, &format!("load-{}", i % rooms), i).await
        }));
    }
    let mut clients = Vec::with_capacity(o.clients);
    for j in joins {
        clients.push(j.await.map_err(|e| anyhow!("a join task failed: {e}"))??);
    }
    if o.progress {
        eprintln!("[{phase}] all {} clients admitted", o.clients);
    }
    Ok(clients)
}

/// Makes every client heard by its relay before the window: each sends a
/// header-only datagram (the receivers count those apart from the load)
/// every 20 ms until every client has had one from every other member of
/// its room. A member's announce reaches the others only once they are
/// heard themselves, so all keep announcing until all have. Returns the
/// first sequence number the announces did not use.
async fn announce_all(
    o: &LoadOptions,
    clients: &[QuicClient],
    announced: &[Mutex<HashSet<u32>>],
) -> Result<u32> {
    let sizes = room_sizes(o);
    let deadline = Instant::now() + WAIT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for seq in 0u32.. {
        tick.tick().await;
        let waiting = announced
            .iter()
            .enumerate()
            .filter(|(i, set)| {
                let want = sizes[i % o.rooms].saturating_sub(1) as usize;
                set.lock().map(|s| s.len() < want).unwrap_or(true)
            })
            .count();
        if waiting == 0 {
            return Ok(seq);
        }
        if Instant::now() > deadline {
            bail!(
                "{waiting} of {} clients heard no announce from some member of their room within {WAIT:?}",
                clients.len()
            );
        }
        for (i, c) in clients.iter().enumerate() {
            let h = MediaHeader {
                sender_id: i as u32 + 1,
                seq,
                timestamp: seq.wrapping_mul(960),
                ..Default::default()
            };
            let _ = c.conn.send_datagram(Bytes::copy_from_slice(&h.to_bytes()));
        }
    }
    bail!("announce sequence numbers ran out")
}

/// Runs the sending window over `clients` and measures `relays` (their CPU
/// summed), then closes the clients.
async fn drive(
    o: &LoadOptions,
    name: &'static str,
    clients: Vec<QuicClient>,
    relays: &mut [&mut RelayProc],
) -> Result<PhaseResult> {
    let epoch = Instant::now();
    let tally = Arc::new(Tally::new(o.rooms));
    let announced: Arc<Vec<Mutex<HashSet<u32>>>> =
        Arc::new((0..clients.len()).map(|_| Mutex::default()).collect());
    let mut receivers = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        let conn = c.conn.clone();
        let tally = tally.clone();
        let announced = announced.clone();
        receivers.push(tokio::spawn(async move {
            while let Ok(d) = conn.read_datagram().await {
                if d.len() == HEADER_LEN {
                    if let Ok((h, _)) = MediaHeader::parse(&d) {
                        if let Ok(mut set) = announced[i].lock() {
                            set.insert(h.sender_id);
                        }
                    }
                    continue;
                }
                tally.record(&d, epoch);
            }
        }));
    }
    let first_seq = announce_all(o, &clients, &announced).await?;
    // Sending starts a moment from now so every sender task is in place.
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + o.duration;
    let mut senders = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        let conn = c.conn.clone();
        senders.push(tokio::spawn(send_loop(
            o.clone(),
            i,
            start..end,
            first_seq,
            epoch,
            tally.clone(),
            move |b: &[u8]| conn.send_datagram(Bytes::copy_from_slice(b)).is_ok(),
        )));
    }
    tokio::time::sleep_until(start).await;
    let cpu_sum = |relays: &[&mut RelayProc]| -> Result<Duration> {
        relays.iter().map(|r| r.cpu_time()).sum()
    };
    let cpu0 = cpu_sum(relays)?;
    let self0 = relay_proc::self_cpu_time()?;
    let t0 = Instant::now();
    progress(name, o, t0, &tally).await;
    let cpu = cpu_sum(relays)?.saturating_sub(cpu0);
    let bench_cpu = relay_proc::self_cpu_time()?.saturating_sub(self0);
    let window = o.duration;
    for relay in relays.iter_mut() {
        if !relay.is_running() {
            bail!(
                "wzp-relay exited during the run; its last output:\n{}",
                relay.log_tail()
            );
        }
    }
    for s in senders {
        let _ = s.await;
    }
    for r in &receivers {
        r.abort();
    }
    let sizes = room_sizes(o);
    let mut notes = Vec::new();
    for relay in relays.iter() {
        let metrics = relay.metrics();
        for (k, v) in &metrics {
            if k.starts_with("wzp_relay_drops_total") && *v > 0.0 {
                notes.push(format!("relay {k} = {v}"));
            }
        }
        for (k, v) in &metrics {
            if k.starts_with("wzp_stage_busy_seconds{") && k.contains("quantile=\"0.99\"") {
                notes.push(format!("relay {k} = {:.1} us", v * 1e6));
            }
            if k.starts_with("wzp_domain_cycles_total") {
                notes.push(format!("relay {k} = {v}"));
            }
        }
    }
    let short = tally.short.load(Ordering::Relaxed);
    if short > 0 {
        notes.push(format!("{short} datagrams too short to carry a send time"));
    }
    for c in &clients {
        c.conn.close(0u32.into(), b"bye");
    }
    Ok(PhaseResult {
        name,
        window,
        sent: tally.sent(),
        send_failures: tally.send_failures.load(Ordering::Relaxed),
        expected: tally.expected(&sizes),
        received: tally.received.load(Ordering::Relaxed),
        cpu,
        bench_cpu,
        p50: tally.hist.quantile(0.5),
        p99: tally.hist.quantile(0.99),
        max: tally.hist.quantile(1.0),
        notes,
    })
}

// ------------------------------------------------------------------ raw ---

/// The floor: a single-threaded UDP forwarder with batched syscalls.
struct RawForwarder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<RawStats>>,
    tid: i64,
    addr: SocketAddr,
}

#[derive(Default, Debug)]
struct RawStats {
    received: u64,
    forwarded: u64,
    unknown: u64,
    send_errors: u64,
}

const RAW_BATCH: usize = 64;
const RAW_OUT: usize = 1024;
const RAW_MTU: usize = 1500;

fn sockaddr_of(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn key_of(sa: &libc::sockaddr_in) -> u64 {
    (u64::from(u32::from_be(sa.sin_addr.s_addr)) << 16) | u64::from(u16::from_be(sa.sin_port))
}

impl RawForwarder {
    /// Binds a loopback socket; `rooms[r]` lists the members' addresses.
    fn bind() -> Result<(UdpSocket, SocketAddr)> {
        let sock = UdpSocket::bind("127.0.0.1:0").context("binding the raw forwarder")?;
        // A short timeout lets the loop see the stop flag.
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        Ok((sock, addr))
    }

    fn start(sock: UdpSocket, rooms: Vec<Vec<SocketAddrV4>>) -> Result<RawForwarder> {
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("raw-forwarder".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) };
                let _ = tid_tx.send(tid);
                raw_loop(&sock, &rooms, &stop2)
            })?;
        let tid = tid_rx
            .recv_timeout(WAIT)
            .map_err(|_| anyhow!("the raw forwarder thread did not start"))?;
        Ok(RawForwarder {
            stop,
            thread: Some(thread),
            tid,
            addr,
        })
    }

    fn cpu_time(&self) -> Result<Duration> {
        relay_proc::proc_cpu_time(&format!("/proc/self/task/{}/stat", self.tid))
    }

    fn stop(mut self) -> RawStats {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

fn raw_loop(sock: &UdpSocket, rooms: &[Vec<SocketAddrV4>], stop: &AtomicBool) -> RawStats {
    use std::os::fd::AsRawFd;
    let fd = sock.as_raw_fd();
    let mut member_of: HashMap<u64, usize> = HashMap::new();
    let dests: Vec<Vec<libc::sockaddr_in>> = rooms
        .iter()
        .map(|r| r.iter().map(|a| sockaddr_of(*a)).collect())
        .collect();
    for (ri, r) in dests.iter().enumerate() {
        for a in r {
            member_of.insert(key_of(a), ri);
        }
    }
    let mut stats = RawStats::default();
    // Every pointer handed to the kernel derives from these four bases,
    // taken once, so no later borrow of the vectors invalidates them.
    let mut bufs = vec![0u8; RAW_BATCH * RAW_MTU];
    let buf_base = bufs.as_mut_ptr();
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut srcs: Vec<libc::sockaddr_in> = vec![unsafe { std::mem::zeroed() }; RAW_BATCH];
    let src_base = srcs.as_mut_ptr();
    // SAFETY: as above.
    let mut iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; RAW_BATCH];
    let iov_base = iovs.as_mut_ptr();
    // SAFETY: as above.
    let mut out_iovs: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; RAW_OUT];
    let out_iov_base = out_iovs.as_mut_ptr();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; RAW_BATCH];
    // SAFETY: as above.
    let mut out_msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; RAW_OUT];
    let sa_len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    for (i, m) in msgs.iter_mut().enumerate() {
        // SAFETY: i < RAW_BATCH, the length of bufs / RAW_MTU, srcs and iovs.
        unsafe {
            *iov_base.add(i) = libc::iovec {
                iov_base: buf_base.add(i * RAW_MTU).cast(),
                iov_len: RAW_MTU,
            };
            m.msg_hdr.msg_name = src_base.add(i).cast();
            m.msg_hdr.msg_iov = iov_base.add(i);
        }
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        for m in msgs.iter_mut() {
            m.msg_hdr.msg_namelen = sa_len;
            m.msg_len = 0;
        }
        // SAFETY: `msgs` holds RAW_BATCH headers whose names and iovecs point
        // into `srcs`, `iovs` and `bufs`, alive for the whole loop;
        // MSG_WAITFORONE returns as soon as one datagram is in.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                RAW_BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let mut out = 0usize;
        for (i, m) in msgs.iter().enumerate().take(n as usize) {
            stats.received += 1;
            let len = m.msg_len as usize;
            // SAFETY: i < RAW_BATCH; the kernel filled this address.
            let src = key_of(unsafe { &*src_base.add(i) });
            let Some(&room) = member_of.get(&src) else {
                stats.unknown += 1;
                continue;
            };
            for d in &dests[room] {
                if key_of(d) == src {
                    continue;
                }
                if out == RAW_OUT {
                    flush(fd, &mut out_msgs, out, &mut stats);
                    out = 0;
                }
                let h = &mut out_msgs[out].msg_hdr;
                // SAFETY: out < RAW_OUT and i < RAW_BATCH: inside out_iovs
                // and bufs; `d` lives in `dests` for the whole loop.
                unsafe {
                    *out_iov_base.add(out) = libc::iovec {
                        iov_base: buf_base.add(i * RAW_MTU).cast(),
                        iov_len: len,
                    };
                    h.msg_iov = out_iov_base.add(out);
                }
                h.msg_name = (d as *const libc::sockaddr_in).cast_mut().cast();
                h.msg_namelen = sa_len;
                h.msg_iovlen = 1;
                out += 1;
            }
        }
        flush(fd, &mut out_msgs, out, &mut stats);
    }
    drop((bufs, srcs, iovs, out_iovs));
    stats
}

/// Sends the first `n` prepared messages, retrying the rest after a short write.
fn flush(fd: i32, msgs: &mut [libc::mmsghdr], n: usize, stats: &mut RawStats) {
    let mut done = 0;
    while done < n {
        // SAFETY: msgs[done..n] are headers prepared by `raw_loop` whose
        // names and iovecs point into buffers alive for this call.
        let r = unsafe { libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (n - done) as u32, 0) };
        if r <= 0 {
            // Skip the datagram that failed and go on with the others.
            stats.send_errors += 1;
            done += 1;
        } else {
            stats.forwarded += r as u64;
            done += r as usize;
        }
    }
}

async fn raw_phase(o: &LoadOptions) -> Result<PhaseResult> {
    let (fsock, faddr) = RawForwarder::bind()?;
    let mut socks = Vec::with_capacity(o.clients);
    let mut rooms: Vec<Vec<SocketAddrV4>> = vec![Vec::new(); o.rooms];
    for i in 0..o.clients {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding a raw client socket")?;
        s.connect(faddr).await?;
        match s.local_addr()? {
            SocketAddr::V4(a) => rooms[i % o.rooms].push(a),
            SocketAddr::V6(_) => bail!("a loopback IPv4 bind gave an IPv6 address"),
        }
        socks.push(Arc::new(s));
    }
    let fwd = RawForwarder::start(fsock, rooms)?;
    if o.progress {
        eprintln!(
            "[raw] UDP forwarder (recvmmsg/sendmmsg, 1 thread) on {}; {} clients in {} rooms",
            fwd.addr, o.clients, o.rooms
        );
    }
    let epoch = Instant::now();
    let tally = Arc::new(Tally::new(o.rooms));
    let mut receivers = Vec::with_capacity(socks.len());
    for s in &socks {
        let s = s.clone();
        let tally = tally.clone();
        receivers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok(n) = s.recv(&mut buf).await {
                tally.record(&buf[..n], epoch);
            }
        }));
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + o.duration;
    let mut senders = Vec::with_capacity(socks.len());
    for (i, s) in socks.iter().enumerate() {
        let s = s.clone();
        senders.push(tokio::spawn(send_loop(
            o.clone(),
            i,
            start..end,
            0,
            epoch,
            tally.clone(),
            move |b: &[u8]| s.try_send(b).is_ok(),
        )));
    }
    tokio::time::sleep_until(start).await;
    let cpu0 = fwd.cpu_time()?;
    let self0 = relay_proc::self_cpu_time()?;
    let t0 = Instant::now();
    progress("raw", o, t0, &tally).await;
    let cpu = fwd.cpu_time()?.saturating_sub(cpu0);
    let bench_cpu = relay_proc::self_cpu_time()?.saturating_sub(self0);
    for s in senders {
        let _ = s.await;
    }
    for r in &receivers {
        r.abort();
    }
    let st = fwd.stop();
    let mut notes = vec![format!(
        "raw forwarder: in {} out {} unknown {} send_errors {}",
        st.received, st.forwarded, st.unknown, st.send_errors
    )];
    let short = tally.short.load(Ordering::Relaxed);
    if short > 0 {
        notes.push(format!("{short} datagrams too short to carry a send time"));
    }
    Ok(PhaseResult {
        name: "raw",
        window: o.duration,
        sent: tally.sent(),
        send_failures: tally.send_failures.load(Ordering::Relaxed),
        expected: tally.expected(&room_sizes(o)),
        received: tally.received.load(Ordering::Relaxed),
        cpu,
        bench_cpu,
        p50: tally.hist.quantile(0.5),
        p99: tally.hist.quantile(0.99),
        max: tally.hist.quantile(1.0),
        notes,
    })
}

// --------------------------------------------------------------- report ---

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The table printed at the end of a run.
pub fn report(o: &LoadOptions, results: &[PhaseResult]) -> String {
    let sizes = room_sizes(o);
    let in_pps = o.clients as f64 * f64::from(o.rate);
    let out_pps: f64 = sizes
        .iter()
        .map(|n| (*n * n.saturating_sub(1)) as f64 * f64::from(o.rate))
        .sum();
    let mut s = format!(
        "relay-load: {} clients in {} rooms ({}..{} per room), {} pkt/s each, {} B packets, {:.0} s
         offered: {:.0} pkt/s in, {:.0} pkt/s to deliver (fan-out)

",
        o.clients,
        o.rooms,
        sizes.iter().min().unwrap_or(&0),
        sizes.iter().max().unwrap_or(&0),
        o.rate,
        HEADER_LEN + o.payload,
        o.duration.as_secs_f64(),
        in_pps,
        out_pps
    );
    s.push_str(&format!(
        "{:<6} {:>11} {:>11} {:>8} {:>10} {:>14} {:>10} {:>10} {:>10} {:>10}
",
        "phase",
        "sent",
        "delivered",
        "loss",
        "fwd pkt/s",
        "fwd pkt/s/core",
        "fwd cores",
        "bench cpu",
        "p50",
        "p99"
    ));
    for r in results {
        s.push_str(&format!(
            "{:<6} {:>11} {:>11} {:>7.3}% {:>10.0} {:>14.0} {:>10.2} {:>10.2} {:>10} {:>10}
",
            r.name,
            r.sent,
            r.received,
            r.loss() * 100.0,
            r.forwarded_pps(),
            r.pps_per_core(),
            r.cores(),
            r.bench_cpu.as_secs_f64() / (r.window + DRAIN).as_secs_f64(),
            ms(r.p50),
            ms(r.p99),
        ));
    }
    for r in results {
        if r.send_failures > 0 {
            s.push_str(&format!(
                "{}: {} sends refused by the local socket/connection
",
                r.name, r.send_failures
            ));
        }
        s.push_str(&format!(
            "{}: latency max {}
",
            r.name,
            ms(r.max)
        ));
        for n in &r.notes {
            s.push_str(&format!(
                "{}: {n}
",
                r.name
            ));
        }
    }
    let relay = results.iter().find(|r| r.name == "relay");
    let raw = results.iter().find(|r| r.name == "raw");
    if let (Some(a), Some(b)) = (relay, raw) {
        s.push_str(&format!(
            "
relay/raw: per-core efficiency {:.3}x (goal >= 0.5x), delivered {:.3}x, p50 latency {:.1}x
",
            a.pps_per_core() / b.pps_per_core(),
            a.received as f64 / b.received.max(1) as f64,
            a.p50.as_secs_f64() / b.p50.as_secs_f64().max(1e-9),
        ));
        s.push_str(&format!(
            "relay: {:.0} forwarded pkt/s per core (goal >= 100000)
",
            a.pps_per_core()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_round_trip_within_two_percent() {
        for v in [
            0u64,
            1,
            127,
            128,
            129,
            1000,
            4095,
            65_537,
            1_000_000,
            123_456_789,
        ] {
            let back = Histogram::value(Histogram::index(v));
            let err = (back as f64 - v as f64).abs() / (v.max(1) as f64);
            assert!(
                err <= 0.02,
                "{v} -> bucket {} -> {back}",
                Histogram::index(v)
            );
        }
        // Indices grow with values, so quantiles are ordered.
        let mut last = 0;
        for v in (0..2_000_000u64).step_by(997) {
            let i = Histogram::index(v);
            assert!(i >= last, "index went down at {v}");
            last = i;
        }
    }

    #[test]
    fn histogram_quantiles_follow_the_data() {
        let h = Histogram::new();
        for us in 1..=1000u64 {
            h.record(us);
        }
        let p50 = h.quantile(0.5).as_micros() as f64;
        let p99 = h.quantile(0.99).as_micros() as f64;
        assert!((p50 - 500.0).abs() / 500.0 < 0.02, "p50 {p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.02, "p99 {p99}");
    }

    #[test]
    fn expected_counts_every_other_member_of_the_room() {
        let o = LoadOptions {
            clients: 7,
            rooms: 2,
            duration: Duration::from_secs(1),
            rate: 50,
            payload: 100,
            relay_bin: None,
            skip_relay: false,
            skip_raw: false,
            federation: false,
            relay_config: Vec::new(),
            progress: false,
        };
        // Rooms of 4 and 3.
        assert_eq!(room_sizes(&o), vec![4, 3]);
        let t = Tally::new(2);
        t.sent_per_room[0].store(10, Ordering::Relaxed);
        t.sent_per_room[1].store(5, Ordering::Relaxed);
        assert_eq!(t.expected(&room_sizes(&o)), 10 * 3 + 5 * 2);
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        let base = LoadOptions {
            clients: 10,
            rooms: 2,
            duration: Duration::from_secs(1),
            rate: 50,
            payload: 100,
            relay_bin: None,
            skip_relay: false,
            skip_raw: false,
            federation: false,
            relay_config: Vec::new(),
            progress: false,
        };
        let cases: Vec<(&str, LoadOptions)> = vec![
            (
                "--clients",
                LoadOptions {
                    clients: 1,
                    ..base.clone()
                },
            ),
            (
                "--rooms",
                LoadOptions {
                    rooms: 0,
                    ..base.clone()
                },
            ),
            (
                "--rooms",
                LoadOptions {
                    rooms: 6,
                    ..base.clone()
                },
            ),
            (
                "--rate",
                LoadOptions {
                    rate: 0,
                    ..base.clone()
                },
            ),
            (
                "--payload",
                LoadOptions {
                    payload: 4,
                    ..base.clone()
                },
            ),
            (
                "--duration",
                LoadOptions {
                    duration: Duration::ZERO,
                    ..base.clone()
                },
            ),
        ];
        for (flag, o) in cases {
            let e = check(&o).expect_err(flag).to_string();
            assert!(e.contains(flag), "{flag}: {e}");
        }
        check(&base).unwrap();
    }

    #[test]
    fn a_packet_carries_a_valid_header_and_its_send_time() {
        let o = LoadOptions {
            clients: 2,
            rooms: 1,
            duration: Duration::from_secs(1),
            rate: 50,
            payload: 100,
            relay_bin: None,
            skip_relay: false,
            skip_raw: false,
            federation: false,
            relay_config: Vec::new(),
            progress: false,
        };
        let epoch = Instant::now() - Duration::from_millis(5);
        let mut buf = template(&o, 3);
        let p = packet(&mut buf, 3, 77, epoch).to_vec();
        assert_eq!(p.len(), HEADER_LEN + 100);
        let (h, _) = MediaHeader::parse(&p).expect("header parses");
        assert_eq!((h.sender_id, h.seq), (4, 77));
        let t = Tally::new(1);
        t.record(&p, epoch);
        assert_eq!(t.received.load(Ordering::Relaxed), 1);
        t.record(&p[..HEADER_LEN + 3], epoch);
        assert_eq!(t.short.load(Ordering::Relaxed), 1);
    }
}
