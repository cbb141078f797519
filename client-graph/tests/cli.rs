//! The `wzp-client` binary, run as a user would.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wzp-client"))
}

fn repo(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wzp-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn run_loopback_on_the_builtin_input_writes_wav_and_stats() {
    let dir = tmp("run");
    let wav = dir.join("out.wav");
    let json = dir.join("stats.json");
    let out = bin()
        .arg("run")
        .arg(repo("graphs/loopback.toml"))
        .args(["--set", &format!("output={}", wav.display())])
        .args(["--stats-json", json.to_str().unwrap(), "--no-realtime"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The per-stage table is printed.
    for col in ["STAGE", "BUSY p50", "BUSY p99", "WAIT p99", "B/Q", "XRUNS"] {
        assert!(stdout.contains(col), "table lacks {col}:\n{stdout}");
    }
    let meta = std::fs::metadata(&wav).expect("output WAV written");
    assert!(
        meta.len() > 48_000,
        "output WAV is only {} bytes",
        meta.len()
    );
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let stages = stats["stages"].as_array().unwrap();
    assert!(stages.len() >= 4, "stats list {} stages", stages.len());
    for s in stages {
        assert!(
            s["cycles"].as_u64().unwrap() > 0,
            "stage {} never ran",
            s["id"]
        );
    }
    assert_eq!(stats["domains"][0]["domain"], "clocked");
}

/// `wzp-client run graphs/loopback.toml` at 20 % loss (seed 3), writing
/// its output into `dir`.
fn lossy_loopback(dir: &std::path::Path) -> Command {
    let mut cmd = bin();
    cmd.arg("run")
        .arg(repo("graphs/loopback.toml"))
        .args([
            "--set",
            &format!("output={}", dir.join("out.wav").display()),
        ])
        .args(["--set", "loss=20", "--set", "seed=3"]);
    cmd
}

/// `run` prints each decision of the loopback's quality controller as it
/// is taken, with its reason and graph time, on a fast clock too; `--quiet`
/// leaves them out.
#[test]
fn run_prints_every_quality_decision_with_its_graph_time() {
    let dir = tmp("run-decisions");
    let run = |extra: &[&str]| {
        let out = lossy_loopback(&dir)
            .args(["--clock", "fast"])
            .args(["--no-realtime", "--stats-json"])
            .arg(dir.join("stats.json"))
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "run failed:\n{stdout}");
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("stats.json")).unwrap())
                .unwrap();
        let adapt = stats["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "adapt")
            .unwrap()
            .clone();
        (stdout, adapt)
    };
    let (stdout, adapt) = run(&[]);
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("adapt: "))
        .collect();
    assert_eq!(
        lines.len() as u64,
        adapt["counters"]["decisions"].as_u64().unwrap(),
        "{stdout}"
    );
    assert!(lines[0].starts_with("adapt: startup -> "), "{stdout}");
    assert!(lines[0].ends_with(" at 0.00 s"), "{stdout}");
    // The 20 % loss is answered with redundancy, after the first report,
    // and the line says what that report said.
    let loss = lines
        .iter()
        .find(|l| l.starts_with("adapt: random_loss") || l.starts_with("adapt: burst_loss"))
        .unwrap_or_else(|| panic!("no loss decision:\n{stdout}"));
    assert!(loss.contains("(worst loss "), "{loss}");
    assert!(!loss.contains("worst loss ?"), "{loss}");
    let at: f64 = loss
        .rsplit_once(" at ")
        .and_then(|(_, t)| t.strip_suffix(" s"))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time in {loss}"));
    assert!((0.9..4.0).contains(&at), "{loss}");
    let (quiet, _) = run(&["--quiet"]);
    assert!(!quiet.contains("adapt: "), "{quiet}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn run_top_shows_the_loop_adapting_above_the_table() {
    let dir = tmp("run-top");
    let out = lossy_loopback(&dir)
        .args([
            "--clock",
            "timer",
            "--duration",
            "5s",
            "--top",
            "--no-realtime",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "run failed:\n{stdout}");
    let screens: Vec<&str> = stdout.split("wzp top — loopback — ").skip(1).collect();
    assert!(screens.len() >= 3, "{} screens:\n{stdout}", screens.len());
    for s in &screens {
        assert!(s.contains("\nsending    good: Opus "), "{s}");
        assert!(
            s.contains("\nhearing    1 sender\n  jb       delay "),
            "{s}"
        );
        assert!(s.contains("\ndecisions  "), "{s}");
        assert!(s.contains("\nSTAGE "), "{s}");
    }
    assert!(
        screens[0].contains("\ndecisions  startup -> "),
        "{}",
        screens[0]
    );
    assert!(
        screens[0].contains(", DRED 200 ms (loss hint 10);"),
        "{}",
        screens[0]
    );
    // The 20 % loss is answered within the run (redundancy for random loss),
    // and the view shows the decision and what it set.
    let answered = screens
        .iter()
        .find(|s| s.contains("random_loss -> ") || s.contains("fec_loss -> "))
        .unwrap_or_else(|| panic!("no loss decision shown:\n{stdout}"));
    assert!(!answered.contains("worst loss ? %"), "{answered}");
    let last = screens.last().unwrap();
    assert!(
        last.contains("LBRR (loss hint ") || last.contains("RaptorQ 100 %"),
        "{last}"
    );
    // Decisions are in the view, not printed as lines.
    assert!(
        !stdout.lines().any(|l| l.starts_with("adapt: ")),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn explain_prints_domains_and_latency_budget() {
    let out = bin()
        .args(["graph", "explain"])
        .arg(repo("graphs/loopback.toml"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for part in [
        "stages:",
        "links:",
        "domains:",
        "latency budget",
        "longest path",
    ] {
        assert!(s.contains(part), "explain lacks {part:?}:\n{s}");
    }
}

#[test]
fn stages_lists_kinds_and_describes_one() {
    let out = bin().arg("stages").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for kind in ["audio.wav_source", "audio.resample", "codec.opus_encode"] {
        assert!(s.contains(kind), "stages lacks {kind}");
    }
    let out = bin().args(["stages", "audio.gain"]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        s.contains("gain_db") && s.contains("inputs:") && s.contains("outputs:"),
        "{s}"
    );
    let out = bin().args(["stages", "audio.gian"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `audio.gain`"));
}

#[test]
fn a_bad_graph_fails_with_file_line_and_help() {
    let dir = tmp("bad");
    let g = dir.join("bad.toml");
    std::fs::write(
        &g,
        "[graph]\nname = \"bad\"\n\n[[stage]]\nid = \"src\"\nkind = \"audio.tone_sorce\"\n",
    )
    .unwrap();
    let out = bin().arg("run").arg(&g).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:4"), "{err}");
    assert!(err.contains("stage `src`"), "{err}");
    assert!(err.contains("did you mean `audio.tone_source`"), "{err}");
    assert!(!err.contains("error: error:"), "{err}");
    let out = bin().args(["run", "/nonexistent.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = bin()
        .args(["run"])
        .arg(repo("graphs/loopback.toml"))
        .args(["--set", "novalue"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=VALUE"));
}

#[test]
fn help_shows_examples() {
    let out = bin().arg("--help").output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("Examples:") && s.contains("wzp-client run graphs/loopback.toml"),
        "{s}"
    );
}

#[test]
fn every_subcommand_help_has_examples() {
    for sub in [
        "run",
        "join",
        "demo",
        "graph",
        "stages",
        "identity",
        "call",
        "listen",
        "reflect",
        "version-check",
        "replay-adapt",
        "devices",
        "contacts",
        "history",
    ] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            s.contains("Examples:"),
            "{sub} --help has no examples:\n{s}"
        );
    }
}

/// A relay that is not there: `join` fails with a clear message and a
/// non-zero status within its handshake timeout, instead of running the
/// whole `--duration`.
#[test]
fn join_to_an_unreachable_relay_fails_clearly() {
    // A bound UDP socket nobody answers on: the handshake can only time out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let dir = tmp("unreachable");
    let join_through = |relays: &str| {
        bin()
            .args(["join", "--relay", relays, "--room", "nobody-here"])
            .args(["--input", "tone", "--output", "null", "--duration", "60s"])
            .args(["--identity", dir.join("id").to_str().unwrap()])
            .args(["--known-relays", dir.join("known").to_str().unwrap()])
            .args(["--no-realtime", "--quiet"])
            .output()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let out = join_through(&addr);
    let took = started.elapsed();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach the relay"), "{err}");
    // Well before the 60 s it was asked to run.
    assert!(took < std::time::Duration::from_secs(30), "took {took:?}");
    println!("gave up after {took:?}");

    // Two relays given, neither there: each is tried, and each is named.
    let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let other = other.local_addr().unwrap().to_string();
    let out = join_through(&format!("{addr},{other}"));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no relay took the call"), "{err}");
    for a in [&addr, &other] {
        assert!(
            err.contains(&format!("\n  {a}: cannot reach the relay")),
            "{err}"
        );
    }
}

/// Several relays take one pinned fingerprint each, in order, or none.
#[test]
fn relay_fingerprints_must_match_the_relays_given() {
    let fp = ["ab"; 32].join(":");
    for (relays, fps, says) in [
        (
            "127.0.0.1:1,127.0.0.1:2",
            fp.clone(),
            "1 --relay-fingerprint for 2 relays",
        ),
        (
            "127.0.0.1:1",
            format!("{fp},{fp}"),
            "2 --relay-fingerprint for 1 relays",
        ),
        ("127.0.0.1:1,127.0.0.1:1", fp.clone(), "given twice"),
        (
            "127.0.0.1:1",
            "ab:cd".to_string(),
            "--relay-fingerprint ab:cd",
        ),
    ] {
        let out = bin()
            .args(["join", "--relay", relays, "--relay-fingerprint", &fps])
            .args(["--room", "r", "--input", "tone", "--output", "null"])
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{relays} {fps}: {err}");
        assert!(err.contains(says), "{relays} {fps}: {err}");
    }
    // `listen` takes several too; commands that go through one say so.
    let out = bin()
        .args(["listen", "--relay", "127.0.0.1:1,127.0.0.1:2"])
        .args(["--relay-fingerprint", &fp])
        .output()
        .unwrap();
    assert!(stderr_of(&out).contains("1 --relay-fingerprint for 2 relays"));
    let dir = tmp("one-relay");
    let out = bin()
        .args(["messages", "--relay", "127.0.0.1:1,127.0.0.1:2"])
        .args(["--identity", dir.join("id").to_str().unwrap()])
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("2 relays given: this command goes through one"),
        "{err}"
    );
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `--set` of a name the graph does not have is an error naming it, the
/// graph file, the graph's names (sorted) and the likely one meant.
#[test]
fn an_unknown_set_name_is_refused_by_run_explain_and_join() {
    let dir = tmp("unknown-set");
    let loopback = repo("graphs/loopback.toml");
    let runs: Vec<(&str, Vec<String>)> = vec![
        (
            "run",
            vec![
                "run".into(),
                loopback.display().to_string(),
                "--no-realtime".into(),
            ],
        ),
        (
            "explain",
            vec![
                "graph".into(),
                "explain".into(),
                loopback.display().to_string(),
            ],
        ),
    ];
    for (what, args) in &runs {
        let out = bin()
            .args(args)
            .args(["--set", "gain_db=3", "--set", "inptu=talk.wav"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = stderr_of(&out);
        assert!(err.contains("loopback.toml"), "{what}: {err}");
        assert!(err.contains("`inptu`"), "{what}: {err}");
        assert!(err.contains("did you mean `input`?"), "{what}: {err}");
        assert!(
            err.contains("gain_db, inband_fec, input,"),
            "{what}: the names, sorted: {err}"
        );
        assert!(
            !err.contains("`gain_db`"),
            "{what}: a known name refused: {err}"
        );
    }
    // Known names are still taken: the loopback graph runs with them.
    let wav = dir.join("o.wav");
    let out = bin()
        .arg("run")
        .arg(&loopback)
        .args(["--set", &format!("output={}", wav.display())])
        .args([
            "--set",
            "gain_db=-3",
            "--duration",
            "1s",
            "--quiet",
            "--no-realtime",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));

    // join: the call graph's own names (room, input, ...) are filled by the
    // client; only the user's --set names are checked, before anything is
    // created or dialled.
    let id = dir.join("join.seed");
    let out = bin()
        .args(["join", "--relay", "127.0.0.1:9", "--room", "r"])
        .args(["--input", "tone", "--output", "null"])
        .args(["--set", "fec_raito=0.5", "--set", "jb_min=40ms"])
        .arg("--identity")
        .arg(&id)
        .arg("--known-relays")
        .arg(dir.join("known"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("graphs/call.toml"), "{err}");
    assert!(err.contains("`fec_raito`"), "{err}");
    assert!(err.contains("did you mean `fec_ratio`?"), "{err}");
    assert!(err.contains("room, room_secret"), "{err}");
    assert!(!err.contains("`jb_min`"), "{err}");
    assert!(!id.exists(), "an identity was created before the check");
    // And with --graph, the names are that file's.
    let out = bin()
        .args(["join", "--relay", "127.0.0.1:9", "--room", "r"])
        .arg("--graph")
        .arg(&loopback)
        .args(["--set", "room_secret_=x"])
        .arg("--identity")
        .arg(&id)
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("loopback.toml"), "{err}");
    assert!(err.contains("`room_secret_`"), "{err}");
}

#[test]
fn a_short_room_secret_is_refused_up_front() {
    let dir = tmp("short-secret");
    let id = dir.join("id.seed");
    let out = bin()
        .args(["join", "--relay", "127.0.0.1:9", "--room", "r"])
        .args(["--room-secret", "fifteen bytes!!"])
        .args(["--input", "tone", "--output", "null"])
        .arg("--identity")
        .arg(&id)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr_of(&out);
    assert!(err.contains("15 bytes"), "{err}");
    assert!(err.contains("at least 16"), "{err}");
    assert!(err.contains("head -c 24 /dev/urandom | base64"), "{err}");
    assert!(!id.exists(), "an identity was created before the check");
}

/// The relay binary beside this one (`cargo build -p wzp-relay`).
fn relay_bin() -> PathBuf {
    let relay = PathBuf::from(env!("CARGO_BIN_EXE_wzp-client")).with_file_name("wzp-relay");
    assert!(
        relay.exists(),
        "{} is missing: build it with `cargo build -p wzp-relay` (cargo test --workspace does)",
        relay.display()
    );
    relay
}

struct RelayChild(std::process::Child);

impl Drop for RelayChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a relay on loopback; its QUIC address, from its `listening` line.
fn start_relay(dir: &std::path::Path) -> (RelayChild, String) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = Command::new(relay_bin())
        .arg("-i")
        .arg(dir.join("relay.seed"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wzp-relay starts");
    let stdout = child.stdout.take().unwrap();
    let child = RelayChild(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("wzp-relay prints its `listening` line");
        if let Some(quic) = line
            .strip_prefix("listening quic=")
            .and_then(|r| r.split_whitespace().next())
        {
            return (child, quic.to_string());
        }
    }
}

/// `join --room x` without `--room-secret`: a one-letter open room works
/// (its derived secret is long enough), with the warning that anyone who
/// knows the name can listen; two members hear each other.
#[test]
fn an_open_room_with_a_short_name_just_works() {
    let dir = tmp("open-room");
    let (_relay, addr) = start_relay(&dir);
    let member = |name: &str, input: &str| {
        bin()
            .args(["join", "--relay", &addr, "--room", "x"])
            .args(["--input", input, "--output"])
            .arg(dir.join(format!("{name}.wav")))
            .arg("--identity")
            .arg(dir.join(format!("{name}.seed")))
            .arg("--known-relays")
            .arg(dir.join(format!("{name}.known")))
            .args(["--duration", "3s", "--quiet", "--no-realtime"])
            .arg("--stats-json")
            .arg(dir.join(format!("{name}.json")))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = member("alice", "tone:440");
    let b = member("bob", "tone:660");
    for (child, name) in [(a, "alice"), (b, "bob")] {
        let out = child.wait_with_output().unwrap();
        let err = stderr_of(&out);
        assert!(out.status.success(), "{name}: {err}");
        assert!(!err.contains("too short"), "{name}: {err}");
        assert!(
            err.contains("anyone who knows `x` can listen"),
            "{name}: the warning: {err}"
        );
        let stats: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let open = stats["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "open")
            .expect("an `open` stage");
        let opened = open["counters"]["opened"].as_u64().unwrap();
        assert!(opened > 50, "{name} opened only {opened} packets");
        assert_eq!(open["counters"]["bad_tag"].as_u64(), Some(0), "{name}");
    }
}

/// An explicit --log wins over RUST_LOG (which silently overrode it), and
/// an empty RUST_LOG is no filter (it switched every warning off).
#[test]
fn an_explicit_log_flag_wins_over_rust_log() {
    let out = bin()
        .args(["--log", "info", "stages"])
        .env("RUST_LOG", "wzp_engine=loud")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A recording that cannot be written warns; an empty RUST_LOG keeps it.
    let out = bin()
        .args(["run"])
        .arg(repo("graphs/loopback.toml"))
        .args(["--set", "output=/dev/full", "--quiet", "--no-realtime"])
        .env("RUST_LOG", "")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("WARN") && err.contains("cannot write"),
        "{err}"
    );
}

/// A log filter that does not parse (`--log`, or `RUST_LOG` without it) is
/// an error saying which and why, with a non-zero exit, in all three
/// binaries: not a silent fall back to `warn` (or the relay's default).
#[test]
fn a_bad_log_filter_is_refused_by_every_binary() {
    let netem = || Command::new(env!("CARGO_BIN_EXE_wzp-netem"));
    let netem_args = [
        "--listen",
        "127.0.0.1:0",
        "--to",
        "127.0.0.1:9",
        "--duration",
        "1s",
    ];
    let bad = "wzp_engine=loud";
    let cases: Vec<(&str, Command, &str)> = vec![
        (
            "wzp-client --log",
            {
                let mut c = bin();
                c.args(["--log", bad, "stages"]).env_remove("RUST_LOG");
                c
            },
            "--log",
        ),
        (
            "wzp-client RUST_LOG",
            {
                let mut c = bin();
                c.args(["stages"]).env("RUST_LOG", bad);
                c
            },
            "RUST_LOG",
        ),
        (
            "wzp-netem --log",
            {
                let mut c = netem();
                c.args(netem_args)
                    .args(["--log", bad])
                    .env_remove("RUST_LOG");
                c
            },
            "--log",
        ),
        (
            "wzp-netem RUST_LOG",
            {
                let mut c = netem();
                c.args(netem_args).env("RUST_LOG", bad);
                c
            },
            "RUST_LOG",
        ),
        (
            "wzp-relay RUST_LOG",
            {
                // A config it cannot write: were the filter taken, the relay
                // would stop there (without the message), not serve on.
                let mut c = Command::new(relay_bin());
                c.args([
                    "--listen",
                    "127.0.0.1:0",
                    "--config",
                    "/proc/no/such/relay.toml",
                ])
                .env("RUST_LOG", bad);
                c
            },
            "RUST_LOG",
        ),
    ];
    for (what, mut cmd, source) in cases {
        let out = cmd.output().unwrap();
        let err = stderr_of(&out);
        assert!(!out.status.success(), "{what}: exit 0\n{err}");
        assert!(
            err.contains(&format!("{source} \"{bad}\" is not a log filter")),
            "{what}: {err}"
        );
    }
    // A good one runs.
    let out = bin()
        .args(["--log", "wzp_engine=debug,info", "stages"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

/// A loopback run that logs its controller's inputs (`adapt_log=true`)
/// replays to the very decisions it printed, timers included (the clean
/// path after the loss); a log whose decisions were changed is told apart
/// (exit status 1), and a broken input line or a log with none is refused
/// with what is wrong and where.
#[test]
fn replay_adapt_takes_a_runs_decisions_again() {
    let dir = tmp("replay");
    // 2 s clean, then 20 % random loss (a fixed pseudo-random pattern), then
    // clean: redundancy on, its repair, and off again on the clean path.
    let mut x: u32 = 12_345;
    let trace: Vec<&str> = (0..3000)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if (100..1300).contains(&i) && (x >> 16) % 5 == 0 {
                "1"
            } else {
                "0"
            }
        })
        .collect();
    let trace_path = dir.join("trace.txt");
    std::fs::write(&trace_path, trace.join("\n")).unwrap();
    let out = bin()
        .arg("run")
        .arg(repo("graphs/loopback.toml"))
        .args([
            "--set",
            &format!("output={}", dir.join("out.wav").display()),
        ])
        .args(["--set", &format!("trace={}", trace_path.display())])
        .args(["--set", "input_loop=true", "--set", "adapt_log=true"])
        .args(["--duration", "40s", "--clock", "fast", "--no-realtime"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "run failed:\n{log}");
    let decisions: Vec<&str> = log.lines().filter(|l| l.starts_with("adapt: ")).collect();
    assert!(
        log.lines().any(|l| l.starts_with("adapt-input: report ")),
        "{log}"
    );
    assert!(
        decisions
            .iter()
            .any(|l| l.contains("lbrr=on") || l.contains("fec=100")),
        "{log}"
    );
    assert!(
        decisions.last().unwrap().starts_with("adapt: clean_path"),
        "{log}"
    );
    let log_path = dir.join("run.log");
    std::fs::write(&log_path, &log).unwrap();
    let replay = |path: &std::path::Path| {
        bin()
            .args(["replay-adapt", "--check"])
            .arg(path)
            .output()
            .unwrap()
    };
    let same = replay(&log_path);
    let said = String::from_utf8_lossy(&same.stdout);
    assert!(same.status.success(), "{said}{}", stderr_of(&same));
    assert!(
        said.contains(&format!("{} decisions taken again", decisions.len())),
        "{said}"
    );
    // Each replayed decision is the log's, without what the controller had
    // just read.
    for (replayed, printed) in said.lines().zip(&decisions) {
        let (head, _) = printed.split_once(" (worst ").unwrap();
        assert!(replayed.starts_with(head), "{replayed} / {printed}");
    }
    // Another config: without RaptorQ for random loss, LBRR takes its place.
    let other = bin()
        .args(["replay-adapt", "--set", "random_fec=false"])
        .arg(&log_path)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(other.status.success(), "{said}{}", stderr_of(&other));
    assert!(log.contains(" fec=100 "), "{log}");
    assert!(
        !said.contains(" fec=100 ") && said.contains("lbrr=on"),
        "{said}"
    );
    let unknown = bin()
        .args(["replay-adapt", "--set", "colour=red"])
        .arg(&log_path)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(
        stderr_of(&unknown).contains("no such field; it has: ")
            && stderr_of(&unknown).contains("random_fec"),
        "{}",
        stderr_of(&unknown)
    );
    // A decision the controller would not take.
    let changed = log.replacen(
        "adapt: clean_path -> tier=good",
        "adapt: clean_path -> tier=fair",
        1,
    );
    let changed_path = dir.join("changed.log");
    std::fs::write(&changed_path, changed).unwrap();
    let differs = replay(&changed_path);
    assert_eq!(differs.status.code(), Some(1), "{}", stderr_of(&differs));
    assert!(
        stderr_of(&differs).contains("differs"),
        "{}",
        stderr_of(&differs)
    );
    // A broken input line: the file and line say where.
    let at = log
        .lines()
        .position(|l| l.starts_with("adapt-input: report "))
        .unwrap();
    let broken: Vec<String> = log
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == at {
                l.replace("expected=", "expected=x")
            } else {
                l.to_string()
            }
        })
        .collect();
    let broken_path = dir.join("broken.log");
    std::fs::write(&broken_path, broken.join("\n")).unwrap();
    let bad = replay(&broken_path);
    assert!(!bad.status.success());
    let err = stderr_of(&bad);
    assert!(
        err.contains(&format!("broken.log:{}:", at + 1)) && err.contains("expected="),
        "{err}"
    );
    // A log with no inputs (a run without adapt_log).
    let none_path = dir.join("none.log");
    std::fs::write(&none_path, decisions.join("\n")).unwrap();
    let none = replay(&none_path);
    assert!(!none.status.success());
    assert!(
        stderr_of(&none).contains("adapt_log=true"),
        "{}",
        stderr_of(&none)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A recording that cannot be written (the disk is full) fails the run
/// with the stage named, instead of exit 0 and a truncated file.
#[test]
fn a_recording_that_cannot_be_written_fails_the_run() {
    let out = bin()
        .args(["run"])
        .arg(repo("graphs/loopback.toml"))
        .args(["--set", "output=/dev/full", "--quiet", "--no-realtime"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("could not be written") && err.contains("'sink' (audio.wav_sink)"),
        "{err}"
    );
}

/// A reader that has gone (`wzp-client stages | head -1`) ends a printing
/// command quietly, by SIGPIPE as any Unix tool, not with a panic.
#[test]
fn a_closed_output_pipe_ends_a_printing_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    for args in [
        &["stages"][..],
        &["graph", "explain", "graphs/loopback.toml"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin()
            .args(args)
            .current_dir(repo(""))
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        // 13: SIGPIPE.
        assert_eq!(out.status.signal(), Some(13), "{args:?}: {err}");
    }
}

/// A join whose --duration ends before the relay ever answered fails: it
/// used to exit 0 with a full stats table when the duration was shorter
/// than the first-contact timeout.
#[test]
fn a_join_that_never_reached_the_relay_fails() {
    // A UDP port where nothing answers QUIC.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let dir = tmp("never");
    let out = bin()
        .args(["join", "--relay", &addr, "--room", "t", "--room-secret"])
        .arg("0123456789abcdef0123456789abcdef")
        .args(["--input", "tone", "--output", "null", "--duration", "1s"])
        .args(["--quiet", "--no-realtime", "--identity"])
        .arg(dir.join("c.seed"))
        .arg("--known-relays")
        .arg(dir.join("known"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("before the relay at") && err.contains(&addr),
        "{err}"
    );
}

/// What the client fills from its own options cannot be changed with
/// --set behind them (a `room_secret` there changed the key but not the
/// room: nobody heard anything, exit 0), and an empty --input (an unset
/// shell variable) is refused instead of playing the built-in sample.
#[test]
fn join_refuses_sets_of_its_own_placeholders_and_an_empty_input() {
    let base = [
        "join",
        "--relay",
        "127.0.0.1:9",
        "--room",
        "t",
        "--output",
        "null",
    ];
    for (extra, want) in [
        (
            &[
                "--input",
                "tone",
                "--set",
                "room_secret=0123456789abcdef0123",
            ][..],
            "comes from --room-secret",
        ),
        (
            &["--input", "tone", "--set", "room=other"][..],
            "comes from --room",
        ),
        (
            &["--input", "tone", "--set", "output=x.wav"][..],
            "comes from --output",
        ),
        (&["--input", ""][..], "--input is empty"),
        (
            &["--input", "tone", "--set", "input_rate=16000"][..],
            "applies to a WAV input",
        ),
    ] {
        let out = bin().args(base).args(extra).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    // For a WAV the rates are the user's: recording at 48 kHz is allowed
    // (the call then fails only on the unreachable relay, after the checks).
    let dir = tmp("rates");
    let out = bin()
        .args([
            "join",
            "--relay",
            "127.0.0.1:9",
            "--room",
            "t",
            "--input",
            "tone",
        ])
        .arg("--output")
        .arg(dir.join("a.wav"))
        .args([
            "--set",
            "output_rate=48000",
            "--duration",
            "1s",
            "--no-realtime",
        ])
        .args(["--identity"])
        .arg(dir.join("c.seed"))
        .arg("--known-relays")
        .arg(dir.join("known"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("output_rate"), "{err}");
    assert!(err.contains("before the relay at"), "{err}");
    let out = bin()
        .args([
            "join",
            "--relay",
            "127.0.0.1:9",
            "--room",
            "",
            "--input",
            "tone",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--room is empty"), "{err}");
}

/// `devices` lists what `mic:NAME` and `speaker:NAME` take; a name no
/// device has fails the call before it reaches the relay, naming what there
/// is; an empty one is refused up front.
#[test]
fn devices_are_listed_and_a_device_that_is_not_there_is_named() {
    let out = bin().arg("devices").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}{}", stderr_of(&out));
    assert!(said.starts_with("audio backend: "), "{said}");
    assert!(said.contains("input devices (--input mic:NAME):"), "{said}");
    assert!(
        said.contains("output devices (--output speaker:NAME):"),
        "{said}"
    );

    let dir = tmp("nodevice");
    for (input, output, want) in [
        (
            "mic:no-such-card",
            "null",
            "no audio input device matches \"no-such-card\"",
        ),
        (
            "tone",
            "speaker:no-such-card",
            "no audio output device matches \"no-such-card\"",
        ),
        (
            "mic:",
            "null",
            "--input \"mic:\": name a device after the colon",
        ),
    ] {
        let out = bin()
            .args(["join", "--relay", "127.0.0.1:9", "--room", "t"])
            .args(["--input", input, "--output", output, "--duration", "5s"])
            .args(["--no-realtime", "--identity"])
            .arg(dir.join("c.seed"))
            .arg("--known-relays")
            .arg(dir.join("known"))
            .output()
            .unwrap();
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{input} {output}: {err}");
        assert!(err.contains(want), "{input} {output}: {err}");
    }
}

/// A graph with no source never ends: refused without --duration (it ran
/// forever, writing a recording of silence until the disk was full), run
/// for the duration given with it.
#[test]
fn a_graph_without_a_source_needs_a_duration() {
    let dir = tmp("nosource");
    let g = dir.join("g.toml");
    let wav = dir.join("o.wav");
    std::fs::write(
        &g,
        format!(
            "[graph]\nname = \"n\"\nclock = {{ driver = \"fast\" }}\n\
             [[stage]]\nid = \"m\"\nkind = \"audio.mix\"\n\
             [[stage]]\nid = \"sink\"\nkind = \"audio.wav_sink\"\nparams = {{ path = {:?} }}\n\
             [[link]]\nfrom = \"m.out\"\nto = \"sink.in\"\n",
            wav.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = bin()
        .arg("run")
        .arg(&g)
        .arg("--no-realtime")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no source") && err.contains("--duration"),
        "{err}"
    );
    assert!(!wav.exists(), "nothing was recorded");
    let out = bin()
        .arg("run")
        .arg(&g)
        .args(["--no-realtime", "--quiet", "--duration", "200ms"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(hound::WavReader::open(&wav).unwrap().duration(), 9600);
}

/// An alias relays would refuse is refused before connecting (a long one
/// came back as "connection lost"), for join, call and listen alike.
#[test]
fn an_alias_relays_refuse_is_refused_up_front() {
    let long = "z".repeat(65);
    for cmd in [
        &["join", "--relay", "127.0.0.1:9", "--room", "t"][..],
        &[
            "call",
            "--relay",
            "127.0.0.1:9",
            "0000:0000:0000:0000:0000:0000:0000:0000",
        ][..],
        &["listen", "--relay", "127.0.0.1:9"][..],
    ] {
        for (alias, want) in [
            (long.as_str(), "at most 64"),
            ("", "is empty"),
            ("a\u{7}b", "control"),
        ] {
            let out = bin().args(cmd).args(["--alias", alias]).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?} {alias:?}: {err}");
            assert!(err.contains(want), "{cmd:?} {alias:?}: {err}");
        }
    }
}

/// `--ring-on` takes a speaker only, and not beside `--no-ring-tone`.
#[test]
fn a_ring_tone_device_that_is_no_speaker_is_refused_up_front() {
    for cmd in [
        &[
            "call",
            "--relay",
            "127.0.0.1:9",
            "0000:0000:0000:0000:0000:0000:0000:0000",
        ][..],
        &["listen", "--relay", "127.0.0.1:9"][..],
    ] {
        for (args, want) in [
            (&["--ring-on", "ring.wav"][..], "is no speaker"),
            (&["--ring-on", "null"][..], "is no speaker"),
            (
                &["--ring-on", "speaker", "--no-ring-tone"][..],
                "cannot be used with",
            ),
        ] {
            let out = bin().args(cmd).args(args).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{cmd:?} {args:?}: {err}");
            assert!(err.contains(want), "{cmd:?} {args:?}: {err}");
        }
    }
}

/// A demo whose recording cannot be written fails before the call starts,
/// and leaves none of its identities behind.
#[test]
fn a_demo_with_an_unwritable_output_fails_at_once_and_cleans_up() {
    let child = bin()
        .args(["demo", "--output", "/proc/x.wav"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--output /proc/x.wav"), "{err}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("relay on"),
        "no call was started"
    );
    assert!(!std::env::temp_dir()
        .join(format!("wzp-demo-{pid}"))
        .exists());
}

/// version-check's address is positional: its errors name the address, not
/// a --relay flag it does not have; port 0 says why it cannot work.
#[test]
fn a_bad_relay_address_is_named_as_given() {
    for (addr, want) in [
        (
            "127.0.0.1:70000",
            "relay address \"127.0.0.1:70000\": expected HOST:PORT",
        ),
        ("127.0.0.1:0", "port 0 cannot be dialed"),
    ] {
        let out = bin().args(["version-check", addr]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{addr}: {err}");
        assert!(
            err.contains(want) && !err.contains("--relay"),
            "{addr}: {err}"
        );
    }
}

/// A --stats-json path that cannot be written fails before the run (it
/// failed after the whole run, or left DIR.tmp behind for a folder).
#[test]
fn an_unwritable_stats_json_fails_before_the_run() {
    let dir = tmp("statsjson");
    let wav = dir.join("o.wav");
    for (path, want) in [
        (dir.clone(), "is a folder"),
        (std::path::PathBuf::from("/proc/x/s.json"), "cannot create"),
    ] {
        let out = bin()
            .args(["run"])
            .arg(repo("graphs/loopback.toml"))
            .args(["--set", &format!("output={}", wav.display())])
            .arg("--stats-json")
            .arg(&path)
            .arg("--no-realtime")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("--stats-json") && err.contains(want), "{err}");
        assert!(!wav.exists(), "the graph never ran");
    }
    assert!(!dir.with_extension("tmp").exists());
}

/// `run | head -1`: the reader goes away while the graph runs; the run
/// still finishes its recording and stats, and exits 0 without a panic
/// (it was killed by SIGPIPE mid-run, or panicked printing its summary).
#[test]
fn a_run_whose_reader_goes_away_still_finishes_its_files() {
    let dir = tmp("runpipe");
    let wav = dir.join("o.wav");
    let json = dir.join("s.json");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["run"])
        .arg(repo("graphs/loopback.toml"))
        .args([
            "--set",
            &format!("output={}", wav.display()),
            "--set",
            "loss=20",
        ])
        .arg("--stats-json")
        .arg(&json)
        .args(["--no-realtime", "--duration", "2s"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    assert!(json.exists(), "the stats were written");
    assert_eq!(hound::WavReader::open(&wav).unwrap().duration(), 2 * 16_000);
}

/// `graphs/echo-room.toml` as its header says to run it: the far end's
/// echo in the simulated room is far quieter with the canceller than
/// without, and the canceller reports where it found it.
#[test]
fn the_echo_room_graph_takes_the_echo_out() {
    let dir = tmp("echo-room");
    let level = |cancel: bool| {
        let wav = dir.join(format!("echo-{cancel}.wav"));
        let json = dir.join(format!("echo-{cancel}.json"));
        let out = bin()
            .arg("run")
            .arg(repo("graphs/echo-room.toml"))
            .args(["--duration", "20s", "--no-realtime", "--quiet"])
            .args(["--set", &format!("output={}", wav.display())])
            .args(["--set", &format!("echo_cancel={cancel}")])
            .args(["--stats-json", json.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stats: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let aec = stats["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "aec")
            .unwrap()["gauges"]
            .clone();
        let rec = wzp_stages::audio::wav_source::read_wav_mono(&wav).unwrap();
        assert_eq!(rec.samples.len(), 20 * 16_000);
        let tail = &rec.samples[15 * 16_000..];
        (wzp_stages::audio::signal::rms_dbfs(tail), aec)
    };
    let (off, off_gauges) = level(false);
    let (on, on_gauges) = level(true);
    assert_eq!(off_gauges["echo_found"], 0);
    assert_eq!(on_gauges["echo_found"], 1);
    let delay = on_gauges["echo_delay_ms"].as_i64().unwrap();
    assert!((40..=60).contains(&delay), "echo delay read as {delay} ms");
    assert!(off > -35.0, "no echo without the canceller? {off:.1} dBFS");
    assert!(
        on < off - 15.0,
        "echo {on:.1} dBFS with the canceller, {off:.1} without"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
