//! The room admission proof in `join`: only a holder of the room secret can
//! make a Join that a relay admits to the room, for this connection and this
//! relay only; a stranger who knows the server name cannot.

use wzp_proto::handshake::{room_admission_seed, room_hash, room_sni};
use wzp_proto::identity::{Identity, Seed};
use wzp_proto::join::{
    room_proof_signed_bytes, Join, JoinError, RoomAdmissionKey, RoomProof, JOIN_NONCE_LEN,
};
use wzp_proto::TlsFingerprint;

const NOW: u64 = 1_790_000_000_000;
const RELAY: TlsFingerprint = TlsFingerprint([0x11; 32]);
const OTHER_RELAY: TlsFingerprint = TlsFingerprint([0x22; 32]);
const NONCE: [u8; JOIN_NONCE_LEN] = [0xA5; JOIN_NONCE_LEN];

fn identity(n: u8) -> Identity {
    Identity::from_seed(&Seed::from_bytes([n; 32]))
}

fn room() -> RoomAdmissionKey {
    RoomAdmissionKey::derive(b"correct horse battery staple", "book club")
}

/// A Join by identity `who` for `key`'s room, proven for `nonce` at `relay`.
fn proven(who: u8, key: &RoomAdmissionKey, nonce: &[u8; 32], relay: &TlsFingerprint) -> Join {
    Join::signed(&identity(who), &key.sni(), relay, None, NOW).with_room_proof(key, nonce, relay)
}

#[test]
fn the_room_key_and_server_name_follow_from_secret_and_name() {
    let k = room();
    let sni = k.sni();
    assert_eq!(sni.len(), 32);
    assert!(sni
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    assert_eq!(sni, room_sni(&k.public_key()));
    assert_eq!(
        RoomAdmissionKey::derive(b"correct horse battery staple", "book club").sni(),
        sni
    );
    assert_ne!(
        RoomAdmissionKey::derive(b"another secret", "book club").sni(),
        sni
    );
    assert_ne!(
        RoomAdmissionKey::derive(b"correct horse battery staple", "chess").sni(),
        sni
    );
    // Knowing the name alone gives the old room hash, not this server name.
    assert_ne!(room_hash("book club"), sni);
    // Pinned vectors (WIRE.md §4), computed independently with Python's
    // hmac/hashlib and `cryptography` Ed25519.
    let seed = room_admission_seed(b"", "lobby");
    assert_eq!(
        hex::encode(*seed),
        "bd68a435500d31a3ab8a64689f35049831d618be1865167bf6a61e9e636a31c0"
    );
    let lobby = RoomAdmissionKey::derive(b"", "lobby");
    assert_eq!(
        hex::encode(lobby.public_key()),
        "b936453050c65940ad08d1ad2423d436a9d25a82e255d70318652ab0ca7e6031"
    );
    assert_eq!(lobby.sni(), "5c2460b44202dd7c0de30b7bc3c26b72");
    assert_ne!(
        *seed,
        wzp_proto::room_key(b"", "lobby"),
        "independent of the media key"
    );
}

#[test]
fn room_proof_table() {
    let k = room();
    let sni = k.sni();
    let stranger_key = RoomAdmissionKey::derive(b"a guess", "book club");
    let valid = proven(1, &k, &NONCE, &RELAY);

    // (case, join, sni the connection carries, nonce of this connection, relay) -> want
    type Case = (
        &'static str,
        Join,
        String,
        [u8; 32],
        TlsFingerprint,
        Result<(), JoinError>,
    );
    let mut cases: Vec<Case> = vec![
        (
            "valid proof",
            valid.clone(),
            sni.clone(),
            NONCE,
            RELAY,
            Ok(()),
        ),
        (
            "wrong room key (a stranger's guess, same server name claimed)",
            Join::signed(&identity(66), &sni, &RELAY, None, NOW).with_room_proof(
                &stranger_key,
                &NONCE,
                &RELAY,
            ),
            sni.clone(),
            NONCE,
            RELAY,
            Err(JoinError::RoomKeyMismatch {
                got: stranger_key.sni(),
                want: sni.clone(),
            }),
        ),
        (
            "replayed on another connection (proof for another nonce)",
            valid.clone(),
            sni.clone(),
            [0x5A; 32],
            RELAY,
            Err(JoinError::BadRoomProof),
        ),
        (
            "made for another relay",
            proven(1, &k, &NONCE, &OTHER_RELAY),
            sni.clone(),
            NONCE,
            RELAY,
            Err(JoinError::BadRoomProof),
        ),
        (
            "SNI / public key mismatch (a valid proof of another room)",
            proven(1, &stranger_key, &NONCE, &RELAY),
            sni.clone(),
            NONCE,
            RELAY,
            Err(JoinError::RoomKeyMismatch {
                got: stranger_key.sni(),
                want: sni.clone(),
            }),
        ),
        (
            "no proof (today's Join)",
            Join::signed(&identity(1), &sni, &RELAY, None, NOW),
            sni.clone(),
            NONCE,
            RELAY,
            Err(JoinError::NoRoomProof),
        ),
    ];
    // A member's proof moved onto a stranger's Join: the proof signs the
    // member's identity key, not the stranger's.
    let mut lifted = Join::signed(&identity(66), &sni, &RELAY, None, NOW);
    lifted.room_proof = valid.room_proof.clone();
    cases.push((
        "proof lifted onto another identity's Join",
        lifted,
        sni.clone(),
        NONCE,
        RELAY,
        Err(JoinError::BadRoomProof),
    ));
    // A stranger who knows only the server name: no key hashes to it that
    // it can sign with; forging the signature with the right room_pub fails.
    let mut forged = Join::signed(&identity(66), &sni, &RELAY, None, NOW);
    forged.room_proof = Some(RoomProof {
        room_pub: k.public_key(),
        signature: [0x42; 64],
    });
    cases.push((
        "stranger with the right room_pub and a forged signature",
        forged,
        sni.clone(),
        NONCE,
        RELAY,
        Err(JoinError::BadRoomProof),
    ));
    let mut flipped = valid.clone();
    if let Some(p) = flipped.room_proof.as_mut() {
        p.signature[10] ^= 1;
    }
    cases.push((
        "one bit of the signature flipped",
        flipped,
        sni.clone(),
        NONCE,
        RELAY,
        Err(JoinError::BadRoomProof),
    ));

    for (name, join, conn_sni, nonce, relay, want) in cases {
        let got = join.verify_room_proof(&conn_sni, &nonce, &relay);
        assert_eq!(got, want, "{name}");
        assert_eq!(
            join.has_valid_room_proof(&conn_sni, &nonce, &relay),
            want.is_ok(),
            "{name}"
        );
    }
}

#[test]
fn both_proofs_together_and_todays_join_unchanged() {
    let k = room();
    let sni = k.sni();
    let j = proven(3, &k, &NONCE, &RELAY);
    assert_eq!(
        j.verify_with_room_proof(&sni, &RELAY, &NONCE, NOW, 60),
        Ok(identity(3).fingerprint())
    );
    // The identity signature still matters: a stale or forged Join fails
    // even with a good room proof.
    assert!(matches!(
        j.verify_with_room_proof(&sni, &RELAY, &NONCE, NOW + 3_600_000, 60),
        Err(JoinError::Stale { .. })
    ));
    let mut bad_id = j.clone();
    bad_id.signature[0] ^= 1;
    assert_eq!(
        bad_id.verify_with_room_proof(&sni, &RELAY, &NONCE, NOW, 60),
        Err(JoinError::BadSignature)
    );
    // Today's Join verifies as before, with or without a proof attached.
    let plain = Join::signed(
        &identity(3),
        "4b5dc076e7b9c122b3c89121a9710fc7",
        &RELAY,
        None,
        NOW,
    );
    assert_eq!(
        plain.verify("4b5dc076e7b9c122b3c89121a9710fc7", &RELAY, NOW, 60),
        Ok(identity(3).fingerprint())
    );
    assert_eq!(
        j.verify(&sni, &RELAY, NOW, 60),
        Ok(identity(3).fingerprint())
    );
}

#[test]
fn the_wire_form_is_backward_compatible() {
    let k = room();
    let plain = Join::signed(&identity(4), &k.sni(), &RELAY, Some("ann".into()), NOW);
    let json = serde_json::to_string(&plain).unwrap();
    assert!(
        !json.contains("room_proof"),
        "today's Join is unchanged: {json}"
    );
    let back: Join = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plain);

    let proven = plain.clone().with_room_proof(&k, &NONCE, &RELAY);
    let frame = proven.to_frame();
    let back: Join = serde_json::from_slice(&frame[4..]).unwrap();
    assert_eq!(back, proven);
    assert!(back.has_valid_room_proof(&k.sni(), &NONCE, &RELAY));
    // An older decoder (no room_proof field) still reads the proven Join:
    // serde ignores unknown fields.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct OldJoin {
        room: String,
        identity_pub: String,
        timestamp_ms: u64,
        signature: String,
    }
    let _: OldJoin = serde_json::from_slice(&frame[4..]).unwrap();
}

