//! `audio.device_capture`: records from an audio input device (a
//! microphone) through cpal (ALSA on Linux).
//!
//! - Output `out`: `Pcm` at `rate`, mono (all device channels averaged).
//! - Params: `device` (default `"default"`: the host's default input; else
//!   an exact device id or name such as `"hw:CARD=PCH,DEV=0"`, or a
//!   case-insensitive part of one; the error lists the names when nothing
//!   matches), `buffer` (default `"200ms"`, range 10ms..=10s: the most audio
//!   that may wait between the device and the graph; must hold two quanta),
//!   `rate` (Hz, default 0 = the graph rate), `drift_correction` (default
//!   true: see **Clocks**).
//! - Counters: `underruns` (quanta the device had not filled; the gap is
//!   silence), `overruns` (device callbacks that found the ring full; their
//!   newest samples were dropped), `device_samples` (frames the device
//!   delivered), `stream_errors` (errors the backend reported while running,
//!   each logged by the stage's stream thread).
//! - Gauges: `device_channels`, `device_buffer_frames` (the device period
//!   cpal reports; 0 when unknown), `drift_ppm` (how much faster the
//!   device's clock runs than the graph's, as corrected now), `queued_ms`
//!   (audio waiting between device and graph, as the correction counts it).
//!   Counter `resyncs`: stalls after which the audio queued beyond the
//!   ring's settled level (more than 80 ms of it) was dropped at once.
//! - Latency: one quantum (a sample waits for the next cycle), plus 8
//!   samples with drift correction. The device's
//!   own period comes on top and is only known once the device is open: it
//!   is shown in `device_buffer_frames`.
//!
//! **No audio hardware.** Build fails with a message that says so and names
//! the alternatives (`--input tone` / `--input FILE.wav`, i.e.
//! `audio.tone_source` / `audio.wav_source`). ALSA's `null` device, listed on
//! every Linux machine, is never picked by `"default"` or by a partial name:
//! it captures endless zeros and is not clocked, so a call would silently
//! send silence. Name it exactly (`device = "null"`) to get that on purpose.
//!
//! **Rates.** The device is opened at exactly the port rate; the callback
//! never resamples. ALSA's `default` and `plughw:` devices convert rates
//! themselves, so this suits nearly every Linux setup; a device that cannot
//! (a raw `hw:` device) fails at build with the rates it supports, and the
//! graph then sets `rate` to one of them and adds `audio.resample` after
//! this stage. A second resampler inside the callback would duplicate
//! `audio.resample` (rubato, sinc) at lower quality and add work to the
//! device thread, which must stay cheap.
//!
//! **Clocks.** Run device graphs with the `timer` driver: the `fast` driver
//! outruns any device (every cycle would underrun). The graph clock and the
//! device clock are separate crystals; with `drift_correction` (the
//! default) the stage resamples what it takes by up to 2000 ppm so the ring
//! stays at the level it settled at in the first 1.5 s (module
//! [`super::drift`]): a microphone 100 ppm fast would otherwise add 6 ms of
//! delay a minute until the buffer overflows. With it off, drift shows up,
//! slowly, as `underruns` or `overruns`.
//!
//! With `graph explain` (a dry run) no device is opened.
//!
//! ```toml
//! [[stage]]
//! id = "mic"
//! kind = "audio.device_capture"
//! params = { device = "default", buffer = "200ms" }
//!
//! [[link]]
//! from = "mic.out"
//! to = "enc.in"
//! ```

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cpal::traits::DeviceTrait;
use wzp_engine::prelude::*;

use super::device::{
    buffer_param, samples_in, start_stream, CaptureFeed, Direction, DryRun, StreamOwner,
    StreamRequest, DEFAULT_DEVICE,
};
use super::drift::{self, step_ppm, DeviceTiming, DriftControl, Resampler, TAPS};
use super::{pcm_port, rate_param, rate_spec};

const KIND: &str = "audio.device_capture";

/// Factory of `audio.device_capture`.
pub struct DeviceCapture;

