//! `net.netem` / `net.netem_frames`: determinism, each impairment, the delay
//! queue bound, loss traces, and real-time safety.

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::net::netem::{parse_trace, Netem, NetemFrames, TraceError};

wzp_engine::install_alloc_checker!();

const Q_NS: u64 = 20_000_000;

fn params_for(f: &dyn StageFactory, overrides: &[(&str, ParamValue)]) -> Params {
    let info = f.info();
    let mut p = Params::default();
    for s in &info.params {
        if let Some(d) = &s.default {
            p.insert(s.name, d.clone());
        }
    }
    for (k, v) in overrides {
        assert!(
            info.params.iter().any(|s| s.name == *k),
            "unknown param {k}"
        );
        p.insert(k, v.clone());
    }
    p
}

struct Harness {
    proc: Box<dyn Processor>,
    pool: Vec<Buffer>,
    counters: Vec<(String, Counter)>,
    cycle: u64,
}

impl Harness {
    fn new(f: &dyn StageFactory, overrides: &[(&str, ParamValue)]) -> Self {
        Self::try_new(f, overrides).unwrap_or_else(|e| panic!("build failed: {e}"))
    }

    fn try_new(f: &dyn StageFactory, overrides: &[(&str, ParamValue)]) -> Result<Self, BuildError> {
        let res = Resources::new();
        let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q_NS), &res);
        let built = f.build(&mut cx, &params_for(f, overrides))?;
        let (counters, _) = cx.take_metrics();
        let ty = built.inputs[0].ty;
        Ok(Harness {
            proc: built.processor,
            pool: vec![
                Buffer::for_type(ty, Q_NS, 64),
                Buffer::for_type(ty, Q_NS, 64),
            ],
            counters,
            cycle: 0,
        })
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
            .get()
    }

    fn frames_in(&mut self) -> &mut Batch<FrameMeta> {
        match &mut self.pool[0] {
            Buffer::Frames(b) => b,
            _ => panic!("not a frame port"),
        }
    }

    fn packets_in(&mut self) -> &mut Batch<PacketMeta> {
        match &mut self.pool[0] {
            Buffer::Packets(b) => b,
            _ => panic!("not a packet port"),
        }
    }

    /// One cycle; allocation-free so it can run under `assert_rt_safe`.
    fn step(&mut self) {
        self.pool[1].reset();
        let cx = Cx {
            now_ns: self.cycle * Q_NS,
            cycle: self.cycle,
            rate: 48_000,
            quantum_ns: Q_NS,
        };
        let mut io = Io::checked(&mut self.pool, &[0], &[1]).expect("pool indices");
        self.proc.process(&mut io, &cx);
        self.pool[0].reset();
        self.cycle += 1;
    }

    fn frames_out(&self) -> Vec<(FrameMeta, Vec<u8>)> {
        match &self.pool[1] {
            Buffer::Frames(b) => b.iter().map(|s| (s.meta, s.bytes().to_vec())).collect(),
            _ => panic!("not a frame port"),
        }
    }

    fn packets_out(&self) -> Vec<(PacketMeta, Vec<u8>)> {
        match &self.pool[1] {
            Buffer::Packets(b) => b.iter().map(|s| (s.meta, s.bytes().to_vec())).collect(),
            _ => panic!("not a packet port"),
        }
    }
}

fn frame(seq: u32) -> FrameMeta {
    FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(960),
        duration_ms: 20,
        ..Default::default()
    }
}

/// Pushes one frame per cycle for `n` cycles, then drains for `tail`
/// cycles; returns (cycle, meta) of everything that came out.
fn run_frames(h: &mut Harness, n: u32, tail: u32) -> Vec<(u64, FrameMeta)> {
    let mut out = Vec::new();
    for i in 0..n + tail {
        if i < n {
            let payload = i.to_be_bytes();
            h.frames_in().push(frame(i), &payload).unwrap();
        }
        let cycle = h.cycle;
        h.step();
        for (m, bytes) in h.frames_out() {
            assert_eq!(bytes, m.seq.to_be_bytes(), "payload travels with its meta");
            out.push((cycle, m));
        }
    }
    out
}

