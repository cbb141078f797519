//! The federation shell: quinn links around the sans-IO [`FederationCore`].
//!
//! One hub task owns the core. Connections reach it two ways: the endpoint
//! hands over every accepted `_federation` connection
//! ([`FederationService::accept`]), and the hub dials the peers the core
//! asks for ([`Action::Dial`]) from the relay's own endpoint (so a peer sees
//! the relay's listening address) with [`quic::federation_client_config`]:
//! the peer's certificate is pinned and this relay presents its own.
//!
//! Before the core hears of a connection the shell reads the certificate
//! the peer *proved* in the handshake ([`quic::peer_certificate_fingerprint`]);
//! a connection with none is refused at once. The core then decides
//! (unknown certificate: refused with the config snippet; duplicate link:
//! tie-break). Each connection carries the control messages on one
//! bidirectional stream, opened by the dialer, framed and bounded by
//! [`FederationDecoder`]; a reader and a writer task per connection turn it
//! into [`Input::Message`]s and [`Action::Send`]s.
//!
//! Global rooms: the room service reports a global room's local members
//! ([`FederationService::local_room`], [`Input::LocalRoom`]) and the hub
//! hands the room service each new roster of remote members
//! ([`Action::RoomChanged`]), which every local member then sees in its
//! `RoomUpdate` with the relay label of each.
//!
//! Media: every connection gets a link handle (from the room table's handle
//! space) and is an egress destination on every forwarding shard; its
//! datagrams go into the shard that carries their room (read from the
//! forward tag). After every step of the core the hub rebuilds the routing
//! table the `federation.dedup` / `federation.forward` stages use (up links,
//! bridged rooms with their federation members and next hops) and publishes
//! it to the shards when it changed (docs/FEDERATION.md, "Media").

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use wzp_proto::close::CloseCode;
use wzp_proto::federation::{
    encode_federation_frame, FederatedParticipant, FederationDecoder, FederationMessage, RelayId,
    RoomId,
};
use wzp_proto::identity::RelayCertificate;
use wzp_proto::sni;
use wzp_proto::TlsFingerprint;
use wzp_stages::federation::{FederationTable, PeerRoute, RoomRoute};
use wzp_stages::net::quic::{self, EgressPeer, IngressFeed, PeerIoStats};

use super::{
    Action, Counters, FederationConfig, FederationCore, Input, LinkConn, LinkStatus, PeerChanges,
    PeerSpec, PeerView, Route, MEDIA_SAMPLE,
};
use crate::endpoint::Services;
use crate::rooms::RemoteMember;

/// Control messages queued for one connection before it counts as stuck
/// (a peer that stops reading): the link is then closed.
const OUT_QUEUE: usize = 4096;
/// Events queued for the hub.
const EVENT_QUEUE: usize = 8192;
/// How long a dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer of a link's control stream.
const READ_CHUNK: usize = 16 * 1024;

/// What the hub shows the HTTP views and metrics.
#[derive(Clone, Debug)]
pub struct FederationView {
    /// This relay's id on the federation wire.
    pub id: RelayId,
    /// Every configured peer's link.
    pub peers: Vec<PeerView>,
    /// Refusals and drops by reason.
    pub counters: Counters,
    /// Cross-relay call signals carried and refused, by reason.
    pub calls: super::calls::CallCounters,
    /// Voice-message steps carried and dropped, by reason.
    pub mail: super::mail::MailCounters,
    /// Media datagrams per peer: (received, sent) on its current link.
    pub packets: HashMap<RelayId, (u64, u64)>,
    /// Global rooms with participants anywhere in the mesh.
    pub active_rooms: usize,
}

/// A cross-relay call as this relay carries it (for `/calls`).
#[derive(Clone, Debug)]
pub struct LegView {
    /// The call's id.
    pub call_id: String,
    /// For a fork of the call ([`wzp_proto::federation::CallSignal::fork`]):
    /// the relay (its label, else its id) whose devices it rings.
    pub fork: Option<String>,
    /// Who offered.
    pub caller: wzp_proto::Fingerprint,
    /// Who is called.
    pub callee: wzp_proto::Fingerprint,
    /// Answered (the call room is bridged along the path).
    pub answered: bool,
    /// A fork whose relay answered `busy`, open until the call's outcome.
    pub busy: bool,
    /// Neither party is on this relay.
    pub between: bool,
    /// The neighbour towards the caller (its config label), if any.
    pub toward_caller: Option<String>,
    /// The neighbour towards the callee, if any.
    pub toward_callee: Option<String>,
    /// The path lost a link and a new one is looked for.
    pub path_lost: bool,
    /// When this relay first carried it.
    pub since: Instant,
}

