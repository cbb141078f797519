//! Real calls: the `wzp-relay` and `wzp-client` binaries as processes on
//! loopback, real QUIC, real libopus, end-to-end encryption, and the audio
//! checked at the far end.
//!
//! The relay binary is found next to this test's target folder; `cargo test
//! --workspace` builds it before any test runs.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wzp_stages::audio::signal::{goertzel_dbfs, rms_dbfs, speech_like, xcorr_peak};
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
) -> Child {
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
        "--no-realtime",
    ])
    .args([
        "--stats-json",
        dir.join(format!("{name}.json")).to_str().unwrap(),
    ])
    .args(extra)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd.spawn().expect("wzp-client starts")
}

fn finish(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
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

/// Median over 0.5 s windows of the best lag-aligned correlation: the jitter
/// buffer may move the playout point during a call, so no single lag fits.
fn segmental_correlation(received: &[f32], sent: &[f32]) -> f32 {
    let seg = 8_000;
    let mut rs: Vec<f32> = sent
        .chunks(seg)
        .filter(|c| c.len() == seg && rms_dbfs(c) > -45.0)
        .map(|c| xcorr_peak(received, c, received.len().saturating_sub(seg / 2)).1)
        .collect();
    assert!(rs.len() >= 3, "too few voiced segments");
    rs.sort_by(|a, b| a.total_cmp(b));
    rs[rs.len() / 2]
}

#[test]
fn two_clients_hear_each_other_through_the_relay() {
    let _serial = serial();
    let dir = tmp("two");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let speech = speech_like(16_000);
    write_wav(&dir.join("speech.wav"), 16_000, &speech);
    let a = client(
        &dir,
        &relay,
        "alice",
        dir.join("speech.wav").to_str().unwrap(),
        SECRET,
        &["--duration", "5s"],
    );
    let b = client(
        &dir,
        &relay,
        "bob",
        "tone:440",
        SECRET,
        &["--duration", "5s"],
    );
    let out_a = finish(a, "alice");
    finish(b, "bob");
    assert!(String::from_utf8_lossy(&out_a.stdout).contains("joined room e2e"));
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
    let tail = &heard_by_alice[heard_by_alice.len() / 2..];
    let tone = goertzel_dbfs(tail, 16_000, 440.0);
    assert!(tone > -20.0, "alice hears the tone at {tone} dBFS");
    assert!(
        goertzel_dbfs(tail, 16_000, 1000.0) < tone - 30.0,
        "the tone is clean"
    );
    assert!(counter(&dir, "bob", "open", "opened") > 150);
    assert_eq!(counter(&dir, "bob", "open", "bad_tag"), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn five_clients_in_a_room_hear_everyone_else() {
    let _serial = serial();
    let dir = tmp("five");
    let relay = Relay::start(&dir, "127.0.0.1:0");
    let freqs = [300.0, 500.0, 700.0, 900.0, 1100.0];
    let names = ["c0", "c1", "c2", "c3", "c4"];
    let children: Vec<Child> = names
        .iter()
        .zip(freqs)
        .map(|(n, f)| {
            client(
                &dir,
                &relay,
                n,
                &format!("tone:{f}"),
                SECRET,
                &["--duration", "5s"],
            )
        })
        .collect();
    for (c, n) in children.into_iter().zip(names) {
        finish(c, n);
    }
    for (i, n) in names.iter().enumerate() {
        let rec = recording(&dir, n);
        let tail = &rec[rec.len() / 2..];
        for (j, f) in freqs.iter().enumerate() {
            let level = goertzel_dbfs(tail, 16_000, *f);
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
    let a = client(
        &dir,
        &relay,
        "alice",
        "tone:440",
        SECRET,
        &["--duration", "4s"],
    );
    let b = client(
        &dir,
        &relay,
        "bob",
        "tone:660",
        SECRET,
        &["--duration", "4s"],
    );
    let eve = client(
        &dir,
        &relay,
        "eve",
        "tone:880",
        "not the secret, but long enough",
        &["--duration", "4s"],
    );
    finish(a, "alice");
    finish(b, "bob");
    finish(eve, "eve");
    // The room's server name is the hash of its admission key, which comes
    // from the secret: Eve's wrong secret names another room, so not one
    // packet of Alice's or Bob's reaches her, nor hers them.
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
    let tail = &bob[bob.len() / 2..];
    assert!(goertzel_dbfs(tail, 16_000, 440.0) > -22.0);
    assert!(goertzel_dbfs(tail, 16_000, 880.0) < -50.0);
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
    let a = client(
        &dir,
        &relay,
        "alice",
        "tone:440",
        SECRET,
        &["--duration", "9s"],
    );
    let b = client(
        &dir,
        &relay,
        "bob",
        "tone:660",
        SECRET,
        &["--duration", "9s"],
    );
    std::thread::sleep(Duration::from_millis(2500));
    drop(relay);
    std::thread::sleep(Duration::from_millis(300));
    // Same identity, same address: a restarted relay.
    let relay2 = Relay::start(&dir, &addr.to_string());
    let out_a = finish(a, "alice");
    let out_b = finish(b, "bob");
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
    let last = &bob[bob.len() - 16_000..];
    assert!(
        goertzel_dbfs(last, 16_000, 440.0) > -22.0,
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
    let a = client(&dir, &relay, "alice", "tone:440", SECRET, &[]);
    let b = client(&dir, &relay, "bob", "tone:660", SECRET, &[]);
    std::thread::sleep(Duration::from_millis(3000));
    for c in [&a, &b] {
        let status = Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let out = finish(a, "alice");
    finish(b, "bob");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    // The WAV header is complete (hound reads it) and holds the call.
    let rec = recording(&dir, "alice");
    assert!(rec.len() > 16_000, "only {} samples recorded", rec.len());
    let tail = &rec[rec.len() / 2..];
    assert!(
        goertzel_dbfs(tail, 16_000, 660.0) > -22.0,
        "alice heard bob before the interrupt"
    );
    let _ = std::fs::remove_dir_all(dir);
}
