//! A call goes on when a client's address changes under it: a home router
//! that maps it anew, a laptop given another address. QUIC moves the
//! connection to the new address (the relay validates the new path), so
//! the client never rejoins and both sides keep hearing each other.
//!
//! Network namespaces (`nats.sh`, as the direct-path tests use): the relay
//! in `pub`, alice behind her NAT in `a`, bob behind his in `b`. Mid-call
//! alice's address moves from 192.168.1.2 to 192.168.1.3: her NAT maps the
//! new one to another public port, and the relay sees her there. Needs
//! root (skipped otherwise).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);
const NATS: &str = include_str!("nats.sh");

/// The namespaces of `nats.sh`, removed when dropped.
struct Nets {
    tag: String,
}

impl Nets {
    fn new() -> Nets {
        let tag = format!("m{}", std::process::id() % 1_000_000);
        let out = Command::new("bash")
            .args(["-c", NATS, "nats", &tag, "home"])
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "setting up the namespaces: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Nets { tag }
    }

    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.tag)
    }

    /// Runs `args` in namespace `n`; panics if it fails.
    fn run(&self, n: &str, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(n)])
            .args(args)
            .output()
            .expect("ip runs");
        assert!(
            out.status.success(),
            "{args:?} in {n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Nets {
    fn drop(&mut self) {
        for n in ["pub", "na", "nb", "a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

/// `user` joins room `moving` from namespace `n`, sending `input`,
/// recording what it hears, reaching the relay at `addr`.
fn join(
    nets: &Nets,
    n: &str,
    relay: &Relay,
    addr: &str,
    dir: &Path,
    user: &str,
    input: &str,
) -> Proc {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &nets.ns(n)])
        .arg(bin("wzp-client"))
        .args(["join", "--relay", addr, "--room", "moving"])
        .args(["--room-secret", "moving-room-secret-0123456789"])
        .args(["--relay-fingerprint", &relay.fingerprint])
        .args(["--input", input, "--output"])
        .arg(dir.join(format!("{user}.wav")))
        .arg("--stats-json")
        .arg(dir.join(format!("{user}.json")))
        .arg("--identity")
        .arg(dir.join(format!("{user}.seed")))
        .arg("--known-relays")
        .arg(dir.join(format!("{user}.known")))
        .args(["--alias", user, "--no-realtime", "--duration", "12s"]);
    Proc::spawn(user, &mut cmd)
}

/// `path`'s figure, 0 until it is there.
fn figure(dir: &Path, user: &str, stage: &str, key: &str) -> i64 {
    stats_figure(&dir.join(format!("{user}.json")), stage, "counters", key).unwrap_or(0)
}

/// Waits (bounded) for `pred`, polling: the test's one poll, for figures
/// that have no event (a client's `--stats-json`, the relay's `/sessions`).
fn wait_until(what: &str, pred: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !pred() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// alice's `remote` in the relay's `/sessions`.
fn alice_seen_at(metrics: std::net::SocketAddr, nets: &Nets) -> String {
    // The relay's HTTP address is inside its namespace: bash's /dev/tcp
    // asks there (no curl needed).
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf 'GET /sessions HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3",
        metrics.ip(),
        metrics.port()
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &nets.ns("pub")])
        .args(["bash", "-c", &script])
        .output()
        .expect("bash runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let sessions: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    sessions
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["alias"] == "alice")
        .map(|s| s["remote"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

#[test]
fn a_call_goes_on_when_a_clients_address_changes() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let dir = tmp("wzp-move", "call");
    let nets = Nets::new();
    let mut relay_cmd = Command::new("ip");
    relay_cmd
        .args(["netns", "exec", &nets.ns("pub")])
        .arg(bin("wzp-relay"))
        .arg("-i")
        .arg(dir.join("relay.seed"))
        .args(["--listen", "0.0.0.0:0", "--metrics-addr", "127.0.0.1:0"]);
    let relay = Relay::spawn("wzp-relay", &mut relay_cmd, WAIT);
    let port = relay.addr.port();
    let metrics = relay.metrics.expect("metrics address");
    let mut a = join(
        &nets,
        "a",
        &relay,
        &format!("10.0.1.1:{port}"),
        &dir,
        "alice",
        "tone:440",
    );
    let mut b = join(
        &nets,
        "b",
        &relay,
        &format!("10.0.2.1:{port}"),
        &dir,
        "bob",
        "tone:880",
    );
    a.expect_line("room moving: 2 (", WAIT);
    b.expect_line("room moving: 2 (", WAIT);
    wait_until("bob plays a second of alice", || {
        figure(&dir, "bob", "jb0", "played") >= 50
    });
    let before = alice_seen_at(metrics, &nets);
    assert!(before.starts_with("10.0.1.2:"), "alice at {before:?}");

    // Alice's address moves: a new one, then the old one goes.
    nets.run(
        "a",
        &[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{}al.promote_secondaries=1", nets.tag),
        ],
    );
    nets.run(
        "a",
        &[
            "ip",
            "addr",
            "add",
            "192.168.1.3/24",
            "dev",
            &format!("{}al", nets.tag),
        ],
    );
    nets.run(
        "a",
        &[
            "ip",
            "addr",
            "del",
            "192.168.1.2/24",
            "dev",
            &format!("{}al", nets.tag),
        ],
    );
    nets.run(
        "a",
        &["ip", "route", "replace", "default", "via", "192.168.1.1"],
    );
    let (bob_played, alice_played) = (
        figure(&dir, "bob", "jb0", "played"),
        figure(&dir, "alice", "jb0", "played"),
    );
    let concealed = figure(&dir, "bob", "jb0", "concealed");

    // The relay follows her to her NAT's new mapping (its `/sessions` has
    // no event to wait for: polled), and both go on hearing each other to
    // the end of their 12 s, never rejoining.
    let seen = std::cell::RefCell::new(String::new());
    wait_until("the relay sees alice at her new mapping", || {
        let now = alice_seen_at(metrics, &nets);
        let moved = now.starts_with("10.0.1.2:") && now != before;
        *seen.borrow_mut() = now;
        moved
    });
    let after = seen.into_inner();
    for p in [&mut a, &mut b] {
        assert!(p.exit(WAIT).success(), "{:?}", p.drain());
        let said = p.drain();
        assert!(
            !said.iter().any(|l| l.contains("rejoined room")),
            "the call went on, never rejoined: {said:?}"
        );
    }
    // The figures the clients wrote as they ended: six seconds and more
    // played on each side since the move (it came at most 4 s into the
    // 12 s call, the figures read then at most a second old).
    let (bob_now, alice_now) = (
        figure(&dir, "bob", "jb0", "played"),
        figure(&dir, "alice", "jb0", "played"),
    );
    assert!(
        bob_now >= bob_played + 300 && alice_now >= alice_played + 300,
        "played since the move: bob {} alice {}",
        bob_now - bob_played,
        alice_now - alice_played
    );
    println!(
        "alice moved from {before} to {after}: bob concealed {} frames of her since",
        figure(&dir, "bob", "jb0", "concealed") - concealed
    );
    let _ = std::fs::remove_dir_all(dir);
}
