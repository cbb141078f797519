//! `net.netem` and `net.netem_frames`: a seeded, sans-IO network emulator.
//!
//! Impairs a stream of packets (`net.netem`) or encoded frames
//! (`net.netem_frames`) the way a bad path would: random loss,
//! Gilbert-Elliott burst loss, loss replayed from a trace file, fixed delay,
//! jitter, reordering, duplication and a token-bucket rate limit. Like str0m's netem, it owns no clock
//! and no socket: time is `cx.now_ns`, randomness comes from `seed`, so the
//! same input and seed always give the same output, faster than real time.
//!
//! Held items wait in a delay queue of fixed capacity (a binary heap of
//! release times over a pre-allocated pool of slots). An item leaves in the
//! first cycle at or after its release time, as a socket read once a cycle
//! finds a packet only after it came, with `arrival_ns` set to that exact
//! release time, so a jitter buffer downstream sees sub-quantum jitter even
//! though the graph runs in 20 ms steps. A delay off the quantum's grid
//! therefore puts the receiver's cycles at that phase against the arrivals,
//! as a real path does (a delay of 5 ms on 20 ms cycles: each item waits 15
//! ms for the cycle that takes it in; docs/QUALITY.md finding 38).
//!
//! Loss models combine: an item is lost when the trace says so, or the
//! Gilbert-Elliott chain loses it, or the independent `loss` draw does.
//!
//! ## Ports
//! - `in` (Packet or Frame): items to impair.
//! - `out` (same type): the items that survive, in release order.
//!
//! ## Params
//! - `seed` (int, 1): seed of the random generator.
//! - `loss` (number, 0): independent loss, percent. With `burst` set and
//!   `ge_p` 0, it is instead the mean loss of the burst model.
//! - `ge_p` (number, 0): Gilbert-Elliott good -> bad transition, percent per
//!   item; 0 disables the model.
//! - `ge_r` (number, 25): bad -> good transition, percent per item (mean
//!   burst length is 100 / `ge_r` items).
//! - `ge_loss_bad` (number, 100): loss in the bad state, percent.
//! - `burst` (duration, 0ms): mean burst length; sets `ge_r` to
//!   quantum / `burst` (one item per quantum) and, when `ge_p` is 0, derives
//!   `ge_p` so that the mean loss is `loss`.
//! - `delay` (duration, 0ms): fixed one-way delay.
//! - `jitter` (duration, 0ms): delay variation; see `jitter_dist`.
//! - `jitter_dist` ("uniform"): `uniform` draws from delay ± jitter,
//!   `normal` from a normal law with mean delay and deviation jitter; the
//!   total delay is clamped at 0. Like kernel netem, jitter may reorder items.
//! - `reorder` (number, 0): percent of items held an extra `reorder_gap` so
//!   that later items overtake them.
//! - `reorder_gap` (duration, 40ms): the extra hold of a reordered item.
//! - `duplicate` (number, 0): percent of items sent twice (each copy gets its
//!   own jitter).
//! - `trace` (string, ""): path of a loss trace, one `0` (kept) or `1` (lost)
//!   per item, separated by whitespace; read at build time, replayed in a loop.
//! - `capacity` (int, 1024): items the delay queue holds; more are dropped
//!   and counted in `overflow_drops`.
//! - `rate` (number, 0): token-bucket rate limit in kbit/s over the items'
//!   bytes; 0 = unlimited. An item waits for its tokens (queueing delay).
//! - `rate_burst` (int, 3000): bucket depth in bytes.
//! - `rate_queue` (duration, 100ms): longest wait for tokens; an item that
//!   would wait longer is dropped and counted in `rate_drops`.
//!
//! - `repair_rides` (bool, false; `net.netem_frames` only): a cycle's first
//!   repair frame (`REPAIR`) shares the fate of the cycle's first source
//!   frame, lost with it or released with it, drawing nothing (no trace
//!   entry): a repair riding in its source frame's packet, as
//!   `wire.packetize` sends them in a call (docs/WIRE.md §1.7).
//!
//! The impairment itself is [`super::netem_core::NetemCore`], shared with
//! the `wzp-netem` UDP proxy.
//!
//! ## Counters
//! `passed`, `lost`, `duplicated`, `reordered`, `overflow_drops`, `rate_drops`.
//!
//! ## Latency
//! Declares `delay` (the fixed part; jitter comes on top).
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "bad_path"
//! kind = "net.netem_frames"
//! params = { seed = 7, loss = 5, burst = "60ms", delay = "40ms", jitter = "15ms" }
//! ```

