//! Handshake: agreement, SAS, wire layout, and every tampered field failing.

use wzp_proto::handshake::{
    transcript_hash, EphemeralKey, HandshakeError, HandshakeFinish, HandshakeInit,
    HandshakeResponse, Initiator, Responder, Role, SessionKeys,
};
use wzp_proto::{room_hash, room_id, room_key, Identity, Seed};

const CTX: &[u8] = b"call-1234";

fn alice() -> Identity {
    Seed::from_bytes([0xa1; 32]).identity()
}

fn bob() -> Identity {
    Seed::from_bytes([0xb0; 32]).identity()
}

fn mallory() -> Identity {
    Seed::from_bytes([0x66; 32]).identity()
}

fn eph(n: u8) -> EphemeralKey {
    EphemeralKey::from_bytes([n; 32])
}

/// Runs the three messages through their wire encoding.
fn run(ctx_i: &[u8], ctx_r: &[u8]) -> Result<(SessionKeys, SessionKeys), HandshakeError> {
    let (initiator, init) = Initiator::start(&alice(), eph(1), ctx_i, Some(bob().fingerprint()));
    let init = HandshakeInit::parse(&init.encode())?;
    let (responder, resp) =
        Responder::respond(&bob(), eph(2), ctx_r, &init, Some(alice().fingerprint()))?;
    let resp = HandshakeResponse::parse(&resp.encode())?;
    let (ik, fin) = initiator.finish(&resp)?;
    let fin = HandshakeFinish::parse(&fin.encode())?;
    let rk = responder.confirm(&fin)?;
    Ok((ik, rk))
}

#[test]
fn both_sides_agree_on_keys_sas_and_peers() {
    let (i, r) = run(CTX, CTX).unwrap();
    assert_eq!(i.role(), Role::Initiator);
    assert_eq!(r.role(), Role::Responder);
    assert_eq!(i.send_key(), r.recv_key());
    assert_eq!(i.recv_key(), r.send_key());
    assert_ne!(i.send_key(), i.recv_key(), "directions use distinct keys");
    assert_eq!(i.initiator_to_responder(), r.initiator_to_responder());
    assert_eq!(i.responder_to_initiator(), r.responder_to_initiator());
    assert_eq!(i.sas(), r.sas());
    assert_eq!(i.sas().to_string().len(), 4);
    assert!(i.sas().value() < 10_000);
    assert_eq!(i.transcript_hash(), r.transcript_hash());
    assert_eq!(i.peer_fingerprint(), bob().fingerprint());
    assert_eq!(r.peer_fingerprint(), alice().fingerprint());
    assert_eq!(r.peer_identity(), &alice().public_key());
}

#[test]
fn fresh_ephemerals_give_fresh_keys() {
    let (a, _) = run(CTX, CTX).unwrap();
    let (initiator, init) = Initiator::start(&alice(), eph(3), CTX, None);
    let (responder, resp) = Responder::respond(&bob(), eph(4), CTX, &init, None).unwrap();
    let (b, fin) = initiator.finish(&resp).unwrap();
    let b2 = responder.confirm(&fin).unwrap();
    assert_ne!(a.send_key(), b.send_key());
    assert_ne!(a.transcript_hash(), b.transcript_hash());
    assert_eq!(b.send_key(), b2.recv_key());
}

#[test]
fn sas_is_spread_over_four_digits() {
    let mut seen = std::collections::BTreeSet::new();
    for n in 0..200u8 {
        let (initiator, init) = Initiator::start(&alice(), eph(n), CTX, None);
        let (_, resp) =
            Responder::respond(&bob(), eph(n.wrapping_add(100)), CTX, &init, None).unwrap();
        let (keys, _) = initiator.finish(&resp).unwrap();
        seen.insert(keys.sas().value());
    }
    assert!(seen.len() > 190, "SAS collides too often: {}", seen.len());
}

#[test]
fn different_context_fails() {
    assert_eq!(
        run(b"call-1234", b"call-1235").unwrap_err(),
        HandshakeError::BadSignature
    );
    assert_eq!(run(b"", b"x").unwrap_err(), HandshakeError::BadSignature);
}

#[test]
fn context_is_length_prefixed() {
    // Moving a byte between context and the rest of the transcript changes T.
    let k = [1u8; 32];
    assert_ne!(
        transcript_hash(b"ab", &k, &k, &k, &k),
        transcript_hash(b"a", &k, &k, &k, &k)
    );
}

/// Flips one bit in the encoded Init at `offset` and runs the handshake.
fn tamper_init(offset: usize) -> HandshakeError {
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
    let mut bytes = init.encode();
    bytes[offset] ^= 0x01;
    let init = HandshakeInit::parse(&bytes).unwrap();
    match Responder::respond(&bob(), eph(2), CTX, &init, None) {
        Err(e) => e,
        Ok((responder, resp)) => match initiator.finish(&resp) {
            Err(e) => e,
            Ok((_, fin)) => responder
                .confirm(&fin)
                .expect_err("tampering went unnoticed"),
        },
    }
}