#[test]
fn bad_proof_encodings_are_refused_by_the_decoder() {
    let k = room();
    let base =
        serde_json::to_value(Join::signed(&identity(5), &k.sni(), &RELAY, None, NOW)).unwrap();
    let pubhex = hex::encode(k.public_key());
    let sig = hex::encode([1u8; 64]);
    let bad = [
        serde_json::json!("not an object"),
        serde_json::json!({"room_pub": pubhex}),
        serde_json::json!({"signature": sig}),
        serde_json::json!({"room_pub": &pubhex[..62], "signature": sig}),
        serde_json::json!({"room_pub": pubhex, "signature": &sig[..126]}),
        serde_json::json!({"room_pub": "zz".repeat(32), "signature": sig}),
        serde_json::json!({"room_pub": 7, "signature": sig}),
    ];
    for proof in bad {
        let mut v = base.clone();
        v["room_proof"] = proof.clone();
        assert!(
            serde_json::from_value::<Join>(v).is_err(),
            "room_proof = {proof} was accepted"
        );
    }
    // null is "no proof".
    let mut v = base.clone();
    v["room_proof"] = serde_json::Value::Null;
    assert_eq!(serde_json::from_value::<Join>(v).unwrap().room_proof, None);
    // A small-order room key never verifies (strict verification).
    let mut weak = Join::signed(&identity(5), &room_sni(&[0; 32]), &RELAY, None, NOW);
    weak.room_proof = Some(RoomProof {
        room_pub: [0; 32],
        signature: [0; 64],
    });
    assert_eq!(
        weak.verify_room_proof(&room_sni(&[0; 32]), &NONCE, &RELAY),
        Err(JoinError::BadRoomProof)
    );
    // The signed bytes are fixed-size and carry every bound value.
    let b = room_proof_signed_bytes(&NONCE, &RELAY, &[9; 32]);
    assert_eq!(&b[..17], b"wzp-room-proof-v1");
    assert_eq!(&b[17..49], &NONCE);
    assert_eq!(&b[49..81], &RELAY.0);
    assert_eq!(&b[81..], &[9; 32]);
}