use std::time::Duration;

use wzp_engine::bridge::Meta;
use wzp_engine::prelude::*;

/// Most `delay` or `jitter` a netem stage takes.
const MAX_HOLD: std::time::Duration = std::time::Duration::from_secs(60);

pub use super::netem_core::{load_trace, parse_trace, TraceError};
use super::netem_core::{GeModel, ImpairParams, NetemCore};

/// Items that carry an arrival time netem can set.
pub trait Arrival: Meta {
    fn set_arrival_ns(&mut self, ns: u64);
    /// An item that may ride in another's datagram (a RaptorQ repair frame).
    fn may_ride(&self) -> bool;
    /// An item that may carry a rider (a source frame that was sent).
    fn may_carry(&self) -> bool;
}

impl Arrival for FrameMeta {
    fn set_arrival_ns(&mut self, ns: u64) {
        self.arrival_ns = ns;
    }
    fn may_ride(&self) -> bool {
        self.flags & (frame_flags::REPAIR | frame_flags::MISSING) == frame_flags::REPAIR
    }
    fn may_carry(&self) -> bool {
        self.flags & (frame_flags::REPAIR | frame_flags::MISSING) == 0
    }
}

impl Arrival for PacketMeta {
    fn set_arrival_ns(&mut self, ns: u64) {
        self.arrival_ns = ns;
    }
    fn may_ride(&self) -> bool {
        false
    }
    fn may_carry(&self) -> bool {
        false
    }
}

/// `net.netem`: impairs Packet items.
pub struct Netem;

/// `net.netem_frames`: impairs Frame items.
pub struct NetemFrames;

fn params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::int("seed", 1, "seed of the random generator"),
        ParamSpec::float("loss", 0.0, "independent loss, percent (mean loss of the burst model when `burst` is set and `ge_p` is 0)"),
        ParamSpec::float("ge_p", 0.0, "Gilbert-Elliott good->bad transition, percent per item; 0 disables"),
        ParamSpec::float("ge_r", 25.0, "Gilbert-Elliott bad->good transition, percent per item"),
        ParamSpec::float("ge_loss_bad", 100.0, "loss in the bad state, percent"),
        ParamSpec::duration("burst", Duration::ZERO, "mean burst length (sets ge_r from the quantum)"),
        ParamSpec::duration("delay", Duration::ZERO, "fixed one-way delay"),
        ParamSpec::duration("jitter", Duration::ZERO, "delay variation"),
        ParamSpec::str("jitter_dist", "uniform", "uniform (delay ± jitter) or normal (deviation jitter)"),
        ParamSpec::float("reorder", 0.0, "percent of items held back by reorder_gap"),
        ParamSpec::duration("reorder_gap", Duration::from_millis(40), "extra hold of a reordered item"),
        ParamSpec::float("duplicate", 0.0, "percent of items sent twice"),
        ParamSpec::str("trace", "", "loss trace file: one 0/1 per item (1 = lost), looped"),
        ParamSpec::int("capacity", 1024, "items the delay queue holds"),
        ParamSpec::float("rate", 0.0, "token-bucket rate limit, kbit/s; 0 = unlimited"),
        ParamSpec::int("rate_burst", 3000, "token-bucket depth, bytes"),
        ParamSpec::duration("rate_queue", Duration::from_millis(100), "longest wait for tokens; longer waits are dropped"),
        ParamSpec::bool("repair_rides", false, "frames only: a cycle's first repair frame shares the fate of its first source frame (a repair riding in its packet, docs/WIRE.md 1.7)"),
    ]
}

