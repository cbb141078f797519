//! `jitter.adaptive`: an adaptive jitter buffer for encoded frames.
//!
//! Frames arrive as the network delivers them: late, early, reordered,
//! duplicated or never, each with `arrival_ns` set by the receiver. The
//! buffer plays them out in sequence order at one frame per frame period.
//! When the frame due is not there, it emits a frame flagged
//! `frame_flags::MISSING` (the expected seq and timestamp) so the decoder
//! conceals at the right moment; when the frame after it is already held,
//! that frame's payload rides along (`frame_flags::NEXT_ATTACHED`) so an
//! Opus decoder can rebuild the lost one from its LBRR/DRED with no
//! look-ahead of its own. A period inserted to grow the delay is flagged
//! `MISSING | INSERTED` with an empty payload: nothing was lost, and the
//! frame of that seq still follows.
//!
//! ## How the delay adapts
//! Every arrival gives a relative delay: arrival time minus media time (the
//! frame's timestamp), minus a floor: the least such value of the last 2-4
//! s, not of the whole stream, because the sender's clock and this one
//! drift apart (sound devices' crystals; NTP slews a clock's rate by up to
//! 500 ppm). A slow sender's frames arrive ever later against their
//! timestamps; measured from an all-time low their delay grew without
//! bound, and once it passed `max_delay` every frame was late (a 500 ppm
//! slow sender: silence after about seven minutes). When the floor moves,
//! the delays held move with it, so moving it moves neither the target nor
//! the playout point: the drift shows as a stretch (slow sender) or a skip
//! (fast) per frame of it, as it must (table test: 30 minutes at up to
//! 2000 ppm either way, no frame late). The
//! relative delays go into a histogram of 1 ms buckets whose weights decay
//! exponentially (`half_life`), so old spikes are forgotten. The target delay
//! is the `quantile` (p95) of that histogram, clamped to
//! `min_delay..=max_delay`. During start-up (the first 50 arrivals) it is
//! clamped to `min_delay..=initial_delay` instead: the target follows what
//! the first frames measured, so a clean path starts at `min_delay` and
//! never skips a frame to come down from a deeper start, while a jittery one
//! grows (stretches) toward `initial_delay` as soon as its jitter shows, and
//! past it once there are enough samples to trust. The price is paid only on
//! a path that is jittery from its first frames: a frame or two concealed at
//! start-up before the target has caught up.
//!
//! The playout point follows the target in whole frames: when the frame due
//! would play with less than target - half a frame of delay, the buffer
//! stretches (emits a MISSING frame and keeps the frame for later); when
//! it would play with more than target + 3/4 of a frame of delay and the
//! next frame is already here, it skips one frame. After a skip the delay is
//! still above target - 1/4 frame, so a quarter frame of jitter can pass
//! before the next stretch: the playout point settles within
//! `target - frame/2 ..= target + 3/4 frame` whatever the phase between
//! packet arrivals and this graph's clock, instead of staying a frame high
//! when the first packets of a stream came late. A frame absent when due is concealed
//! and passed over; if it arrives afterwards it is late and dropped. When the
//! sender merely paused (DTX: sequence numbers continue, timestamps jump), the
//! first frame after the pause is behind in sequence but not in time; with
//! nothing else held, playout follows it instead of calling it late. The
//! same holds for a sender that moved to longer packets (Codec2 frames sent
//! three to a 120 ms packet): such a packet leaves once its last frame is
//! made, later after its timestamp than the short frames before it, so
//! playout has concealed its seq, and maybe the next ones, at the old
//! cadence by the time it comes. A frame longer than the periods concealed,
//! newer than anything played, with nothing else held, is followed too:
//! the periods concealed become the delay the longer packets need, and
//! every packet plays. A MISSING item carries the duration of the last
//! frame played, so a lost 120 ms packet is concealed as 120 ms.
//!
//! The buffer resets (drops what it holds and starts again) on a frame of
//! another stream id, a `STREAM_START` frame that is not the current
//! stream's first, a backward sequence jump of more than `reset_jump`
//! frames, a forward jump beyond `capacity`, or when the stream falls
//! behind playout for good: [`FOLLOW_AFTER`] frames in a row arrive with
//! nothing held, each more than `max_delay` behind the playout point. That
//! is a sender whose clock stalled (a starved CPU) and resumed without a
//! timestamp gap: no target delay within `max_delay` can catch it, and
//! without the reset every later frame of the stream would be late. Sequence numbers and
//! timestamps may wrap around 2^32.
//!
//! FEC repair frames are not audio: they are dropped and counted (the FEC
//! decoder belongs before this stage).
//!
//! ## Holding back for bursts
//! A lost frame can be rebuilt from a later packet's redundancy (Opus LBRR
//! holds the frame before it, DRED up to a second of history), but only if
//! that packet is here when the lost frame is due. One loss needs the next
//! packet; a burst of K losses needs the packet K frames later. The buffer
//! therefore measures the bursts it plays through (the sequence numbers
//! skipped between two frames played, less any it skipped itself to come
//! down; a sender pausing in DTX skips none) into an estimate that takes
//! the longest burst at once and decays with a 5 s half-life. While the
//! estimate says losses are being seen it holds one Opus frame more than
//! the jitter target needs (Codec2 has no LBRR): playout runs up to half a frame under the target,
//! so without it the packet after a loss (its LBRR) was late as often as
//! not (live on a 10 % path LBRR rebuilt 11 of ~180 losses; with it, 88).
//! For bursts (K >= 2) it holds K frames, at most `burst_hold` (default
//! 60 ms), while the stream carries DRED (an Opus packet with padding,
//! where libopus puts DRED, in the last 2 s): without DRED nothing rebuilds
//! the second loss of a burst, so a deeper hold would be only delay, and
//! each change of it a frame stretched or skipped (random 10 % on the
//! loopback: 2.56 -> 2.79 PESQ-WB without). On a path with no loss it holds
//! nothing extra. A run longer than twice
//! what the hold can cover (`burst_hold` in frames, plus one: 8 frames at
//! 20 ms and the default) is an outage, not a burst: nothing held within
//! the budget rebuilds it, so it does not raise the hold (the sender's
//! controller sets such runs aside too). A lost frame due
//! carries the first frame held after it, up to that far ahead
//! (`NEXT_ATTACHED`, distance in `fec.symbol`), so the decoder rebuilds
//! each frame of the burst at its own offset with no look-ahead of its own.
//!
//! A stream protected by RaptorQ (frames tagged with a ratio above 0,
//! `fec.raptorq_encode`) that is losing packets holds, besides, what a
//! rebuilt frame needs: `fec.raptorq_decode` rebuilds a lost frame once
//! enough of its block has come, up to K - 1 frames after it and the
//! block's repair after that, which the sender paces out
//! `ceil(ratio / 100)` a quantum from the quantum after the block; so the
//! hold is `(K - 1) x frame + ceil(R / pace) x quantum` for R repair
//! frames (60 ms for 2-frame blocks at 100 % and 20 ms frames, 140 ms for
//! 5-frame blocks at 50 %), within `max_delay`. Without it about half the
//! rebuilt frames came too late to play. A protected stream on a clean path holds nothing
//! for it, and `burst_hold = 0` does not turn it off (the quality
//! controller only asks for repair on heavy loss, where it is the point).
//!
//! ## Stretching through a longer run (off by default)
//! A run longer than the hold reaches leaves its first frames concealed
//! when due, though the packet after it carries DRED for all of them. With
//! `burst_stretch` above 0, while such a run goes on (the frame due absent
//! and nothing held after it) in a burst (estimate of two or more) on a
//! stream carrying DRED, the buffer stretches: it conceals the period
//! (`MISSING | INSERTED`) and keeps the lost frame's seq due, up to
//! `burst_stretch` over the target. When the packet after the run comes,
//! every frame of the run is still due and goes out carrying it, rebuilt
//! from DRED; the delay the stretch added comes back down at quiet frames
//! (below). A run that outlasts the stretch is an outage: the periods
//! stretched stand in for its first frames, which pass at once
//! (`stretch_drained`), so it leaves no delay behind and ends as it would
//! have without the stretch. `burst_hold = 0` turns it off too.
//!
//! It is off because the bench cannot show it pays (docs/QUALITY.md
//! finding 25): at 100 ms, with `quiet_wait = 6s` (a stretch given back by
//! a skip forced into a word costs more than it gained), six trace seeds
//! gained +0.03 / +0.05 PESQ-WB on 60 / 160 ms bursts, but STOI fell
//! 0.05-0.18, and the live 60 ms row did not move.
//!
//! ## Coming down quietly
//! When the target falls (jitter eased, a burst hold decayed) the buffer is
//! too deep and drops a frame to come down. A frame dropped in a word is
//! heard; one dropped in a pause is not. So a skip waits for a pause: a
//! frame flagged DTX, or a quiet frame (a payload at most half the running
//! mean of the payloads played: a VBR codec spends far fewer bytes on a
//! pause or a breath) after at least 60 ms of quiet frames played, not the
//! 20-40 ms gap between two words; for at most `quiet_wait`, and at once
//! when the due frame is absent anyway or the buffer is four frames or more
//! too deep. Quiet frames move the running mean 16 times slower than voiced
//! ones, so a long silence still reads as quiet seconds into it. On the
//! loopback's clean -> 20 % -> clean schedule, the last clean phase went
//! from 3.87 to 3.97 PESQ-WB with quiet frames, and its first 8 s from 3.77
//! to 4.03 with pauses (docs/QUALITY.md findings 13 and 34).
//! Stretches (the target rising) do not wait: a rising target is late
//! frames to come or a hold DRED needs now, and waiting measured worse on
//! bursty paths.
//!
//! ## Ports
//! - `in` (Frame): received frames, `arrival_ns` set (0 means "now").
//! - `out` (Frame): one frame per frame period, in sequence order.
//!
//! ## Params
//! - `min_delay` (duration, 20ms), `max_delay` (duration, 200ms): bounds of
//!   the target delay.
//! - `initial_delay` (duration, 40ms): ceiling of the target during start-up
//!   (the first 50 arrivals), while few samples are known.
//! - `quantile` (number, 0.95): share of frames the target delay covers.
//! - `half_life` (duration, 2s): how fast old delays are forgotten.
//! - `capacity` (int, 256): frames held, keyed by sequence number.
//! - `reset_jump` (int, 100): backward sequence jump (frames) that resets.
//! - `burst_hold` (duration, 60ms): most extra delay held to rebuild loss
//!   bursts from later packets; 0 turns the hold off.
//! - `burst_stretch` (duration, 0): most delay added by stretching
//!   through a run longer than the hold (see "Stretching through a longer
//!   run"); 0 turns it off. With `burst_hold`, at most 1 s.
//! - `quiet_wait` (duration, 2s): longest a skip waits for a pause (see
//!   "Coming down quietly"); 0 skips at once.
//!
//! ## Stats
//! Gauges `target_delay_ms`, `current_delay_ms`, `burst_hold_ms` (the
//! part of the target held for loss recovery: bursts, LBRR, RaptorQ); counters `played`,
//! `concealed` (MISSING frames emitted), `late`, `dropped_duplicates`,
//! `resets`, `stretched`, `stretch_drained` (stretched periods that stood
//! in for the first frames of an outage), `skipped`, `quiet_changes` (skips and stretches
//! that fell on a quiet frame), `repair_dropped`, `overflow_drops`.
//!
//! ## Latency
//! Declares `initial_delay` (the deepest start-up target); the live value is
//! the `target_delay_ms` gauge.
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "jb"
//! kind = "jitter.adaptive"
//! params = { min_delay = "20ms", max_delay = "200ms", initial_delay = "60ms" }
//!
//! [[link]]
//! from = "fec_dec.out"
//! to = "jb.in"
//! ```

