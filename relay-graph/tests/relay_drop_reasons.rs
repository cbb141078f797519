//! The fan-out's sender binding, rate caps and replay memory show in
//! `wzp_relay_drops_total`: `sender_spoofed`, `sender_limit`,
//! `rate_limited`, `stale_replay`, each moved by the attack it names.

mod common;

use common::*;
use wzp_proto::MediaHeader;

fn packet_as(sender_id: u32, seq: u32, payload: &[u8]) -> Vec<u8> {
    let h = MediaHeader {
        sender_id,
        seq,
        timestamp: seq.wrapping_mul(960),
        ..Default::default()
    };
    let mut p = h.to_bytes().to_vec();
    p.extend_from_slice(payload);
    p
}

fn drops(relay: &RelayProc, reason: &str) -> f64 {
    relay
        .metric(&format!("wzp_relay_drops_total{{reason=\"{reason}\"}}"))
        .unwrap_or_else(|| panic!("no drops series for {reason}"))
}

fn wait_drops(relay: &RelayProc, reason: &str, at_least: f64) -> f64 {
    relay.wait_metric(
        &format!("wzp_relay_drops_total{{reason=\"{reason}\"}}"),
        |v| v >= at_least,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_extra_flooding_and_replayed_senders_are_counted_by_reason() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let room = room_sni("drop reasons");
    // Each announces itself (a member gets media once it has been heard).
    let mut a = join_heard(&relay, &room, 1, &[]).await.unwrap();
    let b = join_heard(&relay, &room, 2, &[&a]).await.unwrap();
    let c = join_heard(&relay, &room, 3, &[&a, &b]).await.unwrap();
    a.wait_room_count(3).await.unwrap();
    for reason in [
        "sender_spoofed",
        "sender_limit",
        "rate_limited",
        "stale_replay",
    ] {
        assert_eq!(drops(&relay, reason), 0.0, "{reason} before any attack");
    }

    // a and b bind their ids by speaking first.
    for seq in 0..5 {
        a.send_datagram(a.packet(seq, b"a speaks"));
        b.send_datagram(b.packet(seq, b"b speaks"));
    }
    c.recv_datagram(WAIT).await.expect("c hears the room");

    // c speaks as a.
    for seq in 100..105 {
        c.send_datagram(packet_as(a.sender_id, seq, b"c as a"));
    }
    wait_drops(&relay, "sender_spoofed", 1.0);

    // c takes more ids than one connection may own.
    for id in 200..210 {
        c.send_datagram(packet_as(id, 0, b"another id"));
    }
    wait_drops(&relay, "sender_limit", 1.0);

    // b floods far past its packet rate cap.
    for seq in 5..5000 {
        b.send_datagram(b.packet(seq, b"flood"));
        if seq % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_drops(&relay, "rate_limited", 1.0);

    // b leaves; its captured packets, replayed by a newcomer, are stale.
    let b_id = b.sender_id;
    b.conn.close(0u32.into(), b"bye");
    a.wait_room_count(2).await.unwrap();
    let d = join(&relay, &room, 4).await.unwrap();
    a.wait_room_count(3).await.unwrap();
    for seq in 0..5 {
        d.send_datagram(packet_as(b_id, seq, b"b's old packet"));
    }
    wait_drops(&relay, "stale_replay", 1.0);
}
