//! A running relay reloads its config file on `SIGHUP`: a peer added links
//! at once and bridges the global room; one taken out is cut, its members
//! vanish and its redials are refused; a call room's fingerprints follow the
//! file; a room with members on two linked relays is bridged (media crosses)
//! and unbridged; a file that does not parse changes nothing. Members
//! already in their rooms stay connected through every reload.

mod common;

use common::federation::{relay, roster, status, wait_log, wait_status};
use common::*;
use wzp_proto::close::CloseCode;

const SAID: &[u8] = b"across a room bridged by a reload";

/// `from` talks (a packet every 20 ms, as a codec does) until `to` hears
/// one of its packets; bounded by [`WAIT`].
async fn heard(from: &Client, to: &Client) {
    let deadline = std::time::Instant::now() + WAIT;
    for seq in 0.. {
        assert!(
            std::time::Instant::now() < deadline,
            "user {} never heard user {}",
            to.sender_id,
            from.sender_id
        );
        from.send_datagram(from.packet(seq, SAID));
        let pace = std::time::Duration::from_millis(20);
        if let Some(got) = to.recv_datagram(pace).await {
            // The header as sent (`to` has no other peer in the room).
            let (h, _) = wzp_proto::MediaHeader::parse(&got).expect("a media header");
            if h.sender_id == from.sender_id && got.ends_with(SAID) {
                return;
            }
        }
    }
}

