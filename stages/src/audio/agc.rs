//! The microphone's automatic gain control behind `audio.agc`: a sans-IO
//! core that brings a voice to one level, whatever the microphone and
//! however far the talker sits from it, and never lets it clip.
//!
//! **The voice's level.** The input is read in 10 ms blocks. A block is
//! speech when its power stands [`SPEECH_OVER_FLOOR_DB`] over the room's
//! floor (a slow minimum of the blocks' power, rising 1 dB a second) and
//! over [`MIN_SPEECH_DBFS`]; the speech level is the power average of the
//! speech blocks, over about 1.5 s (its first half second faster, so a call
//! settles within a few words). Pauses, breath and the room leave it alone:
//! the gain is decided by the voice only, and a pause neither raises it
//! (no noise pumped up between words) nor lowers it.
//!
//! **The gain** moves toward `target - level`, within `-max_cut`..=`+max_boost`
//! dB, at most [`UP_DB_PER_S`] dB a second up ([`UP_FAST_DB_PER_S`] through
//! the first two seconds of speech) and [`DOWN_DB_PER_S`] down (a voice too
//! loud comes down at once, one too quiet comes up over words, not within
//! one), interpolated sample by sample across each block.
//!
//! **The limiter** after it: a block whose peak would pass [`CEILING`]
//! (-1 dBFS) is taken down to it at once, for the whole block (no sample
//! over it, ever), and the limiter lets go at [`RELEASE_DB_PER_S`] dB a
//! second. What it does is counted (`limited`); a sample still over full
//! scale after it (there is none by construction) would be clamped and
//! counted (`clipped`).
//!
//! **The far end.** On a speaker the microphone hears the far end too, and
//! what the echo canceller has not yet taken out would read as the voice
//! (and a quiet one, pulling the gain up). Given the far end's sound
//! ([`AutoGain::process_with_far`], the stage's `ref` input), a block heard
//! while the far end was above [`FAR_ACTIVE_DBFS`] within the last
//! [`FAR_HANGOVER_S`] (its echo's delay and tail) is not read as speech:
//! the gain is learnt while the near end talks alone and holds through
//! double talk.
//!
//! Digital silence (a muted source) passes as silence and moves nothing.
//! No allocation after [`AutoGain::new`].

use super::stft::clean;

/// A block is speech this far over the room's floor, dB.
pub const SPEECH_OVER_FLOOR_DB: f32 = 12.0;
/// ... and over this absolute level (quieter is the room, not a voice).
pub const MIN_SPEECH_DBFS: f32 = -60.0;
/// The floor rises this fast where the blocks stay over it, dB a second.
const FLOOR_RISE_DB_S: f32 = 1.0;
/// How long the speech level averages over, seconds, and over its first
/// half second of speech.
const LEVEL_S: f32 = 1.5;
const LEVEL_FAST_S: f32 = 0.1;
const FAST_SPEECH_S: f32 = 0.5;
/// Gain slew limits, dB a second; the fast rise for the first seconds of
/// speech.
pub const UP_DB_PER_S: f32 = 3.0;
pub const UP_FAST_DB_PER_S: f32 = 12.0;
const UP_FAST_FOR_S: f32 = 2.0;
pub const DOWN_DB_PER_S: f32 = 20.0;
/// The limiter's ceiling (-1 dBFS) and release.
pub const CEILING: f32 = 0.891;
const RELEASE_DB_PER_S: f32 = 10.0;
/// Blocks under this power are digital silence.
const SILENT: f32 = 1e-10;
/// The far end is talking above this level...
pub const FAR_ACTIVE_DBFS: f32 = -50.0;
/// ... and its echo may still be heard this long after.
pub const FAR_HANGOVER_S: f32 = 0.3;

/// What the gain control aims for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgcConfig {
    /// The speech level aimed at, dBFS (RMS over speech).
    pub target_dbfs: f32,
    /// The most it raises a quiet voice, dB.
    pub max_boost_db: f32,
    /// The most it lowers a loud one, dB.
    pub max_cut_db: f32,
}

