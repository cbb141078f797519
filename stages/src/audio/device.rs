//! What `audio.device_capture` and `audio.device_playout` share: finding a
//! cpal device and a stream config, the device-callback halves of the rings
//! ([`CaptureFeed`], [`PlayoutDrain`]), and the thread that owns a cpal
//! stream for the stage's lifetime.
//!
//! ## Threads
//!
//! Three threads touch a device stage:
//!
//! - the **graph's real-time thread** runs the processor, which only pops
//!   from or pushes to an `rtrb` ring and sets one atomic flag;
//! - **cpal's device thread** runs the data callback, which converts samples
//!   (downmix to mono, or mono to every channel) between the device buffer
//!   and the ring. It is real-time too: no allocation, lock or log;
//! - a **stream owner thread**, started at build and joined when the
//!   processor is dropped. It opens the host, the device and the stream,
//!   keeps the `cpal::Stream` alive, and logs stream errors that the error
//!   callback hands it through a ring.
//!
//! Why a stream owner thread rather than keeping the `Stream` inside the
//! processor: cpal 0.18 declares `Stream: Send` on every host, but earlier
//! releases did not on some (Android AAudio, macOS), and some backends want a
//! stream created and dropped on one thread (COM on WASAPI). Dropping a
//! stream closes the device and joins cpal's thread, which blocks: with the
//! stream on its own thread that can never happen on the real-time path,
//! whatever thread the engine drops processors on. The same thread is the
//! "control side" that logs stream errors, so nothing logs from a callback.
//!
//! ## Start-up
//!
//! The stream runs from build, but the graph may start much later. Until
//! the processor's first `process` sets the shared `armed` flag, the capture
//! callback discards what it hears (so the first quantum is fresh, not
//! 200 ms old) and the playout callback plays silence without touching the
//! ring (so the pre-filled cushion is still there when the graph starts).
//! Nothing is counted as an underrun or overrun before that.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::drift::DeviceTiming;
use wzp_engine::prelude::*;

/// The name that selects the host's default device.
pub const DEFAULT_DEVICE: &str = "default";

/// ALSA's `null` PCM: it discards playback and captures zeros, and it is not
/// clocked (it runs as fast as the CPU allows: measured here at over 100
/// million frames a second). It is listed on every Linux machine, even one
/// without a sound card, so "the first device that matches" would silently
/// pick it. It is used only when named exactly.
pub const NULL_DEVICE: &str = "null";

/// How long build waits for the backend to open a device.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the stream owner thread looks for stream errors to log.
const OWNER_POLL: Duration = Duration::from_millis(100);

/// Stream errors kept for logging between two polls; more are only counted.
const ERROR_RING: usize = 32;

/// Which way audio flows through the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl Direction {
    fn word(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }

    /// What to use instead on a machine without audio hardware.
    fn alternatives(self) -> &'static str {
        match self {
            Direction::Input => {
                "On a machine without audio hardware use --input tone or --input FILE.wav \
                 (stages audio.tone_source / audio.wav_source)"
            }
            Direction::Output => {
                "On a machine without audio hardware use --output FILE.wav or --output null \
                 (stages audio.wav_sink / audio.null_sink)"
            }
        }
    }
}

/// A sample format the callbacks convert to and from mono f32.
pub trait DeviceSample: Copy + Send + 'static {
    const SILENCE: Self;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl DeviceSample for f32 {
    const SILENCE: Self = 0.0;

    #[inline]
    fn to_f32(self) -> f32 {
        // A driver bug must not carry NaN or infinity into the graph.
        if self.is_finite() {
            self
        } else {
            0.0
        }
    }

    #[inline]
    fn from_f32(v: f32) -> Self {
        // Speakers get nothing beyond full scale, whatever the graph made.
        if v.is_nan() {
            0.0
        } else {
            v.clamp(-1.0, 1.0)
        }
    }
}

impl DeviceSample for i16 {
    const SILENCE: Self = 0;

    #[inline]
    fn to_f32(self) -> f32 {
        self as f32 / 32768.0
    }