fn tamper_response(offset: usize) -> HandshakeError {
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
    let (_responder, resp) = Responder::respond(&bob(), eph(2), CTX, &init, None).unwrap();
    let mut bytes = resp.encode();
    bytes[offset] ^= 0x01;
    let resp = HandshakeResponse::parse(&bytes).unwrap();
    initiator
        .finish(&resp)
        .expect_err("tampering went unnoticed")
}

fn tamper_finish(offset: usize) -> HandshakeError {
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
    let (responder, resp) = Responder::respond(&bob(), eph(2), CTX, &init, None).unwrap();
    let (_, fin) = initiator.finish(&resp).unwrap();
    let mut bytes = fin.encode();
    bytes[offset] ^= 0x01;
    responder
        .confirm(&HandshakeFinish::parse(&bytes).unwrap())
        .expect_err("tampering went unnoticed")
}

#[test]
fn tampered_initiator_identity_fails() {
    // Changes the initiator fingerprint the responder signs and verifies against.
    assert_eq!(tamper_init(2), HandshakeError::BadSignature);
    assert_eq!(tamper_init(33), HandshakeError::BadSignature);
}

#[test]
fn tampered_initiator_ephemeral_fails() {
    assert_eq!(tamper_init(34), HandshakeError::BadSignature);
    assert_eq!(tamper_init(65), HandshakeError::BadSignature);
}

#[test]
fn tampered_responder_identity_fails() {
    assert_eq!(tamper_response(2), HandshakeError::BadSignature);
    assert_eq!(tamper_response(33), HandshakeError::BadSignature);
}

#[test]
fn tampered_responder_ephemeral_fails() {
    assert_eq!(tamper_response(34), HandshakeError::BadSignature);
    assert_eq!(tamper_response(65), HandshakeError::BadSignature);
}

#[test]
fn tampered_responder_signature_fails() {
    for off in [66, 97, 98, 129] {
        assert_eq!(tamper_response(off), HandshakeError::BadSignature, "{off}");
    }
}

#[test]
fn tampered_initiator_signature_fails() {
    for off in [2, 33, 34, 65] {
        assert_eq!(tamper_finish(off), HandshakeError::BadSignature, "{off}");
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    for byte in 2..HandshakeInit::LEN {
        for bit in 0..8 {
            let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
            let mut b = init.encode();
            b[byte] ^= 1 << bit;
            let init = HandshakeInit::parse(&b).unwrap();
            let ok = Responder::respond(&bob(), eph(2), CTX, &init, None)
                .and_then(|(r, resp)| {
                    let (_, fin) = initiator.finish(&resp)?;
                    r.confirm(&fin)
                })
                .is_ok();
            assert!(!ok, "init byte {byte} bit {bit}");
        }
    }
    for byte in 2..HandshakeResponse::LEN {
        for bit in [0, 7] {
            let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
            let (_, resp) = Responder::respond(&bob(), eph(2), CTX, &init, None).unwrap();
            let mut b = resp.encode();
            b[byte] ^= 1 << bit;
            let resp = HandshakeResponse::parse(&b).unwrap();
            assert!(
                initiator.finish(&resp).is_err(),
                "response byte {byte} bit {bit}"
            );
        }
    }
}

#[test]
fn wrong_identity_is_rejected() {
    // Mallory answers a call meant for Bob with her own (valid) identity.
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, Some(bob().fingerprint()));
    let (_, resp) = Responder::respond(&mallory(), eph(2), CTX, &init, None).unwrap();
    assert_eq!(
        initiator.finish(&resp).unwrap_err(),
        HandshakeError::UnexpectedPeer {
            expected: bob().fingerprint(),
            got: mallory().fingerprint()
        }
    );
    // Bob expects Alice but Mallory calls.
    let (_, init) = Initiator::start(&mallory(), eph(1), CTX, None);
    assert!(matches!(
        Responder::respond(&bob(), eph(2), CTX, &init, Some(alice().fingerprint())),
        Err(HandshakeError::UnexpectedPeer { .. })
    ));
}

#[test]
fn claiming_someone_elses_identity_fails() {
    // Mallory puts Bob's public key in her response but signs with her own key.
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, Some(bob().fingerprint()));
    let (_, mut resp) = Responder::respond(&mallory(), eph(2), CTX, &init, None).unwrap();
    resp.identity = bob().public_key();
    assert_eq!(
        initiator.finish(&resp).unwrap_err(),
        HandshakeError::BadSignature
    );

    // Mallory replays Alice's Init to Bob and forges the Finish.
    let (_, alice_init) = Initiator::start(&alice(), eph(1), CTX, None);
    let (responder, _) = Responder::respond(&bob(), eph(2), CTX, &alice_init, None).unwrap();
    let forged = HandshakeFinish {
        signature: mallory().sign(b"anything"),
    };
    assert_eq!(
        responder.confirm(&forged).unwrap_err(),
        HandshakeError::BadSignature
    );
}