struct CaptureProc {
    ring: rtrb::Consumer<f32>,
    armed: Arc<AtomicBool>,
    is_armed: bool,
    primed: bool,
    largest_period: Arc<AtomicUsize>,
    capacity: usize,
    underruns: Counter,
    /// `None` when `drift_correction = false`.
    drift: Option<CaptureDrift>,
    _owner: Option<StreamOwner>,
}

/// What follows the device's clock: the ring's level in, a rate change out.
struct CaptureDrift {
    timing: Arc<DeviceTiming>,
    rate: u32,
    resyncs: Counter,
    queued_ms: Gauge,
    control: DriftControl,
    resampler: Resampler,
    ppm: Gauge,
}

impl Processor for CaptureProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if !self.is_armed {
            self.armed.store(true, Ordering::Release);
            self.is_armed = true;
        }
        let out = io.pcm_out(0);
        let want = out.len();
        let avail = self.ring.slots();
        if !self.primed {
            let margin = self.largest_period.load(Ordering::Relaxed);
            let mut needed = (want + margin).min(self.capacity);
            if let Some(d) = &self.drift {
                needed = needed.max(d.resampler.needed_for(want, d.control.step()));
            }
            if avail < needed {
                return Flow::Continue;
            }
            self.primed = true;
        }
        let n = match &mut self.drift {
            None => {
                let n = avail.min(want);
                if n > 0 {
                    if let Ok(chunk) = self.ring.read_chunk(n) {
                        let (a, b) = chunk.as_slices();
                        out[..a.len()].copy_from_slice(a);
                        out[a.len()..a.len() + b.len()].copy_from_slice(b);
                        chunk.commit_all();
                    }
                }
                n
            }
            Some(d) => {
                // A device clock faster than the graph's fills the ring:
                // take a little more than a quantum's worth (step > 1).
                let ring = &self.ring;
                let mut level = drift::capture_level(&d.timing, d.rate, || ring.slots());
                // After a stall of the graph the ring holds far more than
                // it settled at: drop the excess at once (one jump) rather
                // than carry the delay for minutes.
                let mut avail = avail;
                let drop = d.control.excess(level).min(avail);
                if drop > 0 {
                    if let Ok(chunk) = self.ring.read_chunk(drop) {
                        chunk.commit_all();
                    }
                    d.resyncs.inc();
                    level -= drop;
                    avail -= drop;
                }
                d.queued_ms
                    .set((level as u64 * 1000 / d.rate.max(1) as u64) as i64);
                let step = d.control.observe(level);
                d.ppm.set(step_ppm(step));
                let take = d.resampler.needed_for(want, step).min(avail);
                if take > 0 {
                    if let Ok(chunk) = self.ring.read_chunk(take) {
                        let (a, b) = chunk.as_slices();
                        d.resampler.feed2(a, b);
                        chunk.commit_all();
                    }
                }
                let n = d.resampler.produce(step, out);
                out[n..].fill(0.0);
                n
            }
        };
        if n < want {
            self.underruns.inc();
            self.primed = false;
        }
        Flow::Continue
    }
}

struct Settings {
    device: String,
    rate: u32,
    capacity: usize,
    drift_correction: bool,
}

