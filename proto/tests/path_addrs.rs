//! A party's addresses sealed for the other party (`call_path`,
//! `wzp_proto::path_addrs`), through the call machines and against a relay
//! that tries to read, forge, alter, reflect or replay them.

use std::net::SocketAddr;

use wzp_proto::direct_call::{call_context, CallEvent, CallReady, IncomingCall, OutgoingCall};
use wzp_proto::handshake::{EphemeralKey, Initiator, Responder, SessionKeys};
use wzp_proto::identity::Identity;
use wzp_proto::path_addrs::{
    PathAddrs, PathAddrsError, MAX_PATH_ADDRS_PLAIN, MAX_SEALED_PATH, MIN_SEALED_PATH,
    PATH_ADDRS_NONCE_LEN, PATH_ADDRS_TAG_LEN,
};
use wzp_proto::signal::{AcceptMode, HangupReason, SignalMessage, MAX_LOCAL_ADDRS};
use wzp_proto::{Decoded, FrameDecoder, Seed};

fn id(n: u8) -> Identity {
    Seed::from_bytes([n; 32]).identity()
}

fn eph(n: u8) -> EphemeralKey {
    EphemeralKey::from_bytes([n; 32])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Alice's addresses: observed IPv4, four own-network ones (IPv4 and IPv6).
fn alice_addrs() -> PathAddrs {
    PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("198.51.100.7:40000")),
        local: vec![
            addr("10.0.0.2:40000"),
            addr("192.168.1.20:40001"),
            addr("[fd00::2]:40000"),
            addr("[2001:db8:1::2]:40002"),
        ],
    }
}

/// Bob's addresses: observed IPv6, two own-network ones.
fn bob_addrs() -> PathAddrs {
    PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("[2001:db8:ffff::9]:51000")),
        local: vec![addr("172.16.4.4:51000"), addr("[fe80::1]:51001")],
    }
}

fn setup(call_id: &str, peer: &Identity) -> SignalMessage {
    SignalMessage::CallSetup {
        peer_mapping: Default::default(),
        observed_addr: None,
        call_id: call_id.into(),
        room: format!("call-{call_id}"),
        relay_addr: "relay.example:4433".into(),
        peer_direct_addr: None,
        peer_local_addrs: Vec::new(),
        peer_fingerprint: Some(peer.fingerprint()),
    }
}

/// What the relay carries: encoded to a frame and read back, as it would be.
fn wire(msg: &SignalMessage) -> SignalMessage {
    let frame = wzp_proto::signal::encode_frame(msg).unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&frame).unwrap();
    match dec.next_frame().unwrap() {
        Some(Decoded::Message(m)) => m,
        other => panic!("{} did not survive the wire: {other:?}", msg.type_name()),
    }
}

/// A call from `caller` to `callee` (seeds) with id `call_id`, `n` picking
/// the ephemeral keys, up to and including the callee's accept (answer not
/// yet delivered).
fn offered(
    call_id: &str,
    caller: u8,
    callee: u8,
    n: u8,
    mode: AcceptMode,
) -> (OutgoingCall, IncomingCall, SignalMessage) {
    let mut out = OutgoingCall::start(
        &id(caller),
        eph(n),
        call_id.into(),
        id(callee).fingerprint(),
        None,
    )
    .unwrap();
    let offer = wire(&out.poll_send().unwrap());
    let mut inc = IncomingCall::from_offer(&offer).unwrap();
    inc.accept(&id(callee), eph(n.wrapping_add(100)), mode, None)
        .unwrap();
    let answer = wire(&inc.poll_send().unwrap());
    (out, inc, answer)
}

/// A full call: offer, accept, answer, call_setup, confirm. Both sides end
/// answered with matching keys and the callee's accept mode.
struct Call {
    out: OutgoingCall,
    inc: IncomingCall,
    caller: Box<CallReady>,
    callee: Box<CallReady>,
}

fn answered(call_id: &str, caller: u8, callee: u8, n: u8, mode: AcceptMode) -> Call {
    let (mut out, mut inc, answer) = offered(call_id, caller, callee, n, mode);
    assert!(out.handle(&setup(call_id, &id(callee))).is_none());
    let Some(CallEvent::Answered(a)) = out.handle(&answer) else {
        panic!("caller not answered")
    };
    let confirm = wire(&out.poll_send().unwrap());
    assert!(out.poll_send().is_none());
    assert!(inc.handle(&setup(call_id, &id(caller))).is_none());
    let Some(CallEvent::Answered(b)) = inc.handle(&confirm) else {
        panic!("callee not answered")
    };
    assert!(inc.poll_send().is_none());
    assert_eq!(a.sas, b.sas);
    assert_eq!(a.keys.send_key(), b.keys.recv_key());
    assert_eq!(a.accept_mode, mode);
    assert_eq!(b.accept_mode, mode);
    Call {
        out,
        inc,
        caller: a,
        callee: b,
    }
}

