//! `federation.dedup`: media arriving from other relays, checked once.
//!
//! Packets from local clients (`meta.peer` not a link handle of the current
//! [`super::FederationTable`]) pass to `out` untouched. A datagram from a
//! link is a forwarded packet (docs/WIRE.md §9.3) and is dropped, counted
//! by reason, when:
//!
//! | counter | why |
//! |---|---|
//! | `malformed` | shorter than tag + media header, or the media header does not parse |
//! | `bad_version` | another tag version |
//! | `hop_limit` | it already crossed `MAX_MEDIA_HOPS` links |
//! | `looped` | its origin is this relay (it went round a cycle) |
//! | `unknown_room` | the room is not bridged here (nothing to deliver or forward) |
//! | `rate_limited` | the (link, room) token bucket is empty: a flood from one peer |
//! | `duplicates` | the exactly-once window has seen (origin, sender, lane, seq) |
//! | `too_old` | older than the window (cannot be told from a replay) |
//!
//! A fresh one (`received`) goes, without its tag, to `out` with
//! `meta.peer` = the room's federation member (so `sfu.fanout` copies it to
//! every local member), when the room has local members; and, as received,
//! to `relay` for `federation.forward` to send on, when the room leads
//! anywhere else.
//!
//! - Ports: input `in`; outputs `out` (to `sfu.fanout`), `relay` (to
//!   `federation.forward`).
//! - Params: `table` (resource, default `"relay.fed_in"`), `room_pps` (int,
//!   default 2000: packets/s per link and room, about 30 talkers with FEC),
//!   `room_bytes_per_s` (int, default 2 500 000), `burst_ms` (default 1000),
//!   `streams` (dedup streams remembered, default 4096), `stream_ttl_ms`
//!   (default 10000), `max_buckets` (default 4096).
//! - Latency: zero. Nothing allocates after build: the window and bucket
//!   tables are sized then, and a full bucket table is swept of idle
//!   entries (no allocation) before a new (link, room) is refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wzp_engine::prelude::*;
use wzp_proto::dedup::{DedupWindow, Verdict};
use wzp_proto::federation::{parse_forwarded, ForwardError, RoomId, FORWARD_TAG_LEN};

use super::{take_subscriber, TableSubscriber};

/// Factory of `federation.dedup`.
pub struct Dedup;

#[derive(Clone, Copy)]
struct Bucket {
    t_ns: u64,
    pkt_milli: u64,
    byte_milli: u64,
}

/// A bucket idle this long may be reclaimed when the table is full.
const BUCKET_IDLE_NS: u64 = 10_000_000_000;

struct Limits {
    pps: u64,
    bytes_per_s: u64,
    burst_ns: u64,
    pkt_depth: u64,
    byte_depth: u64,
}

/// The real-time half of `federation.dedup`.
pub struct DedupProc {
    sub: TableSubscriber,
    window: DedupWindow,
    buckets: HashMap<(u32, RoomId), Bucket>,
    max_buckets: usize,
    limits: Limits,
    epoch: Instant,
    passed: Counter,
    received: Counter,
    malformed: Counter,
    bad_version: Counter,
    hop_limit: Counter,
    looped: Counter,
    unknown_room: Counter,
    rate_limited: Counter,
    duplicates: Counter,
    too_old: Counter,
    out_full: Counter,
}

impl DedupProc {
    /// Takes a packet's tokens from its (link, room) bucket.
    fn admit(&mut self, link: u32, room: RoomId, len: usize, now: u64) -> bool {
        let l = &self.limits;
        let key = (link, room);
        if !self.buckets.contains_key(&key) {
            if self.buckets.len() >= self.max_buckets {
                self.buckets
                    .retain(|_, b| now.saturating_sub(b.t_ns) < BUCKET_IDLE_NS);
                if self.buckets.len() >= self.max_buckets {
                    return false;
                }
            }
            self.buckets.insert(
                key,
                Bucket {
                    t_ns: now,
                    pkt_milli: l.pkt_depth,
                    byte_milli: l.byte_depth,
                },
            );
        }
        let Some(b) = self.buckets.get_mut(&key) else {
            return false;
        };
        let elapsed = now.saturating_sub(b.t_ns).min(l.burst_ns);
        b.t_ns = b.t_ns.max(now);
        b.pkt_milli = (b.pkt_milli + elapsed * l.pps / 1_000_000).min(l.pkt_depth);
        b.byte_milli = (b.byte_milli + elapsed * l.bytes_per_s / 1_000_000).min(l.byte_depth);
        let cost = len as u64 * 1000;
        if b.pkt_milli < 1000 || b.byte_milli < cost {
            return false;
        }
        b.pkt_milli -= 1000;
        b.byte_milli -= cost;
        true
    }
}

