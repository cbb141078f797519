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
use super::super::Input;
use super::{CALL_SETUP_TIMEOUT, MAX_CALL_PATH};

const A: Fingerprint = Fingerprint([0xa1; 16]);
const B: Fingerprint = Fingerprint([0xb2; 16]);

fn signal(call_id: &str, caller: Fingerprint, callee: Fingerprint, event: CallEvent) -> CallSignal {
    CallSignal {
        call_id: call_id.into(),
        caller,
        callee,
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
    let mut m = Mesh::new(n, edges, &[], 3);
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
    vec![FederatedParticipant {
        fingerprint,
        alias: None,
    }]
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
    m.input(3, Input::LocalCall(signal("c1", A, B, CallEvent::Ringing)));
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
fn a_link_dying_mid_call_hangs_up_both_ends() {
    let mut m = mesh(4, &[(0, 1), (1, 2), (2, 3)], 3);
    m.input(0, Input::LocalCall(offer("c1", B)));
    m.settle(60).unwrap();
    m.input(3, Input::LocalCall(answer("c1")));
    m.settle(60).unwrap();
    let room = call_room_id("c1");
    m.set_room(0, room, &[A]);
    m.set_room(3, room, &[B]);
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].remote_participants(room).len(), 1);
    m.cut(1, 2);
    let mut rounds = 0;
    while !(kinds(&m, 0).contains(&"hangup") && kinds(&m, 3).contains(&"hangup")) {
        m.step();
        rounds += 1;
        assert!(rounds < 200, "no hangup within 10 s of the cut");
    }
    // Dead-link detection (5 s) plus a round per hop.
    assert!(rounds <= 110, "{rounds} rounds");
    for i in [0, 3] {
        let h = m.calls_delivered[i].last().unwrap();
        assert_eq!(hangup_reason(h), Some(HangupReason::Error));
        assert!(format!("{h:?}").contains("was lost"), "{h:?}");
    }
    m.settle(60);
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
        assert!(m.call_bridges[i].is_empty(), "relay {i}");
        assert!(m.cores[i].remote_participants(room).is_empty(), "relay {i}");
    }
    assert_eq!(
        m.cores[1].call_counters().ended_by_link + m.cores[2].call_counters().ended_by_link,
        2
    );
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
