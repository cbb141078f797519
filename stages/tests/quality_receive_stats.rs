//! Receiver-side measurement for the feedback report: loss, bursts, late
//! arrivals, jitter, queueing delay, receive rate and the RTT echo, fed
//! packet headers with a stepped `now`, no sockets, no sleeps.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use wzp_engine::rt_check::assert_rt_safe;
use wzp_proto::feedback::{
    feedback_len, FeedbackEntry, ReceiverInfo, MAX_FEEDBACK_ENTRIES, RECEIVER_ENTRY_ID,
};
use wzp_proto::{CodecId, FeedbackReport, Flags, MediaHeader};
use wzp_stages::quality::receive_stats::{
    ReceiveStats, ReceiverFeedback, SendClock, SentBytes, DEFAULT_REORDER_WINDOW,
};

wzp_engine::install_alloc_checker!();

const MS: u64 = 1_000_000;
const FRAME_NS: u64 = 20 * MS;

fn header(sender_id: u32, seq: u32) -> MediaHeader {
    MediaHeader {
        sender_id,
        seq,
        timestamp: seq.wrapping_mul(960),
        ..Default::default()
    }
}

/// Feeds packets `seqs` (sent every 20 ms from seq `base`), each arriving
/// `delay_ms(seq)` after it was sent, skipping those `lost` selects; returns
/// the stats after a report at the end.
fn feed(
    s: &mut ReceiveStats,
    base: u32,
    n: u32,
    mut lost: impl FnMut(u32) -> bool,
    mut delay_ms: impl FnMut(u32) -> u64,
) -> u64 {
    let mut arrivals: Vec<(u64, u32)> = (0..n)
        .filter(|&k| !lost(k))
        .map(|k| (k as u64 * FRAME_NS + delay_ms(k) * MS + MS, k))
        .collect();
    arrivals.sort();
    let mut last = 0;
    for (at, k) in arrivals {
        s.on_packet(at, &header(7, base.wrapping_add(k)), 100);
        last = at;
    }
    last
}

#[test]
fn clean_stream_reports_no_loss_and_settles_all_but_the_reorder_window() {
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let end = feed(&mut s, 1000, 250, |_| false, |_| 0);
    let e = s.take_report(end);
    assert_eq!(e.expected, 250 - DEFAULT_REORDER_WINDOW as u16);
    assert_eq!(e.received, e.expected);
    assert_eq!((e.late, e.max_burst, e.burst_count()), (0, 0, 0));
    assert_eq!(e.loss_fraction(), 0.0);
    assert_eq!(e.jitter_100us, 0);
    assert_eq!(e.queue_delay_100us, 0);
    // 100 bytes every 20 ms over 4.98 s: 40 kbit/s.
    assert_eq!(e.recv_kbps, 40);
}

#[test]
fn loss_and_burst_histogram_match_the_loss_pattern_exactly() {
    // Table: (name, loss pattern over 500 packets).
    let mut rng = SmallRng::seed_from_u64(42);
    let random: Vec<bool> = (0..500).map(|_| rng.random_bool(0.2)).collect();
    let bursts: Vec<bool> = {
        // Bursts of 1, 2, 3, 5, 9 and 20, 30 packets apart.
        let mut v = vec![false; 500];
        let mut at = 10;
        for len in [1usize, 2, 3, 5, 9, 20] {
            v[at..at + len].fill(true);
            at += len + 30;
        }
        v
    };
    let cases: Vec<(&str, Vec<bool>)> = vec![
        ("clean", vec![false; 500]),
        ("20 % random", random),
        ("bursts 1..20", bursts),
    ];
    for (name, mask) in cases {
        let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
        let end = feed(&mut s, 0, 500, |k| mask[k as usize], |_| 0);
        let e = s.take_report(end);
        // What the test computes from the mask over the settled range.
        let settled = 500 - DEFAULT_REORDER_WINDOW as usize;
        let lost = mask[..settled].iter().filter(|&&l| l).count();
        let mut runs = Vec::new();
        let mut run = 0;
        for &l in &mask[..settled] {
            if l {
                run += 1;
            } else if run > 0 {
                runs.push(run);
                run = 0;
            }
        }
        let mut hist = [0u8; 6];
        for &r in &runs {
            hist[wzp_proto::feedback::burst_bin(r)] += 1;
        }
        assert_eq!(e.expected as usize, settled, "{name}");
        assert_eq!((e.expected - e.received) as usize, lost, "{name}");
        assert_eq!(e.bursts, hist, "{name}");
        assert_eq!(
            e.max_burst as u32,
            runs.iter().copied().max().unwrap_or(0).max(run),
            "{name}"
        );
    }
}

