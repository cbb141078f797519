//! The impairment core shared by the `net.netem` stages and the `wzp-netem`
//! UDP proxy: a sans-IO network emulator.
//!
//! [`NetemCore`] owns no clock and no socket. It is fed items with `now`
//! ([`NetemCore::push`]) and polled for the items whose release time has come
//! ([`NetemCore::pop_before`], [`NetemCore::next_release`]). Randomness comes
//! from a seed, so the same input, seed and times give the same output.
//!
//! Per item, in this order (the order of the random draws is part of the
//! contract: a seed reproduces a run):
//! 1. loss: the trace, the Gilbert-Elliott chain and the independent draw;
//!    the item is lost if any of them says so (each advances its state for
//!    every item, so the pattern does not depend on which one fired);
//! 2. duplication: the item may be sent twice;
//! 3. per copy: the token bucket (`rate`) may drop it or hold it until its
//!    bytes have drained, then the delay (with jitter) and the reorder hold
//!    are added, and the copy waits in the delay queue.
//!
//! The delay queue has a fixed capacity chosen at construction: a binary heap
//! of release times over a pre-allocated pool of slots. Nothing here
//! allocates after [`NetemCore::new`], so the stage's `process` stays
//! real-time safe.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The Gilbert-Elliott burst-loss chain and how it steps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GeModel {
    /// No burst model.
    Off,
    /// One transition per item: good -> bad with probability `p`, bad ->
    /// good with `r` (fractions). The mean burst is `1 / r` items. Suits a
    /// stream with one item per quantum (the graph stages).
    PerItem { p: f64, r: f64 },
    /// A continuous-time chain sampled at each item's arrival: the bad state
    /// lasts `mean_bad_ns` on average and the good state `mean_good_ns`, so
    /// the share of time in the bad state is `bad / (bad + good)` whatever
    /// the packet rate. Suits real traffic (the proxy), where packets do not
    /// arrive on a grid.
    PerTime { mean_bad_ns: u64, mean_good_ns: u64 },
}

impl GeModel {
    /// The continuous-time chain whose mean loss is `loss` (a fraction below
    /// 1) in bursts of `burst_ns` on average.
    pub fn bursts(loss: f64, burst_ns: u64) -> GeModel {
        if loss <= 0.0 || burst_ns == 0 {
            return GeModel::Off;
        }
        let loss = loss.min(0.999_999);
        let good = burst_ns as f64 * (1.0 - loss) / loss;
        GeModel::PerTime {
            mean_bad_ns: burst_ns,
            mean_good_ns: good.clamp(1.0, u64::MAX as f64 / 4.0) as u64,
        }
    }
}

/// What the core does to items. Probabilities are fractions (0..=1).
#[derive(Clone, Debug, PartialEq)]
pub struct ImpairParams {
    /// Independent loss.
    pub loss: f64,
    pub ge: GeModel,
    /// Loss in the Gilbert-Elliott bad state.
    pub ge_loss_bad: f64,
    /// Fixed one-way delay.
    pub delay_ns: u64,
    /// Delay variation: uniform in delay ± jitter, or normal with this
    /// deviation when `normal` is set; the total is clamped at 0.
    pub jitter_ns: u64,
    pub normal: bool,
    /// Share of items held an extra `reorder_gap_ns` so later ones overtake.
    pub reorder: f64,
    pub reorder_gap_ns: u64,
    /// Share of items sent twice.
    pub duplicate: f64,
    /// Token-bucket rate in bits per second; 0 = unlimited.
    pub rate_bps: u64,
    /// Bucket depth: bytes that may pass at once after an idle spell.
    pub rate_burst_bytes: u64,
    /// Longest an item may wait for tokens; one that would wait longer is
    /// dropped (a full queue in front of a slow link).
    pub rate_queue_ns: u64,
}

impl Default for ImpairParams {
    fn default() -> Self {
        ImpairParams {
            loss: 0.0,
            ge: GeModel::Off,
            ge_loss_bad: 1.0,
            delay_ns: 0,
            jitter_ns: 0,
            normal: false,
            reorder: 0.0,
            reorder_gap_ns: 40_000_000,
            duplicate: 0.0,
            rate_bps: 0,
            rate_burst_bytes: 3_000,
            rate_queue_ns: 100_000_000,
        }
    }
}

/// What happened to one pushed item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// Lost to the trace, the burst chain or the independent draw.
    pub lost: bool,
    /// Sent twice.
    pub duplicated: bool,
    /// Copies dropped by the token bucket (queue too long).
    pub rate_dropped: u8,
    /// Copies held back to be reordered.
    pub reordered: u8,
    /// Copies dropped because the delay queue was full.
    pub overflow: u8,
    /// Copies now waiting in the delay queue.
    pub queued: u8,
    /// Queued copies whose release time is later than `now`.
    pub delayed: u8,
}

