//! The QUIC transport bounds what a peer can make a relay hold: one
//! bidirectional stream, no unidirectional stream, and no more unread stream
//! data than the window, however much the peer writes. The attacker is a
//! plain quinn client with quinn's default (generous) transport settings.

use std::sync::Arc;
use std::time::Duration;

use wzp_proto::Seed;
use wzp_stages::net::quic::{self, StreamLimits};

/// How long an operation that must not complete is given to complete.
const MUST_NOT: Duration = Duration::from_millis(750);
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    endpoint: quinn::Endpoint,
    /// Bytes the server will read from the first stream when told to.
    read_now: tokio::sync::mpsc::Sender<usize>,
    /// Streams the server accepted.
    accepted: tokio::sync::mpsc::Receiver<&'static str>,
    fingerprint: wzp_proto::TlsFingerprint,
}

/// A relay-like server: accepts one connection, accepts its streams, and
/// reads the first one only when told to (an idle reader).
async fn server() -> Server {
    let cert = Seed::from_bytes([9; 32]).relay_certificate().unwrap();
    let endpoint = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &cert).unwrap();
    let (read_tx, mut read_rx) = tokio::sync::mpsc::channel::<usize>(4);
    let (acc_tx, acc_rx) = tokio::sync::mpsc::channel(16);
    let ep = endpoint.clone();
    tokio::spawn(async move {
        let conn = ep.accept().await.unwrap().await.unwrap();
        let (_send, mut recv) = conn.accept_bi().await.unwrap();
        acc_tx.send("bi").await.unwrap();
        let (c2, a2) = (conn.clone(), acc_tx.clone());
        tokio::spawn(async move {
            while let Ok(_s) = c2.accept_bi().await {
                a2.send("bi").await.ok();
            }
        });
        let (c3, a3) = (conn.clone(), acc_tx.clone());
        tokio::spawn(async move {
            while let Ok(_s) = c3.accept_uni().await {
                a3.send("uni").await.ok();
            }
        });
        let mut buf = vec![0u8; 64 * 1024];
        while let Some(mut n) = read_rx.recv().await {
            while n > 0 {
                let k = n.min(buf.len());
                recv.read_exact(&mut buf[..k]).await.unwrap();
                n -= k;
            }
        }
        drop(conn);
    });
    Server {
        endpoint,
        read_now: read_tx,
        accepted: acc_rx,
        fingerprint: cert.tls_fingerprint(),
    }
}

async fn attacker(s: &Server) -> (quinn::Endpoint, quinn::Connection) {
    let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut cfg = quic::client_config(s.fingerprint).unwrap();
    // Not ours: quinn's defaults, which would open 100 streams and buffer
    // megabytes if the server let it.
    cfg.transport_config(Arc::new(quinn::TransportConfig::default()));
    ep.set_default_client_config(cfg);
    let addr = s.endpoint.local_addr().unwrap();
    let conn = tokio::time::timeout(WAIT, ep.connect(addr, "ping").unwrap())
        .await
        .expect("handshake in time")
        .unwrap();
    (ep, conn)
}

