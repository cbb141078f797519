//! `audio.bus_sink` and `audio.bus_source` driven by hand, as two graphs
//! would drive them: what one writes the other plays after its prefill,
//! gaps become silence and a new prefill, a backlog is dropped down to the
//! prefill, and a bus has one writer and one reader. Every `process` runs
//! under `assert_no_alloc`.

wzp_engine::install_alloc_checker!();

mod audio_support;

use audio_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::audio::bus::{BusSink, BusSource, PcmBus};

const N: usize = 960;

fn pair(prefill: &str) -> (Harness, Harness) {
    let mut res = Resources::new();
    res.insert("conf.b", PcmBus::new(48_000));
    let sink =
        Harness::build_with(&BusSink, &[("bus", text("conf.b"))], RATE, QUANTUM, &res).unwrap();
    let source = Harness::build_with(
        &BusSource,
        &[("bus", text("conf.b")), ("prefill", dur(prefill))],
        RATE,
        QUANTUM,
        &res,
    )
    .unwrap();
    (sink, source)
}

/// Writes one quantum counting up from `from`.
fn write(sink: &mut Harness, from: f32) {
    for (i, v) in sink.input(0).iter_mut().enumerate() {
        *v = from + i as f32;
    }
    assert_rt_safe("audio.bus_sink process", 1, || {
        sink.run();
    });
}

fn read(source: &mut Harness) -> Vec<f32> {
    assert_rt_safe("audio.bus_source process", 1, || {
        source.run();
    });
    source.output(0).to_vec()
}

#[test]
fn what_one_graph_writes_the_other_plays_in_order_after_its_prefill() {
    // 40 ms: two quanta queued, plus the one being read.
    let (mut sink, mut source) = pair("40ms");
    write(&mut sink, 0.0);
    write(&mut sink, 960.0);
    assert!(read(&mut source).iter().all(|&v| v == 0.0), "still filling");
    write(&mut sink, 1920.0);
    let got = read(&mut source);
    assert_eq!(got[0], 0.0);
    assert_eq!(got[N - 1], 959.0);
    // In step from then on: each quantum read is the next written.
    for k in 3..20 {
        write(&mut sink, (k * N) as f32);
        let got = read(&mut source);
        assert_eq!(got[0], ((k - 2) * N) as f32, "quantum {k}");
    }
    assert_eq!(source.counter("underruns"), 0);
    assert_eq!(source.counter("skips"), 0);
}

#[test]
fn a_gap_is_silence_and_waits_for_the_prefill_again() {
    let (mut sink, mut source) = pair("20ms");
    write(&mut sink, 0.0);
    write(&mut sink, 960.0);
    assert_eq!(read(&mut source)[0], 0.0);
    assert_eq!(read(&mut source)[0], 960.0);
    // The writer stalls: silence, counted once.
    assert!(read(&mut source).iter().all(|&v| v == 0.0));
    assert_eq!(source.counter("underruns"), 1);
    // One quantum back is not enough to play again (prefill 20 ms + one).
    write(&mut sink, 5000.0);
    assert!(read(&mut source).iter().all(|&v| v == 0.0));
    assert_eq!(
        source.counter("underruns"),
        1,
        "still waiting, not a new gap"
    );
    write(&mut sink, 6000.0);
    assert_eq!(read(&mut source)[0], 5000.0);
}

#[test]
fn a_backlog_past_the_slack_is_dropped_down_to_the_prefill() {
    let (mut sink, mut source) = pair("20ms");
    // The reader stalled for 10 quanta (200 ms) while the writer went on.
    for k in 0..10 {
        write(&mut sink, (k * N) as f32);
    }
    let got = read(&mut source);
    // Queued 10 quanta; kept the prefill (1) and the one read: quantum 8.
    assert_eq!(got[0], (8 * N) as f32);
    assert_eq!(source.counter("skips"), 1);
    let got = read(&mut source);
    assert_eq!(got[0], (9 * N) as f32);
}

#[test]
fn a_full_bus_drops_what_the_writer_cannot_queue() {
    let mut res = Resources::new();
    res.insert("small", PcmBus::new(N * 2));
    let mut sink =
        Harness::build_with(&BusSink, &[("bus", text("small"))], RATE, QUANTUM, &res).unwrap();
    for _ in 0..3 {
        write(&mut sink, 0.0);
    }
    assert_eq!(sink.counter("overruns"), 1);
}

#[test]
fn with_no_bus_the_source_is_silent_and_the_sink_discards() {
    let res = Resources::new();
    let mut source = Harness::build_with(&BusSource, &[], RATE, QUANTUM, &res).unwrap();
    assert!(read(&mut source).iter().all(|&v| v == 0.0));
    let mut sink = Harness::build_with(&BusSink, &[], RATE, QUANTUM, &res).unwrap();
    write(&mut sink, 1.0);
    assert_eq!(sink.counter("overruns"), 0);
}

#[test]
fn bad_buses_and_prefills_are_refused_with_the_reason() {
    let mut res = Resources::new();
    res.insert("conf.b", PcmBus::new(4800));
    let cases: [(&dyn StageFactory, Vec<(&str, ParamValue)>, &str); 4] = [
        (
            &BusSource,
            vec![("bus", text("nowhere"))],
            "no PCM bus named",
        ),
        (&BusSink, vec![("bus", text("nowhere"))], "no PCM bus named"),
        (
            &BusSource,
            vec![("bus", text("conf.b")), ("prefill", dur("2s"))],
            "above 500ms",
        ),
        (&BusSource, vec![("prefill", dur("600ms"))], "above 500ms"),
    ];
    for (factory, set, want) in cases {
        let e = Harness::build_with(factory, &set, RATE, QUANTUM, &res)
            .err()
            .expect("refused");
        assert!(e.to_string().contains(want), "{e}");
    }
    // One writer and one reader per bus.
    Harness::build_with(&BusSink, &[("bus", text("conf.b"))], RATE, QUANTUM, &res).unwrap();
    let e = Harness::build_with(&BusSink, &[("bus", text("conf.b"))], RATE, QUANTUM, &res)
        .err()
        .expect("a second writer");
    assert!(e.to_string().contains("has a writer already"), "{e}");
    Harness::build_with(&BusSource, &[("bus", text("conf.b"))], RATE, QUANTUM, &res).unwrap();
    let e = Harness::build_with(&BusSource, &[("bus", text("conf.b"))], RATE, QUANTUM, &res)
        .err()
        .expect("a second reader");
    assert!(e.to_string().contains("has a reader already"), "{e}");
}
