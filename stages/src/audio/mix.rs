//! `audio.mix`: sums N signals.
//!
//! - Inputs `in0` .. `in{N-1}` (all optional; an unlinked input is silence),
//!   output `out`: `Pcm` at `rate`.
//! - Params: `inputs` (N, default 2, range 1..=64), `rate` (Hz, default 0 =
//!   the graph rate).
//! - Counter `clipped_samples`: output samples that had to be clamped.
//! - Latency: none.
//!
//! The sum is **hard-clamped** to -1..=1. A soft clipper would bend every
//! loud peak even when nothing overloads, which colours the level and
//! correlation checks the tests rely on; a clamp is transparent until the
//! sum really overloads, and the counter says when that happens.
//!
//! ```toml
//! [[stage]]
//! id = "mix"
//! kind = "audio.mix"
//! params = { inputs = 3 }
//!
//! [[link]]
//! from = "voice.out"
//! to = "mix.in0"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec};

/// Factory of `audio.mix`.
pub struct Mix;

struct MixProc {
    clipped: Counter,
}

impl Processor for MixProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        for i in 0..io.num_inputs() {
            let (x, y) = io.pcm_in_out(i, 0);
            for (y, x) in y.iter_mut().zip(x) {
                *y += x;
            }
        }
        let mut clipped = 0u64;
        for y in io.pcm_out(0) {
            // NaN fails both comparisons and stays NaN; map it to silence so
            // one bad input cannot poison everything downstream.
            if *y > 1.0 {
                *y = 1.0;
                clipped += 1;
            } else if *y < -1.0 {
                *y = -1.0;
                clipped += 1;
            } else if y.is_nan() {
                *y = 0.0;
                clipped += 1;
            }
        }
        if clipped > 0 {
            self.clipped.add(clipped);
        }
        Flow::Continue
    }
}

impl StageFactory for Mix {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.mix",
            summary: "sums N signals, clamped to -1..=1",
            inputs: vec![pcm_port(
                "in0..in{N-1}",
                "signals to sum (optional: unlinked inputs are silence)",
            )],
            outputs: vec![pcm_port("out", "the clamped sum")],
            params: vec![
                ParamSpec::int("inputs", 2, "number of inputs N (1..=64)"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let n = p.int_in("inputs", 1, 64)? as usize;
        Ok(Built {
            inputs: (0..n)
                .map(|i| PortDecl::optional(format!("in{i}"), PortType::Pcm { rate }))
                .collect(),
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(MixProc {
                clipped: cx.counter("clipped_samples"),
            }),
        })
    }
}