/// Log lines of `r` holding every one of `parts` (counts reloads done).
fn lines_with(r: &RelayProc, parts: &[&str]) -> usize {
    r.log_text()
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_links_a_new_peer_and_cuts_one_taken_out_while_members_stay() {
    let dir = tempdir();
    let sni = room_sni("reloaded");
    let global = format!("[[global_rooms]]\nname = \"{sni}\"\n");
    let a = relay(dir.path(), "a", &global);
    let a_toml = dir.path().join("a.toml");
    // B lists A and dials it: A, not knowing B, refuses it.
    let b = relay(
        dir.path(),
        "b",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"a\"\n{global}",
            a.quic, a.fingerprint
        ),
    );
    let unknown = "wzp_federation_refused_total{reason=\"unknown_relay\"}";
    a.wait_metric(unknown, |v| v >= 1.0);

    let mut one = join(&a, &sni, 1).await.expect("user 1 joins on A");
    let mut two = join(&b, &sni, 2).await.expect("user 2 joins on B");
    assert_eq!(status(&a, "b"), None, "A has no peer yet");

    // B goes into A's file: linked, and the room is one room across both.
    let peer_b = format!(
        "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n",
        b.quic, b.fingerprint
    );
    std::fs::write(&a_toml, format!("{peer_b}{global}")).unwrap();
    a.hangup();
    let line = wait_log(&a, &["config reloaded", "added=[b]"]);
    assert!(!line.contains("restart"), "{line}");
    wait_status(&a, "b", 2.0);
    wait_status(&b, "a", 2.0);
    let seen = roster(&one.wait_room_count(2).await.expect("A lists both"));
    assert!(
        seen.contains(&(fingerprint(2), Some("b".into()))),
        "{seen:?}"
    );
    two.wait_room_count(2).await.expect("B lists both");
    a.wait_metric("wzp_relay_config_reloads_total", |v| v == 1.0);

    // A file that does not parse: refused, nothing changes.
    std::fs::write(&a_toml, format!("{peer_b}{global}[[peers\n")).unwrap();
    a.hangup();
    let line = wait_log(&a, &["config reload refused"]);
    assert!(line.contains("a.toml"), "names the file: {line}");
    a.wait_metric("wzp_relay_config_reload_failures_total", |v| v == 1.0);
    assert_eq!(status(&a, "b"), Some(2.0), "the link stays");
    assert_eq!(a.metric("wzp_relay_config_reloads_total"), Some(1.0));

    // B taken out (and a setting that needs a restart changed): the link is
    // cut at both ends, user 2 leaves A's list, and the restart is named.
    let refused = a.metric(unknown).expect("the refusal counter");
    std::fs::write(&a_toml, format!("max_rooms = 7\n{global}")).unwrap();
    a.hangup();
    let line = wait_log(&a, &["config reloaded", "removed=[b]"]);
    assert!(
        line.contains("not applied until a restart: max_rooms"),
        "{line}"
    );
    wait_status(&b, "a", 0.0);
    a.wait("A shows no peer b", || status(&a, "b").is_none());
    // B redials (its link was up: within a second) and is refused again.
    a.wait_metric(unknown, |v| v > refused);
    assert_eq!(status(&b, "a"), Some(0.0));
    let seen = roster(&one.wait_room_count(1).await.expect("A drops user 2"));
    assert_eq!(seen, vec![(fingerprint(1), None)]);
    two.wait_room_count(1).await.expect("B drops user 1");
    a.wait_metric("wzp_relay_config_reloads_total", |v| v == 2.0);

    // Both members were in their rooms throughout.
    assert!(one.conn.close_reason().is_none(), "user 1 still connected");
    assert!(two.conn.close_reason().is_none(), "user 2 still connected");
    assert_eq!(lines_with(&a, &["config reloaded"]), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_sets_who_may_join_a_call_room() {
    let dir = tempdir();
    let cfg = dir.path().join("relay.toml");
    let call = |fps: &[u8]| {
        let list: Vec<String> = fps
            .iter()
            .map(|n| format!("\"{}\"", fingerprint(*n)))
            .collect();
        format!(
            "[[calls]]\nroom = \"call-r1\"\nfingerprints = [{}]\n",
            list.join(", ")
        )
    };
    std::fs::write(&cfg, "").unwrap();
    let relay = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let before = refused_join(&relay, "call-r1", 1, "no call yet").await;
    assert_eq!(before.code, Some(CloseCode::NotAuthorized), "{before:?}");

    // The call room appears: its two fingerprints join.
    std::fs::write(&cfg, call(&[1, 2])).unwrap();
    relay.hangup();
    wait_log(&relay, &["config reloaded", "calls added=[call-r1]"]);
    let mut alice = join(&relay, "call-r1", 1).await.expect("alice joins");
    let bob = join(&relay, "call-r1", 2).await.expect("bob joins");
    alice.wait_room_count(2).await.expect("both in");

    // Bob is taken out of it: his connection is closed with the reason,
    // alice stays, and bob cannot come back.
    std::fs::write(&cfg, call(&[1, 3])).unwrap();
    relay.hangup();
    wait_log(&relay, &["config reloaded", "changed=[call-r1]"]);
    let closed = tokio::time::timeout(WAIT, bob.conn.closed())
        .await
        .expect("bob's connection closes");
    let (code, reason) = wzp_stages::net::quic::peer_close(&closed).expect("a close of ours");
    assert_eq!(code, CloseCode::NotAuthorized);
    assert!(reason.contains("taken out"), "{reason}");
    alice.wait_room_count(1).await.expect("alice alone");
    assert!(alice.conn.close_reason().is_none(), "alice still connected");
    let again = refused_join(&relay, "call-r1", 2, "bob refused").await;
    assert_eq!(again.code, Some(CloseCode::NotAuthorized), "{again:?}");
    join(&relay, "call-r1", 3)
        .await
        .expect("carol, newly listed, joins");

    // The call room is taken out: alice's connection ends too.
    std::fs::write(&cfg, "").unwrap();
    relay.hangup();
    wait_log(&relay, &["config reloaded", "removed=[call-r1]"]);
    let closed = tokio::time::timeout(WAIT, alice.conn.closed())
        .await
        .expect("alice's connection closes");
    let (code, _) = wzp_stages::net::quic::peer_close(&closed).expect("a close of ours");
    assert_eq!(code, CloseCode::NotAuthorized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_bridges_a_room_with_members_in_it_and_unbridges_it() {
    let dir = tempdir();
    let sni = room_sni("bridged-later");
    let global = format!("[[global_rooms]]\nname = \"{sni}\"\n");
    let a = relay(dir.path(), "a", "");
    let trusted_a = format!(
        "[[trusted]]\nfingerprint = \"{}\"\nlabel = \"a\"\n",
        a.fingerprint
    );
    let b = relay(dir.path(), "b", &trusted_a);
    let peer_b = format!(
        "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"b\"\n",
        b.quic, b.fingerprint
    );
    let (a_toml, b_toml) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
    std::fs::write(&a_toml, &peer_b).unwrap();
    a.hangup();
    wait_status(&a, "b", 2.0);

    // The room has a member on each relay, each alone in it.
    let mut one = join(&a, &sni, 1).await.expect("user 1 joins on A");
    let mut two = join(&b, &sni, 2).await.expect("user 2 joins on B");

    // Both relays' files bridge it: one room, and media crosses the link.
    std::fs::write(&b_toml, format!("{trusted_a}{global}")).unwrap();
    b.hangup();
    wait_log(
        &b,
        &["config reloaded", &format!("global rooms added=[{sni}]")],
    );
    std::fs::write(&a_toml, format!("{peer_b}{global}")).unwrap();
    a.hangup();
    wait_log(
        &a,
        &["config reloaded", &format!("global rooms added=[{sni}]")],
    );
    let seen = roster(&one.wait_room_count(2).await.expect("A lists both"));
    assert!(
        seen.contains(&(fingerprint(2), Some("b".into()))),
        "{seen:?}"
    );
    two.wait_room_count(2).await.expect("B lists both");
    heard(&one, &two).await;
    heard(&two, &one).await;

    // A stops bridging it: each is alone again, the link stays up.
    std::fs::write(&a_toml, &peer_b).unwrap();
    a.hangup();
    wait_log(
        &a,
        &[
            "config reloaded",
            &format!("global rooms added=[] removed=[{sni}]"),
        ],
    );
    let seen = roster(&one.wait_room_count(1).await.expect("A drops user 2"));
    assert_eq!(seen, vec![(fingerprint(1), None)]);
    two.wait_room_count(1).await.expect("B drops user 1");
    assert_eq!(status(&a, "b"), Some(2.0));
    assert_eq!(status(&b, "a"), Some(2.0));
    assert_eq!(
        a.metric("wzp_federation_refused_total{reason=\"room_not_bridged_by_peer\"}"),
        Some(0.0)
    );
    assert!(one.conn.close_reason().is_none() && two.conn.close_reason().is_none());
}
