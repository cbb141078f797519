//! `federation.dedup` and `federation.forward` around `sfu.fanout`: several
//! relays' media graphs driven by hand in one process, their links carried
//! by the test, every `process` call checked for allocations. A triangle
//! and a chain (a hub with no member) deliver each packet exactly once;
//! every kind of bad datagram from a link is dropped and counted; a flood
//! from one link is rate limited without starving another.

wzp_engine::install_alloc_checker!();

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_proto::federation::{ForwardTag, RelayId, RoomId, FORWARD_TAG_LEN, MAX_MEDIA_HOPS};
use wzp_proto::media::Flags;
use wzp_proto::MediaHeader;
use wzp_stages::federation::dedup_stage::Dedup;
use wzp_stages::federation::forward::Forward;
use wzp_stages::federation::{
    table_channel, FederationTable, PeerRoute, RoomRoute, TablePublisher,
};
use wzp_stages::sfu::fanout::Fanout;
use wzp_stages::sfu::{membership_channel, HandleAllocator, SfuCommand, SfuControl};

const Q: u64 = 20_000_000;
const BATCH: usize = 256;

fn params_of(f: &dyn StageFactory, values: &[(&str, ParamValue)]) -> Params {
    let mut p = Params::default();
    for spec in f.info().params {
        if let Some(d) = spec.default {
            p.insert(spec.name, d);
        }
    }
    for (k, v) in values {
        p.insert(k, v.clone());
    }
    p
}

fn rid(n: u8) -> RelayId {
    RelayId([n; 8])
}

fn room() -> RoomId {
    RoomId::of_name("general")
}

/// One relay's media graph: dedup -> fanout -> forward, with dedup.relay
/// into forward.relay. Pool: 0 dedup.in, 1 dedup.out, 2 dedup.relay,
/// 3 fanout.out, 4 forward.out.
struct Relay {
    id: RelayId,
    dedup: Box<dyn Processor>,
    fanout: Box<dyn Processor>,
    forward: Box<dyn Processor>,
    pool: Vec<Buffer>,
    sfu: SfuControl,
    fed_in: TablePublisher,
    fed_out: TablePublisher,
    counters: Vec<(String, Counter)>,
    handles: HandleAllocator,
    now_ns: u64,
}

impl Relay {
    fn new(n: u8, dedup_params: &[(&str, ParamValue)]) -> Relay {
        let (sfu, membership) = membership_channel(64);
        let (fed_in, in_port) = table_channel(rid(n));
        let (fed_out, out_port) = table_channel(rid(n));
        let mut res = Resources::new();
        res.insert("m", Arc::new(membership));
        res.insert("fi", Arc::new(in_port));
        res.insert("fo", Arc::new(out_port));
        let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q), &res);
        let mut dp = vec![("table", ParamValue::Str("fi".into()))];
        dp.extend(dedup_params.iter().cloned());
        let dedup = Dedup
            .build(&mut cx, &params_of(&Dedup, &dp))
            .expect("dedup builds")
            .processor;
        let fanout = Fanout
            .build(
                &mut cx,
                &params_of(
                    &Fanout,
                    &[
                        ("membership", ParamValue::Str("m".into())),
                        ("max_peers", ParamValue::Int(64)),
                        ("max_rooms", ParamValue::Int(4)),
                    ],
                ),
            )
            .expect("fanout builds")
            .processor;
        let forward = Forward
            .build(
                &mut cx,
                &params_of(&Forward, &[("table", ParamValue::Str("fo".into()))]),
            )
            .expect("forward builds")
            .processor;
        let (counters, _) = cx.take_metrics();
        Relay {
            id: rid(n),
            dedup,
            fanout,
            forward,
            pool: (0..5)
                .map(|_| Buffer::for_type(PortType::Packet, Q, BATCH))
                .collect(),
            sfu,
            fed_in,
            fed_out,
            counters,
            handles: HandleAllocator::new(64),
            now_ns: 0,
        }
    }

    /// Counter `name` summed over the stages that have it.
    fn counter(&self, stage_counter: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k == stage_counter)
            .map(|(_, c)| c.get())
            .sum()
    }

    fn publish(&mut self, t: FederationTable) {
        let t = Arc::new(t);
        self.fed_in.publish(t.clone());
        self.fed_out.publish(t);
    }

    fn input(&mut self) -> &mut Batch<PacketMeta> {
        match &mut self.pool[0] {
            Buffer::Packets(b) => b,
            _ => unreachable!(),
        }
    }

    fn push(&mut self, peer: u32, bytes: &[u8]) {
        self.input()
            .push(
                PacketMeta {
                    peer,
                    ..Default::default()
                },
                bytes,
            )
            .unwrap();
    }

    /// One cycle of the three stages; returns forward's output.
    fn cycle(&mut self) -> Vec<(u32, Vec<u8>)> {
        for b in &mut self.pool[1..] {
            b.reset();
        }
        let cx = Cx {
            now_ns: self.now_ns,
            cycle: 0,
            rate: 48_000,
            quantum_ns: Q,
        };
        self.now_ns += Q;
        let (d, f, w, pool) = (
            &mut self.dedup,
            &mut self.fanout,
            &mut self.forward,
            &mut self.pool,
        );
        assert_rt_safe("federation stages process", 1, || {
            d.process(&mut Io::checked(pool, &[0], &[1, 2]).unwrap(), &cx);
            f.process(&mut Io::checked(pool, &[1], &[3]).unwrap(), &cx);
            w.process(&mut Io::checked(pool, &[3, 2], &[4]).unwrap(), &cx);
        });
        self.input().clear();
        match &self.pool[4] {
            Buffer::Packets(b) => b
                .iter()
                .map(|s| (s.meta.peer, s.bytes().to_vec()))
                .collect(),
            _ => unreachable!(),
        }
    }
}

