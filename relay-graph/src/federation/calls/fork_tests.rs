//! A person on several relays: presence carries every relay they are on
//! (`presence_origins`), and a call rings each of them (a fork per relay);
//! the first answer takes it, a decline declines it for the person, and
//! the caller hears the most telling refusal when every fork ends.

use wzp_proto::federation::{call_room_id, leg_key, CallEvent, CallSignal, RelayId};
use wzp_proto::signal::{AcceptMode, HangupReason};
use wzp_proto::Fingerprint;

use super::super::mesh::{id_of, Mesh};
use super::super::Input;

const A: Fingerprint = Fingerprint([0xa1; 16]);
const B: Fingerprint = Fingerprint([0xb2; 16]);

fn signal(call_id: &str, fork: Option<RelayId>, event: CallEvent) -> CallSignal {
    CallSignal {
        call_id: call_id.into(),
        caller: A,
        callee: B,
        fork,
        event,
    }
}

fn offer(call_id: &str) -> CallSignal {
    signal(
        call_id,
        None,
        CallEvent::Offer {
            caller_alias: None,
            handshake: vec![1; 66],
            supported_codecs: vec!["opus".into()],
        },
    )
}

fn answer() -> CallEvent {
    CallEvent::Answer {
        accept_mode: AcceptMode::AcceptGeneric,
        handshake: vec![2; 130],
        chosen_codec: None,
    }
}

fn hangup(reason: HangupReason) -> CallEvent {
    CallEvent::Hangup {
        reason,
        message: None,
    }
}

fn online(m: &mut Mesh, i: usize, on: bool) {
    m.input(
        i,
        Input::LocalPresence {
            fingerprint: B,
            online: on,
        },
    );
}

/// Relays joined by `edges` (those in `old` at federation version 5,
/// before forks), settled, with `B` registered on each of `on`.
fn mesh(n: usize, edges: &[(usize, usize)], on: &[usize], old: &[usize]) -> Mesh {
    let mut m = Mesh::new(n, edges, &[], 7);
    for &i in old {
        m.cores[i].set_version(5);
    }
    m.settle(60).expect("links up");
    for &i in on {
        online(&mut m, i, true);
    }
    m.settle(60).expect("presence spreads");
    m
}

fn ids(v: &[usize]) -> Vec<RelayId> {
    let mut v: Vec<RelayId> = v.iter().map(|&i| id_of(i)).collect();
    v.sort();
    v
}

fn kinds(m: &Mesh, i: usize) -> Vec<&'static str> {
    m.calls_delivered[i]
        .iter()
        .map(|s| s.event.kind())
        .collect()
}

fn reasons(m: &Mesh, i: usize) -> Vec<HangupReason> {
    m.calls_delivered[i]
        .iter()
        .filter_map(|s| match &s.event {
            CallEvent::Hangup { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The callee's relay `i` takes a step of its fork, as its signal service
/// does (by call id alone).
fn from_callee(m: &mut Mesh, i: usize, event: CallEvent) {
    m.input(i, Input::LocalCall(signal("c1", None, event)));
}

//   0 (caller) - 1 - 2 (callee's phone)
//                 \- 3 (callee's laptop)
const Y: &[(usize, usize)] = &[(0, 1), (1, 2), (1, 3)];

#[test]
fn presence_carries_every_relay_a_person_is_on() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    for i in 0..4 {
        assert_eq!(m.cores[i].origins_of(&B), ids(&[2, 3]), "relay {i}");
    }
    let rows: Vec<RelayId> = m.cores[0]
        .presence()
        .into_iter()
        .filter(|(f, _)| *f == B)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(rows, ids(&[2, 3]), "one row per relay");
    online(&mut m, 3, false);
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].origins_of(&B), ids(&[2]));
    assert_eq!(m.cores[1].origins_of(&B), ids(&[2]));
    online(&mut m, 2, false);
    m.settle(60).unwrap();
    assert!(m.cores[0].origins_of(&B).is_empty());
    assert!(m.by_type.get("presence_origins").copied().unwrap_or(0) > 0);

    // Behind a relay that predates forks only the nearest is known.
    let mut m = mesh(4, Y, &[2, 3], &[1]);
    assert_eq!(m.cores[0].origins_of(&B).len(), 1);
    // Relay 1 (this build, its links agreed at 5) hears each of B's relays
    // from its neighbours in `presence_update` and keeps them all.
    assert_eq!(m.cores[1].origins_of(&B), ids(&[2, 3]));
    online(&mut m, 3, false);
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].origins_of(&B), ids(&[2]));
}