fn info(kind: &'static str, ty: &'static str, summary: &'static str) -> StageInfo {
    StageInfo {
        kind,
        summary,
        inputs: vec![PortInfo {
            name: "in",
            ty,
            doc: "items to impair",
        }],
        outputs: vec![PortInfo {
            name: "out",
            ty,
            doc: "surviving items, arrival_ns set to their release time",
        }],
        params: params(),
        default_domain: Domain::Clocked,
        // Releases happen on quantum boundaries: the packet domain would only
        // release when something else wakes it.
        domains: &[Domain::Clocked],
    }
}

impl StageFactory for Netem {
    fn info(&self) -> StageInfo {
        info(
            "net.netem",
            "Packet",
            "seeded network emulator for packets: loss, bursts, delay, jitter, reorder, duplicates",
        )
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        build::<PacketMeta>(cx, p, PortType::Packet)
    }
}

impl StageFactory for NetemFrames {
    fn info(&self) -> StageInfo {
        info(
            "net.netem_frames",
            "Frame",
            "seeded network emulator for frames: loss, bursts, delay, jitter, reorder, duplicates",
        )
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        build::<FrameMeta>(cx, p, PortType::Frame)
    }
}

fn percent(p: &Params, name: &str) -> Result<f64, ParamError> {
    Ok(p.float_in(name, 0.0, 100.0)? / 100.0)
}

fn build<M: Arrival>(
    cx: &mut BuildContext<'_>,
    p: &Params,
    ty: PortType,
) -> Result<Built, BuildError> {
    let seed = p.int("seed")? as u64;
    let loss = percent(p, "loss")?;
    let mut ge_p = percent(p, "ge_p")?;
    let mut ge_r = percent(p, "ge_r")?;
    let ge_loss_bad = percent(p, "ge_loss_bad")?;
    let burst = p.duration("burst")?;
    let mut random_loss = loss;
    if !burst.is_zero() {
        let quantum = cx.quantum.as_secs_f64();
        ge_r = (quantum / burst.as_secs_f64()).min(1.0);
        if ge_p == 0.0 {
            if loss >= 1.0 {
                return Err(ParamError::new(
                    "loss",
                    "must be below 100 when `burst` derives the burst model from it",
                )
                .into());
            }
            // Stationary share of the bad state is p / (p + r); solve for p so
            // that it equals the requested mean loss.
            ge_p = (ge_r * loss / (1.0 - loss)).min(1.0);
            random_loss = 0.0;
        }
    }
    if ge_p > 0.0 && ge_r == 0.0 {
        return Err(ParamError::new(
            "ge_r",
            "0 with ge_p > 0 would stay in the bad state forever; use a value above 0",
        )
        .into());
    }
    // A path that holds an item longer than a minute is no path: a larger
    // value is a typo (`100000s`) that would hold every item for days.
    let bounded = |name: &str| -> Result<u64, BuildError> {
        let d = p.duration(name)?;
        if d > MAX_HOLD {
            return Err(
                ParamError::new(name, format!("{d:?} is out of range; use 0..=60s")).into(),
            );
        }
        Ok(d.as_nanos() as u64)
    };
    let delay_ns = bounded("delay")?;
    let jitter_ns = bounded("jitter")?;
    let normal = p.choice("jitter_dist", &["uniform", "normal"])? == "normal";
    let reorder = percent(p, "reorder")?;
    let reorder_gap_ns = p
        .duration("reorder_gap")?
        .as_nanos()
        .min(u64::MAX as u128 / 4) as u64;
    let duplicate = percent(p, "duplicate")?;
    let capacity = p.int_in("capacity", 1, 1 << 16)? as usize;
    let trace_path = p.str("trace")?;
    let trace = if trace_path.is_empty() {
        Vec::new()
    } else {
        load_trace(&cx.resolve_path(trace_path)).map_err(|e| BuildError::Other(e.to_string()))?
    };

    let rate_kbps = p.float_in("rate", 0.0, 1e7)?;
    let impair = ImpairParams {
        loss: random_loss,
        ge: GeModel::PerItem { p: ge_p, r: ge_r },
        ge_loss_bad,
        delay_ns,
        jitter_ns,
        normal,
        reorder,
        reorder_gap_ns,
        duplicate,
        rate_bps: (rate_kbps * 1000.0) as u64,
        rate_burst_bytes: p.int_in("rate_burst", 1, 1 << 30)? as u64,
        rate_queue_ns: p
            .duration("rate_queue")?
            .as_nanos()
            .min(u64::MAX as u128 / 4) as u64,
    };
    let repair_rides = p.bool("repair_rides")?;
    if repair_rides && ty != PortType::Frame {
        return Err(ParamError::new(
            "repair_rides",
            "is for net.netem_frames (a repair frame riding in a source frame's packet); \
             net.netem sees packets, which carry their riders already",
        )
        .into());
    }
    let processor = NetemProc::<M> {
        repair_rides,
        core: NetemCore::new(impair, seed, trace, capacity),
        passed: cx.counter("passed"),
        lost: cx.counter("lost"),
        duplicated: cx.counter("duplicated"),
        reordered: cx.counter("reordered"),
        overflow_drops: cx.counter("overflow_drops"),
        rate_drops: cx.counter("rate_drops"),
    };
    Ok(Built {
        inputs: vec![PortDecl::new("in", ty)],
        outputs: vec![PortDecl::new("out", ty)],
        latency: Duration::from_nanos(delay_ns),
        processor: Box::new(processor),
    })
}