use std::time::Duration;

use wzp_engine::prelude::*;

use crate::delay_floor::DelayFloor;

/// `jitter.adaptive` factory.
pub struct Adaptive;

/// Arrivals before the target may rise above `initial_delay`.
const WARMUP_ARRIVALS: u32 = 50;
const BUCKET_NS: i64 = 1_000_000;
/// Each of the two windows the delay floor is the least of (module docs,
/// "How the delay adapts"): a sender's clock drift reaches the target
/// within 10 s, at most 5 ms at 500 ppm.
const FLOOR_WINDOW_NS: u64 = 2_000_000_000;
const DEFAULT_FRAME_NS: u64 = 20_000_000;
/// Half-life of the burst-length estimate, in nanoseconds.
const BURST_HALF_LIFE_NS: f64 = 5e9;
/// Frames (2 s at 20 ms) a stream counts as carrying DRED after the last
/// frame that did: the encoder leaves DRED out of some frames (its budget).
const DRED_MEMORY_FRAMES: u32 = 100;

/// Whether a frame may carry DRED: an Opus packet with padding (code 3,
/// padding flag), where libopus puts its extensions, DRED among them.
/// Plain LBRR-only or unprotected packets have none. Two bytes read, no
/// parsing beyond them.
fn carries_dred(codec: u8, payload: &[u8]) -> bool {
    codec == wzp_proto::media::CodecId::OPUS.0
        && matches!(payload, [toc, count, ..] if toc & 3 == 3 && count & 0x40 != 0)
}

