//! Calling a person: `wzp-client listen` and `wzp-client call` as real
//! processes through a real `wzp-relay` on loopback: registration, offer,
//! ringing, answer, end-to-end call keys (both ends print the same SAS),
//! media both ways checked at the far end, refusals with their exit
//! statuses, hangups from either side, a third party kept out of the call
//! room, re-registration after a relay restart, reflect and version-check.
//!
//! Every wait is for a line a process prints, with a deadline.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    bin, identity_of, is_root, segmental_correlation, write_wav_16k as write_wav, Proc, Relay,
};

use wzp_stages::audio::signal::speech_like;
use wzp_stages::audio::wav_source::read_wav_mono;

const WAIT: Duration = Duration::from_secs(20);

/// Real-time processes: one scenario at a time keeps a 2-core machine from
/// starving them.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh directory for test `name`.
fn tmp(name: &str) -> PathBuf {
    common::tmp("wzp-direct", name)
}

fn start_relay(dir: &Path, listen: &str) -> Relay {
    start_relay_with(dir, listen, &[])
}

fn start_relay_with(dir: &Path, listen: &str, extra: &[&str]) -> Relay {
    start_relay_in(None, dir, listen, extra)
}

/// `cmd` run in network namespace `ns` (`None`: here).
fn in_ns(ns: Option<&str>, cmd: PathBuf) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(cmd);
            c
        }
        None => Command::new(cmd),
    }
}

fn start_relay_in(ns: Option<&str>, dir: &Path, listen: &str, extra: &[&str]) -> Relay {
    let mut cmd = in_ns(ns, bin("wzp-relay"));
    if !extra.contains(&"-i") {
        cmd.args(["-i", dir.join("relay.seed").to_str().unwrap()]);
    }
    Relay::spawn(
        "wzp-relay",
        cmd.args(["--listen", listen]).args(extra),
        WAIT,
    )
}

/// `GET path` on the relay's HTTP address: the body.
fn http_get(relay: &Relay, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = relay.metrics.expect("relay started with --metrics-addr");
    let mut s = std::net::TcpStream::connect_timeout(&addr, WAIT).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// `wzp-client SUB ...` with the relay pinned and a per-user identity.
fn client(dir: &Path, relay: &Relay, user: &str, sub: &[&str], extra: &[&str]) -> Proc {
    client_in(None, relay.addr, dir, relay, user, sub, extra)
}

/// [`client`] in network namespace `ns`, reaching the relay at `addr`.
fn client_in(
    ns: Option<&str>,
    addr: SocketAddr,
    dir: &Path,
    relay: &Relay,
    user: &str,
    sub: &[&str],
    extra: &[&str],
) -> Proc {
    Proc::spawn(
        user,
        &mut client_cmd(ns, addr, dir, relay, user, sub, extra),
    )
}

/// The command [`client_in`] runs.
fn client_cmd(
    ns: Option<&str>,
    addr: SocketAddr,
    dir: &Path,
    relay: &Relay,
    user: &str,
    sub: &[&str],
    extra: &[&str],
) -> Command {
    let mut cmd = in_ns(ns, bin("wzp-client"));
    cmd.args(sub)
        .args(["--relay", &addr.to_string()])
        .args(["--relay-fingerprint", &relay.fingerprint])
        .args([
            "--identity",
            dir.join(format!("{user}.seed")).to_str().unwrap(),
        ])
        .args([
            "--known-relays",
            dir.join(format!("{user}.known")).to_str().unwrap(),
        ])
        .args(extra);
    if matches!(sub.first(), Some(&"call") | Some(&"listen")) {
        cmd.arg("--no-realtime");
        // Each user's own contacts and history, never the machine's.
        cmd.args([
            "--contacts",
            dir.join(format!("{user}.contacts.toml")).to_str().unwrap(),
        ]);
        cmd.args([
            "--history",
            dir.join(format!("{user}.history.jsonl")).to_str().unwrap(),
        ]);
    }
    cmd
}

/// Starts `listen` for `user` and waits for its registration; returns the
/// process and the fingerprint it registered.
fn listen(dir: &Path, relay: &Relay, user: &str, extra: &[&str]) -> (Proc, String) {
    let mut p = client(dir, relay, user, &["listen"], extra);
    let line = p.expect_line("registered as ", WAIT);
    let fp = line
        .split_whitespace()
        .nth(2)
        .expect("registered as FP ...")
        .to_string();
    (p, fp)
}

/// Bob listens with `--accept trusted --once` (a tone in, what he hears to
/// `heard`), and Alice calls him saying `a-says.wav`, both for `duration`:
/// Alice and Bob.
fn alice_calls_trusting_bob(
    dir: &Path,
    relay: &Relay,
    duration: &str,
    heard: &Path,
) -> (Proc, Proc) {
    let (b, b_fp) = listen(
        dir,
        relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--duration",
            duration,
            "--input",
            "tone",
            "--output",
            heard.to_str().unwrap(),
        ],
    );
    let a = client(
        dir,
        relay,
        "alice",
        &["call", &b_fp],
        &[
            "--duration",
            duration,
            "--input",
            dir.join("a-says.wav").to_str().unwrap(),
            "--output",
            "null",
        ],
    );
    (a, b)
}

fn sas(p: &mut Proc) -> String {
    p.expect_line("SAS: ", WAIT)
        .trim()
        .trim_start_matches("SAS: ")
        .to_string()
}

#[test]
fn a_calls_b_by_fingerprint_and_each_hears_the_other_with_the_same_sas() {
    let _s = serial();
    let dir = tmp("call");
    let relay = start_relay(&dir, "127.0.0.1:0");
    // Two different voices: the speech sample, and the same sample
    // reversed, so each recording can only match its own sender.
    let speech = speech_like(16_000);
    let reversed: Vec<f32> = speech.iter().rev().copied().collect();
    write_wav(&dir.join("a-says.wav"), &speech);
    write_wav(&dir.join("b-says.wav"), &reversed);
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--duration",
            "5s",
            "--input",
            dir.join("b-says.wav").to_str().unwrap(),
            "--output",
            dir.join("b-heard.wav").to_str().unwrap(),
        ],
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--alias",
            "alice",
            "--duration",
            "5s",
            "--input",
            dir.join("a-says.wav").to_str().unwrap(),
            "--output",
            dir.join("a-heard.wav").to_str().unwrap(),
        ],
    );
    a.expect_line("ringing", WAIT);
    let offer = b.expect_line("incoming call from ", WAIT);
    assert!(offer.contains("(alice)"), "{offer}");
    a.expect_line("answered by", WAIT);
    let (sas_a, sas_b) = (sas(&mut a), sas(&mut b));
    assert_eq!(sas_a, sas_b, "both ends show the same SAS");
    assert_eq!(sas_a.len(), 4);
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());

    let heard_by_b = read_wav_mono(&dir.join("b-heard.wav")).unwrap().samples;
    let heard_by_a = read_wav_mono(&dir.join("a-heard.wav")).unwrap().samples;
    // Opus over a clean loopback keeps speech above 0.7 (see call_e2e.rs);
    // the other voice or silence stays well below.
    let r_b = segmental_correlation(&heard_by_b, &speech);
    let r_a = segmental_correlation(&heard_by_a, &reversed);
    assert!(
        r_b > 0.7,
        "bob's recording correlates {r_b} with alice's voice"
    );
    assert!(
        r_a > 0.7,
        "alice's recording correlates {r_a} with bob's voice"
    );
    let cross = segmental_correlation(&heard_by_b, &reversed);
    assert!(
        cross < r_b,
        "bob hears alice ({r_b}), not himself ({cross})"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `wzp-client contacts --contacts <user's file> ARGS`, which must succeed.
fn contacts(dir: &Path, user: &str, args: &[&str]) -> String {
    let out = Command::new(bin("wzp-client"))
        .arg("contacts")
        .args([
            "--contacts",
            dir.join(format!("{user}.contacts.toml")).to_str().unwrap(),
        ])
        .args(args)
        .output()
        .expect("wzp-client contacts runs");
    assert!(out.status.success(), "contacts {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Bob listens with the default `--accept contacts`: Alice, his contact,
/// calling him by name from her own contacts, gets his address for a
/// direct path; Carol, a stranger calling herself "alice", is answered
/// through the relay only (warned about) and never learns his address;
/// with `--accept contacts-only` she is declined.
#[test]
fn only_contacts_learn_a_listeners_address_and_a_borrowed_name_is_called_out() {
    let _s = serial();
    let dir = tmp("contacts");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let a_fp = identity_of(&dir, "alice");
    let b_fp = identity_of(&dir, "bob");
    contacts(&dir, "bob", &["add", "alice", &a_fp]);
    contacts(&dir, "alice", &["add", "Bob", &b_fp, "--verified"]);
    let listed = contacts(&dir, "bob", &["list"]);
    assert!(
        listed.contains(&format!("alice  {a_fp}  not verified")),
        "{listed}"
    );
    let media = ["--duration", "2s", "--input", "tone", "--output", "null"];

    // Alice calls "bob" by name: a contact, so his address goes to her
    // (a longer call: the direct path comes up within it on a loaded machine).
    let listen_args = [&["--once"][..], &media[..]].concat();
    let long = ["--duration", "6s", "--input", "tone", "--output", "null"];
    let (mut b, _) = listen(&dir, &relay, "bob", &[&["--once"][..], &long[..]].concat());
    let mut a = client(&dir, &relay, "alice", &["call", "bob"], &long);
    a.expect_line(&format!("calling Bob ({b_fp})"), WAIT);
    b.expect_line("the caller is your contact alice (not verified)", WAIT);
    b.expect_line("your address went to the caller, for a direct path", WAIT);
    let hint = b.expect_line("is a contact, not verified yet", WAIT);
    assert!(hint.contains("wzp-client contacts verify alice"), "{hint}");
    a.expect_line("Bob is a verified contact", WAIT);
    a.expect_line("direct path to ", WAIT);
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());

    // Carol, a stranger, calls herself "аlice" (its first letter
    // Cyrillic): warned about with the look-alike shown as one, answered
    // through the relay only, and no direct path is even tried.
    let (mut b, _) = listen(&dir, &relay, "bob", &listen_args);
    let carol_args = [&["--alias", "\u{430}lice"][..], &media[..]].concat();
    let mut c = client(&dir, &relay, "carol", &["call", &b_fp], &carol_args);
    let warned = b.expect_line("warning: the caller calls itself", WAIT);
    assert!(
        warned.contains("\"\\u{430}lice\", a name that looks like your contact alice")
            && warned.contains(&a_fp),
        "{warned}"
    );
    b.expect_line("the caller is not one of your contacts", WAIT);
    b.expect_line(
        "answered through the relay only: your address stays private",
        WAIT,
    );
    c.expect_line("SAS: ", WAIT);
    let hint = c.expect_line("is not one of your contacts", WAIT);
    assert!(
        hint.contains(&format!("contacts add NAME {b_fp} --verified")),
        "{hint}"
    );
    assert!(c.exit(WAIT).success(), "{:?}", c.drain());
    assert!(b.exit(WAIT).success());
    let said: Vec<String> = c.drain().into_iter().chain(b.drain()).collect();
    assert!(
        !said.iter().any(|l| l.contains("direct path to ")),
        "a stranger got a direct path: {said:?}"
    );

    // Contacts only: Carol is declined, Alice still gets through.
    let only = [&["--accept", "contacts-only"][..], &listen_args[..]].concat();
    let (mut b, _) = listen(&dir, &relay, "bob", &only);
    let mut c = client(&dir, &relay, "carol", &["call", &b_fp], &media);
    c.expect_line("rejected", WAIT);
    assert_eq!(c.exit(WAIT).code(), Some(3), "{:?}", c.drain());
    b.expect_line("rejected", WAIT);
    assert!(b.exit(WAIT).success());
    let (mut b, _) = listen(&dir, &relay, "bob", &only);
    let mut a = client(&dir, &relay, "alice", &["call", "bob"], &media);
    a.expect_line("SAS: ", WAIT);
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());

    // Someone nobody named: a clear error, no call.
    let mut x = client(&dir, &relay, "alice", &["call", "dave"], &media);
    assert_eq!(x.exit(WAIT).code(), Some(1));
    let err = x.drain().join("\n");
    assert!(
        err.contains("neither a fingerprint") && err.contains("contacts list"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rejected_not_online_and_busy_have_their_own_exit_status() {
    let _s = serial();
    let dir = tmp("refusals");
    let relay = start_relay(&dir, "127.0.0.1:0");

    // Rejected.
    let (mut b, b_fp) = listen(&dir, &relay, "bob", &["--accept", "reject", "--once"]);
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &["--input", "tone", "--output", "null"],
    );
    a.expect_line("rejected", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(3), "{:?}", a.drain());
    b.expect_line("rejected", WAIT);
    assert!(b.exit(WAIT).success());

    // Not online: bob's listener is gone; the answer comes at once.
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &["--input", "tone", "--output", "null"],
    );
    a.expect_line("calling", WAIT);
    let started = Instant::now();
    a.expect_line("not online", Duration::from_secs(2));
    println!("not online after {:?}", started.elapsed());
    assert_eq!(a.exit(WAIT).code(), Some(4), "{:?}", a.drain());

    // Busy: carol is talking to bob when alice calls.
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "generic",
            "--once",
            "--input",
            "tone",
            "--output",
            "null",
            "--duration",
            "20s",
        ],
    );
    let mut c = client(
        &dir,
        &relay,
        "carol",
        &["call", &b_fp],
        &[
            "--input",
            "tone:300",
            "--output",
            "null",
            "--duration",
            "20s",
        ],
    );
    c.expect_line("SAS: ", WAIT);
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &["--input", "tone", "--output", "null"],
    );
    a.expect_line("busy", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(5), "{:?}", a.drain());
    // Bob, in his call with carol, is told alice called, and his history
    // has it as missed.
    let a_fp = identity_of(&dir, "alice");
    let told = b.expect_line("missed a call from ", WAIT);
    assert!(
        told.contains(&a_fp) && told.contains("while in this call (they heard busy)"),
        "{told}"
    );
    let said = history_lines(&dir, "bob", &["--missed"]);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains(&a_fp) && said[0].ends_with("MISSED"),
        "{said:?}"
    );
    // A caller bob blocked is not told about: eve (blocked) calls, then
    // frank; the relay tells bob in order, so frank's notice comes with
    // none of eve's before it.
    let eve = identity_of(&dir, "eve");
    contacts(&dir, "bob", &["block", &eve]);
    let frank = identity_of(&dir, "frank");
    for user in ["eve", "frank"] {
        let mut x = client(
            &dir,
            &relay,
            user,
            &["call", &b_fp],
            &["--input", "tone", "--output", "null"],
        );
        assert_eq!(x.exit(WAIT).code(), Some(5), "{:?}", x.drain());
    }
    let told = b.expect_line(&format!("missed a call from {frank}"), WAIT);
    assert!(!told.contains(&eve));
    assert!(
        !b.drain().iter().any(|l| l.contains(&eve)),
        "a blocked caller was said"
    );
    assert_eq!(history_lines(&dir, "bob", &["--missed"]).len(), 2);
    c.kill();
    b.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// `listen --accept ask` rings and waits for the person: `d` declines
