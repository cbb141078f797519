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
//! every destination (most home and office NATs; `iptables MASQUERADE`).
//!
//! One party behind a NAT that maps each destination to a new port
//! (symmetric) and the other behind a home router (or none): once the plain
//! attempt failed, a birthday search ([`birthday_dial`], [`spray_round`];
//! the halves in `wzp_proto::direct_path::BirthdayHalf`, picked by whether
//! the relay saw this side at its socket's port). Both behind symmetric
//! NATs, or a firewall that drops all inbound UDP, keeps the IPv4 media on
//! the relay.
//!
//! Over IPv6: the signalling socket is dual-stack where the host allows
//! (`quic::client_endpoint_dual_stack`), so a party reaching its relay over
//! IPv4 shares its global IPv6 address too ([`own_local_addrs`]); the
//! caller dials it beside the IPv4 ones and the callee punches it
//! ([`dial_targets`], [`punch_targets`]): parties behind symmetric IPv4
//! NATs meet over IPv6 when both have it.

mod birthday;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use wzp_proto::direct_path::{
    BirthdayHalf, PathAction, PathProof, PathSchedule, Role, SprayPorts, ATTEMPT_MS,
    BIRTHDAY_PROBE_EVERY_MS, BIRTHDAY_SOCKETS, BIRTHDAY_WAIT_MS, PATH_HELLO_LEN, PROBE,
    SPRAY_BATCH, SPRAY_BATCH_EVERY_MS, SPRAY_PORTS,
};
use wzp_proto::identity::{Identity, RelayCertificate, Seed};
use wzp_proto::mapping::Mapping;
use wzp_proto::path_addrs::PathAddrs;
use wzp_proto::Fingerprint;
use wzp_stages::net::quic;

pub(crate) use birthday::birthday_half_for;
use birthday::{
    birthday_dial, birthday_pairs, counts_independent, peer_half_of, spray_ports, spray_round,
};
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
    /// What the mapping test at registration showed of this side's NAT
    /// (`wzp_proto::mapping`).
    pub own_mapping: Mapping,
    /// What the peer's showed of its NAT (its relay's `call_setup`, or the
    /// flag in its sealed addresses).
    pub peer_mapping: Mapping,
    /// The call's peer, as the call's handshake authenticated it.
    pub peer: Fingerprint,
    /// The call id (the room is `call-` and it).
    pub call_id: String,
    /// The call room: the direct connection's server name.
    pub room: String,
    /// A call across relays: the peer's addresses come later, sealed in a
    /// `call_path` (`wzp_proto::path_addrs`); the path waits for them.
    pub late: Option<tokio::sync::watch::Receiver<Option<PathAddrs>>>,
    /// Sends this side's birthday probes from the signalling socket (none:
    /// this side cannot take the spraying half of a birthday search).
    pub raw: Option<quic::RawSender>,
    /// Set once this side sprayed: a dial from the peer's address on any
    /// port is then taken (the searching side dials from a port no one
    /// could know).
    pub sprayed: Arc<AtomicBool>,
}

impl DirectPath {
    /// Where the dialer dials ([`dial_targets`]).
    fn targets(&self) -> Vec<SocketAddr> {
        dial_targets(
            self.own_addr,
            self.peer_addr,
            &self.peer_local,
            self.sends_ipv6(),
        )
    }

    /// Where the acceptor punches ([`punch_targets`]).
    fn punch_targets(&self) -> Vec<SocketAddr> {
        punch_targets(self.peer_addr, &self.peer_local, self.sends_ipv6())
    }

    /// Whether the endpoint's socket can send IPv6 (dual-stack, or an IPv6
    /// relay's).
    fn sends_ipv6(&self) -> bool {
        self.endpoint.local_addr().is_ok_and(|a| a.is_ipv6())
    }

