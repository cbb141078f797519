//! The feedback loop's two stages driven by hand: `quality.feedback_report`
//! measures received frames and emits a 0x40 report per interval;
//! `quality.adapt` passes the sender's frames on, feeds reports to the
//! controller and writes its decisions into the encoder's `OpusLive` cell.
//! Every `process` runs under `assert_no_alloc`.

wzp_engine::install_alloc_checker!();

use std::sync::Arc;
use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_proto::feedback::{FeedbackReport, ReceiverInfo};
use wzp_proto::CodecId;
use wzp_stages::codec::live::{CodecLive, OpusLive};
use wzp_stages::fec::live::FecLive;
use wzp_stages::quality::adapt::AdaptFactory;
use wzp_stages::quality::controller::Reason;
use wzp_stages::quality::feedback_report::FeedbackReportFactory;
use wzp_stages::quality::inputs::{replay, Input, InputRecord};
use wzp_stages::quality::journal::{DecisionJournal, Record, DEFAULT_NAME as JOURNAL};
use wzp_stages::quality::path::{PathLive, PathSample};

const Q_NS: u64 = 20_000_000;

/// One stage with its own buffers, stepped by hand.
struct Stage {
    p: Box<dyn Processor>,
    pool: Vec<Buffer>,
    ins: Vec<u32>,
    outs: Vec<u32>,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
    cycle: u64,
}

impl Stage {
    fn build(
        f: &dyn StageFactory,
        params: &[(&str, &str)],
        res: &Resources,
    ) -> Result<Stage, BuildError> {
        let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q_NS), res);
        // The kind's defaults, then `params` coerced as a graph file's
        // strings are.
        let mut p = Params::default();
        for spec in f.info().params {
            if let Some(d) = spec.default {
                p.insert(spec.name, d);
            }
            if let Some((_, v)) = params.iter().find(|(k, _)| *k == spec.name) {
                let bad = |e: String| BuildError::Param(ParamError::new(spec.name, e));
                let v = match spec.ty {
                    ParamType::Duration => {
                        ParamValue::Duration(wzp_engine::params::parse_duration(v).map_err(bad)?)
                    }
                    ParamType::Int => ParamValue::Int(v.parse().map_err(|_| bad(v.to_string()))?),
                    ParamType::Bool => ParamValue::Bool(v.parse().map_err(|_| bad(v.to_string()))?),
                    _ => ParamValue::Str(v.to_string()),
                };
                p.insert(spec.name, v);
            }
        }
        let built = f.build(&mut cx, &p)?;
        let (counters, gauges) = cx.take_metrics();
        let mut pool = Vec::new();
        let (mut ins, mut outs) = (Vec::new(), Vec::new());
        for d in &built.inputs {
            ins.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, Q_NS, 64));
        }
        for d in &built.outputs {
            outs.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, Q_NS, 64));
        }
        Ok(Stage {
            p: built.processor,
            pool,
            ins,
            outs,
            counters,
            gauges,
            cycle: 0,
        })
    }

    fn frames(&mut self, buf: u32) -> &mut Batch<FrameMeta> {
        match &mut self.pool[buf as usize] {
            Buffer::Frames(b) => b,
            _ => panic!("not a frame buffer"),
        }
    }

    fn input(&mut self, i: usize) -> &mut Batch<FrameMeta> {
        let b = self.ins[i];
        self.frames(b)
    }

    fn output(&mut self, o: usize) -> &mut Batch<FrameMeta> {
        let b = self.outs[o];
        self.frames(b)
    }

    /// Runs one cycle at `cycle * quantum`; clears the inputs after it.
    fn step(&mut self) {
        for &o in &self.outs {
            self.pool[o as usize].reset();
        }
        let cx = Cx {
            now_ns: self.cycle * Q_NS,
            cycle: self.cycle,
            rate: 48_000,
            quantum_ns: Q_NS,
        };
        let mut io = Io::checked(&mut self.pool, &self.ins, &self.outs).unwrap();
        self.p.process(&mut io, &cx);
        for &i in &self.ins {
            self.pool[i as usize].reset();
        }
        self.cycle += 1;
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap()
            .1
            .get()
    }

    fn gauge(&self, name: &str) -> i64 {
        self.gauges.iter().find(|(n, _)| n == name).unwrap().1.get()
    }
}

fn frame(seq: u32, stream: u32) -> FrameMeta {
    FrameMeta {
        seq,
        timestamp: seq * 960,
        stream,
        codec: CodecId::OPUS.0,
        duration_ms: 20,
        ..FrameMeta::default()
    }
}

