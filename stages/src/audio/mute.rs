//! `audio.mute`: the microphone's mute switch, thrown from the control
//! plane while the graph runs.
//!
//! - Input `in`, output `out`: `Pcm` at `rate`.
//! - Params: `switch` (string, default `""`): the name of the [`MuteSwitch`]
//!   cell the control plane inserted (`wzp-client` inserts `call.mute`); with
//!   no such cell the stage passes the signal unchanged. `muted` (bool,
//!   default false): the switch's position when the graph starts, for a
//!   graph run with no control plane (`wzp-client run`). `rate` (Hz, default
//!   0 = the graph rate).
//! - Latency: none.
//! - Counters: `muted_frames` (quanta that went out silent),
//!   `voiced_muted_frames` (of those, quanta whose input was at -45 dBFS RMS
//!   or louder: someone talking into a muted microphone; `wzp-client` says
//!   so). Gauge: `muted` (1 while muted).
//!
//! Muted, the output is digital silence, not nothing: the encoder after it
//! keeps sending a packet every frame (libopus codes silence in a few
//! bytes), so the room's jitter buffers, the senders' loss reports and the
//! quality controller see a clean path rather than a sender gone quiet.
//! Stages before it (the echo canceller, the noise suppressor) keep
//! running, so nothing they have learnt is lost while muted.
//!
//! A change of position takes effect at the next quantum and fades over
//! it (linearly, one quantum: 20 ms in a call), so neither muting nor
//! unmuting clicks.
//!
//! ```toml
//! [[stage]]
//! id = "mute"
//! kind = "audio.mute"
//! params = { switch = "call.mute" }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec};
use crate::cell::control_cell;
use crate::codec::adaptive_decode::VOICED_MEAN_SQUARE;

/// The cell the control plane throws the mute switch through: one writer
/// (the control plane), one reader (the stage), lock-free.
#[derive(Debug, Default)]
pub struct MuteSwitch(AtomicBool);

impl MuteSwitch {
    /// A switch in position `muted`.
    pub fn new(muted: bool) -> MuteSwitch {
        MuteSwitch(AtomicBool::new(muted))
    }

    /// Mutes (`true`) or unmutes; returns the position it had.
    pub fn set(&self, muted: bool) -> bool {
        self.0.swap(muted, Ordering::Relaxed)
    }

    /// Flips the switch; returns the new position.
    pub fn toggle(&self) -> bool {
        !self.0.fetch_xor(true, Ordering::Relaxed)
    }

    /// Whether it is muted.
    pub fn is_muted(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Factory of `audio.mute`.
pub struct Mute;

struct MuteProc {
    switch: Option<Arc<MuteSwitch>>,
    /// The position with no switch (the `muted` param).
    fixed: bool,
    /// The gain the last quantum ended at: 1 open, 0 muted.
    gain: f32,
    muted_frames: Counter,
    voiced_muted: Counter,
    muted: Gauge,
}

impl MuteProc {
    fn position(&self) -> bool {
        match &self.switch {
            Some(s) => s.is_muted(),
            None => self.fixed,
        }
    }
}

impl Processor for MuteProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let muted = self.position();
        let target = if muted { 0.0 } else { 1.0 };
        let from = self.gain;
        let (x, y) = io.pcm_in_out(0, 0);
        if from == target {
            if muted {
                y.fill(0.0);
            } else {
                y.copy_from_slice(x);
            }
        } else {
            // One quantum's linear fade from where the last one ended.
            let n = y.len().max(1) as f32;
            for (i, (y, x)) in y.iter_mut().zip(x).enumerate() {
                let t = (i + 1) as f32 / n;
                *y = x * (from + (target - from) * t);
            }
        }
        self.gain = target;
        if muted {
            self.muted_frames.inc();
            let energy: f32 = x.iter().map(|v| v * v).sum();
            if energy >= VOICED_MEAN_SQUARE * x.len() as f32 && !x.is_empty() {
                self.voiced_muted.inc();
            }
        }
        self.muted.set(i64::from(muted));
        Flow::Continue
    }
}

impl StageFactory for Mute {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.mute",
            summary: "the microphone's mute switch, thrown live by the control plane (silence, faded over one quantum)",
            inputs: vec![pcm_port("in", "the signal")],
            outputs: vec![pcm_port("out", "the signal, or silence while muted")],
            params: vec![
                ParamSpec::str(
                    "switch",
                    "",
                    "the MuteSwitch cell the control plane inserted (wzp-client: call.mute); empty or absent: the `muted` param holds",
                ),
                ParamSpec::bool("muted", false, "muted from the start"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let fixed = p.bool("muted")?;
        let switch = control_cell::<MuteSwitch>(cx, p, "switch", "a MuteSwitch")?;
        let start_muted = match &switch {
            Some(s) => s.is_muted(),
            None => fixed,
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(MuteProc {
                switch,
                fixed,
                // A graph that starts muted starts silent, with no fade.
                gain: if start_muted { 0.0 } else { 1.0 },
                muted_frames: cx.counter("muted_frames"),
                voiced_muted: cx.counter("voiced_muted_frames"),
                muted: cx.gauge("muted"),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_reports_its_positions() {
        let s = MuteSwitch::new(false);
        assert!(!s.is_muted());
        assert!(s.toggle());
        assert!(s.is_muted());
        assert!(!s.toggle());
        assert!(!s.set(true));
        assert!(s.set(true));
        assert!(s.is_muted());
    }
}
