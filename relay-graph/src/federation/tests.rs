//! Unit tests of the federation core: links, global rooms, presence, driven
//! through the in-memory mesh or by hand with a manual clock.

use std::time::Duration;

use wzp_proto::federation::{
    FederatedParticipant, FederationMessage, PresenceRoute, RelayId, RoomId,
};
use wzp_proto::Fingerprint;

use super::mesh::{id_of, tls_of, Mesh};
use super::*;

fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 16])
}

fn general() -> RoomId {
    RoomId::of_name("general")
}

fn fps(list: &[(FederatedParticipant, String)]) -> Vec<(Fingerprint, String)> {
    list.iter()
        .map(|(p, l)| (p.fingerprint, l.clone()))
        .collect()
}

/// A lone core with peers 1 (dialable) and 2 (trusted, inbound only).
fn lone(now: Instant) -> FederationCore {
    FederationCore::new(
        FederationConfig {
            me: tls_of(0),
            label: "r0".into(),
            peers: vec![
                PeerSpec {
                    tls: tls_of(1),
                    label: "r1".into(),
                    address: Some("10.0.0.1:4433".into()),
                },
                PeerSpec {
                    tls: tls_of(2),
                    label: "r2".into(),
                    address: None,
                },
            ],
            global_rooms: vec![general()],
            seed: 7,
        },
        now,
    )
}

fn sent(actions: &[Action]) -> Vec<&FederationMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

fn closes(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { reason, .. } => Some(reason.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn two_relays_link_up_and_measure_rtt() {
    let mut m = Mesh::new(2, &[(0, 1)], &[general()], 1);
    m.settle(20).expect("settles");
    for i in 0..2 {
        let peers = m.cores[i].peers();
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].status, LinkStatus::Up, "relay {i}");
        assert_eq!(peers[0].rooms, 1);
        assert_eq!(peers[0].own_label.as_deref(), Some(["r1", "r0"][i]));
    }
    // Both dialed; one connection was closed by the tie-break on each side.
    assert_eq!(m.cores[0].counters().duplicate_link, 1);
    assert_eq!(m.cores[1].counters().duplicate_link, 1);
    for _ in 0..30 {
        m.step();
    }
    let rtt = m.cores[0].peers()[0].rtt.expect("an RTT sample");
    // A ping and its pong each take one 50 ms round.
    assert_eq!(rtt, Duration::from_millis(100));
}

#[test]
fn both_ends_keep_the_connection_dialed_by_the_lower_id() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    let peer = id_of(1);
    let (lo_is_me, _) = (c.id() < peer, ());
    c.handle(
        Input::LinkUp {
            conn: LinkConn(1),
            tls: tls_of(1),
            dialed_by_me: true,
        },
        t0,
    );
    c.handle(
        Input::LinkUp {
            conn: LinkConn(2),
            tls: tls_of(1),
            dialed_by_me: false,
        },
        t0,
    );
    let a = c.drain_actions();
    let closed: Vec<LinkConn> = a
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    // Conn 1 was dialed by me, conn 2 by the peer: the lower id's dial stays.
    let expect_closed = if lo_is_me { LinkConn(2) } else { LinkConn(1) };
    assert_eq!(closed, vec![expect_closed], "{a:?}");
    // The same decision seen from the peer's side, with the roles swapped.
    let mut p = FederationCore::new(
        FederationConfig {
            me: tls_of(1),
            label: "r1".into(),
            peers: vec![PeerSpec {
                tls: tls_of(0),
                label: "r0".into(),
                address: None,
            }],
            global_rooms: vec![],
            seed: 1,
        },
        t0,
    );
    p.handle(
        Input::LinkUp {
            conn: LinkConn(1),
            tls: tls_of(0),
            dialed_by_me: false,
        },
        t0,
    );
    p.handle(
        Input::LinkUp {
            conn: LinkConn(2),
            tls: tls_of(0),
            dialed_by_me: true,
        },
        t0,
    );
    let closed_p: Vec<LinkConn> = p
        .drain_actions()
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect();
    assert_eq!(closed_p, closed, "both ends close the same connection");
}

#[test]
fn an_unknown_relay_is_refused_with_the_snippet() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    let stranger = tls_of(9);
    c.handle(
        Input::LinkUp {
            conn: LinkConn(5),
            tls: stranger,
            dialed_by_me: false,
        },
        t0,
    );
    let a = c.drain_actions();
    let reason = closes(&a);
    assert_eq!(reason.len(), 1);
    assert!(reason[0].contains("[[trusted]]"), "{}", reason[0]);
    assert!(
        reason[0].contains(&format!("fingerprint = \"{stranger}\"")),
        "{}",
        reason[0]
    );
    assert!(sent(&a).is_empty(), "nothing sent to a stranger");
    assert_eq!(c.counters().unknown_relay, 1);
    // A relay whose id prefix matches a peer but whose certificate differs
    // (another key claiming the place) is refused the same way.
    let mut imposter = tls_of(1);
    imposter.0[31] ^= 1;
    c.handle(
        Input::LinkUp {
            conn: LinkConn(6),
            tls: imposter,
            dialed_by_me: false,
        },
        t0,
    );
    assert_eq!(closes(&c.drain_actions()).len(), 1);
    assert_eq!(c.counters().unknown_relay, 2);
}

