//! A rogue client (garbage datagrams, malformed signal frames, bad first
//! frames, oversized frames, unknown server names) changes nothing for the
//! others, the relay stays up, and the drop counters move.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use wzp_proto::close::CloseCode;
use wzp_proto::signal::SignalMessage;

/// a and b exchange `n` packets; both must get exactly the other's.
async fn exchange(a: &Client, b: &Client, n: u32, base: u32) {
    for seq in base..base + n {
        a.send_datagram(a.packet(seq, &payload(seq as u64, 50)));
        b.send_datagram(b.packet(seq, &payload(seq as u64 + 7, 50)));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for (me, other) in [(a, b), (b, a)] {
        let mut seqs = BTreeSet::new();
        while seqs.len() < n as usize {
            let d = me.recv_datagram(WAIT).await.unwrap_or_else(|| {
                panic!(
                    "client {} starved after {} packets",
                    me.sender_id,
                    seqs.len()
                )
            });
            let (h, _) = wzp_proto::MediaHeader::parse(&d).expect("only valid media is forwarded");
            assert_eq!(
                h.sender_id, other.sender_id,
                "only the other member's packets"
            );
            seqs.insert(h.seq);
        }
        assert_eq!(seqs, (base..base + n).collect::<BTreeSet<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_a_member_is_dropped_and_counted() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let room = room_sni("rogues");
    // a and b announce themselves (a member gets media once it has been heard).
    let mut a = join_heard(&relay, &room, 1, &[]).await.unwrap();
    let b = join_heard(&relay, &room, 2, &[&a]).await.unwrap();
    let mut rogue = join(&relay, &room, 66).await.unwrap();
    a.wait_room_count(3).await.expect("three in the room");

    exchange(&a, &b, 10, 0).await;

    // Garbage media: random bytes, truncated headers, a wrong version, reserved bits.
    let good = rogue.packet(1, b"payload");
    let mut garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff],
        payload(1, 5),
        payload(2, 200),
        good[..10].to_vec(),
        good[..21].to_vec(),
    ];
    let mut bad_version = good.clone();
    bad_version[0] = 0x7f;
    garbage.push(bad_version);
    let mut reserved = good.clone();
    reserved[1] |= 0x80; // a reserved flag bit
    garbage.push(reserved);
    let sent_garbage = garbage.len() as f64;
    for g in garbage {
        rogue.send_datagram(g);
    }
    relay.wait_metric("wzp_relay_drops_total{reason=\"malformed\"}", |v| {
        v == sent_garbage
    });

    // Malformed signal frames: bad JSON, a ping without its field, an unknown type.
    for body in [&b"{not json"[..], b"{\"type\":\"ping\"}", b"[]"] {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        rogue.send.write_all(&f).await.unwrap();
    }
    let mut f = Vec::new();
    let body = b"{\"type\":\"from_a_newer_client\"}";
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(body);
    rogue.send.write_all(&f).await.unwrap();
    // A valid ping still gets its pong: the stream survived the garbage.
    rogue
        .send
        .write_all(
            &wzp_proto::signal::encode_frame(&SignalMessage::Ping { timestamp_ms: 42 }).unwrap(),
        )
        .await
        .unwrap();
    rogue
        .wait_signal(|m| matches!(m, SignalMessage::Pong { timestamp_ms: 42 }))
        .await
        .expect("pong after malformed frames");
    assert!(relay.metric("wzp_relay_signal_malformed_total").unwrap() >= 3.0);
    assert!(relay.metric("wzp_relay_signal_unknown_total").unwrap() >= 1.0);

    // An oversized frame ends the rogue's connection only.
    rogue.send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    let e = tokio::time::timeout(WAIT, rogue.conn.closed())
        .await
        .unwrap();
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), CloseCode::Protocol.code() as u64)
        }
        other => panic!("rogue closed with {other}"),
    }
    a.wait_room_count(2)
        .await
        .expect("the rogue's leave is announced");

    exchange(&a, &b, 10, 100).await;
    let mut relay = relay;
    assert!(relay.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshakes_are_refused_without_disturbing_a_call() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let room = room_sni("steady");
    let mut a = join_heard(&relay, &room, 1, &[]).await.unwrap();
    let b = join_heard(&relay, &room, 2, &[&a]).await.unwrap();
    a.wait_room_count(2).await.unwrap();

    // First frame not Hello, a Join with a bad signature, a Join for another
    // room, garbage, an oversized length, no stream at all (timeout is long,
    // so that one just waits while the others go on).
    let bad_first_frames: Vec<(&str, Vec<u8>)> = {
        let hello = wzp_proto::signal::encode_frame(&SignalMessage::hello(None)).unwrap();
        let id = identity(9);
        let mut forged = wzp_proto::join::Join::signed(&id, &room, &relay.fingerprint, None, now());
        forged.signature[0] ^= 1;
        let other_room =
            wzp_proto::join::Join::signed(&id, &room_sni("x"), &relay.fingerprint, None, now());
        let stale = wzp_proto::join::Join::signed(&id, &room, &relay.fingerprint, None, 1);
        let cat = |a: &[u8], b: Vec<u8>| [a.to_vec(), b].concat();
        vec![
            (
                "ping first",
                wzp_proto::signal::encode_frame(&SignalMessage::Ping { timestamp_ms: 1 }).unwrap(),
            ),
            ("garbage", cat(&[0, 0, 0, 3], b"abc".to_vec())),
            ("oversized", u32::MAX.to_be_bytes().to_vec()),
            ("forged", cat(&hello, forged.to_frame())),
            ("other room", cat(&hello, other_room.to_frame())),
            ("stale", cat(&hello, stale.to_frame())),
            ("hello twice", cat(&hello, hello.clone())),
        ]
    };
    let before = relay
        .metric("wzp_relay_refused_total{reason=\"bad_join\"}")
        .unwrap();
    for (what, bytes) in &bad_first_frames {
        let (_ep, conn) = connect(&relay, &room).await.unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        let e = tokio::time::timeout(WAIT, conn.closed())
            .await
            .unwrap_or_else(|_| panic!("{what}: not closed"));
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(
                c.error_code.into_inner(),
                CloseCode::BadJoin.code() as u64,
                "{what}: {:?}",
                c.reason
            ),
            other => panic!("{what}: closed with {other}"),
        }
    }
    relay.wait_metric("wzp_relay_refused_total{reason=\"bad_join\"}", |v| {
        v == before + bad_first_frames.len() as f64
    });

    // Server names the relay does not serve.
    for sni in ["lobby", "wzp-relay", "_relay"] {
        let (_ep, conn) = connect(&relay, sni).await.unwrap();
        let e = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(
                    c.error_code.into_inner(),
                    CloseCode::UnknownSni.code() as u64,
                    "{sni}"
                )
            }
            other => panic!("{sni}: {other}"),
        }
    }

    // Through all of it the call went on.
    exchange(&a, &b, 10, 0).await;
    assert_eq!(relay.metric("wzp_relay_participants").unwrap(), 2.0);
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
