//! What a `quality.adapt` stage hands its controller, as lines a call can
//! print and a developer can replay.
//!
//! With the stage's `log_inputs` param on, every input the controller is
//! handed goes into the decision journal beside the decisions
//! ([`super::journal::Record`]): the controller's config and the graph's
//! quantum when it is made, each report about this sender with the
//! receiver's stated hold budget and what this sender sent over the
//! report's interval, each early report, each sample of the first hop. A
//! control plane prints them as `adapt-input:` lines ([`InputRecord::line`]);
//! [`parse_line`] reads one back and [`replay`] steps a fresh controller
//! through a call's inputs on the stage's own cycle, so a decision a live
//! call took can be taken again, and looked into, off line
//! (`wzp-client replay-adapt`).
//!
//! ```text
//! adapt-input: start at_ns=0 quantum_ns=20000000 top_tier=good startup_ns=3000000000 ...
//! adapt-input: report at_ns=3020000000 reporter=7 expected=50 received=45 late=0 bursts=3,1,0,0,0,0 max_burst=2 jitter_100us=4 queue_100us=0 recv_kbps=20 echo_ts=141120 echo_hold_ms=6 hold_budget_ms=60 sent_kbps=21.3
//! adapt-input: path at_ns=3100000000 sent=50 lost=0 queue_ms=1 delivered_kbps=27
//! ```
//!
//! The format is this crate's, for its own tools: lines of `key=value`
//! after the kind, every key present, in any order.

use wzp_proto::feedback::{FeedbackEntry, ReceiverInfo};

use super::controller::{Controller, ControllerConfig, Decision, TIERS};
use super::input_line::Fields;
pub use super::input_line::PREFIX;
use super::path::PathSample;

/// One input, as the stage handed it to its controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Input {
    /// The controller was made with `cfg`; the stage runs every
    /// `quantum_ns` and polls the controller once a cycle.
    Start {
        cfg: ControllerConfig,
        quantum_ns: u64,
    },
    /// A report's entry about this sender
    /// ([`Controller::handle_receiver_info`] with `info`, then
    /// [`Controller::handle_report_sent`] with `sent_kbps`).
    Report {
        reporter: u32,
        entry: FeedbackEntry,
        info: Option<ReceiverInfo>,
        sent_kbps: Option<f32>,
    },
    /// An early report's entry ([`Controller::handle_early_report`]).
    Early { reporter: u32, entry: FeedbackEntry },
    /// A first-hop sample ([`Controller::handle_path`]).
    Path(PathSample),
}

/// An input and the graph time it was handed over at.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputRecord {
    pub at_ns: u64,
    pub input: Input,
}

fn entry_fields(e: &FeedbackEntry) -> String {
    let bursts: Vec<String> = e.bursts.iter().map(u8::to_string).collect();
    format!(
        "expected={} received={} late={} bursts={} max_burst={} jitter_100us={} queue_100us={} recv_kbps={} echo_ts={} echo_hold_ms={}",
        e.expected,
        e.received,
        e.late,
        bursts.join(","),
        e.max_burst,
        e.jitter_100us,
        e.queue_delay_100us,
        e.recv_kbps,
        e.echo_ts,
        e.echo_hold_ms
    )
}

impl InputRecord {
    /// The input as one `adapt-input:` line (module docs).
    pub fn line(&self) -> String {
        let at = self.at_ns;
        match &self.input {
            Input::Start { cfg, quantum_ns } => format!(
                "{PREFIX}start at_ns={at} quantum_ns={quantum_ns} top_tier={} startup_ns={} clean_settle_ns={} hysteresis_ns={} probe_after_ns={} probe_max_ns={} report_fresh_ns={} hold_budget_ms={} heavy_loss={} rate_check={} congestion_queue_ms={} random_fec={}",
                cfg.top_tier,
                cfg.startup_ns,
                cfg.clean_settle_ns,
                cfg.hysteresis_ns,
                cfg.probe_after_ns,
                cfg.probe_max_ns,
                cfg.report_fresh_ns,
                cfg.hold_budget_ms,
                cfg.heavy_loss,
                cfg.rate_check,
                cfg.congestion_queue_ms,
                cfg.random_fec,
            ),
            Input::Report {
                reporter,
                entry,
                info,
                sent_kbps,
            } => format!(
                "{PREFIX}report at_ns={at} reporter={reporter} {} hold_budget_ms={} sent_kbps={}",
                entry_fields(entry),
                info.map_or("-".to_string(), |i| i.hold_budget_ms.to_string()),
                sent_kbps.map_or("-".to_string(), |k| k.to_string()),
            ),
            Input::Early { reporter, entry } => format!(
                "{PREFIX}early at_ns={at} reporter={reporter} {}",
                entry_fields(entry)
            ),
            Input::Path(s) => format!(
                "{PREFIX}path at_ns={at} sent={} lost={} queue_ms={} delivered_kbps={}",
                s.sent, s.lost, s.queue_ms, s.delivered_kbps
            ),
        }
    }
}

