//! `sfu.fanout`: one copy of each packet to every other member of the
//! sender's room, from senders that own their id, at a bounded rate, and
//! never a replay of a departed sender.
//!
//! For each input packet from peer P (`meta.peer`, a connection handle) in
//! room R, one copy goes out per other member M of R, with `meta.peer = M`.
//! Payloads are forwarded byte for byte: the relay cannot read them (they
//! are sealed end to end). It only reads the clear media header
//! (`wzp_proto::MediaHeader::parse`, which never allocates), so garbage never
//! reaches the other members.
//!
//! ## Sender binding, rate caps and replay freshness (`bind_senders`)
//!
//! The relay cannot authenticate media, but it can stop one connection from
//! speaking as another and from replaying what it captured:
//!
//! - **Binding.** A media sender id (header bytes 4..8) belongs, in its room,
//!   to the peer that first sent a forwarded packet with it. A packet from
//!   any other peer carrying that id is dropped (`sender_spoofed`). A peer
//!   may own at most `max_ids_per_peer` ids (one per media stream; a client
//!   sends one); packets with a further new id are dropped (`sender_limit`),
//!   so a peer cannot escape its rate cap by rotating ids.
//! - **Rate caps.** Each bound id has two token buckets, packets and bytes,
//!   refilled at `sender_pps` and `sender_bytes_per_s` and `burst_ms` deep.
//!   A packet that finds either bucket short is dropped (`rate_limited`).
//!   The defaults are twice the busiest profile of
//!   [`crate::codec::profile::PROFILES`] with its FEC repair
//!   ([`default_sender_pps`], [`default_sender_bytes_per_s`]): the factor
//!   covers repair counts rounded up on small blocks and a raised repair
//!   ratio.
//! - **Replay freshness.** The binding tracks the highest packet index
//!   `(key_epoch << 32) | seq` forwarded for the id. When the owner leaves
//!   ([`SfuCommand::Leave`], or a move to another room) the binding is
//!   released but the index is remembered for `replay_memory_ms` (graph time,
//!   `Cx::now_ns`): a packet with that id whose index is not above it is
//!   dropped (`stale_replay`) and binds nothing, so nobody can play a
//!   departed sender's captured packets to a member who joins later (whose
//!   `crypto.open` window starts empty). A packet above it is fresh and binds
//!   the id to its peer. At most `max_remembered` departed ids are kept; past
//!   that the oldest is forgotten early (`remembered_evicted`).
//!
//! ## A member gets media once it has been heard (`unheard_grace_ms`)
//!
//! A client sends nothing until its side of the admission has arrived. On
//! a link slower than the room's media (a 12 kbit/s uplink, say) copies
//! sent to a member before then fill its link, and the admission, sent on
//! the signalling stream into the same full link, took 30 s and more to
//! get through (retransmitted into the loss each time). So copies for a
//! member start once a packet of its own has arrived (media or a feedback
//! report), or `unheard_grace_ms` after it joined, whichever comes first
//! (a member that only listens still hears, that much late). The copies
//! skipped are counted (`unheard_held`). A federation link is heard from
//! the start. The default is 0 (copies at once); `graphs/relay.toml` sets
//! 2000. `wzp-client` sends from its admission on, so it misses about
//! one packet (two real-client calls on loopback: `unheard_held` 1 for
//! the newcomer, 0 for the first); a client that wants the room's media
//! must send something (the relay's tests' raw QUIC clients send one
//! packet after their admission: `relay-graph/tests/common`, `announce`).
//!
//! Each new binding is reported to the control plane
//! ([`super::SfuBinding`], on the membership port's ring back), which lists
//! a participant's sender ids in the room's updates: members label each
//! voice they hear with who sends it, on the relay's word, not the sender's.
//!
//! All tables are allocated at build: per peer slot its handle, room, links
//! of an intrusive member list per room and its owned ids; one open
//! addressing hash table (linear probing, backward-shift deletion, keyed
//! SipHash so chosen ids cannot build long probe runs) of
//! `max_peers * max_ids_per_peer + max_remembered` entries at load <= 1/2.
//! Nothing is allocated or locked per packet.
//!
//! - Ports: input `in` (Packet), output `out` (Packet).
//! - Params: `membership` (string, default `"sfu.membership"`), `max_peers`
//!   (int, default 1024, 1..=65536), `max_rooms` (int, default 256,
//!   1..=65536), `check_header` (bool, default true), `bind_senders` (bool,
//!   default true; needs `check_header`), `max_ids_per_peer` (int, default
//!   2, 1..=16), `sender_pps` (int, default [`default_sender_pps`],
//!   1..=100000), `sender_bytes_per_s` (int, default
//!   [`default_sender_bytes_per_s`], 1..=100000000), `burst_ms` (int,
//!   default 1000, 20..=10000), `replay_memory_ms` (int, default 600000,
//!   1000..=86400000), `max_remembered` (int, default 2048, 0..=65536),
//!   `unheard_grace_ms` (int, default 0, 0..=60000; 0: at once).
//! - Counters: `forwarded` (packets fanned out), `copies` (packets out),
//!   `malformed` (header does not parse), `unknown_peer` (sender not a
//!   member: it left, or never joined), `out_full` (copies that did not fit
//!   the output batch; raise `batch_capacity`), `bad_commands` (a command
//!   out of the table's range), `sender_spoofed`, `sender_limit`,
//!   `rate_limited`, `stale_replay`, `remembered_evicted`, `unheard_held`
//!   (copies not sent to a member not yet heard from), `bindings_lost` (a
//!   binding the control plane's ring had no room for). Gauges `members`,
//!   `senders` (bound ids), `remembered_senders`.
//! - Latency: zero.
//!
//! ```toml
//! [graph]
//! batch_capacity = 1024
//!
//! [[stage]]
//! id = "fanout"
//! kind = "sfu.fanout"
//! domain = "packet"
//! params = { membership = "relay.sfu", max_peers = 1024, max_rooms = 256 }
//! ```

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use wzp_engine::prelude::*;