fn f(v: f64) -> ParamValue {
    ParamValue::Float(v)
}

fn ms(v: u64) -> ParamValue {
    ParamValue::Duration(Duration::from_millis(v))
}

#[test]
fn passes_everything_unchanged_by_default() {
    let mut h = Harness::new(&NetemFrames, &[]);
    let out = run_frames(&mut h, 50, 0);
    assert_eq!(out.len(), 50);
    for (i, (cycle, m)) in out.iter().enumerate() {
        assert_eq!(m.seq, i as u32);
        assert_eq!(*cycle, i as u64, "no delay without impairment");
        assert_eq!(m.arrival_ns, *cycle * Q_NS);
    }
    assert_eq!(h.counter("passed"), 50);
    assert_eq!(h.counter("lost"), 0);
}

#[test]
fn same_seed_same_output_different_seed_different_output() {
    let cfg = |seed: i64| {
        vec![
            ("seed", ParamValue::Int(seed)),
            ("loss", f(10.0)),
            ("jitter", ms(30)),
            ("delay", ms(50)),
            ("duplicate", f(5.0)),
            ("reorder", f(5.0)),
        ]
    };
    let run = |seed| {
        let mut h = Harness::new(&NetemFrames, &cfg(seed));
        run_frames(&mut h, 500, 20)
    };
    let a = run(7);
    let b = run(7);
    let c = run(8);
    assert_eq!(a, b, "same seed must give the same output");
    assert_ne!(a, c, "a different seed must give a different output");
}

#[test]
fn random_loss_matches_the_rate() {
    let mut h = Harness::new(
        &NetemFrames,
        &[("loss", f(10.0)), ("seed", ParamValue::Int(3))],
    );
    let out = run_frames(&mut h, 5000, 0);
    let lost = h.counter("lost");
    assert_eq!(out.len() as u64 + lost, 5000);
    assert!((400..=600).contains(&lost), "10% of 5000 lost, got {lost}");
}

fn loss_runs(out: &[(u64, FrameMeta)], n: u32) -> Vec<u32> {
    let mut present = vec![false; n as usize];
    for (_, m) in out {
        present[m.seq as usize] = true;
    }
    let mut runs = Vec::new();
    let mut run = 0;
    for p in present {
        if p {
            if run > 0 {
                runs.push(run);
            }
            run = 0;
        } else {
            run += 1;
        }
    }
    if run > 0 {
        runs.push(run);
    }
    runs
}

#[test]
fn burst_param_gives_bursty_loss_at_the_mean_rate() {
    let n = 20_000;
    let mut h = Harness::new(
        &NetemFrames,
        &[
            ("loss", f(10.0)),
            ("burst", ms(80)),
            ("seed", ParamValue::Int(11)),
        ],
    );
    let out = run_frames(&mut h, n, 0);
    let lost = h.counter("lost") as f64 / n as f64;
    assert!(
        (0.07..=0.13).contains(&lost),
        "mean loss near 10%, got {lost}"
    );
    let runs = loss_runs(&out, n);
    let mean_run = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
    // 80 ms bursts at one frame per 20 ms quantum: 4 frames on average.
    assert!((3.0..=5.0).contains(&mean_run), "mean burst {mean_run}");

    // Independent loss at the same rate has runs near 1.1 frames.
    let mut h = Harness::new(
        &NetemFrames,
        &[("loss", f(10.0)), ("seed", ParamValue::Int(11))],
    );
    let out = run_frames(&mut h, n, 0);
    let runs = loss_runs(&out, n);
    let mean_random = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
    assert!(mean_random < 1.5, "independent loss runs {mean_random}");
}

