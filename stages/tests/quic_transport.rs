//! `net.quic_ingress` / `net.quic_egress` over real quinn connections on
//! loopback: a packet-domain graph that echoes every datagram to the
//! connection it came from; drops are counted, never fatal; the client pins
//! the server's certificate fingerprint.

wzp_engine::install_alloc_checker!();

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_proto::{Seed, TlsFingerprint};
use wzp_stages::net::quic::{self, EgressPeer, IngressFeed, PeerIoStats};
use wzp_stages::net::quic_egress::QuicEgress;
use wzp_stages::net::quic_ingress::QuicIngress;

const WAIT: Duration = Duration::from_secs(10);

const ECHO: &str = r#"
[graph]
name = "echo"
[[stage]]
id = "in"
kind = "net.quic_ingress"
domain = "packet"
params = { endpoint = "t" }
[[stage]]
id = "out"
kind = "net.quic_egress"
domain = "packet"
params = { endpoint = "t" }
[[link]]
from = "in.out"
to = "out.in"
"#;

struct Echo {
    graph: Graph,
    feed: Arc<IngressFeed>,
    server: quinn::Endpoint,
    fingerprint: TlsFingerprint,
    stop: Arc<AtomicBool>,
    _conns: tokio::task::JoinHandle<()>,
}

/// Handle the echo server gives its (only) connection.
const HANDLE: u32 = 7;

async fn echo_server() -> Echo {
    let cert = Seed::from_bytes([5; 32]).relay_certificate().unwrap();
    let server = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &cert).unwrap();
    let wakers = Wakers::default();
    let (feed, in_port) = quic::ingress_channel(256, wakers.packet.clone(), Instant::now());
    let (peers, pump, out_port) = quic::egress_channel(256);
    let mut res = Resources::new();
    res.insert("t.ingress", Arc::new(in_port));
    res.insert("t.egress", Arc::new(out_port));
    let spec = GraphSpec::parse(ECHO, "echo.toml", &Default::default()).unwrap();
    let compiled = compile_with(
        &spec,
        &wzp_stages::registry(),
        &res,
        &Existing::default(),
        wakers,
    )
    .unwrap();
    let mut graph = Graph::new(compiled);
    let stop = Arc::new(AtomicBool::new(false));
    pump.spawn(stop.clone()).unwrap();
    graph
        .start(RunOptions {
            realtime: false,
            ..Default::default()
        })
        .unwrap();
    let ep = server.clone();
    let feed2 = feed.clone();
    let conns = tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let Ok(conn) = inc.await else { continue };
            let stats = Arc::new(PeerIoStats::default());
            peers.add(
                HANDLE,
                EgressPeer {
                    conn: conn.clone(),
                    stats: stats.clone(),
                    observer: None,
                },
            );
            let feed = feed2.clone();
            tokio::spawn(quic::pump_datagrams_in(conn, HANDLE, feed, stats, |_| {}));
        }
    });
    Echo {
        graph,
        feed,
        server,
        fingerprint: cert.tls_fingerprint(),
        stop,
        _conns: conns,
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.graph.stop();
    }
}

async fn client(
    addr: std::net::SocketAddr,
    pin: TlsFingerprint,
) -> Result<(quinn::Endpoint, quinn::Connection), quinn::ConnectionError> {
    let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quic::client_config(pin).unwrap());
    let c = tokio::time::timeout(WAIT, ep.connect(addr, "ping").unwrap())
        .await
        .expect("handshake ends in time")?;
    Ok((ep, c))
}

fn counter(g: &Graph, stage: &str, name: &str) -> u64 {
    g.stats().stage(stage).unwrap().counter(name).unwrap()
}

