//! `wzp-netem`, the UDP impairment proxy, as a process on loopback: loss per
//! direction, delay, rate limit, loss traces, schedules, bad input, and a
//! real relay reached through it with the relay's certificate pinned.
//!
//! Traffic goes through a UDP echo (or sink) server in this process. Loopback
//! UDP through the proxy is first-in first-out when no delay or jitter is
//! set, so a marker datagram that comes back proves every earlier one has
//! either arrived or been dropped: tests wait for markers, never sleep.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);
const DATA: u8 = 0;
const MARKER: u8 = 1;

// ---------------------------------------------------------------- processes

struct Proxy {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proxy {
    // The child is killed and waited for in `Drop`, or waited for in `stop`.
    #[allow(clippy::zombie_processes)]
    fn start(to: SocketAddr, args: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wzp-netem"))
            .args(["--listen", "127.0.0.1:0", "--to", &to.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("wzp-netem starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut p = Proxy {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            seen: Vec::new(),
        };
        let line = p.wait_line(|l| l.starts_with("listening "));
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("no {k}= in {line:?}"))
                .to_string()
        };
        p.addr = field("udp").parse().unwrap();
        assert_eq!(field("to"), to.to_string());
        p
    }

    /// Waits for a stdout line that satisfies `pred` (lines seen before count).
    fn wait_line(&mut self, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| pred(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
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
                    "wzp-netem printed no matching line within {WAIT:?}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// SIGTERM, then the exit counters of both directions.
    fn stop(mut self) -> (Counters, Counters) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let up = Counters::parse(&self.wait_line(|l| l.starts_with("counters c2s ")));
        let down = Counters::parse(&self.wait_line(|l| l.starts_with("counters s2c ")));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "wzp-netem exited with {st}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "wzp-netem did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        (up, down)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One direction's exit counters.
#[derive(Debug, Default)]
struct Counters {
    fields: Vec<(String, u64)>,
}

impl Counters {
    fn parse(line: &str) -> Counters {
        Counters {
            fields: line
                .split_whitespace()
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect(),
        }
    }

    fn get_or_zero(&self, k: &str) -> u64 {
        self.fields.iter().find(|(n, _)| n == k).map_or(0, |f| f.1)
    }

    fn get(&self, k: &str) -> u64 {
        self.fields
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("no {k} in {:?}", self.fields))
            .1
    }
}

// ------------------------------------------------------------------ traffic

/// A UDP server on loopback that records what reaches it and, if `echo`,
/// sends every datagram back.
struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<ServerLog>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default, Debug)]
struct ServerLog {
    /// Every datagram: kind, seq, bytes, when.
    got: Vec<(u8, u32, usize, Instant)>,
}

impl Server {
    fn start(echo: bool) -> Server {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(ServerLog::default()));
        let thread = {
            let (stop, log) = (stop.clone(), log.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                loop {
                    match sock.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if n >= 5 {
                                let seq = u32::from_le_bytes(buf[1..5].try_into().unwrap());
                                log.lock()
                                    .unwrap()
                                    .got
                                    .push((buf[0], seq, n, Instant::now()));
                            }
                            if echo {
                                let _ = sock.send_to(&buf[..n], from);
                            }
                        }
                        // Timed out: nothing queued. Stop only when asked and drained.
                        Err(_) if stop.load(Ordering::Relaxed) => return,
                        Err(_) => {}
                    }
                }
            })
        };
        Server {
            addr,
            stop,
            log,
            thread: Some(thread),
        }
    }

    fn data_seqs(&self) -> BTreeSet<u32> {
        let log = self.log.lock().unwrap();
        log.got
            .iter()
            .filter(|g| g.0 == DATA)
            .map(|g| g.1)
            .collect()
    }

    fn saw_marker(&self, seq: u32) -> bool {
        let log = self.log.lock().unwrap();
        log.got.iter().any(|g| g.0 == MARKER && g.1 == seq)
    }

    /// Stops after reading everything already queued; all it received.
    fn finish(mut self) -> ServerLog {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

/// The client side: a socket connected to the proxy.
struct Client {
    sock: UdpSocket,
    next_marker: u32,
    /// Data echoes received.
    echoed: Vec<u32>,
    /// Every datagram received.
    received: u64,
}

impl Client {
    fn new(proxy: SocketAddr) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(proxy).unwrap();
        Client {
            sock,
            next_marker: 0,
            echoed: Vec::new(),
            received: 0,
        }
    }

    fn send(&self, kind: u8, seq: u32, len: usize) {
        let mut d = vec![0u8; len.max(5)];
        d[0] = kind;
        d[1..5].copy_from_slice(&seq.to_le_bytes());
        self.sock.send(&d).unwrap();
    }

    /// Reads one datagram within `timeout`; (kind, seq).
    fn recv(&mut self, timeout: Duration) -> Option<(u8, u32)> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = self.sock.recv(&mut buf).ok()?;
        self.received += 1;
        if n < 5 {
            return Some((u8::MAX, 0));
        }
        let seq = u32::from_le_bytes(buf[1..5].try_into().unwrap());
        if buf[0] == DATA {
            self.echoed.push(seq);
        }
        Some((buf[0], seq))
    }

    /// Sends markers until one comes back (each retried after `retry`):
    /// then every data echo sent before it has arrived. Returns how many
    /// markers it took.
    fn sync_echo(&mut self, retry: Duration) -> u32 {
        let deadline = Instant::now() + WAIT;
        let mut sent = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "no marker came back within {WAIT:?}"
            );
            let m = self.next_marker;
            self.next_marker += 1;
            self.send(MARKER, m, 5);
            sent += 1;
            let until = Instant::now() + retry;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match self.recv(left) {
                    Some((MARKER, s)) if s == m => return sent,
                    Some(_) => {}
                    None => break,
                }
            }
        }
    }

    /// Reads whatever is already queued on the socket.
    fn drain(&mut self) {
        let mut buf = [0u8; 2048];
        self.sock.set_nonblocking(true).unwrap();
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.received += 1;
            if n >= 5 && buf[0] == DATA {
                self.echoed
                    .push(u32::from_le_bytes(buf[1..5].try_into().unwrap()));
            }
        }
        self.sock.set_nonblocking(false).unwrap();
    }
}