#[test]
fn incompatible_versions_are_refused_clearly() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    c.handle(
        Input::LinkUp {
            conn: LinkConn(1),
            tls: tls_of(2),
            dialed_by_me: false,
        },
        t0,
    );
    let a = c.drain_actions();
    assert!(
        matches!(sent(&a)[..], [FederationMessage::Hello { .. }]),
        "{a:?}"
    );
    c.handle(
        Input::Message {
            conn: LinkConn(1),
            msg: FederationMessage::Hello {
                version: FEDERATION_VERSION + 2,
                min_version: FEDERATION_VERSION + 1,
                capabilities: vec![],
                label: "future".into(),
                rooms: vec![],
            },
        },
        t0,
    );
    let a = c.drain_actions();
    let r = closes(&a);
    assert_eq!(r.len(), 1);
    assert!(
        r[0].contains("incompatible federation versions"),
        "{}",
        r[0]
    );
    let span = format!(
        "peer {}..={}",
        FEDERATION_VERSION + 1,
        FEDERATION_VERSION + 2
    );
    assert!(r[0].contains(&span), "{}", r[0]);
    assert!(r[0].contains("upgrade the older relay"), "{}", r[0]);
    assert_eq!(c.status(id_of(2)), Some(LinkStatus::Down));
    assert_eq!(c.counters().version_refused, 1);
}

#[test]
fn anything_before_hello_closes_the_link() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    c.handle(
        Input::LinkUp {
            conn: LinkConn(1),
            tls: tls_of(2),
            dialed_by_me: false,
        },
        t0,
    );
    c.drain_actions();
    c.handle(
        Input::Message {
            conn: LinkConn(1),
            msg: FederationMessage::Ping { id: 1, sent_ms: 0 },
        },
        t0,
    );
    assert_eq!(closes(&c.drain_actions()), vec!["expected hello first"]);
    // No hello at all: closed after the timeout.
    c.handle(
        Input::LinkUp {
            conn: LinkConn(2),
            tls: tls_of(2),
            dialed_by_me: false,
        },
        t0,
    );
    c.drain_actions();
    c.tick(t0 + HELLO_TIMEOUT - Duration::from_millis(1));
    assert!(closes(&c.drain_actions()).is_empty());
    c.tick(t0 + HELLO_TIMEOUT);
    assert_eq!(closes(&c.drain_actions()).len(), 1);
}

#[test]
fn a_silent_link_is_dead_after_five_seconds() {
    let mut m = Mesh::new(2, &[(0, 1)], &[general()], 3);
    m.settle(20).unwrap();
    m.cut(0, 1);
    let cut_at = m.now;
    let mut down_at = None;
    for _ in 0..200 {
        m.step();
        if m.cores[0].status(id_of(1)) != Some(LinkStatus::Up) {
            down_at = Some(m.now);
            break;
        }
    }
    let down_after = down_at.expect("link declared dead") - cut_at;
    assert!(down_after <= DEAD_AFTER, "dead after {down_after:?}");
    // Pings kept arriving until the cut, so it is not before ~5 s either.
    assert!(
        down_after >= DEAD_AFTER - Duration::from_secs(1),
        "{down_after:?}"
    );
    assert_eq!(m.cores[0].counters().dead_links, 1);
}

/// Two relays with a member each in `general`, linked and settled.
fn two_in_a_room(seed: u64) -> Mesh {
    let mut m = Mesh::new(2, &[(0, 1)], &[general()], seed);
    m.settle(20).unwrap();
    m.set_room(0, general(), &[fp(10)]);
    m.set_room(1, general(), &[fp(11)]);
    m.settle(30).unwrap();
    m
}

/// Relay 0's member sends `per_round` datagrams every `every`-th round
/// (50 ms each) for `rounds` rounds.
fn talk(m: &mut Mesh, rounds: u32, every: u32, per_round: u32, seq: &mut u32) {
    for r in 0..rounds {
        if r % every == 0 {
            for _ in 0..per_round {
                *seq += 1;
                m.send_media(0, general(), 1, *seq);
            }
        }
        m.step();
    }
}

/// Rounds until relay `i` no longer has its link to `peer` up.
fn rounds_until_down(m: &mut Mesh, i: usize, peer: usize, max: usize) -> Option<Duration> {
    let from = m.now;
    for _ in 0..max {
        m.step();
        if m.cores[i].status(id_of(peer)) != Some(LinkStatus::Up) {
            return Some(m.now - from);
        }
    }
    None
}

