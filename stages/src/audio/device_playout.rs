//! `audio.device_playout`: plays its input on an audio output device (a
//! speaker or headset) through cpal (ALSA on Linux).
//!
//! - Input `in`: `Pcm` at `rate`, mono (written to every device channel,
//!   clamped to full scale).
//! - Params: `device` (default `"default"`: the host's default output; else
//!   an exact device id or name, or a case-insensitive part of one; the error
//!   lists the names when nothing matches), `prefill` (default `"20ms"`,
//!   range 0..=1s: silence queued ahead of the graph's audio, the cushion
//!   that absorbs the device's and the graph's timing jitter), `buffer`
//!   (default `"200ms"`, range 10ms..=10s: the most audio that may wait for
//!   the device; must hold `prefill` plus two quanta), `rate` (Hz, default 0
//!   = the graph rate), `drift_correction` (default true: see **Clocks**).
//! - Counters: `underruns` (device callbacks that found too little audio;
//!   the gap is silence, and playback resumes once `prefill` is queued
//!   again), `overruns` (quanta that found the ring full; their excess was
//!   dropped), `device_samples` (frames the device asked for),
//!   `stream_errors` (errors the backend reported while running, each logged
//!   by the stage's stream thread).
//! - Gauges: `device_channels`, `device_buffer_frames` (the device period
//!   cpal reports; 0 when unknown), `drift_ppm` (how much faster the
//!   device's clock runs than the graph's, as corrected now), `queued_ms`
//!   (audio waiting between device and graph, as the correction counts it).
//!   Counter `resyncs`: stalls after which the audio queued beyond the
//!   ring's settled level (more than 80 ms of it) was dropped at once.
//! - Latency: `prefill`, plus 8 samples with drift correction. The device's
//!   own period comes on top and is only known once the device is open
//!   (`device_buffer_frames`).
//!
//! **No audio hardware.** Build fails with a message that says so and names
//! the alternatives (`--output FILE.wav` / `--output null`, i.e.
//! `audio.wav_sink` / `audio.null_sink`). ALSA's `null` device is used only
//! when named exactly (`device = "null"`): it discards everything and is not
//! clocked (it asks for audio as fast as the CPU allows), so picking it
//! silently would hide a missing speaker and count endless underruns.
//!
//! **Rates.** The device is opened at exactly the port rate; see
//! `audio.device_capture` for why the callback never resamples. A device
//! that cannot play at the rate fails at build with the rates it supports;
//! put `audio.resample` before this stage and set `rate` to one of them.
//!
//! **Clocks.** Run device graphs with the `timer` driver: the `fast` driver
//! outruns any device (quanta would overrun the ring). The graph's clock
//! and the device's are separate crystals; with `drift_correction` (the
//! default) the stage resamples what it queues by up to 2000 ppm so the
//! ring stays at the level it settled at in the first 1.5 s (module
//! [`super::drift`]): a device 100 ppm fast would otherwise drain the
//! 20 ms cushion in 200 s and click every few minutes. With it off, drift
//! shows up, slowly, as `underruns` or `overruns`.
//!
//! With `graph explain` (a dry run) no device is opened.
//!
//! ```toml
//! [[stage]]
//! id = "speaker"
//! kind = "audio.device_playout"
//! params = { device = "default", prefill = "20ms" }
//!
//! [[link]]
//! from = "dec.out"
//! to = "speaker.in"
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cpal::traits::DeviceTrait;
use wzp_engine::prelude::*;

use super::device::{
    buffer_param, samples_in, start_stream, Direction, DryRun, PlayoutDrain, StreamOwner,
    StreamRequest, DEFAULT_DEVICE,
};
use super::drift::{self, step_ppm, DeviceTiming, DriftControl, Resampler, TAPS};
use super::{pcm_port, rate_param, rate_spec};

const KIND: &str = "audio.device_playout";

/// Factory of `audio.device_playout`.
pub struct DevicePlayout;

struct PlayoutProc {
    ring: rtrb::Producer<f32>,
    capacity: usize,
    armed: Arc<AtomicBool>,
    is_armed: bool,
    overruns: Counter,
    /// `None` when `drift_correction = false`.
    drift: Option<PlayoutDrift>,
    /// Keeps the device open; `None` when the caller drives the drain.
    _owner: Option<StreamOwner>,
}