impl Default for AgcConfig {
    fn default() -> Self {
        AgcConfig {
            target_dbfs: -20.0,
            max_boost_db: 30.0,
            max_cut_db: 20.0,
        }
    }
}

/// What the gain control did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgcStats {
    /// 10 ms blocks read, and those read as speech.
    pub blocks: u64,
    pub speech_blocks: u64,
    /// Blocks the limiter took down.
    pub limited: u64,
    /// Blocks not read as speech for the far end talking.
    pub far_held: u64,
    /// Samples clamped to full scale after the limiter (none expected).
    pub clipped: u64,
}

/// Automatic gain control with a limiter.
pub struct AutoGain {
    cfg: AgcConfig,
    block: usize,
    /// Per-block factors.
    floor_rise: f32,
    level_avg: f32,
    level_fast_avg: f32,
    fast_speech_blocks: u64,
    up_db: f32,
    up_fast_db: f32,
    up_fast_blocks: u64,
    down_db: f32,
    release: f32,
    /// The floor's and the speech level's powers (0: none yet).
    floor: f32,
    level: f32,
    /// The gain applied at the end of the last block, dB, and the
    /// limiter's gain.
    gain_db: f32,
    lim: f32,
    /// The part of a block read so far (a call of `process` may end inside
    /// one) and its power sum, and the far end's.
    filled: usize,
    sum: f32,
    far_sum: f32,
    /// Blocks left before the far end's echo is gone, and how many that is
    /// from a block of it.
    far_left: u32,
    far_hangover: u32,
    /// [`SPEECH_OVER_FLOOR_DB`] and [`FAR_ACTIVE_DBFS`] as power ratios.
    speech_over: f32,
    far_active: f32,
    stats: AgcStats,
}

impl AutoGain {
    /// Gain control for audio at `rate` Hz.
    pub fn new(rate: u32, cfg: AgcConfig) -> Self {
        let block = (rate as usize / 100).max(1);
        let block_s = block as f32 / rate.max(1) as f32;
        let per_block = |db_per_s: f32| db_per_s * block_s;
        AutoGain {
            cfg,
            block,
            floor_rise: 10f32.powf(per_block(FLOOR_RISE_DB_S) / 10.0),
            level_avg: 1.0 - (-block_s / LEVEL_S).exp(),
            level_fast_avg: 1.0 - (-block_s / LEVEL_FAST_S).exp(),
            fast_speech_blocks: (FAST_SPEECH_S / block_s).round() as u64,
            up_db: per_block(UP_DB_PER_S),
            up_fast_db: per_block(UP_FAST_DB_PER_S),
            up_fast_blocks: (UP_FAST_FOR_S / block_s).round() as u64,
            down_db: per_block(DOWN_DB_PER_S),
            release: 10f32.powf(per_block(RELEASE_DB_PER_S) / 20.0),
            floor: 0.0,
            level: 0.0,
            gain_db: 0.0,
            lim: 1.0,
            filled: 0,
            sum: 0.0,
            far_sum: 0.0,
            far_left: 0,
            far_hangover: (FAR_HANGOVER_S / block_s).ceil() as u32,
            speech_over: 10f32.powf(SPEECH_OVER_FLOOR_DB / 10.0),
            far_active: 10f32.powf(FAR_ACTIVE_DBFS / 10.0),
            stats: AgcStats::default(),
        }
    }

    /// The gain it applies now (before the limiter), dB.
    pub fn gain_db(&self) -> f32 {
        self.gain_db
    }

    /// The voice's level as read, dBFS; `None` before any speech.
    pub fn level_dbfs(&self) -> Option<f32> {
        (self.level > 0.0).then(|| 10.0 * self.level.log10())
    }

    /// What it did so far.
    pub fn stats(&self) -> AgcStats {
        self.stats
    }

    /// `input` to `out` (the same length, any length): the input times the
    /// gain, limited. The gain is decided once per 10 ms block, from the
    /// blocks before; samples of a block not yet complete get the gain the
    /// last block ended at.
    pub fn process(&mut self, input: &[f32], out: &mut [f32]) {
        self.process_with_far(input, None, out);
    }

