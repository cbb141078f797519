//! Media fan-out through a real relay: members of a room hear each other,
//! never themselves, and nobody outside the room hears anything.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use wzp_proto::close::CloseCode;
use wzp_proto::MediaHeader;

/// Collects datagrams until `want` arrived or the wait ends.
async fn collect(c: &Client, want: usize) -> Vec<bytes::Bytes> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < want && tokio::time::Instant::now() < deadline {
        if let Some(d) = c.recv_datagram(Duration::from_millis(200)).await {
            got.push(d);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_hear_each_other_and_another_room_hears_nothing() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let lobby = room_sni("lobby");
    // Each announces itself (a member gets media once it has been heard).
    let mut a = join_heard(&relay, &lobby, 1, &[]).await.expect("a joins");
    let b = join_heard(&relay, &lobby, 2, &[&a]).await.expect("b joins");
    let c = join_heard(&relay, &room_sni("elsewhere"), 3, &[])
        .await
        .expect("c joins another room");
    // a learns b is in: from here on b's membership is in the fan-out.
    let update = a.wait_room_count(2).await.expect("a sees b join");
    if let wzp_proto::signal::SignalMessage::RoomUpdate { participants, .. } = update {
        let fps: BTreeSet<_> = participants.iter().map(|p| p.fingerprint).collect();
        assert_eq!(fps, BTreeSet::from([fingerprint(1), fingerprint(2)]));
        assert!(participants
            .iter()
            .any(|p| p.alias.as_deref() == Some("user2")));
    }

    const N: u32 = 30;
    let mut sent_a = Vec::new();
    let mut sent_b = Vec::new();
    for seq in 0..N {
        let pa = a.packet(seq, &payload(seq as u64, 40 + seq as usize));
        let pb = b.packet(seq, &payload(1000 + seq as u64, 60));
        a.send_datagram(pa.clone());
        b.send_datagram(pb.clone());
        sent_a.push(pa);
        sent_b.push(pb);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_b = collect(&b, N as usize).await;
    let at_a = collect(&a, N as usize).await;
    assert_eq!(at_b.len(), N as usize, "b got every packet of a");
    assert_eq!(at_a.len(), N as usize, "a got every packet of b");
    let mut at_b: Vec<Vec<u8>> = at_b.iter().map(|d| d.to_vec()).collect();
    let mut at_a: Vec<Vec<u8>> = at_a.iter().map(|d| d.to_vec()).collect();
    at_b.sort();
    at_a.sort();
    sent_a.sort();
    sent_b.sort();
    assert_eq!(at_b, sent_a, "byte-identical, and none of b's own");
    assert_eq!(at_a, sent_b, "byte-identical, and none of a's own");
    // Everyone who should have received has; c must have nothing queued.
    assert!(
        c.recv_datagram(Duration::from_millis(300)).await.is_none(),
        "a member of another room received media"
    );
    // Room state is visible over HTTP.
    let rooms = relay.http_get("/rooms");
    assert!(rooms.contains(&lobby), "{rooms}");
    let sessions = relay.http_get("/sessions");
    assert!(sessions.contains("max_datagram_size"), "{sessions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_clients_each_hear_the_four_others() {
    five_clients_round("").await;
}

/// Holding forwarded packets to share QUIC packets loses none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_egress_coalescing_five_clients_still_hear_everything() {
    let relay = five_clients_round("egress_coalesce_us = 5000\n").await;
    // Each receiver got four datagrams every 2 ms: busy enough to be held.
    let held = relay
        .metric("wzp_stage_events_total{graph=\"relay\",stage=\"egress\",name=\"held\"}")
        .unwrap_or(0.0);
    assert!(held > 0.0, "no datagram was held");
}

/// Without coalescing nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_egress_coalescing_nothing_is_held() {
    let relay = five_clients_round("egress_coalesce_us = 0\n").await;
    let held = relay
        .metric("wzp_stage_events_total{graph=\"relay\",stage=\"egress\",name=\"held\"}")
        .unwrap_or(-1.0);
    assert_eq!(held, 0.0);
}

async fn five_clients_round(config: &str) -> RelayProc {
    let dir = tempdir();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, config).unwrap();
    let relay = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let room = room_sni("five");
    let mut clients: Vec<Client> = Vec::new();
    for user in 1..=5u8 {
        let heard: Vec<&Client> = clients.iter().collect();
        let c = join_heard(&relay, &room, user, &heard)
            .await
            .expect("joins");
        clients.push(c);
    }
    // The first member sees the room reach five: all Joins are in.
    clients[0].wait_room_count(5).await.expect("room of five");

    const N: u32 = 12;
    let mut sent: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    for seq in 0..N {
        for c in &clients {
            let p = c.packet(seq, &payload(c.sender_id as u64 * 100 + seq as u64, 80));
            c.send_datagram(p.clone());
            sent.entry(c.sender_id).or_default().push(p);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for c in &clients {
        let got = collect(c, 4 * N as usize).await;
        assert_eq!(
            got.len(),
            4 * N as usize,
            "client {} got {} of {} packets",
            c.sender_id,
            got.len(),
            4 * N
        );
        let mut by_sender: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        for d in &got {
            let (h, _) = MediaHeader::parse(d).expect("forwarded packets keep their header");
            by_sender.entry(h.sender_id).or_default().push(d.to_vec());
        }
        assert!(!by_sender.contains_key(&c.sender_id), "heard itself");
        for (sender, mut packets) in by_sender {
            packets.sort();
            let mut want = sent[&sender].clone();
            want.sort();
            assert_eq!(packets, want, "client {} from {sender}", c.sender_id);
        }
    }
    let participants = relay.metric("wzp_relay_participants").unwrap();
    assert_eq!(participants, 5.0);
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_member_is_announced_and_no_longer_served() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let room = room_sni("leavers");
    let mut a = join(&relay, &room, 1).await.unwrap();
    let b = join(&relay, &room, 2).await.unwrap();
    a.wait_room_count(2).await.expect("two in the room");
    b.conn.close(0u32.into(), b"bye");
    a.wait_room_count(1).await.expect("a is told b left");
    relay.wait_metric("wzp_relay_participants", |v| v == 1.0);
    // a alone: its packets go nowhere, and nothing comes back.
    a.send_datagram(a.packet(1, b"alone"));
    assert!(a.recv_datagram(Duration::from_millis(300)).await.is_none());
    relay.wait_metric("wzp_relay_leaves_total", |v| v == 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_sharded_over_threads_each_forward_only_their_own() {
    let dir = tempdir();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "shards = 3\n").unwrap();
    let relay = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap()]);
    // Six rooms of two spread over three shards (by room hash).
    let mut pairs = Vec::new();
    for r in 0..6u8 {
        let sni = room_sni(&format!("room{r}"));
        let mut a = join_heard(&relay, &sni, 10 + 2 * r, &[])
            .await
            .expect("a joins");
        let b = join_heard(&relay, &sni, 11 + 2 * r, &[&a])
            .await
            .expect("b joins");
        // a learns b is in: from here on b's membership is in the fan-out.
        a.wait_room_count(2).await.expect("both in");
        pairs.push((a, b));
    }
    let stages: serde_json::Value = serde_json::from_str(&relay.http_get("/stages")).unwrap();
    assert_eq!(
        stages["shards"].as_array().unwrap().len(),
        3,
        "three forwarding graphs"
    );
    for (r, (a, b)) in pairs.iter().enumerate() {
        let p = a.packet(r as u32, &payload(r as u64, 50));
        a.send_datagram(p.clone());
        let got = collect(b, 1).await;
        assert_eq!(got.len(), 1, "room {r}: b got a's packet");
        assert_eq!(got[0].to_vec(), p.to_vec());
    }
    // Nobody got a packet from another room.
    for (r, (a, _)) in pairs.iter().enumerate() {
        assert!(
            a.recv_datagram(Duration::from_millis(100)).await.is_none(),
            "room {r}: a heard someone"
        );
    }
}

/// `max_room_size = 2`: a third member of an ordinary room is refused
/// `room_full` with the limit in the reason, another room is not, and the
/// two inside still hear each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_past_max_room_size_refuses_the_next_member() {
    let dir = tempdir();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "max_room_size = 2\n").unwrap();
    let relay = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let room = room_sni("small");
    let mut a = join_heard(&relay, &room, 1, &[]).await.expect("a joins");
    let b = join_heard(&relay, &room, 2, &[&a]).await.expect("b joins");
    a.wait_room_count(2).await.unwrap();
    let c = refused_join(&relay, &room, 3, "the room is full").await;
    assert_eq!(c.code, Some(CloseCode::RoomFull), "{c:?}");
    assert!(c.reason.contains("takes 2 members"), "{c:?}");
    join_heard(&relay, &room_sni("other"), 3, &[])
        .await
        .expect("another room has room");
    a.send_datagram(a.packet(1, b"still here"));
    let d = b.recv_datagram(WAIT).await.expect("b hears a");
    assert_eq!(&d[..], &a.packet(1, b"still here")[..]);
    relay.wait_metric("wzp_relay_refused_total{reason=\"room_full\"}", |v| {
        v == 1.0
    });
}