fn media(sender: u32, seq: u32) -> Vec<u8> {
    let mut p = MediaHeader {
        sender_id: sender,
        seq,
        ..Default::default()
    }
    .to_bytes()
    .to_vec();
    p.extend_from_slice(&[seq as u8; 40]);
    p
}

fn tagged(hops: u8, room: RoomId, origin: RelayId, packet: &[u8]) -> Vec<u8> {
    let mut v = ForwardTag { hops, room, origin }.to_bytes().to_vec();
    v.extend_from_slice(packet);
    v
}

/// A mesh of relays, each with at most one client in `room()`, and links
/// carried by the test.
struct Mesh {
    relays: Vec<Relay>,
    /// Client handle per relay.
    clients: Vec<Option<u32>>,
    /// The room's federation member per relay (relays with a client).
    members: Vec<Option<u32>>,
    /// links[i][&j]: relay i's handle for its link to relay j.
    links: Vec<HashMap<usize, u32>>,
    /// What each client received: sender id -> seqs.
    heard: Vec<BTreeMap<u32, Vec<u32>>>,
    /// Datagrams on links, per round.
    link_datagrams: usize,
}

impl Mesh {
    /// `edges` between relays; `with_client[i]` says whether relay i has a
    /// member. Routes are shortest paths (the test topologies are small).
    fn new(n: usize, edges: &[(usize, usize)], with_client: &[bool]) -> Mesh {
        let mut relays: Vec<Relay> = (0..n).map(|i| Relay::new(i as u8 + 1, &[])).collect();
        let mut links = vec![HashMap::new(); n];
        for &(a, b) in edges {
            let ha = relays[a].handles.alloc().unwrap();
            let hb = relays[b].handles.alloc().unwrap();
            links[a].insert(b, ha);
            links[b].insert(a, hb);
        }
        // Shortest path from each relay to each other (BFS, lower index
        // first on ties, as path-vector breaks them by the lower peer id).
        let path = |from: usize, to: usize| -> Vec<usize> {
            let mut prev = vec![usize::MAX; n];
            let mut q = std::collections::VecDeque::from([from]);
            prev[from] = from;
            while let Some(x) = q.pop_front() {
                let mut nbrs: Vec<usize> = links[x].keys().copied().collect();
                nbrs.sort();
                for y in nbrs {
                    if prev[y] == usize::MAX {
                        prev[y] = x;
                        q.push_back(y);
                    }
                }
            }
            let mut p = vec![to];
            while *p.last().unwrap() != from {
                p.push(prev[*p.last().unwrap()]);
            }
            p.reverse();
            p
        };
        let mut clients = vec![None; n];
        let mut members = vec![None; n];
        for i in 0..n {
            let mut member = None;
            if with_client[i] {
                let c = relays[i].handles.alloc().unwrap();
                let m = relays[i].handles.alloc().unwrap();
                relays[i]
                    .sfu
                    .send(SfuCommand::Join { peer: c, room: 0 })
                    .unwrap();
                relays[i]
                    .sfu
                    .send(SfuCommand::JoinRelay { peer: m, room: 0 })
                    .unwrap();
                clients[i] = Some(c);
                members[i] = Some(m);
                member = Some(m);
            }
            let mut t = FederationTable {
                me: relays[i].id,
                ..Default::default()
            };
            for (&j, &h) in &links[i] {
                t.links.insert(h, relays[j].id);
            }
            // Peer j announces member relay d here unless its path to d
            // goes through this relay (path-vector withdraws it then).
            let mut peers = vec![];
            let mut nbrs: Vec<usize> = links[i].keys().copied().collect();
            nbrs.sort();
            for j in nbrs {
                let origins = (0..n)
                    .filter(|&d| d != i && with_client[d] && !path(j, d).contains(&i))
                    .map(|d| relays[d].id)
                    .collect();
                peers.push(PeerRoute {
                    link: links[i][&j],
                    relay: relays[j].id,
                    origins,
                });
            }
            t.rooms.insert(room(), RoomRoute { member, peers });
            if let Some(m) = member {
                t.members.insert(m, room());
            }
            relays[i].publish(t);
        }
        Mesh {
            relays,
            clients,
            members,
            links,
            heard: vec![BTreeMap::new(); n],
            link_datagrams: 0,
        }
    }