#[test]
fn a_link_whose_media_stops_and_that_answers_nothing_is_dead_in_1_5_s() {
    let mut m = two_in_a_room(3);
    let mut seq = 0;
    // A voice and a half: 40 datagrams a second into relay 1 for 2 s.
    talk(&mut m, 40, 1, 2, &mut seq);
    m.cut(0, 1);
    let down = rounds_until_down(&mut m, 1, 0, 200).expect("relay 1 finds the link dead");
    assert!(
        down >= MEDIA_DEAD_AFTER - Duration::from_millis(100)
            && down <= MEDIA_DEAD_AFTER + Duration::from_millis(150),
        "relay 1 found it dead {down:?} after the cut"
    );
    assert_eq!(m.cores[1].counters().media_stopped_links, 1);
    assert_eq!(m.cores[1].counters().dead_links, 0);
    // Relay 0 took in no media: it finds out by the old rule.
    let down0 = rounds_until_down(&mut m, 0, 1, 200).expect("relay 0 finds it dead") + down;
    assert!(
        down0 >= DEAD_AFTER - Duration::from_secs(1) && down0 <= DEAD_AFTER,
        "relay 0 found it dead {down0:?} after the cut"
    );
    assert_eq!(m.cores[0].counters().dead_links, 1);
    assert_eq!(m.cores[0].counters().media_stopped_links, 0);
}

#[test]
fn a_link_whose_talkers_go_quiet_is_probed_and_stays_up() {
    let mut m = two_in_a_room(4);
    let mut seq = 0;
    talk(&mut m, 40, 1, 2, &mut seq);
    let pings = |m: &Mesh| m.by_type.get("ping").copied().unwrap_or(0);
    let before = pings(&m);
    // Quiet for 5 s: relay 1 probes (a ping every 250 ms from 0.5 s), relay
    // 0 answers, nothing is closed.
    for _ in 0..100 {
        m.step();
    }
    for i in 0..2 {
        assert_eq!(
            m.cores[i].status(id_of(1 - i)),
            Some(LinkStatus::Up),
            "relay {i}"
        );
    }
    let probed = pings(&m) - before;
    // Both sides' 1 s pings make 10; relay 1's probes about 18 more.
    assert!(probed >= 24, "{probed} pings in 5 s of quiet");
    // After 5 s of quiet the link is no longer streaming: pings as before.
    let before = pings(&m);
    for _ in 0..100 {
        m.step();
    }
    let calm = pings(&m) - before;
    assert!(calm <= 12, "{calm} pings in the next 5 s");
    assert_eq!(m.cores[1].counters().media_stopped_links, 0);
    assert_eq!(m.cores[1].counters().dead_links, 0);
    // Then cut: no longer streaming, so the old rule.
    m.cut(0, 1);
    let down = rounds_until_down(&mut m, 1, 0, 200).expect("found dead");
    assert!(down >= DEAD_AFTER - Duration::from_secs(1), "{down:?}");
    assert_eq!(m.cores[1].counters().dead_links, 1);
}

#[test]
fn a_trickle_of_media_is_not_streaming() {
    let mut m = two_in_a_room(5);
    let mut seq = 0;
    // One datagram every 200 ms (5 a second) for 3 s.
    talk(&mut m, 60, 4, 1, &mut seq);
    m.cut(0, 1);
    let down = rounds_until_down(&mut m, 1, 0, 200).expect("found dead");
    assert!(down >= DEAD_AFTER - Duration::from_secs(1), "{down:?}");
    assert_eq!(m.cores[1].counters().media_stopped_links, 0);
    assert_eq!(m.cores[1].counters().dead_links, 1);
}

#[test]
fn redials_back_off_from_5_s_to_300_s_with_jitter() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    c.tick(t0);
    let a = c.drain_actions();
    assert_eq!(
        a,
        vec![Action::Dial {
            peer: id_of(1),
            address: "10.0.0.1:4433".into(),
            tls: tls_of(1),
        }],
        "only the peer with an address is dialed"
    );
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..10 {
        c.handle(Input::DialFailed { peer: id_of(1) }, now);
        let due = c.next_deadline().expect("a redial is scheduled");
        delays.push(due - now);
        // Nothing before the deadline, a dial at it.
        c.tick(due - Duration::from_millis(1));
        assert!(c.drain_actions().is_empty());
        c.tick(due);
        assert!(matches!(c.drain_actions()[..], [Action::Dial { .. }]));
        now = due;
    }
    let mut base = BACKOFF_MIN;
    for d in &delays {
        assert!(
            *d <= base && *d >= base.mul_f64(0.8),
            "{d:?} for base {base:?}"
        );
        base = (base * 2).min(BACKOFF_MAX);
    }
    assert!(*delays.last().unwrap() > Duration::from_secs(239));
    // The jitter is real: not every delay is the base.
    let exact = delays
        .iter()
        .filter(|d| {
            [5u64, 10, 20, 40, 80, 160, 300].contains(&d.as_secs()) && d.subsec_nanos() == 0
        })
        .count();
    assert!(exact < delays.len(), "{delays:?}");
    // Another seed, other delays.
    let mut other = FederationCore::new(
        FederationConfig {
            seed: 8,
            ..FederationConfig {
                me: tls_of(0),
                label: "r0".into(),
                peers: vec![PeerSpec {
                    tls: tls_of(1),
                    label: "r1".into(),
                    address: Some("x:1".into()),
                }],
                global_rooms: vec![],
                seed: 0,
            }
        },
        t0,
    );
    other.tick(t0);
    other.drain_actions();
    other.handle(Input::DialFailed { peer: id_of(1) }, t0);
    assert_ne!(other.next_deadline().unwrap() - t0, delays[0]);
}

