//! `wzp-bench relay-memory`: the relay's heap per idle connection and per
//! joined session, read from its counting allocator
//! (`wzp_relay_heap_bytes` on `/metrics`), for each of several connection
//! counts, each against a fresh relay process.
//!
//! For `n` connections:
//! 1. **baseline**: the relay's heap once it is up and idle.
//! 2. **idle**: `n` QUIC connections to a room's server name, handshake
//!    done, no stream opened and no Join sent (the relay holds them until
//!    its join timeout, set to 60 s here); heap read once all are up.
//! 3. all closed; heap read once the relay reports no connection left.
//! 4. **joined**: `n` clients join rooms of `room_size` with a signed Join
//!    (as relay-load does) and send media at `rate` packets/s of
//!    `HEADER_LEN + payload` bytes; every member receives its room's
//!    media. Heap read after `hold` seconds of media (the largest of the
//!    samples taken each 250 ms over the last half of that time).
//! 5. all leave; heap read once the relay reports no session and no
//!    connection left (the departed sessions' state released).
//!
//! Per-connection figures are (phase heap - baseline) / n. The heap gauge
//! counts bytes asked of the allocator and not freed; the relay's RSS is
//! printed beside it (it also holds allocator free lists and code).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use wzp_proto::join::RoomAdmissionKey;
use wzp_proto::{MediaHeader, TlsFingerprint, HEADER_LEN};
use wzp_stages::net::quic;

use crate::relay_load::join_relay;
use crate::relay_proc::{self, RelayProc, TempDir};
use crate::signal_load::{raise_nofile, rss_bytes};

/// Every connect, join and settle wait is bounded by this: longer than the
/// QUIC idle timeout (30 s), so a connection whose close was lost still
/// leaves the relay within it.
const WAIT: Duration = Duration::from_secs(45);
/// Handshakes or joins in flight at once.
const CONCURRENCY: usize = 32;

/// What one run measures.
#[derive(Clone, Debug)]
pub struct MemoryOptions {
    /// Connection counts; each gets a fresh relay.
    pub counts: Vec<usize>,
    /// Members per room in the joined phase.
    pub room_size: usize,
    /// Media packets per second per joined client.
    pub rate: u32,
    /// Bytes after the media header.
    pub payload: usize,
    /// Seconds of media before the joined heap is read.
    pub hold: Duration,
    pub relay_bin: Option<PathBuf>,
    /// Extra `KEY=VALUE` lines for the relay's config file.
    pub relay_config: Vec<String>,
    pub progress: bool,
}

/// The heap and RSS of the relay at one point.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    pub heap: u64,
    pub allocations: u64,
    /// Allocations ever made (`wzp_relay_heap_allocations_total`).
    pub total: u64,
    pub rss: u64,
}

/// The figures for one connection count.
#[derive(Clone, Debug)]
pub struct MemoryResult {
    pub n: usize,
    pub baseline: Reading,
    pub idle: Reading,
    pub after_idle: Reading,
    pub joined: Reading,
    pub after_joined: Reading,
    /// Media datagrams the joined clients received during the hold.
    pub received: u64,
    pub sent: u64,
    /// Allocations the relay made per media datagram it received while
    /// the joined clients sent (from the start to the end of the hold).
    pub allocs_per_datagram: f64,
}

impl MemoryResult {
    fn per(&self, r: &Reading) -> f64 {
        (r.heap as f64 - self.baseline.heap as f64) / self.n.max(1) as f64
    }
    /// Heap bytes per idle connection.
    pub fn per_idle(&self) -> f64 {
        self.per(&self.idle)
    }
    /// Heap bytes per joined session sending and receiving media.
    pub fn per_joined(&self) -> f64 {
        self.per(&self.joined)
    }
}

fn check(o: &MemoryOptions) -> Result<()> {
    if o.counts.is_empty() || o.counts.contains(&0) {
        bail!("--connections: give one or more counts above 0, e.g. --connections 100,500,1000");
    }
    if o.room_size < 2 {
        bail!(
            "--room-size {}: a room needs at least 2 members",
            o.room_size
        );
    }
    if o.rate == 0 || o.rate > 1000 {
        bail!("--rate {}: use 1..=1000 packets/s", o.rate);
    }
    if o.payload < 8 || o.payload > 1100 {
        bail!("--payload {}: use 8..=1100 bytes", o.payload);
    }
    // The steady state is read over the hold's second half.
    if o.hold < std::time::Duration::from_secs(1) {
        bail!(
            "--hold {:?}: use at least 1s (the heap is read over its second half)",
            o.hold
        );
    }
    Ok(())
}