use super::{slot_of, SfuBinding, SfuCommand, SfuMembershipPort, MAX_SLOTS};
use crate::codec::profile::PROFILES;
use crate::crypto::ReplayWindow;

const NIL: u32 = u32::MAX;

/// Packets per second of the busiest profile with its FEC repair, times two.
pub fn default_sender_pps() -> i64 {
    PROFILES
        .iter()
        .map(|p| profile_pps_with_repair(p.frame_ms, p.fec_ratio_percent))
        .max()
        .unwrap_or(50)
        * 2
}

/// Bytes per second of the busiest profile (largest datagrams, with FEC
/// repair), times two.
pub fn default_sender_bytes_per_s() -> i64 {
    PROFILES
        .iter()
        .map(|p| {
            profile_pps_with_repair(p.frame_ms, p.fec_ratio_percent) * p.max_datagram_bytes() as i64
        })
        .max()
        .unwrap_or(50 * 1200)
        * 2
}

fn profile_pps_with_repair(frame_ms: u32, fec_ratio_percent: u8) -> i64 {
    let source = 1000 / i64::from(frame_ms.max(1));
    (source * (100 + i64::from(fec_ratio_percent)) + 99) / 100
}

/// Factory of `sfu.fanout`.
pub struct Fanout;

#[derive(Clone, Copy)]
struct PeerEntry {
    /// The full handle that owns this slot; NIL when free.
    handle: u32,
    room: u32,
    prev: u32,
    next: u32,
    /// A federation member ([`SfuCommand::JoinRelay`]): its packets carry
    /// other relays' senders, so they are not bound or rate-capped here
    /// (`federation.dedup` limits them per link and room).
    relay: bool,
    /// A packet from this member has arrived since it joined: it is past
    /// its admission on its side (a client sends nothing before).
    heard: bool,
    /// When it joined (graph time).
    joined_ns: u64,
}

const FREE: PeerEntry = PeerEntry {
    handle: NIL,
    room: NIL,
    prev: NIL,
    next: NIL,
    relay: false,
    heard: false,
    joined_ns: 0,
};

