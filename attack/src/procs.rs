//! The real processes under attack: a `wzp-relay` and `wzp-client join`
//! calls, started from the workspace's target folder, their stdout lines
//! awaited with deadlines, the relay's `/metrics` and RSS read from outside.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait for a line, a counter or a file is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

/// A binary of the workspace (`wzp-relay`, `wzp-client`), next to the test
/// binary's target folder (`target/<profile>/`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test>: the binaries sit in target/<profile>/.
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("the test binary sits in a target folder");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p wzp-relay -p wzp-client` \
         (the same profile as these tests; `cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// A fresh temporary folder for one test's files.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wzp-attack-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a temporary folder");
    d
}

/// A child process whose stdout lines arrive on a channel (and are kept
/// for error messages); killed and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    /// Starts `cmd` (stdout and stderr piped and read by threads).
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let pipe = child.stderr.take().expect("piped stderr");
            let log = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    // Keep the last lines only: a flood may log a lot.
                    if log.len() > 200 {
                        log.remove(0);
                    }
                    log.push(line);
                }
            });
        }
        Proc {
            child,
            name: name.to_string(),
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The first line from now on that `pred` accepts, within `within`.
    pub fn wait_line_within(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "{} printed no line {what} within {within:?}; stdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.seen.join("\n"),
                    self.stderr_text()
                ),
            }
        }
    }

    /// [`Proc::wait_line_within`] with [`WAIT`].
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_within(what, WAIT, pred)
    }

    /// The last lines the process wrote to stderr.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Sends `signal` (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {}", self.name);
    }

    /// Waits (bounded) for the process to exit; its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {WAIT:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `wzp-relay` on loopback with `/metrics`.
pub struct Relay {
    pub proc: Proc,
    pub quic: SocketAddr,
    pub metrics: SocketAddr,
    /// The TLS fingerprint it printed (`ab:cd:...`).
    pub fingerprint: String,
}

