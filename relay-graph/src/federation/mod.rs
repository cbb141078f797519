//! Relay federation, sans-IO: the links to other relays, the global rooms
//! bridged over them, presence routes, and the media dedup window.
//!
//! [`FederationCore`] owns no socket, task or clock. The shell
//! ([`shell`]: quinn links, one hub task) feeds it [`Input`]s with `now` and calls
//! [`FederationCore::tick`] at [`FederationCore::next_deadline`]; the core
//! queues [`Action`]s (dial, send, close, a room's remote members changed)
//! that the shell takes with [`FederationCore::drain_actions`].
//!
//! - **Links** (one per configured relay): the shell pins the peer's TLS
//!   certificate and reports [`Input::LinkUp`] with the proven fingerprint;
//!   both sides send `Hello` and the link is up once the peer's arrives with a
//!   compatible version. When both relays dial at once, the connection dialed
//!   by the relay with the lower [`RelayId`] is kept, on both sides. A `Ping`
//!   goes out every [`PING_INTERVAL`]; its `Pong` gives the RTT. A link with
//!   nothing heard for [`DEAD_AFTER`] is closed and counted dead; one that
//!   was streaming media ([`Input::MediaIn`]) whose media stopped is probed
//!   every [`PROBE_INTERVAL`] and is dead after [`MEDIA_DEAD_AFTER`] of
//!   silence, so the calls a silently dead relay carried move sooner. Peers with
//!   an address are redialed after [`BACKOFF_MIN`], doubling to
//!   [`BACKOFF_MAX`], each delay shortened by up to 20 % from the injected
//!   seed so relays that lost each other together do not redial in step.
//! - **Global rooms and presence** are path-vector tables ([`pathvec`]): each
//!   relay announces its own participants / registered users, every relay
//!   passes on its shortest path with itself prepended, a path holding the
//!   receiver is a loop and dropped, and everything learned over a link is
//!   dropped the moment the link is down (so remote participants vanish
//!   within [`DEAD_AFTER`] of a relay's death, well inside 15 s, and at once
//!   on an orderly leave). A link that comes up receives the whole table,
//!   including what was learned from other peers.
//! - **Media**: [`FederationCore::forward_targets`] says which peers a
//!   packet of a room goes to (never back where it came from; a hub with no
//!   local member still forwards), and [`dedup::DedupWindow`] makes delivery
//!   exactly once when a packet arrives over two paths.
//!
//! What a peer *claims* is checked against what its link proved: a path must
//! start with the sender's own id, announcements are accepted only for rooms
//! both sides bridge, and an unknown certificate is refused with the config
//! snippet the operator needs.

pub mod calls;
pub mod mail;
pub use wzp_proto::dedup;
pub mod mesh;
pub mod pathvec;
// The fuzz target `federation_frame` compiles this module by path, without
// the relay around it: the quinn shell is left out there.
#[cfg(not(fuzzing))]
pub mod shell;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use wzp_proto::close::CloseCode;
use wzp_proto::federation::{
    CallEvent, CallSignal, FederatedParticipant, FederationMessage, PresenceOrigin, PresenceRoute,
    RelayId, RoomId, FEDERATION_VERSION, FORK_VERSION, MAX_PRESENCE_ENTRIES,
    MIN_FEDERATION_VERSION, ROOMS_VERSION,
};
use wzp_proto::{Fingerprint, TlsFingerprint};

use pathvec::{Delta, Entry, PathVector};

/// A `Ping` goes out this often on an up link.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);
/// A link with nothing heard for this long is dead.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// How often the shell reports how many media datagrams each link took in
/// ([`Input::MediaIn`]).
pub const MEDIA_SAMPLE: Duration = Duration::from_millis(250);
/// A link taking in media at this rate or more (datagrams a second) is
/// streaming: its media stopping is news (one voice is 50 a second).
pub const STREAMING_PPS: u64 = 20;
/// How long a streaming link's media may stop before the link is probed:
/// a `Ping` every [`PROBE_INTERVAL`] until something is heard.
pub const MEDIA_SUSPECT_AFTER: Duration = Duration::from_millis(500);
/// Probe pings on a streaming link whose media stopped.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// A streaming link whose media stopped and that answers nothing (no
/// message, no datagram) for this long is dead (at least three round trips
/// after the probes began): a relay that died silently is found in about
/// 1.5 s where [`DEAD_AFTER`] takes 5, so the calls it carried move sooner.
/// A live link whose talkers went quiet answers the probes.
pub const MEDIA_DEAD_AFTER: Duration = Duration::from_millis(1500);
/// How long a new connection may take to send its `Hello`.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// First redial delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Redial delay after a link that was up is lost (a relay restarting is
/// back within a second or two): once, then the backoff.
pub const QUICK_REDIAL: Duration = Duration::from_millis(500);
/// Longest redial delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Pings awaiting their pong, per link; older ones are forgotten.
const MAX_OUTSTANDING_PINGS: usize = 8;

/// A connection, as numbered by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkConn(pub u64);

/// A relay this one federates with (`[[peers]]` with an address,
/// `[[trusted]]` without).
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// Pinned certificate fingerprint.
    pub tls: TlsFingerprint,
    /// The label the local config gives it.
    pub label: String,
    /// Where to dial it; `None` = wait for it to dial in.
    pub address: Option<String>,
}

/// The core's configuration.
#[derive(Clone, Debug)]
pub struct FederationConfig {
    /// This relay's certificate fingerprint.
    pub me: TlsFingerprint,
    /// This relay's label (sent in `Hello`, shown as `relay_label`).
    pub label: String,
    /// The relays it federates with.
    pub peers: Vec<PeerSpec>,
    /// The global rooms it bridges.
    pub global_rooms: Vec<RoomId>,
    /// Seed of the redial jitter.
    pub seed: u64,
}

/// What the shell tells the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// A connection's TLS handshake finished and the peer presented the
    /// certificate `tls` (already checked against the pin by the shell, or
    /// unknown). `dialer` is the relay that dialed it.
    LinkUp {
        /// The connection.
        conn: LinkConn,
        /// The certificate the peer proved.
        tls: TlsFingerprint,
        /// Who dialed: this relay or the peer.
        dialed_by_me: bool,
    },
    /// A connection ended (closed, reset, idle timeout).
    LinkDown {
        /// The connection.
        conn: LinkConn,
    },
    /// A dial the core asked for failed before a connection existed.
    DialFailed {
        /// The peer.
        peer: RelayId,
    },
    /// A decoded, bounds-checked message arrived on a connection.
    Message {
        /// The connection.
        conn: LinkConn,
        /// The message.
        msg: FederationMessage,
    },
    /// How many media datagrams a connection has taken in so far, every
    /// [`MEDIA_SAMPLE`] or so: a link streaming media that stops and answers
    /// no probe is dead sooner ([`MEDIA_DEAD_AFTER`]).
    MediaIn {
        /// The connection.
        conn: LinkConn,
        /// Datagrams taken in on it since it came up.
        packets: u64,
    },
    /// A frame on a connection could not be decoded (counted; link stays).
    Garbage {
        /// The connection.
        conn: LinkConn,
    },
    /// This relay's own members of a global room (empty: nobody left).
    LocalRoom {
        /// The room.
        room: RoomId,
        /// Its local members.
        participants: Vec<FederatedParticipant>,
    },
    /// A user registered on (`true`) or left (`false`) this relay's presence.
    LocalPresence {
        /// The user.
        fingerprint: Fingerprint,
        /// Registered or gone.
        online: bool,
    },
    /// A step of a cross-relay call from a party on this relay (an offer to
    /// a user registered elsewhere, or the local party's ringing, answer,
    /// confirm, hangup): it goes along the call's path ([`calls`]).
    LocalCall(CallSignal),
    /// An offer from a party on this relay to a user whose devices ring
    /// here too: it rings the user's other relays only (a fork each), and
    /// when it reaches none, or every fork ends, the hangup says so
    /// ([`calls::ForkGroup::also_here`]).
    LocalFork(CallSignal),
    /// An offer from a party on this relay to a user in another call here
    /// (nothing rings here): it rings the user's other relays only, and
    /// when it reaches none, or every fork ends, the hangup says so.
    LocalForkElsewhere(CallSignal),
    /// The callee of call `call_id`, forked to its other relays while it
    /// was busy here ([`Input::LocalForkElsewhere`]), is free and its
    /// devices here ring now: the forks' group waits for them as for
    /// devices ringing from the start ([`calls::ForkGroup::also_here`]).
    DevicesRingHere {
        /// The call's id.
        call_id: String,
    },
    /// A voice message's step from this relay's signal service: a key
    /// query to flood, an answer to one, a part, its outcome ([`mail`]).
    LocalMail(wzp_proto::federation::MailSignal),
}

