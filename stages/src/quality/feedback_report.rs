//! `quality.feedback_report`: the receiver's half of the feedback loop.
//! Measures every sender it hears (loss by `seq`, burst lengths, late
//! arrivals, jitter, queueing delay, receive rate: [`ReceiverFeedback`]) and
//! emits, once per `interval`, one feedback report (codec `0x40`,
//! `wzp_proto::feedback`, docs/WIRE.md §1.5) as a frame whose payload is the
//! report. A sender's `quality.adapt` stage reads its own entry.
//!
//! Tap it where frames have just arrived, before FEC decoding (repair
//! frames count in the sender's `seq` space) and before the jitter buffer:
//! a fan-out of the link into the FEC decoder. Frames of codec `0x40` (other
//! receivers' reports) are skipped: they count their own `seq`, not the
//! sender's packets (docs/WIRE.md §1.5).
//!
//! ## Ports
//! - `in` (Frame): received frames; `stream` is the sender id, `arrival_ns`
//!   the arrival time (0: now).
//! - `out` (Frame): one report per interval once a sender has been heard;
//!   codec `0x40`, `seq` the report's number (1, 2, ...: reports count
//!   their own seq, docs/WIRE.md §1.5), `stream` = the `reporter_id` param,
//!   `timestamp` the reporter's media clock, payload the report.
//!
//! ## Params
//! - `interval` (duration, 1s, 20ms..=1s): how often a report leaves.
//!   The wire contract is at least once a second.
//! - `onset` (bool, true): an *early* report (flag `early`, docs/WIRE.md
//!   §1.5) also leaves at once when loss begins on a clean path: a
//!   sender's loss is settled (`reorder_window` packets after it) and no
//!   report has shown loss from it for `onset_after`. It counts the
//!   interval so far and leaves the interval running: its report still
//!   comes on time and counts those packets again, so the sender's
//!   per-interval statistics are what they would be without it. A sender
//!   whose path turns lossy after a clean spell (when its controller has
//!   turned redundancy off) hears of it about 160 ms after the first loss
//!   instead of up to a whole interval later (docs/QUALITY.md finding 17).
//! - `onset_after` (duration, 2s): the clean spell before an onset. No
//!   longer than a sender's controller waits before it ends the redundancy
//!   for random loss (half its 4 s settle time): loss that comes back after
//!   the sender turned it off is heard early too.
//! - `senders` (int, 8, 1..=32): senders tracked at once.
//! - `reorder_window` (int, 8, 1..=63): packets past a seq before its loss
//!   is settled.
//! - `forget_after` (duration, 5s): a sender silent this long leaves the report.
//! - `reporter_id` (int, 0): written to each report frame's `stream`
//!   (`wire.packetize` replaces it with its own sender id).
//! - `overhead_bytes` (int, 0, 0..=1024): bytes each packet had on the wire
//!   beyond the frame payload this stage sees, added to what `recv_kbps`
//!   counts so it compares with the sender's wire rate. A call graph taps
//!   frames after `wire.depacketize`: 22 (media header) + 16 (AEAD tag).
//! - `hold_budget` (duration, 60ms, 0..=1s): the extra delay this receiver
//!   may hold to rebuild loss: set it to its jitter buffers' `burst_hold`.
//!   Every report states it in an entry of its own (`ReceiverInfo`,
//!   docs/WIRE.md §1.5; none in a report of 32 senders, which has no room),
//!   and senders size what needs holding to it (`quality.adapt`).
//! - `riding_repair` (bool, true): the same entry says this receiver takes
//!   a RaptorQ repair symbol riding in a source frame's packet (codec
//!   `0x41`, docs/WIRE.md §1.7), which this build's `wire.depacketize`
//!   splits; senders let repair ride only when every receiver says so.
//!   `false` for a receive path that cannot split them.
//!
//! **Counters**: `frames_seen`, `reports_sent` (`early_reports` of them
//! early), `report_errors` (a report that could not be encoded or the
//! output batch was full).
//!
//! **Latency**: none on the media path (reports are a side output).
//!
//! ```toml
//! [[stage]]
//! id = "report"
//! kind = "quality.feedback_report"
//! params = { interval = "1s" }
//! [[link]]
//! from = "net.out"
//! to = "report.in"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_proto::feedback::{feedback_len, ReceiverInfo, MAX_FEEDBACK_ENTRIES};
use wzp_proto::{CodecId, Flags, MediaHeader};