/// What follows the device's clock: the ring's level in, a rate change out.
struct PlayoutDrift {
    timing: Arc<DeviceTiming>,
    /// Samples still to leave out after a stall (a quantum's worth at most
    /// each cycle).
    to_drop: usize,
    resyncs: Counter,
    queued_ms: Gauge,
    control: DriftControl,
    resampler: Resampler,
    scratch: Box<[f32]>,
    ppm: Gauge,
    rate: u32,
}

/// Queues `x` for the device; what does not fit is dropped and counted.
fn push(ring: &mut rtrb::Producer<f32>, overruns: &Counter, x: &[f32]) {
    let n = x.len().min(ring.slots());
    if n > 0 {
        if let Ok(chunk) = ring.write_chunk_uninit(n) {
            chunk.fill_from_iter(x[..n].iter().copied());
        }
    }
    if n < x.len() {
        overruns.inc();
    }
}

impl Processor for PlayoutProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let x = io.pcm_in(0);
        if let Some(d) = &mut self.drift {
            // The level before this quantum: what the device has not yet
            // played. A device clock faster than the graph's drains it.
            let (ring, capacity) = (&self.ring, self.capacity);
            let level =
                drift::playout_level(&d.timing, d.rate, || capacity.saturating_sub(ring.slots()));
            // After a stall of the device the ring holds far more than it
            // settled at: what is queued cannot be taken back, so the excess
            // comes out of what this quantum (and the next, if need be)
            // would add: one jump rather than minutes of added delay.
            if d.to_drop == 0 {
                d.to_drop = d.control.excess(level);
                if d.to_drop > 0 {
                    d.resyncs.inc();
                }
            }
            d.queued_ms
                .set((level as u64 * 1000 / d.rate.max(1) as u64) as i64);
            let step = d.control.observe(level.saturating_sub(d.to_drop));
            // Producing more than a quantum (step < 1) feeds a faster device.
            d.ppm.set(-step_ppm(step));
            d.resampler.feed(x);
            let n = d.resampler.produce(step, &mut d.scratch);
            let skip = d.to_drop.min(n);
            d.to_drop -= skip;
            push(&mut self.ring, &self.overruns, &d.scratch[skip..n]);
        } else {
            push(&mut self.ring, &self.overruns, x);
        }
        // Armed after the push, so the device's first read finds the
        // cushion plus this quantum.
        if !self.is_armed {
            self.armed.store(true, Ordering::Release);
            self.is_armed = true;
        }
        Flow::Continue
    }
}

struct Settings {
    device: String,
    rate: u32,
    capacity: usize,
    prefill: Duration,
    prefill_samples: usize,
    drift_correction: bool,
}

fn settings(cx: &BuildContext<'_>, p: &Params) -> Result<Settings, BuildError> {
    let rate = rate_param(cx, p, "rate")?;
    let buffer = buffer_param(p, "buffer")?;
    let prefill = p.duration("prefill")?;
    if prefill > Duration::from_secs(1) {
        return Err(ParamError::new(
            "prefill",
            format!("{prefill:?} is out of range; use 0..=1s"),
        )
        .into());
    }
    let capacity = samples_in(buffer, rate);
    let quantum = cx.samples_at(rate);
    let prefill_samples = samples_in(prefill, rate);
    if capacity < prefill_samples + 2 * quantum {
        return Err(ParamError::new(
            "buffer",
            format!(
                "{buffer:?} cannot hold the {prefill:?} prefill plus two {:?} quanta; give at least {:?}",
                cx.quantum,
                prefill + cx.quantum * 2
            ),
        )
        .into());
    }
    let device = p.str("device")?.trim().to_string();
    if device.is_empty() {
        return Err(ParamError::new(
            "device",
            "is empty; use \"default\" or a device name (the error of a wrong name lists them)",
        )
        .into());
    }
    Ok(Settings {
        device,
        rate,
        capacity,
        prefill,
        prefill_samples,
        drift_correction: p.bool("drift_correction")?,
    })
}

