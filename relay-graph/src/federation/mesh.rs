//! An in-memory mesh of [`FederationCore`]s for tests and simulations: links
//! that carry messages in order, one round per step of a manual clock; dials
//! that connect at once; relays and links that can be killed and revived. No
//! sockets, threads or sleeps: a hundred relays step in milliseconds.
//!
//! Media is simulated too: [`Mesh::send_media`] floods one packet from a
//! relay through [`FederationCore::forward_targets`] and each relay's
//! [`DedupWindow`], and records what each relay with local members delivered.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use wzp_proto::federation::{FederatedParticipant, FederationMessage, RelayId, RoomId};
use wzp_proto::{Fingerprint, TlsFingerprint};

use super::dedup::{DedupWindow, Verdict};
use super::{Action, FederationConfig, FederationCore, Input, LinkConn, PeerSpec};

/// A relay's synthetic certificate fingerprint (its index in the first bytes).
pub fn tls_of(i: usize) -> TlsFingerprint {
    let mut b = [0x5au8; 32];
    b[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    TlsFingerprint(b)
}

/// A relay's id in the mesh.
pub fn id_of(i: usize) -> RelayId {
    RelayId::of(&tls_of(i))
}

#[derive(Debug)]
struct Conn {
    ends: [usize; 2],
    open: bool,
}

/// What one step moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Control messages delivered.
    pub messages: u64,
    /// Of which pings and pongs.
    pub probes: u64,
}

/// The mesh.
#[derive(Debug)]
pub struct Mesh {
    /// The cores, by index.
    pub cores: Vec<FederationCore>,
    /// The clock.
    pub now: Instant,
    /// Time per step.
    pub dt: Duration,
    edges: BTreeSet<(usize, usize)>,
    cut: BTreeSet<(usize, usize)>,
    dead: BTreeSet<usize>,
    conns: HashMap<LinkConn, Conn>,
    next_conn: u64,
    inbox: Vec<VecDeque<Input>>,
    /// Control messages delivered, by type.
    pub by_type: BTreeMap<&'static str, u64>,
    /// Presence routes announced or withdrawn, summed over delivered
    /// `PresenceUpdate`s.
    pub presence_entries: u64,
    /// Per-relay presence routes announced or withdrawn, summed over
    /// delivered `PresenceOrigins`.
    pub origin_entries: u64,

    /// Dedup window per relay.
    pub dedup: Vec<DedupWindow>,
    local_rooms: Vec<BTreeSet<RoomId>>,
    /// Per relay: (origin, sender, seq) delivered to its local members, with
    /// the count of deliveries.
    pub delivered: Vec<BTreeMap<(RelayId, u32, u32), u32>>,
    /// Datagrams sent over links by [`Mesh::send_media`].
    pub media_datagrams: u64,
    /// Per receiving relay and connection: media datagrams taken in,
    /// reported to the relay every round ([`Input::MediaIn`]).
    media_in: BTreeMap<(usize, LinkConn), u64>,
    cfgs: Vec<FederationConfig>,
    /// Per relay: call signals handed to its signal service
    /// ([`Action::Call`]), in order.
    pub calls_delivered: Vec<Vec<wzp_proto::federation::CallSignal>>,
    /// Per relay: call rooms it was told are bridged ([`Action::CallBridge`]).
    pub call_bridges: Vec<BTreeSet<RoomId>>,
    /// Per relay: voice-message steps handed to its signal service
    /// ([`Action::Mail`]), in order.
    pub mail_delivered: Vec<Vec<wzp_proto::federation::MailSignal>>,
    /// Per relay: people it was told are on another relay now
    /// ([`Action::Reachable`]), with the way there.
    pub reachable: Vec<Vec<(Fingerprint, Vec<RelayId>)>>,
}