#[test]
fn a_call_rings_every_relay_the_callee_is_on_and_the_first_answer_takes_it() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(kinds(&m, 3), ["offer"]);
    assert_eq!(m.calls_delivered[2][0].fork, Some(id_of(2)));
    assert_eq!(m.calls_delivered[3][0].fork, Some(id_of(3)));
    assert!(m.calls_delivered[1].is_empty());
    let g = m.cores[0].fork_group("c1").expect("forked");
    assert_eq!(g.forks.len(), 2);
    assert_eq!(m.cores[0].call_counters().forks_sent, 2);
    // Relay 1 carries both forks of one call id.
    assert_eq!(m.cores[1].call_count(), 2);

    from_callee(&mut m, 2, CallEvent::Ringing { waiting: false });
    from_callee(&mut m, 3, CallEvent::Ringing { waiting: false });
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing"], "the caller hears ringing once");

    from_callee(&mut m, 3, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer"]);
    assert_eq!(kinds(&m, 2), ["offer", "hangup"]);
    assert_eq!(reasons(&m, 2), [HangupReason::AnsweredElsewhere]);
    assert_eq!(m.cores[2].call_count(), 0, "the phone's fork is gone");
    assert_eq!(m.cores[1].call_count(), 1);
    assert_eq!(m.cores[0].call_counters().forks_cancelled, 1);
    let room = call_room_id("c1");
    for i in [0, 1, 3] {
        assert!(m.call_bridges[i].contains(&room), "relay {i} bridges");
    }
    assert!(!m.call_bridges[2].contains(&room));

    // The call goes on with the laptop's fork only, both ways.
    m.input(
        0,
        Input::LocalCall(signal(
            "c1",
            None,
            CallEvent::Confirm {
                handshake: vec![3; 66],
            },
        )),
    );
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 3), ["offer", "confirm"]);
    assert_eq!(m.calls_delivered[3][1].fork, Some(id_of(3)));
    m.input(
        0,
        Input::LocalCall(signal("c1", None, hangup(HangupReason::Normal))),
    );
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 3), ["offer", "confirm", "hangup"]);
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
        assert!(!m.call_bridges[i].contains(&room), "relay {i}");
    }
    assert!(m.cores[0].fork_group("c1").is_none());
}

#[test]
fn answers_that_cross_leave_the_first_with_the_call_room() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    // Both answer before either hears of the other.
    from_callee(&mut m, 2, answer());
    from_callee(&mut m, 3, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer"], "one answer reaches the caller");
    let g = m.cores[0].fork_group("c1").unwrap();
    let won = g.answered.expect("answered");
    let (winner, loser) = if won == id_of(2) { (2, 3) } else { (3, 2) };
    assert_eq!(reasons(&m, loser), [HangupReason::AnsweredElsewhere]);
    assert!(reasons(&m, winner).is_empty());
    assert_eq!(m.cores[loser].call_count(), 0);
    let room = call_room_id("c1");
    assert!(m.call_bridges[winner].contains(&room));
    assert!(!m.call_bridges[loser].contains(&room));
    // Relay 1 bridges the room with the winner's side only.
    let l = m.cores[1]
        .call_leg(&leg_key("c1", Some(id_of(winner))))
        .unwrap();
    assert!(l.answered);
    assert!(m.cores[1]
        .call_leg(&leg_key("c1", Some(id_of(loser))))
        .is_none());
    assert!(m.call_bridges[1].contains(&room));
}

