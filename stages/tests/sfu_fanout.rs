//! `sfu.fanout`: membership commands and fan-out, driven by hand, with
//! every `process` call checked for allocations.

wzp_engine::install_alloc_checker!();

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_proto::MediaHeader;
use wzp_stages::sfu::fanout::Fanout;
use wzp_stages::sfu::{membership_channel, HandleAllocator, SfuBinding, SfuCommand, SfuControl};

/// The stage's declared defaults, overridden by `values`.
fn with_defaults(values: impl IntoIterator<Item = (String, ParamValue)>) -> Params {
    let mut p = Params::default();
    for spec in Fanout.info().params {
        if let Some(d) = spec.default {
            p.insert(spec.name, d);
        }
    }
    for (k, v) in values {
        p.insert(&k, v);
    }
    p
}

struct Rig {
    proc: Box<dyn Processor>,
    pool: Vec<Buffer>,
    ctl: SfuControl,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
    /// Graph time of the next cycle.
    now_ns: u64,
}

const Q: u64 = 20_000_000;

fn rig(max_peers: i64, max_rooms: i64, batch: usize) -> Rig {
    rig_with(max_peers, max_rooms, batch, &[])
}

/// A rig with extra int params (rate caps, memory, ...).
fn rig_with(max_peers: i64, max_rooms: i64, batch: usize, extra: &[(&str, i64)]) -> Rig {
    let (ctl, port) = membership_channel(256);
    let mut res = Resources::new();
    res.insert("m", Arc::new(port));
    let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q), &res);
    let mut params = with_defaults([
        ("membership".to_string(), ParamValue::Str("m".into())),
        ("max_peers".to_string(), ParamValue::Int(max_peers)),
        ("max_rooms".to_string(), ParamValue::Int(max_rooms)),
        ("check_header".to_string(), ParamValue::Bool(true)),
    ]);
    for (k, v) in extra {
        params.insert(k, ParamValue::Int(*v));
    }
    let built = Fanout.build(&mut cx, &params).expect("builds");
    let (counters, gauges) = cx.take_metrics();
    Rig {
        proc: built.processor,
        pool: vec![
            Buffer::for_type(PortType::Packet, Q, batch),
            Buffer::for_type(PortType::Packet, Q, batch),
        ],
        ctl,
        counters,
        gauges,
        now_ns: 0,
    }
}

impl Rig {
    fn counter(&self, n: &str) -> u64 {
        self.counters.iter().find(|(k, _)| k == n).unwrap().1.get()
    }
    fn gauge(&self, n: &str) -> i64 {
        self.gauges.iter().find(|(k, _)| k == n).unwrap().1.get()
    }
    fn input(&mut self) -> &mut Batch<PacketMeta> {
        match &mut self.pool[0] {
            Buffer::Packets(b) => b,
            _ => unreachable!(),
        }
    }
    /// One cycle, checked for allocations; returns (peer, bytes) of the output.
    fn cycle(&mut self) -> Vec<(u32, Vec<u8>)> {
        self.pool[1].reset();
        let cx = Cx {
            now_ns: self.now_ns,
            cycle: 0,
            rate: 48_000,
            quantum_ns: Q,
        };
        let (proc, pool) = (&mut self.proc, &mut self.pool);
        assert_rt_safe("sfu.fanout process", 1, || {
            let mut io = Io::checked(pool, &[0], &[1]).unwrap();
            proc.process(&mut io, &cx);
        });
        self.input().clear();
        match &self.pool[1] {
            Buffer::Packets(b) => b
                .iter()
                .map(|s| (s.meta.peer, s.bytes().to_vec()))
                .collect(),
            _ => unreachable!(),
        }
    }
    fn send(&mut self, from: u32, seq: u32) -> Vec<u8> {
        self.send_as(from, from, 0, seq, 4)
    }
    /// A packet from peer `from` carrying media sender id `id`, index
    /// `(epoch, seq)` and `body` payload bytes.
    fn send_as(&mut self, from: u32, id: u32, epoch: u8, seq: u32, body: usize) -> Vec<u8> {
        let mut p = MediaHeader {
            sender_id: id,
            key_epoch: epoch,
            seq,
            ..Default::default()
        }
        .to_bytes()
        .to_vec();
        p.extend((0..body).map(|i| (seq as usize + i) as u8));
        self.push_raw(from, p)
    }
    /// Puts captured bytes back on the wire, as `from`.
    fn push_raw(&mut self, from: u32, p: Vec<u8>) -> Vec<u8> {
        self.input()
            .push(
                PacketMeta {
                    peer: from,
                    ..Default::default()
                },
                &p,
            )
            .unwrap();
        p
    }
}