fn trusted(call_id: &str) -> Call {
    answered(call_id, 1, 2, 3, AcceptMode::AcceptTrusted)
}

/// The `call_path` a machine queued; nothing else is queued after it.
fn queued_path(call_id: &str, next: Option<SignalMessage>, then: Option<SignalMessage>) -> Vec<u8> {
    assert!(then.is_none(), "more than the call_path queued: {then:?}");
    match next.map(|m| wire(&m)) {
        Some(SignalMessage::CallPath { call_id: c, sealed }) => {
            assert_eq!(c, call_id);
            sealed
        }
        other => panic!("expected a call_path, got {other:?}"),
    }
}

fn caller_path(c: &mut Call, addrs: &PathAddrs, nonce: u8) -> Vec<u8> {
    assert!(c.out.share_path(addrs, [nonce; 12]));
    let id = c.out.call_id().to_string();
    let next = c.out.poll_send();
    queued_path(&id, next, c.out.poll_send())
}

fn callee_path(c: &mut Call, addrs: &PathAddrs, nonce: u8) -> Vec<u8> {
    assert!(c.inc.share_path(addrs, [nonce; 12]));
    let id = c.inc.call_id().to_string();
    let next = c.inc.poll_send();
    queued_path(&id, next, c.inc.poll_send())
}

fn path_msg(call_id: &str, sealed: &[u8]) -> SignalMessage {
    SignalMessage::CallPath {
        call_id: call_id.into(),
        sealed: sealed.to_vec(),
    }
}

fn peer_path(ev: Option<CallEvent>) -> PathAddrs {
    match ev {
        Some(CallEvent::PeerPath(a)) => a,
        other => panic!("expected PeerPath, got {other:?}"),
    }
}

/// Raw keys of a handshake between `a` and `b` (seeds) for `call_id`:
/// (initiator's, responder's).
fn handshake(a: u8, b: u8, n: u8, call_id: &str) -> (SessionKeys, SessionKeys) {
    let ctx = call_context(call_id);
    let (i, init) = Initiator::start(&id(a), eph(n), &ctx, Some(id(b).fingerprint()));
    let (r, resp) = Responder::respond(
        &id(b),
        eph(n.wrapping_add(1)),
        &ctx,
        &init,
        Some(id(a).fingerprint()),
    )
    .unwrap();
    let (ik, fin) = i.finish(&resp).unwrap();
    let rk = r.confirm(&fin).unwrap();
    (ik, rk)
}

// ---- through the call machines ----------------------------------------

#[test]
fn a_trusted_call_carries_each_partys_addresses_to_the_other() {
    let mut c = trusted("p1");
    let (mine, theirs) = (alice_addrs(), bob_addrs());

    // The caller seals first; the callee opens exactly its addresses.
    let sealed = caller_path(&mut c, &mine, 7);
    // Padded: the length tells nothing of how many addresses, or which.
    assert_eq!(
        sealed.len(),
        PATH_ADDRS_NONCE_LEN + MAX_PATH_ADDRS_PLAIN + PATH_ADDRS_TAG_LEN
    );
    assert_eq!(sealed.len(), MAX_SEALED_PATH);
    // The relay cannot read them: the plaintext is not in what it carries.
    let plain = mine.encode();
    assert!(!sealed.windows(plain.len()).any(|w| w == plain));
    for a in mine.local.iter().chain(&mine.observed) {
        let port = a.port().to_be_bytes();
        let ip = match a.ip() {
            std::net::IpAddr::V4(ip) => ip.octets().to_vec(),
            std::net::IpAddr::V6(ip) => ip.octets().to_vec(),
        };
        let needle = [ip, port.to_vec()].concat();
        assert!(!sealed.windows(needle.len()).any(|w| w == needle), "{a}");
    }
    assert_eq!(peer_path(c.inc.handle(&path_msg("p1", &sealed))), mine);

    // The callee answers with its own; the caller reads them.
    let sealed = callee_path(&mut c, &theirs, 8);
    assert_eq!(peer_path(c.out.handle(&path_msg("p1", &sealed))), theirs);

    // Either side may share again (a new address), with a fresh nonce.
    let later = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("203.0.113.1:1")),
        local: vec![],
    };
    let sealed = caller_path(&mut c, &later, 9);
    assert_eq!(peer_path(c.inc.handle(&path_msg("p1", &sealed))), later);

    // Nothing to share but the empty set still seals and opens.
    let sealed = callee_path(&mut c, &PathAddrs::default(), 10);
    assert_eq!(sealed.len(), MIN_SEALED_PATH);
    assert!(peer_path(c.out.handle(&path_msg("p1", &sealed))).is_empty());

    // The machines are still up.
    assert!(!c.out.is_ended() && !c.inc.is_ended());
}