#[test]
fn gilbert_elliott_explicit_probabilities() {
    let n = 20_000;
    // p = 2%, r = 50%: bad share 2/52 ~ 3.8%, mean burst 2.
    let mut h = Harness::new(
        &NetemFrames,
        &[
            ("ge_p", f(2.0)),
            ("ge_r", f(50.0)),
            ("seed", ParamValue::Int(5)),
        ],
    );
    let out = run_frames(&mut h, n, 0);
    let lost = h.counter("lost") as f64 / n as f64;
    assert!((0.025..=0.055).contains(&lost), "loss {lost}");
    let runs = loss_runs(&out, n);
    let mean_run = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
    assert!((1.6..=2.5).contains(&mean_run), "mean burst {mean_run}");

    // Half loss in the bad state halves the loss.
    let mut h = Harness::new(
        &NetemFrames,
        &[
            ("ge_p", f(2.0)),
            ("ge_r", f(50.0)),
            ("ge_loss_bad", f(50.0)),
            ("seed", ParamValue::Int(5)),
        ],
    );
    run_frames(&mut h, n, 0);
    let half = h.counter("lost") as f64 / n as f64;
    assert!(half < lost * 0.7 && half > lost * 0.3, "{half} vs {lost}");
}

#[test]
fn fixed_delay_holds_items_whole_quanta() {
    let mut h = Harness::new(&NetemFrames, &[("delay", ms(40))]);
    let out = run_frames(&mut h, 20, 5);
    assert_eq!(out.len(), 20);
    for (cycle, m) in &out {
        assert_eq!(*cycle, m.seq as u64 + 2, "40 ms = two quanta later");
        assert_eq!(m.arrival_ns, (m.seq as u64) * Q_NS + 40_000_000);
    }
}

#[test]
fn an_item_is_taken_in_only_by_a_cycle_after_it_arrived() {
    // 5 ms and 15 ms of delay on 20 ms cycles: each item arrives between two
    // cycles and leaves in the later one, as a socket read each cycle finds
    // it, never in the cycle it was sent in (before it came).
    for delay_ms in [5u64, 15] {
        let mut h = Harness::new(&NetemFrames, &[("delay", ms(delay_ms))]);
        let out = run_frames(&mut h, 10, 3);
        assert_eq!(out.len(), 10);
        for (cycle, m) in &out {
            assert_eq!(
                *cycle,
                m.seq as u64 + 1,
                "{delay_ms} ms: the cycle after it was sent"
            );
            assert_eq!(m.arrival_ns, m.seq as u64 * Q_NS + delay_ms * 1_000_000);
        }
    }
}

#[test]
fn jitter_sets_sub_quantum_arrival_times_within_bounds() {
    let mut h = Harness::new(
        &NetemFrames,
        &[
            ("delay", ms(50)),
            ("jitter", ms(20)),
            ("seed", ParamValue::Int(9)),
        ],
    );
    let out = run_frames(&mut h, 400, 10);
    assert_eq!(out.len(), 400);
    let mut off_grid = 0;
    for (cycle, m) in &out {
        let sent = m.seq as u64 * Q_NS;
        let d = m.arrival_ns - sent;
        assert!((30_000_000..=70_000_000).contains(&d), "delay {d}");
        // Taken in by the first cycle at or after its arrival.
        let at = cycle * Q_NS;
        assert!(
            m.arrival_ns <= at && at < m.arrival_ns + Q_NS,
            "arrived {} taken at {at}",
            m.arrival_ns
        );
        if m.arrival_ns % Q_NS != 0 {
            off_grid += 1;
        }
    }
    assert!(
        off_grid > 350,
        "arrival times are not quantised: {off_grid}"
    );
    // 40 ms of spread on 20 ms spacing reorders some items.
    let reordered = out.windows(2).filter(|w| w[1].1.seq < w[0].1.seq).count();
    assert!(reordered > 0);

    let mut h = Harness::new(
        &NetemFrames,
        &[
            ("delay", ms(100)),
            ("jitter", ms(10)),
            ("jitter_dist", ParamValue::Str("normal".into())),
        ],
    );
    let out = run_frames(&mut h, 2000, 20);
    let delays: Vec<f64> = out
        .iter()
        .map(|(_, m)| (m.arrival_ns - m.seq as u64 * Q_NS) as f64 / 1e6)
        .collect();
    let mean = delays.iter().sum::<f64>() / delays.len() as f64;
    let sd = (delays.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / delays.len() as f64).sqrt();
    assert!((98.0..=102.0).contains(&mean), "mean {mean}");
    assert!((8.5..=11.5).contains(&sd), "deviation {sd}");
}