/// What the core asks the shell to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Dial a peer (pin `tls`, SNI `_federation`, present our certificate).
    Dial {
        /// The peer.
        peer: RelayId,
        /// Its address.
        address: String,
        /// The certificate to pin.
        tls: TlsFingerprint,
    },
    /// Send a message on a connection.
    Send {
        /// The connection.
        conn: LinkConn,
        /// The peer on it.
        peer: RelayId,
        /// The message.
        msg: FederationMessage,
    },
    /// Close a connection; `reason` says what the operator can do.
    Close {
        /// The connection.
        conn: LinkConn,
        /// The close code the peer reads.
        code: CloseCode,
        /// Why.
        reason: String,
    },
    /// The remote participants of a global room changed: send members a
    /// new `RoomUpdate` ([`FederationCore::remote_participants`]).
    RoomChanged {
        /// The room.
        room: RoomId,
    },
    /// A step of a cross-relay call for the party on this relay: hand it to
    /// the signal service (an offer for a local callee, or the far party's
    /// ringing, answer, confirm, hangup).
    Call(CallSignal),
    /// A call room became bridged along its call's path (`up`: answered;
    /// else ended). The room service must report the room's local members
    /// ([`Input::LocalRoom`]) while it is up.
    CallBridge {
        /// The call room's id.
        room: RoomId,
        /// Its name in the room table, `call-<id>`.
        name: String,
        /// Bridged or not any more.
        up: bool,
    },
    /// A voice message's step for this relay's signal service: a key
    /// query from another relay, an answer to this relay's, a part for a
    /// mailbox here, the outcome of a message sent from here ([`mail`]).
    Mail(wzp_proto::federation::MailSignal),
    /// `who` is registered on another relay now, reached along `path`
    /// (this relay first, theirs last), where before they were here or
    /// nowhere: voice messages kept here for them move there ([`mail`]).
    Reachable {
        /// The person.
        who: Fingerprint,
        /// The way to their relay.
        path: Vec<RelayId>,
    },
    /// The remote participants of a call room changed (as
    /// [`Action::RoomChanged`], for the room named `name` here).
    CallRoomChanged {
        /// The call room's id.
        room: RoomId,
        /// Its name in the room table, `call-<id>`.
        name: String,
    },
}

/// A link's state, as `/peers` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkStatus {
    /// No connection; a dial may be due.
    Down,
    /// Connected, waiting for the peer's `Hello`.
    Handshaking,
    /// Exchanging state.
    Up,
}

/// Refusals and drops, by reason, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Connections from a certificate no config entry names.
    pub unknown_relay: u64,
    /// `Hello` with no common version.
    pub version_refused: u64,
    /// A second connection closed by the tie-break.
    pub duplicate_link: u64,
    /// Links closed after [`DEAD_AFTER`] of silence.
    pub dead_links: u64,
    /// Streaming links closed after their media stopped and nothing was
    /// heard for [`MEDIA_DEAD_AFTER`].
    pub media_stopped_links: u64,
    /// `GlobalRoomActive` for a room this relay does not bridge.
    pub room_not_bridged_here: u64,
    /// `GlobalRoomActive` for a room the sender did not list in `Hello`.
    pub room_not_bridged_by_peer: u64,
    /// Announcements whose path does not start with the sender.
    pub path_not_from_sender: u64,
    /// Announcements whose path holds this relay (dropped as loops).
    pub loops: u64,
    /// Undecodable frames.
    pub garbage: u64,
    /// Messages on a connection the core does not use (closed, duplicate).
    pub stale_conn: u64,
    /// Messages out of place (`Hello` twice, anything before `Hello`).
    pub unexpected: u64,
}

/// What a relay's participants in a room look like as learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    /// The origin relay's own label.
    pub origin_label: String,
    /// Its participants, sorted.
    pub participants: Vec<FederatedParticipant>,
}

/// Where a fingerprint is registered, as seen from this relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// On this relay.
    Local,
    /// On a directly linked peer.
    DirectPeer(RelayId),
    /// Through these relays (first is the next hop, last is the user's).
    Via(Vec<RelayId>),
    /// Nowhere known.
    NotFound,
}

impl Route {
    /// The route along a table's best entry (this relay first).
    fn along(best: Option<Entry<()>>) -> Route {
        match best {
            None => Route::NotFound,
            Some(e) if e.path.len() == 1 => Route::Local,
            Some(e) if e.path.len() == 2 => Route::DirectPeer(e.path[1]),
            Some(e) => Route::Via(e.path[1..].to_vec()),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Down {
        next_dial: Option<Instant>,
        dialing: bool,
    },
    Handshaking {
        conn: LinkConn,
        dialer: RelayId,
        since: Instant,
    },
    Up {
        conn: LinkConn,
        dialer: RelayId,
        rooms: BTreeSet<RoomId>,
        label: String,
        /// The federation version both sides agreed on.
        version: u32,
    },
}

#[derive(Debug)]
struct Link {
    spec: PeerSpec,
    phase: Phase,
    backoff: Duration,
    last_heard: Instant,
    next_ping: Instant,
    ping_id: u64,
    pings: VecDeque<(u64, Instant)>,
    rtt: Option<Duration>,
    messages_in: u64,
    messages_out: u64,
    media: MediaWatch,
}

/// What a link's media datagrams say about it ([`Input::MediaIn`]).
#[derive(Debug, Default)]
struct MediaWatch {
    /// The connection the counts are of (they start at 0 with each).
    conn: Option<LinkConn>,
    /// Datagrams taken in so far on it.
    packets: u64,
    /// When the count was last reported.
    sampled: Option<Instant>,
    /// When it last rose.
    last: Option<Instant>,
    /// At [`STREAMING_PPS`] or more (a sample under it, as the one a link
    /// died in, changes nothing; two in a row end it).
    streaming: bool,
    /// Samples in a row under the rate.
    slow: u8,
}

impl Link {
    /// A link that is down, its first dial (if it has an address) due at
    /// `now`.
    fn new(spec: PeerSpec, now: Instant) -> Link {
        let dial = spec.address.as_ref().map(|_| now);
        Link {
            spec,
            phase: Phase::Down {
                next_dial: dial,
                dialing: false,
            },
            backoff: BACKOFF_MIN,
            last_heard: now,
            next_ping: now,
            ping_id: 0,
            pings: VecDeque::new(),
            rtt: None,
            messages_in: 0,
            messages_out: 0,
            media: MediaWatch::default(),
        }
    }

    /// When anything (a message, a datagram) was last heard.
    fn last_any(&self) -> Instant {
        self.media
            .last
            .map_or(self.last_heard, |m| m.max(self.last_heard))
    }

    /// When the next probe ping is due: while a streaming link's media has
    /// stopped, [`PROBE_INTERVAL`] after the last ping, from
    /// [`MEDIA_SUSPECT_AFTER`] after the last datagram.
    fn probe_at(&self) -> Option<Instant> {
        if !self.media.streaming {
            return None;
        }
        let suspect = self.media.last? + MEDIA_SUSPECT_AFTER;
        let after_ping = self.pings.back().map(|&(_, at)| at + PROBE_INTERVAL);
        Some(after_ping.map_or(suspect, |p| p.max(suspect)))
    }

    /// How long a streaming link may be silent: [`MEDIA_DEAD_AFTER`], or
    /// the probes' start and three round trips when that is longer.
    fn media_dead_after(&self) -> Option<Duration> {
        self.media.streaming.then(|| {
            let rtt = self.rtt.unwrap_or_default();
            MEDIA_DEAD_AFTER.max(MEDIA_SUSPECT_AFTER + rtt * 3)
        })
    }

    /// The link's media count at `now` (`packets` on `conn`).
    fn media_in(&mut self, conn: LinkConn, packets: u64, now: Instant) {
        let m = &mut self.media;
        if m.conn != Some(conn) {
            *m = MediaWatch {
                conn: Some(conn),
                ..MediaWatch::default()
            };
        }
        if packets > m.packets {
            // The rate since the count last rose (a trickle sampled often
            // is still a trickle).
            if let Some(at) = m.last.or(m.sampled) {
                let ms = now.saturating_duration_since(at).as_millis().max(1) as u64;
                let fast = (packets - m.packets) * 1000 >= STREAMING_PPS * ms;
                if fast {
                    m.streaming = true;
                    m.slow = 0;
                } else {
                    m.slow = m.slow.saturating_add(1);
                    if m.slow >= 2 {
                        m.streaming = false;
                    }
                }
            }
            m.packets = packets;
            m.last = Some(now);
        } else if m
            .last
            .is_some_and(|t| now.saturating_duration_since(t) >= DEAD_AFTER)
        {
            // The talkers went quiet and the link lives: no more probes.
            m.streaming = false;
        }
        m.sampled = Some(now);
    }
}

/// A peer's row in `/peers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// Its id.
    pub id: RelayId,
    /// Its label in our config.
    pub label: String,
    /// The label it gives itself in its `Hello` (when up).
    pub own_label: Option<String>,
    /// Its dial address, if any.
    pub address: Option<String>,
    /// Its certificate fingerprint.
    pub tls: TlsFingerprint,
    /// Link state.
    pub status: LinkStatus,
    /// The federation version both sides agreed on (when up): below 4 the
    /// peer hears no `rooms` message (a reload's global rooms reach it at
    /// its next hello).
    pub version: Option<u32>,
    /// Last RTT sample.
    pub rtt: Option<Duration>,
    /// Global rooms both sides bridge (when up).
    pub rooms: usize,
    /// Control messages received / sent on the current or last link.
    pub messages_in: u64,
    /// Control messages sent.
    pub messages_out: u64,
}

/// What [`FederationCore::set_peers`] changed, by the peers' labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    /// Relays new to the list.
    pub added: Vec<String>,
    /// Relays no longer listed (their links closed).
    pub removed: Vec<String>,
    /// Relays still listed under a new label or address.
    pub changed: Vec<String>,
}

