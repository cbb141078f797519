//! `federation.forward`: media leaving for other relays.
//!
//! - Input `in` (from `sfu.fanout`): a copy addressed to a room's
//!   federation member (`meta.peer` in the table's `members`) is a local
//!   client's packet: it goes out once per link that is the next hop towards
//!   another relay's members of the room, behind a tag with `hops = 0`,
//!   this relay as origin (docs/WIRE.md §9.3) (`sent`). Every other packet
//!   passes untouched (`passed`).
//! - Input `relay` (from `federation.dedup`): a fresh packet from another
//!   relay, tag included: it goes on with `hops + 1` to each link towards
//!   other relays' members, never back on the link it came from nor towards
//!   its origin (`relayed`); not when `hops + 1` reaches the limit
//!   (`hop_limit`).
//!
//! - Ports: inputs `in`, `relay`; output `out` (to `net.quic_egress`,
//!   `meta.peer` = link handle for forwarded copies).
//! - Params: `table` (resource, default `"relay.fed_out"`).
//! - Counters: `passed`, `sent` (tagged copies of local packets), `relayed`
//!   (copies of other relays' packets), `hop_limit`, `no_route` (a member's
//!   copy for a room the table does not bridge: it changed this cycle),
//!   `too_large` (tag + packet above a slot), `out_full`.
//! - Latency: zero. Nothing allocates or locks.

use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_proto::federation::{ForwardTag, RelayId, RoomId, FORWARD_TAG_LEN, MAX_MEDIA_HOPS};

use super::{take_subscriber, TableSubscriber, MAX_TARGETS};

/// Factory of `federation.forward`.
pub struct Forward;

/// The real-time half of `federation.forward`.
pub struct ForwardProc {
    sub: TableSubscriber,
    targets: [u32; MAX_TARGETS],
    passed: Counter,
    sent: Counter,
    relayed: Counter,
    hop_limit: Counter,
    no_route: Counter,
    too_large: Counter,
    out_full: Counter,
}

/// Pushes `tag` + `packet` to `out` (the caller checked that they fit).
fn push_tagged(
    out: &mut Batch<PacketMeta>,
    meta: PacketMeta,
    tag: &ForwardTag,
    packet: &[u8],
) -> Result<(), ()> {
    let len = FORWARD_TAG_LEN + packet.len();
    let slot = out.push_slot().ok_or(())?;
    slot.meta = meta;
    let buf = slot.buf_mut();
    // FORWARD_TAG_LEN bytes always fit a slot.
    let _ = tag.write(&mut buf[..FORWARD_TAG_LEN]);
    buf[FORWARD_TAG_LEN..len].copy_from_slice(packet);
    slot.set_len(len);
    Ok(())
}

impl ForwardProc {
    fn local(&mut self, out: &mut Batch<PacketMeta>, pkt: &Slot<PacketMeta>) {
        let table = self.sub.table();
        let Some(room) = table.members.get(&pkt.meta.peer).copied() else {
            match out.push_copy(pkt) {
                Ok(()) => self.passed.inc(),
                Err(_) => self.out_full.inc(),
            }
            return;
        };
        let Some(route) = table.rooms.get(&room) else {
            self.no_route.inc();
            return;
        };
        let me = table.me;
        let n = table.targets(route, me, None, &mut self.targets);
        let tag = ForwardTag {
            hops: 0,
            room,
            origin: me,
        };
        self.send(out, pkt, &tag, pkt.bytes(), n, false);
    }

    fn relay(&mut self, out: &mut Batch<PacketMeta>, pkt: &Slot<PacketMeta>) {
        let b = pkt.bytes();
        // federation.dedup passes only parsed, fresh packets; check anyway.
        if b.len() < FORWARD_TAG_LEN {
            return;
        }
        let hops = b[1].saturating_add(1);
        if hops >= MAX_MEDIA_HOPS {
            self.hop_limit.inc();
            return;
        }
        let mut room = [0u8; 16];
        room.copy_from_slice(&b[2..18]);
        let mut origin = [0u8; 8];
        origin.copy_from_slice(&b[18..26]);
        let (room, origin) = (RoomId(room), RelayId(origin));
        let table = self.sub.table();
        let Some(route) = table.rooms.get(&room) else {
            self.no_route.inc();
            return;
        };
        let n = table.targets(route, origin, Some(pkt.meta.peer), &mut self.targets);
        let tag = ForwardTag { hops, room, origin };
        self.send(out, pkt, &tag, &b[FORWARD_TAG_LEN..], n, true);
    }

    fn send(
        &mut self,
        out: &mut Batch<PacketMeta>,
        pkt: &Slot<PacketMeta>,
        tag: &ForwardTag,
        packet: &[u8],
        n: usize,
        relayed: bool,
    ) {
        if FORWARD_TAG_LEN + packet.len() > MAX_ITEM_BYTES {
            self.too_large.add(n as u64);
            return;
        }
        for k in 0..n {
            let mut meta = pkt.meta;
            meta.peer = self.targets[k];
            match push_tagged(out, meta, tag, packet) {
                Ok(()) if relayed => self.relayed.inc(),
                Ok(()) => self.sent.inc(),
                Err(()) => self.out_full.inc(),
            }
        }
    }
}

impl Processor for ForwardProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        self.sub.refresh();
        if let (Some(input), Some(out)) = io.packets_in_out(0, 0) {
            for pkt in input.iter() {
                self.local(out, pkt);
            }
        }
        if let (Some(input), Some(out)) = io.packets_in_out(1, 0) {
            for pkt in input.iter() {
                self.relay(out, pkt);
            }
        }
        Flow::Continue
    }
}

impl StageFactory for Forward {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "federation.forward",
            summary: "sends room media on to other relays over federation links",
            inputs: vec![
                PortInfo {
                    name: "in",
                    ty: "Packet",
                    doc: "sfu.fanout's copies; those for a federation member go to the links",
                },
                PortInfo {
                    name: "relay",
                    ty: "Packet",
                    doc: "federation.dedup's fresh packets from other relays, to send on",
                },
            ],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "packets to send; meta.peer = client or link handle",
            }],
            params: vec![ParamSpec::str(
                "table",
                "relay.fed_out",
                "resource: the federation table feed",
            )],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let sub = take_subscriber(cx, "federation.forward", p.str("table")?)?;
        let proc = ForwardProc {
            sub,
            targets: [0; MAX_TARGETS],
            passed: cx.counter("passed"),
            sent: cx.counter("sent"),
            relayed: cx.counter("relayed"),
            hop_limit: cx.counter("hop_limit"),
            no_route: cx.counter("no_route"),
            too_large: cx.counter("too_large"),
            out_full: cx.counter("out_full"),
        };
        Ok(Built {
            inputs: vec![
                PortDecl::new("in", PortType::Packet),
                PortDecl::new("relay", PortType::Packet),
            ],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(proc),
        })
    }
}
