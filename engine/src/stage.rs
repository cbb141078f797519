//! The stage API, in two halves.
//!
//! A [`StageFactory`] lives on the control side: it describes a stage kind,
//! and [`StageFactory::build`] turns validated parameters into a [`Built`]
//! stage (ports, declared latency and a [`Processor`]). Building may allocate,
//! open files and fail with a clear error.
//!
//! A [`Processor`] lives on the real-time side. Its
//! [`Processor::process`] runs once per cycle and must not allocate, free,
//! lock, block, do I/O, log, or panic on any input. Everything it needs is
//! allocated by the factory or handed to it by the engine.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::params::{ParamError, ParamSpec, Params};
use crate::port::{Batch, Buffer, FrameMeta, PacketMeta, PortDecl};

/// Which scheduler domain a stage runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// Runs once per quantum, driven by the graph clock.
    Clocked,
    /// Runs to completion whenever a batch arrives.
    Packet,
}

impl Domain {
    pub fn name(self) -> &'static str {
        match self {
            Domain::Clocked => "clocked",
            Domain::Packet => "packet",
        }
    }

    pub fn parse(s: &str) -> Option<Domain> {
        match s {
            "clocked" => Some(Domain::Clocked),
            "packet" => Some(Domain::Packet),
            _ => None,
        }
    }
}

/// Text description of a port for listings (`wzp-client stages`).
#[derive(Clone, Debug)]
pub struct PortInfo {
    pub name: &'static str,
    /// e.g. `"Pcm@rate"`, `"Frame"`, `"Packet"`.
    pub ty: &'static str,
    pub doc: &'static str,
}

/// What a stage kind is, for listings, validation and docs.
#[derive(Clone, Debug)]
pub struct StageInfo {
    /// `family.name`, e.g. `audio.gain`.
    pub kind: &'static str,
    /// One line.
    pub summary: &'static str,
    pub inputs: Vec<PortInfo>,
    pub outputs: Vec<PortInfo>,
    pub params: Vec<ParamSpec>,
    /// The domain the stage runs in unless the graph says otherwise.
    pub default_domain: Domain,
    /// Domains the stage can run in.
    pub domains: &'static [Domain],
}

/// A stage kind. Registered in a [`crate::Registry`] under its kind string.
pub trait StageFactory: Send + Sync + 'static {
    fn info(&self) -> StageInfo;

    /// Builds one instance from validated parameters (defaults filled in).
    fn build(&self, cx: &mut BuildContext<'_>, params: &Params) -> Result<Built, BuildError>;
}

/// Why a factory could not build a stage.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A parameter's value is not acceptable.
    #[error("param `{}`: {}", .0.param, .0.message)]
    Param(ParamError),
    /// Anything else (a file that cannot be read, a library that refused).
    #[error("{0}")]
    Other(String),
}

impl From<ParamError> for BuildError {
    fn from(e: ParamError) -> Self {
        BuildError::Param(e)
    }
}

/// What the factory learns about the graph it is built into, and where it
/// registers its counters.
pub struct BuildContext<'a> {
    /// The graph's sample rate, Hz.
    pub rate: u32,
    /// The graph's quantum.
    pub quantum: Duration,
    /// Items per frame/packet batch.
    pub batch_capacity: usize,
    /// The stage's id in the graph.
    pub stage_id: &'a str,
    /// Folder of the graph file, for resolving relative paths.
    pub base_dir: Option<&'a std::path::Path>,
    /// The graph is compiled only to be described (`graph explain`): build
    /// ports and latency, but create no files, threads or sockets.
    pub dry_run: bool,
    pub(crate) counters: Vec<(String, Counter)>,
    pub(crate) gauges: Vec<(String, Gauge)>,
    pub(crate) resources: &'a Resources,
}

impl<'a> BuildContext<'a> {
    /// A context for building a stage outside a graph (tests, benches).
    pub fn standalone(rate: u32, quantum: Duration, resources: &'a Resources) -> Self {
        BuildContext {
            rate,
            quantum,
            batch_capacity: 64,
            stage_id: "standalone",
            base_dir: None,
            dry_run: false,
            counters: Vec::new(),
            gauges: Vec::new(),
            resources,
        }
    }

