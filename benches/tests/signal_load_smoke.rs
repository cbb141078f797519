//! `wzp-bench signal-load` end to end on a small scale: a real relay
//! process, 20 registered clients, a second of call offers; the report
//! must show every client registered and offers ringing.

use std::path::PathBuf;
use std::process::Command;

fn field(report: &str, label: &str) -> u64 {
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in the report:\n{report}"));
    line.trim_start()[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{label:?} has no number: {line:?}"))
}

#[test]
fn twenty_clients_register_and_their_offers_ring() {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_wzp-bench"));
    let relay = bench.with_file_name("wzp-relay");
    assert!(
        relay.exists(),
        "{} is missing: `cargo build -p wzp-relay` (or `cargo test --workspace`) builds it",
        relay.display()
    );
    let out = Command::new(&bench)
        .args(["signal-load", "--clients", "20", "--calls-per-s", "20"])
        .args(["--seconds", "1", "--concurrency", "4", "--quiet"])
        .arg("--relay-bin")
        .arg(&relay)
        .output()
        .expect("running wzp-bench");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wzp-bench failed: {}\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(field(&report, "registered"), 20, "{report}");
    assert_eq!(field(&report, "failed"), 0, "{report}");
    assert_eq!(
        field(&report, "relay's wzp_signal_registered"),
        20,
        "{report}"
    );
    let sent = field(&report, "offers sent");
    assert!(sent > 0, "{report}");
    assert_eq!(field(&report, "ringing"), sent, "{report}");
    assert_eq!(field(&report, "calls ended (rejected)"), sent, "{report}");
}