#[test]
fn the_receiver_reports_each_sender_once_per_interval() {
    let res = Resources::new();
    let mut st = Stage::build(
        &FeedbackReportFactory,
        // Periodic reports only (early ones: the next test).
        &[("interval", "1s"), ("reporter_id", "9"), ("onset", "false")],
        &res,
    )
    .unwrap();
    let mut reports: Vec<Vec<u8>> = Vec::new();
    // Two senders, one frame each per quantum; sender 7 loses every 5th.
    // The first report is due a second after the first frame: cycles 50,
    // 100, 150.
    for cycle in 0..160u32 {
        assert_rt_safe("feedback_report process", 1, || {
            let now = u64::from(cycle) * Q_NS;
            for (stream, lossy) in [(7u32, true), (8, false)] {
                if lossy && cycle % 5 == 4 {
                    continue;
                }
                let mut m = frame(cycle, stream);
                m.arrival_ns = now + 1_000_000;
                st.input(0).push(m, &[0u8; 60]).unwrap();
            }
            st.step();
        });
        // Copied out of the checked block (this allocates).
        for f in st.output(0).iter() {
            assert_eq!(f.meta.codec, CodecId::FEEDBACK.0);
            assert_eq!(f.meta.stream, 9);
            assert_eq!(cycle % 50, 0, "a report at cycle {cycle}");
            reports.push(f.bytes().to_vec());
        }
    }
    assert_eq!(st.counter("reports_sent"), 3, "one report a second");
    assert_eq!(reports.len(), 3);
    assert_eq!(st.counter("frames_seen"), 160 + 128);
    let last = FeedbackReport::parse(&reports[2]).unwrap();
    assert_eq!(last.interval_ms, 1000);
    let entries: Vec<_> = last.entries().collect();
    // The two senders, and the receiver's own entry: its hold budget, the
    // default 60 ms.
    assert_eq!(entries.len(), 3);
    assert_eq!(
        last.receiver_info(),
        Some(ReceiverInfo {
            hold_budget_ms: 60,
            riding_repair: true
        })
    );
    let e7 = entries.iter().find(|e| e.sender_id == 7).unwrap();
    let e8 = entries.iter().find(|e| e.sender_id == 8).unwrap();
    assert!(
        (0.15..=0.25).contains(&e7.loss_fraction()),
        "{}",
        e7.loss_fraction()
    );
    assert_eq!(e8.loss_fraction(), 0.0);
    assert_eq!(e8.expected, 50, "a whole second settled: {e8:?}");
}

/// Every report states the receiver's hold budget (`hold_budget`, its
/// jitter buffers' `burst_hold`) in an entry of its own, and whether it
/// takes riding repair (`riding_repair`, default true); a budget past
/// DRED's reach is refused at build.
#[test]
fn the_receiver_states_its_hold_budget_in_every_report() {
    for (budget, want, riding) in [
        ("0ms", 0u16, "true"),
        ("120ms", 120, "false"),
        ("1s", 1000, "true"),
    ] {
        let res = Resources::new();
        let mut st = Stage::build(
            &FeedbackReportFactory,
            &[
                ("interval", "100ms"),
                ("hold_budget", budget),
                ("riding_repair", riding),
            ],
            &res,
        )
        .unwrap();
        let mut infos = Vec::new();
        for cycle in 0..30u32 {
            let mut m = frame(cycle, 7);
            m.arrival_ns = u64::from(cycle) * Q_NS + 1_000_000;
            st.input(0).push(m, &[0u8; 60]).unwrap();
            st.step();
            for f in st.output(0).iter() {
                let r = FeedbackReport::parse(f.bytes()).unwrap();
                assert!(r.entry_for(7).is_some());
                infos.push(r.receiver_info());
            }
        }
        assert!(infos.len() >= 2, "{budget}: {infos:?}");
        for info in infos {
            assert_eq!(
                info,
                Some(ReceiverInfo {
                    hold_budget_ms: want,
                    riding_repair: riding == "true",
                }),
                "{budget}"
            );
        }
    }
    let res = Resources::new();
    let err = Stage::build(&FeedbackReportFactory, &[("hold_budget", "1001ms")], &res)
        .err()
        .expect("a budget past 1 s is refused");
    assert!(err.to_string().contains("hold_budget"), "{err}");
}

/// Runs `feedback_report` with `onset` (after the default 3 s clean) over
/// one sender losing the frames in `lost` (one frame per quantum, cycles
/// 0..600); for each report the cycle it left at, whether it was early,
/// its lost count and its `interval_ms`; and the `early_reports` counter.
fn report_cycles(onset: bool, lost: &[u32]) -> (Vec<(u32, bool, u32, u16)>, u64) {
    let res = Resources::new();
    let onset = onset.to_string();
    let mut st = Stage::build(
        &FeedbackReportFactory,
        &[("interval", "1s"), ("onset", onset.as_str())],
        &res,
    )
    .unwrap();
    let mut out = Vec::new();
    for cycle in 0..600u32 {
        assert_rt_safe("feedback_report process", 1, || {
            if !lost.contains(&cycle) {
                let mut m = frame(cycle, 7);
                m.arrival_ns = u64::from(cycle) * Q_NS + 1_000_000;
                st.input(0).push(m, &[0u8; 60]).unwrap();
            }
            st.step();
        });
        for f in st.output(0).iter() {
            let r = FeedbackReport::parse(f.bytes()).unwrap();
            let e = r.entry_for(7).unwrap();
            out.push((
                cycle,
                r.is_early(),
                u32::from(e.expected - e.received),
                r.interval_ms,
            ));
        }
    }
    (out, st.counter("early_reports"))
}