#[test]
fn signatures_are_not_reflectable() {
    // The responder's signature must not pass as the initiator's Finish.
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
    let (responder, resp) = Responder::respond(&alice(), eph(2), CTX, &init, None).unwrap();
    let reflected = HandshakeFinish {
        signature: resp.signature,
    };
    assert_eq!(
        responder.confirm(&reflected).unwrap_err(),
        HandshakeError::BadSignature
    );
    drop(initiator);
}

#[test]
fn low_order_ephemeral_is_rejected() {
    let init = HandshakeInit {
        identity: alice().public_key(),
        ephemeral: [0; 32],
    };
    assert_eq!(
        Responder::respond(&bob(), eph(2), CTX, &init, None).unwrap_err(),
        HandshakeError::WeakEphemeral
    );
    let (initiator, init) = Initiator::start(&alice(), eph(1), CTX, None);
    // A responder that signs a low-order ephemeral: the signature is valid, the DH is not.
    let bad_eph = [0u8; 32];
    let t = transcript_hash(
        CTX,
        &init.identity,
        &bob().public_key(),
        &init.ephemeral,
        &bad_eph,
    );
    let mut msg = b"wzp-handshake-v1 responder signature".to_vec();
    msg.extend_from_slice(&t);
    let resp = HandshakeResponse {
        identity: bob().public_key(),
        ephemeral: bad_eph,
        signature: bob().sign(&msg),
    };
    assert_eq!(
        initiator.finish(&resp).unwrap_err(),
        HandshakeError::WeakEphemeral
    );
}

#[test]
fn message_parse_bad_input_table() {
    let init = HandshakeInit {
        identity: [1; 32],
        ephemeral: [2; 32],
    }
    .encode();
    let resp = HandshakeResponse {
        identity: [1; 32],
        ephemeral: [2; 32],
        signature: [3; 64],
    }
    .encode();
    let fin = HandshakeFinish { signature: [3; 64] }.encode();
    assert_eq!(&init[..2], &[0x01, 0x01]);
    assert_eq!(&resp[..2], &[0x02, 0x01]);
    assert_eq!(&fin[..2], &[0x03, 0x01]);

    let with = |b: &[u8], i: usize, v: u8| {
        let mut b = b.to_vec();
        b[i] = v;
        b
    };
    let cases: Vec<(&str, Result<(), HandshakeError>)> = vec![
        ("init empty", HandshakeInit::parse(&[]).map(drop)),
        ("init short", HandshakeInit::parse(&init[..65]).map(drop)),
        (
            "init long",
            HandshakeInit::parse(&[&init[..], &[0]].concat()).map(drop),
        ),
        (
            "init wrong type",
            HandshakeInit::parse(&with(&init, 0, 2)).map(drop),
        ),
        (
            "init version 2",
            HandshakeInit::parse(&with(&init, 1, 2)).map(drop),
        ),
        (
            "response as init",
            HandshakeInit::parse(&resp[..66]).map(drop),
        ),
        (
            "response short",
            HandshakeResponse::parse(&resp[..129]).map(drop),
        ),
        (
            "response version 0",
            HandshakeResponse::parse(&with(&resp, 1, 0)).map(drop),
        ),
        (
            "finish as response",
            HandshakeResponse::parse(&fin).map(drop),
        ),
        ("finish wrong type", HandshakeFinish::parse(&init).map(drop)),
        ("finish short", HandshakeFinish::parse(&fin[..1]).map(drop)),
    ];
    for (name, r) in cases {
        assert!(r.is_err(), "{name}");
    }
    assert_eq!(
        HandshakeInit::parse(&with(&init, 1, 9)).unwrap_err(),
        HandshakeError::UnsupportedVersion(9)
    );
    assert_eq!(
        HandshakeFinish::parse(&init).unwrap_err(),
        HandshakeError::WrongType {
            expected: 3,
            got: 1
        }
    );
    assert_eq!(HandshakeInit::parse(&init).unwrap().encode(), init);
    assert_eq!(HandshakeResponse::parse(&resp).unwrap().encode(), resp);
    assert_eq!(HandshakeFinish::parse(&fin).unwrap().encode(), fin);
}

#[test]
fn room_keys_and_hashes() {
    let k = room_key(b"secret", "lobby");
    assert_eq!(k, room_key(b"secret", "lobby"));
    assert_ne!(k, room_key(b"secret", "lobby2"));
    assert_ne!(k, room_key(b"secret2", "lobby"));
    // Boundary between secret and name is not ambiguous.
    assert_ne!(room_key(b"ab", "c"), room_key(b"a", "bc"));

    let h = room_hash("lobby");
    assert_eq!(h.len(), 32);
    assert!(h.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
    assert_eq!(h, hex::encode(room_id("lobby")));
    // First 16 bytes of SHA-256("lobby"), checked with `printf lobby | sha256sum`.
    assert_eq!(h, LOBBY_SHA256_PREFIX);
    assert_ne!(h, room_hash("Lobby"));
    // Fits in one DNS label for SNI.
    assert!(h.len() <= 63);
}

const LOBBY_SHA256_PREFIX: &str = "4b5dc076e7b9c122b3c89121a9710fc7";