#[test]
fn more_than_four_own_addresses_reach_the_peer_as_four() {
    let mut c = trusted("p2");
    let mut many = alice_addrs();
    many.local.push(addr("10.9.9.9:1"));
    many.local.push(addr("[fd00::9]:2"));
    assert_eq!(many.local.len(), MAX_LOCAL_ADDRS + 2);
    let sealed = caller_path(&mut c, &many, 1);
    let got = peer_path(c.inc.handle(&path_msg("p2", &sealed)));
    assert_eq!(got.observed, many.observed);
    assert_eq!(got.local, many.local[..MAX_LOCAL_ADDRS]);
}

#[test]
fn share_path_is_refused_unless_trusted_and_keyed() {
    let a = alice_addrs();

    // The callee answered accept_generic: neither side may share.
    let mut c = answered("g1", 1, 2, 3, AcceptMode::AcceptGeneric);
    assert_eq!(c.caller.accept_mode, AcceptMode::AcceptGeneric);
    assert!(!c.inc.share_path(&a, [1; 12]), "generic callee");
    assert!(c.inc.poll_send().is_none());
    assert!(!c.out.share_path(&a, [1; 12]), "caller of a generic callee");
    assert!(c.out.poll_send().is_none());
    // Nor does either take addresses, even genuine ones sealed with this
    // call's keys (a client that shares against its callee's choice).
    let to_callee = a.seal(&c.caller.keys, "g1", [2; 12]);
    let to_caller = bob_addrs().seal(&c.callee.keys, "g1", [3; 12]);
    assert_eq!(
        PathAddrs::open(&to_callee, &c.callee.keys, "g1").as_ref(),
        Ok(&a),
        "genuine"
    );
    assert!(c.inc.handle(&path_msg("g1", &to_callee)).is_none());
    assert!(c.out.handle(&path_msg("g1", &to_caller)).is_none());

    // A trusted callee before the caller's confirm arrived (and before it
    // even answered); the caller before the answer arrived.
    let mut out =
        OutgoingCall::start(&id(1), eph(3), "t1".into(), id(2).fingerprint(), None).unwrap();
    let offer = out.poll_send().unwrap();
    assert!(!out.share_path(&a, [1; 12]), "caller before the answer");
    assert!(out.poll_send().is_none());
    let mut inc = IncomingCall::from_offer(&offer).unwrap();
    assert!(!inc.share_path(&a, [1; 12]), "callee still ringing");
    assert!(inc.poll_send().is_none());
    inc.accept(&id(2), eph(103), AcceptMode::AcceptTrusted, None)
        .unwrap();
    let answer = inc.poll_send().unwrap();
    assert!(!inc.share_path(&a, [1; 12]), "callee before the confirm");
    assert!(inc.poll_send().is_none());
    // The caller may share once the trusted answer is in (setup or not);
    // the callee once the confirm verified.
    assert!(out.handle(&answer).is_none());
    let confirm = out.poll_send().unwrap();
    assert!(out.share_path(&a, [1; 12]));
    assert!(matches!(
        out.poll_send(),
        Some(SignalMessage::CallPath { .. })
    ));
    assert!(inc.handle(&confirm).is_none());
    assert!(inc.share_path(&a, [1; 12]));
    assert!(matches!(
        inc.poll_send(),
        Some(SignalMessage::CallPath { .. })
    ));

    // A confirm that does not verify ends the callee: nothing to share.
    let (_, mut inc, _) = offered("t2", 1, 2, 3, AcceptMode::AcceptTrusted);
    let bad = SignalMessage::CallConfirm {
        call_id: Some("t2".into()),
        handshake: vec![0; 64],
    };
    assert!(matches!(inc.handle(&bad), Some(CallEvent::Failed { .. })));
    let _ = inc.poll_send();
    assert!(!inc.share_path(&a, [1; 12]));
    assert!(inc.poll_send().is_none());

    // A trusted call that ended: neither side shares any more.
    let mut c = trusted("t3");
    c.out.hangup();
    let hangup = c.out.poll_send().unwrap();
    assert!(matches!(
        c.inc.handle(&hangup),
        Some(CallEvent::HungUp { .. })
    ));
    assert!(!c.out.share_path(&a, [1; 12]));
    assert!(!c.inc.share_path(&a, [1; 12]));
    assert!(c.out.poll_send().is_none() && c.inc.poll_send().is_none());

    // A rejected call.
    let mut out =
        OutgoingCall::start(&id(1), eph(3), "t4".into(), id(2).fingerprint(), None).unwrap();
    let mut inc = IncomingCall::from_offer(&out.poll_send().unwrap()).unwrap();
    inc.reject();
    assert!(matches!(
        out.handle(&inc.poll_send().unwrap()),
        Some(CallEvent::Rejected)
    ));
    assert!(!out.share_path(&a, [1; 12]) && !inc.share_path(&a, [1; 12]));
    assert!(out.poll_send().is_none() && inc.poll_send().is_none());
}