fn by_peer(out: &[(u32, Vec<u8>)]) -> BTreeMap<u32, Vec<Vec<u8>>> {
    let mut m: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for (p, b) in out {
        m.entry(*p).or_default().push(b.clone());
    }
    m
}

#[test]
fn each_packet_reaches_every_other_member_of_its_room_only() {
    let mut r = rig(16, 4, 64);
    let mut handles = HandleAllocator::new(16);
    let h: Vec<u32> = (0..5).map(|_| handles.alloc().unwrap()).collect();
    // Room 0: h0, h1, h2. Room 1: h3, h4.
    for (i, &p) in h.iter().enumerate() {
        r.ctl
            .send(SfuCommand::Join {
                peer: p,
                room: if i < 3 { 0 } else { 1 },
            })
            .unwrap();
    }
    let p0 = r.send(h[0], 1);
    let p3 = r.send(h[3], 2);
    let out = by_peer(&r.cycle());
    assert_eq!(r.gauge("members"), 5);
    assert_eq!(out.get(&h[1]), Some(&vec![p0.clone()]));
    assert_eq!(out.get(&h[2]), Some(&vec![p0.clone()]));
    assert_eq!(out.get(&h[4]), Some(&vec![p3.clone()]));
    assert!(!out.contains_key(&h[0]), "no echo to the sender");
    assert!(!out.contains_key(&h[3]), "no echo to the sender");
    assert_eq!(r.counter("forwarded"), 2);
    assert_eq!(r.counter("copies"), 3);

    // h1 leaves; h4 moves to room 0.
    r.ctl.send(SfuCommand::Leave { peer: h[1] }).unwrap();
    r.ctl
        .send(SfuCommand::Join {
            peer: h[4],
            room: 0,
        })
        .unwrap();
    let p2 = r.send(h[2], 3);
    let p1 = r.send(h[1], 4);
    let out = by_peer(&r.cycle());
    assert_eq!(out.get(&h[0]), Some(&vec![p2.clone()]));
    assert_eq!(out.get(&h[4]), Some(&vec![p2.clone()]));
    assert!(
        !out.contains_key(&h[1]),
        "a member that left receives nothing"
    );
    assert!(!out.contains_key(&h[3]), "h3 is alone in room 1 now");
    assert!(
        !out.values().flatten().any(|b| *b == p1),
        "a member that left sends nothing"
    );
    assert_eq!(r.counter("unknown_peer"), 1);
    assert_eq!(r.gauge("members"), 4);
}

#[test]
fn a_reused_slot_does_not_inherit_the_old_handle() {
    let mut r = rig(2, 2, 16);
    let mut handles = HandleAllocator::new(2);
    let a = handles.alloc().unwrap();
    let b = handles.alloc().unwrap();
    r.ctl.send(SfuCommand::Join { peer: a, room: 0 }).unwrap();
    r.ctl.send(SfuCommand::Join { peer: b, room: 0 }).unwrap();
    r.cycle();
    // b leaves and its slot goes to c; a late packet from b and a late Leave
    // of b must not touch c.
    handles.release(b);
    let c = handles.alloc().unwrap();
    assert_ne!(b, c);
    r.ctl.send(SfuCommand::Join { peer: c, room: 0 }).unwrap();
    r.ctl.send(SfuCommand::Leave { peer: b }).unwrap();
    let late = r.send(b, 9);
    let pa = r.send(a, 10);
    let out = r.cycle();
    assert_eq!(out, vec![(c, pa)]);
    assert!(!out.iter().any(|(_, x)| *x == late));
    assert_eq!(r.counter("unknown_peer"), 1);
    assert_eq!(r.counter("bad_commands"), 1, "the stale Leave is ignored");
    assert_eq!(r.gauge("members"), 2);
}

