//! Executors: run compiled schedules, swap them while running, and drive
//! domains with a timer, as fast as possible, or by hand.
//!
//! Each domain has a [`DomainRunner`] that owns its processors (in a table of
//! slots) and its current [`Schedule`]. The control side changes a running
//! graph by sending an update (new schedule, processors to insert, slots to
//! clear) through a lock-free SPSC ring; the runner applies it between two
//! cycles, so no quantum is dropped, and sends the old schedule and removed
//! processors back through a second ring, to be dropped on the control side.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bridge::DomainWaker;
use crate::compile::{compile_with, CompiledGraph, Existing, ExistingStage, StageKey, Wakers};
use crate::error::{ErrorKind, GraphError, GraphErrors};
use crate::port::Buffer;
use crate::registry::Registry;
use crate::spec::{ClockDriver, GraphSpec};
use crate::stage::{Cx, Domain, Flow, Io, Processor, Resources};
use crate::stats::{GraphStats, StageStats};
use crate::timing::{DomainTiming, StageTiming};

struct Step {
    slot: u32,
    ins: Box<[u32]>,
    outs: Box<[u32]>,
    timing: Arc<StageTiming>,
    source: bool,
}

/// An immutable plan for one domain: steps in order and the buffer pool.
pub struct Schedule {
    steps: Box<[Step]>,
    pool: Box<[Buffer]>,
}

/// A processor to place in a runner's slot.
type Insert = (u32, Box<dyn Processor>);

struct Update {
    schedule: Option<Box<Schedule>>,
    inserts: Vec<Insert>,
    removes: Vec<u32>,
    /// Capacity reserved on the control side, so the runner never grows it.
    garbage: Vec<Box<dyn Processor>>,
}

/// What one cycle found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CycleOutcome {
    /// The schedule has source stages and every one has said `Finished`.
    pub sources_finished: bool,
}

/// Runs one domain's schedule. Lives on that domain's thread.
pub struct DomainRunner {
    domain: Domain,
    table: Box<[Option<Box<dyn Processor>>]>,
    finished: Box<[bool]>,
    schedule: Box<Schedule>,
    updates: rtrb::Consumer<Box<Update>>,
    returns: rtrb::Producer<Box<Update>>,
    pending_return: Option<Box<Update>>,
    timing: Arc<DomainTiming>,
    rate: u32,
    quantum_ns: u64,
    cycle: u64,
}

impl DomainRunner {
    pub fn domain(&self) -> Domain {
        self.domain
    }

    fn apply_updates(&mut self) {
        if let Some(u) = self.pending_return.take() {
            if let Err(rtrb::PushError::Full(u)) = self.returns.push(u) {
                self.pending_return = Some(u);
                return;
            }
        }
        let Ok(mut u) = self.updates.pop() else {
            return;
        };
        for (slot, p) in u.inserts.drain(..) {
            if let Some(cell) = self.table.get_mut(slot as usize) {
                if let Some(old) = cell.replace(p) {
                    u.garbage.push(old);
                }
                self.finished[slot as usize] = false;
            } else {
                u.garbage.push(p);
            }
        }
        for i in 0..u.removes.len() {
            let slot = u.removes[i] as usize;
            if let Some(old) = self.table.get_mut(slot).and_then(Option::take) {
                u.garbage.push(old);
            }
        }
        if let Some(s) = u.schedule.as_mut() {
            std::mem::swap(&mut self.schedule, s);
        }
        if let Err(rtrb::PushError::Full(u)) = self.returns.push(u) {
            self.pending_return = Some(u);
        }
    }

