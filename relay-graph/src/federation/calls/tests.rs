//! Cross-relay calls through the in-memory mesh: offers follow the route,
//! everything else follows the offer's path back, the call room is bridged
//! along that path only, and every way a call can end reaches both ends.

use std::time::Duration;

use wzp_proto::federation::{
    call_room_id, CallEvent, CallSignal, FederatedParticipant, FederationMessage, RelayId,
};
use wzp_proto::signal::{AcceptMode, HangupReason};
use wzp_proto::Fingerprint;

use super::super::mesh::{id_of, Mesh};
use super::super::{Input, DEAD_AFTER};
use super::{CALL_SETUP_TIMEOUT, MAX_CALL_PATH, REROUTE_ARRIVAL_WAIT, REROUTE_WAIT};

const A: Fingerprint = Fingerprint([0xa1; 16]);
const B: Fingerprint = Fingerprint([0xb2; 16]);

fn signal(call_id: &str, caller: Fingerprint, callee: Fingerprint, event: CallEvent) -> CallSignal {
    CallSignal {
        call_id: call_id.into(),
        caller,
        callee,
        fork: None,
        event,
    }
}

fn offer(call_id: &str, callee: Fingerprint) -> CallSignal {
    signal(
        call_id,
        A,
        callee,
        CallEvent::Offer {
            caller_alias: Some("ann".into()),
            handshake: vec![1; 66],
            supported_codecs: vec!["opus".into()],
        },
    )
}

fn answer(call_id: &str) -> CallSignal {
    signal(
        call_id,
        A,
        B,
        CallEvent::Answer {
            accept_mode: AcceptMode::AcceptGeneric,
            handshake: vec![2; 130],
            chosen_codec: None,
        },
    )
}

fn hangup(call_id: &str, reason: HangupReason) -> CallSignal {
    signal(
        call_id,
        A,
        B,
        CallEvent::Hangup {
            reason,
            message: None,
        },
    )
}

/// Relays joined by `edges`, settled, with `B` registered on `callee_on`.
fn mesh(n: usize, edges: &[(usize, usize)], callee_on: usize) -> Mesh {
    mesh_with_old(n, edges, callee_on, &[])
}

/// As [`mesh`], with the relays `old` speaking federation version 1 (before
/// `path_lost` and `reroute`).
fn mesh_with_old(n: usize, edges: &[(usize, usize)], callee_on: usize, old: &[usize]) -> Mesh {
    let mut m = Mesh::new(n, edges, &[], 3);
    for &i in old {
        m.cores[i].set_version(1);
    }
    m.settle(60).expect("links up");
    m.input(
        callee_on,
        Input::LocalPresence {
            fingerprint: B,
            online: true,
        },
    );
    m.settle(60).expect("presence spreads");
    m
}

fn call_signals(m: &Mesh) -> u64 {
    m.by_type.get("call_signal").copied().unwrap_or(0)
}

fn kinds(m: &Mesh, i: usize) -> Vec<&'static str> {
    m.calls_delivered[i]
        .iter()
        .map(|s| s.event.kind())
        .collect()
}

fn hangup_reason(s: &CallSignal) -> Option<HangupReason> {
    match &s.event {
        CallEvent::Hangup { reason, .. } => Some(*reason),
        _ => None,
    }
}

/// Neighbours of relay `i` on call `id`: (towards the caller, towards the
/// callee) as mesh indices.
fn leg(m: &Mesh, i: usize, id: &str) -> Option<(Option<usize>, Option<usize>, bool)> {
    let ix = |r: Option<RelayId>| r.and_then(|r| m.index_of(r));
    m.cores[i]
        .call_leg(id)
        .map(|l| (ix(l.toward_caller), ix(l.toward_callee), l.answered))
}

fn me(fingerprint: Fingerprint) -> Vec<FederatedParticipant> {
    vec![FederatedParticipant::new(fingerprint)]
}

