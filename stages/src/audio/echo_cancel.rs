//! `audio.echo_cancel`: takes the echo of the far end out of the
//! microphone, for calls on a speaker rather than a headset.
//!
//! - Inputs `mic` (the microphone) and `ref` (what goes to the speaker, the
//!   far end's voices: link the same output that feeds the playout), output
//!   `out` (the microphone without the echo): `Pcm` at `rate`.
//! - Params: `enabled` (default true; false passes `mic` through
//!   untouched), `tail` (default `"250ms"`, range 20ms..=1s: how late the
//!   echo may still come after `ref`, the playout's and capture's buffering
//!   plus the room's reverberation), `rate` (Hz, default 0 = the graph
//!   rate).
//! - Gauges: `echo_found` (1 while the microphone is found to hear the
//!   speaker: measured while the far end talks, held through its
//!   silences), `echo_delay_ms` (how late the echo comes after `ref`, where
//!   it correlates most: the direct path or an early reflection; -1 while
//!   none is found), `echo_correlation` (x1000: the correlation peak
//!   between microphone and reference, over 200 the echo counts as found),
//!   `echo_coherence` (x1000: how much of the microphone the reference at
//!   that delay explains, read while the echo is looked for; 300 or more
//!   with the peak standing still finds it: a headset call whose voices
//!   are alike reads a peak and little coherence),
//!   `erle_db` (x10: how much quieter the output is than the microphone
//!   while the far end talks). Counters: `filter_adopted` (the echo path
//!   learnt was taken into use), `filter_reverted` (what was learnt while
//!   both ends talked was thrown away), `filter_resets`.
//! - `suppress` (default true): after the linear canceller, a residual
//!   echo suppressor (module [`super::res`]) takes out bin by bin the echo
//!   the filter left: while it is still learning the path (the first
//!   seconds of a call), what a distorting speaker adds, reverberation past
//!   the tail. It costs 5 ms of latency; false leaves the canceller alone
//!   (no latency). Gauge `suppress_db` (x10: how much quieter the
//!   suppressor's output is than its input while there is echo).
//! - Latency: 5 ms with `suppress` (10 ms at a rate whose 10 ms block is an
//!   odd number of samples, 44.1 kHz), none without or when not `enabled`.
//!   10 ms blocks, aligned with the quantum: the quantum must be a whole
//!   number of 10 ms.
//!
//! The canceller (module [`super::aec`]) is linear: a 250 ms adaptive
//! filter learns the path from `ref` to the microphone (the speaker, the
//! room, the buffering between them) and subtracts its estimate; the
//! suppressor after it takes out bin by bin what the filter has not learnt.
//! Measured on synthesised speech through a simulated room (docs/DESIGN.md,
//! decision 17): 13 / 25 dB less echo after the far end has talked for 2 /
//! 7 s (the filter alone 4 / 16), about 30 dB later; while both ends talk
//! the near voice comes through 0.5-2.4 dB quieter. Until the microphone is
//! found to hear `ref` (a correlation over half a second of the far end
//! talking, its peak standing at one delay, the two coherent there)
//! nothing is learnt and `mic` passes bit-exact (5 ms late with the
//! suppressor), so a headset call loses nothing. Once it has learnt,
//! it keeps learning: an echo path that goes away (a headset plugged in
//! mid-call) is unlearnt like any other change, in a few seconds. It needs `ref` and
//! the microphone on one clock, and the delay between them steady: the
//! device stages' drift correction holds both rings at a steady level.
//!
//! ```toml
//! [[stage]]
//! id = "aec"
//! kind = "audio.echo_cancel"
//!
//! [[link]]
//! from = "mic.out"
//! to = "aec.mic"
//!
//! [[link]]
//! from = "mix.out"
//! to = "aec.ref"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::aec::EchoCanceller;
use super::res::EchoSuppressor;
use super::{pcm_port, rate_param, rate_spec};

const KIND: &str = "audio.echo_cancel";

/// Factory of `audio.echo_cancel`.
pub struct EchoCancel;

struct EchoProc {
    aec: Option<EchoCanceller>,
    res: Option<EchoSuppressor>,
    /// The canceller's output for one block, into the suppressor.
    left: Vec<f32>,
    block: usize,
    last: super::aec::EchoStats,
    last_res_resets: u64,
    adopted: Counter,
    reverted: Counter,
    resets: Counter,
    found: Gauge,
    delay_ms: Gauge,
    correlation: Gauge,
    coherence: Gauge,
    erle: Gauge,
    suppressed: Gauge,
    rate: u32,
}

