//! `audio.split`: copies one signal to N outputs.
//!
//! - Input `in`, outputs `out0` .. `out{N-1}`: `Pcm` at `rate`.
//! - Params: `outputs` (N, default 2, range 1..=64), `rate` (Hz, default 0
//!   = the graph rate).
//! - Latency: none.
//!
//! ```toml
//! [[stage]]
//! id = "tee"
//! kind = "audio.split"
//! params = { outputs = 2 }
//!
//! [[link]]
//! from = "tee.out1"
//! to = "monitor.in"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec};

/// Factory of `audio.split`.
pub struct Split;

struct SplitProc;

impl Processor for SplitProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        for o in 0..io.num_outputs() {
            let (x, y) = io.pcm_in_out(0, o);
            let n = x.len().min(y.len());
            y[..n].copy_from_slice(&x[..n]);
        }
        Flow::Continue
    }
}

impl StageFactory for Split {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.split",
            summary: "copies one signal to N outputs",
            inputs: vec![pcm_port("in", "the signal")],
            outputs: vec![pcm_port("out0..out{N-1}", "copies of the signal")],
            params: vec![
                ParamSpec::int("outputs", 2, "number of outputs N (1..=64)"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let n = p.int_in("outputs", 1, 64)? as usize;
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
            outputs: (0..n)
                .map(|i| PortDecl::new(format!("out{i}"), PortType::Pcm { rate }))
                .collect(),
            latency: Duration::ZERO,
            processor: Box::new(SplitProc),
        })
    }
}
