//! `audio.wav_source`: plays a WAV file, or the built-in speech-like signal.
//!
//! - Output `out`: `Pcm` at `rate`.
//! - Params:
//!   - `path` (default `"builtin:speech"`): a WAV file (relative paths
//!     resolve against the graph file's folder), or `builtin:speech` (also
//!     chosen by `""` and `"builtin"`): a deterministic 4 s speech-like
//!     signal generated in code (see [`super::signal::speech_like`]), so a
//!     graph runs with no file at all.
//!   - `loop` (default false): start over at the end instead of finishing.
//!   - `rate` (Hz, default 0 = the graph rate).
//! - Counter `loops`: times playback wrapped around.
//! - Latency: none (the file is converted at build time, time-aligned).
//!
//! Any rate, any channel count, 8/16/24/32-bit integer or 32-bit float PCM
//! (`WAVE_FORMAT_EXTENSIBLE` too). The whole file is read when the stage is
//! built: channels are averaged to mono and the rate is converted with a
//! band-limited sinc resampler, all off the real-time path; `process` only
//! copies. Files longer than [`MAX_FRAMES`] frames are refused, so a
//! corrupt length field cannot make the stage allocate gigabytes. At the end
//! the last quantum is padded with silence and the stage says `Finished`.
//!
//! ```toml
//! [[stage]]
//! id = "src"
//! kind = "audio.wav_source"
//! params = { path = "${input}", loop = false }
//! ```

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec, signal};

/// Factory of `audio.wav_source`.
pub struct WavSource;

/// Longest file accepted, in frames (samples per channel): 2^25, about
/// 11.6 minutes at 48 kHz, 128 MiB as mono f32.
pub const MAX_FRAMES: u64 = 1 << 25;

/// The path value that selects the built-in speech-like signal.
pub const BUILTIN_SPEECH: &str = "builtin:speech";

/// A WAV file decoded to mono f32.
#[derive(Clone, Debug, PartialEq)]
pub struct MonoWav {
    pub rate: u32,
    /// Channels in the file (before the downmix).
    pub channels: u16,
    pub samples: Vec<f32>,
}

/// Reads a whole WAV file and averages its channels to mono. Errors say
/// which file, what is wrong with it, and what to do.
pub fn read_wav_mono(path: &Path) -> Result<MonoWav, String> {
    let shown = path.display();
    let file = File::open(path).map_err(|e| {
        format!(
            "cannot open {shown}: {e}; check the path (relative paths resolve against the \
             graph file's folder) or use path = \"{BUILTIN_SPEECH}\""
        )
    })?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot read {shown}: {e}"))?
        .len();
    if file_len == 0 {
        return Err(format!(
            "{shown} is empty; give a WAV file with audio in it, or use path = \"{BUILTIN_SPEECH}\""
        ));
    }
    let mut reader = hound::WavReader::new(BufReader::new(file)).map_err(|e| match e {
        hound::Error::Unsupported => format!(
            "{shown}: unsupported WAV encoding; use PCM 8/16/24/32-bit integer or 32-bit float \
             (e.g. `ffmpeg -i {shown} -c:a pcm_s16le out.wav`)"
        ),
        hound::Error::IoError(ref io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!(
                "{shown} is not a WAV file (it ends inside the header); give a RIFF/WAVE file \
                 or convert it (e.g. `ffmpeg -i {shown} out.wav`)"
            )
        }
        other => format!(
            "{shown} is not a readable WAV file ({other}); give a RIFF/WAVE PCM file or convert \
             it (e.g. `ffmpeg -i {shown} -c:a pcm_s16le out.wav`)"
        ),
    })?;
    let spec = reader.spec();
    let channels = spec.channels;
    if !(super::MIN_RATE..=super::MAX_RATE).contains(&spec.sample_rate) {
        return Err(format!(
            "{shown}: sample rate {} Hz is not supported; use {}..={} Hz",
            spec.sample_rate,
            super::MIN_RATE,
            super::MAX_RATE
        ));
    }
    let frames = reader.duration() as u64;
    if frames > MAX_FRAMES {
        return Err(format!(
            "{shown}: declares {frames} frames ({:.0} s); the limit is {MAX_FRAMES} frames; \
             cut the file (e.g. `ffmpeg -i {shown} -t 600 out.wav`)",
            frames as f64 / spec.sample_rate as f64
        ));
    }
    // Every sample takes at least bits/8 bytes, so a header that declares
    // more than the file holds is caught before anything is allocated.
    let min_bytes = reader.len() as u64 * (spec.bits_per_sample as u64 / 8);
    if min_bytes > file_len {
        return Err(format!(
            "{shown}: the header declares {} samples (at least {min_bytes} bytes) but the file \
             has {file_len} bytes; the file is truncated or corrupt; export it again",
            reader.len()
        ));
    }
    let mut samples = Vec::with_capacity(frames as usize);
    let truncated = |e: hound::Error| {
        format!("{shown}: cannot read the samples ({e}); the file is truncated or corrupt; export it again")
    };
    let mut acc = 0.0f64;
    let mut k = 0u16;
    let mut push = |v: f64, samples: &mut Vec<f32>| {
        acc += if v.is_finite() { v } else { 0.0 };
        k += 1;
        if k == channels {
            samples.push((acc / channels as f64) as f32);
            acc = 0.0;
            k = 0;
        }
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, bits @ 8..=32) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f64;
            for s in reader.samples::<i32>() {
                push(s.map_err(truncated)? as f64 * scale, &mut samples);
            }
        }
        (hound::SampleFormat::Float, 32) => {
            for s in reader.samples::<f32>() {
                push(s.map_err(truncated)? as f64, &mut samples);
            }
        }
        (fmt, bits) => {
            return Err(format!(
                "{shown}: {bits}-bit {fmt:?} samples are not supported; use PCM 8/16/24/32-bit \
                 integer or 32-bit float (e.g. `ffmpeg -i {shown} -c:a pcm_s16le out.wav`)"
            ))
        }
    }
    if samples.is_empty() {
        return Err(format!(
            "{shown}: the file holds no audio; give a file with samples in it"
        ));
    }
    Ok(MonoWav {
        rate: spec.sample_rate,
        channels,
        samples,
    })
}

