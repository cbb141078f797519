//! The direct path of a direct call: the media goes straight between the
//! two parties when the callee shared its address (`--accept trusted`), and
//! back through the relay whenever that path is not up.
//!
//! - Across relays the addresses come from the parties themselves, sealed
//!   with the call's keys (`call_path`, `wzp_proto::path_addrs`): the
//!   caller sends its own once answered, the callee answers with its own,
//!   and the path starts when the peer's arrive ([`DirectPath::late`]).
//! - The caller dials the address the callee's answer carried (the
//!   callee's signalling socket as the relay saw it) with the call room's
//!   name as the server name, from its own signalling socket; the callee
//!   accepts on that socket for the length of the call.
//! - On the connection's first stream each side proves who it is, bound to
//!   this connection and call (`wzp_proto::direct_path`): the acceptor
//!   answers only once the dialer proved to be the call's peer.
//! - Then the media [`Route`] sends on the direct connection instead of the
//!   relay's, and what arrives on it goes into the graph as the relay's
//!   copies did (the same sealed datagrams: the relay forwards them byte
//!   for byte). The relay connection stays up: when the direct connection
//!   hears nothing for 600 ms the media goes on the relay (back when packets
//!   return); when it closes or hears nothing for
//!   `quic::DIRECT_IDLE_TIMEOUT` (1.5 s), the media is back on the relay, and the caller dials again (after 2 s,
//!   doubling to 30 s while attempts fail).
//!
//! Through NATs: the caller shares its own address in the offer (the relay
//! passes it on only to a callee that answers `accept_trusted`), and while
//! no direct path is up the callee sends connection attempts towards it
//! from its signalling socket (hole punching, [`PathSchedule`]): each side's
//! packets towards the other open its own NAT for the other's replies, so
//! the caller's dial gets through NATs that keep a socket's mapping for
//! every destination (most home and office NATs; `iptables MASQUERADE`). A
//! NAT that maps each destination to a new port (symmetric), or a firewall
//! that drops all inbound UDP, keeps the media on the relay.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::direct_path::{
    PathAction, PathProof, PathSchedule, Role, ATTEMPT_MS, PATH_HELLO_LEN,
};
use wzp_proto::identity::{Identity, RelayCertificate, Seed};
use wzp_proto::path_addrs::PathAddrs;
use wzp_proto::Fingerprint;
use wzp_stages::net::quic;
use wzp_stages::quality::path::PathLive;

/// How long dialing and the proof may take before the attempt fails.
const ATTEMPT: Duration = Duration::from_millis(ATTEMPT_MS);

/// Where the call's media goes: the direct connection while it is up, the
/// relay's otherwise. The only writer of the egress pump's peer for the
/// call (handle 0) and of the path's datagram limit.
pub(crate) struct Route {
    peers: quic::EgressPeers,
    path_limit: Arc<AtomicUsize>,
    direct_up: AtomicBool,
    state: Mutex<RouteState>,
}

#[derive(Default)]
struct RouteState {
    relay: Option<(quic::EgressPeer, usize)>,
    direct: Option<(quic::EgressPeer, usize)>,
}

impl Route {
    pub(crate) fn new(peers: quic::EgressPeers, path_limit: Arc<AtomicUsize>) -> Arc<Route> {
        Arc::new(Route {
            peers,
            path_limit,
            direct_up: AtomicBool::new(false),
            state: Mutex::new(RouteState::default()),
        })
    }

    /// The relay connection (with its datagram limit), or none between
    /// sessions.
    pub(crate) fn set_relay(&self, peer: Option<(quic::EgressPeer, usize)>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.relay = peer;
        self.apply(&st);
    }

    /// The direct connection (with its datagram limit), or none.
    fn set_direct(&self, peer: Option<(quic::EgressPeer, usize)>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.direct = peer;
        self.direct_up.store(st.direct.is_some(), Ordering::Relaxed);
        self.apply(&st);
    }