/// Running totals of [`PushOutcome`]s and releases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetemStats {
    /// Items pushed.
    pub offered: u64,
    /// Copies released by `pop_before`.
    pub released: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub rate_dropped: u64,
    pub reordered: u64,
    pub overflow: u64,
    pub delayed: u64,
}

/// The sans-IO impairment core over items of type `T` (the caller's storage:
/// an engine slot, a datagram buffer).
pub struct NetemCore<T> {
    params: ImpairParams,
    rng: SmallRng,
    ge_bad: bool,
    /// Time of the last Gilbert-Elliott step (continuous-time chain).
    ge_last_ns: Option<u64>,
    trace: Box<[bool]>,
    trace_pos: usize,
    /// Token bucket: bytes available (negative = backlog) as of `bucket_ns`.
    tokens: f64,
    bucket_ns: Option<u64>,
    /// Storage of held items; `free` lists the unused indices.
    pool: Box<[T]>,
    free: Vec<u32>,
    /// (release time, arrival order, pool index), earliest first; the order
    /// keeps items released at the same instant first-in first-out.
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    order: u64,
    stats: NetemStats,
    /// Release time of the last item pushed (its first copy), `None` when
    /// it was lost or dropped: the fate of an item that rides with it
    /// ([`NetemCore::push_riding`]).
    last_release: Option<u64>,
}

impl<T: Default> NetemCore<T> {
    /// A core holding at most `capacity` items (at least 1) in its delay
    /// queue. `trace` (one flag per item, `true` = lost; may be empty) is
    /// replayed in a loop.
    pub fn new(params: ImpairParams, seed: u64, trace: Vec<bool>, capacity: usize) -> Self {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        NetemCore {
            tokens: params.rate_burst_bytes as f64,
            params,
            rng: SmallRng::seed_from_u64(seed),
            ge_bad: false,
            ge_last_ns: None,
            trace: trace.into_boxed_slice(),
            trace_pos: 0,
            bucket_ns: None,
            pool: (0..capacity).map(|_| T::default()).collect(),
            free: (0..capacity as u32).rev().collect(),
            queue: BinaryHeap::with_capacity(capacity),
            order: 0,
            stats: NetemStats::default(),
            last_release: None,
        }
    }
}

impl<T> NetemCore<T> {
    pub fn params(&self) -> &ImpairParams {
        &self.params
    }

    /// Changes the impairment from now on. The random generator, the burst
    /// chain's state, the trace position, the bucket and the held items
    /// carry over.
    pub fn set_params(&mut self, params: ImpairParams) {
        self.tokens = self.tokens.min(params.rate_burst_bytes as f64);
        self.params = params;
    }

    pub fn stats(&self) -> &NetemStats {
        &self.stats
    }

    /// Items waiting in the delay queue.
    pub fn held(&self) -> usize {
        self.queue.len()
    }

    /// Feeds one item of `len` bytes arriving at `now_ns`. `fill` is called
    /// once per queued copy to write the item into its pool slot.
    pub fn push(&mut self, now_ns: u64, len: usize, mut fill: impl FnMut(&mut T)) -> PushOutcome {
        let mut out = PushOutcome::default();
        self.stats.offered += 1;
        self.last_release = None;
        if self.is_lost(now_ns) {
            out.lost = true;
            self.stats.lost += 1;
            return out;
        }
        let copies = if self.chance(self.params.duplicate) {
            out.duplicated = true;
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let Some(wait_ns) = self.bucket_wait(now_ns, len) else {
                out.rate_dropped += 1;
                self.stats.rate_dropped += 1;
                continue;
            };
            let mut release = now_ns
                .saturating_add(wait_ns)
                .saturating_add(self.delay_sample());
            if self.chance(self.params.reorder) {
                out.reordered += 1;
                self.stats.reordered += 1;
                release = release.saturating_add(self.params.reorder_gap_ns);
            }
            let Some(idx) = self.free.pop() else {
                out.overflow += 1;
                self.stats.overflow += 1;
                continue;
            };
            fill(&mut self.pool[idx as usize]);
            self.order += 1;
            // Never exceeds the capacity reserved in `new`: one entry per pool slot.
            self.queue.push(Reverse((release, self.order, idx)));
            if out.queued == 0 {
                self.last_release = Some(release);
            }
            out.queued += 1;
            if release > now_ns {
                out.delayed += 1;
                self.stats.delayed += 1;
            }
        }
        out
    }