    #[inline]
    fn from_f32(v: f32) -> Self {
        let v = if v.is_nan() { 0.0 } else { v.clamp(-1.0, 1.0) };
        (v * i16::MAX as f32).round() as i16
    }
}

/// The device-callback half of `audio.device_capture`: takes interleaved
/// frames from the device, downmixes them to mono and pushes them into the
/// ring that the processor reads.
///
/// It is handed to cpal's input callback; [`crate::audio::device_capture::build_detached`]
/// hands it to the caller instead, for tests and for hosts that run their
/// own audio callback.
pub struct CaptureFeed {
    ring: rtrb::Producer<f32>,
    channels: usize,
    armed: Arc<AtomicBool>,
    /// Largest callback seen, in frames: the processor keeps that much in
    /// hand on top of a quantum, so a device whose period does not divide
    /// the quantum does not underrun every few cycles.
    largest_period: Arc<AtomicUsize>,
    overruns: Counter,
    device_samples: Counter,
    timing: Arc<DeviceTiming>,
}

impl CaptureFeed {
    pub(crate) fn new(
        ring: rtrb::Producer<f32>,
        armed: Arc<AtomicBool>,
        largest_period: Arc<AtomicUsize>,
        overruns: Counter,
        device_samples: Counter,
    ) -> Self {
        CaptureFeed {
            ring,
            channels: 1,
            armed,
            largest_period,
            overruns,
            device_samples,
            timing: Default::default(),
        }
    }

    /// When this callback last ran, shared with the processor's drift
    /// correction; [`DeviceTiming::set_now`] puts it on a caller's clock.
    pub fn timing(&self) -> &Arc<DeviceTiming> {
        &self.timing
    }

    pub(crate) fn with_timing(mut self, timing: Arc<DeviceTiming>) -> Self {
        self.timing = timing;
        self
    }

    /// Sets the number of interleaved channels in each device buffer (at
    /// least 1).
    pub fn set_channels(&mut self, channels: u16) {
        self.channels = channels.max(1) as usize;
    }

    /// One device callback: `data` holds whole interleaved frames (a partial
    /// frame at the end is ignored). Real-time safe: no allocation, lock or
    /// log. Counts one overrun when the ring cannot take every frame; the
    /// newest frames are the ones dropped.
    pub fn push_interleaved<S: DeviceSample>(&mut self, data: &[S]) {
        let ch = self.channels;
        let frames = data.len() / ch;
        self.device_samples.add(frames as u64);
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let at = self.timing.begin();
        if frames > self.largest_period.load(Ordering::Relaxed) {
            self.largest_period.store(frames, Ordering::Relaxed);
        }
        let n = frames.min(self.ring.slots());
        if n > 0 {
            if let Ok(chunk) = self.ring.write_chunk_uninit(n) {
                let scale = 1.0 / ch as f32;
                chunk.fill_from_iter(
                    data.chunks_exact(ch)
                        .map(|f| f.iter().map(|s| s.to_f32()).sum::<f32>() * scale),
                );
            }
        }
        if n < frames {
            self.overruns.inc();
        }
        self.timing.end(at, frames);
    }
}

/// The device-callback half of `audio.device_playout`: pops mono samples the
/// processor pushed and writes each to every channel of the device buffer.
///
/// After an underrun it plays silence until the ring again holds the
/// `prefill` cushion (and at least one whole callback), so a late graph
/// costs one gap, not a stutter of tiny gaps.
pub struct PlayoutDrain {
    ring: rtrb::Consumer<f32>,
    channels: usize,
    prefill: usize,
    primed: bool,
    armed: Arc<AtomicBool>,
    underruns: Counter,
    device_samples: Counter,
    timing: Arc<DeviceTiming>,
}

impl PlayoutDrain {
    pub(crate) fn new(
        ring: rtrb::Consumer<f32>,
        prefill: usize,
        armed: Arc<AtomicBool>,
        underruns: Counter,
        device_samples: Counter,
    ) -> Self {
        PlayoutDrain {
            ring,
            channels: 1,
            prefill,
            primed: false,
            armed,
            underruns,
            device_samples,
            timing: Default::default(),
        }
    }