struct NetemProc<M> {
    /// A cycle's first repair frame shares its first source frame's fate.
    repair_rides: bool,
    core: NetemCore<Slot<M>>,
    passed: Counter,
    lost: Counter,
    duplicated: Counter,
    reordered: Counter,
    overflow_drops: Counter,
    rate_drops: Counter,
}

impl<M: Arrival> Processor for NetemProc<M> {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        if let Some(input) = M::input(io, 0) {
            // The cycle's first repair frame rides with its first source
            // frame, as `wire.packetize` sends them in a call.
            let (rider, carrier) = if self.repair_rides {
                (
                    input.iter().position(|s| s.meta.may_ride()),
                    input.iter().position(|s| s.meta.may_carry()),
                )
            } else {
                (None, None)
            };
            let rider = rider.filter(|_| carrier.is_some());
            for (i, slot) in input.iter().enumerate() {
                if Some(i) == rider {
                    continue;
                }
                let o = self.core.push(cx.now_ns, slot.bytes().len(), |dst| {
                    dst.meta = slot.meta;
                    dst.set_bytes(slot.bytes());
                });
                if let (Some(r), true) = (rider, Some(i) == carrier) {
                    if let Some(rs) = input.get(r) {
                        let queued = self.core.push_riding(|dst| {
                            dst.meta = rs.meta;
                            dst.set_bytes(rs.bytes());
                        });
                        if !queued {
                            self.lost.inc();
                        }
                    }
                }
                if o.lost {
                    self.lost.inc();
                    continue;
                }
                if o.duplicated {
                    self.duplicated.inc();
                }
                self.reordered.add(o.reordered as u64);
                self.rate_drops.add(o.rate_dropped as u64);
                self.overflow_drops.add(o.overflow as u64);
            }
        }
        // Released by now: what a read of the socket now would find.
        let horizon = cx.now_ns.saturating_add(1);
        let Some(out) = M::output(io, 0) else {
            return Flow::Continue;
        };
        while self.core.next_release().is_some_and(|t| t < horizon) {
            let Some(dst) = out.push_slot() else {
                // Output full: the rest waits for the next cycle.
                break;
            };
            let Some((release, src)) = self.core.pop_before(horizon) else {
                break;
            };
            dst.meta = src.meta;
            dst.meta.set_arrival_ns(release);
            dst.set_bytes(src.bytes());
            self.passed.inc();
        }
        Flow::Continue
    }
}