#[test]
fn bad_input_is_counted_not_forwarded() {
    let mut r = rig(4, 2, 8);
    r.ctl.send(SfuCommand::Join { peer: 0, room: 0 }).unwrap();
    r.ctl.send(SfuCommand::Join { peer: 1, room: 0 }).unwrap();
    // Out-of-range commands.
    r.ctl.send(SfuCommand::Join { peer: 7, room: 0 }).unwrap();
    r.ctl.send(SfuCommand::Join { peer: 2, room: 9 }).unwrap();
    r.ctl.send(SfuCommand::Leave { peer: 3 }).unwrap();
    let good = r.send(0, 1);
    let cases: [&[u8]; 4] = [&[], &[1, 2, 3], &good[..21], &[0x55; 40]];
    for c in cases {
        r.input()
            .push(
                PacketMeta {
                    peer: 0,
                    ..Default::default()
                },
                c,
            )
            .unwrap();
    }
    let out = r.cycle();
    assert_eq!(out, vec![(1, good)]);
    assert_eq!(r.counter("malformed"), 4);
    assert_eq!(r.counter("bad_commands"), 3);
}

#[test]
fn a_full_output_batch_drops_and_counts() {
    let mut r = rig(8, 1, 4);
    for p in 0..6 {
        r.ctl.send(SfuCommand::Join { peer: p, room: 0 }).unwrap();
    }
    r.send(0, 1);
    let out = r.cycle();
    assert_eq!(out.len(), 4, "the batch holds four");
    assert_eq!(r.counter("out_full"), 1);
    assert_eq!(r.counter("copies"), 4);
}

