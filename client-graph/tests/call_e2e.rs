//! Real calls: the `wzp-relay` and `wzp-client` binaries as processes on
//! loopback, real QUIC, real libopus, end-to-end encryption, and the audio
//! checked at the far end.
//!
//! The relay binary is found next to this test's target folder; `cargo test
//! --workspace` builds it before any test runs.

mod common;
use common::segmental_correlation;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wzp_stages::audio::signal::{goertzel_dbfs, rms_dbfs, speech_like};
use wzp_stages::audio::wav_source::read_wav_mono;

const WAIT: Duration = Duration::from_secs(15);

/// These tests run real-time processes; one call at a time keeps a 2-core
/// machine from starving them (which would test the machine, not wzp).
static ONE_CALL_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_CALL_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}
const SECRET: &str = "a secret only the members hold";

fn relay_bin() -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_wzp-client"));
    let relay = client.with_file_name("wzp-relay");
    assert!(
        relay.exists(),
        "{} is missing: build it with `cargo build -p wzp-relay` (cargo test --workspace does)",
        relay.display()
    );
    relay
}

struct Relay {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
}

impl Relay {
    // The child is killed and waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn start(dir: &Path, listen: &str) -> Relay {
        let mut child = Command::new(relay_bin())
            .args([
                "-i",
                dir.join("relay.seed").to_str().unwrap(),
                "--listen",
                listen,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("wzp-relay starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("wzp-relay prints its `listening` line");
            if let Some(rest) = line.strip_prefix("listening ") {
                let field = |k: &str| {
                    rest.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .unwrap()
                        .to_string()
                };
                return Relay {
                    addr: field("quic").parse().unwrap(),
                    fingerprint: field("fingerprint"),
                    child,
                };
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wzp-e2e-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_wav(path: &Path, rate: u32, x: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in x {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .unwrap();
    }
    w.finalize().unwrap();
}

/// Starts a client; `extra` adds or overrides flags.
fn client(
    dir: &Path,
    relay: &Relay,
    name: &str,
    input: &str,
    secret: &str,
    extra: &[&str],
) -> Running {
    client_with(dir, relay, name, input, secret, extra, false)
}

/// [`client`], asking for real-time priority when `realtime`.
fn client_with(
    dir: &Path,
    relay: &Relay,
    name: &str,
    input: &str,
    secret: &str,
    extra: &[&str],
    realtime: bool,
) -> Running {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wzp-client"));
    cmd.args([
        "join",
        "--relay",
        &relay.addr.to_string(),
        "--room",
        "e2e",
        "--room-secret",
        secret,
    ])
    .args([
        "--input",
        input,
        "--output",
        dir.join(format!("{name}.wav")).to_str().unwrap(),
    ])
    .args([
        "--identity",
        dir.join(format!("{name}.seed")).to_str().unwrap(),
    ])
    .args([
        "--known-relays",
        dir.join(format!("{name}.known")).to_str().unwrap(),
    ])
    .args([
        "--relay-fingerprint",
        &relay.fingerprint,
        "--alias",
        name,
        "--quiet",
    ])
    .args(if realtime {
        &[][..]
    } else {
        &["--no-realtime"][..]
    })
    .args([
        "--stats-json",
        dir.join(format!("{name}.json")).to_str().unwrap(),
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("wzp-client starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    Running {
        child: Some(child),
        name: name.to_string(),
        lines,
        seen: Vec::new(),
    }
}

/// A running client: its stdout lines as they come. Killed when dropped
/// unless `finish` took it (a test that fails leaves no client running
/// into the next one).
struct Running {
    child: Option<Child>,
    name: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Running {
    /// Waits (bounded by [`WAIT`]) for a stdout line that satisfies `pred`.
    fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = pred(&line);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{} printed no line saying {what} within {WAIT:?}; stdout:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Returns at once if a line already read satisfies `pred`, else
    /// [`Running::wait_line`].
    fn saw_or_wait(&mut self, what: &str, pred: impl Fn(&str) -> bool) {
        if !self.seen.iter().any(|l| pred(l)) {
            self.wait_line(what, pred);
        }
    }

    /// Waits until the client has said the room holds `n` members.
    fn wait_room_of(&mut self, n: usize) {
        let joined = format!("({n} in the room)");
        let update = format!("room e2e: {n} (");
        self.wait_line(&format!("the room holds {n}"), |l| {
            l.ends_with(&joined) || l.starts_with(&update)
        });
    }
}

/// Waits for the client to exit, asserts it succeeded; its whole stdout
/// (lines read while it ran included) and stderr.
fn finish(mut run: Running, what: &str) -> Output {
    let child = run.child.take().unwrap();
    let mut out = child.wait_with_output().unwrap();
    // The reader thread ends at the pipe's end, so this drains and stops.
    let seen = std::mem::take(&mut run.seen);
    let all: Vec<String> = seen.into_iter().chain(run.lines.iter()).collect();
    out.stdout = all.join("\n").into_bytes();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Samples in a recording so far (16-bit mono, 16 kHz, a 44-byte header):
/// the WAV sink appends as the call runs and flushes about once a second.
fn recorded(dir: &Path, name: &str) -> u64 {
    std::fs::metadata(dir.join(format!("{name}.wav")))
        .map(|m| m.len().saturating_sub(44) / 2)
        .unwrap_or(0)
}

/// What a client left: its output, and the part of its recording made
/// while everyone was in the call.
struct Talked {
    out: Output,
    /// Samples the recording held just before the hang-up: everything
    /// before this index was recorded while all were still in the call.
    before_hangup: usize,
}

impl Talked {
    /// The second half of what was recorded before the hang-up: wholly
    /// after everyone joined (see [`talk_then_hang_up`]).
    fn talk<'a>(&self, rec: &'a [f32]) -> &'a [f32] {
        assert!(
            rec.len() >= self.before_hangup,
            "the finished recording ({} samples) is shorter than it was during the call ({})",
            rec.len(),
            self.before_hangup
        );
        &rec[self.before_hangup / 2..self.before_hangup]
    }
}

/// Once every client is in the room: waits until each recording holds
/// twice what it held then (plus a second for the writer's once-a-second
/// flush) plus `secs` seconds, so the second half of what was recorded
/// before the hang-up lies after everyone joined, however long starting
/// took on a loaded machine. Then interrupts them all (one `kill`, so they
/// leave together) and returns what each left.
fn talk_then_hang_up(dir: &Path, runs: Vec<Running>, secs: u64) -> Vec<Talked> {
    let since: Vec<u64> = runs.iter().map(|r| recorded(dir, &r.name)).collect();
    for (r, from) in runs.iter().zip(&since) {
        wait_recorded(dir, &r.name, 2 * (from + 16_000) + secs * 16_000);
    }
    let before: Vec<u64> = runs.iter().map(|r| recorded(dir, &r.name)).collect();
    interrupt(&runs);
    runs.into_iter()
        .zip(before)
        .map(|(r, before_hangup)| {
            let name = r.name.clone();
            Talked {
                out: finish(r, &name),
                before_hangup: before_hangup as usize,
            }
        })
        .collect()
}

/// Waits (bounded) until `name`'s recording holds `samples`.
fn wait_recorded(dir: &Path, name: &str, samples: u64) {
    wait_until(
        &format!("{name}'s recording reaching {samples} samples"),
        || recorded(dir, name) >= samples,
    );
}

/// Waits (up to `WAIT * 4`) until `pred` holds, checking it every 50 ms:
/// what a client's files say (its recording, its `--stats-json`) changes as
/// it runs, with no line printed to wait for.
fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT * 4;
    while !pred() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {:?}",
            WAIT * 4
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGINT to every client at once.
fn interrupt(runs: &[Running]) {
    let status = Command::new("kill")
        .arg("-INT")
        .args(runs.iter().map(|r| r.pid().to_string()))
        .status()
        .unwrap();
    assert!(status.success());
}

fn counter(dir: &Path, name: &str, stage: &str, key: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == stage)
        .unwrap()["counters"][key]
        .as_u64()
        .unwrap()
}

fn recording(dir: &Path, name: &str) -> Vec<f32> {
    let w = read_wav_mono(&dir.join(format!("{name}.wav"))).unwrap();
    assert_eq!(w.rate, 16_000);
    w.samples
}

/// Level of the `freq` tone in `x` (16 kHz): the mean power of its
/// Goertzel level over 0.5 s windows. One coherent sum over seconds would
/// also measure the tone's phase staying put, and a jitter buffer that
/// stretches or skips a frame to adapt its delay moves the phase of what
/// follows: several such steps cancel each other in a long sum even when
/// every window holds the tone at full level.
fn tone_dbfs(x: &[f32], freq: f64) -> f32 {
    let powers: Vec<f32> = x
        .chunks_exact(8_000)
        .map(|w| 10f32.powf(goertzel_dbfs(w, 16_000, freq) / 10.0))
        .collect();
    assert!(
        !powers.is_empty(),
        "under 0.5 s to measure: {} samples",
        x.len()
    );
    10.0 * (powers.iter().sum::<f32>() / powers.len() as f32).log10()
}

#[test]
fn two_clients_hear_each_other_through_the_relay() {
    let _serial = serial();
    let dir = tmp("two");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let speech = speech_like(16_000);
    write_wav(&dir.join("speech.wav"), 16_000, &speech);
    // Alice protects her frames with RaptorQ: its repair symbols share
    // their block's last seq and must still be sealed, sent and used.
    let mut a = client(
        &dir,
        &relay,
        "alice",
        dir.join("speech.wav").to_str().unwrap(),
        SECRET,
        &["--set", "fec_ratio=20"],
    );
    let mut b = client(&dir, &relay, "bob", "tone:440", SECRET, &[]);
    a.wait_room_of(2);
    b.wait_room_of(2);
    let talked = talk_then_hang_up(&dir, vec![a, b], 4);
    // The join line names the room id an operator bridges or taps the room
    // by: the server name only holders of the secret can derive.
    let said = String::from_utf8_lossy(&talked[0].out.stdout);
    let id = wzp_proto::join::RoomAdmissionKey::derive(SECRET.as_bytes(), "e2e").sni();
    assert!(
        said.lines()
            .any(|l| l.starts_with(&format!("joined room e2e (room id {id}) via "))),
        "{said}"
    );
    // Each says who is there as it joins (its first room line after the
    // join; other threads' lines may come between): alice alone, or both if
    // bob came first.
    let after_join = |out: &str| -> String {
        out.lines()
            .skip_while(|l| !l.starts_with("joined room e2e "))
            .find(|l| l.starts_with("room e2e: "))
            .unwrap_or_else(|| panic!("no room line after the join: {out}"))
            .to_string()
    };
    let first = after_join(&said);
    assert!(
        first == "room e2e: 1 (alice)" || first == "room e2e: 2 (bob, alice)",
        "{first:?}\n{said}"
    );
    let bob_said = String::from_utf8_lossy(&talked[1].out.stdout);
    let first = after_join(&bob_said);
    assert!(
        first == "room e2e: 2 (alice, bob)" || first == "room e2e: 1 (bob)",
        "{first:?}\n{bob_said}"
    );
    // Bob heard Alice's speech. The speech-like signal through Opus
    // correlates ~0.98 on a clean path (see loopback tests); a real network
    // hop with its own jitter buffer and start-up keeps it well above 0.7,
    // while unrelated audio or silence stays under 0.3.
    let heard_by_bob = recording(&dir, "bob");
    let r = segmental_correlation(&heard_by_bob, &speech);
    assert!(
        r > 0.7,
        "bob's recording correlates {r} with alice's speech"
    );
    // Alice heard Bob's 440 Hz tone (-12 dBFS peak, -15 dBFS RMS), and
    // little else.
    let heard_by_alice = recording(&dir, "alice");
    let tail = talked[0].talk(&heard_by_alice);
    let tone = tone_dbfs(tail, 440.0);
    assert!(tone > -20.0, "alice hears the tone at {tone} dBFS");
    assert!(tone_dbfs(tail, 1000.0) < tone - 30.0, "the tone is clean");
    assert!(counter(&dir, "bob", "open", "opened") > 150);
    assert_eq!(counter(&dir, "bob", "open", "bad_tag"), 0);
    assert_eq!(counter(&dir, "alice", "seal", "seq_reuse"), 0);
    let repairs_sent = counter(&dir, "alice", "fec_enc", "repair_sent");
    assert!(
        repairs_sent > 20,
        "alice sent {repairs_sent} repair symbols"
    );
    assert!(
        counter(&dir, "bob", "fec_dec0", "repair_received") > repairs_sent / 2,
        "bob received alice's repair symbols"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn top_shows_what_the_call_sends_and_hears() {
    let _serial = serial();
    let dir = tmp("top");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let mut a = client(&dir, &relay, "alice", "tone:440", SECRET, &["--top"]);
    let mut b = client(&dir, &relay, "bob", "tone:880", SECRET, &[]);
    b.wait_room_of(2);
    // A screen that hears bob: frames played in its last second.
    a.wait_line("a --top screen hearing bob", |l| {
        l.starts_with("  jb") && l.contains("last second: ") && !l.contains("last second: 0 played")
    });
    // The room line names both, bob talking (his tone is heard every
    // quantum), and bob's chain by his name: the relay bound his sender id
    // to him and said so in a room update.
    a.wait_line("a --top screen naming bob as talking", |l| {
        l == "room       2: alice (you), bob (talking)"
            || l == "room       2: bob (talking), alice (you)"
    });
    a.wait_line("a --top screen naming bob's chain", |l| {
        l.starts_with("  jb") && l.contains(" bob: delay ")
    });
    wait_until("alice's --stats-json has bob talking", || {
        room_member(&dir, "alice", "bob").is_some_and(|p| p["talking"] == true)
    });
    // And the screen after it, which counts from that one.
    a.wait_line("another --top screen", |l| {
        l.starts_with("wzp top — call — room e2e — ")
    });
    let runs = vec![a, b];
    interrupt(&runs);
    let out: Vec<Output> = runs
        .into_iter()
        .map(|r| {
            let name = r.name.clone();
            finish(r, &name)
        })
        .collect();
    let said = String::from_utf8_lossy(&out[0].stdout);
    let screens: Vec<&str> = said.split("wzp top — call — room e2e — ").skip(1).collect();
    assert!(
        screens.len() >= 2,
        "alice showed {} screens:\n{said}",
        screens.len()
    );
    let heard = screens
        .iter()
        .find(|s| s.contains("hearing    1 sender\n"))
        .unwrap_or_else(|| panic!("no screen hears one sender:\n{said}"));
    // What alice sends: the shipped call starts on the good tier.
    assert!(
        heard.contains("sending    good: Opus 24 kb/s, 20 ms frames,"),
        "{heard}"
    );
    assert!(heard.contains("receivers: worst loss "), "{heard}");
    // Decisions are in the view, not printed one by one; the stage table
    // follows; stdout is no terminal, so no screen clearing.
    assert!(heard.contains("decisions  startup -> tier=good"), "{heard}");
    assert!(!said.lines().any(|l| l.starts_with("adapt: ")), "{said}");
    assert!(
        heard.contains("STAGE ") && heard.contains("jitter.adaptive"),
        "{heard}"
    );
    assert!(!said.contains('\x1b'), "{said}");
    // Bob, without --top, prints his decisions as lines.
    let bob_said = String::from_utf8_lossy(&out[1].stdout);
    assert!(
        bob_said
            .lines()
            .any(|l| l.starts_with("adapt: startup -> ")),
        "{bob_said}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The member aliased `alias` in the `room` of `name`'s `--stats-json`.
fn room_member(dir: &Path, name: &str, alias: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["room"]["participants"]
        .as_array()?
        .iter()
        .find(|p| p["alias"] == alias)
        .cloned()
}

/// A figure of `name`'s `--stats-json` as the call goes (0 until the file
/// and the figure are there).
fn live_figure(dir: &Path, name: &str, stage: &str, kind: &str, key: &str) -> i64 {
    common::stats_figure(&dir.join(format!("{name}.json")), stage, kind, key).unwrap_or(0)
}

#[test]
fn a_muted_talker_sends_silence_until_unmuted_by_signal() {
    let _serial = serial();
    let dir = tmp("mute");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let mut a = client(&dir, &relay, "alice", "tone:440", SECRET, &["--muted"]);
    let mut b = client(&dir, &relay, "bob", "tone:880", SECRET, &[]);
    a.wait_line("that alice starts muted", |l| {
        l.starts_with("microphone muted")
    });
    a.wait_room_of(2);
    b.wait_room_of(2);
    // The room is told: bob's room line marks her muted.
    b.saw_or_wait("that alice is muted", |l| {
        l.starts_with("room e2e: 2 (") && l.contains("alice (muted)")
    });
    // Bob's --stats-json says so too, and that bob is bob.
    wait_until("bob's --stats-json lists alice muted", || {
        room_member(&dir, "bob", "alice").is_some_and(|p| p["muted"] == true && p["you"] == false)
    });
    assert_eq!(room_member(&dir, "bob", "bob").unwrap()["you"], true);
    // Bob plays alice's frames while she is muted: she keeps sending, and
    // what she sends is silence.
    wait_until("bob plays 2 s of alice's muted frames", || {
        live_figure(&dir, "bob", "jb0", "counters", "played") >= 100
    });
    let muted_upto = recorded(&dir, "bob") as usize;
    assert_eq!(live_figure(&dir, "alice", "mute", "gauges", "muted"), 1);
    assert!(live_figure(&dir, "alice", "mute", "counters", "muted_frames") > 0);

    // Her tone goes on into the muted microphone: she is told, once.
    a.wait_line("that alice talks while muted", |l| {
        l == "you are talking while muted: the others hear nothing (SIGUSR2 unmutes)"
    });
    // SIGUSR2 unmutes; she says so.
    let status = Command::new("kill")
        .args(["-USR2", &a.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    a.wait_line("that alice is unmuted", |l| l == "microphone on");
    let unmuted_from = recorded(&dir, "bob") as usize;
    b.wait_line("that alice is no longer muted", |l| {
        l.starts_with("room e2e: 2 (") && l.contains("alice") && !l.contains("(muted)")
    });
    // Three seconds more, and the flush's second.
    wait_recorded(&dir, "bob", unmuted_from as u64 + 4 * 16_000);
    let runs = vec![a, b];
    interrupt(&runs);
    for r in runs {
        let name = r.name.clone();
        finish(r, &name);
    }
    let heard = recording(&dir, "bob");
    // What bob recorded before the unmute, after alice's frames were
    // playing: no trace of her tone.
    let played_muted = &heard[muted_upto / 2..muted_upto];
    let muted_tone = tone_dbfs(played_muted, 440.0);
    assert!(
        muted_tone < -60.0,
        "bob hears the muted tone at {muted_tone} dBFS"
    );
    // A second after the unmute on: her tone at its level (-15 dBFS RMS).
    let after = &heard[(unmuted_from + 2 * 16_000).min(heard.len())..];
    let tone = tone_dbfs(after, 440.0);
    assert!(tone > -20.0, "bob hears the unmuted tone at {tone} dBFS");
    let _ = std::fs::remove_dir_all(dir);
}

/// A talker whose microphone gives a quiet voice (-40 dBFS over speech)
/// is heard at the gain control's target (-20 dBFS) at the far end.
#[test]
fn a_quiet_talker_is_heard_at_the_gain_controls_level() {
    let _serial = serial();
    let dir = tmp("agc");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let speech = speech_like(16_000);
    let voiced = |x: &[f32]| -> Vec<f32> {
        x.chunks(320)
            .filter(|c| rms_dbfs(c) > -60.0)
            .flatten()
            .copied()
            .collect()
    };
    let scale = 10f32.powf((-40.0 - rms_dbfs(&voiced(&speech))) / 20.0);
    let quiet: Vec<f32> = speech.iter().map(|v| v * scale).collect();
    write_wav(&dir.join("quiet.wav"), 16_000, &quiet);
    let mut a = client(
        &dir,
        &relay,
        "alice",
        dir.join("quiet.wav").to_str().unwrap(),
        SECRET,
        &["--set", "agc=true"],
    );
    // Bob is muted: alice's speaker plays silence, so nothing holds her
    // gain control back (it does not learn while the far end talks).
    let mut b = client(&dir, &relay, "bob", "tone:880", SECRET, &["--muted"]);
    a.wait_room_of(2);
    b.wait_room_of(2);
    let talked = talk_then_hang_up(&dir, vec![a, b], 6);
    let heard = recording(&dir, "bob");
    let level = rms_dbfs(&voiced(talked[1].talk(&heard)));
    assert!(
        (-25.0..-15.0).contains(&level),
        "bob hears alice's -40 dBFS voice at {level:.1} dBFS"
    );
    let gain = live_figure(&dir, "alice", "agc", "gauges", "gain_db");
    assert!(gain > 120, "alice's gain {gain} (x10 dB)");
    assert_eq!(counter(&dir, "alice", "agc", "clipped"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn five_clients_in_a_room_hear_everyone_else() {
    let _serial = serial();
    let dir = tmp("five");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let freqs = [300.0, 500.0, 700.0, 900.0, 1100.0];
    let names = ["c0", "c1", "c2", "c3", "c4"];
    let mut runs: Vec<Running> = names
        .iter()
        .zip(freqs)
        .map(|(n, f)| client(&dir, &relay, n, &format!("tone:{f}"), SECRET, &[]))
        .collect();
    for r in runs.iter_mut() {
        r.wait_room_of(5);
    }
    let talked = talk_then_hang_up(&dir, runs, 3);
    for (i, n) in names.iter().enumerate() {
        let rec = recording(&dir, n);
        let tail = talked[i].talk(&rec);
        for (j, f) in freqs.iter().enumerate() {
            let level = tone_dbfs(tail, *f);
            if i == j {
                assert!(
                    level < -50.0,
                    "{n} hears its own tone at {level} dBFS: the relay echoed it"
                );
            } else {
                assert!(
                    level > -22.0,
                    "{n} hears {} ({f} Hz) only at {level} dBFS",
                    names[j]
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_wrong_room_secret_gets_no_audio() {
    let _serial = serial();
    let dir = tmp("secret");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let a = client(&dir, &relay, "alice", "tone:440", SECRET, &[]);
    let b = client(&dir, &relay, "bob", "tone:660", SECRET, &[]);
    let eve = client(
        &dir,
        &relay,
        "eve",
        "tone:880",
        "not the secret, but long enough",
        &[],
    );
    let mut runs = vec![a, b, eve];
    // The room's server name is the hash of its admission key, which comes
    // from the secret: Eve's wrong secret names another room, so not one
    // packet of Alice's or Bob's reaches her, nor hers them.
    runs[0].wait_room_of(2);
    runs[1].wait_room_of(2);
    runs[2].wait_room_of(1);
    let talked = talk_then_hang_up(&dir, runs, 3);
    let heard = recording(&dir, "eve");
    assert!(
        rms_dbfs(&heard) < -60.0,
        "eve hears {} dBFS",
        rms_dbfs(&heard)
    );
    assert_eq!(counter(&dir, "eve", "open", "bad_tag"), 0);
    assert_eq!(counter(&dir, "eve", "open", "opened"), 0);
    // Bob hears Alice, and nothing of Eve.
    let bob = recording(&dir, "bob");
    let tail = talked[1].talk(&bob);
    assert!(tone_dbfs(tail, 440.0) > -22.0);
    assert!(tone_dbfs(tail, 880.0) < -50.0);
    assert!(counter(&dir, "bob", "open", "opened") > 100);
    assert_eq!(counter(&dir, "bob", "open", "bad_tag"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn clients_rejoin_within_3_s_when_the_relay_restarts() {
    let _serial = serial();
    let dir = tmp("restart");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let addr = relay.addr;
    let mut a = client(&dir, &relay, "alice", "tone:440", SECRET, &[]);
    let mut b = client(&dir, &relay, "bob", "tone:660", SECRET, &[]);
    a.wait_room_of(2);
    b.wait_room_of(2);
    // Killed (and waited for) in `drop`.
    drop(relay);
    // Same identity, same address: a restarted relay.
    let relay2 = Relay::start(&dir, &addr.to_string());
    for r in [&mut a, &mut b] {
        r.wait_line("it rejoined", |l| l.starts_with("rejoined room e2e after "));
    }
    // Three more seconds of the call after both are back (one of them for
    // the recording's once-a-second flush).
    let from = recorded(&dir, "bob");
    wait_recorded(&dir, "bob", from + 3 * 16_000);
    let before_hangup = recorded(&dir, "bob") as usize;
    let runs = vec![a, b];
    interrupt(&runs);
    let mut outs = runs.into_iter().map(|r| {
        let name = r.name.clone();
        finish(r, &name)
    });
    let (out_a, out_b) = (outs.next().unwrap(), outs.next().unwrap());
    drop(relay2);
    for (name, out) in [("alice", out_a), ("bob", out_b)] {
        let text = String::from_utf8_lossy(&out.stdout);
        let ms: u64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("rejoined room e2e after ")?
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name} never rejoined:\n{text}"));
        assert!(ms < 3000, "{name} took {ms} ms to rejoin");
    }
    // Audio flows again after the restart.
    let bob = recording(&dir, "bob");
    let last = &bob[before_hangup - 16_000..before_hangup];
    assert!(
        tone_dbfs(last, 440.0) > -22.0,
        "bob hears alice after the restart"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_changed_relay_certificate_is_refused() {
    let _serial = serial();
    let dir = tmp("pin");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let addr = relay.addr.to_string();
    let known = dir.join("known_relays");
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_wzp-client"))
            .args([
                "join",
                "--relay",
                &addr,
                "--room",
                "e2e",
                "--room-secret",
                SECRET,
                "--input",
                "tone",
                "--output",
                "null",
            ])
            .args([
                "--identity",
                dir.join("c.seed").to_str().unwrap(),
                "--known-relays",
                known.to_str().unwrap(),
            ])
            .args(["--duration", "1s", "--quiet", "--no-realtime"])
            .args(extra)
            .output()
            .unwrap()
    };
    // First contact: trusted and recorded.
    let first = run(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("trusting relay"));
    assert!(std::fs::read_to_string(&known)
        .unwrap()
        .contains(&relay.fingerprint));
    // The relay comes back with another identity on the same address.
    drop(relay);
    std::fs::remove_file(dir.join("relay.seed")).unwrap();
    let other = Relay::start(&dir, &addr);
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("different certificate") && err.contains("--relay-fingerprint"),
        "{err}"
    );
    // A mistyped (or planted) fingerprint is refused, and the recorded one
    // stays: a failed check must not unpin the right certificate.
    let before = std::fs::read_to_string(&known).unwrap();
    let typo = format!("00{}", &other.fingerprint[2..]);
    assert_ne!(typo, other.fingerprint);
    let wrong = run(&["--relay-fingerprint", &typo]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("different certificate"));
    assert_eq!(std::fs::read_to_string(&known).unwrap(), before);
    // Accepting it deliberately works, and is recorded.
    let accepted = run(&["--relay-fingerprint", &other.fingerprint]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(std::fs::read_to_string(&known)
        .unwrap()
        .contains(&other.fingerprint));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ctrl_c_ends_the_call_and_finishes_the_recording() {
    let _serial = serial();
    let dir = tmp("sigint");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let mut a = client(&dir, &relay, "alice", "tone:440", SECRET, &[]);
    let mut b = client(&dir, &relay, "bob", "tone:660", SECRET, &[]);
    a.wait_room_of(2);
    b.wait_room_of(2);
    // SIGINT once both have talked for a while (and whatever starting took).
    let talked = talk_then_hang_up(&dir, vec![a, b], 2).swap_remove(0);
    assert!(!String::from_utf8_lossy(&talked.out.stderr).contains("panicked"));
    // The WAV header is complete (hound reads it) and holds the call: all
    // that was written before the interrupt, and more.
    let rec = recording(&dir, "alice");
    assert!(rec.len() > 16_000, "only {} samples recorded", rec.len());
    let tail = talked.talk(&rec);
    assert!(
        tone_dbfs(tail, 660.0) > -22.0,
        "alice heard bob before the interrupt"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Each thread of a process: (name, scheduling policy, real-time priority),
/// from /proc (`stat` fields 40 and 41).
fn threads(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap();
        let (head, rest) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        // `rest` starts at field 3 (state).
        let f: Vec<&str> = rest.split_whitespace().collect();
        out.push((name, f[41 - 3].parse().unwrap(), f[40 - 3].parse().unwrap()));
    }
    out
}

/// With a real-time clock (the default), the threads that carry its
/// packets to and from the network (the egress pump, the network runtime)
/// run SCHED_FIFO too, under the clock: at normal priority they waited
/// behind the machine's other work (docs/PERFORMANCE.md, "egress jitter").
/// Where real-time priority is refused (not root), none is.
#[test]
fn a_real_time_call_runs_its_network_threads_real_time_under_the_clock() {
    const SCHED_FIFO: u32 = 1;
    let _serial = serial();
    let dir = tmp("rt");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let mut a = client_with(&dir, &relay, "alice", "tone:440", SECRET, &[], true);
    a.wait_room_of(1);
    let all = threads(a.pid());
    let of = |name: &str| -> Vec<(u32, u32)> {
        all.iter()
            .filter(|t| t.0 == name)
            .map(|t| (t.1, t.2))
            .collect()
    };
    let clock = of("wzp-clock");
    let egress = of("wzp-egress");
    let workers = of("tokio-rt-worker");
    assert_eq!(clock.len(), 1, "{all:?}");
    assert_eq!(egress.len(), 1, "{all:?}");
    assert!(!workers.is_empty(), "{all:?}");
    if clock[0].0 == SCHED_FIFO {
        assert_eq!(clock[0].1, 50, "{all:?}");
        for t in egress.iter().chain(&workers) {
            assert_eq!(*t, (SCHED_FIFO, 40), "{all:?}");
        }
    } else {
        eprintln!("SCHED_FIFO refused here: checking that no thread got it");
        assert!(all.iter().all(|t| t.1 != SCHED_FIFO), "{all:?}");
    }
    interrupt(std::slice::from_ref(&a));
    finish(a, "alice");
    let _ = std::fs::remove_dir_all(dir);
}