#[test]
fn an_early_report_leaves_when_loss_begins_on_a_clean_path() {
    // Clean for 4 s, then frame 200 lost: settled 8 packets later (the
    // reorder window), at cycle 208, and an early report leaves then, 160
    // ms into the interval, counting it; the interval runs on, and its
    // report at 250 counts it again with frame 210. Frame 340, settled
    // 1.96 s after the last report that showed loss (250): no early report
    // (`onset_after`, 2 s). Frame 460, settled 2.36 s after (350): one
    // (468).
    let lost = [200, 210, 340, 460];
    let (got, early) = report_cycles(true, &lost);
    let regular = |c: u32, l: u32| (c, false, l, 1000u16);
    assert_eq!(
        got,
        vec![
            regular(50, 0),
            regular(100, 0),
            regular(150, 0),
            regular(200, 0),
            (208, true, 1, 160),
            regular(250, 2),
            regular(300, 0),
            regular(350, 1),
            regular(400, 0),
            regular(450, 0),
            (468, true, 1, 360),
            regular(500, 1),
            regular(550, 0),
        ],
        "(cycle, early, lost, interval_ms) of each report"
    );
    assert_eq!(early, 2);
    // Off: once a second, the same regular reports, no early one.
    let (got, early) = report_cycles(false, &lost);
    assert_eq!(
        got,
        (1..12)
            .map(|i| regular(i * 50, [0, 0, 0, 0, 2, 0, 1, 0, 0, 1, 0][i as usize - 1]))
            .collect::<Vec<_>>(),
    );
    assert_eq!(early, 0);
}

#[test]
fn out_of_range_interval_is_refused_with_its_name() {
    for bad in ["0ms", "5ms", "2s"] {
        let e = Stage::build(
            &FeedbackReportFactory,
            &[("interval", bad)],
            &Resources::new(),
        )
        .err()
        .unwrap_or_else(|| panic!("interval {bad} accepted"));
        assert!(e.to_string().contains("interval"), "{e}");
    }
}

/// The bytes of a one-second report of `entries`.
fn encode_report(entries: &[wzp_proto::FeedbackEntry]) -> Vec<u8> {
    let mut out = vec![0u8; wzp_proto::feedback::feedback_len(entries.len())];
    let n = wzp_proto::encode_feedback(1000, entries, &mut out).unwrap();
    out.truncate(n);
    out
}

/// A report about `sender` with `lost` of 50 packets lost, all isolated.
fn report_bytes(sender: u32, lost: u16) -> Vec<u8> {
    let e = wzp_proto::FeedbackEntry {
        sender_id: sender,
        expected: 50,
        received: 50 - lost,
        bursts: [lost.min(255) as u8, 0, 0, 0, 0, 0],
        max_burst: u8::from(lost > 0),
        jitter_100us: 10,
        queue_delay_100us: 10,
        recv_kbps: 40,
        ..Default::default()
    };
    encode_report(&[e])
}

fn adapt(enabled: &str, cell: &Arc<OpusLive>) -> Stage {
    let mut res = Resources::new();
    res.insert("enc_live", cell.clone());
    Stage::build(
        &AdaptFactory,
        &[("live_settings", "enc_live"), ("enabled", enabled)],
        &res,
    )
    .unwrap()
}

/// Runs `secs` seconds of 20 ms cycles: one frame of stream 3 in each, and
/// `report` on the feedback input once a second.
fn drive(st: &mut Stage, secs: u32, report: &[u8]) {
    assert_rt_safe("adapt process", (secs * 50) as usize, || {
        let c = st.cycle as u32;
        st.input(0).push(frame(c, 3), &[1u8; 40]).unwrap();
        if c % 50 == 49 {
            let mut m = frame(0, 11);
            m.codec = CodecId::FEEDBACK.0;
            st.input(1).push(m, report).unwrap();
            // Media on the feedback input is ignored.
            st.input(1).push(frame(c, 11), &[2u8; 40]).unwrap();
        }
        st.step();
        assert_eq!(st.output(0).len(), 1, "frames pass through");
    });
}

#[test]
fn loss_reports_turn_lbrr_on_in_the_encoder_cell_and_clean_ones_turn_it_off() {
    let cell = Arc::new(OpusLive::new());
    let mut st = adapt("true", &cell);
    let lossy = report_bytes(3, 10);
    drive(&mut st, 2, &lossy);
    let s = cell.get().expect("settings published");
    assert!(s.inband_fec, "{s:?}");
    assert!((15..=25).contains(&s.expected_loss), "{s:?}");
    assert_eq!(s.dred_ms, 0);
    assert_eq!(st.counter("reports"), 2);
    assert_eq!(st.counter("decisions_startup"), 1);
    assert_eq!(st.counter("decisions_random_loss"), 1);
    assert_eq!(st.counter("applied"), st.counter("decisions"));
    assert_eq!(st.gauge("loss_pct"), 20);
    assert_eq!(st.gauge("lbrr"), 1);
    // A report about another sender changes nothing.
    let other = report_bytes(4, 30);
    drive(&mut st, 2, &other);
    assert_eq!(st.counter("reports"), 2);
    // Clean reports: redundancy off once the loss is older than the settle
    // time (4 s) and its estimate (decaying by 0.7 a report) is below 1 %.
    let clean = report_bytes(3, 0);
    drive(&mut st, 12, &clean);
    let s = cell.get().unwrap();
    assert!(
        !s.inband_fec && s.dred_ms == 0 && s.expected_loss == 0,
        "{s:?}"
    );
    assert_eq!(st.counter("decisions_clean_path"), 1);
    assert_eq!(st.gauge("lbrr"), 0);
    assert_eq!(st.counter("report_errors"), 0);
}

