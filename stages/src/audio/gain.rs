//! `audio.gain`: multiplies the signal by a fixed gain.
//!
//! - Input `in`, output `out`: `Pcm` at `rate`.
//! - Params: `gain_db` (default 0, range -96..=24), `rate` (Hz, default 0 =
//!   the graph rate).
//! - Latency: none.
//!
//! The gain is fixed for the life of the stage, so there is nothing to
//! smooth; a change of gain comes with a rebuilt stage. The output is not
//! clipped (a later `audio.mix` or the sink decides).
//!
//! ```toml
//! [[stage]]
//! id = "quieter"
//! kind = "audio.gain"
//! params = { gain_db = -6 }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal::db_to_gain};

/// Factory of `audio.gain`.
pub struct Gain;

struct GainProc {
    gain: f32,
}

impl Processor for GainProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (x, y) = io.pcm_in_out(0, 0);
        for (y, x) in y.iter_mut().zip(x) {
            *y = x * self.gain;
        }
        Flow::Continue
    }
}

impl StageFactory for Gain {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.gain",
            summary: "multiplies the signal by a fixed gain in dB",
            inputs: vec![pcm_port("in", "the signal")],
            outputs: vec![pcm_port("out", "the signal times the gain")],
            params: vec![
                ParamSpec::float("gain_db", 0.0, "gain in dB (-96..=24)"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let gain_db = p.float_in("gain_db", -96.0, 24.0)?;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(GainProc {
                gain: db_to_gain(gain_db),
            }),
        })
    }
}