/// Played frames before the running payload mean says what is quiet.
const QUIET_MIN_FRAMES: u32 = 25;
/// Frames the running payload mean averages over (its weight 1/N).
const QUIET_MEAN_FRAMES: f32 = 32.0;
/// A payload at most this share of the running mean is quiet.
const QUIET_SHARE: f32 = 0.5;
/// Quiet frames move the running mean this many times slower than voiced
/// ones: a long pause does not drag the yardstick down to its own size (at
/// the full rate, after a second of silence no frame read as quiet), while
/// a stream whose rate fell (every frame smaller) is re-levelled within
/// about a second.
const QUIET_MEAN_SLOW: f32 = 16.0;
/// Quiet playout just before the frame due for a skip to count as in a
/// pause: 60 ms. The gaps between words are 20-40 ms; a frame dropped there
/// shortens the gap audibly and, for a scorer, shifts the rest of the
/// utterance (docs/QUALITY.md finding 34).
const PAUSE_NS: u64 = 60_000_000;
/// Frames over target past which the buffer skips without waiting for a
/// quiet frame.
const URGENT_FRAMES: i64 = 4;
/// Farthest a lost frame's attachment looks ahead, in frames.
const MAX_ATTACH_AHEAD: u32 = 16;
/// Late frames in a row, nothing held, each beyond `max_delay` behind the
/// playout point, that reset the buffer onto the sender's new timing. More
/// than one, so a single stray old frame does not.
pub const FOLLOW_AFTER: u32 = 3;

impl StageFactory for Adaptive {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "jitter.adaptive",
            summary:
                "adaptive jitter buffer: reorders frames, plays one per period, marks missing ones",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "received frames with arrival_ns",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "one frame per frame period, MISSING when absent",
            }],
            params: vec![
                ParamSpec::duration(
                    "min_delay",
                    Duration::from_millis(20),
                    "lower bound of the target delay",
                ),
                ParamSpec::duration(
                    "max_delay",
                    Duration::from_millis(200),
                    "upper bound of the target delay",
                ),
                ParamSpec::duration(
                    "initial_delay",
                    Duration::from_millis(40),
                    "ceiling of the target delay during start-up (first 50 arrivals)",
                ),
                ParamSpec::float("quantile", 0.95, "share of frames the target delay covers"),
                ParamSpec::duration(
                    "half_life",
                    Duration::from_secs(2),
                    "half-life of the delay histogram's weights",
                ),
                ParamSpec::int("capacity", 256, "frames held, keyed by sequence number"),
                ParamSpec::int(
                    "reset_jump",
                    100,
                    "backward sequence jump (frames) that resets the buffer",
                ),
                ParamSpec::duration(
                    "burst_hold",
                    Duration::from_millis(60),
                    "most extra delay held to rebuild loss bursts from later packets (0: off)",
                ),
                ParamSpec::duration(
                    "burst_stretch",
                    Duration::ZERO,
                    "most delay added by stretching through a loss run longer than the hold, given back at quiet frames (0: off)",
                ),
                ParamSpec::duration(
                    "quiet_wait",
                    Duration::from_secs(2),
                    "longest a skip (the delay coming down to target) waits for a pause: 60 ms of quiet frames (0: at once)",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let min = p.duration("min_delay")?;
        let max = p.duration("max_delay")?;
        let initial = p.duration("initial_delay")?;
        if max > Duration::from_secs(10) {
            return Err(ParamError::new("max_delay", "above 10s; use a smaller value").into());
        }
        if min > max {
            return Err(ParamError::new(
                "min_delay",
                format!("{min:?} is above max_delay {max:?}; lower it"),
            )
            .into());
        }
        if initial < min || initial > max {
            return Err(ParamError::new(
                "initial_delay",
                format!("{initial:?} is outside min_delay..=max_delay ({min:?}..={max:?})"),
            )
            .into());
        }
        let quantile = p.float_in("quantile", 0.5, 1.0)?;
        let half_life = p.duration("half_life")?;
        if half_life < Duration::from_millis(100) {
            return Err(ParamError::new(
                "half_life",
                "below 100ms; the target would follow every spike",
            )
            .into());
        }
        let capacity = p.int_in("capacity", 8, 65_536)? as usize;
        let reset_jump = p.int_in("reset_jump", 1, i32::MAX as i64)? as i32;
        let burst_hold = super::hold_param(p, "burst_hold")?;
        let burst_stretch = p.duration("burst_stretch")?;
        if burst_stretch + burst_hold > Duration::from_secs(1) {
            return Err(ParamError::new(
                "burst_stretch",
                format!("{burst_stretch:?} with burst_hold {burst_hold:?} is above 1s (DRED reaches 1 s back at most); use a smaller value"),
            )
            .into());
        }
        let quiet_wait = p.duration("quiet_wait")?;
        if quiet_wait > Duration::from_secs(10) {
            return Err(ParamError::new(
                "quiet_wait",
                format!("{quiet_wait:?} is above 10s; the delay would stay off target that long, use a smaller value"),
            )
            .into());
        }
        let buckets = (max.as_nanos() as i64 / BUCKET_NS) as usize + 2;
        let processor = JitterProc {
            min_ns: min.as_nanos() as i64,
            max_ns: max.as_nanos() as i64,
            initial_ns: initial.as_nanos() as i64,
            quantile,
            half_life_ns: half_life.as_nanos() as f64,
            reset_jump,
            hold_max_ns: burst_hold.as_nanos() as i64,
            // The stretch extends the hold: no hold, no stretch.
            stretch_max_ns: if burst_hold.is_zero() {
                0
            } else {
                burst_stretch.as_nanos() as i64
            },
            run_stretch: 0,
            burst_est: 0.0,
            last_played: None,
            passed_held: 0,
            hold_ns: 0,
            fec_block: 0,
            fec_ratio: 0,
            quantum_ns: cx.quantum.as_nanos() as u64,
            quiet_wait_ns: quiet_wait.as_nanos() as u64,
            avg_bytes: 0.0,
            sized: 0,
            quiet_run_ns: 0,
            off_target_since: None,
            dred_frames_left: 0,
            behind_run: 0,
            states: vec![SlotState::default(); capacity].into_boxed_slice(),
            items: (0..capacity).map(|_| Slot::default()).collect(),
            hist: vec![0.0; buckets].into_boxed_slice(),
            hist_total: 0.0,
            arrivals: 0,
            target_ns: min.as_nanos() as i64,
            active: false,
            started: false,
            stream: 0,
            first_seq: 0,
            codec: 0,
            frame_ns: DEFAULT_FRAME_NS,
            next_seq: 0,
            next_ts_ext: 0,
            last_ts: 0,
            last_ts_ext: 0,
            d_min: i64::MAX,
            floor: DelayFloor::new(FLOOR_WINDOW_NS),
            next_play_ns: 0,
            buffered: 0,
            stats: Stats {
                target_delay_ms: cx.gauge("target_delay_ms"),
                burst_hold_ms: cx.gauge("burst_hold_ms"),
                current_delay_ms: cx.gauge("current_delay_ms"),
                played: cx.counter("played"),
                concealed: cx.counter("concealed"),
                late: cx.counter("late"),
                dropped_duplicates: cx.counter("dropped_duplicates"),
                resets: cx.counter("resets"),
                stretched: cx.counter("stretched"),
                stretch_drained: cx.counter("stretch_drained"),
                skipped: cx.counter("skipped"),
                quiet_changes: cx.counter("quiet_changes"),
                repair_dropped: cx.counter("repair_dropped"),
                overflow_drops: cx.counter("overflow_drops"),
            },
        };
        processor.stats.target_delay_ms.set(min.as_millis() as i64);
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: initial,
            processor: Box::new(processor),
        })
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
enum Held {
    #[default]
    Empty,
    /// Waiting to be played.
    Filled,
    /// Played: a copy arriving now is a duplicate.
    Played,
    /// Concealed or skipped: the frame arriving now is late.
    Passed,
}