/// One sender id of one room: bound to a live owner, or remembered after
/// its owner left (`owner == NIL`).
#[derive(Clone, Copy)]
struct SenderEntry {
    used: bool,
    room: u32,
    id: u32,
    owner: u32,
    /// Highest packet index forwarded for this id.
    highest: u64,
    /// Live: last bucket refill. Remembered: when the owner left.
    t_ns: u64,
    /// Token buckets, in thousandths of a packet / of a byte.
    pkt_milli: u64,
    byte_milli: u64,
}

const EMPTY: SenderEntry = SenderEntry {
    used: false,
    room: 0,
    id: 0,
    owner: NIL,
    highest: 0,
    t_ns: 0,
    pkt_milli: 0,
    byte_milli: 0,
};

/// Sender-binding limits, from the params.
#[derive(Clone, Copy)]
struct Limits {
    ids_per_peer: usize,
    pps: u64,
    bytes_per_s: u64,
    burst_ns: u64,
    pkt_depth_milli: u64,
    byte_depth_milli: u64,
    memory_ns: u64,
    max_remembered: usize,
}

/// Remembered entries looked at per cycle for expiry.
const SWEEP_PER_CYCLE: usize = 16;

/// The sender table: open addressing, linear probing, backward-shift
/// deletion (no tombstones, so probe runs never grow from churn).
struct Senders {
    table: Box<[SenderEntry]>,
    mask: usize,
    hasher: RandomState,
    live: usize,
    remembered: usize,
    sweep: usize,
}

impl Senders {
    fn new(entries: usize) -> Senders {
        let cap = (entries.max(8) * 2).next_power_of_two();
        Senders {
            table: vec![EMPTY; cap].into_boxed_slice(),
            mask: cap - 1,
            hasher: RandomState::new(),
            live: 0,
            remembered: 0,
            sweep: 0,
        }
    }

    #[inline]
    fn home(&self, room: u32, id: u32) -> usize {
        (self.hasher.hash_one((room, id)) as usize) & self.mask
    }

