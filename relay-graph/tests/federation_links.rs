//! Federation links between real relay processes on loopback, configs
//! written from `wzp-relay fingerprint`: a pinned pair comes up both ways
//! and measures its RTT; an unknown relay, a wrong pin and a fingerprint
//! merely claimed in a message are each refused with a reason; a dead peer
//! is noticed.

mod common;

use std::time::{Duration, Instant};

use common::federation::{fingerprint_of, relay, relay_on, roster, status, wait_log, wait_status};
use common::{RelayProc, WAIT};
use wzp_proto::close::CloseCode;
use wzp_proto::federation::{encode_federation_frame, FederationMessage};
use wzp_stages::net::quic;

#[test]
fn a_pinned_pair_links_up_both_ways_and_measures_rtt() {
    let dir = common::tempdir();
    let fp_a = fingerprint_of(&dir.path().join("a.seed"));
    let b = relay(
        dir.path(),
        "b",
        &format!("[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n"),
    );
    let a = relay(
        dir.path(),
        "a",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n",
            b.quic, b.fingerprint
        ),
    );
    assert_eq!(
        a.fingerprint, fp_a,
        "the printed fingerprint is the relay's"
    );
    wait_status(&a, "b", 2.0);
    wait_status(&b, "a", 2.0);
    let rtt = a.wait_metric("wzp_federation_peer_rtt_ms{peer=\"b\"}", |v| v > 0.0);
    assert!(rtt < 1_000.0, "loopback RTT {rtt} ms");
    let peers: serde_json::Value = serde_json::from_str(&b.http_get("/peers")).unwrap();
    let row = &peers["peers"][0];
    assert_eq!(row["label"], "a");
    assert_eq!(
        row["own_label"], "a",
        "the label A gives itself in its hello"
    );
    assert_eq!(row["status"], "up");
    assert_eq!(
        row["version"],
        wzp_proto::federation::FEDERATION_VERSION,
        "two relays of this build agree on its version"
    );
    assert_eq!(row["fingerprint"], fp_a.to_string());
    assert!(row["address"].is_null(), "a [[trusted]] peer is not dialed");
    assert_eq!(
        b.metric("wzp_federation_refused_total{reason=\"unknown_relay\"}"),
        Some(0.0)
    );
}

#[test]
fn an_unknown_relay_is_refused_with_the_snippet_its_peer_needs() {
    let dir = common::tempdir();
    let b = relay(dir.path(), "b", "");
    let c = relay(
        dir.path(),
        "c",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n",
            b.quic, b.fingerprint
        ),
    );
    b.wait_metric(
        "wzp_federation_refused_total{reason=\"unknown_relay\"}",
        |v| v >= 1.0,
    );
    // C's operator reads what B's operator must add, with C's fingerprint.
    let fp_c = c.fingerprint.to_string();
    let line = wait_log(&c, &["refused the federation link", &fp_c, "relay b"]);
    let log = c.log_text();
    let after = &log[log.find(&line).unwrap()..];
    assert!(
        after.contains(&format!("[[trusted]]\nfingerprint = \"{fp_c}\"")),
        "the ready-made snippet follows: {after}"
    );
    assert_eq!(status(&c, "b"), Some(0.0));
}

#[test]
fn a_relay_pinning_another_certificate_gets_no_link() {
    let dir = common::tempdir();
    let fp_a = fingerprint_of(&dir.path().join("a.seed"));
    let b = relay(
        dir.path(),
        "b",
        &format!("[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n"),
    );
    let wrong = fingerprint_of(&dir.path().join("x.seed"));
    let a = relay(
        dir.path(),
        "a",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{wrong}\"\nlabel = \"b\"\n",
            b.quic
        ),
    );
    let line = wait_log(&a, &["federation dial failed", "not the pinned"]);
    assert!(line.contains(&wrong.to_string()), "{line}");
    assert_eq!(status(&a, "b"), Some(0.0));
    assert_eq!(status(&b, "a"), Some(0.0));
}

/// A relay listening on IPv4 cannot reach a peer whose address is IPv6:
/// its log says so and what to change, where it said "invalid remote
/// address" every 5 s.
#[test]
fn an_ipv6_peer_of_an_ipv4_relay_is_explained() {
    let dir = common::tempdir();
    let other = fingerprint_of(&dir.path().join("x.seed"));
    let a = relay(
        dir.path(),
        "a",
        &format!("[[peers]]\naddress = \"[::1]:4433\"\nfingerprint = \"{other}\"\nlabel = \"b\"\n"),
    );
    let line = wait_log(&a, &["federation dial failed", "resolves only to IPv6"]);
    assert!(line.contains("listen on [::]:"), "{line}");
}