/// The running federation service.
pub struct FederationService {
    events: mpsc::Sender<HubEvent>,
    view: Arc<Mutex<FederationView>>,
    /// The global rooms' ids, as the room table names rooms (a reload
    /// changes them: the hub keeps it).
    global: Arc<Mutex<HashSet<String>>>,
    /// Call rooms (`call-<id>`) of answered cross-relay calls: bridged along
    /// their call's path while the call lasts (the hub keeps it).
    call_rooms: Arc<Mutex<HashSet<String>>>,
}

enum HubEvent {
    /// A connection finished its handshake (accepted or dialed).
    Connected {
        conn: quinn::Connection,
        dialed_by_me: bool,
    },
    /// An input for the core from a link task.
    Input(Input),
    /// Where a fingerprint is registered, as the core sees it now.
    Route(wzp_proto::Fingerprint, oneshot::Sender<Route>),
    Origins(wzp_proto::Fingerprint, oneshot::Sender<Vec<RelayId>>),
    /// Every fingerprint known, with the relay it is on.
    Presence(oneshot::Sender<Vec<(wzp_proto::Fingerprint, RelayId)>>),
    /// The calls carried across federation, as `/calls` shows them.
    Legs(oneshot::Sender<Vec<LegView>>),
    /// A reloaded config's peers ([`FederationCore::set_peers`]).
    SetPeers(Vec<PeerSpec>, oneshot::Sender<PeerChanges>),
    /// A reloaded config's global rooms
    /// ([`FederationCore::set_global_rooms`]): (added, dropped).
    SetGlobalRooms(Vec<RoomId>, oneshot::Sender<(Vec<RoomId>, Vec<RoomId>)>),
    /// A bridged room got (`Some`) or lost (`None`) its federation member
    /// in the fan-out of shard `shard`.
    RoomMember {
        room: RoomId,
        member: Option<u32>,
        shard: usize,
    },
}

struct LiveLink {
    conn: quinn::Connection,
    out: mpsc::Sender<FederationMessage>,
    remote: SocketAddr,
    /// The link's handle for media (egress key, `meta.peer` of its
    /// datagrams); `None` when the relay had no free handle.
    handle: Option<u32>,
    stats: Arc<PeerIoStats>,
    media: tokio::task::JoinHandle<()>,
}

/// Which shard carries each bridged room with local members, shared with
/// the links' datagram readers: they check `version` per datagram (one
/// atomic load) and take the lock only when it moved.
#[derive(Default)]
struct ShardMap {
    version: AtomicU64,
    map: Mutex<Arc<HashMap<RoomId, usize>>>,
}

