//! `audio.agc`: automatic gain control for the microphone: a voice comes
//! out at one level whatever the microphone and however far the talker
//! sits, and never clips.
//!
//! - Inputs `in` (the microphone) and `ref` (optional: what the speaker
//!   plays, the far end; while it talks and for 300 ms after, the
//!   microphone is not read as the voice, so an echo not yet cancelled
//!   never sets the gain), output `out`: `Pcm` at `rate`.
//! - Params: `enabled` (default true; false passes `in` through untouched),
//!   `target_dbfs` (default -20, range -40..=-6: the speech level aimed at,
//!   RMS over speech), `max_boost_db` (default 30, range 0..=40: the most a
//!   quiet voice is raised), `rate` (Hz, default 0 = the graph rate; at
//!   least 100 Hz).
//! - Gauges: `gain_db` (x10: the gain now), `level_dbfs` (x10: the voice's
//!   level as read; -1000 before any speech). Counters `limited` (10 ms
//!   blocks the limiter took down to -1 dBFS), `clipped` (samples still
//!   over full scale after it: none by construction), `far_held` (blocks
//!   not read as the voice for the far end talking).
//! - Latency: none.
//!
//! The core (module [`super::agc`]) reads the speech level from 10 ms
//! blocks that stand over the room's floor, moves the gain toward the
//! target (up a few dB a second, down fast), and limits the peaks. Pauses
//! and the room alone move nothing, so noise is never pumped up between
//! words. Measured in docs/DESIGN.md, decision 22.
//!
//! ```toml
//! [[stage]]
//! id = "agc"
//! kind = "audio.agc"
//! params = { target_dbfs = -20 }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::agc::{AgcConfig, AutoGain};
use super::{pcm_port, rate_param, rate_spec};

const KIND: &str = "audio.agc";

/// Factory of `audio.agc`.
pub struct Agc;

struct AgcProc {
    agc: Option<AutoGain>,
    seen: (u64, u64, u64),
    limited: Counter,
    clipped: Counter,
    far_held: Counter,
    gain: Gauge,
    level: Gauge,
}

impl Processor for AgcProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, far, out) = io.pcm_in2_out(0, 1, 0);
        let Some(agc) = self.agc.as_mut() else {
            out.copy_from_slice(input);
            return Flow::Continue;
        };
        agc.process_with_far(input, Some(far), out);
        let s = agc.stats();
        self.limited.add(s.limited - self.seen.0);
        self.clipped.add(s.clipped - self.seen.1);
        self.far_held.add(s.far_held - self.seen.2);
        self.seen = (s.limited, s.clipped, s.far_held);
        self.gain.set((agc.gain_db() * 10.0).round() as i64);
        self.level.set(
            agc.level_dbfs()
                .map_or(-1000, |l| (l * 10.0).round() as i64),
        );
        Flow::Continue
    }
}

impl StageFactory for Agc {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "automatic gain control: the voice at one level, whatever the microphone, never clipping",
            inputs: vec![
                pcm_port("in", "the microphone"),
                pcm_port("ref", "optional: what the speaker plays (the far end)"),
            ],
            outputs: vec![pcm_port("out", "the voice at the target level, limited to -1 dBFS")],
            params: vec![
                ParamSpec::bool(
                    "enabled",
                    true,
                    "false passes the input through untouched",
                ),
                ParamSpec::float(
                    "target_dbfs",
                    -20.0,
                    "the speech level aimed at, dBFS RMS over speech (-40..=-6)",
                ),
                ParamSpec::float(
                    "max_boost_db",
                    30.0,
                    "the most a quiet voice is raised, dB (0..=40)",
                ),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let enabled = p.bool("enabled")?;
        let target = p.float_in("target_dbfs", -40.0, -6.0)? as f32;
        let boost = p.float_in("max_boost_db", 0.0, 40.0)? as f32;
        let cfg = AgcConfig {
            target_dbfs: target,
            max_boost_db: boost,
            ..AgcConfig::default()
        };
        Ok(Built {
            inputs: vec![
                PortDecl::new("in", PortType::Pcm { rate }),
                PortDecl::optional("ref", PortType::Pcm { rate }),
            ],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(AgcProc {
                agc: enabled.then(|| AutoGain::new(rate, cfg)),
                seen: (0, 0, 0),
                limited: cx.counter("limited"),
                clipped: cx.counter("clipped"),
                far_held: cx.counter("far_held"),
                gain: cx.gauge("gain_db"),
                level: cx.gauge("level_dbfs"),
            }),
        })
    }
}
