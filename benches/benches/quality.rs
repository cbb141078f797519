//! The adaptation code's cost, beside the work it rides on: the receiver's
//! measurement per packet (`ReceiveStats::on_packet`, next to
//! `MediaHeader::parse`, which every received packet already pays), writing
//! a whole feedback report, and the sender's controller per report
//! (`Controller::handle_report` + `poll`, next to parsing the report).
//!
//! Run: `cargo bench -p wzp-benches --bench quality -- --warm-up-time 0.5 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use wzp_proto::feedback::{feedback_len, FeedbackEntry, MAX_FEEDBACK_ENTRIES};
use wzp_proto::{FeedbackReport, MediaHeader};
use wzp_stages::quality::controller::{Controller, ControllerConfig};
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

criterion_group!(benches, receive, controller);
criterion_main!(benches);