// ---- an attacker on the way ------------------------------------------

#[test]
fn a_relay_cannot_forge_addresses_with_keys_of_its_own_handshakes() {
    let mut c = trusted("f1");
    let fake = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("203.0.113.66:6666")),
        local: vec![addr("10.6.6.6:6666")],
    };

    // The relay (seed 9) runs a call of its own with each party, with the
    // same call id even, and seals with those keys for the real call.
    let relay_keys = |callee: u8| {
        let r = answered("f1", 9, callee, 50 + callee, AcceptMode::AcceptTrusted);
        (r.caller.keys.clone(), r.callee.keys.clone())
    };
    let (to_bob, bob_side) = relay_keys(2);
    let (to_alice, alice_side) = relay_keys(1);
    for keys in [&to_bob, &bob_side, &to_alice, &alice_side] {
        for nonce in [[0; 12], [0xa5; 12]] {
            let forged = path_msg("f1", &fake.seal(keys, "f1", nonce));
            assert!(c.inc.handle(&forged).is_none());
            assert!(c.out.handle(&forged).is_none());
        }
    }

    // Keys of a raw handshake between two identities the relay holds, for
    // this call's context; and keys the relay made up from thin air.
    let (ik, rk) = handshake(9, 8, 60, "f1");
    for keys in [&ik, &rk] {
        let forged = path_msg("f1", &fake.seal(keys, "f1", [1; 12]));
        assert!(c.inc.handle(&forged).is_none());
        assert!(c.out.handle(&forged).is_none());
    }
    // Random bytes of every length a relay would carry.
    for len in 0..=MAX_SEALED_PATH + 1 {
        let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
        assert!(c.inc.handle(&path_msg("f1", &junk)).is_none(), "{len}");
        assert!(c.out.handle(&path_msg("f1", &junk)).is_none(), "{len}");
    }
    // With the party's real identity but another handshake: the relay
    // cannot run that one (it has no secret key), but a different
    // transcript alone must already give another key.
    let (ik, _) = handshake(1, 2, 70, "f1");
    let forged = path_msg("f1", &fake.seal(&ik, "f1", [2; 12]));
    assert!(c.inc.handle(&forged).is_none());

    // The genuine message still goes through afterwards.
    let sealed = caller_path(&mut c, &alice_addrs(), 3);
    assert_eq!(
        peer_path(c.inc.handle(&path_msg("f1", &sealed))),
        alice_addrs()
    );
}

