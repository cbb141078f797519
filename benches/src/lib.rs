//! Helpers shared by the wzp benches: drive a single processor by hand.

use std::time::{Duration, Instant};

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;

/// The quantum every bench runs at, as the shipped graphs do.
pub const QUANTUM: Duration = Duration::from_millis(20);

/// A processor with its own buffer pool, stepped one quantum at a time.
pub struct Harness {
    pub processor: Box<dyn Processor>,
    pub pool: Vec<Buffer>,
    pub ins: Vec<u32>,
    pub outs: Vec<u32>,
    pub cx: Cx,
    /// Counters and gauges the stage registered, to check after a run that
    /// the bench exercised the path it claims to (e.g. DRED rebuilt frames).
    pub counters: Vec<(String, Counter)>,
    pub gauges: Vec<(String, Gauge)>,
}

impl Harness {
    /// Builds `kind` with `params` at `rate`/20 ms and gives it fresh buffers.
    pub fn new(
        registry: &Registry,
        kind: &str,
        params: &[(&str, ParamValue)],
        rate: u32,
    ) -> Harness {
        let factory = registry
            .get(kind)
            .unwrap_or_else(|| panic!("no stage kind {kind}"));
        let info = factory.info();
        let mut p = Params::default();
        for spec in &info.params {
            if let Some(d) = &spec.default {
                p.insert(spec.name, d.clone());
            }
        }
        for (k, v) in params {
            p.insert(k, v.clone());
        }
        let res = Resources::new();
        let mut cx = BuildContext::standalone(rate, QUANTUM, &res);
        let built = factory
            .build(&mut cx, &p)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let (counters, gauges) = cx.take_metrics();
        let qn = QUANTUM.as_nanos() as u64;
        let mut pool = Vec::new();
        let mut ins = Vec::new();
        for d in &built.inputs {
            ins.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, qn, 64));
        }
        let mut outs = Vec::new();
        for d in &built.outputs {
            outs.push(pool.len() as u32);
            pool.push(Buffer::for_type(d.ty, qn, 64));
        }
        Harness {
            processor: built.processor,
            pool,
            ins,
            outs,
            cx: Cx {
                now_ns: 0,
                cycle: 0,
                rate,
                quantum_ns: qn,
            },
            counters,
            gauges,
        }
    }

    /// Mutable access to input buffer `i` (to fill it before a step).
    pub fn input(&mut self, i: usize) -> &mut Buffer {
        &mut self.pool[self.ins[i] as usize]
    }

    /// Output buffer `o` after a step.
    pub fn output(&self, o: usize) -> &Buffer {
        &self.pool[self.outs[o] as usize]
    }

    /// Input `i` as PCM samples; panics if the port is not PCM.
    pub fn pcm_in(&mut self, i: usize) -> &mut [f32] {
        match self.input(i) {
            Buffer::Pcm(s) => s,
            _ => panic!("input {i} is not a PCM port"),
        }
    }

    /// Input `i` as a frame batch; panics if the port is not Frame.
    pub fn frames_in(&mut self, i: usize) -> &mut Batch<FrameMeta> {
        match self.input(i) {
            Buffer::Frames(b) => b,
            _ => panic!("input {i} is not a Frame port"),
        }
    }

    /// Output `o` as PCM samples; panics if the port is not PCM.
    pub fn pcm_out(&self, o: usize) -> &[f32] {
        match self.output(o) {
            Buffer::Pcm(s) => s,
            _ => panic!("output {o} is not a PCM port"),
        }
    }

    /// Output `o` as a frame batch; panics if the port is not Frame.
    pub fn frames_out(&self, o: usize) -> &Batch<FrameMeta> {
        match self.output(o) {
            Buffer::Frames(b) => b,
            _ => panic!("output {o} is not a Frame port"),
        }
    }

    /// The value of the stage's counter `name`; panics if it has none, so a
    /// renamed counter breaks the bench instead of silently reading 0.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.get())
            .unwrap_or_else(|| panic!("the stage has no counter {name:?}"))
    }

    /// Every counter as `name=value`, for a bench's closing report.
    pub fn counters_line(&self) -> String {
        self.counters
            .iter()
            .filter(|(_, c)| c.get() != 0)
            .map(|(n, c)| format!("{n}={}", c.get()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One cycle: reset outputs, process, advance time.
    pub fn step(&mut self) -> Flow {
        for &o in &self.outs {
            self.pool[o as usize].reset();
        }
        let mut io = Io::checked(&mut self.pool, &self.ins, &self.outs)
            .expect("harness buffers are distinct");
        let flow = self.processor.process(&mut io, &self.cx);
        self.cx.cycle += 1;
        self.cx.now_ns += self.cx.quantum_ns;
        flow
    }
}

/// Sums what `step` reports over `iters` calls, at real-time priority: for
/// `iter_custom` benches whose iterations need untimed work (feeding
/// inputs, letting a worker thread catch up) around the timed part. Each
/// call times itself with a pair of `Instant` reads; the
/// `timer/instant_pair` bench measures what that pair adds.
pub fn time_each(iters: u64, mut step: impl FnMut() -> Duration) -> Duration {
    let rt = RealTime::enter();
    let start = Instant::now();
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += step();
    }
    let wall = start.elapsed();
    drop(rt);
    rest_after(wall);
    total
}

/// Times `iters` calls of `f` as one batch, at real-time priority.
pub fn time_batch<O>(iters: u64, mut f: impl FnMut() -> O) -> Duration {
    let rt = RealTime::enter();
    let start = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(f());
    }
    let spent = start.elapsed();
    drop(rt);
    rest_after(spent);
    spent
}