impl FederationService {
    /// Starts the hub on the current tokio runtime. `endpoint` is the
    /// relay's own endpoint (dials leave from its address); `cert` is the
    /// certificate this relay presents when it dials.
    pub fn start(
        cfg: FederationConfig,
        endpoint: quinn::Endpoint,
        cert: &RelayCertificate,
        services: Weak<Services>,
    ) -> FederationService {
        let mut dial_configs = HashMap::new();
        add_dial_configs(&mut dial_configs, cert, &cfg.peers);
        let global: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(
            cfg.global_rooms.iter().map(|r| r.to_string()).collect(),
        ));
        let now = Instant::now();
        let core = FederationCore::new(cfg, now);
        let view = Arc::new(Mutex::new(FederationView {
            id: core.id(),
            peers: core.peers(),
            counters: core.counters().clone(),
            calls: core.call_counters().clone(),
            mail: core.mail_counters().clone(),
            packets: HashMap::new(),
            active_rooms: 0,
        }));
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let call_rooms = Arc::new(Mutex::new(HashSet::new()));
        let hub = Hub {
            call_rooms: call_rooms.clone(),
            core,
            events: tx.clone(),
            endpoint,
            dial_configs,
            cert: cert.clone(),
            global: global.clone(),
            links: HashMap::new(),
            next_conn: 1,
            view: view.clone(),
            services,
            members: HashMap::new(),
            shard_map: Arc::new(ShardMap::default()),
            last_table: None,
        };
        tokio::spawn(hub.run(rx));
        FederationService {
            events: tx,
            view,
            global,
            call_rooms,
        }
    }

    /// Whether `room` (a room id as clients name it) is a global room.
    pub fn is_global(&self, room: &str) -> bool {
        self.global
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(room)
            || self.is_bridged_call(room)
    }

    /// Whether `room` is the call room of an answered cross-relay call.
    pub fn is_bridged_call(&self, room: &str) -> bool {
        room.starts_with(sni::CALL_PREFIX)
            && self
                .call_rooms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(room)
    }

    /// A step of a cross-relay call from a party on this relay (the signal
    /// service's [`crate::signal::Action::Federate`]). Never blocks; a full
    /// queue drops it (the call then times out at both ends).
    pub fn call_signal(&self, signal: wzp_proto::federation::CallSignal) {
        let call_id = signal.call_id.clone();
        self.call_input(
            Input::LocalCall(signal),
            &call_id,
            "a call signal is dropped",
        );
    }

    /// Queues a call's step for the hub, or says what was lost.
    fn call_input(&self, input: Input, call_id: &str, lost: &str) {
        if self.events.try_send(HubEvent::Input(input)).is_err() {
            tracing::warn!(call_id, "federation queue full; {lost}");
        }
    }

    /// An offer whose callee's devices ring on this relay too: the
    /// callee's other relays ring as well ([`Input::LocalFork`]). Never
    /// blocks; a full queue drops it (the devices here still ring).
    pub fn call_fork(&self, signal: wzp_proto::federation::CallSignal, ringing_here: bool) {
        let call_id = signal.call_id.clone();
        let input = if ringing_here {
            Input::LocalFork(signal)
        } else {
            Input::LocalForkElsewhere(signal)
        };
        self.call_input(input, &call_id, "a call's forks are dropped");
    }

    /// The callee's devices here ring now for a call forked while it was
    /// busy here ([`Input::DevicesRingHere`]). Never blocks; a full queue
    /// drops it (busy forks elsewhere may then hear the call went
    /// unanswered early).
    pub fn devices_ring_here(&self, call_id: String) {
        let id = call_id.clone();
        self.call_input(
            Input::DevicesRingHere { call_id },
            &id,
            "a call's devices ringing here is not told",
        );
    }

    /// A voice message's step from the signal service (a key query, an
    /// answer, a part, an outcome). Never blocks; a full queue drops it
    /// (the client's wait for the answer or `stored` ends it).
    pub fn mail(&self, signal: wzp_proto::federation::MailSignal) {
        let kind = signal.event.kind();
        if self
            .events
            .try_send(HubEvent::Input(Input::LocalMail(signal)))
            .is_err()
        {
            tracing::warn!(
                kind,
                "federation queue full; a voice-message step is dropped"
            );
        }
    }

    /// A user registered on (`online`) or left this relay's presence: the
    /// mesh learns the route to it. Never blocks.
    pub fn local_presence(&self, fingerprint: wzp_proto::Fingerprint, online: bool) {
        let input = Input::LocalPresence {
            fingerprint,
            online,
        };
        if self.events.try_send(HubEvent::Input(input)).is_err() {
            tracing::warn!(%fingerprint, "federation queue full; a presence change is late");
        }
    }

    /// Where `fingerprint` is registered: here, on a linked relay, through
    /// others (the path), or nowhere known.
    pub async fn route(&self, fingerprint: wzp_proto::Fingerprint) -> Route {
        let (tx, rx) = oneshot::channel();
        if self
            .events
            .send(HubEvent::Route(fingerprint, tx))
            .await
            .is_err()
        {
            return Route::NotFound;
        }
        rx.await.unwrap_or(Route::NotFound)
    }

    /// Every relay `fingerprint` is registered on, as far as the mesh tells
    /// (a call to them rings each: [`FederationCore::origins_of`]).
    pub async fn origins(&self, fingerprint: wzp_proto::Fingerprint) -> Vec<RelayId> {
        let (tx, rx) = oneshot::channel();
        if self
            .events
            .send(HubEvent::Origins(fingerprint, tx))
            .await
            .is_err()
        {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The cross-relay calls this relay carries (a party here, or between
    /// two other relays).
    pub async fn legs(&self) -> Vec<LegView> {
        let (tx, rx) = oneshot::channel();
        if self.events.send(HubEvent::Legs(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Every fingerprint the mesh knows, with the relay it is registered on
    /// (this relay's own included).
    pub async fn presence(&self) -> Vec<(wzp_proto::Fingerprint, RelayId)> {
        let (tx, rx) = oneshot::channel();
        if self.events.send(HubEvent::Presence(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The local members of global room `room` changed: tell the mesh.
    /// Never blocks (called with the room table locked); a full queue
    /// drops the report and the next change sends the whole list again.
    pub fn local_room(&self, room: &str, participants: Vec<FederatedParticipant>) {
        let Some(id) = federation_room_id(room) else {
            return;
        };
        let input = Input::LocalRoom {
            room: id,
            participants,
        };
        if self.events.try_send(HubEvent::Input(input)).is_err() {
            tracing::warn!(room, "federation queue full; a roster change is late");
        }
    }

    /// Bridged room `room` (its id as clients name it) got (`Some`) or lost
    /// (`None`) its federation member in shard `shard`'s fan-out. Never
    /// blocks (called with the room table locked).
    pub fn room_member(&self, room: &str, member: Option<u32>, shard: usize) {
        let Some(id) = federation_room_id(room) else {
            return;
        };
        let ev = HubEvent::RoomMember {
            room: id,
            member,
            shard,
        };
        if self.events.try_send(ev).is_err() {
            tracing::warn!(room, "federation queue full; a room's media route is late");
        }
    }

    /// Hands over a connection the endpoint accepted with SNI `_federation`.
    pub async fn accept(&self, conn: quinn::Connection) {
        let _ = self
            .events
            .send(HubEvent::Connected {
                conn,
                dialed_by_me: false,
            })
            .await;
    }

    /// Makes `peers` the relays this one federates with, with no restart
    /// ([`FederationCore::set_peers`]); `None` if the hub has stopped.
    pub async fn set_peers(&self, peers: Vec<PeerSpec>) -> Option<PeerChanges> {
        let (tx, rx) = oneshot::channel();
        self.events.send(HubEvent::SetPeers(peers, tx)).await.ok()?;
        rx.await.ok()
    }

    /// Makes `rooms` the global rooms this relay bridges, with no restart
    /// ([`FederationCore::set_global_rooms`]); the rooms (added, dropped),
    /// or `None` if the hub has stopped.
    pub async fn set_global_rooms(&self, rooms: Vec<RoomId>) -> Option<(Vec<RoomId>, Vec<RoomId>)> {
        let (tx, rx) = oneshot::channel();
        self.events
            .send(HubEvent::SetGlobalRooms(rooms, tx))
            .await
            .ok()?;
        rx.await.ok()
    }

    /// Whether the hub still runs (it ends only with the relay).
    pub fn is_running(&self) -> bool {
        !self.events.is_closed()
    }

    /// The links as the hub last saw them.
    pub fn view(&self) -> FederationView {
        self.view.lock().expect("federation view").clone()
    }
}

/// Dial configurations (our certificate, `tls` pinned) for the peers with
/// an address that have none yet.
fn add_dial_configs(
    configs: &mut HashMap<TlsFingerprint, quinn::ClientConfig>,
    cert: &RelayCertificate,
    peers: &[PeerSpec],
) {
    for p in peers {
        if p.address.is_none() || configs.contains_key(&p.tls) {
            continue;
        }
        match quic::federation_client_config(cert, p.tls) {
            Ok(c) => {
                configs.insert(p.tls, c);
            }
            Err(e) => tracing::error!(peer = %p.label, "cannot dial: {e}"),
        }
    }
}

struct Hub {
    core: FederationCore,
    events: mpsc::Sender<HubEvent>,
    endpoint: quinn::Endpoint,
    dial_configs: HashMap<TlsFingerprint, quinn::ClientConfig>,
    /// The certificate dials present (for peers added by a reload).
    cert: RelayCertificate,
    /// [`FederationService`]'s global rooms, which a reload changes.
    global: Arc<Mutex<HashSet<String>>>,
    links: HashMap<LinkConn, LiveLink>,
    next_conn: u64,
    view: Arc<Mutex<FederationView>>,
    services: Weak<Services>,
    call_rooms: Arc<Mutex<HashSet<String>>>,
    /// Bridged rooms' federation members: room -> (handle, shard).
    members: HashMap<RoomId, (u32, usize)>,
    shard_map: Arc<ShardMap>,
    /// The routing table last published to the shards.
    last_table: Option<FederationTable>,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::Receiver<HubEvent>) {
        // The relay's services are built around this hub (`Arc::new_cyclic`
        // in `Relay::start`): until that returns they cannot be reached, and
        // a link that came up then would get no media handle and no datagram
        // reader for its whole life. So nothing is dialed before they exist.
        let started = Instant::now();
        while self.services.upgrade().is_none() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // The first dials are due at once.
        self.core.tick(Instant::now());
        self.apply();
        let mut media_sample = tokio::time::interval(MEDIA_SAMPLE);
        media_sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .core
                .next_deadline()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    self.event(ev);
                }
                _ = media_sample.tick() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            // Whatever else is queued (a pong), and what the links took in,
            // before the timers judge any silence: a hub that woke late
            // must not read its own delay as the links'.
            while let Ok(ev) = rx.try_recv() {
                self.event(ev);
            }
            self.sample_media();
            self.core.tick(Instant::now());
            self.apply();
        }
    }

    /// Tells the core how many media datagrams each link took in so far.
    fn sample_media(&mut self) {
        let now = Instant::now();
        for (&conn, link) in &self.links {
            let packets = link.stats.packets_in.load(Ordering::Relaxed);
            self.core.handle(Input::MediaIn { conn, packets }, now);
        }
    }

    fn event(&mut self, ev: HubEvent) {
        let now = Instant::now();
        match ev {
            HubEvent::Connected { conn, dialed_by_me } => {
                let remote = conn.remote_address();
                let Some(tls) = quic::peer_certificate_fingerprint(&conn) else {
                    tracing::warn!(
                        %remote,
                        "refused a federation link: the peer presented no certificate"
                    );
                    quic::close(
                        &conn,
                        CloseCode::NotAuthorized,
                        b"a federation link needs the dialing relay's own certificate: \
                          dial with wzp-relay ([[peers]] in its config); clients use a room \
                          id or _signal",
                    );
                    return;
                };
                let id = LinkConn(self.next_conn);
                self.next_conn += 1;
                let out = spawn_link(conn.clone(), id, dialed_by_me, self.events.clone());
                let stats = Arc::new(PeerIoStats::default());
                let (handle, media) = self.start_media(&conn, &stats);
                self.links.insert(
                    id,
                    LiveLink {
                        conn,
                        out,
                        remote,
                        handle,
                        stats,
                        media,
                    },
                );
                tracing::debug!(%remote, %tls, dialed_by_me, "federation connection");
                self.core.handle(
                    Input::LinkUp {
                        conn: id,
                        tls,
                        dialed_by_me,
                    },
                    now,
                );
            }
            HubEvent::Input(input) => {
                if let Input::LinkDown { conn } = &input {
                    if let Some(link) = self.links.remove(conn) {
                        self.stop_media(link);
                    }
                }
                self.core.handle(input, now);
            }
            HubEvent::SetPeers(peers, reply) => {
                self.dial_configs
                    .retain(|tls, _| peers.iter().any(|p| p.tls == *tls && p.address.is_some()));
                add_dial_configs(&mut self.dial_configs, &self.cert, &peers);
                let changes = self.core.set_peers(peers, now);
                let _ = reply.send(changes);
            }
            HubEvent::SetGlobalRooms(rooms, reply) => {
                *self.global.lock().unwrap_or_else(|p| p.into_inner()) =
                    rooms.iter().map(|r| r.to_string()).collect();
                let (added, dropped) = self.core.set_global_rooms(rooms, now);
                // A room now bridged may have members already: they get the
                // room's federation member and are announced. One no longer
                // bridged loses both.
                for room in &added {
                    self.federate_existing(*room, &room.to_string(), now);
                }
                if let Some(services) = self.services.upgrade() {
                    for room in &dropped {
                        services.rooms.unfederate(&services, &room.to_string());
                    }
                }
                let _ = reply.send((added, dropped));
            }
            HubEvent::Route(fingerprint, reply) => {
                let _ = reply.send(self.core.route(&fingerprint));
            }
            HubEvent::Origins(fingerprint, reply) => {
                let _ = reply.send(self.core.origins_of(&fingerprint));
            }
            HubEvent::Presence(reply) => {
                let _ = reply.send(self.core.presence());
            }
            HubEvent::Legs(reply) => {
                let label = |r: Option<RelayId>| {
                    r.map(|r| {
                        self.core
                            .peer_label(r)
                            .map_or(r.to_string(), str::to_string)
                    })
                };
                let legs = self
                    .core
                    .call_legs()
                    .map(|(_, l)| LegView {
                        call_id: l.call_id.clone(),
                        fork: l.fork.and_then(|f| label(Some(f))),
                        caller: l.caller,
                        callee: l.callee,
                        answered: l.answered,
                        busy: l.busy,
                        between: !(l.caller_here || l.callee_here),
                        toward_caller: label(l.toward_caller),
                        toward_callee: label(l.toward_callee),
                        path_lost: l.lost.is_some(),
                        since: l.since,
                    })
                    .collect();
                let _ = reply.send(legs);
            }
            HubEvent::RoomMember {
                room,
                member,
                shard,
            } => {
                match member {
                    Some(h) => {
                        self.members.insert(room, (h, shard));
                    }
                    None => {
                        self.members.remove(&room);
                    }
                }
                let map: HashMap<RoomId, usize> =
                    self.members.iter().map(|(r, (_, s))| (*r, *s)).collect();
                *self.shard_map.map.lock().expect("shard map") = Arc::new(map);
                self.shard_map.version.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Carries out what the core asked for, then publishes the view.
    fn apply(&mut self) {
        for action in self.core.drain_actions() {
            match action {
                Action::Dial { peer, address, tls } => self.dial(peer, address, tls),
                Action::Send { conn, msg, .. } => {
                    let Some(link) = self.links.get(&conn) else {
                        continue;
                    };
                    if link.out.try_send(msg).is_err() {
                        // The peer stopped reading its control stream (or
                        // the link task ended): nothing queued can be
                        // trusted to arrive; drop the link.
                        tracing::warn!(remote = %link.remote, "federation link not draining; closing it");
                        quic::close(
                            &link.conn,
                            CloseCode::Protocol,
                            b"federation control stream not read",
                        );
                    }
                }
                Action::Close { conn, code, reason } => {
                    if let Some(link) = self.links.remove(&conn) {
                        if code == CloseCode::NotAuthorized {
                            tracing::warn!(remote = %link.remote, "refused a federation link: {reason}");
                        } else {
                            tracing::info!(remote = %link.remote, "closed a federation link: {reason}");
                        }
                        quic::close(&link.conn, code, reason.as_bytes());
                        self.stop_media(link);
                    }
                }
                Action::RoomChanged { room } => {
                    let Some(services) = self.services.upgrade() else {
                        continue;
                    };
                    let members = self
                        .core
                        .remote_participants(room)
                        .into_iter()
                        .map(|(p, relay_label)| RemoteMember::of(p, relay_label))
                        .collect();
                    services
                        .rooms
                        .set_remote_members(&services, &room.to_string(), members);
                }
                Action::Call(signal) => {
                    if let Some(services) = self.services.upgrade() {
                        services.signal.federated(signal);
                    }
                }
                Action::Mail(signal) => {
                    if let Some(services) = self.services.upgrade() {
                        services.signal.federated_mail(signal);
                    }
                }
                Action::Reachable { who, path } => {
                    if let Some(services) = self.services.upgrade() {
                        services.signal.reachable(who, path);
                    }
                }
                Action::CallBridge { room, name, up } => self.call_bridge(room, name, up),
                Action::CallRoomChanged { room, name } => {
                    let Some(services) = self.services.upgrade() else {
                        continue;
                    };
                    let members = self.remote_members(room);
                    services.rooms.set_remote_members(&services, &name, members);
                }
            }
        }
        self.publish_table();
        let mut packets = HashMap::new();
        for p in self.core.peers() {
            if let Some(link) = self.core.up_conn(p.id).and_then(|c| self.links.get(&c)) {
                packets.insert(
                    p.id,
                    (
                        link.stats.packets_in.load(Ordering::Relaxed),
                        link.stats.packets_out.load(Ordering::Relaxed),
                    ),
                );
            }
        }
        let mut view = self.view.lock().expect("federation view");
        view.peers = self.core.peers();
        view.counters = self.core.counters().clone();
        view.calls = self.core.call_counters().clone();
        view.mail = self.core.mail_counters().clone();
        view.packets = packets;
        view.active_rooms = self.core.active_rooms().len();
    }

    /// A new connection's media side: a handle, an egress route on every
    /// shard, and a task feeding its datagrams to the shards.
    fn start_media(
        &self,
        conn: &quinn::Connection,
        stats: &Arc<PeerIoStats>,
    ) -> (Option<u32>, tokio::task::JoinHandle<()>) {
        let Some(services) = self.services.upgrade() else {
            return (None, tokio::spawn(async {}));
        };
        let Some(handle) = services.rooms.alloc_link_handle() else {
            tracing::warn!(
                remote = %conn.remote_address(),
                "no free peer handle for a federation link's media (max_peers reached)"
            );
            return (None, tokio::spawn(async {}));
        };
        for shard in &services.media.shards {
            shard.add_egress(
                handle,
                EgressPeer {
                    conn: conn.clone(),
                    stats: stats.clone(),
                    observer: None,
                },
            );
        }
        let feeds: Vec<Arc<IngressFeed>> = services
            .media
            .shards
            .iter()
            .map(|s| s.feed().clone())
            .collect();
        let task = tokio::spawn(read_link_media(
            conn.clone(),
            handle,
            stats.clone(),
            feeds,
            self.shard_map.clone(),
        ));
        (Some(handle), task)
    }

    /// A connection ended: its egress routes and handle are released.
    fn stop_media(&self, link: LiveLink) {
        link.media.abort();
        let (Some(handle), Some(services)) = (link.handle, self.services.upgrade()) else {
            return;
        };
        for shard in &services.media.shards {
            shard.remove_egress(handle);
        }
        services.rooms.release_link_handle(handle);
    }

    /// Rebuilds the media routing table from the core and publishes it to
    /// the shards when it changed.
    fn publish_table(&mut self) {
        let Some(services) = self.services.upgrade() else {
            return;
        };
        let me = self.core.id();
        let mut table = FederationTable {
            me,
            ..Default::default()
        };
        let mut handle_of: HashMap<RelayId, u32> = HashMap::new();
        for p in self.core.peers() {
            let handle = self
                .core
                .up_conn(p.id)
                .and_then(|c| self.links.get(&c))
                .and_then(|l| l.handle);
            if let Some(h) = handle {
                table.links.insert(h, p.id);
                handle_of.insert(p.id, h);
            }
        }
        let rooms: Vec<RoomId> = self.core.bridged_rooms().copied().collect();
        for room in rooms {
            let peers: Vec<PeerRoute> = self
                .core
                .room_media_peers(room)
                .into_iter()
                .filter_map(|(relay, origins)| {
                    handle_of.get(&relay).map(|&link| PeerRoute {
                        link,
                        relay,
                        origins,
                    })
                })
                .collect();
            let member = self.members.get(&room).map(|(h, _)| *h);
            if let Some(h) = member {
                table.members.insert(h, room);
            }
            table.rooms.insert(room, RoomRoute { member, peers });
        }
        let changed = self.last_table.as_ref().is_none_or(|t| {
            t.me != table.me
                || t.links != table.links
                || t.rooms != table.rooms
                || t.members != table.members
        });
        if changed {
            services.media.publish_federation(table.clone());
            self.last_table = Some(table);
        }
    }

    /// A call room bridged (or no longer): the room service reports its
    /// local members from now on ([`FederationService::is_global`]), and
    /// those already in it are reported at once (the local party may have
    /// joined before the answer went through here).
    fn call_bridge(&mut self, room: RoomId, name: String, up: bool) {
        {
            let mut rooms = self.call_rooms.lock().unwrap_or_else(|p| p.into_inner());
            if up {
                rooms.insert(name.clone());
            } else {
                rooms.remove(&name);
            }
        }
        if up {
            self.federate_existing(room, &name, Instant::now());
        }
    }

    /// Room `room` (named `name` in the room table) became bridged while it
    /// may already have members: they get its federation member and are
    /// announced to the mesh.
    fn federate_existing(&mut self, room: RoomId, name: &str, now: Instant) {
        let Some(services) = self.services.upgrade() else {
            return;
        };
        let participants = services.rooms.federate_existing(&services, name);
        self.core
            .handle(Input::LocalRoom { room, participants }, now);
    }

    fn remote_members(&self, room: RoomId) -> Vec<RemoteMember> {
        self.core
            .remote_participants(room)
            .into_iter()
            .map(|(p, relay_label)| RemoteMember::of(p, relay_label))
            .collect()
    }

    fn dial(&self, peer: RelayId, address: String, tls: TlsFingerprint) {
        let Some(cfg) = self.dial_configs.get(&tls).cloned() else {
            return;
        };
        let endpoint = self.endpoint.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = async {
                let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host(&address)
                    .await
                    .map_err(|e| format!("cannot resolve {address}: {e}"))?
                    .collect();
                // An IPv4 socket cannot send to an IPv6 address: take an
                // address of its family, or say why none will do.
                let local = endpoint.local_addr().ok();
                let v4_only = local.is_some_and(|l| l.is_ipv4());
                let addr = found
                    .iter()
                    .find(|a| !v4_only || a.is_ipv4())
                    .copied()
                    .ok_or_else(|| match (found.first(), local) {
                        (None, _) => format!("{address} resolves to no address"),
                        (Some(a), Some(l)) => format!(
                            "{address} resolves only to IPv6 ({a}), and this relay listens on \
                             IPv4 ({l}); listen on [::]:{} to dial IPv6 peers",
                            l.port()
                        ),
                        (Some(a), None) => {
                            format!("{address} ({a}): no local address to dial from")
                        }
                    })?;
                let connecting = endpoint
                    .connect_with(cfg, addr, sni::FEDERATION)
                    .map_err(|e| format!("cannot dial {addr}: {e}"))?;
                match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
                    Ok(Ok(conn)) => Ok(conn),
                    Ok(Err(e)) => Err(format!("{addr}: {e}")),
                    Err(_) => Err(format!("{addr}: no handshake within {DIAL_TIMEOUT:?}")),
                }
            }
            .await;
            let ev = match result {
                Ok(conn) => HubEvent::Connected {
                    conn,
                    dialed_by_me: true,
                },
                Err(e) => {
                    tracing::warn!(%peer, "federation dial failed: {e}");
                    HubEvent::Input(Input::DialFailed { peer })
                }
            };
            let _ = events.send(ev).await;
        });
    }
}

/// Runs one connection's control stream: the dialer opens it, the other
/// side accepts it; decoded messages go to the hub, queued ones go out.
/// Returns the queue the hub sends on.
fn spawn_link(
    conn: quinn::Connection,
    id: LinkConn,
    dialed_by_me: bool,
    events: mpsc::Sender<HubEvent>,
) -> mpsc::Sender<FederationMessage> {
    let (out_tx, mut out_rx) = mpsc::channel::<FederationMessage>(OUT_QUEUE);
    tokio::spawn(async move {
        let streams = if dialed_by_me {
            conn.open_bi().await
        } else {
            conn.accept_bi().await
        };
        if let Ok((mut send, mut recv)) = streams {
            let writer = tokio::spawn(async move {
                while let Some(msg) = out_rx.recv().await {
                    let Ok(frame) = encode_federation_frame(&msg) else {
                        continue;
                    };
                    if send.write_all(&frame).await.is_err() {
                        return;
                    }
                }
            });
            read_link(&conn, id, &mut recv, &events).await;
            writer.abort();
        }
        // A peer that refused or closed the link says why: the operator of
        // this relay needs it (e.g. the config snippet the peer wants).
        if let Some(quinn::ConnectionError::ApplicationClosed(c)) = conn.close_reason() {
            let code = CloseCode::from_code(c.error_code.into_inner());
            let reason = String::from_utf8_lossy(&c.reason);
            if code == Some(CloseCode::NotAuthorized) {
                tracing::warn!(remote = %conn.remote_address(), "the peer refused the federation link: {reason}");
            } else {
                tracing::info!(remote = %conn.remote_address(), "the peer closed the federation link: {reason}");
            }
        }
        let _ = events
            .send(HubEvent::Input(Input::LinkDown { conn: id }))
            .await;
    });
    out_tx
}

async fn read_link(
    conn: &quinn::Connection,
    id: LinkConn,
    recv: &mut quinn::RecvStream,
    events: &mpsc::Sender<HubEvent>,
) {
    let mut dec = FederationDecoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match recv.read(&mut buf).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => return,
        };
        if let Err(e) = dec.push(&buf[..n]) {
            quic::close(conn, CloseCode::Protocol, e.to_string().as_bytes());
            return;
        }
        loop {
            match dec.next_message() {
                Ok(Some(msg)) => {
                    let input = Input::Message { conn: id, msg };
                    if events.send(HubEvent::Input(input)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) if !e.is_fatal() => {
                    let _ = events
                        .send(HubEvent::Input(Input::Garbage { conn: id }))
                        .await;
                }
                Err(e) => {
                    quic::close(conn, CloseCode::Protocol, e.to_string().as_bytes());
                    return;
                }
            }
        }
    }
}

/// Feeds a link's datagrams (forwarded media, docs/WIRE.md §9.3) into the
/// shard that carries their room: the shard of the room's local members,
/// else the room id's own shard (a relay that only carries the room).
/// `federation.dedup` checks everything else.
async fn read_link_media(
    conn: quinn::Connection,
    handle: u32,
    stats: Arc<PeerIoStats>,
    feeds: Vec<Arc<IngressFeed>>,
    shards: Arc<ShardMap>,
) {
    let mut version = u64::MAX;
    let mut map: Arc<HashMap<RoomId, usize>> = Arc::default();
    while let Ok(d) = conn.read_datagram().await {
        stats.packets_in.fetch_add(1, Ordering::Relaxed);
        stats.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
        let v = shards.version.load(Ordering::Acquire);
        if v != version {
            map = shards.map.lock().expect("shard map").clone();
            version = v;
        }
        let shard = match d.get(2..2 + 16) {
            Some(b) => {
                let mut id = [0u8; 16];
                id.copy_from_slice(b);
                let room = RoomId(id);
                map.get(&room)
                    .copied()
                    .unwrap_or_else(|| crate::rooms::shard_of_id(&room, feeds.len()))
            }
            None => 0,
        };
        let fed = feeds.get(shard).is_some_and(|feed| feed.push(handle, &d));
        if !fed {
            stats.dropped_in.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A room's id on the federation wire from its name in the room table: a
/// global room's SNI hash, or a call room's `call-<id>` hashed.
fn federation_room_id(room: &str) -> Option<RoomId> {
    if room.starts_with(sni::CALL_PREFIX) {
        Some(RoomId::of_name(room))
    } else {
        room.parse().ok()
    }
}

impl LinkStatus {
    /// `wzp_federation_peer_status`: 0 down, 1 handshaking, 2 up.
    pub fn gauge(self) -> u8 {
        match self {
            LinkStatus::Down => 0,
            LinkStatus::Handshaking => 1,
            LinkStatus::Up => 2,
        }
    }

    /// The name `/peers` shows.
    pub fn name(self) -> &'static str {
        match self {
            LinkStatus::Down => "down",
            LinkStatus::Handshaking => "handshaking",
            LinkStatus::Up => "up",
        }
    }
}
