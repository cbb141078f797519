//! Real `wzp-client join` processes for tests that run real calls through
//! relays: a tone or the built-in speech sample in, a WAV recording out,
//! the printed lines read as they come, the final per-stage counters from
//! `--stats-json`, and the recording measured (tone level, correlation).
//!
//! The client binary is looked up next to `wzp-relay` (the same target
//! folder): `cargo test --workspace` builds it; alone, build it first with
//! `cargo build -p wzp-client`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use wzp_stages::audio::signal::goertzel_dbfs;
use wzp_stages::audio::wav_source::read_wav_mono;

use super::RelayProc;

/// Bound on waits for client lines: a client process starts, handshakes
/// and joins within it even on a loaded machine.
pub const CLIENT_WAIT: Duration = Duration::from_secs(20);

/// Samples per second of the recordings (the call graph's output rate).
pub const RATE: u32 = 16_000;

/// The `wzp-client` binary, next to `wzp-relay`.
pub fn client_bin() -> PathBuf {
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_wzp-relay"));
    let client = relay.with_file_name("wzp-client");
    assert!(
        client.exists(),
        "{} is missing: build it with `cargo build -p wzp-client` \
         (`cargo test --workspace` does)",
        client.display()
    );
    client
}

/// A running `wzp-netem` (next to `wzp-relay`, built with `wzp-client`):
/// UDP to `to` impaired as its flags say, both ways.
pub struct Netem {
    child: Child,
    /// Where clients reach `to` through it.
    pub addr: SocketAddr,
}

impl Netem {
    pub fn start(to: SocketAddr, args: &[&str]) -> Netem {
        let bin = client_bin().with_file_name("wzp-netem");
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--to", &to.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{} starts: {e}", bin.display()));
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // `listening udp=ADDR ...` once bound; what follows (counters at
        // exit) is drained unread.
        let line = lines
            .by_ref()
            .map_while(Result::ok)
            .find(|l| l.starts_with("listening "))
            .expect("wzp-netem prints its listening line");
        let addr = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("udp="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no udp= in {line:?}"));
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Netem { child, addr }
    }
}

impl Drop for Netem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `wzp-client join`: its stdout lines as they come.
pub struct ClientProc {
    child: Option<Child>,
    pub name: String,
    pub dir: PathBuf,
    lines: mpsc::Receiver<String>,
    /// Lines read so far.
    pub seen: Vec<String>,
}

impl ClientProc {
    /// `wzp-client join` as `name` (identity, recording `NAME.wav` and
    /// stats `NAME.json` in `dir`) to `room` with `secret` on `relay`,
    /// sending `input` (`tone:FREQ`, `builtin`, a WAV); `extra` adds flags.
    pub fn join(
        dir: &Path,
        relay: &RelayProc,
        name: &str,
        room: &str,
        secret: &str,
        input: &str,
        extra: &[&str],
    ) -> ClientProc {
        Self::join_via(dir, relay, relay.quic, name, room, secret, input, extra)
    }

