//! The relay's TLS fingerprint comes from its seed file: the same file gives
//! the same fingerprint after a restart, and clients pinning it reconnect.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_keeps_its_fingerprint() {
    let dir = tempdir();
    let mut first = RelayProc::start_in(dir.path(), &[]);
    let fp = first.fingerprint;
    let seed = dir.path().join("relay.seed");
    assert!(seed.exists(), "the identity was written");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&seed).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the seed is private");
    }
    assert!(
        first
            .stdout_head
            .iter()
            .any(|l| l.contains(&format!("fingerprint = \"{fp}\""))),
        "a [[peers]] snippet is printed: {:?}",
        first.stdout_head
    );
    first.kill();

    let second = RelayProc::start_in(dir.path(), &[]);
    assert_eq!(second.fingerprint, fp);
    // A client pinned to the first run's fingerprint connects.
    connect_pinned(second.quic, fp, "ping")
        .await
        .expect("pinned fingerprint accepted");

    // Another identity is another fingerprint, and the pin refuses it.
    let other_dir = tempdir();
    let other = RelayProc::start_in(other_dir.path(), &[]);
    assert_ne!(other.fingerprint, fp);
    assert!(
        connect_pinned(other.quic, fp, "ping").await.is_err(),
        "a client must not accept a relay whose certificate is not the pinned one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_writes_an_example_config_that_the_next_run_reads() {
    let dir = tempdir();
    let cfg = dir.path().join("conf").join("relay.toml");
    let relay = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap()]);
    assert!(cfg.exists());
    assert!(relay
        .stdout_head
        .iter()
        .any(|l| l.contains("wrote an example config")));
    drop(relay);
    let again = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap(), "--label", "b"]);
    assert!(!again
        .stdout_head
        .iter()
        .any(|l| l.contains("wrote an example config")));
    assert!(again
        .stdout_head
        .iter()
        .any(|l| l.contains("label = \"b\"")));
}
