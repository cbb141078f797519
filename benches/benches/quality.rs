//! The adaptation code's cost, beside the work it rides on: the receiver's
//! measurement per packet (`ReceiveStats::on_packet`, next to
//! `MediaHeader::parse`, which every received packet already pays), writing
//! a whole feedback report, and the sender's controller per report
//! (`Controller::handle_report` + `poll`, next to parsing the report).
//!
//! The controller again on realistic reports (`quality/controller/report/*`):
//! a controller that has run for a minute under a path (clean, 20 % random,
//! 60 ms bursts, 40 % loss on Codec2, an 11 kb/s cap on Codec2 1200) takes
//! that path's next report and is polled, as `quality.adapt` does; and a
//! room of 8 receivers reporting in the same second.
//!
//! The receiver's extra per 20 ms quantum, as the stages run it
//! (`stage/quality.feedback_report`: one frame in per quantum, 1 in 13
//! lost, jitter, a report out each second, amortised over its quanta), and
//! the jitter buffer's burst hold (`stage/jitter.adaptive/burst_hold_*`:
//! the same bursty stream, runs of 3 lost every 25 frames, with the hold off
//! and at its 60 ms default; the difference is what holding back costs).
//!
//! Run: `cargo bench -p wzp-benches --bench quality -- --warm-up-time 0.5 --measurement-time 2`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use wzp_benches::{rt_iter, time_each, Harness};
use wzp_engine::prelude::*;
use wzp_proto::feedback::{
    burst_bin, feedback_len, FeedbackEntry, BURST_BINS, MAX_FEEDBACK_ENTRIES,
};
use wzp_proto::{FeedbackReport, MediaHeader};
use wzp_stages::codec::profile::Profile;
use wzp_stages::quality::controller::{packet_wire_kbps, Controller, ControllerConfig, Settings};
use wzp_stages::quality::receive_stats::{ReceiveStats, ReceiverFeedback, DEFAULT_REORDER_WINDOW};

const MS: u64 = 1_000_000;

fn header(sender_id: u32, seq: u32) -> MediaHeader {
    MediaHeader {
        sender_id,
        seq,
        timestamp: seq.wrapping_mul(960),
        ..Default::default()
    }
}

fn receive(c: &mut Criterion) {
    let mut g = c.benchmark_group("quality/receive");
    let bytes = header(7, 1).to_bytes();
    g.bench_function("raw/media_header_parse", |b| {
        b.iter(|| black_box(MediaHeader::parse(black_box(&bytes))).is_ok())
    });
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let mut k = 0u32;
    g.bench_function("receive_stats_on_packet", |b| {
        b.iter(|| {
            // One packet in 13 lost, arrival jitter of a few ms.
            k = k.wrapping_add(if k % 13 == 12 { 2 } else { 1 });
            let at = u64::from(k) * 20 * MS + u64::from(k % 5) * MS;
            s.on_packet(at, black_box(&header(7, k)), 120);
        })
    });
    let mut fb = ReceiverFeedback::new(8, DEFAULT_REORDER_WINDOW, 3_000 * MS);
    let mut out = [0u8; feedback_len(MAX_FEEDBACK_ENTRIES)];
    let mut now = 0u64;
    g.bench_function("8_packets_and_write_report", |b| {
        b.iter(|| {
            // One packet from each of 8 senders, then the report.
            now += 1_000 * MS;
            for id in 0..8 {
                fb.on_packet(now, &header(id, (now / (20 * MS)) as u32), 120);
            }
            black_box(fb.write_report(now, 1000, &mut out).unwrap_or(0))
        })
    });
    g.finish();
}