/// The processor and the drain around one ring (the cushion already
/// queued), with every metric registered.
fn parts(cx: &mut BuildContext<'_>, s: &Settings) -> (PlayoutProc, PlayoutDrain, Counter) {
    let (mut tx, rx) = rtrb::RingBuffer::new(s.capacity);
    if s.prefill_samples > 0 {
        if let Ok(chunk) = tx.write_chunk_uninit(s.prefill_samples) {
            chunk.fill_from_iter(std::iter::repeat(0.0f32));
        }
    }
    let armed = Arc::new(AtomicBool::new(false));
    let quantum = cx.samples_at(s.rate);
    let timing: Arc<DeviceTiming> = Default::default();
    let drift = s.drift_correction.then(|| PlayoutDrift {
        timing: timing.clone(),
        to_drop: 0,
        resyncs: cx.counter("resyncs"),
        queued_ms: cx.gauge("queued_ms"),
        rate: s.rate,
        control: DriftControl::new(s.rate, cx.quantum.as_secs_f64()),
        resampler: Resampler::new(quantum),
        // A quantum at the largest step down, and some.
        scratch: vec![0.0; 2 * quantum + TAPS].into_boxed_slice(),
        ppm: cx.gauge("drift_ppm"),
    });
    let proc = PlayoutProc {
        ring: tx,
        capacity: s.capacity,
        armed: armed.clone(),
        is_armed: false,
        overruns: cx.counter("overruns"),
        drift,
        _owner: None,
    };
    let drain = PlayoutDrain::new(
        rx,
        s.prefill_samples,
        armed,
        cx.counter("underruns"),
        cx.counter("device_samples"),
    )
    .with_timing(timing);
    (proc, drain, cx.counter("stream_errors"))
}

fn built(s: &Settings, processor: Box<dyn Processor>) -> Built {
    let rate = s.rate;
    Built {
        inputs: vec![PortDecl::new("in", PortType::Pcm { rate })],
        outputs: vec![],
        latency: s.prefill + drift::added_latency(s.drift_correction, rate),
        processor,
    }
}

/// Builds the stage with the device side handed to the caller instead of to
/// cpal: whoever holds the [`PlayoutDrain`] plays the device callback. For
/// tests, and for hosts that run their own audio callback. The `device`
/// param is checked but not used.
pub fn build_detached(
    cx: &mut BuildContext<'_>,
    p: &Params,
) -> Result<(Built, PlayoutDrain), BuildError> {
    let s = settings(cx, p)?;
    let (proc, drain, _stream_errors) = parts(cx, &s);
    cx.gauge("device_channels").set(1);
    cx.gauge("device_buffer_frames");
    Ok((built(&s, Box::new(proc)), drain))
}

impl StageFactory for DevicePlayout {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "plays its input on an audio output device (cpal; mono to every channel)",
            inputs: vec![pcm_port("in", "the audio to play")],
            outputs: vec![],
            params: vec![
                ParamSpec::str(
                    "device",
                    DEFAULT_DEVICE,
                    "\"default\", or a device id/name or part of one; \"null\" only when named exactly",
                ),
                ParamSpec::duration(
                    "prefill",
                    Duration::from_millis(20),
                    "silence queued ahead of the audio, the jitter cushion (0..=1s); the declared latency",
                ),
                ParamSpec::duration(
                    "buffer",
                    Duration::from_millis(200),
                    "most audio that may wait for the device (10ms..=10s, >= prefill + 2 quanta)",
                ),
                rate_spec(),
                ParamSpec::bool(
                    "drift_correction",
                    true,
                    "follow the device's clock (resample by up to 2000 ppm to hold the ring's level); false: drift shows as underruns/overruns",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let s = settings(cx, p)?;
        if cx.dry_run {
            // `graph explain`: describe the stage, open no device.
            return Ok(built(&s, Box::new(DryRun)));
        }
        let (mut proc, mut drain, stream_errors) = parts(cx, &s);
        let req = StreamRequest {
            kind: KIND,
            stage_id: cx.stage_id.to_string(),
            direction: Direction::Output,
            device: s.device.clone(),
            rate: s.rate,
        };
        let (owner, opened) =
            start_stream(req, stream_errors, move |dev, config, format, on_error| {
                drain.set_channels(config.channels);
                match format {
                    cpal::SampleFormat::I16 => dev.build_output_stream::<i16, _, _>(
                        config,
                        move |data, _| drain.fill_interleaved(data),
                        on_error,
                        None,
                    ),
                    _ => dev.build_output_stream::<f32, _, _>(
                        config,
                        move |data, _| drain.fill_interleaved(data),
                        on_error,
                        None,
                    ),
                }
            })?;
        tracing::info!(
            stage = %cx.stage_id,
            "{KIND}: playing on {} ({} ch, {}, {} Hz, period {:?} frames)",
            opened.device,
            opened.channels,
            opened.format,
            s.rate,
            opened.buffer_frames
        );
        cx.gauge("device_channels").set(opened.channels as i64);
        cx.gauge("device_buffer_frames")
            .set(opened.buffer_frames.unwrap_or(0) as i64);
        proc._owner = Some(owner);
        Ok(built(&s, Box::new(proc)))
    }
}