    /// Whether `remote` is one of the addresses the peer shared, or, once
    /// this side sprayed for a birthday search, any port of the address
    /// the relay saw the peer at.
    fn is_peer(&self, remote: SocketAddr) -> bool {
        accepts_from(
            self.peer_addr,
            &self.peer_local,
            self.sprayed.load(Ordering::Relaxed),
            remote,
        )
    }

    /// Whether a birthday search can help: the peer is at an IPv4 address
    /// (where NATs stand) behind another NAT than ours (the relay saw the
    /// two of us at different addresses).
    fn birthday_applies(&self) -> bool {
        let Some(peer) = self.peer_addr.map(canonical) else {
            return false;
        };
        let own = self.own_addr.map(canonical);
        peer.is_ipv4() && own.is_none_or(|o| o.ip() != peer.ip())
    }

    /// This side's half of a birthday search, where one can help
    /// ([`Self::birthday_applies`]): a side whose NAT did not keep its
    /// socket's port towards the relay (a NAT that picks ports, most
    /// likely anew for every destination) searches; one whose port was
    /// kept (a home router's NAT, or none) sprays, when it can send probes
    /// from its signalling socket. Only when the peer takes the other half
    /// ([`birthday_pairs`]).
    fn birthday_half(&self) -> Option<BirthdayHalf> {
        let own = self.own_half()?;
        birthday_pairs(own, self.peer_half()?).then_some(own)
    }

    /// The half this side's NAT alone calls for, whatever the peer's.
    fn own_half(&self) -> Option<BirthdayHalf> {
        if !self.birthday_applies() {
            return None;
        }
        let own = self.own_addr.filter(|a| canonical(*a).is_ipv4())?;
        let local = self.endpoint.local_addr().ok()?;
        birthday_half_for(
            own,
            local,
            self.raw.is_some(),
            self.counts_independent(self.own_mapping),
        )
    }

    /// Whether a side's `mapping` lets it spray though its port moved:
    /// only when both sides were tested. A side whose own test showed one
    /// mapping sprays only if the peer was tested too (so the peer, of a
    /// build that reads the flag, searches); with a peer that was not (an
    /// older build, which reads a moved port as searching), both take the
    /// halves the ports alone say, as before the test. Both sides see both
    /// results, so they read the same.
    fn counts_independent(&self, mapping: Mapping) -> bool {
        counts_independent(mapping, self.own_mapping, self.peer_mapping)
    }

    /// The half the peer takes, as what it shared tells.
    fn peer_half(&self) -> Option<BirthdayHalf> {
        Some(peer_half_of(
            self.peer_addr?,
            &self.peer_local,
            self.counts_independent(self.peer_mapping),
        ))
    }

    /// Both parties' NATs moved their ports towards the relay, and neither
    /// showed one mapping for every destination: no birthday search can
    /// meet (each side's dial leaves from a port no one knows).
    fn both_move_ports(&self) -> bool {
        self.own_half() == Some(BirthdayHalf::Search)
            && self.peer_half() == Some(BirthdayHalf::Search)
    }
}

/// [`DirectPath::is_peer`]: whether a dial from `remote` is taken, given
/// the peer's relay-observed address and own addresses, and whether this
/// side sprayed towards the first.
fn accepts_from(
    peer_addr: Option<SocketAddr>,
    peer_local: &[SocketAddr],
    sprayed: bool,
    remote: SocketAddr,
) -> bool {
    let sprayed_to =
        sprayed && peer_addr.is_some_and(|a| a.ip().to_canonical() == remote.ip().to_canonical());
    sprayed_to
        || peer_addr
            .iter()
            .chain(peer_local)
            .any(|a| same_addr(*a, remote))
}