#[test]
fn a_link_that_comes_up_resets_the_backoff() {
    let mut m = Mesh::new(2, &[(0, 1)], &[general()], 5);
    m.kill(1);
    for _ in 0..2000 {
        m.step();
    }
    // Long down: the backoff grew. Revive and wait for the link.
    m.revive(1);
    let revived = m.now;
    while m.cores[0].status(id_of(1)) != Some(LinkStatus::Up) {
        m.step();
        assert!(m.now - revived < Duration::from_secs(400), "never relinked");
    }
    // Relay 1 dials at once on start, so the link is back at once.
    assert!(
        m.now - revived < Duration::from_secs(1),
        "{:?}",
        m.now - revived
    );
}

#[test]
fn a_members_mute_and_senders_reach_every_relay_of_a_global_room() {
    // 0 - 1 - 2: a muted member on 2 with a bound sender id, seen on 0.
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[general()], 9);
    m.settle(30).unwrap();
    m.set_room(0, general(), &[fp(10)]);
    let member = |muted: bool| FederatedParticipant {
        alias: Some("ann".into()),
        muted,
        senders: vec![0xA11CE],
        ..FederatedParticipant::new(fp(20))
    };
    m.set_room_participants(2, general(), vec![member(true)]);
    m.settle(30).unwrap();
    let seen = m.cores[0].remote_participants(general());
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, member(true));
    assert_eq!(seen[0].1, "r2");
    // Unmuting is announced again and replaces the old state.
    m.set_room_participants(2, general(), vec![member(false)]);
    m.settle(30).unwrap();
    assert_eq!(
        m.cores[0].remote_participants(general())[0].0,
        member(false)
    );
    assert_eq!(m.cores[1].remote_participants(general()).len(), 2);
}

#[test]
fn global_rooms_propagate_along_a_chain_and_vanish_on_leave() {
    // 0 - 1 - 2, a client on 0 and one on 2, none on the hub 1.
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[general()], 9);
    m.settle(30).unwrap();
    m.set_room(0, general(), &[fp(10)]);
    m.set_room(2, general(), &[fp(20), fp(21)]);
    m.settle(30).unwrap();
    assert_eq!(
        fps(&m.cores[0].remote_participants(general())),
        vec![(fp(20), "r2".into()), (fp(21), "r2".into())]
    );
    assert_eq!(
        fps(&m.cores[2].remote_participants(general())),
        vec![(fp(10), "r0".into())]
    );
    assert_eq!(m.cores[1].remote_participants(general()).len(), 3);
    // The hub forwards media though it has nobody in the room.
    assert_eq!(
        m.cores[1].forward_targets(general(), id_of(0), Some(id_of(0))),
        vec![id_of(2)]
    );
    assert_eq!(
        m.cores[1].forward_targets(general(), id_of(2), Some(id_of(2))),
        vec![id_of(0)]
    );
    // Never back to where it came from, never towards the origin.
    assert!(m.cores[2]
        .forward_targets(general(), id_of(0), Some(id_of(1)))
        .is_empty());
    // An orderly leave: gone everywhere as soon as the messages arrive (two
    // links: flushed at 2's next tick, at 1's, then read by 0).
    m.set_room(2, general(), &[fp(21)]);
    m.step();
    m.step();
    m.step();
    assert_eq!(
        fps(&m.cores[0].remote_participants(general())),
        vec![(fp(21), "r2".into())]
    );
    m.set_room(2, general(), &[]);
    m.step();
    m.step();
    m.step();
    assert!(m.cores[0].remote_participants(general()).is_empty());
    assert_eq!(
        m.cores[0].active_rooms().len(),
        1,
        "its own room is still active"
    );
}

#[test]
fn a_new_link_learns_rooms_from_other_peers() {
    // 0 - 1 up first with a client on 0; then the link 1 - 2 comes up.
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[general()], 11);
    m.cut(1, 2);
    m.set_room(0, general(), &[fp(1)]);
    m.settle(40).unwrap();
    assert!(m.cores[2].remote_participants(general()).is_empty());
    m.heal(1, 2);
    for _ in 0..400 {
        m.step();
        if !m.cores[2].remote_participants(general()).is_empty() {
            break;
        }
    }
    assert_eq!(
        fps(&m.cores[2].remote_participants(general())),
        vec![(fp(1), "r0".into())]
    );
}