#[test]
fn a_decline_on_one_relay_declines_the_call_for_the_person() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    from_callee(&mut m, 2, hangup(HangupReason::Declined));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Declined]);
    assert_eq!(reasons(&m, 3), [HangupReason::DeclinedElsewhere]);
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
    }
}

#[test]
fn the_caller_hears_the_most_telling_refusal_once_every_fork_has_ended() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    from_callee(&mut m, 3, hangup(HangupReason::Busy));
    m.settle(60).unwrap();
    assert!(kinds(&m, 0).is_empty(), "the phone still rings");
    from_callee(&mut m, 2, hangup(HangupReason::Timeout));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Busy]);
    assert!(m.cores[0].fork_group("c1").is_none());
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
    }
}

#[test]
fn a_caller_hanging_up_while_it_rings_ends_every_fork() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    m.input(
        0,
        Input::LocalCall(signal("c1", None, hangup(HangupReason::Normal))),
    );
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 2), [HangupReason::Normal]);
    assert_eq!(reasons(&m, 3), [HangupReason::Normal]);
    for i in 0..4 {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
    }
}

#[test]
fn devices_here_ring_with_forks_to_the_other_relays_only() {
    // B on the caller's relay (0) too: its signal service rings that
    // device, the core forks to 2 and 3.
    let mut m = mesh(4, Y, &[0, 2, 3], &[]);
    m.input(0, Input::LocalFork(offer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(kinds(&m, 3), ["offer"]);
    assert!(m.cores[0].fork_group("c1").unwrap().also_here);
    // Every fork refusing says so once, for the signal service to weigh.
    from_callee(&mut m, 2, hangup(HangupReason::NotOnline));
    from_callee(&mut m, 3, hangup(HangupReason::Busy));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Busy]);

    // B on the caller's relay alone: nothing goes out, and the answer
    // says so at once.
    let mut m = mesh(4, Y, &[0], &[]);
    let before = m.by_type.get("call_signal").copied().unwrap_or(0);
    m.input(0, Input::LocalFork(offer("c2")));
    m.settle(60).unwrap();
    assert_eq!(m.by_type.get("call_signal").copied().unwrap_or(0), before);
    let c = &m.calls_delivered[0];
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].call_id, "c2");
    assert_eq!(reasons(&m, 0), [HangupReason::NotOnline]);
}

