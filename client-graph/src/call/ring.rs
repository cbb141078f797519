//! The ring a callee's speaker plays while `listen` rings, and the
//! ringback a caller's plays while the far end rings: a small graph
//! (`audio.ring_source` -> `audio.device_playout`) on the speaker the call
//! will use, stopped (and the device closed) before the call's own graph
//! opens it.
//!
//! Only a speaker rings (`--output speaker` or `speaker:NAME`): a WAV file
//! or `null` output is a recording or a test, where a ring tone would only
//! be in the way.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::prelude::*;
use wzp_engine::spec::GraphSpec;

use super::graph::speaker;

/// What a callee's speaker plays.
pub const RING: &str = "ring";
/// What a caller's speaker plays while the far end rings.
pub const RINGBACK: &str = "ringback";

const RING_GRAPH: &str = r#"
[graph]
name = "ring"
description = "a ring tone on the speaker"
clock = { driver = "timer", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "ring"
kind = "audio.ring_source"
params = { pattern = "${pattern}", level_db = -16 }

[[stage]]
id = "speaker"
kind = "audio.device_playout"
params = { device = "${device}", rate = 48000 }

[[link]]
from = "ring.out"
to = "speaker.in"
"#;

/// A ring tone playing; it stops when dropped.
pub struct RingTone {
    graph: Graph,
}

impl RingTone {
    /// Starts `pattern` ([`RING`] or [`RINGBACK`]) on the speaker `output`
    /// names; `Ok(None)` when `output` is no speaker.
    pub fn start(output: &str, pattern: &str) -> Result<Option<RingTone>> {
        let Some(device) = speaker(output) else {
            return Ok(None);
        };
        let mut vars = BTreeMap::new();
        vars.insert("pattern".to_string(), pattern.to_string());
        vars.insert("device".to_string(), device.to_string());
        let spec = GraphSpec::parse(RING_GRAPH, "ring tone (built in)", &vars)
            .map_err(|e| anyhow!("{e}"))?;
        let compiled = compile_with(
            &spec,
            &wzp_stages::registry(),
            &Resources::new(),
            &Existing::default(),
            Wakers::default(),
        )
        .map_err(|e| anyhow!("{e}"))?;
        let mut graph = Graph::new(compiled);
        graph
            .start(RunOptions {
                driver: ClockDriver::Timer,
                realtime: false,
                ..Default::default()
            })
            .map_err(|e| anyhow!("{e}"))?;
        Ok(Some(RingTone { graph }))
    }

    /// [`RingTone::start`], saying on stderr why not when the speaker
    /// cannot play it (the call goes on without a ring tone).
    pub fn start_or_warn(output: &str, pattern: &str) -> Option<RingTone> {
        match RingTone::start(output, pattern) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("warning: no ring tone on {output}: {e:#}");
                None
            }
        }
    }

    /// Cadences begun so far.
    pub fn rings(&self) -> u64 {
        self.graph
            .stats()
            .stages_of_kind("audio.ring_source")
            .filter_map(|s| s.counter("rings"))
            .sum()
    }
}

impl Drop for RingTone {
    fn drop(&mut self) {
        let rings = self.rings();
        self.graph.stop();
        tracing::info!(rings, "ring tone stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_speaker_rings() {
        for output in ["null", "out.wav", "speakers.wav", ""] {
            assert!(RingTone::start(output, RING).unwrap().is_none(), "{output}");
        }
    }

    #[test]
    fn a_speaker_that_cannot_open_says_why() {
        let e = match RingTone::start("speaker:no-such-device-here", RING) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("a missing device rang"),
        };
        assert!(e.contains("no-such-device-here"), "{e}");
    }

    #[test]
    fn the_ring_graph_builds_for_both_patterns() {
        for pattern in [RING, RINGBACK] {
            let mut vars = BTreeMap::new();
            vars.insert("pattern".to_string(), pattern.to_string());
            vars.insert("device".to_string(), "default".to_string());
            let spec = GraphSpec::parse(RING_GRAPH, "ring", &vars).unwrap();
            assert_eq!(spec.stages.len(), 2);
        }
    }
}