fn key(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Mesh {
    /// `n` relays joined by `edges` (both ends list each other in
    /// `[[peers]]`, so both dial), all bridging `rooms`.
    pub fn new(n: usize, edges: &[(usize, usize)], rooms: &[RoomId], seed: u64) -> Mesh {
        let now = Instant::now();
        let edges: BTreeSet<(usize, usize)> = edges.iter().map(|&(a, b)| key(a, b)).collect();
        let cfgs: Vec<FederationConfig> = (0..n)
            .map(|i| FederationConfig {
                me: tls_of(i),
                label: format!("r{i}"),
                peers: edges
                    .iter()
                    .filter_map(|&(a, b)| match (a == i, b == i) {
                        (true, _) => Some(b),
                        (_, true) => Some(a),
                        _ => None,
                    })
                    .map(|j| PeerSpec {
                        tls: tls_of(j),
                        label: format!("r{j}"),
                        address: Some(format!("sim:{j}")),
                    })
                    .collect(),
                global_rooms: rooms.to_vec(),
                seed: seed.wrapping_add(i as u64),
            })
            .collect();
        Mesh {
            cores: cfgs
                .iter()
                .map(|c| FederationCore::new(c.clone(), now))
                .collect(),
            now,
            dt: Duration::from_millis(50),
            edges,
            cut: BTreeSet::new(),
            dead: BTreeSet::new(),
            conns: HashMap::new(),
            next_conn: 0,
            inbox: (0..n).map(|_| VecDeque::new()).collect(),
            by_type: BTreeMap::new(),
            presence_entries: 0,
            origin_entries: 0,
            dedup: (0..n).map(|_| DedupWindow::default()).collect(),
            local_rooms: vec![BTreeSet::new(); n],
            delivered: vec![BTreeMap::new(); n],
            media_datagrams: 0,
            media_in: BTreeMap::new(),
            cfgs,
            calls_delivered: vec![Vec::new(); n],
            call_bridges: vec![BTreeSet::new(); n],
            mail_delivered: vec![Vec::new(); n],
            reachable: vec![Vec::new(); n],
        }
    }

    /// Relay `i`'s config now lists exactly `peers` (each dialable), as a
    /// reloaded config would ([`FederationCore::set_peers`]); a link to a
    /// relay new to it can be dialed from now on. What it changed.
    pub fn set_peers(&mut self, i: usize, peers: &[usize]) -> super::PeerChanges {
        let specs: Vec<PeerSpec> = peers
            .iter()
            .map(|&j| PeerSpec {
                tls: tls_of(j),
                label: format!("r{j}"),
                address: Some(format!("sim:{j}")),
            })
            .collect();
        for &j in peers {
            self.edges.insert(key(i, j));
        }
        self.cfgs[i].peers = specs.clone();
        let now = self.now;
        let changes = self.cores[i].set_peers(specs, now);
        self.collect(i);
        changes
    }

    /// Relay `i`'s config now bridges exactly `rooms`, as a reloaded config
    /// would ([`FederationCore::set_global_rooms`]); its local members of a
    /// room added are reported with [`Mesh::set_room`] after (as the room
    /// service does). The rooms (added, dropped).
    pub fn set_global_rooms(&mut self, i: usize, rooms: &[RoomId]) -> (Vec<RoomId>, Vec<RoomId>) {
        self.cfgs[i].global_rooms = rooms.to_vec();
        let now = self.now;
        let changed = self.cores[i].set_global_rooms(rooms.to_vec(), now);
        self.collect(i);
        changed
    }

    /// Relay `i`'s index from its id.
    pub fn index_of(&self, id: RelayId) -> Option<usize> {
        (0..self.cores.len()).find(|&i| id_of(i) == id)
    }

    /// Feeds an input to relay `i` now (its actions travel at the next step).
    pub fn input(&mut self, i: usize, input: Input) {
        let now = self.now;
        self.cores[i].handle(input, now);
        self.collect(i);
    }

    /// Sets relay `i`'s local members of `room` (`fps` empty: nobody).
    pub fn set_room(&mut self, i: usize, room: RoomId, fps: &[Fingerprint]) {
        let participants = fps.iter().map(|f| FederatedParticipant::new(*f)).collect();
        self.set_room_participants(i, room, participants);
    }

    /// Sets relay `i`'s local members of `room` with their state (empty:
    /// nobody).
    pub fn set_room_participants(
        &mut self,
        i: usize,
        room: RoomId,
        participants: Vec<FederatedParticipant>,
    ) {
        if participants.is_empty() {
            self.local_rooms[i].remove(&room);
        } else {
            self.local_rooms[i].insert(room);
        }
        self.input(i, Input::LocalRoom { room, participants });
    }

    /// Makes relay `from` send `msg` to relay `to` over their open link
    /// (as a peer that forges or misroutes would); `false` if none is open.
    pub fn send_as(&mut self, from: usize, to: usize, msg: FederationMessage) -> bool {
        let conn = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && (c.ends == [from, to] || c.ends == [to, from]))
            .map(|(id, _)| *id)
            .max();
        match conn {
            Some(conn) => {
                self.inbox[to].push_back(Input::Message { conn, msg });
                true
            }
            None => false,
        }
    }

    /// Stops carrying anything on the link a–b (a black hole: the ends find
    /// out by silence). Dials over it fail.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert(key(a, b));
    }

    /// Carries the link a–b again.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.cut.remove(&key(a, b));
    }

    /// Relay `i` stops: it is no longer stepped and nothing reaches it.
    pub fn kill(&mut self, i: usize) {
        self.dead.insert(i);
    }

    /// Relay `i` starts again with a fresh core (same identity and config).
    pub fn revive(&mut self, i: usize) {
        self.dead.remove(&i);
        self.cores[i] = FederationCore::new(self.cfgs[i].clone(), self.now);
        self.inbox[i].clear();
        self.local_rooms[i].clear();
        for c in self.conns.values_mut() {
            if c.ends.contains(&i) {
                c.open = false;
            }
        }
    }

    fn passable(&self, a: usize, b: usize) -> bool {
        !self.cut.contains(&key(a, b)) && !self.dead.contains(&a) && !self.dead.contains(&b)
    }

    fn collect(&mut self, i: usize) {
        for a in self.cores[i].drain_actions() {
            match a {
                Action::Dial { peer, .. } => {
                    let Some(j) = self.index_of(peer) else {
                        continue;
                    };
                    if !self.edges.contains(&key(i, j)) || !self.passable(i, j) {
                        self.inbox[i].push_back(Input::DialFailed { peer });
                        continue;
                    }
                    self.next_conn += 1;
                    let conn = LinkConn(self.next_conn);
                    self.conns.insert(
                        conn,
                        Conn {
                            ends: [i, j],
                            open: true,
                        },
                    );
                    self.inbox[i].push_back(Input::LinkUp {
                        conn,
                        tls: tls_of(j),
                        dialed_by_me: true,
                    });
                    self.inbox[j].push_back(Input::LinkUp {
                        conn,
                        tls: tls_of(i),
                        dialed_by_me: false,
                    });
                }
                Action::Send { conn, msg, .. } => {
                    let Some(c) = self.conns.get(&conn) else {
                        continue;
                    };
                    let other = if c.ends[0] == i { c.ends[1] } else { c.ends[0] };
                    if c.open && self.passable(i, other) {
                        *self.by_type.entry(msg.type_name()).or_default() += 1;
                        match &msg {
                            FederationMessage::PresenceUpdate { announce, withdraw } => {
                                self.presence_entries += (announce.len() + withdraw.len()) as u64;
                            }
                            FederationMessage::PresenceOrigins { announce, withdraw } => {
                                self.origin_entries += (announce.len() + withdraw.len()) as u64;
                            }
                            _ => {}
                        }
                        self.inbox[other].push_back(Input::Message { conn, msg });
                    }
                }
                Action::Close { conn, .. } => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        let other = if c.ends[0] == i { c.ends[1] } else { c.ends[0] };
                        if c.open {
                            c.open = false;
                            if !self.cut.contains(&key(i, other)) && !self.dead.contains(&other) {
                                self.inbox[other].push_back(Input::LinkDown { conn });
                            }
                        }
                    }
                }
                Action::RoomChanged { .. } | Action::CallRoomChanged { .. } => {}
                Action::Call(signal) => self.calls_delivered[i].push(signal),
                Action::Mail(signal) => self.mail_delivered[i].push(signal),
                Action::Reachable { who, path } => self.reachable[i].push((who, path)),
                Action::CallBridge { room, up, .. } => {
                    if up {
                        self.call_bridges[i].insert(room);
                    } else {
                        self.call_bridges[i].remove(&room);
                    }
                }
            }
        }
    }

    /// One round: the clock advances by `dt`, every live relay takes what
    /// reached it in the last round, then runs its timers.
    pub fn step(&mut self) -> StepStats {
        self.now += self.dt;
        let now = self.now;
        let mut stats = StepStats::default();
        // What was sent in the last round arrives in this one, never sooner.
        let inboxes: Vec<Vec<Input>> = self
            .inbox
            .iter_mut()
            .map(|q| q.drain(..).collect())
            .collect();
        for (i, inputs) in inboxes.into_iter().enumerate() {
            if self.dead.contains(&i) {
                continue;
            }
            // What each of its connections took in so far, as the shell
            // samples it.
            let media: Vec<Input> = self
                .media_in
                .range((i, LinkConn(0))..=(i, LinkConn(u64::MAX)))
                .filter(|((_, conn), _)| self.conns.get(conn).is_some_and(|c| c.open))
                .map(|(&(_, conn), &packets)| Input::MediaIn { conn, packets })
                .collect();
            for input in media.into_iter().chain(inputs) {
                if let Input::Message { msg, .. } = &input {
                    stats.messages += 1;
                    if matches!(
                        msg,
                        FederationMessage::Ping { .. } | FederationMessage::Pong { .. }
                    ) {
                        stats.probes += 1;
                    }
                }
                self.cores[i].handle(input, now);
            }
            self.cores[i].tick(now);
            self.collect(i);
        }
        stats
    }

    /// Steps until a round moves no message other than pings and pongs, at
    /// most `max` rounds; returns the rounds taken and the non-probe messages
    /// delivered, or `None` if it did not settle.
    pub fn settle(&mut self, max: usize) -> Option<(usize, u64)> {
        let mut total = 0;
        for round in 1..=max {
            let s = self.step();
            total += s.messages - s.probes;
            if s.messages == s.probes && self.inbox.iter().all(|q| q.is_empty()) {
                return Some((round, total));
            }
        }
        None
    }

    /// Floods one media packet of `room` from a local sender on relay
    /// `origin`, hop by hop (each hop at once, in breadth-first order), and
    /// records deliveries at relays with local members.
    pub fn send_media(&mut self, origin: usize, room: RoomId, sender: u32, seq: u32) {
        let oid = id_of(origin);
        let now = self.now;
        // (relay, received from, hops crossed)
        let mut queue: VecDeque<(usize, Option<RelayId>, u8)> = VecDeque::new();
        queue.push_back((origin, None, 0));
        while let Some((at, from, hops)) = queue.pop_front() {
            if from.is_some() {
                if self.dedup[at].check(oid, sender, seq, hops, now) != Verdict::Fresh {
                    continue;
                }
                if self.local_rooms[at].contains(&room) {
                    *self.delivered[at].entry((oid, sender, seq)).or_default() += 1;
                }
            }
            if hops + 1 >= wzp_proto::federation::MAX_MEDIA_HOPS {
                continue;
            }
            for next in self.cores[at].forward_targets(room, oid, from) {
                let Some(j) = self.index_of(next) else {
                    continue;
                };
                if !self.passable(at, j) {
                    continue;
                }
                self.media_datagrams += 1;
                if let Some(conn) = self.cores[j].current_conn(id_of(at)) {
                    *self.media_in.entry((j, conn)).or_default() += 1;
                }
                let next_hops = if from.is_some() { hops + 1 } else { hops };
                queue.push_back((j, Some(id_of(at)), next_hops));
            }
        }
    }
}
