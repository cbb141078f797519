//! One attack at a time. Each test runs a relay, two or three real-time
//! clients and an attacker; two such tests at once on a 2-core machine
//! would starve each other's calls and measure the machine, not the relay.
//! A static mutex orders the tests of one test binary; an exclusive
//! `flock` on a file in the target folder orders the crate's test binaries
//! when a runner starts them in parallel (cargo-nextest).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};

/// Held for the length of one test.
pub struct Serial {
    _file: File,
    _guard: MutexGuard<'static, ()>,
}

/// Waits until no other attack test runs, and holds the turn until dropped.
pub fn serial() -> Serial {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let exe = std::env::current_exe().expect("the test binary has a path");
    let dir = exe.parent().expect("the test binary sits in a folder");
    let path = dir.join("wzp-attack.lock");
    let file = File::create(&path)
        .unwrap_or_else(|e| panic!("cannot create the lock file {}: {e}", path.display()));
    // SAFETY: the descriptor belongs to `file`, open for this whole call;
    // flock only reads it. The lock goes with the descriptor when `file`
    // is dropped.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    Serial {
        _file: file,
        _guard: guard,
    }
}
