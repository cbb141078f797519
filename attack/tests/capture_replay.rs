//! A malicious member captures 4 s of the room's media and sends it back.
//!
//! 1. While Alice and Bob are in the room, with Carol joined after the
//!    capture (a late joiner, whose receive windows start empty): the
//!    replayed packets carry ids bound to Alice's and Bob's connections,
//!    so the relay drops them (`sender_spoofed`). Nobody hears their own
//!    voice (Alice's recording holds no 440 Hz, Bob's no 660 Hz), and Carol
//!    hears both live talkers, not digital silence.
//! 2. After Alice leaves, her captured packets are replayed again: the
//!    relay remembers her highest index and drops them (`stale_replay`),
//!    so Carol plays nothing of Alice, while she still hears Bob live.

use std::time::Duration;

use wzp_attack::attacks::{capture, drain, replay, senders_within};
use wzp_attack::audio::{rms_dbfs, tone_dbfs, RATE};
use wzp_attack::procs::{Client, SECRET};
use wzp_attack::scenario::{dropouts_around, runtime, Call, ALICE_HZ, BOB_HZ, FLUSH_LAG, ROOM};
use wzp_attack::serial::serial;
use wzp_attack::{member, wire};

const CAROL_HZ: f64 = 880.0;
/// A frequency nobody sends.
const CONTROL_HZ: f64 = 550.0;