fn controller(c: &mut Criterion) {
    let mut g = c.benchmark_group("quality/controller");
    let entry = |k: u64| FeedbackEntry {
        sender_id: 1,
        expected: 50,
        received: 50 - (k % 11) as u16,
        max_burst: (k % 4) as u8,
        bursts: [2, 1, 1, 0, 0, 0],
        recv_kbps: 38,
        queue_delay_100us: 20,
        ..Default::default()
    };
    let mut buf = [0u8; feedback_len(1)];
    let n = wzp_proto::encode_feedback(1000, &[entry(3)], &mut buf).unwrap_or(0);
    g.bench_function("raw/feedback_parse_1_entry", |b| {
        b.iter(|| black_box(FeedbackReport::parse(black_box(&buf[..n])).map(|r| r.len())))
    });
    let mut ctl = Controller::new(ControllerConfig::default(), 0);
    let mut k = 0u64;
    g.bench_function("handle_report_and_poll", |b| {
        b.iter(|| {
            k += 1;
            let now = k * 1_000 * MS;
            ctl.handle_report(100 + (k % 3) as u32, black_box(&entry(k)), now);
            black_box(ctl.poll(now))
        })
    });
    g.finish();
}

/// One second of a path as its receiver reports it about a sender running
/// `s`: `loss` in runs of `burst`, a bandwidth cap in kb/s (0: none).
fn path_report(s: &Settings, loss: f32, burst: u32, cap_kbps: f32, k: u64) -> FeedbackEntry {
    let p = Profile::by_name(s.tier).unwrap_or(&wzp_stages::codec::profile::PROFILES[0]);
    let send = packet_wire_kbps(p, s.frame_ms, s.fec_ratio);
    let expected = (1000 / s.frame_ms.max(1)) as u16;
    // A little variation from second to second, as real reports have.
    let loss = (loss * (1.0 + 0.1 * ((k % 5) as f32 - 2.0) / 2.0)).clamp(0.0, 1.0);
    let (mut loss, mut recv, mut queue) = (loss, send * (1.0 - loss), 20u16);
    if cap_kbps > 0.0 && send > cap_kbps {
        loss = 1.0 - (1.0 - loss) * cap_kbps / send;
        recv = cap_kbps;
        queue = 800;
    }
    let lost = (f32::from(expected) * loss).round() as u16;
    let mut bursts = [0u8; BURST_BINS];
    if lost > 0 {
        bursts[burst_bin(burst)] = (u32::from(lost) / burst).max(1) as u8;
    }
    FeedbackEntry {
        sender_id: 1,
        expected,
        received: expected - lost,
        bursts,
        max_burst: if lost > 0 { burst as u8 } else { 0 },
        jitter_100us: 30,
        queue_delay_100us: queue,
        recv_kbps: recv.round() as u16,
        echo_hold_ms: 5,
        ..Default::default()
    }
}

fn controller_realistic(c: &mut Criterion) {
    let mut g = c.benchmark_group("quality/controller");
    // (name, loss, burst, cap kb/s).
    let paths: [(&str, f32, u32, f32); 5] = [
        ("clean", 0.0, 1, 0.0),
        ("random_20", 0.20, 1, 0.0),
        ("bursts_60ms", 0.14, 3, 0.0),
        ("heavy_40_codec2", 0.40, 1, 0.0),
        ("cap_11k_codec2", 0.0, 1, 11.0),
    ];
    for (name, loss, burst, cap) in paths {
        let mut ctl = Controller::new(ControllerConfig::default(), 0);
        // A minute under the path first: the controller is in the state
        // that path leads to.
        let mut now = 0;
        for k in 0..60 {
            now += 1_000 * MS;
            let e = path_report(&ctl.settings(), loss, burst, cap, k);
            ctl.handle_report(100, &e, now);
            while ctl.poll(now).is_some() {}
        }
        let mut k = 60u64;
        g.bench_function(format!("report/{name}"), |b| {
            rt_iter(b, || {
                k += 1;
                now += 1_000 * MS;
                let e = path_report(&ctl.settings(), loss, burst, cap, k);
                ctl.handle_report(100, black_box(&e), now);
                black_box(ctl.poll(now))
            })
        });
        eprintln!("controller under {name}: {:?}", ctl.settings());
    }
    {
        let mut ctl = Controller::new(ControllerConfig::default(), 0);
        let mut now = 0;
        let mut k = 0u64;
        g.bench_function("room_8_receivers_one_second", |b| {
            rt_iter(b, || {
                k += 1;
                now += 1_000 * MS;
                let s = ctl.settings();
                for r in 0..8u32 {
                    // One receiver behind a lossy link, the rest clean.
                    let loss = if r == 3 { 0.08 } else { 0.0 };
                    ctl.handle_report(100 + r, &path_report(&s, loss, 1, 0.0, k), now);
                }
                black_box(ctl.poll(now))
            })
        });
    }
    g.finish();
}

