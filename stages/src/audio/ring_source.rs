//! `audio.ring_source`: the sound of a phone ringing, or of a call ringing
//! at the far end.
//!
//! - Output `out`: `Pcm` at `rate`.
//! - Params: `pattern` (`"ring"`, the default: a double ring of 400 + 450
//!   Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off, what a callee's speaker
//!   plays; `"ringback"`: 440 + 480 Hz, 2 s on, 4 s off, what a caller hears
//!   while the far end rings), `level_db` (peak of the two tones together in
//!   dBFS, default -16, range -60..=0), `rate` (Hz, default 0 = the graph
//!   rate).
//! - Counter `rings`: cadences begun.
//! - Latency: none.
//!
//! Each burst fades in and out over 10 ms (a raised cosine), so it starts
//! and stops without a click; the cadence starts with a burst.
//!
//! ```toml
//! [[stage]]
//! id = "ring"
//! kind = "audio.ring_source"
//! params = { pattern = "ringback", level_db = -18 }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal::db_to_gain};

/// Factory of `audio.ring_source`.
pub struct RingSource;

/// One ring pattern: two tones and the on/off times of one cadence.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// The two tones, Hz.
    pub freqs: [f64; 2],
    /// Bursts, as (start, end) seconds within the period.
    pub bursts: &'static [(f64, f64)],
    /// The period, seconds.
    pub period: f64,
}

/// What a callee's speaker plays: a double ring.
pub const RING: Cadence = Cadence {
    freqs: [400.0, 450.0],
    bursts: &[(0.0, 0.4), (0.6, 1.0)],
    period: 3.0,
};

/// What a caller hears while the far end rings.
pub const RINGBACK: Cadence = Cadence {
    freqs: [440.0, 480.0],
    bursts: &[(0.0, 2.0)],
    period: 6.0,
};

/// Edge fade, seconds.
const FADE: f64 = 0.010;

impl Cadence {
    /// The pattern named `name`.
    pub fn by_name(name: &str) -> Option<Cadence> {
        match name {
            "ring" => Some(RING),
            "ringback" => Some(RINGBACK),
            _ => None,
        }
    }

    /// The envelope (0..=1) at `t` seconds into a period.
    pub fn envelope(&self, t: f64) -> f64 {
        for &(a, b) in self.bursts {
            if t >= a && t < b {
                let edge = (t - a).min(b - t);
                return if edge >= FADE {
                    1.0
                } else {
                    0.5 - 0.5 * (std::f64::consts::PI * edge / FADE).cos()
                };
            }
        }
        0.0
    }
}

struct RingProc {
    cadence: Cadence,
    rate: f64,
    /// Samples since the start.
    n: u64,
    /// Samples per period.
    period: u64,
    amplitude: f64,
    rings: Counter,
}

impl Processor for RingProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let out = io.pcm_out(0);
        for s in out.iter_mut() {
            let k = self.n % self.period;
            if k == 0 {
                self.rings.inc();
            }
            let t = k as f64 / self.rate;
            let env = self.cadence.envelope(t);
            *s = if env > 0.0 {
                let [f1, f2] = self.cadence.freqs;
                let w = std::f64::consts::TAU * t;
                (self.amplitude * env * 0.5 * ((w * f1).sin() + (w * f2).sin())) as f32
            } else {
                0.0
            };
            self.n += 1;
        }
        Flow::Continue
    }
}

impl StageFactory for RingSource {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.ring_source",
            summary: "a phone's ring, or the ringback a caller hears",
            inputs: vec![],
            outputs: vec![pcm_port("out", "the ring")],
            params: vec![
                ParamSpec::str(
                    "pattern",
                    "ring",
                    "\"ring\" (a callee's) or \"ringback\" (a caller's)",
                ),
                ParamSpec::float("level_db", -16.0, "peak level in dBFS (-60..=0)"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let name = p.str("pattern")?;
        let cadence = Cadence::by_name(name).ok_or_else(|| {
            ParamError::new(
                "pattern",
                format!("is {name:?}; use \"ring\" or \"ringback\""),
            )
        })?;
        let level = p.float_in("level_db", -60.0, 0.0)?;
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(RingProc {
                cadence,
                rate: rate as f64,
                n: 0,
                period: (cadence.period * rate as f64).round() as u64,
                amplitude: db_to_gain(level) as f64,
                rings: cx.counter("rings"),
            }),
        })
    }
}