    /// Ends the direct connection, if any, as the call ends: the peer reads
    /// a normal close, not a lost path.
    fn close_direct(&self) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((peer, _)) = &st.direct {
            quic::close(
                &peer.conn,
                wzp_proto::close::CloseCode::Normal,
                b"call ended",
            );
        }
    }

    /// Whether the media goes on the direct connection now.
    pub(crate) fn direct_up(&self) -> bool {
        self.direct_up.load(Ordering::Relaxed)
    }

    fn apply(&self, st: &RouteState) {
        match st.direct.as_ref().or(st.relay.as_ref()) {
            Some((peer, limit)) => {
                self.peers.add(0, peer.clone());
                // The graph picks the profile that fits the path it sends on.
                if *limit > 0 {
                    self.path_limit.store(*limit, Ordering::Relaxed);
                }
            }
            None => self.peers.remove(0),
        }
    }
}

/// A direct call's plan for a direct path.
#[derive(Clone)]
pub struct DirectPath {
    /// The signalling connection's endpoint: the callee's is the address
    /// it shared; the caller dials from its own.
    pub endpoint: quinn::Endpoint,
    /// Dial `peer_addr`, or accept.
    pub role: Role,
    /// Where the peer is as its relay saw it (the dialer's target; the
    /// acceptor's punches go there).
    pub peer_addr: Option<SocketAddr>,
    /// The peer's own addresses on its network, tried first when both
    /// parties are behind the same NAT (the same address as the relay sees
    /// them), which may not carry packets from inside back in (hairpin).
    pub peer_local: Vec<SocketAddr>,
    /// This side's address as the relay saw it.
    pub own_addr: Option<SocketAddr>,
    /// The call's peer, as the call's handshake authenticated it.
    pub peer: Fingerprint,
    /// The call id (the room is `call-` and it).
    pub call_id: String,
    /// The call room: the direct connection's server name.
    pub room: String,
    /// A call across relays: the peer's addresses come later, sealed in a
    /// `call_path` (`wzp_proto::path_addrs`); the path waits for them.
    pub late: Option<tokio::sync::watch::Receiver<Option<PathAddrs>>>,
}

impl DirectPath {
    /// Where the dialer dials, in turn: the peer's own addresses first when
    /// both are behind the same NAT (the relay saw the same IP for both),
    /// then its address as the relay saw it.
    fn targets(&self) -> Vec<SocketAddr> {
        let same_nat = matches!(
            (self.own_addr, self.peer_addr),
            (Some(a), Some(b)) if a.ip().to_canonical() == b.ip().to_canonical()
        );
        let mut t: Vec<SocketAddr> = if same_nat || self.peer_addr.is_none() {
            self.peer_local.clone()
        } else {
            Vec::new()
        };
        t.extend(self.peer_addr);
        t.dedup_by(|a, b| same_addr(*a, *b));
        t
    }

    /// Whether `remote` is one of the addresses the peer shared.
    fn is_peer(&self, remote: SocketAddr) -> bool {
        self.peer_addr
            .iter()
            .chain(&self.peer_local)
            .any(|a| same_addr(*a, remote))
    }
}

impl std::fmt::Debug for DirectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectPath")
            .field("role", &self.role)
            .field("peer_addr", &self.peer_addr)
            .field("peer", &self.peer)
            .field("room", &self.room)
            .finish_non_exhaustive()
    }
}

/// What the direct path needs of the call.
pub(crate) struct PathIo {
    pub route: Arc<Route>,
    pub feed: Arc<quic::IngressFeed>,
    pub path_live: Arc<PathLive>,
    pub label: String,
    /// What every direct connection of the call carried.
    pub totals: Arc<quic::PeerIoStats>,
}

impl PathIo {
    fn share(&self) -> PathIo {
        PathIo {
            route: self.route.clone(),
            feed: self.feed.clone(),
            path_live: self.path_live.clone(),
            label: self.label.clone(),
            totals: self.totals.clone(),
        }
    }
}