#[test]
fn a_relay_that_predates_forks_gets_the_call_to_the_nearest_relay_only() {
    // Relay 1 speaks version 5: 0 knows one relay of B's, and calls it as
    // before (no fork tag on the wire).
    let mut m = mesh(4, Y, &[2, 3], &[1]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    let rung: Vec<usize> = [2, 3]
        .into_iter()
        .filter(|&i| !m.calls_delivered[i].is_empty())
        .collect();
    assert_eq!(rung.len(), 1, "{rung:?}");
    assert_eq!(m.calls_delivered[rung[0]][0].fork, None);
    assert!(m.cores[0].fork_group("c1").is_none());

    // A fork reaching it anyway (from a relay that knows better) is
    // refused there, never carried on without its tag.
    let before = m.by_type.get("call_signal").copied().unwrap_or(0);
    let known = m.cores[1].origins_of(&B)[0];
    let tagged = CallSignal {
        fork: Some(known),
        ..offer("c9")
    };
    assert!(m.send_as(0, 1, tagged.message(vec![id_of(0)])));
    m.settle(60).unwrap();
    assert_eq!(m.cores[1].call_counters().forks_unsent, 1);
    assert!(m.cores[1].call_leg(&leg_key("c9", Some(known))).is_none());
    assert!(m.calls_delivered[2].len() + m.calls_delivered[3].len() == 1);
    assert_eq!(
        m.by_type.get("call_signal").copied().unwrap_or(0) - before,
        1,
        "its refusal, back to the sender"
    );
}

#[test]
fn a_fork_whose_relay_lost_the_callee_is_refused_and_the_other_rings_on() {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    // Relay 3's registration goes while the offer is on its way: 3 has no
    // B; its refusal ends its fork only.
    m.input(0, Input::LocalCall(offer("c1")));
    online(&mut m, 3, false);
    m.settle(60).unwrap();
    assert!(kinds(&m, 0).is_empty(), "{:?}", kinds(&m, 0));
    assert_eq!(kinds(&m, 2), ["offer"]);
    from_callee(&mut m, 2, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer"]);
    assert_eq!(
        m.cores[0].fork_group("c1").unwrap().answered,
        Some(id_of(2))
    );
}

#[test]
fn a_relay_the_callee_is_on_may_carry_the_fork_to_another_of_theirs() {
    // Chain 0 - 1 - 2, B on 1 and on 2: relay 1 rings B and carries the
    // fork to relay 2; its signal service's steps (by call id alone) are
    // its own fork's.
    let mut m = mesh(3, &[(0, 1), (1, 2)], &[1, 2], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 1), ["offer"]);
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(
        m.cores[1].call_count(),
        2,
        "its own fork and the one it carries"
    );
    from_callee(&mut m, 1, CallEvent::Ringing { waiting: false });
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing"]);
    from_callee(&mut m, 2, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer"]);
    assert_eq!(kinds(&m, 1), ["offer", "hangup"]);
    assert_eq!(reasons(&m, 1), [HangupReason::AnsweredElsewhere]);
    let room = call_room_id("c1");
    assert!((0..3).all(|i| m.call_bridges[i].contains(&room)));
    let carried = m.cores[1]
        .call_leg(&leg_key("c1", Some(id_of(2))))
        .expect("relay 1 carries the fork that answered");
    assert!(carried.answered && !carried.callee_here);
    // A hold from the laptop's side crosses relay 1 to the caller.
    from_callee(
        &mut m,
        2,
        CallEvent::Hold {
            sealed: vec![7; wzp_proto::hold::SEALED_HOLD_LEN],
        },
    );
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer", "hold"]);
    m.input(
        0,
        Input::LocalCall(signal("c1", None, hangup(HangupReason::Normal))),
    );
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 2), [HangupReason::Normal]);
    assert!((0..3).all(|i| m.cores[i].call_count() == 0));
    assert!((0..3).all(|i| !m.call_bridges[i].contains(&room)));
}

#[test]
fn a_local_hangup_for_a_call_no_fork_went_for_is_not_an_unknown_call() {
    // B on the caller's relay alone: the fork request is answered
    // not_online at once; the devices here answering before that reached
    // the signal service sends a hangup the core never carried.
    let mut m = mesh(4, Y, &[0], &[]);
    m.input(0, Input::LocalFork(offer("c3")));
    m.input(
        0,
        Input::LocalCall(signal("c3", None, hangup(HangupReason::AnsweredElsewhere))),
    );
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].call_counters().unknown_call, 0);
    // Any other step for a call not carried is still counted.
    m.input(0, Input::LocalCall(signal("c3", None, answer())));
    assert_eq!(m.cores[0].call_counters().unknown_call, 1);
}

