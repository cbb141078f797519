//! `audio.ring_source`: the sound of a phone ringing, or of a call ringing
//! at the far end.
//!
//! - Output `out`: `Pcm` at `rate`.
//! - Params: `pattern` (`"ring"`, the default: a double ring of 400 + 450
//!   Hz, 0.4 s on, 0.2 s off, 0.4 s on, 2 s off, what a callee's speaker
//!   plays; `"ringback"`: 440 + 480 Hz, 2 s on, 4 s off, what a caller hears
//!   while the far end rings; `"connected"`: once, a rising sweep from 300
//!   to 3800 Hz over 0.8 s, then silence: the sound of a call starting on a
//!   speaker, which lets the echo canceller find the speaker in the
//!   microphone before the far end says a word (docs/DESIGN.md, decision
//!   26); `"waiting"`: two short 440 Hz beeps (0.2 s on, 0.2 s off, 0.2 s
//!   on) every 10 s, what a person in a call hears while a second call
//!   waits; `"hold"`: a short 523 Hz beep (0.3 s) every 4 s, what a person
//!   hears while the other party holds the call; `"none"`: silence),
//!   `level_db` (peak in dBFS, default -16,
//!   range -60..=0), `gate` (string, default `""`: the name of a
//!   [`RingGate`] cell the control plane inserted; the pattern sounds only
//!   while the gate is open, from its start each time it opens, and is
//!   silent while it is shut; with no such cell it always sounds), `rate`
//!   (Hz, default 0 = the graph rate).
//! - Counter `rings`: cadences (or the sweep) begun.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal::db_to_gain};
use crate::cell::control_cell;

/// The cell the control plane opens and shuts a ring source's pattern
/// through (param `gate`): one writer, one reader, lock-free. The client
/// inserts `call.waiting`, open while a second call waits.
#[derive(Debug, Default)]
pub struct RingGate(AtomicBool);

impl RingGate {
    /// A gate, open or shut.
    pub fn new(open: bool) -> RingGate {
        RingGate(AtomicBool::new(open))
    }

    /// Opens (`true`) or shuts it; returns whether it was open.
    pub fn set(&self, open: bool) -> bool {
        self.0.swap(open, Ordering::Relaxed)
    }

    /// Whether it is open.
    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

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

/// What a person in a call hears while a second call waits: two short
/// beeps, then a long pause (the call goes on under it).
pub const WAITING: Cadence = Cadence {
    freqs: [440.0, 440.0],
    bursts: &[(0.0, 0.2), (0.4, 0.6)],
    period: 10.0,
};

/// What a person hears while the other party holds the call: a short
/// beep every 4 s (the line is there; nobody is listening).
pub const HOLD: Cadence = Cadence {
    freqs: [523.0, 523.0],
    bursts: &[(0.0, 0.3)],
    period: 4.0,
};

/// Edge fade, seconds.
const FADE: f64 = 0.010;

/// The `"connected"` sweep: from, to (Hz), and how long (s). 0.8 s: the
/// echo canceller decides that the speaker is heard after about 0.6 s of
/// it playing (0.6 s of sweep left it undecided in the simulated room,
/// 0.7 s decided).
pub const CONNECTED_SWEEP: (f64, f64, f64) = (300.0, 3800.0, 0.8);
/// The sweep's edge fade, seconds.
const SWEEP_FADE: f64 = 0.020;

/// The `"connected"` sweep's sample `t` seconds in, at peak 1 (0 after it).
pub fn connected_sweep(t: f64) -> f64 {
    let (f0, f1, len) = CONNECTED_SWEEP;
    if !(0.0..len).contains(&t) {
        return 0.0;
    }
    let edge = t.min(len - t);
    let env = if edge >= SWEEP_FADE {
        1.0
    } else {
        0.5 - 0.5 * (std::f64::consts::PI * edge / SWEEP_FADE).cos()
    };
    let phase = std::f64::consts::TAU * (f0 * t + (f1 - f0) * t * t / (2.0 * len));
    env * phase.sin()
}

/// What a ring source plays.
#[derive(Clone, Copy, Debug)]
enum Pattern {
    Cadence(Cadence),
    /// [`connected_sweep`], once.
    Connected,
    Silence,
}

impl Cadence {
    /// The pattern named `name`.
    pub fn by_name(name: &str) -> Option<Cadence> {
        match name {
            "ring" => Some(RING),
            "ringback" => Some(RINGBACK),
            "waiting" => Some(WAITING),
            "hold" => Some(HOLD),
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
    pattern: Pattern,
    rate: f64,
    /// Samples since the start.
    n: u64,
    /// Samples per period.
    period: u64,
    amplitude: f64,
    rings: Counter,
    gate: Option<Arc<RingGate>>,
}

impl Processor for RingProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let out = io.pcm_out(0);
        // Shut: silent, and the pattern starts over when it opens.
        if self.gate.as_ref().is_some_and(|g| !g.is_open()) {
            out.fill(0.0);
            self.n = 0;
            return Flow::Continue;
        }
        let cadence = match self.pattern {
            Pattern::Cadence(c) => c,
            Pattern::Connected => {
                if self.n == 0 {
                    self.rings.inc();
                }
                for s in out.iter_mut() {
                    *s = (self.amplitude * connected_sweep(self.n as f64 / self.rate)) as f32;
                    self.n = self.n.saturating_add(1);
                }
                return Flow::Continue;
            }
            Pattern::Silence => {
                out.fill(0.0);
                return Flow::Continue;
            }
        };
        for s in out.iter_mut() {
            let k = self.n % self.period;
            if k == 0 {
                self.rings.inc();
            }
            let t = k as f64 / self.rate;
            let env = cadence.envelope(t);
            *s = if env > 0.0 {
                let [f1, f2] = cadence.freqs;
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
                    "\"ring\" (a callee's), \"ringback\" (a caller's), \"connected\" (a call starting, once), \"waiting\" (a second call waits), \"hold\" (the other party holds the call) or \"none\"",
                ),
                ParamSpec::float("level_db", -16.0, "peak level in dBFS (-60..=0)"),
                ParamSpec::str(
                    "gate",
                    "",
                    "the RingGate cell that opens and shuts the pattern (empty: always on)",
                ),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let name = p.str("pattern")?;
        let pattern = match name {
            "connected" => Pattern::Connected,
            "none" => Pattern::Silence,
            _ => Pattern::Cadence(Cadence::by_name(name).ok_or_else(|| {
                ParamError::new(
                    "pattern",
                    format!(
                        "is {name:?}; use \"ring\", \"ringback\", \"connected\", \"waiting\", \"hold\" or \"none\""
                    ),
                )
            })?),
        };
        let period = match pattern {
            Pattern::Cadence(c) => c.period,
            _ => 1.0,
        };
        let level = p.float_in("level_db", -60.0, 0.0)?;
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(RingProc {
                pattern,
                rate: rate as f64,
                n: 0,
                period: (period * rate as f64).round() as u64,
                amplitude: db_to_gain(level) as f64,
                rings: cx.counter("rings"),
                gate: control_cell::<RingGate>(cx, p, "gate", "a RingGate")?,
            }),
        })
    }
}
