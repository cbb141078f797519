//! A malicious member tries to make the relay hold its unread data: it
//! asks for 100 streams (bidirectional and unidirectional in turn) and
//! writes 1 MiB into each, and pushes 1 MiB of 64 KB junk frames down its
//! signal stream; three rounds, each on a new connection that then leaves.
//!
//! The bound (docs/OPERATIONS.md, "Memory a peer can make the relay
//! hold"; `StreamLimits::ROOM`): a room connection may open one
//! bidirectional stream (its signal stream) and no other, and holds at
//! most 128 KiB of unread stream data + 256 KiB of datagrams + 16 KiB of
//! handshake data, about 400 KiB. So the relay's RSS during and after the
//! attack stays within its baseline (the call running, before the
//! attacker connects) plus [`BOUND_KIB`]: 400 KiB for the one attacking
//! connection, plus 8 MiB for what any new member costs and allocator
//! slack (a new session's tasks, rings, QUIC state, heap fragmentation).
//! Before the fix this attack grew the relay by 130 MB in one round.
//! The legit call goes on without dropouts.
//!
//! Measured here: no stream opens, no stream byte is accepted, the junk
//! frames are read and counted; the relay grows by about 1 MiB per round,
//! and keeps it after the attacker left. That is the member's join and
//! leave, not the stuffing (rounds that only join and leave grow the same,
//! linearly over 10 rounds): the release of a departed session, tracked
//! with the relay's memory accounting, not bounded by this test beyond
//! its three rounds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wzp_attack::attacks::stream_flood;
use wzp_attack::procs::{SECRET, WAIT};
use wzp_attack::scenario::{dropouts_around, runtime, Call, ROOM};
use wzp_attack::serial::serial;
use wzp_attack::{member, wire};

/// One room connection's documented bound (`StreamLimits::ROOM`).
const PER_CONNECTION_KIB: u64 = 400;
/// What the relay may grow by while one attacker is connected.
const BOUND_KIB: u64 = PER_CONNECTION_KIB + 8 * 1024;
const ROUNDS: u8 = 3;
const STREAMS: u32 = 100;
const MIB: usize = 1 << 20;

#[test]
fn a_member_stuffing_streams_cannot_grow_the_relay_past_its_bound() {
    let _one = serial();
    let rt = runtime();
    let call = Call::start("streams");
    call.record_for(2.0);
    let pid = call.relay.proc.child.id();
    let baseline = call.relay.rss_kib();

    // Peak RSS, sampled every 10 ms while the attack runs.
    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kib) = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                {
                    peak.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };

    let fp = call.relay.tls_fingerprint();
    let malformed0 = call.relay.metric("wzp_relay_signal_malformed_total");
    let (a0, b0) = call.marks();
    for round in 0..ROUNDS {
        let mut mallory = rt
            .block_on(member::join(
                call.relay.quic,
                &fp,
                ROOM,
                SECRET,
                [0x50 + round; 32],
            ))
            .expect("the malicious member is admitted");
        let got = rt.block_on(stream_flood(
            &mallory.conn,
            STREAMS,
            MIB,
            Duration::from_secs(2),
        ));
        // 1 MiB of junk frames (64 KB each, not JSON) on the signal stream.
        let junk = wire::signal_frame(&serde_json::Value::String("x".repeat(64_000)));
        let junk: Vec<u8> = junk[..4]
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'x', junk.len() - 4))
            .collect();
        let frames = MIB / junk.len();
        let wrote = rt.block_on(async {
            for _ in 0..frames {
                if mallory.send.write_all(&junk).await.is_err() {
                    return false;
                }
            }
            true
        });
        println!(
            "round {round}: opened {} of {STREAMS} streams, {} bytes accepted; \
             {frames} junk signal frames written: {wrote}; relay RSS {} KiB",
            got.opened,
            got.bytes_accepted,
            call.relay.rss_kib()
        );
        assert_eq!(
            got.opened, 0,
            "the relay let a room connection open more streams"
        );
        assert_eq!(got.bytes_accepted, 0);
        // The relay read every junk frame (counted malformed, not held).
        let want = malformed0 + f64::from((round as u32 + 1) * frames as u32);
        let deadline = Instant::now() + WAIT;
        while call.relay.metric("wzp_relay_signal_malformed_total") < want {
            assert!(
                Instant::now() < deadline,
                "the relay did not read the junk frames"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        mallory.conn.close(0u32.into(), b"done");
        drop(mallory);
        let deadline = Instant::now() + WAIT;
        while call.relay.metric("wzp_relay_participants") > 2.0 {
            assert!(
                Instant::now() < deadline,
                "the attacker's session was not released"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (a1, b1) = call.marks();
    call.record_for(1.0);
    let after = call.relay.rss_kib();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("the sampler ends");
    let peak = peak.load(Ordering::Relaxed);
    println!(
        "relay RSS: baseline {baseline} KiB, peak {peak} KiB (+{}), after {ROUNDS} rounds \
         {after} KiB (+{}); bound +{BOUND_KIB} KiB",
        peak.saturating_sub(baseline),
        after.saturating_sub(baseline)
    );
    assert!(
        peak <= baseline + BOUND_KIB,
        "relay RSS peaked at {peak} KiB, baseline {baseline} + bound {BOUND_KIB}"
    );
    assert!(
        after <= baseline + BOUND_KIB,
        "relay RSS after the attack {after} KiB, baseline {baseline} + bound {BOUND_KIB}"
    );

    let Call {
        alice, bob, dir, ..
    } = call;
    for (rec, at) in [(alice.hang_up(), a0..a1), (bob.hang_up(), b0..b1)] {
        let d = dropouts_around(&rec.audio, at);
        println!("{}: {d:?}", rec.name);
        d.assert_none_caused(&rec.name);
    }
    let _ = std::fs::remove_dir_all(dir);
}
