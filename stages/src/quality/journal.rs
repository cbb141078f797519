//! The quality controller's decision journal: every decision the
//! `quality.adapt` stage takes, with its reason, what it set and what the
//! controller had just read, handed from the real-time side to the control
//! plane through a lock-free ring.
//!
//! Counters and gauges say how many decisions there were and what is in
//! force now; a control plane that samples them every few tens of ms sees
//! the last of two decisions taken in one cycle, and on a fast clock (a
//! `wzp-client run` of `graphs/loopback.toml`, the quality bench's aligned
//! runs) seconds of graph time pass between samples. The journal keeps each
//! one: the stage pushes an [`Entry`] (plain data, no allocation) into a
//! single-producer ring made when it was built, and the control plane
//! drains it ([`DecisionJournal::drain`]) and prints [`Entry::line`].
//!
//! With the stage's `log_inputs` param on, the inputs its controller is
//! handed go into the same ring between the decisions, in the order handed
//! over ([`Record::Input`], [`super::inputs`]), so a call's log can be
//! replayed.
//!
//! The journal is a graph resource: the control plane inserts one under the
//! name the stage's `journal` param gives (default `adapt_journal`) and
//! keeps its `Arc`; without one, the stage makes its own and nobody reads
//! it (a full ring drops new entries and counts them, `journal_dropped`).
//! A stage rebuilt by a reconfiguration gets a new ring in the same
//! journal; the old one is read to its end first.

use std::sync::{Mutex, PoisonError};

use super::controller::{Reason, Settings};
use super::inputs::InputRecord;

/// The resource name `quality.adapt`'s `journal` param defaults to.
pub const DEFAULT_NAME: &str = "adapt_journal";

/// Records a ring holds before new ones are dropped. A controller takes a
/// few decisions a second at most, and is handed a report and a first-hop
/// sample or two a second; the control plane drains every 50 ms of wall
/// time (seconds of graph time on a fast clock).
pub const CAPACITY: usize = 512;

/// What a ring carries: a decision, or (with `log_inputs`) an input the
/// controller was handed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Record {
    Decision(Entry),
    Input(InputRecord),
}

impl Record {
    /// The record as one line: an `adapt:` line for a decision
    /// ([`Entry::line`]), an `adapt-input:` line for an input
    /// ([`InputRecord::line`]).
    pub fn line(&self) -> String {
        match self {
            Record::Decision(e) => e.line(),
            Record::Input(i) => i.line(),
        }
    }

    /// The decision, if this is one.
    pub fn decision(&self) -> Option<&Entry> {
        match self {
            Record::Decision(e) => Some(e),
            Record::Input(_) => None,
        }
    }
}

/// One decision, as the stage saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Graph time of the decision, ns from the graph's start.
    pub at_ns: u64,
    pub reason: Reason,
    /// What the decision asked for.
    pub settings: Settings,
    /// Written to the encoder (false with `enabled = false`, or when a
    /// cell refused it).
    pub applied: bool,
    /// The encoder could take all of it live (see `quality.adapt`'s
    /// `not_live`).
    pub live: bool,
    /// Whether a `codec.adaptive_encode` takes the tier (else a Codec2 tier
    /// is held as Opus at its most robust).
    pub codec_live: bool,
    /// The latest report about this sender: loss percent, longest run,
    /// queueing delay (ms), receive rate (kb/s), what this sender sent
    /// over the same interval (kb/s, counted as the receiver counts),
    /// round trip (ms); -1 until known.
    pub loss_pct: i32,
    pub run_max: i32,
    pub queue_ms: i32,
    pub recv_kbps: i32,
    pub sent_kbps: i32,
    pub rtt_ms: i32,
    /// The latest first-hop sample: lost percent, queue (ms), delivered
    /// (kb/s); -1 until one came.
    pub path_loss_pct: i32,
    pub path_queue_ms: i32,
    pub path_kbps: i32,
}

impl Entry {
    /// A decision with nothing read yet: every report and first-hop figure
    /// unknown (-1), written to the encoder, live, and with no codec cell.
    pub fn unread(at_ns: u64, reason: Reason, settings: Settings) -> Entry {
        Entry {
            at_ns,
            reason,
            settings,
            applied: true,
            live: true,
            codec_live: false,
            loss_pct: -1,
            run_max: -1,
            queue_ms: -1,
            recv_kbps: -1,
            sent_kbps: -1,
            rtt_ms: -1,
            path_loss_pct: -1,
            path_queue_ms: -1,
            path_kbps: -1,
        }
    }