/// Lets the acceptor's signalling endpoint take direct connections (with a
/// throwaway certificate), before the caller can dial: on one relay before
/// the call's media starts (the caller dials as soon as its call is up),
/// across relays once the caller's sealed addresses came, before ours go
/// back. An attempt that finds no server waits out QUIC's first
/// retransmission (about a second). Until [`run`] accepts them they wait
/// in the endpoint's queue; [`close_to_dialer`] ends it.
pub(crate) fn open_to_dialer(endpoint: &quinn::Endpoint) -> Result<()> {
    let seed = Seed::generate().map_err(|e| anyhow!("{e}"))?;
    let cert = RelayCertificate::from_seed(&seed).map_err(|e| anyhow!("{e}"))?;
    let cfg = quic::direct_server_config(&cert).map_err(|e| anyhow!("{e}"))?;
    endpoint.set_server_config(Some(cfg));
    Ok(())
}

/// The endpoint goes on signalling only: it takes no more connections.
pub(crate) fn close_to_dialer(endpoint: &quinn::Endpoint) {
    endpoint.set_server_config(None);
}

/// Runs the direct path until `finished()`: dials (caller) or accepts
/// (callee, whose endpoint [`open_to_dialer`] opens), proves, carries the
/// media while the connection lives.
pub(crate) async fn run<F: Fn() -> bool + Clone + Send + 'static>(
    plan: DirectPath,
    identity: Identity,
    io: PathIo,
    finished: F,
) {
    let until = |finished: F| async move {
        while !finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let (totals, label, peer) = (io.totals.clone(), io.label.clone(), plan.peer);
    let route = io.route.clone();
    let mut plan = plan;
    if let Some(mut late) = plan.late.take() {
        // Across relays: nothing to dial or punch towards until the peer's
        // sealed addresses come (never, if it shares none).
        let addrs = tokio::select! {
            r = late.wait_for(Option::is_some) => r.ok().and_then(|v| v.clone()),
            () = until(finished.clone()) => None,
        };
        let Some(addrs) = addrs else {
            close_to_dialer(&plan.endpoint);
            return;
        };
        plan.peer_addr = addrs.observed;
        plan.peer_local = addrs.local;
    }
    run_role(plan, identity, io, finished.clone(), until(finished)).await;
    route.close_direct();
    let (out, inn) = (
        totals.packets_out.load(Ordering::Relaxed),
        totals.packets_in.load(Ordering::Relaxed),
    );
    if out + inn > 0 {
        println!("{label}direct path to {peer} carried {out} datagrams out and {inn} in");
    }
}

async fn run_role(
    plan: DirectPath,
    identity: Identity,
    io: PathIo,
    finished: impl Fn() -> bool + Clone + Send + 'static,
    stopped: impl std::future::Future<Output = ()>,
) {
    match plan.role {
        Role::Dialer => {
            tokio::select! {
                () = dial_loop(&plan, &identity, &io, finished) => {}
                () = stopped => {}
            }
        }
        Role::Acceptor => {
            // The endpoint takes connections since `open_to_dialer`; they
            // waited in its queue until now.
            tokio::select! {
                () = accept_loop(&plan, &identity, &io) => {}
                () = punch_loop(&plan, &io.route) => {}
                () = stopped => {}
            }
            close_to_dialer(&plan.endpoint);
        }
    }
}

async fn dial_loop(
    plan: &DirectPath,
    identity: &Identity,
    io: &PathIo,
    finished: impl Fn() -> bool,
) {
    let targets = plan.targets();
    if targets.is_empty() {
        return;
    }
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    let mut schedule = PathSchedule::new(Role::Dialer, true, now_ms());
    while !finished() {
        if schedule.poll(now_ms()) == Some(PathAction::Dial) {
            // One address at a time: two proven connections at once would
            // leave each side carrying a different one.
            let mut why = Vec::new();
            let mut up = None;
            for &addr in &targets {
                match tokio::time::timeout(ATTEMPT, dial(plan, identity, addr)).await {
                    Ok(Ok(conn)) => {
                        up = Some(conn);
                        break;
                    }
                    Ok(Err(e)) => why.push(format!("{addr}: {e:#}")),
                    Err(_) => why.push(format!("{addr}: no answer within {} s", ATTEMPT.as_secs())),
                }
            }
            match up {
                Some(conn) => {
                    schedule.up();
                    carry(plan, io, conn).await;
                    schedule.lost(now_ms(), true);
                }
                None => {
                    let n = schedule.failed(now_ms());
                    note_failure(io, plan, n, &why.join("; "));
                }
            }
            continue;
        }
        let at = schedule.next_at().unwrap_or(now_ms() + 100);
        tokio::time::sleep_until((clock + Duration::from_millis(at)).into()).await;
    }
}

fn note_failure(io: &PathIo, plan: &DirectPath, n: u32, why: &str) {
    // The first failure is news; the retries are not.
    if n == 1 {
        println!(
            "{}no direct path to {} ({why}); the media stays on the relay",
            io.label, plan.peer
        );
    } else {
        tracing::debug!(attempt = n, "direct path: {why}");
    }
}

async fn dial(
    plan: &DirectPath,
    identity: &Identity,
    addr: SocketAddr,
) -> Result<quinn::Connection> {
    let cfg = quic::direct_client_config()?;
    let conn = plan
        .endpoint
        .connect_with(cfg, addr, &plan.room)
        .context("dialing")?
        .await?;
    let proof = proof(&conn, identity, plan, Role::Dialer)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&proof.hello()).await?;
    send.finish()?;
    check_hello(&conn, &proof, &mut recv).await?;
    Ok(conn)
}