    /// When this callback last ran, shared with the processor's drift
    /// correction; [`DeviceTiming::set_now`] puts it on a caller's clock.
    pub fn timing(&self) -> &Arc<DeviceTiming> {
        &self.timing
    }

    pub(crate) fn with_timing(mut self, timing: Arc<DeviceTiming>) -> Self {
        self.timing = timing;
        self
    }

    /// Sets the number of interleaved channels in each device buffer (at
    /// least 1).
    pub fn set_channels(&mut self, channels: u16) {
        self.channels = channels.max(1) as usize;
    }

    /// One device callback: fills `out` (interleaved frames) from the ring,
    /// silence where the ring has nothing. Real-time safe.
    pub fn fill_interleaved<S: DeviceSample>(&mut self, out: &mut [S]) {
        let ch = self.channels;
        let frames = out.len() / ch;
        self.device_samples.add(frames as u64);
        let at = self.timing.begin();
        let mut n = 0;
        if self.armed.load(Ordering::Acquire) {
            let avail = self.ring.slots();
            // Resume only when a whole callback can be served, else a device
            // period longer than the cushion would underrun every time.
            if !self.primed && avail >= self.prefill.max(frames).max(1) {
                self.primed = true;
            }
            if self.primed {
                n = frames.min(avail);
                if n < frames {
                    self.underruns.inc();
                    self.primed = false;
                }
            }
        }
        if n > 0 {
            if let Ok(chunk) = self.ring.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                for (frame, &v) in out.chunks_exact_mut(ch).zip(a.iter().chain(b)) {
                    frame.fill(S::from_f32(v));
                }
                chunk.commit_all();
            } else {
                n = 0;
            }
        }
        // cpal pre-fills output buffers with silence, but a host that does
        // not must still not replay stale samples.
        out[n * ch..].fill(S::SILENCE);
        self.timing.end(at, n);
    }
}

/// Hands cpal's error callback's errors to the stream owner thread.
struct ErrorReporter {
    ring: rtrb::Producer<cpal::Error>,
    total: Arc<AtomicU64>,
}

impl ErrorReporter {
    fn report(&mut self, e: cpal::Error) {
        self.total.fetch_add(1, Ordering::Relaxed);
        // A full ring only loses the text; the count above stays exact.
        let _ = self.ring.push(e);
    }
}

/// The owner thread's end of the error channel: counts every error the
/// callback reported and yields the ones whose text was kept.
struct ErrorLog {
    ring: rtrb::Consumer<cpal::Error>,
    total: Arc<AtomicU64>,
    seen: u64,
    counter: Counter,
}

impl ErrorLog {
    /// Brings `stream_errors` up to date and returns the errors to log.
    fn collect(&mut self) -> impl Iterator<Item = cpal::Error> + '_ {
        let now = self.total.load(Ordering::Relaxed);
        if now > self.seen {
            self.counter.add(now - self.seen);
            self.seen = now;
        }
        std::iter::from_fn(|| self.ring.pop().ok())
    }
}

fn error_channel(counter: Counter) -> (ErrorReporter, ErrorLog) {
    let (tx, rx) = rtrb::RingBuffer::new(ERROR_RING);
    let total = Arc::new(AtomicU64::new(0));
    (
        ErrorReporter {
            ring: tx,
            total: total.clone(),
        },
        ErrorLog {
            ring: rx,
            total,
            seen: 0,
            counter,
        },
    )
}

/// What the owner thread tells build about the stream it opened.
#[derive(Clone, Debug)]
pub(crate) struct Opened {
    pub device: String,
    pub channels: u16,
    pub format: cpal::SampleFormat,
    pub buffer_frames: Option<u32>,
}