/// The room table's key: a room and the relay whose participants they are.
type RoomKey = (RoomId, RelayId);
/// The per-relay presence table's key: a user and a relay it is on.
type OriginKey = (Fingerprint, RelayId);

/// The federation core.
#[derive(Debug)]
pub struct FederationCore {
    me: RelayId,
    label: String,
    links: BTreeMap<RelayId, Link>,
    by_conn: HashMap<LinkConn, RelayId>,
    global_rooms: BTreeSet<RoomId>,
    rooms: PathVector<RoomKey, RoomState>,
    presence: PathVector<Fingerprint, ()>,
    /// Every relay each user is on (`presence_origins`, on links agreed at
    /// [`FORK_VERSION`]), where `presence` keeps the nearest only.
    presence_all: PathVector<OriginKey, ()>,
    actions: Vec<Action>,
    counters: Counters,
    rng: u64,
    pending_rooms: BTreeMap<(RelayId, RoomKey), Delta<RoomKey, RoomState>>,
    pending_presence: BTreeMap<(RelayId, Fingerprint), Delta<Fingerprint, ()>>,
    pending_origins: BTreeMap<(RelayId, OriginKey), Delta<OriginKey, ()>>,
    flush_at: Option<Instant>,
    last_now: Instant,
    /// Zero of the `sent_ms` clock in pings.
    started: Instant,
    /// Cross-relay calls through this relay.
    calls: calls::CallTable,
    /// Call signals sent after the queued table changes (a `path_lost` must
    /// reach the next relay after the route changes that caused it).
    pending_signals: Vec<(RelayId, FederationMessage)>,
    /// The federation version this core speaks (lower in tests of mixed
    /// versions).
    version: u32,
    /// Voice messages across the mesh.
    mail: mail::MailState,
}

impl FederationCore {
    /// A core with every link down and the first dials due at `now`.
    pub fn new(cfg: FederationConfig, now: Instant) -> FederationCore {
        let me = RelayId::of(&cfg.me);
        let links = cfg
            .peers
            .into_iter()
            .map(|spec| (RelayId::of(&spec.tls), Link::new(spec, now)))
            .collect();
        FederationCore {
            me,
            label: cfg.label,
            links,
            by_conn: HashMap::new(),
            global_rooms: cfg.global_rooms.into_iter().collect(),
            rooms: PathVector::new(me),
            presence: PathVector::new(me),
            presence_all: PathVector::new(me),
            actions: Vec::new(),
            counters: Counters::default(),
            rng: cfg.seed ^ 0x9e37_79b9_7f4a_7c15,
            pending_rooms: BTreeMap::new(),
            pending_presence: BTreeMap::new(),
            pending_origins: BTreeMap::new(),
            flush_at: None,
            last_now: now,
            started: now,
            calls: calls::CallTable::default(),
            pending_signals: Vec::new(),
            version: FEDERATION_VERSION,
            mail: mail::MailState::new(cfg.seed.rotate_left(17) ^ 0x6d61_696c),
        }
    }

    /// Speaks federation version `version` instead of this build's (for
    /// tests of relays of mixed versions).
    #[cfg(test)]
    pub(crate) fn set_version(&mut self, version: u32) {
        self.version = version.clamp(MIN_FEDERATION_VERSION, FEDERATION_VERSION);
    }

    /// The version agreed with `peer` while its link is up.
    fn link_version(&self, peer: RelayId) -> Option<u32> {
        match self.links.get(&peer).map(|l| &l.phase) {
            Some(Phase::Up { version, .. }) => Some(*version),
            _ => None,
        }
    }

    /// The label this relay's config gives `peer`.
    pub fn peer_label(&self, peer: RelayId) -> Option<&str> {
        self.links.get(&peer).map(|l| l.spec.label.as_str())
    }

    /// This relay's id.
    pub fn id(&self) -> RelayId {
        self.me
    }

    /// Refusal and drop counts.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Takes the queued actions.
    pub fn drain_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// A link's status.
    pub fn status(&self, peer: RelayId) -> Option<LinkStatus> {
        self.links.get(&peer).map(|l| match l.phase {
            Phase::Down { .. } => LinkStatus::Down,
            Phase::Handshaking { .. } => LinkStatus::Handshaking,
            Phase::Up { .. } => LinkStatus::Up,
        })
    }

    /// Every configured peer, for `/peers` and metrics.
    pub fn peers(&self) -> Vec<PeerView> {
        self.links
            .iter()
            .map(|(id, l)| PeerView {
                id: *id,
                label: l.spec.label.clone(),
                own_label: match &l.phase {
                    Phase::Up { label, .. } => Some(label.clone()),
                    _ => None,
                },
                address: l.spec.address.clone(),
                tls: l.spec.tls,
                status: self.status(*id).unwrap_or(LinkStatus::Down),
                version: self.link_version(*id),
                rtt: l.rtt,
                rooms: match &l.phase {
                    Phase::Up { rooms, .. } => rooms.intersection(&self.global_rooms).count(),
                    _ => 0,
                },
                messages_in: l.messages_in,
                messages_out: l.messages_out,
            })
            .collect()
    }

    /// When [`FederationCore::tick`] next has work (a ping, a dial, a
    /// silence deadline).
    pub fn next_deadline(&self) -> Option<Instant> {
        let timers = self
            .links
            .values()
            .filter_map(|l| match &l.phase {
                Phase::Down {
                    next_dial,
                    dialing: false,
                } => *next_dial,
                Phase::Down { .. } => None,
                Phase::Handshaking { since, .. } => Some(*since + HELLO_TIMEOUT),
                Phase::Up { .. } => {
                    let last = l.last_any();
                    let mut at = l.next_ping.min(last + DEAD_AFTER);
                    if let Some(probe) = l.probe_at() {
                        at = at.min(probe);
                    }
                    if let Some(after) = l.media_dead_after() {
                        at = at.min(last + after);
                    }
                    Some(at)
                }
            })
            .min();
        let timers = match (timers, self.next_call_deadline()) {
            (Some(t), Some(c)) => Some(t.min(c)),
            (t, c) => t.or(c),
        };
        match (timers, self.flush_at) {
            (Some(t), Some(f)) => Some(t.min(f)),
            (t, f) => t.or(f),
        }
    }