    /// As [`ClientProc::join`], reaching `relay` at `via` (an impairment
    /// proxy in front of it: [`Netem`]); the relay's fingerprint is pinned
    /// as ever.
    #[allow(clippy::too_many_arguments)]
    pub fn join_via(
        dir: &Path,
        relay: &RelayProc,
        via: SocketAddr,
        name: &str,
        room: &str,
        secret: &str,
        input: &str,
        extra: &[&str],
    ) -> ClientProc {
        let file = |ext: &str| dir.join(format!("{name}.{ext}")).display().to_string();
        let mut child = Command::new(client_bin())
            .args(["join", "--relay", &via.to_string(), "--room", room])
            .args(["--room-secret", secret, "--input", input])
            .args(["--output", &file("wav"), "--identity", &file("seed")])
            .args(["--known-relays", &file("known")])
            .args(["--relay-fingerprint", &relay.fingerprint.to_string()])
            .args(["--alias", name, "--quiet", "--no-realtime"])
            .args(["--stats-json", &file("json")])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wzp-client starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        ClientProc {
            child: Some(child),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded by [`CLIENT_WAIT`]) for a stdout line that
    /// satisfies `pred`; the line.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + CLIENT_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "{} printed no line saying {what} within {CLIENT_WAIT:?}; stdout:\n{}",
                    self.name,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits until the client has said room `room` holds `n` members; the
    /// line (`joined room R via ADDR (N in the room)` or `room R: N (names)`).
    pub fn wait_room_of(&mut self, room: &str, n: usize) -> String {
        let joined = format!("({n} in the room)");
        let update = format!("room {room}: {n} (");
        self.wait_line(&format!("room {room} holds {n}"), |l| {
            l.ends_with(&joined) || l.starts_with(&update)
        })
    }

    /// Samples in the recording so far (16-bit mono, a 44-byte header):
    /// the WAV sink appends as the call runs and flushes about once a second.
    pub fn recorded(&self) -> u64 {
        std::fs::metadata(self.dir.join(format!("{}.wav", self.name)))
            .map(|m| m.len().saturating_sub(44) / 2)
            .unwrap_or(0)
    }

    /// Waits (bounded) until the recording holds `samples`.
    pub fn wait_recorded(&self, samples: u64) {
        let deadline = Instant::now() + CLIENT_WAIT * 2;
        while self.recorded() < samples {
            assert!(
                Instant::now() < deadline,
                "{}'s recording stuck at {} samples (want {samples})",
                self.name,
                self.recorded()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for the client to exit and asserts it succeeded; its whole
    /// stdout (lines read while it ran included) and stderr.
    pub fn finish(&mut self) -> Output {
        let child = self.child.take().expect("the client is still running");
        let mut out = child.wait_with_output().unwrap();
        // The reader thread ends at the pipe's end, so this drains and stops.
        let rest: Vec<String> = self.lines.iter().collect();
        self.seen.extend(rest);
        out.stdout = self.seen.join("\n").into_bytes();
        assert!(
            out.status.success(),
            "{} failed:\n{}\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The recording (after [`ClientProc::finish`]: complete).
    pub fn recording(&self) -> Vec<f32> {
        let w = read_wav_mono(&self.dir.join(format!("{}.wav", self.name))).unwrap();
        assert_eq!(w.rate, RATE);
        w.samples
    }

    /// Final counter `key` of stage `stage` (from `--stats-json`, written
    /// when the client ends).
    pub fn counter(&self, stage: &str, key: &str) -> u64 {
        counter_in(&self.dir.join(format!("{}.json", self.name)), stage, key)
    }
}

impl Drop for ClientProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Counter `key` of stage `stage` in a `--stats-json` file.
pub fn counter_in(path: &Path, stage: &str, key: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == stage)
        .unwrap_or_else(|| panic!("no stage {stage} in {}", path.display()))["counters"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {stage}.{key} in {}", path.display()))
}

/// SIGINT to every client at once (they leave together).
pub fn interrupt(runs: &[&ClientProc]) {
    let status = Command::new("kill")
        .arg("-INT")
        .args(runs.iter().map(|r| r.pid().to_string()))
        .status()
        .unwrap();
    assert!(status.success());
}

/// What a client heard while everyone was in the call.
pub struct Heard {
    pub name: String,
    /// The client's stdout.
    pub stdout: String,
    /// The second half of what it recorded before the hang-up: wholly after
    /// everyone was in the room.
    pub talk: Vec<f32>,
}

/// Once every client is in the room: waits until each recording holds
/// twice what it held then (plus a second for the writer's once-a-second
/// flush) plus `secs` seconds, so the second half of what was recorded
/// before the hang-up lies after everyone joined, however long starting
/// took on a loaded machine. Then interrupts them all and returns what each
/// heard, in order.
pub fn talk_then_hang_up(runs: Vec<ClientProc>, secs: u64) -> Vec<(ClientProc, Heard)> {
    let since: Vec<u64> = runs.iter().map(|r| r.recorded()).collect();
    for (r, from) in runs.iter().zip(&since) {
        r.wait_recorded(2 * (from + RATE as u64) + secs * RATE as u64);
    }
    let before: Vec<u64> = runs.iter().map(|r| r.recorded()).collect();
    interrupt(&runs.iter().collect::<Vec<_>>());
    runs.into_iter()
        .zip(before)
        .map(|(mut r, before)| {
            let out = r.finish();
            let rec = r.recording();
            let before = before as usize;
            assert!(
                rec.len() >= before,
                "{}'s finished recording ({} samples) is shorter than it was during the call ({before})",
                r.name,
                rec.len()
            );
            let heard = Heard {
                name: r.name.clone(),
                stdout: String::from_utf8_lossy(&out.stdout).to_string(),
                talk: rec[before / 2..before].to_vec(),
            };
            (r, heard)
        })
        .collect()
}

/// Level of the `freq` tone in `x` (16 kHz): the mean power of its
/// Goertzel level over 0.5 s windows (a jitter buffer that stretches or
/// skips a frame moves the phase, which one long coherent sum would punish).
pub fn tone_dbfs(x: &[f32], freq: f64) -> f32 {
    let powers: Vec<f32> = x
        .chunks_exact(RATE as usize / 2)
        .map(|w| 10f32.powf(goertzel_dbfs(w, RATE, freq) / 10.0))
        .collect();
    assert!(
        !powers.is_empty(),
        "under 0.5 s to measure: {} samples",
        x.len()
    );
    10.0 * (powers.iter().sum::<f32>() / powers.len() as f32).log10()
}

/// Median over 0.5 s segments of `sent` (the voiced ones) of the best
/// lag-aligned correlation with `received`: the jitter buffer may move the
/// playout point during a call, so no single lag fits.
pub fn segmental_correlation(received: &[f32], sent: &[f32]) -> f32 {
    wzp_stages::audio::signal::segmental_correlation(received, sent, RATE as usize / 2)
        .expect("too few voiced segments")
}

/// A sine of `freq` Hz at 16 kHz, `secs` long: what a `tone:FREQ` sender's
/// audio is, to correlate a recording with.
pub fn sine(freq: f64, secs: f64) -> Vec<f32> {
    let n = (secs * RATE as f64) as usize;
    (0..n)
        .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / RATE as f64).sin() as f32 * 0.25)
        .collect()
}