#[derive(Clone, Copy, Default, Debug)]
struct SlotState {
    held: Held,
    seq: u32,
}

struct Stats {
    target_delay_ms: Gauge,
    burst_hold_ms: Gauge,
    current_delay_ms: Gauge,
    played: Counter,
    concealed: Counter,
    late: Counter,
    dropped_duplicates: Counter,
    resets: Counter,
    stretched: Counter,
    /// Stretched periods that stood in for the first frames of a run
    /// that outlasted the stretch.
    stretch_drained: Counter,
    skipped: Counter,
    /// Skips and stretches that fell on a quiet frame.
    quiet_changes: Counter,
    repair_dropped: Counter,
    overflow_drops: Counter,
}

struct JitterProc {
    min_ns: i64,
    max_ns: i64,
    initial_ns: i64,
    quantile: f64,
    half_life_ns: f64,
    reset_jump: i32,
    /// `burst_hold`: most extra delay held for bursts.
    hold_max_ns: i64,
    /// `burst_stretch`: most delay added by stretching through a run.
    stretch_max_ns: i64,
    /// Periods stretched in the loss run going on (`u32::MAX` once the run
    /// outlasted the stretch), 0 once a frame plays.
    run_stretch: u32,
    /// Decaying estimate of the loss-burst length, in frames.
    burst_est: f64,
    /// Seq of the last frame played (since the last reset).
    last_played: Option<u32>,
    /// Frames that arrived and were passed over (skipped to come down)
    /// since the last frame played: gaps in `seq` that were not losses.
    passed_held: u32,
    /// Extra delay held for loss recovery now (part of `target_ns`): for
    /// bursts, for LBRR, or for a RaptorQ block.
    hold_ns: i64,
    /// Source frames per RaptorQ block of the last frame played (its FEC
    /// tag), 0 when it was not protected (ratio 0), and its ratio.
    fec_block: u8,
    fec_ratio: u8,
    /// The graph's quantum (from the last cycle).
    quantum_ns: u64,
    /// `quiet_wait`: longest a skip waits for a pause.
    quiet_wait_ns: u64,
    /// Running mean of played payload sizes, bytes (the yardstick of
    /// "quiet": a VBR codec spends far fewer bytes on a pause).
    avg_bytes: f32,
    /// Payloads in `avg_bytes` (saturating): too few say nothing.
    sized: u32,
    /// Playout time of the quiet frames played in a row just now (0 after
    /// a voiced one): how long the current pause has lasted.
    quiet_run_ns: u64,
    /// Played frames until the stream counts as carrying no DRED (reset to
    /// [`DRED_MEMORY_FRAMES`] by each frame that carries it).
    dred_frames_left: u32,
    /// Since when (playout time) the buffer has been too deep, waiting for a
    /// quiet frame to skip.
    off_target_since: Option<u64>,
    /// Late frames in a row while nothing was held, each beyond `max_delay`
    /// behind the playout point.
    behind_run: u32,
    states: Box<[SlotState]>,
    items: Box<[Slot<FrameMeta>]>,
    /// Decaying histogram of relative delay, 1 ms buckets; the last one
    /// collects everything above `max_delay`.
    hist: Box<[f64]>,
    hist_total: f64,
    arrivals: u32,
    target_ns: i64,
    /// A stream is known (at least one frame since the last reset).
    active: bool,
    /// Playout has begun.
    started: bool,
    stream: u32,
    first_seq: u32,
    codec: u8,
    frame_ns: u64,
    next_seq: u32,
    /// Extended (unwrapped) timestamp expected for `next_seq`.
    next_ts_ext: i64,
    last_ts: u32,
    last_ts_ext: i64,
    /// The floor of (arrival - media time) that delays are measured above:
    /// [`DelayFloor`]'s, moved up in whole histogram buckets.
    d_min: i64,
    floor: DelayFloor,
    next_play_ns: u64,
    /// Slots in state `Filled`.
    buffered: usize,
    stats: Stats,
}

