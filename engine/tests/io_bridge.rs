//! I/O threads feed the packet domain and drain the clocked domain through
//! rings; the real-time side only pushes, pops and unparks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wzp_engine::bridge::{from_io, to_io, IoReceiver, IoSender, RtReceiver, RtSender};
use wzp_engine::prelude::*;

type Rx = Mutex<Option<RtReceiver<PacketMeta>>>;
type Tx = Mutex<Option<RtSender<PacketMeta>>>;

/// `io.ingress`: packets from an I/O thread, handed over via Resources.
struct Ingress;
struct IngressProc(RtReceiver<PacketMeta>);
impl Processor for IngressProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(out) = io.packets_out(0) {
            self.0.drain_into(out);
        }
        Flow::Continue
    }
}
impl StageFactory for Ingress {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "io.ingress",
            summary: "test ingress",
            inputs: vec![],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "",
            }],
            params: vec![],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        let rx = cx
            .resource::<Rx>("ingress")
            .and_then(|m| m.lock().ok()?.take())
            .ok_or_else(|| BuildError::Other("no `ingress` resource".into()))?;
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(IngressProc(rx)),
        })
    }
}

/// `io.egress`: packets back to an I/O thread.
struct Egress;
struct EgressProc(RtSender<PacketMeta>);
impl Processor for EgressProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(b) = io.packets_in(0) {
            self.0.send_batch(b);
        }
        Flow::Continue
    }
}
impl StageFactory for Egress {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "io.egress",
            summary: "test egress",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "",
            }],
            outputs: vec![],
            params: vec![],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        let tx = cx
            .resource::<Tx>("egress")
            .and_then(|m| m.lock().ok()?.take())
            .ok_or_else(|| BuildError::Other("no `egress` resource".into()))?;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(EgressProc(tx)),
        })
    }
}

/// The relay-shaped test graph (`rx` -> `tx`, one packet domain) with the
/// I/O ends of its two rings.
fn relay_graph() -> (Graph, IoSender<PacketMeta>, IoReceiver<PacketMeta>) {
    let mut reg = Registry::new();
    reg.register(Ingress).unwrap();
    reg.register(Egress).unwrap();
    let spec = GraphSpec::parse(
        "[graph]\nname = \"relay\"\n[[stage]]\nid = \"rx\"\nkind = \"io.ingress\"\n[[stage]]\nid = \"tx\"\nkind = \"io.egress\"\n[[link]]\nfrom = \"rx.out\"\nto = \"tx.in\"\n",
        "relay.toml",
        &Default::default(),
    )
    .unwrap();
    // The domain waker exists before the graph: the compiler hands the same
    // one to the executor, so the I/O side can wake the packet thread.
    let wakers = wzp_engine::compile::Wakers::default();
    let (io_tx, rt_rx): (IoSender<PacketMeta>, _) = from_io(256, wakers.packet.clone());
    let (rt_tx, io_rx): (_, IoReceiver<PacketMeta>) = to_io(256, Counter::default());
    let mut res = Resources::new();
    res.insert::<Rx>("ingress", Arc::new(Mutex::new(Some(rt_rx))));
    res.insert::<Tx>("egress", Arc::new(Mutex::new(Some(rt_tx))));
    let compiled =
        wzp_engine::compile::compile_with(&spec, &reg, &res, &Default::default(), wakers).unwrap();
    assert_eq!(compiled.domains.len(), 1);
    (Graph::new(compiled), io_tx, io_rx)
}