/// Where the dialer dials, in this order (the attempts start a quarter of a
/// second apart and the first to connect wins, [`dial_any`]): the peer's own
/// addresses when both are behind the same NAT (the relay saw the same IP
/// for both), or when no relay saw the peer; then its address as the relay
/// saw it; then, when this side can send IPv6, the peer's global IPv6
/// addresses, which no NAT stands in front of (a firewall's, which the
/// peer's punches open), so two parties behind NATs that map every
/// destination anew (symmetric, carrier-grade) still meet over IPv6.
fn dial_targets(
    own_addr: Option<SocketAddr>,
    peer_addr: Option<SocketAddr>,
    peer_local: &[SocketAddr],
    sends_ipv6: bool,
) -> Vec<SocketAddr> {
    let same_nat = matches!(
        (own_addr, peer_addr),
        (Some(a), Some(b)) if a.ip().to_canonical() == b.ip().to_canonical()
    );
    let mut t: Vec<SocketAddr> = if same_nat || peer_addr.is_none() {
        peer_local.to_vec()
    } else {
        Vec::new()
    };
    t.extend(peer_addr);
    if sends_ipv6 {
        t.extend(peer_local.iter().copied().filter(is_global_v6));
    } else {
        t.retain(|a| a.ip().to_canonical().is_ipv4());
    }
    distinct(t)
}

/// Where the acceptor punches: the peer's address as the relay saw it,
/// and its global IPv6 addresses when this side can send IPv6 (a firewall
/// in front of this side lets the peer's dial in once this side sent
/// towards it).
fn punch_targets(
    peer_addr: Option<SocketAddr>,
    peer_local: &[SocketAddr],
    sends_ipv6: bool,
) -> Vec<SocketAddr> {
    let mut t: Vec<SocketAddr> = peer_addr.into_iter().collect();
    if sends_ipv6 {
        t.extend(peer_local.iter().copied().filter(is_global_v6));
    }
    distinct(t)
}

/// `addrs` without repeats (an address and its IPv4-mapped form alike),
/// in their first order.
fn distinct(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !out.iter().any(|b| same_addr(a, *b)) {
            out.push(a);
        }
    }
    out
}

/// A global unicast IPv6 address (2000::/3): one that is reached across
/// the Internet with no NAT in front of it.
fn is_global_v6(addr: &SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V6(ip) => {
            ip.to_ipv4_mapped().is_none() && (ip.segments()[0] & 0xe000) == 0x2000
        }
        std::net::IpAddr::V4(_) => false,
    }
}

/// `addr` with an IPv4-mapped IPv6 address written as the IPv4 one: how a
/// dual-stack socket's IPv4 peers are printed and shared.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
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
        plan.peer_mapping = addrs.mapping;
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
        Role::Dialer if plan.birthday_half() == Some(BirthdayHalf::Spray) => {
            // A searching callee dials in from its search's socket, which
            // this side's rounds let through: the endpoint takes it once
            // the rounds begin (`spray_round`).
            tokio::select! {
                () = dial_loop(&plan, &identity, &io, finished) => {}
                () = accept_loop(&plan, &identity, &io) => {}
                () = stopped => {}
            }
            close_to_dialer(&plan.endpoint);
        }
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
                () = punch_loop(&plan, &identity, &io) => {}
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
    let mut schedule =
        PathSchedule::new(Role::Dialer, true, now_ms()).with_birthday(plan.birthday_half());
    let mut ports = spray_ports();
    while !finished() {
        // A path the peer's search dialed in carries on `accept_loop`.
        schedule.track(io.route.direct_up(), now_ms());
        let action = schedule.poll(now_ms());
        let attempt = match action {
            Some(PathAction::Dial) => {
                let window = Duration::from_millis(schedule.attempt_ms());
                dial_any(plan, identity, &targets, window).await
            }
            .map(|conn| (plan.endpoint.clone(), conn)),
            Some(PathAction::Birthday) => birthday_dial(plan, identity).await,
            Some(PathAction::Spray) => {
                spray_round(plan, &mut ports, &io.route).await;
                continue;
            }
            _ => {
                let next = schedule.next_at().map_or(ROUTE_WATCH, |at| {
                    Duration::from_millis(at.saturating_sub(now_ms()))
                });
                tokio::time::sleep(next.min(ROUTE_WATCH)).await;
                continue;
            }
        };
        match attempt {
            Ok((endpoint, conn)) => {
                schedule.up();
                carry(plan, io, &endpoint, conn).await;
                schedule.lost(now_ms(), true);
            }
            Err(why) => {
                let n = schedule.failed(now_ms());
                let next = (n == 1).then(|| plan.birthday_half()).flatten();
                let searched = action == Some(PathAction::Birthday);
                note_failure(io, plan, &why, next, n == 1 || searched);
            }
        }
    }
}

