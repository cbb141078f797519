//! `audio.wav_sink`: records its input to a mono WAV file.
//!
//! - Input `in`: `Pcm` at `rate`.
//! - Params: `path` (required; relative paths resolve against the graph
//!   file's folder), `format` (`"i16"` default, or `"f32"`), `rate` (Hz,
//!   default 0 = the graph rate), `buffer` (default `"2s"`, range
//!   100ms..=10m: how much audio may wait for the writer thread).
//! - Counters: `samples_written` (samples in the file), `dropped_samples`
//!   (the writer fell more than `buffer` behind), `write_errors` (the file
//!   could not be written, e.g. disk full; writing stops at the first one).
//! - Gauge `finalized`: 1 once the file's header is final.
//! - Latency: none.
//!
//! The file is opened (and its folder created) when the stage is built, so
//! a path that cannot be written fails the build, but it is replaced only
//! when the graph's first cycle runs: a graph that fails to compile, or is
//! never started, leaves an earlier file as it was (and removes an empty
//! one it made).
//!
//! The real-time side only pushes samples into a lock-free SPSC ring; a
//! writer thread, started when the stage is built, drains it into the file
//! and rewrites the header about once a second (so a killed process leaves
//! a playable file). When the stage is dropped (the graph stops or is
//! reconfigured without it; the engine drops processors off the real-time
//! path) the thread drains the ring, finalizes the header and is joined, so
//! **once the graph is stopped or dropped, the file is complete**. Samples
//! are clamped to -1..=1 for `i16`.
//!
//! With the `fast` driver the graph can outrun the writer thread: give a
//! `buffer` at least as long as the run if no sample may be dropped.
//!
//! ```toml
//! [[stage]]
//! id = "rec"
//! kind = "audio.wav_sink"
//! params = { path = "${output}", format = "i16" }
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wzp_engine::prelude::*;

use super::{pcm_port, rate_param, rate_spec};

/// Factory of `audio.wav_sink`.
pub struct WavSink;

type Writer = hound::WavWriter<BufWriter<File>>;

/// Owns the writer thread; dropping it drains, finalizes and joins.
struct WriterGuard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

struct WavSinkProc {
    ring: rtrb::Producer<f32>,
    dropped: Counter,
    /// Set by the first cycle: only then does the writer replace the file.
    started: Arc<AtomicBool>,
    has_started: bool,
    _writer: WriterGuard,
}

impl Processor for WavSinkProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if !self.has_started {
            self.has_started = true;
            self.started.store(true, Ordering::Release);
        }
        let x = io.pcm_in(0);
        let n = x.len().min(self.ring.slots());
        if n > 0 {
            if let Ok(chunk) = self.ring.write_chunk_uninit(n) {
                chunk.fill_from_iter(x[..n].iter().copied());
            }
        }
        if n < x.len() {
            self.dropped.add((x.len() - n) as u64);
        }
        Flow::Continue
    }
}

struct WriterThread {
    ring: rtrb::Consumer<f32>,
    /// The file, opened at build without truncating it.
    file: Option<File>,
    /// Whether the file was there before the build (else a graph that
    /// never runs removes the empty file it made).
    existed: bool,
    spec: hound::WavSpec,
    float: bool,
    stop: Arc<AtomicBool>,
    started: Arc<AtomicBool>,
    written: Counter,
    errors: Counter,
    finalized: Gauge,
    flush_every: u64,
    path: String,
}

impl WriterThread {
    /// Waits for the graph's first cycle; `None` when the stage was dropped
    /// before it (a graph that failed to compile or never started: the file
    /// is left as it was, or removed if the build created it).
    fn wait_for_start(&mut self) -> Option<File> {
        loop {
            if self.started.load(Ordering::Acquire) {
                return self.file.take();
            }
            if self.stop.load(Ordering::Acquire) {
                if self.started.load(Ordering::Acquire) {
                    return self.file.take();
                }
                self.file = None;
                if !self.existed {
                    let _ = std::fs::remove_file(&self.path);
                }
                return None;
            }
            std::thread::park_timeout(Duration::from_millis(5));
        }
    }

    /// Replaces the file's contents with a new WAV header.
    fn open(&mut self, file: File) -> Result<Writer, hound::Error> {
        if file.metadata()?.is_file() {
            file.set_len(0)?;
        }
        hound::WavWriter::new(BufWriter::new(file), self.spec)
    }