/// (the caller is told it was rejected), `a` answers (through the relay,
/// the caller being no contact), `q` hangs the answered call up, a caller
/// who gives up while it rings stops the ringing, and a blocked caller is
/// declined without ringing.
#[test]
fn a_ringing_listener_is_answered_declined_and_hung_up_by_keys() {
    let _s = serial();
    let dir = tmp("ask");
    let relay = start_relay(&dir, "127.0.0.1:0");
    // Each call that comes in (the blocked one excepted) runs bob's
    // --on-call with the caller in its environment; alice's alias is shell
    // text that must stay text.
    let told = dir.join("on-call.txt");
    let pwned = dir.join("pwned");
    let on_call = format!(
        "printf '%s|%s|%s|%s\\n' \"$WZP_CALLER\" \"$WZP_CALLER_NAME\" \"$WZP_CALLER_ALIAS\" \"$WZP_RINGS\" >> {}",
        told.display()
    );
    let mut cmd = client_cmd(
        None,
        relay.addr,
        &dir,
        &relay,
        "bob",
        &["listen"],
        &[
            "--accept",
            "ask",
            "--input",
            "tone",
            "--output",
            "null",
            "--on-call",
            &on_call,
        ],
    );
    let mut b = Proc::spawn_with_input("bob", &mut cmd);
    let line = b.expect_line("registered as ", WAIT);
    let b_fp = line.split_whitespace().nth(2).unwrap().to_string();
    let alias = format!("$(touch {})", pwned.display());
    let call_bob = || {
        client(
            &dir,
            &relay,
            "alice",
            &["call", &b_fp],
            &["--input", "tone:300", "--output", "null", "--alias", &alias],
        )
    };

    // Declined.
    let mut a = call_bob();
    b.expect_nth("ringing: a answers, d declines", 1, WAIT);
    b.type_keys("d");
    a.expect_line("rejected", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(3), "{:?}", a.drain());
    b.expect_line("rejected", WAIT);

    // Answered, then hung up by the listener.
    let mut a = call_bob();
    b.expect_nth("ringing: ", 2, WAIT);
    b.type_keys("a");
    let sas_a = sas(&mut a);
    assert_eq!(sas(&mut b), sas_a);
    assert!(b
        .drain()
        .iter()
        .any(|l| l == "answered through the relay only: your address stays private"));
    b.type_keys("q");
    a.expect_line("the other side hung up", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(0), "{:?}", a.drain());

    // The caller gives up while it rings: the ringing stops, and bob
    // waits for the next call.
    let mut a = call_bob();
    b.expect_nth("ringing: ", 3, WAIT);
    let status = Command::new("kill")
        .args(["-INT", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    a.expect_line("hung up before ", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(7), "{:?}", a.drain());
    let why = b.expect_line("the call ended before you answered", WAIT);
    assert!(why.contains("the caller hung up"), "{why}");
    assert!(b.child.try_wait().unwrap().is_none(), "bob still listens");

    // Bob blocks alice: her next call is declined without ringing (the
    // file is read at each call, so the running listener knows).
    let a_fp = identity_of(&dir, "alice");
    contacts(&dir, "bob", &["block", &a_fp, "--note", "too many calls"]);
    let mut a = call_bob();
    a.expect_line("rejected", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(3), "{:?}", a.drain());
    b.expect_line(
        &format!("declined: {a_fp} is blocked (too many calls)"),
        WAIT,
    );
    b.expect_nth("ringing: ", 3, WAIT);
    assert_eq!(
        b.drain()
            .iter()
            .filter(|l| l.starts_with("ringing"))
            .count(),
        3,
        "a blocked caller does not ring"
    );
    b.kill();

    // --on-call ran for the three calls that rang, the alias as text.
    let lines = || {
        std::fs::read_to_string(&told)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    wait_until("--on-call ran three times", || lines().len() >= 3);
    assert_eq!(lines(), vec![format!("{a_fp}||{alias}|1"); 3]);
    assert!(!pwned.exists(), "the caller's alias was run as a command");

    // Both histories, as `wzp-client history` shows them: bob's (missed
    // first, then every call) and alice's.
    let history = |user: &str, extra: &[&str]| history_lines(&dir, user, extra);
    let said = history("bob", &["--missed"]);
    let from = format!("in   {a_fp} (says \"{alias}\")");
    assert_eq!(said, [format!("{from}  MISSED")], "{said:?}");
    let said = history("bob", &[]);
    let outcomes: Vec<&str> = said
        .iter()
        .map(|l| {
            assert!(l.starts_with(&format!("{from}  ")), "{l}");
            // `in   FP  OUTCOME[  DURATION]`
            l.split("  ").nth(2).unwrap_or(l)
        })
        .collect();
    assert_eq!(
        outcomes,
        ["declined", "answered", "MISSED", "blocked"],
        "{said:?}"
    );
    let said = history("alice", &[]);
    assert_eq!(said.len(), 4, "{said:?}");
    assert!(
        said[0].ends_with(&format!("out  {b_fp}  rejected")),
        "{said:?}"
    );
    assert!(
        said[1].starts_with(&format!("out  {b_fp}  answered  ")),
        "{said:?}"
    );
    assert!(
        said[2].ends_with(&format!("out  {b_fp}  cancelled")),
        "{said:?}"
    );
    assert!(
        said[3].ends_with(&format!("out  {b_fp}  rejected")),
        "{said:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `wzp-client history` of `user` in `dir` (with `extra` arguments), each
/// line from its direction on.
fn history_lines(dir: &Path, user: &str, extra: &[&str]) -> Vec<String> {
    let out = Command::new(bin("wzp-client"))
        .arg("history")
        .arg("--history")
        .arg(dir.join(format!("{user}.history.jsonl")))
        .arg("--contacts")
        .arg(dir.join(format!("{user}.contacts.toml")))
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split("UTC  ").nth(1).unwrap_or(l).to_string())
        .collect()
}

#[test]
fn each_device_of_the_callee_rings_and_the_one_that_answers_takes_the_call() {
    let _s = serial();
    let dir = tmp("devices");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    // Bob's phone and laptop: one identity (restored on the laptop from
    // the phone's), two devices (each made its own device id).
    let (phone_dir, laptop_dir) = (dir.join("phone"), dir.join("laptop"));
    std::fs::create_dir_all(&phone_dir).unwrap();
    std::fs::create_dir_all(&laptop_dir).unwrap();
    let b_fp = identity_of(&phone_dir, "bob");
    std::fs::copy(phone_dir.join("bob.seed"), laptop_dir.join("bob.seed")).unwrap();
    let speech = speech_like(16_000);
    write_wav(&dir.join("laptop-says.wav"), &speech);
    let device = |d: &Path, says: &str| {
        let mut cmd = client_cmd(
            None,
            relay.addr,
            d,
            &relay,
            "bob",
            &["listen"],
            &["--accept", "ask", "--input", says, "--output", "null"],
        );
        let mut p = Proc::spawn_with_input("bob", &mut cmd);
        let line = p.expect_line("registered as ", WAIT);
        assert!(line.contains(&b_fp), "{line}");
        p
    };
    let mut phone = device(&phone_dir, "tone");
    let mut laptop = device(&laptop_dir, dir.join("laptop-says.wav").to_str().unwrap());
    laptop.expect_line("2 of your devices listen at this relay", WAIT);
    assert!(
        phone.child.try_wait().unwrap().is_none(),
        "the phone still listens"
    );

    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
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
    // The relay's view of the call: both of bob's devices ring.
    let calls: serde_json::Value = serde_json::from_str(&http_get(&relay, "/calls")).unwrap();
    assert_eq!(calls[0]["state"], "ringing", "{calls}");
    assert_eq!(calls[0]["ringing_devices"], 2, "{calls}");
    common::laptop_takes_the_call(
        &mut laptop,
        &mut phone,
        &mut a,
        &dir.join("a-heard.wav"),
        &speech,
        WAIT,
    );
    let said = history_lines(&phone_dir, "bob", &[]);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].ends_with("  answered elsewhere"), "{said:?}");
    let said = history_lines(&laptop_dir, "bob", &[]);
    assert!(said[0].contains("  answered  "), "{said:?}");

    // The relay lists both devices of bob.
    let presence: serde_json::Value =
        serde_json::from_str(&http_get(&relay, &format!("/presence/{b_fp}"))).unwrap();
    assert_eq!(
        presence["devices"].as_array().map(Vec::len),
        Some(2),
        "{presence}"
    );

    // A second `listen` as the phone's very device (its identity files
    // copied): it takes the phone's registration, and the phone stops
    // with why, instead of taking it back (which the other would then do).
    let twin_dir = dir.join("twin");
    std::fs::create_dir_all(&twin_dir).unwrap();
    for f in ["bob.seed", "bob.seed.device"] {
        std::fs::copy(phone_dir.join(f), twin_dir.join(f)).unwrap();
    }
    let mut twin = device(&twin_dir, "tone");
    phone.expect_line("stopped listening", WAIT);
    let status = phone.exit(WAIT);
    assert!(!status.success(), "{status:?}");
    assert!(
        phone
            .drain()
            .iter()
            .any(|l| l.contains("Another `listen` runs as this device")),
        "{:?}",
        phone.drain()
    );
    assert!(twin.child.try_wait().unwrap().is_none(), "the twin listens");
    assert!(
        laptop.child.try_wait().unwrap().is_none(),
        "the laptop listens"
    );
    // Bob alone is registered now (alice's call has ended), on two devices.
    let metrics = http_get(&relay, "/metrics");
    for want in [
        "wzp_signal_devices 2",
        "wzp_signal_registered 1",
        "wzp_signal_answered_elsewhere_total 1",
        "wzp_signal_replaced_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == want), "{want} in\n{metrics}");
    }
    twin.kill();
    laptop.kill();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_recorded_call_holds_both_sides_and_the_other_side_is_told() {
    let _s = serial();
    let dir = tmp("record");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "generic",
            "--once",
            "--duration",
            "4s",
            "--input",
            "tone:1000",
            "--output",
            "null",
        ],
    );
    // A file already there is never replaced: the recording takes the
    // next free name.
    let rec = dir.join("call.wav");
    std::fs::write(&rec, b"an earlier recording").unwrap();
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--duration",
            "4s",
            "--input",
            "tone:300",
            "--output",
            "null",
            "--record",
            rec.to_str().unwrap(),
        ],
    );
    let line = a.expect_line("recording the call to ", WAIT);
    let taken = dir.join("call-2.wav");
    assert!(line.contains(taken.to_str().unwrap()), "{line}");
    b.expect_line("is recording this call", WAIT);
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    assert_eq!(std::fs::read(&rec).unwrap(), b"an earlier recording");
    // Alice's 300 Hz (what she sent) and bob's 1000 Hz (what she heard),
    // both well above anything else.
    let wav = read_wav_mono(&taken).unwrap();
    assert_eq!(wav.rate, 48_000);
    let mid = &wav.samples[(wav.rate as usize * 3 / 2)..(wav.rate as usize * 7 / 2)];
    let level = |f: f64| wzp_stages::audio::signal::goertzel_dbfs(mid, wav.rate, f);
    let (sent, heard, neither) = (level(300.0), level(1000.0), level(2300.0));
    assert!(
        sent > -30.0 && heard > -30.0,
        "sent {sent} dBFS, heard {heard} dBFS"
    );
    assert!(
        neither < sent.min(heard) - 20.0,
        "sent {sent}, heard {heard}, elsewhere {neither} dBFS"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The `rings=N` of a client's "ring tone stopped" log line.
fn rings_played(p: &mut Proc) -> u64 {
    let line = p.expect_line("ring tone stopped", WAIT);
    line.split("rings=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rings=N in {line:?}"))
}

