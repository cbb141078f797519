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
use wzp_stages::sfu::{membership_channel, HandleAllocator, SfuCommand, SfuControl};

struct Rig {
    proc: Box<dyn Processor>,
    pool: Vec<Buffer>,
    ctl: SfuControl,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
}

const Q: u64 = 20_000_000;

fn rig(max_peers: i64, max_rooms: i64, batch: usize) -> Rig {
    let (ctl, port) = membership_channel(64);
    let mut res = Resources::new();
    res.insert("m", Arc::new(port));
    let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q), &res);
    let params = Params::from_values([
        ("membership".to_string(), ParamValue::Str("m".into())),
        ("max_peers".to_string(), ParamValue::Int(max_peers)),
        ("max_rooms".to_string(), ParamValue::Int(max_rooms)),
        ("check_header".to_string(), ParamValue::Bool(true)),
    ]);
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
            now_ns: 0,
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
        let mut p = MediaHeader {
            sender_id: from,
            seq,
            ..Default::default()
        }
        .to_bytes()
        .to_vec();
        p.extend_from_slice(&seq.to_be_bytes());
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
        Params::from_values([
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