/// Media time of an extended 48 kHz timestamp, in nanoseconds.
fn media_ns(ts_ext: i64) -> i64 {
    ((ts_ext as i128 * 1_000_000_000) / 48_000) as i64
}

fn frame_ns_of(meta: &FrameMeta) -> u64 {
    match meta.duration_ms {
        0 => DEFAULT_FRAME_NS,
        ms => ms as u64 * 1_000_000,
    }
}

impl JitterProc {
    fn idx(&self, seq: u32) -> usize {
        seq as usize % self.states.len()
    }

    /// Unwraps a 32-bit timestamp against the latest one seen.
    fn extend_ts(&mut self, ts: u32) -> i64 {
        let ext = self.last_ts_ext + ts.wrapping_sub(self.last_ts) as i32 as i64;
        if ext > self.last_ts_ext {
            self.last_ts = ts;
            self.last_ts_ext = ext;
        }
        ext
    }

    /// Forgets the stream (not the delay histogram: the path is the same).
    fn reset(&mut self) {
        for s in self.states.iter_mut() {
            s.held = Held::Empty;
        }
        self.buffered = 0;
        self.behind_run = 0;
        self.last_played = None;
        self.passed_held = 0;
        self.run_stretch = 0;
        self.quiet_run_ns = 0;
        self.active = false;
        self.started = false;
        self.d_min = i64::MAX;
        self.floor.reset();
    }

    fn begin_stream(&mut self, meta: &FrameMeta) {
        self.active = true;
        self.stream = meta.stream;
        self.first_seq = meta.seq;
        self.next_seq = meta.seq;
        self.last_ts = meta.timestamp;
        self.last_ts_ext = meta.timestamp as i64;
        self.next_ts_ext = self.last_ts_ext;
        self.codec = meta.codec;
        self.frame_ns = frame_ns_of(meta);
    }

    fn observe_delay(&mut self, arrival_ns: u64, ts_ext: i64) {
        let d = arrival_ns as i64 - media_ns(ts_ext);
        let floor = self.floor.observe(arrival_ns, d);
        if self.d_min == i64::MAX {
            self.d_min = floor;
        } else {
            // The floor moved: a sender whose clock runs slow or fast
            // against this one, a delay that went up and stayed, a packet
            // faster than any of late. The delays held move with it, so
            // moving the floor moves neither the target nor the playout
            // point; it keeps what they are measured from (and `min_delay`
            // above) where the packets are now.
            let moved = (floor - self.d_min) / BUCKET_NS;
            if moved != 0 {
                self.shift_hist(moved);
                self.d_min += moved * BUCKET_NS;
            }
        }
        // Within a bucket of the floor either way.
        let rel = (d - self.d_min).max(0);
        let decay = 0.5f64.powf(self.frame_ns as f64 / self.half_life_ns);
        for w in self.hist.iter_mut() {
            *w *= decay;
        }
        self.hist_total *= decay;
        let bucket = ((rel / BUCKET_NS) as usize).min(self.hist.len() - 1);
        self.hist[bucket] += 1.0;
        self.hist_total += 1.0;
        self.arrivals = self.arrivals.saturating_add(1);
        self.update_target();
    }

    /// Moves every delay held `n` buckets down (the floor rose by `n` ms;
    /// those below the new floor count as none) or, for a negative `n`, up
    /// (those beyond the last bucket join it).
    fn shift_hist(&mut self, n: i64) {
        let len = self.hist.len();
        let k = (n.unsigned_abs() as usize).min(len - 1);
        if n > 0 {
            let low: f64 = self.hist[..=k].iter().sum();
            self.hist.copy_within(k + 1.., 1);
            self.hist[0] = low;
            for w in &mut self.hist[len - k..] {
                *w = 0.0;
            }
        } else {
            let high: f64 = self.hist[len - 1 - k..].iter().sum();
            self.hist.copy_within(..len - 1 - k, k);
            self.hist[len - 1] = high;
            for w in &mut self.hist[..k] {
                *w = 0.0;
            }
        }
    }

    fn update_target(&mut self) {
        let want = self.quantile * self.hist_total;
        let mut acc = 0.0;
        let mut bucket = self.hist.len() - 1;
        for (i, w) in self.hist.iter().enumerate() {
            acc += w;
            if acc >= want {
                bucket = i;
                break;
            }
        }
        // Upper edge of the bucket: covers every delay inside it.
        let q = (bucket as i64 + 1) * BUCKET_NS;
        // During start-up a few samples cannot justify a deep buffer: the
        // target follows what has been measured, but no higher than
        // `initial_delay`. On a clean path it is `min_delay` from the first
        // frame, so playout never has to skip a frame to come down to it.
        let ceiling = if self.arrivals < WARMUP_ARRIVALS {
            self.initial_ns
        } else {
            self.max_ns
        };
        self.target_ns = q.clamp(self.min_ns, ceiling) + self.hold_ns;
        self.stats.target_delay_ms.set(self.target_ns / 1_000_000);
    }