    /// Runs the timers due at `now`: dials, pings, dead links.
    pub fn tick(&mut self, now: Instant) {
        self.last_now = now;
        self.expire_calls(now);
        self.flush();
        let ids: Vec<RelayId> = self.links.keys().copied().collect();
        for id in ids {
            let Some(l) = self.links.get_mut(&id) else {
                continue;
            };
            match &mut l.phase {
                Phase::Down { next_dial, dialing } => {
                    if !*dialing && next_dial.is_some_and(|t| now >= t) {
                        *dialing = true;
                        *next_dial = None;
                        if let Some(address) = l.spec.address.clone() {
                            self.actions.push(Action::Dial {
                                peer: id,
                                address,
                                tls: l.spec.tls,
                            });
                        }
                    }
                }
                Phase::Handshaking { conn, since, .. } => {
                    if now.saturating_duration_since(*since) >= HELLO_TIMEOUT {
                        let conn = *conn;
                        self.close(
                            id,
                            conn,
                            CloseCode::Timeout,
                            format!("no federation hello within {HELLO_TIMEOUT:?}"),
                            now,
                        );
                    }
                }
                Phase::Up { conn, .. } => {
                    let conn = *conn;
                    let quiet = now.saturating_duration_since(l.last_any());
                    let media_dead = l.media_dead_after().filter(|after| quiet >= *after);
                    if quiet >= DEAD_AFTER {
                        self.counters.dead_links += 1;
                        self.close(
                            id,
                            conn,
                            CloseCode::Timeout,
                            format!("nothing heard for {DEAD_AFTER:?}; link dead"),
                            now,
                        );
                    } else if let Some(after) = media_dead {
                        self.counters.media_stopped_links += 1;
                        self.close(
                            id,
                            conn,
                            CloseCode::Timeout,
                            format!("its media stopped and nothing heard for {after:?}; link dead"),
                            now,
                        );
                    } else if now >= l.next_ping || l.probe_at().is_some_and(|p| now >= p) {
                        l.ping_id += 1;
                        let pid = l.ping_id;
                        l.pings.push_back((pid, now));
                        if l.pings.len() > MAX_OUTSTANDING_PINGS {
                            l.pings.pop_front();
                        }
                        l.next_ping = now + PING_INTERVAL;
                        let sent_ms =
                            now.saturating_duration_since(self.started).as_millis() as u64;
                        self.send(id, FederationMessage::Ping { id: pid, sent_ms });
                    }
                }
            }
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input, now: Instant) {
        self.last_now = now;
        match input {
            Input::LinkUp {
                conn,
                tls,
                dialed_by_me,
            } => self.link_up(conn, tls, dialed_by_me, now),
            Input::LinkDown { conn } => {
                if let Some(peer) = self.by_conn.remove(&conn) {
                    if self.current_conn(peer) == Some(conn) {
                        self.link_lost(peer, now);
                    }
                }
            }
            Input::DialFailed { peer } => {
                // Only while down: a link that came up inbound meanwhile
                // needs no redial and keeps its backoff.
                if let Some(Link {
                    phase: Phase::Down { dialing, .. },
                    ..
                }) = self.links.get_mut(&peer)
                {
                    *dialing = false;
                    self.schedule_redial(peer, now);
                }
            }
            Input::Garbage { conn } => {
                self.counters.garbage += 1;
                self.heard(conn, now);
            }
            Input::MediaIn { conn, packets } => {
                let Some(&peer) = self.by_conn.get(&conn) else {
                    return;
                };
                if self.current_conn(peer) != Some(conn) {
                    return;
                }
                if let Some(l) = self.links.get_mut(&peer) {
                    l.media_in(conn, packets, now);
                }
            }
            Input::Message { conn, msg } => self.message(conn, msg, now),
            Input::LocalRoom {
                room,
                mut participants,
            } => {
                participants.sort();
                participants.dedup_by(|a, b| a.fingerprint == b.fingerprint);
                let value = (!participants.is_empty()).then(|| RoomState {
                    origin_label: self.label.clone(),
                    participants,
                });
                if !self.global_rooms.contains(&room) && !self.call_room_is_local(room) {
                    return;
                }
                let elig = self.room_eligibility_for(room);
                let deltas = self.rooms.set_local((room, self.me), value, elig);
                self.send_room_deltas(deltas);
            }
            Input::LocalPresence {
                fingerprint,
                online,
            } => {
                let was = self.remote_path(&fingerprint);
                let deltas = self
                    .presence
                    .set_local(fingerprint, online.then_some(()), |_, _| true);
                self.send_presence_deltas(deltas);
                let deltas = self.presence_all.set_local(
                    (fingerprint, self.me),
                    online.then_some(()),
                    |_, _| true,
                );
                self.send_origin_deltas(deltas);
                self.note_reach(fingerprint, was.is_some());
            }
            Input::LocalCall(s) => self.local_call(s, now),
            Input::LocalFork(s) | Input::LocalForkElsewhere(s)
                if !matches!(s.event, CallEvent::Offer { .. }) =>
            {
                self.local_call(s, now)
            }
            Input::LocalFork(s) => self.local_offer(s, now, calls::Here::Ringing),
            Input::LocalForkElsewhere(s) => self.local_offer(s, now, calls::Here::Busy),
            Input::LocalMail(s) => self.local_mail(s, now),
            Input::DevicesRingHere { call_id } => self.devices_ring_here(&call_id),
        }
    }

    /// Makes `peers` the relays this one federates with (a reloaded
    /// config's `[[peers]]` and `[[trusted]]`), with no restart: a relay new
    /// to the list is dialed at once (if it has an address) and accepted
    /// when it dials in; one no longer listed has its link closed (the peer
    /// reads [`CloseCode::NotAuthorized`] and why), what it announced
    /// withdrawn and the calls through it ended, as when a link is lost,
    /// and is refused from then on; one still listed keeps its link, with
    /// the new label, and a new address is dialed at once while the link is
    /// down. A certificate listed twice counts once (the first entry).
    pub fn set_peers(&mut self, peers: Vec<PeerSpec>, now: Instant) -> PeerChanges {
        self.last_now = now;
        let mut wanted: Vec<(RelayId, PeerSpec)> = Vec::with_capacity(peers.len());
        for spec in peers {
            let id = RelayId::of(&spec.tls);
            if id != self.me && !wanted.iter().any(|(w, _)| *w == id) {
                wanted.push((id, spec));
            }
        }
        let mut changes = PeerChanges::default();
        let gone: Vec<RelayId> = self
            .links
            .keys()
            .filter(|id| !wanted.iter().any(|(w, _)| w == *id))
            .copied()
            .collect();
        for id in gone {
            if let Some(conn) = self.current_conn(id) {
                self.by_conn.remove(&conn);
                self.actions.push(Action::Close {
                    conn,
                    code: CloseCode::NotAuthorized,
                    reason: format!(
                        "relay {} took this relay out of its config ([[peers]] / [[trusted]])",
                        self.label
                    ),
                });
            }
            self.forget_peer_state(id);
            if let Some(l) = self.links.remove(&id) {
                changes.removed.push(l.spec.label);
            }
        }
        for (id, spec) in wanted {
            match self.links.get_mut(&id) {
                None => {
                    changes.added.push(spec.label.clone());
                    self.links.insert(id, Link::new(spec, now));
                }
                Some(l) => {
                    if l.spec.label == spec.label && l.spec.address == spec.address {
                        continue;
                    }
                    changes.changed.push(spec.label.clone());
                    let moved = l.spec.address != spec.address;
                    l.spec = spec;
                    if moved {
                        l.backoff = BACKOFF_MIN;
                        if let Phase::Down { next_dial, dialing } = &mut l.phase {
                            if !*dialing {
                                *next_dial = l.spec.address.as_ref().map(|_| now);
                            }
                        }
                    }
                }
            }
        }
        changes
    }

    /// Remote participants of `room` (each fingerprint once; the origin's
    /// label as `relay_label`), for `RoomUpdate`s.
    pub fn remote_participants(&self, room: RoomId) -> Vec<(FederatedParticipant, String)> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let mut keys: Vec<&RoomKey> = self
            .rooms
            .keys()
            .filter(|(r, origin)| *r == room && *origin != self.me)
            .collect();
        keys.sort();
        for key in keys {
            if let Some(best) = self.rooms.best(key) {
                for p in best.value.participants {
                    if seen.insert(p.fingerprint) {
                        out.push((p, best.value.origin_label.clone()));
                    }
                }
            }
        }
        out
    }