#[test]
fn the_burst_table_has_one_burst_per_bin() {
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let starts = [10u32, 40, 70, 100, 140, 200];
    let lens = [1u32, 2, 3, 5, 9, 20];
    let lost = |k: u32| starts.iter().zip(&lens).any(|(&a, &l)| k >= a && k < a + l);
    let end = feed(&mut s, 0, 300, lost, |_| 0);
    let e = s.take_report(end);
    assert_eq!(e.bursts, [1, 1, 1, 1, 1, 1]);
    assert_eq!(e.max_burst, 20);
    assert_eq!(e.expected - e.received, 40);
}

#[test]
fn reordering_inside_the_window_is_not_loss_beyond_it_is_late() {
    // Pairs swapped: no loss, nothing late.
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let end = feed(
        &mut s,
        0,
        200,
        |_| false,
        |k| if k % 2 == 0 { 25 } else { 0 },
    );
    let e = s.take_report(end);
    assert_eq!((e.expected - e.received, e.late), (0, 0));
    // One packet 15 frames late: counted lost when settled, then late.
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let end = feed(&mut s, 0, 200, |_| false, |k| if k == 50 { 300 } else { 0 });
    let e = s.take_report(end);
    assert_eq!((e.expected - e.received, e.late, e.max_burst), (1, 1, 1));
    // Duplicates count nothing.
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    for k in 0..100u32 {
        let at = k as u64 * FRAME_NS;
        s.on_packet(at, &header(7, k), 100);
        s.on_packet(at + MS, &header(7, k), 100);
        if k >= 3 {
            s.on_packet(at + 2 * MS, &header(7, k - 3), 100);
        }
    }
    let e = s.take_report(100 * FRAME_NS);
    assert_eq!(e.expected, e.received);
    assert_eq!(e.late, 0);
}

#[test]
fn an_outage_is_one_long_burst_and_stays_visible_while_open() {
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    // 100 packets lost in a row (2 s), longer than the seq bitmap.
    let end = feed(&mut s, 0, 300, |k| (100..200).contains(&k), |_| 0);
    let e = s.take_report(end);
    assert_eq!(e.expected - e.received, 100);
    assert_eq!(e.bursts, [0, 0, 0, 0, 0, 1]);
    assert_eq!(e.max_burst, 100);
    // While a burst is still open, the report shows it as the longest.
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    feed(&mut s, 0, 100, |k| (60..90).contains(&k), |_| 0);
    let e = s.take_report(100 * FRAME_NS);
    assert!(e.max_burst >= 30 - DEFAULT_REORDER_WINDOW as u8, "{e:?}");
}

