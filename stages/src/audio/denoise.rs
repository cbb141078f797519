//! `audio.denoise`: takes the steady sound of the room (a fan, an air
//! conditioner, a computer, a street) out of the microphone and leaves the
//! voice.
//!
//! - Input `in`, output `out`: `Pcm` at `rate`.
//! - Params: `enabled` (default true; false passes `in` through untouched,
//!   no latency), `depth` (dB, default 15, range 3..=40: the most a bin of
//!   noise is turned down; what is left of the noise stays as it was, only
//!   quieter), `rate` (Hz, default 0 = the graph rate).
//! - Gauges: `noise_dbfs` (x10: the steady noise it hears), `removed_db`
//!   (x10: how much quieter the output is than the input, over about a
//!   second; in a pause, the noise taken out). Counter `denoise_resets`.
//! - Latency: 5 ms (10 ms at a rate that is not a multiple of 200 Hz, such
//!   as 44.1 kHz); the quantum must be a whole number of them.
//!
//! The suppressor (module [`super::ns`]) estimates each frequency bin's
//! noise as the minimum of its smoothed power over the last ~3 s (a voice
//! pauses within that, a fan does not) and applies a decision-directed
//! Wiener gain. Measured in docs/DESIGN.md, decision 18. Digital silence
//! (a muted microphone) passes untouched.
//!
//! ```toml
//! [[stage]]
//! id = "ns"
//! kind = "audio.denoise"
//! params = { depth = 15 }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::ns::NoiseSuppressor;
use super::{pcm_port, rate_param, rate_spec};

const KIND: &str = "audio.denoise";

/// Factory of `audio.denoise`.
pub struct Denoise;

struct DenoiseProc {
    ns: Option<NoiseSuppressor>,
    resets_seen: u64,
    resets: Counter,
    noise: Gauge,
    removed: Gauge,
}

impl Processor for DenoiseProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, out) = io.pcm_in_out(0, 0);
        let Some(ns) = self.ns.as_mut() else {
            out.copy_from_slice(input);
            return Flow::Continue;
        };
        // Averages decaying through quiet would reach subnormal floats.
        let _ftz = crate::codec::denormals::FlushDenormals::new();
        ns.process(input, out);
        let r = ns.stats().resets;
        if r > self.resets_seen {
            self.resets.add(r - self.resets_seen);
            self.resets_seen = r;
        }
        self.noise.set((ns.noise_dbfs() * 10.0).round() as i64);
        self.removed.set((ns.removed_db() * 10.0).round() as i64);
        Flow::Continue
    }
}

impl StageFactory for Denoise {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "takes the room's steady noise (fan, hum, street) out of the microphone, keeps the voice",
            inputs: vec![pcm_port("in", "the microphone")],
            outputs: vec![pcm_port("out", "the microphone with the noise turned down")],
            params: vec![
                ParamSpec::bool(
                    "enabled",
                    true,
                    "false passes the input through untouched (no latency)",
                ),
                ParamSpec::float(
                    "depth",
                    15.0,
                    "the most the noise is turned down, dB (3..=40)",
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
        let depth = p.float_in("depth", 3.0, 40.0)?;
        let hop = if rate % 200 == 0 {
            rate as usize / 200
        } else if rate % 100 == 0 {
            rate as usize / 100
        } else {
            return Err(ParamError::new(
                "rate",
                format!("{rate} Hz: the suppressor works in 5 or 10 ms frames and needs a rate that is a multiple of 100 Hz"),
            )
            .into());
        };
        let quantum = cx.samples_at(rate);
        if quantum % hop != 0 {
            return Err(BuildError::Other(format!(
                "{KIND} works in frames of {hop} samples at {rate} Hz; the graph's quantum ({quantum} samples) is not a whole number of them"
            )));
        }
        let latency = if enabled {
            Duration::from_nanos(hop as u64 * 1_000_000_000 / rate as u64)
        } else {
            Duration::ZERO
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency,
            processor: Box::new(DenoiseProc {
                ns: enabled.then(|| NoiseSuppressor::new(rate, hop, depth as f32)),
                resets_seen: 0,
                resets: cx.counter("denoise_resets"),
                noise: cx.gauge("noise_dbfs"),
                removed: cx.gauge("removed_db"),
            }),
        })
    }
}