impl Relay {
    /// Starts a relay with its identity in `dir` on `listen` (use
    /// `127.0.0.1:0`, or an address to restart on).
    pub fn start(dir: &Path, listen: &str) -> Relay {
        let mut cmd = Command::new(workspace_bin("wzp-relay"));
        cmd.arg("-i")
            .arg(dir.join("relay.seed"))
            .args(["--listen", listen, "--metrics-addr", "127.0.0.1:0"])
            .env("RUST_LOG", "warn");
        let mut proc = Proc::spawn("wzp-relay", cmd);
        let line = proc.wait_line("`listening ...`", |l| l.starts_with("listening "));
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k}= in {line:?}"))
                .to_string()
        };
        Relay {
            quic: field("quic").parse().expect("a QUIC address"),
            metrics: field("metrics").parse().expect("a metrics address"),
            fingerprint: field("fingerprint"),
            proc,
        }
    }

    /// The relay's TLS fingerprint as bytes (what a Join signs).
    pub fn tls_fingerprint(&self) -> wzp_proto::TlsFingerprint {
        self.fingerprint
            .parse()
            .expect("the relay prints a valid fingerprint")
    }

    /// The `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect_timeout(&self.metrics, WAIT).expect("metrics accepts");
        s.set_read_timeout(Some(WAIT)).expect("a read timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )
        .expect("the request is written");
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).expect("the response is read");
        let text = String::from_utf8_lossy(&resp).to_string();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "GET /metrics: {head}");
        body.to_string()
    }

    /// The value of the series named exactly `series` (labels included).
    pub fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {series} in /metrics"))
    }

    /// `wzp_relay_drops_total{reason="..."}`.
    pub fn drops(&self, reason: &str) -> f64 {
        self.metric(&format!("wzp_relay_drops_total{{reason=\"{reason}\"}}"))
    }

    /// Every non-zero `wzp_relay_drops_total` series, for messages.
    pub fn drops_summary(&self) -> String {
        self.metrics_text()
            .lines()
            .filter(|l| l.starts_with("wzp_relay_drops_total") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// CPU time the relay has used (user + system), from /proc/PID/stat.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(&self.proc.child.id().to_string())
    }

    /// The relay's resident memory, KiB (`VmRSS` of /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proc.child.id()))
            .expect("the relay's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }
}

/// CPU time (user + system) of process `pid` (`self` for this one).
pub fn cpu_time_of(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in brackets.
    let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    // SAFETY: sysconf reads a constant of the running system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The room secret the tests' calls use.
pub const SECRET: &str = "a secret only the members hold";

/// A `wzp-client join` call recording what it hears to `<dir>/<name>.wav`.
pub struct Client {
    pub proc: Proc,
    pub name: String,
    pub wav: PathBuf,
    pub stats: PathBuf,
}

impl Client {
    /// Joins `room` at `relay` sending `input` (`tone:FREQ` or a WAV).
    pub fn join(dir: &Path, relay: &Relay, room: &str, name: &str, input: &str) -> Client {
        Client::join_at(dir, relay.quic, &relay.fingerprint, room, name, input)
    }

    /// [`Client::join`] with an address and fingerprint.
    pub fn join_at(
        dir: &Path,
        relay: SocketAddr,
        fingerprint: &str,
        room: &str,
        name: &str,
        input: &str,
    ) -> Client {
        let wav = dir.join(format!("{name}.wav"));
        let stats = dir.join(format!("{name}.json"));
        let mut cmd = Command::new(workspace_bin("wzp-client"));
        cmd.args(["join", "--relay", &relay.to_string(), "--room", room])
            .args(["--room-secret", SECRET, "--input", input, "--output"])
            .arg(&wav)
            .arg("--identity")
            .arg(dir.join(format!("{name}.seed")))
            .arg("--known-relays")
            .arg(dir.join(format!("{name}.known")))
            .args(["--relay-fingerprint", fingerprint, "--alias", name])
            .args(["--quiet", "--no-realtime", "--stats-json"])
            .arg(&stats);
        Client {
            proc: Proc::spawn(name, cmd),
            name: name.to_string(),
            wav,
            stats,
        }
    }

    /// Waits until the client says the room holds `n` members.
    pub fn wait_room_of(&mut self, room: &str, n: usize) {
        let joined = format!("({n} in the room)");
        let update = format!("room {room}: {n} (");
        self.proc
            .wait_line(&format!("saying room {room} holds {n}"), |l| {
                l.ends_with(&joined) || l.starts_with(&update)
            });
    }

    /// Samples recorded so far (16-bit mono WAV with a 44-byte header; the
    /// sink appends as the call runs and flushes about once a second).
    pub fn recorded(&self) -> u64 {
        std::fs::metadata(&self.wav)
            .map(|m| m.len().saturating_sub(44) / 2)
            .unwrap_or(0)
    }

    /// Waits (bounded) until the recording holds `samples`.
    pub fn wait_recorded(&self, samples: u64) {
        let deadline = Instant::now() + WAIT;
        while self.recorded() < samples {
            assert!(
                Instant::now() < deadline,
                "{}'s recording stuck at {} samples (want {samples}); stderr:\n{}",
                self.name,
                self.recorded(),
                self.proc.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Hangs up (SIGINT) and waits for a successful exit, which finishes
    /// the WAV and writes the stats.
    pub fn hang_up(mut self) -> Finished {
        self.proc.signal("INT");
        let status = self.proc.wait_exit();
        assert!(
            status.success(),
            "{} exited with {status}; stderr:\n{}",
            self.name,
            self.proc.stderr_text()
        );
        let stats: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&self.stats).expect("the client wrote its stats"),
        )
        .expect("stats are JSON");
        Finished {
            name: self.name.clone(),
            audio: crate::audio::read_wav(&self.wav),
            stats,
        }
    }
}

/// What a call left: its recording and its per-stage counters.
pub struct Finished {
    pub name: String,
    /// The recording, mono samples at [`crate::audio::RATE`].
    pub audio: Vec<f32>,
    pub stats: serde_json::Value,
}

impl Finished {
    /// Counter `key` of stage `stage` in the stats JSON.
    pub fn counter(&self, stage: &str, key: &str) -> u64 {
        self.stats["stages"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == stage))
            .and_then(|s| s["counters"][key].as_u64())
            .unwrap_or_else(|| panic!("{}: no counter {stage}/{key}", self.name))
    }

    /// Counter `key` summed over the stages whose id starts with `prefix`
    /// (one jitter buffer and decoder per incoming stream: `jb0`, `jb1`, ...).
    pub fn counter_sum(&self, prefix: &str, key: &str) -> u64 {
        self.stats["stages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|s| s["id"].as_str().is_some_and(|id| id.starts_with(prefix)))
                    .filter_map(|s| s["counters"][key].as_u64())
                    .sum()
            })
            .unwrap_or(0)
    }
}