/// Says that an attempt failed, `why`: with what this side does next
/// (`next`, its half of a birthday search) when there is one, on stdout when
/// `loud` (the first failure after a start or loss, a search's), else only
/// in the debug log (retries).
fn note_failure(io: &PathIo, plan: &DirectPath, why: &str, next: Option<BirthdayHalf>, loud: bool) {
    let then = match next {
        Some(BirthdayHalf::Search) => {
            " while this side searches for a way out through its NAT (birthday search)"
        }
        Some(BirthdayHalf::Spray) => {
            " while this side sends birthday probes towards the peer's NAT"
        }
        None => "",
    };
    if next.is_some() {
        println!(
            "{}no direct path to {} yet ({why}); the media stays on the relay{then}",
            io.label, plan.peer
        );
    } else if loud {
        let both = if plan.both_move_ports() {
            " (both NATs moved their ports towards the relay, neither keeping one mapping \
             for every destination: no birthday search can meet)"
        } else {
            ""
        };
        println!(
            "{}no direct path to {} ({why}); the media stays on the relay{both}",
            io.label, plan.peer
        );
    } else {
        tracing::debug!("direct path: {why}");
    }
}

/// How far apart the dialer's attempts at the peer's addresses start.
const DIAL_STAGGER: Duration = Duration::from_millis(250);
/// When the peer's relay-observed address is dialed a second time, after
/// the first: the first QUIC Initial often reaches the peer's NAT before
/// the peer's punch opened it, and QUIC would retransmit it only after a
/// second (three times the 333 ms initial RTT).
const REDIAL_AFTER: Duration = Duration::from_millis(200);

/// When each attempt of [`dial_any`] starts: every target
/// [`DIAL_STAGGER`] after the one before, and the relay-observed address
/// `observed` once more [`REDIAL_AFTER`] its first attempt.
fn dial_plan(targets: &[SocketAddr], observed: Option<SocketAddr>) -> Vec<(Duration, SocketAddr)> {
    let mut plan: Vec<(Duration, SocketAddr)> = targets
        .iter()
        .enumerate()
        .map(|(i, &addr)| (DIAL_STAGGER * u32::try_from(i).unwrap_or(u32::MAX), addr))
        .collect();
    let again = observed.and_then(|o| plan.iter().find(|(_, a)| same_addr(*a, o)).copied());
    if let Some((at, addr)) = again {
        plan.push((at + REDIAL_AFTER, addr));
        plan.sort_by_key(|(at, _)| *at);
    }
    plan
}

