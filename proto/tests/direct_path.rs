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
    spray_round_meets, BirthdayHalf, PathAction, PathSchedule, SprayPorts, ATTEMPT_MS,
    BIRTHDAY_AFTER_MS, PUNCH_EVERY_MS, PUNCH_FAST, PUNCH_FAST_MS, RETRY_FIRST_MS, RETRY_MAX_MS,
    SPRAY_EVERY_MS, SPRAY_LOW_PORT, SPRAY_PORTS, SPRAY_ROUNDS,
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

#[test]
fn a_dialer_with_birthday_searches_once_its_first_attempt_failed() {
    let mut s = PathSchedule::new(Role::Dialer, true, 0).with_birthday(Some(BirthdayHalf::Search));
    assert_eq!(s.poll(0), Some(PathAction::Dial));
    // The plain attempt before a search gets a second, not three.
    assert_eq!(s.attempt_ms(), BIRTHDAY_AFTER_MS);
    // The first failure: the search at once, with nothing under way
    // meanwhile.
    assert_eq!(s.failed(BIRTHDAY_AFTER_MS), 1);
    assert_eq!(s.next_at(), Some(BIRTHDAY_AFTER_MS));
    assert_eq!(s.poll(BIRTHDAY_AFTER_MS), Some(PathAction::Birthday));
    assert_eq!((s.poll(4_000), s.next_at()), (None, None));
    // It failed too: plain dials from then on, backing off as ever, each
    // with the whole attempt.
    assert_eq!(s.failed(11_000), 2);
    assert_eq!(s.next_at(), Some(11_000 + RETRY_FIRST_MS));
    assert_eq!(s.poll(11_000 + RETRY_FIRST_MS), Some(PathAction::Dial));
    assert_eq!(s.failed(16_000), 3);
    assert_eq!(s.next_at(), Some(16_000 + 2 * RETRY_FIRST_MS));
    assert_eq!(s.poll(16_000 + 2 * RETRY_FIRST_MS), Some(PathAction::Dial));
    assert_eq!(s.attempt_ms(), ATTEMPT_MS);
    // The search came up: a path lost later gets a search again after its
    // first failed attempt, a short one again.
    s.up();
    s.lost(100_000, true);
    assert_eq!(s.poll(100_000 + RETRY_FIRST_MS), Some(PathAction::Dial));
    assert_eq!(s.attempt_ms(), BIRTHDAY_AFTER_MS);
    assert_eq!(s.failed(105_000), 1);
    assert_eq!(s.poll(105_000), Some(PathAction::Birthday));
    // Without it, the first failure waits as before.
    let mut plain = PathSchedule::new(Role::Dialer, true, 0).with_birthday(None);
    assert_eq!(plain.poll(0), Some(PathAction::Dial));
    assert_eq!(plain.attempt_ms(), ATTEMPT_MS);
    plain.failed(3_000);
    assert_eq!(plain.next_at(), Some(3_000 + RETRY_FIRST_MS));
    assert_eq!(
        run(&mut plain, 3_000, 3_000 + RETRY_FIRST_MS),
        vec![(5_000, PathAction::Dial)]
    );
}

#[test]
fn an_acceptor_with_birthday_sprays_rounds_once_its_fast_punches_found_no_path() {
    let mut s = PathSchedule::new(Role::Acceptor, true, 0).with_birthday(Some(BirthdayHalf::Spray));
    let done = run(&mut s, 0, 20_000);
    // A second of fast punches (five), then the rounds beside them.
    let start = BIRTHDAY_AFTER_MS;
    assert!(start < u64::from(PUNCH_FAST) * PUNCH_FAST_MS);
    let sprays: Vec<u64> = done
        .iter()
        .filter(|(_, a)| *a == PathAction::Spray)
        .map(|(t, _)| *t)
        .collect();
    let want: Vec<u64> = (0..u64::from(SPRAY_ROUNDS))
        .map(|k| start + k * SPRAY_EVERY_MS)
        .collect();
    assert_eq!(sprays, want);
    // The punches go on as without it.
    let punches: Vec<u64> = done
        .iter()
        .filter(|(_, a)| *a == PathAction::Punch)
        .map(|(t, _)| *t)
        .collect();
    let mut alone = PathSchedule::new(Role::Acceptor, true, 0);
    let plain: Vec<u64> = run(&mut alone, 0, 20_000).iter().map(|(t, _)| *t).collect();
    assert_eq!(punches, plain);
    assert!(run(&mut alone, 20_000, 60_000)
        .iter()
        .all(|(_, a)| *a == PathAction::Punch));
    // A path up stops the rounds; a loss starts them over after the first
    // fast punches.
    let mut s = PathSchedule::new(Role::Acceptor, true, 0).with_birthday(Some(BirthdayHalf::Spray));
    let early = run(&mut s, 0, start + SPRAY_EVERY_MS);
    assert_eq!(
        early
            .iter()
            .filter(|(_, a)| *a == PathAction::Spray)
            .count(),
        2
    );
    s.up();
    assert_eq!(run(&mut s, 5_000, 60_000), vec![]);
    s.lost(60_000, true);
    let again = run(&mut s, 60_000, 60_000 + start + 10 * SPRAY_EVERY_MS);
    let sprays: Vec<u64> = again
        .iter()
        .filter(|(_, a)| *a == PathAction::Spray)
        .map(|(t, _)| *t - 60_000)
        .collect();
    assert_eq!(sprays, want);
}