/// A client with no certificate that *claims* to be a trusted relay in its
/// `Hello` gets nothing: the link needs the certificate proven in the
/// handshake, and the relay closes it as not authorized before reading.
#[tokio::test]
async fn a_fingerprint_merely_claimed_in_a_message_gets_nothing() {
    let dir = common::tempdir();
    let fp_a = fingerprint_of(&dir.path().join("a.seed"));
    let b = relay(
        dir.path(),
        "b",
        &format!("[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n"),
    );
    let endpoint = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(
            quic::client_config(b.fingerprint).unwrap(),
            b.quic,
            wzp_proto::sni::FEDERATION,
        )
        .unwrap()
        .await
        .expect("the TLS handshake itself completes");
    if let Ok((mut send, _recv)) = conn.open_bi().await {
        let hello = FederationMessage::hello("a");
        let _ = send
            .write_all(&encode_federation_frame(&hello).unwrap())
            .await;
    }
    let err = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the relay closes the connection");
    let (code, reason) = quic::peer_close(&err).expect("an application close");
    assert_eq!(code, CloseCode::NotAuthorized);
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(status(&b, "a"), Some(0.0), "nothing came up");
}

#[test]
fn a_dead_peer_is_noticed_and_its_link_comes_back_with_it() {
    let dir = common::tempdir();
    let fp_a = fingerprint_of(&dir.path().join("a.seed"));
    let mut b = relay(
        dir.path(),
        "b",
        &format!("[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n"),
    );
    let a = relay(
        dir.path(),
        "a",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n",
            b.quic, b.fingerprint
        ),
    );
    wait_status(&a, "b", 2.0);
    b.kill();
    let took = wait_status(&a, "b", 0.0);
    println!(
        "link to the killed relay down after {} ms",
        took.as_millis()
    );
    let peers: serde_json::Value = serde_json::from_str(&a.http_get("/peers")).unwrap();
    assert_eq!(peers["peers"][0]["status"], "down");
    // B comes back with the same identity and address: A redials (a link
    // that was up is redialed after 0.5 s, then with the backoff).
    let b = relay_on(dir.path(), "b", &b.quic.to_string());
    let back = wait_status(&a, "b", 2.0);
    println!("link back {} ms after the peer restarted", back.as_millis());
    wait_status(&b, "a", 2.0);
}

/// A global room on two linked relays: each member's RoomUpdate lists the
/// other once, with its relay's label; an orderly leave and a dead relay
/// both take the remote member off the list.
#[tokio::test]
async fn members_of_a_global_room_on_two_relays_see_each_other() {
    let dir = common::tempdir();
    // A room with a secret: configured by the id its clients use.
    let sni = common::room_sni("lobby");
    let global = format!("[[global_rooms]]\nname = \"{sni}\"\n");
    let fp_a = fingerprint_of(&dir.path().join("a.seed"));
    let mut b = relay(
        dir.path(),
        "b",
        &format!("[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n{global}"),
    );
    let a = relay(
        dir.path(),
        "a",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n{global}",
            b.quic, b.fingerprint
        ),
    );
    wait_status(&a, "b", 2.0);
    wait_status(&b, "a", 2.0);

    // (A joiner's own admission RoomUpdate is read by `join`; the lists
    // are checked on the updates the others get.)
    let mut two = common::join(&b, &sni, 2).await.expect("user 2 joins on B");
    let mut one = common::join(&a, &sni, 1).await.expect("user 1 joins on A");
    let seen_by_two = roster(&two.wait_room_count(2).await.expect("B lists both"));
    assert!(
        seen_by_two.contains(&(common::fingerprint(1), Some("a".into()))),
        "{seen_by_two:?}"
    );
    assert!(seen_by_two.contains(&(common::fingerprint(2), None)));
    let _three = common::join(&b, &sni, 3).await.expect("user 3 joins on B");
    let seen_by_one = roster(&one.wait_room_count(3).await.expect("A lists all three"));
    for n in [2, 3] {
        assert!(
            seen_by_one.contains(&(common::fingerprint(n), Some("b".into()))),
            "{seen_by_one:?}"
        );
    }
    assert!(seen_by_one.contains(&(common::fingerprint(1), None)));
    assert_eq!(seen_by_one.len(), 3, "each once");

    // An orderly leave on B: gone from A's list.
    two.conn.close(0u32.into(), b"bye");
    let after = roster(&one.wait_room_count(2).await.expect("A drops user 2"));
    assert!(!after.iter().any(|(f, _)| *f == common::fingerprint(2)));

    // B dies: A's list drops user 3 (the link is dead in ~5 s).
    b.kill();
    let start = Instant::now();
    let mut left = None;
    while start.elapsed() < Duration::from_secs(15) {
        if let Some(m) = one.wait_room_count(1).await {
            left = Some(m);
            break;
        }
    }
    let left = left.expect("user 3 leaves A's list within 15 s of B's death");
    assert_eq!(roster(&left), vec![(common::fingerprint(1), None)]);
    println!(
        "remote member gone {} ms after its relay died",
        start.elapsed().as_millis()
    );
}