/// Dials every target ([`dial_plan`]), and proves on the first connection
/// that comes up; the others are dropped before any proof (two proven
/// connections at once would leave each side carrying a different one).
/// Each attempt has `window` to connect ([`ATTEMPT`], or less before a
/// birthday search: `PathSchedule::attempt_ms`), the proof [`ATTEMPT`].
/// The error says what each target did.
async fn dial_any(
    plan: &DirectPath,
    identity: &Identity,
    targets: &[SocketAddr],
    window: Duration,
) -> std::result::Result<quinn::Connection, String> {
    let cfg = quic::direct_client_config().map_err(|e| format!("{e:#}"))?;
    let mut attempts = tokio::task::JoinSet::new();
    for (start, addr) in dial_plan(targets, plan.peer_addr) {
        let (endpoint, cfg, room) = (plan.endpoint.clone(), cfg.clone(), plan.room.clone());
        attempts.spawn(async move {
            tokio::time::sleep(start).await;
            let connecting = match endpoint.connect_with(cfg, addr, &room) {
                Ok(c) => c,
                Err(e) => return (addr, Err(format!("dialing: {e}"))),
            };
            match tokio::time::timeout(window, connecting).await {
                Ok(Ok(conn)) => (addr, Ok(conn)),
                Ok(Err(e)) => (addr, Err(e.to_string())),
                Err(_) => (
                    addr,
                    Err(format!("no answer within {} s", window.as_secs_f32())),
                ),
            }
        });
    }
    let mut why = Vec::new();
    let conn = loop {
        match attempts.join_next().await {
            Some(Ok((_, Ok(conn)))) => break conn,
            Some(Ok((addr, Err(e)))) => {
                let e = format!("{}: {e}", canonical(addr));
                // A second attempt at an address failing alike says nothing new.
                if !why.contains(&e) {
                    why.push(e);
                }
            }
            Some(Err(e)) => why.push(format!("an attempt failed: {e}")),
            None => return Err(why.join("; ")),
        }
    };
    // The attempts still under way end here, before any proof.
    drop(attempts);
    let remote = canonical(conn.remote_address());
    match tokio::time::timeout(ATTEMPT, prove_dialed(plan, identity, &conn)).await {
        Ok(Ok(())) => Ok(conn),
        Ok(Err(e)) => Err(format!("{remote}: {e:#}")),
        Err(_) => Err(format!("{remote}: no proof within {} s", ATTEMPT.as_secs())),
    }
}

/// The dialer's half of the proof on a connection it dialed.
async fn prove_dialed(
    plan: &DirectPath,
    identity: &Identity,
    conn: &quinn::Connection,
) -> Result<()> {
    let proof = proof(conn, identity, plan, Role::Dialer)?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&proof.hello()).await?;
    send.finish()?;
    check_hello(conn, &proof, &mut recv).await
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
async fn punch_loop(plan: &DirectPath, identity: &Identity, io: &PathIo) {
    let route = &io.route;
    let targets = plan.punch_targets();
    if targets.is_empty() {
        return std::future::pending().await;
    }
    let cfg = match quic::direct_client_config() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!("no punching: {e}");
            return std::future::pending().await;
        }
    };
    let clock = Instant::now();
    let now_ms = || clock.elapsed().as_millis() as u64;
    let mut schedule =
        PathSchedule::new(Role::Acceptor, true, now_ms()).with_birthday(plan.birthday_half());
    let mut ports = spray_ports();
    loop {
        schedule.track(route.direct_up(), now_ms());
        match schedule.poll(now_ms()) {
            Some(PathAction::Punch) => {
                for &addr in &targets {
                    if let Ok(attempt) = plan.endpoint.connect_with(cfg.clone(), addr, &plan.room) {
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(PUNCH_LIFE, attempt).await;
                        });
                    }
                }
            }
            Some(PathAction::Spray) => spray_round(plan, &mut ports, route).await,
            Some(PathAction::Birthday) => match birthday_dial(plan, identity).await {
                // The searching callee dialed its caller: it carries here,
                // the caller accepts.
                Ok((endpoint, conn)) => {
                    schedule.up();
                    carry(plan, io, &endpoint, conn).await;
                    schedule.lost(now_ms(), true);
                }
                Err(why) => note_failure(io, plan, &why, None, true),
            },
            _ => {}
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
                let remote = canonical(incoming.remote_address());
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
                    let remote = canonical(incoming.remote_address());
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
                    carry(&plan, &io, &plan.endpoint, conn).await;
                })));
            }
        }
    }
}