/// Reads one `adapt-input:` line (anything before [`PREFIX`], such as a
/// call's label, is skipped). Errors say what is wrong with it.
pub fn parse_line(line: &str) -> Result<InputRecord, String> {
    let mut f = Fields::of(line)?;
    let at_ns = f.num("at_ns")?;
    let input = match f.kind() {
        "start" => {
            let tier = f.take("top_tier")?;
            let top_tier = TIERS
                .iter()
                .copied()
                .find(|&n| n == tier)
                .ok_or_else(|| format!("top_tier={tier:?} is not a tier"))?;
            let quantum_ns: u64 = f.num("quantum_ns")?;
            // A graph's quantum is 1..=1000 ms, in whole milliseconds.
            if !(1_000_000..=1_000_000_000).contains(&quantum_ns) || quantum_ns % 1_000_000 != 0 {
                return Err(format!(
                    "quantum_ns={quantum_ns}: a graph's quantum is 1..=1000 ms in whole milliseconds"
                ));
            }
            let heavy_loss: f32 = f.num("heavy_loss")?;
            let congestion_queue_ms: f32 = f.num("congestion_queue_ms")?;
            if !(0.0..=1.0).contains(&heavy_loss) || !congestion_queue_ms.is_finite() {
                return Err(format!(
                    "heavy_loss={heavy_loss} (0..=1) or congestion_queue_ms={congestion_queue_ms} out of range"
                ));
            }
            Input::Start {
                cfg: ControllerConfig {
                    top_tier,
                    startup_ns: f.num("startup_ns")?,
                    clean_settle_ns: f.num("clean_settle_ns")?,
                    hysteresis_ns: f.num("hysteresis_ns")?,
                    probe_after_ns: f.num("probe_after_ns")?,
                    probe_max_ns: f.num("probe_max_ns")?,
                    report_fresh_ns: f.num("report_fresh_ns")?,
                    hold_budget_ms: f.num("hold_budget_ms")?,
                    heavy_loss,
                    rate_check: f.flag("rate_check")?,
                    congestion_queue_ms,
                    random_fec: f.flag("random_fec")?,
                },
                quantum_ns,
            }
        }
        "report" => {
            let reporter = f.num("reporter")?;
            let entry = f.entry()?;
            let info = f
                .maybe("hold_budget_ms")?
                .map(|hold_budget_ms| ReceiverInfo {
                    hold_budget_ms,
                    riding_repair: false,
                });
            let sent_kbps: Option<f32> = f.maybe("sent_kbps")?;
            if sent_kbps.is_some_and(|k| !k.is_finite() || k < 0.0) {
                return Err("sent_kbps: a rate of 0 or more, or -".into());
            }
            Input::Report {
                reporter,
                entry,
                info,
                sent_kbps,
            }
        }
        "early" => Input::Early {
            reporter: f.num("reporter")?,
            entry: f.entry()?,
        },
        "path" => {
            let s = PathSample {
                sent: f.num("sent")?,
                lost: f.num("lost")?,
                queue_ms: f.num("queue_ms")?,
                delivered_kbps: f.num("delivered_kbps")?,
            };
            if s.lost > s.sent {
                return Err(format!("lost={} is more than sent={}", s.lost, s.sent));
            }
            Input::Path(s)
        }
        other => {
            return Err(format!(
                "unknown input kind {other:?} (start, report, early, path)"
            ))
        }
    };
    f.done()?;
    Ok(InputRecord { at_ns, input })
}

/// Longest stretch a replay steps through with no input (one hour of
/// cycles): a gap longer than that is a log that is not one call's.
const MAX_GAP_NS: u64 = 3_600_000_000_000;