impl Processor for DedupProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        self.sub.refresh();
        let now = cx.now_ns;
        let (Some(input), Some(out), Some(relay)) = io.packets_in_two_out(0, 0, 1) else {
            return Flow::Continue;
        };
        for pkt in input.iter() {
            let link = pkt.meta.peer;
            let table = self.sub.table();
            if !table.links.contains_key(&link) {
                match out.push_copy(pkt) {
                    Ok(()) => self.passed.inc(),
                    Err(_) => self.out_full.inc(),
                }
                continue;
            }
            let f = match parse_forwarded(pkt.bytes()) {
                Ok(f) => f,
                Err(ForwardError::Version(_)) => {
                    self.bad_version.inc();
                    continue;
                }
                Err(ForwardError::HopLimit(_)) => {
                    self.hop_limit.inc();
                    continue;
                }
                Err(ForwardError::TooShort { .. } | ForwardError::BadMedia) => {
                    self.malformed.inc();
                    continue;
                }
            };
            if f.tag.origin == table.me {
                self.looped.inc();
                continue;
            }
            let Some(route) = table.rooms.get(&f.tag.room) else {
                self.unknown_room.inc();
                continue;
            };
            let member = route.member;
            // Another bridging peer may need it (federation.forward decides).
            let onward = route.peers.iter().any(|p| p.link != link);
            if !self.admit(link, f.tag.room, pkt.bytes().len(), now) {
                self.rate_limited.inc();
                continue;
            }
            let at = self.epoch + Duration::from_nanos(now);
            match self
                .window
                .check_lane(f.tag.origin, f.sender_id, f.lane, f.seq, f.tag.hops, at)
            {
                Verdict::Fresh => {}
                Verdict::Duplicate => {
                    self.duplicates.inc();
                    continue;
                }
                Verdict::TooOld => {
                    self.too_old.inc();
                    continue;
                }
                Verdict::HopLimit => {
                    self.hop_limit.inc();
                    continue;
                }
            }
            self.received.inc();
            if let Some(member) = member {
                let mut meta = pkt.meta;
                meta.peer = member;
                if out.push(meta, &pkt.bytes()[FORWARD_TAG_LEN..]).is_err() {
                    self.out_full.inc();
                }
            }
            if onward && relay.push_copy(pkt).is_err() {
                self.out_full.inc();
            }
        }
        Flow::Continue
    }
}

impl StageFactory for Dedup {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "federation.dedup",
            summary: "checks media from other relays once: tag, hop limit, rate, exactly-once",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "every received datagram; meta.peer = connection handle",
            }],
            outputs: vec![
                PortInfo {
                    name: "out",
                    ty: "Packet",
                    doc: "local clients' packets untouched; fresh forwarded packets, untagged, \
                          from the room's federation member",
                },
                PortInfo {
                    name: "relay",
                    ty: "Packet",
                    doc: "fresh forwarded packets as received (tag included), for \
                          federation.forward; meta.peer = the link they came on",
                },
            ],
            params: vec![
                ParamSpec::str(
                    "table",
                    "relay.fed_in",
                    "resource: the federation table feed",
                ),
                ParamSpec::int(
                    "room_pps",
                    2000,
                    "packets/s per link and room (1..=1000000)",
                ),
                ParamSpec::int(
                    "room_bytes_per_s",
                    2_500_000,
                    "bytes/s per link and room (1000..=1000000000)",
                ),
                ParamSpec::int("burst_ms", 1000, "bucket depth (20..=10000)"),
                ParamSpec::int("streams", 4096, "dedup streams remembered (1..=1000000)"),
                ParamSpec::int(
                    "stream_ttl_ms",
                    10_000,
                    "a silent stream is forgotten after",
                ),
                ParamSpec::int("max_buckets", 4096, "(link, room) buckets (1..=1000000)"),
            ],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let pps = p.int_in("room_pps", 1, 1_000_000)? as u64;
        let bytes_per_s = p.int_in("room_bytes_per_s", 1000, 1_000_000_000)? as u64;
        let burst_ms = p.int_in("burst_ms", 20, 10_000)? as u64;
        let streams = p.int_in("streams", 1, 1_000_000)? as usize;
        let ttl_ms = p.int_in("stream_ttl_ms", 100, 3_600_000)? as u64;
        let max_buckets = p.int_in("max_buckets", 1, 1_000_000)? as usize;
        let sub = take_subscriber(cx, "federation.dedup", p.str("table")?)?;
        let proc = DedupProc {
            sub,
            window: DedupWindow::new(streams, Duration::from_millis(ttl_ms)),
            // Twice the entries: at most half full, a rehash after churn
            // happens in place, never by reallocation.
            buckets: HashMap::with_capacity(max_buckets * 2),
            max_buckets,
            limits: Limits {
                pps,
                bytes_per_s,
                burst_ns: burst_ms * 1_000_000,
                pkt_depth: pps * burst_ms,
                byte_depth: bytes_per_s * burst_ms,
            },
            epoch: Instant::now(),
            passed: cx.counter("passed"),
            received: cx.counter("received"),
            malformed: cx.counter("malformed"),
            bad_version: cx.counter("bad_version"),
            hop_limit: cx.counter("hop_limit"),
            looped: cx.counter("looped"),
            unknown_room: cx.counter("unknown_room"),
            rate_limited: cx.counter("rate_limited"),
            duplicates: cx.counter("duplicates"),
            too_old: cx.counter("too_old"),
            out_full: cx.counter("out_full"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![
                PortDecl::new("out", PortType::Packet),
                PortDecl::new("relay", PortType::Packet),
            ],
            latency: Duration::ZERO,
            processor: Box::new(proc),
        })
    }
}