/// The participant `fp` in a room update, if listed.
fn listed(
    m: &wzp_proto::signal::SignalMessage,
    fp: wzp_proto::Fingerprint,
) -> Option<wzp_proto::signal::RoomParticipant> {
    match m {
        wzp_proto::signal::SignalMessage::RoomUpdate { participants, .. } => {
            participants.iter().find(|p| p.fingerprint == fp).cloned()
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_is_told_who_muted_and_whose_sender_ids_are_whose() {
    use wzp_proto::signal::SignalMessage;
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let room = room_sni("roster");
    let mut a = join_heard(&relay, &room, 1, &[]).await.unwrap();
    let mut b = join_heard(&relay, &room, 2, &[&a]).await.unwrap();
    // Each one's first packet bound its sender id to it, on the relay's
    // word: b learns a's id and a learns b's.
    let (afp, bfp) = (a.fingerprint, b.fingerprint);
    let (aid, bid) = (a.sender_id, b.sender_id);
    b.wait_signal(|m| listed(m, afp).is_some_and(|p| p.senders == [aid]))
        .await
        .expect("b is told a's sender id");
    a.wait_signal(|m| listed(m, bfp).is_some_and(|p| p.senders == [bid]))
        .await
        .expect("a is told b's sender id");
    // A third member speaking with a's id binds nothing to itself; its own
    // id binds.
    let mut c = join(&relay, &room, 3).await.unwrap();
    let spoof = wzp_proto::MediaHeader {
        sender_id: aid,
        seq: 100,
        ..Default::default()
    };
    c.send_datagram(spoof.to_bytes().to_vec());
    announce(&relay, &c, &[&a, &b]).await;
    let cfp = c.fingerprint;
    let cid = c.sender_id;
    let m = b
        .wait_signal(|m| listed(m, cfp).is_some_and(|p| !p.senders.is_empty()))
        .await
        .expect("b is told c's sender id");
    assert_eq!(listed(&m, cfp).unwrap().senders, [cid]);
    assert_eq!(listed(&m, afp).unwrap().senders, [aid], "a keeps its id");
    // a mutes: everyone is told, a included; then unmutes.
    let mute = |muted| SignalMessage::MemberState {
        muted,
        recording: false,
    };
    wzp_stages::net::signal_stream::write_message(&mut a.send, &mute(true))
        .await
        .unwrap();
    for x in [&mut b, &mut c, &mut a] {
        x.wait_signal(|m| listed(m, afp).is_some_and(|p| p.muted))
            .await
            .expect("told a muted");
    }
    let rooms = relay.http_get("/rooms");
    assert!(rooms.contains("\"muted\":true"), "{rooms}");
    wzp_stages::net::signal_stream::write_message(&mut a.send, &mute(false))
        .await
        .unwrap();
    b.wait_signal(|m| listed(m, afp).is_some_and(|p| !p.muted))
        .await
        .expect("b is told a unmuted");
    relay.wait_metric("wzp_relay_member_state_total", |v| v == 2.0);
    // Saying the same twice changes nothing the room is told about.
    wzp_stages::net::signal_stream::write_message(&mut a.send, &mute(false))
        .await
        .unwrap();
    relay.wait_metric("wzp_relay_member_state_total", |v| v == 3.0);
    // c records the call: everyone is told, and the room's view says so.
    wzp_stages::net::signal_stream::write_message(
        &mut c.send,
        &SignalMessage::MemberState {
            muted: false,
            recording: true,
        },
    )
    .await
    .unwrap();
    for x in [&mut a, &mut b] {
        x.wait_signal(|m| listed(m, cfp).is_some_and(|p| p.recording && !p.muted))
            .await
            .expect("told c records");
    }
    let rooms = relay.http_get("/rooms");
    assert!(rooms.contains("\"recording\":true"), "{rooms}");
}