#[test]
fn a_fork_whose_path_loses_a_link_while_it_rings_moves_and_its_answer_takes_the_call() {
    // 0-1-2 and 0-4-2 to the phone's relay 2, 1-3 to the laptop's relay 3.
    let mut m = mesh(5, &[(0, 1), (1, 2), (0, 4), (4, 2), (1, 3)], &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(kinds(&m, 3), ["offer"]);
    let phone = leg_key("c1", Some(id_of(2)));
    let first = m.cores[0].call_leg(&phone).unwrap().toward_callee.unwrap();
    let mid = m.index_of(first).unwrap();
    let other = if mid == 1 { 4 } else { 1 };
    // The link from the phone's fork's middle relay to relay 2 dies.
    m.cut(mid, 2);
    let mut rounds = 0;
    while m.cores[2]
        .call_leg(&phone)
        .and_then(|l| l.toward_caller)
        .and_then(|r| m.index_of(r))
        != Some(other)
    {
        m.step();
        rounds += 1;
        assert!(rounds < 400, "the phone's fork never moved");
    }
    m.settle(60).unwrap();
    // The laptop's fork rang on untouched, and the caller heard nothing.
    assert!(kinds(&m, 0).is_empty(), "{:?}", kinds(&m, 0));
    assert!(m.cores[0].call_counters().reroutes_sent >= 1);
    from_callee(&mut m, 2, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer"]);
    assert_eq!(reasons(&m, 3), [HangupReason::AnsweredElsewhere]);
    let room = call_room_id("c1");
    for i in [0, other, 2] {
        assert!(m.call_bridges[i].contains(&room), "relay {i} bridges");
    }
    assert!(!m.call_bridges[mid].contains(&room));
}

#[test]
fn each_link_carries_one_presence_table_and_a_mixed_mesh_still_knows_everyone() {
    // 0 -6- 1 -5- 2 and 1 -6- 3: relay 2 speaks version 5. B on 2 and 3,
    // C on 3.
    const C: Fingerprint = Fingerprint([0xc3; 16]);
    let mut m = mesh(4, Y, &[2, 3], &[2]);
    m.input(
        3,
        Input::LocalPresence {
            fingerprint: C,
            online: true,
        },
    );
    m.settle(60).unwrap();
    // Relay 1 hears B on 2 in `presence_update` and passes it on in
    // `presence_origins`: relay 0 knows both of B's relays.
    assert_eq!(m.cores[0].origins_of(&B), ids(&[2, 3]));
    // Relay 2 hears of C (announced on version 6 links only) in
    // `presence_update`, by its nearest relay.
    assert_eq!(
        m.cores[2].route(&C),
        super::super::Route::Via(vec![id_of(1), id_of(3)])
    );
    // A withdrawal crosses over the same way.
    online(&mut m, 2, false);
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].origins_of(&B), ids(&[3]));
    online(&mut m, 2, true);
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].origins_of(&B), ids(&[2, 3]));

    // A call from 0 forks to both; the fork to 2 cannot cross the version
    // 5 link and ends there, the one to 3 rings and takes the call.
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    assert!(kinds(&m, 2).is_empty());
    assert_eq!(kinds(&m, 3), ["offer"]);
    assert_eq!(m.cores[1].call_counters().forks_unsent, 1);
    assert!(
        kinds(&m, 0).is_empty(),
        "the caller waits for the other fork"
    );
    from_callee(&mut m, 3, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["answer"]);
}

/// `A` on relay 0 calls `B`, on relays 2 and 3 (`Y`): a fork to each.
fn offered_to_both() -> Mesh {
    let mut m = mesh(4, Y, &[2, 3], &[]);
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    m
}

/// No relay carries a call any more.
fn all_gone(m: &Mesh) {
    for i in 0..m.cores.len() {
        assert_eq!(m.cores[i].call_count(), 0, "relay {i}");
    }
}

fn busy() -> CallEvent {
    CallEvent::Busy {
        message: Some("in another call".into()),
    }
}