    /// The decision as one line:
    ///
    /// ```text
    /// adapt: random_loss -> tier=good bitrate=24000 frame_ms=20 dred_ms=0 loss_hint=20 lbrr=on fec=0 hold=1 (worst loss 19 %, run 2, queue 2 ms, recv 31 of 33 kb/s, rtt 41 ms; first hop: lost 0 %, queue 1 ms, through 33 kb/s) at 12.34 s
    /// ```
    pub fn line(&self) -> String {
        self.render(true)
    }

    /// The decision alone, without what the controller had just read:
    /// `adapt: random_loss -> tier=good ... hold=1 at 12.34 s`. What a
    /// replay of the controller's inputs can take again
    /// ([`super::inputs::replay`]); [`decision_of_line`] cuts the same out
    /// of a printed [`Entry::line`].
    pub fn summary(&self) -> String {
        self.render(false)
    }

    fn render(&self, full: bool) -> String {
        let s = &self.settings;
        let known = |v: i32, unit: &str| {
            if v < 0 {
                "?".to_string()
            } else if unit.is_empty() {
                v.to_string()
            } else {
                format!("{v} {unit}")
            }
        };
        let first_hop = if self.path_loss_pct < 0 {
            String::new()
        } else {
            format!(
                "; first hop: lost {} %, queue {} ms, through {} kb/s",
                self.path_loss_pct, self.path_queue_ms, self.path_kbps
            )
        };
        let held = if (s.tier == "poor" || s.tier == "catastrophic") && !self.codec_live {
            " [Codec2 is not live: Opus holds the top rate with lbrr=on loss_hint=30]"
        } else {
            ""
        };
        let applied = if self.applied {
            ""
        } else {
            " [not applied: adapt=false]"
        };
        let decision = format!(
            "adapt: {} -> tier={} bitrate={} frame_ms={} dred_ms={} loss_hint={} lbrr={} fec={}{} hold={}",
            self.reason.name(),
            s.tier,
            s.bitrate,
            s.frame_ms,
            s.dred_ms,
            s.loss_hint,
            if s.lbrr { "on" } else { "off" },
            s.fec_ratio,
            if s.fec_block > 0 {
                format!(" fec_block={}", s.fec_block)
            } else {
                String::new()
            },
            s.receiver_hold_frames,
        );
        let at = format!(" at {:.2} s", self.at_ns as f64 / 1e9);
        if !full {
            return decision + &at;
        }
        format!(
            "{decision} (worst loss {}, run {}, queue {}, recv {}, rtt {}{first_hop}){held}{applied}{at}",
            known(self.loss_pct, "%"),
            known(self.run_max, ""),
            known(self.queue_ms, "ms"),
            if self.recv_kbps >= 0 && self.sent_kbps >= 0 {
                format!("{} of {} kb/s", self.recv_kbps, self.sent_kbps)
            } else {
                known(self.recv_kbps, "kb/s")
            },
            known(self.rtt_ms, "ms"),
        )
    }
}

/// The decision of a printed `adapt:` line ([`Entry::line`]) as
/// [`Entry::summary`] gives it; `None` for any other line. Anything before
/// `adapt: ` (a call's label) is left out.
pub fn decision_of_line(line: &str) -> Option<String> {
    let start = line.find("adapt: ")?;
    let line = &line[start..];
    let head = &line[..line.find(" (worst ")?];
    let at = &line[line.rfind(" at ")?..];
    (at.ends_with(" s") && head.contains(" -> ")).then(|| format!("{head}{at}"))
}

/// Where a graph's `quality.adapt` stages leave their decisions; see the
/// module docs.
#[derive(Default)]
pub struct DecisionJournal {
    /// The read ends of the rings handed out, oldest first.
    rings: Mutex<Vec<rtrb::Consumer<Record>>>,
}

impl DecisionJournal {
    /// A new ring for a stage being built (control side: allocates, locks).
    pub fn writer(&self) -> JournalWriter {
        let (tx, rx) = rtrb::RingBuffer::new(CAPACITY);
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(rx);
        JournalWriter { tx }
    }

    /// Hands every record written since the last call to `f`, in the order
    /// written (a ring left by a rebuilt stage first); returns how many.
    /// Control side only.
    pub fn drain(&self, mut f: impl FnMut(Record)) -> usize {
        let mut rings = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        let mut n = 0;
        for rx in rings.iter_mut() {
            while let Ok(e) = rx.pop() {
                f(e);
                n += 1;
            }
        }
        // A ring whose stage is gone and that is empty has nothing more to
        // give (abandoned first: its last push is then visible, so one made
        // just after the loop above is kept for the next call). The last
        // ring stays even then (a stage about to be rebuilt).
        let last = rings.len().saturating_sub(1);
        let mut i = 0;
        rings.retain(|rx| {
            let keep = i == last || !rx.is_abandoned() || !rx.is_empty();
            i += 1;
            keep
        });
        n
    }
}