#[test]
fn reorder_and_duplicate() {
    let mut h = Harness::new(
        &NetemFrames,
        &[("reorder", f(20.0)), ("seed", ParamValue::Int(2))],
    );
    let out = run_frames(&mut h, 1000, 5);
    let reordered = h.counter("reordered");
    assert!((150..=250).contains(&reordered), "{reordered}");
    assert_eq!(out.len(), 1000);
    let inversions = out.windows(2).filter(|w| w[1].1.seq < w[0].1.seq).count();
    assert!(
        inversions as u64 >= reordered / 2,
        "{inversions} inversions"
    );

    let mut h = Harness::new(
        &NetemFrames,
        &[("duplicate", f(10.0)), ("seed", ParamValue::Int(2))],
    );
    let out = run_frames(&mut h, 1000, 0);
    let dups = h.counter("duplicated");
    assert!((70..=130).contains(&dups), "{dups}");
    assert_eq!(out.len() as u64, 1000 + dups);
    assert_eq!(h.counter("passed"), 1000 + dups);
}

#[test]
fn delay_queue_overflow_is_counted_not_grown() {
    let mut h = Harness::new(
        &NetemFrames,
        &[("delay", ms(100)), ("capacity", ParamValue::Int(4))],
    );
    for i in 0..10 {
        h.frames_in().push(frame(i), &[1]).unwrap();
    }
    h.step();
    assert_eq!(h.counter("overflow_drops"), 6);
    let mut got = 0;
    for _ in 0..10 {
        h.step();
        got += h.frames_out().len();
    }
    assert_eq!(got, 4);
}

#[test]
fn packets_keep_their_order_and_get_arrival_times() {
    let mut h = Harness::new(&Netem, &[("delay", ms(30))]);
    for i in 0..3u32 {
        let meta = PacketMeta {
            peer: i,
            ..Default::default()
        };
        h.packets_in().push(meta, &[i as u8; 100]).unwrap();
    }
    h.step();
    assert!(h.packets_out().is_empty());
    h.step();
    assert!(h.packets_out().is_empty(), "not in by the cycle at 20 ms");
    h.step();
    let out = h.packets_out();
    assert_eq!(out.len(), 3);
    for (i, (m, bytes)) in out.iter().enumerate() {
        assert_eq!(m.peer, i as u32, "same release time keeps arrival order");
        assert_eq!(m.arrival_ns, 30_000_000);
        assert_eq!(bytes, &vec![i as u8; 100]);
    }
}