#[test]
fn the_speakers_ring_while_a_call_rings_and_stop_when_it_is_answered() {
    let _s = serial();
    let dir = tmp("ring-tone");
    let relay = start_relay(&dir, "127.0.0.1:0");
    // ALSA's null device stands in for the speakers (no sound card here).
    let mut cmd = client_cmd(
        None,
        relay.addr,
        &dir,
        &relay,
        "bob",
        &["listen"],
        // Bob's call goes nowhere, his ring to the "speakers" (--ring-on).
        &[
            "--accept",
            "ask",
            "--once",
            "--input",
            "tone",
            "--output",
            "null",
            "--ring-on",
            "speaker:null",
            "--log",
            "info",
        ],
    );
    let mut b = Proc::spawn_with_input("bob", &mut cmd);
    let line = b.expect_line("registered as ", WAIT);
    let b_fp = line.split_whitespace().nth(2).unwrap().to_string();
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "tone:300",
            "--output",
            "speaker:null",
            "--duration",
            "3s",
            "--log",
            "info",
        ],
    );
    b.expect_line("ringing: a answers, d declines", WAIT);
    a.expect_line("ringing", WAIT);
    b.type_keys("a");
    // Each speaker rang (the cadence starts with a ring) and stopped at
    // the answer, before the call's own graph took the device.
    assert!(rings_played(&mut b) >= 1);
    assert!(rings_played(&mut a) >= 1);
    assert_eq!(sas(&mut a), sas(&mut b));
    assert_eq!(a.exit(WAIT).code(), Some(0), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_caller_is_told_when_the_callee_mutes_and_unmutes() {
    let _s = serial();
    let dir = tmp("peer-mute");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--muted",
            "--duration",
            "20s",
            "--input",
            "tone",
            "--output",
            "null",
        ],
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &["--duration", "20s", "--input", "tone", "--output", "null"],
    );
    a.expect_line("answered by", WAIT);
    // Bob took the call muted: alice is told, naming him as her call does.
    let said = a.expect_line("muted their microphone", WAIT);
    assert_eq!(said, format!("{b_fp} muted their microphone"));
    b.expect_line("microphone muted", WAIT);
    let unmute = Command::new("kill")
        .args(["-USR2", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(unmute.success());
    a.expect_line("turned their microphone back on", WAIT);
    // A direct call prints no room lines.
    a.kill();
    b.kill();
    let all = a.drain();
    assert!(!all.iter().any(|l| l.starts_with("room call-")), "{all:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_hangup_or_a_dead_peer_ends_the_call_for_the_other_side() {
    let _s = serial();
    let dir = tmp("hangup");
    let relay = start_relay(&dir, "127.0.0.1:0");

    // The caller hangs up (its --duration ends): the callee's call ends
    // within a second of the caller's hangup.
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--input",
            "tone",
            "--output",
            "null",
            "--duration",
            "60s",
        ],
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "tone:300",
            "--output",
            "null",
            "--duration",
            "2s",
        ],
    );
    a.expect_line("hung up", WAIT);
    let hung_up = Instant::now();
    b.expect_line("the other side hung up", Duration::from_secs(1));
    println!(
        "callee's call ended {:?} after the hangup",
        hung_up.elapsed()
    );
    assert!(a.exit(WAIT).success());
    assert!(b.exit(WAIT).success());

    // The callee dies: the caller's call ends within 5 s.
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--input",
            "tone",
            "--output",
            "null",
            "--duration",
            "60s",
        ],
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "tone:300",
            "--output",
            "null",
            "--duration",
            "60s",
        ],
    );
    a.expect_line("SAS: ", WAIT);
    b.expect_line("SAS: ", WAIT);
    b.kill();
    let killed = Instant::now();
    a.expect_line("hung up", Duration::from_secs(5));
    println!(
        "caller's call ended {:?} after the callee died",
        killed.elapsed()
    );
    a.exit(WAIT);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_third_fingerprint_is_refused_from_the_call_room() {
    use wzp_proto::close::CloseCode;
    use wzp_proto::room_client::{JoinEvent, JoinExchange};
    use wzp_stages::net::quic;
    use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader};

    let _s = serial();
    let dir = tmp("third");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--input",
            "tone",
            "--output",
            "null",
            "--duration",
            "30s",
        ],
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "tone:300",
            "--output",
            "null",
            "--duration",
            "30s",
        ],
    );
    let answered = a.expect_line("answered by", WAIT);
    let room = answered
        .split("(room ")
        .nth(1)
        .and_then(|r| r.strip_suffix(')'))
        .expect("answered by FP (room call-...)")
        .to_string();
    b.expect_line("SAS: ", WAIT);

    // Mallory knows the room's name and tries to join it.
    let mallory = wzp_proto::Seed::from_bytes([77; 32]).identity();
    let relay_fp: wzp_proto::TlsFingerprint = relay.fingerprint.parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let refused = rt.block_on(async {
        let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        ep.set_default_client_config(quic::client_config(relay_fp).unwrap());
        let conn = ep.connect(relay.addr, &room).unwrap().await.unwrap();
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut x = JoinExchange::start(&mallory, &room, &relay_fp, None, "mallory", now);
        signal_stream::write_frames(&mut send, &x.poll_transmit().unwrap())
            .await
            .unwrap();
        let mut reader = SignalReader::new(recv, 1 << 16);
        loop {
            while let Some(ev) = x.poll_event() {
                assert!(
                    !matches!(ev, JoinEvent::Admitted { .. }),
                    "mallory was admitted"
                );
            }
            match tokio::time::timeout(WAIT, reader.next()).await {
                Ok(Ok(Some(SignalFrame::Message(m)))) => x.handle_message(m),
                _ => break,
            }
        }
        let reason = tokio::time::timeout(WAIT, conn.closed()).await.unwrap();
        quic::peer_close(&reason)
    });
    let (code, why) = refused.expect("closed with a wzp close code");
    assert_eq!(code, CloseCode::NotAuthorized, "{why}");
    // The call went on.
    assert!(a.wait_line("hung up", Duration::from_millis(300)).is_none());
    a.kill();
    b.kill();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn listen_registers_again_after_a_relay_restart_and_the_next_call_works() {
    let _s = serial();
    let dir = tmp("restart");
    let mut relay = start_relay(&dir, "127.0.0.1:0");
    let addr = relay.addr;
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--input",
            "tone",
            "--output",
            "null",
            "--duration",
            "2s",
        ],
    );
    relay.proc.kill();
    // Same identity, same port.
    let relay = start_relay(&dir, &addr.to_string());
    let back = Instant::now();
    b.expect_line("registered again as", Duration::from_secs(3));
    println!(
        "registered again {:?} after the relay was back",
        back.elapsed()
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "tone:300",
            "--output",
            "null",
            "--duration",
            "2s",
        ],
    );
    a.expect_line("SAS: ", WAIT);
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reflect_and_version_check_answer_from_the_relay() {
    let _s = serial();
    let dir = tmp("reflect");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let mut r = client(&dir, &relay, "alice", &["reflect"], &[]);
    let addr = r.expect_line("127.0.0.1:", WAIT);
    let addr: SocketAddr = addr.trim().parse().expect("reflect prints an address");
    assert_eq!(addr.ip().to_string(), "127.0.0.1");
    assert_ne!(addr.port(), 0);
    assert!(r.exit(WAIT).success());
    // The mapping test over loopback (no NAT): the relay's mapping port
    // sees the address its QUIC port does. With the test off, it says so.
    let mut r = client(&dir, &relay, "alice", &["reflect", "--nat"], &[]);
    let line = r.expect_line("127.0.0.1:", WAIT);
    assert!(
        line.contains(" kept ") && line.contains("one mapping for every destination"),
        "{line}"
    );
    assert!(r.exit(WAIT).success());
    // The relay from the environment when --relay is not given; neither:
    // a clear error.
    let from_env = |addr: Option<&str>| {
        let mut cmd = Command::new(bin("wzp-client"));
        cmd.args(["reflect", "--relay-fingerprint", &relay.fingerprint])
            .args(["--identity", dir.join("env.seed").to_str().unwrap()])
            .args(["--known-relays", dir.join("env.known").to_str().unwrap()])
            .env_remove("WZP_RELAY");
        if let Some(a) = addr {
            cmd.env("WZP_RELAY", a);
        }
        cmd.output().unwrap()
    };
    let out = from_env(Some(&relay.addr.to_string()));
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("127.0.0.1:"),
        "{out:?}"
    );
    let out = from_env(None);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no relay: give --relay HOST:PORT, or set WZP_RELAY"),
        "{err}"
    );
    let quiet = tmp("reflect-no-mapping");
    let off = start_relay_with(&quiet, "127.0.0.1:0", &["--no-mapping-test"]);
    let mut r = client(&quiet, &off, "alice", &["reflect", "--nat"], &[]);
    let line = r.expect_line("127.0.0.1:", WAIT);
    assert!(line.contains("the relay has no mapping port"), "{line}");
    assert!(r.exit(WAIT).success());
    assert_eq!(off.mapping, None);
    drop(off);
    // By default the mapping port is any free port on the listen address;
    // `--mapping-port` fixes it.
    let m = relay.mapping.expect("a mapping port by default");
    assert_eq!(m.ip(), relay.addr.ip(), "on the listen address");
    assert_ne!(m.port(), relay.addr.port());
    let free = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = free.local_addr().unwrap().port();
    drop(free);
    let fixed = start_relay_with(&quiet, "127.0.0.1:0", &["--mapping-port", &at.to_string()]);
    assert_eq!(fixed.mapping.map(|m| m.port()), Some(at));
    let mut r = client(&quiet, &fixed, "alice", &["reflect", "--nat"], &[]);
    let line = r.expect_line("127.0.0.1:", WAIT);
    assert!(line.contains("one mapping for every destination"), "{line}");
    assert!(r.exit(WAIT).success());
    drop(fixed);
    let _ = std::fs::remove_dir_all(quiet);

    let out = Command::new(bin("wzp-relay"))
        .arg("--version")
        .output()
        .unwrap();
    let relay_version = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("wzp-relay ")
        .to_string();
    assert!(
        relay_version.contains('('),
        "version shows the git hash: {relay_version}"
    );
    let mut v = Proc::spawn(
        "version-check",
        Command::new(bin("wzp-client")).args([
            "version-check",
            &relay.addr.to_string(),
            "--relay-fingerprint",
            &relay.fingerprint,
            "--known-relays",
            dir.join("v.known").to_str().unwrap(),
        ]),
    );
    let line = v.expect_line(&relay.addr.to_string(), WAIT);
    assert_eq!(line.trim(), format!("{} {relay_version}", relay.addr));
    assert!(v.exit(WAIT).success());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn presence_calls_and_the_clients_loss_recovery_reports_show_on_the_relay() {
    let _s = serial();
    let dir = tmp("observe");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--once",
            "--alias",
            "bob",
            "--input",
            "tone",
            "--output",
            "null",
            "--duration",
            "30s",
        ],
    );
    let presence: serde_json::Value = serde_json::from_str(&http_get(&relay, "/presence")).unwrap();
    let listed = presence.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{presence}");
    assert_eq!(listed[0]["fingerprint"], b_fp.as_str());
    assert_eq!(listed[0]["alias"], "bob");
    // Its NAT mapping test, over loopback: one mapping (no NAT at all).
    assert_eq!(listed[0]["mapping"], "independent", "{presence}");
    let one: serde_json::Value =
        serde_json::from_str(&http_get(&relay, &format!("/presence/{b_fp}"))).unwrap();
    assert_eq!(one["fingerprint"], b_fp.as_str());
    assert!(
        http_get(&relay, "/presence/0000:0000:0000:0000:0000:0000:0000:0000")
            .contains("not online")
    );

    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "builtin",
            "--output",
            "null",
            "--duration",
            "30s",
        ],
    );
    a.expect_line("SAS: ", WAIT);
    let calls: serde_json::Value = serde_json::from_str(&http_get(&relay, "/calls")).unwrap();
    let calls = calls.as_array().unwrap();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["state"], "active");
    assert_eq!(calls[0]["callee"], b_fp.as_str());
    let text = serde_json::to_string(&calls).unwrap();
    assert!(!text.contains("key"), "/calls never shows keys: {text}");

    // Both clients report their decoders every 2 s on the call room's
    // stream; the relay exports the figures per session.
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions: serde_json::Value =
            serde_json::from_str(&http_get(&relay, "/sessions")).unwrap();
        let reported = sessions
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["client_reports"].as_u64().unwrap_or(0) > 0
                    && s["frames_decoded"].as_u64().unwrap_or(0) > 0
            })
            .count();
        if reported == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no loss-recovery reports: {sessions}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let metrics = http_get(&relay, "/metrics");
    for name in [
        "wzp_relay_session_frames_decoded_total{",
        "wzp_relay_session_dred_reconstructions_total{",
        "wzp_relay_session_lbrr_recoveries_total{",
        "wzp_relay_session_classical_plc_total{",
        "wzp_relay_session_reported_loss_ratio{",
        "wzp_signal_registered 2",
        "wzp_signal_calls{state=\"active\"} 1",
        "wzp_signal_call_transitions_total{from=\"ringing\",to=\"active\"} 1",
    ] {
        assert!(metrics.contains(name), "/metrics lacks {name}");
    }
    a.kill();
    b.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// Datagrams the relay has taken in from the live sessions (one call here).
