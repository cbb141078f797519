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
params = { pattern = "${pattern}", level_db = "${level}" }

[[stage]]
id = "speaker"
kind = "audio.device_playout"
params = { device = "${device}", rate = 48000 }

[[link]]
from = "ring.out"
to = "speaker.in"
"#;

/// A ring tone playing; it stops when dropped.
///
/// The tone's graph is built and run on a thread of its own: opening an
/// audio device can take a while (a busy sound server), and the signalling
/// that rings must not wait for it. Dropping the handle stops the graph
/// and waits for it, so the device is closed when the drop returns.
pub struct RingTone {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The ring tone's default peak level, dBFS.
pub const DEFAULT_RING_LEVEL: f64 = -16.0;

/// The ring graph's spec: `pattern` at `level_db` on `device`.
fn ring_spec(device: &str, pattern: &str, level_db: f64) -> Result<GraphSpec> {
    let mut vars = BTreeMap::new();
    vars.insert("pattern".to_string(), pattern.to_string());
    vars.insert("device".to_string(), device.to_string());
    vars.insert("level".to_string(), level_db.to_string());
    GraphSpec::parse(RING_GRAPH, "ring tone (built in)", &vars).map_err(|e| anyhow!("{e}"))
}

/// The ring graph for `pattern` at `level_db` on the speaker `output`
/// names, running; `Ok(None)` when `output` is no speaker.
fn ring_graph(output: &str, pattern: &str, level_db: f64) -> Result<Option<Graph>> {
    let Some(device) = speaker(output) else {
        return Ok(None);
    };
    let spec = ring_spec(device, pattern, level_db)?;
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
    Ok(Some(graph))
}

/// Cadences `graph` began.
fn rings(graph: &Graph) -> u64 {
    graph
        .stats()
        .stages_of_kind("audio.ring_source")
        .filter_map(|s| s.counter("rings"))
        .sum()
}

impl RingTone {
    /// Starts `pattern` ([`RING`] or [`RINGBACK`]) on the speaker `output`
    /// names, until dropped; `None` when `output` is no speaker. A speaker
    /// that cannot play it is said on stderr (the call goes on without a
    /// ring tone).
    pub fn start(output: &str, pattern: &str, level_db: f64) -> Option<RingTone> {
        speaker(output)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (output, pattern) = (output.to_string(), pattern.to_string());
        let thread = std::thread::Builder::new()
            .name("wzp-ring".into())
            .spawn(move || match ring_graph(&output, &pattern, level_db) {
                Ok(Some(mut graph)) => {
                    // Until the handle is dropped (its sender with it).
                    let _ = stopped.recv();
                    let rings = rings(&graph);
                    graph.stop();
                    tracing::info!(rings, "ring tone stopped");
                }
                Ok(None) => {}
                Err(e) => eprintln!("warning: no ring tone on {output}: {e:#}"),
            })
            .map_err(|e| eprintln!("warning: no ring tone: {e}"))
            .ok()?;
        Some(RingTone {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for RingTone {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_speaker_rings() {
        for output in ["null", "out.wav", "speakers.wav", ""] {
            assert!(
                RingTone::start(output, RING, DEFAULT_RING_LEVEL).is_none(),
                "{output}"
            );
            assert!(
                ring_graph(output, RING, DEFAULT_RING_LEVEL)
                    .unwrap()
                    .is_none(),
                "{output}"
            );
        }
    }

    #[test]
    fn a_speaker_that_cannot_open_says_why() {
        let e = match ring_graph("speaker:no-such-device-here", RING, DEFAULT_RING_LEVEL) {
            Err(e) => format!("{e:#}"),
            Ok(_) => panic!("a missing device rang"),
        };
        assert!(e.contains("no-such-device-here"), "{e}");
        // The handle of a tone that could not start stops at once.
        drop(RingTone::start(
            "speaker:no-such-device-here",
            RING,
            DEFAULT_RING_LEVEL,
        ));
    }

    #[test]
    fn the_ring_graph_builds_for_both_patterns_at_the_level_asked() {
        for (pattern, level) in [(RING, DEFAULT_RING_LEVEL), (RINGBACK, -30.5)] {
            let spec = ring_spec("default", pattern, level).unwrap();
            assert_eq!(spec.stages.len(), 2);
            let ring = spec.stages.iter().find(|s| s.id == "ring").unwrap();
            assert_eq!(
                ring.params["level_db"].value.as_str(),
                Some(level.to_string().as_str())
            );
            // The ring source takes it: the stage builds with a null sink.
            let mut spec = spec;
            let sink = spec.stages.iter_mut().find(|s| s.id == "speaker").unwrap();
            sink.kind = "audio.null_sink".into();
            sink.params.remove("device");
            wzp_engine::compile::compile_dry_run(&spec, &wzp_stages::registry(), &Resources::new())
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