#[test]
fn spray_ports_cover_the_nat_range_evenly_and_differ_by_seed() {
    let ports: Vec<u16> = SprayPorts::new(7).take(64_512).collect();
    assert!(ports.iter().all(|p| *p >= SPRAY_LOW_PORT));
    assert_eq!(ports, SprayPorts::new(7).take(64_512).collect::<Vec<_>>());
    let other: Vec<u16> = SprayPorts::new(8).take(64).collect();
    assert_ne!(ports[..64], other[..]);
    // Eight equal bands of the range each get an eighth, within 5 %.
    let mut bands = [0u32; 8];
    for p in &ports {
        bands[usize::from(p - SPRAY_LOW_PORT) / 8_064] += 1;
    }
    for b in bands {
        assert!((7_660..=8_470).contains(&b), "{bands:?}");
    }
    // A round reaches nearly as many distinct ports as it sends to.
    let mut round: Vec<u16> = SprayPorts::new(1).take(SPRAY_PORTS as usize).collect();
    round.sort_unstable();
    round.dedup();
    assert!(
        round.len() > SPRAY_PORTS as usize * 98 / 100,
        "{}",
        round.len()
    );
}

#[test]
fn one_spray_round_meets_a_mapping_almost_always() {
    let p = spray_round_meets();
    assert!(p > 0.98 && p < 1.0, "{p}");
    // Two rounds, as a search meets at least: short of one in 3 000.
    assert!((1.0 - p).powi(2) < 1.0 / 3_000.0, "{p}");
}

#[test]
fn a_spraying_dialer_sends_its_rounds_once_its_first_attempt_failed() {
    let mut s = PathSchedule::new(Role::Dialer, true, 0).with_birthday(Some(BirthdayHalf::Spray));
    assert_eq!(s.poll(0), Some(PathAction::Dial));
    assert_eq!(s.attempt_ms(), BIRTHDAY_AFTER_MS);
    assert_eq!(s.failed(3_000), 1);
    assert_eq!(s.attempt_ms(), ATTEMPT_MS);
    let span = u64::from(SPRAY_ROUNDS - 1) * SPRAY_EVERY_MS;
    let done = run(&mut s, 3_000, 3_000 + span + RETRY_FIRST_MS);
    let mut want: Vec<(u64, PathAction)> = (0..u64::from(SPRAY_ROUNDS))
        .map(|k| (3_000 + k * SPRAY_EVERY_MS, PathAction::Spray))
        .collect();
    // The next dial once the last round is a wait old.
    want.push((3_000 + span + RETRY_FIRST_MS, PathAction::Dial));
    assert_eq!(done, want);
    // A later failure backs off with no rounds.
    assert_eq!(s.failed(20_000), 2);
    assert_eq!(
        run(&mut s, 20_000, 20_000 + 2 * RETRY_FIRST_MS),
        vec![(20_000 + 2 * RETRY_FIRST_MS, PathAction::Dial)]
    );
    // The path came up (the peer's search dialed in): the rounds stop.
    let mut s = PathSchedule::new(Role::Dialer, true, 0).with_birthday(Some(BirthdayHalf::Spray));
    s.poll(0);
    s.failed(3_000);
    assert_eq!(s.poll(3_000), Some(PathAction::Spray));
    s.up();
    assert_eq!((s.poll(4_000), s.next_at()), (None, None));
}

#[test]
fn a_searching_acceptor_searches_once_its_fast_punches_found_no_path() {
    let mut s =
        PathSchedule::new(Role::Acceptor, true, 0).with_birthday(Some(BirthdayHalf::Search));
    let done = run(&mut s, 0, 30_000);
    let searches: Vec<u64> = done
        .iter()
        .filter(|(_, a)| *a == PathAction::Birthday)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(searches, [BIRTHDAY_AFTER_MS]);
    assert!(!done.iter().any(|(_, a)| *a == PathAction::Spray));
    let mut alone = PathSchedule::new(Role::Acceptor, true, 0);
    let plain: Vec<(u64, PathAction)> = run(&mut alone, 0, 30_000);
    let punches: Vec<(u64, PathAction)> = done
        .into_iter()
        .filter(|(_, a)| *a == PathAction::Punch)
        .collect();
    assert_eq!(punches, plain);
    // Once more after a loss.
    s.up();
    s.lost(50_000, true);
    let again = run(&mut s, 50_000, 60_000);
    let searches: Vec<u64> = again
        .iter()
        .filter(|(_, a)| *a == PathAction::Birthday)
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(searches, [50_000 + BIRTHDAY_AFTER_MS]);
}

#[test]
fn track_follows_the_path_as_the_shell_sees_it() {
    let mut s = PathSchedule::new(Role::Acceptor, true, 0).with_birthday(Some(BirthdayHalf::Spray));
    s.track(false, 0);
    assert_eq!(s.poll(0), Some(PathAction::Punch));
    // Up, seen by the shell: no more punching.
    s.track(true, 100);
    assert!(s.is_up());
    assert_eq!((s.poll(10_000), s.next_at()), (None, None));
    s.track(true, 20_000);
    assert!(s.is_up());
    // Down: punching again at once, as after `lost`.
    s.track(false, 30_000);
    assert!(!s.is_up());
    assert_eq!(s.poll(30_000), Some(PathAction::Punch));
    // A dialer whose path a searching callee brought up stops dialing.
    let mut d = PathSchedule::new(Role::Dialer, true, 0);
    assert_eq!(d.poll(0), Some(PathAction::Dial));
    d.failed(3_000);
    d.track(true, 4_000);
    assert_eq!((d.poll(60_000), d.next_at()), (None, None));
    d.track(false, 60_000);
    assert_eq!(d.next_at(), Some(60_000 + RETRY_FIRST_MS));
}