/// How long a punch (a connection attempt towards the caller that opens
/// this side's NAT for the caller's dial) is kept before it is dropped:
/// it fails anyway (the caller accepts nothing).
const PUNCH_LIFE: Duration = Duration::from_secs(1);
/// How often the acceptor looks whether the direct path is up, to stop or
/// start punching.
const ROUTE_WATCH: Duration = Duration::from_millis(100);

/// Punches towards the caller's shared address while no direct path is up,
/// when [`PathSchedule`] says (hole punching).
async fn punch_loop(plan: &DirectPath, route: &Route) {
    let Some(addr) = plan.peer_addr else {
        return std::future::pending().await;
    };
    let cfg = match quic::direct_client_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("no punching: {e}");
            return std::future::pending().await;
        }
    };
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    let mut schedule = PathSchedule::new(Role::Acceptor, true, now_ms());
    loop {
        match (route.direct_up(), schedule.is_up()) {
            (true, false) => schedule.up(),
            (false, true) => schedule.lost(now_ms(), true),
            _ => {}
        }
        if schedule.poll(now_ms()) == Some(PathAction::Punch) {
            if let Ok(attempt) = plan.endpoint.connect_with(cfg.clone(), addr, &plan.room) {
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(PUNCH_LIFE, attempt).await;
                });
            }
        }
        let next = schedule.next_at().map_or(ROUTE_WATCH, |at| {
            Duration::from_millis(at.saturating_sub(now_ms()))
        });
        tokio::time::sleep(next.min(ROUTE_WATCH)).await;
    }
}

/// Proofs under way at once on the acceptor; more incoming connections
/// are refused until one ends (each ends within [`ATTEMPT`]).
const MAX_PROVING: usize = 4;

async fn accept_loop(plan: &DirectPath, identity: &Identity, io: &PathIo) {
    // Each incoming connection is proven on its own task, so a stranger
    // that connects and says nothing holds up no one. A newer proven
    // connection replaces the one carrying the media (the caller dials
    // again when it lost the path before this side noticed).
    let (proven_tx, mut proven_rx) = tokio::sync::mpsc::channel::<quinn::Connection>(MAX_PROVING);
    let proving = Arc::new(AtomicUsize::new(0));
    let mut current: Option<AbortOnDrop> = None;
    let mut strangers = 0u32;
    loop {
        tokio::select! {
            incoming = plan.endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                // A caller that shared its address dials from it (the same
                // socket the relay saw): anyone else is refused before any
                // handshake, so strangers cannot hold the proving slots.
                let remote = incoming.remote_address();
                if !plan.is_peer(remote) {
                    incoming.refuse();
                    strangers += 1;
                    if strangers <= MAX_NOTED {
                        println!(
                            "{}refused a direct connection from {remote}: not the caller's address",
                            io.label
                        );
                    }
                    continue;
                }
                if proving.load(Ordering::Relaxed) >= MAX_PROVING {
                    incoming.refuse();
                    continue;
                }
                proving.fetch_add(1, Ordering::Relaxed);
                let (plan, identity, tx, proving) =
                    (plan.clone(), identity.clone(), proven_tx.clone(), proving.clone());
                let label = io.label.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    match tokio::time::timeout(ATTEMPT, accept_one(&plan, &identity, incoming)).await {
                        Ok(Ok(c)) => {
                            let _ = tx.send(c).await;
                        }
                        Ok(Err(e)) => {
                            println!("{label}refused a direct connection from {remote}: {e:#}");
                        }
                        Err(_) => println!(
                            "{label}refused a direct connection from {remote}: no proof within {} s",
                            ATTEMPT.as_secs()
                        ),
                    }
                    proving.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(conn) = proven_rx.recv() => {
                let (plan, io) = (plan.clone(), io.share());
                // The one it replaces stops carrying first.
                drop(current.take());
                current = Some(AbortOnDrop(tokio::spawn(async move {
                    carry(&plan, &io, conn).await;
                })));
            }
        }
    }
}