fn settings(cx: &BuildContext<'_>, p: &Params) -> Result<Settings, BuildError> {
    let rate = rate_param(cx, p, "rate")?;
    let buffer = buffer_param(p, "buffer")?;
    let capacity = samples_in(buffer, rate);
    let quantum = cx.samples_at(rate);
    if capacity < 2 * quantum {
        return Err(ParamError::new(
            "buffer",
            format!(
                "{buffer:?} holds less than two {:?} quanta; give at least {:?}",
                cx.quantum,
                cx.quantum * 2
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
        drift_correction: p.bool("drift_correction")?,
    })
}

/// The processor and the feed around one ring, with every metric registered.
fn parts(cx: &mut BuildContext<'_>, s: &Settings) -> (CaptureProc, CaptureFeed, Counter) {
    let (tx, rx) = rtrb::RingBuffer::new(s.capacity);
    let armed = Arc::new(AtomicBool::new(false));
    let largest_period = Arc::new(AtomicUsize::new(0));
    let quantum = cx.samples_at(s.rate);
    let timing: Arc<DeviceTiming> = Default::default();
    let drift = s.drift_correction.then(|| CaptureDrift {
        timing: timing.clone(),
        rate: s.rate,
        resyncs: cx.counter("resyncs"),
        queued_ms: cx.gauge("queued_ms"),
        control: DriftControl::new(s.rate, cx.quantum.as_secs_f64()),
        // A quantum at the largest step up, and some.
        resampler: Resampler::new(2 * quantum + TAPS),
        ppm: cx.gauge("drift_ppm"),
    });
    let proc = CaptureProc {
        ring: rx,
        armed: armed.clone(),
        is_armed: false,
        primed: false,
        largest_period: largest_period.clone(),
        capacity: s.capacity,
        underruns: cx.counter("underruns"),
        drift,
        _owner: None,
    };
    let feed = CaptureFeed::new(
        tx,
        armed,
        largest_period,
        cx.counter("overruns"),
        cx.counter("device_samples"),
    )
    .with_timing(timing);
    (proc, feed, cx.counter("stream_errors"))
}

fn built(cx: &BuildContext<'_>, s: &Settings, processor: Box<dyn Processor>) -> Built {
    let rate = s.rate;
    Built {
        inputs: vec![],
        outputs: vec![PortDecl::new("out", PortType::Pcm { rate })],
        latency: cx.quantum + drift::added_latency(s.drift_correction, rate),
        processor,
    }
}

/// Builds the stage with the device side handed to the caller instead of to
/// cpal: whoever holds the [`CaptureFeed`] plays the device callback. For
/// tests, and for hosts that run their own audio callback. The `device`
/// param is checked but not used.
pub fn build_detached(
    cx: &mut BuildContext<'_>,
    p: &Params,
) -> Result<(Built, CaptureFeed), BuildError> {
    let s = settings(cx, p)?;
    let (proc, feed, _stream_errors) = parts(cx, &s);
    cx.gauge("device_channels").set(1);
    cx.gauge("device_buffer_frames");
    Ok((built(cx, &s, Box::new(proc)), feed))
}

impl StageFactory for DeviceCapture {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: KIND,
            summary: "records from an audio input device (cpal; mono, at the port rate)",
            inputs: vec![],
            outputs: vec![pcm_port("out", "the captured audio, channels averaged")],
            params: vec![
                ParamSpec::str(
                    "device",
                    DEFAULT_DEVICE,
                    "\"default\", or a device id/name or part of one; \"null\" only when named exactly",
                ),
                ParamSpec::duration(
                    "buffer",
                    Duration::from_millis(200),
                    "most audio that may wait between device and graph (10ms..=10s, >= 2 quanta)",
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
            return Ok(built(cx, &s, Box::new(DryRun)));
        }
        let (mut proc, mut feed, stream_errors) = parts(cx, &s);
        let req = StreamRequest {
            kind: KIND,
            stage_id: cx.stage_id.to_string(),
            direction: Direction::Input,
            device: s.device.clone(),
            rate: s.rate,
        };
        let (owner, opened) =
            start_stream(req, stream_errors, move |dev, config, format, on_error| {
                feed.set_channels(config.channels);
                match format {
                    cpal::SampleFormat::I16 => dev.build_input_stream::<i16, _, _>(
                        config,
                        move |data, _| feed.push_interleaved(data),
                        on_error,
                        None,
                    ),
                    _ => dev.build_input_stream::<f32, _, _>(
                        config,
                        move |data, _| feed.push_interleaved(data),
                        on_error,
                        None,
                    ),
                }
            })?;
        tracing::info!(
            stage = %cx.stage_id,
            "{KIND}: capturing from {} ({} ch, {}, {} Hz, period {:?} frames)",
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
        Ok(built(cx, &s, Box::new(proc)))
    }
}