    /// [`AutoGain::process`], knowing what the far end played (`far`, the
    /// same length as `input`; `None`: nothing).
    pub fn process_with_far(&mut self, input: &[f32], far: Option<&[f32]>, out: &mut [f32]) {
        assert_eq!(input.len(), out.len());
        if let Some(f) = far {
            assert_eq!(f.len(), input.len());
        }
        let mut start = 0;
        while start < input.len() {
            let take = (self.block - self.filled).min(input.len() - start);
            let end = start + take;
            let x = &input[start..end];
            let y = &mut out[start..end];
            for v in x {
                let v = clean(*v);
                self.sum += v * v;
            }
            if let Some(f) = far {
                for v in &f[start..end] {
                    let v = clean(*v);
                    self.far_sum += v * v;
                }
            }
            self.filled += take;
            let from = self.gain_db;
            if self.filled == self.block {
                let power = self.sum / self.block as f32;
                let far_power = self.far_sum / self.block as f32;
                self.filled = 0;
                self.sum = 0.0;
                self.far_sum = 0.0;
                if far_power > self.far_active {
                    self.far_left = self.far_hangover;
                }
                self.decide(power);
                self.far_left = self.far_left.saturating_sub(1);
            }
            self.apply(x, y, from, self.gain_db);
            start = end;
        }
    }

    /// A whole block's power read: the floor, the speech level, the gain.
    fn decide(&mut self, power: f32) {
        self.stats.blocks += 1;
        if !power.is_finite() || power < SILENT {
            return;
        }
        if self.floor <= 0.0 || power < self.floor {
            self.floor = power;
        } else {
            self.floor *= self.floor_rise;
        }
        let db = 10.0 * power.log10();
        let speech = db > MIN_SPEECH_DBFS && power > self.floor * self.speech_over;
        if !speech {
            return;
        }
        if self.far_left > 0 {
            self.stats.far_held += 1;
            return;
        }
        self.stats.speech_blocks += 1;
        let avg = if self.stats.speech_blocks <= self.fast_speech_blocks {
            self.level_fast_avg
        } else {
            self.level_avg
        };
        self.level = if self.level <= 0.0 {
            power
        } else {
            self.level + avg * (power - self.level)
        };
        let level_db = 10.0 * self.level.log10();
        let want =
            (self.cfg.target_dbfs - level_db).clamp(-self.cfg.max_cut_db, self.cfg.max_boost_db);
        let up = if self.stats.speech_blocks <= self.up_fast_blocks {
            self.up_fast_db
        } else {
            self.up_db
        };
        self.gain_db += (want - self.gain_db).clamp(-self.down_db, up);
    }