#[test]
fn a_busy_fork_stays_open_until_another_answers_and_hears_it_was_answered_elsewhere() {
    let mut m = offered_to_both();
    // The phone's relay: every device of B there is in another call.
    from_callee(&mut m, 2, busy());
    m.settle(60).unwrap();
    assert!(kinds(&m, 0).is_empty(), "the caller hears nothing yet");
    assert_eq!(kinds(&m, 2), ["offer"], "the busy fork is still open");
    assert_eq!(m.cores[2].call_count(), 1);
    let g = m.cores[0].fork_group("c1").unwrap();
    assert_eq!((g.forks.clone(), g.busy.clone()), (ids(&[3]), ids(&[2])));
    assert_eq!(m.cores[0].call_counters().forks_busy, 1);
    for i in [0, 1] {
        let leg = m.cores[i].call_leg(&leg_key("c1", Some(id_of(2)))).unwrap();
        assert!(leg.busy, "relay {i} marks the fork busy (/calls)");
    }

    from_callee(&mut m, 3, CallEvent::Ringing { waiting: false });
    from_callee(&mut m, 3, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer"]);
    assert_eq!(reasons(&m, 2), [HangupReason::AnsweredElsewhere]);
    assert_eq!(m.cores[2].call_count(), 0);
    assert_eq!(
        m.cores[1].call_count(),
        1,
        "relay 1 carries the answered fork"
    );
}

#[test]
fn busy_forks_with_nothing_left_ringing_end_the_call_busy_and_hear_nobody_took_it() {
    // The laptop rings out: the caller hears busy (the most telling), the
    // busy fork hears busy (its relay tells of a missed call).
    let mut m = offered_to_both();
    from_callee(&mut m, 2, busy());
    from_callee(&mut m, 3, hangup(HangupReason::Timeout));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Busy]);
    assert_eq!(reasons(&m, 2), [HangupReason::Busy]);
    assert!(m.cores[0].fork_group("c1").is_none());
    all_gone(&m);

    // Declined on the laptop: declined for the person, the busy fork told so.
    let mut m = offered_to_both();
    from_callee(&mut m, 2, busy());
    from_callee(&mut m, 3, hangup(HangupReason::Declined));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Declined]);
    assert_eq!(reasons(&m, 2), [HangupReason::DeclinedElsewhere]);

    // Every fork busy: busy at once, each told nobody took it.
    let mut m = offered_to_both();
    from_callee(&mut m, 2, busy());
    from_callee(&mut m, 3, busy());
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Busy]);
    assert_eq!(reasons(&m, 2), [HangupReason::Busy]);
    assert_eq!(reasons(&m, 3), [HangupReason::Busy]);

    // The caller gives up: the busy fork hears that too.
    let mut m = offered_to_both();
    from_callee(&mut m, 2, busy());
    m.settle(60).unwrap();
    m.input(
        0,
        Input::LocalCall(signal("c1", None, hangup(HangupReason::Normal))),
    );
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 2), [HangupReason::Normal]);
    assert_eq!(reasons(&m, 3), [HangupReason::Normal]);
    all_gone(&m);
}

#[test]
fn with_devices_ringing_on_the_callers_relay_a_busy_fork_waits_for_their_outcome() {
    let mut m = mesh(4, Y, &[0, 2, 3], &[]);
    m.input(0, Input::LocalFork(offer("c1")));
    m.settle(60).unwrap();
    from_callee(&mut m, 2, busy());
    from_callee(&mut m, 3, hangup(HangupReason::NotOnline));
    m.settle(60).unwrap();
    // The device here still rings: nothing is decided yet.
    assert!(reasons(&m, 0).is_empty(), "{:?}", kinds(&m, 0));
    assert_eq!(m.cores[0].fork_group("c1").unwrap().busy, ids(&[2]));
    // It answers: the signal service hangs the forks up.
    m.input(
        0,
        Input::LocalCall(signal("c1", None, hangup(HangupReason::AnsweredElsewhere))),
    );
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 2), [HangupReason::AnsweredElsewhere]);
    all_gone(&m);
}