fn relay_packets_in(relay: &Relay) -> u64 {
    http_get(relay, "/metrics")
        .lines()
        .filter(|l| {
            l.starts_with("wzp_relay_session_packets_total{") && l.contains("direction=\"in\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until both parties of the call have told the relay their media
/// goes direct (`wzp_relay_session_direct`; they report every 2 s, so the
/// media has been flowing direct by then).
fn wait_both_direct(relay: &Relay) {
    wait_until("the relay hears that both go direct", || {
        http_get(relay, "/metrics")
            .lines()
            .filter(|l| l.starts_with("wzp_relay_session_direct{") && l.ends_with(" 1"))
            .count()
            == 2
    });
}

/// Polls `done` until it holds, at most [`WAIT`]: a relay's HTTP figures
/// and a process's exit have no line to wait for. The one poll of the
/// direct-path tests.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "waited {WAIT:?} for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `local port N` a "direct path to ... up" line names.
fn direct_port(line: &str) -> u16 {
    line.split("local port ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"))
}

/// The figures of a "direct path to ... carried N datagrams out and M in" line.
fn carried(p: &mut Proc) -> (u64, u64) {
    let line = p.expect_line(" datagrams out and ", WAIT);
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(n.len(), 2, "{line}");
    (n[0], n[1])
}

/// Alice calls Bob, who trusts her: she dials the address his answer
/// carried, each proves to the other who it is on that connection, and the
/// media goes straight between them (the relay takes in next to nothing
/// after that), both ways, heard at the far end.
#[test]
fn a_trusting_callee_gets_the_media_straight_from_the_caller() {
    let _s = serial();
    let dir = tmp("straight");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let speech = speech_like(16_000);
    let reversed: Vec<f32> = speech.iter().rev().copied().collect();
    write_wav(&dir.join("a-says.wav"), &speech);
    write_wav(&dir.join("b-says.wav"), &reversed);
    let media = |says: &str, heard: &str| -> Vec<String> {
        [
            "--duration",
            "8s",
            "--input",
            dir.join(says).to_str().unwrap(),
            "--output",
            dir.join(heard).to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let b_args = [
        vec!["--accept".into(), "trusted".into(), "--once".into()],
        media("b-says.wav", "b-heard.wav"),
    ]
    .concat();
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let (mut b, b_fp) = listen(&dir, &relay, "bob", &b_args);
    // Alice watches the call with `--top`, which names bob (her contact)
    // and the path.
    contacts(&dir, "alice", &["add", "bob", &b_fp]);
    let a_args = [media("a-says.wav", "a-heard.wav"), vec!["--top".into()]].concat();
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let mut a = client(&dir, &relay, "alice", &["call", &b_fp], &a_args);
    let a_fp = b
        .expect_line("incoming call from ", WAIT)
        .split_whitespace()
        .nth(3)
        .expect("incoming call from FP")
        .to_string();
    let up_a = a.expect_line("direct path to ", WAIT);
    let up_b = b.expect_line("direct path to ", WAIT);
    a.expect_line(
        "wzp top — direct call with bob — media straight to the peer",
        WAIT,
    );
    assert!(up_a.contains(&b_fp) && up_a.contains(" up "), "{up_a}");
    assert!(up_b.contains(" up "), "{up_b}");
    assert!(up_b.contains(&a_fp), "{up_b}");
    // What the relay had taken in when the path came up; then the most it
    // ever shows until the call ends (sessions leave its figures then).
    let at_up = relay_packets_in(&relay);
    // Both clients tell the relay (their next report, within 2 s).
    wait_both_direct(&relay);
    let sessions = http_get(&relay, "/sessions");
    assert_eq!(
        sessions.matches("\"media_path\":\"direct\"").count(),
        2,
        "{sessions}"
    );
    let mut most = at_up;
    wait_until("alice's call ends", || {
        most = most.max(relay_packets_in(&relay));
        a.child.try_wait().unwrap().is_some()
    });
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    let (a_out, a_in) = carried(&mut a);
    let (b_out, b_in) = carried(&mut b);
    // The call's end closes the path normally: neither side reads a loss.
    for p in [&mut a, &mut b] {
        let lines = p.drain();
        assert!(!lines.iter().any(|l| l.contains(" lost (")), "{lines:?}");
    }
    eprintln!(
        "direct: alice {a_out} out, {a_in} in; bob {b_out} out, {b_in} in; relay took {} before, {} after",
        at_up,
        most - at_up
    );
    // 8 s of 20 ms frames is 400 packets each way; most of them direct.
    assert!(
        a_out >= 250 && b_in >= 250,
        "alice sent {a_out}, bob took {b_in} direct"
    );
    assert!(
        b_out >= 250 && a_in >= 250,
        "bob sent {b_out}, alice took {a_in} direct"
    );
    assert!(
        most - at_up < 25,
        "the relay took in {} datagrams after the direct path came up",
        most - at_up
    );
    let heard_by_b = read_wav_mono(&dir.join("b-heard.wav")).unwrap().samples;
    let heard_by_a = read_wav_mono(&dir.join("a-heard.wav")).unwrap().samples;
    let (r_b, r_a) = (
        segmental_correlation(&heard_by_b, &speech),
        segmental_correlation(&heard_by_a, &reversed),
    );
    assert!(
        r_b > 0.7,
        "bob's recording correlates {r_b} with alice's voice"
    );
    assert!(
        r_a > 0.7,
        "alice's recording correlates {r_a} with bob's voice"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The caller hangs up (SIGINT); both end well.
fn hang_up(a: &mut Proc, b: &mut Proc) {
    let _ = Command::new("kill")
        .args(["-INT", &a.child.id().to_string()])
        .status();
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
}

/// `iptables` rules dropping loopback UDP between two ports both ways,
/// removed when dropped.
struct Cut {
    rules: Vec<Vec<String>>,
}

impl Cut {
    fn between(a: u16, b: u16) -> Cut {
        let rules: Vec<Vec<String>> = [(a, b), (b, a)]
            .iter()
            .map(|(from, to)| {
                [
                    "INPUT",
                    "-i",
                    "lo",
                    "-p",
                    "udp",
                    "--sport",
                    &from.to_string(),
                    "--dport",
                    &to.to_string(),
                    "-j",
                    "DROP",
                ]
                .map(String::from)
                .to_vec()
            })
            .collect();
        for r in &rules {
            let st = Command::new("iptables")
                .args(["-w", "-I"])
                .args(r)
                .status()
                .expect("iptables runs");
            assert!(st.success(), "iptables -I {r:?}");
        }
        Cut { rules }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for r in &self.rules {
            let _ = Command::new("iptables").args(["-w", "-D"]).args(r).status();
        }
    }
}

/// Whether this test run may add firewall rules (root, with iptables).
fn can_cut() -> bool {
    Command::new("iptables")
        .args(["-w", "-L", "INPUT", "-n"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The direct path breaks mid-call (its packets dropped both ways): both
/// sides hear nothing on it and send on the relay within a second, the
/// connection idles out, the media is back on the relay (the relay takes it in again) with no one hanging up,
/// and once the path works again the caller dials it again and the media
/// leaves the relay once more. The far end hears the caller throughout but
/// for the seconds the broken path took to notice.
#[test]
fn a_broken_direct_path_falls_back_to_the_relay_and_comes_back() {
    let root = is_root();
    if !root {
        eprintln!("skipped: breaking the direct path takes a firewall rule, which needs root");
        return;
    }
    // scripts/setup.sh installs iptables.
    assert!(can_cut(), "iptables cannot add rules here");
    let _s = serial();
    let dir = tmp("fallback");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let speech = speech_like(16_000);
    write_wav(&dir.join("a-says.wav"), &speech);
    let (mut a, mut b) = alice_calls_trusting_bob(&dir, &relay, "60s", &dir.join("b-heard.wav"));
    let up_a = a.expect_line("direct path to ", WAIT);
    let up_b = b.expect_line("direct path to ", WAIT);
    assert!(
        up_a.contains(" up ") && up_b.contains(" up "),
        "{up_a}\n{up_b}"
    );
    // Media flows direct both ways, then the path breaks.
    wait_both_direct(&relay);
    let cut = Cut::between(direct_port(&up_a), direct_port(&up_b));
    let broke = Instant::now();
    // Both hear nothing on it and send on the relay within a second...
    a.expect_line("silent for", WAIT);
    b.expect_line("silent for", WAIT);
    let switched = broke.elapsed();
    // ... and the connection idles out.
    let lost_a = a.expect_line("lost (", WAIT);
    let lost_b = b.expect_line("lost (", WAIT);
    assert!(lost_a.contains("back on the relay"), "{lost_a}");
    assert!(lost_b.contains("back on the relay"), "{lost_b}");
    eprintln!(
        "both on the relay {} ms after the cut, the path gone after {} ms",
        switched.as_millis(),
        broke.elapsed().as_millis()
    );
    // The relay carries the media again: 100 more datagrams in (2 s of
    // alice's alone), with the direct path still cut.
    let back = relay_packets_in(&relay);
    wait_until("the relay takes the media back", || {
        relay_packets_in(&relay) >= back + 100
    });
    drop(cut);
    // The caller dials again (2 s after the loss, then 4, 8, ...).
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = a.drain();
        if lines
            .iter()
            .filter(|l| l.contains("direct path to ") && l.contains(" up "))
            .count()
            >= 2
        {
            break;
        }
        assert!(Instant::now() < deadline, "no direct path again: {lines:?}");
        let _ = a.wait_line("\u{0}never", Duration::from_millis(100));
    }
    // The call went on throughout: alice hangs up now, and both end well.
    assert!(a.child.try_wait().unwrap().is_none(), "{:?}", a.drain());
    assert!(b.child.try_wait().unwrap().is_none(), "{:?}", b.drain());
    hang_up(&mut a, &mut b);
    let heard_by_b = read_wav_mono(&dir.join("b-heard.wav")).unwrap().samples;
    let r = segmental_correlation(&heard_by_b, &speech);
    assert!(r > 0.6, "bob's recording correlates {r} with alice's voice");
    let _ = std::fs::remove_dir_all(dir);
}

/// A relay reached over IPv6 (`[::1]`): both parties register and call
/// through it, and the direct path comes up over IPv6 (each dials or
/// accepts on its dual-stack signalling socket) and carries the call.
#[test]
fn a_call_through_an_ipv6_relay_goes_direct_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let _s = serial();
    let dir = tmp("ipv6");
    let relay = start_relay(&dir, "[::1]:0");
    assert!(relay.addr.is_ipv6(), "{}", relay.addr);
    let speech = speech_like(16_000);
    write_wav(&dir.join("a-says.wav"), &speech);
    let heard = dir.join("b-heard.wav");
    let (mut a, mut b) = alice_calls_trusting_bob(&dir, &relay, "6s", &heard);
    path_carried(&mut a, &mut b, "peer [::1]:", "peer [::1]:", 150);
    let heard = read_wav_mono(&heard).unwrap().samples;
    let r = segmental_correlation(&heard, &speech);
    assert!(r > 0.7, "bob's recording correlates {r} with alice's voice");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--relay-only` on the callee: its address is shared with no one, even
/// trusting the caller, so the media all goes through the relay.
#[test]
fn a_relay_only_callee_shares_no_address_and_the_media_stays_on_the_relay() {
    let _s = serial();
    let dir = tmp("relay-only");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--relay-only",
            "--once",
            "--duration",
            "30s",
            "--input",
            "tone",
            "--output",
            "null",
        ],
    );
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &["--duration", "30s", "--input", "tone", "--output", "null"],
    );
    a.expect_line("SAS: ", WAIT);
    // Two seconds of both sides' media through the relay.
    wait_until("media through the relay", || {
        relay_packets_in(&relay) >= 200
    });
    hang_up(&mut a, &mut b);
    for p in [&mut a, &mut b] {
        let lines = p.drain();
        assert!(
            !lines.iter().any(|l| l.contains("direct path")),
            "{lines:?}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Two private networks, each behind its own NAT (`iptables MASQUERADE`:
/// one mapping per socket, replies only from where it sent), and the relay
/// on the public network between them: namespaces `{tag}pub` (10.0.1.1 and
/// 10.0.2.1), `{tag}na`/`{tag}nb` (the NATs), `{tag}a` (192.168.1.2 behind
/// 10.0.1.2) and `{tag}b` (192.168.2.2 behind 10.0.2.2). Removed on drop.
struct Nats {
    tag: String,
}

/// What the NATs of [`Nats`] do beyond the home router's.
#[derive(Clone, Copy, PartialEq)]
enum NatKind {
    /// One mapping per socket, whatever the destination.
    Home,
    /// A new mapping, on a random port, for every destination (symmetric,
    /// as carrier-grade NATs often are: `MASQUERADE --random-fully`).
    Symmetric,
    /// Alice's NAT symmetric, Bob's a home router's (as a phone on a
    /// carrier-grade NAT calling someone at home).
    CallerSymmetric,
    /// Bob's NAT symmetric, Alice's a home router's.
    CalleeSymmetric,
    /// Alice's NAT moves her UDP ports but keeps one mapping per socket
    /// for every destination (a carrier-grade NAT as RFC 6888 asks:
    /// `MASQUERADE --to-ports`), Bob's symmetric.
    CallerCgnCalleeSymmetric,
    /// Symmetric for IPv4, and IPv6 routed with no NAT: `pub` 2001:db8:1::1
    /// and 2001:db8:2::1, `a` 2001:db8:a::2 and `b` 2001:db8:b::2, the
    /// routers' firewalls letting nothing new in from outside.
    SymmetricWithIpv6,
}

/// Sets up [`Nats`]: `bash nats.sh TAG KIND` (also used by
/// `benches/direct_path/setup.py --nats`).
const NATS: &str = include_str!("nats.sh");

impl Nats {
    fn new(kind: NatKind) -> Nats {
        // Interface names are at most 15 bytes: the tag and two letters.
        let tag = format!("w{}", std::process::id() % 1_000_000);
        let nats = Nats { tag };
        let kind = match kind {
            NatKind::Home => "home",
            NatKind::Symmetric => "symmetric",
            NatKind::CallerSymmetric => "a-symmetric",
            NatKind::CalleeSymmetric => "b-symmetric",
            NatKind::CallerCgnCalleeSymmetric => "a-cgn-b-symmetric",
            NatKind::SymmetricWithIpv6 => "ipv6",
        };
        let out = Command::new("bash")
            .args(["-c", NATS, "nats", &nats.tag, kind])
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "setting up the NATs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        nats
    }

    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.tag)
    }
}

/// What a NAT test needs: the one-at-a-time guard, its directory and
/// the namespaces; `None` (test skipped) without root.
fn nat_test(name: &str) -> Option<(std::sync::MutexGuard<'static, ()>, PathBuf, Nats)> {
    nat_test_of(name, NatKind::Home)
}

/// [`nat_test`] with NATs of `kind`.
fn nat_test_of(
    name: &str,
    kind: NatKind,
) -> Option<(std::sync::MutexGuard<'static, ()>, PathBuf, Nats)> {
    if !is_root() {
        eprintln!("skipped: network namespaces and NATs need root");
        return None;
    }
    let guard = serial();
    Some((guard, tmp(name), Nats::new(kind)))
}

impl Drop for Nats {
    fn drop(&mut self) {
        for n in ["pub", "na", "nb", "a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

/// Bob, in namespace `b` behind his NAT, listens (`--accept trusted`, for
/// `secs`) at `relay`, reached at `addr`: the process and his fingerprint.
fn bob_behind_nat(
    nats: &Nats,
    addr: SocketAddr,
    dir: &Path,
    relay: &Relay,
    secs: &str,
) -> (Proc, String) {
    let out = dir.join("b-heard.wav");
    let mut b = client_in(
        Some(&nats.ns("b")),
        addr,
        dir,
        relay,
        "bob",
        &["listen"],
        &[
            "--accept",
            "trusted",
            "--once",
            "--duration",
            secs,
            "--input",
            "tone",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    let registered = b.expect_line("registered as ", WAIT);
    // The relay sees Bob at his NAT's public address.
    assert!(
        registered.contains("observed address 10.0.2.2:"),
        "{registered}"
    );
    let fp = registered.split_whitespace().nth(2).unwrap().to_string();
    (b, fp)
}

/// Alice, in namespace `a` behind her NAT, calls `bob` for `secs` through
/// `relay`, reached at `addr`, saying `a-says.wav`.
fn alice_behind_nat(
    nats: &Nats,
    addr: SocketAddr,
    dir: &Path,
    relay: &Relay,
    bob: &str,
    secs: &str,
) -> Proc {
    let input = dir.join("a-says.wav");
    client_in(
        Some(&nats.ns("a")),
        addr,
        dir,
        relay,
        "alice",
        &["call", bob],
        &[
            "--duration",
            secs,
            "--input",
            input.to_str().unwrap(),
            "--output",
            "null",
        ],
    )
}

/// A relay on the public side, Bob listening behind his NAT and Alice
/// calling him from behind hers, saying `a-says.wav` (written here): the
/// relay, Alice, Bob and what she says.
fn call_across_nats(nats: &Nats, dir: &Path) -> (Relay, Proc, Proc, Vec<f32>) {
    call_across_nats_for(nats, dir, "8s")
}

/// [`call_across_nats`], the call lasting `secs`.
fn call_across_nats_for(nats: &Nats, dir: &Path, secs: &str) -> (Relay, Proc, Proc, Vec<f32>) {
    let relay = start_relay_in(Some(&nats.ns("pub")), dir, "0.0.0.0:0", &[]);
    let port = relay.addr.port();
    let speech = speech_like(16_000);
    write_wav(&dir.join("a-says.wav"), &speech);
    let b_at = SocketAddr::from(([10, 0, 2, 1], port));
    let (b, b_fp) = bob_behind_nat(nats, b_at, dir, &relay, secs);
    let a_at = SocketAddr::from(([10, 0, 1, 1], port));
    let a = alice_behind_nat(nats, a_at, dir, &relay, &b_fp, secs);
    (relay, a, b, speech)
}

/// The end of a call through both NATs: the path comes up between the
/// NATs' public addresses, carries the call, and Bob hears `speech`.
fn path_through_both_nats(a: &mut Proc, b: &mut Proc, dir: &Path, speech: &[f32]) {
    path_between(a, b, dir, speech, "peer 10.0.2.2:", "peer 10.0.1.2:");
}

/// The end of a call whose path comes up with Alice seeing Bob's end as
/// `a_sees` and Bob Alice's as `b_sees`, carries the call, and Bob hears
/// `speech`.
fn path_between(
    a: &mut Proc,
    b: &mut Proc,
    dir: &Path,
    speech: &[f32],
    a_sees: &str,
    b_sees: &str,
) {
    path_carried(a, b, a_sees, b_sees, 250);
    let heard_by_b = read_wav_mono(&dir.join("b-heard.wav")).unwrap().samples;
    let r = segmental_correlation(&heard_by_b, speech);
    assert!(r > 0.7, "bob's recording correlates {r} with alice's voice");
}

/// The path comes up with Alice seeing Bob's end as `a_sees` and Bob
/// Alice's as `b_sees`, both calls end well, and at least `min` of Alice's
/// datagrams went on it and reached Bob.
fn path_carried(a: &mut Proc, b: &mut Proc, a_sees: &str, b_sees: &str, min: u64) {
    let up_a = a.expect_line(" up (local port ", WAIT);
    assert!(up_a.contains(a_sees), "{up_a}");
    let up_b = b.expect_line(" up (local port ", WAIT);
    assert!(up_b.contains(b_sees), "{up_b}");
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    let (a_out, _) = carried(a);
    let (_, b_in) = carried(b);
    assert!(
        a_out >= min && b_in >= min,
        "alice sent {a_out}, bob took {b_in} direct"
    );
}

/// Alice and Bob each behind their own NAT, the relay on the public side:
/// neither can reach the other's address unasked, yet the direct path
/// comes up (the caller shares its address, the callee punches towards it
/// while the caller dials), carries the call both ways, and the far end
/// hears it.
#[test]
fn a_direct_path_goes_through_both_parties_nats() {
    let Some((_s, dir, nats)) = nat_test("nats") else {
        return;
    };
    let (_relay, mut a, mut b, speech) = call_across_nats(&nats, &dir);
    path_through_both_nats(&mut a, &mut b, &dir, &speech);
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// Bob's address behind his NAT changes after he registered (a new
/// address on his network): his NAT maps him to a new public port, his
/// relay connection follows (QUIC), and the address he registered with is
/// stale. The relay gives Alice the one it sees him at now, and tells Bob
/// where he is in the call's setup: the direct path still comes up.
#[test]
fn a_listener_that_moved_since_it_registered_is_reached_directly() {
    let Some((_s, dir, nats)) = nat_test("nats-moved") else {
        return;
    };
    let relay = start_relay_in(Some(&nats.ns("pub")), &dir, "0.0.0.0:0", &[]);
    let port = relay.addr.port();
    let speech = speech_like(16_000);
    write_wav(&dir.join("a-says.wav"), &speech);
    let (mut b, b_fp) = bob_behind_nat(
        &nats,
        SocketAddr::from(([10, 0, 2, 1], port)),
        &dir,
        &relay,
        "8s",
    );
    let dev = nats.ns("bl");
    for cmd in [
        vec![
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{dev}.promote_secondaries=1"),
        ],
        vec!["ip", "addr", "add", "192.168.2.3/24", "dev", &dev],
        vec!["ip", "addr", "del", "192.168.2.2/24", "dev", &dev],
        vec!["ip", "route", "replace", "default", "via", "192.168.2.1"],
    ] {
        let ok = Command::new("ip")
            .args(["netns", "exec", &nats.ns("b")])
            .args(&cmd)
            .status()
            .unwrap();
        assert!(ok.success(), "{cmd:?}");
    }
    let mut a = alice_behind_nat(
        &nats,
        SocketAddr::from(([10, 0, 1, 1], port)),
        &dir,
        &relay,
        &b_fp,
        "8s",
    );
    path_through_both_nats(&mut a, &mut b, &dir, &speech);
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// Alice and Bob each behind a NAT that maps every destination to a new
/// port (symmetric): the port the relay saw is not the one a packet to the
/// peer leaves from, so neither side's packets find the other's mapping.
/// The caller says so, and the call goes on through the relay: Bob hears
/// Alice.
#[test]
fn symmetric_nats_keep_the_media_on_the_relay() {
    let Some((_s, dir, nats)) = nat_test_of("nats-sym", NatKind::Symmetric) else {
        return;
    };
    let (_relay, mut a, mut b, speech) = call_across_nats(&nats, &dir);
    // Both NATs move ports: no birthday search can meet, so none runs
    // (no sockets opened, no probes), and the caller says why.
    let failed = a.expect_line("no direct path to ", WAIT);
    assert!(
        failed.contains("10.0.2.2:")
            && failed.contains("media stays on the relay")
            && failed.contains("both NATs moved their ports"),
        "{failed}"
    );
    stayed_on_the_relay(&mut a, &mut b, &dir, &speech);
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// The end of a call whose media stayed on the relay: both end well,
/// neither brought a direct path up nor took part in a birthday search
/// (no half said, no search's outcome), and Bob heard Alice's `speech`.
fn stayed_on_the_relay(a: &mut Proc, b: &mut Proc, dir: &Path, speech: &[f32]) {
    assert!(a.exit(WAIT).success(), "{:?}", a.drain());
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    for p in [a, b] {
        let lines = p.drain();
        assert!(
            !lines
                .iter()
                .any(|l| (l.contains("direct path to") && l.contains(" up "))
                    || l.contains("while this side")
                    || l.contains("birthday search:")
                    || l.contains("birthday probes")),
            "{lines:?}"
        );
    }
    let heard_by_b = read_wav_mono(&dir.join("b-heard.wav")).unwrap().samples;
    let r = segmental_correlation(&heard_by_b, speech);
    assert!(r > 0.7, "bob's recording correlates {r} with alice's voice");
}

/// Alice and Bob behind home routers (ports kept), but the network
/// between them drops every UDP packet from one NAT to the other (a
/// firewall), while both reach the relay. The plain attempt fails; both
/// sides' ports were kept, so a birthday search could not do better and
/// neither sends its rounds of probes (6 x 1024 each, which would look like
/// a port scan): the firewall counts only the plain attempts' packets.
/// The call goes on through the relay and Bob hears Alice.
#[test]
fn a_firewall_between_two_home_routers_keeps_the_media_on_the_relay_with_no_probes() {
    let Some((_s, dir, nats)) = nat_test_of("nats-fw", NatKind::Home) else {
        return;
    };
    let pub_ns = nats.ns("pub");
    for (from, to) in [("10.0.1.2", "10.0.2.2"), ("10.0.2.2", "10.0.1.2")] {
        let st = Command::new("ip")
            .args(["netns", "exec", &pub_ns, "iptables", "-w", "-A", "FORWARD"])
            .args(["-p", "udp", "-s", from, "-d", to, "-j", "DROP"])
            .status()
            .expect("iptables runs");
        assert!(st.success(), "iptables in {pub_ns}");
    }
    let (_relay, mut a, mut b, speech) = call_across_nats(&nats, &dir);
    let failed = a.expect_line("no direct path to ", WAIT);
    assert!(
        failed.contains("10.0.2.2:")
            && failed.contains("media stays on the relay")
            && !failed.contains("while this side"),
        "{failed}"
    );
    stayed_on_the_relay(&mut a, &mut b, &dir, &speech);
    // What the firewall dropped between the NATs: dials and punches only.
    let out = Command::new("ip")
        .args(["netns", "exec", &pub_ns, "iptables", "-w", "-L", "FORWARD"])
        .args(["-v", "-x", "-n"])
        .output()
        .expect("iptables runs");
    let listing = String::from_utf8_lossy(&out.stdout);
    let dropped: u64 = listing
        .lines()
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(
        dropped > 0 && dropped < 1_000,
        "{dropped} packets dropped between the NATs:\n{listing}"
    );
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// Alice behind a NAT that maps every destination to a new random port
/// (symmetric, as a phone's carrier-grade NAT), Bob behind a home router
/// (one mapping per socket, replies only). Alice's dial leaves from a port
/// no one knows, which Bob's NAT does not let in: her first attempt fails.
/// Then the birthday search: she opens 256 sockets probing Bob's address,
/// he sends probes to random ports of hers, one meets a mapping, she dials
/// from that socket, and the path comes up and carries the call.
#[test]
fn a_caller_behind_a_symmetric_nat_reaches_a_home_router_by_a_birthday_search() {
    birthday_search(NatKind::CallerSymmetric, "nats-bday-a");
}

/// The other way round: Bob, called, behind the symmetric NAT. He searches
/// (his NAT did not keep his socket's port towards the relay), Alice sends
/// the probes once her first dial failed, and Bob dials her from the socket
/// a probe came through on: she takes the connection as its acceptor.
#[test]
fn a_callee_behind_a_symmetric_nat_reaches_a_home_router_by_a_birthday_search() {
    birthday_search(NatKind::CalleeSymmetric, "nats-bday-b");
}

/// What `wzp-client reflect --nat` says in namespace `ns` (`a` or `b`)
/// of the NAT in front of it, towards `relay` on the public side.
fn reflect_nat_in(nats: &Nats, relay: &Relay, dir: &Path, ns: &str) -> String {
    let public = if ns == "a" {
        [10, 0, 1, 1]
    } else {
        [10, 0, 2, 1]
    };
    let at = SocketAddr::from((public, relay.addr.port()));
    let mut r = client_in(
        Some(&nats.ns(ns)),
        at,
        dir,
        relay,
        ns,
        &["reflect", "--nat"],
        &[],
    );
    assert!(r.exit(WAIT).success(), "{:?}", r.drain());
    r.drain().join("\n")
}

/// A call across NATs of `kind` (one side symmetric, the other a home
/// router's): the first attempt fails, the birthday search brings the
/// path up, it carries the call and Bob hears Alice.
fn birthday_search(kind: NatKind, name: &str) {
    let Some((_s, dir, nats)) = nat_test_of(name, kind) else {
        return;
    };
    let (relay, mut a, mut b, speech) = call_across_nats_for(&nats, &dir, "16s");
    // What each machine's NAT did to its port, as `reflect --nat` says.
    let symmetric = if kind == NatKind::CallerSymmetric {
        "a"
    } else {
        "b"
    };
    for ns in ["a", "b"] {
        let said = reflect_nat_in(&nats, &relay, &dir, ns);
        let want = if ns == symmetric {
            "the NAT moved port"
        } else {
            " kept (a home router"
        };
        assert!(said.contains(want), "{ns}: {said}");
    }
    // Alice's first attempt fails, and she says what she does next: her
    // half of the search.
    let failed = a.expect_line("no direct path to ", WAIT);
    let next = if kind == NatKind::CallerSymmetric {
        "searches for a way out through its NAT"
    } else {
        "sends birthday probes"
    };
    assert!(
        failed.contains("10.0.2.2:") && failed.contains(" yet (") && failed.contains(next),
        "{failed}"
    );
    // Then the search's path comes up, carries the call, and Bob hears it.
    path_through_both_nats(&mut a, &mut b, &dir, &speech);
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// Alice behind a carrier-grade NAT that moved her port but keeps one
/// mapping per socket for every destination, Bob behind a symmetric one.
/// By ports alone both NATs moved theirs and no search could meet; the
/// relay's mapping test tells Alice's apart (its second port saw her
/// probe at the address her connection has) and Bob learns it with her
/// address. So Alice, the port she shared being where her packets to Bob
/// come from, sends the probes; Bob searches, dials her from the socket a
/// probe came through on, and the path comes up and carries the call.
#[test]
fn a_carrier_grade_nat_that_keeps_its_mapping_meets_a_symmetric_nat_by_a_birthday_search() {
    let Some((_s, dir, nats)) = nat_test_of("nats-cgn", NatKind::CallerCgnCalleeSymmetric) else {
        return;
    };
    let (relay, mut a, mut b, speech) = call_across_nats_for(&nats, &dir, "16s");
    for (ns, want) in [
        ("a", "but keeps one mapping for every destination"),
        ("b", "a mapping for each destination"),
    ] {
        let said = reflect_nat_in(&nats, &relay, &dir, ns);
        assert!(
            said.contains("the NAT moved port") && said.contains(want),
            "{ns}: {said}"
        );
    }
    let failed = a.expect_line("no direct path to ", WAIT);
    assert!(
        failed.contains("10.0.2.2:")
            && failed.contains(" yet (")
            && failed.contains("sends birthday probes"),
        "{failed}"
    );
    path_through_both_nats(&mut a, &mut b, &dir, &speech);
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// The same symmetric IPv4 NATs, but both parties also have a global IPv6
/// address behind a firewall that lets nothing new in (as on most mobile
/// and home networks with IPv6), while the relay is reached over IPv4.
/// Each shares its IPv6 address beside the one the relay saw; Alice dials
/// both, Bob punches both, and the path comes up over IPv6.
#[test]
fn symmetric_nats_meet_over_ipv6_while_the_relay_is_on_ipv4() {
    let Some((_s, dir, nats)) = nat_test_of("nats-v6", NatKind::SymmetricWithIpv6) else {
        return;
    };
    let (relay, mut a, mut b, speech) = call_across_nats(&nats, &dir);
    // What Alice's machine offers, as `reflect --addresses` lists it.
    let a_at = SocketAddr::from(([10, 0, 1, 1], relay.addr.port()));
    let mut r = client_in(
        Some(&nats.ns("a")),
        a_at,
        &dir,
        &relay,
        "alice",
        &["reflect", "--addresses"],
        &[],
    );
    assert!(r.exit(WAIT).success());
    let offered = r.drain();
    assert!(
        offered[0].starts_with("10.0.1.2:") && offered[0].ends_with("\tas the relay sees it"),
        "{offered:?}"
    );
    assert!(
        offered
            .iter()
            .any(|l| l.starts_with("192.168.1.2:") && l.contains("own network")),
        "{offered:?}"
    );
    assert!(
        offered
            .iter()
            .any(|l| l.starts_with("[2001:db8:a::2]:") && l.contains("global IPv6")),
        "{offered:?}"
    );
    path_between(
        &mut a,
        &mut b,
        &dir,
        &speech,
        "peer [2001:db8:b::2]:",
        "peer [2001:db8:a::2]:",
    );
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// A stranger (this test, with its own identity) dials the callee's
/// direct address during a call with the call room's name, and sends a
/// hello signed properly for that connection with its own key when it gets
/// that far: `None` when the QUIC handshake itself is refused, else what
/// the callee answered on the stream (nothing, when it refused the hello).
fn stranger_dials(addr: SocketAddr, room: &str, callee: &str) -> Option<Vec<u8>> {
    use wzp_proto::direct_path::{PathProof, Role};
    use wzp_stages::net::quic;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
        let cfg = quic::direct_client_config().unwrap();
        let conn = tokio::time::timeout(WAIT, ep.connect_with(cfg, addr, room).unwrap())
            .await
            .expect("the callee answers or refuses")
            .ok()?;
        let mallory = wzp_proto::identity::Seed::from_bytes([66; 32]).identity();
        let proof = PathProof::new(
            &mallory,
            Role::Dialer,
            callee.parse().unwrap(),
            room.trim_start_matches("call-"),
            &quic::direct_nonce(&conn).unwrap(),
        )
        .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&proof.hello()).await.unwrap();
        send.finish().unwrap();
        let answer = tokio::time::timeout(WAIT, recv.read_to_end(1024))
            .await
            .expect("the callee answers or closes");
        Some(answer.unwrap_or_default())
    })
}

/// Someone else tries the callee's direct address during a call. While the
/// caller shares its address, a connection from any other is refused
/// before its handshake; with a caller that shares none (`--relay-only`),
/// the callee accepts nothing at all (it waits for addresses that never
/// come). Neither call is disturbed. (A stranger that got through QUIC
/// would still have its hello, signed with its own key, refused:
/// `proto/tests/direct_path.rs`.)
#[test]
fn a_stranger_cannot_take_the_direct_path() {
    let _s = serial();
    let dir = tmp("stranger");
    let relay = start_relay(&dir, "127.0.0.1:0");
    for caller_shares in [true, false] {
        let (mut b, b_fp) = listen(
            &dir,
            &relay,
            "bob",
            &[
                "--accept",
                "trusted",
                "--once",
                "--duration",
                "30s",
                "--input",
                "tone",
                "--output",
                "null",
            ],
        );
        let b_addr: SocketAddr = b
            .expect_line("observed address ", WAIT)
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let extra: &[&str] = if caller_shares {
            &["--duration", "30s", "--input", "tone", "--output", "null"]
        } else {
            &[
                "--relay-only",
                "--duration",
                "30s",
                "--input",
                "tone",
                "--output",
                "null",
            ]
        };
        let mut a = client(&dir, &relay, "alice", &["call", &b_fp], extra);
        let answered = b.expect_line("answered ", WAIT);
        let room = answered
            .split("(room ")
            .nth(1)
            .and_then(|r| r.strip_suffix(')'))
            .expect("answered FP (room ROOM)")
            .to_string();
        if caller_shares {
            a.expect_line("direct path to ", WAIT);
            assert_eq!(stranger_dials(b_addr, &room, &b_fp), None);
            let refused = b.expect_line("refused a direct connection from ", WAIT);
            assert!(refused.contains("not the caller's address"), "{refused}");
        } else {
            b.expect_line("SAS: ", WAIT);
            let answer = stranger_dials(b_addr, &room, &b_fp);
            assert_eq!(answer, None, "the stranger got through QUIC");
        }
        // The call goes on as it was.
        assert!(a.child.try_wait().unwrap().is_none(), "{:?}", a.drain());
        assert!(b.child.try_wait().unwrap().is_none(), "{:?}", b.drain());
        hang_up(&mut a, &mut b);
        let lines = a.drain();
        let direct = lines
            .iter()
            .any(|l| l.contains("direct path to ") && l.contains(" up "));
        assert_eq!(direct, caller_shares, "{lines:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// One `listen` answers two calls in turn: each gets its own direct path
/// (the callee accepts on its socket for each call, and only during it).
#[test]
fn each_call_to_a_listener_gets_its_own_direct_path() {
    let _s = serial();
    let dir = tmp("two-calls");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let (mut b, b_fp) = listen(
        &dir,
        &relay,
        "bob",
        &[
            "--accept",
            "trusted",
            "--duration",
            "3s",
            "--input",
            "tone",
            "--output",
            "null",
        ],
    );
    for n in 1..=2 {
        let mut a = client(
            &dir,
            &relay,
            "alice",
            &["call", &b_fp],
            &[
                "--duration",
                "3s",
                "--input",
                "tone:300",
                "--output",
                "null",
            ],
        );
        let up = a.expect_line("direct path to ", WAIT);
        assert!(up.contains(" up "), "call {n}: {up}");
        assert!(a.exit(WAIT).success(), "call {n}: {:?}", a.drain());
        // Bob's side of this call came up too, and ended with the call.
        let deadline = Instant::now() + WAIT;
        loop {
            let lines = b.drain();
            let ups = lines
                .iter()
                .filter(|l| l.contains("direct path to ") && l.contains(" up "))
                .count();
            let carried = lines
                .iter()
                .filter(|l| l.contains(" datagrams out and "))
                .count();
            if ups >= n && carried >= n {
                break;
            }
            assert!(Instant::now() < deadline, "call {n}: {lines:?}");
            let _ = b.wait_line("\u{0}never", Duration::from_millis(100));
        }
    }
    b.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// Alice and Bob behind the same NAT (one private network; the NAT does
/// not carry packets from inside to its own public address back in): the
/// relay sees them at one public address, so Alice dials the address Bob
/// shared on his own network first, and the direct path comes up there.
#[test]
fn two_parties_behind_one_nat_meet_on_their_own_network() {
    let Some((_s, dir, nats)) = nat_test("one-nat") else {
        return;
    };
    let (pubns, lan) = (nats.ns("pub"), nats.ns("a"));
    let relay = start_relay_in(Some(&pubns), &dir, "0.0.0.0:0", &[]);
    let to_relay = SocketAddr::from(([10, 0, 1, 1], relay.addr.port()));
    let mut b = client_in(
        Some(&lan),
        to_relay,
        &dir,
        &relay,
        "bob",
        &["listen"],
        &[
            "--accept",
            "trusted",
            "--once",
            "--duration",
            "5s",
            "--input",
            "tone",
            "--output",
            "null",
        ],
    );
    let registered = b.expect_line("registered as ", WAIT);
    assert!(
        registered.contains("observed address 10.0.1.2:"),
        "{registered}"
    );
    let b_fp = registered.split_whitespace().nth(2).unwrap().to_string();
    let mut a = client_in(
        Some(&lan),
        to_relay,
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--duration",
            "5s",
            "--input",
            "tone:300",
            "--output",
            "null",
        ],
    );
    path_carried(
        &mut a,
        &mut b,
        "peer 192.168.1.2:",
        "peer 192.168.1.2:",
        150,
    );
    drop(nats);
    let _ = std::fs::remove_dir_all(dir);
}

/// `GET path` on a relay's HTTP address inside namespace `ns` (bash's
/// `/dev/tcp`: this test's own namespace has no route there): the body.
fn http_get_in(ns: &str, addr: SocketAddr, path: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{} && printf 'GET {path} HTTP/1.1\\r\\nHost: relay\\r\\n\
         Connection: close\\r\\n\\r\\n' >&3 && cat <&3",
        addr.ip(),
        addr.port()
    );
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "bash", "-c", &script])
        .output()
        .expect("ip netns exec runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Relay `name` in namespace `ns` with its own identity and `config`
/// (TOML), listening on every address there.
fn start_named_relay_in(ns: &str, dir: &Path, name: &str, config: &str) -> Relay {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let seed = dir.join(format!("{name}.seed"));
    let (cfg, seed) = (cfg.to_str().unwrap(), seed.to_str().unwrap());
    let extra = [
        "-i",
        seed,
        "-c",
        cfg,
        "--label",
        name,
        "--metrics-addr",
        "127.0.0.1:0",
    ];
    start_relay_in(Some(ns), dir, "0.0.0.0:0", &extra)
}

/// Alice and Bob each behind their own NAT and registered at two federated
/// relays (r1 and r3, on the public side): no relay knows both, so each
/// seals its addresses for the other (`call_path`), r1 and r3 carry them
/// unread, and the path comes up through both NATs (Bob punching, Alice
/// dialing) as on one relay.
#[test]
fn a_direct_path_across_two_relays_goes_through_both_nats() {
    across_two_relays(
        "nats-fed",
        NatKind::Home,
        ("peer 10.0.2.2:", "peer 10.0.1.2:"),
    );
}

/// The same across relays behind symmetric IPv4 NATs with IPv6 on both
/// sides: the sealed addresses carry each party's global IPv6 address, and
/// the path comes up over it.
#[test]
fn across_relays_symmetric_nats_meet_over_ipv6() {
    across_two_relays(
        "nats-fed-v6",
        NatKind::SymmetricWithIpv6,
        ("peer [2001:db8:b::2]:", "peer [2001:db8:a::2]:"),
    );
}

/// Across relays, the callee behind the symmetric NAT: the sealed addresses
/// are what each relay saw, so each side reads its half of the birthday
/// search as on one relay, and the path comes up through both NATs.
#[test]
fn across_relays_a_birthday_search_meets_a_symmetric_nat() {
    across_two_relays_for(
        "nats-fed-bday",
        NatKind::CalleeSymmetric,
        ("peer 10.0.2.2:", "peer 10.0.1.2:"),
        "16s",
    );
}

/// Across two relays no relay knows both parties: Alice's mapping flag
/// reaches Bob sealed with her addresses (`PathAddrs` flag bit 1), and the
/// carrier-grade NAT meets the symmetric one as on one relay.
#[test]
fn across_relays_a_carrier_grade_nat_meets_a_symmetric_nat() {
    across_two_relays_for(
        "nats-fed-cgn",
        NatKind::CallerCgnCalleeSymmetric,
        ("peer 10.0.2.2:", "peer 10.0.1.2:"),
        "16s",
    );
}

/// Alice calls Bob through r1 and r3 (federated) from behind NATs of
/// `kind`; the path comes up with each seeing the other's end as `sees`
/// (Alice's view, Bob's view).
fn across_two_relays(name: &str, kind: NatKind, sees: (&str, &str)) {
    across_two_relays_for(name, kind, sees, "8s");
}

/// [`across_two_relays`], the call lasting `secs`.
fn across_two_relays_for(name: &str, kind: NatKind, sees: (&str, &str), secs: &str) {
    let Some((_s, dir, nats)) = nat_test_of(name, kind) else {
        return;
    };
    let pubns = nats.ns("pub");
    let fp_of = |name: &str| -> String {
        let out = Command::new(bin("wzp-relay"))
            .args(["fingerprint", "-i"])
            .arg(dir.join(format!("{name}.seed")))
            .output()
            .expect("wzp-relay fingerprint runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let r3 = start_named_relay_in(
        &pubns,
        &dir,
        "r3",
        &format!(
            "[[trusted]]\nfingerprint = \"{}\"\nlabel = \"r1\"\n",
            fp_of("r1")
        ),
    );
    let r1 = start_named_relay_in(
        &pubns,
        &dir,
        "r1",
        &format!(
            "[[peers]]\naddress = \"127.0.0.1:{}\"\nfingerprint = \"{}\"\nlabel = \"r3\"\n",
            r3.addr.port(),
            r3.fingerprint
        ),
    );
    let r1_http = r1.metrics.expect("metrics address");
    wait_until("the link r1-r3 up", || {
        http_get_in(&pubns, r1_http, "/metrics")
            .contains("wzp_federation_peer_status{peer=\"r3\"} 2")
    });
    let speech = speech_like(16_000);
    write_wav(&dir.join("a-says.wav"), &speech);
    let b_at = SocketAddr::from(([10, 0, 2, 1], r3.addr.port()));
    let (mut b, b_fp) = bob_behind_nat(&nats, b_at, &dir, &r3, secs);
    wait_until("r1 has a route to bob", || {
        http_get_in(&pubns, r1_http, &format!("/route/{b_fp}")).contains("\"route\":\"peer\"")
    });
    let a_at = SocketAddr::from(([10, 0, 1, 1], r1.addr.port()));
    let mut a = alice_behind_nat(&nats, a_at, &dir, &r1, &b_fp, secs);
    // Each learns the other's NAT's public address, sealed.
    let got = b.expect_line("shared its addresses for a direct path", WAIT);
    assert!(got.contains("10.0.1.2:"), "{got}");
    let got = a.expect_line("shared its addresses for a direct path", WAIT);
    assert!(got.contains("10.0.2.2:"), "{got}");
    path_between(&mut a, &mut b, &dir, &speech, sees.0, sees.1);
    // Alice's addresses, sent twice: with her mapping test's flag, then
    // without it for a peer of an older build (docs/WIRE.md §10.2).
    let m = http_get_in(&pubns, r1_http, "/metrics");
    assert!(
        m.contains("wzp_federation_calls_total{event=\"path_forwarded\"} 2\n"),
        "{m}"
    );
    drop((r1, r3, nats));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_call_waiting_is_declined_or_answered_by_keys_and_answering_ends_the_call_in_progress() {
    let _s = serial();
    let dir = tmp("waiting");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let (mut b, b_fp) = bob_asks(
        &dir,
        &relay,
        &["--record", dir.join("bob.wav").to_str().unwrap()],
    );
    // Alice calls; bob answers.
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &["--input", "tone:300", "--output", "null"],
    );
    b.expect_nth("ringing: a answers, d declines", 1, WAIT);
    b.type_keys("a");
    assert_eq!(sas(&mut b), sas(&mut a));
    let carol_calls = |n: u32| {
        let heard = dir.join(format!("carol-heard-{n}.wav"));
        let p = client(
            &dir,
            &relay,
            "carol",
            &["call", &b_fp],
            &[
                "--input",
                "tone:500",
                "--output",
                heard.to_str().unwrap(),
                "--duration",
                "4s",
            ],
        );
        (p, heard)
    };
    // Carol calls while they talk: she hears it ring as a waiting call,
    // bob is asked; he declines.
    let (mut c, _) = carol_calls(1);
    let line = c.expect_line("ringing", WAIT);
    assert!(line.contains("in another call"), "{line}");
    b.expect_nth("call waiting", 1, WAIT);
    b.expect_nth(
        "a ends this call and answers the waiting one, s holds this call and answers it, d declines it",
        1,
        WAIT,
    );
    let calls = http_get(&relay, "/calls");
    assert!(calls.contains(r#""waiting":true"#), "{calls}");
    // Bob hears the waiting call's beeps under alice's voice (his recording
    // of the call, rewritten each second, has 440 Hz in it).
    wait_until("bob hears the waiting call's beeps", || {
        beep_level(&dir.join("bob.wav")) > -40.0
    });
    b.type_keys("d");
    c.expect_line("rejected", WAIT);
    assert_eq!(c.exit(WAIT).code(), Some(3), "{:?}", c.drain());
    b.expect_line("declined the waiting call from ", WAIT);
    // The call with alice goes on: a second waiting call, which bob takes.
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "alice is still in the call"
    );
    let (mut c, heard) = carol_calls(2);
    b.expect_nth("call waiting", 2, WAIT);
    b.type_keys("a");
    b.expect_line("ending this call to answer ", WAIT);
    a.expect_line("the other side hung up", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(0), "{:?}", a.drain());
    b.expect_line("hung up, for the waiting call", WAIT);
    b.expect_line("answering the waiting call from ", WAIT);
    c.expect_line("answered by ", WAIT);
    // Bob's second SAS line is the waiting call's.
    b.expect_nth("SAS: ", 2, WAIT);
    let b_sas: Vec<String> = b
        .drain()
        .into_iter()
        .filter(|l| l.starts_with("SAS: "))
        .collect();
    assert_eq!(b_sas[1].trim_start_matches("SAS: "), sas(&mut c));
    assert!(c.exit(WAIT).success(), "{:?}", c.drain());
    b.expect_line("the other side hung up", WAIT);
    assert!(b.child.try_wait().unwrap().is_none(), "bob still listens");
    let metrics = http_get(&relay, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "wzp_signal_calls_waiting_total 2"),
        "{metrics}"
    );
    b.kill();
    // Carol heard bob's 1000 Hz in the call she waited for.
    let wav = read_wav_mono(&heard).unwrap();
    let tail = &wav.samples[wav.samples.len() / 2..];
    let level = |f: f64| wzp_stages::audio::signal::goertzel_dbfs(tail, wav.rate, f);
    assert!(
        level(1000.0) > -30.0,
        "carol heard bob at {} dBFS",
        level(1000.0)
    );
    assert!(level(2300.0) < level(1000.0) - 20.0);
    // Bob's history, in the order each was kept: carol's first call
    // declined (while in alice's), alice's call once it ended, carol's.
    let (a_fp, c_fp) = (identity_of(&dir, "alice"), identity_of(&dir, "carol"));
    let said = history_lines(&dir, "bob", &[]);
    assert_eq!(
        in_history(&said),
        [
            (c_fp.as_str(), "declined"),
            (a_fp.as_str(), "answered"),
            (c_fp.as_str(), "answered")
        ],
        "{said:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// The (peer, outcome) of each incoming call in `history`'s lines
/// (`in   FP  OUTCOME[  DURATION]`), in the order they were kept.
fn in_history(lines: &[String]) -> Vec<(&str, &str)> {
    lines
        .iter()
        .map(|l| {
            let mut f = l.trim_start_matches("in   ").split("  ");
            (f.next().unwrap_or_default(), f.next().unwrap_or_default())
        })
        .collect()
}

/// The loudest 440 Hz (dBFS) over 0.2 s windows of the WAV at `path` (as
/// far as it is written), or -200 when it cannot be read yet.
fn beep_level(path: &Path) -> f64 {
    let Ok(wav) = read_wav_mono(path) else {
        return -200.0;
    };
    let win = wav.rate as usize / 5;
    (0..wav.samples.len().saturating_sub(win))
        .step_by(win / 2)
        .map(|i| {
            f64::from(wzp_stages::audio::signal::goertzel_dbfs(
                &wav.samples[i..i + win],
                wav.rate,
                440.0,
            ))
        })
        .fold(-200.0, f64::max)
}

#[test]
fn a_held_call_is_silent_both_ways_and_the_other_end_is_told_and_beeps() {
    use wzp_stages::audio::signal::goertzel_dbfs;
    let dir = tmp("hold");
    let relay = start_relay(&dir, "127.0.0.1:0");
    let bob_heard = dir.join("bob-heard.wav");
    let alice_heard = dir.join("alice-heard.wav");
    let mut cmd = client_cmd(
        None,
        relay.addr,
        &dir,
        &relay,
        "bob",
        &["listen"],
        &[
            "--accept",
            "ask",
            "--once",
            "--input",
            "tone:660",
            "--output",
            bob_heard.to_str().unwrap(),
        ],
    );
    let mut b = Proc::spawn_with_input("bob", &mut cmd);
    let line = b.expect_line("registered as ", WAIT);
    let b_fp = line.split_whitespace().nth(2).unwrap().to_string();
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["call", &b_fp],
        &[
            "--input",
            "tone:440",
            "--output",
            alice_heard.to_str().unwrap(),
            "--duration",
            "8s",
        ],
    );
    b.expect_line("ringing: a answers, d declines", WAIT);
    b.type_keys("a");
    let sas_a = sas(&mut a);
    assert_eq!(sas(&mut b), sas_a);
    // Bob holds the call, takes it back, and holds it again until alice's
    // 8 s end it; alice is told each.
    b.type_keys("h");
    let said = b.expect_line("you put the call on hold", WAIT);
    assert!(said.contains("(they are told)"), "{said}");
    a.expect_line("put the call on hold", WAIT);
    b.type_keys("h");
    b.expect_line("you took the call back (they are told)", WAIT);
    a.expect_line("took the call back", WAIT);
    b.type_keys("h");
    b.expect_nth("you put the call on hold", 2, WAIT);
    a.expect_nth("put the call on hold", 2, WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(0), "{:?}", a.drain());
    b.expect_line("the other side hung up", WAIT);
    assert!(b.exit(WAIT).success(), "{:?}", b.drain());
    // The last 4 s of each recording: nothing of the other's tone, and on
    // alice's side the hold beeps.
    let tail = |p: &Path| {
        let w = read_wav_mono(p).unwrap();
        let (n, r) = (w.samples.len(), w.rate as usize);
        assert!(n > 6 * r, "{n} samples at {r} Hz");
        (w.samples[n - 4 * r..].to_vec(), w.rate)
    };
    let (at_alice, at_bob) = (tail(&alice_heard), tail(&bob_heard));
    let level = |(x, r): &(Vec<f32>, u32), f: f64| goertzel_dbfs(x, *r, f);
    assert!(
        level(&at_alice, 660.0) < -60.0,
        "bob's tone at {} dBFS",
        level(&at_alice, 660.0)
    );
    assert!(
        level(&at_bob, 440.0) < -60.0,
        "alice's tone at {} dBFS",
        level(&at_bob, 440.0)
    );
    // The loudest 200 ms of 523 Hz: a beep (0.3 s every 4 s) at its level.
    let loudest = |(x, r): &(Vec<f32>, u32)| {
        x.chunks(*r as usize / 5)
            .map(|c| goertzel_dbfs(c, *r, 523.0))
            .fold(f32::MIN, f32::max)
    };
    assert!(
        loudest(&at_alice) > -35.0,
        "the hold beeps at {} dBFS",
        loudest(&at_alice)
    );
    assert!(
        loudest(&at_bob) < -60.0,
        "the holder hears no beeps: {}",
        loudest(&at_bob)
    );
}

/// The WAV at `path` as far as it is written: its samples and rate, or
/// `None` while it cannot be read.
fn wav_so_far(path: &Path) -> Option<(Vec<f32>, u32)> {
    read_wav_mono(path).ok().map(|w| (w.samples, w.rate))
}

/// Seconds of the WAV at `path` written so far (0 while unreadable).
fn wav_secs(path: &Path) -> f64 {
    wav_so_far(path).map_or(0.0, |(x, r)| x.len() as f64 / f64::from(r))
}

/// The level (dBFS) of `freq` in the last second written of `path`, or
/// -200 while it holds less.
fn last_second(path: &Path, freq: f64) -> f32 {
    match wav_so_far(path) {
        Some((x, r)) if x.len() > r as usize => {
            wzp_stages::audio::signal::goertzel_dbfs(&x[x.len() - r as usize..], r, freq)
        }
        _ => -200.0,
    }
}

/// The loudest `freq` (dBFS) over 0.2 s windows of `path` from `from_s`
/// to `to_s` seconds (as far as written).
fn loudest_between(path: &Path, freq: f64, from_s: f64, to_s: f64) -> f32 {
    let Some((x, r)) = wav_so_far(path) else {
        return -200.0;
    };
    let at = |s: f64| ((s * f64::from(r)) as usize).min(x.len());
    x[at(from_s)..at(to_s)]
        .chunks(r as usize / 5)
        .filter(|c| c.len() == r as usize / 5)
        .map(|c| wzp_stages::audio::signal::goertzel_dbfs(c, r, freq))
        .fold(-200.0, f32::max)
}

/// Waits until `path` holds `secs` more seconds than it did at `from`.
fn wait_written(path: &Path, from: f64, secs: f64) {
    wait_until("the recording to grow", || wav_secs(path) >= from + secs);
}

/// Bob listening on `relay`, asked at the keys (`--accept ask`, keys on
/// his standard input), a 1000 Hz tone in, nothing out, plus `extra`;
/// with his fingerprint once registered.
fn bob_asks(dir: &Path, relay: &Relay, extra: &[&str]) -> (Proc, String) {
    // What bob hears goes nowhere unless `extra` says where.
    let output: &[&str] = if extra.contains(&"--output") {
        &[]
    } else {
        &["--output", "null"]
    };
    let args = [&["--accept", "ask", "--input", "tone:1000"], output, extra].concat();
    let mut cmd = client_cmd(None, relay.addr, dir, relay, "bob", &["listen"], &args);
    let mut b = Proc::spawn_with_input("bob", &mut cmd);
    let line = b.expect_line("registered as ", WAIT);
    let fp = line.split_whitespace().nth(2).unwrap().to_string();
    (b, fp)
}

/// Three parties on one relay: bob listens (asking; a 1000 Hz tone), alice
/// calls him (300 Hz) and he answers; carol calls (500 Hz) while they talk,
/// and bob holds alice's call to answer hers (`s`). Returns once carol is
/// answered; what alice and carol hear goes to `alice.wav` and `carol.wav`.
struct Three {
    dir: PathBuf,
    relay: Relay,
    b: Proc,
    a: Proc,
    c: Proc,
    alice_heard: PathBuf,
    carol_heard: PathBuf,
}

fn bob_holds_alice_to_answer_carol(name: &str, bob_extra: &[&str]) -> Three {
    bob_holds_alice_to_answer_carol_with(name, bob_extra, &[])
}

/// [`bob_holds_alice_to_answer_carol`], alice and carol run with
/// `party_extra` too, and keys on their standard input ([`Proc::type_keys`]).
fn bob_holds_alice_to_answer_carol_with(
    name: &str,
    bob_extra: &[&str],
    party_extra: &[&str],
) -> Three {
    let dir = tmp(name);
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let (mut b, b_fp) = bob_asks(&dir, &relay, bob_extra);
    let (alice_heard, carol_heard) = (dir.join("alice.wav"), dir.join("carol.wav"));
    let party = |user: &str, tone: &str, heard: &Path| {
        let args = [
            &["--input", tone, "--output", heard.to_str().unwrap()],
            party_extra,
        ]
        .concat();
        let mut cmd = client_cmd(
            None,
            relay.addr,
            &dir,
            &relay,
            user,
            &["call", &b_fp],
            &args,
        );
        Proc::spawn_with_input(user, &mut cmd)
    };
    let mut a = party("alice", "tone:300", &alice_heard);
    b.expect_line("ringing: a answers, d declines", WAIT);
    b.type_keys("a");
    assert_eq!(sas(&mut b), sas(&mut a));
    wait_until("alice hears bob", || {
        last_second(&alice_heard, 1000.0) > -30.0
    });
    let mut c = party("carol", "tone:500", &carol_heard);
    b.expect_line("s holds this call and answers it", WAIT);
    b.type_keys("s");
    let said = b.expect_line("holding the call with ", WAIT);
    assert!(said.contains("(they are told) to answer "), "{said}");
    a.expect_line("put the call on hold", WAIT);
    b.expect_line("answering the waiting call from ", WAIT);
    c.expect_line("answered by ", WAIT);
    Three {
        dir,
        relay,
        b,
        a,
        c,
        alice_heard,
        carol_heard,
    }
}

#[test]
fn s_holds_the_call_to_answer_a_waiting_one_and_swaps_between_the_two() {
    let _s = serial();
    let Three {
        dir,
        relay,
        mut b,
        mut a,
        mut c,
        alice_heard,
        carol_heard,
    } = bob_holds_alice_to_answer_carol("keep", &[]);
    let held_at = wav_secs(&alice_heard);
    b.expect_nth("SAS: ", 2, WAIT);
    let b_sas: Vec<String> = b
        .drain()
        .into_iter()
        .filter(|l| l.starts_with("SAS: "))
        .collect();
    assert_eq!(b_sas[1].trim_start_matches("SAS: "), sas(&mut c));
    let calls = http_get(&relay, "/calls");
    assert!(calls.contains(r#""kept":true"#), "{calls}");
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "alice's call goes on, held"
    );
    // Carol hears bob; alice hears the hold beeps and nothing of bob.
    wait_until("carol hears bob", || {
        last_second(&carol_heard, 1000.0) > -30.0
    });
    wait_until("alice hears the hold beeps", || {
        loudest_between(&alice_heard, 523.0, held_at, f64::MAX) > -35.0
    });
    wait_written(&alice_heard, held_at, 3.0);
    let bob_at_alice = loudest_between(&alice_heard, 1000.0, held_at + 1.5, held_at + 3.0);
    assert!(
        bob_at_alice < -50.0,
        "alice heard bob on hold at {bob_at_alice} dBFS"
    );
    // Bob swaps: carol is held, alice's call taken back, each told.
    b.type_keys("s");
    b.expect_nth("holding the call with ", 2, WAIT);
    let said = b
        .drain()
        .into_iter()
        .filter(|l| l.contains("holding the call with "))
        .nth(1)
        .unwrap();
    assert!(
        said.contains("(they are told) to take back the call with "),
        "{said}"
    );
    c.expect_line("put the call on hold", WAIT);
    let carol_held_at = wav_secs(&carol_heard);
    a.expect_line("took the call back", WAIT);
    b.expect_line("back (they are told)", WAIT);
    wait_until("alice hears bob again", || {
        last_second(&alice_heard, 1000.0) > -30.0
    });
    wait_until("carol hears the hold beeps", || {
        loudest_between(&carol_heard, 523.0, carol_held_at, f64::MAX) > -35.0
    });
    // Bob hangs up alice: carol's call is his call again, still held,
    // until h takes it back.
    b.type_keys("q");
    a.expect_line("the other side hung up", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(0), "{:?}", a.drain());
    b.expect_line("is still on hold: h takes it back", WAIT);
    let still_at = wav_secs(&carol_heard);
    wait_written(&carol_heard, still_at, 2.0);
    let bob_at_carol = loudest_between(&carol_heard, 1000.0, still_at + 1.0, still_at + 2.0);
    assert!(
        bob_at_carol < -50.0,
        "carol hears bob at {bob_at_carol} dBFS while still held ({still_at} s into her call)"
    );
    b.type_keys("h");
    c.expect_line("took the call back", WAIT);
    wait_until("carol hears bob again", || {
        last_second(&carol_heard, 1000.0) > -30.0
    });
    b.type_keys("q");
    c.expect_line("the other side hung up", WAIT);
    assert_eq!(c.exit(WAIT).code(), Some(0), "{:?}", c.drain());
    assert!(b.child.try_wait().unwrap().is_none(), "bob still listens");
    let metrics = http_get(&relay, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "wzp_signal_calls_kept_total 1"),
        "{metrics}"
    );
    b.kill();
    // Bob's history: alice's call once it ended, then carol's.
    let (a_fp, c_fp) = (identity_of(&dir, "alice"), identity_of(&dir, "carol"));
    let said = history_lines(&dir, "bob", &[]);
    assert_eq!(
        in_history(&said),
        [(a_fp.as_str(), "answered"), (c_fp.as_str(), "answered")],
        "{said:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn c_joins_a_held_call_with_the_one_in_progress_and_each_party_hears_the_other() {
    let _s = serial();
    let recorded = tmp("join-rec").join("bob.wav");
    std::fs::create_dir_all(recorded.parent().unwrap()).unwrap();
    let bob_heard = recorded.with_file_name("bob-heard.wav");
    let Three {
        dir,
        relay,
        mut b,
        mut a,
        mut c,
        alice_heard,
        carol_heard,
    } = bob_holds_alice_to_answer_carol_with(
        "join",
        &[
            "--record",
            recorded.to_str().unwrap(),
            "--output",
            bob_heard.to_str().unwrap(),
        ],
        // Keys for alice and carol (`h` holds).
        &["--call-waiting"],
    );
    // Bob is in carol's call (its SAS is his second).
    b.expect_nth("SAS: ", 2, WAIT);
    // Joined: alice's call is taken back, and each party hears the other
    // and bob.
    b.type_keys("c");
    b.expect_line("joined the calls: ", WAIT);
    a.expect_line("took the call back", WAIT);
    for (who, heard, other) in [
        ("alice", &alice_heard, 500.0),
        ("carol", &carol_heard, 300.0),
    ] {
        wait_until(&format!("{who} hears the other party and bob"), || {
            last_second(heard, other) > -30.0 && last_second(heard, 1000.0) > -30.0
        });
    }
    // Bob records (`--record`): the joined call's recording (his third:
    // alice's call, carol's, then the two joined) holds all three, and
    // both parties are told: bob shows as recording in both call rooms.
    let joined_rec = recorded.with_file_name("bob-3.wav");
    wait_until("bob's recording of the joined call holds all three", || {
        [300.0, 500.0, 1000.0]
            .iter()
            .all(|f| last_second(&joined_rec, *f) > -35.0)
    });
    wait_until("bob shows as recording in both call rooms", || {
        http_get(&relay, "/rooms")
            .matches(r#""recording":true"#)
            .count()
            == 2
    });
    // Bob splits them (`s`): alice is held again, carol goes on with bob
    // alone; `c` joins them once more.
    b.type_keys("s");
    b.expect_nth("holding the call with ", 2, WAIT);
    a.expect_nth("put the call on hold", 2, WAIT);
    let split_at = wav_secs(&carol_heard);
    wait_written(&carol_heard, split_at, 3.0);
    let alice_at_carol = loudest_between(&carol_heard, 300.0, split_at + 1.5, split_at + 3.0);
    assert!(
        alice_at_carol < -50.0,
        "carol hears alice at {alice_at_carol} dBFS after the split"
    );
    wait_until("carol hears bob after the split", || {
        last_second(&carol_heard, 1000.0) > -30.0
    });
    b.type_keys("c");
    b.expect_nth("joined the calls: ", 2, WAIT);
    a.expect_nth("took the call back", 2, WAIT);
    wait_until("carol hears alice again", || {
        last_second(&carol_heard, 300.0) > -30.0
    });
    // Both parties hold: bob, alone in the joined call, hears the hold
    // beeps; both take it back and talk on.
    a.type_keys("h");
    b.expect_line("put their call on hold", WAIT);
    c.type_keys("h");
    b.expect_nth("put their call on hold", 2, WAIT);
    let both_held_at = wav_secs(&bob_heard);
    wait_until("bob hears the hold beeps", || {
        loudest_between(&bob_heard, 523.0, both_held_at, f64::MAX) > -35.0
    });
    a.type_keys("h");
    c.type_keys("h");
    b.expect_nth("took their call back", 2, WAIT);
    wait_until("carol hears alice once more", || {
        last_second(&carol_heard, 300.0) > -30.0
    });
    // Carol leaves (SIGTERM: she hangs up): alice's call goes on with bob
    // alone.
    let term = Command::new("kill")
        .args(["-TERM", &c.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(c.exit(WAIT).success(), "{:?}", c.drain());
    b.expect_line(" hung up (", WAIT);
    // Two lines said so after the split; the third is alice's call's.
    b.expect_nth(" goes on", 3, WAIT);
    let left_at = wav_secs(&alice_heard);
    wait_written(&alice_heard, left_at, 3.0);
    let carol_at_alice = loudest_between(&alice_heard, 500.0, left_at + 1.5, left_at + 3.0);
    assert!(
        carol_at_alice < -50.0,
        "alice still hears carol at {carol_at_alice} dBFS"
    );
    wait_until("alice hears bob on his own", || {
        last_second(&alice_heard, 1000.0) > -30.0
    });
    b.type_keys("q");
    a.expect_line("the other side hung up", WAIT);
    assert_eq!(a.exit(WAIT).code(), Some(0), "{:?}", a.drain());
    assert!(b.child.try_wait().unwrap().is_none(), "bob still listens");
    b.kill();
    let (a_fp, c_fp) = (identity_of(&dir, "alice"), identity_of(&dir, "carol"));
    let said = history_lines(&dir, "bob", &[]);
    assert_eq!(
        in_history(&said),
        [(c_fp.as_str(), "answered"), (a_fp.as_str(), "answered")],
        "{said:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `call` takes a waiting call as `listen` does: bob calls alice (who
/// answers), carol calls bob while they talk, and bob's `call` rings her as
/// a waiting call; `s` holds alice to answer carol, `s` swaps back, `q`
/// hangs up alice and leaves carol held until `h`; when carol's call ends
/// too, bob's `call` is done (exit 0) and his history holds both calls.
#[test]
fn call_takes_a_waiting_call_holds_and_swaps_and_ends_with_its_last_call() {
    let _s = serial();
    let dir = tmp("call-waiting");
    let relay = start_relay_with(&dir, "127.0.0.1:0", &["--metrics-addr", "127.0.0.1:0"]);
    let (alice_heard, carol_heard) = (dir.join("alice.wav"), dir.join("carol.wav"));
    let mut a = client(
        &dir,
        &relay,
        "alice",
        &["listen"],
        &[
            "--accept",
            "generic",
            "--input",
            "tone:300",
            "--output",
            alice_heard.to_str().unwrap(),
        ],
    );
    let line = a.expect_line("registered as ", WAIT);
    let a_fp = line.split_whitespace().nth(2).unwrap().to_string();
    let b_fp = identity_of(&dir, "bob");
    let mut cmd = client_cmd(
        None,
        relay.addr,
        &dir,
        &relay,
        "bob",
        &["call", &a_fp],
        &["--call-waiting", "--input", "tone:1000", "--output", "null"],
    );
    let mut b = Proc::spawn_with_input("bob", &mut cmd);
    assert_eq!(sas(&mut b), sas(&mut a));
    wait_until("alice hears bob", || {
        last_second(&alice_heard, 1000.0) > -30.0
    });
    let mut c = client(
        &dir,
        &relay,
        "carol",
        &["call", &b_fp],
        &[
            "--input",
            "tone:500",
            "--output",
            carol_heard.to_str().unwrap(),
        ],
    );
    c.expect_line("ringing: ", WAIT);
    b.expect_line("s holds this call and answers it", WAIT);
    b.type_keys("s");
    let said = b.expect_line("holding the call with ", WAIT);
    assert!(said.contains("(they are told) to answer "), "{said}");
    a.expect_line("put the call on hold", WAIT);
    b.expect_line("answering the waiting call from ", WAIT);
    c.expect_line("answered by ", WAIT);
    let calls = http_get(&relay, "/calls");
    assert!(calls.contains(r#""kept":true"#), "{calls}");
    wait_until("carol hears bob", || {
        last_second(&carol_heard, 1000.0) > -30.0
    });
    // Swap: carol held, alice's call (the one bob placed) taken back.
    b.type_keys("s");
    c.expect_line("put the call on hold", WAIT);
    a.expect_line("took the call back", WAIT);
    wait_until("alice hears bob again", || {
        last_second(&alice_heard, 1000.0) > -30.0
    });
    // Bob hangs up alice; carol's call is his call, held until h.
    b.type_keys("q");
    a.expect_line("the other side hung up", WAIT);
    b.expect_line("is still on hold: h takes it back", WAIT);
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "bob's call goes on with carol"
    );
    b.type_keys("h");
    c.expect_line("took the call back", WAIT);
    wait_until("carol hears bob again", || {
        last_second(&carol_heard, 1000.0) > -30.0
    });
    // Carol hangs up: bob's last call is over, and so is his `call`.
    let sent = Command::new("kill")
        .args(["-INT", &c.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    c.expect_line("hung up", WAIT);
    assert_eq!(b.exit(WAIT).code(), Some(0), "{:?}", b.drain());
    let said = history_lines(&dir, "bob", &[]);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(
        said.iter()
            .any(|l| l.starts_with("out  ") && l.contains("  answered  ")),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|l| l.starts_with("in   ") && l.contains("  answered  ")),
        "{said:?}"
    );
    a.kill();
    let _ = std::fs::remove_dir_all(dir);
}

/// `--top` in two joined calls shows both: the call with the devices, then
/// the other call's graph (no device), each with its own figures.
#[test]
fn top_in_two_joined_calls_shows_the_figures_of_both() {
    let _s = serial();
    // The relay is bound: a field left to `..` would be dropped here, and
    // the relay with it.
    let Three {
        dir,
        relay: _relay,
        mut b,
        mut a,
        mut c,
        ..
    } = bob_holds_alice_to_answer_carol("join-top", &["--top"]);
    b.expect_line("wzp top — direct call with ", WAIT);
    b.type_keys("c");
    b.expect_line("joined the calls: ", WAIT);
    a.expect_line("took the call back", WAIT);
    // A screen with both: the main call's title, its table, then the
    // other call's.
    let other = b.expect_line("wzp top — joined: the call with ", WAIT);
    assert!(other.contains("hears this call too"), "{other}");
    b.expect_line("audio.bus_source", WAIT);
    b.type_keys("q");
    a.expect_line("the other side hung up", WAIT);
    c.expect_line("the other side hung up", WAIT);
    let _ = std::fs::remove_dir_all(dir);
}