/// Sends `n` data datagrams in batches, each batch followed by a marker round
/// trip (which also keeps loopback socket buffers from overflowing).
fn exchange(client: &mut Client, n: u32, batch: u32) {
    let mut seq = 0;
    while seq < n {
        for _ in 0..batch.min(n - seq) {
            client.send(DATA, seq, 100);
            seq += 1;
        }
        client.sync_echo(Duration::from_millis(300));
    }
}

/// Measured loss each way over `n` data datagrams: client -> server and
/// server -> client (of those the server echoed).
fn loss_each_way(client: &Client, server: &Server, n: u32) -> (f64, f64) {
    let at_server = server.data_seqs().len() as f64;
    let back = client.echoed.len() as f64;
    (1.0 - at_server / n as f64, 1.0 - back / at_server)
}

/// The stopped proxy's counters agree with what the endpoints saw.
fn counters_match(up: &Counters, down: &Counters, server: &ServerLog, client: &Client) {
    assert_eq!(
        up.get("out"),
        server.got.len() as u64,
        "c2s out = datagrams at the server"
    );
    assert_eq!(
        down.get("out"),
        client.received,
        "s2c out = datagrams at the client"
    );
    // Every datagram in (and every extra copy) is accounted for once.
    for c in [up, down] {
        let accounted = [
            "out",
            "lost",
            "held",
            "send_errors",
            "rate_dropped",
            "overflow",
        ]
        .iter()
        .map(|k| c.get(k))
        .sum::<u64>()
            + c.get_or_zero("unmapped");
        assert_eq!(c.get("in") + c.get("duplicated"), accounted, "{c:?}");
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wzp-netem-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// -------------------------------------------------------------------- tests

#[test]
fn no_options_pass_everything_both_ways() {
    let server = Server::start(true);
    let proxy = Proxy::start(server.addr, &[]);
    let mut client = Client::new(proxy.addr);
    exchange(&mut client, 2000, 100);
    let (up, down) = loss_each_way(&client, &server, 2000);
    assert_eq!((up, down), (0.0, 0.0), "no loss without options");
    let echoed: BTreeSet<u32> = client.echoed.iter().copied().collect();
    assert_eq!(echoed, (0..2000).collect::<BTreeSet<u32>>());
    let (c2s, s2c) = proxy.stop();
    client.drain();
    let log = server.finish();
    counters_match(&c2s, &s2c, &log, &client);
    assert_eq!(c2s.get("lost") + s2c.get("lost"), 0);
    assert_eq!(c2s.get("delayed"), 0);
}

#[test]
fn loss_20_percent_each_way() {
    let server = Server::start(true);
    let proxy = Proxy::start(server.addr, &["--loss", "20", "--seed", "7"]);
    let mut client = Client::new(proxy.addr);
    exchange(&mut client, 2000, 100);
    let (up, down) = loss_each_way(&client, &server, 2000);
    eprintln!("--loss 20: measured {up:.4} client->server, {down:.4} server->client");
    // 2000 draws at 20 %: one standard deviation is 0.9 points (1 point on
    // the ~1600 echoes); 6 points is far outside chance.
    assert!((0.14..=0.26).contains(&up), "client->server loss {up}");
    assert!((0.14..=0.26).contains(&down), "server->client loss {down}");
    let (c2s, s2c) = proxy.stop();
    client.drain();
    let log = server.finish();
    counters_match(&c2s, &s2c, &log, &client);
    assert!(c2s.get("lost") >= 280 && s2c.get("lost") >= 220);
}

/// `--only c2s`: the loss on the way to the target only; the way back
/// passes everything (and `--only s2c` the other way round).
#[test]
fn only_impairs_the_one_direction() {
    for (only, lossy_up) in [("c2s", true), ("s2c", false)] {
        let server = Server::start(true);
        let proxy = Proxy::start(
            server.addr,
            &["--loss", "30", "--seed", "7", "--only", only],
        );
        let mut client = Client::new(proxy.addr);
        exchange(&mut client, 1000, 100);
        let (c2s, s2c) = proxy.stop();
        client.drain();
        let log = server.finish();
        counters_match(&c2s, &s2c, &log, &client);
        let (up, down) = (c2s.get_or_zero("lost"), s2c.get_or_zero("lost"));
        eprintln!("--only {only}: lost {up} client->server, {down} server->client");
        // 1000 draws at 30 % (and the sync datagrams): 300 lost, one
        // standard deviation 14.5.
        let lossy = |n: u64| n >= 200;
        if lossy_up {
            assert!(lossy(up) && down == 0, "--only {only}: {up} / {down}");
        } else {
            assert!(up == 0 && down > 150, "--only {only}: {up} / {down}");
        }
    }
}

#[test]
fn delay_adds_at_least_the_delay_each_way() {
    let server = Server::start(true);
    let proxy = Proxy::start(server.addr, &["--delay", "60"]);
    let mut client = Client::new(proxy.addr);
    let mut min_rtt = Duration::MAX;
    for seq in 0..15 {
        let t = Instant::now();
        client.send(DATA, seq, 50);
        let deadline = t + WAIT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("echo within the wait");
            if client.recv(left) == Some((DATA, seq)) {
                break;
            }
        }
        min_rtt = min_rtt.min(t.elapsed());
    }
    eprintln!("--delay 60: min round trip {min_rtt:?}");
    assert!(
        min_rtt >= Duration::from_millis(120),
        "min round trip {min_rtt:?} with 60 ms each way"
    );
    let (c2s, s2c) = proxy.stop();
    assert_eq!((c2s.get("delayed"), s2c.get("delayed")), (15, 15));
    let _ = server.finish();
}

#[test]
fn rate_caps_throughput_and_drops_what_cannot_fit() {
    let server = Server::start(false);
    // 64 kbit/s = 8000 bytes/s. Offer five times that for 1.5 s.
    let proxy = Proxy::start(server.addr, &["--rate", "64"]);
    let client = Client::new(proxy.addr);
    let (n, len) = (120u32, 500usize);
    let t0 = Instant::now();
    for seq in 0..n {
        // Pacing of the traffic source (40 kB/s), not a wait for an event:
        // no assertion depends on it.
        let due = t0 + Duration::from_micros(12_500) * seq;
        if let Some(left) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        client.send(DATA, seq, len);
    }
    // Markers until the server sees one: the token bucket releases in order,
    // so every data datagram that got through has arrived.
    let deadline = Instant::now() + WAIT;
    let mut m = 0;
    'wait: loop {
        client.send(MARKER, m, 5);
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            if server.saw_marker(m) {
                break 'wait;
            }
            assert!(Instant::now() < deadline, "no marker reached the server");
            std::thread::sleep(Duration::from_millis(5));
        }
        m += 1;
    }
    let (c2s, _) = proxy.stop();
    let log = server.finish();
    let data: Vec<_> = log.got.iter().filter(|g| g.0 == DATA).collect();
    let delivered: usize = data.iter().map(|g| g.2).sum();
    let last = data
        .iter()
        .map(|g| g.3)
        .max()
        .expect("some data got through");
    let span = last.duration_since(t0).as_secs_f64();
    // Token bucket: at most its depth (3000 bytes) plus the rate over the
    // time the test watched (the proxy's window is inside it), plus one
    // datagram in flight. An upper bound only: a slow machine delivers less.
    let cap = 3000.0 + 8000.0 * span + len as f64;
    eprintln!(
        "--rate 64: {delivered} of {} bytes delivered in {span:.3} s (cap {cap:.0}), {} rate drops",
        n as usize * len,
        c2s.get("rate_dropped")
    );
    assert!(
        (delivered as f64) <= cap,
        "{delivered} bytes in {span:.3} s at 64 kbit/s (cap {cap:.0})"
    );
    assert!(
        delivered >= 3000,
        "the bucket's depth passes at once: {delivered}"
    );
    assert!(
        delivered < n as usize * len,
        "loss when offered far above the rate"
    );
    assert!(c2s.get("rate_dropped") > 0);
}

