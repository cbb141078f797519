//! A flood of refused handshakes of one kind is logged at most a line a
//! second per reason, with the number held back, and never echoes a long
//! server name in full.

mod common;

use common::*;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_refusals_are_logged_rate_limited_and_cut() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    // A long but valid DNS name: four labels of 60 characters.
    let label = "q".repeat(60);
    let long = [label.as_str(); 4].join(".");
    let started = Instant::now();
    let floods = 40;
    for _ in 0..floods {
        let (_ep, conn) = connect(&relay, &long).await.expect("handshake");
        let _ = tokio::time::timeout(WAIT, conn.closed()).await;
    }
    relay.wait_metric("wzp_relay_refused_total{reason=\"unknown_sni\"}", |v| {
        v >= floods as f64
    });
    let elapsed = started.elapsed().as_secs() + 1;
    let log = relay.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    assert!(!lines.is_empty(), "the first refusal is logged:\n{log}");
    assert!(
        (lines.len() as u64) <= elapsed + 1,
        "{} refusal lines in {elapsed} s for {floods} refusals:\n{log}",
        lines.len()
    );
    for l in &lines {
        assert!(!l.contains(&long), "the whole server name is echoed: {l}");
        assert!(l.len() < 500, "a {} byte line: {l}", l.len());
    }
}