#[test]
fn participants_behind_a_dead_relay_vanish_within_15_s() {
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[general()], 13);
    m.settle(30).unwrap();
    m.set_room(2, general(), &[fp(2)]);
    m.settle(30).unwrap();
    assert_eq!(m.cores[0].remote_participants(general()).len(), 1);
    m.kill(2);
    let died = m.now;
    while !m.cores[0].remote_participants(general()).is_empty() {
        m.step();
        assert!(m.now - died <= Duration::from_secs(15), "ghost past 15 s");
    }
    assert!(
        m.now - died <= DEAD_AFTER + Duration::from_millis(200),
        "{:?}",
        m.now - died
    );
}

/// A core with one up link to peer 2 that bridges `peer_rooms`.
fn up_with_trusted(peer_rooms: Vec<RoomId>) -> (FederationCore, Instant) {
    let t0 = Instant::now();
    let mut c = lone(t0);
    c.handle(
        Input::LinkUp {
            conn: LinkConn(1),
            tls: tls_of(2),
            dialed_by_me: false,
        },
        t0,
    );
    c.handle(
        Input::Message {
            conn: LinkConn(1),
            msg: FederationMessage::hello_with_rooms("r2", peer_rooms),
        },
        t0,
    );
    c.drain_actions();
    (c, t0)
}

fn active(room: RoomId, path: Vec<RelayId>, who: u8) -> FederationMessage {
    FederationMessage::GlobalRoomActive {
        room,
        path,
        origin_label: "x".into(),
        participants: vec![FederatedParticipant::new(fp(who))],
    }
}

#[test]
fn forged_and_misrouted_announcements_are_refused_and_counted() {
    let other = RoomId::of_name("other");
    let (mut c, t0) = up_with_trusted(vec![general(), other]);
    let cases: Vec<(FederationMessage, fn(&Counters) -> u64)> = vec![
        // A room this relay does not bridge.
        (active(other, vec![id_of(2)], 1), |k| {
            k.room_not_bridged_here
        }),
        // A path that does not start with the sender: speaking for relay 5.
        (active(general(), vec![id_of(5)], 2), |k| {
            k.path_not_from_sender
        }),
        // A path through this relay: a loop.
        (
            active(general(), vec![id_of(2), id_of(0), id_of(5)], 3),
            |k| k.loops,
        ),
        (
            FederationMessage::PresenceUpdate {
                announce: vec![PresenceRoute {
                    fingerprint: fp(4),
                    path: vec![id_of(7)],
                }],
                withdraw: vec![],
            },
            |k| k.path_not_from_sender,
        ),
    ];
    for (msg, counter) in cases {
        let before = counter(c.counters());
        c.handle(
            Input::Message {
                conn: LinkConn(1),
                msg: msg.clone(),
            },
            t0,
        );
        assert_eq!(counter(c.counters()), before + 1, "{msg:?}");
        assert!(closes(&c.drain_actions()).is_empty(), "the link stays up");
        assert!(c.remote_participants(general()).is_empty(), "{msg:?}");
        assert!(c.remote_participants(other).is_empty());
        assert_eq!(c.route(&fp(4)), Route::NotFound);
    }
    assert_eq!(c.status(id_of(2)), Some(LinkStatus::Up));
    // Garbage is counted and the link stays.
    c.handle(Input::Garbage { conn: LinkConn(1) }, t0);
    assert_eq!(c.counters().garbage, 1);
    assert_eq!(c.status(id_of(2)), Some(LinkStatus::Up));
}

#[test]
fn a_room_the_peer_did_not_declare_is_refused() {
    let (mut c, t0) = up_with_trusted(vec![]);
    c.handle(
        Input::Message {
            conn: LinkConn(1),
            msg: active(general(), vec![id_of(2)], 1),
        },
        t0,
    );
    assert_eq!(c.counters().room_not_bridged_by_peer, 1);
    assert!(c.remote_participants(general()).is_empty());
    // And this relay's own room is not announced to a peer that does not
    // bridge it.
    c.handle(
        Input::LocalRoom {
            room: general(),
            participants: vec![FederatedParticipant::new(fp(9))],
        },
        t0,
    );
    c.tick(t0);
    let a = c.drain_actions();
    assert!(
        !sent(&a)
            .iter()
            .any(|m| matches!(m, FederationMessage::GlobalRoomActive { .. })),
        "{a:?}"
    );
    // A legitimate announcement from a peer that bridges it is taken.
    let (mut c, t0) = up_with_trusted(vec![general()]);
    c.handle(
        Input::Message {
            conn: LinkConn(1),
            msg: active(general(), vec![id_of(2)], 1),
        },
        t0,
    );
    assert_eq!(
        fps(&c.remote_participants(general())),
        vec![(fp(1), "x".into())]
    );
    assert!(c
        .drain_actions()
        .contains(&Action::RoomChanged { room: general() }));
}

