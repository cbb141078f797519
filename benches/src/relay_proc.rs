//! A real `wzp-relay` process on loopback for the load benches: started on
//! `127.0.0.1:0`, its ports and fingerprint read from its `listening` line,
//! its CPU time read from `/proc/<pid>/stat`, killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::TlsFingerprint;

/// How long the relay may take to print its `listening` line.
const START_WAIT: Duration = Duration::from_secs(15);

/// `--relay-bin`, or `wzp-relay` next to this executable.
pub fn find_relay_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    find_sibling_bin(explicit, "wzp-relay", "--relay-bin", "wzp-relay")
}

/// `explicit`, or the executable `name` in the folder of the running one.
pub fn find_sibling_bin(
    explicit: Option<&Path>,
    name: &str,
    flag: &str,
    package: &str,
) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("cannot find this executable's path")?
            .with_file_name(name),
    };
    if !path.is_file() {
        bail!(
            "no {name} binary at {}: build it with `cargo build --release -p {package}` \
             (it lands next to wzp-bench), or pass {flag} PATH",
            path.display()
        );
    }
    Ok(path)
}

/// A running relay.
pub struct RelayProc {
    child: Child,
    pub pid: u32,
    pub quic: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub fingerprint: TlsFingerprint,
    log: Arc<Mutex<Vec<String>>>,
}

impl RelayProc {
    /// Starts `bin` with its identity and config in `dir` (`config` is the
    /// config file's text), on ephemeral loopback ports.
    pub fn start(bin: &Path, dir: &Path, config: &str) -> Result<RelayProc> {
        let cfg = dir.join("relay.toml");
        std::fs::write(&cfg, config).with_context(|| format!("writing {}", cfg.display()))?;
        let seed = dir.join("relay.seed");
        let mut child = Command::new(bin)
            .arg("-c")
            .arg(&cfg)
            .arg("-i")
            .arg(&seed)
            .args(["--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
            // Logging every join at info would cost the relay CPU we measure.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    push_bounded(&log, line);
                }
            });
        }
        if let Some(stdout) = child.stdout.take() {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    push_bounded(&log, line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + START_WAIT;
        let line = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with("listening ") => break l,
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Both output streams closed: the process has ended.
                    let status = child
                        .wait()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| format!("status unknown: {e}"));
                    bail!(
                        "{} ended ({status}) before its `listening` line; its output:\n{}",
                        bin.display(),
                        log.lock().map(|l| l.join("\n")).unwrap_or_default()
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "{} printed no `listening` line within {START_WAIT:?}; its output:\n{}",
                        bin.display(),
                        log.lock().map(|l| l.join("\n")).unwrap_or_default()
                    );
                }
            }
        };
        let field = |k: &str| -> Result<String> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
                .ok_or_else(|| anyhow!("no {k}= in the relay's line {line:?}"))
        };
        let quic = field("quic")?
            .parse()
            .context("the relay's quic= address")?;
        let metrics = field("metrics")?.parse().ok();
        let fingerprint = field("fingerprint")?
            .parse()
            .map_err(|e| anyhow!("the relay's fingerprint: {e}"))?;
        Ok(RelayProc {
            child,
            pid,
            quic,
            metrics,
            fingerprint,
            log,
        })
    }

    /// CPU time (user + system) the relay has used so far.
    pub fn cpu_time(&self) -> Result<Duration> {
        proc_cpu_time(&format!("/proc/{}/stat", self.pid))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines the relay printed.
    pub fn log_tail(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// `GET /metrics`, parsed into `(series, value)` pairs; empty when the
    /// relay has no metrics address or does not answer.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let Some(addr) = self.metrics else {
            return Vec::new();
        };
        let body = match http_get(addr, "/metrics") {
            Ok(b) => b,
            Err(_) => return Vec::new(),
        };
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push_bounded(log: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut l) = log.lock() {
        if l.len() >= 200 {
            l.remove(0);
        }
        l.push(line);
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp).to_string();
    let (_, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("not an HTTP response"))?;
    Ok(body.to_string())
}

/// utime + stime of a `/proc/.../stat` file (a process or one thread).
pub fn proc_cpu_time(path: &str) -> Result<Duration> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // the fields after the last ')' start at field 3 (state).
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path}: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, stime field 15: indices 11 and 12 after field 3.
    let ticks = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("{path}: no field {}", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as u64 } else { 100 };
    Ok(Duration::from_nanos(total * 1_000_000_000 / hz))
}

/// CPU time of the calling process.
pub fn self_cpu_time() -> Result<Duration> {
    proc_cpu_time("/proc/self/stat")
}

/// A fresh folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!(
            "wzp-bench-{what}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Appends `KEY=VALUE` entries (the benches' `--relay-set`) to a relay
/// config text as TOML lines; values are written as given (numbers, `"strings"`).
pub fn append_config(config: &mut String, sets: &[String]) -> Result<()> {
    for line in sets {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--relay-set {line:?}: expected KEY=VALUE"))?;
        // A key the bench already wrote (max_peers, max_rooms) is replaced,
        // not written twice (which the relay refuses as a duplicate key).
        let k = k.trim();
        let kept: String = config
            .lines()
            .filter(|l| l.split_once('=').is_none_or(|(lk, _)| lk.trim() != k))
            .map(|l| format!("{l}\n"))
            .collect();
        *config = kept;
        config.push_str(&format!("{k} = {}\n", v.trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_set_replaces_a_key_the_bench_wrote() {
        let mut c = "# bench\nmax_peers = 56\nmax_rooms = 26\n".to_string();
        append_config(&mut c, &["max_peers=0".into(), "label = \"x\"".into()]).unwrap();
        assert_eq!(c, "# bench\nmax_rooms = 26\nmax_peers = 0\nlabel = \"x\"\n");
        let t: toml::Table = toml::from_str(&c).unwrap();
        assert_eq!(t["max_peers"].as_integer(), Some(0));
        assert!(append_config(&mut c, &["nokey".into()]).is_err());
    }
}