/// A stage's end of the journal (real-time side).
pub struct JournalWriter {
    tx: rtrb::Producer<Record>,
}

impl JournalWriter {
    /// Adds a decision; false (and `e` dropped) when the ring is full.
    /// Wait-free, no allocation.
    #[inline]
    pub fn push(&mut self, e: Entry) -> bool {
        self.tx.push(Record::Decision(e)).is_ok()
    }

    /// Adds an input the controller was handed; false (and `i` dropped)
    /// when the ring is full. Wait-free, no allocation.
    #[inline]
    pub fn push_input(&mut self, i: InputRecord) -> bool {
        self.tx.push(Record::Input(i)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at_ns: u64, reason: Reason) -> Entry {
        Entry {
            at_ns,
            reason,
            settings: Settings {
                tier: "good",
                bitrate: 24_000,
                frame_ms: 20,
                dred_ms: 1000,
                loss_hint: 15,
                lbrr: false,
                fec_ratio: 0,
                fec_block: 0,
                receiver_hold_frames: 3,
            },
            applied: true,
            live: true,
            codec_live: false,
            loss_pct: 14,
            run_max: 6,
            queue_ms: 0,
            recv_kbps: 30,
            sent_kbps: -1,
            rtt_ms: 41,
            path_loss_pct: -1,
            path_queue_ms: -1,
            path_kbps: -1,
        }
    }

    #[test]
    fn entries_come_out_in_order_across_a_rebuilt_stage() {
        let j = DecisionJournal::default();
        let mut w1 = j.writer();
        assert!(w1.push(entry(1, Reason::Startup)));
        assert!(w1.push(entry(2, Reason::RandomLoss)));
        drop(w1);
        let mut w2 = j.writer();
        assert!(w2.push(entry(3, Reason::BurstLoss)));
        let mut seen = Vec::new();
        assert_eq!(
            j.drain(|r| {
                let e = r.decision().unwrap();
                seen.push((e.at_ns, e.reason))
            }),
            3
        );
        assert_eq!(
            seen,
            [
                (1, Reason::Startup),
                (2, Reason::RandomLoss),
                (3, Reason::BurstLoss)
            ]
        );
        // The abandoned ring is gone; the live one still delivers.
        assert_eq!(j.rings.lock().unwrap().len(), 1);
        assert!(w2.push(entry(4, Reason::LossEased)));
        let mut later = Vec::new();
        assert_eq!(j.drain(|r| later.push(r.decision().unwrap().at_ns)), 1);
        assert_eq!(later, [4]);
        assert_eq!(j.drain(|_| {}), 0);
    }

    #[test]
    fn a_full_ring_refuses_and_keeps_what_it_holds() {
        let j = DecisionJournal::default();
        let mut w = j.writer();
        for i in 0..CAPACITY as u64 {
            assert!(w.push(entry(i, Reason::RandomLoss)));
        }
        assert!(!w.push(entry(9999, Reason::BurstLoss)));
        let mut last = None;
        assert_eq!(
            j.drain(|r| last = Some(r.decision().unwrap().at_ns)),
            CAPACITY
        );
        assert_eq!(last, Some(CAPACITY as u64 - 1));
    }

    #[test]
    fn a_line_says_the_reason_the_settings_the_report_and_the_time() {
        let e = entry(12_340_000_000, Reason::BurstLoss);
        let line = e.line();
        assert_eq!(
            line,
            "adapt: burst_loss -> tier=good bitrate=24000 frame_ms=20 dred_ms=1000 loss_hint=15 lbrr=off fec=0 hold=3 (worst loss 14 %, run 6, queue 0 ms, recv 30 kb/s, rtt 41 ms) at 12.34 s"
        );
        let start = entry(0, Reason::Startup);
        let unknown = Entry {
            path_loss_pct: 3,
            path_queue_ms: 12,
            path_kbps: 20,
            applied: false,
            ..Entry::unread(0, Reason::Startup, start.settings)
        };
        let line = unknown.line();
        assert!(
            line.contains("(worst loss ?, run ?, queue ?, recv ?, rtt ?; first hop: lost 3 %, queue 12 ms, through 20 kb/s)"),
            "{line}"
        );
        assert!(line.contains("[not applied: adapt=false]"), "{line}");
        let sent = Entry { sent_kbps: 33, ..e };
        assert!(
            sent.line().contains(", recv 30 of 33 kb/s, rtt 41 ms)"),
            "{}",
            sent.line()
        );
        let held = Entry {
            settings: Settings {
                tier: "poor",
                ..e.settings
            },
            ..e
        };
        assert!(
            held.line().contains("Codec2 is not live"),
            "{}",
            held.line()
        );
    }
}