    /// Samples per quantum at `rate`.
    pub fn samples_at(&self, rate: u32) -> usize {
        crate::port::samples_per_quantum(rate, self.quantum.as_nanos() as u64)
    }

    /// Samples per quantum at the graph rate.
    pub fn quantum_samples(&self) -> usize {
        self.samples_at(self.rate)
    }

    /// A counter published with the stage's stats under `name`.
    pub fn counter(&mut self, name: &str) -> Counter {
        let c = Counter::default();
        self.counters.push((name.to_string(), c.clone()));
        c
    }

    /// A gauge published with the stage's stats under `name`.
    pub fn gauge(&mut self, name: &str) -> Gauge {
        let g = Gauge::default();
        self.gauges.push((name.to_string(), g.clone()));
        g
    }

    /// Shared objects the control plane handed to the engine (sockets' ring
    /// ends, keys, ...), looked up by type and name.
    pub fn resource<T: Send + Sync + 'static>(&self, name: &str) -> Option<Arc<T>> {
        self.resources.get::<T>(name)
    }

    /// Whether the control plane inserted a resource named `name` (of any
    /// type).
    pub fn has_resource(&self, name: &str) -> bool {
        self.resources.contains(name)
    }

    /// A shared object several stages of a graph meet at by name (a live
    /// settings cell one stage writes and another reads): the control
    /// plane's resource `name` if it inserted one, else one made with
    /// `T::default()` the first time any stage asks, and handed to every
    /// later one. `None` when a resource of another type has that name.
    pub fn shared_resource<T: Default + Send + Sync + 'static>(
        &self,
        name: &str,
    ) -> Option<Arc<T>> {
        self.resources.get_or_create_for::<T>(name, self.stage_id)
    }

    /// Resolves an *input* path param: as given (relative to the working
    /// directory) when it exists there, else relative to the graph file's
    /// folder when it exists there. Output paths should be used as given.
    pub fn resolve_path(&self, p: &str) -> std::path::PathBuf {
        let path = std::path::Path::new(p);
        if path.is_relative() && !path.exists() {
            if let Some(base) = self.base_dir {
                let candidate = base.join(path);
                if candidate.exists() {
                    return candidate;
                }
            }
        }
        path.to_path_buf()
    }

    /// The counters and gauges registered so far (for standalone use).
    pub fn take_metrics(&mut self) -> (Vec<(String, Counter)>, Vec<(String, Gauge)>) {
        (
            std::mem::take(&mut self.counters),
            std::mem::take(&mut self.gauges),
        )
    }
}

/// Named objects the control plane provides to factories.
#[derive(Default)]
pub struct Resources {
    items: std::collections::HashMap<String, Arc<dyn std::any::Any + Send + Sync>>,
    /// Made on demand by [`Resources::get_or_create`] while stages build
    /// (control side only; never touched on the real-time path).
    created: std::sync::Mutex<std::collections::HashMap<String, SharedCell>>,
}

