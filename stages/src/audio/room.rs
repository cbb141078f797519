//! `audio.room`: a simulated acoustic path from a speaker to a microphone,
//! for testing echo cancellation without a sound card (as `net.netem` is
//! for the network).
//!
//! - Inputs `in` (what the microphone hears of the near end: a voice, or
//!   silence) and `speaker` (what the speaker plays), output `out` = `in`
//!   plus `speaker` through the room: `Pcm` at `rate`.
//! - Params: `delay` (default `"40ms"`, range 0..=500ms: the playout's and
//!   capture's buffering before the sound reaches the microphone),
//!   `gain_db` (default -6, range -60..=12: the direct path's level),
//!   `reflections` (default 6, range 0..=32: echoes after the direct path,
//!   within 100 ms, each weaker the later it comes), `seed` (default 1:
//!   where the reflections fall), `rate` (Hz, default 0 = the graph rate).
//! - Latency: none (`in` passes at once; the echo is what is late).
//!
//! Output is not clipped (a later stage or the sink decides).
//!
//! ```toml
//! [[stage]]
//! id = "room"
//! kind = "audio.room"
//! params = { delay = "60ms", gain_db = -10 }
//!
//! [[link]]
//! from = "mix.out"
//! to = "room.speaker"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal::db_to_gain};

/// Factory of `audio.room`.
pub struct Room;

struct RoomProc {
    /// (samples after the speaker, gain), the direct path first.
    taps: Vec<(usize, f32)>,
    /// The speaker's last `history.len()` samples, a ring; `pos` is where
    /// the next one goes.
    history: Box<[f32]>,
    pos: usize,
}

impl Processor for RoomProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (near, speaker, out) = io.pcm_in2_out(0, 1, 0);
        let n = self.history.len();
        for ((o, &x), &s) in out.iter_mut().zip(near).zip(speaker) {
            self.history[self.pos] = s;
            let mut echo = 0.0f32;
            for &(late, gain) in &self.taps {
                echo += gain * self.history[(self.pos + n - late) % n];
            }
            *o = x + echo;
            self.pos = (self.pos + 1) % n;
        }
        Flow::Continue
    }
}

impl StageFactory for Room {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.room",
            summary: "a simulated speaker-to-microphone path: in plus the speaker's echo (for testing echo cancellation)",
            inputs: vec![
                pcm_port("in", "what the microphone hears of the near end"),
                pcm_port("speaker", "what the speaker plays"),
            ],
            outputs: vec![pcm_port("out", "in plus the speaker through the room")],
            params: vec![
                ParamSpec::duration(
                    "delay",
                    Duration::from_millis(40),
                    "buffering before the sound reaches the microphone (0..=500ms)",
                ),
                ParamSpec::float("gain_db", -6.0, "the direct path's level, dB (-60..=12)"),
                ParamSpec::int(
                    "reflections",
                    6,
                    "echoes after the direct path, within 100 ms (0..=32)",
                ),
                ParamSpec::int("seed", 1, "where the reflections fall"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let delay = p.duration("delay")?;
        if delay > Duration::from_millis(500) {
            return Err(ParamError::new("delay", format!("{delay:?} is over 500ms")).into());
        }
        let gain = db_to_gain(p.float_in("gain_db", -60.0, 12.0)?);
        let reflections = p.int_in("reflections", 0, 32)? as usize;
        let mut seed = (p.int("seed")? as u64) | 1;
        let fs = rate as u64;
        let first = (delay.as_nanos() as u64 * fs / 1_000_000_000) as usize;
        let spread = (fs / 10) as usize; // 100 ms
        let mut taps = vec![(first, gain)];
        for _ in 0..reflections {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let late = 1 + (seed % spread.max(1) as u64) as usize;
            // Later is weaker: -20 dB at 100 ms, and a sign of its own.
            let level = gain * 0.5 * (-2.3 * late as f32 / spread.max(1) as f32).exp();
            let sign = if (seed >> 32) & 1 == 0 { 1.0 } else { -1.0 };
            taps.push((first + late, sign * level));
        }
        let longest = taps.iter().map(|t| t.0).max().unwrap_or(0);
        Ok(Built {
            inputs: vec![
                PortDecl::new("in", PortType::Pcm { rate }),
                PortDecl::new("speaker", PortType::Pcm { rate }),
            ],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(RoomProc {
                taps,
                history: vec![0.0; longest + 1].into_boxed_slice(),
                pos: 0,
            }),
        })
    }
}