/// Registers `user` on `relay`'s signal plane (hello, challenge, signed
/// answer); returns the connection that holds the registration.
async fn register(relay: &RelayProc, user: u8) -> quinn::Connection {
    use wzp_proto::presence::{PresenceClient, PresenceEvent, PresenceStep};
    use wzp_proto::signal::{Decoded, SignalMessage, MAX_FRAME_LEN};
    use wzp_stages::net::signal_stream::{write_message, SignalFrame, SignalReader};
    let endpoint = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let conn = endpoint
        .connect_with(
            quic::client_config(relay.fingerprint).unwrap(),
            relay.quic,
            wzp_proto::sni::SIGNAL,
        )
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let mut reader = SignalReader::new(recv, MAX_FRAME_LEN);
    write_message(&mut send, &SignalMessage::hello(Some("test".into())))
        .await
        .unwrap();
    let id = common::identity(user);
    let mut presence = PresenceClient::new(&id, relay.fingerprint, None);
    let registered = async {
        loop {
            let Ok(Some(SignalFrame::Message(Decoded::Message(m)))) = reader.next().await else {
                panic!("the signal stream ended before registration");
            };
            match presence.handle(&m) {
                PresenceStep::Send(r) => write_message(&mut send, &r).await.unwrap(),
                PresenceStep::Event(PresenceEvent::Registered { .. }) => return,
                PresenceStep::Event(PresenceEvent::Refused { reason }) => panic!("{reason}"),
                PresenceStep::Ignored => {}
            }
        }
    };
    tokio::time::timeout(WAIT, registered)
        .await
        .expect("registered in time");
    // Keep the stream's send half open with the connection.
    std::mem::forget(send);
    std::mem::forget(endpoint);
    conn
}

/// Polls `relay`'s `/route/FP` until its `route` is `want`; the body.
fn wait_route(relay: &RelayProc, fp: &wzp_proto::Fingerprint, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&relay.http_get(&format!("/route/{fp}"))).unwrap();
        if v["route"] == want {
            return v;
        }
        assert!(Instant::now() < deadline, "route never became {want}: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A user registered on B is routable from A (next hop B) and local on B;
/// when the registration ends, A forgets the route. (Multi-threaded: the
/// HTTP polls block one thread while the client's endpoint sends its close.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_one_relay_is_routable_from_its_peer() {
    let dir = common::tempdir();
    let fp_a = fingerprint_of(&dir.path().join("a.seed"));
    let b = relay(
        dir.path(),
        "b",
        &format!("[[trusted]]\nfingerprint = \"{fp_a}\"\nlabel = \"a\"\n"),
    );
    let a = relay(
        dir.path(),
        "a",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n",
            b.quic, b.fingerprint
        ),
    );
    wait_status(&a, "b", 2.0);
    let user = common::fingerprint(7);
    assert_eq!(wait_route(&a, &user, "not_found")["route"], "not_found");
    let conn = register(&b, 7).await;
    wait_route(&b, &user, "local");
    let v = wait_route(&a, &user, "peer");
    let b_id: serde_json::Value = serde_json::from_str(&b.http_get("/peers")).unwrap();
    assert_eq!(v["via"][0], b_id["id"], "the next hop is B");
    // A's /presence lists the user on B, with B's id and label; B's as local.
    let on = |r: &RelayProc| -> serde_json::Value {
        let all: serde_json::Value = serde_json::from_str(&r.http_get("/presence")).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .find(|p| p["fingerprint"] == user.to_string())
            .cloned()
            .unwrap_or_default()
    };
    let seen = on(&a);
    assert_eq!(seen["relay"], b_id["id"], "{seen}");
    assert_eq!(seen["relay_label"], "b", "{seen}");
    assert_eq!(on(&b)["relay"], "local");
    conn.close(0u32.into(), b"bye");
    wait_route(&b, &user, "not_found");
    wait_route(&a, &user, "not_found");
    // A malformed fingerprint is a client error with the expected form.
    let addr = a.metrics.unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "GET /route/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("\"nope\" is not a fingerprint: "), "{resp}");
    // Any accepted form comes back in the relay's own form.
    let upper = user.to_string().replace(':', "").to_uppercase();
    let body: serde_json::Value =
        serde_json::from_str(&a.http_get(&format!("/route/{upper}"))).unwrap();
    assert_eq!(body["fingerprint"], user.to_string(), "{body}");
}