#[test]
fn an_offer_follows_the_route_and_the_answer_comes_back_along_its_path() {
    // Chain 0-1-2-3 with side branches 4 (on 1) and 5 (on 0): A on 0, B on 3.
    let mut m = mesh(6, &[(0, 1), (1, 2), (2, 3), (1, 4), (0, 5)], 3);
    let before = call_signals(&m);
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 3), ["offer"], "delivered to the callee's relay");
    assert_eq!(m.calls_delivered[3][0], offer("c1", B), "unchanged");
    for i in [0, 1, 2, 4, 5] {
        assert!(m.calls_delivered[i].is_empty(), "relay {i}");
    }
    assert_eq!(
        call_signals(&m) - before,
        3,
        "one message per hop, no flood"
    );
    assert_eq!(leg(&m, 0, "c1"), Some((None, Some(1), false)));
    assert_eq!(leg(&m, 1, "c1"), Some((Some(0), Some(2), false)));
    assert_eq!(leg(&m, 2, "c1"), Some((Some(1), Some(3), false)));
    assert_eq!(leg(&m, 3, "c1"), Some((Some(2), None, false)));
    assert_eq!(m.cores[4].call_count() + m.cores[5].call_count(), 0);

    // Ringing, the answer: back to the caller's relay along the same path.
    m.input(
        3,
        Input::LocalCall(signal("c1", A, B, CallEvent::Ringing { waiting: false })),
    );
    m.input(3, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer"]);
    assert_eq!(m.calls_delivered[0][1], answer("c1"));
    assert_eq!(call_signals(&m) - before, 9);
    let room = call_room_id("c1");
    for i in 0..4 {
        assert_eq!(leg(&m, i, "c1").map(|l| l.2), Some(true), "relay {i}");
        assert!(m.call_bridges[i].contains(&room), "relay {i} bridges");
        assert_eq!(m.cores[i].call_room_name(room).as_deref(), Some("call-c1"));
    }
    assert!(m.call_bridges[4].is_empty() && m.call_bridges[5].is_empty());

    // The confirm goes the other way.
    m.input(
        0,
        Input::LocalCall(signal(
            "c1",
            A,
            B,
            CallEvent::Confirm {
                handshake: vec![3; 66],
            },
        )),
    );
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 3), ["offer", "confirm"]);

    // The parties join the call room at each end: each relay learns the
    // far party, and media goes along the path only.
    m.set_room(0, room, &[A]);
    m.set_room(3, room, &[B]);
    m.settle(60).unwrap();
    let far = |m: &Mesh, i: usize| -> Vec<Fingerprint> {
        m.cores[i]
            .remote_participants(room)
            .into_iter()
            .map(|(p, _)| p.fingerprint)
            .collect()
    };
    assert_eq!(far(&m, 0), [B]);
    assert_eq!(far(&m, 3), [A]);
    assert!(
        far(&m, 4).is_empty() && far(&m, 5).is_empty(),
        "off the path"
    );
    assert_eq!(m.cores[0].forward_targets(room, id_of(0), None), [id_of(1)]);
    assert_eq!(
        m.cores[1].forward_targets(room, id_of(0), Some(id_of(0))),
        [id_of(2)]
    );
    assert_eq!(m.cores[3].forward_targets(room, id_of(3), None), [id_of(2)]);
    let datagrams = m.media_datagrams;
    m.send_media(0, room, 7, 1);
    m.send_media(3, room, 9, 1);
    assert_eq!(m.delivered[3].get(&(id_of(0), 7, 1)), Some(&1));
    assert_eq!(m.delivered[0].get(&(id_of(3), 9, 1)), Some(&1));
    assert_eq!(m.media_datagrams - datagrams, 6, "three links each way");

    // B hangs up: A's relay is told, every relay forgets the call and the
    // bridge, and the room's state is gone everywhere.
    m.input(3, Input::LocalCall(hangup("c1", HangupReason::Normal)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer", "hangup"]);
    for i in 0..6 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
        assert!(m.call_bridges[i].is_empty(), "relay {i}");
        assert!(far(&m, i).is_empty(), "relay {i}");
        assert!(m.cores[i].call_room_name(room).is_none());
    }
    assert!(m.cores[0].forward_targets(room, id_of(0), None).is_empty());
    // The clients leaving afterwards announce nothing.
    let before = m.by_type.get("global_room_inactive").copied();
    m.set_room(0, room, &[]);
    m.set_room(3, room, &[]);
    m.settle(60).unwrap();
    assert_eq!(m.by_type.get("global_room_inactive").copied(), before);
    assert_eq!(m.cores[1].counters().room_not_bridged_here, 0);
}

