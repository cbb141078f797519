//! The `wzp-netem` shell: UDP sockets and timers around the sans-IO
//! impairment core (`wzp_stages::net::netem_core::NetemCore`), one core per
//! direction.
//!
//! Clients send to the listen socket; each client source address gets its
//! own upstream socket, connected to the target (a NAT-like mapping that
//! expires after [`IDLE_EXPIRY`] without traffic), so the target sees one
//! peer per client and its replies find their way back. Datagrams are
//! forwarded as they are, so QUIC (and its certificate pinning) works through
//! the proxy unchanged.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use wzp_stages::net::netem_core::{ImpairParams, NetemCore, NetemStats};
use wzp_stages::net::netem_schedule::{NetemSettings, Phase};

/// A mapping with no traffic either way for this long is dropped. Longer than
/// the longest delay a setting allows, so held datagrams never lose theirs.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(180);
/// Client mappings held at once; datagrams from further clients are dropped.
pub const MAX_MAPPINGS: usize = 4096;
/// Datagrams each direction's delay queue holds.
pub const QUEUE_CAPACITY: usize = 8192;

/// What the proxy does, checked and ready to run.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    pub to: SocketAddr,
    pub base: NetemSettings,
    pub schedule: Vec<Phase>,
    pub trace: Vec<bool>,
    pub seed: u64,
    pub duration: Option<Duration>,
    /// The one direction impaired (`None`: both); the other passes clean.
    pub only: Option<Direction>,
}

/// A direction through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to target.
    C2s,
    /// Target back to the client.
    S2c,
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "c2s" => Ok(Direction::C2s),
            "s2c" => Ok(Direction::S2c),
            _ => Err(format!(
                "{:?}: expected c2s (client to target) or s2c (the way back)",
                s.chars().take(40).collect::<String>()
            )),
        }
    }
}

/// The core parameters of `params` for direction `dir`: clean where the
/// config impairs only the other one.
fn for_direction(cfg: &ProxyConfig, dir: Direction, params: ImpairParams) -> ImpairParams {
    match cfg.only {
        Some(only) if only != dir => ImpairParams::default(),
        _ => params,
    }
}

/// One datagram held by a core: who it belongs to and its bytes.
#[derive(Clone, Debug)]
struct Datagram {
    client: SocketAddr,
    data: Vec<u8>,
}

impl Default for Datagram {
    fn default() -> Self {
        Datagram {
            client: SocketAddr::from(([0, 0, 0, 0], 0)),
            data: Vec::new(),
        }
    }
}

/// Counters of one direction beyond the core's own.
#[derive(Default, Debug, Clone, Copy)]
struct Shell {
    /// Datagrams received.
    received: u64,
    /// Datagrams sent on.
    sent: u64,
    /// Datagrams the socket refused to send.
    send_errors: u64,
    /// Client datagrams dropped: no mapping could be made.
    unmapped: u64,
}

struct Mapping {
    socket: Arc<UdpSocket>,
    last: Instant,
    reader: tokio::task::JoinHandle<()>,
}

/// The settings of phase `i` (the base settings when there is no schedule).
fn phase_settings(cfg: &ProxyConfig, i: usize) -> NetemSettings {
    match cfg.schedule.get(i) {
        Some(p) => cfg.base.with_phase(p),
        None => cfg.base.clone(),
    }
}

/// Checks that the base settings and every phase make a usable impairment.
pub fn validate(cfg: &ProxyConfig) -> Result<()> {
    cfg.base
        .impair_params()
        .map_err(|e| anyhow!("the command-line settings: {e}"))?;
    for i in 0..cfg.schedule.len() {
        phase_settings(cfg, i)
            .impair_params()
            .map_err(|e| anyhow!("--schedule phase {}: {e}", i + 1))?;
    }
    Ok(())
}

/// A one-line description of settings, as the flags would write them.
pub fn describe(s: &NetemSettings) -> String {
    let ms = |d: Duration| format!("{}ms", d.as_secs_f64() * 1e3);
    format!(
        "loss={} burst={} delay={} jitter={} reorder={} duplicate={} rate={} queue={}",
        s.loss,
        ms(s.burst),
        ms(s.delay),
        ms(s.jitter),
        s.reorder,
        s.duplicate,
        s.rate,
        ms(s.queue.unwrap_or(Duration::from_millis(100)))
    )
}