#[test]
fn one_flipped_bit_anywhere_in_a_sealed_path_is_dropped() {
    let mut c = trusted("b1");
    for (from_caller, sealed) in [
        (true, caller_path(&mut c, &alice_addrs(), 4)),
        (false, callee_path(&mut c, &bob_addrs(), 5)),
    ] {
        let receiver_keys = if from_caller {
            &c.callee.keys
        } else {
            &c.caller.keys
        };
        for pos in 0..sealed.len() {
            for bit in 0..8 {
                let mut t = sealed.clone();
                t[pos] ^= 1 << bit;
                let m = path_msg("b1", &t);
                let ev = if from_caller {
                    c.inc.handle(&m)
                } else {
                    c.out.handle(&m)
                };
                assert!(
                    ev.is_none(),
                    "byte {pos} bit {bit} from_caller {from_caller}"
                );
                assert_eq!(
                    PathAddrs::open(&t, receiver_keys, "b1"),
                    Err(PathAddrsError::NotAuthentic),
                    "byte {pos} bit {bit}"
                );
            }
        }
        // Cut short or grown by a byte.
        let mut t = sealed.clone();
        t.pop();
        assert!(c.inc.handle(&path_msg("b1", &t)).is_none());
        assert!(c.out.handle(&path_msg("b1", &t)).is_none());
        let mut t = sealed.clone();
        t.push(0);
        assert!(c.inc.handle(&path_msg("b1", &t)).is_none());
        assert!(c.out.handle(&path_msg("b1", &t)).is_none());
        // Untouched, it opens.
        let m = path_msg("b1", &sealed);
        let ev = if from_caller {
            c.inc.handle(&m)
        } else {
            c.out.handle(&m)
        };
        let want = if from_caller {
            alice_addrs()
        } else {
            bob_addrs()
        };
        assert_eq!(peer_path(ev), want);
    }
}

#[test]
fn a_partys_own_path_reflected_back_to_it_is_dropped() {
    let mut c = trusted("r1");
    let mine = caller_path(&mut c, &alice_addrs(), 6);
    assert!(c.out.handle(&path_msg("r1", &mine)).is_none());
    assert_eq!(
        PathAddrs::open(&mine, &c.caller.keys, "r1"),
        Err(PathAddrsError::NotAuthentic)
    );
    let theirs = callee_path(&mut c, &bob_addrs(), 6);
    assert!(c.inc.handle(&path_msg("r1", &theirs)).is_none());
    assert_eq!(
        PathAddrs::open(&theirs, &c.callee.keys, "r1"),
        Err(PathAddrsError::NotAuthentic)
    );
    // Each still opens where it was meant to go.
    assert_eq!(
        peer_path(c.inc.handle(&path_msg("r1", &mine))),
        alice_addrs()
    );
    assert_eq!(
        peer_path(c.out.handle(&path_msg("r1", &theirs))),
        bob_addrs()
    );
}

#[test]
fn a_path_from_another_call_between_the_same_two_is_dropped() {
    let mut now = trusted("x1");
    let mut other = answered("x2", 1, 2, 40, AcceptMode::AcceptTrusted);
    let old = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("198.51.100.200:9")),
        local: vec![],
    };
    let from_caller = caller_path(&mut other, &old, 7);
    let from_callee = callee_path(&mut other, &old, 7);

    // As it was sent (call id x2): not this call's message at all.
    assert!(now.inc.handle(&path_msg("x2", &from_caller)).is_none());
    assert!(now.out.handle(&path_msg("x2", &from_callee)).is_none());
    // With the call id rewritten to this call's.
    assert!(now.inc.handle(&path_msg("x1", &from_caller)).is_none());
    assert!(now.out.handle(&path_msg("x1", &from_callee)).is_none());
    // It does not open under this call's keys with its own call id either:
    // the key is the call's, not the two people's.
    assert_eq!(
        PathAddrs::open(&from_caller, &now.callee.keys, "x2"),
        Err(PathAddrsError::NotAuthentic)
    );

    // An earlier call that had the same call id (other ephemeral keys).
    let mut earlier = answered("x1", 1, 2, 41, AcceptMode::AcceptTrusted);
    let stale = caller_path(&mut earlier, &old, 8);
    assert!(now.inc.handle(&path_msg("x1", &stale)).is_none());
    let stale = callee_path(&mut earlier, &old, 8);
    assert!(now.out.handle(&path_msg("x1", &stale)).is_none());

    // It did open in its own call, and this call's own still does.
    assert_eq!(
        peer_path(other.inc.handle(&path_msg("x2", &from_caller))),
        old
    );
    let sealed = caller_path(&mut now, &alice_addrs(), 9);
    assert_eq!(
        peer_path(now.inc.handle(&path_msg("x1", &sealed))),
        alice_addrs()
    );
}

