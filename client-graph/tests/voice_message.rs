//! Voice messages between real processes: `wzp-client message` leaves one
//! through a real `wzp-relay` for someone away, `listen` says it waits,
//! `wzp-client messages` fetches it, checks its sender and saves a WAV whose
//! tone is the one left; refusals exit non-zero with why.
//!
//! Every wait is for a process's line or exit, with a deadline.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{bin, identity_of, write_wav_at, Proc, Relay};
use wzp_stages::audio::signal::goertzel_dbfs;
use wzp_stages::audio::wav_source::read_wav_mono;

const WAIT: Duration = Duration::from_secs(20);

fn tmp(name: &str) -> PathBuf {
    common::tmp("wzp-voicemail", name)
}

/// `wzp-client history` of `user`: its lines.
fn history(dir: &Path, user: &str) -> Vec<String> {
    let out = Command::new(bin("wzp-client"))
        .arg("history")
        .arg("--history")
        .arg(dir.join(format!("{user}.history.jsonl")))
        .output()
        .expect("wzp-client history runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs it to its end.
fn run(dir: &Path, relay: &Relay, user: &str, sub: &[&str]) -> Output {
    common::user_cmd(dir, relay, user, sub)
        .output()
        .expect("wzp-client runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).ok()?;
    s.set_read_timeout(Some(WAIT)).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[test]
fn a_voice_message_left_for_someone_away_reaches_them_as_a_wav_and_leaves_the_relay() {
    let dir = tmp("leave");
    let relay = Relay::start(
        "wzp-relay",
        &[
            "--listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "-i",
            dir.join("relay.seed").to_str().unwrap(),
        ],
        WAIT,
    );
    let (alice, bob) = (identity_of(&dir, "alice"), identity_of(&dir, "bob"));
    // Nobody has registered yet: no message can be left for bob.
    let o = run(
        &dir,
        &relay,
        "alice",
        &["message", &bob, "--input", "tone:440", "--duration", "2s"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("has no message key at"), "{}", text(&o));
    // Bob checks his messages once (the relay now has his key), then is away.
    let save = dir.join("saved");
    let save_arg = save.to_str().unwrap();
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("no voice messages for you"),
        "{}",
        text(&o)
    );
    // Alice leaves 3 s of 440 Hz.
    let o = run(
        &dir,
        &relay,
        "alice",
        &["message", &bob, "--input", "tone:440", "--duration", "3s"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("left a voice message of 3.0 s for {bob}")),
        "{}",
        text(&o)
    );
    let metrics = relay.metrics.unwrap();
    assert_eq!(metric(metrics, "wzp_signal_voice_messages"), Some(1));
    // Bob's listen says one waits.
    let mut l = Proc::spawn(
        "bob listen",
        &mut common::user_cmd(
            &dir,
            &relay,
            "bob",
            &["listen", "--accept", "reject", "--no-realtime"],
        ),
    );
    l.expect_line("1 voice message waits for you at this relay", WAIT);
    l.kill();
    // He fetches it: from alice (her signature), 3 s, the tone she left.
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let said = text(&o);
    let line = said
        .lines()
        .find(|l| l.starts_with("voice message from "))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        line.contains(&alice) && line.contains(", 3.0 s, left "),
        "{line}"
    );
    let path = line.rsplit_once("saved to ").unwrap().1;
    let wav = read_wav_mono(Path::new(path)).unwrap();
    assert_eq!(wav.rate, 48_000);
    assert!(
        (143_000..=145_000).contains(&wav.samples.len()),
        "{}",
        wav.samples.len()
    );
    let mid = &wav.samples[24_000..120_000];
    let (tone, other) = (
        goertzel_dbfs(mid, 48_000, 440.0),
        goertzel_dbfs(mid, 48_000, 1_700.0),
    );
    assert!(
        tone > -20.0 && other < tone - 30.0,
        "440 Hz at {tone} dBFS, 1700 Hz at {other}"
    );
    // Both histories keep it, with its length.
    let (a_said, b_said) = (history(&dir, "alice"), history(&dir, "bob"));
    assert!(
        a_said
            .iter()
            .any(|l| l.ends_with(&format!("out  {bob}  voice message  3s"))),
        "{a_said:?}"
    );
    assert!(
        b_said
            .iter()
            .any(|l| l.ends_with(&format!("in   {alice}  voice message  3s"))),
        "{b_said:?}"
    );
    // Saved and deleted: the relay keeps nothing, a second fetch finds none.
    assert_eq!(metric(metrics, "wzp_signal_voice_messages"), Some(0));
    assert_eq!(
        metric(metrics, "wzp_signal_voice_messages_deleted_total"),
        Some(1)
    );
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(
        text(&o).contains("no voice messages for you"),
        "{}",
        text(&o)
    );
    // Bad input is refused before anything is sent.
    for (args, needle) in [
        (
            vec!["message", &bob, "--input", "tone:440", "--duration", "121s"],
            "1 ms..=120 s",
        ),
        (
            vec!["message", &alice, "--input", "tone:440"],
            "your own fingerprint",
        ),
        (
            vec!["message", "nobody-by-that-name", "--input", "tone:440"],
            "nobody-by-that-name",
        ),
        (
            vec!["message", &bob, "--input", "/nonexistent.wav"],
            "cannot open",
        ),
    ] {
        let o = run(&dir, &relay, "alice", &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(needle), "{args:?}: {}", text(&o));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_relay_with_a_voice_message_dir_keeps_messages_and_keys_across_a_restart() {
    let dir = tmp("restart");
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nvoice_message_dir = {:?}\n",
            dir.join("mail").display().to_string()
        ),
    )
    .unwrap();
    let start = || {
        Relay::start(
            "wzp-relay",
            &[
                "-c",
                config.to_str().unwrap(),
                "-i",
                dir.join("relay.seed").to_str().unwrap(),
                "--metrics-addr",
                "127.0.0.1:0",
            ],
            WAIT,
        )
    };
    let mut relay = start();
    let bob = identity_of(&dir, "bob");
    let save = dir.join("saved");
    let save_arg = save.to_str().unwrap();
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(
        &dir,
        &relay,
        "alice",
        &["message", &bob, "--input", "tone:600", "--duration", "2s"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The relay goes down and comes back: the message and bob's key are
    // still there (alice leaves a second without bob registering again).
    relay.proc.kill();
    let relay = start();
    assert_eq!(
        metric(relay.metrics.unwrap(), "wzp_signal_voice_messages"),
        Some(1)
    );
    let o = run(
        &dir,
        &relay,
        "alice",
        &["message", &bob, "--input", "tone:900", "--duration", "1s"],
    );
    assert!(o.status.success(), "{}", text(&o));
    // Carol leaves 40 s of noise: several parts over the real connection.
    let noise = dir.join("noise.wav");
    let mut x = 0x2545_f491_u32;
    let samples: Vec<f32> = (0..48_000 * 40)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.4
        })
        .collect();
    write_wav_at(&noise, 48_000, &samples);
    let noise_arg = noise.to_str().unwrap();
    let o = run(
        &dir,
        &relay,
        "carol",
        &["message", &bob, "--input", noise_arg, "--duration", "40s"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let sealed: usize = text(&o)
        .split(" bytes sealed")
        .next()
        .and_then(|t| t.rsplit_once('(').map(|(_, n)| n))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", text(&o)));
    assert!(
        sealed > 2 * 24 * 1024,
        "{sealed} bytes: more than two parts"
    );
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let said = text(&o);
    let saved: Vec<&str> = said
        .lines()
        .filter_map(|l| l.rsplit_once("saved to ").map(|(_, p)| p))
        .collect();
    assert_eq!(saved.len(), 3, "{said}");
    assert!(said.contains(", 40.0 s, left "), "{said}");
    let tone_of = |p: &str| {
        let w = read_wav_mono(Path::new(p)).unwrap();
        let mid = &w.samples[w.samples.len() / 4..w.samples.len() * 3 / 4];
        [600.0, 900.0].map(|f| f64::from(goertzel_dbfs(mid, 48_000, f)))
    };
    let tones: Vec<[f64; 2]> = saved.iter().take(2).map(|p| tone_of(p)).collect();
    assert!(
        tones.iter().any(|t| t[0] > -20.0 && t[1] < t[0] - 30.0),
        "{tones:?}"
    );
    assert!(
        tones.iter().any(|t| t[1] > -20.0 && t[0] < t[1] - 30.0),
        "{tones:?}"
    );
    // Fetched and deleted: nothing is left on the disk.
    let left: Vec<_> = walk(&dir.join("mail").join("messages"));
    assert!(left.is_empty(), "{left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Every file under `d`.
fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_call_nobody_answers_leaves_a_voice_message_with_leave_message() {
    let dir = tmp("call-leave");
    let relay = Relay::start(
        "wzp-relay",
        &[
            "--listen",
            "127.0.0.1:0",
            "-i",
            dir.join("relay.seed").to_str().unwrap(),
        ],
        WAIT,
    );
    let bob = identity_of(&dir, "bob");
    let call = |dir: &Path| {
        run(
            dir,
            &relay,
            "alice",
            &[
                "call",
                &bob,
                "--leave-message",
                "2s",
                "--input",
                "tone:660",
                "--output",
                "null",
                "--no-realtime",
            ],
        )
    };
    // Bob never registered: the call says why no message was left, and
    // exits as a call to someone not online does.
    let o = call(&dir);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains("no voice message left") && text(&o).contains("has no message key"),
        "{}",
        text(&o)
    );
    // Once bob has been there, the unanswered call leaves 2 s of 660 Hz.
    let save = dir.join("saved");
    let save_arg = save.to_str().unwrap();
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let o = call(&dir);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("left a voice message of 2.0 s for {bob}")),
        "{}",
        text(&o)
    );
    let o = run(&dir, &relay, "bob", &["messages", "--save-dir", save_arg]);
    assert!(o.status.success(), "{}", text(&o));
    let said = text(&o);
    let (tone, other) = (
        common::saved_tone(&said, 660.0),
        common::saved_tone(&said, 440.0),
    );
    assert!(
        tone > -20.0 && other < tone - 30.0,
        "660 Hz at {tone} dBFS, 440 Hz at {other}"
    );
    let said = history(&dir, "alice");
    assert!(
        said.iter().any(|l| l.contains("not online"))
            && said
                .iter()
                .any(|l| l.ends_with(&format!("out  {bob}  voice message  2s"))),
        "{said:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
