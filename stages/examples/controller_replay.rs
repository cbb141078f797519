//! Replays a loss trace (one 0/1 per packet, 1 = lost, whitespace
//! separated; 20 ms packets) through the sender's quality controller and
//! prints each decision with the report that led to it: how the controller
//! reads a path, without running audio.
//!
//! ```text
//! cargo run --release -p wzp-stages --example controller_replay -- TRACE [REPORT_MS]
//! ```

use wzp_proto::feedback::{burst_bin, FeedbackEntry, BURST_BINS};
use wzp_stages::quality::controller::{Controller, ControllerConfig};

const MS: u64 = 1_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: controller_replay TRACE [REPORT_MS]");
        std::process::exit(2);
    };
    let report_ms: u64 = match args.next().map(|s| s.parse()) {
        None => 1000,
        Some(Ok(v)) if v >= 20 => v,
        Some(_) => {
            eprintln!("REPORT_MS must be a number of ms >= 20");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    let mut trace = Vec::new();
    for (i, w) in text.split_whitespace().enumerate() {
        match w {
            "0" => trace.push(false),
            "1" => trace.push(true),
            _ => {
                eprintln!("{path}: token {i} is {w:?}, not 0 or 1");
                std::process::exit(1);
            }
        }
    }
    let mut c = Controller::new(ControllerConfig::default(), 0);
    let per_report = (report_ms / 20) as usize;
    let (mut expected, mut received, mut run, mut max_burst) = (0u16, 0u16, 0u32, 0u32);
    let mut bursts = [0u8; BURST_BINS];
    for (i, &lost) in trace.iter().enumerate() {
        let now = (i as u64 + 1) * 20 * MS;
        expected += 1;
        if lost {
            run += 1;
            max_burst = max_burst.max(run);
        } else {
            received += 1;
            if run > 0 {
                let b = &mut bursts[burst_bin(run)];
                *b = b.saturating_add(1);
                run = 0;
            }
        }
        if (i + 1) % per_report == 0 {
            let e = FeedbackEntry {
                sender_id: 1,
                expected,
                received,
                bursts,
                max_burst: max_burst.min(255) as u8,
                jitter_100us: 20,
                queue_delay_100us: 20,
                recv_kbps: 30,
                ..FeedbackEntry::default()
            };
            c.handle_report(7, &e, now);
            println!(
                "{:6.2}s report lost {:2}/{:2} runs {:?} max {}",
                now as f64 / 1e9,
                expected - received,
                expected,
                bursts,
                max_burst
            );
            (expected, received, max_burst) = (0, 0, run);
            bursts = [0; BURST_BINS];
        }
        while let Some(d) = c.poll(now) {
            let s = d.settings;
            println!(
                "{:6.2}s  -> {:12} dred {:4} hint {:2} lbrr {} hold {}",
                now as f64 / 1e9,
                d.reason.name(),
                s.dred_ms,
                s.loss_hint,
                s.lbrr as u8,
                s.receiver_hold_frames
            );
        }
    }
}