/// Keeps the stream owner thread alive; dropping it stops the stream and
/// joins the thread (a blocking call, made wherever the engine drops
/// processors, which is never the real-time thread).
pub(crate) struct StreamOwner {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for StreamOwner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// What a stage asks of the owner thread.
pub(crate) struct StreamRequest {
    /// `audio.device_capture` or `audio.device_playout`, for messages.
    pub kind: &'static str,
    pub stage_id: String,
    pub direction: Direction,
    pub device: String,
    pub rate: u32,
}

/// Starts the stream owner thread: it opens the device and builds the
/// stream with `make` (given the device, the chosen config and format, and
/// an error callback), plays it, reports back, and then keeps the stream
/// alive, logging stream errors, until the returned owner is dropped.
pub(crate) fn start_stream<M>(
    req: StreamRequest,
    stream_errors: Counter,
    make: M,
) -> Result<(StreamOwner, Opened), BuildError>
where
    M: FnOnce(
            &cpal::Device,
            cpal::StreamConfig,
            cpal::SampleFormat,
            Box<dyn FnMut(cpal::Error) + Send + 'static>,
        ) -> Result<cpal::Stream, cpal::Error>
        + Send
        + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::sync_channel::<Result<Opened, String>>(1);
    let kind = req.kind;
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("wzp-dev-{}", req.stage_id))
        .spawn(move || {
            let (mut reporter, mut log) = error_channel(stream_errors);
            let on_error: Box<dyn FnMut(cpal::Error) + Send> =
                Box::new(move |e| reporter.report(e));
            let stream = match open_stream(&req, on_error, make) {
                Ok((stream, opened)) => {
                    let _ = tx.send(Ok(opened));
                    stream
                }
                Err(msg) => {
                    let _ = tx.send(Err(msg));
                    return;
                }
            };
            let stage_id = req.stage_id;
            let log_errors = |log: &mut ErrorLog| {
                for e in log.collect() {
                    tracing::warn!(stage = %stage_id, "{kind}: audio stream error: {e}");
                }
            };
            while !thread_stop.load(Ordering::Acquire) {
                log_errors(&mut log);
                std::thread::park_timeout(OWNER_POLL);
            }
            // Closes the device and joins cpal's thread, here and not on the
            // real-time path; then the last errors are logged.
            drop(stream);
            log_errors(&mut log);
        })
        .map_err(|e| BuildError::Other(format!("{kind}: cannot start the stream thread: {e}")))?;
    let owner = StreamOwner {
        stop,
        thread: Some(thread),
    };
    match rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(opened)) => Ok((owner, opened)),
        Ok(Err(msg)) => Err(BuildError::Other(msg)),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            // The backend hangs in open: leave its thread behind (told to
            // stop) rather than hang the control plane too.
            let mut owner = owner;
            owner.stop.store(true, Ordering::Release);
            owner.thread.take();
            Err(BuildError::Other(format!(
                "{kind}: the audio device did not open within {OPEN_TIMEOUT:?}; \
                 is another program holding it?"
            )))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(BuildError::Other(format!(
            "{kind}: the audio backend failed while opening the device (see the log above)"
        ))),
    }
}

fn open_stream<M>(
    req: &StreamRequest,
    on_error: Box<dyn FnMut(cpal::Error) + Send + 'static>,
    make: M,
) -> Result<(cpal::Stream, Opened), String>
where
    M: FnOnce(
        &cpal::Device,
        cpal::StreamConfig,
        cpal::SampleFormat,
        Box<dyn FnMut(cpal::Error) + Send + 'static>,
    ) -> Result<cpal::Stream, cpal::Error>,
{
    let kind = req.kind;
    let host = open_host().map_err(|e| format!("{kind}: {e}"))?;
    let device =
        find_device(&host, req.direction, &req.device).map_err(|e| format!("{kind}: {e}"))?;
    let name = device_label(&device);
    let (config, format) =
        choose_config(&device, req.direction, req.rate).map_err(|e| format!("{kind}: {e}"))?;
    let channels = config.channels;
    let stream = make(&device, config, format, on_error).map_err(|e| {
        format!(
            "{kind}: cannot open {} device {name} ({channels} ch, {} Hz, {format}): {e}",
            req.direction.word(),
            req.rate
        )
    })?;
    stream.play().map_err(|e| {
        format!(
            "{kind}: cannot start {} device {name}: {e}",
            req.direction.word()
        )
    })?;
    let buffer_frames = stream.buffer_size().ok();
    Ok((
        stream,
        Opened {
            device: name,
            channels,
            format,
            buffer_frames,
        },
    ))
}

