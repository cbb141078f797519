//! The call every attack runs against: a relay, Alice sending a 440 Hz
//! tone and Bob a 660 Hz tone, each recording what it hears. Two tones
//! tell who is heard (Bob's recording should hold 440 Hz only) and catch
//! own-voice echo (Alice's recording must not hold 440 Hz).

use std::ops::Range;
use std::path::PathBuf;

use crate::audio::{self, RATE, WINDOW};
use crate::procs::{tmp, Client, Relay};

/// The room of the call.
pub const ROOM: &str = "attacked";
/// Alice's tone.
pub const ALICE_HZ: f64 = 440.0;
/// Bob's tone.
pub const BOB_HZ: f64 = 660.0;
/// Seconds of audio that settle in after the first sound before windows
/// count (the jitter buffer finding its depth).
pub const START_UP_S: usize = 1;
/// How far behind the call the recording's file size may be: the WAV sink
/// flushes about once a second.
pub const FLUSH_LAG: u64 = RATE as u64;

/// A relay and a two-person call through it.
pub struct Call {
    pub dir: PathBuf,
    pub relay: Relay,
    pub alice: Client,
    pub bob: Client,
}

impl Call {
    /// Starts the relay and both clients, and waits until each says the
    /// room holds two.
    pub fn start(name: &str) -> Call {
        let dir = tmp(name);
        let relay = Relay::start(&dir, "127.0.0.1:0");
        let mut alice = Client::join(&dir, &relay, ROOM, "alice", &format!("tone:{ALICE_HZ}"));
        let mut bob = Client::join(&dir, &relay, ROOM, "bob", &format!("tone:{BOB_HZ}"));
        alice.wait_room_of(ROOM, 2);
        bob.wait_room_of(ROOM, 2);
        Call {
            dir,
            relay,
            alice,
            bob,
        }
    }

    /// Waits until both recordings grew by `secs` seconds (plus the
    /// flush lag), so that much of the call is on disk from now on.
    pub fn record_for(&self, secs: f64) {
        let more = (secs * f64::from(RATE)) as u64 + FLUSH_LAG;
        let (a, b) = (self.alice.recorded(), self.bob.recorded());
        self.alice.wait_recorded(a + more);
        self.bob.wait_recorded(b + more);
    }

    /// Both recordings' lengths now (samples): a mark on their timelines.
    pub fn marks(&self) -> (u64, u64) {
        (self.alice.recorded(), self.bob.recorded())
    }
}

/// A tokio runtime for the attacker, off the test thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Dropout windows of one recording, before and during an attack.
#[derive(Clone, Debug)]
pub struct Dropouts {
    /// Median window level after the start-up, dBFS.
    pub median_db: f32,
    /// Windows between the start-up and the attack, and how many of them
    /// dropped out.
    pub before_windows: usize,
    pub before: usize,
    /// Windows the attack may have touched, and how many dropped out.
    pub during_windows: usize,
    pub during: usize,
    /// Where the dropouts during the attack are (seconds after the
    /// attack's mark) and their levels (dBFS).
    pub during_at: Vec<(f32, f32)>,
}

/// Dropout windows tolerated beyond the recording's own rate before the
/// attack: one. On a machine starved of CPU (`stress-ng --cpu 2` and
/// other builds) the clients' clocks miss a cycle now and then with no
/// attack at all: measured, about one lone window 11-12 dB down per 100
/// windows, in any phase of a call. A baseline of 2-3 s cannot estimate
/// so rare a rate, so one such window is not blamed on the attack. What
/// the issue measured against the unfixed relay, 8 and 27 dropouts under
/// the datagram flood, is far past it; on a quiet machine every attack
/// here measures 0.
pub const HICCUP_WINDOWS: usize = 1;

impl Dropouts {
    /// The dropouts the attack may be blamed for: those during it beyond
    /// what the same recording showed per window before it (rounded up).
    /// On a quiet machine `before` is 0 and this is `during`.
    pub fn caused_by_attack(&self) -> usize {
        if self.before_windows == 0 {
            return self.during;
        }
        let expected = (self.before * self.during_windows).div_ceil(self.before_windows);
        self.during.saturating_sub(expected)
    }

    /// Panics if the attack caused more than [`HICCUP_WINDOWS`] dropouts
    /// in `who`'s recording.
    pub fn assert_none_caused(&self, who: &str) {
        assert!(
            self.caused_by_attack() <= HICCUP_WINDOWS,
            "{who}'s recording drops out during the attack: {self:?}"
        );
    }
}

/// Counts dropout windows (100 ms, more than 10 dB below the median
/// level after start-up) in `x`, before the sample `attack.start` and in
/// `attack.start .. attack.end + 1.5 s` (the recording's file lags the
/// call by up to [`FLUSH_LAG`], and what was sent last plays out a jitter
/// buffer later).
pub fn dropouts_around(x: &[f32], attack: Range<u64>) -> Dropouts {
    let levels = audio::window_levels(x);
    let start = audio::first_sound(&levels).unwrap_or(levels.len()) + START_UP_S * 10;
    let reference = audio::median(&levels[start.min(levels.len())..]);
    let from = (attack.start as usize / WINDOW).max(start);
    let to = ((attack.end + FLUSH_LAG + RATE as u64 / 2) as usize / WINDOW).min(levels.len());
    let before = audio::dropouts(&levels, start..from, reference);
    let during = audio::dropouts(&levels, from..to, reference);
    Dropouts {
        median_db: reference,
        before_windows: from.saturating_sub(start),
        before: before.len(),
        during_windows: to.saturating_sub(from),
        during: during.len(),
        during_at: during
            .iter()
            .map(|&i| ((i - from) as f32 / 10.0, levels[i]))
            .collect(),
    }
}
