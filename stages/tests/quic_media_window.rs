//! A network outage must not leave a wzp connection's congestion window
//! collapsed: media datagrams would then wait behind it (and behind pacing
//! sized from it) after every outage (`net::media_window`). A real client
//! and server endpoint with wzp's transport settings, datagrams every 10 ms
//! through a UDP forwarder that drops everything in both directions for
//! 600 ms: the outage is declared persistent congestion (every packet of
//! more than three probe timeouts lost), and the window stays at the floor.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use wzp_proto::Seed;
use wzp_stages::net::media_window::MEDIA_WINDOW_FLOOR;
use wzp_stages::net::quic;

const WAIT: Duration = Duration::from_secs(20);

/// Forwards UDP between one client and `server`; drops every datagram
/// while `down` is set. Returns its address.
async fn forwarder(
    server: SocketAddr,
    down: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(server).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client: Arc<tokio::sync::Mutex<Option<SocketAddr>>> = Arc::default();
    {
        let (front, back, down, dropped, client) = (
            front.clone(),
            back.clone(),
            down.clone(),
            dropped.clone(),
            client.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                *client.lock().await = Some(from);
                if down.load(Ordering::SeqCst) {
                    dropped.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let _ = back.send(&buf[..n]).await;
            }
        });
    }
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok(n) = back.recv(&mut buf).await {
            if down.load(Ordering::SeqCst) {
                dropped.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            if let Some(to) = *client.lock().await {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_leaves_the_window_at_the_floor_not_two_packets() {
    let cert = Seed::from_bytes([7; 32]).relay_certificate().unwrap();
    let server = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &cert).unwrap();
    let server_addr = server.local_addr().unwrap();
    // The server reads and drops datagrams.
    tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        while conn.read_datagram().await.is_ok() {}
    });
    let down = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicU64::new(0));
    let via = forwarder(server_addr, down.clone(), dropped.clone()).await;
    let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quic::client_config(cert.tls_fingerprint()).unwrap());
    let conn = tokio::time::timeout(WAIT, ep.connect(via, "media").unwrap())
        .await
        .expect("handshake in time")
        .unwrap();
    assert!(
        conn.stats().path.cwnd >= MEDIA_WINDOW_FLOOR,
        "initial window {}",
        conn.stats().path.cwnd
    );

    let send = |conn: &quinn::Connection, k: u32| {
        let mut d = vec![0u8; 100];
        d[..4].copy_from_slice(&k.to_be_bytes());
        conn.send_datagram(d.into()).unwrap();
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut k = 0u32;
    // Clean for 300 ms, so the RTT is known.
    for _ in 0..30 {
        tick.tick().await;
        send(&conn, k);
        k += 1;
    }
    // The outage: 600 ms with nothing through either way.
    down.store(true, Ordering::SeqCst);
    for _ in 0..60 {
        tick.tick().await;
        send(&conn, k);
        k += 1;
    }
    down.store(false, Ordering::SeqCst);
    assert!(
        dropped.load(Ordering::SeqCst) >= 50,
        "the outage dropped packets"
    );
    // After it: send until the losses are declared (a congestion event).
    let deadline = tokio::time::Instant::now() + WAIT;
    while conn.stats().path.congestion_events == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no congestion event after the outage: {:?}",
            conn.stats().path
        );
        tick.tick().await;
        send(&conn, k);
        k += 1;
    }
    let path = conn.stats().path;
    assert!(path.lost_packets >= 50, "{path:?}");
    assert!(
        path.cwnd >= MEDIA_WINDOW_FLOOR,
        "window {} after the outage (floor {MEDIA_WINDOW_FLOOR}): {path:?}",
        path.cwnd
    );
}