/// One audio device, as `wzp-client devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// What names it exactly (`device = "..."`, `--input mic:ID`).
    pub id: String,
    /// The backend's description (its first line), when it has one.
    pub name: String,
    pub input: bool,
    pub output: bool,
    /// ALSA's `null`: chosen only when named exactly ([`NULL_DEVICE`]).
    pub null: bool,
}

/// The audio backend's name and every device it lists, in its order.
pub fn list_devices() -> Result<(String, Vec<DeviceEntry>), String> {
    let host = open_host()?;
    let devices = host
        .devices()
        .map_err(|e| format!("cannot list audio devices: {e}"))?
        .map(|d| {
            let id = device_id(&d);
            let name = first_line(&device_name(&d)).to_string();
            DeviceEntry {
                name: if name == id { String::new() } else { name },
                input: d.supports_input(),
                output: d.supports_output(),
                null: is_null(&d),
                id,
            }
        })
        .collect();
    Ok((host.id().name().to_string(), devices))
}

/// The platform's default host, as a `Result`: `cpal::default_host` panics
/// when the backend cannot start.
pub(crate) fn open_host() -> Result<cpal::Host, String> {
    let id = cpal::available_hosts()
        .into_iter()
        .next()
        .ok_or_else(|| "no audio backend is available on this platform".to_string())?;
    cpal::host_from_id(id).map_err(|e| format!("the {} audio backend cannot start: {e}", id.name()))
}

/// A device's id and name for messages, e.g. `hw:CARD=PCH,DEV=0 (HDA Intel PCH)`.
fn device_label(d: &cpal::Device) -> String {
    let id = device_id(d);
    match d.description() {
        Ok(desc) if !desc.name().is_empty() && desc.name() != id => {
            format!("`{id}` ({})", first_line(desc.name()))
        }
        _ => format!("`{id}`"),
    }
}

fn device_id(d: &cpal::Device) -> String {
    d.id().map(|i| i.id().to_string()).unwrap_or_default()
}