async fn wait_counter(g: &Graph, stage: &str, name: &str, want: u64) {
    let deadline = Instant::now() + WAIT;
    while counter(g, stage, name) != want {
        assert!(
            Instant::now() < deadline,
            "{stage}.{name} = {} (want {want})",
            counter(g, stage, name)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_echo_through_a_packet_graph() {
    let echo = echo_server().await;
    let (_ep, conn) = client(echo.server.local_addr().unwrap(), echo.fingerprint)
        .await
        .expect("pinned handshake");
    let max = quic::max_datagram_size(&conn).expect("datagrams enabled");
    assert!(max >= 1000, "loopback path takes {max}-byte datagrams");
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let d: Vec<u8> = (0..(20 + i as usize * 7))
            .map(|k| (k as u32 ^ i) as u8)
            .collect();
        conn.send_datagram(Bytes::from(d.clone())).unwrap();
        sent.push(d);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let d = tokio::time::timeout(WAIT, conn.read_datagram())
            .await
            .expect("echo within the wait")
            .unwrap();
        got.push(d.to_vec());
    }
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    wait_counter(&echo.graph, "in", "packets", 50).await;
    wait_counter(&echo.graph, "out", "sent", 50).await;
    assert_eq!(counter(&echo.graph, "out", "too_large"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_unroutable_packets_are_dropped_and_counted() {
    let echo = echo_server().await;
    let (_ep, conn) = client(echo.server.local_addr().unwrap(), echo.fingerprint)
        .await
        .unwrap();
    // Make sure the server has registered the connection.
    conn.send_datagram(Bytes::from_static(b"hello")).unwrap();
    tokio::time::timeout(WAIT, conn.read_datagram())
        .await
        .unwrap()
        .unwrap();
    // Larger than any path's max_datagram_size, but fits a slot.
    assert!(echo.feed.push(HANDLE, &[1u8; MAX_ITEM_BYTES]));
    wait_counter(&echo.graph, "out", "too_large", 1).await;
    // Larger than a slot: dropped before the graph.
    assert!(!echo.feed.push(HANDLE, &[1u8; MAX_ITEM_BYTES + 1]));
    wait_counter(&echo.graph, "in", "too_large", 1).await;
    // A handle nobody owns.
    assert!(echo.feed.push(999, b"lost"));
    wait_counter(&echo.graph, "out", "unknown_peer", 1).await;
    // The connection is still fine.
    conn.send_datagram(Bytes::from_static(b"still here"))
        .unwrap();
    let d = tokio::time::timeout(WAIT, conn.read_datagram())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&d[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_server_it_did_not_pin() {
    let echo = echo_server().await;
    let wrong = TlsFingerprint([0xaa; 32]);
    let err = client(echo.server.local_addr().unwrap(), wrong)
        .await
        .expect_err("an unpinned certificate is refused");
    assert!(
        err.to_string().contains("pinned")
            || matches!(err, quinn::ConnectionError::TransportError(_)),
        "{err}"
    );
}

#[test]
fn ingress_and_egress_processors_do_not_allocate() {
    let wakers = Wakers::default();
    let (feed, in_port) = quic::ingress_channel(64, wakers.packet.clone(), Instant::now());
    let (_peers, mut pump, out_port) = quic::egress_channel(64);
    let mut res = Resources::new();
    res.insert("x.ingress", Arc::new(in_port));
    res.insert("x.egress", Arc::new(out_port));
    let mut cx = BuildContext::standalone(48_000, Duration::from_millis(20), &res);
    let p = Params::from_values([("endpoint".to_string(), ParamValue::Str("x".into()))]);
    let mut ingress = QuicIngress.build(&mut cx, &p).unwrap().processor;
    let mut egress = QuicEgress.build(&mut cx, &p).unwrap().processor;
    // A second stage on the same resource is refused with a clear message.
    match QuicIngress.build(&mut cx, &p) {
        Err(BuildError::Other(m)) => assert!(m.contains("already used"), "{m}"),
        _ => panic!("a ring end was handed out twice"),
    }
    let q = 20_000_000u64;
    let mut pool = vec![Buffer::for_type(PortType::Packet, q, 16)];
    let cxr = Cx {
        now_ns: 0,
        cycle: 0,
        rate: 48_000,
        quantum_ns: q,
    };
    for round in 0..5u32 {
        for i in 0..10u32 {
            assert!(feed.push(i, &(round * 100 + i).to_be_bytes()));
        }
        pool[0].reset();
        assert_rt_safe("net.quic_ingress + net.quic_egress", 1, || {
            let mut io = Io::checked(&mut pool, &[], &[0]).unwrap();
            ingress.process(&mut io, &cxr);
            let mut io = Io::checked(&mut pool, &[0], &[]).unwrap();
            egress.process(&mut io, &cxr);
        });
        // The pump side has them, peers as sent.
        for i in 0..10u32 {
            let s = pump_recv(&mut pump).expect("packet reached the egress ring");
            assert_eq!(s.0, i);
            assert_eq!(s.1, (round * 100 + i).to_be_bytes());
        }
    }
    let (counters, _) = cx.take_metrics();
    let get = |n: &str| {
        counters
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, c)| c.get())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("packets"), vec![50, 50], "ingress, egress");
}

/// Pops one packet the egress stage queued (the pump's ring), as (peer, bytes).
fn pump_recv(pump: &mut quic::EgressPump) -> Option<(u32, Vec<u8>)> {
    pump.try_recv().map(|s| (s.meta.peer, s.bytes().to_vec()))
}

/// A cycle that runs late (the timer driver catching up after a short
/// stall) maps arrival stamps through the offset of cycles on time, so the
/// datagrams it drains do not look earlier by its lateness; a graph time
/// that moved for good (quanta skipped after a long stall) is adopted.
#[test]
fn a_late_cycle_does_not_move_arrivals_earlier() {
    let wakers = Wakers::default();
    let epoch = Instant::now();
    let (feed, in_port) = quic::ingress_channel(64, wakers.packet.clone(), epoch);
    let mut res = Resources::new();
    res.insert("x.ingress", Arc::new(in_port));
    let mut cx = BuildContext::standalone(48_000, Duration::from_millis(20), &res);
    let p = Params::from_values([("endpoint".to_string(), ParamValue::Str("x".into()))]);
    let mut ingress = QuicIngress.build(&mut cx, &p).unwrap().processor;
    let q = 20_000_000u64;
    let mut pool = vec![Buffer::for_type(PortType::Packet, q, 16)];
    // Graph time runs 5 s ahead of the stamps' clock, less how late the
    // cycle runs.
    let ahead = Duration::from_secs(5);
    let mut cycle = |late: Duration| -> (u64, u64, u64) {
        let before_push = (epoch.elapsed() + ahead).as_nanos() as u64;
        assert!(feed.push(0, b"x"));
        let now_ns = (epoch.elapsed() + ahead - late).as_nanos() as u64;
        pool[0].reset();
        let cxr = Cx {
            now_ns,
            cycle: 0,
            rate: 48_000,
            quantum_ns: q,
        };
        let mut io = Io::checked(&mut pool, &[], &[0]).unwrap();
        ingress.process(&mut io, &cxr);
        let Buffer::Packets(b) = &pool[0] else {
            unreachable!()
        };
        let arrivals: Vec<u64> = b.iter().map(|s| s.meta.arrival_ns).collect();
        assert_eq!(arrivals.len(), 1);
        (before_push, now_ns, arrivals[0])
    };
    let ms = |n: u64| n * 1_000_000;
    // On time: the datagram arrived at most now.
    let (pushed, now, arrival) = cycle(Duration::ZERO);
    assert!(
        arrival <= now && arrival + ms(150) >= pushed,
        "{arrival} {now}"
    );
    // 300 ms late: the arrival stays on the wall clock (graph time of its
    // stamp), after this cycle's now_ns, not 300 ms earlier.
    let (pushed, now, arrival) = cycle(Duration::from_millis(300));
    assert!(
        arrival + ms(150) >= pushed,
        "a late cycle moved the arrival {} ms earlier",
        (pushed - arrival) / 1_000_000
    );
    assert!(arrival > now, "{arrival} {now}");
    // 3 s behind (beyond the driver's catch-up): graph time moved; arrivals
    // follow the new offset, never ahead of now.
    let (_, now, arrival) = cycle(Duration::from_secs(3));
    assert!(
        arrival <= now && arrival + ms(150) >= now,
        "{arrival} {now}"
    );
}