/// With `log_inputs`, the journal carries what the controller was handed
/// between its decisions, in order (the start, each report and early report
/// about this sender), and a replay of those inputs takes the same
/// decisions; without it, decisions only.
#[test]
fn with_log_inputs_the_journal_carries_what_replays_to_the_decisions() {
    let run = |log: &str| {
        let cell = Arc::new(OpusLive::new());
        let journal = Arc::new(DecisionJournal::default());
        let mut res = Resources::new();
        res.insert("enc_live", cell.clone());
        res.insert(JOURNAL, journal.clone());
        let mut st = Stage::build(
            &AdaptFactory,
            &[("live_settings", "enc_live"), ("log_inputs", log)],
            &res,
        )
        .unwrap();
        drive(&mut st, 8, &report_bytes(3, 0));
        drive(&mut st, 3, &report_bytes(3, 10));
        let mut records = Vec::new();
        journal.drain(|r| records.push(r));
        assert_eq!(st.counter("journal_dropped"), 0);
        records
    };
    let plain = run("false");
    assert!(plain.iter().all(|r| r.decision().is_some()), "{plain:?}");
    let logged = run("true");
    let decisions: Vec<_> = logged
        .iter()
        .filter_map(|r| r.decision().copied())
        .collect();
    assert_eq!(
        decisions,
        plain
            .iter()
            .filter_map(|r| r.decision().copied())
            .collect::<Vec<_>>()
    );
    let inputs: Vec<InputRecord> = logged
        .iter()
        .filter_map(|r| match r {
            Record::Input(i) => Some(*i),
            Record::Decision(_) => None,
        })
        .collect();
    assert!(matches!(inputs[0].input, Input::Start { .. }), "{inputs:?}");
    let reports = inputs
        .iter()
        .filter(|i| matches!(i.input, Input::Report { .. }))
        .count();
    // One report a second for 11 s.
    assert_eq!(reports, 11, "{inputs:?}");
    // The start comes before the start-up decision, each report before
    // the decision it moved.
    assert!(matches!(logged[0], Record::Input(_)), "{logged:?}");
    let last = decisions.last().unwrap().at_ns;
    let replayed = replay(&inputs, last).unwrap();
    assert_eq!(replayed.len(), decisions.len(), "{replayed:?}");
    for (r, d) in replayed.iter().zip(&decisions) {
        assert_eq!(
            (r.at_ns, r.reason, r.settings),
            (d.at_ns, d.reason, d.settings)
        );
    }
}

/// Each decision goes to the journal with what moved it: an early report's
/// loss for a decision an early report took, not the last full report's.
#[test]
fn every_decision_is_journaled_with_the_report_that_moved_it() {
    let cell = Arc::new(OpusLive::new());
    let journal = Arc::new(DecisionJournal::default());
    let mut res = Resources::new();
    res.insert("enc_live", cell.clone());
    res.insert(JOURNAL, journal.clone());
    let mut st = Stage::build(&AdaptFactory, &[("live_settings", "enc_live")], &res).unwrap();
    // Clean past the start-up and settle periods: redundancy off.
    drive(&mut st, 8, &report_bytes(3, 0));
    // Then an early report: 6 of 30 packets lost so far.
    let e = wzp_proto::FeedbackEntry {
        sender_id: 3,
        expected: 30,
        received: 24,
        bursts: [6, 0, 0, 0, 0, 0],
        max_burst: 1,
        recv_kbps: 40,
        ..Default::default()
    };
    let mut early = vec![0u8; 64];
    let n = wzp_proto::feedback::encode_feedback_flags(
        wzp_proto::feedback::FEEDBACK_FLAG_EARLY,
        300,
        &[e],
        &mut early,
    )
    .unwrap();
    early.truncate(n);
    drive(&mut st, 1, &early);
    let mut got = Vec::new();
    journal.drain(|r| got.extend(r.decision().copied()));
    let reasons: Vec<Reason> = got.iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [Reason::Startup, Reason::CleanPath, Reason::RandomLoss],
        "{got:?}"
    );
    assert_eq!(got.len() as u64, st.counter("decisions"));
    assert_eq!(st.counter("reports_early"), 1);
    let clean = &got[1];
    assert_eq!((clean.loss_pct, clean.settings.dred_ms), (0, 0));
    let moved = &got[2];
    assert_eq!(moved.loss_pct, 20, "{moved:?}");
    assert!(moved.settings.lbrr && moved.applied, "{moved:?}");
    assert!(moved.at_ns > clean.at_ns);
    // The gauges keep the last full report's figures.
    assert_eq!(st.gauge("loss_pct"), 0);
    assert_eq!(st.counter("journal_dropped"), 0);
}

