//! `wzp-relay check -c FILE` says whether the relay would start with a
//! config (it parses, validates, and its relay graph compiles) without
//! running or writing anything: exit 0 with a summary, or exit 1 with why.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn check(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wzp-relay"))
        .arg("check")
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run wzp-relay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    path_str(&p)
}

#[test]
fn a_config_the_relay_would_start_with_passes_with_a_summary() {
    let dir = tempdir();
    let cfg = write(
        dir.path(),
        "ok.toml",
        &format!(
            "label = \"a\"\n[[peers]]\naddress = \"127.0.0.1:4433\"\nfingerprint = \"{}\"\n\
             label = \"b\"\n[[global_rooms]]\nname = \"general\"\n",
            ["ab"; 32].join(":")
        ),
    );
    let out = check(&["-c", &cfg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("ok: 1 peers, 0 trusted relays, 0 call rooms, 1 global rooms"),
        "{said}"
    );
    assert!(said.contains("graphs/relay.toml compiles"), "{said}");
    // Given before the subcommand, the same.
    let before = Command::new(env!("CARGO_BIN_EXE_wzp-relay"))
        .args(["-c", &cfg, "check"])
        .output()
        .unwrap();
    assert!(before.status.success());
}

#[test]
fn a_config_the_relay_would_refuse_fails_with_the_reason_and_nothing_is_written() {
    let dir = tempdir();
    let graph = write(
        dir.path(),
        "bad-graph.toml",
        "[graph]\nname = \"x\"\n[[stage]]\nid = \"a\"\nkind = \"no.such\"\n",
    );
    let cases = [
        (
            "typo.toml",
            "lable = \"a\"\n".to_string(),
            "did you mean `label`",
        ),
        (
            "range.toml",
            "max_rooms = 0\n".to_string(),
            "max_rooms = 0 is out of range",
        ),
        (
            "graph.toml",
            format!("graph = \"{graph}\"\n"),
            "unknown stage kind `no.such`",
        ),
        (
            "nograph.toml",
            "graph = \"missing-graph.toml\"\n".to_string(),
            "cannot read graph",
        ),
    ];
    for (name, body, why) in cases {
        let cfg = write(dir.path(), name, &body);
        let out = check(&["-c", &cfg]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out.stdout));
        let err = text(&out.stderr);
        assert!(err.contains(why), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}: no summary");
    }
    // A missing file is an error, not created (a start would write one).
    let missing = dir.path().join("missing.toml");
    let out = check(&["-c", &path_str(&missing)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read config"));
    assert!(!missing.exists(), "check never writes the file");
    // No file named at all.
    let out = check(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("wzp-relay check -c FILE"));
}
