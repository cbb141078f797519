//! `wzp-bench signal-load`: many real QUIC `_signal` connections to a real
//! `wzp-relay` process, as the client opens them (SNI `_signal`, `hello`,
//! the signed answer to the relay's `presence_challenge`), then direct-call
//! offers at a fixed rate between registered pairs.
//!
//! Phase 1 registers `clients` identities (deterministic seeds), a bounded
//! number at a time, over a few client endpoints (quinn multiplexes many
//! connections on one UDP socket): registrations/s, the relay's RSS growth
//! per registration, its CPU time.
//!
//! Phase 2 pairs client `2i` (caller) with `2i + 1` (callee) and sends
//! `calls_per_s` offers per second for `seconds`, round-robin over the
//! pairs. Offers are built before the phase (each signs a handshake half).
//! The callee rejects every offer at once, so the call ends and the pair
//! can be used again. Latency is offer written → `call_ringing` read, at
//! the caller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use quinn::SendStream;
use tokio::sync::mpsc;
use wzp_proto::direct_call::{random_call_id, refusal, CallEvent, IncomingCall, OutgoingCall};
use wzp_proto::handshake::EphemeralKey;
use wzp_proto::identity::Identity;
use wzp_proto::presence::{PresenceClient, PresenceEvent, PresenceStep};
use wzp_proto::signal::{Decoded, SignalMessage, MAX_FRAME_LEN};
use wzp_proto::{Fingerprint, Seed, TlsFingerprint};
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{write_message, SignalFrame, SignalReader};

use crate::relay_proc::{self, RelayProc, TempDir};

/// How long one registration (handshake, hello, challenge, ack) may take.
const REGISTER_WAIT: Duration = Duration::from_secs(20);
/// How long to wait for the last offers' answers after the sending ends.
const DRAIN_WAIT: Duration = Duration::from_secs(5);
/// A signal-level `ping` after this much quiet, as `wzp-client` sends them
/// (the relay drops registrations silent for 45 s).
const SIGNAL_PING: Duration = Duration::from_secs(10);
/// File descriptors the bench needs beside one per endpoint.
const FD_SPARE: u64 = 64;

/// What to run.
#[derive(Clone, Debug)]
pub struct SignalOptions {
    /// Clients to register (even: callers and callees pair up).
    pub clients: usize,
    /// Offers per second in the call phase (0 = no call phase).
    pub calls_per_s: u32,
    /// Seconds of offers.
    pub seconds: u64,
    /// Registrations in flight at once.
    pub concurrency: usize,
    /// Connections per client endpoint (UDP socket).
    pub per_endpoint: usize,
    /// QUIC keep-alive interval of each connection.
    pub quic_keepalive: Duration,
    /// The relay binary (default: next to wzp-bench).
    pub relay_bin: Option<PathBuf>,
    /// Extra relay config lines, KEY=VALUE.
    pub relay_config: Vec<String>,
    /// Progress lines on stderr.
    pub progress: bool,
}