    /// Runs rounds until nothing is in flight.
    fn run(&mut self, mut pending: Vec<Vec<(u32, Vec<u8>)>>) {
        for _ in 0..32 {
            if pending.iter().all(|p| p.is_empty()) {
                return;
            }
            let mut next = vec![vec![]; self.relays.len()];
            for (i, items) in pending.into_iter().enumerate() {
                for (peer, bytes) in items {
                    self.relays[i].push(peer, &bytes);
                }
                for (peer, bytes) in self.relays[i].cycle() {
                    if Some(peer) == self.clients[i] {
                        let (h, _) = MediaHeader::parse(&bytes).expect("a media packet");
                        self.heard[i].entry(h.sender_id).or_default().push(h.seq);
                        continue;
                    }
                    let (&j, _) = self.links[i]
                        .iter()
                        .find(|(_, &h)| h == peer)
                        .expect("forward addresses clients and links only");
                    assert!(bytes.len() >= FORWARD_TAG_LEN);
                    self.link_datagrams += 1;
                    next[j].push((self.links[j][&i], bytes));
                }
            }
            pending = next;
        }
        panic!("media still in flight after 32 rounds: a forwarding loop");
    }

    /// Every client sends `packets` packets (sender id = 100 + relay).
    fn talk(&mut self, packets: u32) {
        for seq in 0..packets {
            let mut pending = vec![vec![]; self.relays.len()];
            for (i, c) in self.clients.iter().enumerate() {
                if let Some(c) = c {
                    pending[i].push((*c, media(100 + i as u32, seq)));
                }
            }
            self.run(pending);
        }
    }

    /// Each client heard every other client's `packets` exactly once, in
    /// order, and never itself.
    fn assert_exactly_once(&self, packets: u32) {
        let expect: Vec<u32> = (0..packets).collect();
        for (i, c) in self.clients.iter().enumerate() {
            if c.is_none() {
                continue;
            }
            for (j, other) in self.clients.iter().enumerate() {
                let heard = self.heard[i].get(&(100 + j as u32));
                if i == j || other.is_none() {
                    assert!(heard.is_none(), "relay {i}'s client heard {j}: {heard:?}");
                    continue;
                }
                assert_eq!(
                    heard,
                    Some(&expect),
                    "client on relay {i} hears client on relay {j} once each, no gaps"
                );
            }
        }
    }
}

