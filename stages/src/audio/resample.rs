//! `audio.resample`: converts a signal from one sample rate to another.
//!
//! - Input `in`: `Pcm` at `from`; output `out`: `Pcm` at `to`.
//! - Params: `from` and `to` (Hz, default 0 = the graph rate; at least one
//!   of them usually differs from it).
//! - Counters: `fifo_underruns` (an output quantum had to be padded with
//!   silence; should stay 0), `fifo_overruns` (samples discarded because
//!   the FIFO was full; should stay 0), `errors` (the resampler refused a
//!   quantum; should stay 0).
//! - Latency: the FIFO priming (the filter's look-ahead that rubato holds
//!   back, plus two samples), measured at build time: 1.5 ms for
//!   48 kHz -> 16 kHz, 4.2 ms for 16 kHz -> 48 kHz, 1.5 ms for
//!   44.1 kHz -> 48 kHz; `graph explain` shows the exact value.
//!
//! rubato's `SincFixedIn` (128-tap band-limited sinc, cubic interpolation
//! of a 256x oversampled table, Blackman-Harris window) takes exactly one
//! input quantum per cycle. Its output count per call varies by a sample
//! or two around one output quantum, and it holds back the filter's
//! look-ahead, so its output goes through a FIFO primed with just enough
//! silence (measured at build time by a dry run) that every cycle emits
//! exactly one output quantum. Everything is allocated at build time;
//! `process` calls the non-allocating `process_into_buffer`.
//!
//! Equal `from` and `to` make a plain copy with no latency.
//!
//! ```toml
//! [[stage]]
//! id = "down"
//! kind = "audio.resample"
//! params = { from = 48000, to = 16000 }
//! ```

use std::time::Duration;

use rubato::{Resampler, SincFixedIn};
use wzp_engine::prelude::*;

use super::{pcm_port, signal};

/// Factory of `audio.resample`.
pub struct Resample;

const SINC_LEN: usize = 128;

fn new_resampler(from: u32, to: u32, chunk: usize) -> Result<SincFixedIn<f32>, BuildError> {
    signal::sinc_resampler(from, to, chunk, SINC_LEN)
        .map_err(|e| BuildError::Other(format!("audio.resample: {e}")))
}

enum Mode {
    Copy,
    Convert(Box<Converter>),
}

struct Converter {
    resampler: SincFixedIn<f32>,
    /// One call's output (sized for the most rubato can give).
    scratch: Box<[f32]>,
    /// Resampled samples waiting to go out, oldest first.
    fifo: Box<[f32]>,
    fifo_len: usize,
    q_in: usize,
    q_out: usize,
    underruns: Counter,
    overruns: Counter,
    errors: Counter,
}

impl Converter {
    fn cycle(&mut self, x: &[f32], out: &mut [f32]) {
        if x.len() == self.q_in {
            let mut wave_out = [&mut self.scratch[..]];
            match self
                .resampler
                .process_into_buffer(&[x], &mut wave_out, None)
            {
                Ok((_, n)) => {
                    let room = self.fifo.len() - self.fifo_len;
                    let n_keep = n.min(room);
                    self.fifo[self.fifo_len..self.fifo_len + n_keep]
                        .copy_from_slice(&self.scratch[..n_keep]);
                    self.fifo_len += n_keep;
                    if n_keep < n {
                        self.overruns.add((n - n_keep) as u64);
                    }
                }
                Err(_) => self.errors.inc(),
            }
        } else {
            self.errors.inc();
        }
        let take = self.q_out.min(self.fifo_len).min(out.len());
        out[..take].copy_from_slice(&self.fifo[..take]);
        if take < self.q_out {
            self.underruns.inc();
        }
        self.fifo.copy_within(take..self.fifo_len, 0);
        self.fifo_len -= take;
    }
}

struct ResampleProc {
    mode: Mode,
}

impl Processor for ResampleProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (x, y) = io.pcm_in_out(0, 0);
        match &mut self.mode {
            Mode::Copy => {
                let n = x.len().min(y.len());
                y[..n].copy_from_slice(&x[..n]);
            }
            Mode::Convert(c) => c.cycle(x, y),
        }
        Flow::Continue
    }
}

/// Silence the FIFO needs up front so that, pushing one call's output and
/// then popping `q_out` every cycle, it never runs dry: found by running a
/// spare resampler over `cycles` quanta and taking the worst shortfall.
fn priming(from: u32, to: u32, q_in: usize, q_out: usize) -> Result<usize, BuildError> {
    let mut dry = new_resampler(from, to, q_in)?;
    let input = vec![0.0f32; q_in];
    let mut out = vec![0.0f32; dry.output_frames_max()];
    let (mut produced, mut worst) = (0i64, 0i64);
    // The output pattern repeats every few quanta for a fixed ratio; 64 quanta
    // cover the start-up and several periods.
    for k in 1..=64i64 {
        let (_, n) = dry
            .process_into_buffer(&[&input[..]], &mut [&mut out[..]], None)
            .map_err(|e| BuildError::Other(format!("audio.resample: dry run failed: {e}")))?;
        produced += n as i64;
        worst = worst.max(k * q_out as i64 - produced);
    }
    // A spare sample each way absorbs rounding in rubato's position counter.
    Ok(worst.max(0) as usize + 2)
}

impl StageFactory for Resample {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.resample",
            summary: "converts the sample rate (band-limited sinc, one quantum in, one out)",
            inputs: vec![pcm_port("in", "the signal at `from` Hz")],
            outputs: vec![pcm_port("out", "the signal at `to` Hz")],
            params: vec![
                ParamSpec::int("from", 0, "input rate in Hz; 0 = the graph rate"),
                ParamSpec::int("to", 0, "output rate in Hz; 0 = the graph rate"),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let from = super::rate_param(cx, p, "from")?;
        let to = super::rate_param(cx, p, "to")?;
        let q_in = cx.samples_at(from);
        let q_out = cx.samples_at(to);
        let underruns = cx.counter("fifo_underruns");
        let overruns = cx.counter("fifo_overruns");
        let errors = cx.counter("errors");
        let (mode, latency) = if from == to {
            (Mode::Copy, Duration::ZERO)
        } else {
            let prime = priming(from, to, q_in, q_out)?;
            let resampler = new_resampler(from, to, q_in)?;
            let scratch = vec![0.0f32; resampler.output_frames_max()].into_boxed_slice();
            // rubato's stream is time-aligned (it withholds output instead of
            // delaying it), so the latency is the priming plus the small
            // offset of its interpolation grid, both measured.
            let offset = signal::sinc_stream_offset(from, to, q_in, SINC_LEN)
                .map_err(|e| BuildError::Other(format!("audio.resample: {e}")))?;
            let delay = (prime as i64 + offset).max(0) as u64;
            // Room for the priming, one call's worst output and a quantum of slack.
            // The first `prime` samples are the priming silence.
            let fifo = vec![0.0f32; prime + scratch.len() + q_out].into_boxed_slice();
            let latency = Duration::from_nanos(delay * 1_000_000_000 / to as u64);
            (
                Mode::Convert(Box::new(Converter {
                    resampler,
                    scratch,
                    fifo,
                    fifo_len: prime,
                    q_in,
                    q_out,
                    underruns,
                    overruns,
                    errors,
                })),
                latency,
            )
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate: from })],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate: to })],
            latency,
            processor: Box::new(ResampleProc { mode }),
        })
    }
}
