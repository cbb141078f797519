//! What the process-level tests share: the workspace's binaries, a
//! temporary directory per test, [`Proc`], a child process whose printed
//! lines are waited for with a deadline, [`Relay`], a `wzp-relay` started
//! and read off its `listening` line, and [`stats_figure`], a stage's
//! figure from a client's `--stats-json`.
//!
//! Each test file that mounts it (`mod common;`) uses only some of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The path of binary `name` of the workspace, built beside `wzp-client`.
pub fn bin(name: &str) -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_wzp-client"));
    if name == "wzp-client" {
        return client;
    }
    let b = client.with_file_name(name);
    assert!(
        b.exists(),
        "{} is missing: `cargo build -p {name}` (or `cargo test --workspace`) builds it",
        b.display()
    );
    b
}

/// Whether the tests run as root (network namespaces need it).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A fresh directory `PREFIX-PID-NAME` under the system's temporary one.
pub fn tmp(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `x` as a 16-bit mono WAV at 16 kHz (what `--input FILE` reads).
pub fn write_wav_16k(path: &std::path::Path, x: &[f32]) {
    write_wav_at(path, 16_000, x)
}

/// Writes `x` as a 16-bit mono WAV at `rate`.
pub fn write_wav_at(path: &std::path::Path, rate: u32, x: &[f32]) {
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

/// The fingerprint of `USER.seed` in `dir` (`wzp-client identity`, which
/// makes the identity on first use).
pub fn identity_of(dir: &Path, user: &str) -> String {
    let out = Command::new(bin("wzp-client"))
        .args(["identity", "--identity"])
        .arg(dir.join(format!("{user}.seed")))
        .output()
        .expect("wzp-client identity runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .next()
        .expect("the fingerprint on the first line")
        .trim()
        .to_string()
}

/// A process whose stdout and stderr lines arrive on a channel (and are
/// kept; stderr lines prefixed `stderr: `).
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    what: String,
    /// Its standard input ([`Proc::spawn_with_input`]).
    input: Option<std::process::ChildStdin>,
}

impl Proc {
    /// Runs `cmd` with its standard input empty: never the terminal the
    /// tests run in, which a client would take keys from.
    pub fn spawn(what: &str, cmd: &mut Command) -> Proc {
        Proc::start(what, cmd.stdin(Stdio::null()))
    }

    /// [`Proc::spawn`] with a pipe to its standard input ([`Proc::type_keys`]).
    pub fn spawn_with_input(what: &str, cmd: &mut Command) -> Proc {
        let mut p = Proc::start(what, cmd.stdin(Stdio::piped()));
        p.input = p.child.stdin.take();
        p
    }

    /// Writes `keys` to its standard input.
    pub fn type_keys(&mut self, keys: &str) {
        use std::io::Write;
        let input = self.input.as_mut().expect("spawned with_input");
        input.write_all(keys.as_bytes()).unwrap();
        input.flush().unwrap();
    }

    fn start(what: &str, cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx2.send(format!("stderr: {l}"));
            }
        });
        Proc {
            child,
            lines: rx,
            seen: Vec::new(),
            what: what.into(),
            input: None,
        }
    }

    /// Waits (up to `within`) for a line containing `needle`; returns it.
    pub fn wait_line(&mut self, needle: &str, within: Duration) -> Option<String> {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return Some(l.clone());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits (up to `within`) until `n` lines containing `needle` came (the
    /// ones before included); panics with what it printed if not.
    pub fn expect_nth(&mut self, needle: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.seen.iter().filter(|l| l.contains(needle)).count() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => {
                    let printed = self.drain().join("\n");
                    panic!(
                        "{} printed fewer than {n} lines with {needle:?} within {within:?}; it printed:\n{printed}",
                        self.what
                    )
                }
            }
        }
    }

    pub fn expect_line(&mut self, needle: &str, within: Duration) -> String {
        match self.wait_line(needle, within) {
            Some(l) => l,
            None => {
                let printed = self.drain().join("\n");
                panic!(
                    "{} printed no line with {needle:?} within {within:?}; it printed:\n{printed}",
                    self.what
                )
            }
        }
    }

    pub fn drain(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.clone()
    }

    /// Waits for the process to exit: its stdout and stderr close when it
    /// does (the reader threads then drop the channel's senders, after
    /// handing over every line), then its status is collected.
    pub fn exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return self.child.wait().expect("the process's status");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let printed = self.drain().join("\n");
                    panic!(
                        "{} did not exit within {within:?}; it printed:\n{printed}",
                        self.what
                    );
                }
            }
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `key=` in a printed line of `key=value` fields (the relay's
/// `listening quic=... fingerprint=...`).
pub fn line_field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .to_string()
}