    /// Frame `seq` played. The sequence numbers it skipped since the last
    /// frame played are a burst of losses (a sender pausing in DTX skips
    /// none, so its silence is not one); the estimate takes a burst if it
    /// is longer and otherwise decays, and the hold follows it. A frame
    /// the FEC decoder rebuilt (`recovered`) was a loss too.
    fn observe_played(&mut self, seq: u32, recovered: bool) {
        let last = self.last_played.replace(seq);
        let passed = std::mem::take(&mut self.passed_held);
        self.burst_est *= 0.5f64.powf(self.frame_ns as f64 / BURST_HALF_LIFE_NS);
        if recovered {
            // Rebuilt by the FEC decoder: lost on the path all the same.
            self.burst_est = self.burst_est.max(1.0);
        }
        if let Some(last) = last {
            // Frames this buffer skipped itself were not lost.
            let skipped = seq
                .wrapping_sub(last)
                .wrapping_sub(1)
                .saturating_sub(passed);
            // A run longer than twice what the hold can cover is an outage:
            // holding for it would add delay and rebuild almost none of it.
            let reach = (self.hold_max_ns / self.frame_ns.max(1) as i64) as u32 + 1;
            if skipped > 0 && skipped <= (2 * reach).min(MAX_ATTACH_AHEAD * 4) {
                self.burst_est = self.burst_est.max(skipped as f64);
            }
        }
        // A burst of K needs the packet K frames after its first loss here
        // when that loss is due; playout runs up to half a frame under the
        // target, so hold K whole frames. Only a stream carrying DRED can
        // rebuild a burst of two or more from a later packet; any stream
        // may carry LBRR, which rebuilds a single loss from the next
        // packet: that packet is due one frame after the lost one, so while
        // losses are seen the buffer holds one frame (without it the next
        // packet was late as often as not: live, LBRR rebuilt 11 of ~180
        // single losses, docs/QUALITY.md finding 15).
        let k = self.burst_est.ceil() as i64;
        let extra_frames = if self.hold_max_ns == 0 {
            0
        } else if k >= 2 && self.dred_frames_left > 0 {
            k
        } else if self.burst_est >= 0.5 && self.codec == wzp_proto::media::CodecId::OPUS.0 {
            // Only Opus has LBRR; for Codec2 (packets up to 120 ms) a
            // hold would be only delay.
            1
        } else {
            0
        };
        let mut hold = (extra_frames * self.frame_ns as i64).min(self.hold_max_ns);
        if self.fec_block > 0 && self.burst_est >= 0.5 {
            // A RaptorQ-protected stream losing packets: a frame the FEC
            // decoder rebuilds comes once enough of its block has, up to
            // K - 1 frames after it and then the repair, paced from the
            // quantum after the block (module doc); held for that, within
            // `max_delay`, or it is late and dropped (on a 40 % path about
            // half the rebuilt frames were).
            let k = usize::from(self.fec_block);
            let ratio = u32::from(self.fec_ratio);
            let pace = ratio.div_ceil(100).max(1) as usize;
            let repair_quanta = crate::fec::block::repair_count(k, ratio)
                .div_ceil(pace)
                .max(1);
            let fec = (k as i64 - 1) * self.frame_ns as i64
                + repair_quanta as i64 * self.quantum_ns as i64;
            hold = hold.max(fec.min(self.max_ns));
        }
        if hold != self.hold_ns {
            self.target_ns += hold - self.hold_ns;
            self.hold_ns = hold;
            self.stats.burst_hold_ms.set(hold / 1_000_000);
            self.stats.target_delay_ms.set(self.target_ns / 1_000_000);
        }
    }

    fn ingest(&mut self, slot: &Slot<FrameMeta>, now_ns: u64) {
        let meta = &slot.meta;
        if meta.flags & frame_flags::REPAIR != 0 {
            self.stats.repair_dropped.inc();
            return;
        }
        let arrival = if meta.arrival_ns == 0 {
            now_ns
        } else {
            meta.arrival_ns
        };
        if self.active {
            let diff = meta.seq.wrapping_sub(self.next_seq) as i32;
            let new_stream = meta.stream != self.stream
                || (meta.flags & frame_flags::STREAM_START != 0 && meta.seq != self.first_seq);
            let behind = self.started
                && self.buffered == 0
                && diff < 0
                && i64::from(diff.unsigned_abs()) * self.frame_ns as i64 > self.max_ns;
            self.behind_run = if behind { self.behind_run + 1 } else { 0 };
            if new_stream
                || diff < -self.reset_jump
                || diff >= self.states.len() as i32
                || self.behind_run >= FOLLOW_AFTER
            {
                self.stats.resets.inc();
                self.reset();
            }
        }
        if !self.active {
            self.begin_stream(meta);
        }
        let ts_ext = self.extend_ts(meta.timestamp);
        let mut diff = meta.seq.wrapping_sub(self.next_seq) as i32;
        if !self.started && diff < 0 {
            // Before playout starts, the earliest frame seen opens the stream,
            // as long as everything held still fits behind it.
            let span = self.span_ahead();
            if (span as i64 - diff as i64) < self.states.len() as i64 {
                self.next_seq = meta.seq;
                self.next_ts_ext = ts_ext;
                diff = 0;
            }
        }
        let idx = self.idx(meta.seq);
        let state = self.states[idx];
        let newer_than_played = self
            .last_played
            .is_none_or(|l| meta.seq.wrapping_sub(l) as i32 > 0);
        let longer = frame_ns_of(meta) > self.frame_ns;
        if diff < 0
            && self.started
            && self.buffered == 0
            && (ts_ext >= self.next_ts_ext || (longer && newer_than_played))
        {
            // Behind in sequence but not in time, with nothing held: the
            // sender paused (DTX) while playout concealed and moved on. Follow
            // the sender instead of calling its frames late.
            //
            // Or behind in time, but longer than the periods playout has
            // been concealing and newer than anything played: the sender
            // moved to longer packets (Codec2 frames sent three to a
            // packet), which leave later after their timestamp, while
            // playout passed their seqs at the old, shorter cadence.
            // Follow it too: the periods concealed become the delay the
            // longer packets need, and none of them is lost.
            self.next_seq = meta.seq;
            self.next_ts_ext = ts_ext;
            diff = 0;
        }
        if diff < 0 {
            if state.seq == meta.seq && state.held == Held::Played {
                self.stats.dropped_duplicates.inc();
            } else {
                self.stats.late.inc();
                // A late frame is a real delay sample: it should raise the
                // target (a rebuilt one's delay is the FEC's, see below).
                if meta.flags & frame_flags::RECOVERED == 0 {
                    self.observe_delay(arrival, ts_ext);
                }
            }
            return;
        }
        if state.held == Held::Filled && state.seq == meta.seq {
            self.stats.dropped_duplicates.inc();
            return;
        }
        if state.held == Held::Filled {
            // Only reachable if a slot still holds a frame from a lap ago.
            self.stats.overflow_drops.inc();
            self.buffered -= 1;
        }
        self.states[idx] = SlotState {
            held: Held::Filled,
            seq: meta.seq,
        };
        let dst = &mut self.items[idx];
        dst.meta = *meta;
        dst.meta.arrival_ns = arrival;
        dst.set_bytes(slot.bytes());
        self.buffered += 1;
        // A frame the FEC decoder rebuilt arrives when its block completed,
        // up to K - 1 frames and two quanta after its time: that is the
        // FEC hold's to cover, not the path's jitter. Counted as a delay
        // sample it raised the jitter target by as much again (on a 30 %
        // path with 3-frame blocks the buffer ran at 160 ms where 80 ms
        // held every rebuilt frame).
        if meta.flags & frame_flags::RECOVERED == 0 {
            self.observe_delay(arrival, ts_ext);
        }
    }