#[test]
fn sequence_wrap_and_sender_restart() {
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let end = feed(&mut s, u32::MAX - 50, 200, |k| k == 51, |_| 0);
    let e = s.take_report(end);
    assert_eq!(e.expected - e.received, 1, "the loss at the wrap");
    assert_eq!(s.restarts, 0);
    // The sender restarts its counter far away: no flood of losses.
    for k in 0..50u32 {
        s.on_packet(
            end + (k as u64 + 1) * FRAME_NS,
            &header(7, 9_000_000 + k),
            100,
        );
    }
    let e = s.take_report(end + 51 * FRAME_NS);
    assert_eq!(s.restarts, 1);
    assert_eq!(e.expected, e.received);
    // Its timestamps restart from another base too: transit against the
    // old base is no queue, whichever way the base moved.
    assert_eq!(e.queue_delay_100us, 0);
    for back in [true, false] {
        let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
        let packet = |seq: u32, ts: u32| MediaHeader {
            sender_id: 7,
            seq,
            timestamp: ts,
            ..Default::default()
        };
        for k in 0..100u32 {
            s.on_packet(u64::from(k) * FRAME_NS, &packet(k, k * 960), 100);
        }
        let _ = s.take_report(100 * FRAME_NS);
        // 100 s of media earlier (or later) than where it was.
        let base = if back {
            (99u32 * 960).wrapping_sub(4_800_000)
        } else {
            99 * 960 + 4_800_000
        };
        for k in 0..50u32 {
            let at = u64::from(100 + k) * FRAME_NS;
            s.on_packet(at, &packet(1_000_000 + k, base + k * 960), 100);
        }
        let e = s.take_report(150 * FRAME_NS);
        assert_eq!(s.restarts, 1);
        assert_eq!(e.queue_delay_100us, 0, "base moved back: {back}");
    }
}

#[test]
fn jitter_and_queueing_delay_follow_arrival_times() {
    // Table: (name, delay per packet in ms, jitter range, queueing range) in
    // 100 us units. Queueing is the least delay of the interval above the
    // floor: delay that varies from packet to packet is jitter, not a queue.
    type Delay = fn(u32) -> u64;
    let cases: [(&str, Delay, (u16, u16), (u16, u16)); 4] = [
        ("constant", |_| 30, (0, 0), (0, 0)),
        // D alternates +-10 ms: J converges on 10 ms; every other packet
        // comes at the floor.
        (
            "alternating 0/10 ms",
            |k| u64::from(k % 2) * 10,
            (95, 100),
            (0, 0),
        ),
        // A queue building: +1 ms per packet over the last 50 packets; the
        // interval's least is where it began.
        (
            "ramp",
            |k| if k < 150 { 0 } else { u64::from(k - 150) },
            (8, 12),
            (0, 10),
        ),
        // A queue that built over the first interval's last 50 packets and
        // stands at 50 ms through the second (whose first sample is the
        // first interval's last packet, at 49 ms).
        (
            "standing",
            |k| u64::from(k.saturating_sub(100).min(50)),
            (0, 5),
            (490, 500),
        ),
    ];
    for (name, delay, (jlo, jhi), (qlo, qhi)) in cases {
        let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
        feed(&mut s, 0, 150, |_| false, delay);
        let mid = s.take_report(150 * FRAME_NS);
        let end = feed_from(&mut s, 150, 200, delay);
        let e = s.take_report(end);
        assert!(
            (jlo..=jhi).contains(&e.jitter_100us),
            "{name}: jitter {} (first interval {})",
            e.jitter_100us,
            mid.jitter_100us
        );
        assert!(
            (qlo..=qhi).contains(&e.queue_delay_100us),
            "{name}: queueing {}",
            e.queue_delay_100us
        );
    }
}

/// Sender and receiver clocks differ: a sender whose clock runs slow has
/// its packets arrive ever later against its timestamps, which is not a
/// queue. Measured from an all-time least transit, a 500 ppm slow sender
/// read as 25 ms of queue within a minute (the controller's congestion
/// threshold) and 900 ms after 30; a queue that stands is still read as one.
#[test]
fn a_drifting_sender_clock_is_not_a_queue_and_a_standing_queue_is() {
    // (clock drift in ppm, most queueing any report may read, 100 us units)
    for (ppm, most) in [
        (-100i64, 25u16),
        (-500, 110),
        (-1000, 210),
        (500, 5),
        (2000, 5),
    ] {
        let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
        let mut worst = 0;
        // 30 minutes, a report every second.
        for k in 0..30 * 60 * 50u64 {
            let sent =
                (k as i128 * FRAME_NS as i128 * 1_000_000 / (1_000_000 + ppm as i128)) as u64;
            let at = sent + 5 * MS;
            s.on_packet(at, &header(7, k as u32), 100);
            if k % 50 == 49 {
                let e = s.take_report(at);
                if k > 50 * 60 {
                    worst = worst.max(e.queue_delay_100us);
                }
            }
        }
        assert!(
            worst <= most,
            "{ppm} ppm: a report read {worst} x 100 us of queue"
        );
    }
    // A steady path whose delay then rises by 60 ms (over a second) and
    // stays there: every report of the next 10 s reads the queue.
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let delay = |k: u64| {
        5 * MS
            + if k < 3000 {
                0
            } else {
                (k - 3000).min(50) * 60 * MS / 50
            }
    };
    for k in 0..3000 + 50 * 11 {
        let at = k * FRAME_NS + delay(k);
        s.on_packet(at, &header(7, k as u32), 100);
        if k % 50 == 49 {
            let e = s.take_report(at);
            if (3050..3550).contains(&k) {
                assert!(
                    e.queue_delay_100us >= 550,
                    "at packet {k}: queue {}",
                    e.queue_delay_100us
                );
            }
            if k < 3000 {
                assert_eq!(e.queue_delay_100us, 0, "at packet {k}");
            }
        }
    }
}

