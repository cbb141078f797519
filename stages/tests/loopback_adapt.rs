//! The feedback loop of graphs/loopback.toml: `quality.feedback_report`
//! measures what the simulated network delivers and reports it over the
//! return path (a `delay = 1` feedback link) to `quality.adapt`, whose
//! controller retunes the encoder live. Run file to file on the same seed
//! with `adapt=true` and `adapt=false`.

mod loopback_support;

use loopback_support::{long_speech, run};
use wzp_stages::quality::controller::Reason;

#[test]
fn twenty_percent_loss_turns_redundancy_on_and_beats_the_fixed_defaults() {
    let dir = std::env::temp_dir().join(format!("wzp-adapt-loss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 16 s: the controller acts on its first report (after 1 s); the rest
    // of the call runs on what it chose.
    let (path, sent) = long_speech(&dir, 4);
    let input = Some((path.as_path(), sent.as_slice()));
    let sets = |adapt| [("loss", "20"), ("seed", "7"), ("adapt", adapt)];
    let on = run("adapt-on-loss20", &sets("true"), input);
    let off = run("adapt-off-loss20", &sets("false"), input);
    // Same seed, the same loss rate (the repair packets RaptorQ adds
    // draw from the same loss, so not the same packets).
    for r in [&on, &off] {
        let (lost, passed) = (r.c("net.lost"), r.c("net.passed"));
        let rate = lost as f64 / (lost + passed) as f64;
        assert!(
            lost > 100 && (0.16..0.24).contains(&rate),
            "the seeded 20 % loss dropped {lost} of {}",
            lost + passed
        );
    }
    // The receiver reported about once a second; the sender read them.
    let reports = on.c("adapt.reports");
    assert!((12..=17).contains(&reports), "{reports} reports in 16 s");
    // (Early reports, loss beginning on a clean path, count apart.)
    assert_eq!(
        on.c("report.reports_sent"),
        reports + on.c("adapt.reports_early")
    );
    // The controller turned redundancy on and the encoder took it.
    let loss_decisions = on.c("adapt.decisions_random_loss")
        + on.c("adapt.decisions_burst_loss")
        + on.c("adapt.decisions_dense_loss")
        + on.c("adapt.decisions_fec_loss");
    assert!(loss_decisions >= 1, "{:?}", on.counters);
    // 20 % random: RaptorQ repair from the second report, Opus under the
    // tier's rate; the repair went out, and the far end rebuilt with it.
    assert_eq!(on.c("adapt.decisions_fec_loss"), 1, "{:?}", on.counters);
    assert_eq!(on.c("adapt.fec_ratio"), 100, "{:?}", on.counters);
    assert_eq!(on.c("adapt.bitrate"), 11_000, "{:?}", on.counters);
    assert!(on.c("fec_enc.repair_sent") > 300, "{:?}", on.counters);
    assert!(on.c("fec_dec.recovered") > 100, "{:?}", on.counters);
    assert_eq!(off.c("fec_enc.repair_sent"), 0, "{:?}", off.counters);
    assert_eq!(on.c("adapt.applied"), on.c("adapt.decisions"));
    assert!(on.c("enc.live_updates") >= 2, "{:?}", on.counters);
    assert_eq!(on.c("enc.live_errors"), 0);
    // Off: the controller still decides (same reports) but nothing reaches
    // the encoder.
    assert_eq!(off.c("adapt.applied"), 0);
    assert_eq!(off.c("enc.live_updates"), 0);
    assert!(off.c("adapt.decisions") >= 2);
    // Every decision is in the journal, in order, as taken: the counters'
    // totals per reason, the gauges' settings in the last one, and what
    // the reports said when loss began.
    for (r, applied) in [(&on, true), (&off, false)] {
        let j = &r.decisions;
        assert_eq!(j.len() as i64, r.c("adapt.decisions"));
        assert_eq!(r.c("adapt.journal_dropped"), 0);
        for reason in Reason::ALL {
            let n = j.iter().filter(|e| e.reason == reason).count() as i64;
            assert_eq!(n, r.c(&format!("adapt.decisions_{}", reason.name())));
        }
        assert_eq!(j[0].reason, Reason::Startup);
        assert!(j.windows(2).all(|w| w[0].at_ns <= w[1].at_ns), "{j:?}");
        assert!(j.iter().all(|e| e.applied == applied), "{j:?}");
        let last = j.last().unwrap().settings;
        assert_eq!(i64::from(last.dred_ms), r.c("adapt.dred_ms"));
        assert_eq!(i64::from(last.loss_hint), r.c("adapt.loss_hint"));
        assert_eq!(i64::from(last.lbrr), r.c("adapt.lbrr"));
        let first_loss = j
            .iter()
            .find(|e| {
                matches!(
                    e.reason,
                    Reason::RandomLoss | Reason::BurstLoss | Reason::DenseLoss | Reason::FecLoss
                )
            })
            .unwrap_or_else(|| panic!("no loss decision: {j:?}"));
        // The controller acts on its first reports (one a second).
        assert!(first_loss.at_ns >= 900_000_000, "{first_loss:?}");
        assert!(first_loss.at_ns < 4_000_000_000, "{first_loss:?}");
        assert!((10..=35).contains(&first_loss.loss_pct), "{first_loss:?}");
        assert!(
            first_loss.line().starts_with("adapt: "),
            "{}",
            first_loss.line()
        );
    }
    // And the far end hears the talker better with the loop on: the repair
    // rebuilds the losses that the profile's fixed DRED (200 ms, hint 10)
    // leaves to PLC (with LBRR sized to the loss: 0.93 against 0.84).
    assert!(
        on.mean_correlation > off.mean_correlation + 0.04,
        "adapt on {:.3} should beat off {:.3}",
        on.mean_correlation,
        off.mean_correlation
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_clean_path_ends_with_no_redundancy_after_the_settle_period() {
    let dir = std::env::temp_dir().join(format!("wzp-adapt-clean-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // 8 s: start-up (3 s) on the profile's DRED, then clean.
    let (path, sent) = long_speech(&dir, 2);
    let r = run(
        "adapt-clean",
        &[("adapt", "true")],
        Some((path.as_path(), sent.as_slice())),
    );
    assert_eq!(r.c("net.lost"), 0);
    assert_eq!(r.c("adapt.decisions_startup"), 1);
    assert_eq!(r.c("adapt.decisions_clean_path"), 1, "{:?}", r.counters);
    assert_eq!(
        r.c("adapt.decisions_random_loss")
            + r.c("adapt.decisions_burst_loss")
            + r.c("adapt.decisions_dense_loss")
            + r.c("adapt.decisions_long_runs")
            + r.c("adapt.decisions_fec_loss"),
        0
    );
    assert_eq!(r.c("adapt.dred_ms"), 0);
    assert_eq!(r.c("adapt.lbrr"), 0);
    assert_eq!(r.c("adapt.loss_hint"), 0);
    assert_eq!(r.c("adapt.loss_pct"), 0);
    // Start-up settings, then the clean path's: two updates, both taken.
    assert_eq!(r.c("enc.live_updates"), 2);
    assert!(r.correlation > 0.9, "clean correlation {}", r.correlation);
    let _ = std::fs::remove_dir_all(dir);
}

/// Random loss that pauses long enough for the sender to end its
/// redundancy (2 s and the clean packets that show it,
/// `quality_controller::random_loss_ends_with_the_clean_packets_that_show_it`)
/// and then comes back is heard from the receiver's early report, ~200 ms
/// after, not at the next report up to a second later: the receiver's
/// clean spell before an onset (`onset_after`, 2 s) is no longer than the
/// sender's wait.
#[test]
fn loss_that_returns_after_redundancy_ended_is_heard_at_once() {
    let dir = std::env::temp_dir().join(format!("wzp-adapt-returns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (path, sent) = long_speech(&dir, 5);
    // One 0/1 per packet (LBRR, no repair packets: one a frame): clean to
    // 6 s, every fifth packet lost to 12 s, clean, every fifth again from
    // RETURN (15.4 s). The last report with loss comes at 13.06 s (the
    // last loss settles after the 12.06 s one), the sender ends LBRR 2 s
    // later, and the loss is back 0.34 s after that: with a clean spell
    // of 3 s before an onset no early report left (the interval's report
    // at 16.06 s brought LBRR back, 660 ms after the loss).
    const RETURN: u32 = 770;
    let trace: String = (0..1_000u32)
        .map(|k| {
            let lossy = (300..600).contains(&k) || k >= RETURN;
            if lossy && k % 5 == 0 {
                "1\n"
            } else {
                "0\n"
            }
        })
        .collect();
    let trace_path = dir.join("trace.txt");
    std::fs::write(&trace_path, trace).unwrap();
    let trace_arg = trace_path.display().to_string();
    let r = run(
        "adapt-returns",
        &[
            ("trace", trace_arg.as_str()),
            ("random_fec", "false"),
            ("adapt", "true"),
        ],
        Some((path.as_path(), sent.as_slice())),
    );
    let j = &r.decisions;
    let protected = |e: &&wzp_stages::quality::journal::Entry| {
        e.settings.lbrr || e.settings.dred_ms > 0 || e.settings.fec_ratio > 0
    };
    let back = u64::from(RETURN) * 20_000_000;
    let off = j
        .iter()
        .rfind(|e| e.at_ns < back)
        .expect("decisions before the loss came back");
    assert!(
        !protected(&off) && off.at_ns > 12_000_000_000,
        "redundancy ended in the pause: {j:?}"
    );
    let on = j
        .iter()
        .find(|e| e.at_ns >= back)
        .expect("a decision once the loss came back");
    assert!(protected(&on), "{on:?}");
    let after_ms = (on.at_ns - back) / 1_000_000;
    assert!(
        after_ms <= 350,
        "protection {after_ms} ms after the loss came back: {j:?}"
    );
    assert_eq!(r.c("adapt.reports_early"), 2, "{:?}", r.counters);
    let _ = std::fs::remove_dir_all(dir);
}