impl Processor for EchoProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let Some(aec) = self.aec.as_mut() else {
            let (mic, out) = io.pcm_in_out(0, 0);
            out.copy_from_slice(mic);
            return Flow::Continue;
        };
        // Filter and detector state decaying through silence would reach
        // the subnormal range, ~100 cycles a multiply on x86.
        let _ftz = crate::codec::denormals::FlushDenormals::new();
        let n = io.pcm_in(0).len();
        let mut at = 0;
        while at + self.block <= n {
            let end = at + self.block;
            // Inputs and output are separate buffers; each block reads its
            // slice of both inputs and writes its slice of the output.
            let (mic, far, out) = io.pcm_in2_out(0, 1, 0);
            match self.res.as_mut() {
                Some(res) => {
                    aec.process(&mic[at..end], &far[at..end], &mut self.left);
                    res.process(
                        &self.left,
                        aec.echo_estimate(),
                        aec.reference_at_echo_delay(),
                        aec.echo_active(),
                        &mut out[at..end],
                    );
                }
                None => aec.process(&mic[at..end], &far[at..end], &mut out[at..end]),
            }
            at = end;
        }
        let s = aec.stats();
        if s.adopted > self.last.adopted {
            self.adopted.add(s.adopted - self.last.adopted);
        }
        if s.reverted > self.last.reverted {
            self.reverted.add(s.reverted - self.last.reverted);
        }
        if s.resets > self.last.resets {
            self.resets.add(s.resets - self.last.resets);
        }
        self.last = s;
        let delay = aec.echo_delay();
        self.found.set(delay.is_some() as i64);
        self.delay_ms.set(
            delay
                .map(|d| (d as u64 * 1000 / self.rate as u64) as i64)
                .unwrap_or(-1),
        );
        self.correlation
            .set((aec.echo_correlation() * 1000.0).round() as i64);
        self.coherence
            .set((aec.echo_coherence() * 1000.0).round() as i64);
        self.erle.set((aec.erle_db() * 10.0).round() as i64);
        if let Some(res) = &self.res {
            self.suppressed
                .set((res.suppressed_db() * 10.0).round() as i64);
            let r = res.stats().resets;
            if r > self.last_res_resets {
                self.resets.add(r - self.last_res_resets);
                self.last_res_resets = r;
            }
        }
        Flow::Continue
    }
}

impl StageFactory for EchoCancel {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "takes the far end's echo (ref) out of the microphone (mic): for calls on a speaker",
            inputs: vec![
                pcm_port("mic", "the microphone"),
                pcm_port(
                    "ref",
                    "what goes to the speaker (the far end), on the microphone's clock",
                ),
            ],
            outputs: vec![pcm_port("out", "the microphone without the echo")],
            params: vec![
                ParamSpec::bool(
                    "enabled",
                    true,
                    "false passes the microphone through untouched",
                ),
                ParamSpec::bool(
                    "suppress",
                    true,
                    "a residual echo suppressor after the canceller (5 ms of latency); false: the linear canceller alone",
                ),
                ParamSpec::duration(
                    "tail",
                    Duration::from_millis(250),
                    "how late the echo may come after ref: buffering plus the room's reverberation (20ms..=1s)",
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
        let suppress = p.bool("suppress")?;
        let tail = p.duration("tail")?;
        if tail < Duration::from_millis(20) || tail > Duration::from_secs(1) {
            return Err(
                ParamError::new("tail", format!("{tail:?} is out of range 20ms..=1s")).into(),
            );
        }
        if rate % 100 != 0 {
            return Err(ParamError::new(
                "rate",
                format!("{rate} Hz: the canceller works in 10 ms blocks and needs a rate that is a multiple of 100 Hz"),
            )
            .into());
        }
        let block = rate as usize / 100;
        let quantum = cx.samples_at(rate);
        if quantum % block != 0 {
            return Err(BuildError::Other(format!(
                "{KIND} works in 10 ms blocks; the graph's quantum ({quantum} samples at {rate} Hz) is not a whole number of them"
            )));
        }
        let tail_samples = (tail.as_nanos() as u64 * rate as u64).div_ceil(1_000_000_000);
        let partitions = (tail_samples as usize).div_ceil(block);
        // Frames half a block apart (two a block), or a block apart where
        // a block does not halve.
        let hop = if block % 2 == 0 { block / 2 } else { block };
        let res = (enabled && suppress).then(|| EchoSuppressor::new(rate, hop));
        let latency = if res.is_some() {
            Duration::from_nanos(hop as u64 * 1_000_000_000 / rate as u64)
        } else {
            Duration::ZERO
        };
        Ok(Built {
            inputs: vec![
                PortDecl::new("mic", PortType::Pcm { rate }),
                // What the echo is made of, not carried into the output:
                // `graph explain` runs no latency path through it.
                PortDecl::new("ref", PortType::Pcm { rate }).as_side(),
            ],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency,
            processor: Box::new(EchoProc {
                aec: enabled.then(|| EchoCanceller::new(rate, block, partitions)),
                res,
                left: vec![0.0; block],
                block,
                last: Default::default(),
                last_res_resets: 0,
                adopted: cx.counter("filter_adopted"),
                reverted: cx.counter("filter_reverted"),
                resets: cx.counter("filter_resets"),
                found: cx.gauge("echo_found"),
                delay_ms: cx.gauge("echo_delay_ms"),
                correlation: cx.gauge("echo_correlation"),
                coherence: cx.gauge("echo_coherence"),
                erle: cx.gauge("erle_db"),
                suppressed: cx.gauge("suppress_db"),
                rate,
            }),
        })
    }
}