/// Delay that varies from packet to packet, with reordering, is jitter,
/// not a queue: measured as the mean above the floor, 80 +- 30 ms per
/// datagram (the soak bench's jitter phase) read as 30 ms of queue, over
/// the controller's 25 ms congestion threshold, so a call on such a path
/// stepped down at its first loss. The least of an interval reads what
/// stands in front of every packet.
#[test]
fn jitter_with_reordering_is_not_a_queue() {
    for seed in 0..8u64 {
        let mut rng = SmallRng::seed_from_u64(seed);
        let delays: Vec<u64> = (0..1500).map(|_| rng.random_range(50..=110)).collect();
        let mut arrivals: Vec<(u64, u32)> = (0..1500u32)
            .map(|k| (u64::from(k) * FRAME_NS + delays[k as usize] * MS, k))
            .collect();
        arrivals.sort();
        let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
        let mut next_report = 1_000 * MS;
        let mut worst = 0;
        for (at, k) in arrivals {
            if at >= next_report {
                let e = s.take_report(at);
                // After the first 20 s (the floor's first windows).
                if at > 20_000 * MS {
                    worst = worst.max(e.queue_delay_100us);
                }
                next_report += 1_000 * MS;
            }
            s.on_packet(at, &header(7, k), 100);
        }
        assert!(
            worst <= 150,
            "seed {seed}: a report read {worst} x 100 us of queue on jitter alone"
        );
    }
}

/// A packet's timestamp is where its media begins, and it leaves when its
/// media ends: measured to its start, a sender that moved from 20 ms to
/// 120 ms packets (what the controller does on a congested path) read as
/// 100 ms of queue for the 10-20 s the floor remembers, and its next loss as
/// congestion. Measured to the end of each packet's media, the same path
/// reads no queue, whatever the packets' length and however they change.
#[test]
fn longer_packets_are_not_a_queue() {
    // (media per packet in ms) phases of 10 s each.
    let phases = [20u64, 120, 40, 80, 20, 60, 120];
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let (mut seq, mut media_ms, mut next_report, mut worst) = (0u32, 0u64, 1_000u64, 0);
    for (i, &len) in phases.iter().enumerate() {
        let until = (i as u64 + 1) * 10_000;
        while media_ms < until {
            // Sent when its media ends; a constant 15 ms on the path; every
            // seventh packet lost.
            let at = (media_ms + len + 15) * MS;
            if seq % 7 != 3 {
                let h = MediaHeader {
                    sender_id: 7,
                    seq,
                    timestamp: (media_ms * 48) as u32,
                    ..Default::default()
                };
                s.on_packet(at, &h, 100);
            }
            if at >= next_report * MS {
                let e = s.take_report(at);
                worst = worst.max(e.queue_delay_100us);
                next_report += 1_000;
            }
            seq += 1;
            media_ms += len;
        }
    }
    assert_eq!(worst, 0, "a report read {worst} x 100 us of queue");
}