use super::receive_stats::ReceiverFeedback;

/// Bytes of the largest report.
const MAX_REPORT: usize = feedback_len(MAX_FEEDBACK_ENTRIES);

/// `quality.feedback_report`; see the module docs.
pub struct FeedbackReportFactory;

impl StageFactory for FeedbackReportFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "quality.feedback_report",
            summary: "measures each sender heard and emits a 0x40 feedback report per interval",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "received frames (before FEC decode and the jitter buffer)",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "feedback reports (codec 0x40), one per interval",
            }],
            params: vec![
                ParamSpec::duration(
                    "interval",
                    Duration::from_secs(1),
                    "how often a report leaves, 20ms..=1s",
                ),
                ParamSpec::bool(
                    "onset",
                    true,
                    "also report at once (early) when loss begins on a clean path",
                ),
                ParamSpec::duration(
                    "onset_after",
                    Duration::from_secs(2),
                    "time without reported loss before a loss is an onset",
                ),
                ParamSpec::int("senders", 8, "senders tracked at once, 1..=32"),
                ParamSpec::int(
                    "reorder_window",
                    8,
                    "packets past a seq before its loss is settled, 1..=63",
                ),
                ParamSpec::duration(
                    "forget_after",
                    Duration::from_secs(5),
                    "a sender silent this long leaves the report",
                ),
                ParamSpec::int("reporter_id", 0, "written to each report frame's stream"),
                ParamSpec::int(
                    "overhead_bytes",
                    0,
                    "bytes a packet had on the wire beyond its frame payload (recv_kbps), 0..=1024",
                ),
                ParamSpec::duration(
                    "hold_budget",
                    Duration::from_millis(60),
                    "extra delay this receiver may hold to rebuild loss (its jitter buffers' burst_hold), stated in every report",
                ),
                ParamSpec::bool(
                    "riding_repair",
                    true,
                    "say in every report that this receiver takes repair riding in source packets (codec 0x41: this build's wire.depacketize splits them)",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let interval = p.duration("interval")?;
        if interval < Duration::from_millis(20) || interval > Duration::from_secs(1) {
            return Err(ParamError::new(
                "interval",
                format!(
                    "{interval:?} is outside 20ms..=1s (receivers report at least once a second)"
                ),
            )
            .into());
        }
        let onset = p.bool("onset")?;
        let onset_after = p.duration("onset_after")?;
        let senders = p.int_in("senders", 1, MAX_FEEDBACK_ENTRIES as i64)? as usize;
        let window = p.int_in("reorder_window", 1, 63)? as u32;
        let forget = p.duration("forget_after")?;
        let reporter = p.int_in("reporter_id", 0, i64::from(u32::MAX))? as u32;
        let overhead = p.int_in("overhead_bytes", 0, 1024)? as usize;
        let hold_budget = crate::jitter::hold_param(p, "hold_budget")?;
        let mut table = ReceiverFeedback::new(senders, window, forget.as_nanos() as u64);
        table.set_info(Some(ReceiverInfo {
            hold_budget_ms: hold_budget.as_millis() as u16,
            riding_repair: p.bool("riding_repair")?,
        }));
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(FeedbackReport {
                table,
                interval_ns: interval.as_nanos() as u64,
                onset,
                onset_after_ns: onset_after.as_nanos() as u64,
                next_ns: None,
                reporter,
                sent: 0,
                overhead,
                heard: false,
                report: [0; MAX_REPORT],
                frames_seen: cx.counter("frames_seen"),
                reports_sent: cx.counter("reports_sent"),
                early_reports: cx.counter("early_reports"),
                report_errors: cx.counter("report_errors"),
            }),
        })
    }
}

