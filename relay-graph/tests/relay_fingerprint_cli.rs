//! `wzp-relay fingerprint [-i FILE | -c CONFIG]` prints the relay's TLS
//! fingerprint alone on stdout (so scripts can write `[[peers]]` entries),
//! creating the identity if missing, and exits 0; failures exit non-zero
//! with the reason.

mod common;

use std::process::{Command, Output};

use common::*;
use wzp_proto::TlsFingerprint;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wzp-relay"))
        .args(args)
        .output()
        .expect("run wzp-relay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The single stdout line, parsed.
fn printed_fingerprint(out: &Output) -> TlsFingerprint {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout: {stdout:?}");
    lines[0]
        .parse()
        .unwrap_or_else(|e| panic!("{:?} is not a TLS fingerprint: {e}", lines[0]))
}

#[test]
fn prints_the_fingerprint_the_running_relay_presents() {
    let dir = tempdir();
    let seed = dir.path().join("relay.seed");
    let first = run(&["fingerprint", "-i", &path_str(&seed)]);
    let fp = printed_fingerprint(&first);
    assert!(seed.exists(), "the identity was created");
    assert!(
        text(&first.stderr).contains("created a new relay identity"),
        "{}",
        text(&first.stderr)
    );

    let again = run(&["fingerprint", "--identity", &path_str(&seed)]);
    assert_eq!(
        printed_fingerprint(&again),
        fp,
        "same seed, same fingerprint"
    );
    assert!(
        !text(&again.stderr).contains("created"),
        "{}",
        text(&again.stderr)
    );

    // The relay started on that seed presents the printed fingerprint.
    let relay = RelayProc::start_in(dir.path(), &[]);
    assert_eq!(relay.fingerprint, fp);

    // Another seed, another fingerprint.
    let other = run(&[
        "fingerprint",
        "-i",
        &path_str(&dir.path().join("other.seed")),
    ]);
    assert_ne!(printed_fingerprint(&other), fp);
}

#[test]
fn reads_the_identity_a_config_names() {
    let dir = tempdir();
    let cfg = dir.path().join("relay.toml");
    std::fs::write(&cfg, "identity = \"b.seed\"\nlabel = \"b\"\n").unwrap();
    let via_config = printed_fingerprint(&run(&["fingerprint", "-c", &path_str(&cfg)]));
    let seed = dir.path().join("b.seed");
    assert!(seed.exists(), "relative to the config's folder");
    let via_seed = printed_fingerprint(&run(&["fingerprint", "-i", &path_str(&seed)]));
    assert_eq!(via_config, via_seed);
    // The same flags before the subcommand mean the same (they used to be
    // ignored: the default identity's fingerprint came out, exit 0).
    let home = dir.path().join("home");
    let before = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_wzp-relay"))
            .env("HOME", &home)
            .args(args)
            .output()
            .unwrap();
        printed_fingerprint(&out)
    };
    assert_eq!(before(&["-i", &path_str(&seed), "fingerprint"]), via_seed);
    assert_eq!(before(&["-c", &path_str(&cfg), "fingerprint"]), via_seed);
    assert!(!home.exists(), "no default identity was made");
    // Both ways at once, differently: refused.
    let out = run(&[
        "-i",
        &path_str(&seed),
        "fingerprint",
        "-i",
        &path_str(&dir.path().join("other.seed")),
    ]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--identity is given twice"));
}

#[test]
fn failures_exit_non_zero_and_say_why() {
    let dir = tempdir();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[[peers]]\nadress = \"x:1\"\n").unwrap();
    let cases: [(Vec<String>, &[&str]); 3] = [
        (
            vec!["-i".into(), path_str(&blocker.join("seed"))],
            &["identity"],
        ),
        (
            vec!["-c".into(), path_str(&dir.path().join("missing.toml"))],
            &["cannot read config", "missing.toml"],
        ),
        (
            vec!["-c".into(), path_str(&bad_cfg)],
            &["bad.toml", "did you mean `address`?"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = vec!["fingerprint"];
        all.extend(args.iter().map(String::as_str));
        let out = run(&all);
        assert!(!out.status.success(), "{all:?} exited 0");
        assert!(out.stdout.is_empty(), "{all:?}: nothing on stdout");
        let err = text(&out.stderr);
        for n in needles {
            assert!(err.contains(n), "{all:?}: {err}\nshould mention {n}");
        }
    }
}

#[test]
fn help_shows_an_example() {
    let out = run(&["fingerprint", "--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(help.contains("Examples:"), "{help}");
    assert!(help.contains("wzp-relay fingerprint -i"), "{help}");
    assert!(help.contains("[[peers]]"), "{help}");
    let top = text(&run(&["--help"]).stdout);
    assert!(top.contains("fingerprint"), "{top}");
    // Each subcommand's one-line summary is its own: the fingerprint's
    // line says what it prints, and the check's does not borrow it.
    let line = |name: &str| {
        top.lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no `{name}` line in\n{top}"))
            .to_string()
    };
    assert!(line("fingerprint").contains("TLS fingerprint"), "{top}");
    assert!(line("check").contains("Check a config file"), "{top}");
    assert!(!line("check").contains("fingerprint"), "{top}");
}