/// Runs every count against its own relay.
pub fn run(o: &MemoryOptions) -> Result<Vec<MemoryResult>> {
    check(o)?;
    let bin = relay_proc::find_relay_bin(o.relay_bin.as_deref())?;
    let (soft, _) = raise_nofile()?;
    let most = o.counts.iter().copied().max().unwrap_or(0);
    if (soft as usize) < most + 64 {
        bail!(
            "{most} connections need {most} UDP sockets here but the file limit is {soft}: \
             raise it (`ulimit -n {}`) or ask for fewer",
            most + 64
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let mut out = Vec::new();
    for &n in &o.counts {
        out.push(rt.block_on(one(o, &bin, n))?);
    }
    Ok(out)
}

fn reading(relay: &RelayProc) -> Result<Reading> {
    let m = relay.metrics();
    let get = |k: &str| m.iter().find(|(s, _)| s == k).map(|(_, v)| *v as u64);
    Ok(Reading {
        heap: get("wzp_relay_heap_bytes").ok_or_else(|| {
            anyhow!("the relay exports no wzp_relay_heap_bytes: is it a build with the counting allocator?")
        })?,
        allocations: get("wzp_relay_heap_allocations").unwrap_or(0),
        total: get("wzp_relay_heap_allocations_total").unwrap_or(0),
        rss: rss_bytes(relay.pid)?,
    })
}

/// Waits until the relay reports `participants` sessions and `connections`
/// open QUIC connections.
async fn wait_counts(relay: &RelayProc, participants: u64, connections: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = relay.metrics();
        let get = |k: &str| m.iter().find(|(s, _)| s == k).map(|(_, v)| *v as u64);
        let (p, c) = (
            get("wzp_relay_participants"),
            get("wzp_relay_connections_open"),
        );
        if p == Some(participants) && c == Some(connections) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the relay still reports {p:?} participants and {c:?} connections after {WAIT:?} \
                 (waiting for {participants} and {connections})"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An idle connection: handshake done with a room's server name, nothing sent.
async fn connect_idle(
    relay: std::net::SocketAddr,
    fp: TlsFingerprint,
    sni: &str,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let mut ep = quic::client_endpoint("127.0.0.1:0".parse().expect("literal address"))?;
    ep.set_default_client_config(quic::client_config(fp)?);
    let conn = tokio::time::timeout(WAIT, ep.connect(relay, sni)?)
        .await
        .map_err(|_| anyhow!("no handshake within {WAIT:?}"))??;
    Ok((ep, conn))
}

/// Runs `f(i)` for `i` in `0..n`, `CONCURRENCY` at a time, in order of `i`.
async fn many<T, F, Fut>(n: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let batch: Vec<_> = (i..(i + CONCURRENCY).min(n))
            .map(|k| tokio::spawn(f(k)))
            .collect();
        for t in batch {
            out.push(t.await.map_err(|e| anyhow!("task: {e}"))??);
        }
        i += CONCURRENCY;
    }
    Ok(out)
}

/// Closes `conns` `CONCURRENCY` at a time, each batch once the relay has
/// let the previous one go (a burst of closes can overflow the relay's UDP
/// receive buffer on a loaded machine); returns once the relay reports no
/// session and no connection.
async fn close_all(relay: &RelayProc, conns: &[quinn::Connection]) -> Result<()> {
    let mut left = conns.len() as u64;
    for batch in conns.chunks(CONCURRENCY) {
        for c in batch {
            c.close(0u32.into(), b"bye");
        }
        left -= batch.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let m = relay.metrics();
            let open = m
                .iter()
                .find(|(s, _)| s == "wzp_relay_connections_open")
                .map_or(u64::MAX, |(_, v)| *v as u64);
            if open <= left {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    wait_counts(relay, 0, 0).await
}

fn progress(o: &MemoryOptions, what: &str) {
    if o.progress {
        eprintln!("relay-memory: {what}");
    }
}

async fn one(o: &MemoryOptions, bin: &std::path::Path, n: usize) -> Result<MemoryResult> {
    let dir = TempDir::new("relay-memory")?;
    let mut config = format!(
        "# written by wzp-bench relay-memory\nmax_peers = {}\nmax_rooms = {}\njoin_timeout_ms = 60000\n",
        n + 16,
        n / o.room_size + 16
    );
    relay_proc::append_config(&mut config, &o.relay_config)?;
    let mut relay = RelayProc::start(bin, &dir.0, &config)?;
    let (addr, fp) = (relay.quic, relay.fingerprint);
    wait_counts(&relay, 0, 0).await?;
    let baseline = reading(&relay)?;

    progress(o, &format!("{n}: {n} idle connections"));
    let idle_sni = RoomAdmissionKey::derive(b"wzp-bench relay-memory idle", "idle").sni();
    let idle = {
        let sni = idle_sni.clone();
        many(n, move |_| {
            let sni = sni.clone();
            async move { connect_idle(addr, fp, &sni).await }
        })
        .await
        .context("idle connections")?
    };
    wait_counts(&relay, 0, n as u64).await?;
    let idle_reading = reading(&relay)?;
    let conns: Vec<quinn::Connection> = idle.iter().map(|(_, c)| c.clone()).collect();
    close_all(&relay, &conns)
        .await
        .context("closing the idle connections")?;
    drop(conns);
    drop(idle);
    let after_idle = reading(&relay)?;

    progress(o, &format!("{n}: {n} joined sessions"));
    let rooms = n.div_ceil(o.room_size);
    let clients = many(n, move |i| async move {
        let room = format!("memory-room-{}", i % rooms);
        join_relay(addr, fp, &room, i).await
    })
    .await
    .context("joining")?;
    wait_counts(&relay, n as u64, n as u64).await?;

    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + o.hold;
    let period = Duration::from_nanos(1_000_000_000 / u64::from(o.rate));
    let mut tasks = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let conn = c.conn.clone();
        let received = received.clone();
        tasks.push(tokio::spawn(async move {
            while conn.read_datagram().await.is_ok() {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
        let conn = c.conn.clone();
        let sent = sent.clone();
        let payload = o.payload;
        let phase = period.mul_f64(i as f64 / n as f64);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start + phase, period);
            let mut buf = vec![0x5Au8; HEADER_LEN + payload];
            let mut seq = 0u32;
            loop {
                if tick.tick().await >= end {
                    break;
                }
                let h = MediaHeader {
                    sender_id: i as u32 + 1,
                    seq,
                    timestamp: seq.wrapping_mul(960),
                    ..Default::default()
                };
                let _ = h.encode_into(&mut buf);
                if conn.send_datagram(Bytes::copy_from_slice(&buf)).is_ok() {
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                seq = seq.wrapping_add(1);
            }
        }));
    }
    // The largest heap over the second half of the hold: the steady state
    // with every queue as full as the traffic makes it.
    tokio::time::sleep_until(start).await;
    let hold_start = reading(&relay)?;
    tokio::time::sleep_until(start + o.hold / 2).await;
    let mut joined = reading(&relay)?;
    while tokio::time::Instant::now() + Duration::from_millis(250) < end {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = reading(&relay)?;
        if r.heap > joined.heap {
            joined = r;
        }
    }
    tokio::time::sleep_until(end).await;
    let hold_end = reading(&relay)?;
    let in_hold = sent.load(std::sync::atomic::Ordering::Relaxed);
    let allocs_per_datagram =
        hold_end.total.saturating_sub(hold_start.total) as f64 / in_hold.max(1) as f64;
    if !relay.is_running() {
        bail!(
            "wzp-relay exited during the run; its last output:\n{}",
            relay.log_tail()
        );
    }
    let conns: Vec<quinn::Connection> = clients.iter().map(|c| c.conn.clone()).collect();
    close_all(&relay, &conns).await.context("leaving")?;
    drop(conns);
    for t in &tasks {
        t.abort();
    }
    drop(clients);
    let after_joined = reading(&relay)?;
    Ok(MemoryResult {
        n,
        baseline,
        idle: idle_reading,
        after_idle,
        joined,
        after_joined,
        received: received.load(std::sync::atomic::Ordering::Relaxed),
        sent: sent.load(std::sync::atomic::Ordering::Relaxed),
        allocs_per_datagram,
    })
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / (1024.0 * 1024.0))
}

fn kib(b: f64) -> String {
    format!("{:.1} KiB", b / 1024.0)
}

fn signed_kib(after: &Reading, base: &Reading) -> String {
    format!(
        "{:+.1} KiB",
        (after.heap as f64 - base.heap as f64) / 1024.0
    )
}

/// The results as a table for docs/PERFORMANCE.md.
pub fn report(o: &MemoryOptions, results: &[MemoryResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "relay-memory: rooms of {}, {} packets/s of {} bytes per joined client, {:?} of media",
        o.room_size,
        o.rate,
        HEADER_LEN + o.payload,
        o.hold
    );
    let _ = writeln!(
        s,
        "{:>6} {:>12} {:>12} {:>12} {:>14} {:>12} {:>14} {:>12} {:>12}",
        "conns",
        "baseline",
        "idle heap",
        "per idle",
        "after close",
        "joined heap",
        "per session",
        "after leave",
        "joined RSS"
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:>6} {:>12} {:>12} {:>12} {:>14} {:>12} {:>14} {:>12} {:>12}",
            r.n,
            mib(r.baseline.heap),
            mib(r.idle.heap),
            kib(r.per_idle()),
            signed_kib(&r.after_idle, &r.baseline),
            mib(r.joined.heap),
            kib(r.per_joined()),
            signed_kib(&r.after_joined, &r.baseline),
            mib(r.joined.rss),
        );
    }
    for r in results {
        let _ = writeln!(
            s,
            "  {}: {} media datagrams sent, {} received, {:.1} relay allocations per datagram in; live allocations baseline {}, idle {}, joined {}; RSS baseline {}, idle {}, after leave {}",
            r.n,
            r.sent,
            r.received,
            r.allocs_per_datagram,
            r.baseline.allocations,
            r.idle.allocations,
            r.joined.allocations,
            mib(r.baseline.rss),
            mib(r.idle.rss),
            mib(r.after_joined.rss)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> MemoryOptions {
        MemoryOptions {
            counts: vec![100],
            room_size: 2,
            rate: 50,
            payload: 100,
            hold: Duration::from_secs(1),
            relay_bin: None,
            relay_config: Vec::new(),
            progress: false,
        }
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        assert!(check(&opts()).is_ok());
        let cases: [(fn(&mut MemoryOptions), &str); 7] = [
            (|o| o.counts.clear(), "--connections"),
            (|o| o.counts = vec![10, 0], "--connections"),
            (|o| o.room_size = 1, "--room-size"),
            (|o| o.rate = 0, "--rate"),
            (|o| o.payload = 2, "--payload"),
            (|o| o.payload = 5000, "--payload"),
            (|o| o.hold = Duration::ZERO, "--hold"),
        ];
        for (bad, flag) in cases {
            let mut o = opts();
            bad(&mut o);
            let e = check(&o).expect_err(flag).to_string();
            assert!(e.contains(flag), "{e:?} names {flag}");
        }
    }

    #[test]
    fn per_connection_figures_divide_the_growth_over_the_baseline() {
        let at = |heap| Reading {
            heap,
            ..Default::default()
        };
        let r = MemoryResult {
            n: 100,
            baseline: at(1_000_000),
            idle: at(3_000_000),
            after_idle: at(1_000_000),
            joined: at(6_000_000),
            after_joined: at(1_100_000),
            received: 0,
            sent: 0,
            allocs_per_datagram: 0.0,
        };
        assert_eq!(r.per_idle(), 20_000.0);
        assert_eq!(r.per_joined(), 50_000.0);
        let text = report(&opts(), &[r]);
        assert!(text.contains("19.5 KiB"), "{text}");
        assert!(text.contains("48.8 KiB"), "{text}");
        assert!(text.contains("+97.7 KiB"), "{text}");
    }
}
