//! The relay process itself attacked: killed with `kill -9` and restarted
//! on the same address with the same identity, and stopped with SIGTERM.
//!
//! - After the restart the old connections' packets get stateless resets
//!   (keys derived from the identity), both clients rejoin at once, and
//!   the gap in Bob's recording of Alice is less than 1 s longer than the
//!   relay was dead (kill to the restarted relay's `listening` line).
//! - On SIGTERM the relay closes every connection with `shutdown`, and
//!   both clients print that close within 200 ms of the signal.

use std::time::{Duration, Instant};

use wzp_attack::audio::{self, tone_dbfs, RATE, WINDOW};
use wzp_attack::procs::Relay;
use wzp_attack::scenario::{Call, ALICE_HZ, BOB_HZ, START_UP_S};
use wzp_attack::serial::serial;

/// How much longer than the relay's dead time the audio may stay away.
const RESTART_BUDGET: Duration = Duration::from_secs(1);
/// How soon after SIGTERM the clients must see the close.
const SHUTDOWN_BUDGET: Duration = Duration::from_millis(200);

#[test]
fn after_kill_9_and_a_restart_the_audio_is_back_within_a_second() {
    let _one = serial();
    let mut call = Call::start("restart");
    call.record_for(2.0);
    let addr = call.relay.quic.to_string();
    let (_, b_kill) = call.marks();
    let killed = Instant::now();
    call.relay.proc.signal("KILL");
    call.relay.proc.wait_exit();
    let relay = Relay::start(&call.dir, &addr);
    let dead = killed.elapsed();
    assert_eq!(relay.fingerprint, call.relay.fingerprint, "same identity");
    for c in [&mut call.alice, &mut call.bob] {
        c.proc
            .wait_line("`rejoined room ...`", |l| l.contains("rejoined room"));
    }
    let back = killed.elapsed();
    call.record_for(3.0);
    let Call {
        alice, bob, dir, ..
    } = call;
    let (_alice, bob) = (alice.hang_up(), bob.hang_up());

    // Every dropout window from the kill on: the relay's dead time, the
    // rejoin, and anything the restarted call loses while settling.
    let levels = audio::window_levels(&bob.audio);
    let start = audio::first_sound(&levels).expect("bob heard alice") + START_UP_S * 10;
    let reference = audio::median(&levels[start..]);
    let from = (b_kill as usize / WINDOW).max(start);
    let gap = audio::dropouts(&levels, from..levels.len(), reference).len();
    let gap_ms = (gap * WINDOW * 1000) as u128 / u128::from(RATE);
    println!(
        "relay dead {} ms (kill to listening), both rejoined {} ms after the kill; \
         bob's recording lost {gap} windows ({gap_ms} ms) of alice",
        dead.as_millis(),
        back.as_millis()
    );
    assert!(
        gap_ms < (dead + RESTART_BUDGET).as_millis(),
        "the audio stayed away {gap_ms} ms, the relay was dead {} ms",
        dead.as_millis()
    );
    let last_s = &bob.audio[bob.audio.len() - RATE as usize..];
    assert!(
        tone_dbfs(last_s, ALICE_HZ) > -22.0,
        "bob hears alice again after the restart"
    );
    drop(relay);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn after_sigterm_both_clients_see_the_shutdown_close_within_200_ms() {
    let _one = serial();
    let mut call = Call::start("sigterm");
    call.record_for(1.0);
    let sent = Instant::now();
    call.relay.proc.signal("TERM");
    let mut took = Vec::new();
    for c in [&mut call.alice, &mut call.bob] {
        let line = c.proc.wait_line("saying the relay is shutting down", |l| {
            l.contains("closed the connection") || l.contains("lost")
        });
        took.push(sent.elapsed());
        assert!(
            line.contains("relay shutting down") && line.contains("reconnecting at once"),
            "{}: the close carries the shutdown code and reason: {line}",
            c.name
        );
    }
    println!(
        "alice saw the close {} ms after SIGTERM, bob {} ms",
        took[0].as_millis(),
        took[1].as_millis()
    );
    for (name, t) in ["alice", "bob"].iter().zip(&took) {
        assert!(
            *t < SHUTDOWN_BUDGET,
            "{name} saw the shutdown {} ms after SIGTERM",
            t.as_millis()
        );
    }
    let status = call.relay.proc.wait_exit();
    assert!(status.success(), "relay exit status {status}");
    let Call {
        alice, bob, dir, ..
    } = call;
    // Both were talking until then.
    for (rec, other) in [(alice.hang_up(), BOB_HZ), (bob.hang_up(), ALICE_HZ)] {
        let heard = tone_dbfs(&rec.audio, other);
        assert!(
            heard > -25.0,
            "{} heard the other at {heard} dBFS",
            rec.name
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
