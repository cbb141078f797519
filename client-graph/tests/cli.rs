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