#[test]
fn a_genuine_path_replayed_before_the_answer_or_after_the_end_is_dropped() {
    // A genuine exchange of call z1, recorded by the relay.
    let mut c = trusted("z1");
    let from_caller = caller_path(&mut c, &alice_addrs(), 1);
    let from_callee = callee_path(&mut c, &bob_addrs(), 2);

    // The same call again from the start (same keys once it is keyed): the
    // recorded messages are dropped until each side is keyed.
    let (mut out, mut inc, answer) = offered("z1", 1, 2, 3, AcceptMode::AcceptTrusted);
    assert!(
        inc.handle(&path_msg("z1", &from_caller)).is_none(),
        "callee, not confirmed"
    );
    assert!(
        out.handle(&path_msg("z1", &from_callee)).is_none(),
        "caller, not answered"
    );
    assert!(out.handle(&answer).is_none());
    let confirm = out.poll_send().unwrap();
    assert!(
        inc.handle(&path_msg("z1", &from_caller)).is_none(),
        "callee, not confirmed"
    );
    assert!(inc.handle(&confirm).is_none());
    // Keyed now: the very same bytes open, so it was the state that refused.
    assert_eq!(
        peer_path(inc.handle(&path_msg("z1", &from_caller))),
        alice_addrs()
    );
    assert_eq!(
        peer_path(out.handle(&path_msg("z1", &from_callee))),
        bob_addrs()
    );

    // Ended by the peer's hangup, or by our own: dropped.
    out.hangup();
    let bye = out.poll_send().unwrap();
    assert!(
        out.handle(&path_msg("z1", &from_callee)).is_none(),
        "caller hung up"
    );
    assert!(inc.handle(&bye).is_some());
    assert!(inc.is_ended());
    assert!(
        inc.handle(&path_msg("z1", &from_caller)).is_none(),
        "callee after hangup"
    );

    // Ended by the relay (its hangup to both).
    let relay_bye = SignalMessage::Hangup {
        reason: HangupReason::Error,
        call_id: Some("z1".into()),
        message: None,
    };
    assert!(c.out.handle(&relay_bye).is_some());
    assert!(c.inc.handle(&relay_bye).is_some());
    assert!(c.inc.handle(&path_msg("z1", &from_caller)).is_none());
    assert!(c.out.handle(&path_msg("z1", &from_callee)).is_none());

    // A rejected call never opens one.
    let mut out =
        OutgoingCall::start(&id(1), eph(3), "z1".into(), id(2).fingerprint(), None).unwrap();
    let mut inc = IncomingCall::from_offer(&out.poll_send().unwrap()).unwrap();
    inc.reject();
    assert!(out.handle(&inc.poll_send().unwrap()).is_some());
    assert!(out.handle(&path_msg("z1", &from_callee)).is_none());
    assert!(inc.handle(&path_msg("z1", &from_caller)).is_none());
}

// ---- the plaintext and the sealed form --------------------------------

#[test]
fn decode_reads_back_what_encode_wrote() {
    let values = [
        PathAddrs::default(),
        alice_addrs(),
        bob_addrs(),
        PathAddrs {
            mapping: Default::default(),
            observed: None,
            local: vec![addr("[2001:db8::1]:65535"); MAX_LOCAL_ADDRS],
        },
        PathAddrs {
            mapping: Default::default(),
            observed: Some(addr("1.2.3.4:1")),
            local: vec![],
        },
    ];
    for v in &values {
        let b = v.encode();
        assert!(b.len() <= MAX_PATH_ADDRS_PLAIN);
        assert_eq!(&PathAddrs::decode(&b).unwrap(), v);
    }
    // The exact bytes of one.
    let v = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("192.0.2.1:258")),
        local: vec![addr("[::1]:1")],
    };
    let mut want = vec![1, 1, 4, 192, 0, 2, 1, 1, 2, 1, 6];
    want.extend_from_slice(&[0; 15]);
    want.extend_from_slice(&[1, 0, 1]);
    assert_eq!(v.encode(), want);
}

#[test]
fn encode_keeps_at_most_four_own_addresses() {
    let local: Vec<SocketAddr> = (1..=7)
        .map(|k| SocketAddr::from(([10, 0, 0, k], 4000 + u16::from(k))))
        .collect();
    let v = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("[2001:db8::7]:7")),
        local: local.clone(),
    };
    let b = v.encode();
    assert_eq!(b[2 + 19], MAX_LOCAL_ADDRS as u8);
    let got = PathAddrs::decode(&b).unwrap();
    assert_eq!(got.observed, v.observed);
    assert_eq!(got.local, local[..MAX_LOCAL_ADDRS]);
    // All IPv6 and more than four: the longest plaintext.
    let v6 = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("[2001:db8::7]:7")),
        local: vec![addr("[2001:db8::8]:8"); 9],
    };
    assert_eq!(v6.encode().len(), MAX_PATH_ADDRS_PLAIN);
}

