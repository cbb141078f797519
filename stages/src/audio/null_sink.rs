//! `audio.null_sink`: discards its input, measuring it on the way.
//!
//! - Input `in`: `Pcm` at `rate`.
//! - Params: `rate` (Hz, default 0 = the graph rate).
//! - Counter `samples`: samples received.
//! - Gauge `level_dbfs_x100`: RMS level of the last second in hundredths of
//!   a dBFS (-1501 for a -12 dBFS sine; -12000 for silence).
//! - Latency: none.
//!
//! ```toml
//! [[stage]]
//! id = "sink"
//! kind = "audio.null_sink"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal::mean_square_dbfs};

/// Factory of `audio.null_sink`.
pub struct NullSink;

struct NullSinkProc {
    /// Sum of squares of each of the last quanta (about one second's worth).
    window: Box<[f64]>,
    next: usize,
    /// Quanta seen, saturating at the window length.
    filled: usize,
    quantum: usize,
    samples: Counter,
    level: Gauge,
}

impl Processor for NullSinkProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let x = io.pcm_in(0);
        self.samples.add(x.len() as u64);
        let energy: f64 = x
            .iter()
            .map(|&s| s as f64 * s as f64)
            .filter(|e| e.is_finite())
            .sum();
        self.window[self.next] = energy;
        self.next = (self.next + 1) % self.window.len();
        self.filled = (self.filled + 1).min(self.window.len());
        // Summing the window afresh each quantum (about 50 values) avoids the
        // drift a running sum would pick up.
        let total: f64 = self.window.iter().sum();
        let count = (self.filled * self.quantum) as f64;
        let db = mean_square_dbfs(total / count);
        self.level.set((db as f64 * 100.0).round() as i64);
        Flow::Continue
    }
}

impl StageFactory for NullSink {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.null_sink",
            summary: "discards its input; counts samples and reports the level of the last second",
            inputs: vec![pcm_port("in", "the signal to discard")],
            outputs: vec![],
            params: vec![rate_spec()],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let quantum = cx.samples_at(rate).max(1);
        let quanta_per_second = (rate as usize).div_ceil(quantum).max(1);
        let level = cx.gauge("level_dbfs_x100");
        level.set((super::signal::SILENCE_DBFS as f64 * 100.0) as i64);
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(NullSinkProc {
                window: vec![0.0; quanta_per_second].into_boxed_slice(),
                next: 0,
                filled: 0,
                quantum,
                samples: cx.counter("samples"),
                level,
            }),
        })
    }
}