/// This side's own address on its network, for a peer behind the same NAT:
/// the address the host sends from towards the relay (found by connecting
/// a UDP socket, which sends nothing) with the signalling socket's port.
/// None when that is the address the relay saw (no NAT between) or it
/// cannot be told.
pub(crate) fn own_local_addrs(
    endpoint: &quinn::Endpoint,
    relay: SocketAddr,
    observed: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    let Ok(port) = endpoint.local_addr().map(|a| a.port()) else {
        return Vec::new();
    };
    let bind = if relay.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    let ip = std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(relay).and_then(|()| s.local_addr()))
        .map(|a| a.ip());
    match ip {
        Ok(ip) if !ip.is_unspecified() => {
            let own = SocketAddr::new(ip, port);
            if observed.is_some_and(|o| same_addr(o, own)) {
                Vec::new()
            } else {
                vec![own]
            }
        }
        _ => Vec::new(),
    }
}

/// Refusals printed per call; the rest are only refused.
const MAX_NOTED: u32 = 5;

/// The same socket address, an IPv4 address and its IPv6-mapped form alike.
fn same_addr(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// How long a direct path that carried media may hear nothing before this
/// side sends on the relay instead: the peer sends 50 packets a second, so
/// 30 in a row lost is a path that broke (or a peer that moved to the
/// relay), long before the connection idles out
/// (`quic::DIRECT_IDLE_TIMEOUT`). Heard again, the media goes back on it.
const SILENT_FALLBACK: Duration = Duration::from_millis(600);
/// How often the silence is looked at.
const SILENCE_CHECK: Duration = Duration::from_millis(50);
/// Switches printed per path; the rest are only counted in the summary.
const MAX_SWITCHES_NOTED: u32 = 5;

/// While a direct connection lives: when nothing arrived on it for
/// [`SILENT_FALLBACK`] (after the first packet), the media goes on the
/// relay; when packets arrive again, back on the direct path.
async fn watch_silence(peer: Fingerprint, io: PathIo, direct: quic::EgressPeer, limit: usize) {
    let stats = direct.stats.clone();
    let heard = || stats.packets_in.load(Ordering::Relaxed);
    let mut last = heard();
    let mut last_at: Option<Instant> = None;
    let mut silent = false;
    let mut switches = 0u32;
    loop {
        tokio::time::sleep(SILENCE_CHECK).await;
        let now = heard();
        if now != last {
            last = now;
            last_at = Some(Instant::now());
            if silent {
                silent = false;
                switches += 1;
                io.route.set_direct(Some((direct.clone(), limit)));
                if switches <= MAX_SWITCHES_NOTED {
                    println!(
                        "{}direct path to {peer} heard again: the media leaves the relay",
                        io.label
                    );
                }
            }
        } else if !silent && last_at.is_some_and(|t| t.elapsed() >= SILENT_FALLBACK) {
            silent = true;
            switches += 1;
            io.route.set_direct(None);
            if switches <= MAX_SWITCHES_NOTED {
                println!(
                    "{}direct path to {peer} silent for {} ms: the media is on the relay",
                    io.label,
                    SILENT_FALLBACK.as_millis()
                );
            }
        }
    }
}

/// A task that ends with its owner (the call).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn accept_one(
    plan: &DirectPath,
    identity: &Identity,
    incoming: quinn::Incoming,
) -> Result<quinn::Connection> {
    let conn = incoming.await?;
    let sni = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name);
    if sni.as_deref() != Some(plan.room.as_str()) {
        quic::close(
            &conn,
            wzp_proto::close::CloseCode::UnknownSni,
            b"not this call",
        );
        bail!("it named {:?}, not this call", sni.unwrap_or_default());
    }
    let proof = proof(&conn, identity, plan, Role::Acceptor)?;
    let (mut send, mut recv) = conn.accept_bi().await?;
    check_hello(&conn, &proof, &mut recv).await?;
    send.write_all(&proof.hello()).await?;
    send.finish()?;
    Ok(conn)
}