#[test]
fn presence_routes_name_local_direct_and_chains() {
    let mut m = Mesh::new(4, &[(0, 1), (1, 2), (2, 3)], &[], 17);
    m.settle(40).unwrap();
    for i in 0..4u8 {
        m.input(
            usize::from(i),
            Input::LocalPresence {
                fingerprint: fp(i),
                online: true,
            },
        );
    }
    m.settle(40).unwrap();
    let c = &m.cores[0];
    assert_eq!(c.route(&fp(0)), Route::Local);
    assert_eq!(c.route(&fp(1)), Route::DirectPeer(id_of(1)));
    assert_eq!(
        c.route(&fp(3)),
        Route::Via(vec![id_of(1), id_of(2), id_of(3)])
    );
    assert_eq!(c.route(&fp(99)), Route::NotFound);
    assert_eq!(c.presence().len(), 4);
    // Gone: withdrawn everywhere.
    m.input(
        3,
        Input::LocalPresence {
            fingerprint: fp(3),
            online: false,
        },
    );
    m.settle(40).unwrap();
    assert_eq!(m.cores[0].route(&fp(3)), Route::NotFound);
}

#[test]
fn routes_move_to_the_other_way_round_when_a_link_dies_and_back_when_it_heals() {
    // A square 0-1-2-3-0: the user on 1 is one hop from 0, or three the
    // other way round.
    let mut m = Mesh::new(4, &[(0, 1), (1, 2), (2, 3), (3, 0)], &[general()], 19);
    m.settle(40).unwrap();
    m.input(
        1,
        Input::LocalPresence {
            fingerprint: fp(1),
            online: true,
        },
    );
    m.set_room(1, general(), &[fp(1)]);
    m.settle(40).unwrap();
    assert_eq!(m.cores[0].route(&fp(1)), Route::DirectPeer(id_of(1)));
    m.cut(0, 1);
    let cut = m.now;
    while m.cores[0].route(&fp(1)) != Route::Via(vec![id_of(3), id_of(2), id_of(1)]) {
        m.step();
        assert!(
            m.now - cut <= DEAD_AFTER + Duration::from_secs(1),
            "no reroute"
        );
    }
    // The room's member is listed again, learned over the other path.
    assert_eq!(
        fps(&m.cores[0].remote_participants(general())),
        vec![(fp(1), "r1".into())]
    );
    assert_eq!(
        m.cores[0].forward_targets(general(), id_of(0), None),
        vec![id_of(3)],
        "media goes the long way"
    );
    m.heal(0, 1);
    let healed = m.now;
    while m.cores[0].route(&fp(1)) != Route::DirectPeer(id_of(1)) {
        m.step();
        assert!(
            m.now - healed <= BACKOFF_MAX + Duration::from_secs(5),
            "never relinked"
        );
    }
}

#[test]
fn a_failed_dial_after_an_inbound_link_changes_nothing() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    c.tick(t0);
    assert!(matches!(c.drain_actions()[..], [Action::Dial { .. }]));
    // Peer 1 dials in while our dial is outstanding; then ours fails.
    c.handle(
        Input::LinkUp {
            conn: LinkConn(3),
            tls: tls_of(1),
            dialed_by_me: false,
        },
        t0,
    );
    c.handle(
        Input::Message {
            conn: LinkConn(3),
            msg: FederationMessage::hello("r1"),
        },
        t0,
    );
    c.handle(Input::DialFailed { peer: id_of(1) }, t0);
    assert_eq!(c.status(id_of(1)), Some(LinkStatus::Up));
    c.drain_actions();
    // When this link dies, a quick redial (it was up), and when that one
    // fails, the minimum backoff: the stray failure doubled nothing.
    c.handle(Input::LinkDown { conn: LinkConn(3) }, t0);
    assert_eq!(c.status(id_of(1)), Some(LinkStatus::Down));
    let due = c.next_deadline().unwrap() - t0;
    assert!(
        due <= QUICK_REDIAL && due >= QUICK_REDIAL.mul_f64(0.8),
        "{due:?}"
    );
    let t1 = t0 + due;
    c.tick(t1);
    assert!(matches!(c.drain_actions()[..], [Action::Dial { .. }]));
    c.handle(Input::DialFailed { peer: id_of(1) }, t1);
    let due = c.next_deadline().unwrap() - t1;
    assert!(
        due <= BACKOFF_MIN && due >= BACKOFF_MIN.mul_f64(0.8),
        "{due:?}"
    );
}

/// The relays whose members of `general` relay `i` knows of.
fn members_seen(m: &Mesh, i: usize) -> Vec<Fingerprint> {
    let mut v: Vec<Fingerprint> = fps(&m.cores[i].remote_participants(general()))
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    v.sort();
    v
}

