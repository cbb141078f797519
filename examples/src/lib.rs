//! A stage defined outside `wzp-stages`, registered next to the shipped
//! ones: this is how an application adds its own processing to wzp graphs.
//!
//! `demo.tremolo` multiplies its input by a slow sine (an amplitude wobble).
//!
//! ```toml
//! [[stage]]
//! id = "wobble"
//! kind = "demo.tremolo"
//! params = { rate_hz = 5.0, depth = 0.5 }
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

/// The factory: describes the kind and builds processors.
pub struct Tremolo;

struct TremoloProc {
    phase: f32,
    step: f32,
    depth: f32,
    quanta: Counter,
}

impl Processor for TremoloProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (input, output) = io.pcm_in_out(0, 0);
        for (o, i) in output.iter_mut().zip(input) {
            let lfo = 1.0 - self.depth * 0.5 * (1.0 - self.phase.sin());
            *o = i * lfo;
            self.phase += self.step;
            if self.phase > std::f32::consts::TAU {
                self.phase -= std::f32::consts::TAU;
            }
        }
        self.quanta.inc();
        Flow::Continue
    }
}

impl StageFactory for Tremolo {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "demo.tremolo",
            summary: "amplitude wobble (an example of a stage defined outside wzp-stages)",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Pcm@rate",
                doc: "audio",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Pcm@rate",
                doc: "audio, wobbling",
            }],
            params: vec![
                ParamSpec::float("rate_hz", 5.0, "wobble frequency, 0.1..=20 Hz"),
                ParamSpec::float("depth", 0.5, "0 = none, 1 = down to silence"),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate_hz = p.float_in("rate_hz", 0.1, 20.0)? as f32;
        let depth = p.float_in("depth", 0.0, 1.0)? as f32;
        let ty = PortType::Pcm { rate: cx.rate };
        Ok(Built {
            inputs: vec![PortDecl::new("in", ty)],
            outputs: vec![PortDecl::new("out", ty)],
            latency: Duration::ZERO,
            processor: Box::new(TremoloProc {
                phase: 0.0,
                step: std::f32::consts::TAU * rate_hz / cx.rate as f32,
                depth,
                quanta: cx.counter("quanta"),
            }),
        })
    }
}

/// The shipped stages plus `demo.tremolo`.
pub fn registry() -> Registry {
    let mut r = wzp_stages::registry();
    r.register(Tremolo)
        .expect("demo.tremolo is not a shipped kind");
    r
}

/// A graph using the custom stage: tone -> tremolo -> null sink.
pub const TREMOLO_GRAPH: &str = r#"
[graph]
name = "tremolo"
clock = { driver = "fast", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "tone"
kind = "audio.tone_source"
params = { freq = 440.0, duration = "2s" }

[[stage]]
id = "wobble"
kind = "demo.tremolo"
params = { rate_hz = 4.0, depth = 0.8 }

[[stage]]
id = "sink"
kind = "audio.null_sink"

[[link]]
from = "tone.out"
to = "wobble.in"

[[link]]
from = "wobble.out"
to = "sink.in"
"#;
