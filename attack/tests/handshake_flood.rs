//! 2 000 connection attempts that never become sessions, in 5 s, while
//! Alice and Bob talk: 1 000 real ClientHellos (each for a valid-looking
//! room server name) whose answers are never read, so the relay holds
//! each handshake until it gives up, and 1 000 forged QUIC Initial
//! packets that no key decrypts. The call has no dropouts, and a new real
//! client (Carol) and a new member written here both still join during
//! the flood; their join times, and the CPU the relay and the attacker
//! spent, are printed.
//!
//! The relay answers new, unvalidated addresses with a stateless QUIC
//! Retry once 64 handshakes are in progress (`RETRY_ABOVE_PENDING`), so
//! the half-open ClientHellos cost it no TLS work; before it did, the
//! same flood cost the relay 0.83 s of CPU and, on a CPU-starved machine,
//! 1 to 5 dropout windows in the call.

use std::time::{Duration, Instant};

use wzp_attack::attacks::handshake_flood;
use wzp_attack::audio::tone_dbfs;
use wzp_attack::member;
use wzp_attack::procs::{cpu_time_of, Client, SECRET};
use wzp_attack::scenario::{dropouts_around, runtime, Call, ALICE_HZ, BOB_HZ, FLUSH_LAG, ROOM};
use wzp_attack::serial::serial;

#[test]
fn a_handshake_flood_leaves_the_call_alone_and_new_members_still_join() {
    let _one = serial();
    let rt = runtime();
    let call = Call::start("handshakes");
    call.record_for(2.0);
    let failures0 = call.relay.metric("wzp_relay_handshake_failures_total");

    let (a0, b0) = call.marks();
    let (relay_cpu0, own_cpu0) = (call.relay.cpu_time(), cpu_time_of("self"));
    let started = Instant::now();
    let flood = rt.spawn(handshake_flood(
        call.relay.quic,
        1_000,
        1_000,
        Duration::from_secs(5),
        0x4a4d,
    ));
    // Half-way through the flood, a real client joins...
    while started.elapsed() < Duration::from_millis(2500) && !flood.is_finished() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let spawned = Instant::now();
    let mut carol = Client::join(&call.dir, &call.relay, ROOM, "carol", "tone:880");
    carol.wait_room_of(ROOM, 3);
    let carol_took = spawned.elapsed();
    // ... and so does a member written here (a QUIC handshake, Hello,
    // Join, room update; no process start-up in the figure).
    let fp = call.relay.tls_fingerprint();
    let late = rt
        .block_on(member::join(call.relay.quic, &fp, ROOM, SECRET, [0x31; 32]))
        .expect("a new member joins during the flood");
    let sent = rt
        .block_on(flood)
        .expect("the flood task ends")
        .expect("the flood's sockets open");
    let flood_took = started.elapsed();
    let relay_cpu = call.relay.cpu_time() - relay_cpu0;
    let own_cpu = cpu_time_of("self") - own_cpu0;
    let (a1, b1) = call.marks();
    call.record_for(1.0);
    let c1 = carol.recorded();
    carol.wait_recorded(c1 + FLUSH_LAG);
    let failures = call.relay.metric("wzp_relay_handshake_failures_total") - failures0;
    println!(
        "flood: {} half-open handshakes + {} forged Initials in {flood_took:?}; \
         relay handshake failures so far {failures}; during it carol (a wzp-client process) \
         was in the room {} ms after it started, a member's join took {} ms; \
         CPU: relay {} ms, attacker {} ms",
        sent.half_open,
        sent.garbage,
        carol_took.as_millis(),
        late.join_time.as_millis(),
        relay_cpu.as_millis(),
        own_cpu.as_millis()
    );
    drop(late);

    let Call {
        alice, bob, dir, ..
    } = call;
    let carol = carol.hang_up();
    for (rec, at, other) in [
        (alice.hang_up(), a0..a1, BOB_HZ),
        (bob.hang_up(), b0..b1, ALICE_HZ),
    ] {
        let d = dropouts_around(&rec.audio, at.clone());
        println!("{}: {d:?}", rec.name);
        d.assert_none_caused(&rec.name);
        let heard = tone_dbfs(&rec.audio[at.start as usize..], other);
        assert!(
            heard > -22.0,
            "{} hears the other at {heard} dBFS",
            rec.name
        );
    }
    let heard = tone_dbfs(&carol.audio, ALICE_HZ);
    assert!(heard > -25.0, "carol hears alice at {heard} dBFS");
    let _ = std::fs::remove_dir_all(dir);
}