    /// Runs one cycle. `now_ns` is the domain's time for this cycle,
    /// `scheduled` the instant it was due (wait times are measured from it),
    /// `deadline` when it must be done to not count an xrun.
    pub fn run_cycle(
        &mut self,
        now_ns: u64,
        scheduled: Instant,
        deadline: Option<Instant>,
    ) -> CycleOutcome {
        self.apply_updates();
        let cx = Cx {
            now_ns,
            cycle: self.cycle,
            rate: self.rate,
            quantum_ns: self.quantum_ns,
        };
        let start = Instant::now();
        let Schedule { steps, pool } = &mut *self.schedule;
        let pool_len = pool.len();
        let pool_ptr = pool.as_mut_ptr();
        let mut sources = 0usize;
        let mut sources_done = 0usize;
        // One clock read per stage: a stage's start is the previous stage's
        // end, so the reset of its outputs counts toward its busy time.
        let mut t0 = start;
        for step in steps.iter() {
            let Some(Some(p)) = self.table.get_mut(step.slot as usize) else {
                continue;
            };
            for &o in step.outs.iter() {
                // SAFETY: `o` < pool_len, checked when the schedule was built.
                unsafe { (*pool_ptr.add(o as usize)).reset() };
            }
            // SAFETY: the compiler assigns each step output indices that are
            // distinct and disjoint from its inputs, all below pool_len.
            let mut io = unsafe { Io::new(pool_ptr, pool_len, &step.ins, &step.outs) };
            let flow = p.process(&mut io, &cx);
            let t1 = Instant::now();
            step.timing
                .wait
                .record(t0.saturating_duration_since(scheduled).as_nanos() as u64);
            step.timing.busy.record((t1 - t0).as_nanos() as u64);
            t0 = t1;
            if step.source {
                sources += 1;
                let f = &mut self.finished[step.slot as usize];
                *f |= flow == Flow::Finished;
                sources_done += usize::from(*f);
            }
        }
        let end = t0;
        let late = deadline.is_some_and(|d| end > d);
        self.timing
            .cycle_done((end - start).as_nanos() as u64, late);
        self.cycle += 1;
        CycleOutcome {
            sources_finished: sources > 0 && sources == sources_done,
        }
    }

    /// Cycles run so far.
    pub fn cycles(&self) -> u64 {
        self.cycle
    }
}

struct DomainControl {
    updates: rtrb::Producer<Box<Update>>,
    returns: rtrb::Consumer<Box<Update>>,
    free_slots: Vec<u32>,
}

/// A kept stage: where it lives and what it exposes.
#[derive(Clone)]
struct LiveStage {
    domain: Domain,
    slot: u32,
    existing: ExistingStage,
}

/// How far behind its tick the timer-driven clock thread may fall and still
/// catch up by running the missed cycles back to back. Beyond it, the tick
/// is reset to now and the missed quanta are never produced, which shifts
/// the graph's media time against the wall clock for good: for a call's
/// sender, timestamps that no longer match when packets leave, which every
/// receiver must absorb as added delay (past its jitter buffer's maximum,
/// as lost audio for the rest of the call). A shorter stall (a loaded CPU)
/// caught up is only a burst of packets: jitter a receiver rides out.
pub const MAX_CATCH_UP: Duration = Duration::from_secs(1);

/// How to drive the clocked domain.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub driver: ClockDriver,
    /// Stop after this much graph time: cycles x quantum of the clocked
    /// domain (for a graph with only a packet domain, wall time).
    pub duration: Option<Duration>,
    /// Ask for SCHED_FIFO on the clock thread (falls back with one warning).
    pub realtime: bool,
    /// Extra cycles to run after every source finished, on top of the
    /// longest declared path latency, so buffered audio drains out.
    pub drain_cycles: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            driver: ClockDriver::Timer,
            duration: None,
            realtime: true,
            drain_cycles: 3,
        }
    }
}

/// Most stages one domain can hold across reconfigurations.
pub const DEFAULT_SLOTS: usize = 1024;

/// Whether a graph ended by itself, and the thread [`Graph::wait`]s for it:
/// woken when it ends, so waiting costs no polling.
#[derive(Debug, Default)]
struct Finished {
    flag: AtomicBool,
    waiter: DomainWaker,
}