fn feed_from(s: &mut ReceiveStats, from: u32, to: u32, delay: fn(u32) -> u64) -> u64 {
    let mut last = 0;
    for k in from..to {
        last = k as u64 * FRAME_NS + delay(k) * MS + MS;
        s.on_packet(last, &header(7, k), 100);
    }
    last
}

/// Feeds seq 0..100 of sender 7 where every fifth (`k % 5 == 4`) source
/// packet is lost; in its place, with `repair`, a RaptorQ repair packet
/// carrying that seq (a repair symbol carries its block's last source seq,
/// docs/WIRE.md §1.1) and a timestamp far off, except every tenth, where a
/// feedback report of sender 7 arrives instead. Returns the entry.
fn with_repair(repair: bool) -> FeedbackEntry {
    let mut s = ReceiveStats::new(7, 4, 0);
    let mut table = ReceiverFeedback::new(4, 4, 5_000 * MS);
    for k in 0..100u32 {
        let mut h = header(7, k);
        if k % 5 == 4 {
            if k % 10 == 9 {
                // A report: its seq counts reports (docs/WIRE.md §1.5), so
                // its seq, far from k, must not restart the tracking.
                h.codec = CodecId::FEEDBACK;
                h.seq = 50_000 + k / 10;
            } else if repair {
                h.flags = Flags::REPAIR;
                h.timestamp = 0;
            } else {
                continue;
            }
        }
        s.on_packet(k as u64 * FRAME_NS + MS, &h, 100);
        table.on_packet(k as u64 * FRAME_NS + MS, &h, 100);
        // A member that only reports takes no entry.
        let only_reports = MediaHeader {
            codec: CodecId::FEEDBACK,
            ..header(9, k)
        };
        table.on_packet(k as u64 * FRAME_NS + MS, &only_reports, 60);
    }
    assert_eq!(s.restarts, 0);
    assert!(
        table.stats(9).is_none(),
        "a reports-only member is not a sender"
    );
    assert_eq!(table.stats(7).unwrap().restarts, 0);
    s.take_report(100 * FRAME_NS)
}

#[test]
fn repair_packets_count_for_the_rate_not_for_loss_or_timing_and_feedback_not_at_all() {
    let e = with_repair(true);
    // The newest media seq is 98 (99 was a report): 0..=94 are settled, and
    // the 19 sources 4, 9, .., 94 are lost whether a repair symbol with
    // their seq came or not: counted by seq, a repair would hide the loss
    // of its block's last source (40 % loss read as 33 % with 5-frame
    // blocks), and a controller deciding on FEC would misjudge the path.
    assert_eq!((e.expected, e.received), (95, 76));
    assert_eq!(e.jitter_100us, 0, "off timestamps did not count");
    assert_eq!(e.echo_ts, 98 * 960, "the newest audio packet is echoed");
    let without = with_repair(false);
    assert_eq!((without.expected, without.received), (95, 76));
    assert!(
        e.recv_kbps > without.recv_kbps,
        "repair bytes are received bytes: {} vs {}",
        e.recv_kbps,
        without.recv_kbps
    );
}

#[test]
fn rtt_from_the_echoed_timestamp() {
    // The sender sends every 20 ms; the path is 35 ms each way; the
    // receiver reports 7 ms after its newest packet arrived.
    let mut clock = SendClock::new(128);
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let one_way = 35 * MS;
    for k in 0..60u32 {
        let sent = k as u64 * FRAME_NS;
        clock.on_sent(k * 960, sent);
        s.on_packet(sent + one_way, &header(7, k), 100);
    }
    let report_at = 59 * FRAME_NS + one_way + 7 * MS;
    let e = s.take_report(report_at);
    assert_eq!((e.echo_ts, e.echo_hold_ms), (59 * 960, 7));
    let rtt = clock.rtt_ns(e.echo_ts, e.echo_hold_ms, report_at + one_way);
    assert_eq!(rtt, Some(2 * one_way));
    // A timestamp the sender no longer remembers gives nothing.
    assert_eq!(clock.rtt_ns(12345, 0, report_at), None);
    let mut small = SendClock::new(4);
    for k in 0..10u32 {
        small.on_sent(k, u64::from(k));
    }
    assert_eq!(small.rtt_ns(2, 0, 100), None);
    assert_eq!(small.rtt_ns(9, 0, 100), Some(91));
    // A hold longer than the time since sending is not a negative RTT.
    assert_eq!(small.rtt_ns(9, 1, 100), None);
}

