//! End to end through graphs/loopback.toml: the real chain (Opus with DRED,
//! LBRR and PLC; RaptorQ; netem; the adaptive jitter buffer) run file to
//! file, with the far end's recording compared with what was sent.
//!
//! These runs measure hand-set knobs (`dred_ms`, `expected_loss`,
//! `inband_fec`), so they turn the quality controller off (`adapt=false`):
//! it would retune the encoder away from them (tests/loopback_adapt.rs
//! covers it).

mod loopback_support;

use loopback_support::Run;

fn run(name: &str, sets: &[(&str, &str)]) -> Run {
    let mut sets = sets.to_vec();
    sets.push(("adapt", "false"));
    loopback_support::run(name, &sets, None)
}

#[test]
fn clean_path_is_transparent() {
    let r = run("clean", &[]);
    assert_eq!(r.c("net.lost"), 0);
    assert_eq!(
        r.c("dec.classical_plc_invocations") + r.c("dec.dred_reconstructions"),
        0
    );
    // Opus at 24 kb/s on a speech-like signal, measured 0.98; below 0.9 the
    // chain itself is broken (misaligned, clipped, resampled wrong).
    assert!(r.correlation > 0.9, "clean correlation {}", r.correlation);
}

#[test]
fn dred_rebuilds_most_frames_at_20_percent_loss() {
    let dred = run(
        "dred",
        &[
            ("loss", "20"),
            ("dred_ms", "200"),
            ("expected_loss", "20"),
            ("lookahead", "2"),
            // The decoder's own look-ahead covers the runs here; the jitter
            // buffer's burst hold (for a stream with DRED only) would give
            // this run a playout the PLC run does not have.
            ("jb_burst_hold", "0ms"),
        ],
    );
    let plc = run(
        "plc",
        &[
            ("loss", "20"),
            ("dred_ms", "0"),
            ("expected_loss", "20"),
            ("lookahead", "2"),
        ],
    );
    let lost = dred.c("net.lost");
    assert!(
        lost >= 25,
        "the seeded 20 % loss dropped only {lost} frames"
    );
    let rebuilt = dred.c("dec.dred_reconstructions");
    assert!(
        rebuilt * 10 >= lost * 8,
        "DRED rebuilt {rebuilt} of {lost} lost frames: {:?}",
        dred.counters
    );
    // Same seed, same losses: with DRED off every loss falls to PLC.
    assert_eq!(plc.c("net.lost"), lost);
    assert_eq!(plc.c("dec.dred_reconstructions"), 0);
    assert!(
        plc.c("dec.classical_plc_invocations") >= lost,
        "{:?}",
        plc.counters
    );
    // The far end still hears the talker: with a fifth of the frames
    // rebuilt, the waveform stays close (measured 0.79; a fifth of frames
    // replaced by silence would give about 0.5) and the loudness contour
    // closer still (0.95). DRED must follow the talker's loudness better than
    // PLC's extrapolation does (PLC measured 0.90).
    assert!(
        dred.correlation > 0.7,
        "DRED correlation {}",
        dred.correlation
    );
    assert!(dred.contour > 0.92, "DRED contour {}", dred.contour);
    assert!(
        dred.contour > plc.contour,
        "DRED contour ({}) should beat PLC's ({})",
        dred.contour,
        plc.contour
    );
}

#[test]
fn a_100_ms_burst_is_rebuilt_by_dred() {
    // One 5-frame (100 ms) burst every 50 frames.
    let dir = std::env::temp_dir().join(format!("wzp-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("burst.trace");
    let mut pattern = vec!["0"; 50];
    for p in pattern.iter_mut().skip(20).take(5) {
        *p = "1";
    }
    std::fs::write(&trace, pattern.join("\n")).unwrap();
    let r = run(
        "burst",
        &[
            ("trace", trace.to_str().unwrap()),
            ("dred_ms", "200"),
            ("expected_loss", "20"),
            ("lookahead", "5"),
            ("jb_min", "40ms"),
        ],
    );
    let lost = r.c("net.lost");
    assert!(lost >= 15, "bursts dropped only {lost} frames");
    assert_eq!(lost % 5, 0, "bursts are whole: {lost}");
    let rebuilt = r.c("dec.dred_reconstructions");
    assert!(
        rebuilt * 10 >= lost * 9,
        "DRED rebuilt {rebuilt} of {lost} burst frames: {:?}",
        r.counters
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn raptorq_recovers_random_loss_exactly() {
    let r = run(
        "fec",
        &[
            ("loss", "8"),
            ("fec_ratio", "60"),
            ("frames_per_block", "5"),
            ("jb_min", "160ms"),
            ("jb_initial", "160ms"),
            ("dred_ms", "0"),
        ],
    );
    let lost = r.c("net.lost");
    let recovered = r.c("fec_dec.recovered");
    assert!(lost > 5, "{:?}", r.counters);
    assert!(
        recovered * 10 >= lost * 5,
        "FEC recovered {recovered} of {lost}: {:?}",
        r.counters
    );
}