struct FeedbackReport {
    table: ReceiverFeedback,
    interval_ns: u64,
    /// Send an early report when loss begins on a clean path.
    onset: bool,
    /// The clean spell before an onset.
    onset_after_ns: u64,
    /// When the next report is due (set by the first frame heard).
    next_ns: Option<u64>,
    reporter: u32,
    /// Reports made so far: the last one's seq.
    sent: u32,
    /// Bytes each packet had on the wire beyond its frame's payload.
    overhead: usize,
    heard: bool,
    report: [u8; MAX_REPORT],
    frames_seen: Counter,
    reports_sent: Counter,
    early_reports: Counter,
    report_errors: Counter,
}

/// The header fields the statistics read, from a received frame's metadata.
pub fn header_of(meta: &FrameMeta) -> MediaHeader {
    MediaHeader {
        flags: if meta.flags & frame_flags::REPAIR != 0 {
            Flags::REPAIR
        } else {
            Flags::empty()
        },
        codec: CodecId(meta.codec),
        sender_id: meta.stream,
        seq: meta.seq,
        timestamp: meta.timestamp,
        ..MediaHeader::default()
    }
}

impl Processor for FeedbackReport {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (input, out) = io.frames_in_out(0, 0);
        if let Some(input) = input {
            for f in input.iter() {
                if f.meta.flags & frame_flags::MISSING != 0 {
                    continue;
                }
                let at = if f.meta.arrival_ns == 0 {
                    cx.now_ns
                } else {
                    f.meta.arrival_ns
                };
                if f.meta.codec == CodecId::FEEDBACK.0 {
                    // Another receiver's report: its seq counts reports,
                    // not this sender's packets (docs/WIRE.md §1.5).
                    continue;
                }
                self.table
                    .on_packet(at, &header_of(&f.meta), f.len() + self.overhead);
                self.frames_seen.inc();
                self.heard = true;
            }
        }
        if !self.heard {
            return Flow::Continue;
        }
        let due = *self.next_ns.get_or_insert(cx.now_ns + self.interval_ns);
        let early = cx.now_ns < due;
        if early && !(self.onset && self.table.loss_onset(cx.now_ns, self.onset_after_ns)) {
            return Flow::Continue;
        }
        let written = if early {
            // How long the interval has run.
            let run_ns = self.interval_ns.saturating_sub(due - cx.now_ns);
            let ms = (run_ns / 1_000_000).min(u64::from(u16::MAX)) as u16;
            self.table
                .write_early_report(cx.now_ns, ms, &mut self.report)
        } else {
            self.next_ns = Some(due + self.interval_ns);
            let interval_ms = (self.interval_ns / 1_000_000).min(u64::from(u16::MAX)) as u16;
            self.table
                .write_report(cx.now_ns, interval_ms, &mut self.report)
        };
        let len = match written {
            Ok(n) => n,
            Err(_) => {
                self.report_errors.inc();
                return Flow::Continue;
            }
        };
        // Reports are numbered from 1: their own seq space on the wire
        // (docs/WIRE.md §1.5), never a media seq.
        self.sent += 1;
        let meta = FrameMeta {
            seq: self.sent,
            // The reporter's media clock (48 kHz ticks), not interpreted.
            timestamp: (cx.now_ns / 1_000_000 * 48) as u32,
            stream: self.reporter,
            codec: CodecId::FEEDBACK.0,
            ..FrameMeta::default()
        };
        match out.map(|o| o.push(meta, &self.report[..len])) {
            Some(Ok(())) => {
                self.reports_sent.inc();
                if early {
                    self.early_reports.inc();
                }
            }
            _ => self.report_errors.inc(),
        }
        Flow::Continue
    }
}