fn counters_line(dir: &str, shell: &Shell, core: &NetemStats, held: usize) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "counters {dir} in={} out={} lost={} rate_dropped={} duplicated={} reordered={} delayed={} overflow={} held={} send_errors={}",
        shell.received,
        shell.sent,
        core.lost,
        core.rate_dropped,
        core.duplicated,
        core.reordered,
        core.delayed,
        core.overflow,
        held,
        shell.send_errors,
    );
    if shell.unmapped > 0 {
        let _ = write!(s, " unmapped={}", shell.unmapped);
    }
    s
}

fn unspecified_like(addr: &SocketAddr) -> SocketAddr {
    let ip: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, 0)
}

/// Runs the proxy until SIGINT, SIGTERM or `duration`, then prints the
/// counters. Prints `listening udp=ADDR to=ADDR t0_unix_ms=MS` once bound
/// (`t0_unix_ms`: when the schedule's clock started).
pub async fn run(cfg: ProxyConfig) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    validate(&cfg)?;
    let listen = Arc::new(
        UdpSocket::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}; is the port free?", cfg.listen))?,
    );
    let local = listen.local_addr()?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;

    let first = phase_settings(&cfg, 0)
        .impair_params()
        .map_err(|e| anyhow!(e))?;
    let trace_for = |dir| match cfg.only {
        Some(only) if only != dir => Vec::new(),
        _ => cfg.trace.clone(),
    };
    let mut c2s: NetemCore<Datagram> = NetemCore::new(
        for_direction(&cfg, Direction::C2s, first.clone()),
        cfg.seed,
        trace_for(Direction::C2s),
        QUEUE_CAPACITY,
    );
    // Another stream for the way back, so the two directions do not lose the
    // same datagrams.
    let mut s2c: NetemCore<Datagram> = NetemCore::new(
        for_direction(&cfg, Direction::S2c, first),
        cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
        trace_for(Direction::S2c),
        QUEUE_CAPACITY,
    );
    let (mut up_in, mut down_in) = (Shell::default(), Shell::default());

    let start = Instant::now();
    // The schedule's clock starts here; `t0_unix_ms` lets a bench line it
    // up with another process's clock (benches/quality/live.sh).
    let t0_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    println!(
        "listening udp={local} to={} t0_unix_ms={t0_unix_ms}",
        cfg.to
    );
    if !cfg.schedule.is_empty() {
        println!(
            "phase 1/{} at 0s: {}",
            cfg.schedule.len(),
            describe(&phase_settings(&cfg, 0))
        );
    }
    // Phase i ends at phase_ends[i]; the last one holds for ever.
    let mut phase_ends = Vec::new();
    let mut acc = Duration::ZERO;
    for p in cfg
        .schedule
        .iter()
        .take(cfg.schedule.len().saturating_sub(1))
    {
        acc = acc.saturating_add(p.duration);
        // A phase too long for the clock lasts for ever.
        match start.checked_add(acc) {
            Some(t) => phase_ends.push(t),
            None => break,
        }
    }
    let mut phase = 0usize;
    let end = cfg.duration.and_then(|d| start.checked_add(d));

    let (up_tx, mut up_rx) = mpsc::channel::<(SocketAddr, Vec<u8>)>(4096);
    let mut mappings: HashMap<SocketAddr, Mapping> = HashMap::new();
    let mut next_sweep = start + Duration::from_secs(1);
    let mut buf = vec![0u8; 65_536];
    let ns = |t: Instant| t.saturating_duration_since(start).as_nanos() as u64;
    let at = |n: u64| start + Duration::from_nanos(n);

    loop {
        let mut wake = next_sweep;
        for t in [c2s.next_release(), s2c.next_release()]
            .into_iter()
            .flatten()
        {
            wake = wake.min(at(t));
        }
        if let Some(t) = phase_ends.get(phase) {
            wake = wake.min(*t);
        }
        if let Some(t) = end {
            wake = wake.min(t);
        }
        tokio::select! {
            r = listen.recv_from(&mut buf) => {
                match r {
                    Ok((n, client)) => {
                        let now = Instant::now();
                        up_in.received += 1;
                        if !mappings.contains_key(&client) {
                            if mappings.len() >= MAX_MAPPINGS {
                                up_in.unmapped += 1;
                                continue;
                            }
                            match open_mapping(client, cfg.to, up_tx.clone()).await {
                                Ok(m) => {
                                    mappings.insert(client, m);
                                }
                                Err(e) => {
                                    tracing::warn!("no upstream socket for {client}: {e:#}");
                                    up_in.unmapped += 1;
                                    continue;
                                }
                            }
                        }
                        if let Some(m) = mappings.get_mut(&client) {
                            m.last = now;
                        }
                        let data = &buf[..n];
                        c2s.push(ns(now), n, |d| {
                            d.client = client;
                            d.data.clear();
                            d.data.extend_from_slice(data);
                        });
                    }
                    // ICMP errors from earlier sends surface here (e.g. a
                    // client that went away); the socket is still good.
                    Err(e) => tracing::debug!("listen socket: {e}"),
                }
            }
            Some((client, data)) = up_rx.recv() => {
                let now = Instant::now();
                down_in.received += 1;
                if let Some(m) = mappings.get_mut(&client) {
                    m.last = now;
                }
                s2c.push(ns(now), data.len(), |d| {
                    d.client = client;
                    d.data.clear();
                    d.data.extend_from_slice(&data);
                });
            }
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
        let now = Instant::now();
        if end.is_some_and(|t| now >= t) {
            break;
        }
        while phase_ends.get(phase).is_some_and(|t| now >= *t) {
            phase += 1;
            let settings = phase_settings(&cfg, phase);
            // Every phase was checked by `validate`.
            let params = settings.impair_params().map_err(|e| anyhow!(e))?;
            c2s.set_params(for_direction(&cfg, Direction::C2s, params.clone()));
            s2c.set_params(for_direction(&cfg, Direction::S2c, params));
            println!(
                "phase {}/{} at {}s: {}",
                phase + 1,
                cfg.schedule.len(),
                phase_ends[phase - 1].duration_since(start).as_secs_f64(),
                describe(&settings)
            );
        }
        let horizon = ns(now) + 1;
        while let Some((_, d)) = c2s.pop_before(horizon) {
            let Some(m) = mappings.get(&d.client) else {
                up_in.unmapped += 1;
                continue;
            };
            // A send on a fresh socket may wait for the reactor to see it
            // writable; UDP sends do not otherwise block.
            match m.socket.send(&d.data).await {
                Ok(_) => up_in.sent += 1,
                Err(_) => up_in.send_errors += 1,
            }
        }
        while let Some((_, d)) = s2c.pop_before(horizon) {
            match listen.send_to(&d.data, d.client).await {
                Ok(_) => down_in.sent += 1,
                Err(_) => down_in.send_errors += 1,
            }
        }
        if now >= next_sweep {
            next_sweep = now + Duration::from_secs(1);
            mappings.retain(|_, m| {
                let keep = now.duration_since(m.last) < IDLE_EXPIRY;
                if !keep {
                    m.reader.abort();
                }
                keep
            });
        }
    }
    for m in mappings.values() {
        m.reader.abort();
    }
    println!("mappings={}", mappings.len());
    println!("{}", counters_line("c2s", &up_in, c2s.stats(), c2s.held()));
    println!(
        "{}",
        counters_line("s2c", &down_in, s2c.stats(), s2c.held())
    );
    Ok(())
}

/// A new upstream socket for `client`, connected to `to`, and the task that
/// hands what comes back to the main loop.
async fn open_mapping(
    client: SocketAddr,
    to: SocketAddr,
    tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) -> Result<Mapping> {
    let socket = UdpSocket::bind(unspecified_like(&to)).await?;
    socket.connect(to).await?;
    let socket = Arc::new(socket);
    let reader = {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                match socket.recv(&mut buf).await {
                    Ok(n) => {
                        if tx.send((client, buf[..n].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    // ICMP port unreachable from the target: keep listening,
                    // it may come back.
                    Err(e) => tracing::debug!("upstream socket for {client}: {e}"),
                }
            }
        })
    };
    Ok(Mapping {
        socket,
        last: Instant::now(),
        reader,
    })
}