#[test]
fn hangups_from_the_caller_and_declines_reach_the_callee_side() {
    let mut m = mesh(3, &[(0, 1), (1, 2)], 2);
    // Answered, then the caller hangs up.
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    m.input(2, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    m.input(0, Input::LocalCall(hangup("c1", HangupReason::Normal)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer", "hangup"]);
    assert_eq!(m.calls_delivered[2][1], hangup("c1", HangupReason::Normal));
    // Declined while ringing: the callee's relay sends the hangup back.
    m.input(0, Input::LocalCall(offer("c2", B)));
    m.settle(60).unwrap();
    m.input(2, Input::LocalCall(hangup("c2", HangupReason::Declined)));
    m.settle(60).unwrap();
    assert_eq!(
        m.calls_delivered[0].last().and_then(hangup_reason),
        Some(HangupReason::Declined)
    );
    // The caller hangs up before any ringing came back.
    m.input(0, Input::LocalCall(offer("c3", B)));
    m.input(0, Input::LocalCall(hangup("c3", HangupReason::Normal)));
    m.settle(60).unwrap();
    assert_eq!(
        kinds(&m, 2),
        ["offer", "hangup", "offer", "offer", "hangup"]
    );
    for i in 0..3 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
        assert!(m.call_bridges[i].is_empty(), "relay {i}");
    }
}

#[test]
fn an_offer_for_nobody_or_a_taken_id_is_answered_at_once() {
    let mut m = mesh(3, &[(0, 1), (1, 2)], 2);
    let before = call_signals(&m);
    m.input(0, Input::LocalCall(offer("c1", Fingerprint([0x99; 16]))));
    assert_eq!(
        m.calls_delivered[0].last().and_then(hangup_reason),
        Some(HangupReason::NotOnline)
    );
    assert_eq!(m.cores[0].call_counters().not_found, 1);
    m.input(0, Input::LocalCall(offer("c2", B)));
    m.input(0, Input::LocalCall(offer("c2", B)));
    assert_eq!(
        m.calls_delivered[0].last().and_then(hangup_reason),
        Some(HangupReason::Error),
        "call id in use"
    );
    assert_eq!(m.cores[0].call_counters().refused, 1);
    m.settle(60).unwrap();
    assert_eq!(call_signals(&m) - before, 2, "only c2 travelled");
    // Steps for calls a relay does not carry, or going the wrong way, are
    // dropped and counted.
    m.input(0, Input::LocalCall(answer("nope")));
    m.input(2, Input::LocalCall(offer("c2", B)));
    assert_eq!(m.cores[0].call_counters().unknown_call, 1);
    assert_eq!(m.cores[2].call_counters().refused, 1, "c2 is in use at 2");
    m.input(0, Input::LocalCall(answer("c2")));
    assert_eq!(
        m.cores[0].call_counters().unknown_call,
        2,
        "answers come from the callee side"
    );
}

#[test]
fn loops_forged_paths_and_the_hop_limit_are_refused() {
    // A chain of 10: B on relay 9 is 9 links from relay 0, one too many;
    // a user on relay 8 is within the limit.
    let edges: Vec<(usize, usize)> = (0..9).map(|i| (i, i + 1)).collect();
    let mut m = mesh(10, &edges, 9);
    let near = Fingerprint([0xc3; 16]);
    m.input(
        8,
        Input::LocalPresence {
            fingerprint: near,
            online: true,
        },
    );
    m.settle(60).unwrap();
    m.input(0, Input::LocalCall(offer("far", B)));
    m.settle(60).unwrap();
    assert_eq!(m.cores[8].call_counters().hop_limit, 1);
    assert!(m.calls_delivered[9].is_empty());
    let back = m.calls_delivered[0].last().expect("a hangup back");
    assert_eq!(hangup_reason(back), Some(HangupReason::NotOnline));
    assert!(
        format!("{back:?}").contains(&format!("more than {MAX_CALL_PATH} relays away")),
        "{back:?}"
    );
    for i in 0..10 {
        assert_eq!(
            m.cores[i].call_count(),
            0,
            "relay {i} forgot the refused call"
        );
    }
    m.input(0, Input::LocalCall(offer("near", near)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 8), ["offer"], "8 links is within the limit");

    // Relay 3 forges offers to 4: a path through 4 (a loop), a path that
    // does not end with 3.
    let forged = |path: Vec<RelayId>| offer("forged", B).message(path);
    assert!(m.send_as(3, 4, forged(vec![id_of(4), id_of(3)])));
    assert!(m.send_as(3, 4, forged(vec![id_of(2)])));
    m.settle(60).unwrap();
    let c = m.cores[4].call_counters();
    assert_eq!((c.loops, c.path_not_from_sender), (1, 1));
    assert!(m.cores[4].call_leg("forged").is_none());
    // The loop was answered with a hangup, which 3 (carrying no such call)
    // dropped.
    assert_eq!(m.cores[3].call_counters().unknown_call, 1);
    assert!(m.calls_delivered[9].is_empty());
}

#[test]
fn a_call_room_is_bridged_only_along_the_call_path() {
    let mut m = mesh(5, &[(0, 1), (1, 2), (2, 3), (1, 4)], 3);
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    let room = call_room_id("c1");
    // Before the answer nobody bridges it: an announcement is refused.
    assert!(m.send_as(2, 1, {
        FederationMessage::GlobalRoomActive {
            room,
            path: vec![id_of(2)],
            origin_label: "r2".into(),
            participants: me(Fingerprint([0x66; 16])),
        }
    }));
    m.settle(60).unwrap();
    assert_eq!(m.cores[1].counters().room_not_bridged_here, 1);
    m.input(3, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    // Relay 4 is linked to 1 but not on the call's path.
    assert!(m.send_as(
        4,
        1,
        FederationMessage::GlobalRoomActive {
            room,
            path: vec![id_of(4)],
            origin_label: "r4".into(),
            participants: me(Fingerprint([0x66; 16])),
        }
    ));
    m.settle(60).unwrap();
    assert_eq!(m.cores[1].counters().room_not_bridged_here, 2);
    assert!(m.cores[1].remote_participants(room).is_empty());
    assert!(m.cores[0].remote_participants(room).is_empty());
    // Members of the call room on a relay off the path are not announced.
    m.set_room(4, room, &[Fingerprint([0x67; 16])]);
    m.set_room(3, room, &[B]);
    m.set_room(0, room, &[A]);
    m.settle(60).unwrap();
    let at0: Vec<Fingerprint> = m.cores[0]
        .remote_participants(room)
        .into_iter()
        .map(|(p, _)| p.fingerprint)
        .collect();
    assert_eq!(at0, [B]);
    assert_eq!(
        m.cores[1].forward_targets(room, id_of(3), Some(id_of(2))),
        [id_of(0)],
        "never towards relay 4"
    );
    assert!(m.cores[4].remote_participants(room).is_empty());
}

#[test]
fn a_link_dying_mid_call_with_no_other_path_hangs_up_both_ends() {
    let mut m = answered_call(4, &[(0, 1), (1, 2), (2, 3)], 3);
    let room = call_room_id("c1");
    assert_eq!(m.cores[0].remote_participants(room).len(), 1);
    m.cut(1, 2);
    // When each end hangs up: the caller's relay after looking for a path,
    // the callee's relay after waiting for one, each from when it heard.
    let mut at = [None, None];
    let mut rounds = 0;
    while at.iter().any(Option::is_none) {
        m.step();
        rounds += 1;
        for (k, i) in [0, 3].into_iter().enumerate() {
            if at[k].is_none() && kinds(&m, i).contains(&"hangup") {
                at[k] = Some(rounds as u128);
            }
        }
        assert!(rounds < 400, "no hangup within 20 s of the cut");
    }
    let ms = |d: Duration| d.as_millis() / 50;
    let (caller, callee) = (at[0].unwrap(), at[1].unwrap());
    assert!(
        caller >= ms(REROUTE_WAIT),
        "{caller} rounds: looked for a path first"
    );
    assert!(
        caller <= ms(DEAD_AFTER + REROUTE_WAIT) + 20,
        "{caller} rounds"
    );
    assert!(
        callee >= ms(REROUTE_ARRIVAL_WAIT),
        "{callee} rounds: waited for a path"
    );
    assert!(
        callee <= ms(DEAD_AFTER + REROUTE_ARRIVAL_WAIT) + 20,
        "{callee} rounds"
    );
    for i in [0, 3] {
        let h = m.calls_delivered[i].last().unwrap();
        assert_eq!(hangup_reason(h), Some(HangupReason::Error));
        let text = format!("{h:?}");
        assert!(
            text.contains("was lost") && text.contains("no other path"),
            "{h:?}"
        );
    }
    m.settle(60);
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
        assert!(m.call_bridges[i].is_empty(), "relay {i}");
        assert!(m.cores[i].remote_participants(room).is_empty(), "relay {i}");
    }
    let c = |i: usize| m.cores[i].call_counters().clone();
    assert_eq!(c(0).reroute_timeouts + c(3).reroute_timeouts, 2);
    assert_eq!(c(0).reroutes_sent, 0, "no route to send it on");
    assert_eq!(c(1).paths_lost + c(2).paths_lost, 2);
}

#[test]
fn an_unanswered_call_is_forgotten_on_every_relay_after_the_setup_timeout() {
    let mut m = mesh(3, &[(0, 1), (1, 2)], 2);
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    m.dt = Duration::from_millis(500);
    let rounds = (CALL_SETUP_TIMEOUT.as_millis() / 500) as usize + 4;
    for _ in 0..rounds {
        m.step();
    }
    for i in 0..3 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
    }
    for i in [0, 2] {
        assert_eq!(
            m.calls_delivered[i].last().and_then(hangup_reason),
            Some(HangupReason::Timeout),
            "relay {i}"
        );
    }
}

/// Relays joined by `edges`, `B` on `callee_on`, and call `c1` from `A` on
/// relay 0 answered, both parties in its room.
fn answered_call(n: usize, edges: &[(usize, usize)], callee_on: usize) -> Mesh {
    answered_call_with_old(n, edges, callee_on, &[])
}

fn answered_call_with_old(
    n: usize,
    edges: &[(usize, usize)],
    callee_on: usize,
    old: &[usize],
) -> Mesh {
    let mut m = mesh_with_old(n, edges, callee_on, old);
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    m.input(callee_on, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    let room = call_room_id("c1");
    m.set_room(0, room, &[A]);
    m.set_room(callee_on, room, &[B]);
    m.settle(60).unwrap();
    m
}

fn far(m: &Mesh, i: usize) -> Vec<Fingerprint> {
    m.cores[i]
        .remote_participants(call_room_id("c1"))
        .into_iter()
        .map(|(p, _)| p.fingerprint)
        .collect()
}

/// Steps until the callee's relay `end` carries call `c1` from `via`, at
/// most `DEAD_AFTER` plus `extra`; returns the rounds taken.
fn step_until_rerouted(m: &mut Mesh, end: usize, via: usize, extra: Duration) -> usize {
    let most = (DEAD_AFTER + extra).as_millis() / 50;
    let mut rounds = 0;
    while leg(m, end, "c1").map(|l| l.0) != Some(Some(via)) {
        m.step();
        rounds += 1;
        assert!(
            (rounds as u128) < most,
            "no new path through relay {via} in {rounds} rounds: legs {:?}",
            (0..m.cores.len())
                .map(|i| leg(m, i, "c1"))
                .collect::<Vec<_>>()
        );
    }
    m.settle(60);
    rounds
}

/// Media both ways arrives once each, over `hops` links each way.
fn media_flows(m: &mut Mesh, callee_on: usize, seq: u32, hops: u64) {
    let room = call_room_id("c1");
    let before = m.media_datagrams;
    m.send_media(0, room, 7, seq);
    m.send_media(callee_on, room, 9, seq);
    assert_eq!(m.delivered[callee_on].get(&(id_of(0), 7, seq)), Some(&1));
    assert_eq!(m.delivered[0].get(&(id_of(callee_on), 9, seq)), Some(&1));
    assert_eq!(m.media_datagrams - before, 2 * hops, "along the path only");
}

#[test]
fn a_call_whose_path_loses_a_link_moves_to_another_path_unnoticed() {
    // A square: 0-1-3 and 0-2-3. The call takes one side; the link between
    // that side's middle relay and the callee's relay dies.
    let mut m = answered_call(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], 3);
    let mid = leg(&m, 0, "c1").unwrap().1.unwrap();
    let other = 3 - mid;
    assert_eq!(leg(&m, mid, "c1"), Some((Some(0), Some(3), true)));
    assert_eq!(m.cores[other].call_count(), 0, "off the path");
    media_flows(&mut m, 3, 1, 2);

    m.cut(mid, 3);
    let rounds = step_until_rerouted(&mut m, 3, other, Duration::from_secs(1));
    // Found dead after DEAD_AFTER, then a round per hop.
    assert!(
        rounds as u128 <= DEAD_AFTER.as_millis() / 50 + 10,
        "{rounds} rounds"
    );
    assert_eq!(leg(&m, 0, "c1"), Some((None, Some(other), true)));
    assert_eq!(leg(&m, other, "c1"), Some((Some(0), Some(3), true)));
    assert_eq!(leg(&m, 3, "c1"), Some((Some(other), None, true)));
    assert!(leg(&m, mid, "c1").is_none(), "the broken side forgot it");
    let room = call_room_id("c1");
    assert!(m.call_bridges[other].contains(&room));
    assert!(!m.call_bridges[mid].contains(&room));
    // Neither party was told anything: the call goes on.
    assert_eq!(kinds(&m, 0), ["ringing", "answer"][1..]);
    assert_eq!(kinds(&m, 3), ["offer"]);
    assert_eq!(far(&m, 0), [B]);
    assert_eq!(far(&m, 3), [A]);
    media_flows(&mut m, 3, 2, 2);
    let c = |i: usize| m.cores[i].call_counters().clone();
    assert_eq!(c(0).reroutes_sent, 1);
    assert_eq!(c(3).rerouted, 1);
    assert_eq!(c(0).reroute_timeouts + c(3).reroute_timeouts, 0);
    assert_eq!(c(mid).paths_lost, 1);
    // The party hangs up later: the new path carries that too.
    m.input(3, Input::LocalCall(hangup("c1", HangupReason::Normal)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer", "hangup"]);
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
    }
}

#[test]
fn the_callers_own_link_dying_moves_the_call_too() {
    let mut m = answered_call(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], 3);
    let mid = leg(&m, 0, "c1").unwrap().1.unwrap();
    let other = 3 - mid;
    m.cut(0, mid);
    step_until_rerouted(&mut m, 3, other, Duration::from_secs(1));
    assert_eq!(leg(&m, 0, "c1"), Some((None, Some(other), true)));
    assert!(
        leg(&m, mid, "c1").is_none(),
        "the old path's relay forgot it"
    );
    assert_eq!(kinds(&m, 0), ["answer"]);
    assert_eq!(kinds(&m, 3), ["offer"]);
    media_flows(&mut m, 3, 1, 2);
}

#[test]
fn a_lost_path_is_told_hop_by_hop_and_the_new_one_is_longer() {
    // 0-1-2-3 carries the call; 0-4-5-6-3 is the way round.
    let mut m = answered_call(
        7,
        &[(0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6), (6, 3)],
        3,
    );
    assert_eq!(leg(&m, 1, "c1"), Some((Some(0), Some(2), true)));
    m.cut(2, 3);
    step_until_rerouted(&mut m, 3, 6, Duration::from_secs(2));
    assert_eq!(leg(&m, 0, "c1"), Some((None, Some(4), true)));
    assert_eq!(leg(&m, 4, "c1"), Some((Some(0), Some(5), true)));
    assert_eq!(leg(&m, 5, "c1"), Some((Some(4), Some(6), true)));
    assert_eq!(leg(&m, 6, "c1"), Some((Some(5), Some(3), true)));
    for i in [1, 2] {
        assert!(leg(&m, i, "c1").is_none(), "relay {i} forgot the old path");
        assert!(m.call_bridges[i].is_empty(), "relay {i}");
    }
    assert_eq!(kinds(&m, 0), ["answer"]);
    assert_eq!(far(&m, 0), [B]);
    assert_eq!(far(&m, 3), [A]);
    media_flows(&mut m, 3, 1, 4);
    // The relay next to the break passed `path_lost` on; the one between
    // passed it to the caller's relay, after the route changes it sent.
    assert_eq!(m.cores[2].call_counters().paths_lost, 1);
    assert_eq!(m.cores[1].call_counters().paths_lost, 1);
    assert_eq!(m.cores[0].call_counters().reroutes_sent, 1);
}

#[test]
fn a_new_path_only_through_an_older_relay_is_not_taken() {
    // The way round (relay 2) speaks federation version 1: it would not
    // understand `reroute`, so the call ends as before the feature.
    let mut m = answered_call_with_old(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], 3, &[2]);
    assert_eq!(
        leg(&m, 0, "c1").unwrap().1,
        Some(1),
        "the only new relay on the path"
    );
    m.cut(1, 3);
    let mut rounds = 0;
    while !(kinds(&m, 0).contains(&"hangup") && kinds(&m, 3).contains(&"hangup")) {
        m.step();
        rounds += 1;
        assert!(rounds < 400, "no hangup within 20 s of the cut");
    }
    assert_eq!(m.cores[0].call_counters().reroutes_sent, 0);
    assert_eq!(m.cores[2].call_count(), 0);
    assert_eq!(m.cores[2].call_counters().unknown_call, 0, "sent nothing");
    for i in [0, 3] {
        let h = m.calls_delivered[i].last().unwrap();
        assert!(format!("{h:?}").contains("no other path"), "{h:?}");
    }
}