impl Finished {
    fn set(&self) {
        self.flag.store(true, Ordering::Release);
        self.waiter.wake();
    }

    fn get(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// A graph ready to run: step it by hand, or start it on threads.
pub struct Graph {
    name: String,
    runners: Vec<DomainRunner>,
    controls: BTreeMap<Domain, DomainControl>,
    live: HashMap<StageKey, LiveStage>,
    stats: Arc<Mutex<Arc<GraphStats>>>,
    wakers: Wakers,
    rate: u32,
    quantum: Duration,
    drain_after_sources: u64,
    stop: Arc<AtomicBool>,
    finished: Arc<Finished>,
    threads: Vec<JoinHandle<()>>,
    started: Option<Instant>,
    collected_total: usize,
}

fn build_schedule(
    compiled: &CompiledGraph,
    plan: &crate::compile::DomainPlan,
    slots: &HashMap<usize, u32>,
) -> Box<Schedule> {
    let q = compiled.clock.quantum.as_nanos() as u64;
    let pool: Box<[Buffer]> = plan
        .buffers
        .iter()
        .map(|&ty| Buffer::for_type(ty, q, compiled.batch_capacity))
        .collect();
    let steps = plan
        .steps
        .iter()
        .map(|s| {
            let st = &compiled.stages[s.stage];
            Step {
                slot: slots[&s.stage],
                ins: s.ins.clone().into_boxed_slice(),
                outs: s.outs.clone().into_boxed_slice(),
                timing: st.timing.clone(),
                source: st.source,
            }
        })
        .collect();
    Box::new(Schedule { steps, pool })
}

fn stats_of(compiled: &CompiledGraph, domains: &BTreeMap<Domain, Arc<DomainTiming>>) -> GraphStats {
    GraphStats {
        graph: compiled.name.clone(),
        quantum: compiled.clock.quantum,
        rate: compiled.clock.rate,
        domains: domains.iter().map(|(d, t)| (*d, t.clone())).collect(),
        stages: compiled
            .stages
            .iter()
            .map(|s| StageStats {
                id: s.id.clone(),
                kind: s.kind.clone(),
                domain: s.domain,
                latency: s.latency,
                bridge: s.bridge,
                timing: s.timing.clone(),
                counters: s.counters.clone(),
                gauges: s.gauges.clone(),
            })
            .collect(),
    }
}

impl Graph {
    /// Takes the processors out of a compiled graph and prepares its domains.
    pub fn new(mut compiled: CompiledGraph) -> Graph {
        let mut runners = Vec::new();
        let mut controls = BTreeMap::new();
        let mut live = HashMap::new();
        let mut domain_timing = BTreeMap::new();
        for d in [Domain::Clocked, Domain::Packet] {
            let Some(plan) = compiled.domain(d).cloned() else {
                continue;
            };
            let mut table: Vec<Option<Box<dyn Processor>>> =
                (0..DEFAULT_SLOTS).map(|_| None).collect();
            let mut slots = HashMap::new();
            for (n, step) in plan.steps.iter().enumerate() {
                let st = &mut compiled.stages[step.stage];
                table[n] = st.processor.take();
                slots.insert(step.stage, n as u32);
                live.insert(
                    st.key.clone(),
                    LiveStage {
                        domain: d,
                        slot: n as u32,
                        existing: ExistingStage {
                            inputs: st.inputs.clone(),
                            outputs: st.outputs.clone(),
                            latency: st.latency,
                            counters: st.counters.clone(),
                            gauges: st.gauges.clone(),
                            timing: st.timing.clone(),
                        },
                    },
                );
            }
            let schedule = build_schedule(&compiled, &plan, &slots);
            let (utx, urx) = rtrb::RingBuffer::new(8);
            let (rtx, rrx) = rtrb::RingBuffer::new(8);
            let timing = Arc::new(DomainTiming::default());
            domain_timing.insert(d, timing.clone());
            runners.push(DomainRunner {
                domain: d,
                table: table.into_boxed_slice(),
                finished: vec![false; DEFAULT_SLOTS].into_boxed_slice(),
                schedule,
                updates: urx,
                returns: rtx,
                pending_return: None,
                timing,
                rate: compiled.clock.rate,
                quantum_ns: compiled.clock.quantum.as_nanos() as u64,
                cycle: 0,
            });
            controls.insert(
                d,
                DomainControl {
                    updates: utx,
                    returns: rrx,
                    free_slots: (plan.steps.len() as u32..DEFAULT_SLOTS as u32)
                        .rev()
                        .collect(),
                },
            );
        }
        let q = compiled.clock.quantum;
        let drain = compiled
            .max_path_latency()
            .as_nanos()
            .div_ceil(q.as_nanos().max(1)) as u64;
        let stats = Arc::new(Mutex::new(Arc::new(stats_of(&compiled, &domain_timing))));
        Graph {
            name: compiled.name.clone(),
            runners,
            controls,
            live,
            stats,
            wakers: compiled.wakers.clone(),
            rate: compiled.clock.rate,
            quantum: q,
            drain_after_sources: drain,
            stop: Arc::new(AtomicBool::new(false)),
            finished: Arc::new(Finished::default()),
            threads: Vec::new(),
            started: None,
            collected_total: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Per-stage timing, counters and gauges.
    pub fn stats(&self) -> Arc<GraphStats> {
        self.stats
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The waker of a domain (for I/O threads feeding it).
    pub fn waker(&self, d: Domain) -> Arc<crate::bridge::DomainWaker> {
        self.wakers.get(d).clone()
    }

    /// Takes domain `d`'s runner out of the graph, so the caller runs its
    /// cycles from a loop of its own instead of a thread [`Graph::start`]
    /// makes. A packet domain hosted this way runs on the thread that
    /// already does its I/O (the relay runs it on the task that reads and
    /// sends its datagrams): no thread hop, no wake-up per packet. Call
    /// before `start`; `start` then runs only the domains left.
    /// Reconfiguration still works: updates reach the runner at its next
    /// cycle, and [`Graph::collect_garbage`] collects what it sends back.
    pub fn take_runner(&mut self, d: Domain) -> Option<DomainRunner> {
        let i = self.runners.iter().position(|r| r.domain == d)?;
        Some(self.runners.remove(i))
    }

    /// The domains whose runners are still in the graph (not started, not
    /// taken by [`Graph::take_runner`]).
    pub fn domains_left(&self) -> Vec<Domain> {
        self.runners.iter().map(|r| r.domain).collect()
    }

    /// Runs one cycle of every domain on the calling thread (manual clock).
    /// The clocked domain's `now` is `cycle * quantum`; the packet domain runs
    /// right after with the same `now`.
    pub fn step(&mut self) -> CycleOutcome {
        let out = self.step_cycle_only();
        self.collect_garbage();
        out
    }

    /// Like [`Graph::step`] but leaves what the runners sent back in the
    /// return ring (see [`Graph::collect_garbage`]); this is exactly what a
    /// domain thread does in one cycle.
    pub fn step_cycle_only(&mut self) -> CycleOutcome {
        let q = self.quantum.as_nanos() as u64;
        let mut out = CycleOutcome::default();
        let now = Instant::now();
        let cycle = self.runners.first().map(|r| r.cycles()).unwrap_or(0);
        for r in &mut self.runners {
            let o = r.run_cycle(cycle * q, now, None);
            if r.domain == Domain::Clocked {
                out = o;
            }
        }
        out
    }

    /// Drops what the runners sent back (old schedules, removed processors).
    /// Returns how many updates were collected.
    pub fn collect_garbage(&mut self) -> usize {
        let mut n = 0;
        for c in self.controls.values_mut() {
            while let Ok(u) = c.returns.pop() {
                drop(u);
                n += 1;
            }
        }
        self.collected_total += n;
        n
    }

    /// Updates sent back by the runners and dropped here, since the start.
    pub fn collected_total(&self) -> usize {
        self.collected_total
    }

    /// Runs the graph on threads with `opts`. Returns at once; see
    /// [`Graph::wait`] and [`Graph::stop`].
    pub fn start(&mut self, opts: RunOptions) -> Result<(), GraphError> {
        if self.runners.is_empty() {
            return Err(GraphError::new(
                ErrorKind::Build,
                "the graph is already running or has no stages",
            ));
        }
        let runners = std::mem::take(&mut self.runners);
        let started = Instant::now();
        self.started = Some(started);
        let q = self.quantum;
        let drain = self.drain_after_sources + opts.drain_cycles;
        let stop = self.stop.clone();
        let finished = self.finished.clone();
        let (clocked, packet): (Vec<_>, Vec<_>) = runners
            .into_iter()
            .partition(|r| r.domain == Domain::Clocked);
        let mut clocked = clocked.into_iter().next();
        let mut packet = packet.into_iter().next();
        match opts.driver {
            ClockDriver::Fast | ClockDriver::Manual => {
                // One thread, both domains in turn: deterministic, faster than real time.
                let stop2 = stop.clone();
                let dur = opts.duration;
                let h = std::thread::Builder::new()
                    .name("wzp-fast".into())
                    .spawn(move || {
                        let qn = q.as_nanos() as u64;
                        let mut cycle = 0u64;
                        let mut drain_left: Option<u64> = None;
                        while !stop2.load(Ordering::Relaxed) {
                            let now_ns = cycle * qn;
                            if dur.is_some_and(|d| now_ns >= d.as_nanos() as u64) {
                                break;
                            }
                            let t = Instant::now();
                            let mut out = CycleOutcome::default();
                            if let Some(r) = clocked.as_mut() {
                                out = r.run_cycle(now_ns, t, None);
                            }
                            if let Some(r) = packet.as_mut() {
                                r.run_cycle(now_ns, t, None);
                            }
                            cycle += 1;
                            if out.sources_finished && drain_left.is_none() {
                                drain_left = Some(drain);
                            }
                            if let Some(d) = drain_left.as_mut() {
                                if *d == 0 {
                                    break;
                                }
                                *d -= 1;
                            }
                        }
                        finished.set();
                    })
                    .map_err(|e| {
                        GraphError::new(ErrorKind::Build, format!("cannot start thread: {e}"))
                    })?;
                self.threads.push(h);
            }
            ClockDriver::Timer => {
                if let Some(mut r) = packet.take() {
                    let stop2 = stop.clone();
                    let waker = self.wakers.packet.clone();
                    let h = std::thread::Builder::new()
                        .name("wzp-packet".into())
                        .spawn(move || {
                            waker.register_current();
                            let tick = Duration::from_millis(1);
                            while !stop2.load(Ordering::Relaxed) {
                                waker.wait(tick);
                                let t = Instant::now();
                                r.run_cycle(t.duration_since(started).as_nanos() as u64, t, None);
                            }
                        })
                        .map_err(|e| {
                            GraphError::new(ErrorKind::Build, format!("cannot start thread: {e}"))
                        })?;
                    self.threads.push(h);
                }
                if let Some(mut r) = clocked.take() {
                    let stop2 = stop.clone();
                    let finished2 = finished.clone();
                    let dur = opts.duration;
                    let realtime = opts.realtime;
                    let waker = self.wakers.clocked.clone();
                    let h = std::thread::Builder::new()
                        .name("wzp-clock".into())
                        .spawn(move || {
                            waker.register_current();
                            if realtime {
                                crate::rt::promote_current_thread();
                            }
                            let mut next = Instant::now();
                            let base = next;
                            let mut drain_left: Option<u64> = None;
                            let mut cycle = 0u64;
                            while !stop2.load(Ordering::Relaxed) {
                                let media = q * cycle as u32;
                                if dur.is_some_and(|d| media >= d) {
                                    break;
                                }
                                let now = Instant::now();
                                if next > now {
                                    std::thread::sleep(next - now);
                                } else if now - next > MAX_CATCH_UP {
                                    // Far behind (the machine stalled): skip ahead rather
                                    // than run a burst of cycles back to back.
                                    next = now;
                                }
                                let out =
                                    r.run_cycle(media.as_nanos() as u64, next, Some(next + q));
                                cycle += 1;
                                next += q;
                                let _ = base;
                                if out.sources_finished && drain_left.is_none() {
                                    drain_left = Some(drain);
                                }
                                if let Some(d) = drain_left.as_mut() {
                                    if *d == 0 {
                                        break;
                                    }
                                    *d -= 1;
                                }
                            }
                            finished2.set();
                        })
                        .map_err(|e| {
                            GraphError::new(ErrorKind::Build, format!("cannot start thread: {e}"))
                        })?;
                    self.threads.push(h);
                } else if let Some(d) = opts.duration {
                    // A graph with only a packet domain: end it after `duration`.
                    let stop2 = stop.clone();
                    let finished2 = finished.clone();
                    let h = std::thread::spawn(move || {
                        let end = Instant::now() + d;
                        while !stop2.load(Ordering::Relaxed) && Instant::now() < end {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        finished2.set();
                    });
                    self.threads.push(h);
                }
            }
        }
        Ok(())
    }

    /// Whether the graph ended by itself (duration reached, sources drained).
    pub fn is_finished(&self) -> bool {
        self.finished.get()
    }

    /// Waits until the graph ends by itself or `timeout` passes; returns
    /// whether it ended. Old schedules are collected meanwhile.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            self.collect_garbage();
            if self.is_finished() {
                return true;
            }
            let now = Instant::now();
            if now >= end {
                return false;
            }
            // The first thread that waits is woken when the graph ends
            // (one wake-up per `timeout` otherwise); any other polls.
            self.finished.waiter.register_current();
            if self.finished.waiter.is_current() {
                self.finished.waiter.wait(end - now);
            } else {
                std::thread::sleep((end - now).min(Duration::from_millis(10)));
            }
        }
    }

    /// Asks every domain thread to stop and joins them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wakers.packet.wake();
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
        self.collect_garbage();
    }

    /// A flag that stops the graph when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Time since [`Graph::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// Recompiles `spec` and hands the new schedules to the running domains.
    /// Stages with the same id, kind, domain and params keep their processor
    /// and state; new ones are built; missing ones are removed. The swap
    /// happens between two cycles.
    pub fn reconfigure(
        &mut self,
        spec: &GraphSpec,
        registry: &Registry,
        resources: &Resources,
    ) -> Result<(), GraphErrors> {
        if spec.clock.rate != self.rate || spec.clock.quantum != self.quantum {
            return Err(GraphError::new(
                ErrorKind::BadHeader,
                "a running graph cannot change its rate or quantum",
            )
            .at(&spec.file, None)
            .help("stop the graph and start the new one")
            .into());
        }
        let existing = Existing {
            stages: self
                .live
                .iter()
                .map(|(k, v)| (k.clone(), v.existing.clone()))
                .collect(),
        };
        let mut compiled = compile_with(spec, registry, resources, &existing, self.wakers.clone())?;
        for plan in &compiled.domains {
            if !self.controls.contains_key(&plan.domain) {
                return Err(GraphError::new(
                    ErrorKind::BadDomain,
                    format!(
                        "the running graph has no {} domain to add stages to",
                        plan.domain.name()
                    ),
                )
                .at(&spec.file, None)
                .help("start the graph with at least one stage in that domain")
                .into());
            }
        }
        // Slots: kept stages keep theirs; new ones take free ones.
        let mut new_live = HashMap::new();
        let mut slots_of: HashMap<usize, u32> = HashMap::new();
        let mut inserts: BTreeMap<Domain, Vec<Insert>> = BTreeMap::new();
        for (i, st) in compiled.stages.iter_mut().enumerate() {
            let slot = match (st.processor.take(), self.live.get(&st.key)) {
                (None, Some(l)) => l.slot,
                (p, _) => {
                    let Some(p) = p else { continue };
                    let ctl = self
                        .controls
                        .get_mut(&st.domain)
                        .expect("domain checked above");
                    let Some(slot) = ctl.free_slots.pop() else {
                        return Err(GraphError::new(
                            ErrorKind::Build,
                            "too many stages in one domain",
                        )
                        .at(&spec.file, None)
                        .into());
                    };
                    inserts.entry(st.domain).or_default().push((slot, p));
                    slot
                }
            };
            slots_of.insert(i, slot);
            new_live.insert(
                st.key.clone(),
                LiveStage {
                    domain: st.domain,
                    slot,
                    existing: ExistingStage {
                        inputs: st.inputs.clone(),
                        outputs: st.outputs.clone(),
                        latency: st.latency,
                        counters: st.counters.clone(),
                        gauges: st.gauges.clone(),
                        timing: st.timing.clone(),
                    },
                },
            );
        }
        // Every old slot not carried over (stage gone, or rebuilt under the
        // same key into a new slot) is cleared.
        let mut removes: BTreeMap<Domain, Vec<u32>> = BTreeMap::new();
        for (k, l) in &self.live {
            let kept = new_live
                .get(k)
                .is_some_and(|n: &LiveStage| n.slot == l.slot && n.domain == l.domain);
            if !kept {
                removes.entry(l.domain).or_default().push(l.slot);
            }
        }
        // All domains switch or none: check room in every update ring first.
        if self.controls.values().any(|c| c.updates.slots() == 0) {
            for (d, ins) in &inserts {
                if let Some(ctl) = self.controls.get_mut(d) {
                    ctl.free_slots.extend(ins.iter().map(|(s, _)| *s));
                }
            }
            return Err(GraphError::new(
                ErrorKind::Build,
                "too many reconfigurations in flight; wait a cycle and retry",
            )
            .at(&spec.file, None)
            .into());
        }
        let domain_timing: BTreeMap<Domain, Arc<DomainTiming>> =
            self.stats().domains.iter().cloned().collect();
        for (d, ctl) in self.controls.iter_mut() {
            let schedule = match compiled.domain(*d) {
                Some(plan) => build_schedule(&compiled, plan, &slots_of),
                None => Box::new(Schedule {
                    steps: Box::new([]),
                    pool: Box::new([]),
                }),
            };
            let ins = inserts.remove(d).unwrap_or_default();
            let rem = removes.remove(d).unwrap_or_default();
            let garbage = Vec::with_capacity(ins.len() + rem.len());
            for &s in &rem {
                ctl.free_slots.push(s);
            }
            let update = Box::new(Update {
                schedule: Some(schedule),
                inserts: ins,
                removes: rem,
                garbage,
            });
            if ctl.updates.push(update).is_err() {
                return Err(GraphError::new(
                    ErrorKind::Build,
                    "too many reconfigurations in flight; wait a cycle and retry",
                )
                .at(&spec.file, None)
                .into());
            }
        }
        self.live = new_live;
        let stats = stats_of(&compiled, &domain_timing);
        if let Ok(mut s) = self.stats.lock() {
            *s = Arc::new(stats);
        }
        if let Some(r) = self.runners.first() {
            // Manual mode: nothing to wake.
            let _ = r;
        }
        Ok(())
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        self.stop();
    }
}