/// Latency quantiles of a sample.
#[derive(Clone, Debug, Default)]
pub struct Quantiles {
    pub count: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Quantiles {
    /// Quantiles of `us` (microseconds); sorts it.
    pub fn of(us: &mut [u64]) -> Quantiles {
        if us.is_empty() {
            return Quantiles::default();
        }
        us.sort_unstable();
        let at = |q: f64| {
            let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
            Duration::from_micros(us[i])
        };
        Quantiles {
            count: us.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: Duration::from_micros(us[us.len() - 1]),
        }
    }
}

/// What the registration phase measured.
#[derive(Clone, Debug, Default)]
pub struct RegisterResult {
    pub registered: usize,
    pub failed: usize,
    /// Up to five distinct failure texts, with counts.
    pub errors: Vec<(String, usize)>,
    pub wall: Duration,
    pub latency: Quantiles,
    pub rss_before: u64,
    pub rss_after: u64,
    pub relay_cpu: Duration,
    pub bench_cpu: Duration,
    /// `wzp_signal_registered` from the relay's /metrics after the phase.
    pub relay_says_registered: Option<f64>,
}

impl RegisterResult {
    pub fn per_s(&self) -> f64 {
        self.registered as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn rss_per_registration(&self) -> f64 {
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.registered.max(1) as f64
    }
}

/// What the call phase measured.
#[derive(Clone, Debug, Default)]
pub struct CallResult {
    pub pairs: usize,
    /// Offers due in the phase.
    pub scheduled: u64,
    /// Offers written.
    pub sent: u64,
    /// Offers not sent because the pair's previous call had not ended.
    pub skipped_busy: u64,
    /// Offers answered with `call_ringing`.
    pub ringing: u64,
    /// Offers that ended before ringing (busy, not online, refused, error).
    pub refused: u64,
    /// Offers with neither ringing nor an end within the drain wait.
    pub unanswered: u64,
    /// Calls that ended (callee's rejection reached the caller).
    pub ended: u64,
    /// Connections that broke during the phase.
    pub broken: u64,
    /// Time from the first offer's slot to the end of the last one's.
    pub send_wall: Duration,
    /// Latest an offer went out after its scheduled time.
    pub max_send_lag: Duration,
    pub latency: Quantiles,
    pub relay_cpu: Duration,
    pub bench_cpu: Duration,
    pub rss_after: u64,
}

impl CallResult {
    pub fn achieved_per_s(&self) -> f64 {
        self.sent as f64 / self.send_wall.as_secs_f64().max(1e-9)
    }
}

/// Everything measured.
#[derive(Clone, Debug, Default)]
pub struct SignalResults {
    /// RLIMIT_NOFILE after raising it: (soft, hard).
    pub nofile: (u64, u64),
    pub endpoints: usize,
    pub register: RegisterResult,
    pub calls: Option<CallResult>,
    pub relay_pid: u32,
}

/// Most calls one run places (`--calls-per-s` x `--seconds`).
pub const MAX_CALLS: u64 = 1_000_000;

fn check(o: &SignalOptions) -> Result<()> {
    if o.clients < 2 || o.clients % 2 != 0 {
        bail!(
            "--clients {}: use an even number ≥ 2 (callers and callees pair up)",
            o.clients
        );
    }
    if o.concurrency == 0 {
        bail!("--concurrency 0: use at least 1");
    }
    if o.per_endpoint == 0 {
        bail!("--per-endpoint 0: use at least 1");
    }
    // Every offer is signed up front: a typo'd rate must be refused, not
    // abort on the allocation (leaving the relay it started running).
    if (o.calls_per_s as u64).saturating_mul(o.seconds) > MAX_CALLS {
        bail!(
            "--calls-per-s {} for --seconds {}: at most {MAX_CALLS} calls in a run",
            o.calls_per_s,
            o.seconds
        );
    }
    if o.calls_per_s > 0 && o.seconds == 0 {
        bail!("--seconds 0 with --calls-per-s {}: use --seconds ≥ 1, or --calls-per-s 0 to register only", o.calls_per_s);
    }
    Ok(())
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard).
pub fn raise_nofile() -> Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r = want;
        }
    }
    Ok((r.rlim_cur, r.rlim_max))
}

/// The relay's resident set size, from `/proc/<pid>/status`.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| anyhow!("{path}: no VmRSS line"))
}

/// Client `index`'s identity: a fixed seed, so runs register the same set.
pub fn identity(index: usize) -> Identity {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(index as u64 + 1).to_le_bytes());
    seed[8] = 0x51;
    Seed::from_bytes(seed).identity()
}

