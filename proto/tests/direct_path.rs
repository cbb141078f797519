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

use wzp_proto::direct_path::{
    PathAction, PathSchedule, PUNCH_EVERY_MS, PUNCH_FAST, PUNCH_FAST_MS, RETRY_FIRST_MS,
    RETRY_MAX_MS,
};

/// Steps `s` from `from` to `to` ms, each time it asks to be polled; the
/// times it acted and what it did.
fn run(s: &mut PathSchedule, from: u64, to: u64) -> Vec<(u64, PathAction)> {
    let mut done = Vec::new();
    let mut now = from;
    while now <= to {
        if let Some(a) = s.poll(now) {
            done.push((now, a));
        }
        match s.next_at() {
            Some(t) if t > now => now = t,
            Some(_) => {}
            None => break,
        }
    }
    done
}

#[test]
fn the_dialer_dials_at_once_and_backs_off_while_attempts_fail() {
    let mut s = PathSchedule::new(Role::Dialer, true, 1_000);
    assert_eq!(s.poll(999), None);
    assert_eq!(s.poll(1_000), Some(PathAction::Dial));
    // Under way: nothing more until its outcome.
    assert_eq!((s.poll(5_000), s.next_at()), (None, None));
    // Failures: 2 s, 4, 8, 16, then 30 at most.
    let mut now = 4_000;
    let mut waits = Vec::new();
    for n in 1..=7 {
        assert_eq!(s.failed(now), n);
        let at = s.next_at().unwrap();
        waits.push(at - now);
        assert_eq!(s.poll(at - 1), None);
        assert_eq!(s.poll(at), Some(PathAction::Dial));
        now = at + 3_000;
    }
    assert_eq!(
        waits,
        [2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000],
        "then {RETRY_MAX_MS} at most"
    );
    // Up: nothing to do; lost: again after the first wait, which starts
    // over, as does the failure count.
    s.up();
    assert!(s.is_up());
    assert_eq!((s.poll(u64::MAX / 2), s.next_at()), (None, None));
    s.lost(500_000, true);
    assert_eq!(s.next_at(), Some(500_000 + RETRY_FIRST_MS));
    assert_eq!(s.poll(500_000 + RETRY_FIRST_MS), Some(PathAction::Dial));
    assert_eq!(s.failed(503_000), 1);
    assert_eq!(s.next_at(), Some(503_000 + RETRY_FIRST_MS));
}

#[test]
fn a_dialer_without_an_address_never_dials() {
    let mut s = PathSchedule::new(Role::Dialer, false, 0);
    assert_eq!(run(&mut s, 0, 100_000), vec![]);
    assert_eq!(s.next_at(), None);
}

#[test]
fn the_acceptor_punches_fast_then_slowly_while_no_path_is_up() {
    let mut s = PathSchedule::new(Role::Acceptor, true, 0);
    let done = run(&mut s, 0, 10_000);
    assert!(done.iter().all(|(_, a)| *a == PathAction::Punch));
    let times: Vec<u64> = done.iter().map(|(t, _)| *t).collect();
    let fast: Vec<u64> = (0..u64::from(PUNCH_FAST))
        .map(|k| k * PUNCH_FAST_MS)
        .collect();
    assert_eq!(times[..fast.len()], fast[..]);
    for w in times[fast.len() - 1..].windows(2) {
        assert_eq!(w[1] - w[0], PUNCH_EVERY_MS, "{times:?}");
    }
    // A dialer proved: no more punches while the path lasts.
    s.up();
    assert_eq!(run(&mut s, 10_000, 60_000), vec![]);
    // Lost: punching again at once, fast.
    s.lost(60_000, true);
    let again = run(&mut s, 60_000, 60_000 + PUNCH_FAST_MS * 2);
    assert_eq!(
        again,
        vec![
            (60_000, PathAction::Punch),
            (60_000 + PUNCH_FAST_MS, PathAction::Punch),
            (60_000 + PUNCH_FAST_MS * 2, PathAction::Punch)
        ]
    );
}

#[test]
fn an_acceptor_the_caller_gave_no_address_only_waits() {
    let mut s = PathSchedule::new(Role::Acceptor, false, 0);
    assert_eq!(run(&mut s, 0, 100_000), vec![]);
    // A dialer can still prove itself; losing it leaves nothing to do.
    s.up();
    assert!(s.is_up());
    s.lost(5_000, false);
    assert!(!s.is_up());
    assert_eq!(run(&mut s, 5_000, 100_000), vec![]);
}