    /// Feeds an item that travels in the same datagram as the item pushed
    /// last (a repair symbol riding in a source frame's packet, docs/WIRE.md
    /// §1.7): it shares that item's fate, lost or dropped with it, else
    /// released with its first copy, and draws nothing (no trace position,
    /// no random draw, no tokens: its bytes were in that datagram). Returns
    /// whether it was queued.
    pub fn push_riding(&mut self, mut fill: impl FnMut(&mut T)) -> bool {
        self.stats.offered += 1;
        let Some(release) = self.last_release else {
            self.stats.lost += 1;
            return false;
        };
        let Some(idx) = self.free.pop() else {
            self.stats.overflow += 1;
            return false;
        };
        fill(&mut self.pool[idx as usize]);
        self.order += 1;
        self.queue.push(Reverse((release, self.order, idx)));
        true
    }

    /// The earliest release time waiting, if any.
    pub fn next_release(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Takes the earliest held item if its release time is before
    /// `horizon_ns`: its release time and the item. The slot is reused by a
    /// later `push`.
    pub fn pop_before(&mut self, horizon_ns: u64) -> Option<(u64, &T)> {
        let &Reverse((release, _, idx)) = self.queue.peek()?;
        if release >= horizon_ns {
            return None;
        }
        self.queue.pop();
        self.free.push(idx);
        self.stats.released += 1;
        Some((release, &self.pool[idx as usize]))
    }

    /// Draws every loss model for one item.
    fn is_lost(&mut self, now_ns: u64) -> bool {
        let mut lost = false;
        if !self.trace.is_empty() {
            lost |= self.trace[self.trace_pos];
            self.trace_pos = (self.trace_pos + 1) % self.trace.len();
        }
        match self.params.ge {
            GeModel::Off => {}
            GeModel::PerItem { p, r } => {
                if p > 0.0 {
                    let flip = self.rng.random::<f64>();
                    self.ge_bad = if self.ge_bad { flip >= r } else { flip < p };
                    let draw = self.rng.random::<f64>();
                    lost |= self.ge_bad && draw < self.params.ge_loss_bad;
                }
            }
            GeModel::PerTime {
                mean_bad_ns,
                mean_good_ns,
            } => {
                let dt = self
                    .ge_last_ns
                    .map_or(0, |last| now_ns.saturating_sub(last)) as f64;
                self.ge_last_ns = Some(now_ns);
                // Two-state Markov chain in continuous time: leaving rates
                // 1/good and 1/bad, stationary bad share pi_b. Over dt the
                // chain relaxes towards pi_b by exp(-(sum of rates) dt).
                let to_bad = 1.0 / mean_good_ns.max(1) as f64;
                let to_good = 1.0 / mean_bad_ns.max(1) as f64;
                let pi_bad = to_bad / (to_bad + to_good);
                let decay = (-(to_bad + to_good) * dt).exp();
                let p_bad = if self.ge_bad {
                    pi_bad + (1.0 - pi_bad) * decay
                } else {
                    pi_bad * (1.0 - decay)
                };
                let flip = self.rng.random::<f64>();
                self.ge_bad = flip < p_bad;
                let draw = self.rng.random::<f64>();
                lost |= self.ge_bad && draw < self.params.ge_loss_bad;
            }
        }
        if self.params.loss > 0.0 {
            lost |= self.rng.random::<f64>() < self.params.loss;
        }
        lost
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// The token bucket: how long a copy of `len` bytes waits for its
    /// tokens, or `None` if that is longer than the queue allows (dropped).
    fn bucket_wait(&mut self, now_ns: u64, len: usize) -> Option<u64> {
        let rate = self.params.rate_bps;
        if rate == 0 {
            return Some(0);
        }
        let bytes_per_ns = rate as f64 / 8e9;
        let last = self.bucket_ns.unwrap_or(now_ns);
        let elapsed = now_ns.saturating_sub(last) as f64;
        self.bucket_ns = Some(now_ns.max(last));
        self.tokens =
            (self.tokens + elapsed * bytes_per_ns).min(self.params.rate_burst_bytes as f64);
        let after = self.tokens - len as f64;
        if after >= 0.0 {
            self.tokens = after;
            return Some(0);
        }
        let wait = -after / bytes_per_ns;
        if wait > self.params.rate_queue_ns as f64 {
            return None;
        }
        self.tokens = after;
        Some(wait.ceil() as u64)
    }

    fn delay_sample(&mut self) -> u64 {
        let p = &self.params;
        if p.jitter_ns == 0 {
            return p.delay_ns;
        }
        let j = p.jitter_ns as f64;
        let (delay, normal) = (p.delay_ns as f64, p.normal);
        let offset = if normal {
            // Box-Muller; 1 - u keeps the logarithm finite.
            let u1 = 1.0 - self.rng.random::<f64>();
            let u2 = self.rng.random::<f64>();
            j * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        } else {
            j * (2.0 * self.rng.random::<f64>() - 1.0)
        };
        (delay + offset).max(0.0) as u64
    }
}

/// Why a loss trace could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TraceError {
    #[error("cannot read loss trace {path}: {reason}; check the `trace` path")]
    Read { path: String, reason: String },
    #[error("loss trace {path}: line {line}: token {token:?} is not 0 or 1; write one 0 (kept) or 1 (lost) per item")]
    BadToken {
        path: String,
        line: usize,
        token: String,
    },
    #[error("loss trace {path} holds no entries; write one 0 (kept) or 1 (lost) per item")]
    Empty { path: String },
}

/// Parses a loss trace: whitespace-separated `0`/`1` tokens, `1` = lost.
/// `path` only names the source in errors.
pub fn parse_trace(text: &str, path: &str) -> Result<Vec<bool>, TraceError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for token in line.split_whitespace() {
            match token {
                "0" => out.push(false),
                "1" => out.push(true),
                _ => {
                    return Err(TraceError::BadToken {
                        path: path.to_string(),
                        line: i + 1,
                        token: token.chars().take(32).collect(),
                    })
                }
            }
        }
    }
    if out.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// Reads and parses a loss trace file.