/// Writes `total` bytes until a write stalls for MUST_NOT; returns the bytes
/// the stream took.
async fn write_until_stalled(send: &mut quinn::SendStream, total: usize) -> usize {
    let chunk = vec![0x5a; 16 * 1024];
    let mut written = 0;
    while written < total {
        let n = (total - written).min(chunk.len());
        match tokio::time::timeout(MUST_NOT, send.write(&chunk[..n])).await {
            Ok(Ok(k)) => written += k,
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => break,
        }
    }
    written
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_stream_and_any_uni_stream_are_held_back() {
    let mut s = server().await;
    let (_ep, conn) = attacker(&s).await;
    let (mut first, _r1) = conn.open_bi().await.unwrap();
    first.write_all(b"hello").await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, s.accepted.recv()).await.unwrap(),
        Some("bi")
    );
    // The stream limit is 1 and 0: opening waits for credit that never comes.
    assert!(
        tokio::time::timeout(MUST_NOT, conn.open_bi())
            .await
            .is_err(),
        "a second bidirectional stream was opened"
    );
    assert!(
        tokio::time::timeout(MUST_NOT, conn.open_uni())
            .await
            .is_err(),
        "a unidirectional stream was opened"
    );
    assert!(
        s.accepted.try_recv().is_err(),
        "the server accepted another stream"
    );
    assert_eq!(StreamLimits::ROOM.bidi_streams, 1);
    assert_eq!(StreamLimits::ROOM.uni_streams, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_into_an_unread_stream_stops_at_the_window() {
    let mut s = server().await;
    let (_ep, conn) = attacker(&s).await;
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(b"x").await.unwrap();
    tokio::time::timeout(WAIT, s.accepted.recv())
        .await
        .unwrap()
        .unwrap();
    let window = StreamLimits::ROOM.stream_window as usize;
    let taken = 1 + write_until_stalled(&mut send, 1 << 20).await;
    assert!(
        taken <= window,
        "the peer pushed {taken} bytes into an unread stream; the window is {window}"
    );
    assert!(
        taken >= window / 2,
        "only {taken} bytes went through; the window ({window}) should admit a whole frame"
    );
    // It is flow control, not a dead connection: once the server reads,
    // the writer goes on, again only as far as the window.
    s.read_now.send(taken).await.unwrap();
    let more = tokio::time::timeout(WAIT, send.write(&[1u8; 1024]))
        .await
        .expect("the write resumes once the server reads")
        .unwrap();
    assert!(more > 0);
    let again = more + write_until_stalled(&mut send, 1 << 20).await;
    assert!(again <= window, "{again} > {window}");
}

#[test]
fn the_documented_bound_per_connection() {
    let room = StreamLimits::ROOM;
    assert!(room.stream_window as usize >= 4 + quic::MAX_CLIENT_SIGNAL_FRAME);
    // 128 KiB of stream data, 256 KiB of datagrams, 16 KiB of handshake.
    assert_eq!(room.max_buffered_bytes(), 131_080 + 262_144 + 16_384);
    assert!(room.max_buffered_bytes() < 512 * 1024);
    let signal = StreamLimits::SIGNAL;
    assert!(signal.stream_window as usize >= 4 + wzp_proto::signal::MAX_FRAME_LEN);
    assert_eq!(
        signal.max_buffered_bytes(),
        2 * 1024 * 1024 + 262_144 + 16_384
    );
}

/// Both ends of a connection compute the same join nonce; another
/// connection (even to the same server, from the same client) gets another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_nonce_is_shared_by_both_ends_and_unique_per_connection() {
    let cert = Seed::from_bytes([3; 32]).relay_certificate().unwrap();
    let server = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &cert).unwrap();
    let addr = server.local_addr().unwrap();
    let accept = tokio::spawn(async move {
        let (mut nonces, mut held) = (Vec::new(), Vec::new());
        for _ in 0..2 {
            let conn = server.accept().await.unwrap().await.unwrap();
            nonces.push(quic::join_nonce(&conn).unwrap());
            held.push(conn);
        }
        (nonces, held)
    });
    let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quic::client_config(cert.tls_fingerprint()).unwrap());
    let mut client_nonces = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let c = tokio::time::timeout(WAIT, ep.connect(addr, "ping").unwrap())
            .await
            .unwrap()
            .unwrap();
        client_nonces.push(quic::join_nonce(&c).unwrap());
        conns.push(c);
    }
    let (server_nonces, _held) = tokio::time::timeout(WAIT, accept).await.unwrap().unwrap();
    assert_eq!(client_nonces, server_nonces);
    assert_ne!(client_nonces[0], client_nonces[1]);
    assert_ne!(client_nonces[0], [0u8; 32]);

    // A room proof made for one connection fails on the other.
    let key = wzp_proto::join::RoomAdmissionKey::derive(b"s3cret-s3cret-s3cret", "team");
    let me = wzp_proto::identity::Identity::from_seed(&Seed::from_bytes([1; 32]));
    let relay = cert.tls_fingerprint();
    let join = wzp_proto::join::Join::signed(&me, &key.sni(), &relay, None, 0).with_room_proof(
        &key,
        &client_nonces[0],
        &relay,
    );
    assert!(join.has_valid_room_proof(&key.sni(), &server_nonces[0], &relay));
    assert!(!join.has_valid_room_proof(&key.sni(), &server_nonces[1], &relay));
}