#[test]
fn build_refuses_bad_params_and_a_missing_ring() {
    let res = Resources::new();
    let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q), &res);
    let base = |peers: i64| {
        with_defaults([
            ("membership".to_string(), ParamValue::Str("nope".into())),
            ("max_peers".to_string(), ParamValue::Int(peers)),
            ("max_rooms".to_string(), ParamValue::Int(4)),
            ("check_header".to_string(), ParamValue::Bool(true)),
        ])
    };
    for bad in [0, 70_000] {
        match Fanout.build(&mut cx, &base(bad)) {
            Err(BuildError::Param(e)) => assert_eq!(e.param, "max_peers"),
            Err(e) => panic!("max_peers={bad}: {e}"),
            Ok(_) => panic!("max_peers={bad} accepted"),
        }
    }
    match Fanout.build(&mut cx, &base(4)) {
        Err(BuildError::Other(m)) => assert!(m.contains("nope"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("built without a membership ring"),
    }
}

const MS: u64 = 1_000_000;

/// Joins `peers` into room 0.
fn join_all(r: &mut Rig, peers: &[u32]) {
    for &p in peers {
        r.ctl.send(SfuCommand::Join { peer: p, room: 0 }).unwrap();
    }
    r.cycle();
}

#[test]
fn a_spoofed_sender_id_is_dropped_and_the_owner_keeps_sending() {
    let mut r = rig(8, 2, 64);
    let (alice, bob, mallory) = (0, 1, 2);
    join_all(&mut r, &[alice, bob, mallory]);
    let a1 = r.send_as(alice, 0xA11CE, 0, 1, 40);
    let out = r.cycle();
    assert_eq!(by_peer(&out).get(&bob), Some(&vec![a1]));
    // Mallory speaks as Alice: fresh indices, Alice's id.
    for seq in 2..12 {
        r.send_as(mallory, 0xA11CE, 0, seq, 40);
    }
    let out = r.cycle();
    assert!(out.is_empty(), "a spoofed id reaches nobody: {out:?}");
    assert_eq!(r.counter("sender_spoofed"), 10);
    // Alice is unaffected, and Mallory's own id works.
    let a2 = r.send_as(alice, 0xA11CE, 0, 2, 40);
    let m1 = r.send_as(mallory, 0x0BAD, 0, 1, 40);
    let out = by_peer(&r.cycle());
    assert_eq!(out.get(&bob), Some(&vec![a2.clone(), m1.clone()]));
    assert_eq!(out.get(&mallory), Some(&vec![a2]));
    assert_eq!(out.get(&alice), Some(&vec![m1]));
    assert_eq!(r.gauge("senders"), 2);
}

#[test]
fn each_binding_is_reported_once_and_a_spoofer_binds_nothing() {
    let mut r = rig(8, 2, 64);
    let (alice, bob, mallory) = (0, 1, 2);
    join_all(&mut r, &[alice, bob, mallory]);
    let mut got = Vec::new();
    r.ctl.take_bindings(&mut got);
    assert!(got.is_empty(), "joining binds nothing: {got:?}");
    for seq in 1..4 {
        r.send_as(alice, 0xA11CE, 0, seq, 40);
    }
    r.cycle();
    // Mallory claims Alice's id (dropped, no binding), then uses its own.
    r.send_as(mallory, 0xA11CE, 0, 9, 40);
    r.send_as(mallory, 0x0BAD, 0, 1, 40);
    r.send_as(alice, 0xA11CE, 0, 4, 40);
    r.cycle();
    r.ctl.take_bindings(&mut got);
    assert_eq!(
        got,
        vec![
            SfuBinding {
                peer: alice,
                sender: 0xA11CE
            },
            SfuBinding {
                peer: mallory,
                sender: 0x0BAD
            },
        ]
    );
    // A second stream of Alice's is a second binding; a sender over the
    // per-peer limit binds nothing.
    r.send_as(alice, 0xB0B0, 0, 1, 40);
    r.send_as(alice, 0xC0C0, 0, 1, 40);
    r.cycle();
    got.clear();
    r.ctl.take_bindings(&mut got);
    assert_eq!(
        got,
        vec![SfuBinding {
            peer: alice,
            sender: 0xB0B0
        }]
    );
    assert_eq!(r.counter("sender_limit"), 1);
    assert_eq!(r.counter("bindings_lost"), 0);
}

#[test]
fn bindings_the_control_plane_does_not_take_are_counted_not_blocking() {
    // The ring back holds 256; more bindings than that are lost and
    // counted, and media still flows.
    let mut r = rig_with(300, 2, 512, &[("max_ids_per_peer", 1)]);
    let peers: Vec<u32> = (0..300).collect();
    join_all(&mut r, &peers[..150]);
    join_all(&mut r, &peers[150..]);
    for &p in &peers {
        r.send_as(p, 0x1000 + p, 0, 1, 4);
    }
    let out = r.cycle();
    assert!(!out.is_empty());
    assert_eq!(r.counter("forwarded"), 300);
    assert_eq!(r.counter("bindings_lost"), 300 - 256);
    let mut got = Vec::new();
    r.ctl.take_bindings(&mut got);
    assert_eq!(got.len(), 256);
}

#[test]
fn a_sender_is_capped_in_packets_and_bytes_and_cannot_rotate_ids() {
    // 50 packets/s, 100 ms deep: 5 packets of burst, then 1 per 20 ms.
    let mut r = rig_with(
        4,
        1,
        256,
        &[
            ("sender_pps", 50),
            ("sender_bytes_per_s", 1_000_000),
            ("burst_ms", 100),
        ],
    );
    join_all(&mut r, &[0, 1]);
    for seq in 0..20 {
        r.send_as(0, 7, 0, seq, 40);
    }
    assert_eq!(r.cycle().len(), 5, "the burst allowance");
    assert_eq!(r.counter("rate_limited"), 15);
    // 100 ms later: 5 more, no more.
    r.now_ns += 100 * MS;
    for seq in 20..40 {
        r.send_as(0, 7, 0, seq, 40);
    }
    assert_eq!(r.cycle().len(), 5);
    // A long silence refills to the depth only.
    r.now_ns += 60_000 * MS;
    for seq in 40..60 {
        r.send_as(0, 7, 0, seq, 40);
    }
    assert_eq!(r.cycle().len(), 5);
    // New ids to escape the cap: one more is allowed (max_ids_per_peer = 2),
    // the rest bind nothing.
    let before = r.counter("forwarded");
    for id in 100..120 {
        r.send_as(0, id, 0, 1, 40);
    }
    r.cycle();
    assert_eq!(r.counter("forwarded") - before, 1);
    assert_eq!(r.counter("sender_limit"), 19);

    // The byte bucket: 10 kB/s, 100 ms deep = 1000 bytes.
    let mut r = rig_with(
        4,
        1,
        256,
        &[
            ("sender_pps", 1000),
            ("sender_bytes_per_s", 10_000),
            ("burst_ms", 100),
        ],
    );
    join_all(&mut r, &[0, 1]);
    for seq in 0..10 {
        r.send_as(0, 7, 0, seq, 300 - 22);
    }
    assert_eq!(r.cycle().len(), 3, "three 300-byte packets fit 1000 bytes");
    assert_eq!(r.counter("rate_limited"), 7);
}

#[test]
fn a_flooding_member_gets_no_more_than_its_cap_through() {
    // The attack of the issue: one joined connection sends 50 000
    // valid-looking datagrams over 9 s under ever new ids and seqs.
    let mut r = rig(8, 1, 8192);
    let (alice, bob, mallory) = (0, 1, 2);
    join_all(&mut r, &[alice, bob, mallory]);
    let mut x: u32 = 12345;
    let mut to_bob_from_mallory = 0;
    for cycle in 0..450u32 {
        for _ in 0..111 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            r.send_as(mallory, x % 64, 0, x, 100);
        }
        let a = r.send_as(alice, 0xA11CE, 0, cycle, 60);
        let out = r.cycle();
        to_bob_from_mallory += out.iter().filter(|(p, b)| *p == bob && *b != a).count();
        assert!(out.contains(&(bob, a)), "Alice always gets through");
        r.now_ns += 20 * MS;
    }
    let pps = wzp_stages::sfu::fanout::default_sender_pps() as usize;
    // Two ids at the cap for 9 s, plus two full buckets (1 s each).
    let bound = 2 * pps * 9 + 2 * pps;
    assert!(
        to_bob_from_mallory <= bound,
        "{to_bob_from_mallory} packets of 49 950 got through; cap {bound}"
    );
    assert!(r.counter("rate_limited") + r.counter("sender_limit") >= 49_950 - bound as u64);
}