/// Runs both phases against a fresh relay.
pub fn run(o: &SignalOptions) -> Result<SignalResults> {
    check(o)?;
    let bin = relay_proc::find_relay_bin(o.relay_bin.as_deref())?;
    let nofile = raise_nofile()?;
    let endpoints = o.clients.div_ceil(o.per_endpoint);
    let need = endpoints as u64 + FD_SPARE;
    if nofile.0 < need {
        bail!(
            "the open-file limit is {} (hard {}), and {endpoints} client endpoints need about {need}: \
             raise it (`ulimit -n`) or pass a larger --per-endpoint",
            nofile.0,
            nofile.1
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let dir = TempDir::new("signal-load")?;
    let mut config = String::from("# written by wzp-bench signal-load\n");
    relay_proc::append_config(&mut config, &o.relay_config)?;
    let relay = RelayProc::start(&bin, &dir.0, &config)?;
    if o.progress {
        eprintln!(
            "[signal] {} pid {} on {}; open-file limit {} (hard {}); {} clients over {endpoints} endpoints",
            bin.display(),
            relay.pid,
            relay.quic,
            nofile.0,
            nofile.1,
            o.clients
        );
    }
    let mut results = rt.block_on(phases(o, &relay, endpoints))?;
    results.nofile = nofile;
    results.endpoints = endpoints;
    results.relay_pid = relay.pid;
    Ok(results)
}

/// One open, registered `_signal` connection.
struct Client {
    /// When we last wrote (the relay drops registrations silent for 45 s).
    last_sent: Instant,
    conn: quinn::Connection,
    send: SendStream,
    reader: SignalReader,
}

async fn register(
    endpoint: quinn::Endpoint,
    cfg: quinn::ClientConfig,
    relay: SocketAddr,
    relay_fp: TlsFingerprint,
    id: &Identity,
) -> Result<Client> {
    let connecting = endpoint
        .connect_with(cfg, relay, wzp_proto::sni::SIGNAL)
        .map_err(|e| anyhow!("connect: {e}"))?;
    let conn = connecting.await.map_err(|e| anyhow!("handshake: {e}"))?;
    let (mut send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| anyhow!("opening the signal stream: {e}"))?;
    let mut reader = SignalReader::new(recv, MAX_FRAME_LEN);
    write_message(
        &mut send,
        &SignalMessage::hello(Some("wzp-bench signal-load".into())),
    )
    .await
    .map_err(|e| anyhow!("writing hello: {e}"))?;
    let mut presence = PresenceClient::new(id, relay_fp, None);
    loop {
        match reader.next().await {
            Ok(Some(SignalFrame::Message(Decoded::Message(m)))) => match presence.handle(&m) {
                PresenceStep::Send(r) => write_message(&mut send, &r)
                    .await
                    .map_err(|e| anyhow!("writing the registration: {e}"))?,
                PresenceStep::Event(PresenceEvent::Registered { .. }) => break,
                PresenceStep::Event(PresenceEvent::Refused { reason }) => {
                    bail!("the relay refused the registration: {reason}")
                }
                PresenceStep::Ignored => {}
            },
            Ok(Some(_)) => {}
            Ok(None) => bail!("{}", closed_why(&conn)),
            Err(e) => bail!("reading: {e}"),
        }
    }
    Ok(Client {
        last_sent: Instant::now(),
        conn,
        send,
        reader,
    })
}

fn closed_why(conn: &quinn::Connection) -> String {
    match conn.close_reason() {
        Some(r) => match quic::peer_close(&r) {
            Some((code, text)) => format!("the relay closed the connection: {text} ({code})"),
            None => format!("the connection ended: {r}"),
        },
        None => "the relay ended the signal stream".into(),
    }
}

/// Shared tallies of the call phase.
#[derive(Default)]
struct Tally {
    ringing: AtomicU64,
    refused: AtomicU64,
    ended: AtomicU64,
    broken: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn tally_event(t: &Tally, ev: &CallEvent, t0: Instant, rang: &mut bool) {
    match ev {
        CallEvent::Ringing => {
            let us = t0.elapsed().as_micros() as u64;
            t.ringing.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut l) = t.latencies_us.lock() {
                l.push(us);
            }
            *rang = true;
        }
        CallEvent::Rejected | CallEvent::HungUp { .. } if *rang => {}
        _ if !*rang => {
            t.refused.fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

/// The caller's side: writes the offers it is handed, reads ringing and
/// the rejection, frees the pair when the call ends.
async fn caller(
    mut c: Client,
    mut offers: mpsc::UnboundedReceiver<OutgoingCall>,
    free: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let mut current: Option<(OutgoingCall, Instant, bool)> = None;
    let mut last_sent = c.last_sent;
    loop {
        let quiet = SIGNAL_PING.saturating_sub(last_sent.elapsed());
        tokio::select! {
            o = offers.recv() => {
                let Some(mut call) = o else { break };
                let t0 = Instant::now();
                while let Some(m) = call.poll_send() {
                    if write_message(&mut c.send, &m).await.is_err() {
                        tally.broken.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                last_sent = Instant::now();
                current = Some((call, t0, false));
            }
            f = c.reader.next() => match f {
                Ok(Some(SignalFrame::Message(Decoded::Message(m)))) => {
                    let Some((call, t0, rang)) = current.as_mut() else { continue };
                    if let Some(ev) = call.handle(&m) {
                        tally_event(&tally, &ev, *t0, rang);
                    }
                    while let Some(out) = call.poll_send() {
                        if write_message(&mut c.send, &out).await.is_err() {
                            tally.broken.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                    if call.is_ended() {
                        tally.ended.fetch_add(1, Ordering::Relaxed);
                        current = None;
                        free.store(true, Ordering::Release);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    if !stop.load(Ordering::Acquire) {
                        tally.broken.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            },
            _ = tokio::time::sleep(quiet) => {
                let _ = write_message(&mut c.send, &SignalMessage::Ping { timestamp_ms: 0 }).await;
                last_sent = Instant::now();
            }
        }
    }
    c.conn.close(0u32.into(), b"bye");
}

/// The callee's side: rejects every offer at once.
async fn callee(mut c: Client, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut last_sent = c.last_sent;
    loop {
        let quiet = SIGNAL_PING.saturating_sub(last_sent.elapsed());
        let msg = tokio::select! {
            f = c.reader.next() => match f {
                Ok(Some(SignalFrame::Message(Decoded::Message(m)))) => m,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => {
                    if !stop.load(Ordering::Acquire) {
                        tally.broken.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
            },
            _ = tokio::time::sleep(quiet) => SignalMessage::Ping { timestamp_ms: 0 },
        };
        let out: Vec<SignalMessage> = match &msg {
            SignalMessage::Ping { .. } => vec![msg.clone()],
            SignalMessage::DirectCallOffer { .. } => match IncomingCall::from_offer(&msg) {
                Ok(mut inc) => {
                    inc.reject();
                    std::iter::from_fn(|| inc.poll_send()).collect()
                }
                Err(e) => refusal(&msg, &e).into_iter().collect(),
            },
            _ => Vec::new(),
        };
        for m in &out {
            if write_message(&mut c.send, m).await.is_err() {
                if !stop.load(Ordering::Acquire) {
                    tally.broken.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            last_sent = Instant::now();
        }
    }
}

async fn phases(o: &SignalOptions, relay: &RelayProc, n_endpoints: usize) -> Result<SignalResults> {
    let mut transport = quic::transport_config();
    transport.keep_alive_interval(Some(o.quic_keepalive));
    let mut cfg = quic::client_config(relay.fingerprint)?;
    cfg.transport_config(Arc::new(transport));
    let mut endpoints = Vec::with_capacity(n_endpoints);
    for _ in 0..n_endpoints {
        endpoints.push(quic::client_endpoint(
            "127.0.0.1:0".parse().expect("literal address"),
        )?);
    }
    let ids: Vec<Identity> = (0..o.clients).map(identity).collect();
    let fps: Vec<Fingerprint> = ids.iter().map(Identity::fingerprint).collect();

    // Phase 1: registrations.
    let rss_before = rss_bytes(relay.pid)?;
    let cpu0 = relay.cpu_time()?;
    let self0 = relay_proc::self_cpu_time()?;
    let done = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(tokio::sync::Semaphore::new(o.concurrency));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(o.clients);
    for (i, id) in ids.iter().enumerate() {
        let (sem, done, id) = (sem.clone(), done.clone(), id.clone());
        let (ep, cfg, addr, fp) = (
            endpoints[i % n_endpoints].clone(),
            cfg.clone(),
            relay.quic,
            relay.fingerprint,
        );
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            let start = Instant::now();
            let r = tokio::time::timeout(REGISTER_WAIT, register(ep, cfg, addr, fp, &id))
                .await
                .unwrap_or_else(|_| Err(anyhow!("no registration within {REGISTER_WAIT:?}")));
            done.fetch_add(1, Ordering::Relaxed);
            r.map(|c| (c, start.elapsed()))
        }));
    }
    let progress = o.progress.then(|| {
        let (done, total) = (done.clone(), o.clients);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "[signal] {} / {total} registrations done ({:.1} s)",
                    done.load(Ordering::Relaxed),
                    t0.elapsed().as_secs_f64()
                );
            }
        })
    });
    let mut clients: Vec<Option<Client>> = Vec::with_capacity(o.clients);
    let mut reg_us = Vec::with_capacity(o.clients);
    let mut errors: Vec<(String, usize)> = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t
            .await
            .map_err(|e| anyhow!("a registration task failed: {e}"))?
        {
            Ok((c, d)) => {
                reg_us.push(d.as_micros() as u64);
                clients.push(Some(c));
            }
            Err(e) => {
                failed += 1;
                let text = format!("{e:#}");
                if let Some((_, n)) = errors.iter_mut().find(|(t, _)| *t == text) {
                    *n += 1;
                } else if errors.len() < 5 {
                    errors.push((text, 1));
                }
                clients.push(None);
            }
        }
    }
    let wall = t0.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    let relay_cpu = relay.cpu_time()? - cpu0;
    let bench_cpu = relay_proc::self_cpu_time()? - self0;
    // Let the relay settle (allocator, queues) before reading its RSS.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let register = RegisterResult {
        registered: reg_us.len(),
        failed,
        errors,
        wall,
        latency: Quantiles::of(&mut reg_us),
        rss_before,
        rss_after: rss_bytes(relay.pid)?,
        relay_cpu,
        bench_cpu,
        relay_says_registered: relay
            .metrics()
            .iter()
            .find(|(k, _)| k == "wzp_signal_registered")
            .map(|(_, v)| *v),
    };
    if o.progress {
        eprintln!(
            "[signal] {} registered, {} failed in {:.2} s",
            register.registered,
            register.failed,
            wall.as_secs_f64()
        );
    }

    // Phase 2: calls between complete pairs.
    let calls = if o.calls_per_s > 0 {
        Some(call_phase(o, relay, clients, &ids, &fps).await?)
    } else {
        for c in clients.into_iter().flatten() {
            c.conn.close(0u32.into(), b"bye");
        }
        None
    };
    Ok(SignalResults {
        register,
        calls,
        ..Default::default()
    })
}

async fn call_phase(
    o: &SignalOptions,
    relay: &RelayProc,
    clients: Vec<Option<Client>>,
    ids: &[Identity],
    fps: &[Fingerprint],
) -> Result<CallResult> {
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    // (caller index, callee fingerprint, offer queue, free flag)
    let mut pairs = Vec::new();
    let mut handles = Vec::new();
    let mut conns = Vec::new();
    let mut it = clients.into_iter().enumerate();
    while let (Some((a, ca)), Some((b, cb))) = (it.next(), it.next()) {
        match (ca, cb) {
            (Some(ca), Some(cb)) => {
                conns.push(ca.conn.clone());
                conns.push(cb.conn.clone());
                let (tx, rx) = mpsc::unbounded_channel();
                let free = Arc::new(AtomicBool::new(true));
                handles.push(tokio::spawn(caller(
                    ca,
                    rx,
                    free.clone(),
                    stop.clone(),
                    tally.clone(),
                )));
                handles.push(tokio::spawn(callee(cb, stop.clone(), tally.clone())));
                pairs.push((a, fps[b], tx, free));
            }
            (ca, cb) => {
                for c in [ca, cb].into_iter().flatten() {
                    c.conn.close(0u32.into(), b"bye");
                }
            }
        }
    }
    if pairs.is_empty() {
        bail!("no complete caller/callee pair registered; nothing to call");
    }
    let scheduled = o.calls_per_s as u64 * o.seconds;
    if o.progress {
        eprintln!(
            "[signal] preparing {scheduled} offers over {} pairs ({:.2} calls/s per pair)",
            pairs.len(),
            o.calls_per_s as f64 / pairs.len() as f64
        );
    }
    // Each offer carries a signed handshake half: build them all first so
    // the bench's own signing does not compete with the relay while timed.
    let mut offers = Vec::with_capacity(scheduled as usize);
    for k in 0..scheduled {
        let (caller, target, ..) = &pairs[(k % pairs.len() as u64) as usize];
        let call_id = random_call_id().map_err(|e| anyhow!("no randomness for a call id: {e}"))?;
        let eph = EphemeralKey::random().map_err(|e| anyhow!("no randomness for a key: {e}"))?;
        offers.push(
            OutgoingCall::start(&ids[*caller], eph, call_id, *target, None)
                .map_err(|e| anyhow!("building an offer: {e}"))?,
        );
    }

    let cpu0 = relay.cpu_time()?;
    let self0 = relay_proc::self_cpu_time()?;
    let interval = Duration::from_secs(1) / o.calls_per_s;
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let (mut sent, mut skipped, mut max_lag) = (0u64, 0u64, Duration::ZERO);
    let mut last_send = start;
    for (k, call) in offers.into_iter().enumerate() {
        let due = start + interval * k as u32;
        let now = tokio::time::Instant::now();
        if due > now {
            tokio::time::sleep_until(due).await;
        }
        let now = tokio::time::Instant::now();
        max_lag = max_lag.max(now.saturating_duration_since(due));
        let (_, _, tx, free) = &pairs[k % pairs.len()];
        if !free.swap(false, Ordering::AcqRel) {
            skipped += 1;
            continue;
        }
        if tx.send(call).is_ok() {
            sent += 1;
        }
        last_send = now;
    }
    // The sending covers `sent` intervals: the last offer's own slot counts.
    let send_wall = last_send.saturating_duration_since(start) + interval;
    // Wait (bounded) for every offer to ring or end.
    let drain_until = Instant::now() + DRAIN_WAIT;
    while Instant::now() < drain_until {
        let answered =
            tally.ringing.load(Ordering::Relaxed) + tally.refused.load(Ordering::Relaxed);
        let ended = tally.ended.load(Ordering::Relaxed);
        if answered >= sent && ended >= sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let relay_cpu = relay.cpu_time()? - cpu0;
    let bench_cpu = relay_proc::self_cpu_time()? - self0;
    let rss_after = rss_bytes(relay.pid)?;
    stop.store(true, Ordering::Release);
    let n_pairs = pairs.len();
    drop(pairs);
    // Closing every connection ends the callee tasks (they wait on reads).
    for c in &conns {
        c.close(0u32.into(), b"bye");
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(1), h).await;
    }
    let ringing = tally.ringing.load(Ordering::Relaxed);
    let refused = tally.refused.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *tally.latencies_us.lock().map_err(|_| anyhow!("poisoned"))?);
    Ok(CallResult {
        pairs: n_pairs,
        scheduled,
        sent,
        skipped_busy: skipped,
        ringing,
        refused,
        unanswered: sent.saturating_sub(ringing + refused),
        ended: tally.ended.load(Ordering::Relaxed),
        broken: tally.broken.load(Ordering::Relaxed),
        send_wall,
        max_send_lag: max_lag,
        latency: Quantiles::of(&mut lat),
        relay_cpu,
        bench_cpu,
        rss_after,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn cores(cpu: Duration, wall: Duration) -> String {
    format!(
        "{:.2} s ({:.2} cores)",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9)
    )
}

/// The results as a table.
pub fn report(o: &SignalOptions, r: &SignalResults) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let g = &r.register;
    let _ = writeln!(
        s,
        "signal-load: {} clients, {} endpoints ({} per endpoint), {} registrations in flight, \
         QUIC keep-alive {} ms, open-file limit {} (hard {})",
        o.clients,
        r.endpoints,
        o.per_endpoint,
        o.concurrency,
        o.quic_keepalive.as_millis(),
        r.nofile.0,
        r.nofile.1
    );
    let _ = writeln!(s, "\nregistration (connect + hello + challenge + ack)");
    let _ = writeln!(s, "  {:<34} {}", "registered", g.registered);
    let _ = writeln!(s, "  {:<34} {}", "failed", g.failed);
    for (e, n) in &g.errors {
        let _ = writeln!(s, "    {n} x {e}");
    }
    if let Some(v) = g.relay_says_registered {
        let _ = writeln!(s, "  {:<34} {v}", "relay's wzp_signal_registered");
    }
    let _ = writeln!(
        s,
        "  {:<34} {:.0}/s ({:.2} s)",
        "registrations/s",
        g.per_s(),
        g.wall.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "  {:<34} p50 {}  p99 {}  max {}",
        "one registration",
        ms(g.latency.p50),
        ms(g.latency.p99),
        ms(g.latency.max)
    );
    let _ = writeln!(
        s,
        "  {:<34} {} -> {} ({:.1} KiB per registration)",
        "relay RSS",
        mib(g.rss_before),
        mib(g.rss_after),
        g.rss_per_registration() / 1024.0
    );
    let _ = writeln!(
        s,
        "  {:<34} {} ({:.0} µs per registration)",
        "relay CPU",
        cores(g.relay_cpu, g.wall),
        g.relay_cpu.as_secs_f64() * 1e6 / g.registered.max(1) as f64
    );
    let _ = writeln!(s, "  {:<34} {}", "bench CPU", cores(g.bench_cpu, g.wall));
    if let Some(c) = &r.calls {
        let _ = writeln!(
            s,
            "\ncalls: offer -> call_ringing at the caller; callee rejects at once ({} pairs, target {}/s for {} s)",
            c.pairs, o.calls_per_s, o.seconds
        );
        let _ = writeln!(
            s,
            "  {:<34} {} of {} scheduled",
            "offers sent", c.sent, c.scheduled
        );
        let _ = writeln!(
            s,
            "  {:<34} {:.0}/s (latest send {} behind schedule)",
            "achieved rate",
            c.achieved_per_s(),
            ms(c.max_send_lag)
        );
        let _ = writeln!(
            s,
            "  {:<34} p50 {}  p99 {}  max {}  (n = {})",
            "offer -> ringing",
            ms(c.latency.p50),
            ms(c.latency.p99),
            ms(c.latency.max),
            c.latency.count
        );
        let _ = writeln!(s, "  {:<34} {}", "ringing", c.ringing);
        let _ = writeln!(s, "  {:<34} {}", "calls ended (rejected)", c.ended);
        let _ = writeln!(
            s,
            "  {:<34} {} refused, {} unanswered, {} skipped (pair busy), {} connections broke",
            "failures", c.refused, c.unanswered, c.skipped_busy, c.broken
        );
        let _ = writeln!(
            s,
            "  {:<34} {}",
            "relay CPU",
            cores(c.relay_cpu, c.send_wall)
        );
        let _ = writeln!(
            s,
            "  {:<34} {}",
            "bench CPU",
            cores(c.bench_cpu, c.send_wall)
        );
        let _ = writeln!(s, "  {:<34} {}", "relay RSS after", mib(c.rss_after));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let q = Quantiles::of(&mut v);
        assert_eq!(q.count, 100);
        assert_eq!(q.p50, Duration::from_micros(50));
        assert_eq!(q.p99, Duration::from_micros(99));
        assert_eq!(q.max, Duration::from_micros(100));
        assert_eq!(Quantiles::of(&mut []).count, 0);
    }

    #[test]
    fn identities_are_fixed_and_distinct() {
        assert_eq!(identity(7).fingerprint(), identity(7).fingerprint());
        assert_ne!(identity(7).fingerprint(), identity(8).fingerprint());
    }

    #[test]
    fn bad_options_name_the_flag() {
        let base = SignalOptions {
            clients: 10,
            calls_per_s: 10,
            seconds: 1,
            concurrency: 8,
            per_endpoint: 1000,
            quic_keepalive: Duration::from_millis(500),
            relay_bin: None,
            relay_config: Vec::new(),
            progress: false,
        };
        assert!(check(&base).is_ok());
        for (o, flag) in [
            (
                SignalOptions {
                    clients: 9,
                    ..base.clone()
                },
                "--clients",
            ),
            (
                SignalOptions {
                    calls_per_s: 1_000_000_000,
                    ..base.clone()
                },
                "--calls-per-s",
            ),
            (
                SignalOptions {
                    clients: 0,
                    ..base.clone()
                },
                "--clients",
            ),
            (
                SignalOptions {
                    concurrency: 0,
                    ..base.clone()
                },
                "--concurrency",
            ),
            (
                SignalOptions {
                    per_endpoint: 0,
                    ..base.clone()
                },
                "--per-endpoint",
            ),
            (
                SignalOptions {
                    seconds: 0,
                    ..base.clone()
                },
                "--seconds",
            ),
        ] {
            let e = check(&o).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        }
    }

    #[test]
    fn the_relay_rss_is_read_from_proc() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