    /// How far past `next_seq` the newest held frame is.
    fn span_ahead(&self) -> u32 {
        let mut span = 0;
        for s in self.states.iter() {
            if s.held == Held::Filled {
                span = span.max(s.seq.wrapping_sub(self.next_seq));
            }
        }
        span
    }

    fn is_held(&self, seq: u32) -> bool {
        let s = self.states[self.idx(seq)];
        s.held == Held::Filled && s.seq == seq
    }

    /// Delay the frame due would get if played at `play_ns`.
    fn delay_at(&self, play_ns: u64, ts_ext: i64) -> i64 {
        play_ns as i64 - (media_ns(ts_ext) + self.d_min)
    }

    fn due_ts(&self) -> i64 {
        if self.is_held(self.next_seq) {
            let m = &self.items[self.idx(self.next_seq)].meta;
            self.last_ts_ext + m.timestamp.wrapping_sub(self.last_ts) as i32 as i64
        } else {
            self.next_ts_ext
        }
    }

    fn advance(&mut self, held: Held, ts_ext: i64, frame_ns: u64) {
        let idx = self.idx(self.next_seq);
        if self.states[idx].held == Held::Filled && self.states[idx].seq == self.next_seq {
            self.buffered -= 1;
        }
        self.states[idx] = SlotState {
            held,
            seq: self.next_seq,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_ts_ext = ts_ext + (frame_ns as i64 * 48_000 / 1_000_000_000);
    }

    /// Emits a MISSING frame for the period due. `inserted`: the buffer is
    /// stretching (the due frame plays next period, so the decoder must not
    /// consume its seq). Otherwise the due frame is lost, and when the next
    /// one is already held its payload rides along (`NEXT_ATTACHED`) so the
    /// decoder can rebuild the lost frame from its in-band redundancy.
    fn push_missing(&mut self, out: &mut Batch<FrameMeta>, ts_ext: i64, inserted: bool) -> bool {
        let mut meta = FrameMeta {
            seq: self.next_seq,
            timestamp: ts_ext as u32,
            stream: self.stream,
            codec: self.codec,
            flags: frame_flags::MISSING,
            duration_ms: (self.frame_ns / 1_000_000).min(255) as u8,
            fec: FecTag::default(),
            arrival_ns: 0,
        };
        // The first frame held after the lost one, as far ahead as the
        // burst hold reaches (the next frame at least).
        let reach = if inserted {
            0
        } else {
            let hold_frames =
                ((self.hold_max_ns + self.stretch_max_ns) / self.frame_ns.max(1) as i64) as u32;
            (hold_frames + 1).min(MAX_ATTACH_AHEAD)
        };
        let ahead = (1..=reach).find(|&d| self.is_held(self.next_seq.wrapping_add(d)));
        let pushed = if inserted {
            meta.flags |= frame_flags::INSERTED;
            out.push(meta, &[])
        } else if let Some(d) = ahead {
            let n = &self.items[self.idx(self.next_seq.wrapping_add(d))];
            meta.flags |= frame_flags::NEXT_ATTACHED;
            meta.codec = n.meta.codec;
            meta.fec.symbol = d as u16;
            out.push(meta, n.bytes())
        } else {
            out.push(meta, &[])
        };
        if pushed.is_err() {
            return false;
        }
        self.stats.concealed.inc();
        true
    }

    /// Whether the frame held for `seq` is quiet: flagged DTX, or a payload
    /// at most half the running mean of played payloads (a VBR codec's pause
    /// or breath). A constant-rate codec has no quiet frames.
    fn is_quiet(&self, seq: u32) -> bool {
        let item = &self.items[self.idx(seq)];
        item.meta.flags & frame_flags::DTX != 0
            || (self.sized >= QUIET_MIN_FRAMES
                && item.bytes().len() as f32 <= QUIET_SHARE * self.avg_bytes)
    }

    /// Whether the frame held for `seq` lies in a pause: flagged DTX, or
    /// quiet after at least [`PAUSE_NS`] of quiet frames played, not in the
    /// short gap between two words.
    fn in_pause(&self, seq: u32) -> bool {
        let item = &self.items[self.idx(seq)];
        item.meta.flags & frame_flags::DTX != 0
            || (self.quiet_run_ns >= PAUSE_NS && self.is_quiet(seq))
    }

    /// Whether the playout point may come down (skip) at the frame due now,
    /// held or not (`held`), when it is too deep: at once when that frame is
    /// absent (nothing audible is lost), when `urgent`, or when it lies in a
    /// pause; otherwise only after `quiet_wait` of waiting for a pause.
    /// Dropping a frame in the middle of a word costs far more than in a
    /// pause (docs/QUALITY.md, the schedule's clean phase after loss).
    fn may_skip(&mut self, held: bool, audible: bool, urgent: bool) -> bool {
        if !audible || urgent || self.quiet_wait_ns == 0 || (held && self.in_pause(self.next_seq)) {
            return true;
        }
        let since = *self.off_target_since.get_or_insert(self.next_play_ns);
        self.next_play_ns.saturating_sub(since) >= self.quiet_wait_ns
    }

    /// Fills one playout period. Returns false when the output is full.
    fn play_one(&mut self, out: &mut Batch<FrameMeta>) -> bool {
        let half = self.frame_ns as i64 / 2;
        for attempt in 0..2 {
            let ts = self.due_ts();
            let cur = self.delay_at(self.next_play_ns, ts);
            let held = self.is_held(self.next_seq);
            let next_held = self.is_held(self.next_seq.wrapping_add(1));
            let deep = attempt == 0 && cur >= self.target_ns + half + half / 2 && next_held;
            let early = cur < self.target_ns - half;
            if !deep {
                self.off_target_since = None;
            }
            // Far too deep (a delay spike drained at once): no waiting.
            let urgent =
                cur >= self.target_ns + URGENT_FRAMES * self.frame_ns as i64 + self.stretch_max_ns;
            // An absent frame DRED rebuilds (a stretched-for run) is heard
            // like a held one: not skipped at once.
            let audible = held || (self.stretch_max_ns > 0 && self.dred_frames_left > 0);
            if deep && self.may_skip(held, audible, urgent) {
                // Too deep: drop (or pass over) the frame due, at most once
                // per period.
                if held {
                    self.stats.skipped.inc();
                    self.passed_held = self.passed_held.saturating_add(1);
                    if self.is_quiet(self.next_seq) {
                        self.stats.quiet_changes.inc();
                    }
                }
                self.off_target_since = None;
                self.advance(Held::Passed, ts, self.frame_ns);
                continue;
            }
            if early {
                // Early: conceal one period and keep the frame for later. At
                // once, not at a quiet frame: a target that rose is late
                // frames to come or a burst hold DRED needs now (waiting for
                // a pause measured worse on bursts, docs/QUALITY.md).
                let quiet = held && self.is_quiet(self.next_seq);
                if !self.push_missing(out, ts, true) {
                    return false;
                }
                self.stats.stretched.inc();
                if quiet {
                    self.stats.quiet_changes.inc();
                }
                return true;
            }
            if held {
                let idx = self.idx(self.next_seq);
                if out.push_copy(&self.items[idx]).is_err() {
                    return false;
                }
                self.frame_ns = frame_ns_of(&self.items[idx].meta);
                let codec = self.items[idx].meta.codec;
                let len = self.items[idx].bytes().len() as f32;
                if codec != self.codec {
                    self.sized = 0;
                }
                let quiet = self.is_quiet(self.next_seq);
                self.quiet_run_ns = if quiet {
                    self.quiet_run_ns.saturating_add(self.frame_ns)
                } else {
                    0
                };
                let weight = if quiet {
                    QUIET_MEAN_FRAMES * QUIET_MEAN_SLOW
                } else {
                    QUIET_MEAN_FRAMES
                };
                self.avg_bytes = if self.sized == 0 {
                    len
                } else {
                    self.avg_bytes + (len - self.avg_bytes) / weight
                };
                self.sized = self.sized.saturating_add(1);
                self.codec = codec;
                let fec = self.items[idx].meta.fec;
                self.fec_block = if fec.ratio_percent > 0 {
                    fec.source_symbols
                } else {
                    0
                };
                self.fec_ratio = fec.ratio_percent;
                if carries_dred(codec, self.items[idx].bytes()) {
                    self.dred_frames_left = DRED_MEMORY_FRAMES;
                } else {
                    self.dred_frames_left = self.dred_frames_left.saturating_sub(1);
                }
                self.stats.played.inc();
                self.run_stretch = 0;
                self.stats.current_delay_ms.set(cur / 1_000_000);
                let seq = self.next_seq;
                let recovered = self.items[idx].meta.flags & frame_flags::RECOVERED != 0;
                self.advance(Held::Played, ts, self.frame_ns);
                self.observe_played(seq, recovered);
                return true;
            }
            // Due and absent with nothing held after it, in a burst on a
            // stream with DRED: a run longer than the hold, going on.
            // Stretch (conceal one period, keep the seq) up to
            // `burst_stretch`, so the packet that ends the run still finds
            // its frames due; a run that outlasts the stretch is an outage:
            // the periods stretched stand in for its first frames, which
            // pass at once, and the delay goes with them.
            if self.stretch_max_ns > 0
                && self.buffered == 0
                && self.dred_frames_left > 0
                && self.burst_est > 1.0
            {
                let cap = (self.stretch_max_ns / self.frame_ns.max(1) as i64) as u32;
                if self.run_stretch < cap && cur < self.target_ns + self.stretch_max_ns {
                    if !self.push_missing(out, ts, true) {
                        return false;
                    }
                    self.run_stretch += 1;
                    self.stats.stretched.inc();
                    return true;
                }
                if (1..=cap).contains(&self.run_stretch) {
                    for _ in 0..self.run_stretch {
                        let ts = self.due_ts();
                        self.advance(Held::Passed, ts, self.frame_ns);
                    }
                    self.stats.stretch_drained.add(u64::from(self.run_stretch));
                    // No more stretching until a frame plays.
                    self.run_stretch = u32::MAX;
                    let ts = self.due_ts();
                    if !self.push_missing(out, ts, false) {
                        return false;
                    }
                    self.advance(Held::Passed, ts, self.frame_ns);
                    return true;
                }
            }
            // Due and absent: lost or late. If the sender merely paused
            // (DTX), `ingest` rewinds when its next frame shows up.
            if !self.push_missing(out, ts, false) {
                return false;
            }
            self.advance(Held::Passed, ts, self.frame_ns);
            return true;
        }
        true
    }
}

impl Processor for JitterProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        self.quantum_ns = cx.quantum_ns;
        let (input, out) = io.frames_in_out(0, 0);
        if let Some(input) = input {
            for slot in input.iter() {
                self.ingest(slot, cx.now_ns);
            }
        }
        let Some(out) = out else {
            return Flow::Continue;
        };
        if self.active && !self.started {
            let ts = self.due_ts();
            if self.is_held(self.next_seq)
                && self.delay_at(cx.now_ns, ts) >= self.target_ns - self.frame_ns as i64 / 2
            {
                self.started = true;
                self.next_play_ns = cx.now_ns;
            }
        }
        if !self.started {
            return Flow::Continue;
        }
        // A clock that jumped far ahead (a paused graph) resumes from now
        // rather than bursting out every period it missed.
        if cx.now_ns > self.next_play_ns + 1_000_000_000 {
            self.next_play_ns = cx.now_ns;
        }
        let horizon = cx.now_ns + cx.quantum_ns.max(1);
        while self.next_play_ns < horizon {
            if !self.play_one(out) {
                self.stats.overflow_drops.inc();
                break;
            }
            self.next_play_ns += self.frame_ns;
        }
        Flow::Continue
    }
}