#[test]
fn replayed_media_is_never_played_and_a_late_joiner_hears_the_live_talker() {
    let _one = serial();
    let rt = runtime();
    let call = Call::start("replay");
    call.record_for(2.0);

    let fp = call.relay.tls_fingerprint();
    let mallory = rt
        .block_on(member::join(call.relay.quic, &fp, ROOM, SECRET, [0x77; 32]))
        .expect("the malicious member is admitted");
    let captured = rt.block_on(capture(&mallory.conn, Duration::from_secs(4)));
    assert!(
        captured.len() > 200,
        "4 s of two senders captured: {} datagrams",
        captured.len()
    );

    // Carol joins after the capture.
    let mut carol = Client::join(
        &call.dir,
        &call.relay,
        ROOM,
        "carol",
        &format!("tone:{CAROL_HZ}"),
    );
    carol.wait_room_of(ROOM, 4);
    let c0 = carol.recorded();
    carol.wait_recorded(c0 + RATE as u64 + FLUSH_LAG);

    // 1. Replayed while everyone is there.
    let spoofed0 = call.relay.drops("sender_spoofed");
    let (a0, b0) = call.marks();
    let c1 = carol.recorded();
    let replayed = rt.block_on(replay(&mallory.conn, &captured, 1));
    let (a1, b1) = call.marks();
    let c2 = carol.recorded();
    call.record_for(1.0);
    let spoofed = call.relay.drops("sender_spoofed") - spoofed0;
    println!(
        "replayed {replayed} datagrams with everyone present: {spoofed} dropped as sender_spoofed"
    );
    assert!(
        spoofed > 0.9 * replayed as f64,
        "the relay drops replays of present members' ids: {spoofed} of {replayed} ({})",
        call.relay.drops_summary()
    );

    // 2. Alice leaves; her captured packets come back.
    let Call {
        dir,
        relay,
        alice,
        mut bob,
    } = call;
    let alice = alice.hang_up();
    bob.wait_room_of(ROOM, 3);
    carol.wait_room_of(ROOM, 3);
    // Alice's id is the captured one that stopped: once what waited
    // unread is gone, only Bob's and Carol's still arrive.
    let live = rt.block_on(async {
        drain(&mallory.conn).await;
        senders_within(&mallory.conn, Duration::from_millis(500)).await
    });
    assert_eq!(
        live.len(),
        2,
        "bob and carol send after alice left: {live:?}"
    );
    let alices: Vec<_> = captured
        .iter()
        .filter(|(_, d)| wire::sender_id(d).is_some_and(|id| !live.contains(&id)))
        .cloned()
        .collect();
    let mut ids: Vec<u32> = alices
        .iter()
        .filter_map(|(_, d)| wire::sender_id(d))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1, "one captured sender stopped: {ids:?}");
    assert!(
        alices.len() > 100,
        "alice's captured packets: {}",
        alices.len()
    );
    let stale0 = relay.drops("stale_replay");
    let c3 = carol.recorded();
    let replayed_alice = rt.block_on(replay(&mallory.conn, &alices, 1));
    let c4 = carol.recorded();
    carol.wait_recorded(c4 + RATE as u64 + FLUSH_LAG);
    let stale = relay.drops("stale_replay") - stale0;
    println!("replayed {replayed_alice} of alice's datagrams after she left: {stale} dropped as stale_replay");
    assert!(
        stale > 0.9 * replayed_alice as f64,
        "the relay drops replays of a departed member: {stale} of {replayed_alice} ({})",
        relay.drops_summary()
    );
    let (bob, carol) = (bob.hang_up(), carol.hang_up());

    // No own-voice echo while the replay ran.
    let own_a = tone_dbfs(&alice.audio[a0 as usize..], ALICE_HZ);
    let own_b = tone_dbfs(&bob.audio[b0 as usize..(b1 + FLUSH_LAG) as usize], BOB_HZ);
    println!(
        "own voice: alice {own_a:.1} dBFS at {ALICE_HZ} Hz, bob {own_b:.1} dBFS at {BOB_HZ} Hz \
         (alice open: own_sender {} replays {}; bob: own_sender {} replays {})",
        alice.counter("open", "own_sender"),
        alice.counter("open", "replays"),
        bob.counter("open", "own_sender"),
        bob.counter("open", "replays"),
    );
    assert!(own_a < -40.0, "alice hears her own voice at {own_a} dBFS");
    assert!(own_b < -40.0, "bob hears his own voice at {own_b} dBFS");
    for (rec, at) in [(&alice, a0..a1), (&bob, b0..b1)] {
        let d = dropouts_around(&rec.audio, at);
        println!("{}: {d:?}", rec.name);
        d.assert_none_caused(&rec.name);
    }

    // Carol, who joined after the capture, hears the live talkers during
    // the replay, and nothing of Alice once she left.
    let during = &carol.audio[c1 as usize..(c2 + FLUSH_LAG) as usize];
    let (ca, cb, level) = (
        tone_dbfs(during, ALICE_HZ),
        tone_dbfs(during, BOB_HZ),
        rms_dbfs(during),
    );
    let after = &carol.audio[(c3 + FLUSH_LAG) as usize..(c4 + FLUSH_LAG) as usize];
    let (aa, ab) = (tone_dbfs(after, ALICE_HZ), tone_dbfs(after, BOB_HZ));
    // Coding noise of Bob's tone, at a frequency nobody sends: what "no
    // Alice" measures as.
    let floor = tone_dbfs(after, CONTROL_HZ);
    let per_half_s: Vec<String> = after
        .chunks_exact(RATE as usize / 2)
        .map(|w| format!("{:.0}", tone_dbfs(w, ALICE_HZ)))
        .collect();
    println!("carol, alice's tone per 0.5 s after she left: {per_half_s:?}");
    println!(
        "carol during the replay: alice {ca:.1}, bob {cb:.1}, level {level:.1} dBFS; \
         after alice left: alice {aa:.1}, bob {ab:.1}, {CONTROL_HZ} Hz {floor:.1} dBFS (open: replays {}, bad_tag {}; jb resets {})",
        carol.counter("open", "replays"),
        carol.counter("open", "bad_tag"),
        carol.counter_sum("jb", "resets"),
    );
    assert!(
        ca > -22.0 && cb > -22.0,
        "carol hears the live talkers: alice {ca}, bob {cb}"
    );
    assert!(
        level > -20.0,
        "carol's recording is not silence: {level} dBFS"
    );
    // Replayed audio would play at the talker's level (-15 dBFS).
    assert!(
        aa < ab - 20.0,
        "carol plays alice's replayed voice at {aa} dBFS after she left (bob: {ab})"
    );
    assert!(ab > -22.0, "carol hears bob live at {ab} dBFS");
    assert!(
        tone_dbfs(&carol.audio, CAROL_HZ) < -40.0,
        "carol hears her own tone"
    );
    drop(mallory);
    drop(relay);
    let _ = std::fs::remove_dir_all(dir);
}