#[test]
fn a_triangle_delivers_each_packet_exactly_once() {
    let mut m = Mesh::new(3, &[(0, 1), (1, 2), (2, 0)], &[true, true, true]);
    m.talk(50);
    m.assert_exactly_once(50);
    // Shortest paths in a triangle are the direct links: no relay needs to
    // send a packet on, and nothing arrives twice.
    let dups: u64 = m.relays.iter().map(|r| r.counter("duplicates")).sum();
    let relayed: u64 = m.relays.iter().map(|r| r.counter("relayed")).sum();
    assert_eq!((dups, relayed), (0, 0));
    assert_eq!(m.link_datagrams, 3 * 2 * 50);
}

#[test]
fn a_hub_with_no_member_carries_a_chain() {
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[true, false, true]);
    m.talk(40);
    m.assert_exactly_once(40);
    let hub = &m.relays[1];
    assert_eq!(hub.counter("relayed"), 80, "the hub sent every packet on");
    assert_eq!(hub.counter("received"), 80);
}

#[test]
fn a_ring_carries_each_packet_along_a_tree() {
    // Six relays in a ring, a member on each: every packet reaches the
    // other five once, over exactly five links (a tree), with no copy for
    // the dedup window to drop.
    let edges: Vec<(usize, usize)> = (0..6).map(|a| (a, (a + 1) % 6)).collect();
    let mut m = Mesh::new(6, &edges, &[true; 6]);
    m.talk(20);
    m.assert_exactly_once(20);
    let dups: u64 = m.relays.iter().map(|r| r.counter("duplicates")).sum();
    assert_eq!(dups, 0);
    assert_eq!(m.link_datagrams, 6 * 20 * 5);
    let relayed: u64 = m.relays.iter().map(|r| r.counter("relayed")).sum();
    assert!(
        relayed > 0,
        "relays in the middle of the ring send packets on"
    );
}

#[test]
fn stale_routes_cost_copies_not_duplicates() {
    // A table that claims nobody reaches anyone by their own way (as while
    // the mesh converges): every relay floods, and each client still hears
    // each packet once; the window drops the extra copies.
    let edges: Vec<(usize, usize)> = (0..4)
        .flat_map(|a| (a + 1..4).map(move |b| (a, b)))
        .collect();
    let mut m = Mesh::new(4, &edges, &[true; 4]);
    for i in 0..4 {
        let mut t = FederationTable {
            me: m.relays[i].id,
            ..Default::default()
        };
        let mut peers = vec![];
        for (&j, &h) in &m.links[i] {
            t.links.insert(h, m.relays[j].id);
            // Announces only itself: reaches every other member through us.
            peers.push(PeerRoute {
                link: h,
                relay: m.relays[j].id,
                origins: vec![m.relays[j].id],
            });
        }
        let member = m.members[i].unwrap();
        t.rooms.insert(
            room(),
            RoomRoute {
                member: Some(member),
                peers,
            },
        );
        t.members.insert(member, room());
        m.relays[i].publish(t);
    }
    m.talk(20);
    m.assert_exactly_once(20);
    let dups: u64 = m.relays.iter().map(|r| r.counter("duplicates")).sum();
    assert!(dups > 0, "flooding makes copies the window drops");
}