fn proof(
    conn: &quinn::Connection,
    identity: &Identity,
    plan: &DirectPath,
    role: Role,
) -> Result<PathProof> {
    let nonce = quic::direct_nonce(conn)
        .ok_or_else(|| anyhow!("the TLS session exports no nonce to prove the path with"))?;
    PathProof::new(identity, role, plan.peer, &plan.call_id, &nonce).map_err(|e| anyhow!("{e}"))
}

/// Reads exactly one hello (and the stream's end: more is refused) and
/// checks it; a connection whose peer fails is closed `NotAuthorized`.
async fn check_hello(
    conn: &quinn::Connection,
    proof: &PathProof,
    recv: &mut quinn::RecvStream,
) -> Result<()> {
    let theirs = recv
        .read_to_end(PATH_HELLO_LEN)
        .await
        .map_err(|e| anyhow!("reading the peer's proof: {e}"))?;
    if let Err(e) = proof.verify(&theirs) {
        quic::close(
            conn,
            wzp_proto::close::CloseCode::NotAuthorized,
            b"not the call's peer",
        );
        bail!("{e}");
    }
    Ok(())
}

/// Carries the call's media on `conn` until it closes, then hands the
/// media back to the relay.
async fn carry(plan: &DirectPath, io: &PathIo, conn: quinn::Connection) {
    let stats = io.totals.clone();
    let limit = quic::max_datagram_size(&conn).unwrap_or(0);
    io.route.set_direct(Some((
        quic::EgressPeer {
            conn: conn.clone(),
            stats: stats.clone(),
            observer: None,
        },
        limit,
    )));
    let local = plan.endpoint.local_addr().map(|a| a.port()).unwrap_or(0);
    println!(
        "{}direct path to {} up (local port {local}, peer {}): the media leaves the relay",
        io.label,
        plan.peer,
        conn.remote_address()
    );
    // Both end with this connection, or with the call (this future dropped).
    let on_direct = io.route.clone();
    let _sampler = AbortOnDrop(tokio::spawn(crate::call::media::sample_path(
        conn.clone(),
        io.path_live.clone(),
        move || on_direct.direct_up(),
    )));
    let _watch = AbortOnDrop(tokio::spawn(watch_silence(
        plan.peer,
        io.share(),
        quic::EgressPeer {
            conn: conn.clone(),
            stats: stats.clone(),
            observer: None,
        },
        limit,
    )));
    let why = quic::pump_datagrams_in(conn.clone(), 0, io.feed.clone(), stats, |_| {}).await;
    io.route.set_direct(None);
    match quic::peer_close(&why) {
        // The peer's call is ending (its hang-up reaches us on the
        // signalling stream): nothing was lost.
        Some((wzp_proto::close::CloseCode::Normal, _)) => println!(
            "{}direct path to {} closed by the peer",
            io.label, plan.peer
        ),
        peer => {
            let why = match peer {
                Some((code, text)) => format!("{text} ({code})"),
                None => why.to_string(),
            };
            println!(
                "{}direct path to {} lost ({why}): the media is back on the relay",
                io.label, plan.peer
            );
        }
    }
}