#[test]
fn a_relay_between_of_an_older_version_ends_the_call_as_before() {
    // Chain 0-1-2-3 with relay 1 at version 1: relay 2 cannot tell it the
    // path is lost, so it hangs up towards it; relay 3 waits, then ends.
    let mut m = answered_call_with_old(4, &[(0, 1), (1, 2), (2, 3)], 3, &[1]);
    m.cut(2, 3);
    let mut rounds = 0;
    while !kinds(&m, 0).contains(&"hangup") {
        m.step();
        rounds += 1;
        assert!(rounds < 200, "no hangup at the caller's relay");
    }
    assert!(
        rounds as u128 <= DEAD_AFTER.as_millis() / 50 + 10,
        "{rounds} rounds: at once"
    );
    assert!(format!("{:?}", m.calls_delivered[0].last()).contains("was lost"));
    assert_eq!(m.cores[2].call_counters().ended_by_link, 1);
    let most = REROUTE_ARRIVAL_WAIT.as_millis() / 50 + 10;
    let mut rounds = 0;
    while !kinds(&m, 3).contains(&"hangup") {
        m.step();
        rounds += 1;
        assert!((rounds as u128) < most, "no hangup at the callee's relay");
    }
}

#[test]
fn a_forged_reroute_does_not_move_a_call() {
    // The call goes 0-1-3; relay 2 is linked to both ends but off the path.
    let mut m = answered_call(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], 3);
    let mid = leg(&m, 0, "c1").unwrap().1.unwrap();
    let off = 3 - mid;
    let reroute = |call_id: &str, caller: Fingerprint, path: Vec<RelayId>| {
        signal(call_id, caller, B, CallEvent::Reroute { answered: true }).message(path)
    };
    let forged = [
        // A call id it does not carry.
        reroute("c2", A, vec![id_of(0), id_of(off)]),
        // The call's id with another caller.
        reroute("c1", Fingerprint([0x66; 16]), vec![id_of(0), id_of(off)]),
        // A path that does not start at the caller's relay.
        reroute("c1", A, vec![id_of(off)]),
        // A path that does not end with the relay sending it.
        reroute("c1", A, vec![id_of(0)]),
    ];
    for msg in forged {
        assert!(m.send_as(off, 3, msg));
        m.settle(60).unwrap();
        assert_eq!(leg(&m, 3, "c1"), Some((Some(mid), None, true)), "unmoved");
    }
    let c = m.cores[3].call_counters();
    assert_eq!(c.rerouted, 0);
    // A call it does not have is answered as ended; the others dropped.
    assert_eq!(
        (c.reroutes_refused, c.unknown_call, c.path_not_from_sender),
        (3, 2, 1)
    );
    assert_eq!(far(&m, 3), [A]);
    media_flows(&mut m, 3, 1, 2);
    // Nor does a `path_lost` from a relay that is not the call's neighbour.
    let lost = signal("c1", A, B, CallEvent::PathLost { message: None }).message(vec![id_of(off)]);
    assert!(m.send_as(off, 3, lost));
    m.settle(60).unwrap();
    assert_eq!(leg(&m, 3, "c1"), Some((Some(mid), None, true)));
    // And a party cannot send one: only relays do.
    m.input(
        0,
        Input::LocalCall(signal("c1", A, B, CallEvent::PathLost { message: None })),
    );
    m.input(
        0,
        Input::LocalCall(signal("c1", A, B, CallEvent::Reroute { answered: true })),
    );
    m.settle(60).unwrap();
    assert_eq!(leg(&m, 0, "c1"), Some((None, Some(mid), true)));
    assert_eq!(m.cores[0].call_counters().unknown_call, 2);
    media_flows(&mut m, 3, 2, 2);
}