#[test]
fn bad_datagrams_from_a_link_are_dropped_and_counted() {
    let mut r = Relay::new(1, &[]);
    let link = r.handles.alloc().unwrap();
    let client = r.handles.alloc().unwrap();
    let member = r.handles.alloc().unwrap();
    r.sfu
        .send(SfuCommand::Join {
            peer: client,
            room: 0,
        })
        .unwrap();
    r.sfu
        .send(SfuCommand::JoinRelay {
            peer: member,
            room: 0,
        })
        .unwrap();
    let mut t = FederationTable {
        me: rid(1),
        ..Default::default()
    };
    t.links.insert(link, rid(2));
    t.rooms.insert(
        room(),
        RoomRoute {
            member: Some(member),
            peers: vec![PeerRoute {
                link,
                relay: rid(2),
                origins: vec![rid(2)],
            }],
        },
    );
    t.members.insert(member, room());
    r.publish(t);
    let good = media(7, 1);
    let mut bad_version = tagged(0, room(), rid(2), &good);
    bad_version[0] = 2;
    let mut bad_header = tagged(0, room(), rid(2), &good);
    bad_header[FORWARD_TAG_LEN] = 9;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed", vec![]),
        ("malformed", tagged(0, room(), rid(2), &good)[..47].to_vec()),
        ("malformed", bad_header),
        ("bad_version", bad_version),
        (
            "hop_limit",
            tagged(MAX_MEDIA_HOPS, room(), rid(2), &media(7, 2)),
        ),
        ("looped", tagged(0, room(), rid(1), &media(7, 3))),
        (
            "unknown_room",
            tagged(0, RoomId::of_name("elsewhere"), rid(2), &media(7, 4)),
        ),
    ];
    for (counter, bytes) in &cases {
        let before = r.counter(counter);
        r.push(link, bytes);
        let out = r.cycle();
        assert!(
            out.is_empty(),
            "{counter}: nothing delivered or sent: {out:?}"
        );
        assert_eq!(r.counter(counter), before + 1, "{counter}");
    }
    // A good one is delivered to the client, untagged, once.
    let t = tagged(0, room(), rid(2), &good);
    r.push(link, &t);
    r.push(link, &t);
    let out = r.cycle();
    assert_eq!(out, vec![(client, good.clone())]);
    assert_eq!(r.counter("duplicates"), 1);
    assert_eq!(r.counter("received"), 1);
    // A repair symbol with the same seq is another packet.
    let mut repair = MediaHeader {
        sender_id: 7,
        seq: 1,
        flags: Flags::REPAIR,
        fec_symbol: 5,
        ..Default::default()
    }
    .to_bytes()
    .to_vec();
    repair.extend_from_slice(&[1; 30]);
    r.push(link, &tagged(1, room(), rid(2), &repair));
    assert_eq!(r.cycle(), vec![(client, repair)]);
}

#[test]
fn a_flood_from_one_link_is_rate_limited_and_spares_the_others() {
    let mut r = Relay::new(
        1,
        &[
            ("room_pps", ParamValue::Int(100)),
            ("burst_ms", ParamValue::Int(200)),
        ],
    );
    let flood = r.handles.alloc().unwrap();
    let honest = r.handles.alloc().unwrap();
    let client = r.handles.alloc().unwrap();
    let member = r.handles.alloc().unwrap();
    r.sfu
        .send(SfuCommand::Join {
            peer: client,
            room: 0,
        })
        .unwrap();
    r.sfu
        .send(SfuCommand::JoinRelay {
            peer: member,
            room: 0,
        })
        .unwrap();
    let mut t = FederationTable {
        me: rid(1),
        ..Default::default()
    };
    t.links.insert(flood, rid(2));
    t.links.insert(honest, rid(3));
    t.rooms.insert(
        room(),
        RoomRoute {
            member: Some(member),
            peers: vec![],
        },
    );
    t.members.insert(member, room());
    r.publish(t);
    let mut delivered_honest = 0;
    let mut seq = 0;
    for cycle in 0..50u32 {
        for _ in 0..100 {
            seq += 1;
            r.push(flood, &tagged(0, room(), rid(2), &media(66, seq)));
        }
        r.push(honest, &tagged(0, room(), rid(3), &media(5, cycle)));
        delivered_honest += r
            .cycle()
            .iter()
            .filter(|(_, b)| MediaHeader::parse(b).unwrap().0.sender_id == 5)
            .count();
    }
    // 1 s of graph time at 100 packets/s plus a 20-packet burst.
    let passed = r.counter("received") - delivered_honest as u64;
    assert!(passed <= 125, "flood passed {passed}");
    assert!(r.counter("rate_limited") >= 5000 - 125);
    assert_eq!(delivered_honest, 50, "the honest link is not starved");
}