pub fn load_trace(path: &std::path::Path) -> Result<Vec<bool>, TraceError> {
    let shown = path.display().to_string();
    // A trace is a character and a line end per packet: 64 MiB is days.
    let text = wzp_engine::files::read_text(path, 64 << 20).map_err(|e| TraceError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    parse_trace(&text, &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn core(params: ImpairParams, seed: u64) -> NetemCore<u32> {
        NetemCore::new(params, seed, Vec::new(), 4096)
    }

    /// Pushes `n` items `gap_ns` apart (item i carries i), draining as time
    /// passes; returns (release time, item) in release order.
    fn run(c: &mut NetemCore<u32>, n: u32, gap_ns: u64, len: usize) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        for i in 0..n {
            let now = i as u64 * gap_ns;
            while let Some((t, v)) = c.pop_before(now + 1) {
                out.push((t, *v));
            }
            c.push(now, len, |slot| *slot = i);
        }
        while let Some((t, v)) = c.pop_before(u64::MAX) {
            out.push((t, *v));
        }
        out
    }

    #[test]
    fn passes_everything_at_once_by_default() {
        let mut c = core(ImpairParams::default(), 1);
        let out = run(&mut c, 100, MS, 100);
        assert_eq!(out.len(), 100);
        for (i, (t, v)) in out.iter().enumerate() {
            assert_eq!(*v, i as u32);
            assert_eq!(*t, i as u64 * MS, "released the instant it arrived");
        }
        assert_eq!(c.stats().delayed, 0);
        assert_eq!(c.stats().released, 100);
    }

    #[test]
    fn release_waits_for_its_time() {
        let params = ImpairParams {
            delay_ns: 30 * MS,
            ..Default::default()
        };
        let mut c = core(params, 1);
        c.push(5 * MS, 10, |s| *s = 7);
        assert_eq!(c.next_release(), Some(35 * MS));
        assert!(c.pop_before(35 * MS).is_none(), "not before its time");
        assert_eq!(c.pop_before(35 * MS + 1), Some((35 * MS, &7)));
        assert_eq!(c.held(), 0);
        assert_eq!(c.stats().delayed, 1);
    }

    #[test]
    fn same_seed_same_run() {
        let params = ImpairParams {
            loss: 0.1,
            jitter_ns: 10 * MS,
            delay_ns: 20 * MS,
            duplicate: 0.05,
            reorder: 0.05,
            ..Default::default()
        };
        let a = run(&mut core(params.clone(), 4), 1000, 5 * MS, 100);
        let b = run(&mut core(params.clone(), 4), 1000, 5 * MS, 100);
        let c = run(&mut core(params, 5), 1000, 5 * MS, 100);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn time_based_bursts_keep_mean_loss_and_burst_length_at_any_packet_rate() {
        // 10 % loss in 100 ms bursts, sampled every 5 ms and every 20 ms.
        for gap_ms in [5u64, 20] {
            let n = 100_000u32;
            let params = ImpairParams {
                ge: GeModel::bursts(0.10, 100 * MS),
                ..Default::default()
            };
            let mut c = core(params, 9);
            let out = run(&mut c, n, gap_ms * MS, 50);
            let loss = c.stats().lost as f64 / n as f64;
            assert!(
                (0.08..=0.12).contains(&loss),
                "gap {gap_ms} ms: loss {loss}"
            );
            let mut present = vec![false; n as usize];
            for (_, v) in &out {
                present[*v as usize] = true;
            }
            let (mut runs, mut total, mut cur) = (0u32, 0u32, 0u32);
            for p in present.iter().chain([&true]) {
                if *p {
                    if cur > 0 {
                        runs += 1;
                        total += cur;
                    }
                    cur = 0;
                } else {
                    cur += 1;
                }
            }
            let mean_ms = total as f64 / runs as f64 * gap_ms as f64;
            // A burst is seen as whole packets, so it reads up to one gap long.
            assert!(
                (80.0..=130.0).contains(&mean_ms),
                "gap {gap_ms} ms: mean burst {mean_ms} ms"
            );
        }
    }

    #[test]
    fn token_bucket_caps_the_rate_and_drops_what_would_wait_too_long() {
        // 80 kbit/s = 10 bytes per ms. Offer 100-byte items every 1 ms (800
        // kbit/s): a tenth gets through once the bucket and queue are spent.
        let params = ImpairParams {
            rate_bps: 80_000,
            rate_burst_bytes: 1_000,
            rate_queue_ns: 50 * MS,
            ..Default::default()
        };
        let mut c = core(params, 1);
        let out = run(&mut c, 2_000, MS, 100);
        let passed = out.len() as u64;
        // 2 s at 10 bytes/ms = 20 000 bytes = 200 items, plus the bucket (10)
        // and the queue (5).
        assert!((200..=220).contains(&passed), "{passed} passed");
        assert_eq!(passed + c.stats().rate_dropped, 2_000);
        // Releases never outrun the rate: any window of k items spans at
        // least (k - bucket) * 10 ms.
        let times: Vec<u64> = out.iter().map(|(t, _)| *t).collect();
        for w in times.windows(50) {
            assert!(w[49] - w[0] >= 39 * 10 * MS, "{} ms", (w[49] - w[0]) / MS);
        }
        // Below the rate nothing waits.
        let params = ImpairParams {
            rate_bps: 80_000,
            ..Default::default()
        };
        let mut c = core(params, 1);
        let out = run(&mut c, 100, 20 * MS, 100);
        assert_eq!(out.len(), 100);
        assert_eq!(c.stats().delayed, 0);
    }

    #[test]
    fn trace_drops_exactly_the_marked_items_in_a_loop() {
        let trace = parse_trace("0 1 1\n0", "t").unwrap();
        let mut c: NetemCore<u32> = NetemCore::new(ImpairParams::default(), 1, trace, 64);
        let out = run(&mut c, 10, MS, 10);
        let kept: Vec<u32> = out.iter().map(|(_, v)| *v).collect();
        assert_eq!(kept, vec![0, 3, 4, 7, 8]);
    }

    #[test]
    fn duplicate_queues_two_copies() {
        let params = ImpairParams {
            duplicate: 1.0,
            ..Default::default()
        };
        let mut c = core(params, 1);
        let o = c.push(0, 10, |s| *s = 3);
        assert!(o.duplicated);
        assert_eq!(o.queued, 2);
        assert_eq!(c.pop_before(1), Some((0, &3)));
        assert_eq!(c.pop_before(1), Some((0, &3)));
        assert!(c.pop_before(1).is_none());
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let params = ImpairParams {
            delay_ns: 10 * MS,
            ..Default::default()
        };
        let mut c: NetemCore<u32> = NetemCore::new(params, 1, Vec::new(), 2);
        for i in 0..5 {
            c.push(0, 10, |s| *s = i);
        }
        assert_eq!(c.stats().overflow, 3);
        assert_eq!(c.held(), 2);
        assert_eq!(c.pop_before(u64::MAX), Some((10 * MS, &0)));
        // The freed slot takes the next item.
        assert_eq!(c.push(MS, 10, |s| *s = 9).queued, 1);
    }

    #[test]
    fn new_params_apply_to_later_items_only() {
        let mut c = core(
            ImpairParams {
                delay_ns: 50 * MS,
                ..Default::default()
            },
            1,
        );
        c.push(0, 10, |s| *s = 1);
        c.set_params(ImpairParams {
            loss: 1.0,
            ..Default::default()
        });
        assert!(c.push(MS, 10, |s| *s = 2).lost);
        assert_eq!(c.pop_before(u64::MAX), Some((50 * MS, &1)));
    }
}