/// Steps a fresh controller through `inputs` (the first a
/// [`Input::Start`], the rest in the order handed over) as the stage does:
/// cycle by cycle from the start, each cycle's inputs in order, then every
/// decision [`Controller::poll`] gives, up to `until_ns` (at least the last
/// input's cycle). Returns the decisions.
pub fn replay(inputs: &[InputRecord], until_ns: u64) -> Result<Vec<Decision>, String> {
    let (first, rest) = inputs.split_first().ok_or("no inputs to replay")?;
    let Input::Start { cfg, quantum_ns } = first.input else {
        return Err("the first input is not a start line (the log begins mid-call)".into());
    };
    let start = first.at_ns;
    let mut ctl = Controller::new(cfg, start);
    let mut out = Vec::new();
    let mut now = start;
    let mut i = 0;
    let last = rest
        .iter()
        .map(|r| r.at_ns)
        .fold(start, u64::max)
        .max(until_ns);
    loop {
        while let Some(r) = rest.get(i) {
            if matches!(r.input, Input::Start { .. }) {
                return Err(format!(
                    "input {} is a second start line (two calls in one log?)",
                    i + 2
                ));
            }
            if r.at_ns > now {
                break;
            }
            if r.at_ns < now {
                return Err(format!(
                    "input {} at {} ns is before the cycle at {now} ns: inputs out of order, or not on the stage's {quantum_ns} ns cycle from {start} ns",
                    i + 2,
                    r.at_ns
                ));
            }
            match r.input {
                // Refused above.
                Input::Start { .. } => {}
                Input::Report {
                    reporter,
                    entry,
                    info,
                    sent_kbps,
                } => {
                    ctl.handle_receiver_info(reporter, info, now);
                    ctl.handle_report_sent(reporter, &entry, sent_kbps, now);
                }
                Input::Early { reporter, entry } => ctl.handle_early_report(reporter, &entry, now),
                Input::Path(s) => ctl.handle_path(&s, now),
            }
            i += 1;
        }
        while let Some(d) = ctl.poll(now) {
            out.push(d);
        }
        if now >= last {
            return Ok(out);
        }
        let next = rest.get(i).map_or(last, |r| r.at_ns);
        if next.saturating_sub(now) > MAX_GAP_NS {
            return Err(format!(
                "{} s with no input after {now} ns: not one call's log",
                MAX_GAP_NS / 1_000_000_000
            ));
        }
        now += quantum_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quality::controller::Reason;

    fn entry(expected: u16, received: u16, bursts: [u8; 6], max_burst: u8) -> FeedbackEntry {
        FeedbackEntry {
            sender_id: 0,
            expected,
            received,
            late: 1,
            bursts,
            max_burst,
            jitter_100us: 12,
            queue_delay_100us: 7,
            recv_kbps: 29,
            echo_ts: 48_000,
            echo_hold_ms: 3,
        }
    }

    fn start() -> InputRecord {
        InputRecord {
            at_ns: 0,
            input: Input::Start {
                cfg: ControllerConfig::default(),
                quantum_ns: 20_000_000,
            },
        }
    }

    #[test]
    fn every_kind_of_input_reads_back_as_written() {
        let records = [
            start(),
            InputRecord {
                at_ns: 40_000_000,
                input: Input::Start {
                    cfg: ControllerConfig {
                        top_tier: "studio_64k",
                        heavy_loss: 0.35,
                        congestion_queue_ms: 12.5,
                        rate_check: false,
                        random_fec: false,
                        hold_budget_ms: 0,
                        ..ControllerConfig::default()
                    },
                    quantum_ns: 10_000_000,
                },
            },
            InputRecord {
                at_ns: 1_060_000_000,
                input: Input::Report {
                    reporter: 7,
                    entry: entry(50, 39, [6, 1, 1, 0, 0, 0], 3),
                    info: Some(ReceiverInfo {
                        hold_budget_ms: 60,
                        riding_repair: false,
                    }),
                    sent_kbps: Some(34.216),
                },
            },
            InputRecord {
                at_ns: 2_060_000_000,
                input: Input::Report {
                    reporter: u32::MAX,
                    entry: entry(0, 0, [0; 6], 0),
                    info: None,
                    sent_kbps: None,
                },
            },
            InputRecord {
                at_ns: 3_000_000_000,
                input: Input::Early {
                    reporter: 3,
                    entry: entry(9, 6, [0, 0, 1, 0, 0, 0], 3),
                },
            },
            InputRecord {
                at_ns: u64::MAX,
                input: Input::Path(PathSample {
                    sent: 50,
                    lost: 2,
                    queue_ms: 14,
                    delivered_kbps: 27,
                }),
            },
        ];
        for r in records {
            let line = r.line();
            assert_eq!(parse_line(&line), Ok(r), "{line}");
            // A call's label before the line is skipped.
            assert_eq!(parse_line(&format!("alice: {line}")), Ok(r), "{line}");
        }
    }

    #[test]
    fn bad_input_lines_say_what_is_wrong() {
        let report = InputRecord {
            at_ns: 20_000_000,
            input: Input::Report {
                reporter: 7,
                entry: entry(50, 39, [6, 1, 1, 0, 0, 0], 3),
                info: Some(ReceiverInfo {
                    hold_budget_ms: 60,
                    riding_repair: false,
                }),
                sent_kbps: Some(21.5),
            },
        }
        .line();
        let start = start().line();
        let edit = |line: &str, from: &str, to: &str| {
            assert!(line.contains(from), "{from} in {line}");
            line.replacen(from, to, 1)
        };
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "not an input line"),
            (
                "adapt: startup -> tier=good at 0.00 s".into(),
                "not an input line",
            ),
            ("adapt-input: ".into(), "no kind"),
            ("adapt-input: launch at_ns=0".into(), "unknown input kind"),
            (
                "adapt-input: path at_ns=0 sent=1 lost=0 queue_ms=0".into(),
                "without delivered_kbps=",
            ),
            (edit(&report, " reporter=7", ""), "without reporter="),
            (edit(&report, "late=1", "late=1 late=2"), "late= twice"),
            (
                edit(&report, "late=1", "late=1 colour=red"),
                "unknown field colour=",
            ),
            (edit(&report, "late=1", "late"), "not key=value"),
            (
                edit(&report, "expected=50", "expected=fifty"),
                "expected=\"fifty\"",
            ),
            (
                edit(&report, "expected=50", "expected=70000"),
                "not a number in range",
            ),
            (
                edit(&report, "expected=50", "expected=-1"),
                "not a number in range",
            ),
            (
                edit(&report, "received=39", "received=51"),
                "more than expected",
            ),
            (
                edit(&report, "bursts=6,1,1,0,0,0", "bursts=6,1,1"),
                "6 counts",
            ),
            (
                edit(&report, "bursts=6,1,1,0,0,0", "bursts=6,1,1,0,0,300"),
                "0..=255",
            ),
            (edit(&report, "sent_kbps=21.5", "sent_kbps=-3"), "sent_kbps"),
            (
                edit(&report, "sent_kbps=21.5", "sent_kbps=NaN"),
                "sent_kbps",
            ),
            (
                edit(&report, "sent_kbps=21.5", "sent_kbps=inf"),
                "sent_kbps",
            ),
            (edit(&report, "at_ns=20000000", "at_ns=2e7"), "at_ns="),
            (edit(&start, "top_tier=good", "top_tier=best"), "not a tier"),
            (
                edit(&start, "quantum_ns=20000000", "quantum_ns=0"),
                "quantum_ns=0",
            ),
            (
                edit(&start, "quantum_ns=20000000", "quantum_ns=1"),
                "1..=1000 ms",
            ),
            (
                edit(&start, "quantum_ns=20000000", "quantum_ns=20000001"),
                "whole milliseconds",
            ),
            (
                edit(&start, "heavy_loss=0.6", "heavy_loss=1.5"),
                "heavy_loss",
            ),
            (
                edit(&start, "congestion_queue_ms=25", "congestion_queue_ms=inf"),
                "congestion_queue_ms",
            ),
            (
                edit(&start, "rate_check=true", "rate_check=yes"),
                "true or false",
            ),
            (
                "adapt-input: path at_ns=0 sent=1 lost=2 queue_ms=0 delivered_kbps=0".into(),
                "more than sent",
            ),
        ];
        for (line, want) in &cases {
            match parse_line(line) {
                Ok(r) => panic!("{line:?} parsed as {r:?}"),
                Err(e) => assert!(e.contains(want), "{line:?}: {e:?} does not say {want:?}"),
            }
        }
    }

    /// The controller stepped by hand through `inputs` (after the start),
    /// as the stage does: each cycle's inputs, then its polls.
    fn stepped(inputs: &[InputRecord], until_ns: u64) -> Vec<Decision> {
        let mut ctl = Controller::new(ControllerConfig::default(), 0);
        let mut out = Vec::new();
        let mut now = 0;
        while now <= until_ns {
            for r in inputs[1..].iter().filter(|r| r.at_ns == now) {
                match r.input {
                    Input::Report {
                        reporter,
                        entry,
                        info,
                        sent_kbps,
                    } => {
                        ctl.handle_receiver_info(reporter, info, now);
                        ctl.handle_report_sent(reporter, &entry, sent_kbps, now);
                    }
                    Input::Early { reporter, entry } => {
                        ctl.handle_early_report(reporter, &entry, now)
                    }
                    Input::Path(s) => ctl.handle_path(&s, now),
                    Input::Start { .. } => panic!("one start"),
                }
            }
            while let Some(d) = ctl.poll(now) {
                out.push(d);
            }
            now += 20_000_000;
        }
        out
    }

    fn report(at_ns: u64, e: FeedbackEntry, budget: Option<u16>, sent: f32) -> InputRecord {
        InputRecord {
            at_ns,
            input: Input::Report {
                reporter: 7,
                entry: e,
                info: budget.map(|hold_budget_ms| ReceiverInfo {
                    hold_budget_ms,
                    riding_repair: false,
                }),
                sent_kbps: Some(sent),
            },
        }
    }

    #[test]
    fn a_replay_takes_the_decisions_the_inputs_lead_to() {
        const S: u64 = 1_000_000_000;
        let random = entry(50, 40, [8, 1, 0, 0, 0, 0], 2);
        let bursty = entry(50, 38, [0, 0, 2, 1, 0, 0], 6);
        let clean = entry(50, 50, [0; 6], 0);
        // No loss: only a receive rate short of what was sent (50 kb/s, the
        // report's own figure; not of the tier's nominal rate) says the
        // queue is this stream's.
        let congested = FeedbackEntry {
            queue_delay_100us: 600,
            recv_kbps: 38,
            late: 0,
            ..entry(50, 50, [0; 6], 0)
        };
        let path = |at_ns, lost, queue_ms| InputRecord {
            at_ns,
            input: Input::Path(PathSample {
                sent: 50,
                lost,
                queue_ms,
                delivered_kbps: 20,
            }),
        };
        // (what the inputs are, the reason one of their decisions must
        // have: the input kind and field the scenario needs).
        let scenarios: Vec<(&str, Vec<InputRecord>, Reason)> = vec![
            (
                "random loss",
                vec![
                    report(3_100_000_000, random, Some(60), 30.0),
                    report(4_100_000_000, random, Some(60), 30.0),
                ],
                Reason::RandomLoss,
            ),
            (
                "bursts at a receiver that holds nothing (its stated budget): runs too long to rebuild",
                vec![
                    report(3_100_000_000, bursty, Some(0), 30.0),
                    report(4_100_000_000, bursty, Some(0), 30.0),
                ],
                Reason::LongRuns,
            ),
            (
                "congestion (the receive rate against what was sent)",
                vec![
                    report(3_100_000_000, congested, Some(60), 50.0),
                    report(4_100_000_000, congested, Some(60), 50.0),
                ],
                Reason::Congestion,
            ),
            (
                "an early report after a clean spell",
                vec![
                    report(3_100_000_000, clean, Some(60), 30.0),
                    report(4_100_000_000, clean, Some(60), 30.0),
                    report(8_100_000_000, clean, Some(60), 30.0),
                    InputRecord {
                        at_ns: 8_500_000_000,
                        input: Input::Early {
                            reporter: 7,
                            entry: entry(20, 15, [5, 0, 0, 0, 0, 0], 1),
                        },
                    },
                ],
                Reason::RandomLoss,
            ),
            (
                "a congested first hop",
                vec![
                    path(3_100_000_000, 10, 80),
                    path(3_600_000_000, 10, 90),
                    path(4_100_000_000, 10, 90),
                ],
                Reason::Congestion,
            ),
        ];
        for (what, mut inputs, reason) in scenarios {
            inputs.insert(0, start());
            let replayed = replay(&inputs, 10 * S).unwrap();
            assert_eq!(replayed, stepped(&inputs, 10 * S), "{what}");
            assert!(
                replayed.iter().any(|d| d.reason == reason),
                "{what}: {replayed:?}"
            );
            // Through the lines and back, the same.
            let lines: Vec<InputRecord> = inputs
                .iter()
                .map(|r| parse_line(&r.line()).unwrap())
                .collect();
            assert_eq!(replay(&lines, 10 * S).unwrap(), replayed, "{what}");
        }
    }

    #[test]
    fn a_replay_refuses_a_log_it_cannot_step_through() {
        let path = |at_ns| InputRecord {
            at_ns,
            input: Input::Path(PathSample::default()),
        };
        assert!(replay(&[], 0).unwrap_err().contains("no inputs"));
        assert!(replay(&[path(0)], 0)
            .unwrap_err()
            .contains("not a start line"));
        assert!(replay(&[start(), path(40_000_000), start()], 0)
            .unwrap_err()
            .contains("second start"));
        assert!(replay(&[start(), path(40_000_000), path(20_000_000)], 0)
            .unwrap_err()
            .contains("out of order"));
        assert!(replay(&[start(), path(30_000_000)], 0)
            .unwrap_err()
            .contains("cycle"));
        assert!(replay(&[start(), path(7_200_000_000_000)], 0)
            .unwrap_err()
            .contains("not one call's log"));
    }
}