#[test]
fn trace_file_drives_loss_in_a_loop() {
    let dir = std::env::temp_dir().join(format!("wzp-netem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loss.txt");
    std::fs::write(&path, "1 0\n0\n").unwrap();
    let mut h = Harness::new(
        &NetemFrames,
        &[("trace", ParamValue::Str(path.display().to_string()))],
    );
    let out = run_frames(&mut h, 9, 0);
    let seqs: Vec<u32> = out.iter().map(|(_, m)| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 4, 5, 7, 8]);
    assert_eq!(h.counter("lost"), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_traces_fail_the_build_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("wzp-netem-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("missing.txt", None, "cannot read loss trace"),
        ("empty.txt", Some(""), "holds no entries"),
        ("blank.txt", Some(" \n\t\n"), "holds no entries"),
        ("two.txt", Some("0 1\n2\n"), "line 2: token \"2\""),
        ("word.txt", Some("0 lost 1"), "token \"lost\""),
        ("comma.txt", Some("0,1"), "token \"0,1\""),
        ("binary.txt", Some("\u{0}\u{1}"), "is not 0 or 1"),
    ];
    for (name, content, want) in cases {
        let path = dir.join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let err = match Harness::try_new(
            &NetemFrames,
            &[("trace", ParamValue::Str(path.display().to_string()))],
        ) {
            Ok(_) => panic!("{name}: build should fail"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
        assert!(err.contains(name), "{name}: error names the file: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    // An endless device: refused, not read until memory runs out.
    let err = Harness::try_new(
        &NetemFrames,
        &[("trace", ParamValue::Str("/dev/zero".into()))],
    )
    .err()
    .expect("build should fail")
    .to_string();
    assert!(
        err.contains("/dev/zero") && err.contains("larger than"),
        "{err}"
    );
    assert_eq!(parse_trace("0 1 1", "t").unwrap(), vec![false, true, true]);
    assert!(matches!(
        parse_trace("", "t"),
        Err(TraceError::Empty { .. })
    ));
}

#[test]
fn bad_params_fail_the_build() {
    let cases: &[(&str, ParamValue, &str)] = &[
        ("loss", f(101.0), "loss"),
        ("loss", f(-1.0), "loss"),
        ("ge_r", f(0.0), "ge_r"),
        ("capacity", ParamValue::Int(0), "capacity"),
        ("delay", ms(60_001), "0..=60s"),
        ("jitter", ms(100_000_000), "0..=60s"),
        (
            "jitter_dist",
            ParamValue::Str("pareto".into()),
            "jitter_dist",
        ),
    ];
    for (name, value, want) in cases {
        let mut overrides = vec![(*name, value.clone())];
        if *name == "ge_r" {
            overrides.push(("ge_p", f(5.0)));
        }
        match Harness::try_new(&NetemFrames, &overrides) {
            Ok(_) => panic!("{name}={value} should fail"),
            Err(e) => assert!(e.to_string().contains(want), "{e}"),
        }
    }
    match Harness::try_new(&NetemFrames, &[("loss", f(100.0)), ("burst", ms(60))]) {
        Ok(_) => panic!("100% mean loss in bursts should fail"),
        Err(e) => assert!(e.to_string().contains("loss"), "{e}"),
    }
}

#[test]
fn process_is_real_time_safe_under_every_impairment() {
    for factory in [&NetemFrames as &dyn StageFactory, &Netem] {
        let mut h = Harness::new(
            factory,
            &[
                ("loss", f(5.0)),
                ("ge_p", f(1.0)),
                ("delay", ms(60)),
                ("jitter", ms(30)),
                ("jitter_dist", ParamValue::Str("normal".into())),
                ("reorder", f(10.0)),
                ("duplicate", f(10.0)),
                ("capacity", ParamValue::Int(8)),
            ],
        );
        let mut seq = 0u32;
        assert_rt_safe("netem", 500, || {
            match &mut h.pool[0] {
                Buffer::Frames(b) => {
                    for _ in 0..3 {
                        let _ = b.push(frame(seq), &[7; 200]);
                        seq += 1;
                    }
                }
                Buffer::Packets(b) => {
                    for _ in 0..3 {
                        let _ = b.push(PacketMeta::default(), &[7; 200]);
                        seq += 1;
                    }
                }
                Buffer::Pcm(_) => unreachable!(),
            }
            h.step();
        });
        assert!(h.counter("passed") > 0);
        assert!(
            h.counter("overflow_drops") > 0,
            "the queue filled and dropped"
        );
    }
}

#[test]
fn registered_in_the_stage_registry() {
    let r = wzp_stages::registry();
    assert!(r.get("net.netem").is_some());
    assert!(r.get("net.netem_frames").is_some());
}

#[test]
fn rate_limits_bytes_and_counts_what_it_drops_without_allocating() {
    // 80 kbit/s = 200 bytes per 20 ms cycle; offer five 200-byte packets per
    // cycle (400 kbit/s) for 200 cycles.
    let mut h = Harness::new(
        &Netem,
        &[
            ("rate", f(80.0)),
            ("rate_burst", ParamValue::Int(3000)),
            ("rate_queue", ms(100)),
        ],
    );
    let mut out = 0u64;
    assert_rt_safe("netem rate", 200, || {
        for _ in 0..5 {
            let _ = h.packets_in().push(PacketMeta::default(), &[1; 200]);
        }
        h.step();
        let n = match &h.pool[1] {
            Buffer::Packets(b) => b.len() as u64,
            _ => unreachable!(),
        };
        out += n;
    });
    for _ in 0..20 {
        h.step();
        out += h.packets_out().len() as u64;
    }
    let drops = h.counter("rate_drops");
    assert_eq!(out + drops, 1000, "every packet passed or was dropped");
    assert_eq!(h.counter("passed"), out);
    // 200 cycles at one packet each, plus the 3000-byte bucket (15) and the
    // 100 ms queue (5).
    assert!((200..=222).contains(&out), "{out} passed");
    assert!(drops > 700, "{drops} dropped");
}

/// With `repair_rides`, a cycle's repair frame shares its source frame's
/// fate, as a repair riding in the source packet does in a call: the trace
/// advances once a cycle (one entry per packet), not once per frame, and
/// the pair is lost or kept whole, released together. Without it each
/// frame is an item of its own. `net.netem` (packets) refuses the param.
#[test]
fn a_riding_repair_shares_its_source_frames_fate() {
    let dir = std::env::temp_dir().join(format!("wzp-netem-ride-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("loss.txt");
    // Cycle 1 and 3 lost.
    std::fs::write(&path, "0 1 0 1 0 0").unwrap();
    let run = |rides: bool| {
        let mut h = Harness::new(
            &NetemFrames,
            &[
                ("trace", ParamValue::Str(path.display().to_string())),
                ("repair_rides", ParamValue::Bool(rides)),
                ("jitter", ms(5)),
            ],
        );
        let mut out = Vec::new();
        for i in 0..6u32 {
            let mut repair = frame(1000 + i);
            repair.flags = frame_flags::REPAIR;
            h.frames_in().push(repair, &[9, 9]).unwrap();
            h.frames_in().push(frame(i), &[1]).unwrap();
            h.step();
            out.extend(
                h.frames_out()
                    .into_iter()
                    .map(|(m, _)| (m.seq, m.arrival_ns)),
            );
        }
        for _ in 0..2 {
            h.step();
            out.extend(
                h.frames_out()
                    .into_iter()
                    .map(|(m, _)| (m.seq, m.arrival_ns)),
            );
        }
        (out, h.counter("lost"))
    };
    let (out, lost) = run(true);
    let seqs: Vec<u32> = out.iter().map(|&(s, _)| s).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 2, 4, 5, 1000, 1002, 1004, 1005], "{out:?}");
    assert_eq!(lost, 4);
    // Released together: each repair with its source frame's arrival time.
    for (seq, at) in &out {
        if *seq >= 1000 {
            let carrier = out.iter().find(|&&(s, _)| s == seq - 1000).unwrap();
            assert_eq!(*at, carrier.1, "{out:?}");
        }
    }
    // Items of their own: the trace runs twice as fast (repair, source).
    let (out, lost) = run(false);
    let mut seqs: Vec<u32> = out.iter().map(|&(s, _)| s).collect();
    seqs.sort();
    // (cycle 0: repair 0 kept, source 1 lost; cycle 1 the same; cycle 2
    // both kept; then round again.)
    assert_eq!(
        seqs,
        vec![2, 5, 1000, 1001, 1002, 1003, 1004, 1005],
        "{out:?}"
    );
    assert_eq!(lost, 4);
    let err = Harness::try_new(&Netem, &[("repair_rides", ParamValue::Bool(true))])
        .err()
        .expect("refused on packets");
    assert!(err.to_string().contains("repair_rides"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