#[test]
fn a_relay_towards_the_caller_that_predates_busy_gets_a_hangup_and_the_fork_ends_both_ways() {
    // Relay 1 at version 6: forks, but no `busy`.
    let mut m = Mesh::new(4, Y, &[], 7);
    m.cores[1].set_version(6);
    m.settle(60).expect("links up");
    for i in [2, 3] {
        online(&mut m, i, true);
    }
    m.settle(60).expect("presence spreads");
    m.input(0, Input::LocalCall(offer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    from_callee(&mut m, 2, busy());
    m.settle(60).unwrap();
    // Relay 2 ends the fork itself: its devices hear of the missed call at
    // once (the hangup back), relay 1 and the caller's relay see a busy
    // refusal of that fork, and the laptop rings on.
    assert_eq!(reasons(&m, 2), [HangupReason::Busy]);
    assert_eq!(m.cores[2].call_counters().busy_ended_early, 1);
    assert_eq!(m.cores[2].call_count(), 0);
    assert_eq!(m.cores[1].call_count(), 1);
    let g = m.cores[0].fork_group("c1").unwrap();
    assert_eq!((g.forks.clone(), g.busy.clone()), (ids(&[3]), Vec::new()));
    assert_eq!(m.cores[0].call_counters().forks_busy, 0, "no busy crossed");
    from_callee(&mut m, 3, hangup(HangupReason::Timeout));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Busy]);
}

#[test]
fn a_busy_step_out_of_place_is_counted_and_dropped() {
    // On an answered fork, or from the caller's side: nothing moves.
    let mut m = offered_to_both();
    from_callee(&mut m, 3, answer());
    m.settle(60).unwrap();
    let before = m.cores[3].call_counters().unknown_call;
    from_callee(&mut m, 3, busy());
    m.settle(60).unwrap();
    assert_eq!(m.cores[3].call_counters().unknown_call, before + 1);
    assert_eq!(kinds(&m, 0), ["answer"]);
    let before = m.cores[0].call_counters().unknown_call;
    m.input(0, Input::LocalCall(signal("c1", None, busy())));
    m.settle(60).unwrap();
    assert_eq!(m.cores[0].call_counters().unknown_call, before + 1);
    assert_eq!(m.cores[3].call_count(), 1, "the call goes on");
}

#[test]
fn busy_on_the_callers_relay_and_busy_on_every_other_the_caller_hears_busy_at_once() {
    // B in a call on the caller's relay (0): its other relays ring, nothing
    // here; when they are busy too, nothing is left to wait for.
    let mut m = mesh(4, Y, &[0, 2, 3], &[]);
    m.input(0, Input::LocalForkElsewhere(offer("c1")));
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 2), ["offer"]);
    assert_eq!(kinds(&m, 3), ["offer"]);
    assert!(!m.cores[0].fork_group("c1").unwrap().also_here);
    from_callee(&mut m, 2, busy());
    from_callee(&mut m, 3, busy());
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::Busy]);
    assert_eq!(reasons(&m, 2), [HangupReason::Busy]);
    assert_eq!(reasons(&m, 3), [HangupReason::Busy]);
    all_gone(&m);

    // On no other relay: not online at once (the signal service says busy).
    let mut m = mesh(4, Y, &[0], &[]);
    m.input(0, Input::LocalForkElsewhere(offer("c2")));
    m.settle(60).unwrap();
    assert_eq!(reasons(&m, 0), [HangupReason::NotOnline]);
}

#[test]
fn a_busy_fork_that_rings_later_is_a_ringing_fork_again_and_may_take_the_call() {
    let mut m = offered_to_both();
    from_callee(&mut m, 2, busy());
    from_callee(&mut m, 3, CallEvent::Ringing { waiting: false });
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing"]);
    // The device on relay 2 is free now: its fork rings.
    from_callee(&mut m, 2, CallEvent::Ringing { waiting: false });
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing"], "the caller hears ringing once");
    let g = m.cores[0].fork_group("c1").unwrap();
    assert!(g.busy.is_empty() && g.forks.len() == 2, "{g:?}");
    for i in [0, 1] {
        let leg = m.cores[i].call_leg(&leg_key("c1", Some(id_of(2)))).unwrap();
        assert!(!leg.busy, "relay {i} no longer marks it busy");
    }
    from_callee(&mut m, 2, answer());
    m.settle(60).unwrap();
    assert_eq!(kinds(&m, 0), ["ringing", "answer"]);
    assert_eq!(reasons(&m, 3), [HangupReason::AnsweredElsewhere]);
}