    /// The global rooms with members anywhere in the mesh.
    pub fn active_rooms(&self) -> BTreeSet<RoomId> {
        self.rooms.keys().map(|(r, _)| *r).collect()
    }

    /// Where `fingerprint` is registered.
    pub fn route(&self, fingerprint: &Fingerprint) -> Route {
        Route::along(self.presence.best(fingerprint))
    }

    /// Every relay `fingerprint` is registered on, as far as this relay
    /// knows: this one, each origin `presence_origins` announced, and the
    /// nearest one `presence_update` gave (a relay behind links older than
    /// [`FORK_VERSION`] is known by that alone). Sorted, no repeats.
    pub fn origins_of(&self, fingerprint: &Fingerprint) -> Vec<RelayId> {
        let mut v: Vec<RelayId> = self
            .presence_all
            .keys()
            .filter(|(f, _)| f == fingerprint)
            .map(|(_, o)| *o)
            .collect();
        if let Some(e) = self.presence.best(fingerprint) {
            v.push(e.origin());
        }
        v.sort();
        v.dedup();
        v
    }

    /// The route of leg `fork` of a call to `fingerprint`: to the relay the
    /// fork names (this one: the user must be registered here), or for a
    /// call's only leg the nearest relay the user is on.
    pub fn fork_route(&self, fingerprint: &Fingerprint, fork: Option<RelayId>) -> Route {
        match fork {
            None => self.route(fingerprint),
            // The per-relay table holds every relay the user is on, this
            // one included, whichever table a peer told of it in.
            Some(origin) => Route::along(self.presence_all.best(&(*fingerprint, origin))),
        }
    }

    /// A peer at version 6 said where `fingerprint` is (`presence_origins`):
    /// its nearest relay of them is what the peer would have said in
    /// `presence_update`, learned into the nearest-relay table for the
    /// route and for peers older than version 6 (which alone hear it).
    fn origins_to_nearest(&mut self, peer: RelayId, fingerprint: Fingerprint) {
        let lo = (
            fingerprint,
            RelayId([0; wzp_proto::federation::RELAY_ID_LEN]),
        );
        let hi = (
            fingerprint,
            RelayId([0xff; wzp_proto::federation::RELAY_ID_LEN]),
        );
        let nearest = self
            .presence_all
            .learned_in(peer, lo..=hi)
            .min_by_key(|((_, origin), e)| (e.path.len(), *origin))
            .map(|(_, e)| e.clone());
        let was = self.remote_path(&fingerprint).is_some();
        let d = self.presence.learn(peer, fingerprint, nearest, |_, _| true);
        self.send_presence_deltas(d);
        self.note_reach(fingerprint, was);
    }

    /// A peer older than version 6 said where `fingerprint` is nearest
    /// (`presence_update`; `entry` `None`: withdrawn): the same in the
    /// per-relay table, for peers at version 6 (which alone hear it). Call
    /// before the nearest-relay table learns it (it names what the peer
    /// said before). Returns the deltas to send.
    fn nearest_to_origins(
        &mut self,
        peer: RelayId,
        fingerprint: Fingerprint,
        entry: Option<&Entry<()>>,
    ) -> Vec<(RelayId, Delta<OriginKey, ()>)> {
        let before = self
            .presence
            .learned_entry(peer, &fingerprint)
            .map(Entry::origin);
        let now = entry.map(Entry::origin);
        let mut out = Vec::new();
        if let Some(old) = before.filter(|o| Some(*o) != now) {
            out.extend(
                self.presence_all
                    .learn(peer, (fingerprint, old), None, |_, _| true),
            );
        }
        if let Some(e) = entry {
            out.extend(self.presence_all.learn(
                peer,
                (fingerprint, e.origin()),
                Some(e.clone()),
                |_, _| true,
            ));
        }
        out
    }

    /// Every fingerprint known with each relay it is on (one pair per
    /// relay: [`FederationCore::origins_of`]).
    pub fn presence(&self) -> Vec<(Fingerprint, RelayId)> {
        let mut v: Vec<(Fingerprint, RelayId)> = self
            .presence
            .keys()
            .filter_map(|k| self.presence.best(k).map(|e| (*k, e.origin())))
            .chain(self.presence_all.keys().copied())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Peers a media packet of `room` from `origin`, received over `from`
    /// (`None`: from a local client), goes to: the branches of `origin`'s
    /// shortest-path tree below this relay. An up peer `N` that bridges the
    /// room gets it when
    ///
    /// - `N` reaches `origin` *through this relay*: it did not announce
    ///   `(room, origin)` here (path-vector withdraws a path from the relay
    ///   it goes through, so an announcement means `N` has its own way), and
    /// - `N` leads to members other than `origin`'s: it announced some other
    ///   `(room, D)` here;
    ///
    /// never `from`, never `origin`. Each relay then receives a packet once,
    /// from its parent in the tree (a copy over another path only while the
    /// tables converge, which the dedup window drops). A hub with no local
    /// member still forwards.
    pub fn forward_targets(
        &self,
        room: RoomId,
        origin: RelayId,
        from: Option<RelayId>,
    ) -> Vec<RelayId> {
        self.room_media_peers(room)
            .into_iter()
            .filter(|(peer, origins)| {
                Some(*peer) != from
                    && *peer != origin
                    && !origins.contains(&origin)
                    && origins.iter().any(|o| *o != origin)
            })
            .map(|(peer, _)| peer)
            .collect()
    }

    /// For media routing tables: each up peer that bridges `room`, with the
    /// origins whose participants it announced here (what
    /// [`FederationCore::forward_targets`] decides by, as data).
    pub fn room_media_peers(&self, room: RoomId) -> Vec<(RelayId, Vec<RelayId>)> {
        let mut out = Vec::new();
        for (&peer, link) in &self.links {
            if !matches!(link.phase, Phase::Up { .. }) || !self.peer_bridges(peer, room) {
                continue;
            }
            let mut origins: Vec<RelayId> = self
                .rooms
                .learned_from(peer)
                .filter(|((r, _), _)| *r == room)
                .map(|((_, o), _)| *o)
                .collect();
            origins.sort();
            out.push((peer, origins));
        }
        out
    }

    /// The connection of `peer`'s link while it is up.
    pub fn up_conn(&self, peer: RelayId) -> Option<LinkConn> {
        match self.links.get(&peer)?.phase {
            Phase::Up { conn, .. } => Some(conn),
            _ => None,
        }
    }

    /// The rooms media may cross links for: the bridged global rooms and
    /// the rooms of answered cross-relay calls.
    pub fn bridged_rooms(&self) -> impl Iterator<Item = &RoomId> {
        self.global_rooms.iter().chain(self.bridged_call_rooms())
    }

    fn peer_bridges(&self, peer: RelayId, room: RoomId) -> bool {
        (matches!(self.links.get(&peer).map(|l| &l.phase),
            Some(Phase::Up { rooms, .. }) if rooms.contains(&room))
            && self.global_rooms.contains(&room))
            || self.call_bridges(peer, room)
    }

    fn room_eligibility(&self) -> impl Fn(RelayId, &RoomKey) -> bool + 'static {
        let mut bridges: HashMap<RelayId, BTreeSet<RoomId>> = self
            .links
            .iter()
            .filter_map(|(id, l)| match &l.phase {
                Phase::Up { rooms, .. } => Some((*id, rooms.clone())),
                _ => None,
            })
            .collect();
        // A call room is bridged with the call's neighbours only.
        for (peer, room) in self.call_bridged_rooms() {
            if let Some(rooms) = bridges.get_mut(&peer) {
                rooms.insert(room);
            }
        }
        move |peer, (room, _)| bridges.get(&peer).is_some_and(|r| r.contains(room))
    }