    fn find(&self, room: u32, id: u32) -> Option<usize> {
        let mut i = self.home(room, id);
        for _ in 0..=self.mask {
            let e = &self.table[i];
            if !e.used {
                return None;
            }
            if e.room == room && e.id == id {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// A free position for `(room, id)` (known absent). The table is sized
    /// at twice its most entries, so one is always found.
    fn vacant(&self, room: u32, id: u32) -> Option<usize> {
        let mut i = self.home(room, id);
        for _ in 0..=self.mask {
            if !self.table[i].used {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    fn remove(&mut self, mut hole: usize) {
        if self.table[hole].owner == NIL {
            self.remembered -= 1;
        } else {
            self.live -= 1;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            let e = self.table[j];
            if !e.used {
                break;
            }
            let k = self.home(e.room, e.id);
            // `e` may move back into the hole unless its home lies
            // cyclically in (hole, j].
            let stays = if hole <= j {
                hole < k && k <= j
            } else {
                hole < k || k <= j
            };
            if !stays {
                self.table[hole] = e;
                hole = j;
            }
        }
        self.table[hole] = EMPTY;
    }

    fn expired(e: &SenderEntry, now: u64, memory_ns: u64) -> bool {
        e.used && e.owner == NIL && now.saturating_sub(e.t_ns) >= memory_ns
    }

    /// Forgets a few expired remembered ids (bounded work per cycle).
    fn sweep(&mut self, now: u64, memory_ns: u64) {
        if self.remembered == 0 {
            return;
        }
        for _ in 0..SWEEP_PER_CYCLE {
            let i = self.sweep & self.mask;
            if Self::expired(&self.table[i], now, memory_ns) {
                // The shift may pull another entry into `i`: look at it next.
                self.remove(i);
            } else {
                self.sweep = self.sweep.wrapping_add(1);
            }
        }
    }

    /// The owner of the entry at `i` left: remember its highest index.
    /// Returns whether an older remembered id was forgotten to make room.
    fn release(&mut self, i: usize, now: u64, max_remembered: usize) -> bool {
        if max_remembered == 0 {
            self.remove(i);
            return false;
        }
        let e = &mut self.table[i];
        e.owner = NIL;
        e.t_ns = now;
        self.live -= 1;
        self.remembered += 1;
        if self.remembered <= max_remembered {
            return false;
        }
        // Rare (a full memory), so a scan is fine; the entry just released
        // is the newest and stays unless all are as new.
        let mut oldest: Option<usize> = None;
        for (j, e) in self.table.iter().enumerate() {
            if e.used && e.owner == NIL && oldest.is_none_or(|o| e.t_ns < self.table[o].t_ns) {
                oldest = Some(j);
            }
        }
        if let Some(o) = oldest {
            self.remove(o);
        }
        true
    }
}

/// The real-time half of `sfu.fanout`.
pub struct FanoutProc {
    commands: rtrb::Consumer<SfuCommand>,
    /// Where each new binding is reported (the control plane's roster).
    bindings: Option<rtrb::Producer<SfuBinding>>,
    peers: Box<[PeerEntry]>,
    /// First member slot of each room, NIL when empty.
    heads: Box<[u32]>,
    /// Sender ids owned by each peer slot, `ids_per_peer` per slot.
    owned: Box<[u32]>,
    owned_len: Box<[u8]>,
    senders: Senders,
    limits: Limits,
    check_header: bool,
    bind: bool,
    members: i64,
    /// `unheard_grace_ms`: how long a member that has sent nothing gets no
    /// media.
    unheard_ns: u64,
    unheard_held: Counter,
    forwarded: Counter,
    copies: Counter,
    malformed: Counter,
    unknown_peer: Counter,
    out_full: Counter,
    bad_commands: Counter,
    sender_spoofed: Counter,
    sender_limit: Counter,
    rate_limited: Counter,
    stale_replay: Counter,
    remembered_evicted: Counter,
    bindings_lost: Counter,
    members_gauge: Gauge,
    senders_gauge: Gauge,
    remembered_gauge: Gauge,
}

/// What the binding says about one packet.
enum Verdict {
    Forward,
    Spoofed,
    OverLimit,
    RateLimited,
    Stale,
}

impl FanoutProc {
    /// Releases every sender id the peer in `slot` owns.
    fn release_ids(&mut self, slot: usize, now: u64) {
        let e = self.peers[slot];
        let k = self.limits.ids_per_peer;
        let n = usize::from(self.owned_len[slot]);
        for j in 0..n {
            let id = self.owned[slot * k + j];
            if let Some(i) = self.senders.find(e.room, id) {
                if self.senders.table[i].owner == e.handle
                    && self.senders.release(i, now, self.limits.max_remembered)
                {
                    self.remembered_evicted.inc();
                }
            }
        }
        self.owned_len[slot] = 0;
    }

    fn unlink(&mut self, slot: usize, now: u64) {
        let e = self.peers[slot];
        if e.handle == NIL {
            return;
        }
        self.release_ids(slot, now);
        if e.prev != NIL {
            self.peers[e.prev as usize].next = e.next;
        } else if let Some(h) = self.heads.get_mut(e.room as usize) {
            *h = e.next;
        }
        if e.next != NIL {
            self.peers[e.next as usize].prev = e.prev;
        }
        self.peers[slot] = FREE;
        self.members -= 1;
    }

    fn apply(&mut self, cmd: SfuCommand, now: u64) {
        match cmd {
            SfuCommand::Join { peer, room } => self.join(peer, room, false, now),
            SfuCommand::JoinRelay { peer, room } => self.join(peer, room, true, now),
            SfuCommand::Leave { peer } => {
                let slot = slot_of(peer);
                match self.peers.get(slot) {
                    Some(e) if e.handle == peer => self.unlink(slot, now),
                    _ => self.bad_commands.inc(),
                }
            }
        }
    }

    fn join(&mut self, peer: u32, room: u32, relay: bool, now: u64) {
        let slot = slot_of(peer);
        if slot >= self.peers.len() || room as usize >= self.heads.len() || peer == NIL {
            self.bad_commands.inc();
            return;
        }
        // A slot holds one handle: a rejoin (or a stale holder) is
        // unlinked first, releasing the ids it owned in its room.
        self.unlink(slot, now);
        let head = self.heads[room as usize];
        self.peers[slot] = PeerEntry {
            handle: peer,
            room,
            prev: NIL,
            next: head,
            relay,
            // A relay link carries other relays' members: no admission of
            // its own to wait for.
            heard: relay,
            joined_ns: now,
        };
        if head != NIL {
            self.peers[head as usize].prev = slot as u32;
        }
        self.heads[room as usize] = slot as u32;
        self.members += 1;
    }

    /// Binds `id` in `room` to the peer in `slot` (a fresh entry at `at`, or
    /// a remembered one taken over), if the peer has room for another id.
    fn bind(
        &mut self,
        slot: usize,
        room: u32,
        id: u32,
        index: u64,
        now: u64,
        at: Option<usize>,
    ) -> Option<usize> {
        let k = self.limits.ids_per_peer;
        let n = usize::from(self.owned_len[slot]);
        if n >= k {
            return None;
        }
        let i = match at {
            Some(i) => {
                self.senders.remembered -= 1;
                i
            }
            None => self.senders.vacant(room, id)?,
        };
        self.senders.table[i] = SenderEntry {
            used: true,
            room,
            id,
            owner: self.peers[slot].handle,
            highest: index,
            t_ns: now,
            pkt_milli: self.limits.pkt_depth_milli,
            byte_milli: self.limits.byte_depth_milli,
        };
        self.senders.live += 1;
        self.owned[slot * k + n] = id;
        self.owned_len[slot] = (n + 1) as u8;
        if let Some(b) = self.bindings.as_mut() {
            let binding = SfuBinding {
                peer: self.peers[slot].handle,
                sender: id,
            };
            if b.push(binding).is_err() {
                self.bindings_lost.inc();
            }
        }
        Some(i)
    }

    fn judge(
        &mut self,
        slot: usize,
        room: u32,
        header: &wzp_proto::MediaHeader,
        len: usize,
        now: u64,
    ) -> Verdict {
        let id = header.sender_id;
        let index = ReplayWindow::index(header.key_epoch, header.seq);
        let handle = self.peers[slot].handle;
        let mut found = self.senders.find(room, id);
        if let Some(i) = found {
            if Senders::expired(&self.senders.table[i], now, self.limits.memory_ns) {
                self.senders.remove(i);
                found = None;
            }
        }
        let Some(i) = found else {
            return match self.bind(slot, room, id, index, now, None) {
                Some(i) => self.take_tokens(i, len, now),
                None => Verdict::OverLimit,
            };
        };
        let e = self.senders.table[i];
        if e.owner == NIL {
            if index <= e.highest {
                return Verdict::Stale;
            }
            return match self.bind(slot, room, id, index, now, Some(i)) {
                Some(i) => self.take_tokens(i, len, now),
                None => Verdict::OverLimit,
            };
        }
        if e.owner != handle {
            return Verdict::Spoofed;
        }
        let verdict = self.take_tokens(i, len, now);
        if matches!(verdict, Verdict::Forward) {
            let e = &mut self.senders.table[i];
            e.highest = e.highest.max(index);
        }
        verdict
    }

    fn take_tokens(&mut self, i: usize, len: usize, now: u64) -> Verdict {
        let l = self.limits;
        let e = &mut self.senders.table[i];
        let elapsed = now.saturating_sub(e.t_ns).min(l.burst_ns);
        e.t_ns = e.t_ns.max(now);
        // elapsed <= 10 s = 1e10 ns and rates <= 1e8/s keep this below 2^64.
        e.pkt_milli = (e.pkt_milli + elapsed * l.pps / 1_000_000).min(l.pkt_depth_milli);
        e.byte_milli = (e.byte_milli + elapsed * l.bytes_per_s / 1_000_000).min(l.byte_depth_milli);
        let byte_cost = len as u64 * 1000;
        if e.pkt_milli < 1000 || e.byte_milli < byte_cost {
            return Verdict::RateLimited;
        }
        e.pkt_milli -= 1000;
        e.byte_milli -= byte_cost;
        Verdict::Forward
    }
}

impl Processor for FanoutProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let now = cx.now_ns;
        while let Ok(cmd) = self.commands.pop() {
            self.apply(cmd, now);
        }
        if self.bind {
            self.senders.sweep(now, self.limits.memory_ns);
        }
        let (Some(input), Some(out)) = io.packets_in_out(0, 0) else {
            self.update_gauges();
            return Flow::Continue;
        };
        for pkt in input.iter() {
            let src = pkt.meta.peer;
            let slot = slot_of(src);
            let Some(entry) = self.peers.get(slot).copied().filter(|e| e.handle == src) else {
                self.unknown_peer.inc();
                continue;
            };
            self.peers[slot].heard = true;
            if self.check_header {
                let Ok((header, _)) = wzp_proto::MediaHeader::parse(pkt.bytes()) else {
                    self.malformed.inc();
                    continue;
                };
                if self.bind && !entry.relay {
                    match self.judge(slot, entry.room, &header, pkt.bytes().len(), now) {
                        Verdict::Forward => {}
                        Verdict::Spoofed => {
                            self.sender_spoofed.inc();
                            continue;
                        }
                        Verdict::OverLimit => {
                            self.sender_limit.inc();
                            continue;
                        }
                        Verdict::RateLimited => {
                            self.rate_limited.inc();
                            continue;
                        }
                        Verdict::Stale => {
                            self.stale_replay.inc();
                            continue;
                        }
                    }
                }
            }
            self.forwarded.inc();
            let mut m = self.heads[entry.room as usize];
            while m != NIL {
                let member = self.peers[m as usize];
                let waiting =
                    !member.heard && now.saturating_sub(member.joined_ns) < self.unheard_ns;
                if waiting {
                    self.unheard_held.inc();
                } else if m as usize != slot {
                    match out.push_copy(pkt) {
                        Ok(()) => {
                            if let Some(last) = out.as_mut_slice().last_mut() {
                                last.meta.peer = member.handle;
                            }
                            self.copies.inc();
                        }
                        Err(_) => self.out_full.inc(),
                    }
                }
                m = member.next;
            }
        }
        self.update_gauges();
        Flow::Continue
    }
}

impl FanoutProc {
    fn update_gauges(&self) {
        self.members_gauge.set(self.members);
        self.senders_gauge.set(self.senders.live as i64);
        self.remembered_gauge.set(self.senders.remembered as i64);
    }
}

impl StageFactory for Fanout {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "sfu.fanout",
            summary: "forwards each packet to every other member of the sender's room",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "packets from peers; meta.peer = source handle",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "one copy per other room member; meta.peer = destination handle",
            }],
            params: vec![
                ParamSpec::str(
                    "membership",
                    "sfu.membership",
                    "resource name of the membership command ring",
                ),
                ParamSpec::int("max_peers", 1024, "peer slots (1..=65536)"),
                ParamSpec::int("max_rooms", 256, "room slots (1..=65536)"),
                ParamSpec::bool(
                    "check_header",
                    true,
                    "drop packets whose clear media header does not parse",
                ),
                ParamSpec::bool(
                    "bind_senders",
                    true,
                    "bind each sender id to the peer that first used it; cap its rate; \
                     drop replays of departed senders (needs check_header)",
                ),
                ParamSpec::int(
                    "max_ids_per_peer",
                    2,
                    "sender ids one peer may own in its room (1..=16)",
                ),
                ParamSpec::int(
                    "sender_pps",
                    default_sender_pps(),
                    "packets per second per sender id (1..=100000)",
                ),
                ParamSpec::int(
                    "sender_bytes_per_s",
                    default_sender_bytes_per_s(),
                    "bytes per second per sender id (1..=100000000)",
                ),
                ParamSpec::int(
                    "burst_ms",
                    1000,
                    "depth of the rate buckets, in ms of the rate (20..=10000)",
                ),
                ParamSpec::int(
                    "replay_memory_ms",
                    600_000,
                    "how long a departed sender's highest index is remembered (1000..=86400000)",
                ),
                ParamSpec::int(
                    "max_remembered",
                    2048,
                    "departed sender ids remembered at once (0..=65536)",
                ),
                ParamSpec::int(
                    "unheard_grace_ms",
                    0,
                    "a member gets media once a packet of its own arrived, or this long \
                     after it joined (0..=60000; 0: at once)",
                ),
            ],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet, Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let max_peers = p.int_in("max_peers", 1, MAX_SLOTS as i64)? as usize;
        let max_rooms = p.int_in("max_rooms", 1, MAX_SLOTS as i64)? as usize;
        let check_header = p.bool("check_header")?;
        let bind = p.bool("bind_senders")?;
        if bind && !check_header {
            return Err(BuildError::Param(ParamError::new(
                "bind_senders",
                "sender binding reads the media header: set check_header = true, or \
                 bind_senders = false",
            )));
        }
        let ids_per_peer = p.int_in("max_ids_per_peer", 1, 16)? as usize;
        let pps = p.int_in("sender_pps", 1, 100_000)? as u64;
        let bytes_per_s = p.int_in("sender_bytes_per_s", 1, 100_000_000)? as u64;
        let burst_ms = p.int_in("burst_ms", 20, 10_000)? as u64;
        let memory_ms = p.int_in("replay_memory_ms", 1000, 86_400_000)? as u64;
        let max_remembered = p.int_in("max_remembered", 0, MAX_SLOTS as i64)? as usize;
        let unheard_ms = p.int_in("unheard_grace_ms", 0, 60_000)? as u64;
        let limits = Limits {
            ids_per_peer,
            pps,
            bytes_per_s,
            burst_ns: burst_ms * 1_000_000,
            pkt_depth_milli: pps * burst_ms,
            byte_depth_milli: bytes_per_s * burst_ms,
            memory_ns: memory_ms * 1_000_000,
            max_remembered,
        };
        let name = p.str("membership")?;
        let port = cx.resource::<SfuMembershipPort>(name).ok_or_else(|| {
            BuildError::Other(format!(
                "no resource `{name}`: sfu.fanout needs the relay control plane's membership \
                 ring; check the `membership` param"
            ))
        })?;
        let commands = port
            .rx
            .lock()
            .map_err(|_| BuildError::Other(format!("resource `{name}` is poisoned")))?
            .take()
            .ok_or_else(|| {
                BuildError::Other(format!(
                    "resource `{name}` is already used by another sfu.fanout stage"
                ))
            })?;
        // A second fan-out on the same port reports no bindings (the
        // commands above already refuse it).
        let bindings = port.bindings.lock().ok().and_then(|mut b| b.take());
        let table_entries = if bind {
            max_peers * ids_per_peer + max_remembered
        } else {
            0
        };
        let proc = FanoutProc {
            commands,
            bindings,
            peers: vec![FREE; max_peers].into_boxed_slice(),
            heads: vec![NIL; max_rooms].into_boxed_slice(),
            owned: vec![0; max_peers * ids_per_peer].into_boxed_slice(),
            owned_len: vec![0; max_peers].into_boxed_slice(),
            senders: Senders::new(table_entries),
            limits,
            check_header,
            bind,
            members: 0,
            unheard_ns: unheard_ms * 1_000_000,
            unheard_held: cx.counter("unheard_held"),
            forwarded: cx.counter("forwarded"),
            copies: cx.counter("copies"),
            malformed: cx.counter("malformed"),
            unknown_peer: cx.counter("unknown_peer"),
            out_full: cx.counter("out_full"),
            bad_commands: cx.counter("bad_commands"),
            sender_spoofed: cx.counter("sender_spoofed"),
            sender_limit: cx.counter("sender_limit"),
            rate_limited: cx.counter("rate_limited"),
            stale_replay: cx.counter("stale_replay"),
            remembered_evicted: cx.counter("remembered_evicted"),
            bindings_lost: cx.counter("bindings_lost"),
            members_gauge: cx.gauge("members"),
            senders_gauge: cx.gauge("senders"),
            remembered_gauge: cx.gauge("remembered_senders"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(proc),
        })
    }
}