    /// Applies the gain (from `from_db` to `to_db` across `x`) and the
    /// limiter.
    fn apply(&mut self, x: &[f32], y: &mut [f32], from_db: f32, to_db: f32) {
        let g0 = 10f32.powf(from_db / 20.0);
        let g1 = 10f32.powf(to_db / 20.0);
        let n = x.len().max(1) as f32;
        let mut peak = 0.0f32;
        for (i, (y, x)) in y.iter_mut().zip(x).enumerate() {
            let g = g0 + (g1 - g0) * (i + 1) as f32 / n;
            *y = clean(*x) * g;
            peak = peak.max(y.abs());
        }
        // The limiter: down at once to what keeps this block's peak at the
        // ceiling, up no faster than its release.
        let lim = (self.lim * self.release).min(1.0);
        let lim = if peak * lim > CEILING {
            self.stats.limited += 1;
            CEILING / peak
        } else {
            lim
        };
        let l0 = self.lim.min(lim);
        for (i, y) in y.iter_mut().enumerate() {
            // Rising: from the last block's gain to this one's; falling:
            // this one's for the whole block.
            let l = l0 + (lim - l0) * (i + 1) as f32 / n;
            let v = *y * l;
            *y = if v.abs() > 1.0 {
                self.stats.clipped += 1;
                v.clamp(-1.0, 1.0)
            } else {
                v
            };
        }
        self.lim = lim;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::signal::{rms_dbfs, speech_like};

    const RATE: u32 = 48_000;

    /// `secs` of the built-in speech (looped) at `dbfs` RMS over its voiced
    /// part, over white noise at `noise_dbfs`.
    fn talk(secs: f32, dbfs: f32, noise_dbfs: f32) -> Vec<f32> {
        let s = speech_like(RATE);
        let voiced: Vec<f32> = s.iter().copied().filter(|v| v.abs() > 1e-3).collect();
        let scale = 10f32.powf((dbfs - rms_dbfs(&voiced)) / 20.0);
        let noise = 10f32.powf(noise_dbfs / 20.0) * 3f32.sqrt();
        let mut seed = 0x9e37_79b9u32;
        (0..(secs * RATE as f32) as usize)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let n = (seed as f32 / u32::MAX as f32 * 2.0 - 1.0) * noise;
                s[i % s.len()] * scale + n
            })
            .collect()
    }

    fn run(x: &[f32], quantum: usize) -> (Vec<f32>, AutoGain) {
        let mut agc = AutoGain::new(RATE, AgcConfig::default());
        let mut y = vec![0.0; x.len()];
        for (a, b) in x.chunks(quantum).zip(y.chunks_mut(quantum)) {
            agc.process(a, b);
        }
        (y, agc)
    }

    /// The level of the voiced part of the last `secs` of `y`, where `x`
    /// (the input) is voiced.
    fn voiced_dbfs(x: &[f32], y: &[f32], secs: f32) -> f32 {
        let from = y.len() - (secs * RATE as f32) as usize;
        let s = speech_like(RATE);
        let v: Vec<f32> = (from..y.len())
            .filter(|&i| s[i % s.len()].abs() > 1e-3)
            .map(|i| y[i])
            .collect();
        let _ = x;
        rms_dbfs(&v)
    }

    #[test]
    fn a_quiet_voice_and_a_loud_one_both_come_to_the_target() {
        for (dbfs, noise) in [
            (-42.0, -80.0),
            (-34.0, -70.0),
            (-8.0, -70.0),
            (-20.0, -75.0),
        ] {
            let x = talk(12.0, dbfs, noise);
            let (y, agc) = run(&x, 960);
            let out = voiced_dbfs(&x, &y, 4.0);
            assert!(
                (out + 20.0).abs() < 3.0,
                "speech at {dbfs} dBFS comes out at {out:.1} (gain {:.1} dB, level {:?})",
                agc.gain_db(),
                agc.level_dbfs()
            );
            assert_eq!(agc.stats().clipped, 0);
        }
    }

    #[test]
    fn nothing_passes_the_ceiling_however_loud() {
        // Speech at -3 dBFS RMS, peaks far over full scale once gained up
        // from a quiet start: the limiter holds every sample under -1 dBFS.
        let mut x = talk(4.0, -40.0, -80.0);
        x.extend(talk(4.0, -3.0, -80.0));
        x.extend(std::iter::repeat_n(3.0f32, 480));
        let (y, agc) = run(&x, 960);
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak <= CEILING + 1e-6, "peak {peak}");
        assert!(agc.stats().limited > 0);
        assert_eq!(agc.stats().clipped, 0);
    }

    #[test]
    fn a_room_with_no_voice_is_left_at_its_level() {
        let x = talk(0.0, -30.0, -50.0);
        assert!(x.is_empty());
        let mut seed = 7u32;
        let noise: Vec<f32> = (0..RATE as usize * 6)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed as f32 / u32::MAX as f32 * 2.0 - 1.0) * 0.003
            })
            .collect();
        let (y, agc) = run(&noise, 960);
        assert_eq!(agc.gain_db(), 0.0, "{:?}", agc.stats());
        assert!((rms_dbfs(&y) - rms_dbfs(&noise)).abs() < 0.01);
    }

    #[test]
    fn a_pause_keeps_the_gain_the_voice_set() {
        let mut x = talk(8.0, -38.0, -75.0);
        let voiced_gain = {
            let (_, agc) = run(&x, 960);
            agc.gain_db()
        };
        assert!(voiced_gain > 12.0, "{voiced_gain}");
        // Three seconds of the room alone after it.
        let mut seed = 3u32;
        let room = 10f32.powf(-75.0 / 20.0) * 3f32.sqrt();
        x.extend((0..RATE as usize * 3).map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32 * 2.0 - 1.0) * room
        }));
        let (_, agc) = run(&x, 960);
        assert!(
            (agc.gain_db() - voiced_gain).abs() < 0.01,
            "{} then {}",
            voiced_gain,
            agc.gain_db()
        );
    }

    #[test]
    fn the_far_ends_echo_is_not_taken_for_the_voice() {
        // The microphone hears only the far end's echo, quiet (-45 dBFS),
        // while the far end talks: no gain is learnt from it. Without the
        // far end's sound it reads as a quiet voice and is raised.
        let echo = talk(6.0, -45.0, -80.0);
        let far = talk(6.0, -20.0, -90.0);
        let mut agc = AutoGain::new(RATE, AgcConfig::default());
        let mut y = vec![0.0; echo.len()];
        for ((x, f), o) in echo.chunks(960).zip(far.chunks(960)).zip(y.chunks_mut(960)) {
            agc.process_with_far(x, Some(f), o);
        }
        assert_eq!(agc.gain_db(), 0.0);
        assert_eq!(agc.level_dbfs(), None);
        assert!(agc.stats().far_held > 100, "{:?}", agc.stats());
        let (_, blind) = run(&echo, 960);
        assert!(blind.gain_db() > 20.0, "{}", blind.gain_db());
        // The near end alone after the far end stops (past the hangover):
        // learnt as before.
        let near = talk(8.0, -38.0, -80.0);
        let quiet = vec![0.0f32; near.len()];
        for ((x, f), o) in near
            .chunks(960)
            .zip(quiet.chunks(960))
            .zip(y.chunks_mut(960))
        {
            agc.process_with_far(x, Some(f), o);
        }
        assert!(agc.gain_db() > 15.0, "{}", agc.gain_db());
    }

    #[test]
    fn any_chunking_decides_the_same_gain() {
        let x = talk(6.0, -35.0, -70.0);
        let (a, ga) = run(&x, 960);
        let (b, gb) = run(&x, 137);
        let (c, gc) = run(&x, 480);
        // Whole blocks: the same samples.
        assert_eq!(a, c);
        assert_eq!(ga.gain_db(), gc.gain_db());
        // Pieces of blocks: the same decisions (made per whole block); a
        // piece ends its ramp where the block does, so samples differ by at
        // most one block's step.
        assert_eq!(ga.gain_db(), gb.gain_db());
        assert_eq!(ga.stats(), gb.stats());
        let (la, lb) = (voiced_dbfs(&x, &a, 2.0), voiced_dbfs(&x, &b, 2.0));
        assert!((la - lb).abs() < 0.05, "{la} {lb}");
    }

    #[test]
    fn non_finite_input_comes_out_silent_and_the_state_stays_finite() {
        let mut x = talk(2.0, -30.0, -70.0);
        for v in x.iter_mut().skip(5000).step_by(997).take(40) {
            *v = f32::NAN;
        }
        x[20_000] = f32::INFINITY;
        let (y, agc) = run(&x, 960);
        assert!(y.iter().all(|v| v.is_finite() && v.abs() <= CEILING + 1e-6));
        assert!(agc.gain_db().is_finite());
    }

    #[test]
    fn digital_silence_stays_silent() {
        let x = vec![0.0f32; RATE as usize];
        let (y, agc) = run(&x, 960);
        assert!(y.iter().all(|&v| v == 0.0));
        assert_eq!(agc.stats().speech_blocks, 0);
    }
}
