//! Prints each decision of the call graph's quality controller (the
//! `quality.adapt` stage) as one line, with its reason and what it set:
//!
//! ```text
//! adapt: random_loss -> tier=good bitrate=24000 frame_ms=20 dred_ms=0 loss_hint=20 lbrr=on fec=0 (worst loss 19 %, run 2, queue 2 ms, recv 31 kb/s, rtt 41 ms; first hop: lost 0 %, queue 1 ms, through 33 kb/s)
//! ```
//!
//! (The first hop's part is there once the connection has published a
//! sample: `quality.adapt`'s `path_live`.)
//!
//! The stage counts and gauges every decision on the real-time side (where
//! nothing may print); this reads those figures from the control side.

use wzp_engine::stats::GraphStats;
use wzp_stages::quality::controller::{Reason, TIERS};

/// What was seen at the last sample.
#[derive(Debug, Default)]
pub struct AdaptLog {
    decisions: u64,
    by_reason: [u64; Reason::ALL.len()],
    /// A decision was counted at the last sample: print it at this one, so
    /// the gauges the stage sets in the same cycle are all in place.
    due: bool,
}

impl AdaptLog {
    /// The line to print for a new decision of the graph's (first)
    /// `quality.adapt` stage, if one was taken since the last call. Call it
    /// every few tens of ms.
    pub fn sample(&mut self, stats: &GraphStats) -> Option<String> {
        let st = stats.stages_of_kind("quality.adapt").next()?;
        let decisions = st.counter("decisions")?;
        if decisions != self.decisions {
            self.decisions = decisions;
            self.due = true;
            return None;
        }
        if !std::mem::take(&mut self.due) {
            return None;
        }
        let mut reasons = Vec::new();
        for (k, r) in Reason::ALL.iter().enumerate() {
            let n = st.counter(&format!("decisions_{}", r.name())).unwrap_or(0);
            if n != self.by_reason[k] {
                self.by_reason[k] = n;
                reasons.push(r.name());
            }
        }
        let g = |k: &str| st.gauge(k).unwrap_or(-1);
        let known = |v: i64, unit: &str| {
            if v < 0 {
                "?".to_string()
            } else {
                format!("{v} {unit}")
            }
        };
        let applied = if st.counter("applied").unwrap_or(0) == 0 {
            " [not applied: adapt=false]"
        } else {
            ""
        };
        let tier = usize::try_from(g("tier"))
            .ok()
            .and_then(|i| TIERS.get(i))
            .copied()
            .unwrap_or("?");
        // A Codec2 tier needs the adaptive encoder (`codec_live`); with the
        // Opus-only stage, adapt holds Opus at its most robust instead.
        let codec2_live = stats
            .stages_of_kind("codec.adaptive_encode")
            .next()
            .is_some();
        let held = if (tier == "poor" || tier == "catastrophic") && !codec2_live {
            " [Codec2 is not live: Opus holds the top rate with lbrr=on loss_hint=30]"
        } else {
            ""
        };
        // The first hop as the connection's own statistics see it (a
        // congestion step can come from there when no report gets back).
        let first_hop = if g("path_loss_pct") < 0 {
            String::new()
        } else {
            format!(
                "; first hop: lost {} %, queue {} ms, through {} kb/s",
                g("path_loss_pct"),
                g("path_queue_ms"),
                g("path_kbps")
            )
        };
        Some(format!(
            "adapt: {} -> tier={tier} bitrate={} frame_ms={} dred_ms={} loss_hint={} lbrr={} fec={} (worst loss {}, run {}, queue {}, recv {}, rtt {}{first_hop}){held}{applied}",
            if reasons.is_empty() {
                "decision".to_string()
            } else {
                reasons.join("+")
            },
            g("bitrate"),
            g("frame_ms"),
            g("dred_ms"),
            g("loss_hint"),
            if g("lbrr") > 0 { "on" } else { "off" },
            g("fec_ratio"),
            known(g("loss_pct"), "%"),
            if g("run_max") < 0 {
                "?".to_string()
            } else {
                g("run_max").to_string()
            },
            known(g("queue_ms"), "ms"),
            known(g("recv_kbps"), "kb/s"),
            known(g("rtt_ms"), "ms"),
        ))
    }
}