/// What `path` selects: a built-in signal, or a file.
fn is_builtin(path: &str) -> Option<Result<(), String>> {
    match path.trim() {
        "" | "builtin" | BUILTIN_SPEECH => Some(Ok(())),
        other if other.starts_with("builtin:") => Some(Err(format!(
            "unknown built-in input {other:?}; the built-in inputs are: {BUILTIN_SPEECH}"
        ))),
        _ => None,
    }
}

/// Loads what `path` names (a file or a built-in) as mono at `rate`.
pub fn load_mono_at(path: &Path, rate: u32) -> Result<Vec<f32>, String> {
    let wav = read_wav_mono(path)?;
    signal::resample_offline(&wav.samples, wav.rate, rate)
        .map_err(|e| format!("{}: {e}", path.display()))
}

struct WavSourceProc {
    data: Box<[f32]>,
    pos: usize,
    looping: bool,
    loops: Counter,
}

impl Processor for WavSourceProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let len = self.data.len();
        if len == 0 || (self.pos >= len && !self.looping) {
            return Flow::Finished;
        }
        let out = io.pcm_out(0);
        let mut filled = 0;
        while filled < out.len() {
            if self.pos >= len {
                if !self.looping {
                    break;
                }
                self.pos = 0;
                self.loops.inc();
            }
            let take = (out.len() - filled).min(len - self.pos);
            out[filled..filled + take].copy_from_slice(&self.data[self.pos..self.pos + take]);
            filled += take;
            self.pos += take;
        }
        Flow::Continue
    }
}

impl StageFactory for WavSource {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.wav_source",
            summary: "plays a WAV file (any rate/channels, downmixed and resampled at build) or the built-in speech-like signal",
            inputs: vec![],
            outputs: vec![pcm_port("out", "the file's audio, mono")],
            params: vec![
                ParamSpec::str(
                    "path",
                    BUILTIN_SPEECH,
                    "WAV file to play, or \"builtin:speech\" for the built-in speech-like signal",
                ),
                ParamSpec::bool("loop", false, "start over at the end instead of finishing"),
                rate_spec(),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let path = p.str("path")?;
        let data = match is_builtin(path) {
            Some(Ok(())) => signal::speech_like(rate),
            Some(Err(msg)) => return Err(ParamError::new("path", msg).into()),
            None => load_mono_at(&cx.resolve_path(path), rate)
                .map_err(|e| BuildError::Other(format!("audio.wav_source: {e}")))?,
        };
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
            latency: Duration::ZERO,
            processor: Box::new(WavSourceProc {
                data: data.into_boxed_slice(),
                pos: 0,
                looping: p.bool("loop")?,
                loops: cx.counter("loops"),
            }),
        })
    }
}