#[test]
fn decode_refuses_bad_plaintexts() {
    use PathAddrsError::Malformed;
    let v4 = |ip: [u8; 4], port: u16| -> Vec<u8> {
        let mut b = vec![4];
        b.extend_from_slice(&ip);
        b.extend_from_slice(&port.to_be_bytes());
        b
    };
    let v6 = |ip: [u8; 16], port: u16| -> Vec<u8> {
        let mut b = vec![6];
        b.extend_from_slice(&ip);
        b.extend_from_slice(&port.to_be_bytes());
        b
    };
    let good = v4([10, 0, 0, 1], 4000);
    let cat = |parts: &[&[u8]]| parts.concat();
    let mut ff02 = [0u8; 16];
    ff02[0] = 0xff;
    ff02[1] = 0x02;
    ff02[15] = 1;
    let mapped = |ip: [u8; 4]| -> [u8; 16] {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&ip);
        b
    };
    let truncated = Malformed("truncated");
    let undialable = Malformed("an address no one can dial");

    let table: Vec<(&str, Vec<u8>, PathAddrsError)> = vec![
        ("empty", vec![], truncated),
        ("only the version", vec![1], truncated),
        ("no count", vec![1, 0], truncated),
        ("version 0", vec![0, 0, 0], Malformed("unknown version")),
        ("version 2", vec![2, 0, 0], Malformed("unknown version")),
        (
            "flags 2 (the mapping flag alone)",
            vec![1, 2, 0],
            Malformed("a mapping flag without an observed address"),
        ),
        (
            "flags 3 (observed, mapping), no address",
            vec![1, 3, 0],
            Malformed("unknown address family"),
        ),
        (
            "flags 4 (the per-destination flag alone)",
            vec![1, 4, 0],
            Malformed("a mapping flag without an observed address"),
        ),
        (
            "flags 5 (observed, per destination), no address",
            vec![1, 5, 0],
            Malformed("unknown address family"),
        ),
        (
            "flags 7 (both mapping flags)",
            vec![1, 7, 0],
            Malformed("unknown flags"),
        ),
        ("flags 8", vec![1, 8, 0], Malformed("unknown flags")),
        ("flags 0x80", vec![1, 0x80, 0], Malformed("unknown flags")),
        (
            "truncated observed address",
            cat(&[&[1, 1], &good[..5]]),
            truncated,
        ),
        ("observed flag, no address", vec![1, 1], truncated),
        ("observed, then no count", cat(&[&[1, 1], &good]), truncated),
        (
            "unknown family (observed)",
            cat(&[&[1, 1, 5], &good[1..], &[0]]),
            Malformed("unknown address family"),
        ),
        (
            "unknown family 0 (local)",
            cat(&[&[1, 0, 1, 0], &good[1..]]),
            Malformed("unknown address family"),
        ),
        (
            "family 6 with an IPv4's length",
            cat(&[&[1, 0, 1, 6], &good[1..]]),
            truncated,
        ),
        (
            "port 0",
            cat(&[&[1, 1], &v4([192, 0, 2, 1], 0), &[0]]),
            undialable,
        ),
        (
            "port 0, IPv6 local",
            cat(&[
                &[1, 0, 1],
                &v6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 0),
            ]),
            undialable,
        ),
        (
            "0.0.0.0",
            cat(&[&[1, 1], &v4([0; 4], 4000), &[0]]),
            undialable,
        ),
        ("::", cat(&[&[1, 0, 1], &v6([0; 16], 4000)]), undialable),
        (
            "224.0.0.1",
            cat(&[&[1, 1], &v4([224, 0, 0, 1], 4000), &[0]]),
            undialable,
        ),
        (
            "239.255.255.250 local",
            cat(&[&[1, 0, 1], &v4([239, 255, 255, 250], 1900)]),
            undialable,
        ),
        ("ff02::1", cat(&[&[1, 0, 1], &v6(ff02, 4000)]), undialable),
        (
            "255.255.255.255",
            cat(&[&[1, 1], &v4([255; 4], 4000), &[0]]),
            undialable,
        ),
        (
            "an IPv4 address written as IPv6 (one encoding each)",
            cat(&[&[1, 0, 1], &v6(mapped([192, 0, 2, 1]), 4000)]),
            Malformed("an IPv4 address written as IPv6"),
        ),
        (
            "0.0.0.0 written as IPv6",
            cat(&[&[1, 0, 1], &v6(mapped([0; 4]), 4000)]),
            Malformed("an IPv4 address written as IPv6"),
        ),
        (
            "count 5",
            cat(&[&[1, 0, 5], &good, &good, &good, &good, &good]),
            Malformed("more own-network addresses than 4"),
        ),
        (
            "count 255",
            vec![1, 0, 255],
            Malformed("more own-network addresses than 4"),
        ),
        (
            "a byte after",
            cat(&[&[1, 0, 1], &good, &[0]]),
            Malformed("bytes after the addresses"),
        ),
        (
            "an address after the count",
            cat(&[&[1, 0, 1], &good, &good]),
            Malformed("bytes after the addresses"),
        ),
        (
            "bytes after an empty set",
            vec![1, 0, 0, 0],
            Malformed("bytes after the addresses"),
        ),
        (
            "truncated local address",
            cat(&[&[1, 0, 2], &good, &good[..6]]),
            truncated,
        ),
        ("count 2, one address", cat(&[&[1, 0, 2], &good]), truncated),
        (
            "truncated IPv6 local address",
            cat(&[&[1, 0, 1], &v6(ff02, 4000)[..10]]),
            truncated,
        ),
    ];
    for (what, bytes, want) in &table {
        assert_eq!(PathAddrs::decode(bytes), Err(*want), "{what}: {bytes:?}");
    }
    // The good pieces used above decode on their own.
    assert_eq!(
        PathAddrs::decode(&cat(&[&[1, 1], &good, &[1], &good])).unwrap(),
        PathAddrs {
            mapping: Default::default(),
            observed: Some(addr("10.0.0.1:4000")),
            local: vec![addr("10.0.0.1:4000")],
        }
    );
}