#[test]
fn a_departed_senders_packets_cannot_be_replayed_to_anyone() {
    let mut r = rig(8, 1, 64);
    let (alice, bob, mallory) = (0, 1, 2);
    join_all(&mut r, &[alice, bob, mallory]);
    // Mallory captures what Alice sends, across a rekey.
    let mut captured = Vec::new();
    for seq in 1..=10 {
        r.send_as(alice, 0xA11CE, 3, seq, 40);
        let out = r.cycle();
        captured.extend(
            out.into_iter()
                .filter(|(p, _)| *p == mallory)
                .map(|(_, b)| b),
        );
    }
    r.send_as(alice, 0xA11CE, 4, 0, 40);
    captured.extend(
        r.cycle()
            .into_iter()
            .filter(|(p, _)| *p == mallory)
            .map(|(_, b)| b),
    );
    assert_eq!(captured.len(), 11);
    // Alice leaves; Mallory replays everything, now and after a late joiner
    // came in.
    r.ctl.send(SfuCommand::Leave { peer: alice }).unwrap();
    for b in &captured {
        r.push_raw(mallory, b.clone());
    }
    assert!(r.cycle().is_empty());
    let dave = 3;
    r.ctl
        .send(SfuCommand::Join {
            peer: dave,
            room: 0,
        })
        .unwrap();
    r.now_ns += 60_000 * MS;
    for b in &captured {
        r.push_raw(mallory, b.clone());
    }
    let out = r.cycle();
    assert!(out.is_empty(), "replays reached {out:?}");
    assert_eq!(r.counter("stale_replay"), 22);
    assert_eq!(r.gauge("remembered_senders"), 1);
    // Bob, a member, cannot do it either.
    r.push_raw(bob, captured[10].clone());
    assert!(r.cycle().is_empty());
    assert_eq!(r.counter("stale_replay"), 23);
    assert_eq!(r.counter("forwarded"), 11, "only what Alice sent herself");
}