#[test]
fn a_party_hanging_up_while_the_path_is_lost_ends_the_call() {
    // Chain: no other path. The caller hangs up while its relay looks for
    // one; the callee's relay gives up after its wait.
    let mut m = answered_call(4, &[(0, 1), (1, 2), (2, 3)], 3);
    m.cut(1, 2);
    let mut rounds = 0;
    while m.cores[0].call_leg("c1").is_some_and(|l| l.lost.is_none()) {
        m.step();
        rounds += 1;
        assert!(rounds < 200, "the caller's relay never saw the path lost");
    }
    m.input(0, Input::LocalCall(hangup("c1", HangupReason::Normal)));
    m.step();
    assert_eq!(m.cores[0].call_count(), 0);
    assert_eq!(
        kinds(&m, 0),
        ["ringing", "answer"][1..],
        "its own hangup is not echoed"
    );
    while !kinds(&m, 3).contains(&"hangup") {
        m.step();
        rounds += 1;
        assert!(rounds < 600, "the callee's relay never gave up");
    }
}

#[test]
fn a_new_path_refused_further_on_is_tried_a_bounded_number_of_times() {
    // The call goes 0-1-3; the way round is 0-2-4-3 with relay 4 at version
    // 1, so relay 2 refuses every `reroute` (its next hop would not
    // understand it). The caller's relay tries every 250 ms until its wait
    // ends, then both ends hang up and nothing is left on relay 2.
    let mut m = answered_call_with_old(5, &[(0, 1), (1, 3), (0, 2), (2, 4), (4, 3)], 3, &[4]);
    assert_eq!(leg(&m, 0, "c1").unwrap().1, Some(1));
    m.cut(1, 3);
    let mut rounds = 0;
    while !(kinds(&m, 0).contains(&"hangup") && kinds(&m, 3).contains(&"hangup")) {
        m.step();
        rounds += 1;
        assert!(rounds < 400, "no hangup within 20 s of the cut");
    }
    let c0 = m.cores[0].call_counters().clone();
    let most = (REROUTE_WAIT.as_millis() / super::REROUTE_RETRY.as_millis()) as u64 + 2;
    assert!(
        (2..=most).contains(&c0.reroutes_sent),
        "{} tries",
        c0.reroutes_sent
    );
    assert_eq!(
        m.cores[2].call_counters().reroutes_refused,
        c0.reroutes_sent
    );
    assert_eq!(c0.reroute_timeouts, 1);
    m.settle(60);
    for i in 0..5 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
        assert!(m.call_bridges[i].is_empty(), "relay {i}");
    }
}