    fn run(mut self) {
        let Some(file) = self.wait_for_start() else {
            return;
        };
        let mut writer = match self.open(file) {
            Ok(w) => Some(w),
            Err(e) => {
                self.errors.inc();
                tracing::warn!(path = %self.path, error = %e, "audio.wav_sink: cannot write; recording stops here");
                None
            }
        };
        let mut failed = writer.is_none();
        let mut since_flush = 0u64;
        loop {
            // Read the flag before draining: everything pushed before the
            // stage was dropped is then seen by this last drain.
            let stopping = self.stop.load(Ordering::Acquire);
            let n = self.ring.slots();
            if n > 0 {
                let Ok(chunk) = self.ring.read_chunk(n) else {
                    continue;
                };
                let (a, b) = chunk.as_slices();
                if let (false, Some(w)) = (failed, writer.as_mut()) {
                    match write_all(w, a, b, self.float) {
                        Ok(()) => {
                            self.written.add(n as u64);
                            since_flush += n as u64;
                        }
                        Err(e) => {
                            failed = true;
                            self.errors.inc();
                            tracing::warn!(path = %self.path, error = %e, "audio.wav_sink: cannot write; recording stops here");
                        }
                    }
                }
                chunk.commit_all();
                if let (false, true, Some(w)) =
                    (failed, since_flush >= self.flush_every, writer.as_mut())
                {
                    since_flush = 0;
                    if let Err(e) = w.flush() {
                        failed = true;
                        self.errors.inc();
                        tracing::warn!(path = %self.path, error = %e, "audio.wav_sink: cannot write; recording stops here");
                    }
                }
            } else if stopping {
                break;
            } else {
                // The ring holds seconds of audio; a short nap costs nothing
                // and keeps the real-time side free of any wake-up call.
                std::thread::park_timeout(Duration::from_millis(2));
            }
        }
        let Some(writer) = writer else {
            return;
        };
        match writer.finalize() {
            Ok(()) if !failed => self.finalized.set(1),
            Ok(()) => {}
            Err(e) => {
                self.errors.inc();
                tracing::warn!(path = %self.path, error = %e, "audio.wav_sink: cannot finalize the file");
            }
        }
    }
}

fn write_all(w: &mut Writer, a: &[f32], b: &[f32], float: bool) -> Result<(), hound::Error> {
    for &s in a.iter().chain(b) {
        if float {
            w.write_sample(s)?;
        } else {
            let v = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
            w.write_sample((v * i16::MAX as f32).round() as i16)?;
        }
    }
    Ok(())
}

impl StageFactory for WavSink {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "audio.wav_sink",
            summary: "records its input to a mono WAV file (written by a helper thread)",
            inputs: vec![pcm_port("in", "the signal to record")],
            outputs: vec![],
            params: vec![
                ParamSpec::required("path", ParamType::Str, "WAV file to write (replaced)"),
                ParamSpec::str("format", "i16", "sample format: \"i16\" or \"f32\""),
                rate_spec(),
                ParamSpec::duration(
                    "buffer",
                    Duration::from_secs(2),
                    "audio that may queue for the writer thread (100ms..=10m)",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let rate = rate_param(cx, p, "rate")?;
        let float = p.choice("format", &["i16", "f32"])? == "f32";
        let buffer = p.duration("buffer")?;
        if buffer < Duration::from_millis(100) || buffer > Duration::from_secs(600) {
            return Err(ParamError::new(
                "buffer",
                format!("{buffer:?} is out of range; use 100ms..=10m"),
            )
            .into());
        }
        let raw_path = p.str("path")?;
        if raw_path.trim().is_empty() {
            return Err(ParamError::new("path", "is empty; give the WAV file to write").into());
        }
        // An output path is used as given (relative to the working directory).
        let path = std::path::PathBuf::from(raw_path);
        let port = PortDecl::new("in", PortType::Pcm { rate });
        if cx.dry_run {
            // `graph explain` and friends: describe the stage, touch no file.
            return Ok(Built {
                inputs: vec![port],
                outputs: vec![],
                latency: Duration::ZERO,
                processor: Box::new(DryRun),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                BuildError::Other(format!(
                    "audio.wav_sink: cannot create the folder {}: {e}; check the path and permissions",
                    dir.display()
                ))
            })?;
        }
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: if float { 32 } else { 16 },
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        // Opened, not truncated: the file is replaced only once the graph
        // runs, so a graph that fails to compile after this stage was
        // built leaves an earlier recording alone.
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                BuildError::Other(format!(
                    "audio.wav_sink: cannot create {}: {e}; check that the folder exists and is writable",
                    path.display()
                ))
            })?;
        let capacity =
            ((buffer.as_secs_f64() * rate as f64).ceil() as usize).max(cx.samples_at(rate) * 2);
        let (producer, consumer) = rtrb::RingBuffer::new(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let worker = WriterThread {
            ring: consumer,
            file: Some(file),
            existed,
            spec,
            float,
            stop: stop.clone(),
            started: started.clone(),
            written: cx.counter("samples_written"),
            errors: cx.counter("write_errors"),
            finalized: cx.gauge("finalized"),
            flush_every: rate as u64,
            path: path.display().to_string(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("wzp-wav-{}", cx.stage_id))
            .spawn(move || worker.run())
            .map_err(|e| {
                BuildError::Other(format!(
                    "audio.wav_sink: cannot start the writer thread: {e}"
                ))
            })?;
        Ok(Built {
            inputs: vec![port],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(WavSinkProc {
                ring: producer,
                dropped: cx.counter("dropped_samples"),
                started,
                has_started: false,
                _writer: WriterGuard {
                    stop,
                    thread: Some(thread),
                },
            }),
        })
    }
}

/// Stands in for the sink when the graph is only being described.
struct DryRun;

impl Processor for DryRun {
    fn process(&mut self, _io: &mut Io<'_>, _cx: &Cx) -> Flow {
        Flow::Continue
    }
}