#[test]
fn open_refuses_lengths_outside_the_bounds_before_anything_else() {
    let (ik, rk) = handshake(1, 2, 3, "l1");
    for len in [0, 1, MIN_SEALED_PATH - 1, MAX_SEALED_PATH + 1, 1000] {
        let b = vec![0u8; len];
        for keys in [&ik, &rk] {
            assert_eq!(
                PathAddrs::open(&b, keys, "l1"),
                Err(PathAddrsError::Length(len)),
                "{len}"
            );
        }
    }
    // In bounds but not sealed by the peer: not authentic.
    for len in [MIN_SEALED_PATH, MAX_SEALED_PATH] {
        assert_eq!(
            PathAddrs::open(&vec![0u8; len], &rk, "l1"),
            Err(PathAddrsError::NotAuthentic),
            "{len}"
        );
    }
    // Every sealed form has one length (the plaintext is padded).
    assert_eq!(MIN_SEALED_PATH, MAX_SEALED_PATH);
    assert_eq!(
        MAX_SEALED_PATH,
        PATH_ADDRS_NONCE_LEN + MAX_PATH_ADDRS_PLAIN + PATH_ADDRS_TAG_LEN
    );
    // The shortest and longest genuine ones open.
    let longest = PathAddrs {
        mapping: Default::default(),
        observed: Some(addr("[2001:db8::1]:1")),
        local: vec![addr("[2001:db8::2]:2"); MAX_LOCAL_ADDRS],
    };
    for v in [PathAddrs::default(), longest] {
        let s = v.seal(&ik, "l1", [4; 12]);
        assert_eq!(s.len(), MAX_SEALED_PATH);
        assert_eq!(PathAddrs::open(&s, &rk, "l1").unwrap(), v);
        // One direction only.
        assert_eq!(
            PathAddrs::open(&s, &ik, "l1"),
            Err(PathAddrsError::NotAuthentic)
        );
    }
}

#[test]
fn each_seal_carries_its_nonce_and_opens_to_the_same_addresses() {
    let (ik, rk) = handshake(1, 2, 5, "m1");
    let v = alice_addrs();
    let s = v.seal(&ik, "m1", [5; 12]);
    let s2 = v.seal(&ik, "m1", [6; 12]);
    assert_ne!(s, s2);
    assert_eq!(&s[..PATH_ADDRS_NONCE_LEN], &[5; 12]);
    assert_eq!(&s2[..PATH_ADDRS_NONCE_LEN], &[6; 12]);
    assert_eq!(PathAddrs::open(&s, &rk, "m1").unwrap(), v);
    assert_eq!(PathAddrs::open(&s2, &rk, "m1").unwrap(), v);
    // The nonce swapped between the two: neither opens.
    let mut t = s.clone();
    t[..PATH_ADDRS_NONCE_LEN].copy_from_slice(&s2[..PATH_ADDRS_NONCE_LEN]);
    assert_eq!(
        PathAddrs::open(&t, &rk, "m1"),
        Err(PathAddrsError::NotAuthentic)
    );
}