/// A 60-byte frame like a 24 kb/s Opus frame, arriving at `arrival_ns`.
fn frame(seq: u32, arrival_ns: u64) -> FrameMeta {
    FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(960),
        stream: 7,
        codec: 1,
        duration_ms: 20,
        arrival_ns,
        flags: if seq == 0 {
            frame_flags::STREAM_START
        } else {
            0
        },
        ..Default::default()
    }
}

fn receiver_per_quantum(c: &mut Criterion) {
    let reg = wzp_stages::registry();
    let payload = [0x5au8; 60];
    {
        let mut g = c.benchmark_group("stage/quality.feedback_report");
        let mut h = Harness::new(&reg, "quality.feedback_report", &[], 48_000);
        let mut seq = 0u32;
        g.bench_function("stage", |b| {
            b.iter_custom(|iters| {
                time_each(iters, || {
                    let now = h.cx.now_ns;
                    let batch = h.frames_in(0);
                    batch.clear();
                    // 1 in 13 lost, up to 3 ms of jitter.
                    if seq % 13 != 12 {
                        let at = now + (u64::from(seq) * 7919 % 3_000) * 1_000;
                        let _ = batch.push(frame(seq, at), &payload);
                    }
                    seq = seq.wrapping_add(1);
                    let t = Instant::now();
                    h.step();
                    t.elapsed()
                })
            })
        });
        assert!(
            seq == 0 || h.counter("reports_sent") > 0,
            "the stage sent no report"
        );
        eprintln!("quality.feedback_report: {}", h.counters_line());
        g.finish();
    }
    {
        let mut g = c.benchmark_group("stage/jitter.adaptive");
        for (name, hold_ms) in [("burst_hold_0", 0u64), ("burst_hold_60ms", 60)] {
            let mut h = Harness::new(
                &reg,
                "jitter.adaptive",
                &[(
                    "burst_hold",
                    ParamValue::Duration(Duration::from_millis(hold_ms)),
                )],
                48_000,
            );
            let mut seq = 0u32;
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    time_each(iters, || {
                        let now = h.cx.now_ns;
                        let batch = h.frames_in(0);
                        batch.clear();
                        // Runs of 3 lost every 25 frames; 5 ms of delay
                        // and up to 3 ms of jitter on the rest.
                        if seq % 25 >= 3 {
                            let at = now + 5_000_000 + (u64::from(seq) * 7919 % 3_000) * 1_000;
                            let _ = batch.push(frame(seq, at), &payload);
                        }
                        seq = seq.wrapping_add(1);
                        let t = Instant::now();
                        h.step();
                        t.elapsed()
                    })
                })
            });
            let held = h
                .gauges
                .iter()
                .find(|(n, _)| n == "burst_hold_ms")
                .map_or(-1, |(_, v)| v.get());
            eprintln!(
                "jitter.adaptive {name}: burst_hold_ms={held} {}",
                h.counters_line()
            );
            assert!(
                seq == 0 || (held > 0) == (hold_ms > 0),
                "{name}: hold {held} ms at the end"
            );
        }
        g.finish();
    }
}

criterion_group!(
    benches,
    receive,
    controller,
    controller_realistic,
    receiver_per_quantum
);
criterion_main!(benches);
