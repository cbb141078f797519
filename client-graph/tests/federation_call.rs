//! A direct call across federated relays, real processes on loopback: relays
//! 1–2–3 in a chain (configs written from `wzp-relay fingerprint`), alice
//! registered on relay 1 calls bob registered on relay 3. The offer travels
//! 1 → 2 → 3 along bob's presence route, bob's relay rings him, his answer
//! and the handshake come back the same way (both ends print the same SAS,
//! so the key was agreed end to end through two relays that cannot read it),
//! both join the call room on their own relay, each hears the other (the
//! far end's recording correlates with what the other sent, across two
//! federation links), and a hangup by alice ends bob's call too.
//!
//! A second test links relays 1 and 3 through three relays between: the one
//! carrying the call stops (SIGTERM, as for an upgrade), then the next one
//! carrying it is killed, and the call goes on over the last (the relays
//! move it, federation version 2) without either party hearing more than a
//! gap.
//!
//! Every wait is for a line a process prints or a metric, with a deadline.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, segmental_correlation, write_wav_16k as write_wav, Proc, Relay};

use wzp_stages::audio::signal::speech_like;
use wzp_stages::audio::wav_source::read_wav_mono;

const WAIT: Duration = Duration::from_secs(30);

/// A fresh directory for test `name`.
fn tmp(name: &str) -> PathBuf {
    common::tmp("wzp-fedcall", name)
}