/// The sender's count of what it sent, over the interval a report
/// describes: that interval, in the sender's time, ends where the echoed
/// packet left plus the time the receiver held it.
#[test]
fn what_was_sent_over_a_reports_interval() {
    // Variable-rate speech: 100-byte packets for a second, 60-byte ones
    // the next, every 20 ms; a 35 ms path; a report every second.
    let size = |k: u32| if (k / 50) % 2 == 0 { 100 } else { 60 };
    let one_way = 35 * MS;
    let mut clock = SendClock::new(128);
    let mut sent = SentBytes::new(5_000 * MS);
    let mut s = ReceiveStats::new(7, DEFAULT_REORDER_WINDOW, 0);
    let mut checked = 0;
    for k in 0..300u32 {
        let at = u64::from(k) * FRAME_NS;
        clock.on_sent(k * 960, at);
        sent.on_sent(size(k), at);
        s.on_packet(at + one_way, &header(7, k), size(k));
        let report_at = at + one_way + 5 * MS;
        if k % 50 == 49 {
            let e = s.take_report(report_at);
            if k == 49 {
                continue; // the first interval began before the first packet
            }
            let end = clock.sent_at(e.echo_ts).unwrap() + u64::from(e.echo_hold_ms) * MS;
            let kbps = sent.kbps(end - 1_000 * MS, end).unwrap();
            // What was sent is what arrived, to a packet's worth.
            let got = f32::from(e.recv_kbps);
            assert!(
                (kbps - got).abs() <= 1.0,
                "at packet {k}: sent {kbps} kb/s, received {got}"
            );
            assert_eq!(kbps.round() as usize, size(k) * 8 / 20, "at packet {k}");
            checked += 1;
        }
    }
    assert_eq!(checked, 5);
    // Outside the history, an empty span, or nothing sent yet: not known.
    assert_eq!(sent.kbps(0, 1_000 * MS), None);
    assert_eq!(sent.kbps(5_000 * MS, 5_000 * MS), None);
    assert_eq!(SentBytes::new(5_000 * MS).kbps(0, 1_000 * MS), None);
    // A silence longer than the history clears it: what follows it is
    // counted alone.
    sent.on_sent(80, 60_000 * MS);
    assert_eq!(
        sent.kbps(59_000 * MS, 60_010 * MS),
        Some(80.0 * 8.0 / 1_010.0)
    );
}

#[test]
fn the_table_reports_every_sender_heard_and_forgets_silent_ones() {
    let mut fb = ReceiverFeedback::new(4, DEFAULT_REORDER_WINDOW, 3_000 * MS);
    for k in 0..100u32 {
        let at = k as u64 * FRAME_NS;
        fb.on_packet(at, &header(1, k), 100);
        if k % 10 != 0 {
            fb.on_packet(at + MS, &header(2, 500 + k), 60);
        }
        if k < 10 {
            fb.on_packet(at + 2 * MS, &header(3, k), 60);
        }
    }
    let mut out = [0u8; feedback_len(MAX_FEEDBACK_ENTRIES)];
    let n = fb.write_report(2_000 * MS, 1000, &mut out).unwrap();
    let r = FeedbackReport::parse(&out[..n]).unwrap();
    assert_eq!(r.interval_ms, 1000);
    assert_eq!(r.len(), 3);
    let two = r.entry_for(2).unwrap();
    assert!((two.loss_fraction() - 0.1).abs() < 0.02, "{two:?}");
    assert_eq!(r.entry_for(1).unwrap().loss_fraction(), 0.0);
    // Sender 3 went quiet at 0.2 s: gone from the report after 3 s.
    let n = fb.write_report(3_500 * MS, 1000, &mut out).unwrap();
    let r = FeedbackReport::parse(&out[..n]).unwrap();
    assert!(r.entry_for(3).is_none());
    assert_eq!(r.len(), 2);
    // A fifth sender in a table of four evicts the stalest (sender 1 or 2,
    // both quiet since 2 s; 3 is already gone, so there is a free slot for
    // two more first).
    for id in [10u32, 11, 12] {
        fb.on_packet(3_600 * MS, &header(id, 0), 10);
    }
    assert_eq!(fb.evicted, 1);
    assert!(fb.stats(12).is_some());
}