/// A running `wzp-relay` (killed when dropped), as its `listening` line
/// gives it.
pub struct Relay {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub fingerprint: String,
    /// The metrics address (none: no `--metrics-addr`).
    pub metrics: Option<SocketAddr>,
    /// The mapping port (none: off).
    pub mapping: Option<SocketAddr>,
}

impl Relay {
    /// Starts `wzp-relay ARGS` (named `what` in failures) and waits (up to
    /// `within`) for its `listening` line.
    pub fn start(what: &str, args: &[&str], within: Duration) -> Relay {
        Relay::spawn(what, Command::new(bin("wzp-relay")).args(args), within)
    }

    /// Runs `cmd` (a `wzp-relay`, or one wrapped, such as in a network
    /// namespace) and waits (up to `within`) for its `listening` line.
    pub fn spawn(what: &str, cmd: &mut Command, within: Duration) -> Relay {
        let mut proc = Proc::spawn(what, cmd);
        let line = proc.expect_line("listening ", within);
        let parsed = |k: &str| line_field(&line, k).parse().ok();
        Relay {
            addr: parsed("quic").unwrap_or_else(|| panic!("{what}: quic= of {line:?}")),
            fingerprint: line_field(&line, "fingerprint"),
            metrics: parsed("metrics"),
            mapping: parsed("mapping"),
            proc,
        }
    }
}

/// Figure `key` of `stage` in a client's `--stats-json` file, of `kind`
/// (`"counters"` or `"gauges"`); `None` before the file, the stage or the
/// figure exists (the client rewrites it every second of a call).
pub fn stats_figure(path: &Path, stage: &str, kind: &str, key: &str) -> Option<i64> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["stages"].as_array()?.iter().find(|s| s["id"] == stage)?[kind][key].as_i64()
}

/// `wzp-client SUB ...` as `user` of `dir` (its identity, known relays,
/// contacts and history there), pinned to `relay`.
pub fn user_cmd(dir: &Path, relay: &Relay, user: &str, sub: &[&str]) -> Command {
    let mut cmd = Command::new(bin("wzp-client"));
    cmd.args(sub)
        .args(["--relay", &relay.addr.to_string()])
        .args(["--relay-fingerprint", &relay.fingerprint])
        .arg("--identity")
        .arg(dir.join(format!("{user}.seed")))
        .arg("--known-relays")
        .arg(dir.join(format!("{user}.known")))
        .arg("--contacts")
        .arg(dir.join(format!("{user}.contacts.toml")))
        .arg("--history")
        .arg(dir.join(format!("{user}.history.jsonl")));
    cmd
}

/// The tone of the voice message `messages` saved, as it printed it
/// (`said`): the level of `freq` over the middle half of the WAV, dBFS.
pub fn saved_tone(said: &str, freq: f64) -> f32 {
    let line = said
        .lines()
        .find(|l| l.starts_with("voice message from "))
        .unwrap_or_else(|| panic!("{said}"));
    let path = line.rsplit_once("saved to ").unwrap().1;
    let wav = wzp_stages::audio::wav_source::read_wav_mono(Path::new(path)).unwrap();
    let n = wav.samples.len();
    wzp_stages::audio::signal::goertzel_dbfs(&wav.samples[n / 4..n * 3 / 4], wav.rate, freq)
}

/// Median over 0.5 s windows of `sent` (16 kHz) of the best lag-aligned
/// correlation with `received`: how well a recording carries a voice.
pub fn segmental_correlation(received: &[f32], sent: &[f32]) -> f32 {
    wzp_stages::audio::signal::segmental_correlation(received, sent, 8_000)
        .expect("too few voiced segments")
}

/// Bob's laptop answers (`a`) a call that rings on his phone too: the phone
/// says it was answered on another device, alice (whose call `a` ran for
/// its `--duration`, what she heard in `a_heard`) reads the laptop's SAS
/// and heard the laptop's `speech`, and the phone still listens.
pub fn laptop_takes_the_call(
    laptop: &mut Proc,
    phone: &mut Proc,
    a: &mut Proc,
    a_heard: &Path,
    speech: &[f32],
    within: Duration,
) {
    let sas = |p: &mut Proc| {
        p.expect_line("SAS: ", within)
            .trim()
            .trim_start_matches("SAS: ")
            .to_string()
    };
    laptop.type_keys("a");
    phone.expect_line("answered on another device", within);
    assert_eq!(sas(a), sas(laptop), "alice talks with the laptop");
    assert!(a.exit(within).success(), "{:?}", a.drain());
    let heard = wzp_stages::audio::wav_source::read_wav_mono(a_heard)
        .unwrap()
        .samples;
    let r = segmental_correlation(&heard, speech);
    assert!(
        r > 0.7,
        "alice's recording correlates {r} with the laptop's voice"
    );
    assert!(
        phone.child.try_wait().unwrap().is_none(),
        "the phone still listens"
    );
}