/// `wzp-relay fingerprint -i SEED`: creates the identity, prints its
/// fingerprint.
fn fingerprint_of(seed: &Path) -> String {
    let out = Command::new(bin("wzp-relay"))
        .args(["fingerprint", "-i"])
        .arg(seed)
        .output()
        .expect("wzp-relay fingerprint runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Starts relay `name` with `config` (TOML) and its own identity in `dir`.
fn start_relay(dir: &Path, name: &str, config: &str) -> Relay {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let seed = dir.join(format!("{name}.seed"));
    #[rustfmt::skip]
    let args = [
        "-c", cfg.to_str().unwrap(),
        "-i", seed.to_str().unwrap(),
        "--listen", "127.0.0.1:0",
        "--metrics-addr", "127.0.0.1:0",
        "--label", name,
    ];
    Relay::start(name, &args, WAIT)
}

/// The relay's metrics address (every relay here is started with one).
fn metrics(relay: &Relay) -> SocketAddr {
    relay.metrics.expect("started with --metrics-addr")
}

fn http_get(relay: &Relay, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&metrics(relay), WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        metrics(relay)
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Polls `path` on `relay` until `ok` holds for its body; returns it.
fn wait_http(relay: &Relay, path: &str, ok: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    wait_for(&format!("GET {path} to satisfy the wait"), || {
        last = http_get(relay, path);
        ok(&last).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("GET {path} never satisfied the wait; last body:\n{last}"))
}

/// Polls `probe` (every 50 ms, what relays publish is read, not pushed)
/// until it yields, for at most [`WAIT`]; `None` if it never did. `what`
/// names the event for the caller's failure message.
fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            eprintln!("waited {WAIT:?} for {what}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_link_up(relay: &Relay, peer: &str) {
    let metric = format!("wzp_federation_peer_status{{peer=\"{peer}\"}} 2");
    wait_http(relay, "/metrics", |m| m.contains(&metric));
}

/// `wzp-client SUB ...` with `user`'s identity and known relays in `dir`.
fn as_user(dir: &Path, user: &str, sub: &[&str]) -> Command {
    let mut cmd = Command::new(bin("wzp-client"));
    cmd.args(sub);
    for (flag, ext) in [("--identity", "seed"), ("--known-relays", "known")] {
        cmd.args([flag, dir.join(format!("{user}.{ext}")).to_str().unwrap()]);
    }
    cmd
}

/// `wzp-client SUB ...` pinned to `relay`, with a per-user identity.
fn client(dir: &Path, relay: &Relay, user: &str, sub: &[&str], extra: &[&str]) -> Proc {
    let mut cmd = as_user(dir, user, sub);
    cmd.args(["--relay", &relay.addr.to_string()])
        .args(["--relay-fingerprint", &relay.fingerprint])
        .arg("--no-realtime")
        .args(extra);
    if matches!(sub.first(), Some(&"call") | Some(&"listen")) {
        // The user's own history, never the machine's.
        cmd.args([
            "--history",
            dir.join(format!("{user}.history.jsonl")).to_str().unwrap(),
        ]);
    }
    Proc::spawn(user, &mut cmd)
}

/// Two voices in `dir`: the speech sample for alice and the same reversed
/// for bob, so each recording can only match its own sender.
fn voices(dir: &Path) -> (Vec<f32>, Vec<f32>) {
    let speech = speech_like(16_000);
    let reversed: Vec<f32> = speech.iter().rev().copied().collect();
    write_wav(&dir.join("alice-says.wav"), &speech);
    write_wav(&dir.join("bob-says.wav"), &reversed);
    (speech, reversed)
}

/// Bob registered on `relay`, answering the first call (`--accept
/// accept`) for at most `duration`, his voice in and what he hears to
/// `bob-heard.wav`; with his fingerprint.
fn bob_listens(dir: &Path, relay: &Relay, accept: &str, duration: &str) -> (Proc, String) {
    let mut p = client(
        dir,
        relay,
        "bob",
        &["listen"],
        &[
            "--accept",
            accept,
            "--once",
            "--duration",
            duration,
            "--input",
            dir.join("bob-says.wav").to_str().unwrap(),
            "--output",
            dir.join("bob-heard.wav").to_str().unwrap(),
        ],
    );
    let line = p.expect_line("registered as ", WAIT);
    let fp = line.split_whitespace().nth(2).unwrap().to_string();
    (p, fp)
}

/// Alice on `relay` calls `bob` for `duration`, her voice in and what she
/// hears to `alice-heard.wav`.
fn alice_calls(dir: &Path, relay: &Relay, bob: &str, duration: &str) -> Proc {
    client(
        dir,
        relay,
        "alice",
        &["call", bob],
        &[
            "--alias",
            "alice",
            "--duration",
            duration,
            "--input",
            dir.join("alice-says.wav").to_str().unwrap(),
            "--output",
            dir.join("alice-heard.wav").to_str().unwrap(),
        ],
    )
}

fn sas(p: &mut Proc) -> String {
    p.expect_line("SAS: ", WAIT)
        .trim()
        .trim_start_matches("SAS: ")
        .to_string()
}

/// Relays r1–r2–r3: r1 and r3 dial r2, which trusts both.
fn chain(dir: &Path) -> [Relay; 3] {
    let fp1 = fingerprint_of(&dir.join("r1.seed"));
    let fp3 = fingerprint_of(&dir.join("r3.seed"));
    let r2 = start_relay(
        dir,
        "r2",
        &format!(
            "[[trusted]]\nfingerprint = \"{fp1}\"\nlabel = \"r1\"\n\n\
             [[trusted]]\nfingerprint = \"{fp3}\"\nlabel = \"r3\"\n"
        ),
    );
    let dial_r2 = format!(
        "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"r2\"\n",
        r2.addr, r2.fingerprint
    );
    let r1 = start_relay(dir, "r1", &dial_r2);
    let r3 = start_relay(dir, "r3", &dial_r2);
    assert_eq!(
        (r1.fingerprint.as_str(), r3.fingerprint.as_str()),
        (fp1.as_str(), fp3.as_str())
    );
    wait_link_up(&r1, "r2");
    wait_link_up(&r3, "r2");
    [r1, r2, r3]
}

#[test]
fn alice_on_relay_1_calls_bob_on_relay_3_through_relay_2() {
    let dir = tmp("chain");
    let [r1, r2, r3] = chain(&dir);
    let (speech, reversed) = voices(&dir);

    let (mut bob, bob_fp) = bob_listens(&dir, &r3, "generic", "60s");
    // Relay 1 reaches bob through relay 2.
    let route = wait_http(&r1, &format!("/route/{bob_fp}"), |b| {
        b.contains("\"route\":\"via\"")
    });
    assert!(route.contains(&bob_fp), "{route}");

    let mut alice = alice_calls(&dir, &r1, &bob_fp, "6s");
    alice.expect_line("ringing", WAIT);
    let offer = bob.expect_line("incoming call from ", WAIT);
    assert!(offer.contains("(alice)"), "{offer}");
    let answered = alice.expect_line("answered by", WAIT);
    assert!(answered.contains("room call-"), "{answered}");
    let (sas_a, sas_b) = (sas(&mut alice), sas(&mut bob));
    assert_eq!(sas_a, sas_b, "both ends agreed one key through two relays");

    // Each end relay carries the call as active, with its local party in
    // the call room and its neighbour on the path; the transit relay shows
    // it as carried between them.
    let calls1 = wait_http(&r1, "/calls", |b| b.contains("\"active\""));
    let calls3 = wait_http(&r3, "/calls", |b| b.contains("\"active\""));
    assert!(calls1.contains(&bob_fp) && calls3.contains(&bob_fp));
    assert!(calls1.contains("\"toward_callee\":\"r2\""), "{calls1}");
    assert!(calls3.contains("\"toward_caller\":\"r2\""), "{calls3}");
    let calls2 = wait_http(&r2, "/calls", |b| b.contains("\"active\""));
    assert!(calls2.contains(&bob_fp), "{calls2}");
    for field in [
        "\"role\":\"between\"",
        "\"toward_caller\":\"r1\"",
        "\"toward_callee\":\"r3\"",
    ] {
        assert!(calls2.contains(field), "{field} in {calls2}");
    }
    // Its links each carry the one call (what would move if either went).
    let peers2: serde_json::Value = serde_json::from_str(&http_get(&r2, "/peers")).unwrap();
    for p in peers2["peers"].as_array().unwrap() {
        assert_eq!(p["calls"], 1, "{p}");
    }
    wait_http(&r1, "/sessions", |b| b.contains("call-"));
    wait_http(&r3, "/sessions", |b| b.contains("call-"));

    // Alice hangs up after her 6 s; bob's call ends with it, long before
    // his own 60 s.
    alice.expect_line("hung up", WAIT);
    let hung_up = Instant::now();
    // Each end says what it heard over the call.
    let heard_frames = |line: &str| -> u64 {
        line.trim()
            .strip_prefix("heard ")
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    let a_heard = alice.expect_line("heard ", WAIT);
    assert!(heard_frames(&a_heard) >= 150, "{a_heard}");
    assert!(a_heard.contains("% concealed"), "{a_heard}");
    assert!(alice.exit(WAIT).success(), "{:?}", alice.drain());
    bob.expect_line("the other side hung up", WAIT);
    let b_heard = bob.expect_line("heard ", WAIT);
    assert!(heard_frames(&b_heard) >= 150, "{b_heard}");
    assert!(bob.exit(WAIT).success(), "{:?}", bob.drain());
    println!("bob's call ended {:?} after alice's", hung_up.elapsed());
    // Answered accept_generic: no addresses, no direct path.
    for p in [&mut alice, &mut bob] {
        let printed = p.drain();
        assert!(
            !printed.iter().any(|l| l.contains("direct path")),
            "{printed:?}"
        );
    }

    // The media crossed r1 -> r2 -> r3 and back, sealed end to end.
    let heard_by_bob = read_wav_mono(&dir.join("bob-heard.wav")).unwrap().samples;
    let heard_by_alice = read_wav_mono(&dir.join("alice-heard.wav")).unwrap().samples;
    let r_b = segmental_correlation(&heard_by_bob, &speech);
    let r_a = segmental_correlation(&heard_by_alice, &reversed);
    println!("bob hears alice at r = {r_b:.3}, alice hears bob at r = {r_a:.3}");
    assert!(
        r_b > 0.7,
        "bob's recording correlates {r_b} with alice's voice"
    );
    assert!(
        r_a > 0.7,
        "alice's recording correlates {r_a} with bob's voice"
    );
    let cross = segmental_correlation(&heard_by_bob, &reversed);
    assert!(
        cross < r_b,
        "bob hears alice ({r_b}), not himself ({cross})"
    );
    // Relay 2 carried the offer on, and the call's media each way (50
    // packets/s for 6 s).
    let m2 = http_get(&r2, "/metrics");
    assert!(
        m2.contains("wzp_federation_calls_total{event=\"offer_forwarded\"} 1\n"),
        "{m2}"
    );
    let m3 = http_get(&r3, "/metrics");
    assert!(
        m3.contains("wzp_federation_calls_total{event=\"offer_delivered\"} 1\n"),
        "{m3}"
    );
    for peer in ["r1", "r3"] {
        let key =
            format!("wzp_federation_packets_forwarded_total{{peer=\"{peer}\",direction=\"out\"}} ");
        let sent: f64 = m2
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in relay 2's metrics:\n{m2}"));
        assert!(sent > 100.0, "relay 2 sent {sent} datagrams to {peer}");
    }
    wait_http(&r1, "/calls", |b| !b.contains(&bob_fp));
    wait_http(&r3, "/calls", |b| !b.contains(&bob_fp));
    wait_http(&r2, "/calls", |b| !b.contains(&bob_fp));
    drop(r2.proc);
    let _ = std::fs::remove_dir_all(dir);
}

/// Relays r1 and r3 each linked to three relays between, `r2a`, `r2b`,
/// `r2c` (r1 and r3 dial them; they trust both). The relays between come
/// back by label.
fn ladder(dir: &Path) -> (Relay, Vec<(&'static str, Relay)>, Relay) {
    let fp1 = fingerprint_of(&dir.join("r1.seed"));
    let fp3 = fingerprint_of(&dir.join("r3.seed"));
    let trust = format!(
        "[[trusted]]\nfingerprint = \"{fp1}\"\nlabel = \"r1\"\n\n\
         [[trusted]]\nfingerprint = \"{fp3}\"\nlabel = \"r3\"\n"
    );
    let between: Vec<(&'static str, Relay)> = ["r2a", "r2b", "r2c"]
        .into_iter()
        .map(|name| (name, start_relay(dir, name, &trust)))
        .collect();
    let dial: String = between
        .iter()
        .map(|(name, r)| {
            format!(
                "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"{name}\"\n\n",
                r.addr, r.fingerprint
            )
        })
        .collect();
    let r1 = start_relay(dir, "r1", &dial);
    let r3 = start_relay(dir, "r3", &dial);
    for r in [&r1, &r3] {
        for (name, _) in &between {
            wait_link_up(r, name);
        }
    }
    (r1, between, r3)
}

/// A counter of `relay`'s metrics (0 when absent).
fn metric(relay: &Relay, key: &str) -> f64 {
    http_get(relay, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn forwarded_to(relay: &Relay, peer: &str) -> f64 {
    metric(
        relay,
        &format!("wzp_federation_packets_forwarded_total{{peer=\"{peer}\",direction=\"out\"}} "),
    )
}

/// Which of `between` carries the call's media now: the first to forward
/// `more` datagrams to r3 beyond what `before` counted for it.
fn carrier(between: &[(&'static str, Relay)], before: &[f64], more: f64) -> usize {
    wait_for("media through a relay between", || {
        between
            .iter()
            .enumerate()
            .position(|(i, (_, r))| forwarded_to(r, "r3") > before[i] + more)
    })
    .expect("no media through any relay between")
}

/// Waits until r3 has taken `n` new paths; how long that took.
fn wait_rerouted(r3: &Relay, n: u32, since: Instant) -> Duration {
    let want = format!("wzp_federation_calls_total{{event=\"rerouted\"}} {n}\n");
    wait_http(r3, "/metrics", |m| m.contains(&want));
    since.elapsed()
}

#[test]
fn a_call_goes_on_when_relays_between_stop_or_die() {
    let dir = tmp("ladder");
    let (r1, mut between, r3) = ladder(&dir);
    let (speech, reversed) = voices(&dir);
    let (mut bob, bob_fp) = bob_listens(&dir, &r3, "generic", "90s");
    wait_http(&r1, &format!("/route/{bob_fp}"), |b| {
        b.contains("\"route\":\"via\"")
    });
    let mut alice = alice_calls(&dir, &r1, &bob_fp, "25s");
    alice.expect_line("answered by", WAIT);
    assert_eq!(sas(&mut alice), sas(&mut bob));
    let counts = |between: &[(&'static str, Relay)]| -> Vec<f64> {
        between.iter().map(|(_, r)| forwarded_to(r, "r3")).collect()
    };

    // The relay carrying the call stops (SIGTERM: an upgrade's restart). It
    // closes its links, so the ends know at once and the call moves.
    let zero = vec![0.0; between.len()];
    let first = carrier(&between, &zero, 50.0);
    let (name, stopped) = between.remove(first);
    let before = counts(&between);
    let status = Command::new("kill")
        .args(["-TERM", &stopped.proc.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let t = Instant::now();
    let moved = wait_rerouted(&r3, 1, t);
    println!("{name} stopped; the call moved {moved:?} later");
    let mut stopped = stopped;
    assert!(stopped.proc.exit(WAIT).success(), "{name} stops cleanly");
    // Found by the link's close, not by its silence.
    for r in [&r1, &r3] {
        let dead = metric(r, "wzp_federation_refused_total{reason=\"dead_link\"} ");
        assert_eq!(dead, 0.0, "a link timed out instead of closing");
    }

    // The next one carrying it dies (SIGKILL): found by silence, moved again.
    let second = carrier(&between, &before, 100.0);
    let (name, killed) = between.remove(second);
    let before = counts(&between);
    let calls = http_get(&r1, "/calls");
    let want = format!("\"toward_callee\":\"{name}\"");
    assert!(calls.contains(&want), "{want} in {calls}");
    drop(killed.proc);
    let t = Instant::now();
    let moved = wait_rerouted(&r3, 2, t);
    println!("{name} died; the call moved {moved:?} later");
    // Found by the media it carried stopping (a probed silence of 1.5 s),
    // not by the 5 s of silence a link without media waits.
    for r in [&r1, &r3] {
        wait_http(r, "/metrics", |m| {
            m.contains("wzp_federation_refused_total{reason=\"media_stopped\"} 1\n")
        });
        let dead = metric(r, "wzp_federation_refused_total{reason=\"dead_link\"} ");
        assert_eq!(dead, 0.0, "a link waited out its 5 s of silence");
    }
    let (last, spare) = &between[0];
    let calls = wait_http(spare, "/calls", |b| b.contains("\"active\""));
    assert!(calls.contains("\"role\":\"between\""), "{calls}");
    assert!(!calls.contains("path_lost"), "{calls}");
    let calls = http_get(&r1, "/calls");
    let want = format!("\"toward_callee\":\"{last}\"");
    assert!(calls.contains(&want), "{want} in {calls}");
    // Media flows through the last one both ways now.
    wait_for("media both ways through the last relay between", || {
        (forwarded_to(spare, "r3") >= before[0] + 100.0 && forwarded_to(spare, "r1") >= 100.0)
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no media through {last}"));
    let m1 = http_get(&r1, "/metrics");
    assert!(
        m1.contains("wzp_federation_calls_total{event=\"reroute_sent\"} 2\n"),
        "{m1}"
    );

    // Alice hangs up after her 25 s, herself: the call was never ended.
    alice.expect_line("hung up", Duration::from_secs(60));
    assert!(alice.exit(WAIT).success(), "{:?}", alice.drain());
    let alice_said = alice.drain();
    assert!(
        alice_said.iter().any(|l| l == "hung up")
            && !alice_said
                .iter()
                .any(|l| l.contains("the other side hung up")),
        "{alice_said:?}"
    );
    bob.expect_line("the other side hung up", WAIT);
    assert!(bob.exit(WAIT).success(), "{:?}", bob.drain());

    // Each heard the other in the call's last 8 s, after both moves.
    let heard = read_wav_mono(&dir.join("bob-heard.wav")).unwrap().samples;
    assert!(heard.len() > 16_000 * 16, "{} samples", heard.len());
    let r = segmental_correlation(&heard[heard.len() - 16_000 * 8..], &speech);
    let heard_a = read_wav_mono(&dir.join("alice-heard.wav")).unwrap().samples;
    let tail_a = &heard_a[heard_a.len().saturating_sub(16_000 * 8)..];
    let r_a = segmental_correlation(tail_a, &reversed);
    println!("after the moves bob hears alice at r = {r:.3}, alice hears bob at r = {r_a:.3}");
    assert!(r > 0.7, "bob's last 8 s correlate {r} with alice's voice");
    assert!(
        r_a > 0.7,
        "alice's last 8 s correlate {r_a} with bob's voice"
    );
    drop(between);
    let _ = std::fs::remove_dir_all(dir);
}

/// A call across relays answered `accept_trusted` goes straight between the
/// parties: each seals its addresses for the other (`call_path`), relays 1,
/// 2 and 3 carry them unread, the caller dials, and the media leaves the
/// relays while the call goes on (correlated at both ends).
#[test]
fn a_trusted_call_across_relays_takes_a_direct_path() {
    let dir = tmp("chain-direct");
    let [r1, r2, r3] = chain(&dir);
    let (speech, reversed) = voices(&dir);
    let (mut bob, bob_fp) = bob_listens(&dir, &r3, "trusted", "60s");
    wait_http(&r1, &format!("/route/{bob_fp}"), |b| {
        b.contains("\"route\":\"via\"")
    });
    let mut alice = alice_calls(&dir, &r1, &bob_fp, "8s");
    alice.expect_line("answered by", WAIT);
    // Each learns the other's addresses from the sealed call_path.
    let got = bob.expect_line("shared its addresses for a direct path (sealed", WAIT);
    assert!(got.contains("127.0.0.1:"), "{got}");
    alice.expect_line("shared its addresses for a direct path (sealed", WAIT);
    let up_a = alice.expect_line("direct path to ", WAIT);
    assert!(up_a.contains(" up "), "{up_a}");
    let up_b = bob.expect_line("direct path to ", WAIT);
    assert!(up_b.contains(" up "), "{up_b}");
    let (to3, to1) = (forwarded_to(&r2, "r3"), forwarded_to(&r2, "r1"));

    alice.expect_line("hung up", WAIT);
    assert!(alice.exit(WAIT).success(), "{:?}", alice.drain());
    bob.expect_line("the other side hung up", WAIT);
    assert!(bob.exit(WAIT).success(), "{:?}", bob.drain());
    let carried = alice.expect_line("carried ", WAIT);
    println!("{carried}");

    // While the path was up the relays carried (almost) nothing: 8 s of
    // media would be ~400 datagrams each way.
    let (more3, more1) = (forwarded_to(&r2, "r3") - to3, forwarded_to(&r2, "r1") - to1);
    println!("relay 2 carried {more3} datagrams to r3 and {more1} to r1 after the path was up");
    assert!(more3 < 40.0 && more1 < 40.0, "{more3} / {more1}");
    // Each party's addresses, twice: with its mapping test's flag, then
    // without it for a peer of an older build (docs/WIRE.md §10.2).
    let m2 = http_get(&r2, "/metrics");
    assert!(
        m2.contains("wzp_federation_calls_total{event=\"path_forwarded\"} 4\n"),
        "{m2}"
    );
    let heard_by_bob = read_wav_mono(&dir.join("bob-heard.wav")).unwrap().samples;
    let heard_by_alice = read_wav_mono(&dir.join("alice-heard.wav")).unwrap().samples;
    let r_b = segmental_correlation(&heard_by_bob, &speech);
    let r_a = segmental_correlation(&heard_by_alice, &reversed);
    println!("bob hears alice at r = {r_b:.3}, alice hears bob at r = {r_a:.3}");
    assert!(r_b > 0.7, "bob's recording correlates {r_b}");
    assert!(r_a > 0.7, "alice's recording correlates {r_a}");

    // Bob trusts but shares nothing (`--relay-only`): alice's sealed
    // addresses reach him and go unanswered; she says so, and the call
    // runs on the relays.
    let mut bob = client(
        &dir,
        &r3,
        "bob",
        &["listen"],
        &[
            "--accept",
            "trusted",
            "--relay-only",
            "--once",
            "--duration",
            "60s",
            "--input",
            "tone",
            "--output",
            "null",
        ],
    );
    bob.expect_line("registered as ", WAIT);
    let mut alice = client(
        &dir,
        &r1,
        "alice",
        &["call", &bob_fp],
        &["--duration", "7s", "--input", "tone", "--output", "null"],
    );
    let none = alice.expect_line("no addresses from ", WAIT);
    assert!(none.contains("the media stays on the relays"), "{none}");
    assert!(alice.exit(WAIT).success(), "{:?}", alice.drain());
    bob.expect_line("the other side hung up", WAIT);
    assert!(bob.exit(WAIT).success(), "{:?}", bob.drain());
    for p in [&mut alice, &mut bob] {
        let printed = p.drain();
        assert!(
            !printed.iter().any(|l| l.contains("direct path to")),
            "{printed:?}"
        );
    }
    drop((r1, r3));
    let _ = std::fs::remove_dir_all(dir);
}

/// `wzp-client SUB ...` as `user` pinned to `relay`, run to its end, with
/// what it printed.
fn mail_client(dir: &Path, relay: &Relay, user: &str, sub: &[&str]) -> (bool, String) {
    let o = common::user_cmd(dir, relay, user, sub)
        .output()
        .expect("wzp-client runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), said)
}

#[test]
fn a_voice_message_left_on_relay_1_waits_for_bob_on_relay_3_and_he_hears_it() {
    let dir = tmp("mail");
    let [r1, _r2, r3] = chain(&dir);
    let bob = common::identity_of(&dir, "bob");
    let save = dir.join("saved");
    let save_arg = save.to_str().unwrap();
    // Bob checks his messages on relay 3 (it keeps his key), then is away.
    let (ok, said) = mail_client(&dir, &r3, "bob", &["messages", "--save-dir", save_arg]);
    assert!(ok && said.contains("no voice messages for you"), "{said}");
    // Alice on relay 1 leaves 2 s of 523 Hz: kept on relay 3, not relay 1.
    let (ok, said) = mail_client(
        &dir,
        &r1,
        "alice",
        &["message", &bob, "--input", "tone:523", "--duration", "2s"],
    );
    assert!(ok, "{said}");
    assert!(
        said.contains(&format!("left a voice message of 2.0 s for {bob}")),
        "{said}"
    );
    let on = |r: &Relay| {
        http_get(r, "/metrics").lines().find_map(|l| {
            l.strip_prefix("wzp_signal_voice_messages ")?
                .parse::<u64>()
                .ok()
        })
    };
    assert_eq!((on(&r1), on(&r3)), (Some(0), Some(1)));
    // Bob, back on relay 3, fetches it: alice's, 2 s, the tone she left.
    let (ok, said) = mail_client(&dir, &r3, "bob", &["messages", "--save-dir", save_arg]);
    assert!(ok, "{said}");
    let alice = common::identity_of(&dir, "alice");
    assert!(
        said.contains(&format!("voice message from {alice}")) && said.contains(", 2.0 s, "),
        "{said}"
    );
    let (tone, other) = (
        common::saved_tone(&said, 523.0),
        common::saved_tone(&said, 1_700.0),
    );
    assert!(
        tone > -20.0 && other < tone - 30.0,
        "523 Hz at {tone} dBFS, 1700 Hz at {other}"
    );
    assert_eq!(on(&r3), Some(0), "fetched and deleted");
}

#[test]
fn a_voice_message_left_where_bob_was_follows_him_to_the_relay_he_listens_at() {
    let dir = tmp("mail-moves");
    let [r1, _r2, r3] = chain(&dir);
    let bob = common::identity_of(&dir, "bob");
    let save = dir.join("saved");
    let save_arg = save.to_str().unwrap();
    // Bob was on relay 1; alice, there too, leaves him 2 s of 587 Hz.
    let (ok, said) = mail_client(&dir, &r1, "bob", &["messages", "--save-dir", save_arg]);
    assert!(ok, "{said}");
    let (ok, said) = mail_client(
        &dir,
        &r1,
        "alice",
        &["message", &bob, "--input", "tone:587", "--duration", "2s"],
    );
    assert!(ok, "{said}");
    let count = |r: &Relay, name: &str| {
        http_get(r, "/metrics")
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} "))?.parse::<u64>().ok())
    };
    assert_eq!(count(&r1, "wzp_signal_voice_messages"), Some(1));
    // Bob listens on relay 3: the message comes to him there.
    let mut l = Proc::spawn(
        "bob listen",
        &mut common::user_cmd(
            &dir,
            &r3,
            "bob",
            &["listen", "--accept", "reject", "--no-realtime"],
        ),
    );
    l.expect_line("1 voice message waits for you at this relay", WAIT);
    l.kill();
    wait_http(&r1, "/metrics", |m| {
        m.contains("\nwzp_signal_voice_messages 0\n")
            && m.contains("\nwzp_signal_voice_messages_moved_total 1\n")
    });
    let (ok, said) = mail_client(&dir, &r3, "bob", &["messages", "--save-dir", save_arg]);
    assert!(ok, "{said}");
    let tone = common::saved_tone(&said, 587.0);
    assert!(tone > -20.0, "587 Hz at {tone} dBFS");
}

/// Bob listening on relay 3, asked at the keys (`--accept ask`, keys on
/// his standard input; `once`: one call), a 660 Hz tone in, nothing out;
/// with his fingerprint once relay 1 routes to him.
fn bob_asks_on_r3(dir: &Path, r3: &Relay, r1: &Relay, once: bool) -> (Proc, String) {
    let mut cmd = common::user_cmd(dir, r3, "bob", &["listen"]);
    cmd.args(["--accept", "ask", "--no-realtime"]);
    if once {
        cmd.arg("--once");
    }
    cmd.args(["--input", "tone:660", "--output", "null"]);
    let mut bob = Proc::spawn_with_input("bob", &mut cmd);
    let line = bob.expect_line("registered as ", WAIT);
    let fp = line.split_whitespace().nth(2).unwrap().to_string();
    wait_http(r1, &format!("/route/{fp}"), |b| {
        b.contains("\"route\":\"via\"")
    });
    (bob, fp)
}

#[test]
fn a_hold_on_relay_3_reaches_the_caller_on_relay_1_and_silences_the_call() {
    let dir = tmp("hold");
    let [r1, r2, r3] = chain(&dir);
    let alice_heard = dir.join("alice-heard.wav");
    let (mut bob, bob_fp) = bob_asks_on_r3(&dir, &r3, &r1, true);
    let mut alice = client(
        &dir,
        &r1,
        "alice",
        &["call", &bob_fp],
        &[
            "--input",
            "tone:440",
            "--output",
            alice_heard.to_str().unwrap(),
            "--duration",
            "7s",
        ],
    );
    bob.expect_line("ringing: a answers, d declines", WAIT);
    bob.type_keys("a");
    assert_eq!(sas(&mut alice), sas(&mut bob));
    bob.type_keys("h");
    let said = bob.expect_line("you put the call on hold", WAIT);
    assert!(said.contains("(they are told)"), "{said}");
    alice.expect_line("put the call on hold", WAIT);
    assert!(alice.exit(WAIT).success(), "{:?}", alice.drain());
    assert!(bob.exit(WAIT).success(), "{:?}", bob.drain());
    // Across both links: the middle relay passed it on.
    let passed = |r: &Relay| {
        http_get(r, "/metrics")
            .lines()
            .any(|l| l == "wzp_federation_calls_total{event=\"hold_forwarded\"} 1")
    };
    assert!(passed(&r2), "relay 2 passed the hold on");
    // The last 3 s of what alice heard: none of bob's tone.
    let w = read_wav_mono(&alice_heard).unwrap();
    let n = w.samples.len();
    let r = w.rate as usize;
    let tail = &w.samples[n.saturating_sub(3 * r)..];
    let level = wzp_stages::audio::signal::goertzel_dbfs(tail, w.rate, 660.0);
    assert!(level < -60.0, "bob's tone at {level} dBFS while held");
}

/// The level (dBFS) of `freq` in the last second written of the WAV at
/// `path`, or -200 while it holds less.
fn last_second(path: &Path, freq: f64) -> f32 {
    match read_wav_mono(path) {
        Ok(w) if w.samples.len() > w.rate as usize => wzp_stages::audio::signal::goertzel_dbfs(
            &w.samples[w.samples.len() - w.rate as usize..],
            w.rate,
            freq,
        ),
        _ => -200.0,
    }
}

#[test]
fn a_call_from_relay_1_held_for_a_waiting_one_is_taken_back_across_the_links() {
    let dir = tmp("keep");
    let [r1, _r2, r3] = chain(&dir);
    let alice_heard = dir.join("alice-heard.wav");
    let (mut bob, bob_fp) = bob_asks_on_r3(&dir, &r3, &r1, false);
    let mut alice = client(
        &dir,
        &r1,
        "alice",
        &["call", &bob_fp],
        &[
            "--input",
            "tone:440",
            "--output",
            alice_heard.to_str().unwrap(),
        ],
    );
    bob.expect_line("ringing: a answers, d declines", WAIT);
    bob.type_keys("a");
    assert_eq!(sas(&mut alice), sas(&mut bob));
    wait_for("alice hears bob", || {
        (last_second(&alice_heard, 660.0) > -30.0).then_some(())
    })
    .expect("alice hears bob");
    // Carol, on bob's relay, calls; bob holds alice's call and answers.
    let mut carol = client(
        &dir,
        &r3,
        "carol",
        &["call", &bob_fp],
        &["--input", "tone:500", "--output", "null"],
    );
    bob.expect_line("s holds this call and answers it", WAIT);
    bob.type_keys("s");
    alice.expect_line("put the call on hold", WAIT);
    carol.expect_line("answered by ", WAIT);
    wait_for("alice stops hearing bob", || {
        (last_second(&alice_heard, 660.0) < -50.0).then_some(())
    })
    .expect("alice stops hearing bob");
    // Bob swaps back: his new graph's media reaches alice over both links.
    bob.type_keys("s");
    carol.expect_line("put the call on hold", WAIT);
    alice.expect_line("took the call back", WAIT);
    wait_for("alice hears bob again, across the links", || {
        (last_second(&alice_heard, 660.0) > -30.0).then_some(())
    })
    .expect("alice hears bob again, across the links");
    // Carol, held, leaves (SIGTERM: she hangs up): bob is told, and once
    // he hangs up alice no call is left on hold.
    let term = Command::new("kill")
        .args(["-TERM", &carol.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(carol.exit(WAIT).success(), "{:?}", carol.drain());
    bob.expect_line("the call on hold with ", WAIT);
    bob.type_keys("q");
    alice.expect_line("the other side hung up", WAIT);
    assert!(alice.exit(WAIT).success(), "{:?}", alice.drain());
    bob.expect_line("hung up", WAIT);
    let calls = wait_http(&r3, "/calls", |b| !b.contains("call_id"));
    assert!(
        !bob.drain().iter().any(|l| l.contains("still on hold")),
        "{calls}"
    );
    bob.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// Bob's phone listening on relay 2 and his laptop (the phone's identity,
/// a device of its own) on relay 3; alice on relay 1 calls him. Relay 1
/// knows both relays he is on (`presence_origins`) and rings each (a fork
/// per relay); the laptop answers, the phone hears it was answered on
/// another device, and alice talks with the laptop.
#[test]
fn bob_listening_on_relay_2_and_on_relay_3_rings_on_both_and_the_laptop_takes_the_call() {
    let dir = tmp("forks");
    let [r1, r2, r3] = chain(&dir);
    let speech = speech_like(16_000);
    write_wav(&dir.join("laptop-says.wav"), &speech);
    let (phone_dir, laptop_dir) = (dir.join("phone"), dir.join("laptop"));
    std::fs::create_dir_all(&phone_dir).unwrap();
    std::fs::create_dir_all(&laptop_dir).unwrap();
    let device = |d: &Path, relay: &Relay, says: &str| {
        let mut cmd = common::user_cmd(d, relay, "bob", &["listen"]);
        cmd.args(["--accept", "ask", "--no-realtime", "--input", says])
            .args(["--output", "null"]);
        let mut p = Proc::spawn_with_input("bob", &mut cmd);
        let line = p.expect_line("registered as ", WAIT);
        let fp = line.split_whitespace().nth(2).unwrap().to_string();
        (p, fp)
    };
    let (mut phone, bob_fp) = device(&phone_dir, &r2, "tone");
    std::fs::copy(phone_dir.join("bob.seed"), laptop_dir.join("bob.seed")).unwrap();
    let says = dir.join("laptop-says.wav");
    let (mut laptop, fp) = device(&laptop_dir, &r3, says.to_str().unwrap());
    assert_eq!(fp, bob_fp, "one person");
    // Relay 1 lists bob on both relays, and its route to him names both.
    wait_http(&r1, "/presence", |b| b.matches(&bob_fp).count() == 2);
    let route: serde_json::Value =
        serde_json::from_str(&http_get(&r1, &format!("/route/{bob_fp}"))).unwrap();
    let relays = route["relays"].as_array().expect("relays listed");
    assert_eq!(relays.len(), 2, "{route}");
    assert!(relays.iter().any(|r| r["label"] == "r2"), "{route}");

    let mut a = client(
        &dir,
        &r1,
        "alice",
        &["call", &bob_fp],
        &[
            "--duration",
            "4s",
            "--input",
            "tone:300",
            "--output",
            dir.join("a-heard.wav").to_str().unwrap(),
        ],
    );
    phone.expect_line("ringing: a answers, d declines", WAIT);
    laptop.expect_line("ringing: a answers, d declines", WAIT);
    a.expect_line("ringing", WAIT);
    let calls: serde_json::Value = serde_json::from_str(&http_get(&r1, "/calls")).unwrap();
    assert_eq!(
        calls[0]["forks"].as_array().map(Vec::len),
        Some(2),
        "{calls}"
    );
    common::laptop_takes_the_call(
        &mut laptop,
        &mut phone,
        &mut a,
        &dir.join("a-heard.wav"),
        &speech,
        WAIT,
    );
    let m1 = http_get(&r1, "/metrics");
    for line in [
        "wzp_federation_calls_total{event=\"fork_sent\"} 2\n",
        "wzp_federation_calls_total{event=\"fork_cancelled\"} 1\n",
    ] {
        assert!(m1.contains(line), "{line} in {m1}");
    }
    wait_http(&r1, "/calls", |b| !b.contains(&bob_fp));
    wait_http(&r2, "/calls", |b| !b.contains(&bob_fp));
    wait_http(&r3, "/calls", |b| !b.contains(&bob_fp));
    drop((phone, laptop));
    let _ = std::fs::remove_dir_all(dir);
}

/// Bob's phone on relay 2 is in a call with carol there and takes no
/// waiting call (it answers by itself); his laptop on relay 3 rings for
/// alice (relay 1) and takes it. Relay 2 answered its fork `busy` and kept
/// it open (`/calls` on relay 1 lists it in `busy_forks`), so the phone
/// hears of no missed call. With the laptop gone, dave's call is busy at
/// once and the phone is told of that one: the first missed call it says
/// is dave's.
#[test]
fn a_busy_phone_hears_of_no_missed_call_when_the_laptop_on_another_relay_takes_it() {
    let dir = tmp("busy-fork");
    let [r1, r2, r3] = chain(&dir);
    let (phone_dir, laptop_dir) = (dir.join("phone"), dir.join("laptop"));
    std::fs::create_dir_all(&phone_dir).unwrap();
    std::fs::create_dir_all(&laptop_dir).unwrap();
    let mut cmd = common::user_cmd(&phone_dir, &r2, "bob", &["listen"]);
    cmd.args(["--accept", "generic", "--no-realtime", "--input", "tone"])
        .args(["--output", "null"]);
    let mut phone = Proc::spawn("phone", &mut cmd);
    let line = phone.expect_line("registered as ", WAIT);
    let bob_fp = line.split_whitespace().nth(2).unwrap().to_string();
    std::fs::copy(phone_dir.join("bob.seed"), laptop_dir.join("bob.seed")).unwrap();
    let mut cmd = common::user_cmd(&laptop_dir, &r3, "bob", &["listen"]);
    cmd.args(["--accept", "ask", "--no-realtime", "--input", "tone:700"])
        .args(["--output", "null"]);
    let mut laptop = Proc::spawn_with_input("laptop", &mut cmd);
    laptop.expect_line("registered as ", WAIT);
    wait_http(&r1, "/presence", |b| b.matches(&bob_fp).count() == 2);

    // Carol, next to the phone, calls bob: the phone takes it.
    let mut carol = client(
        &dir,
        &r2,
        "carol",
        &["call", &bob_fp],
        &["--input", "tone:500", "--output", "null"],
    );
    carol.expect_line("SAS: ", WAIT);
    wait_http(&r3, "/calls", |b| !b.contains(&bob_fp));
    let rung = |p: &mut Proc| {
        p.drain()
            .iter()
            .filter(|l| l.contains("ringing: a answers"))
            .count()
    };
    let before = rung(&mut laptop);

    // Alice calls from relay 1: the phone's relay answers busy and keeps
    // its fork; the laptop rings and takes the call.
    let mut a = client(
        &dir,
        &r1,
        "alice",
        &["call", &bob_fp],
        &[
            "--duration",
            "3s",
            "--input",
            "tone:300",
            "--output",
            "null",
        ],
    );
    laptop.expect_nth("ringing: a answers", before + 1, WAIT);
    let calls = wait_http(&r1, "/calls", |b| b.contains("busy_forks"));
    assert!(calls.contains(r#""busy_forks":["r2"]"#), "{calls}");
    laptop.type_keys("a");
    let sas = |p: &mut Proc| {
        p.expect_line("SAS: ", WAIT)
            .trim()
            .trim_start_matches("SAS: ")
            .to_string()
    };
    assert_eq!(sas(&mut a), sas(&mut laptop), "alice talks with the laptop");
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    let m1 = http_get(&r1, "/metrics");
    assert!(
        m1.contains("wzp_federation_calls_total{event=\"fork_busy\"} 1\n"),
        "{m1}"
    );

    // The laptop goes; dave calls: busy at once, and the phone is told.
    laptop.kill();
    wait_http(&r1, "/presence", |b| b.matches(&bob_fp).count() == 1);
    let dave_fp = common::identity_of(&dir, "dave");
    let mut dave = client(
        &dir,
        &r1,
        "dave",
        &["call", &bob_fp],
        &["--input", "tone:400", "--output", "null"],
    );
    assert!(
        !dave.exit(WAIT).success(),
        "dave hears busy: {:?}",
        dave.drain()
    );
    let told = phone.expect_line("missed a call from ", WAIT);
    assert!(
        told.contains(&dave_fp),
        "the first missed call the phone says is dave's: {told}"
    );
    assert!(
        carol.child.try_wait().unwrap().is_none(),
        "carol's call goes on"
    );
    carol.kill();
    phone.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// Relays r1 and r2 linked (r1 dials r2), both bridging room `room`.
fn bridged_pair(dir: &Path, room: &str) -> (Relay, Relay) {
    let global = format!("[[global_rooms]]\nname = \"{room}\"\n");
    let fp1 = fingerprint_of(&dir.join("r1.seed"));
    let r2 = start_relay(
        dir,
        "r2",
        &format!("[[trusted]]\nfingerprint = \"{fp1}\"\nlabel = \"r1\"\n{global}"),
    );
    let r1 = start_relay(
        dir,
        "r1",
        &format!(
            "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"r2\"\n{global}",
            r2.addr, r2.fingerprint
        ),
    );
    wait_link_up(&r1, "r2");
    (r1, r2)
}

/// `wzp-client join` of `user` to `room` through `relays` in order (each
/// pinned), sending a tone of `freq` Hz to nobody in particular.
fn member_of(dir: &Path, user: &str, room: &str, relays: &[&Relay], freq: u32, out: &str) -> Proc {
    let list = |f: fn(&Relay) -> String| relays.iter().map(|r| f(r)).collect::<Vec<_>>().join(",");
    let mut cmd = as_user(dir, user, &["join", "--room", room]);
    cmd.args(["--relay", &list(|r| r.addr.to_string())])
        .args(["--relay-fingerprint", &list(|r| r.fingerprint.clone())])
        .args(["--input", &format!("tone:{freq}"), "--output", out])
        .args(["--duration", "60s", "--quiet", "--no-realtime"]);
    Proc::spawn(user, &mut cmd)
}

#[test]
fn a_room_member_whose_relay_dies_goes_on_through_the_next_relay_it_was_given() {
    let dir = tmp("failover");
    let room = "failover";
    let (mut r1, r2) = bridged_pair(&dir, room);
    let heard = dir.join("bob-heard.wav");
    // Alice may use either relay, r1 first; bob is on r2 only.
    let mut alice = member_of(&dir, "alice", room, &[&r1, &r2], 660, "null");
    let mut bob = member_of(&dir, "bob", room, &[&r2], 440, heard.to_str().unwrap());
    // (An open room's line names its room id before the relay.)
    let joined_via = |r: &Relay| format!(") via {} (", r.addr);
    assert!(alice
        .expect_line(&joined_via(&r1), WAIT)
        .contains("joined room failover"));
    bob.expect_line(&joined_via(&r2), WAIT);
    let samples = || read_wav_mono(&heard).map_or(0, |w| w.samples.len());
    // Alice's tone in bob's recording, in a second written after `from`
    // samples.
    let alice_heard_after = |from: usize| {
        wait_for("alice's tone at bob", || {
            let level = last_second(&heard, 660.0);
            (samples() >= from + 32_000 && level > -40.0).then_some(level)
        })
    };
    assert!(alice_heard_after(0).is_some(), "bob hears alice through r1");

    // r1 dies: alice's connection goes silent, she moves to r2 and bob
    // hears her again, now on his own relay.
    r1.proc.kill();
    let gone = Instant::now();
    // Left when it went silent, before QUIC's idle timeout would say so.
    let moving = alice.expect_line(&format!("moving to {}", r2.addr), WAIT);
    assert!(
        moving.contains(&format!("relay {} silent for ", r1.addr)),
        "{moving}"
    );
    let rejoined = alice.expect_line(&format!("rejoined room {room} after"), WAIT);
    assert!(
        rejoined.ends_with(&format!("via {}", r2.addr)),
        "{rejoined}"
    );
    // Both members' media now enters r2 from its own clients.
    wait_http(&r2, "/sessions", |body| {
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        v.as_array().is_some_and(|s| {
            s.len() == 2 && s.iter().all(|m| m["packets_in"].as_u64().unwrap_or(0) > 50)
        })
    });
    assert!(
        alice_heard_after(samples()).is_some(),
        "bob hears alice through r2"
    );
    println!(
        "failover: alice heard again {} ms after r1 was killed",
        gone.elapsed().as_millis()
    );

    // A member joining now is taken by r2, the first of its list that
    // answers.
    let mut carol = member_of(&dir, "carol", room, &[&r1, &r2], 880, "null");
    let passed = carol.expect_line(&format!("; trying {}", r2.addr), WAIT);
    assert!(
        passed.contains(&format!("cannot reach the relay at {}", r1.addr)),
        "{passed}"
    );
    carol.expect_line(&joined_via(&r2), WAIT);

    // A relay listed that does not bridge the room is another room there:
    // the member is told.
    let r3 = start_relay(&dir, "r3", "");
    let mut dave = member_of(&dir, "dave", room, &[&r3, &r2], 330, "null");
    let warned = dave.expect_line("does not bridge room", WAIT);
    assert!(warned.contains(&format!("relay {}", r3.addr)), "{warned}");
    dave.expect_line(&joined_via(&r3), WAIT);
    for p in [&mut alice, &mut bob, &mut carol, &mut dave] {
        p.kill();
    }
    assert!(
        !carol.drain().iter().any(|l| l.contains("does not bridge")),
        "r2 bridges the room"
    );
}

#[test]
fn a_listener_whose_relay_dies_registers_at_the_next_it_was_given_and_is_called_there() {
    let dir = tmp("listen-failover");
    voices(&dir);
    let (mut r1, r2) = bridged_pair(&dir, "unused");
    let both = |f: fn(&Relay) -> String| format!("{},{}", f(&r1), f(&r2));
    let mut cmd = as_user(&dir, "bob", &["listen", "--accept", "generic", "--once"]);
    cmd.args(["--relay", &both(|r| r.addr.to_string())])
        .args(["--relay-fingerprint", &both(|r| r.fingerprint.clone())])
        .args(["--input", "tone:440", "--output", "null"])
        .args(["--duration", "3s", "--no-realtime", "--history"])
        .arg(dir.join("bob.history.jsonl"));
    let mut bob = Proc::spawn("bob", &mut cmd);
    let line = bob.expect_line("registered as ", WAIT);
    assert!(line.contains(&format!(" at {} (", r1.addr)), "{line}");
    let fp = line.split_whitespace().nth(2).unwrap().to_string();

    // r1 dies: bob registers at r2, where alice's call finds him.
    r1.proc.kill();
    bob.expect_line(
        &format!("lost the relay at {}; registering at {}", r1.addr, r2.addr),
        WAIT,
    );
    bob.expect_line(&format!("registered again as {fp} at {} (", r2.addr), WAIT);
    let mut alice = alice_calls(&dir, &r2, &fp, "3s");
    assert_eq!(
        sas(&mut alice),
        sas(&mut bob),
        "both ends agree on the keys"
    );
    assert!(alice.exit(WAIT).success());
    assert!(bob.exit(WAIT).success());
}