fn device_name(d: &cpal::Device) -> String {
    d.description()
        .map(|desc| desc.name().to_string())
        .unwrap_or_default()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn supports(d: &cpal::Device, dir: Direction) -> bool {
    match dir {
        Direction::Input => d.supports_input(),
        Direction::Output => d.supports_output(),
    }
}

fn is_null(d: &cpal::Device) -> bool {
    device_id(d).eq_ignore_ascii_case(NULL_DEVICE)
}

/// What else the host offers for `dir`, for an error message: the devices
/// by name, or that there is only `null` (never picked unasked, see
/// [`NULL_DEVICE`]), or nothing.
fn describe_devices(host: &cpal::Host, dir: Direction) -> String {
    let word = dir.word();
    let all: Vec<cpal::Device> = match host.devices() {
        Ok(d) => d.collect(),
        Err(e) => return format!("its {word} devices cannot be listed: {e}"),
    };
    let usable: Vec<cpal::Device> = all
        .iter()
        .filter(|d| !is_null(d) && supports(d, dir))
        .cloned()
        .collect();
    if !usable.is_empty() {
        return format!(
            "{word} devices: {}; name one with device = \"...\"",
            list_labels(&usable)
        );
    }
    if all.iter().any(|d| is_null(d) && supports(d, dir)) {
        return format!(
            "the only {word} device it lists is `{NULL_DEVICE}`, used only when named \
             (device = \"{NULL_DEVICE}\") since it {}",
            match dir {
                Direction::Input => "captures endless silence",
                Direction::Output => "discards everything",
            }
        );
    }
    format!("it lists no {word} device")
}

fn list_labels(devices: &[cpal::Device]) -> String {
    devices
        .iter()
        .map(device_label)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Finds the device `query` names: "default" (the host's default), an exact
/// id or name, or else the first device whose id or name contains `query`
/// (case-insensitive). `null` is matched only exactly.
pub(crate) fn find_device(
    host: &cpal::Host,
    dir: Direction,
    query: &str,
) -> Result<cpal::Device, String> {
    let word = dir.word();
    let backend = host.id().name();
    if query.eq_ignore_ascii_case(DEFAULT_DEVICE) {
        let default = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        let why = match default {
            Some(d) => {
                let probe = match dir {
                    Direction::Input => d.default_input_config().map(|_| ()),
                    Direction::Output => d.default_output_config().map(|_| ()),
                };
                match probe {
                    Ok(()) => return Ok(d),
                    Err(e) => format!(
                        "the default {word} device cannot be opened: {}",
                        e.to_string().trim_end_matches('.')
                    ),
                }
            }
            None => format!("there is no default {word} device"),
        };
        let listed = describe_devices(host, dir);
        return Err(format!(
            "no audio {word} device found ({backend} reports: {why}; {listed}). {}",
            dir.alternatives()
        ));
    }
    let all: Vec<cpal::Device> = host
        .devices()
        .map_err(|e| format!("cannot list audio devices: {e}"))?
        .collect();
    let q = query.to_lowercase();
    let exact = all.iter().find(|d| {
        device_id(d).to_lowercase() == q || first_line(&device_name(d)).to_lowercase() == q
    });
    if let Some(d) = exact {
        if supports(d, dir) {
            return Ok(d.clone());
        }
        return Err(format!(
            "device {} cannot be opened for {word}. {}",
            device_label(d),
            dir.alternatives()
        ));
    }
    let found = all.iter().find(|d| {
        !is_null(d)
            && (device_id(d).to_lowercase().contains(&q)
                || device_name(d).to_lowercase().contains(&q))
            && supports(d, dir)
    });
    match found {
        Some(d) => Ok(d.clone()),
        None => {
            let listed = describe_devices(host, dir);
            Err(format!(
                "no audio {word} device matches \"{query}\" ({listed}). Use device = \"default\", \
                 a name from that list, or \"{NULL_DEVICE}\" for the silent null device. {}",
                dir.alternatives()
            ))
        }
    }
}

/// Picks a stream config at exactly `rate`: f32 before i16, mono before
/// stereo before more channels. The callbacks convert channels and formats;
/// they never convert rates (see the stages' docs for why).
pub(crate) fn choose_config(
    device: &cpal::Device,
    dir: Direction,
    rate: u32,
) -> Result<(cpal::StreamConfig, cpal::SampleFormat), String> {
    let word = dir.word();
    let label = device_label(device);
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match dir {
        Direction::Input => device.supported_input_configs().map(|c| c.collect()),
        Direction::Output => device.supported_output_configs().map(|c| c.collect()),
    }
    .map_err(|e| format!("cannot read the {word} formats of device {label}: {e}"))?;
    let format_rank = |f: cpal::SampleFormat| match f {
        cpal::SampleFormat::F32 => Some(0),
        cpal::SampleFormat::I16 => Some(1),
        _ => None,
    };
    let channel_rank = |c: u16| match c {
        1 => 0u32,
        2 => 1,
        n => 2 + n as u32,
    };
    let usable: Vec<&cpal::SupportedStreamConfigRange> = ranges
        .iter()
        .filter(|r| format_rank(r.sample_format()).is_some() && r.channels() > 0)
        .collect();
    if usable.is_empty() {
        let formats: Vec<String> = ranges
            .iter()
            .map(|r| r.sample_format().to_string())
            .collect();
        return Err(format!(
            "device {label} offers no f32 or i16 {word} format (it offers: {}); \
             pick another device",
            if formats.is_empty() {
                "nothing".to_string()
            } else {
                formats.join(", ")
            }
        ));
    }
    let best = usable
        .iter()
        .filter(|r| (r.min_sample_rate()..=r.max_sample_rate()).contains(&rate))
        .min_by_key(|r| (format_rank(r.sample_format()), channel_rank(r.channels())));
    match best {
        Some(r) => Ok((
            cpal::StreamConfig {
                channels: r.channels(),
                sample_rate: rate,
                buffer_size: cpal::BufferSize::Default,
            },
            r.sample_format(),
        )),
        None => {
            let mut rates: Vec<String> = usable
                .iter()
                .map(|r| {
                    if r.min_sample_rate() == r.max_sample_rate() {
                        format!("{} Hz", r.min_sample_rate())
                    } else {
                        format!("{}..={} Hz", r.min_sample_rate(), r.max_sample_rate())
                    }
                })
                .collect();
            rates.sort();
            rates.dedup();
            Err(format!(
                "device {label} cannot {} at {rate} Hz (it supports {}); set `rate` on this \
                 stage to one of those and add an audio.resample stage next to it, or use the \
                 `default`/`plughw:` device, which converts rates itself",
                if dir == Direction::Input {
                    "capture"
                } else {
                    "play"
                },
                rates.join(", ")
            ))
        }
    }
}

/// Reads and checks a ring-size param: 10ms..=10s.
pub(crate) fn buffer_param(p: &Params, name: &str) -> Result<Duration, BuildError> {
    let d = p.duration(name)?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(10) {
        return Err(ParamError::new(name, format!("{d:?} is out of range; use 10ms..=10s")).into());
    }
    Ok(d)
}

/// Samples in `d` at `rate`, rounded up.
pub(crate) fn samples_in(d: Duration, rate: u32) -> usize {
    (d.as_nanos() * rate as u128).div_ceil(1_000_000_000) as usize
}

/// Stands in for a device stage when the graph is only being described.
pub(crate) struct DryRun;

impl Processor for DryRun {
    fn process(&mut self, _io: &mut Io<'_>, _cx: &Cx) -> Flow {
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> (Counter, Counter) {
        (Counter::default(), Counter::default())
    }

    #[test]
    fn capture_downmixes_stereo_i16_and_ignores_a_partial_frame() {
        let (tx, mut rx) = rtrb::RingBuffer::new(16);
        let (over, dev) = counters();
        let armed = Arc::new(AtomicBool::new(true));
        let mut feed = CaptureFeed::new(tx, armed, Default::default(), over.clone(), dev.clone());
        feed.set_channels(2);
        feed.push_interleaved::<i16>(&[16384, 0, -32768, -32768, 100]);
        assert_eq!(rx.pop(), Ok(0.25));
        assert_eq!(rx.pop(), Ok(-1.0));
        assert!(rx.pop().is_err());
        assert_eq!(dev.get(), 2);
        assert_eq!(over.get(), 0);
    }

    #[test]
    fn capture_drops_the_newest_frames_when_full_and_counts_once() {
        let (tx, mut rx) = rtrb::RingBuffer::new(3);
        let (over, dev) = counters();
        let mut feed = CaptureFeed::new(
            tx,
            Arc::new(AtomicBool::new(true)),
            Default::default(),
            over.clone(),
            dev,
        );
        feed.push_interleaved::<f32>(&[0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(over.get(), 1);
        let got: Vec<f32> = std::iter::from_fn(|| rx.pop().ok()).collect();
        assert_eq!(got, vec![0.1, 0.2, 0.3]);
    }

    #[test]
    fn capture_discards_until_armed_and_cleans_non_finite_samples() {
        let (tx, mut rx) = rtrb::RingBuffer::new(8);
        let (over, dev) = counters();
        let armed = Arc::new(AtomicBool::new(false));
        let mut feed = CaptureFeed::new(
            tx,
            armed.clone(),
            Default::default(),
            over.clone(),
            dev.clone(),
        );
        feed.push_interleaved::<f32>(&[0.5; 8]);
        feed.push_interleaved::<f32>(&[0.5; 8]);
        assert!(rx.pop().is_err(), "nothing is queued before the graph runs");
        assert_eq!(over.get(), 0);
        armed.store(true, Ordering::Release);
        feed.push_interleaved::<f32>(&[f32::NAN, f32::INFINITY, -0.5]);
        let got: Vec<f32> = std::iter::from_fn(|| rx.pop().ok()).collect();
        assert_eq!(got, vec![0.0, 0.0, -0.5]);
        assert_eq!(dev.get(), 19);
    }

    #[test]
    fn playout_waits_for_arming_then_plays_and_reprimes_after_an_underrun() {
        let (mut tx, rx) = rtrb::RingBuffer::new(32);
        let (under, dev) = counters();
        let armed = Arc::new(AtomicBool::new(false));
        let mut drain = PlayoutDrain::new(rx, 4, armed.clone(), under.clone(), dev.clone());
        drain.set_channels(2);
        for v in [0.1, 0.2, 0.3, 0.4] {
            tx.push(v).unwrap();
        }
        let mut out = [7i16; 6];
        drain.fill_interleaved(&mut out);
        assert_eq!(out, [0; 6], "silence before the graph runs");
        assert_eq!(tx.slots(), 28, "the cushion is left alone");
        armed.store(true, Ordering::Release);
        let mut out = [9.0f32; 6];
        drain.fill_interleaved(&mut out);
        assert_eq!(out, [0.1, 0.1, 0.2, 0.2, 0.3, 0.3]);
        assert_eq!(under.get(), 0);
        // One sample left, three frames wanted: an underrun.
        drain.fill_interleaved(&mut out);
        assert_eq!(out, [0.4, 0.4, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(under.get(), 1);
        // Three samples arrive: below the cushion of 4, so still silence and
        // not a second underrun.
        for v in [0.5, 0.6, 0.7] {
            tx.push(v).unwrap();
        }
        drain.fill_interleaved(&mut out);
        assert_eq!(out, [0.0; 6]);
        assert_eq!(under.get(), 1);
        tx.push(0.8).unwrap();
        drain.fill_interleaved(&mut out);
        assert_eq!(out, [0.5, 0.5, 0.6, 0.6, 0.7, 0.7]);
        assert_eq!(dev.get(), 15);
    }

    #[test]
    fn sample_conversions_clamp_and_round() {
        assert_eq!(i16::from_f32(2.0), i16::MAX);
        assert_eq!(i16::from_f32(-2.0), -i16::MAX);
        assert_eq!(i16::from_f32(f32::NAN), 0);
        assert_eq!(f32::from_f32(f32::NAN), 0.0);
        assert_eq!(f32::from_f32(-3.0), -1.0);
        assert_eq!(i16::MIN.to_f32(), -1.0);
        assert_eq!(f32::NEG_INFINITY.to_f32(), 0.0);
    }

    #[test]
    fn stream_errors_are_all_counted_and_a_bounded_number_kept_for_the_log() {
        let counter = Counter::default();
        let (mut reporter, mut log) = error_channel(counter.clone());
        for _ in 0..ERROR_RING + 8 {
            reporter.report(cpal::Error::new(cpal::ErrorKind::DeviceNotAvailable));
        }
        let kept: Vec<cpal::Error> = log.collect().collect();
        assert_eq!(kept.len(), ERROR_RING);
        assert_eq!(counter.get(), (ERROR_RING + 8) as u64);
        assert!(kept[0].to_string().contains("not available"));
        reporter.report(cpal::Error::new(cpal::ErrorKind::DeviceBusy));
        assert_eq!(log.collect().count(), 1);
        assert_eq!(counter.get(), (ERROR_RING + 9) as u64);
        assert_eq!(log.collect().count(), 0);
        assert_eq!(counter.get(), (ERROR_RING + 9) as u64);
    }

    #[test]
    fn samples_in_rounds_up() {
        assert_eq!(samples_in(Duration::from_millis(20), 48_000), 960);
        assert_eq!(samples_in(Duration::from_micros(1), 48_000), 1);
        assert_eq!(samples_in(Duration::ZERO, 48_000), 0);
    }
}