#[test]
fn a_peer_added_by_a_reload_links_and_one_taken_out_is_cut_and_refused() {
    // r0 - r1 linked; r2 is listed by nobody yet.
    let mut m = Mesh::new(3, &[(0, 1)], &[general()], 3);
    m.settle(40).expect("settles");
    for i in 0..3 {
        m.set_room(i, general(), &[fp(10 + i as u8)]);
    }
    m.settle(40).expect("settles");
    assert_eq!(members_seen(&m, 1), vec![fp(10)]);
    let r0_r1 = m.cores[0].up_conn(id_of(1)).expect("r0-r1 up");

    // r2's operator lists r0 first: r0 does not know r2 and refuses it.
    let c = m.set_peers(2, &[0]);
    assert_eq!(c.added, vec!["r0".to_string()]);
    m.settle(40);
    assert_eq!(m.cores[2].status(id_of(0)), Some(LinkStatus::Down));
    let refused = m.cores[0].counters().unknown_relay;
    assert!(refused >= 1, "r0 refused r2's dial");

    // r0's reload adds r2: dialed at once, its members reach r1 through r0,
    // and the r0-r1 link is the same connection as before.
    let c = m.set_peers(0, &[1, 2]);
    assert_eq!(
        c,
        PeerChanges {
            added: vec!["r2".into()],
            ..PeerChanges::default()
        }
    );
    m.settle(40).expect("settles");
    assert_eq!(m.cores[0].status(id_of(2)), Some(LinkStatus::Up));
    assert_eq!(m.cores[2].status(id_of(0)), Some(LinkStatus::Up));
    assert_eq!(members_seen(&m, 1), vec![fp(10), fp(12)]);
    assert_eq!(members_seen(&m, 2), vec![fp(10), fp(11)]);
    assert_eq!(
        m.cores[0].up_conn(id_of(1)),
        Some(r0_r1),
        "r1's link untouched"
    );
    // The same list again changes nothing.
    assert_eq!(m.set_peers(0, &[1, 2]), PeerChanges::default());

    // r0's reload takes r2 out: the link closes, r2's members are gone from
    // r1 and r0, and r2 (which still lists r0) is refused when it redials.
    let c = m.set_peers(0, &[1]);
    assert_eq!(c.removed, vec!["r2".to_string()]);
    let refused = m.cores[0].counters().unknown_relay;
    for _ in 0..40 {
        m.step();
    }
    assert_eq!(m.cores[0].status(id_of(2)), None, "r2 is no peer of r0's");
    assert_eq!(m.cores[2].status(id_of(0)), Some(LinkStatus::Down));
    assert_eq!(members_seen(&m, 1), vec![fp(10)]);
    assert_eq!(members_seen(&m, 0), vec![fp(11)]);
    assert!(members_seen(&m, 2).is_empty());
    assert!(m.cores[0].peers().iter().all(|p| p.label != "r2"));
    // r2 keeps trying after its backoff (up to minutes): step past one.
    for _ in 0..(BACKOFF_MAX.as_millis() / m.dt.as_millis()) as usize {
        m.step();
        if m.cores[0].counters().unknown_relay > refused {
            break;
        }
    }
    assert!(
        m.cores[0].counters().unknown_relay > refused,
        "r2's redial is refused"
    );
    assert_eq!(m.cores[2].status(id_of(0)), Some(LinkStatus::Down));
    assert_eq!(
        m.cores[0].up_conn(id_of(1)),
        Some(r0_r1),
        "r1's link untouched"
    );
}