#[test]
fn disabled_it_decides_but_leaves_the_encoder_alone() {
    let cell = Arc::new(OpusLive::new());
    let mut st = adapt("false", &cell);
    drive(&mut st, 2, &report_bytes(3, 10));
    assert_eq!(cell.get(), None);
    assert_eq!(st.counter("applied"), 0);
    assert_eq!(st.counter("decisions_random_loss"), 1);
}

#[test]
fn malformed_reports_are_counted_and_dropped() {
    let cell = Arc::new(OpusLive::new());
    let mut st = adapt("true", &cell);
    let good = report_bytes(3, 10);
    let bad: [&[u8]; 4] = [&[], &[1, 0, 0], &[2, 0, 3, 232, 0], &good[..good.len() - 1]];
    for b in bad {
        drive(&mut st, 1, b);
    }
    assert_eq!(st.counter("report_errors"), 4);
    assert_eq!(st.counter("reports"), 0);
    assert_eq!(st.counter("decisions_random_loss"), 0);
}

#[test]
fn a_cell_of_another_type_or_an_unknown_tier_is_refused() {
    let mut res = Resources::new();
    res.insert("enc_live", Arc::new(5u8));
    let e = Stage::build(&AdaptFactory, &[("live_settings", "enc_live")], &res)
        .err()
        .unwrap();
    assert!(e.to_string().contains("enc_live"), "{e}");
    let e = Stage::build(&AdaptFactory, &[("top_tier", "best")], &Resources::new())
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("best") && e.to_string().contains("good"),
        "{e}"
    );
    // A hold budget past what DRED reaches, or no duration at all.
    let mut res = Resources::new();
    res.insert("enc_live", Arc::new(OpusLive::new()));
    for (budget, says) in [("2s", "above 1s"), ("sixty", "hold_budget")] {
        let e = Stage::build(
            &AdaptFactory,
            &[("live_settings", "enc_live"), ("hold_budget", budget)],
            &res,
        )
        .err()
        .unwrap_or_else(|| panic!("hold_budget={budget} was taken"));
        assert!(e.to_string().contains(says), "{budget}: {e}");
    }
}

/// In a call the reports travel as packets with their own seq: the stage
/// numbers them 1, 2, 3, skips the reports of other members it receives
/// (they count reports, not the sender's packets), and adds the packet's
/// wire bytes beyond the payload to the receive rate.
#[test]
fn reports_are_numbered_other_reports_skipped_and_overhead_counted() {
    let res = Resources::new();
    let mut plain = Stage::build(&FeedbackReportFactory, &[], &res).unwrap();
    let mut wire = Stage::build(&FeedbackReportFactory, &[("overhead_bytes", "38")], &res).unwrap();
    let mut seqs = Vec::new();
    let mut kbps = Vec::new();
    for cycle in 0..151u32 {
        for st in [&mut plain, &mut wire] {
            assert_rt_safe("feedback_report process", 1, || {
                st.input(0).push(frame(cycle, 7), &[0u8; 60]).unwrap();
                // Another member's report, numbered from 1: skipped.
                let mut r = frame(cycle / 50 + 1, 7);
                r.codec = CodecId::FEEDBACK.0;
                st.input(0).push(r, &[0u8; 34]).unwrap();
                st.step();
            });
        }
        for (k, st) in [&mut plain, &mut wire].into_iter().enumerate() {
            for f in st.output(0).iter() {
                if k == 1 {
                    seqs.push(f.meta.seq);
                }
                let r = FeedbackReport::parse(f.bytes()).unwrap();
                let e = r.entries().next().unwrap();
                assert_eq!(e.loss_fraction(), 0.0, "reports are not lost frames");
                kbps.push((k, e.recv_kbps));
            }
        }
    }
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(wire.counter("frames_seen"), 151);
    // 60 bytes at 50 packets/s = 24 kbit/s; with 38 more, 39.2.
    let last = |k: usize| kbps.iter().rev().find(|(j, _)| *j == k).unwrap().1;
    assert_eq!((last(0), last(1)), (24, 39));
}

