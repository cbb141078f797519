//! A relay stopped with SIGTERM closes every connection with the
//! `shutdown` code ("relay shutting down") before it exits, and a client in
//! a call sees it at once (not at its idle timeout) and starts reconnecting.
//! The measured time from the signal to the client's line is printed.
//!
//! A relay killed (`kill -9`) and restarted with the same identity answers
//! its old clients' packets with stateless resets (keys derived from the
//! identity), so they rejoin at once instead of after their idle timeout;
//! the time from the restart to the rejoin is printed.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn relay_bin() -> PathBuf {
    let client = PathBuf::from(env!("CARGO_BIN_EXE_wzp-client"));
    let relay = client.with_file_name("wzp-relay");
    assert!(
        relay.exists(),
        "{} is missing: build it with `cargo build -p wzp-relay`",
        relay.display()
    );
    relay
}

/// A child process whose stdout lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the program starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc { child, lines }
    }

    /// The first line (after those already read) that `pred` accepts.
    fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line {what} within {WAIT:?}"),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wzp-shutdown-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_relay(dir: &Path) -> (Proc, SocketAddr, String) {
    start_relay_on(dir, "127.0.0.1:0")
}

fn start_relay_on(dir: &Path, listen: &str) -> (Proc, SocketAddr, String) {
    let mut cmd = Command::new(relay_bin());
    cmd.args([
        "-i",
        dir.join("relay.seed").to_str().unwrap(),
        "--listen",
        listen,
    ]);
    let relay = Proc::spawn(cmd);
    let line = relay.wait_line("`listening ...` from the relay", |l| {
        l.starts_with("listening ")
    });
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap()
            .to_string()
    };
    (relay, field("quic").parse().unwrap(), field("fingerprint"))
}

fn join_cmd(dir: &Path, addr: SocketAddr, fingerprint: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wzp-client"));
    cmd.args(["join", "--relay", &addr.to_string(), "--room", "shutdown"])
        .args(["--room-secret", "a secret only the members hold"])
        .args(["--input", "tone:440", "--output"])
        .arg(dir.join("c.wav"))
        .arg("--identity")
        .arg(dir.join("c.seed"))
        .arg("--known-relays")
        .arg(dir.join("c.known"))
        .args(["--relay-fingerprint", fingerprint])
        .args(["--duration", "60s", "--quiet", "--no-realtime"]);
    cmd
}

#[test]
fn a_relay_restarted_after_kill_9_resets_old_connections_and_clients_rejoin() {
    let dir = tmp("restart");
    let (mut relay, addr, fingerprint) = start_relay(&dir);
    let client = Proc::spawn(join_cmd(&dir, addr, &fingerprint));
    client.wait_line("`joined room shutdown`", |l| {
        l.contains("joined room shutdown")
    });
    relay.child.kill().unwrap();
    relay.child.wait().unwrap();
    drop(relay);
    let (_relay, _, again) = start_relay_on(&dir, &addr.to_string());
    let back = Instant::now();
    assert_eq!(again, fingerprint, "same identity");
    let lost = client.wait_line("saying the connection was lost", |l| l.contains("lost"));
    assert!(
        lost.contains("reset"),
        "the old connection ends by a stateless reset, not a timeout: {lost}"
    );
    let rejoined = client.wait_line("`rejoined room`", |l| l.contains("rejoined room"));
    println!(
        "rejoined {} ms after the restarted relay listened: {lost} / {rejoined}",
        back.elapsed().as_millis()
    );
    drop(client);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sigterm_closes_the_call_with_shutdown_and_the_client_sees_it_at_once() {
    let dir = tmp("sigterm");
    let (mut relay, addr, fingerprint) = start_relay(&dir);
    let client = Proc::spawn(join_cmd(&dir, addr, &fingerprint));
    client.wait_line("`joined room shutdown`", |l| {
        l.contains("joined room shutdown")
    });

    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &relay.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let line = client.wait_line("saying the relay is shutting down", |l| {
        l.contains("closed the connection") || l.contains("lost")
    });
    let took = sent.elapsed();
    println!(
        "client saw the relay's close {} ms after SIGTERM: {line}",
        took.as_millis()
    );
    assert!(
        line.contains("relay shutting down") && line.contains("reconnecting at once"),
        "the close carries the shutdown code and reason: {line}"
    );

    // The relay exits by itself, successfully, within its bounded drain.
    let deadline = Instant::now() + WAIT;
    let exit = loop {
        if let Some(s) = relay.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the relay did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "relay exit status {exit}");
    drop(client);
    let _ = std::fs::remove_dir_all(dir);
}
