//! `audio.tone_source`: a sine wave.
//!
//! - Output `out`: `Pcm` at `rate`.
//! - Params: `freq` (Hz, default 440, up to half the rate), `level_db`
//!   (peak amplitude in dBFS, default -12, range -120..=0; a -12 dBFS sine
//!   reads -15.01 dBFS RMS), `rate` (Hz, default 0 = the graph rate),
//!   `duration` (default `"0s"` = forever; after it the stage says
//!   `Finished`, the last quantum padded with silence).
//! - Latency: none.
//!
//! The phase runs on across quanta (kept in f64, so hours of tone do not
//! drift or click).
//!
//! ```toml
//! [[stage]]
//! id = "tone"
//! kind = "audio.tone_source"
//! params = { freq = 1000, level_db = -20, duration = "5s" }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal::db_to_gain};

/// Factory of `audio.tone_source`.
pub struct ToneSource;

struct ToneProc {
    /// Position in the cycle, 0..1.
    phase: f64,
    step: f64,
    amplitude: f64,
    /// Samples still to play; `None` forever.
    left: Option<u64>,
}

impl Processor for ToneProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if self.left == Some(0) {
            return Flow::Finished;
        }
        let out = io.pcm_out(0);
        let n = match self.left {
            Some(l) => out.len().min(l.try_into().unwrap_or(usize::MAX)),
            None => out.len(),
        };
        for s in &mut out[..n] {
            *s = (self.amplitude * (std::f64::consts::TAU * self.phase).sin()) as f32;
            self.phase += self.step;
            if self.phase >= 1.0 {
                self.phase -= 1.0;
            }
        }
        if let Some(l) = self.left.as_mut() {
            *l -= n as u64;
        }
        Flow::Continue
    }
}

impl StageFactory for ToneSource {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.tone_source",
            summary: "a sine wave at a given frequency and level",
            inputs: vec![],
            outputs: vec![pcm_port("out", "the tone")],
            params: vec![
                ParamSpec::float("freq", 440.0, "frequency in Hz (1..=rate/2)"),
                ParamSpec::float("level_db", -12.0, "peak amplitude in dBFS (-120..=0)"),
                rate_spec(),
                ParamSpec::duration(
                    "duration",
                    Duration::ZERO,
                    "how long to play; \"0s\" = forever",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let freq = p.float_in("freq", 1.0, rate as f64 / 2.0)?;
        let level = p.float_in("level_db", -120.0, 0.0)?;
        let duration = p.duration("duration")?;
        let left =
            (!duration.is_zero()).then(|| (duration.as_secs_f64() * rate as f64).round() as u64);
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(ToneProc {
                phase: 0.0,
                step: freq / rate as f64,
                amplitude: db_to_gain(level) as f64,
                left,
            }),
        })
    }
}