#[test]
fn packets_round_trip_through_the_packet_domain() {
    let (mut g, mut io_tx, mut io_rx) = relay_graph();
    g.start(RunOptions::default()).unwrap();

    let receiver = std::thread::spawn(move || {
        io_rx.register_current_thread();
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while got.len() < 100 && Instant::now() < end {
            if let Some(s) = io_rx.recv_timeout(Duration::from_millis(50)) {
                got.push((s.meta.peer, s.bytes().to_vec()));
            }
        }
        got
    });
    for i in 0..100u32 {
        while io_tx
            .send(
                PacketMeta {
                    peer: i,
                    ..Default::default()
                },
                &i.to_be_bytes(),
            )
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let got = receiver.join().unwrap();
    g.stop();
    assert_eq!(got.len(), 100, "all packets came back out");
    for (i, (peer, bytes)) in got.iter().enumerate() {
        assert_eq!(*peer, i as u32);
        assert_eq!(bytes, &(i as u32).to_be_bytes());
    }
}

/// The same relay graph with its packet domain hosted by the caller
/// (`Graph::take_runner`): no thread runs it, cycles happen only when the
/// caller runs them, and every packet still comes out in order.
#[test]
fn a_hosted_packet_domain_runs_only_when_its_host_cycles_it() {
    let (mut g, mut io_tx, mut io_rx) = relay_graph();
    assert_eq!(g.domains_left(), vec![Domain::Packet]);
    let mut runner = g.take_runner(Domain::Packet).expect("the packet runner");
    assert!(g.domains_left().is_empty());
    assert!(
        g.take_runner(Domain::Packet).is_none(),
        "a runner is taken once"
    );
    assert!(g.take_runner(Domain::Clocked).is_none());
    assert!(
        g.start(RunOptions::default()).is_err(),
        "nothing left to start"
    );

    for i in 0..10u32 {
        io_tx
            .send(
                PacketMeta {
                    peer: i,
                    ..Default::default()
                },
                &i.to_be_bytes(),
            )
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        io_rx.try_recv().is_none(),
        "no thread cycles a hosted domain"
    );
    let t = Instant::now();
    runner.run_cycle(0, t, None);
    assert_eq!(runner.cycles(), 1);
    let got: Vec<u32> = std::iter::from_fn(|| io_rx.try_recv())
        .map(|s| s.meta.peer)
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    let stats = g.stats();
    let cycles = stats
        .domains
        .iter()
        .find(|(d, _)| *d == Domain::Packet)
        .map(|(_, t)| t.cycles.load(std::sync::atomic::Ordering::Relaxed))
        .expect("packet domain timing");
    assert_eq!(cycles, 1, "a hosted cycle is timed like any other");
}

/// Items of every length, the ring wrapping many times, each way: what
/// comes out is what went in, byte for byte, and an item too large for a
/// slot is refused, never cut.
#[test]
fn ring_items_keep_their_exact_bytes_through_wraps_and_lengths() {
    use wzp_engine::bridge::DomainWaker;
    use wzp_engine::port::MAX_ITEM_BYTES;
    let lengths = [0usize, 1, 2, 99, 100, 1499, MAX_ITEM_BYTES];
    let item = |i: usize| -> (PacketMeta, Vec<u8>) {
        let len = lengths[i % lengths.len()];
        let meta = PacketMeta {
            peer: i as u32,
            ..PacketMeta::default()
        };
        (meta, (0..len).map(|k| (k * 31 + i * 7) as u8).collect())
    };
    // Real-time side to I/O thread (capacity 3: it wraps every 3 items).
    let (mut tx, mut rx) = to_io::<PacketMeta>(3, Counter::default());
    let mut got = Vec::new();
    for i in 0..40 {
        let (meta, bytes) = item(i);
        let mut slot = wzp_engine::port::Slot::<PacketMeta>::default();
        slot.meta = meta;
        assert!(slot.set_bytes(&bytes));
        assert!(tx.send(&slot));
        if i % 2 == 1 {
            rx.drain_with(|m, b| got.push((m.peer, b.to_vec())));
        }
    }
    if let Some(s) = rx.try_recv() {
        got.push((s.meta.peer, s.bytes().to_vec()));
    }
    assert_eq!(got.len(), 40);
    for (i, (peer, bytes)) in got.iter().enumerate() {
        assert_eq!((*peer as usize, bytes), (i, &item(i).1), "item {i}");
    }
    // I/O thread to real-time side.
    let (mut tx, mut rx) = from_io::<PacketMeta>(3, DomainWaker::new());
    let mut out = wzp_engine::port::Batch::<PacketMeta>::with_capacity(8);
    let mut got = Vec::new();
    for i in 0..40 {
        let (meta, bytes) = item(i);
        tx.send(meta, &bytes).unwrap();
        if i % 3 == 2 {
            out.clear();
            rx.drain_into(&mut out);
            got.extend(out.iter().map(|s| (s.meta.peer, s.bytes().to_vec())));
        }
    }
    out.clear();
    rx.drain_into(&mut out);
    got.extend(out.iter().map(|s| (s.meta.peer, s.bytes().to_vec())));
    assert_eq!(got.len(), 40);
    for (i, (peer, bytes)) in got.iter().enumerate() {
        assert_eq!((*peer as usize, bytes), (i, &item(i).1), "item {i}");
    }
    assert!(tx
        .send(PacketMeta::default(), &[0; MAX_ITEM_BYTES + 1])
        .is_err());
    out.clear();
    assert_eq!(rx.drain_into(&mut out), 0, "nothing of the refused item");
}