#[test]
fn trace_drops_exactly_the_marked_datagrams_each_way() {
    let dir = tmp("trace");
    // 20 marked entries, then 20 clean ones for the markers.
    let pattern = [0, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0];
    let mut text: String = pattern.iter().map(|b| format!("{b} ")).collect();
    text.push('\n');
    text.push_str(&"0\n".repeat(20));
    let trace = dir.join("loss.txt");
    std::fs::write(&trace, text).unwrap();
    let server = Server::start(true);
    let proxy = Proxy::start(server.addr, &["--trace", trace.to_str().unwrap()]);
    let mut client = Client::new(proxy.addr);
    for seq in 0..20 {
        client.send(DATA, seq, 60);
    }
    client.sync_echo(Duration::from_millis(300));
    // The trace applies to each direction's own datagrams in order: the
    // server gets the unmarked ones; of its echoes, the j-th is dropped when
    // entry j is marked.
    let want_server: Vec<u32> = (0..20).filter(|i| pattern[*i as usize] == 0).collect();
    assert_eq!(
        server.data_seqs().into_iter().collect::<Vec<_>>(),
        want_server
    );
    let want_back: Vec<u32> = want_server
        .iter()
        .enumerate()
        .filter(|(j, _)| pattern[*j] == 0)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(client.echoed, want_back);
    let (c2s, _) = proxy.stop();
    let marked = pattern.iter().filter(|b| **b == 1).count() as u64;
    assert_eq!(c2s.get("lost"), marked);
    let _ = server.finish();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn schedule_switches_phases() {
    let server = Server::start(true);
    let mut proxy = Proxy::start(
        server.addr,
        &["--schedule", "2s:loss=100;1h:loss=30", "--seed", "5"],
    );
    proxy.wait_line(|l| l.starts_with("phase 1/2 ") && l.contains("loss=100 "));
    let mut client = Client::new(proxy.addr);
    // Phase 1 loses everything: markers only come back once phase 2 starts.
    let probes = client.sync_echo(Duration::from_millis(100));
    assert!(
        probes > 1,
        "the first probe came back in the 100 % loss phase"
    );
    proxy.wait_line(|l| l.starts_with("phase 2/2 at 2s: loss=30 "));
    exchange(&mut client, 2000, 100);
    let (up, down) = loss_each_way(&client, &server, 2000);
    eprintln!("phase 2 (loss=30): measured {up:.4} client->server, {down:.4} server->client after {probes} probes");
    assert!(
        (0.24..=0.36).contains(&up),
        "client->server loss in phase 2: {up}"
    );
    assert!(
        (0.24..=0.36).contains(&down),
        "server->client loss in phase 2: {down}"
    );
    let (c2s, _) = proxy.stop();
    assert!(c2s.get("lost") as u32 >= probes - 1 + 480);
    let _ = server.finish();
}

#[test]
fn bad_input_is_refused_with_the_bad_part_named() {
    let dir = tmp("bad");
    let bad_trace = dir.join("bad.txt");
    std::fs::write(&bad_trace, "0 1 x\n").unwrap();
    let missing = dir.join("missing.txt");
    let cases: Vec<(Vec<String>, &[&str])> = vec![
        (
            vec!["--schedule".into(), "10s:los=5".into()],
            &["--schedule", "phase 1", "unknown key \"los\""],
        ),
        (
            vec!["--schedule".into(), "10s:loss=5;;".into()],
            &["phase 2 is empty"],
        ),
        (
            vec!["--schedule".into(), "ten:loss=5".into()],
            &["duration \"ten\""],
        ),
        (
            vec!["--schedule".into(), "1s:loss=100,burst=50".into()],
            &["--schedule phase 1", "loss 100"],
        ),
        (
            vec!["--trace".into(), bad_trace.display().to_string()],
            &["--trace", "bad.txt", "line 1", "\"x\""],
        ),
        (
            vec!["--trace".into(), missing.display().to_string()],
            &["--trace", "missing.txt"],
        ),
        (
            vec!["--loss".into(), "150".into()],
            &["--loss", "percentage"],
        ),
        (
            vec!["--delay".into(), "soon".into()],
            &["--delay", "\"soon\""],
        ),
        (vec!["--rate=-3".into()], &["--rate", "kbit/s"]),
        (
            vec!["--only".into(), "up".into()],
            &["--only", "\"up\"", "c2s", "s2c"],
        ),
        (
            vec!["--queue".into(), "lots".into()],
            &["--queue", "\"lots\""],
        ),
        (
            vec!["--schedule".into(), "1s:queue=-5".into()],
            &["--schedule", "phase 1"],
        ),
    ];
    for (args, wants) in &cases {
        let out = Command::new(env!("CARGO_BIN_EXE_wzp-netem"))
            .args(["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        for w in *wants {
            assert!(err.contains(w), "{args:?}: {err:?} lacks {w:?}");
        }
    }
    for (flag, value, want) in [
        ("--listen", "nowhere", "--listen \"nowhere\""),
        ("--to", "no-port", "--to \"no-port\""),
        ("--to", "127.0.0.1:0", "port 0 is nowhere"),
        ("--burst", "60ms", "give --loss PCT too"),
        ("--duration", "0", "would stop at once"),
        (
            "--to",
            "127.0.0.1:45210",
            "the proxy's own --listen address",
        ),
    ] {
        let mut args = vec!["--listen", "127.0.0.1:45210", "--to", "127.0.0.1:9"];
        if flag == "--listen" {
            args[1] = "127.0.0.1:0";
        }
        match args.iter().position(|a| *a == flag) {
            Some(i) => args[i + 1] = value,
            None => args.extend([flag, value]),
        }
        let out = Command::new(env!("CARGO_BIN_EXE_wzp-netem"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
    }
    // A trace and random loss on top of it: the trace would not say which
    // datagrams are lost any more.
    let trace = dir.join("both.trace");
    std::fs::write(&trace, "0 1 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_wzp-netem"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--loss",
            "50",
            "--trace",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not both"));
    let help = Command::new(env!("CARGO_BIN_EXE_wzp-netem"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("Examples:") && help.contains("--schedule \"10s:loss=0"),
        "{help}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// -------------------------------------------------------------- real relay

struct Relay {
    child: Child,
    addr: SocketAddr,
    fingerprint: String,
}

impl Relay {
    // The child is killed and waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    fn start(dir: &Path) -> Relay {
        let client = PathBuf::from(env!("CARGO_BIN_EXE_wzp-client"));
        let bin = client.with_file_name("wzp-relay");
        assert!(
            bin.exists(),
            "{} is missing: build it with `cargo build -p wzp-relay` (cargo test --workspace does)",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args(["-i", dir.join("relay.seed").to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0"])
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

#[test]
fn a_pinned_quic_connection_to_a_real_relay_works_through_the_proxy() {
    let dir = tmp("relay");
    let relay = Relay::start(&dir);
    let proxy = Proxy::start(
        relay.addr,
        &[
            "--delay", "15", "--jitter", "5", "--loss", "5", "--seed", "3",
        ],
    );
    let pin: wzp_proto::TlsFingerprint = relay.fingerprint.parse().unwrap();
    let proxy_addr = proxy.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use wzp_stages::net::quic;
        let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(quic::client_config(pin).unwrap());
        for _ in 0..3 {
            let conn = tokio::time::timeout(WAIT, ep.connect(proxy_addr, "ping").unwrap())
                .await
                .expect("handshake through the proxy within the wait")
                .expect("the pinned handshake succeeds through the proxy");
            match tokio::time::timeout(WAIT, conn.closed())
                .await
                .expect("closed")
            {
                quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(&c.reason[..], b"pong"),
                other => panic!("ping closed with {other}"),
            }
        }
        // The wrong pin is still refused through the proxy.
        let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(
            quic::client_config(wzp_proto::TlsFingerprint([9; 32])).unwrap(),
        );
        let r = tokio::time::timeout(WAIT, ep.connect(proxy_addr, "ping").unwrap())
            .await
            .expect("refused within the wait");
        assert!(r.is_err(), "a wrong fingerprint must not connect");
    });
    // A client joins a room through the proxy with the relay's fingerprint.
    let out = Command::new(env!("CARGO_BIN_EXE_wzp-client"))
        .args([
            "join",
            "--relay",
            &proxy.addr.to_string(),
            "--room",
            "netem",
        ])
        .args(["--room-secret", "a secret only the members hold"])
        .args(["--input", "tone", "--output", "null", "--duration", "2s"])
        .args(["--identity", dir.join("c.seed").to_str().unwrap()])
        .args(["--known-relays", dir.join("known").to_str().unwrap()])
        .args(["--relay-fingerprint", &relay.fingerprint])
        .args(["--quiet", "--no-realtime"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "join through the proxy failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("joined room netem"), "{stdout}");
    let (c2s, s2c) = proxy.stop();
    assert!(c2s.get("out") > 50 && s2c.get("out") > 5, "{c2s:?} {s2c:?}");
    drop(relay);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn each_client_gets_its_own_upstream_mapping() {
    let server = Server::start(true);
    let mut proxy = Proxy::start(server.addr, &[]);
    let mut a = Client::new(proxy.addr);
    let mut b = Client::new(proxy.addr);
    for seq in 0..10 {
        a.send(DATA, seq, 20);
        b.send(DATA, 100 + seq, 20);
    }
    a.sync_echo(Duration::from_millis(300));
    b.sync_echo(Duration::from_millis(300));
    // Each client hears only its own echoes: the replies found their mapping.
    assert_eq!(a.echoed, (0..10).collect::<Vec<_>>());
    assert_eq!(b.echoed, (100..110).collect::<Vec<_>>());
    let status = Command::new("kill")
        .args(["-INT", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let line = proxy.wait_line(|l| l.starts_with("mappings="));
    assert_eq!(line, "mappings=2", "one upstream socket per client");
    proxy.wait_line(|l| l.starts_with("counters s2c "));
    let _ = server.finish();
}

#[test]
fn duration_ends_the_run_with_the_counters() {
    let out = Command::new(env!("CARGO_BIN_EXE_wzp-netem"))
        .args(["--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"])
        .args([
            "--duration",
            "300ms",
            "--schedule",
            "100ms:delay=5;1s:loss=1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("listening udp=127.0.0.1:"), "{text}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("phase 2/2 at 0.1s: loss=1 ")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("counters c2s in=0 out=0 ")),
        "{text}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("counters s2c in=0 out=0 ")),
        "{text}"
    );
}
