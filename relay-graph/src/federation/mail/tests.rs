//! The `mail` flood and its source-routed steps in the in-memory mesh.

use wzp_proto::federation::{FederationMessage, MailEvent, MailSignal};
use wzp_proto::Fingerprint;

use super::super::mesh::{id_of, Mesh};
use super::super::Input;

fn bob() -> Fingerprint {
    Fingerprint([7; 16])
}

fn query(m: &mut Mesh, at: usize, n: u64) {
    m.input(
        at,
        Input::LocalMail(MailSignal {
            path: Vec::new(),
            event: MailEvent::KeyQuery {
                query: n,
                who: bob(),
            },
        }),
    );
}

fn queries_seen(m: &Mesh, i: usize) -> Vec<Vec<usize>> {
    m.mail_delivered[i]
        .iter()
        .filter(|s| matches!(s.event, MailEvent::KeyQuery { .. }))
        .map(|s| s.path.iter().map(|r| m.index_of(*r).unwrap()).collect())
        .collect()
}

#[test]
fn a_query_reaches_every_relay_of_a_ring_once_and_its_answer_comes_back_unsalted() {
    // 0-1-2-3-0: two ways to 2.
    let mut m = Mesh::new(4, &[(0, 1), (1, 2), (2, 3), (3, 0)], &[], 3);
    m.settle(60).expect("links up");
    query(&mut m, 0, 41);
    m.settle(60).expect("the flood ends");
    assert!(
        queries_seen(&m, 0).is_empty(),
        "its own query is not handed back"
    );
    for i in 1..4 {
        assert_eq!(
            queries_seen(&m, i).len(),
            1,
            "relay {i}: {:?}",
            queries_seen(&m, i)
        );
    }
    assert_eq!(queries_seen(&m, 1), vec![vec![0]]);
    let dropped: u64 = (0..4)
        .map(|i| m.cores[i].mail_counters().queries_dropped)
        .sum();
    assert!(
        dropped >= 1,
        "the copy that came the other way round is dropped"
    );
    // Relay 2 answers along the way the query came; relay 0 gets its own
    // number back.
    let s = m.mail_delivered[2][0].clone();
    let MailEvent::KeyQuery { query: wire, .. } = s.event else {
        unreachable!()
    };
    assert_ne!(wire, 41, "the number on the wire is salted");
    let key =
        wzp_proto::voice_message::MessageKey::of(&wzp_proto::Seed::from_bytes([7; 32]).identity());
    m.input(
        2,
        Input::LocalMail(MailSignal {
            path: s.path.clone(),
            event: MailEvent::Key {
                query: wire,
                who: bob(),
                key,
                seen_s: 5,
            },
        }),
    );
    m.settle(60).expect("the answer travels");
    let back = m.mail_delivered[0].last().expect("an answer").clone();
    let mut way = s.path.clone();
    way.push(id_of(2));
    assert_eq!(back.path, way);
    assert!(matches!(
        back.event,
        MailEvent::Key {
            query: 41,
            seen_s: 5,
            ..
        }
    ));
    // A part along that way reaches relay 2 only; its outcome comes back.
    let part = MailEvent::Part {
        id: "m1".into(),
        from: Fingerprint([1; 16]),
        to: bob(),
        part: 0,
        parts: 1,
        data: vec![1; 100],
        age_ms: None,
    };
    m.input(
        0,
        Input::LocalMail(MailSignal {
            path: way.clone(),
            event: part.clone(),
        }),
    );
    m.settle(60).expect("the part travels");
    assert_eq!(m.mail_delivered[2].last().map(|s| &s.event), Some(&part));
    let between = m.index_of(way[1]).unwrap();
    assert!(!m.mail_delivered[between]
        .iter()
        .any(|s| matches!(s.event, MailEvent::Part { .. })));
}

#[test]
fn a_step_from_a_relay_the_path_does_not_put_there_is_dropped() {
    let mut m = Mesh::new(3, &[(0, 1), (1, 2), (0, 2)], &[], 4);
    m.settle(60).expect("links up");
    // Relay 2 sends a part whose path says it came 0 -> 1 -> 2... to 1.
    let forged = FederationMessage::Mail {
        path: vec![id_of(0), id_of(1), id_of(2)],
        event: MailEvent::Part {
            id: "m1".into(),
            from: Fingerprint([1; 16]),
            to: bob(),
            part: 0,
            parts: 1,
            data: vec![1; 10],
            age_ms: Some(5),
        },
    };
    assert!(m.send_as(2, 1, forged));
    // And a query whose path does not end with it.
    let q = FederationMessage::Mail {
        path: vec![id_of(0)],
        event: MailEvent::KeyQuery {
            query: 1,
            who: bob(),
        },
    };
    assert!(m.send_as(2, 1, q));
    m.settle(60).expect("nothing moves");
    let c = m.cores[1].mail_counters();
    assert_eq!(
        (c.misrouted, c.queries_dropped, c.delivered),
        (1, 1, 0),
        "{c:?}"
    );
    assert!(m.mail_delivered[2].is_empty() && m.mail_delivered[0].is_empty());
}

#[test]
fn a_peer_older_than_mail_is_sent_none_and_a_lone_query_comes_straight_back() {
    let mut m = Mesh::new(2, &[(0, 1)], &[], 6);
    m.cores[1].set_version(super::MAIL_VERSION - 1);
    m.settle(40).expect("settles");
    query(&mut m, 0, 9);
    m.settle(40).expect("settles");
    assert_eq!(m.by_type.get("mail"), None, "{:?}", m.by_type);
    let back = m.mail_delivered[0].last().expect("handed back");
    assert!(back.path.is_empty());
    assert!(matches!(back.event, MailEvent::KeyQuery { query: 9, .. }));
    assert_eq!(m.cores[1].counters().garbage, 0);
}

#[test]
fn a_person_seen_on_another_relay_after_this_one_is_said_reachable_there_once() {
    let mut m = Mesh::new(3, &[(0, 1), (1, 2)], &[], 8);
    m.settle(60).expect("links up");
    let on = |m: &mut Mesh, i: usize, online: bool| {
        m.input(
            i,
            Input::LocalPresence {
                fingerprint: bob(),
                online,
            },
        );
        m.settle(60).expect("presence settles");
    };
    on(&mut m, 0, true);
    assert!(m.reachable[0].is_empty(), "here is not elsewhere");
    assert_eq!(
        m.reachable[2],
        vec![(bob(), vec![id_of(2), id_of(1), id_of(0)])]
    );
    on(&mut m, 0, false);
    on(&mut m, 2, true);
    assert_eq!(
        m.reachable[0],
        vec![(bob(), vec![id_of(0), id_of(1), id_of(2)])]
    );
    // Online on both ends: relay 0 has him here; when he leaves it, the
    // way to relay 2 is said again.
    on(&mut m, 0, true);
    assert_eq!(m.reachable[0].len(), 1);
    on(&mut m, 0, false);
    assert_eq!(m.reachable[0].len(), 2);
    assert_eq!(m.reachable[0][1].1, vec![id_of(0), id_of(1), id_of(2)]);
}