/// A shared object made on demand, and the stages that asked for it.
struct SharedCell {
    value: Arc<dyn std::any::Any + Send + Sync>,
    users: std::collections::BTreeSet<String>,
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert<T: Send + Sync + 'static>(&mut self, name: &str, value: Arc<T>) {
        self.items.insert(name.to_string(), value);
    }

    /// Whether `name` was inserted (of any type).
    pub fn contains(&self, name: &str) -> bool {
        self.items.contains_key(name)
    }

    pub fn get<T: Send + Sync + 'static>(&self, name: &str) -> Option<Arc<T>> {
        self.items.get(name).cloned()?.downcast::<T>().ok()
    }

    /// The resource `name`, or one made with `T::default()` on the first
    /// call and returned by every later call for the same name (so two
    /// stages of a graph share it). `None` when `name` holds another type.
    pub fn get_or_create<T: Default + Send + Sync + 'static>(&self, name: &str) -> Option<Arc<T>> {
        self.get_or_create_for::<T>(name, "")
    }

    /// As [`Resources::get_or_create`], for stage `user` (recorded, for
    /// [`Resources::lonely_shared`]).
    pub fn get_or_create_for<T: Default + Send + Sync + 'static>(
        &self,
        name: &str,
        user: &str,
    ) -> Option<Arc<T>> {
        if let Some(v) = self.items.get(name) {
            return v.clone().downcast::<T>().ok();
        }
        let mut created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cell = created
            .entry(name.to_string())
            .or_insert_with(|| SharedCell {
                value: Arc::new(T::default()),
                users: Default::default(),
            });
        if !user.is_empty() {
            cell.users.insert(user.to_string());
        }
        cell.value.clone().downcast::<T>().ok()
    }

    /// Shared objects made on demand that only one stage asked for, as
    /// `(name, stage)`: nothing else writes or reads them (a mistyped
    /// name, most likely).
    pub fn lonely_shared(&self) -> Vec<(String, String)> {
        let created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out: Vec<(String, String)> = created
            .iter()
            .filter(|(_, c)| c.users.len() == 1)
            .filter_map(|(n, c)| Some((n.clone(), c.users.iter().next()?.clone())))
            .collect();
        out.sort();
        out
    }
}

/// A built stage, ready to be scheduled.
pub struct Built {
    pub inputs: Vec<PortDecl>,
    pub outputs: Vec<PortDecl>,
    /// Algorithmic latency the stage adds (an encoder's frame plus lookahead, a
    /// jitter buffer's target).
    pub latency: Duration,
    pub processor: Box<dyn Processor>,
}

/// A monotonically increasing count, written by one processor, read anywhere.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`. Single writer, so a relaxed load and store suffice (no
    /// locked instruction on the real-time path).
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (a target delay, a queue depth).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    #[inline]
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed)
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Whether a processor has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// The stage's source is exhausted (end of a file). Once every stage
    /// without inputs has said so, the graph drains and stops.
    Finished,
}

/// Per-cycle context handed to `process`.
#[derive(Clone, Copy, Debug)]
pub struct Cx {
    /// Nanoseconds since the graph started, in the domain's clock: the
    /// scheduled start of this cycle in the clocked domain (so a file-to-file
    /// run sees media time), the wake-up time in the packet domain.
    pub now_ns: u64,
    /// Cycle number in this domain.
    pub cycle: u64,
    /// Graph sample rate.
    pub rate: u32,
    /// Quantum length.
    pub quantum_ns: u64,
}

/// The real-time half of a stage.
pub trait Processor: Send + 'static {
    /// Reads inputs, writes outputs. Outputs arrive reset (silence, empty).
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow;
}

/// A stage's view of its input and output buffers during one `process`.
pub struct Io<'a> {
    pool: *mut Buffer,
    pool_len: usize,
    ins: &'a [u32],
    outs: &'a [u32],
    _life: std::marker::PhantomData<&'a mut [Buffer]>,
}

static EMPTY_PCM: [f32; 0] = [];

impl<'a> Io<'a> {
    /// # Safety
    /// `pool` must point to `pool_len` buffers valid for `'a`; every index in
    /// `ins` and `outs` must be below `pool_len`; indices in `outs` must be
    /// pairwise distinct and none may appear in `ins`. The compiler guarantees
    /// this for every step it emits.
    pub(crate) unsafe fn new(
        pool: *mut Buffer,
        pool_len: usize,
        ins: &'a [u32],
        outs: &'a [u32],
    ) -> Self {
        Io {
            pool,
            pool_len,
            ins,
            outs,
            _life: std::marker::PhantomData,
        }
    }