    /// [`FederationCore::room_eligibility`] for the keys of one room only
    /// (what `learn`, `set_local` and `sync_key` of that room's keys ask):
    /// the up peers that bridge it, found without going over every room
    /// and call (a relay carrying thousands of calls answered each
    /// announcement in time proportional to all of them).
    fn room_eligibility_for(&self, room: RoomId) -> impl Fn(RelayId, &RoomKey) -> bool + 'static {
        let peers: Vec<RelayId> = self
            .links
            .iter()
            .filter(|(id, l)| {
                matches!(&l.phase, Phase::Up { rooms, .. } if rooms.contains(&room))
                    || (matches!(l.phase, Phase::Up { .. }) && self.call_bridges(**id, room))
            })
            .map(|(id, _)| *id)
            .collect();
        move |peer, (r, _)| *r == room && peers.contains(&peer)
    }

    fn current_conn(&self, peer: RelayId) -> Option<LinkConn> {
        match self.links.get(&peer)?.phase {
            Phase::Handshaking { conn, .. } | Phase::Up { conn, .. } => Some(conn),
            Phase::Down { .. } => None,
        }
    }

    fn link_up(&mut self, conn: LinkConn, tls: TlsFingerprint, dialed_by_me: bool, now: Instant) {
        let peer = RelayId::of(&tls);
        let known = self.links.get(&peer).is_some_and(|l| l.spec.tls == tls);
        if !known {
            self.counters.unknown_relay += 1;
            self.actions.push(Action::Close {
                conn,
                code: CloseCode::NotAuthorized,
                reason: format!(
                    "relay with certificate {tls} is not in the config of relay {} \
                     ([[peers]] or [[trusted]]); to federate, its operator adds:\n\
                     [[trusted]]\nfingerprint = \"{tls}\"\nlabel = \"...\"",
                    self.label
                ),
            });
            return;
        }
        let dialer = if dialed_by_me { self.me } else { peer };
        if let Some(old) = self.current_conn(peer) {
            let old_dialer = match self.links[&peer].phase {
                Phase::Handshaking { dialer, .. } | Phase::Up { dialer, .. } => dialer,
                Phase::Down { .. } => dialer,
            };
            // Same dialer: a reconnect; the new connection replaces the old.
            // Different dialers: both dialed; the lower id's dial is kept.
            let keep_new = old_dialer == dialer || dialer < old_dialer;
            self.counters.duplicate_link += 1;
            if !keep_new {
                self.actions.push(Action::Close {
                    conn,
                    code: CloseCode::Normal,
                    reason: "duplicate federation link: the other connection is kept".into(),
                });
                return;
            }
            self.by_conn.remove(&old);
            self.actions.push(Action::Close {
                conn: old,
                code: CloseCode::Replaced,
                reason: "replaced by a newer federation link".into(),
            });
            self.forget_peer_state(peer);
        }
        self.by_conn.insert(conn, peer);
        let l = self.links.get_mut(&peer).expect("known peer");
        l.phase = Phase::Handshaking {
            conn,
            dialer,
            since: now,
        };
        l.last_heard = now;
        l.messages_in = 0;
        l.messages_out = 0;
        l.media = MediaWatch::default();
        let rooms = self.global_rooms.iter().copied().collect();
        let mut hello = FederationMessage::hello_with_rooms(&self.label, rooms);
        if let FederationMessage::Hello { version, .. } = &mut hello {
            *version = self.version;
        }
        self.send(peer, hello);
    }

    fn heard(&mut self, conn: LinkConn, now: Instant) -> Option<RelayId> {
        let peer = *self.by_conn.get(&conn)?;
        if self.current_conn(peer) != Some(conn) {
            return None;
        }
        let l = self.links.get_mut(&peer)?;
        l.last_heard = now;
        l.messages_in += 1;
        Some(peer)
    }

    fn message(&mut self, conn: LinkConn, msg: FederationMessage, now: Instant) {
        let Some(peer) = self.heard(conn, now) else {
            self.counters.stale_conn += 1;
            return;
        };
        let up = matches!(self.links[&peer].phase, Phase::Up { .. });
        match msg {
            FederationMessage::Hello {
                version,
                min_version,
                label,
                rooms,
                ..
            } => {
                if up {
                    self.counters.unexpected += 1;
                    return;
                }
                let agreed = version.min(self.version);
                if agreed < min_version.max(MIN_FEDERATION_VERSION) {
                    self.counters.version_refused += 1;
                    self.close(
                        peer,
                        conn,
                        CloseCode::Protocol,
                        format!(
                            "incompatible federation versions: this relay speaks \
                             {MIN_FEDERATION_VERSION}..={FEDERATION_VERSION}, the peer \
                             {min_version}..={version}; upgrade the older relay"
                        ),
                        now,
                    );
                    return;
                }
                let l = self.links.get_mut(&peer).expect("linked peer");
                let Phase::Handshaking { dialer, .. } = l.phase else {
                    return;
                };
                l.phase = Phase::Up {
                    conn,
                    dialer,
                    rooms: rooms.into_iter().collect(),
                    label,
                    version: agreed,
                };
                l.backoff = BACKOFF_MIN;
                l.next_ping = now;
                l.pings.clear();
                let elig = self.room_eligibility();
                let d = self.rooms.peer_up(peer, elig);
                self.send_room_deltas(d);
                // One presence table per link: every relay a person is on
                // from version 6, the nearest one before.
                if agreed >= FORK_VERSION {
                    let d = self.presence_all.peer_up(peer, |_, _| true);
                    self.send_origin_deltas(d);
                } else {
                    let d = self.presence.peer_up(peer, |_, _| true);
                    self.send_presence_deltas(d);
                }
            }
            _ if !up => {
                self.counters.unexpected += 1;
                self.close(
                    peer,
                    conn,
                    CloseCode::Protocol,
                    "expected hello first".into(),
                    now,
                );
            }
            FederationMessage::Rooms { rooms } => self.peer_rooms(peer, rooms),
            FederationMessage::Ping { id, sent_ms } => {
                self.send(peer, FederationMessage::Pong { id, sent_ms });
            }
            FederationMessage::Pong { id, .. } => {
                let l = self.links.get_mut(&peer).expect("linked peer");
                if let Some(i) = l.pings.iter().position(|(p, _)| *p == id) {
                    let (_, sent) = l.pings[i];
                    l.rtt = Some(now.saturating_duration_since(sent));
                    l.pings.drain(..=i);
                }
            }
            FederationMessage::GlobalRoomActive {
                room,
                path,
                origin_label,
                participants,
            } => {
                if !self.room_allowed(peer, room) {
                    return;
                }
                let Some(path) = self.checked_path(peer, path) else {
                    return;
                };
                let origin = *path.last().expect("checked path");
                let mut participants = participants;
                participants.sort();
                let entry = Entry {
                    path,
                    value: RoomState {
                        origin_label,
                        participants,
                    },
                };
                let elig = self.room_eligibility_for(room);
                let d = self.rooms.learn(peer, (room, origin), Some(entry), elig);
                self.send_room_deltas(d);
                self.room_changed(room);
                self.call_room_heard(peer, room);
            }
            FederationMessage::GlobalRoomInactive { room, origin } => {
                if !self.room_allowed(peer, room) {
                    return;
                }
                let elig = self.room_eligibility_for(room);
                let d = self.rooms.learn(peer, (room, origin), None, elig);
                self.send_room_deltas(d);
                self.room_changed(room);
            }
            FederationMessage::CallSignal {
                call_id,
                caller,
                callee,
                path,
                fork,
                event,
            } => {
                let s = CallSignal {
                    call_id,
                    caller,
                    callee,
                    fork,
                    event,
                };
                self.call_message(peer, s, path, now);
            }
            FederationMessage::Mail { path, event } => self.mail_message(peer, path, event, now),
            FederationMessage::PresenceUpdate { announce, withdraw } => {
                let mut deltas = Vec::new();
                let mut origins = Vec::new();
                for PresenceRoute { fingerprint, path } in announce {
                    let entry = self
                        .checked_path(peer, path)
                        .map(|path| Entry { path, value: () });
                    let was = self.remote_path(&fingerprint).is_some();
                    origins.extend(self.nearest_to_origins(peer, fingerprint, entry.as_ref()));
                    deltas.extend(self.presence.learn(peer, fingerprint, entry, |_, _| true));
                    self.note_reach(fingerprint, was);
                }
                for fingerprint in withdraw {
                    origins.extend(self.nearest_to_origins(peer, fingerprint, None));
                    deltas.extend(self.presence.learn(peer, fingerprint, None, |_, _| true));
                }
                self.send_presence_deltas(deltas);
                self.send_origin_deltas(origins);
            }
            FederationMessage::PresenceOrigins { announce, withdraw } => {
                if !self.presence_all.is_up(peer) {
                    // Sent only on links agreed at FORK_VERSION.
                    self.counters.unexpected += 1;
                    return;
                }
                let mut deltas = Vec::new();
                for PresenceRoute { fingerprint, path } in announce {
                    let Some(path) = self.checked_path(peer, path) else {
                        continue;
                    };
                    let origin = *path.last().expect("checked path");
                    let entry = Entry { path, value: () };
                    deltas.extend(self.presence_all.learn(
                        peer,
                        (fingerprint, origin),
                        Some(entry),
                        |_, _| true,
                    ));
                    self.origins_to_nearest(peer, fingerprint);
                }
                for PresenceOrigin {
                    fingerprint,
                    origin,
                } in withdraw
                {
                    deltas.extend(self.presence_all.learn(
                        peer,
                        (fingerprint, origin),
                        None,
                        |_, _| true,
                    ));
                    self.origins_to_nearest(peer, fingerprint);
                }
                self.send_origin_deltas(deltas);
            }
        }
    }

    /// `peer` bridges `rooms` from now on (its `rooms` message): what it
    /// said of rooms it dropped is forgotten (and what it was told of them:
    /// it forgot that itself); rooms it added are announced to it.
    fn peer_rooms(&mut self, peer: RelayId, rooms: Vec<RoomId>) {
        let new: BTreeSet<RoomId> = rooms.into_iter().collect();
        let Some(Link {
            phase: Phase::Up { rooms: old, .. },
            ..
        }) = self.links.get_mut(&peer)
        else {
            return;
        };
        let old = std::mem::replace(old, new.clone());
        let dropped: BTreeSet<RoomId> = old.difference(&new).copied().collect();
        let added: BTreeSet<RoomId> = new
            .difference(&old)
            .filter(|r| self.global_rooms.contains(r))
            .copied()
            .collect();
        // One pass over the table whatever the lists' sizes (a peer's list
        // holds up to 1024 rooms).
        let mut deltas = Vec::new();
        let heard: Vec<RoomKey> = self
            .rooms
            .learned_from(peer)
            .filter(|((r, _), _)| dropped.contains(r))
            .map(|(k, _)| *k)
            .collect();
        let mut eligible = BTreeMap::new();
        for key in heard {
            let elig = eligible
                .entry(key.0)
                .or_insert_with(|| self.room_eligibility_for(key.0));
            deltas.extend(self.rooms.learn(peer, key, None, &*elig));
        }
        // It dropped what it heard of those rooms with them.
        self.rooms.forget_told(peer, |(r, _)| dropped.contains(r));
        for room in &dropped {
            self.room_changed(*room);
        }
        let mut keys: Vec<RoomKey> = self
            .rooms
            .keys()
            .filter(|(r, _)| added.contains(r))
            .copied()
            .collect();
        keys.sort();
        let mut eligible = BTreeMap::new();
        for key in keys {
            let elig = eligible
                .entry(key.0)
                .or_insert_with(|| self.room_eligibility_for(key.0));
            deltas.extend(self.rooms.sync_key(&key, &*elig));
        }
        self.send_room_deltas(deltas);
    }

    /// Makes `rooms` the global rooms this relay bridges (a reloaded
    /// config's `[[global_rooms]]`), with no link closed: peers at
    /// [`ROOMS_VERSION`] or later are sent the new list (older ones learn
    /// it when their link next comes up); a room dropped has this relay's
    /// announcements of it withdrawn and what peers said of it forgotten.
    /// A room added is announced once the room service reports its local
    /// members ([`Input::LocalRoom`]). Returns the rooms (added, dropped).
    pub fn set_global_rooms(
        &mut self,
        rooms: Vec<RoomId>,
        now: Instant,
    ) -> (Vec<RoomId>, Vec<RoomId>) {
        self.last_now = now;
        let new: BTreeSet<RoomId> = rooms.into_iter().collect();
        let added: Vec<RoomId> = new.difference(&self.global_rooms).copied().collect();
        let dropped: Vec<RoomId> = self.global_rooms.difference(&new).copied().collect();
        if added.is_empty() && dropped.is_empty() {
            return (added, dropped);
        }
        self.global_rooms = new;
        // A call's room keeps its own bridging whatever the list says.
        let gone: BTreeSet<RoomId> = dropped
            .iter()
            .copied()
            .filter(|r| !self.call_room_is_local(*r) && self.call_room_name(*r).is_none())
            .collect();
        let none = |_: RelayId, _: &RoomKey| false;
        let mut deltas = Vec::new();
        for room in &gone {
            deltas.extend(self.rooms.set_local((*room, self.me), None, none));
        }
        // What the peers said of those rooms, in one pass per peer.
        let heard: Vec<(RelayId, RoomKey)> = self
            .links
            .keys()
            .flat_map(|p| {
                self.rooms
                    .learned_from(*p)
                    .filter(|((r, _), _)| gone.contains(r))
                    .map(|(k, _)| (*p, *k))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (peer, key) in heard {
            deltas.extend(self.rooms.learn(peer, key, None, none));
        }
        for room in &gone {
            self.room_changed(*room);
        }
        // The withdrawals go first, while the peers still take this relay
        // for bridging those rooms; the new list next, before anything this
        // relay announces of the rooms added (which would be refused ahead
        // of it).
        self.send_room_deltas(deltas);
        self.flush();
        let list: Vec<RoomId> = self.global_rooms.iter().copied().collect();
        let peers: Vec<RelayId> = self
            .links
            .keys()
            .copied()
            .filter(|p| self.link_version(*p).is_some_and(|v| v >= ROOMS_VERSION))
            .collect();
        for p in peers {
            self.send(
                p,
                FederationMessage::Rooms {
                    rooms: list.clone(),
                },
            );
        }
        (added, dropped)
    }

    /// A room announcement is accepted only for a room both sides bridge.
    fn room_allowed(&mut self, peer: RelayId, room: RoomId) -> bool {
        if self.call_bridges(peer, room) {
            return true;
        }
        if !self.global_rooms.contains(&room) {
            self.counters.room_not_bridged_here += 1;
            return false;
        }
        let bridged = matches!(&self.links[&peer].phase,
            Phase::Up { rooms, .. } if rooms.contains(&room));
        if !bridged {
            self.counters.room_not_bridged_by_peer += 1;
        }
        bridged
    }

    /// The path of an announcement from `peer`: it must start with the
    /// sender (a relay speaks only for itself). A path through this relay is
    /// a loop: `None`, counted (the caller treats it as a withdrawal).
    fn checked_path(&mut self, peer: RelayId, path: Vec<RelayId>) -> Option<Vec<RelayId>> {
        if path.first() != Some(&peer) {
            self.counters.path_not_from_sender += 1;
            return None;
        }
        if path.contains(&self.me) {
            self.counters.loops += 1;
            return None;
        }
        Some(path)
    }

    fn room_changed(&mut self, room: RoomId) {
        let a = match self.call_room_name(room) {
            Some(name) => Action::CallRoomChanged { room, name },
            None => Action::RoomChanged { room },
        };
        if !self.actions.contains(&a) {
            self.actions.push(a);
        }
    }

    /// The link to `peer` is gone: forget what it said, tell the others,
    /// schedule a redial.
    fn link_lost(&mut self, peer: RelayId, now: Instant) {
        let was_up = self
            .links
            .get(&peer)
            .is_some_and(|l| matches!(l.phase, Phase::Up { .. }));
        self.forget_peer_state(peer);
        if let Some(l) = self.links.get_mut(&peer) {
            l.phase = Phase::Down {
                next_dial: None,
                dialing: false,
            };
        }
        if was_up {
            self.schedule_quick_redial(peer, now);
        } else {
            self.schedule_redial(peer, now);
        }
    }

    /// A link that was up is gone: redial after [`QUICK_REDIAL`] (with
    /// jitter), leaving the backoff where it is for the dials after it.
    fn schedule_quick_redial(&mut self, peer: RelayId, now: Instant) {
        let jitter = self.next_unit();
        let Some(l) = self.links.get_mut(&peer) else {
            return;
        };
        if l.spec.address.is_none() {
            return;
        }
        if let Phase::Down { next_dial, dialing } = &mut l.phase {
            if !*dialing {
                *next_dial = Some(now + QUICK_REDIAL.mul_f64(1.0 - 0.2 * jitter));
            }
        }
    }

    fn forget_peer_state(&mut self, peer: RelayId) {
        // Changes queued for the old link must not reach a new one.
        self.pending_rooms.retain(|(p, _), _| *p != peer);
        self.pending_signals.retain(|(p, _)| *p != peer);
        self.pending_presence.retain(|(p, _), _| *p != peer);
        self.pending_origins.retain(|(p, _), _| *p != peer);
        let rooms: BTreeSet<RoomId> = self
            .rooms
            .learned_from(peer)
            .map(|((r, _), _)| *r)
            .collect();
        let was_up = self.rooms.is_up(peer);
        if let Some(l) = self.links.get_mut(&peer) {
            // Eligibility must already exclude the peer going down.
            l.phase = Phase::Down {
                next_dial: None,
                dialing: false,
            };
        }
        if was_up {
            let elig = self.room_eligibility();
            let d = self.rooms.peer_down(peer, elig);
            self.send_room_deltas(d);
            // Both tables hold what the peer said (one as it said it, the
            // other derived from that).
            let d = self.presence.peer_down(peer, |_, _| true);
            self.send_presence_deltas(d);
            let d = self.presence_all.peer_down(peer, |_, _| true);
            self.send_origin_deltas(d);
        }
        for r in rooms {
            self.room_changed(r);
        }
        self.end_calls_via(peer, self.last_now);
    }

    fn close(
        &mut self,
        peer: RelayId,
        conn: LinkConn,
        code: CloseCode,
        reason: String,
        now: Instant,
    ) {
        self.by_conn.remove(&conn);
        self.actions.push(Action::Close { conn, code, reason });
        self.link_lost(peer, now);
    }

    fn schedule_redial(&mut self, peer: RelayId, now: Instant) {
        let jitter = self.next_unit();
        let Some(l) = self.links.get_mut(&peer) else {
            return;
        };
        if l.spec.address.is_none() {
            return;
        }
        let delay = l.backoff.mul_f64(1.0 - 0.2 * jitter);
        l.backoff = (l.backoff * 2).min(BACKOFF_MAX);
        if let Phase::Down { next_dial, dialing } = &mut l.phase {
            if !*dialing {
                *next_dial = Some(now + delay);
            }
        }
    }

    /// Uniform in [0, 1), SplitMix64 over the injected seed.
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn send(&mut self, peer: RelayId, msg: FederationMessage) {
        let Some(conn) = self.current_conn(peer) else {
            return;
        };
        if let Some(l) = self.links.get_mut(&peer) {
            l.messages_out += 1;
        }
        self.actions.push(Action::Send { conn, peer, msg });
    }

    /// Queues table changes; [`FederationCore::tick`] sends them, the last
    /// change per (peer, key) only, so states that come and go between two
    /// ticks never travel (fewer messages while routes settle).
    fn send_room_deltas(&mut self, deltas: Vec<(RelayId, Delta<RoomKey, RoomState>)>) {
        for (peer, d) in deltas {
            let key = match &d {
                Delta::Announce(k, _) | Delta::Withdraw(k) => *k,
            };
            self.pending_rooms.insert((peer, key), d);
        }
        self.mark_dirty();
    }

    fn send_presence_deltas(&mut self, deltas: Vec<(RelayId, Delta<Fingerprint, ()>)>) {
        for (peer, d) in deltas {
            let key = match &d {
                Delta::Announce(k, _) | Delta::Withdraw(k) => *k,
            };
            self.pending_presence.insert((peer, key), d);
        }
        self.mark_dirty();
    }

    fn send_origin_deltas(&mut self, deltas: Vec<(RelayId, Delta<OriginKey, ()>)>) {
        for (peer, d) in deltas {
            let key = match &d {
                Delta::Announce(k, _) | Delta::Withdraw(k) => *k,
            };
            self.pending_origins.insert((peer, key), d);
        }
        self.mark_dirty();
    }

    /// Sends `msg` to `peer` after the table changes queued so far.
    fn send_after_flush(&mut self, peer: RelayId, msg: FederationMessage) {
        self.pending_signals.push((peer, msg));
        self.mark_dirty();
    }

    fn mark_dirty(&mut self) {
        if (!self.pending_rooms.is_empty()
            || !self.pending_presence.is_empty()
            || !self.pending_origins.is_empty()
            || !self.pending_signals.is_empty())
            && self.flush_at.is_none()
        {
            self.flush_at = Some(self.last_now);
        }
    }

    /// Sends the queued table changes.
    fn flush(&mut self) {
        self.flush_at = None;
        let rooms = std::mem::take(&mut self.pending_rooms);
        self.flush_rooms(rooms.into_iter().map(|((p, _), d)| (p, d)).collect());
        let presence = std::mem::take(&mut self.pending_presence);
        self.flush_presence(presence.into_iter().map(|((p, _), d)| (p, d)).collect());
        let origins = std::mem::take(&mut self.pending_origins);
        self.flush_origins(origins.into_iter().map(|((p, _), d)| (p, d)).collect());
        for (peer, msg) in std::mem::take(&mut self.pending_signals) {
            self.send(peer, msg);
        }
    }

    fn flush_rooms(&mut self, deltas: Vec<(RelayId, Delta<RoomKey, RoomState>)>) {
        for (peer, d) in deltas {
            let msg = match d {
                Delta::Announce((room, _), e) => FederationMessage::GlobalRoomActive {
                    room,
                    path: e.path,
                    origin_label: e.value.origin_label,
                    participants: e.value.participants,
                },
                Delta::Withdraw((room, origin)) => {
                    FederationMessage::GlobalRoomInactive { room, origin }
                }
            };
            self.send(peer, msg);
        }
    }

    fn flush_presence(&mut self, deltas: Vec<(RelayId, Delta<Fingerprint, ()>)>) {
        let mut per_peer: BTreeMap<RelayId, (Vec<PresenceRoute>, Vec<Fingerprint>)> =
            BTreeMap::new();
        for (peer, d) in deltas {
            let (a, w) = per_peer.entry(peer).or_default();
            match d {
                Delta::Announce(fingerprint, e) => a.push(PresenceRoute {
                    fingerprint,
                    path: e.path,
                }),
                Delta::Withdraw(fingerprint) => w.push(fingerprint),
            }
        }
        for (peer, (a, w)) in per_peer {
            self.send_entries(peer, a, w, |announce, withdraw| {
                FederationMessage::PresenceUpdate { announce, withdraw }
            });
        }
    }

    /// Sends announcements `a` and withdrawals `w` to `peer` in messages of
    /// at most [`MAX_PRESENCE_ENTRIES`] entries each.
    fn send_entries<A, W>(
        &mut self,
        peer: RelayId,
        mut a: Vec<A>,
        mut w: Vec<W>,
        message: impl Fn(Vec<A>, Vec<W>) -> FederationMessage,
    ) {
        while !a.is_empty() || !w.is_empty() {
            let na = a.len().min(MAX_PRESENCE_ENTRIES);
            let announce: Vec<_> = a.drain(..na).collect();
            let nw = w.len().min(MAX_PRESENCE_ENTRIES - na);
            let withdraw: Vec<_> = w.drain(..nw).collect();
            self.send(peer, message(announce, withdraw));
        }
    }

    fn flush_origins(&mut self, deltas: Vec<(RelayId, Delta<OriginKey, ()>)>) {
        let mut per_peer: BTreeMap<RelayId, (Vec<PresenceRoute>, Vec<PresenceOrigin>)> =
            BTreeMap::new();
        for (peer, d) in deltas {
            let (a, w) = per_peer.entry(peer).or_default();
            match d {
                Delta::Announce((fingerprint, _), e) => a.push(PresenceRoute {
                    fingerprint,
                    path: e.path,
                }),
                Delta::Withdraw((fingerprint, origin)) => w.push(PresenceOrigin {
                    fingerprint,
                    origin,
                }),
            }
        }
        for (peer, (a, w)) in per_peer {
            self.send_entries(peer, a, w, |announce, withdraw| {
                FederationMessage::PresenceOrigins { announce, withdraw }
            });
        }
    }
}

#[cfg(test)]
mod tests;