#[test]
fn many_calls_move_at_once() {
    // Every call of a square crosses the same relay between; its link to the
    // callee's relay dies and they all move together. The time the rounds
    // of the move took is printed (docs/PERFORMANCE.md; `WZP_MANY_CALLS`
    // sets how many, default 300).
    let n: u64 = std::env::var("WZP_MANY_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let mut m = mesh(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], 3);
    let id = |k: u64| format!("c{k}");
    for k in 0..n {
        m.input(0, Input::LocalCall(offer(&id(k), B)));
    }
    m.settle(200).unwrap();
    for k in 0..n {
        m.input(3, Input::LocalCall(signal(&id(k), A, B, answer("x").event)));
    }
    m.settle(200).unwrap();
    for k in 0..n {
        let room = call_room_id(&id(k));
        m.set_room(0, room, &[A]);
        m.set_room(3, room, &[B]);
    }
    m.settle(200).unwrap();
    let mid = leg(&m, 0, "c0").unwrap().1.unwrap();
    let other = 3 - mid;
    m.cut(mid, 3);
    let mut spent = Duration::ZERO;
    let mut rounds = 0;
    while m.cores[3].call_counters().rerouted < n {
        let t = std::time::Instant::now();
        m.step();
        spent += t.elapsed();
        rounds += 1;
        assert!(
            rounds < 400,
            "{} of {n} moved",
            m.cores[3].call_counters().rerouted
        );
    }
    m.settle(200).unwrap();
    println!("{n} calls moved; the rounds from the cut took {spent:?} for the four relays");
    for k in 0..n {
        assert_eq!(
            leg(&m, 0, &id(k)),
            Some((None, Some(other), true)),
            "call {k}"
        );
        assert_eq!(
            leg(&m, 3, &id(k)),
            Some((Some(other), None, true)),
            "call {k}"
        );
        assert!(leg(&m, mid, &id(k)).is_none(), "call {k}");
        let room = call_room_id(&id(k));
        assert_eq!(m.cores[0].remote_participants(room).len(), 1, "call {k}");
    }
    assert_eq!(m.cores[0].call_counters().reroutes_sent, n);
    assert!(m.calls_delivered[0]
        .iter()
        .all(|s| s.event.kind() == "answer"));
}

/// A square 0-1-3 / 0-2-3 with call `c1` offered from relay 0 and ringing
/// at relay 3; returns the mesh and the relay between that carries it.
fn ringing_call() -> (Mesh, usize) {
    let mut m = mesh(4, &[(0, 1), (1, 3), (0, 2), (2, 3)], 3);
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    m.input(
        3,
        Input::LocalCall(signal("c1", A, B, CallEvent::Ringing { waiting: false })),
    );
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing"]);
    let mid = leg(&m, 0, "c1").unwrap().1.unwrap();
    (m, mid)
}

/// After the answer: every relay of the path `0 - via - 3` bridges the room
/// and media flows along it.
fn answered_along(m: &mut Mesh, via: usize) {
    assert_eq!(kinds(m, 0), ["ringing", "answer"]);
    let room = call_room_id("c1");
    for i in [0, via, 3] {
        assert_eq!(leg(m, i, "c1").map(|l| l.2), Some(true), "relay {i}");
        assert!(m.call_bridges[i].contains(&room), "relay {i} bridges");
    }
    assert!(!m.call_bridges[3 - via].contains(&room));
    m.set_room(0, room, &[A]);
    m.set_room(3, room, &[B]);
    m.settle(60).unwrap();
    media_flows(m, 3, 1, 2);
}

#[test]
fn a_ringing_call_moves_too_and_its_answer_takes_the_new_path() {
    let (mut m, mid) = ringing_call();
    let other = 3 - mid;
    m.cut(mid, 3);
    step_until_rerouted(&mut m, 3, other, Duration::from_secs(1));
    assert_eq!(leg(&m, other, "c1"), Some((Some(0), Some(3), false)));
    assert!(
        m.call_bridges[other].is_empty(),
        "not bridged before the answer"
    );
    assert_eq!(
        kinds(&m, 3),
        ["offer"],
        "the callee's side was told nothing"
    );
    m.input(3, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    answered_along(&mut m, other);
}

#[test]
fn an_answer_given_while_the_path_is_lost_is_sent_on_the_new_one() {
    let (mut m, mid) = ringing_call();
    let other = 3 - mid;
    m.cut(mid, 3);
    let mut rounds = 0;
    while m.cores[3].call_leg("c1").is_some_and(|l| l.lost.is_none()) {
        m.step();
        rounds += 1;
        assert!(rounds < 200, "the callee's relay never saw the path lost");
    }
    // Bob answers while his relay has no path: held, then sent on the new
    // path when the caller's relay's `reroute` arrives.
    m.input(3, Input::LocalCall(answer("c1")));
    step_until_rerouted(&mut m, 3, other, Duration::from_secs(1));
    m.settle(60).unwrap();
    answered_along(&mut m, other);
}

fn path(call_id: &str, sealed: u8) -> CallSignal {
    signal(
        call_id,
        A,
        B,
        CallEvent::Path {
            sealed: vec![sealed; 40],
        },
    )
}

/// A chain 0-1-2, B on 2, with relay 1 at federation version `middle`; the
/// call `c1` offered from 0.
fn chain_with_middle_at(middle: u32) -> Mesh {
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[], 3);
    m.cores[1].set_version(middle);
    m.settle(60).expect("links up");
    m.input(
        2,
        Input::LocalPresence {
            fingerprint: B,
            online: true,
        },
    );
    m.settle(60).expect("presence spreads");
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    m
}

#[test]
fn sealed_addresses_cross_the_path_both_ways_once_answered_unchanged() {
    let mut m = chain_with_middle_at(wzp_proto::federation::FEDERATION_VERSION);
    // Before the answer nothing goes: no address for a call not taken.
    m.input(0, Input::LocalCall(path("c1", 1)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(m.cores[0].call_counters().paths_dropped, 1);
    m.input(2, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    m.input(0, Input::LocalCall(path("c1", 2)));
    m.input(2, Input::LocalCall(path("c1", 3)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer", "path"]);
    assert_eq!(m.calls_delivered[2][1], path("c1", 2), "unchanged");
    assert_eq!(kinds(&m, 0), ["answer", "path"]);
    assert_eq!(m.calls_delivered[0][1], path("c1", 3));
    assert_eq!(m.cores[1].call_counters().paths_forwarded, 2);
    // A relay passes at most MAX_LEG_PATHS for a call, both ways together.
    for k in 0..super::MAX_LEG_PATHS {
        m.input(0, Input::LocalCall(path("c1", 10 + k)));
    }
    m.settle(60).unwrap();
    // Relay 0 passed its 8th and dropped the 9th; relay 1 had carried one
    // each way before, so it passed 6 of them and dropped one.
    assert_eq!(m.cores[0].call_counters().paths_dropped, 1 + 1);
    assert_eq!(m.cores[1].call_counters().paths_dropped, 1);
    let at_callee = kinds(&m, 2).iter().filter(|k| **k == "path").count();
    assert_eq!(at_callee, usize::from(super::MAX_LEG_PATHS) - 1);
    // Nothing else moved: the call is still up on every relay.
    for i in 0..3 {
        assert_eq!(leg(&m, i, "c1").map(|l| l.2), Some(true), "relay {i}");
    }
}

#[test]
fn a_relay_before_version_3_on_the_path_is_sent_no_addresses() {
    let mut m = chain_with_middle_at(2);
    m.input(2, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    let before = m.by_type.get("call_signal").copied().unwrap_or(0);
    m.input(0, Input::LocalCall(path("c1", 1)));
    m.input(2, Input::LocalCall(path("c1", 2)));
    m.settle(60).unwrap();
    assert_eq!(
        m.by_type.get("call_signal").copied().unwrap_or(0),
        before,
        "no path event on a link agreed below 3"
    );
    assert_eq!(m.cores[0].call_counters().paths_dropped, 1);
    assert_eq!(m.cores[2].call_counters().paths_dropped, 1);
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(kinds(&m, 0), ["answer"]);
    // The call goes on: a hangup still reaches the far end.
    m.input(0, Input::LocalCall(hangup("c1", HangupReason::Normal)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer", "hangup"]);
}

fn hold(call_id: &str, held: bool) -> CallSignal {
    let sealed = vec![u8::from(held); wzp_proto::hold::SEALED_HOLD_LEN];
    signal(call_id, A, B, CallEvent::Hold { sealed })
}

#[test]
fn a_hold_crosses_an_answered_path_and_stops_at_a_relay_older_than_it() {
    let mut m = chain_with_middle_at(wzp_proto::federation::FEDERATION_VERSION);
    // Not answered: nothing to hold.
    m.input(0, Input::LocalCall(hold("c1", true)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(m.cores[0].call_counters().holds_dropped, 1);
    m.input(2, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    m.input(2, Input::LocalCall(hold("c1", true)));
    m.input(0, Input::LocalCall(hold("c1", false)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer", "hold"]);
    assert_eq!(kinds(&m, 2), ["offer", "hold"]);
    assert_eq!(m.calls_delivered[2][1], hold("c1", false));
    assert_eq!(m.cores[1].call_counters().holds_forwarded, 2);

    // Relay 1 at version 4: relay 0 and 2 send it no hold.
    let mut m = chain_with_middle_at(wzp_proto::federation::HOLD_VERSION - 1);
    m.input(2, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    m.input(0, Input::LocalCall(hold("c1", true)));
    m.input(2, Input::LocalCall(hold("c1", true)));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer"]);
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(m.cores[0].call_counters().holds_dropped, 1);
    assert_eq!(m.cores[2].call_counters().holds_dropped, 1);
    assert_eq!(m.cores[1].counters().garbage, 0);
}