/// The receiver's own entry (its hold budget) follows the senders' in
/// every report where there is room: a report of 32 senders has none, and
/// says nothing rather than leave a sender out. No sender is tracked under
/// the entry's reserved id.
#[test]
fn reports_state_the_receivers_budget_where_there_is_room() {
    let info = ReceiverInfo {
        hold_budget_ms: 80,
        riding_repair: false,
    };
    let mut fb = ReceiverFeedback::new(MAX_FEEDBACK_ENTRIES, DEFAULT_REORDER_WINDOW, 3_000 * MS);
    fb.set_info(Some(info));
    let mut out = [0u8; feedback_len(MAX_FEEDBACK_ENTRIES)];
    for k in 0..10u32 {
        fb.on_packet(u64::from(k) * FRAME_NS, &header(1, k), 60);
        fb.on_packet(u64::from(k) * FRAME_NS, &header(RECEIVER_ENTRY_ID, k), 60);
    }
    assert!(fb.stats(RECEIVER_ENTRY_ID).is_none());
    let n = fb.write_report(200 * MS, 200, &mut out).unwrap();
    let r = FeedbackReport::parse(&out[..n]).unwrap();
    assert_eq!((r.len(), r.receiver_info()), (2, Some(info)));
    assert_eq!(
        r.entry_for(1).unwrap().expected,
        10 - DEFAULT_REORDER_WINDOW as u16
    );
    let n = fb.write_early_report(210 * MS, 10, &mut out).unwrap();
    let r = FeedbackReport::parse(&out[..n]).unwrap();
    assert_eq!(r.receiver_info(), Some(info), "early reports say it too");
    for id in 2..=MAX_FEEDBACK_ENTRIES as u32 {
        fb.on_packet(220 * MS, &header(id, 0), 60);
    }
    let n = fb.write_report(400 * MS, 200, &mut out).unwrap();
    let r = FeedbackReport::parse(&out[..n]).unwrap();
    assert_eq!((r.len(), r.receiver_info()), (MAX_FEEDBACK_ENTRIES, None));
    fb.set_info(None);
    let mut few = ReceiverFeedback::new(4, DEFAULT_REORDER_WINDOW, 3_000 * MS);
    few.on_packet(0, &header(1, 0), 60);
    let n = few.write_report(200 * MS, 200, &mut out).unwrap();
    assert_eq!(
        FeedbackReport::parse(&out[..n]).unwrap().receiver_info(),
        None
    );
}

#[test]
fn measuring_and_reporting_are_real_time_safe() {
    let mut fb = ReceiverFeedback::new(8, DEFAULT_REORDER_WINDOW, 3_000 * MS);
    let mut out = [0u8; feedback_len(MAX_FEEDBACK_ENTRIES)];
    let mut rng = SmallRng::seed_from_u64(1);
    let mut k = 0u32;
    let mut reports = 0;
    assert_rt_safe("receive stats", 3000, || {
        let at = k as u64 * FRAME_NS + rng.random_range(0..30) * MS;
        // Loss, duplicates, a far jump, eight senders.
        if !rng.random_bool(0.1) {
            let seq = if k == 1500 { k + 1_000_000 } else { k };
            fb.on_packet(at, &header(k % 8, seq), 120);
        }
        if k % 50 == 0 {
            let n = fb.write_report(at, 1000, &mut out).unwrap();
            reports += usize::from(n > 5);
        }
        k += 1;
    });
    assert!(reports > 50);
    let _ = FeedbackEntry::default();
}
