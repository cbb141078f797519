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
use wzp_proto::signal::SignalMessage;

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
    let config: serde_json::Value = serde_json::from_str(&a.http_get("/config")).unwrap();
    assert_eq!(
        config["in_force"]["max_rooms"], 256,
        "still the start's: {config}"
    );
    assert_eq!(config["restart_needed"], serde_json::json!(["max_rooms"]));
    assert_eq!(
        config["in_force"]["peers"],
        serde_json::json!([]),
        "{config}"
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
    let update = one.wait_room_count(2).await.expect("A lists both");
    let seen = roster(&update);
    assert!(
        seen.contains(&(fingerprint(2), Some("b".into()))),
        "{seen:?}"
    );
    let bridged = |m: &SignalMessage| matches!(m, SignalMessage::RoomUpdate { bridged: true, .. });
    assert!(
        bridged(&update),
        "the update says A bridges the room: {update:?}"
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
    let update = one.wait_room_count(1).await.expect("A drops user 2");
    assert_eq!(roster(&update), vec![(fingerprint(1), None)]);
    assert!(!bridged(&update), "no longer bridged: {update:?}");
    two.wait_room_count(1).await.expect("B drops user 1");
    assert_eq!(status(&a, "b"), Some(2.0));
    assert_eq!(status(&b, "a"), Some(2.0));
    assert_eq!(
        a.metric("wzp_federation_refused_total{reason=\"room_not_bridged_by_peer\"}"),
        Some(0.0)
    );
    assert!(one.conn.close_reason().is_none() && two.conn.close_reason().is_none());
}

/// The event log's joins and refusals, as (event, fingerprint) pairs.
fn events_in(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("event"), s("fingerprint"))
        })
        .collect()
}

/// Tap lines of `r` for `dir` ("in" or "out").
fn taps(r: &RelayProc, dir: &str) -> usize {
    lines_with(r, &["wzp_relay::tap", &format!("dir=\"{dir}\"")])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reopens_a_rotated_event_log_and_applies_room_size_and_tap_to_an_open_room() {
    let dir = tempdir();
    let events = dir.path().join("events.jsonl");
    let rotated = dir.path().join("events.jsonl.1");
    let sni = room_sni("sized-and-tapped");
    let file = |extra: &str| format!("event_log = \"{}\"\n{extra}", events.display());
    let r = relay(dir.path(), "r", &file(""));
    let r_toml = dir.path().join("r.toml");
    let one = join(&r, &sni, 1).await.expect("user 1 joins");
    let two = join(&r, &sni, 2).await.expect("user 2 joins");
    let joined = |n: u8| ("join".to_string(), fingerprint(n).to_string());
    r.wait("two joins logged", || events_in(&events).len() == 2);

    // Untapped: media crosses and no tap line is written (checked once the
    // reload's line, logged after, is in).
    heard(&one, &two).await;

    // The log is rotated away, and the reload taps every room and takes
    // two members a room.
    std::fs::rename(&events, &rotated).unwrap();
    std::fs::write(&r_toml, file("max_room_size = 2\ndebug_tap = \"*\"\n")).unwrap();
    r.hangup();
    let line = wait_log(&r, &["config reloaded"]);
    assert!(
        line.contains("settings applied=[debug_tap,max_room_size]"),
        "{line}"
    );
    assert!(
        !line.contains("restart") && !line.contains("not reopened"),
        "{line}"
    );
    assert_eq!(taps(&r, "in") + taps(&r, "out"), 0, "nothing tapped before");
    let config: serde_json::Value = serde_json::from_str(&r.http_get("/config")).unwrap();
    assert_eq!(config["in_force"]["debug_tap"], "*", "{config}");
    assert_eq!(config["in_force"]["max_room_size"], 2, "{config}");
    assert_eq!(config["restart_needed"], serde_json::json!([]), "{config}");

    // The room opened before the reload is tapped both ways now.
    heard(&one, &two).await;
    r.wait("the open room's media tapped in and out", || {
        taps(&r, "in") > 0 && taps(&r, "out") > 0
    });

    // A third is refused: the room is full; the refusal goes to the new file.
    let full = refused_join(&r, &sni, 3, "a room of two").await;
    assert_eq!(full.code, Some(CloseCode::RoomFull), "{full:?}");
    // (A refusal names no fingerprint: it may come before one is proven.)
    let refused = ("refused".to_string(), String::new());
    r.wait("the refusal logged", || {
        events_in(&events) == [refused.clone()]
    });
    assert_eq!(events_in(&rotated), [joined(1), joined(2)]);

    // A path that cannot be opened keeps the log where it was, and says so;
    // the tap taken out stops the lines, the size taken out admits a third.
    let nowhere = dir.path().join("no-such-dir").join("events.jsonl");
    std::fs::write(&r_toml, format!("event_log = \"{}\"\n", nowhere.display())).unwrap();
    r.hangup();
    let line = wait_log(&r, &["config reloaded", "not reopened"]);
    assert!(line.contains("no-such-dir"), "{line}");
    let tapped = taps(&r, "in") + taps(&r, "out");
    assert!(
        line.contains("settings applied=[debug_tap,max_room_size]"),
        "the failed path is not named applied: {line}"
    );
    let three = join(&r, &sni, 3).await.expect("user 3 joins");
    r.wait("the third join logged in the open file", || {
        events_in(&events) == [refused.clone(), joined(3)]
    });
    heard(&one, &two).await;
    // User 3 leaving puts a line in the log after any of that media's.
    three.conn.close(0u32.into(), b"done");
    wait_log(&r, &["left", &fingerprint(3).to_string()]);
    assert_eq!(taps(&r, "in") + taps(&r, "out"), tapped, "the tap is off");
    assert!(one.conn.close_reason().is_none() && two.conn.close_reason().is_none());
}