#[test]
fn a_reload_that_moves_a_peer_dials_its_new_address_at_once() {
    let t0 = Instant::now();
    let mut c = lone(t0);
    c.tick(t0);
    let dials = |a: &[Action]| -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Dial { address, .. } => Some(address.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(dials(&c.drain_actions()), ["10.0.0.1:4433"]);
    // The dial fails a few times: the next is minutes away.
    let mut now = t0;
    for _ in 0..6 {
        c.handle(Input::DialFailed { peer: id_of(1) }, now);
        now = c.next_deadline().expect("a redial is due");
        c.tick(now);
        c.drain_actions();
    }
    c.handle(Input::DialFailed { peer: id_of(1) }, now);
    let next = c.next_deadline().expect("a redial is due");
    assert!(next - now > Duration::from_secs(30), "{:?}", next - now);

    // The operator fixes the address and makes the trusted r2 dialable, and
    // renames r1: each new address is dialed now, not after the backoff.
    let mut peers = vec![
        PeerSpec {
            tls: tls_of(1),
            label: "r1-new".into(),
            address: Some("10.0.0.9:4433".into()),
        },
        PeerSpec {
            tls: tls_of(2),
            label: "r2".into(),
            address: Some("10.0.0.2:4433".into()),
        },
    ];
    // Our own certificate in the list, and r1 twice, are ignored.
    peers.push(PeerSpec {
        tls: tls_of(0),
        label: "me".into(),
        address: Some("10.0.0.0:4433".into()),
    });
    peers.push(peers[0].clone());
    let changed = c.set_peers(peers, now);
    assert_eq!(changed.changed, ["r1-new", "r2"]);
    assert!(changed.added.is_empty() && changed.removed.is_empty());
    assert_eq!(c.next_deadline(), Some(now));
    c.tick(now);
    let mut d = dials(&c.drain_actions());
    d.sort();
    assert_eq!(d, ["10.0.0.2:4433", "10.0.0.9:4433"]);
    let labels: Vec<String> = c.peers().into_iter().map(|p| p.label).collect();
    assert!(labels.contains(&"r1-new".to_string()), "{labels:?}");
    assert_eq!(c.peers().len(), 2);
}

#[test]
fn a_global_room_added_or_dropped_by_a_reload_is_bridged_or_not_with_no_link_closed() {
    // A line r0 - r1 - r2 bridging nothing; members of general on r0 and r2.
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[], 5);
    m.settle(40).expect("settles");
    let conns: Vec<_> = [(0, 1), (1, 0), (1, 2), (2, 1)]
        .iter()
        .map(|&(a, b)| m.cores[a].up_conn(id_of(b)).expect("linked"))
        .collect();
    m.set_room(0, general(), &[fp(10)]);
    m.set_room(2, general(), &[fp(12)]);
    m.settle(40).expect("settles");
    assert!(members_seen(&m, 0).is_empty());

    // Every relay's reload adds general: bridged end to end through r1.
    for i in 0..3 {
        assert_eq!(
            m.set_global_rooms(i, &[general()]),
            (vec![general()], vec![])
        );
    }
    m.set_room(0, general(), &[fp(10)]);
    m.set_room(2, general(), &[fp(12)]);
    m.settle(40).expect("settles");
    assert_eq!(members_seen(&m, 0), vec![fp(12)]);
    assert_eq!(members_seen(&m, 2), vec![fp(10)]);
    assert_eq!(members_seen(&m, 1), vec![fp(10), fp(12)]);
    assert!(
        m.by_type.get("rooms").is_some_and(|n| *n >= 4),
        "{:?}",
        m.by_type
    );

    // r1 drops it: neither end sees the other (r1 was the only path), r1
    // sees nobody, and no link was closed.
    assert_eq!(m.set_global_rooms(1, &[]), (vec![], vec![general()]));
    m.settle(40).expect("settles");
    assert!(members_seen(&m, 0).is_empty(), "{:?}", members_seen(&m, 0));
    assert!(members_seen(&m, 2).is_empty());
    assert!(members_seen(&m, 1).is_empty());
    // What r1 hears of general now is refused, not learned.
    let before = m.cores[1].counters().room_not_bridged_here;
    m.set_room(0, general(), &[fp(10), fp(20)]);
    m.settle(40).expect("settles");
    assert_eq!(
        m.cores[1].counters().room_not_bridged_here,
        before,
        "r0 no longer tells r1"
    );
    assert!(members_seen(&m, 1).is_empty());

    // r1 takes it back: bridged again.
    m.set_global_rooms(1, &[general()]);
    m.settle(40).expect("settles");
    assert_eq!(members_seen(&m, 2), vec![fp(10), fp(20)]);
    assert_eq!(members_seen(&m, 0), vec![fp(12)]);
    let now: Vec<_> = [(0, 1), (1, 0), (1, 2), (2, 1)]
        .iter()
        .map(|&(a, b)| m.cores[a].up_conn(id_of(b)).expect("linked"))
        .collect();
    assert_eq!(now, conns, "no link was replaced");
    assert_eq!(m.set_global_rooms(1, &[general()]), (vec![], vec![]));
}

#[test]
fn a_peer_older_than_the_rooms_message_is_not_sent_one() {
    let mut m = Mesh::new(2, &[(0, 1)], &[], 6);
    m.cores[1].set_version(wzp_proto::federation::ROOMS_VERSION - 1);
    m.settle(40).expect("settles");
    let agreed = m.cores[0].peers()[0].version;
    assert_eq!(agreed, Some(wzp_proto::federation::ROOMS_VERSION - 1));
    m.set_global_rooms(0, &[general()]);
    m.set_global_rooms(1, &[general()]);
    m.settle(40).expect("settles");
    assert_eq!(m.by_type.get("rooms"), None, "{:?}", m.by_type);
    assert_eq!(m.cores[0].counters().garbage, 0);
    assert_eq!(m.cores[1].counters().unexpected, 0);
}

#[test]
fn a_reload_s_room_changes_reach_peers_with_nothing_refused() {
    // What a peer hears of a room added or dropped comes in an order it
    // accepts: announcements after the new list, withdrawals before it.
    let mut m = Mesh::new(2, &[(0, 1)], &[general()], 8);
    m.settle(40).expect("settles");
    m.set_room(0, general(), &[fp(10)]);
    m.set_room(1, general(), &[fp(11)]);
    m.settle(40).expect("settles");
    let lobby = RoomId::of_name("lobby");
    for i in 0..2 {
        m.set_global_rooms(i, &[general(), lobby]);
        m.set_room(i, lobby, &[fp(30 + i as u8)]);
    }
    m.settle(40).expect("settles");
    assert_eq!(fps(&m.cores[0].remote_participants(lobby)).len(), 1);
    m.set_global_rooms(0, &[lobby]);
    m.settle(40).expect("settles");
    assert!(m.cores[1].remote_participants(general()).is_empty());
    assert!(m.cores[0].remote_participants(general()).is_empty());
    for i in 0..2 {
        let c = m.cores[i].counters();
        assert_eq!(
            (
                c.room_not_bridged_by_peer,
                c.room_not_bridged_here,
                c.unexpected
            ),
            (0, 0, 0),
            "relay {i}: {c:?}"
        );
    }
}
