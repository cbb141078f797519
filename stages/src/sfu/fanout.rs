//! `sfu.fanout`: one copy of each packet to every other member of the
//! sender's room.
//!
//! For each input packet from peer P (`meta.peer`, a connection handle) in
//! room R, one copy goes out per other member M of R, with `meta.peer = M`.
//! Payloads are forwarded byte for byte: the relay cannot read them (they
//! are sealed end to end). It only checks, when `check_header` is on, that
//! the clear media header parses (`wzp_proto::MediaHeader::parse`, which
//! never allocates), so garbage never reaches the other members.
//!
//! Membership comes from the control plane as [`SfuCommand`]s on an SPSC
//! ring (resource named by `membership`, a [`SfuMembershipPort`] made by
//! [`super::membership_channel`]), applied at the start of each cycle. The
//! tables are allocated at build: per peer slot its handle, room and links
//! of an intrusive doubly linked member list per room, so a join or leave is
//! O(1) and nothing is allocated or locked per packet.
//!
//! - Ports: input `in` (Packet), output `out` (Packet).
//! - Params: `membership` (string, default `"sfu.membership"`), `max_peers`
//!   (int, default 1024, 1..=65536), `max_rooms` (int, default 256,
//!   1..=65536), `check_header` (bool, default true).
//! - Counters: `forwarded` (packets fanned out), `copies` (packets out),
//!   `malformed` (header does not parse), `unknown_peer` (sender not a
//!   member: it left, or never joined), `out_full` (copies that did not fit
//!   the output batch; raise `batch_capacity`), `bad_commands` (a command
//!   out of the table's range). Gauge `members`.
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

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{slot_of, SfuCommand, SfuMembershipPort, MAX_SLOTS};

const NIL: u32 = u32::MAX;

/// Factory of `sfu.fanout`.
pub struct Fanout;

#[derive(Clone, Copy)]
struct PeerEntry {
    /// The full handle that owns this slot; NIL when free.
    handle: u32,
    room: u32,
    prev: u32,
    next: u32,
}

const FREE: PeerEntry = PeerEntry {
    handle: NIL,
    room: NIL,
    prev: NIL,
    next: NIL,
};

/// The real-time half of `sfu.fanout`.
pub struct FanoutProc {
    commands: rtrb::Consumer<SfuCommand>,
    peers: Box<[PeerEntry]>,
    /// First member slot of each room, NIL when empty.
    heads: Box<[u32]>,
    check_header: bool,
    members: i64,
    forwarded: Counter,
    copies: Counter,
    malformed: Counter,
    unknown_peer: Counter,
    out_full: Counter,
    bad_commands: Counter,
    members_gauge: Gauge,
}

impl FanoutProc {
    fn unlink(&mut self, slot: usize) {
        let e = self.peers[slot];
        if e.handle == NIL {
            return;
        }
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

    fn apply(&mut self, cmd: SfuCommand) {
        match cmd {
            SfuCommand::Join { peer, room } => {
                let slot = slot_of(peer);
                if slot >= self.peers.len() || room as usize >= self.heads.len() || peer == NIL {
                    self.bad_commands.inc();
                    return;
                }
                // A slot holds one handle: a rejoin (or a stale holder) is unlinked first.
                self.unlink(slot);
                let head = self.heads[room as usize];
                self.peers[slot] = PeerEntry {
                    handle: peer,
                    room,
                    prev: NIL,
                    next: head,
                };
                if head != NIL {
                    self.peers[head as usize].prev = slot as u32;
                }
                self.heads[room as usize] = slot as u32;
                self.members += 1;
            }
            SfuCommand::Leave { peer } => {
                let slot = slot_of(peer);
                match self.peers.get(slot) {
                    Some(e) if e.handle == peer => self.unlink(slot),
                    _ => self.bad_commands.inc(),
                }
            }
        }
    }
}

impl Processor for FanoutProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        while let Ok(cmd) = self.commands.pop() {
            self.apply(cmd);
        }
        self.members_gauge.set(self.members);
        let (Some(input), Some(out)) = io.packets_in_out(0, 0) else {
            return Flow::Continue;
        };
        for pkt in input.iter() {
            let src = pkt.meta.peer;
            let slot = slot_of(src);
            let Some(entry) = self.peers.get(slot).filter(|e| e.handle == src) else {
                self.unknown_peer.inc();
                continue;
            };
            if self.check_header && wzp_proto::MediaHeader::parse(pkt.bytes()).is_err() {
                self.malformed.inc();
                continue;
            }
            self.forwarded.inc();
            let mut m = self.heads[entry.room as usize];
            while m != NIL {
                let member = self.peers[m as usize];
                if m as usize != slot {
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
        Flow::Continue
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
            ],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet, Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let max_peers = p.int_in("max_peers", 1, MAX_SLOTS as i64)? as usize;
        let max_rooms = p.int_in("max_rooms", 1, MAX_SLOTS as i64)? as usize;
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
        let proc = FanoutProc {
            commands,
            peers: vec![FREE; max_peers].into_boxed_slice(),
            heads: vec![NIL; max_rooms].into_boxed_slice(),
            check_header: p.bool("check_header")?,
            members: 0,
            forwarded: cx.counter("forwarded"),
            copies: cx.counter("copies"),
            malformed: cx.counter("malformed"),
            unknown_peer: cx.counter("unknown_peer"),
            out_full: cx.counter("out_full"),
            bad_commands: cx.counter("bad_commands"),
            members_gauge: cx.gauge("members"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(proc),
        })
    }
}