/// This side's own addresses, shared with the peer beside the address the
/// relay saw (`observed`), each with the signalling socket's port:
/// - the address the host sends from towards the relay, for a peer behind
///   the same NAT; left out when it is the one the relay saw (no NAT
///   between) or cannot be told;
/// - when the socket is dual-stack and the relay is reached over IPv4, the
///   global IPv6 address the host sends from (no NAT in front of it: a
///   direct path over IPv6 when both parties have one, whatever their IPv4
///   NATs do).
///
/// Each is found by connecting a UDP socket, which sends nothing.
pub(crate) fn own_local_addrs(
    endpoint: &quinn::Endpoint,
    relay: SocketAddr,
    observed: Option<SocketAddr>,
) -> Vec<SocketAddr> {
    let Ok(local) = endpoint.local_addr() else {
        return Vec::new();
    };
    let relay = canonical(relay);
    let mut out = Vec::new();
    if let Some(ip) = wzp_relay::dial::source_towards(relay) {
        let own = SocketAddr::new(ip, local.port());
        if !observed.is_some_and(|o| same_addr(o, own)) {
            out.push(own);
        }
    }
    if local.is_ipv6() && relay.is_ipv4() {
        // Any global destination picks the address the host's default route
        // sends from; this one (documentation prefix) is never sent to.
        let probe = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 9));
        if let Some(ip) = wzp_relay::dial::source_towards(probe) {
            let own = SocketAddr::new(ip, local.port());
            if is_global_v6(&own) {
                out.push(own);
            }
        }
    }
    out
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
/// `endpoint` is the one it runs on (the signalling endpoint, or a
/// birthday search's socket).
async fn carry(
    plan: &DirectPath,
    io: &PathIo,
    endpoint: &quinn::Endpoint,
    conn: quinn::Connection,
) {
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
    let local = endpoint.local_addr().map(|a| a.port()).unwrap_or(0);
    println!(
        "{}direct path to {} up (local port {local}, peer {}): the media leaves the relay",
        io.label,
        plan.peer,
        canonical(conn.remote_address())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_ipv6_is_2000_slash_3_only() {
        for (addr, global) in [
            ("[2001:db8:a::2]:5000", true),
            ("[2a00:1450::1]:1", true),
            ("[3fff::1]:1", true),
            ("[4000::1]:1", false),
            ("[fe80::1]:1", false),
            ("[fd00::1]:1", false),
            ("[::1]:1", false),
            ("[::]:1", false),
            ("[ff02::1]:1", false),
            ("[::ffff:10.0.0.1]:1", false),
            ("10.0.0.1:1", false),
            ("8.8.8.8:53", false),
        ] {
            assert_eq!(is_global_v6(&a(addr)), global, "{addr}");
        }
    }

    #[test]
    fn the_dialer_tries_the_nat_address_then_global_ipv6() {
        let own = Some(a("10.0.1.2:4000"));
        let peer = Some(a("10.0.2.2:5000"));
        let local = [a("192.168.2.2:6000"), a("[2001:db8:b::2]:6000")];
        // Different NATs: not the peer's own IPv4 network, but its IPv6.
        assert_eq!(
            dial_targets(own, peer, &local, true),
            vec![a("10.0.2.2:5000"), a("[2001:db8:b::2]:6000")]
        );
        // An IPv4-only socket cannot send to it.
        assert_eq!(
            dial_targets(own, peer, &local, false),
            vec![a("10.0.2.2:5000")]
        );
        // Behind the same NAT: its own network first, then the NAT, then
        // IPv6 (listed once).
        let same = Some(a("10.0.2.2:4001"));
        assert_eq!(
            dial_targets(same, peer, &local, true),
            vec![
                a("192.168.2.2:6000"),
                a("[2001:db8:b::2]:6000"),
                a("10.0.2.2:5000")
            ]
        );
        assert_eq!(
            dial_targets(same, peer, &local, false),
            vec![a("192.168.2.2:6000"), a("10.0.2.2:5000")]
        );
        // A link-local or unique-local IPv6 address is not dialed across NATs.
        let site = [a("[fe80::2]:6000"), a("[fd00::2]:6000")];
        assert_eq!(
            dial_targets(own, peer, &site, true),
            vec![a("10.0.2.2:5000")]
        );
        // The relay's view in IPv4-mapped form is the same address.
        let mapped = Some(a("[::ffff:10.0.2.2]:5000"));
        assert_eq!(
            dial_targets(own, mapped, &[a("10.0.2.2:5000")], true).len(),
            1
        );
        // Nothing shared: nothing to dial.
        assert!(dial_targets(own, None, &[], true).is_empty());
    }

    #[test]
    fn a_dial_is_taken_from_the_shared_addresses_and_after_spraying_from_any_port_of_the_peers() {
        let peer = Some(a("10.0.1.2:40000"));
        let local = [a("192.168.1.2:40000")];
        // (remote, taken before spraying, taken after)
        let cases = [
            ("10.0.1.2:40000", true, true),
            ("[::ffff:10.0.1.2]:40000", true, true),
            ("192.168.1.2:40000", true, true),
            // The search's socket: another port of the peer's address.
            ("10.0.1.2:51234", false, true),
            ("[::ffff:10.0.1.2]:1024", false, true),
            // Anyone else stays refused before any handshake.
            ("10.0.1.3:40000", false, false),
            ("192.168.1.2:51234", false, false),
            ("[2001:db8::1]:40000", false, false),
        ];
        for (remote, before, after) in cases {
            let r = a(remote);
            assert_eq!(accepts_from(peer, &local, false, r), before, "{remote}");
            assert_eq!(accepts_from(peer, &local, true, r), after, "{remote}");
        }
        // With no observed address there is nothing to have sprayed to.
        assert!(!accepts_from(None, &local, true, a("10.0.1.2:51234")));
    }

    #[test]
    fn the_dialer_dials_the_observed_address_twice_and_the_rest_staggered() {
        let ms = Duration::from_millis;
        let (own, obs, v6) = (
            a("192.168.2.2:40000"),
            a("10.0.2.2:40000"),
            a("[2001:db8:b::2]:40000"),
        );
        assert_eq!(
            dial_plan(&[own, obs, v6], Some(obs)),
            vec![(ms(0), own), (ms(250), obs), (ms(450), obs), (ms(500), v6)]
        );
        assert_eq!(
            dial_plan(&[obs, v6], Some(a("[::ffff:10.0.2.2]:40000"))),
            vec![(ms(0), obs), (ms(200), obs), (ms(250), v6)]
        );
        // No observed address (or not among the targets): each once.
        assert_eq!(
            dial_plan(&[own, v6], None),
            vec![(ms(0), own), (ms(250), v6)]
        );
        assert_eq!(dial_plan(&[own], Some(obs)), vec![(ms(0), own)]);
    }

    #[test]
    fn the_acceptor_punches_the_nat_address_and_global_ipv6() {
        let peer = Some(a("10.0.1.2:4000"));
        let local = [a("192.168.1.2:4000"), a("[2001:db8:a::2]:4000")];
        assert_eq!(
            punch_targets(peer, &local, true),
            vec![a("10.0.1.2:4000"), a("[2001:db8:a::2]:4000")]
        );
        assert_eq!(punch_targets(peer, &local, false), vec![a("10.0.1.2:4000")]);
        assert_eq!(
            punch_targets(None, &local, true),
            vec![a("[2001:db8:a::2]:4000")]
        );
        assert!(punch_targets(None, &local[..1], true).is_empty());
    }

    #[test]
    fn canonical_writes_mapped_ipv4_as_ipv4() {
        assert_eq!(canonical(a("[::ffff:10.0.2.2]:5000")), a("10.0.2.2:5000"));
        assert_eq!(canonical(a("[2001:db8::1]:5")), a("[2001:db8::1]:5"));
        assert_eq!(canonical(a("10.0.2.2:5000")), a("10.0.2.2:5000"));
    }
}
