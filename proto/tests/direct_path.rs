//! The direct path's proof: bad input, and an attacker at every place one
//! can stand (another key, another connection, another call, the hello sent
//! back to its sender, a relay between passing hellos on).

use wzp_proto::direct_path::{
    signed_bytes, PathError, PathHello, PathProof, Role, PATH_HELLO_LEN, PATH_HELLO_VERSION,
};
use wzp_proto::identity::{Identity, Seed};

fn id(n: u8) -> Identity {
    Seed::from_bytes([n; 32]).identity()
}

const CALL: &str = "c0ffee-42";
const NONCE: [u8; 32] = [0x5a; 32];

/// Alice dials Bob on a connection with `NONCE`.
fn pair() -> (Identity, Identity, PathProof, PathProof) {
    let (alice, bob) = (id(1), id(2));
    let dialer = PathProof::new(&alice, Role::Dialer, bob.fingerprint(), CALL, &NONCE).unwrap();
    let acceptor = PathProof::new(&bob, Role::Acceptor, alice.fingerprint(), CALL, &NONCE).unwrap();
    (alice, bob, dialer, acceptor)
}

#[test]
fn bad_input_table() {
    let (_, _, dialer, acceptor) = pair();
    let good = dialer.hello();
    assert_eq!(acceptor.verify(&good), Ok(()));
    let with = |i: usize, v: u8| {
        let mut b = good;
        b[i] = v;
        b.to_vec()
    };
    let mut long = good.to_vec();
    long.push(0);
    let cases: Vec<(&str, Vec<u8>, PathError)> = vec![
        ("empty", vec![], PathError::Malformed("not 98 bytes")),
        (
            "one byte short",
            good[..PATH_HELLO_LEN - 1].to_vec(),
            PathError::Malformed("not 98 bytes"),
        ),
        ("one byte long", long, PathError::Malformed("not 98 bytes")),
        (
            "1 MiB",
            vec![0u8; 1 << 20],
            PathError::Malformed("not 98 bytes"),
        ),
        (
            "version 0",
            with(0, 0),
            PathError::Malformed("unknown version"),
        ),
        (
            "version 2",
            with(0, PATH_HELLO_VERSION + 1),
            PathError::Malformed("unknown version"),
        ),
        ("role 2", with(1, 2), PathError::Malformed("unknown role")),
        (
            "role 255",
            with(1, 255),
            PathError::Malformed("unknown role"),
        ),
        (
            "signature bit flipped",
            with(40, good[40] ^ 1),
            PathError::BadSignature,
        ),
        (
            "all-zero signature",
            {
                let mut b = good;
                b[34..].fill(0);
                b.to_vec()
            },
            PathError::BadSignature,
        ),
    ];
    for (what, bytes, want) in cases {
        assert_eq!(acceptor.verify(&bytes), Err(want), "{what}");
    }
    // A key bit flipped is another (or no) key: not the peer.
    let flipped = with(2, good[2] ^ 1);
    assert!(
        matches!(acceptor.verify(&flipped), Err(PathError::WrongPeer { .. })),
        "key bit flipped"
    );
    // Every byte string of the right length either decodes or is refused,
    // never panics; the encoding round-trips.
    for b in 0..=255u8 {
        let bytes = [b; PATH_HELLO_LEN];
        if let Ok(h) = PathHello::decode(&bytes) {
            assert_eq!(h.encode(), bytes);
        }
    }
}

#[test]
fn another_key_is_not_the_peer() {
    let (alice, bob, _, acceptor) = pair();
    // Mallory signs properly for this call and connection, with her key.
    let mallory = id(3);
    let m = PathProof::new(&mallory, Role::Dialer, bob.fingerprint(), CALL, &NONCE).unwrap();
    assert_eq!(
        acceptor.verify(&m.hello()),
        Err(PathError::WrongPeer {
            expected: alice.fingerprint(),
            got: mallory.fingerprint()
        })
    );
    // Mallory claims Alice's key but cannot sign with it.
    let mut forged = PathHello::decode(&m.hello()).unwrap();
    forged.public_key = alice.public_key();
    assert_eq!(
        acceptor.verify(&forged.encode()),
        Err(PathError::BadSignature)
    );
}

#[test]
fn a_hello_from_another_connection_or_call_fails() {
    let (alice, bob, _, acceptor) = pair();
    // Alice's genuine hello from another connection (a relay or anyone
    // between who holds two TLS sessions sees two nonces).
    let other_conn = PathProof::new(&alice, Role::Dialer, bob.fingerprint(), CALL, &[1; 32])
        .unwrap()
        .hello();
    assert_eq!(acceptor.verify(&other_conn), Err(PathError::BadSignature));
    // Alice's genuine hello for another call on the same nonce.
    let other_call = PathProof::new(&alice, Role::Dialer, bob.fingerprint(), "other", &NONCE)
        .unwrap()
        .hello();
    assert_eq!(acceptor.verify(&other_call), Err(PathError::BadSignature));
}

#[test]
fn a_hello_sent_back_to_its_sender_fails() {
    let (_, _, dialer, acceptor) = pair();
    // The acceptor's own hello reflected to it: claims its own role.
    assert_eq!(
        acceptor.verify(&acceptor.hello()),
        Err(PathError::WrongRole(Role::Acceptor))
    );
    assert_eq!(
        dialer.verify(&dialer.hello()),
        Err(PathError::WrongRole(Role::Dialer))
    );
    // Relabelled as the other role, the signature no longer covers it.
    let mut relabelled = PathHello::decode(&dialer.hello()).unwrap();
    relabelled.role = Role::Acceptor;
    assert!(dialer.verify(&relabelled.encode()).is_err());
}

#[test]
fn the_signed_bytes_bind_each_part() {
    let base = signed_bytes(Role::Dialer, CALL, &NONCE);
    assert!(base.starts_with(b"wzp direct path v1\0"));
    assert_ne!(base, signed_bytes(Role::Acceptor, CALL, &NONCE));
    assert_ne!(base, signed_bytes(Role::Dialer, "c0ffee-43", &NONCE));
    assert_ne!(base, signed_bytes(Role::Dialer, CALL, &[0x5b; 32]));
    // The call id's length is bound: no shifting bytes between id and nonce.
    let mut n = NONCE;
    n[0] = b'x';
    assert_ne!(
        signed_bytes(Role::Dialer, "ab", &n),
        signed_bytes(Role::Dialer, "abx", &[0x5a; 32])
    );
}