#[test]
fn a_late_joiner_receives_only_fresh_packets() {
    let mut r = rig(8, 1, 64);
    let (alice, bob, mallory, dave) = (0, 1, 2, 3);
    join_all(&mut r, &[alice, bob, mallory]);
    let mut captured = Vec::new();
    for seq in 1..=5 {
        r.send_as(alice, 0xA11CE, 0, seq, 40);
        captured.extend(
            r.cycle()
                .into_iter()
                .filter(|(p, _)| *p == mallory)
                .map(|(_, b)| b),
        );
    }
    // Alice's connection drops; her graph carries on on a new connection
    // (new handle), its index still rising.
    r.ctl.send(SfuCommand::Leave { peer: alice }).unwrap();
    let alice2 = 4;
    r.ctl
        .send(SfuCommand::Join {
            peer: alice2,
            room: 0,
        })
        .unwrap();
    r.ctl
        .send(SfuCommand::Join {
            peer: dave,
            room: 0,
        })
        .unwrap();
    // Mallory's replay, racing Alice's fresh packets: only fresh ones pass.
    r.push_raw(mallory, captured[4].clone());
    let fresh = r.send_as(alice2, 0xA11CE, 0, 6, 40);
    for b in &captured {
        r.push_raw(mallory, b.clone());
    }
    let fresh2 = r.send_as(alice2, 0xA11CE, 0, 7, 40);
    let out = by_peer(&r.cycle());
    assert_eq!(out.get(&dave), Some(&vec![fresh.clone(), fresh2.clone()]));
    assert_eq!(out.get(&bob), Some(&vec![fresh, fresh2]));
    assert_eq!(
        r.counter("stale_replay"),
        1,
        "before Alice took her id back"
    );
    assert_eq!(
        r.counter("sender_spoofed"),
        5,
        "after: the id is Alice's again"
    );
    assert_eq!(r.gauge("remembered_senders"), 0);
    assert_eq!(r.gauge("senders"), 1);
}

#[test]
fn remembered_senders_are_bounded_in_time_and_number() {
    let mut r = rig_with(
        8,
        2,
        64,
        &[("replay_memory_ms", 5_000), ("max_remembered", 2)],
    );
    join_all(&mut r, &[0, 1, 2, 3, 4]);
    for p in 0..3 {
        r.send_as(p, 100 + p, 0, 50, 10);
    }
    r.cycle();
    assert_eq!(r.gauge("senders"), 3);
    for p in 0..3 {
        r.ctl.send(SfuCommand::Leave { peer: p }).unwrap();
        r.now_ns += MS;
        r.cycle();
    }
    assert_eq!(r.gauge("senders"), 0);
    assert_eq!(r.gauge("remembered_senders"), 2, "at most max_remembered");
    assert_eq!(r.counter("remembered_evicted"), 1);
    // The oldest (id 100) was forgotten first: its old packets pass again,
    // the others' do not.
    r.send_as(3, 101, 0, 50, 10);
    r.send_as(3, 102, 0, 50, 10);
    r.cycle();
    assert_eq!(r.counter("stale_replay"), 2);
    let before = r.counter("forwarded");
    r.send_as(3, 100, 0, 50, 10);
    r.cycle();
    assert_eq!(r.counter("forwarded"), before + 1);
    // Past replay_memory_ms the memory is empty, by sweep alone.
    r.now_ns += 5_000 * MS;
    for _ in 0..2048 {
        r.cycle();
        if r.gauge("remembered_senders") == 0 {
            break;
        }
    }
    assert_eq!(r.gauge("remembered_senders"), 0);
    let before = r.counter("forwarded");
    r.send_as(4, 101, 0, 1, 10);
    r.cycle();
    assert_eq!(r.counter("forwarded"), before + 1);
}