    /// Builds an `Io` over a caller-owned pool, checking the aliasing rules;
    /// for tests and benches that drive a processor by hand. `None` when an
    /// index is out of range or aliases.
    pub fn checked(pool: &'a mut [Buffer], ins: &'a [u32], outs: &'a [u32]) -> Option<Self> {
        let n = pool.len();
        let in_range = ins.iter().chain(outs).all(|&i| (i as usize) < n);
        let outs_distinct = outs
            .iter()
            .enumerate()
            .all(|(k, o)| !outs[..k].contains(o) && !ins.contains(o));
        if !(in_range && outs_distinct) {
            return None;
        }
        // SAFETY: indices checked above; the pool is exclusively borrowed for 'a.
        Some(unsafe { Io::new(pool.as_mut_ptr(), n, ins, outs) })
    }

    fn input(&self, i: usize) -> Option<&Buffer> {
        let idx = *self.ins.get(i)? as usize;
        debug_assert!(idx < self.pool_len);
        // SAFETY: idx < pool_len (constructor contract); inputs are never
        // handed out mutably while `self` lives, outputs never alias inputs.
        Some(unsafe { &*self.pool.add(idx) })
    }

    fn output(&mut self, i: usize) -> Option<&mut Buffer> {
        let idx = *self.outs.get(i)? as usize;
        debug_assert!(idx < self.pool_len);
        // SAFETY: idx < pool_len; output indices are distinct from each other
        // and from inputs, and `&mut self` prevents two live borrows of one.
        Some(unsafe { &mut *self.pool.add(idx) })
    }

    pub fn num_inputs(&self) -> usize {
        self.ins.len()
    }

    pub fn num_outputs(&self) -> usize {
        self.outs.len()
    }

    /// PCM input `i` (empty slice when the port is not PCM).
    pub fn pcm_in(&self, i: usize) -> &[f32] {
        match self.input(i) {
            Some(Buffer::Pcm(s)) => s,
            _ => &EMPTY_PCM,
        }
    }

    /// PCM output `i` (empty slice when the port is not PCM).
    pub fn pcm_out(&mut self, i: usize) -> &mut [f32] {
        match self.output(i) {
            Some(Buffer::Pcm(s)) => s,
            _ => &mut [],
        }
    }

    /// Frame input `i`.
    pub fn frames_in(&self, i: usize) -> Option<&Batch<FrameMeta>> {
        match self.input(i) {
            Some(Buffer::Frames(b)) => Some(b),
            _ => None,
        }
    }

    /// Frame output `i`.
    pub fn frames_out(&mut self, i: usize) -> Option<&mut Batch<FrameMeta>> {
        match self.output(i) {
            Some(Buffer::Frames(b)) => Some(b),
            _ => None,
        }
    }

    /// Packet input `i`.
    pub fn packets_in(&self, i: usize) -> Option<&Batch<PacketMeta>> {
        match self.input(i) {
            Some(Buffer::Packets(b)) => Some(b),
            _ => None,
        }
    }

    /// Packet output `i`.
    pub fn packets_out(&mut self, i: usize) -> Option<&mut Batch<PacketMeta>> {
        match self.output(i) {
            Some(Buffer::Packets(b)) => Some(b),
            _ => None,
        }
    }

    /// PCM input `i` and PCM output `o` at once, for in-to-out stages.
    pub fn pcm_in_out(&mut self, i: usize, o: usize) -> (&[f32], &mut [f32]) {
        let inp: *const [f32] = self.pcm_in(i);
        let out = self.pcm_out(o);
        // SAFETY: input and output buffers never alias (constructor contract),
        // and both borrows end with `&mut self`.
        (unsafe { &*inp }, out)
    }

    /// Two PCM inputs and a PCM output at once, for stages that combine two
    /// signals (an echo canceller's microphone and reference). The inputs
    /// may be one buffer (both linked to one output).
    pub fn pcm_in2_out(&mut self, a: usize, b: usize, o: usize) -> (&[f32], &[f32], &mut [f32]) {
        let x: *const [f32] = self.pcm_in(a);
        let y: *const [f32] = self.pcm_in(b);
        let out = self.pcm_out(o);
        // SAFETY: as in `pcm_in_out`; the two inputs are shared borrows.
        (unsafe { &*x }, unsafe { &*y }, out)
    }