/// The id to read comes from the `LocalSender` cell `wire.packetize`
/// publishes (the encoder's frames carry no id), and with several receivers
/// reporting, the worst one decides.
#[test]
fn adapt_reads_its_entry_by_the_published_id_and_follows_the_worst_receiver() {
    let cell = Arc::new(OpusLive::new());
    let own = Arc::new(wzp_stages::wire::LocalSender::new());
    own.set(3);
    let mut res = Resources::new();
    res.insert("enc_live", cell.clone());
    res.insert("me", own);
    let mut st = Stage::build(
        &AdaptFactory,
        &[("live_settings", "enc_live"), ("local_sender", "me")],
        &res,
    )
    .unwrap();
    // Receiver 11 hears us cleanly, receiver 12 loses 10 of 50; a report
    // about another sender (5) says nothing about us.
    let clean = report_bytes(3, 0);
    let lossy = report_bytes(3, 10);
    let other = report_bytes(5, 40);
    assert_rt_safe("adapt process", 100, || {
        let c = st.cycle as u32;
        st.input(0).push(frame(c, 0), &[1u8; 40]).unwrap();
        if c % 50 == 49 {
            for (reporter, r) in [(11, &clean), (12, &lossy), (13, &other)] {
                let mut m = frame(c, reporter);
                m.codec = CodecId::FEEDBACK.0;
                st.input(1).push(m, r).unwrap();
            }
        }
        st.step();
    });
    assert_eq!(st.counter("reports"), 4, "two reporters, two seconds");
    assert_eq!(st.counter("report_expected"), 200);
    assert_eq!(st.counter("report_received"), 180);
    let s = cell.get().expect("settings published");
    assert!(
        s.inband_fec && (15..=25).contains(&s.expected_loss),
        "{s:?}"
    );
    assert_eq!(st.gauge("loss_pct"), 20, "the last entry read: receiver 12");
    // A cell name that is not there is refused with its name.
    let e = Stage::build(
        &AdaptFactory,
        &[("local_sender", "nope")],
        &Resources::new(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("nope"), "{e}");
}

/// A report about `sender` losing a run of 8 and four single packets of
/// 50 (a burst on any path), stating the reporter's hold budget when
/// `budget_ms` is some.
fn burst_report(sender: u32, budget_ms: Option<u16>) -> Vec<u8> {
    let e = wzp_proto::FeedbackEntry {
        sender_id: sender,
        expected: 50,
        received: 38,
        bursts: [4, 0, 0, 1, 0, 0],
        max_burst: 8,
        jitter_100us: 10,
        queue_delay_100us: 10,
        recv_kbps: 40,
        ..Default::default()
    };
    let mut entries = vec![e];
    entries.extend(budget_ms.map(|b| {
        ReceiverInfo {
            hold_budget_ms: b,
            riding_repair: false,
        }
        .to_entry()
    }));
    encode_report(&entries)
}

/// The hold budget a receiver states in its reports is what bursts are
/// protected to: DRED with a hold as long as the burst within it (120 ms:
/// 6 frames of the run of 8), the `hold_budget` param's 60 ms (3 frames)
/// for a receiver that states none, and LBRR for one that holds nothing
/// (DRED would rebuild nothing in time for it). With two receivers, the
/// smaller budget.
#[test]
fn the_hold_budget_a_receiver_states_sizes_the_burst_protection() {
    let run = |reports: &[(u32, Vec<u8>)]| {
        let cell = Arc::new(OpusLive::new());
        let mut st = adapt("true", &cell);
        assert_eq!(st.gauge("hold_budget_ms"), 60, "the param's until a report");
        assert_rt_safe("adapt process", 100, || {
            let c = st.cycle as u32;
            st.input(0).push(frame(c, 3), &[1u8; 40]).unwrap();
            if c % 50 == 49 {
                for (reporter, r) in reports {
                    let mut m = frame(c, *reporter);
                    m.codec = CodecId::FEEDBACK.0;
                    st.input(1).push(m, r).unwrap();
                }
            }
            st.step();
        });
        let s = cell.get().expect("settings published");
        (
            s.dred_ms,
            s.inband_fec,
            st.gauge("receiver_hold_frames"),
            st.gauge("hold_budget_ms"),
        )
    };
    assert_eq!(
        run(&[(11, burst_report(3, Some(120)))]),
        (1000, false, 6, 120)
    );
    assert_eq!(run(&[(11, burst_report(3, None))]), (1000, false, 3, 60));
    assert_eq!(run(&[(11, burst_report(3, Some(0)))]), (0, true, 0, 0));
    assert_eq!(
        run(&[
            (11, burst_report(3, Some(120))),
            (12, burst_report(3, Some(40)))
        ]),
        (1000, false, 2, 40)
    );
}

/// Heavy loss (80 %, past the 60 % where Opus is given up; `rate_check` off,
/// so any heavy loss is Codec2's): Codec2 with its
/// tier's RaptorQ repair. With the repair cell (`fec_live`) and the codec
/// cell, both go live together; without the codec cell the Codec2 tier is
/// not sent, so neither is its repair (the cell says 0) and the decision
/// counts `not_live`. When the loss is over, the repair goes with Codec2.
#[test]
fn heavy_loss_publishes_the_tiers_repair_ratio_through_the_fec_cell() {
    for with_codec in [true, false] {
        let opus = Arc::new(OpusLive::new());
        let codec = Arc::new(CodecLive::new());
        let fec = Arc::new(FecLive::new());
        let mut res = Resources::new();
        res.insert("enc_live", opus.clone());
        res.insert("codec_live", codec.clone());
        res.insert("fec_live", fec.clone());
        // Codec2 for any heavy loss (the rate check would keep random
        // heavy loss on Opus: stages/tests/quality_controller.rs).
        let mut params = vec![
            ("live_settings", "enc_live"),
            ("fec_live", "fec_live"),
            ("rate_check", "false"),
        ];
        if with_codec {
            params.push(("codec_live", "codec_live"));
        }
        let mut st = Stage::build(&AdaptFactory, &params, &res).unwrap();
        drive(&mut st, 6, &report_bytes(3, 40));
        assert!(
            st.counter("decisions_heavy_loss") >= 1,
            "with_codec {with_codec}"
        );
        if with_codec {
            let tier = codec.get().expect("codec cell written").profile;
            assert!(tier.fec_ratio_percent >= 50, "{}", tier.name);
            assert_eq!(fec.get(), Some(tier.fec_ratio_percent));
            assert_eq!(st.gauge("fec_ratio"), i64::from(tier.fec_ratio_percent));
            assert_eq!(st.counter("not_live"), 0, "codec and repair are live");
        } else {
            assert_eq!(fec.get(), Some(0), "no Codec2 sent, no repair for it");
            assert!(st.counter("not_live") >= 1);
        }
        drive(&mut st, 30, &report_bytes(3, 0));
        assert_eq!(fec.get(), Some(0), "with_codec {with_codec}");
        if with_codec {
            assert_eq!(codec.get().unwrap().profile.name, "good");
        }
    }
}

/// `quality.adapt` with the encoder's cell and the FEC encoder's cell, and
/// one more param.
fn adapt_with_fec_cell(param: (&str, &str)) -> (Stage, Arc<OpusLive>, Arc<FecLive>) {
    let opus = Arc::new(OpusLive::new());
    let fec = Arc::new(FecLive::new());
    let mut res = Resources::new();
    res.insert("enc_live", opus.clone());
    res.insert("fec_live", fec.clone());
    let params = [
        ("live_settings", "enc_live"),
        ("fec_live", "fec_live"),
        param,
    ];
    let st = Stage::build(&AdaptFactory, &params, &res).unwrap();
    (st, opus, fec)
}

/// The FEC cell says repair may ride in source packets while the receiver
/// reporting says it takes codec `0x41`, with `enabled` off too (it changes
/// the repair's bytes, not the frames); not for a report that says nothing
/// (an older build's), and not once it says it does not.
#[test]
fn the_fec_cell_says_repair_may_ride_while_the_receivers_take_it() {
    for enabled in ["true", "false"] {
        let (mut st, _, fec) = adapt_with_fec_cell(("enabled", enabled));
        let with = |riding: Option<bool>| {
            let e = wzp_proto::FeedbackEntry {
                sender_id: 3,
                expected: 50,
                received: 50,
                recv_kbps: 40,
                ..Default::default()
            };
            let mut entries = vec![e];
            entries.extend(riding.map(|r| {
                ReceiverInfo {
                    hold_budget_ms: 60,
                    riding_repair: r,
                }
                .to_entry()
            }));
            encode_report(&entries)
        };
        drive(&mut st, 2, &with(None));
        assert!(!fec.riding(), "{enabled}: an older build's reports");
        assert_eq!(st.gauge("repair_rides"), 0);
        drive(&mut st, 2, &with(Some(true)));
        assert!(fec.riding(), "{enabled}");
        assert_eq!(st.gauge("repair_rides"), 1);
        drive(&mut st, 2, &with(Some(false)));
        assert!(!fec.riding(), "{enabled}");
        assert_eq!(st.gauge("repair_rides"), 0);
    }
}

/// Random loss of 20 % with the FEC encoder's cell: from the second lossy
/// report, Opus at 11 kb/s with no LBRR in the Opus cell, and a repair
/// symbol per frame in blocks of two in the FEC cell. Without the cell
/// (`loss_reports_turn_lbrr_on_in_the_encoder_cell_and_clean_ones_turn_it_off`)
/// the call keeps LBRR: a lower rate with no repair going out would be no
/// protection at all. With `random_fec=false`, LBRR too.
#[test]
fn random_loss_publishes_raptorq_with_its_block_size_through_the_fec_cell() {
    for random_fec in ["true", "false"] {
        let (mut st, opus, fec) = adapt_with_fec_cell(("random_fec", random_fec));
        drive(&mut st, 3, &report_bytes(3, 10));
        let o = opus.get().expect("settings published");
        if random_fec == "true" {
            assert_eq!(st.counter("decisions_fec_loss"), 1);
            assert!(
                o.bitrate == 11_000 && !o.inband_fec && o.dred_ms == 0,
                "{o:?}"
            );
            assert_eq!((fec.get(), fec.block()), (Some(100), Some(2)));
            assert_eq!(st.gauge("fec_ratio"), 100);
        } else {
            assert_eq!(st.counter("decisions_fec_loss"), 0);
            assert!(o.bitrate == 24_000 && o.inband_fec, "{o:?}");
            assert_eq!(fec.get(), Some(0));
        }
        assert_eq!(st.counter("not_live"), 0);
        // The path clears: the repair stops with the rest.
        drive(&mut st, 8, &report_bytes(3, 0));
        assert_eq!(fec.get(), Some(0), "random_fec {random_fec}");
        assert_eq!(opus.get().unwrap().bitrate, 24_000);
    }
}

/// A receiver behind an 11 kb/s bottleneck: a full queue, the receive rate
/// at the cap.
fn capped_report(sender: u32) -> Vec<u8> {
    let e = wzp_proto::FeedbackEntry {
        sender_id: sender,
        expected: 50,
        received: 14,
        bursts: [36, 0, 0, 0, 0, 0],
        max_burst: 1,
        jitter_100us: 10,
        queue_delay_100us: 800,
        recv_kbps: 11,
        ..Default::default()
    };
    encode_report(&[e])
}

/// A path too narrow for any Opus tier: with the adaptive encoder's codec
/// cell the decision goes to Codec2 1200 (packed up to 120 ms) live; without it
/// the Opus encoder gets the lowest Opus tier's rate, not the top tier's
/// heavy-loss fallback, which would only overfill the path.
#[test]
fn a_path_too_narrow_for_opus_goes_to_codec2_1200_through_the_codec_cell() {
    let opus = Arc::new(OpusLive::new());
    let codec = Arc::new(CodecLive::new());
    let mut res = Resources::new();
    res.insert("enc_live", opus.clone());
    res.insert("codec_live", codec.clone());
    let mut st = Stage::build(
        &AdaptFactory,
        &[("live_settings", "enc_live"), ("codec_live", "codec_live")],
        &res,
    )
    .unwrap();
    // Past the 3 s start-up, which holds the profile's settings.
    drive(&mut st, 5, &capped_report(3));
    let c = codec.get().expect("codec cell written");
    assert_eq!(c.profile.name, "catastrophic");
    // The reports stay congested whatever is sent (the model path does not
    // ease), so the ladder goes on to its last step: three Codec2 frames
    // per 120 ms packet, live too.
    assert_eq!(c.frame_ms, 120);
    assert_eq!(st.gauge("codec"), i64::from(CodecId::CODEC2_1200.0));
    assert!(st.counter("decisions_congestion") >= 1);
    assert_eq!(st.counter("not_live"), 0, "codec and frame size are live");
    assert_eq!(st.counter("applied"), st.counter("decisions"));

    // The same reports without the codec cell.
    let alone = Arc::new(OpusLive::new());
    let mut st = adapt("true", &alone);
    drive(&mut st, 5, &capped_report(3));
    let s = alone.get().unwrap();
    assert_eq!(s.bitrate, 6_000, "{s:?}");
    assert!(!s.inband_fec && s.dred_ms == 0, "{s:?}");
    assert!(st.counter("not_live") >= 1);
}

/// The first hop's samples (`path_live`, published by the client's
/// connection) move the tier down with no report at all, and are read in
/// `process` without allocating. A name taken by another type is refused.
#[test]
fn first_hop_samples_move_the_tier_down_with_no_report() {
    let opus = Arc::new(OpusLive::new());
    let path = Arc::new(PathLive::new());
    let mut res = Resources::new();
    res.insert("enc_live", opus.clone());
    res.insert("call.path", path.clone());
    let mut st = Stage::build(
        &AdaptFactory,
        &[("live_settings", "enc_live"), ("path_live", "call.path")],
        &res,
    )
    .unwrap();
    let congested = PathSample {
        sent: 25,
        lost: 15,
        queue_ms: 120,
        delivered_kbps: 10,
    };
    assert_rt_safe("adapt process with path samples", 150, || {
        let c = st.cycle as u32;
        st.input(0).push(frame(c, 3), &[1u8; 40]).unwrap();
        // A sample every 500 ms, as the client publishes them.
        if c % 25 == 24 {
            path.publish(congested);
        }
        st.step();
    });
    assert_eq!(st.counter("path_samples"), 6);
    assert!(st.counter("path_congestion") >= 1);
    assert_eq!(st.counter("reports"), 0);
    assert!(st.counter("decisions_congestion") >= 1);
    assert!(st.gauge("bitrate") < 24_000, "{}", st.gauge("bitrate"));
    assert_eq!(
        (
            st.gauge("path_loss_pct"),
            st.gauge("path_queue_ms"),
            st.gauge("path_kbps")
        ),
        (60, 120, 10)
    );
    let s = opus.get().expect("the step went to the encoder");
    assert!(
        s.bitrate < 24_000 && !s.inband_fec && s.dred_ms == 0,
        "{s:?}"
    );

    let mut res = Resources::new();
    res.insert("enc_live", Arc::new(OpusLive::new()));
    res.insert("call.path", Arc::new(7u32));
    let e = Stage::build(
        &AdaptFactory,
        &[("live_settings", "enc_live"), ("path_live", "call.path")],
        &res,
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("PathLive"), "{e}");
}

/// A live-settings cell typed two ways (the controller writes `enc_lvie`,
/// the encoder reads `enc_live`) compiles and runs, but every decision goes
/// nowhere: the compiler says so, naming both stages and both names. The
/// shipped loopback graph, and a journal nobody inserted, draw no warning.
#[test]
fn a_shared_cell_only_one_stage_uses_is_warned_about() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../graphs/loopback.toml"
    ))
    .unwrap();
    let warnings = |text: &str| {
        let spec = GraphSpec::parse(text, "loopback.toml", &Default::default()).unwrap();
        wzp_engine::compile::compile_dry_run(&spec, &wzp_stages::registry(), &Resources::new())
            .unwrap()
            .warnings
    };
    assert_eq!(warnings(&text), Vec::<String>::new());
    let adapt_line = text
        .lines()
        .find(|l| l.contains("live_settings = \"enc_live\", fec_live"))
        .expect("the adapt stage's params");
    let typo = text.replace(
        adapt_line,
        &adapt_line.replace(
            "live_settings = \"enc_live\"",
            "live_settings = \"enc_lvie\"",
        ),
    );
    let w = warnings(&typo);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter()
            .any(|w| w.contains("`adapt`") && w.contains("\"enc_lvie\"")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("`enc`") && w.contains("\"enc_live\"")),
        "{w:?}"
    );
}