#[test]
fn moving_rooms_releases_the_ids_and_ids_are_per_room() {
    let mut r = rig(8, 2, 64);
    r.ctl.send(SfuCommand::Join { peer: 0, room: 0 }).unwrap();
    r.ctl.send(SfuCommand::Join { peer: 1, room: 0 }).unwrap();
    r.ctl.send(SfuCommand::Join { peer: 2, room: 1 }).unwrap();
    r.ctl.send(SfuCommand::Join { peer: 3, room: 1 }).unwrap();
    r.send_as(0, 9, 0, 1, 10);
    // Same id in another room is another sender.
    r.send_as(2, 9, 0, 1, 10);
    assert_eq!(r.cycle().len(), 2);
    assert_eq!(r.gauge("senders"), 2);
    r.ctl.send(SfuCommand::Join { peer: 0, room: 1 }).unwrap();
    r.cycle();
    assert_eq!(r.gauge("senders"), 1);
    assert_eq!(r.gauge("remembered_senders"), 1);
}

#[test]
fn the_sender_table_survives_heavy_churn() {
    // Small table, many ids, leaves in scrambled order: every owner is still
    // found (its packets pass, spoofs of it do not) and the table drains.
    let mut r = rig_with(
        64,
        1,
        256,
        &[("max_remembered", 0), ("max_ids_per_peer", 1)],
    );
    let mut handles = HandleAllocator::new(64);
    let mut live: Vec<(u32, u32)> = Vec::new();
    let mut x: u32 = 7;
    let mut next_id = 1u32;
    for round in 0..40 {
        while live.len() < 60 {
            let h = handles.alloc().unwrap();
            r.ctl.send(SfuCommand::Join { peer: h, room: 0 }).unwrap();
            live.push((h, next_id.wrapping_mul(2_654_435_761)));
            next_id += 1;
        }
        r.cycle();
        for &(h, id) in &live {
            r.send_as(h, id, 0, round + 1, 4);
        }
        r.cycle();
        assert_eq!(r.gauge("senders"), 60, "round {round}");
        // A spoof of each id is caught.
        let spoofed = r.counter("sender_spoofed");
        let forwarded = r.counter("forwarded");
        for i in 0..live.len() {
            let (h, _) = live[i];
            let (_, other) = live[(i + 1) % live.len()];
            r.send_as(h, other, 0, 1000 + round, 4);
        }
        r.cycle();
        assert_eq!(r.counter("sender_spoofed") - spoofed, 60, "round {round}");
        assert_eq!(r.counter("forwarded"), forwarded);
        for _ in 0..25 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let (h, _) = live.swap_remove(x as usize % live.len());
            r.ctl.send(SfuCommand::Leave { peer: h }).unwrap();
            handles.release(h);
        }
    }
    for (h, _) in live.drain(..) {
        r.ctl.send(SfuCommand::Leave { peer: h }).unwrap();
    }
    r.cycle();
    assert_eq!(r.gauge("senders"), 0);
    assert_eq!(r.gauge("members"), 0);
}

#[test]
fn binding_needs_the_header() {
    let res = Resources::new();
    let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q), &res);
    let params = with_defaults([
        ("membership".to_string(), ParamValue::Str("m".into())),
        ("check_header".to_string(), ParamValue::Bool(false)),
    ]);
    match Fanout.build(&mut cx, &params) {
        Err(BuildError::Param(e)) => assert_eq!(e.param, "bind_senders"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("built binding without header checks"),
    }
}