    /// Frame input `i` and frame output `o` at once.
    pub fn frames_in_out(
        &mut self,
        i: usize,
        o: usize,
    ) -> (Option<&Batch<FrameMeta>>, Option<&mut Batch<FrameMeta>>) {
        let inp = self.frames_in(i).map(|b| b as *const Batch<FrameMeta>);
        let out = self.frames_out(o);
        // SAFETY: as in `pcm_in_out`.
        (inp.map(|p| unsafe { &*p }), out)
    }

    /// Packet input `i` and packet output `o` at once.
    pub fn packets_in_out(
        &mut self,
        i: usize,
        o: usize,
    ) -> (Option<&Batch<PacketMeta>>, Option<&mut Batch<PacketMeta>>) {
        let inp = self.packets_in(i).map(|b| b as *const Batch<PacketMeta>);
        let out = self.packets_out(o);
        // SAFETY: as in `pcm_in_out`.
        (inp.map(|p| unsafe { &*p }), out)
    }

    /// Packet input `i` and two distinct packet outputs at once, for stages
    /// that route each packet to one output or both. `None` for an output
    /// that is missing, not a packet port, or the same index twice.
    pub fn packets_in_two_out(
        &mut self,
        i: usize,
        a: usize,
        b: usize,
    ) -> (
        Option<&Batch<PacketMeta>>,
        Option<&mut Batch<PacketMeta>>,
        Option<&mut Batch<PacketMeta>>,
    ) {
        let inp = self.packets_in(i).map(|x| x as *const Batch<PacketMeta>);
        if a == b {
            // SAFETY: as in `pcm_in_out`.
            return (inp.map(|p| unsafe { &*p }), None, None);
        }
        let oa = self.packets_out(a).map(|x| x as *mut Batch<PacketMeta>);
        let ob = self.packets_out(b).map(|x| x as *mut Batch<PacketMeta>);
        // SAFETY: output indices are distinct from each other (checked above:
        // distinct port numbers map to distinct pool buffers by the
        // constructor contract) and from inputs; all borrows end with
        // `&mut self`.
        (
            inp.map(|p| unsafe { &*p }),
            oa.map(|p| unsafe { &mut *p }),
            ob.map(|p| unsafe { &mut *p }),
        )
    }

    /// Frame input `i` and packet output `o` at once.
    pub fn frames_in_packets_out(
        &mut self,
        i: usize,
        o: usize,
    ) -> (Option<&Batch<FrameMeta>>, Option<&mut Batch<PacketMeta>>) {
        let inp = self.frames_in(i).map(|b| b as *const Batch<FrameMeta>);
        let out = self.packets_out(o);
        // SAFETY: as in `pcm_in_out`.
        (inp.map(|p| unsafe { &*p }), out)
    }

    /// Packet input `i` and frame output `o` at once.
    pub fn packets_in_frames_out(
        &mut self,
        i: usize,
        o: usize,
    ) -> (Option<&Batch<PacketMeta>>, Option<&mut Batch<FrameMeta>>) {
        let inp = self.packets_in(i).map(|b| b as *const Batch<PacketMeta>);
        let out = self.frames_out(o);
        // SAFETY: as in `pcm_in_out`.
        (inp.map(|p| unsafe { &*p }), out)
    }

    /// Frame input `i` and PCM output `o` at once.
    pub fn frames_in_pcm_out(
        &mut self,
        i: usize,
        o: usize,
    ) -> (Option<&Batch<FrameMeta>>, &mut [f32]) {
        let inp = self.frames_in(i).map(|b| b as *const Batch<FrameMeta>);
        let out = self.pcm_out(o);
        // SAFETY: as in `pcm_in_out`.
        (inp.map(|p| unsafe { &*p }), out)
    }

    /// PCM input `i` and frame output `o` at once.
    pub fn pcm_in_frames_out(
        &mut self,
        i: usize,
        o: usize,
    ) -> (&[f32], Option<&mut Batch<FrameMeta>>) {
        let inp: *const [f32] = self.pcm_in(i);
        let out = self.frames_out(o);
        // SAFETY: as in `pcm_in_out`.
        (unsafe { &*inp }, out)
    }
}