/// `Bencher::iter` at real-time priority (see [`RealTime`]).
pub fn rt_iter<O>(b: &mut criterion::Bencher<'_>, mut f: impl FnMut() -> O) {
    b.iter_custom(|iters| time_batch(iters, &mut f));
}

/// Linux lets real-time threads use 95 % of each second
/// (`sched_rt_runtime_us`) and then stops them for the rest of it, which
/// would land inside a timed batch. Sleeping a tenth of each batch keeps
/// the bench thread under that budget.
fn rest_after(batch: Duration) {
    std::thread::sleep(batch / 10);
}

/// Sleeps in short steps until `done` holds; panics after `limit`, so a
/// worker that stopped answering fails the bench instead of hanging it.
/// Sleeping (not spinning) leaves the core to the worker even when the
/// bench thread runs at real-time priority.
pub fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < limit,
            "gave up waiting for the worker after {limit:?}"
        );
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Runs the calling thread at SCHED_FIFO (as the engine runs its clock
/// thread, `wzp_engine::rt`) until dropped, then back at SCHED_OTHER.
///
/// Two reasons. On a shared machine, ordinary threads cannot preempt the
/// timed code, so the numbers are the stage's own cost rather than the
/// neighbours' load. And stages with a worker thread (FEC, Codec2) wake it
/// every cycle: at equal priority the kernel may switch to the woken worker
/// at once and bill its whole job to the processor's step, which never
/// happens in production, where the clock thread is real-time and the
/// workers are not. Build harnesses *before* entering: threads inherit the
/// policy of the thread that spawns them.
///
/// Set `WZP_BENCH_NO_FIFO=1` to measure at normal priority. Without the
/// privilege (not root, no RLIMIT_RTPRIO) it warns once and carries on.
pub struct RealTime {
    active: bool,
}

impl RealTime {
    pub fn enter() -> RealTime {
        if std::env::var_os("WZP_BENCH_NO_FIFO").is_some() {
            return RealTime { active: false };
        }
        let active = wzp_engine::rt::promote_current_thread();
        if !active {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                eprintln!(
                    "SCHED_FIFO refused: measuring at normal priority (numbers include other load)"
                )
            });
        }
        RealTime { active }
    }
}

impl Drop for RealTime {
    fn drop(&mut self) {
        if self.active {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: plain syscall on the calling thread (pid 0) with a
            // valid param; SCHED_OTHER always accepts priority 0.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}

/// A stage's worker thread, watched through `/proc` so a bench can wait,
/// untimed, until the worker has drained its queue and parked again: the
/// state it is in at the start of every quantum in real time. For workers
/// that publish no counter of their progress.
pub struct WorkerThread {
    status: std::path::PathBuf,
}

impl WorkerThread {
    /// Runs `build` (which starts a worker) and returns its result with the
    /// thread it started: a thread named `prefix...` (Linux truncates
    /// names to 15 bytes) that did not exist before. A new thread names
    /// itself once it runs, so this looks for up to a second; threads of
    /// earlier harnesses that are still exiting are ignored.
    pub fn started_by<T>(prefix: &str, build: impl FnOnce() -> T) -> (T, WorkerThread) {
        let before = Self::tids(prefix);
        let built = build();
        let start = Instant::now();
        loop {
            if let Some(tid) = Self::tids(prefix).into_iter().find(|t| !before.contains(t)) {
                let status = format!("/proc/self/task/{tid}/status").into();
                return (built, WorkerThread { status });
            }
            assert!(
                start.elapsed() < Duration::from_secs(1),
                "no new thread named {prefix}... appeared"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn tids(prefix: &str) -> Vec<u64> {
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let e = e.ok()?;
            let tid = e.file_name().to_str()?.parse().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            comm.starts_with(prefix).then_some(tid)
        })
        .collect()
    }

    fn field(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    }

    /// Times the thread has blocked of its own accord (parked, slept).
    pub fn voluntary_switches(&self) -> u64 {
        self.field("voluntary_ctxt_switches:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Whether the thread is blocked (state S) right now.
    pub fn sleeping(&self) -> bool {
        self.field("State:").is_some_and(|v| v.starts_with('S'))
    }

    /// Waits until the thread is blocked and, if the step just timed woke
    /// it (`woken`), has blocked again since it had `before` voluntary
    /// switches: it woke, did its work, and parked.
    pub fn wait_idle(&self, before: u64, woken: bool) {
        wait_until(Duration::from_secs(2), || {
            self.sleeping() && (!woken || self.voluntary_switches() > before)
        });
    }
}

/// Criterion settings for groups whose iterations wait (untimed) for a
/// worker thread to park after every step. Criterion plans the iteration
/// count from the wall time of its warm-up, waits included, so the window
/// is in wall time: 3 s gives some ten thousand timed steps.
pub fn worker_paced(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(3));
}