#[test]
fn default_caps_come_from_the_busiest_profile() {
    use wzp_stages::codec::profile::PROFILES;
    use wzp_stages::sfu::fanout::{default_sender_bytes_per_s, default_sender_pps};
    let pps = default_sender_pps();
    let bps = default_sender_bytes_per_s();
    for p in PROFILES {
        let with_repair = (1000.0 / p.frame_ms as f64) * (1.0 + p.fec_ratio_percent as f64 / 100.0);
        assert!(pps as f64 >= 2.0 * with_repair - 1e-6, "{}", p.name);
        assert!(
            bps as f64 >= 2.0 * with_repair * p.max_datagram_bytes() as f64 - 1e-6,
            "{}",
            p.name
        );
    }
    // Not absurdly loose: within 10 % of twice the busiest profile.
    let busiest = PROFILES
        .iter()
        .map(|p| (1000.0 / p.frame_ms as f64) * (1.0 + p.fec_ratio_percent as f64 / 100.0))
        .fold(0.0, f64::max);
    assert!((pps as f64) < 2.2 * busiest, "{pps}");
}

/// With `unheard_grace_ms`, a member gets no copies until a packet of its
/// own has arrived (it is past its admission: on a slow link, copies sent
/// before starved the admission) or the grace has passed since it joined;
/// a rejoin waits again. Out-of-range values are refused by name.
#[test]
fn a_member_gets_copies_once_heard_from_or_after_the_grace() {
    let mut r = rig_with(8, 2, 64, &[("unheard_grace_ms", 2000)]);
    let mut handles = HandleAllocator::new(8);
    let (a, b, c) = (
        handles.alloc().unwrap(),
        handles.alloc().unwrap(),
        handles.alloc().unwrap(),
    );
    join_all(&mut r, &[a, b, c]);
    // a talks; b and c have sent nothing: no copies, counted.
    let p1 = r.send_as(a, 1, 0, 1, 4);
    let out = r.cycle();
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(r.counter("unheard_held"), 2);
    assert_eq!(r.counter("forwarded"), 1);
    // b sends (its first packet goes to a, who has been heard).
    r.now_ns += Q;
    let pb = r.send_as(b, 2, 0, 1, 4);
    let out = by_peer(&r.cycle());
    assert_eq!(out.get(&a), Some(&vec![pb]));
    assert!(!out.contains_key(&c), "c still unheard");
    // Now b gets a's packets; c not yet.
    r.now_ns += Q;
    let p2 = r.send_as(a, 1, 0, 2, 4);
    let out = by_peer(&r.cycle());
    assert_eq!(out.get(&b), Some(&vec![p2.clone()]));
    assert!(!out.contains_key(&c));
    assert_ne!(p1, p2);
    // The grace passes: c, who only listens, gets copies too.
    r.now_ns = 2000 * MS;
    let p3 = r.send_as(a, 1, 0, 3, 4);
    let out = by_peer(&r.cycle());
    assert_eq!(out.get(&b), Some(&vec![p3.clone()]));
    assert_eq!(out.get(&c), Some(&vec![p3]));
    // b rejoins (a reconnect): unheard again until it sends.
    r.ctl.send(SfuCommand::Join { peer: b, room: 0 }).unwrap();
    r.now_ns += Q;
    let p4 = r.send_as(a, 1, 0, 4, 4);
    let out = by_peer(&r.cycle());
    assert!(!out.contains_key(&b), "{out:?}");
    assert_eq!(out.get(&c), Some(&vec![p4]));

    // The default (0) sends at once.
    let mut r = rig(8, 2, 64);
    join_all(&mut r, &[a, b]);
    let p = r.send_as(a, 1, 0, 1, 4);
    assert_eq!(r.cycle(), vec![(b, p)]);
    assert_eq!(r.counter("unheard_held"), 0);

    // Bad values are refused by name.
    for bad in [-1, 60_001] {
        let (_ctl, port) = membership_channel(4);
        let mut res = Resources::new();
        res.insert("m", Arc::new(port));
        let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q), &res);
        let mut params = with_defaults([
            ("membership".to_string(), ParamValue::Str("m".into())),
            ("check_header".to_string(), ParamValue::Bool(true)),
        ]);
        params.insert("unheard_grace_ms", ParamValue::Int(bad));
        match Fanout.build(&mut cx, &params) {
            Err(BuildError::Param(e)) => assert_eq!(e.param, "unheard_grace_ms"),
            Err(e) => panic!("{bad}: {e}"),
            Ok(_) => panic!("unheard_grace_ms={bad} accepted"),
        }
    }
}
