//! The sender's quality controller, sans-IO: fed the feedback entries its
//! receivers send about it (`wzp_proto::feedback`) with `now`, polled with
//! `now` for decisions. Each [`Decision`] carries the whole [`Settings`] to
//! apply and the [`Reason`] it was taken; every decision is counted by
//! reason.
//!
//! Two axes (policy and the measurements behind it in docs/PROFILES.md,
//! "Adaptation"):
//!
//! - **Protection** against loss, chosen from the loss the *worst* fresh
//!   receiver reports and the shape of its losses: none on a clean path
//!   (after a start-up period on the profile's defaults); for random loss
//!   RaptorQ repair where it fits (below), else LBRR with a loss hint near
//!   the measured loss; DRED (1 s window, a
//!   hint that sets its share of the bit rate and its reach, [`dred_hint`],
//!   and a receiver hold to rebuild whole bursts within a latency budget:
//!   the smallest its fresh receivers state, [`Controller::handle_receiver_info`])
//!   for bursts; for random loss from a level of 3 % ([`FEC_LIGHT_ENTER`],
//!   held while the loss lasts) RaptorQ repair, a symbol per two frames
//!   with Opus at 15.6 of 24 kb/s, and from 13 % (left under 10 %:
//!   [`FEC_ENTER`]) up to 37 % ([`FEC_ABOVE`], taken again under 33 %) a
//!   symbol per frame with Opus at 11 of
//!   24 kb/s, in blocks whose hold fits the budget ([`fec_block_at`]), where
//!   the tier has the rate for it and no other fresh receiver hears the
//!   stream unrepaired (in a room, a clean listener would hear Opus at
//!   11 kb/s too: LBRR instead, [`Reason::RandomLossRoom`]); without it
//!   (`random_fec` off, a lower tier, a budget under two frames) or above
//!   it, DRED with the hold for random loss
//!   dense enough that runs of two and more are most of it (a loss level
//!   of 26 %, left under 20 %: [`DENSE_ENTER`]); Codec2 with RaptorQ
//!   where Opus cannot hold: heavy loss on a tier with no DRED (or with
//!   [`ControllerConfig::rate_check`] off). Elsewhere heavy loss with no
//!   queue first gets a step down to what got through: loss that falls
//!   with it was a rate limit that queues nothing (the step stands), loss
//!   that stays is random and keeps Opus with DRED and the hold. Loss
//!   under the heavy level too regular for independent loss (a policer's,
//!   [`REGULAR_REPORTS`]) gets the same check. RaptorQ waits for two lossy reports whose
//!   pooled runs look random ([`FEC_MIN_REPORTS`]): a block of two is
//!   lost whole to a run of three. A report's longest run counts as a burst only
//!   when independent loss at the path's rate makes one that long in
//!   under 0.2 % of reports, or under 2 % in two reports within 2.5 s
//!   (until the pooled runs below read random), or when the path is
//!   bursty: pooled over recent reports, most of its loss in runs of 3+
//!   ([`BURSTY_SHARE`]). More protection applies at once (down
//!   fast); less only after the calmer state has held for `hysteresis` (up
//!   slow). Redundancy goes off after `clean_settle` with no loss, or after
//!   random loss as soon as the packets counted since, none lost, make its
//!   going on unlikely ([`LOSS_ENDED_ODDS`]).
//! - **Tier** (bit rate and frame size): a receiver that reports queueing
//!   delay with loss or a receive rate below the send rate caps the path;
//!   the tier drops at once to the highest one whose wire rate fits 90 % of
//!   what got through, and probes one tier up after a calm `probe_after`
//!   (doubled after a probe that failed, up to `probe_max`). Below the
//!   lowest Opus tier (`degraded`, about 13.6 kb/s on the wire) the ladder
//!   goes on to Codec2 1200 (`catastrophic`, about 8.8 kb/s: 40 ms frames,
//!   so half the packet overhead), then packs two and three of its frames
//!   per packet (80 ms, about 5 kb/s; 120 ms, about 3.7 kb/s: the packet
//!   overhead is most of the rate down there, so a path of 12 kb/s counted
//!   with QUIC's own bytes carries a call); `poor` (Codec2 3200 in 20 ms
//!   frames) costs more on the wire than `degraded` and is only used for
//!   loss. Probes climb the same steps back (120 -> 80 -> 40 ms packets ->
//!   `degraded`), each after the calm period (the hysteresis of the
//!   bandwidth axis). What got through at the last congestion is a
//!   ceiling: a probe to a step that needs more than 90 % of it (what the
//!   congestion step would not have taken) waits `probe_max` since
//!   that congestion (a step that worked resets the back-off, and at
//!   12 kb/s a probe from 80 to 40 ms packets then failed every ~10 s);
//!   a step above it that holds for the hysteresis period clears it.
//! - **A delay the path took on is not a queue.** Reports read queueing
//!   delay above a floor that takes 10-20 s to follow a delay that rose and
//!   stayed (a route that got longer). A step down that the receiver's next
//!   settled report shows drained nothing (the same queue, the receive rate
//!   whole) is taken back (reason `path_delay`), and that delay is taken
//!   off the receiver's reports until they read less (see
//!   `Controller::handle_report_sent`); the first hop's samples judge the
//!   steps they cause alike.
//!
//! Loss seen while the path is congested is not treated as random loss:
//! redundancy would only add to the congestion.
//!
//! **Outages** are neither loss to protect against nor congestion: a report
//! whose losses are mostly one run longer than twice what the receiver can
//! rebuild (its hold budget in frames, plus the frame after it: 8 frames,
//! 160 ms, at 20 ms frames and the 60 ms default) is counted
//! ([`Controller::outages`]) and otherwise ignored. No redundancy reaches
//! across such a gap in time to be played (DRED arrives with the first
//! packet after it), so redundancy would only take bits from the base
//! layer, and the receiver's deep PLC is what fills it: on the live bench's
//! 400 ms outages every 5 s, `opus_demo` scores 2.64 with deep PLC alone
//! against 2.24-2.27 with LBRR or DRED (docs/QUALITY.md).
//!
//! **Long runs.** A receiver whose recent loss is mostly in such runs
//! (outages counted: half its lost packets over about seven reports, after
//! two such runs, [`LONG_RUN_SHARE`]) is read from its whole loss, not
//! from the short runs its reports show between the outages: with a tenth
//! or more of that loss in shorter runs ([`LONG_RUN_BURSTS`], a path of
//! long bursts, 160 ms Gilbert-Elliott) it gets DRED with the hold, which
//! rebuilds the short runs and the last frames of each long one (LBRR,
//! which those reports alone would choose, rebuilds one); with less (a path
//! of outages) no redundancy, for the reason above (reason `long_runs`).

use wzp_proto::feedback::{
    burst_bin, FeedbackEntry, BURST_BINS, BURST_BIN_MAX, MAX_FEEDBACK_ENTRIES,
};

use crate::codec::profile::{Codec, Profile};
use crate::quality::path::PathSample;

const MS: u64 = 1_000_000;

/// Bytes a media packet adds to its codec payload on the wire as the
/// receiver measures it: media header (22) and AEAD tag (16).
pub(crate) const PACKET_OVERHEAD_BYTES: u32 = 22 + 16;

/// The tiers the controller moves between, best first. Studio tiers are used
/// only when the configured top tier allows them.
pub const TIERS: [&str; 8] = [
    "studio_64k",
    "studio_48k",
    "studio_32k",
    "good",
    "fair",
    "degraded",
    "poor",
    "catastrophic",
];

/// Index in [`TIERS`] of the lowest Opus tier.
const LOWEST_OPUS: usize = 5;
/// Index in [`TIERS`] of Codec2 3200 (`poor`).
const POOR: usize = 6;
/// Index in [`TIERS`] of Codec2 1200 (`catastrophic`): the last step of the
/// bandwidth ladder.
const CATASTROPHIC: usize = 7;

/// Longest Codec2 packet, ms: the bandwidth ladder's last steps pack two or
/// three 40 ms Codec2 1200 frames into one packet (80, 120 ms), each step
/// saving a third or more of the per-packet overhead, which is most of the
/// wire rate down there.
pub const CODEC2_MAX_PACKET_MS: u32 = 120;

/// One step of the bandwidth ladder: a tier (index in [`TIERS`]) and its
/// packet duration, ms. Steps order from best to cheapest as tuples do.
type Step = (usize, u32);

/// The bandwidth ladder one step down from `t`: the next Opus tier, then
/// Codec2 1200 (`poor` is skipped: it needs more wire rate than `degraded`)
/// in 40, 80, then 120 ms packets.
fn ladder_down((t, packet_ms): Step) -> Step {
    if t < LOWEST_OPUS {
        (t + 1, profile(t + 1).frame_ms)
    } else if t == CATASTROPHIC {
        (t, (packet_ms + 40).min(CODEC2_MAX_PACKET_MS))
    } else {
        (CATASTROPHIC, profile(CATASTROPHIC).frame_ms)
    }
}

/// Wire rate of a bandwidth step as receivers count it, kbit/s.
fn step_kbps((t, packet_ms): Step) -> f32 {
    packet_wire_kbps(profile(t), packet_ms, 0)
}

/// The bandwidth ladder one step up from `t`: shorter Codec2 packets first.
fn ladder_up((t, packet_ms): Step) -> Step {
    let base = profile(CATASTROPHIC).frame_ms;
    if t == CATASTROPHIC && packet_ms > base {
        (t, packet_ms - base)
    } else if t > LOWEST_OPUS {
        (LOWEST_OPUS, profile(LOWEST_OPUS).frame_ms)
    } else {
        let up = t.saturating_sub(1);
        (up, profile(up).frame_ms)
    }
}

/// What the sender should run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Quality profile name (docs/PROFILES.md): codec, bit rate, frame size.
    pub tier: &'static str,
    /// Codec payload bit rate, bit/s.
    pub bitrate: u32,
    /// Frame duration, ms.
    pub frame_ms: u32,
    /// DRED window, ms (0: off). Opus tiers only.
    pub dred_ms: u32,
    /// `expected_loss` told to the Opus encoder, percent: it sizes LBRR and
    /// DRED's budget (and so DRED's reach).
    pub loss_hint: u8,
    /// Opus in-band FEC (LBRR).
    pub lbrr: bool,
    /// RaptorQ repair symbols per 100 source symbols (0: off).
    pub fec_ratio: u8,
    /// Source frames per RaptorQ block (0: the encoder's own
    /// `frames_per_block`); set with the repair for random loss
    /// ([`fec_block`]), so the receiver's block hold fits its budget.
    pub fec_block: u8,
    /// Frames the receiver should hold back to rebuild bursts from DRED
    /// (its decoder look-ahead); bounded by the latency budget.
    pub receiver_hold_frames: u8,
}

impl Settings {
    /// `tier` with every figure zero: nothing decided yet.
    pub const fn none(tier: &'static str) -> Settings {
        Settings {
            tier,
            bitrate: 0,
            frame_ms: 0,
            dred_ms: 0,
            loss_hint: 0,
            lbrr: false,
            fec_ratio: 0,
            fec_block: 0,
            receiver_hold_frames: 0,
        }
    }
}

/// Why a decision was taken. Counted per reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Start-up: the profile's defaults until reports say otherwise.
    Startup,
    /// No loss for the settle time (or, after random loss, for as many
    /// packets as show it ended): redundancy off.
    CleanPath,
    /// Random (isolated) loss: LBRR sized to it.
    RandomLoss,
    /// Bursts of lost packets: DRED with a longer reach, receiver hold.
    BurstLoss,
    /// Loss beyond what Opus redundancy holds: Codec2 with RaptorQ.
    HeavyLoss,
    /// Loss eased for the hysteresis period: one step less protection.
    LossEased,
    /// The path cannot carry the tier: a lower one.
    Congestion,
    /// Calm for the probe period: one tier up.
    Probe,
    /// Random loss dense enough (a level of [`DENSE_ENTER`]) that runs of
    /// two and more are most of it: DRED and the receiver hold, as for
    /// bursts.
    DenseLoss,
    /// Most of the recent loss is in runs longer than the receiver can
    /// rebuild and almost none in shorter ones (see [`LONG_RUN_SHARE`],
    /// [`LONG_RUN_BURSTS`]): no redundancy, the decoder's deep PLC fills
    /// them.
    LongRuns,
    /// Random loss at a level of [`FEC_ENTER`] and more: Opus at under half
    /// the tier's rate with as much again in RaptorQ repair, in blocks the
    /// receiver's latency budget holds ([`fec_block`]).
    FecLoss,
    /// Random loss that would get RaptorQ ([`Reason::FecLoss`]), in a room
    /// where another receiver hears the stream unrepaired (a clean path):
    /// LBRR at the tier's rate, as for [`Reason::RandomLoss`]. RaptorQ's
    /// Opus at 11 of the tier's 24 kb/s would cost that listener 1.2
    /// PESQ-WB, LBRR 0.7 (docs/QUALITY.md finding 30).
    RandomLossRoom,
    /// Heavy loss that would get Codec2 ([`Reason::HeavyLoss`]), in a room
    /// where another receiver hears the stream unrepaired (a clean path):
    /// Opus with DRED and the receiver hold at the tier's rate, as for
    /// dense loss. Codec2 1200 would cost that listener 2.2 PESQ-WB
    /// (docs/QUALITY.md finding 31).
    HeavyLossRoom,
    /// A congestion step down drained no queue: the delay its report read
    /// is the path's (a route that got longer), not a queue this stream
    /// built; the step is taken back (see [`Controller::handle_report`]).
    PathDelay,
    /// Heavy loss with no queue: the rate steps down to what got through,
    /// to tell a rate limit that drops what it cannot carry (a policer)
    /// from random loss; the next settled report judges it
    /// ([`ControllerConfig::rate_check`]).
    RateCheck,
    /// Heavy loss that a step down to what got through did not relieve:
    /// random, not a rate limit. The step (a rate check's, or the first
    /// hop's samples' on saturation alone) is taken back, and Opus with DRED
    /// and the receiver hold at the tier's rate, as for dense loss, not
    /// Codec2: at 60 / 70 / 80 % random loss it scores 1.33 / 1.23 / 1.10
    /// PESQ-WB and 0.83 / 0.77 / 0.64 STOI against Codec2 1200 with
    /// RaptorQ 100 %'s 1.07 / 1.09 / 1.14 and 0.21 / 0.18 / 0.12
    /// (docs/QUALITY.md finding 31).
    HeavyRandom,
}

impl Reason {
    /// Every reason, in counter order.
    pub const ALL: [Reason; 16] = [
        Reason::Startup,
        Reason::CleanPath,
        Reason::RandomLoss,
        Reason::BurstLoss,
        Reason::HeavyLoss,
        Reason::LossEased,
        Reason::Congestion,
        Reason::Probe,
        Reason::DenseLoss,
        Reason::LongRuns,
        Reason::FecLoss,
        Reason::RandomLossRoom,
        Reason::HeavyLossRoom,
        Reason::PathDelay,
        Reason::RateCheck,
        Reason::HeavyRandom,
    ];

    /// Short name, for counters and logs.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::CleanPath => "clean_path",
            Reason::RandomLoss => "random_loss",
            Reason::BurstLoss => "burst_loss",
            Reason::HeavyLoss => "heavy_loss",
            Reason::LossEased => "loss_eased",
            Reason::Congestion => "congestion",
            Reason::Probe => "probe",
            Reason::DenseLoss => "dense_loss",
            Reason::LongRuns => "long_runs",
            Reason::FecLoss => "fec_loss",
            Reason::RandomLossRoom => "random_loss_room",
            Reason::PathDelay => "path_delay",
            Reason::HeavyLossRoom => "heavy_loss_room",
            Reason::RateCheck => "rate_check",
            Reason::HeavyRandom => "heavy_random",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One decision: apply `settings` because of `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// What to run with from now on.
    pub settings: Settings,
    /// Why.
    pub reason: Reason,
    /// When it was taken.
    pub at_ns: u64,
}

/// Controller tuning. Defaults in [`ControllerConfig::default`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControllerConfig {
    /// The best tier to use (a name in [`TIERS`]); the call starts there.
    pub top_tier: &'static str,
    /// Time on the profile's defaults before a clean path drops redundancy.
    pub startup_ns: u64,
    /// Loss-free time after which redundancy is turned off (sooner after
    /// random loss: [`LOSS_ENDED_ODDS`]).
    pub clean_settle_ns: u64,
    /// How long a calmer state must hold before protection steps down.
    pub hysteresis_ns: u64,
    /// Calm time before the first probe one tier up.
    pub probe_after_ns: u64,
    /// Longest probe back-off.
    pub probe_max_ns: u64,
    /// A receiver whose last report is older than this is not counted.
    pub report_fresh_ns: u64,
    /// Extra receive latency allowed for rebuilding loss, ms, assumed for a
    /// receiver whose reports do not state their own
    /// ([`Controller::handle_receiver_info`]).
    pub hold_budget_ms: u32,
    /// Loss fraction above which Opus is given up for Codec2 (with
    /// [`Self::rate_check`], only where the loss is a rate limit's).
    pub heavy_loss: f32,
    /// Heavy loss with no queue first steps the rate down to what got
    /// through ([`Reason::RateCheck`]): loss that falls to under half was a
    /// rate limit (the step stands, as for congestion); loss that stays is
    /// random, and gets Opus with DRED and the hold at the tier's rate
    /// ([`Reason::HeavyRandom`]), which scores above Codec2 up to 80 %.
    /// False: Codec2 with RaptorQ for any heavy loss.
    pub rate_check: bool,
    /// Queueing delay (ms; the least of a report's interval above the
    /// recent floor, docs/WIRE.md §1.5) that, with loss or a short receive
    /// rate, means the path is congested.
    pub congestion_queue_ms: f32,
    /// RaptorQ repair for random loss of [`FEC_ENTER`] and more where the
    /// tier and the hold budget allow it; false: LBRR (and DRED for dense
    /// loss) as libopus's own loop would, with no extra packets.
    pub random_fec: bool,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            top_tier: "good",
            startup_ns: 3_000 * MS,
            clean_settle_ns: 4_000 * MS,
            hysteresis_ns: 10_000 * MS,
            probe_after_ns: 10_000 * MS,
            probe_max_ns: 60_000 * MS,
            report_fresh_ns: 3_000 * MS,
            hold_budget_ms: 60,
            heavy_loss: 0.60,
            congestion_queue_ms: 25.0,
            random_fec: true,
            rate_check: true,
        }
    }
}

/// How much protection, least first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Clean,
    Random,
    /// Random loss with RaptorQ repair ([`FEC_ENTER`]).
    Fec,
    Burst,
    Heavy,
}

/// What [`Controller::worst`] finds over the fresh receivers.
struct Worst {
    loss: f32,
    level: f32,
    /// Every lossy receiver's loss looks random (see [`FEC_MIN_REPORTS`]).
    random_shape: bool,
    /// Every lossy receiver's loss still looks random enough to keep
    /// RaptorQ: its pooled runs under [`BURSTY_SHARE`] (a rare run alone
    /// does not send it back: live, a run of 6 on a 20 % path did, and
    /// the call went RaptorQ, LBRR, RaptorQ within seconds).
    random_kept: bool,
    burst: u32,
    lossy: bool,
    any: bool,
    heavy: bool,
    /// Heavy loss kept on Opus: not judged yet, or found random
    /// ([`ControllerConfig::rate_check`]).
    heavy_held: bool,
    /// A receiver's heavy loss was found random.
    heavy_random: bool,
    long_runs: bool,
    /// The smallest hold budget among fresh receivers, ms.
    budget_ms: u32,
    /// A fresh receiver hears the stream unrepaired: its path is clean, or
    /// its loss is set aside as long runs (deep PLC fills them). What Opus
    /// rate the stream has is what it hears.
    plain_listener: bool,
}

/// What the controller keeps per receiver.
#[derive(Clone, Copy, Debug, Default)]
struct Receiver {
    id: u32,
    used: bool,
    last_ns: u64,
    /// The hold budget its reports state, ms (`None`: they state none).
    budget_ms: Option<u32>,
    /// Its reports say it takes repair riding in source packets
    /// (`ReceiverInfo::riding_repair`).
    riding: bool,
    /// Loss fraction: rises at once, decays over reports.
    loss: f32,
    /// The last report's loss fraction as it came (congested or not).
    last_loss: f32,
    /// Packets counted since the last report that lost any.
    clean_packets: u32,
    /// The loss level at the last report that read loss.
    loss_level: f32,
    /// Loss fraction averaged over about four reports (both ways): the
    /// level of a path's loss, not its last interval. Restarts when loss
    /// begins on a path that had none for the settle time, as the mean of
    /// the reports since (the first no higher than [`DENSE_LEAVE`]), and
    /// from the [`LEVEL_REPORTS`]th on moves a quarter of the way to each.
    level: f32,
    /// Reports in `level` since it last restarted (0: restart it).
    level_reports: u8,
    /// Longest burst (packets) recently, held for the hysteresis period
    /// (or until a shorter one comes after half of it).
    burst: u32,
    burst_at_ns: u64,
    /// Last time this receiver reported loss (not congestion).
    loss_at_ns: u64,
    saw_loss: bool,
    /// When the last report with a settled run that independent loss
    /// makes in under 2 % of reports came.
    rare_run_at_ns: Option<u64>,
    /// Consecutive reports of heavy loss spread over the interval (not
    /// one outage or burst): Codec2 is for a path that stays this bad.
    heavy_run: u32,
    /// The last reports in a row with loss of [`REGULAR_MIN_LOSS`] to
    /// [`REGULAR_MAX_LOSS`] and what this sender sent known: runs longer
    /// than a policer makes at each one's level that independent loss
    /// would make, and those each held ([`Receiver::regular_loss`]).
    regular: [(f32, u32); REGULAR_REPORTS],
    regular_n: usize,
    /// Lost packets over recent reports (outages included), decayed by
    /// [`LONG_RUN_DECAY`] a report, and those of them in runs longer than
    /// the receiver can rebuild ([`Controller::long_run_min`]).
    lost_recent: f32,
    lost_long: f32,
    /// Runs that long over recent reports, decayed alike.
    long_runs: f32,
    /// Most of the recent loss is in long runs: entered on
    /// [`LONG_RUNS_SEEN`] runs and [`LONG_RUN_SHARE`] of the loss, left on
    /// the share alone (the runs of a 160 ms burst path come seconds apart).
    long: bool,
    /// Lost packets in runs shorter than the long ones over recent reports,
    /// and those of them in runs of 3 and more, decayed alike.
    short_lost: f32,
    short_in_bursts: f32,
    /// Reports that added to `short_lost` (saturating).
    short_reports: u8,
    /// Most of the recent short-run loss is in runs of 3+ (a bursty path,
    /// [`BURSTY_SHARE`]), whatever one report's runs look like.
    bursty: bool,
    /// Queueing delay (ms) its reports carry that a congestion step down
    /// did not drain: the path's own delay (a route that got longer), not
    /// a queue, until the reports' floor catches up with it. Taken off
    /// every report's queue; falls with the readings.
    queue_base_ms: f32,
    /// The queue its last report read, ms, before the base is taken off.
    last_raw_queue_ms: f32,
    /// What its heavy loss is ([`ControllerConfig::rate_check`]).
    heavy_verdict: HeavyVerdict,
    /// Its smoothed loss when the current probe began (0 if it was clean
    /// then), and its reports in a row since that read the probe's loss
    /// above it ([`PROBE_LOSS`]).
    probe_base_loss: f32,
    probe_loss_run: u8,
}

/// What a receiver's heavy loss is, as a step down to what got through
/// found it ([`ControllerConfig::rate_check`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum HeavyVerdict {
    /// Not judged yet: no Codec2 until it is.
    #[default]
    Unknown,
    /// A step down is waiting for the report that judges it.
    Pending,
    /// A rate limit (the loss fell with the step), or no step was left to
    /// tell: heavy loss that stays gets Codec2.
    RateLimit,
    /// Random: the loss stayed through the step. Opus with DRED and the
    /// hold, until its reports read under half of `heavy_loss`.
    Random,
}

/// A step down judged by the loss after it: a rate limit's loss falls
/// with the step, random loss stays. A rate check's (judged by its
/// reporter's reports) and the first hop's on saturation alone (by its
/// samples).
#[derive(Clone, Copy, Debug)]
struct LossTrial {
    at_ns: u64,
    /// The axis before the step.
    before: BwAxis,
    /// The loss that caused it.
    loss: f32,
    /// Packets counted since the settle time, and of those, lost
    /// ([`RATE_JUDGE_PACKETS`]).
    counted: u32,
    lost: u32,
}

impl LossTrial {
    fn new(at_ns: u64, before: BwAxis, loss: f32) -> LossTrial {
        LossTrial {
            at_ns,
            before,
            loss,
            counted: 0,
            lost: 0,
        }
    }

    /// Adds a reading's packets; whether they now decide the trial.
    fn pool(&mut self, counted: u32, lost: u32) -> bool {
        self.counted += counted;
        self.lost += lost.min(counted);
        judgeable(self.counted, self.lost, self.loss)
    }

    /// Whether the loss counted stayed (random, not a rate limit).
    fn stayed(&self) -> bool {
        loss_stayed(self.counted, self.lost, self.loss)
    }

    /// Whether its step still waits for its verdict (at most
    /// [`STEP_JUDGE_MAX_NS`] as a reason to hold other steps back).
    fn waiting(&self, tier_changed_ns: u64, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.at_ns) <= STEP_JUDGE_MAX_NS && tier_changed_ns == self.at_ns
    }
}

/// A step down taken to tell a rate limit from random heavy loss
/// ([`ControllerConfig::rate_check`]), judged by `reporter`'s reports.
#[derive(Clone, Copy, Debug)]
struct RateCheck {
    reporter: u32,
    trial: LossTrial,
    /// The same trial on this sender's first hop (its samples), for the
    /// verdict that the loss stayed ([`Controller::judge_rate_check_by_path`]).
    by_path: LossTrial,
}

/// Packets a rate check's verdict is read over, pooled across its
/// reporter's reports after the settle time. On the checking step (Codec2
/// in 120 ms packets, 8 a second) one report counts a handful: live at 70 %
/// random loss a report of three packets with one lost read 33 %, under
/// half the loss that caused the check, and the call was judged rate
/// limited and stayed on Codec2. At 60 % random loss, 5 or fewer of 20 lost
/// comes up about once in 600 checks.
const RATE_JUDGE_PACKETS: u32 = 20;
/// Packets that suffice for the verdict that the loss stayed (random): a
/// rate limit's loss falls with the step, and where it fell to 5 %, 3 or
/// more of 8 lost (the verdict at 70 %) comes up once in 170 checks. On
/// the checking step a report counts about 8; live at 70 % with the
/// listener's reports lost with its media, three reports of 8 took longer
/// than the check's 12 s.
const RANDOM_JUDGE_PACKETS: u32 = 8;

/// Whether `lost` of `counted` packets after a step caused by `loss` say
/// the loss stayed (half of it or more): random, not a rate limit.
fn loss_stayed(counted: u32, lost: u32, loss: f32) -> bool {
    lost as f32 >= 0.5 * loss * counted as f32
}

/// The loss a rate limit's step leaves at most, for the verdict that the
/// loss stayed ([`RANDOM_JUDGE_PACKETS`]'s 5 %).
const LIMIT_RESIDUAL_LOSS: f64 = 0.05;
/// Odds at which a handful of packets, fewer than
/// [`RANDOM_JUDGE_PACKETS`], may say the loss stayed: those of the 8-packet
/// verdict (3 or more of 8 lost at 5 %, once in 170 checks). Live at 80 %
/// both ways, with one report in five coming back and each counting a
/// handful of 120 ms packets, a call sat 15 s on the checking step (Codec2
/// 1200, no DRED) waiting for 8: its one report after the settle time
/// counted 5 with 3 lost, which a rate limit that left 5 % loss shows once
/// in 860 checks.
const STAYED_ODDS: f64 = 1.0 / 170.0;

/// Odds that `lost` or more of `counted` packets are lost when each is
/// with probability `p` (the binomial tail). `counted` is small here (under
/// [`RANDOM_JUDGE_PACKETS`]): a few multiplications, no allocation.
fn tail_odds(counted: u32, lost: u32, p: f64) -> f64 {
    let mut term = (1.0 - p).powi(counted as i32); // k = 0
    let mut below = 0.0;
    for k in 0..lost.min(counted + 1) {
        below += term;
        // C(n, k+1) p^(k+1) q^(n-k-1) from C(n, k) p^k q^(n-k).
        term *= f64::from(counted - k) / f64::from(k + 1) * p / (1.0 - p);
    }
    (1.0 - below).max(0.0)
}

/// Whether `lost` of `counted` packets decide a check caused by `loss`:
/// enough packets to say the loss stayed, or to say it fell. Fewer than
/// [`RANDOM_JUDGE_PACKETS`] say it stayed when a rate limit's step would
/// leave that many lost no more often than the 8-packet verdict does
/// ([`STAYED_ODDS`]: 2 of 2, or 3 of 3 to 7).
fn judgeable(counted: u32, lost: u32, loss: f32) -> bool {
    counted >= RATE_JUDGE_PACKETS
        || (loss_stayed(counted, lost, loss)
            && (counted >= RANDOM_JUDGE_PACKETS
                || (counted > 0 && tail_odds(counted, lost, LIMIT_RESIDUAL_LOSS) <= STAYED_ODDS)))
}

impl Receiver {
    /// Tallies a report whose sender's rate is known, for
    /// [`Receiver::regular_loss`]: its loss `loss` (`lost` packets) and
    /// its histogram (`bursts`, `max_burst`: a run still open counts). A
    /// report outside [`REGULAR_MIN_LOSS`]..=[`REGULAR_MAX_LOSS`] starts
    /// the tally again.
    fn count_regular(&mut self, loss: f32, lost: u32, entry: &FeedbackEntry) {
        if !(REGULAR_MIN_LOSS..=REGULAR_MAX_LOSS).contains(&loss) || lost == 0 {
            self.regular_n = 0;
            return;
        }
        // A policer's runs: one at up to 40 % of the packets lost (a run of
        // two now and then as half is neared), one or two up to two
        // thirds. Longer ones, `m` and up, at independent loss `p`: of
        // `lost * (1 - p)` runs (each ends at a packet that arrived), a
        // share `p^(m-1)`.
        let m: usize = if loss <= 0.4 { 2 } else { 3 };
        let expected = lost as f32 * (1.0 - loss) * loss.powi(m as i32 - 1);
        let seen = entry.bursts[m - 1..]
            .iter()
            .map(|&n| u32::from(n))
            .sum::<u32>()
            .max(u32::from(usize::from(entry.max_burst) >= m));
        self.regular.rotate_left(1);
        self.regular[REGULAR_REPORTS - 1] = (expected, seen);
        self.regular_n = (self.regular_n + 1).min(REGULAR_REPORTS);
    }

    /// Loss too regular to be independent over the last [`REGULAR_REPORTS`]
    /// reports, each losing [`REGULAR_MIN_LOSS`] to [`REGULAR_MAX_LOSS`]:
    /// far fewer long runs than independent loss at their levels makes. A
    /// policer (a token bucket with little or no queue) drops what exceeds
    /// its rate: after a packet it passes the bucket is empty and the next
    /// one is likely dropped, after one it drops it has filled, so up to
    /// 40 % of the packets lost it loses them one at a time, up to two
    /// thirds one or two at a time; independent loss at 40 % loses 40 % of its
    /// runs two or more at a time, at 55 % 30 % three or more at a time
    /// (live behind a 24 kbit/s policer: 54 % lost, runs of one and two
    /// only, in every report).
    fn regular_loss(&self) -> bool {
        if self.regular_n < REGULAR_REPORTS {
            return false;
        }
        let (expected, seen) = self
            .regular
            .iter()
            .fold((0.0, 0), |(e, n), &(x, k)| (e + x, n + k));
        expected >= REGULAR_MIN_EXPECTED && seen as f32 <= REGULAR_SHARE * expected
    }

    /// Whether this receiver reported loss within `settle_ns` of `now_ns`.
    fn lossy_within(&self, now_ns: u64, settle_ns: u64) -> bool {
        self.saw_loss && now_ns.saturating_sub(self.loss_at_ns) < settle_ns
    }

    /// Whether a burst (a run of 3+) is remembered: one came within
    /// `hysteresis_ns` (its memory renewed since, see `handle_report_sent`).
    fn bursts_within(&self, now_ns: u64, hysteresis_ns: u64) -> bool {
        self.burst >= 3 && now_ns.saturating_sub(self.burst_at_ns) <= hysteresis_ns
    }

    /// Whether the random loss this receiver read has ended before the
    /// settle time: half of it has passed since its last lossy report, and
    /// the packets its reports counted since, none lost, would have lost
    /// one at the level it read, bar [`LOSS_ENDED_ODDS`].
    fn loss_ended(&self, now_ns: u64, settle_ns: u64) -> bool {
        now_ns.saturating_sub(self.loss_at_ns) >= settle_ns / 2
            && self.loss_level > 0.0
            && self.loss_level < 1.0
            && self.clean_packets as f32 * (1.0 - self.loss_level).ln() < LOSS_ENDED_ODDS.ln()
    }

    /// Whether the pooled runs say anything about the path's shape
    /// ([`BURSTY_MIN_REPORTS`] lossy reports, [`BURSTY_MIN_LOST`] lost).
    fn pooled_enough(&self) -> bool {
        self.short_reports >= BURSTY_MIN_REPORTS && self.short_lost >= BURSTY_MIN_LOST
    }

    /// The part of the recent short-run loss in runs of 3 and more.
    fn burst_share(&self) -> f32 {
        if self.short_lost > 0.0 {
            self.short_in_bursts / self.short_lost
        } else {
            0.0
        }
    }

    /// Counts a report's lost packets, `long` of them in `long_runs` runs
    /// the receiver cannot rebuild.
    fn count_runs(&mut self, lost: u32, long_runs: u32, long: u32) {
        self.lost_recent = LONG_RUN_DECAY * self.lost_recent + lost as f32;
        self.lost_long = LONG_RUN_DECAY * self.lost_long + long as f32;
        self.long_runs = LONG_RUN_DECAY * self.long_runs + long_runs as f32;
        let share = if self.lost_recent > 0.0 {
            self.lost_long / self.lost_recent
        } else {
            0.0
        };
        self.long = if self.long {
            share >= LONG_RUN_LEAVE
        } else {
            share >= LONG_RUN_SHARE && self.long_runs >= LONG_RUNS_SEEN
        };
    }

    /// Counts a report's `short` lost packets in runs shorter than the long
    /// ones, `in_bursts` of them in runs of 3 and more.
    fn count_bursts(&mut self, short: u32, in_bursts: u32) {
        self.short_lost = LONG_RUN_DECAY * self.short_lost + short as f32;
        self.short_in_bursts = LONG_RUN_DECAY * self.short_in_bursts + in_bursts as f32;
        if short > 0 {
            self.short_reports = self.short_reports.saturating_add(1);
        }
        let share = self.burst_share();
        self.bursty = if self.bursty {
            share >= BURSTY_LEAVE
        } else {
            self.pooled_enough() && share >= BURSTY_SHARE
        };
    }
}

/// Share of a receiver's recent loss (outside long runs) in runs of 3 and
/// more from which its path counts as bursty: a run of 3+ in its reports
/// then counts as a burst even where that report alone would read it as
/// chance at its loss rate. One report holds a few runs; pooled over
/// reports the share separates the paths: 7-14 % on the live bench's
/// random 20 % traces, 18-30 % at 30 %, 48-66 % on 60 ms bursts (trace
/// seeds 11-20).
pub const BURSTY_SHARE: f32 = 0.45;
/// Share under which a bursty path no longer counts as one (a band).
pub const BURSTY_LEAVE: f32 = 0.35;
/// Decayed lost packets a receiver must have reported before the share
/// says anything.
pub const BURSTY_MIN_LOST: f32 = 12.0;
/// Lossy reports the share must pool before it says anything: one report
/// is what the per-report rules read already (a random 20 % report of six
/// single losses, a run of 3 and one of 5 put a call on DRED for 10 s).
pub const BURSTY_MIN_REPORTS: u8 = 3;

/// Share of a receiver's recent lost packets in runs longer than twice what
/// it can rebuild from which its loss is read as long runs: the short runs
/// its reports show between them (the long ones are set aside as outages)
/// do not choose its protection; [`LONG_RUN_BURSTS`] does. On the live
/// bench's 160 ms burst traces, reading the short runs alone put LBRR on
/// for seconds (docs/QUALITY.md finding 19); 57-86 % of their lost packets
/// are in runs of 9 and more (seeds 11-20), 8-25 % on the 60 ms traces.
pub const LONG_RUN_SHARE: f32 = 0.5;
/// Share of a long-run receiver's recent loss outside its long runs from
/// which it gets DRED with the hold (the budget's worth) rather than no
/// redundancy: the short runs between are what DRED rebuilds, and the last
/// frames of each long run. Aligned over trace seeds 11-16, 160 ms bursts
/// (14-43 % of the loss outside runs of 9+): DRED from start to end scored
/// +0.02 over the anchor on average and this rule +0.01 (worst seed -0.01),
/// no redundancy for such a receiver (the rule before) -0.04 (worst seed
/// -0.15; docs/QUALITY.md finding 20); the outage trace (all of it in runs
/// of 20) keeps none.
pub const LONG_RUN_BURSTS: f32 = 0.1;
/// Share under which a receiver's loss no longer counts as long: a band,
/// so a path near [`LONG_RUN_SHARE`] does not turn the hold and DRED on and
/// off with every long run (each turn stretches or skips at the receiver).
pub const LONG_RUN_LEAVE: f32 = 0.4;
/// Per-report decay of the long-run tallies: about seven reports of memory,
/// so a path's occasional long run does not outweigh its bursts (replayed
/// over the 60 ms burst traces of seeds 11-20, at most 5 of 33 reports read
/// as long runs: seed 15, whose first seconds hold runs of 14 and 12).
pub const LONG_RUN_DECAY: f32 = 0.85;
/// Long runs (decayed as above) a receiver must have seen before its loss
/// counts as long: two within about four reports. One long run early in a
/// path's loss is most of it and says little (a 60 ms burst trace makes
/// one now and then).
pub const LONG_RUNS_SEEN: f32 = 1.5;

/// Lowest run length in histogram bin `b`.
fn bin_lowest(b: usize) -> u32 {
    match b {
        0 => 1,
        _ => BURST_BIN_MAX[b.min(BURST_BINS - 1) - 1] + 1,
    }
}

/// How rarely independent loss must make a run for the longest run of a
/// report to count as a burst on its own: expected fewer than this many
/// times per report (a run expected under 0.05 times counts when the
/// report before had one too). A burst is remembered for the hysteresis period (DRED, a hold),
/// so a chance run at 5 % per report put a random-loss call on DRED for
/// 10 s in most calls; on random 20 % DRED scores 1.97 against LBRR's 2.26
/// (docs/QUALITY.md finding 14).
const CHANCE_RUN: f32 = 0.002;
/// Below this expected count a report's longest run is rare: two rare runs
/// within 2.5 s count as a burst.
const RARE_RUN: f32 = 0.02;

/// Queueing delay (ms; the report's, the least of its interval) that, with
/// half the packets lost, means the path is saturated (see
/// `handle_report`).
const SATURATED_QUEUE_MS: f32 = 10.0;

/// Fewest packets a first-hop sample must count to say anything.
const PATH_MIN_PACKETS: u16 = 10;
/// Round-trip time above the connection's smallest (ms) that, with
/// [`PATH_LOSS`], means this side's first hop is congested. Twice the
/// one-way [`ControllerConfig::congestion_queue_ms`]: the round trip adds
/// both directions' jitter (and the acknowledgement's own delay).
pub const PATH_QUEUE_MS: f32 = 50.0;
/// How far before a congested run of first-hop samples a report may have
/// come and still overrule it ([`Controller::handle_path`]): one report
/// interval, so that one normally has.
const PATH_REPORT_SPAN_NS: u64 = 1_000 * MS;
/// Lost fraction of the first hop's packets that, with [`PATH_QUEUE_MS`],
/// means congestion.
pub const PATH_LOSS: f32 = 0.10;
/// After a tier change, how long first-hop samples are not acted on: the
/// smoothed round-trip time still carries the old tier's queue.
pub const PATH_SETTLE_NS: u64 = 1_500 * MS;
/// After a congestion step down, how long further congestion is not acted
/// on (see `on_congestion`).
pub const STEP_SETTLE_NS: u64 = 1_500 * MS;

/// Loss level (about five reports) from which random loss gets DRED with the
/// receiver's hold instead of LBRR: LBRR rebuilds one frame back, and at
/// this density runs of two and more are most of the loss. On the live
/// bench's 30 % trace (loopback) DRED 1 s, hint 30 scores 1.83 against
/// LBRR's 1.74; at 20 % LBRR wins, 2.26 against 1.97 (docs/QUALITY.md
/// finding 14), so the band leaves DRED only below [`DENSE_LEAVE`]. (DRED
/// is sent with [`DRED_HINT`] since: 1.75 against LBRR's 1.67, finding 16.)
pub const DENSE_ENTER: f32 = 0.26;
/// Loss level under which dense-loss protection gives way to LBRR.
pub const DENSE_LEAVE: f32 = 0.20;

/// Reports the loss level is a plain mean of after it restarts, before it
/// moves a quarter of the way to each.
pub const LEVEL_REPORTS: u8 = 4;

/// Loss level (the same smoothed level as [`DENSE_ENTER`]) from which
/// random loss gets RaptorQ repair a symbol per frame, where the tier
/// allows ([`fec_bitrate`]; under it the light band, [`FEC_LIGHT_ENTER`],
/// or LBRR): Opus at 11 of the tier's 24 kb/s and a repair
/// symbol per source frame (1.11 times the payload of the tier's own
/// stream: each repair symbol is as long as the longest frame of its block
/// plus 3 bytes of frame metadata, docs/QUALITY.md finding 28), in blocks
/// of [`fec_block`].
/// A lost frame comes back whole once any two of its block's four packets
/// arrive, where LBRR brings back a coarse copy when the one packet after
/// it does. Fixed settings aligned against `opus_demo` on trace seed 13
/// (docs/QUALITY.md finding 23): random 20 % +0.44 against LBRR's +0.20,
/// 30 % +0.33 against DRED's +0.05, but 10 % +0.19 against +0.21; so from
/// 16 % while LBRR was under it. With the light band under it instead
/// (finding 49, six seeds, fixed: 10 % +0.37 light against +0.31 here, 15 %
/// +0.22 against +0.43), from 13 %, left under [`FEC_LEAVE`]; adapting, 13
/// / 10 % read random 10 % +0.37 and 15 % +0.32, 14 / 11 % +0.39 and
/// +0.25, 16 / 12 % +0.40 and +0.20 (a 10 % trace's first reports read up
/// to 16-24 %, and a move between the bands costs a switch of rate).
pub const FEC_ENTER: f32 = 0.13;
/// Loss level under which a symbol per frame gives way to the light band
/// (or LBRR where that does not fit).
pub const FEC_LEAVE: f32 = 0.10;
/// Odds under which a clean run of packets says random loss has ended:
/// at the loss level a receiver last read, its reports since counted so
/// many packets with none lost that the loss going on would have lost one
/// with these odds against (at 20 %, 21 packets; 10 %, 44; 5 %, 90; 2 %,
/// 228, past the settle time), and not before half the settle time (2 s):
/// a clean second or so amid loss is a gap, not its end (on a 20 % trace
/// with a 1.5 s gap, ending there and taking RaptorQ again cost -0.05
/// PESQ-WB). Random loss only: bursts leave clean seconds between them by
/// nature. Waiting the whole settle time instead kept
/// RaptorQ at 11 kb/s, or LBRR at a loss hint of 20 (which costs a clean
/// path 0.7 PESQ-WB in `opus_demo`), for four seconds after a 20 % phase
/// ended, live (docs/QUALITY.md finding 34).
pub const LOSS_ENDED_ODDS: f32 = 0.01;
/// Loss level from which RaptorQ repair gives way to DRED with the hold
/// (dense loss): blocks of two fail whole when three of their four packets
/// are lost (18 % of blocks at 40 %), and runs long enough to read as
/// bursts come every few seconds, so the call went back and forth between
/// the two. Aligned, three trace seeds: random 40 % -0.11 PESQ-WB behind
/// libopus's own loop with RaptorQ, -0.03 with DRED (docs/QUALITY.md
/// finding 26). Back into RaptorQ under [`FEC_BACK`].
pub const FEC_ABOVE: f32 = 0.37;
/// Loss level under which a call that left RaptorQ for dense loss
/// ([`FEC_ABOVE`]) takes it again.
pub const FEC_BACK: f32 = 0.33;
/// Lossy reports a receiver's pooled runs ([`BURSTY_SHARE`]) must span
/// before its loss counts as random enough for RaptorQ: blocks of two
/// are lost whole to a run of three, and the first reports of a 60 ms
/// burst path (a run of 2 at 14 %, then 38 % with a run of 8 that reads
/// as rare but not yet a burst) put it on RaptorQ for two seconds before
/// DRED (seed 13: -0.10 -> -0.24 PESQ-WB).
pub const FEC_MIN_REPORTS: u8 = 2;
/// RaptorQ repair symbols per 100 source frames for random loss.
pub const FEC_RATIO: u8 = 100;
/// Lowest Opus rate for RaptorQ repair: below about 11 kb/s libopus
/// leaves wideband (at 10 kb/s random 10 % scored 2.63 against 11 kb/s's
/// 2.85, at 9 kb/s 2.32 whatever the loss).
pub const FEC_MIN_OPUS_BITRATE: u32 = 11_000;

/// The Opus rate for RaptorQ repair on a tier of `bitrate`: 11/24 of it,
/// so that Opus and its repair stay near the tier's payload rate (measured
/// on the bench's call: 11 kb/s with 100 % repair in compact symbols sends
/// 1.11 times the payload of the 24 kb/s stream alone, docs/QUALITY.md
/// finding 28; the repair doubles the packets, whose overhead
/// [`packet_wire_kbps`] counts). `None` where that is under
/// [`FEC_MIN_OPUS_BITRATE`] (tiers under 24 kb/s keep LBRR).
pub fn fec_bitrate(bitrate: u32) -> Option<u32> {
    let b = bitrate * 11 / 24 / 100 * 100;
    (b >= FEC_MIN_OPUS_BITRATE).then_some(b)
}

/// Source frames per RaptorQ block for random loss: at [`FEC_RATIO`] the
/// sender paces a block's K repair frames one a quantum from the quantum
/// after the block, and the receiver holds a protected stream (K - 1)
/// frames and K quanta for them (`fec.raptorq_encode`,
/// `jitter.adaptive`), so the largest K whose hold fits the budget, a
/// quantum per frame: 2K - 1 frames. 1 at 20-40 ms, 2 at 60-80 ms, 3 at
/// 100 ms, for 20 ms frames. `None` when even a block of one does not fit
/// (a budget under a frame): no repair for random loss.
pub fn fec_block(hold_budget_ms: u32, frame_ms: u32) -> Option<u8> {
    fec_block_at(FEC_RATIO, hold_budget_ms, frame_ms)
}

/// Source frames per RaptorQ block at `ratio` % repair: the largest K (up
/// to 16) whose hold fits the budget, (K - 1) frames and then its R =
/// ceil(K x ratio / 100) repair frames, paced `ceil(ratio / 100)` a
/// quantum (a quantum per frame), as `jitter.adaptive` holds a protected
/// stream. At [`FEC_LIGHT_RATIO`]: 2 at 40-60 ms (one frame and one
/// repair), 3 at 80 ms, 4 at 100 ms. `None` when no block fits.
pub fn fec_block_at(ratio: u8, hold_budget_ms: u32, frame_ms: u32) -> Option<u8> {
    let frames = (hold_budget_ms / frame_ms.max(1)) as usize;
    let pace = usize::from(ratio).div_ceil(100).max(1);
    (1..=16usize)
        .rev()
        .find(|&k| {
            let repair = crate::fec::block::repair_count(k, u32::from(ratio))
                .div_ceil(pace)
                .max(1);
            k - 1 + repair <= frames
        })
        .map(|k| k as u8)
}

/// RaptorQ repair symbols per 100 source frames for light random loss
/// (under [`FEC_ENTER`]): a symbol per block of two, so a lost frame comes
/// back whole when the other two packets of its block's three arrive.
pub const FEC_LIGHT_RATIO: u8 = 50;
/// Loss level from which random loss under [`FEC_ENTER`] gets RaptorQ at
/// [`FEC_LIGHT_RATIO`] with Opus at 13/20 of the tier
/// ([`fec_light_bitrate`]) instead of LBRR, where the tier allows; held
/// until the loss ends (the level of a path losing 2-3 % wanders across
/// any edge, and each crossing moves Opus between 15.6 and 24 kb/s:
/// adapting on the loopback's 2 % traces, entered at 2 % and left under
/// 1.5 % read +0.09, held +0.17). Fixed settings aligned against `opus_demo`
/// over six trace seeds (docs/QUALITY.md finding 49): random 2 % +0.27
/// against LBRR's +0.19 (hint 7), 5 % +0.41 against the controller's
/// LBRR +0.22, 10 % +0.37 against +0.25; at 1 % every setting is level
/// with the anchor (+0.02 plain, -0.02 with this repair); at 15 % +0.22
/// against +0.43 with a symbol per frame ([`FEC_ENTER`]).
pub const FEC_LIGHT_ENTER: f32 = 0.03;
/// Blocks of at least this many frames for light repair: a block of one
/// at 50 % is a copy of every frame.
const FEC_LIGHT_MIN_BLOCK: u8 = 2;

/// The Opus rate for light RaptorQ repair ([`FEC_LIGHT_RATIO`]) on a tier
/// of `bitrate`: 13/20 of it (15.6 of 24 kb/s), so that Opus, half its rate
/// again in repair and the symbols' metadata stay within the tier's rate
/// nominally (15.6 + 7.8 + 0.6 kb/s; measured on the bench's call 1.10
/// times the payload of the 24 kb/s stream alone, as the full mode's 1.11,
/// docs/QUALITY.md findings 28 and 49). `None` where that is under
/// [`FEC_MIN_OPUS_BITRATE`].
pub fn fec_light_bitrate(bitrate: u32) -> Option<u32> {
    let b = bitrate * 13 / 20 / 100 * 100;
    (b >= FEC_MIN_OPUS_BITRATE).then_some(b)
}

/// The loss hint DRED streams are sent with, whatever the loss: it sets
/// DRED's share of the bit rate, and at 24 kb/s 14-16 scores best on every
/// lossy trace of the live bench (loopback, PESQ-WB averaged over seven
/// alignments of each trace against `opus_demo`'s: 60 ms bursts 2.22 at
/// 14, 2.18 at 20, 1.97 at 13 and below; 160 ms bursts 2.08, 2.03, 2.02;
/// random 30 % 1.75, 1.74, 1.65; docs/QUALITY.md finding 16). Below 14
/// the score falls off a cliff (14 buys DRED's third 40 ms chunk at
/// 24 kb/s, finding 18; DRED is used at 22.5 kb/s and up, and a higher
/// rate only buys chunks at lower hints). 14 rather than 15 (finding 21):
/// fixed DRED over six trace seeds, 60 ms bursts +0.01 against -0.01 (5 of
/// 6 seeds better), 160 ms bursts equal, random 30 % +0.03 against +0.02;
/// adapting, 60 ms bursts -0.033 -> -0.024, 160 ms +0.006 -> +0.012, 30 %
/// +0.017 -> +0.020.
pub const DRED_HINT: u8 = 14;

/// The loss hint for LBRR on a path losing `loss_pct` % at random: five
/// points above the loss, 7 to 30 (libopus spends no LBRR bits at 6 or
/// less). A hint above the loss buys a better LBRR copy: on the live
/// bench's 10 % trace (loopback, averaged over four alignments) LBRR scored
/// 2.82 at hint 10, 2.89 at 15, 2.88 at 20; on the 20 % trace 2.11 at 15,
/// 2.16 at 20, 2.14 at 25 (docs/QUALITY.md finding 16).
pub fn lbrr_hint(loss_pct: u32) -> u8 {
    (loss_pct + 5).clamp(7, 30) as u8
}

/// LBRR on `s` with a hint a little above the loss ([`lbrr_hint`]: libopus
/// needs > 6 % to spend LBRR bits at all, docs/QUALITY.md finding 2), on
/// Opus only: Codec2 (a bandwidth step) has neither, and a hint there would
/// only make a decision for a setting it ignores.
fn with_lbrr(s: &mut Settings, codec: Codec, loss_pct: u32) {
    if codec == Codec::Opus {
        s.lbrr = true;
        s.loss_hint = lbrr_hint(loss_pct);
    }
}

/// Lowest codec bit rate at which the controller uses DRED. libopus gives
/// DRED a share of the rate above 12 kb/s, and below about 22.5 kb/s that
/// share does not buy the two chunks it needs to send any: at 16 kb/s
/// (`fair`) the 60 ms burst trace saw no DRED rebuild at hints 10-30, and
/// scored 1.69 with DRED on, 1.68 with LBRR, 1.64 with neither (loopback,
/// docs/QUALITY.md finding 16). Below it, bursts get LBRR.
pub const DRED_MIN_BITRATE: u32 = 22_500;

/// The loss hint for a DRED stream whose receiver holds `hold` frames: the
/// hint sets DRED's share of the bit rate and with it how far back DRED
/// reaches. [`DRED_HINT`] within the default budget (3 frames); a longer
/// hold (a larger `hold_budget_ms`) needs a longer reach, and keeps the
/// hints sized for it before (20 up to 6 frames, 30 beyond; not measured
/// against 15).
pub fn dred_hint(hold: u8) -> u8 {
    match hold {
        0..=3 => DRED_HINT,
        4..=6 => 20,
        _ => 30,
    }
}

/// Most loss an early report ([`Controller::handle_early_report`]) is
/// taken for: a window of a few packets says little about the level.
pub const EARLY_LOSS_CAP: f32 = 0.2;

/// Reports of heavy, spread-out loss in a row before the controller leaves
/// Opus for Codec2: an outage or a burst makes one bad interval, which
/// DRED and the receiver's hold rebuild far better than Codec2 sounds.
pub const HEAVY_REPORTS: u32 = 2;

/// Loss fraction that, beginning with a probe, fails it (see
/// `Controller::handle_report_sent`).
pub const PROBE_LOSS: f32 = 0.05;

/// Reports in a row whose loss is too regular to be independent before a
/// rate check (`Receiver::regular_loss`): a policer that drops what its
/// rate cannot carry, under the heavy-loss level.
pub const REGULAR_REPORTS: usize = 4;

/// Least loss a report needs to count towards [`REGULAR_REPORTS`]: under it
/// long runs are too rare at random to tell regular loss by.
pub const REGULAR_MIN_LOSS: f32 = 0.2;

/// Most loss a report may have to count towards [`REGULAR_REPORTS`]: runs
/// longer than a policer's are then 4 and more, which the report's
/// histogram does not tell from 3 (heavy loss is checked anyway).
pub const REGULAR_MAX_LOSS: f32 = 2.0 / 3.0;

/// Runs longer than a policer makes that independent loss would make over
/// the [`REGULAR_REPORTS`] reports, at least, for their absence to say
/// the loss is regular; and the share of that many they may hold at most.
/// Independent loss shows a quarter of what it is expected to make in
/// under 0.3 % of such windows (10 expected, 2 or fewer seen, Poisson):
/// four reports at 45 % loss expect 10 runs of three and more.
pub const REGULAR_MIN_EXPECTED: f32 = 10.0;
/// See [`REGULAR_MIN_EXPECTED`].
pub const REGULAR_SHARE: f32 = 0.25;

/// The bandwidth axis: what a congestion step down changes, and what taking
/// one back restores.
#[derive(Clone, Copy, Debug)]
struct BwAxis {
    /// Tier the bandwidth allows (index in TIERS).
    tier: usize,
    /// Its packet duration, ms: the tier's frame, or for Codec2 1200 a
    /// whole number of frames up to [`CODEC2_MAX_PACKET_MS`].
    packet_ms: u32,
    /// What got through at the last congestion, kbit/s as receivers count
    /// it (0: none known). A probe to a step that needs more waits
    /// `probe_max` since that congestion: the path said it cannot carry
    /// it, and a failed probe there costs a burst of loss each time.
    ceiling_kbps: f32,
    last_congestion_ns: u64,
    /// When congestion last moved the tier down.
    stepped_down_ns: Option<u64>,
    probe_wait_ns: u64,
    /// A probe is running: congestion before the hysteresis ends fails it.
    probing: bool,
}

/// A congestion step down a receiver's report caused, kept until that
/// receiver's first report from after the step's settle time says whether
/// it drained the queue (see [`Controller::handle_report_sent`]).
#[derive(Clone, Copy, Debug)]
struct StepCheck {
    /// The receiver whose report caused it (`None`: the first hop's
    /// samples).
    reporter: Option<u32>,
    /// The queueing delay the report read, ms (before any base is taken
    /// off).
    queue_ms: f32,
    at_ns: u64,
    /// The axis before the step.
    before: BwAxis,
    /// For a step the first hop caused: the highest queue the fresh
    /// reports read at the step (`None`: no fresh report).
    reports_queue_ms: Option<f32>,
    /// Readings that read the same queue with the receive rate short,
    /// waited past (at most [`JUDGE_WAITS`]: a report of 50 packets on a
    /// path losing 15 % at random reads short, 10 of them lost, one time in
    /// five; three in a row about one in a hundred).
    waits: u8,
}

/// Share of what got through a rate check steps down to
/// ([`ControllerConfig::rate_check`]): deeper than a congestion step
/// ([`FIT_SHARE`]), so the verdict is clear. The uplink carries the
/// acknowledgements of the other members' media too: live, behind a 20 kb/s
/// policer, a step to 90 % of the 14 kb/s of media that got through
/// (Codec2 in 40 ms packets, 9 kb/s) still lost half its packets beside
/// 10 kb/s of acknowledgements. Random loss is restored either way.
const RATE_CHECK_SHARE: f32 = 0.5;

/// How long a rate check waits for its reporter's judging report before it
/// is dropped and its step taken back. At 70 % loss both ways the judging
/// report came 2-8 s after the step live.
const RATE_CHECK_MAX_NS: u64 = 12_000 * MS;

/// A step down the first hop's samples took on saturation alone (half the
/// packets lost, a queue under [`PATH_QUEUE_MS`]), judged by the first
/// sample [`PATH_SETTLE_NS`] after it as a rate check is: a link that
/// drops what it cannot carry loses less once the tier fits what got
/// through; random loss does not fall with the rate.
#[derive(Clone, Copy, Debug)]
struct SatCheck {
    /// Pooled over the samples (on Codec2 in 120 ms packets a sample
    /// counts four).
    trial: LossTrial,
    /// The settings in force before it.
    settings: Settings,
}

/// First-hop loss under which saturation judged random is over
/// ([`Controller::handle_path`]): half of what the saturation rule asks.
const PATH_RANDOM_END: f32 = 0.25;

/// Readings a step's judgement waits past when one reads the same queue
/// but the receive rate short of what was sent; after that many the step
/// stands. Two: a report of 50 packets reads short (10 of them lost) one
/// time in forty at 10 % random loss and one in five at 15 %, which a
/// 10 % path reads on a loaded machine (14-24 % in a CI run); with one
/// wait, two such reports in a row (one in twenty-three at 15 %) let a
/// longer route's step stand and the next step follow. Three in a row
/// come about one time in a hundred at 15 %. A path that narrowed again
/// under the stepped-down tier reads short every time and steps down two
/// reports later than with none.
const JUDGE_WAITS: u8 = 2;

/// How close to the queue that caused a step down (ms, or this share of
/// it, the larger) a report after the step must read for the step to have
/// drained nothing. A queue of ours drains at once or at 10 % of it a
/// second at least: the step goes to a tier that fits 90 % of what got
/// through.
const UNDRAINED_MS: f32 = 5.0;
const UNDRAINED_SHARE: f32 = 0.1;

/// How far from a queue of `ms` a reading still counts as the same one.
fn undrained(ms: f32) -> f32 {
    (UNDRAINED_SHARE * ms).max(UNDRAINED_MS)
}

/// The share of what got through at a congestion that a step must fit:
/// the step it takes, and a probe above it waits the longest back-off.
const FIT_SHARE: f32 = 0.9;

/// How often receivers report: a report that came this long after a step
/// describes an interval that began after it.
const REPORT_INTERVAL_NS: u64 = 1_000 * MS;
/// How long a step the first hop's samples caused waits for a report from
/// after it before it stands ([`Controller::reports_undrained`]).
const PATH_JUDGE_NS: u64 = 4_000 * MS;
/// The oldest a step may be and still be judged (its receiver's reports
/// stopped, or came late): it stands after that, as it does once the
/// tier has moved again.
const STEP_JUDGE_MAX_NS: u64 = 6_000 * MS;

/// The sender's quality controller. See the module docs.
#[derive(Clone, Debug)]
pub struct Controller {
    cfg: ControllerConfig,
    top: usize,
    started_ns: u64,
    receivers: [Receiver; MAX_FEEDBACK_ENTRIES],
    mode: Mode,
    /// Since when the wanted mode has been below the current one.
    calm_since_ns: Option<u64>,
    /// The bandwidth axis (a copy of it is what a step taken back
    /// restores).
    bw: BwAxis,
    tier_changed_ns: u64,
    settings: Settings,
    pending: Option<Decision>,
    counts: [u64; Reason::ALL.len()],
    decisions: u64,
    outages: u64,
    early_reports: u64,
    /// The worst receiver's loss level is in the dense band (see
    /// [`DENSE_ENTER`]).
    dense: bool,
    /// Dense loss and no burst: what makes the protection DRED now.
    dense_only: bool,
    /// RaptorQ would serve the lossy receivers, but another hears the
    /// stream unrepaired ([`Reason::RandomLossRoom`]).
    fec_withheld: bool,
    /// Codec2 would serve a receiver losing heavily, but another hears the
    /// stream unrepaired ([`Reason::HeavyLossRoom`]).
    heavy_withheld: bool,
    /// The worst receiver's loss level is in the RaptorQ band (see
    /// [`FEC_ENTER`]).
    fec_band: bool,
    /// The worst receiver's loss level is in the light RaptorQ band (see
    /// [`FEC_LIGHT_ENTER`]).
    fec_light_band: bool,
    /// The light band applies now: in it, and under the full band.
    fec_light_now: bool,
    /// The only lossy receivers lose in long runs: what makes a path with
    /// loss go without redundancy.
    long_runs: bool,
    /// The hold budget decisions are sized to ([`Controller::hold_budget_ms`]).
    budget_ms: u32,
    /// First-hop samples read, congested ones in a row, and the times they
    /// moved the tier ([`Controller::handle_path`]).
    path_samples: u64,
    path_congested_run: u8,
    /// What got through in the last congested sample, kbit/s.
    path_last_kbps: u16,
    /// The last first-hop sample's round-trip queue, ms, before any base
    /// is taken off (see [`Self::path_queue`]).
    path_last_raw_ms: f32,
    path_congestions: u64,
    /// When the current run of congested samples began.
    path_run_start_ns: u64,
    /// Congested runs the receivers' reports showed to be reordering.
    path_reordered: u64,
    path_unqueued: u64,
    /// The last congestion step down a report caused, until it is judged.
    step_check: Option<StepCheck>,
    /// When a step down was taken back ([`Reason::PathDelay`]).
    restored_ns: Option<u64>,
    /// A rate check waiting for its judging report.
    rate_check: Option<RateCheck>,
    /// A first-hop step on saturation alone, waiting for the sample that
    /// judges it.
    sat_check: Option<SatCheck>,
    /// The first hop's saturation was judged random loss: saturation alone
    /// moves nothing until no sample has read [`PATH_RANDOM_END`] or more
    /// for the hysteresis period (when; `None`: not judged random).
    path_random_until_ns: Option<u64>,
    /// When the last rate check was found random and its step taken back.
    rate_restored_ns: Option<u64>,
    /// Rate checks that found a rate limit.
    rate_limits: u64,
    /// A receiver's heavy loss was found random (its verdict stands).
    heavy_random: bool,
    /// The first hop's round trip taken as the path's (as a receiver's
    /// `queue_base_ms`, for its samples).
    path_queue_base_ms: f32,
}

fn profile(tier: usize) -> &'static Profile {
    // TIERS names only rows of the profile table (tested).
    Profile::by_name(TIERS[tier.min(TIERS.len() - 1)])
        .unwrap_or(&crate::codec::profile::PROFILES[0])
}

/// Wire rate of a tier as a receiver measures it (`recv_kbps`): payload,
/// per-packet overhead and RaptorQ repair, at the tier's own frame size.
pub fn wire_kbps(tier: &Profile, fec_ratio: u8) -> f32 {
    packet_wire_kbps(tier, tier.frame_ms, fec_ratio)
}

/// Wire rate of a tier sent in packets of `packet_ms` (for Codec2, several
/// frames per packet), as [`wire_kbps`].
pub fn packet_wire_kbps(tier: &Profile, packet_ms: u32, fec_ratio: u8) -> f32 {
    rate_wire_kbps(tier.bitrate, packet_ms, fec_ratio)
}

/// Wire rate of `bitrate` b/s in packets of `packet_ms` with `fec_ratio`
/// percent repair: payload, per-packet overhead, repair. Settings carry
/// their own bit rate (RaptorQ for random loss runs Opus under the tier's).
fn rate_wire_kbps(bitrate: u32, packet_ms: u32, fec_ratio: u8) -> f32 {
    let pps = 1000.0 / packet_ms.max(1) as f32;
    let payload = bitrate as f32 / 1000.0;
    let overhead = pps * (PACKET_OVERHEAD_BYTES * 8) as f32 / 1000.0;
    (payload + overhead) * (1.0 + f32::from(fec_ratio) / 100.0)
}

impl Controller {
    /// A controller for a call starting now at `cfg.top_tier`.
    pub fn new(cfg: ControllerConfig, now_ns: u64) -> Controller {
        let top = TIERS
            .iter()
            .position(|&t| t == cfg.top_tier)
            .unwrap_or(3)
            .min(LOWEST_OPUS);
        let mut c = Controller {
            cfg,
            top,
            started_ns: now_ns,
            receivers: [Receiver::default(); MAX_FEEDBACK_ENTRIES],
            mode: Mode::Clean,
            calm_since_ns: None,
            bw: BwAxis {
                tier: top,
                packet_ms: profile(top).frame_ms,
                ceiling_kbps: 0.0,
                last_congestion_ns: 0,
                stepped_down_ns: None,
                probe_wait_ns: cfg.probe_after_ns,
                probing: false,
            },
            tier_changed_ns: now_ns,
            settings: Settings::none(TIERS[top]),
            pending: None,
            counts: [0; Reason::ALL.len()],
            decisions: 0,
            outages: 0,
            early_reports: 0,
            dense: false,
            dense_only: false,
            fec_withheld: false,
            heavy_withheld: false,
            fec_band: false,
            fec_light_band: false,
            fec_light_now: false,
            long_runs: false,
            budget_ms: cfg.hold_budget_ms,
            path_samples: 0,
            path_congested_run: 0,
            path_last_kbps: 0,
            path_last_raw_ms: 0.0,
            path_congestions: 0,
            path_run_start_ns: 0,
            path_reordered: 0,
            path_unqueued: 0,
            step_check: None,
            restored_ns: None,
            rate_check: None,
            sat_check: None,
            path_random_until_ns: None,
            rate_restored_ns: None,
            rate_limits: 0,
            heavy_random: false,
            path_queue_base_ms: 0.0,
        };
        let p = profile(top);
        let startup = Settings {
            tier: p.name,
            bitrate: p.bitrate,
            frame_ms: p.frame_ms,
            dred_ms: p.dred_ms,
            loss_hint: p.expected_loss,
            lbrr: false,
            fec_ratio: 0,
            fec_block: 0,
            receiver_hold_frames: 0,
        };
        c.decide(startup, Reason::Startup, now_ns);
        c
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        self.settings
    }

    /// Decisions taken for `reason`.
    pub fn count(&self, reason: Reason) -> u64 {
        self.counts[reason.index()]
    }

    /// Reports read as an outage (see the module doc) and set aside.
    pub fn outages(&self) -> u64 {
        self.outages
    }

    /// Whether a report's losses, `lost` packets of which mostly (`one_run`)
    /// one run of `run`, are an outage: that run is longer than twice the
    /// packets the receiver can rebuild at the current packet size.
    fn is_outage(&self, one_run: bool, run: u32, budget_ms: u32) -> bool {
        one_run && run >= self.long_run_min(budget_ms)
    }

    /// Shortest run of lost packets longer than twice what a receiver with
    /// a hold budget of `budget_ms` can rebuild at the current packet size
    /// (its hold, and one more from the packet after the run).
    fn long_run_min(&self, budget_ms: u32) -> u32 {
        let packet_ms = self.settings.frame_ms.max(1);
        let reach = budget_ms / packet_ms + 1;
        2 * reach + 1
    }

    /// The hold budget of `reporter`: what its reports state, else the
    /// configured one.
    fn budget_of(&self, reporter: u32) -> u32 {
        self.receiver(reporter)
            .and_then(|r| r.budget_ms)
            .unwrap_or(self.cfg.hold_budget_ms)
    }

    /// Receiver `id`'s state, if it has reported (read-only; see
    /// [`Self::slot`] to take one).
    fn receiver(&self, id: u32) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.used && r.id == id)
    }

    /// Random loss would get RaptorQ, but another receiver hears the
    /// stream unrepaired, so it gets LBRR ([`Reason::RandomLossRoom`]).
    pub fn fec_withheld(&self) -> bool {
        self.fec_withheld
    }

    /// Heavy loss would get Codec2, but another receiver hears the stream
    /// unrepaired, so it gets Opus with DRED and the hold
    /// ([`Reason::HeavyLossRoom`]).
    pub fn heavy_withheld(&self) -> bool {
        self.heavy_withheld
    }

    /// The hold budget decisions are sized to, ms: the smallest among the
    /// receivers reporting lately (each is assumed to hold
    /// `hold_budget_ms` until its reports say otherwise).
    pub fn hold_budget_ms(&self) -> u32 {
        self.budget_ms
    }

    /// What receiver `reporter` says about itself in a report
    /// (`wzp_proto::feedback::ReceiverInfo`; `None`: its report says
    /// nothing, as an older build's). Read before the report's entry
    /// ([`Controller::handle_report`]), which decides with it: a receiver
    /// that holds nothing gets no redundancy that needs holding, one that
    /// holds more gets DRED's reach and RaptorQ blocks to match (up to
    /// 1 s, DRED's reach).
    pub fn handle_receiver_info(
        &mut self,
        reporter: u32,
        info: Option<wzp_proto::feedback::ReceiverInfo>,
        now_ns: u64,
    ) {
        let r = self.slot(reporter, now_ns);
        let reach = crate::jitter::DRED_REACH.as_millis() as u32;
        r.budget_ms = info.map(|i| u32::from(i.hold_budget_ms).min(reach));
        r.riding = info.is_some_and(|i| i.riding_repair);
    }

    /// Whether repair may ride in source packets (codec `0x41`,
    /// `wzp_proto::riding`): every receiver reporting lately says it takes
    /// it, and one does at least. A receiver of a build that does not know
    /// the codec would drop the source frames it rides in; one whose
    /// reports say nothing (an older build) keeps the repair in packets of
    /// its own for the whole stream, as does a room in which one such
    /// receiver reports.
    pub fn repair_may_ride(&self, now_ns: u64) -> bool {
        let mut any = false;
        for r in self
            .receivers
            .iter()
            .filter(|r| r.used && now_ns.saturating_sub(r.last_ns) <= self.cfg.report_fresh_ns)
        {
            if !r.riding {
                return false;
            }
            any = true;
        }
        any
    }

    /// Settled runs of `long_min` packets and more in `entry`, and the
    /// packets lost in them (at most `lost`): runs at their bin's lowest
    /// length, the longest as long as it is. A run still open when the
    /// report left (longer than every settled one) adds its packets so far
    /// but not a run: the next report settles it, and one run across a
    /// report boundary must not count as two.
    fn long_runs_of(entry: &FeedbackEntry, long_min: u32, lost: u32) -> (u32, u32) {
        let (mut runs, mut long) = (0u32, 0u32);
        for (b, &n) in entry.bursts.iter().enumerate() {
            if bin_lowest(b) >= long_min {
                runs += u32::from(n);
                long += u32::from(n) * bin_lowest(b);
            }
        }
        let max = u32::from(entry.max_burst);
        if max >= long_min {
            let b = burst_bin(max);
            let settled = entry.bursts[b..].iter().any(|&n| n > 0);
            if !settled {
                long += max;
            } else if bin_lowest(b) >= long_min {
                long += max - bin_lowest(b);
            } else {
                runs += 1;
                long += max;
            }
        }
        (runs, long.min(lost))
    }

    /// All decisions taken.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    fn decide(&mut self, settings: Settings, reason: Reason, now_ns: u64) {
        if settings == self.settings && self.decisions > 0 {
            return;
        }
        self.settings = settings;
        self.counts[reason.index()] += 1;
        self.decisions += 1;
        self.pending = Some(Decision {
            settings,
            reason,
            at_ns: now_ns,
        });
    }

    fn slot(&mut self, id: u32, now_ns: u64) -> &mut Receiver {
        let fresh = self.cfg.report_fresh_ns;
        let i = self
            .receivers
            .iter()
            .position(|r| r.used && r.id == id)
            .or_else(|| {
                self.receivers
                    .iter()
                    .position(|r| !r.used || now_ns.saturating_sub(r.last_ns) > 10 * fresh)
            })
            .unwrap_or_else(|| {
                // Full of fresh receivers: replace the stalest.
                let mut best = 0;
                for (i, r) in self.receivers.iter().enumerate() {
                    if r.last_ns < self.receivers[best].last_ns {
                        best = i;
                    }
                }
                best
            });
        let r = &mut self.receivers[i];
        if !(r.used && r.id == id) {
            *r = Receiver {
                id,
                used: true,
                last_ns: now_ns,
                ..Receiver::default()
            };
        }
        r
    }

    /// What media packets sent at `sent_kbps` (payload, header and tag)
    /// come to with the RaptorQ repair of the current settings: what a
    /// receiver's `recv_kbps` counts.
    pub fn with_repair(&self, sent_kbps: f32) -> f32 {
        sent_kbps * (1.0 + f32::from(self.settings.fec_ratio) / 100.0)
    }

    /// A feedback entry about this sender, from receiver `reporter`; its
    /// receive rate is compared with the tier's nominal wire rate (see
    /// [`Self::handle_report_sent`]).
    pub fn handle_report(&mut self, reporter: u32, entry: &FeedbackEntry, now_ns: u64) {
        self.handle_report_sent(reporter, entry, None, now_ns);
    }

    /// A feedback entry about this sender, from receiver `reporter`, with
    /// what this sender sent over the interval the entry describes
    /// (`sent_kbps`: kbit/s of media packets counted as the receiver counts
    /// them, payload, media header and tag, without repair; `None`: not
    /// known). A receive rate under 85 % of what was sent is short: against
    /// the tier's nominal rate instead, speech, whose variable rate runs up
    /// to a quarter under it in its quieter seconds, read as a short path
    /// nearly every second at 24 kb/s, and any queue as congestion.
    pub fn handle_report_sent(
        &mut self,
        reporter: u32,
        entry: &FeedbackEntry,
        sent_kbps: Option<f32>,
        now_ns: u64,
    ) {
        self.expire_rate_check(now_ns);
        let loss = entry.loss_fraction();
        let s = &self.settings;
        let send_kbps = match sent_kbps {
            Some(k) => self.with_repair(k),
            None => rate_wire_kbps(s.bitrate, s.frame_ms, s.fec_ratio),
        };
        // Reports carry whole kb/s: at Codec2's few kb/s a truncated rate
        // would read as short by itself.
        let short = entry.expected > 0 && f32::from(entry.recv_kbps) + 1.0 < 0.85 * send_kbps;
        let raw_queue_ms = f32::from(entry.queue_delay_100us) / 10.0;
        let (queue_ms, judging) = self.path_queue(
            Some(reporter),
            raw_queue_ms,
            (short, raw_queue_ms >= SATURATED_QUEUE_MS && loss >= 0.5),
            entry.expected > 0,
            now_ns,
        );
        let lost = u32::from(entry.expected.saturating_sub(entry.received));
        // Most of the lost packets in one run: an outage (when long) or a
        // burst, not spread-out loss.
        let one_run = lost > 0 && u32::from(entry.max_burst) * 2 >= lost;
        let budget = self.budget_of(reporter);
        let outage = self.is_outage(one_run, u32::from(entry.max_burst), budget);
        // An outage leaves the receive rate short and the queue draining:
        // not a sign of a path that cannot carry the tier.
        // Half the packets lost with a standing queue is a bottleneck too: a
        // token bucket with a short queue (a rate-limited link) drops most
        // of what it cannot carry and holds the rest only briefly, so the
        // queueing delay can stay under the threshold while the loss is far
        // beyond random. (Through `wzp-netem --rate 12`, whose queue holds
        // 100 ms, the reports read 82 and 52 ms of queue at 74 and 80 %
        // loss, then 20 and 17 ms as the sender stepped down.)
        // On a tier a rate check can judge (Opus with DRED), a short queue
        // with heavy loss is the rate check's, not a step that stands
        // unjudged: with few packets through, the least one-way delay of an
        // interval is read from a handful of them, and live at 80 % random
        // loss one report read 20 ms and took the call to Codec2 for the
        // rest of it. A rate limit with a short queue is found by the check
        // all the same (the loss falls with its step).
        let checkable = self.cfg.rate_check && {
            let p = profile(self.bw.tier);
            p.codec == Codec::Opus && p.bitrate >= DRED_MIN_BITRATE
        };
        let saturated = queue_ms >= SATURATED_QUEUE_MS
            && loss >= 0.5
            && !(checkable && queue_ms < self.cfg.congestion_queue_ms);
        // Loss that begins with a probe is the probe's: a link that drops
        // what exceeds its rate and queues little (a token bucket with a
        // short queue, a policer) shows no queue the rules above can see.
        // Under `wzp-netem --rate 12` a probe from 120 to 80 ms Codec2
        // packets lost 8-23 % with 0-26 ms of queue and sat there, its loss
        // taken as random. Loss of `PROBE_LOSS` or more within the probe's
        // hysteresis window, from a receiver that reported none for the
        // settle time before the probe began, fails it as congestion does.
        // A path already losing before the probe fails it on loss that
        // rose with it: `PROBE_LOSS` above twice the level before, in two
        // reports in a row (live, behind a 20 kb/s policer, a probe from 80
        // to 40 ms Codec2 packets took the loss from 8 % to 25-46 % and sat
        // there; a 10 % random path reads 25 % in one report of 30 at 25
        // packets a second, two in a row one in a thousand).
        let (clean_before, base) = self.receiver(reporter).map_or((false, 0.0), |r| {
            let clean = !r.saw_loss
                || r.loss_at_ns.saturating_add(self.cfg.clean_settle_ns) <= self.tier_changed_ns;
            (clean, r.probe_base_loss)
        });
        let rose = self.bw.probing && !clean_before && loss >= PROBE_LOSS + 2.0 * base;
        let run = {
            let r = self.slot(reporter, now_ns);
            r.probe_loss_run = if rose {
                r.probe_loss_run.saturating_add(1)
            } else {
                0
            };
            r.probe_loss_run
        };
        let probe_loss =
            self.bw.probing && loss >= PROBE_LOSS && (clean_before || rose && run >= 2);
        let congested = !outage
            && (saturated
                || probe_loss
                || queue_ms >= self.cfg.congestion_queue_ms && (loss >= 0.02 || short));
        let hysteresis = self.cfg.hysteresis_ns;
        let clean_settle = self.cfg.clean_settle_ns;
        let heavy_loss = self.cfg.heavy_loss;
        if outage {
            self.outages += 1;
        }
        let (long_runs, long) = Self::long_runs_of(entry, self.long_run_min(budget), lost);
        let r = self.slot(reporter, now_ns);
        r.last_ns = now_ns;
        if congested || outage || sent_kbps.is_none() {
            r.regular_n = 0;
        }
        if entry.expected > 0 {
            r.last_loss = loss;
            r.clean_packets = if lost == 0 {
                r.clean_packets.saturating_add(u32::from(entry.expected))
            } else {
                0
            };
            r.last_raw_queue_ms = raw_queue_ms;
        }
        if !congested && entry.expected > 0 {
            // Outages count here: they are what makes a path's loss long.
            r.count_runs(lost, long_runs, long);
            // The loss outside long runs, and its part in runs of 3+.
            let short = lost - long;
            let in_runs_1_2 = u32::from(entry.bursts[0]) + 2 * u32::from(entry.bursts[1]);
            r.count_bursts(short, short.saturating_sub(in_runs_1_2));
        }
        if !congested && !outage && entry.expected > 0 {
            r.loss = if loss >= r.loss {
                loss
            } else {
                0.7 * r.loss + 0.3 * loss
            };
            // Loss beginning on a clean path restarts the level: averaged
            // with the clean reports before, a 30 % path took six reports
            // to read 26 % (live, 11 s on LBRR). The first report counts
            // no higher than the dense band's lower edge: one lossy second
            // must not put a 20 % path in the band, which it would then
            // leave only under 20 %; and loss that began late in its
            // interval reads low in it, which the mean of the next ones
            // makes up for. Heavy loss (`heavy_loss`, not in one run) is
            // dense from its first report: no 20 % path reads 60 % over a
            // second, and at 70-80 % random loss both ways most reports
            // are lost with the media, so the next one came 9 s later live,
            // all of it on LBRR, which rebuilds little at that density.
            let onset = loss >= 0.01 && !r.lossy_within(now_ns, clean_settle);
            if onset {
                r.level_reports = 0;
            }
            r.level = if r.level_reports == 0 {
                if loss >= heavy_loss && !one_run {
                    loss
                } else {
                    loss.min(DENSE_LEAVE)
                }
            } else if r.level_reports < LEVEL_REPORTS {
                let n = f32::from(r.level_reports);
                (r.level * n + loss) / (n + 1.0)
            } else {
                0.75 * r.level + 0.25 * loss
            };
            r.level_reports = r.level_reports.saturating_add(1);
            if loss >= 0.01 {
                r.loss_at_ns = now_ns;
                r.saw_loss = true;
                r.loss_level = r.level;
            }
            // A histogram with most lost packets in runs of 3+ is bursty
            // even when the longest run of this interval was short.
            let lost_in_runs: u32 = entry.bursts[2..BURST_BINS]
                .iter()
                .zip([3u32, 5, 9, 17])
                .map(|(&n, len)| u32::from(n) * len)
                .sum();
            // Independent loss makes runs too: at 20 % a run of 3 turns up in
            // about one report in three, two in one in twenty-five. So runs
            // count as bursts only beyond what independent loss at this rate
            // makes: the histogram when it holds clearly more runs of 3+
            // than the `lost * (1 - p) * p^2` expected, the longest run when
            // runs that long are expected less than `CHANCE_RUN` times
            // (`lost * (1 - p) * p^(len-1)`, p the higher of this interval's
            // loss and the smoothed one: an interval that lost less than the
            // path does makes its long run look rarer than it is).
            let runs_3: u32 = entry.bursts[2..BURST_BINS]
                .iter()
                .map(|&n| u32::from(n))
                .sum();
            let expected_runs_3 = lost as f32 * (1.0 - loss) * loss * loss;
            // Not on a path whose reports, pooled, read random
            // ([`BURSTY_MIN_REPORTS`] lossy reports at least, under
            // [`BURSTY_LEAVE`] of the loss in runs of 3+): there one report
            // clustering runs is chance, as two rare runs are (below), and
            // bursts that begin show in the pooled share within a few
            // reports. Live, random 30 % under RaptorQ: a report counting
            // four runs of 3 where 13 were lost, on a path whose pooled
            // share read 28 %, put three calls in six on DRED with the
            // hold for 10 s (docs/QUALITY.md finding 42).
            let pooled_random = r.pooled_enough() && r.burst_share() < BURSTY_LEAVE;
            let bursty = lost > 0
                && !pooled_random
                && lost_in_runs * 2 >= lost
                && runs_3 as f32 > 4.0 * expected_runs_3 + 1.0;
            // Otherwise random loss would get DRED (tuned for bursts) instead
            // of LBRR, which rebuilds isolated losses far better
            // (docs/QUALITY.md, the adaptive loopback finding).
            // Heavy loss that is mostly one run is an outage, not a path
            // too lossy for Opus.
            r.heavy_run = if loss >= heavy_loss && !one_run {
                r.heavy_run.saturating_add(1)
            } else {
                0
            };
            // With what was sent known (a sender's own count, as in a
            // call), loss too regular for independent loss is a rate
            // check's to judge ([`Receiver::regular_loss`]).
            if sent_kbps.is_some() {
                r.count_regular(loss, lost, entry);
            }
            // A verdict lasts the heavy loss it was about: a rate limit's
            // until a report is not heavy, random loss's until one reads
            // under half of `heavy_loss` (a 60 % random path reads under
            // 60 % in one report of three; re-checking would put it on the
            // checking step each time).
            let over = match r.heavy_verdict {
                HeavyVerdict::RateLimit => r.heavy_run == 0,
                HeavyVerdict::Random => loss < 0.5 * heavy_loss,
                HeavyVerdict::Unknown | HeavyVerdict::Pending => false,
            };
            if over {
                r.heavy_verdict = HeavyVerdict::Unknown;
            }
            let mut burst = u32::from(entry.max_burst);
            let p = loss.max(r.loss).min(0.99);
            let runs_that_long =
                lost as f32 * (1.0 - p) * p.powi(burst.saturating_sub(1).min(64) as i32);
            // A run rare by chance (under 2 % of reports: a run of 5 on a
            // 20 % path) counts when the report before had one too (both by
            // chance: 0.04 %). At 5 % a run of 4 on an 18 % path was rare,
            // and two such reports within 2.5 s came in about one call in
            // four: live, a random 20 % call then spent seconds on DRED
            // without LBRR (1.71 against 2.18 without).
            let rare = burst >= 3 && runs_that_long < RARE_RUN;
            // Not on a path whose reports, pooled, read random (as above):
            // there two rare runs are chance too. Live, the random 20 %
            // trace's two runs of 6, 2.6 s apart at RaptorQ's two packets a
            // frame, came in reports 2 s apart in one run of four and put
            // the call on DRED for 10 s (+0.06 PESQ-WB over the anchor
            // against +0.44 to +0.67 in the others; docs/QUALITY.md
            // finding 37).
            let again = rare
                && !pooled_random
                && r.rare_run_at_ns
                    .is_some_and(|t| now_ns.saturating_sub(t) <= 2_500 * MS);
            // A run still open when the report left (`max_burst` beyond
            // every run the histogram settled) comes again, settled, in
            // the next report: one run is not two rare reports. Live, a run
            // of 6 on a 20 % path crossed a report boundary and put the
            // call on DRED for 10 s.
            let open = entry
                .bursts
                .iter()
                .rposition(|&n| n > 0)
                .is_none_or(|b| burst_bin(burst) > b);
            if rare && !open {
                r.rare_run_at_ns = Some(now_ns);
            }
            if burst >= 3 && !bursty && !r.bursty && runs_that_long >= CHANCE_RUN && !again {
                burst = 2;
            }
            // A shorter burst takes over from the longest once that is half
            // the period old, and before that renews its memory: bursts that
            // go on keep the memory going (otherwise a path's longest run
            // lapsed the period after it came, however many bursts followed,
            // and the call left DRED for a report: two moves of the
            // receiver's hold; with outage reports renewing it too, below,
            // a run of 6 four seconds after one renewed nothing on 160 ms
            // bursts, and the memory lapsed).
            //
            // A run of 3+ in a report with no loss of its own ended in this
            // interval, its packets counted lost in the report before (and
            // judged there, open): it neither ends nor renews the memory. A
            // clean report had cleared it (a run of 14 settling in a clean
            // second put 160 ms bursts on LBRR for two seconds).
            let age = now_ns.saturating_sub(r.burst_at_ns);
            if burst < 3 || loss >= 0.01 {
                if burst >= r.burst || age > hysteresis || (burst >= 3 && age >= hysteresis / 2) {
                    r.burst = if loss >= 0.01 { burst } else { 0 };
                    r.burst_at_ns = now_ns;
                } else if burst >= 3 {
                    r.burst_at_ns = now_ns;
                }
            }
            if bursty {
                r.burst = r.burst.max(3);
                r.burst_at_ns = now_ns;
            }
        } else if congested && loss >= 0.01 && r.lossy_within(now_ns, clean_settle) {
            // Loss in a congested report is the queue's and not counted;
            // but a path that was lossy before it read a queue still is:
            // its protection must not lapse while the reports read
            // congestion (a route that got longer reads so for 10-20 s, and
            // a 12 % path went to no redundancy at all after the settle
            // time).
            r.loss_at_ns = now_ns;
        } else if outage && !congested && r.bursts_within(now_ns, hysteresis) {
            // A long run on a path whose bursts are remembered is one more
            // of them: it keeps the memory going. Its report reads as an
            // outage and is judged for no shape, so on 160 ms bursts, where
            // many reports hold one run of 8-14, the memory lapsed between
            // them and the call left DRED for LBRR (`loss_eased` at a report
            // losing 34 % in a run of 13) to come back a report later: two
            // moves of the receiver's hold and a second without DRED on a
            // bursty path (docs/QUALITY.md finding 45).
            r.burst_at_ns = now_ns;
        }
        let rate_judged = self.judge_rate_check(
            reporter,
            (
                u32::from(entry.expected),
                u32::from(entry.expected.saturating_sub(entry.received)),
            ),
            now_ns,
        );
        if congested && !judging {
            self.on_congestion(
                f32::from(entry.recv_kbps),
                // A failed probe's step is not one the route rule judges:
                // it had no queue to drain.
                (Some(reporter), raw_queue_ms, saturated || probe_loss),
                now_ns,
            );
        } else if !congested && !outage && !rate_judged && entry.expected > 0 {
            self.start_rate_check(reporter, loss, f32::from(entry.recv_kbps), now_ns);
        }
        self.evaluate(now_ns);
    }

    /// Heavy loss from `reporter` with no queue, not judged yet: a step
    /// down to what got through ([`Reason::RateCheck`]), judged by the
    /// reporter's first report after the settle time
    /// ([`Self::judge_rate_check`]). A rate limit that drops what it cannot
    /// carry and queues little (a policer) shows no queue the congestion
    /// rules see; random loss does not fall with the rate. Not in a room
    /// where another receiver hears the stream clean (it keeps Opus there
    /// anyway, [`Reason::HeavyLossRoom`]); on a tier with no DRED (Codec2,
    /// or Opus under [`DRED_MIN_BITRATE`]) the loss is taken as a rate
    /// limit's: Codec2 with RaptorQ, as before.
    fn start_rate_check(&mut self, reporter: u32, loss: f32, recv_kbps: f32, now_ns: u64) {
        // Not while the first hop's samples judge a step of theirs: the
        // tier it took may have no DRED, and heavy loss there would be
        // taken as a rate limit's before the samples have said.
        if !self.cfg.rate_check || self.rate_check.is_some() || self.sat_checking(now_ns) {
            return;
        }
        // Heavy loss, or loss under it too regular to be independent (a
        // policer: live behind a 24 kbit/s one the call lost 46-60 % for
        // good on dense-loss DRED, its loss under the heavy level in every
        // other report).
        let (unjudged, regular_only) = self.receiver(reporter).map_or((false, false), |r| {
            let heavy = r.heavy_run >= HEAVY_REPORTS;
            let regular = r.regular_loss();
            (
                (heavy || regular) && r.heavy_verdict == HeavyVerdict::Unknown,
                regular && !heavy,
            )
        });
        if !unjudged || self.worst(now_ns).plain_listener {
            return;
        }
        let current = (self.bw.tier, self.bw.packet_ms);
        let p = profile(self.bw.tier);
        if regular_only {
            // Its tally is spent on this check, or on none.
            self.slot(reporter, now_ns).regular_n = 0;
        }
        if regular_only && (p.codec != Codec::Opus || p.bitrate < DRED_MIN_BITRATE) {
            // Under heavy loss, on a tier a rate check cannot judge, the
            // loss is what the loss rules make of it.
            return;
        }
        if p.codec != Codec::Opus || p.bitrate < DRED_MIN_BITRATE {
            // No DRED to keep: Codec2 with RaptorQ is the protection there
            // is (and a tier this low has little rate left to tell by).
            self.slot(reporter, now_ns).heavy_verdict = HeavyVerdict::RateLimit;
            return;
        }
        let before = self.bw;
        // Not judged by the route rule (no queue to drain: `saturated`).
        self.step_down(
            recv_kbps,
            RATE_CHECK_SHARE,
            (Some(reporter), 0.0, true),
            now_ns,
        );
        if (self.bw.tier, self.bw.packet_ms) != current {
            self.slot(reporter, now_ns).heavy_verdict = HeavyVerdict::Pending;
            self.rate_check = Some(RateCheck {
                reporter,
                trial: LossTrial::new(now_ns, before, loss),
                by_path: LossTrial::new(now_ns, before, loss),
            });
        }
    }

    /// Drops a rate check whose reporter went quiet for
    /// [`RATE_CHECK_MAX_NS`] (its reports lost, or it left): its step is
    /// taken back (in force with the next fresh report; nothing is decided
    /// blind), and the reporter's loss is judged random if the packets its
    /// reports did count lost as much as before, else unjudged again.
    fn expire_rate_check(&mut self, now_ns: u64) {
        let Some(RateCheck {
            reporter, trial: t, ..
        }) = self.rate_check
        else {
            return;
        };
        if now_ns.saturating_sub(t.at_ns) <= RATE_CHECK_MAX_NS {
            return;
        }
        self.rate_check = None;
        if self.tier_changed_ns == t.at_ns {
            self.bw = t.before;
            self.tier_changed_ns = now_ns;
            self.rate_restored_ns = Some(now_ns);
        }
        // Too few packets to say it was a rate limit; enough that did not
        // fall to say the loss is random (its reports were lost with the
        // media: at 80 % both ways one in five gets back).
        let verdict = if t.counted > 0 && t.stayed() {
            HeavyVerdict::Random
        } else {
            HeavyVerdict::Unknown
        };
        if let Some(r) = self
            .receivers
            .iter_mut()
            .find(|r| r.used && r.id == reporter && r.heavy_verdict == HeavyVerdict::Pending)
        {
            r.heavy_verdict = verdict;
        }
    }

    /// Judges a rate check by a report from its reporter after the settle
    /// time (the reports before describe intervals that began on the tier
    /// before): loss under half of what caused the step was a rate limit
    /// (the step stands, as for congestion); loss that stayed is random
    /// (the step is taken back, [`Reason::HeavyRandom`]). A check whose
    /// step another moved on is dropped (the next heavy report checks
    /// again). Returns whether this report judged one.
    fn judge_rate_check(
        &mut self,
        reporter: u32,
        (expected, lost): (u32, u32),
        now_ns: u64,
    ) -> bool {
        let Some(mut c) = self.rate_check.filter(|c| c.reporter == reporter) else {
            return false;
        };
        let verdict = if self.tier_changed_ns != c.trial.at_ns {
            HeavyVerdict::Unknown
        } else if expected == 0 || now_ns.saturating_sub(c.trial.at_ns) < STEP_SETTLE_NS {
            return false;
        } else {
            if !c.trial.pool(expected, lost) {
                self.rate_check = Some(c);
                return false;
            }
            self.rate_verdict(&c.trial, now_ns)
        };
        self.rate_check = None;
        self.slot(reporter, now_ns).heavy_verdict = verdict;
        verdict != HeavyVerdict::Unknown
    }

    /// The verdict of a rate check on the packets its reports counted:
    /// loss under half of what caused the step is a rate limit's (the
    /// step stands); loss that stayed is random (the step is taken back).
    fn rate_verdict(&mut self, t: &LossTrial, now_ns: u64) -> HeavyVerdict {
        if !t.stayed() {
            self.rate_limits += 1;
            HeavyVerdict::RateLimit
        } else {
            if self.tier_changed_ns == t.at_ns {
                self.bw = t.before;
                self.tier_changed_ns = now_ns;
                self.rate_restored_ns = Some(now_ns);
            }
            HeavyVerdict::Random
        }
    }

    /// Rate checks that found a rate limit ([`ControllerConfig::rate_check`]).
    pub fn rate_limits(&self) -> u64 {
        self.rate_limits
    }

    /// The queueing delay (ms) of a report from `reporter` that read
    /// `raw_ms`, with what is the path's own delay taken off.
    ///
    /// A report from after the settle time of a congestion step down that
    /// one of this receiver's reports caused judges the step: a queue this
    /// stream built drains once the tier fits the path (the step went to a
    /// tier that fits 90 % of what got through), so a report that reads the
    /// same queue (within [`UNDRAINED_MS`] or [`UNDRAINED_SHARE`] of it),
    /// not saturated (half the packets lost) and with the receive rate
    /// whole (`short`: under 85 % of what was sent; two such readings are
    /// waited past, [`JUDGE_WAITS`], with no further step meanwhile; the
    /// second value returned says so) shows a delay the path took on,
    /// not a queue: a route that got longer, which the reports' floor takes
    /// 10-20 s to catch up with. With loss on such a path every report read
    /// as congestion, and a call on a 10 % lossy path went down the ladder
    /// to Codec2 1200 in 120 ms packets and stayed there for minutes, with
    /// no protection against the loss. The step is taken back
    /// ([`Reason::PathDelay`]) and the delay becomes the receiver's base,
    /// taken off its reports and falling with their readings. Once per
    /// base: a step down on top of a base stands. Steps that are not judged
    /// (see `on_congestion`): one a saturated report caused, one to a step
    /// that does not fit what got through either (nothing lower fits).
    ///
    /// The first hop's samples (`reporter` `None`, [`Self::handle_path`])
    /// judge the steps they cause the same way, by the first sample after
    /// [`PATH_SETTLE_NS`], and only with the reports agreeing
    /// ([`Self::reports_undrained`]): their queue is the round trip above
    /// the connection's least ever ([`super::path::PathMeter`]), so a route
    /// that got longer on the first hop read as a queue for the rest of
    /// the call, and with 10 % loss as a congested first hop every settle
    /// time; the base taken then stays as long as the route does. (A floor
    /// of the last 10-20 s instead, as the reports have, was tried and not
    /// kept: it would hide a queue that stands that long, which in the
    /// deadlock the samples are for, reports lost in a full link, is this
    /// side's own; the base covers a longer route without it.)
    fn path_queue(
        &mut self,
        reporter: Option<u32>,
        raw_ms: f32,
        (short, saturated): (bool, bool),
        expected: bool,
        now_ns: u64,
    ) -> (f32, bool) {
        let settle = if reporter.is_some() {
            STEP_SETTLE_NS
        } else {
            PATH_SETTLE_NS
        };
        if !self.judging_step(now_ns) {
            // Too old to say what the step did, or the tier moved since:
            // the step stands.
            self.step_check = None;
        }
        let check = self
            .step_check
            .filter(|c| c.reporter == reporter && now_ns.saturating_sub(c.at_ns) >= settle);
        let base = self.queue_base(reporter, now_ns);
        *base = base.min(raw_ms);
        let base = *base;
        if let Some(c) = check.filter(|_| expected) {
            self.step_check = None;
            let same =
                !saturated && base <= 0.0 && (raw_ms - c.queue_ms).abs() <= undrained(c.queue_ms);
            let undo = if !same {
                false
            } else if reporter.is_none() {
                match self.reports_undrained(&c, now_ns) {
                    Some(undo) => undo,
                    None => {
                        // No report from after the step yet: the next
                        // sample asks again; no further step till then.
                        self.step_check = Some(c);
                        return ((raw_ms - base).max(0.0), true);
                    }
                }
            } else if short && c.waits < JUDGE_WAITS {
                // Short of what was sent: held back on the way, or random
                // loss that came out heavier this interval (at 15 % loss
                // one interval in five reads under 85 %). The next reading
                // decides; no further step till then.
                self.step_check = Some(StepCheck {
                    waits: c.waits + 1,
                    ..c
                });
                return ((raw_ms - base).max(0.0), true);
            } else {
                !short
            };
            if undo {
                *self.queue_base(reporter, now_ns) = raw_ms;
                if reporter.is_none() {
                    // The reports that agreed read the route too: what they
                    // read since the step is their base. Without this a
                    // report read the route the first hop's step was taken
                    // back for as a queue half a second later and stepped
                    // down on it (live on a 10 % path: 60 ms of queue at 4 %
                    // loss, then down the ladder to Codec2 1200).
                    let (since, fresh) = (c.at_ns + REPORT_INTERVAL_NS, self.cfg.report_fresh_ns);
                    for r in self.receivers.iter_mut().filter(|r| {
                        r.used && r.last_ns >= since && now_ns.saturating_sub(r.last_ns) <= fresh
                    }) {
                        r.queue_base_ms = r.queue_base_ms.max(r.last_raw_queue_ms);
                    }
                }
                if reporter.is_some() {
                    // A route that got longer is the first hop's too: its
                    // round trip rose with it. Without this the samples
                    // stepped down on it whenever two in a row first read
                    // 10 % lost (live on a 10 % path: at once in most
                    // calls, 18 s later in some), and a step taken just
                    // before the route shortened again stood.
                    self.path_queue_base_ms = self.path_queue_base_ms.max(self.path_last_raw_ms);
                }
                self.bw = c.before;
                self.tier_changed_ns = now_ns;
                self.restored_ns = Some(now_ns);
                return (0.0, false);
            }
        }
        ((raw_ms - base).max(0.0), false)
    }

    /// Whether a step down is waiting for the reading that judges it
    /// ([`Self::path_queue`]; one too old, or with the tier moved since,
    /// is not judged).
    fn judging_step(&self, now_ns: u64) -> bool {
        self.step_check.is_some_and(|c| {
            now_ns.saturating_sub(c.at_ns) <= STEP_JUDGE_MAX_NS && self.tier_changed_ns == c.at_ns
        })
    }

    /// Whether a rate check's step waits for its judging report (at most
    /// [`STEP_JUDGE_MAX_NS`] as a reason to hold other steps back).
    fn rate_checking(&self, now_ns: u64) -> bool {
        self.rate_check
            .is_some_and(|c| c.trial.waiting(self.tier_changed_ns, now_ns))
    }

    /// For a step down the first hop's samples caused, whose round trip did
    /// not come down: whether the receivers' reports say this stream's own
    /// queue did not either (`None`: no report from after the step yet,
    /// within [`PATH_JUDGE_NS`]). The first hop's round trip holds the way
    /// back too, full of the other members' media under a symmetric cap,
    /// which this side's step does not drain; the reports see this
    /// stream's way alone. The step is taken back only when the highest
    /// queue fresh reports read, from reports whose interval began after
    /// the step, is not lower than it was at the step (reports that saw
    /// none then and none now: the round trip's queue is not on this
    /// stream's way, and a step of this stream does not drain it). With no
    /// report fresh at the step (lost in a full link: what the first hop's
    /// samples are for), or none after it in time, the step stands.
    fn reports_undrained(&self, c: &StepCheck, now_ns: u64) -> Option<bool> {
        let Some(before) = c.reports_queue_ms else {
            return Some(false);
        };
        match self.reports_queue(c.at_ns + REPORT_INTERVAL_NS, now_ns) {
            Some(after) => Some(after >= before - undrained(before)),
            None if now_ns.saturating_sub(c.at_ns) < PATH_JUDGE_NS => None,
            None => Some(false),
        }
    }

    /// The highest queue the fresh receivers' last reports read, ms, before
    /// any base is taken off, of reports that came at `since_ns` or later
    /// (`None`: no such report).
    fn reports_queue(&self, since_ns: u64, now_ns: u64) -> Option<f32> {
        self.receivers
            .iter()
            .filter(|r| {
                r.used
                    && r.last_ns >= since_ns
                    && now_ns.saturating_sub(r.last_ns) <= self.cfg.report_fresh_ns
            })
            .map(|r| r.last_raw_queue_ms)
            .reduce(f32::max)
    }

    /// Where the part of `reporter`'s queue taken as the path's delay is
    /// kept (`None`: the first hop's).
    fn queue_base(&mut self, reporter: Option<u32>, now_ns: u64) -> &mut f32 {
        match reporter {
            Some(id) => &mut self.slot(id, now_ns).queue_base_ms,
            None => &mut self.path_queue_base_ms,
        }
    }

    /// The part of `reporter`'s reported queue taken as the path's delay
    /// (see [`Self::path_queue`]).
    fn queue_base_of(&self, reporter: u32) -> f32 {
        self.receiver(reporter).map_or(0.0, |r| r.queue_base_ms)
    }

    /// An early report from `reporter` ([`FEEDBACK_FLAG_EARLY`]: loss
    /// began on a path that had shown none; the entry counts the interval
    /// so far). It says only that loss began: the path counts as lossy from
    /// now, so a clean path gets LBRR at once, sized to the loss seen (at
    /// most [`EARLY_LOSS_CAP`]: a short window's fraction is a poor
    /// estimate). The shape of the loss (bursts, density, heavy loss)
    /// waits for the interval's own report, which counts these packets
    /// again. Ignored with a standing queue (loss with congestion is not
    /// protected against) and for an outage (a run longer than the
    /// receiver can rebuild, as in [`Controller::handle_report`]: on the
    /// live bench's outage trace, LBRR turned on by each outage's early
    /// report cost 0.38 PESQ-WB).
    ///
    /// [`FEEDBACK_FLAG_EARLY`]: wzp_proto::feedback::FEEDBACK_FLAG_EARLY
    pub fn handle_early_report(&mut self, reporter: u32, entry: &FeedbackEntry, now_ns: u64) {
        let loss = entry.loss_fraction();
        let queue_ms =
            (f32::from(entry.queue_delay_100us) / 10.0 - self.queue_base_of(reporter)).max(0.0);
        let lost = u32::from(entry.expected.saturating_sub(entry.received));
        let one_run = lost > 0 && u32::from(entry.max_burst) * 2 >= lost;
        if loss <= 0.0
            || queue_ms >= self.cfg.congestion_queue_ms
            || self.is_outage(
                one_run,
                u32::from(entry.max_burst),
                self.budget_of(reporter),
            )
        {
            return;
        }
        self.early_reports += 1;
        let clean_settle = self.cfg.clean_settle_ns;
        let r = self.slot(reporter, now_ns);
        r.last_ns = now_ns;
        if !r.lossy_within(now_ns, clean_settle) {
            // Loss begins: the interval's report restarts the level.
            r.level_reports = 0;
        }
        r.loss = r.loss.max(loss.min(EARLY_LOSS_CAP));
        r.loss_at_ns = now_ns;
        r.saw_loss = true;
        self.evaluate(now_ns);
    }

    /// A sample of this sender's own first hop, from its transport
    /// ([`super::path`]): acted on only as congestion. Loss there without a
    /// queue is left to the receivers' reports, which see it end to end
    /// with its shape. Congestion is a queue grown on the round trip
    /// ([`PATH_QUEUE_MS`], with at least [`PATH_LOSS`] of the packets lost;
    /// or half lost with `SATURATED_QUEUE_MS`, 10 ms) in two samples in a row,
    /// not within [`PATH_SETTLE_NS`] of a tier change (the queue the old
    /// tier left is still draining). It moves the tier down as a congested
    /// report does, to what got through. Reports alone can deadlock: a
    /// link full one way is usually full both ways, and the reports that
    /// would move each side down are lost with the media. With no fresh
    /// report the step is taken all the same (the tier that fits, no
    /// redundancy); nothing else is decided without reports. Reports that
    /// came during the run and saw the media through overrule it: that
    /// "loss" was reordering ([`Controller::path_reordered`]).
    pub fn handle_path(&mut self, sample: &PathSample, now_ns: u64) {
        if self.judge_sat_check(sample, now_ns) || self.judge_rate_check_by_path(sample, now_ns) {
            return;
        }
        if sample.sent < PATH_MIN_PACKETS {
            return;
        }
        let loss = sample.loss_fraction();
        let raw_queue_ms = f32::from(sample.queue_ms);
        self.path_last_raw_ms = raw_queue_ms;
        let saturated = raw_queue_ms >= SATURATED_QUEUE_MS && loss >= 0.5;
        let (queue_ms, judging) =
            self.path_queue(None, raw_queue_ms, (false, saturated), true, now_ns);
        // One sample under it says little: QUIC declares losses late, and
        // live at 70 % random loss samples read 0-36 % now and then.
        if loss >= PATH_RANDOM_END {
            if let Some(until) = self.path_random_until_ns.as_mut() {
                *until = now_ns + self.cfg.hysteresis_ns;
            }
        }
        let path_random = self.path_random_until_ns.is_some_and(|t| now_ns < t);
        // Nothing through at all is a blackout of the first hop (a long
        // loss run), not a bottleneck, which delivers at its rate; its round
        // trip reads as a queue (the RTT samples of a blackout come late).
        // Live, a run of 32 lost packets on a 160 ms burst path took a call
        // to Codec2 1200 this way. It ends a congested run.
        let congested = sample.delivered_kbps > 0
            && ((queue_ms >= PATH_QUEUE_MS && loss >= PATH_LOSS)
                || (queue_ms >= SATURATED_QUEUE_MS && loss >= 0.5));
        self.path_samples += 1;
        if !congested {
            self.path_congested_run = 0;
            self.path_last_kbps = 0;
            return;
        }
        if self.path_congested_run == 0 {
            self.path_run_start_ns = now_ns;
        }
        self.path_congested_run = self.path_congested_run.saturating_add(1);
        // What got through, the higher of the two samples: losses are
        // declared a little after the packets left, so one half-second can
        // count the bigger packets of the tier before against the sent
        // bytes of this one (and read near zero).
        let delivered = sample.delivered_kbps.max(self.path_last_kbps);
        self.path_last_kbps = sample.delivered_kbps;
        if self.path_congested_run >= 2
            && !judging
            && now_ns.saturating_sub(self.tier_changed_ns) >= PATH_SETTLE_NS
        {
            self.path_congested_run = 0;
            // From a report interval before the run's first sample: two
            // samples span half a second, reports come each second.
            let since = self.path_run_start_ns.saturating_sub(PATH_REPORT_SPAN_NS);
            if self.reports_deny_path_loss(since, now_ns) {
                self.path_reordered += 1;
                return;
            }
            // Saturation alone (half lost, a queue under `PATH_QUEUE_MS`)
            // that the reports saw no queue for is random loss, not a
            // bottleneck: a queue on this stream's way shows in their
            // one-way delay too. Heavy random loss both ways reads as
            // saturation on the first hop: the acknowledgements are lost
            // too, so the round trips that get through come late (live at
            // 60-80 % random loss: 52-65 % lost with 13-18 ms of "queue",
            // which took the call to Codec2; docs/QUALITY.md finding 32).
            // The reports' own rules (the rate check) judge heavy loss with
            // no queue.
            // Reports are single datagrams a second: at 60-80 % loss most
            // are lost, so often none came during the run. A step on
            // saturation alone is judged by the samples' loss then, as a
            // rate check is (`judge_sat_check`), and once judged random,
            // saturation alone moves nothing while the heavy loss lasts.
            let only_saturated = !(queue_ms >= PATH_QUEUE_MS && loss >= PATH_LOSS);
            if only_saturated && (path_random || self.reports_deny_queue(since, now_ns)) {
                self.path_unqueued += 1;
                return;
            }
            let before = (self.bw.tier, self.bw.packet_ms);
            let axis = self.bw;
            let in_force = self.settings;
            self.on_congestion(
                f32::from(delivered),
                (None, raw_queue_ms, saturated),
                now_ns,
            );
            if (self.bw.tier, self.bw.packet_ms) != before {
                self.path_congestions += 1;
                if only_saturated {
                    self.sat_check = Some(SatCheck {
                        trial: LossTrial::new(now_ns, axis, loss),
                        settings: in_force,
                    });
                }
            }
            let any_report = self.worst(now_ns).any;
            if any_report {
                self.evaluate(now_ns);
            } else {
                // No report gets back (they are lost in the full link): the
                // tier that fits, with no redundancy (it would only add to
                // the queue); the reports, once they come, decide the rest.
                let s = self.unprotected(self.bw.tier);
                self.decide(s, Reason::Congestion, now_ns);
            }
        }
    }

    /// Whether the receivers' reports that came since `since_ns` (and are
    /// fresh), at least one, all show the media through: each lost under half
    /// [`PATH_LOSS`] of it by sequence. The first hop's "loss" is then
    /// reordering, not a bottleneck: QUIC declares a packet lost once
    /// packets sent after it are acknowledged, and under jitter that
    /// overtakes (80 +- 30 ms per datagram, `benches/soak`) it declared
    /// enough to read as congestion with the round trip's spread as its
    /// queue, and sent the call to Codec2 1200, while the receivers, which
    /// wait a reorder window before counting a packet lost, lost none. A
    /// bottleneck drops the media itself, which every receiver sees. With
    /// no report in that time (lost in a full link) the samples decide.
    fn reports_deny_path_loss(&self, since_ns: u64, now_ns: u64) -> bool {
        let mut any = false;
        for r in self.receivers.iter().filter(|r| r.used) {
            if r.last_ns < since_ns || now_ns.saturating_sub(r.last_ns) > self.cfg.report_fresh_ns {
                continue;
            }
            if r.last_loss >= PATH_LOSS / 2.0 {
                return false;
            }
            any = true;
        }
        any
    }

    /// Judges a first-hop step taken on saturation alone by the samples
    /// from [`PATH_SETTLE_NS`] after it, over [`RATE_JUDGE_PACKETS`] at
    /// least: loss under half of what caused it was a rate limit (the step
    /// stands); loss that stayed is random (the step is taken back, and
    /// saturation alone moves nothing until the loss eases,
    /// [`PATH_RANDOM_END`]). A check whose step another moved on is
    /// dropped. Returns whether it took the step back.
    fn judge_sat_check(&mut self, sample: &PathSample, now_ns: u64) -> bool {
        let Some(mut c) = self.sat_check else {
            return false;
        };
        let t = &mut c.trial;
        if self.tier_changed_ns != t.at_ns {
            self.sat_check = None;
            return false;
        }
        if now_ns.saturating_sub(t.at_ns) < PATH_SETTLE_NS {
            return false;
        }
        if !t.pool(u32::from(sample.sent), u32::from(sample.lost)) {
            self.sat_check = Some(c);
            return false;
        }
        self.sat_check = None;
        let t = c.trial;
        // Reports from after the step that read a queue say the stream
        // met a bottleneck: the step stands (theirs to judge).
        let queued = self.reports_queue(t.at_ns, now_ns).is_some()
            && !self.reports_deny_queue(t.at_ns, now_ns);
        if queued || !t.stayed() {
            return false;
        }
        self.bw = t.before;
        self.tier_changed_ns = now_ns;
        self.rate_restored_ns = Some(now_ns);
        self.path_random_until_ns = Some(now_ns + self.cfg.hysteresis_ns);
        self.path_unqueued += 1;
        if self.worst(now_ns).any {
            self.evaluate(now_ns);
        } else {
            // No fresh report (most are lost at this loss): what was in
            // force before the step, its protection included; the reports,
            // once they come, decide the rest.
            self.decide(c.settings, Reason::HeavyRandom, now_ns);
        }
        true
    }

    /// Judges a rate check by this sender's first hop when its loss stayed
    /// there: the loss end to end holds the first hop's, so as many of the
    /// first hop's packets lost after the settle time as a report's verdict
    /// needs ([`judgeable`]) say the loss stayed end to end too: random, and
    /// the step is taken back ([`Reason::HeavyRandom`], as with the
    /// reports). Loss that fell there says nothing (the limit may lie
    /// beyond the first hop): that stays the reports' to judge. The reports
    /// that would judge it are single datagrams a second, and at the loss
    /// that causes a check most are lost: live at 80 % both ways none came
    /// for 21 s after a check while every sample read 60-100 % lost, and
    /// the call sat on the checking step (Codec2 1200, no DRED). Returns
    /// whether this sample judged one.
    fn judge_rate_check_by_path(&mut self, sample: &PathSample, now_ns: u64) -> bool {
        let Some(mut c) = self.rate_check else {
            return false;
        };
        if self.tier_changed_ns != c.trial.at_ns
            || now_ns.saturating_sub(c.trial.at_ns) < STEP_SETTLE_NS
        {
            return false;
        }
        let judged = c
            .by_path
            .pool(u32::from(sample.sent), u32::from(sample.lost))
            && c.by_path.stayed();
        self.rate_check = Some(c);
        if !judged {
            return false;
        }
        self.rate_check = None;
        let verdict = self.rate_verdict(&c.by_path, now_ns);
        self.slot(c.reporter, now_ns).heavy_verdict = verdict;
        // Decided with a fresh report at hand; else with the next one
        // (nothing is decided blind), the step taken back meanwhile.
        if self.worst(now_ns).any {
            self.evaluate(now_ns);
        }
        true
    }

    /// Whether a first-hop step on saturation alone waits for the sample
    /// that judges it (at most [`STEP_JUDGE_MAX_NS`] as a reason to hold
    /// other steps back).
    fn sat_checking(&self, now_ns: u64) -> bool {
        self.sat_check
            .is_some_and(|c| c.trial.waiting(self.tier_changed_ns, now_ns))
    }

    /// Whether the receivers' reports that came since `since_ns` (and are
    /// fresh), at least one, all read no queue on this stream's way: under
    /// [`ControllerConfig::congestion_queue_ms`] above their path's own
    /// delay. With no report in that time (lost in a full link) the
    /// samples decide.
    fn reports_deny_queue(&self, since_ns: u64, now_ns: u64) -> bool {
        let mut any = false;
        for r in self.receivers.iter().filter(|r| r.used) {
            if r.last_ns < since_ns || now_ns.saturating_sub(r.last_ns) > self.cfg.report_fresh_ns {
                continue;
            }
            if r.last_raw_queue_ms - r.queue_base_ms >= self.cfg.congestion_queue_ms {
                return false;
            }
            any = true;
        }
        any
    }

    /// Saturated first-hop runs not acted on because the receivers' reports
    /// read no queue: heavy random loss, not a bottleneck
    /// ([`Controller::handle_path`]).
    pub fn path_unqueued(&self) -> u64 {
        self.path_unqueued
    }

    /// Congested first-hop runs not acted on because the receivers' reports
    /// saw the media through (reordering; [`Controller::handle_path`]).
    pub fn path_reordered(&self) -> u64 {
        self.path_reordered
    }

    /// Path samples read ([`Controller::handle_path`]; those with too few
    /// packets to tell are not counted).
    pub fn path_samples(&self) -> u64 {
        self.path_samples
    }

    /// Times the first hop's own samples moved the tier down.
    pub fn path_congestions(&self) -> u64 {
        self.path_congestions
    }

    /// Early reports acted on ([`Controller::handle_early_report`]).
    pub fn early_reports(&self) -> u64 {
        self.early_reports
    }

    fn tier_index(&self) -> usize {
        TIERS
            .iter()
            .position(|&t| t == self.settings.tier)
            .unwrap_or(self.top)
    }

    /// Congestion: `recv_kbps` got through. `from`: the receiver whose
    /// report read it and the queue it read (none: the first hop's
    /// samples).
    fn on_congestion(&mut self, recv_kbps: f32, from: (Option<u32>, f32, bool), now_ns: u64) {
        self.step_down(recv_kbps, FIT_SHARE, from, now_ns);
    }

    /// A step down to a tier that fits `share` of `recv_kbps` (at least one
    /// step), as [`Self::on_congestion`] describes.
    fn step_down(
        &mut self,
        recv_kbps: f32,
        share: f32,
        from: (Option<u32>, f32, bool),
        now_ns: u64,
    ) {
        let before = self.bw;
        self.bw.last_congestion_ns = now_ns;
        // Within [`STEP_SETTLE_NS`] of a step down, congestion moves
        // nothing: the reports that follow a step describe intervals that
        // began on the tier before (its queue, its losses), and their
        // receive rate is the new tier's own, not what the path carries (at
        // 40 kb/s a call went from `good` to `degraded`, which fits, and on
        // the next report, at `degraded`'s own 14 kb/s, to Codec2).
        if self
            .bw
            .stepped_down_ns
            .is_some_and(|t| now_ns.saturating_sub(t) < STEP_SETTLE_NS)
        {
            return;
        }
        // Nor while a step is being judged ([`Self::path_queue`]): the
        // reading that judges it decides, and steps on from there if the
        // step stands. Each source judges its own steps, and the other one
        // sees the same delay too: when the first hop's samples stepped
        // down on a route that got longer (their queue shows first) and the
        // reports' step came before the samples had judged it, the first
        // step was never judged, and under CPU load a call on a 10 % lossy
        // path went from `good` to Codec2 1200 in four steps, one of which
        // was taken back.
        if self.judging_step(now_ns) || self.rate_checking(now_ns) || self.sat_checking(now_ns) {
            return;
        }
        self.bw.ceiling_kbps = recv_kbps;
        let budget = share * recv_kbps;
        // Nothing of Opus fits: Codec2 1200, the cheapest tier on the wire,
        // in the shortest packets that fit (the longest if none does).
        let fits = (self.top..=LOWEST_OPUS)
            .find(|&t| wire_kbps(profile(t), 0) <= budget)
            .map(|t| (t, profile(t).frame_ms))
            .unwrap_or_else(|| {
                let c2 = profile(CATASTROPHIC);
                let packet = (1..=CODEC2_MAX_PACKET_MS / c2.frame_ms)
                    .map(|n| n * c2.frame_ms)
                    .find(|&ms| packet_wire_kbps(c2, ms, 0) <= budget)
                    .unwrap_or(CODEC2_MAX_PACKET_MS);
                (CATASTROPHIC, packet)
            });
        // Only ever down on congestion, at least one step.
        let current = (self.bw.tier, self.bw.packet_ms);
        let target = fits.max(ladder_down(current));
        if self.bw.probing {
            self.bw.probe_wait_ns = (self.bw.probe_wait_ns * 2).min(self.cfg.probe_max_ns);
            self.bw.probing = false;
        }
        if target != current {
            (self.bw.tier, self.bw.packet_ms) = target;
            self.tier_changed_ns = now_ns;
            self.bw.stepped_down_ns = Some(now_ns);
            // Judged by the next settled report of that receiver (or
            // sample of the first hop), when the step fits what got
            // through (so a queue of ours drains) and the path was not
            // saturated.
            let (reporter, queue_ms, saturated) = from;
            let fits_budget = packet_wire_kbps(profile(target.0), target.1, 0) <= budget;
            self.step_check = (!saturated && fits_budget).then_some(StepCheck {
                reporter,
                queue_ms,
                at_ns: now_ns,
                before,
                reports_queue_ms: self.reports_queue(0, now_ns),
                waits: 0,
            });
        }
    }

    /// Time-driven decisions (start-up ending, hysteresis, probes); returns
    /// the newest decision not yet taken out, if any.
    pub fn poll(&mut self, now_ns: u64) -> Option<Decision> {
        self.expire_rate_check(now_ns);
        self.evaluate(now_ns);
        self.pending.take()
    }

    /// The worst fresh receiver: (loss, loss level, longest recent burst,
    /// any loss since the settle time, any report at all, heavy loss for
    /// [`HEAVY_REPORTS`] reports in a row, a lossy receiver set aside for
    /// losing in long runs, a receiver hearing the stream unrepaired). A
    /// receiver whose recent loss is mostly in runs
    /// it cannot rebuild ([`LONG_RUN_SHARE`]) adds no protection: what it
    /// loses, deep PLC fills better than redundancy taken from every packet.
    fn worst(&self, now_ns: u64) -> Worst {
        let mut loss = 0.0f32;
        let mut level = 0.0f32;
        let mut burst = 0;
        let mut lossy = false;
        let mut any = false;
        let mut heavy = false;
        let mut heavy_held = false;
        let mut heavy_random = false;
        let mut long_runs = false;
        let mut random_shape = true;
        let mut random_kept = true;
        let mut budget_ms = u32::MAX;
        let mut plain_listener = false;
        for r in self.receivers.iter().filter(|r| r.used) {
            if now_ns.saturating_sub(r.last_ns) > self.cfg.report_fresh_ns {
                continue;
            }
            any = true;
            budget_ms = budget_ms.min(r.budget_ms.unwrap_or(self.cfg.hold_budget_ms));
            let verdict = if self.cfg.rate_check {
                r.heavy_verdict
            } else {
                HeavyVerdict::RateLimit
            };
            let heavy_now = r.heavy_run >= HEAVY_REPORTS;
            heavy |= heavy_now && verdict == HeavyVerdict::RateLimit;
            heavy_held |=
                heavy_now && verdict != HeavyVerdict::RateLimit || verdict == HeavyVerdict::Random;
            heavy_random |= verdict == HeavyVerdict::Random;
            if r.long {
                // Its reports may all have been outages: the tally says
                // whether it lost anything lately.
                if r.lost_recent >= 1.0 {
                    if r.short_lost >= LONG_RUN_BURSTS * r.lost_recent {
                        // Runs DRED with the hold rebuilds between the long
                        // ones: DRED, held to the budget.
                        lossy = true;
                        burst = u32::MAX;
                    } else {
                        long_runs = true;
                        plain_listener = true;
                    }
                } else {
                    plain_listener = true;
                }
                continue;
            }
            loss = loss.max(r.loss);
            level = level.max(r.level);
            if now_ns.saturating_sub(r.burst_at_ns) <= self.cfg.hysteresis_ns {
                burst = burst.max(r.burst);
            }
            // Random loss ends as soon as the clean packets since say so;
            // bursts (a run of 3+ within the hysteresis period, or a bursty
            // tally) wait the settle time.
            let bursts = r.bursty || r.bursts_within(now_ns, self.cfg.hysteresis_ns);
            let ended = !bursts && r.loss_ended(now_ns, self.cfg.clean_settle_ns);
            if r.lossy_within(now_ns, self.cfg.clean_settle_ns) && !ended {
                lossy = true;
                // Runs of 3+ under the bursty band's lower edge, pooled
                // over two reports at least, and no rare run lately.
                let share = r.burst_share();
                let rare_lately = r
                    .rare_run_at_ns
                    .is_some_and(|t| now_ns.saturating_sub(t) <= 2_500 * MS);
                let pooled = r.short_reports >= FEC_MIN_REPORTS && !r.bursty;
                random_shape &= pooled && share < BURSTY_LEAVE && !rare_lately;
                random_kept &= pooled && share < BURSTY_SHARE;
            } else {
                plain_listener = true;
            }
        }
        Worst {
            loss,
            level,
            random_shape,
            random_kept,
            burst,
            lossy,
            any,
            heavy,
            heavy_held,
            heavy_random,
            long_runs: long_runs && !lossy,
            budget_ms: if any { budget_ms } else { self.budget_ms },
            plain_listener,
        }
    }

    fn evaluate(&mut self, now_ns: u64) {
        let Worst {
            loss,
            level,
            random_shape,
            random_kept,
            burst,
            lossy,
            any,
            heavy,
            heavy_held,
            heavy_random,
            long_runs,
            budget_ms,
            plain_listener,
        } = self.worst(now_ns);
        self.long_runs = long_runs;
        self.budget_ms = budget_ms;
        if !any {
            // No fresh report (the return path is down, or nobody listens):
            // hold what is in force rather than adapt blind.
            return;
        }
        let in_startup = now_ns.saturating_sub(self.started_ns) < self.cfg.startup_ns;
        // Tier: probe up after a calm period.
        if self.bw.probing && now_ns.saturating_sub(self.tier_changed_ns) >= self.cfg.hysteresis_ns
        {
            self.bw.probing = false;
            self.bw.probe_wait_ns = self.cfg.probe_after_ns;
            if step_kbps((self.bw.tier, self.bw.packet_ms)) > FIT_SHARE * self.bw.ceiling_kbps {
                // The path carries more than it did at the last congestion.
                self.bw.ceiling_kbps = 0.0;
            }
        }
        // A step above the last congestion's ceiling waits the longest
        // back-off: at 12 kb/s, a probe from 80 to 40 ms Codec2 packets
        // never fits (each one lost a second of packets). Above it means
        // what the congestion step would not have taken: more than
        // [`FIT_SHARE`] of what got through (a probe from 120 to 80 ms
        // packets, 5.0 kb/s nominal, after a congestion that got 5 kb/s
        // through sat there losing 8-23 %: the uplink also carries the
        // acknowledgements of the other member's media).
        let up = ladder_up((self.bw.tier, self.bw.packet_ms));
        let wait = if self.bw.ceiling_kbps > 0.0 && step_kbps(up) > FIT_SHARE * self.bw.ceiling_kbps
        {
            self.bw.probe_wait_ns.max(self.cfg.probe_max_ns)
        } else {
            self.bw.probe_wait_ns
        };
        // Not while a rate check's step waits for its verdict.
        if any
            && self.bw.tier > self.top
            && self.rate_check.is_none()
            && now_ns.saturating_sub(self.tier_changed_ns) >= wait
            && now_ns.saturating_sub(self.bw.last_congestion_ns) >= wait
        {
            (self.bw.tier, self.bw.packet_ms) = up;
            self.tier_changed_ns = now_ns;
            self.bw.probing = true;
            let settle = self.cfg.clean_settle_ns;
            for r in self.receivers.iter_mut().filter(|r| r.used) {
                r.probe_base_loss = if r.lossy_within(now_ns, settle) {
                    r.loss
                } else {
                    0.0
                };
                r.probe_loss_run = 0;
            }
        }
        // Protection.
        // Into Codec2 on heavy loss that lasts; staying there on the smoothed
        // loss, as every mode does.
        // Dense random loss: DRED with the hold, in a band so a path near
        // the threshold does not flap between it and LBRR.
        if level >= DENSE_ENTER {
            self.dense = true;
        } else if level < DENSE_LEAVE {
            self.dense = false;
        }
        if level >= FEC_ABOVE {
            self.fec_band = false;
        } else if level >= FEC_ENTER && (self.fec_band || level < FEC_BACK) {
            self.fec_band = true;
        } else if level < FEC_LEAVE {
            self.fec_band = false;
        }
        // The light band holds while the loss lasts: at 2-3 % a report of
        // 50 packets reads 0-6 %, and each move in and out of the band
        // moves Opus between 15.6 and 24 kb/s.
        if !lossy {
            self.fec_light_band = false;
        } else if level >= FEC_LIGHT_ENTER {
            self.fec_light_band = true;
        }
        // Under the full band only: above it a symbol per frame, or dense
        // loss's DRED.
        self.fec_light_now = self.fec_light_band && !self.fec_band && level < FEC_ENTER;
        // Dense random loss gets RaptorQ where the tier has it, else DRED
        // with the hold.
        let shape = if self.mode == Mode::Fec {
            random_kept
        } else {
            random_shape
        };
        let fec_fits = shape && self.fec_for(self.bw.tier).is_some();
        // In a room, RaptorQ's Opus rate is what every other receiver hears
        // too: where one hears the stream unrepaired, the lossy one gets
        // LBRR at the tier's rate (docs/QUALITY.md finding 30).
        self.fec_withheld = fec_fits && plain_listener;
        let fec = fec_fits && !plain_listener;
        // Codec2 alike: every receiver would hear Codec2 1200 (1.42 PESQ-WB
        // on a clean path, against 3.65 for Opus with DRED), while Opus
        // with DRED and the hold costs the receiver losing 60 % a little or
        // nothing (1.35 against Codec2's 1.09 at 60 %, finding 12): where
        // one hears the stream unrepaired, heavy loss gets DRED with the
        // hold at the tier's rate (docs/QUALITY.md finding 31).
        let heavy_wanted = heavy || (self.mode == Mode::Heavy && loss >= self.cfg.heavy_loss);
        self.heavy_withheld = (heavy_wanted || heavy_held) && plain_listener;
        // Heavy loss not judged a rate limit's (yet) stays on Opus, with
        // DRED and the hold as for dense loss.
        self.heavy_random = heavy_random && !plain_listener;
        let dense_dred = (self.dense || self.heavy_withheld || heavy_held) && !fec;
        self.dense_only = dense_dred && burst < 3;
        let burst = if dense_dred { burst.max(3) } else { burst };
        let wanted = if heavy_wanted && !self.heavy_withheld {
            Mode::Heavy
        } else if (lossy || heavy_held) && burst >= 3 {
            // Heavy loss held on Opus is protected whatever its reports'
            // shape reads as: at 70 % random loss many intervals hold one
            // run of 10-18 packets, set aside as outages, and the path read
            // clean between them.
            Mode::Burst
        } else if lossy && fec {
            Mode::Fec
        } else if lossy {
            Mode::Random
        } else {
            Mode::Clean
        };
        if wanted >= self.mode {
            self.calm_since_ns = None;
            self.mode = wanted;
        } else if any {
            let since = *self.calm_since_ns.get_or_insert(now_ns);
            // The estimates already carry the waiting for bursts (a burst
            // is remembered for the hysteresis period) and for a clean path
            // (no loss for the settle time); leaving Codec2 waits here,
            // unless for a listener that hears the stream clean.
            let wait = if self.mode == Mode::Heavy && !self.heavy_withheld {
                self.cfg.hysteresis_ns
            } else {
                0
            };
            if now_ns.saturating_sub(since) >= wait {
                self.mode = wanted;
                self.calm_since_ns = None;
            }
        }
        // Keep the start-up settings on a clean path, unless the path
        // cannot carry them: a congestion step applies at once (held to the
        // end of start-up, the settle time after it had passed by then, and
        // the next report stepped down again).
        let bw_moved = self.unprotected(self.bw.tier).tier != self.settings.tier
            || (self.bw.tier == CATASTROPHIC && self.bw.packet_ms != self.settings.frame_ms);
        if in_startup && self.mode == Mode::Clean && !bw_moved {
            return;
        }
        let (settings, mut reason) = self.settings_for(loss, burst);
        // Up again to where a step was taken back (now, or when it was
        // taken back with no fresh report to decide on), not a probe.
        if reason == Reason::Probe && self.restored_ns == Some(self.tier_changed_ns) {
            // Up again: a step down taken back, not a probe.
            reason = Reason::PathDelay;
        }
        if reason == Reason::Probe && self.rate_restored_ns == Some(self.tier_changed_ns) {
            reason = Reason::HeavyRandom;
        }
        if reason == Reason::Congestion && self.rate_check.is_some_and(|c| c.trial.at_ns == now_ns)
        {
            reason = Reason::RateCheck;
        }
        if settings != self.settings {
            self.decide(settings, reason, now_ns);
        }
    }

    /// Tier `tier` with no protection. Codec2 1200 on a path the bandwidth
    /// axis has it on goes in that axis' packets (loss on top of it
    /// included).
    fn unprotected(&self, tier: usize) -> Settings {
        let p = profile(tier);
        let frame_ms = if tier == CATASTROPHIC && self.bw.tier == CATASTROPHIC {
            self.bw.packet_ms
        } else {
            p.frame_ms
        };
        Settings {
            tier: p.name,
            bitrate: p.bitrate,
            frame_ms,
            dred_ms: 0,
            loss_hint: 0,
            lbrr: false,
            fec_ratio: 0,
            fec_block: 0,
            receiver_hold_frames: 0,
        }
    }

    /// RaptorQ repair for random loss on tier `tier` at the loss level's
    /// band: its Opus rate, ratio and block size, where the tier and the
    /// budget allow it. A symbol per frame in the [`FEC_ENTER`] band, one
    /// per two frames in the light band under it ([`FEC_LIGHT_ENTER`]).
    fn fec_for(&self, tier: usize) -> Option<(u32, u8, u8)> {
        let p = profile(tier);
        if !self.cfg.random_fec || p.codec != Codec::Opus {
            return None;
        }
        let (bitrate, ratio, block) = if self.fec_band {
            (
                fec_bitrate(p.bitrate)?,
                FEC_RATIO,
                fec_block(self.budget_ms, p.frame_ms)?,
            )
        } else if self.fec_light_now {
            let block = fec_block_at(FEC_LIGHT_RATIO, self.budget_ms, p.frame_ms)
                .filter(|&k| k >= FEC_LIGHT_MIN_BLOCK)?;
            (fec_light_bitrate(p.bitrate)?, FEC_LIGHT_RATIO, block)
        } else {
            return None;
        };
        // The repair adds to the rate: not on a path that carried less at
        // its last congestion.
        let wire = rate_wire_kbps(bitrate, p.frame_ms, ratio);
        if self.bw.ceiling_kbps > 0.0 && wire > self.bw.ceiling_kbps {
            return None;
        }
        Some((bitrate, ratio, block))
    }

    fn settings_for(&self, loss: f32, burst: u32) -> (Settings, Reason) {
        let loss_pct = (loss * 100.0).round() as u32;
        let mut tier = self.bw.tier;
        if self.mode == Mode::Heavy {
            // The bandwidth axis may already hold the cheaper Codec2 mode.
            // Codec2 1200 with RaptorQ 100 %: at 60 % loss it scores what
            // Codec2 3200 with 50 % does (1.09 PESQ-WB on the loopback) at
            // half the wire rate. With `heavy_loss` lowered under 50 %,
            // Codec2 3200 with RaptorQ 50 % while the loss is under 50 %.
            tier = if self.cfg.heavy_loss >= 0.5 || loss >= 0.5 || tier == CATASTROPHIC {
                CATASTROPHIC
            } else {
                POOR
            };
        }
        let p = profile(tier);
        let mut s = self.unprotected(tier);
        let frame_ms = s.frame_ms;
        let current = self.tier_index();
        // Codec2 for loss carries RaptorQ repair; Codec2 for bandwidth does
        // not. Leaving the former is the loss axis' business.
        let heavy_now = current > LOWEST_OPUS && self.settings.fec_ratio > 0;
        let same_step = tier == current && frame_ms == self.settings.frame_ms;
        let bw_reason = if self.mode == Mode::Heavy || heavy_now || same_step {
            None
        } else if packet_wire_kbps(p, frame_ms, 0)
            < packet_wire_kbps(profile(current), self.settings.frame_ms, 0)
        {
            Some(Reason::Congestion)
        } else {
            Some(Reason::Probe)
        };
        let loss_reason = match self.mode {
            Mode::Clean if self.long_runs => Reason::LongRuns,
            Mode::Clean => Reason::CleanPath,
            Mode::Random | Mode::Fec => {
                let fec = if self.mode == Mode::Fec {
                    self.fec_for(tier)
                } else {
                    None
                };
                match fec {
                    // Opus under the tier's rate, at loss hint 0: the
                    // repair brings lost frames back whole, and a hint
                    // would spend the rate on robustness and, at 11 kb/s,
                    // drop libopus out of wideband.
                    Some((bitrate, ratio, block)) => {
                        s.bitrate = bitrate;
                        s.fec_ratio = ratio;
                        s.fec_block = block;
                        Reason::FecLoss
                    }
                    // LBRR, also where the tier has no rate for repair.
                    None => {
                        with_lbrr(&mut s, p.codec, loss_pct);
                        if self.fec_withheld {
                            Reason::RandomLossRoom
                        } else {
                            Reason::RandomLoss
                        }
                    }
                }
            }
            Mode::Burst => {
                // Hold as many frames as the burst, within the latency
                // budget; DRED's reach (set by the hint) follows the hold.
                // A receiver that holds nothing plays no rebuilt frame of a
                // burst: LBRR, as below, costs the stream less.
                let budget = (self.budget_ms / p.frame_ms.max(1)).min(255) as u8;
                if p.codec == Codec::Opus && p.bitrate >= DRED_MIN_BITRATE && budget > 0 {
                    s.dred_ms = 1000;
                    s.receiver_hold_frames = (burst.min(255) as u8).min(budget);
                    s.loss_hint = dred_hint(s.receiver_hold_frames);
                } else {
                    // No DRED at this rate (or no hold): LBRR is what there
                    // is.
                    with_lbrr(&mut s, p.codec, loss_pct);
                }
                if self.heavy_withheld {
                    Reason::HeavyLossRoom
                } else if self.heavy_random {
                    Reason::HeavyRandom
                } else if self.dense_only {
                    Reason::DenseLoss
                } else {
                    Reason::BurstLoss
                }
            }
            Mode::Heavy => {
                s.fec_ratio = p.fec_ratio_percent;
                Reason::HeavyLoss
            }
        };
        // Small moves of the loss estimate do not retune the encoder: keep
        // the hint in force when within 4 points and nothing else changes.
        let held = Settings {
            loss_hint: self.settings.loss_hint,
            ..s
        };
        if held == self.settings && s.loss_hint.abs_diff(self.settings.loss_hint) <= 4 {
            s = held;
        }
        // Less protection in the same mode counts as the loss easing too:
        // RaptorQ's light band after its symbol per frame.
        let eased = self.mode < self.mode_of(&self.settings)
            || (self.mode == Mode::Fec && s.fec_ratio > 0 && s.fec_ratio < self.settings.fec_ratio);
        let reason = match bw_reason {
            Some(r) => r,
            // Out of RaptorQ (or Codec2) because a listener hears clean,
            // not because the loss eased.
            None if matches!(loss_reason, Reason::RandomLossRoom | Reason::HeavyLossRoom) => {
                loss_reason
            }
            None if eased && self.mode != Mode::Clean => Reason::LossEased,
            None => loss_reason,
        };
        (s, reason)
    }

    /// The protection mode the given settings amount to.
    fn mode_of(&self, s: &Settings) -> Mode {
        if (s.tier == "poor" || s.tier == "catastrophic") && s.fec_ratio > 0 {
            Mode::Heavy
        } else if s.dred_ms > 0 && s.receiver_hold_frames > 0 {
            Mode::Burst
        } else if s.fec_ratio > 0 {
            Mode::Fec
        } else if s.lbrr || s.dred_ms > 0 {
            Mode::Random
        } else {
            Mode::Clean
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binomial_tail_and_the_handful_that_says_the_loss_stayed() {
        // By hand: P(X >= k), n packets lost with probability 0.05 each.
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(tail_odds(5, 0, 0.05), 1.0));
        assert!(close(tail_odds(2, 2, 0.05), 0.0025));
        assert!(close(tail_odds(5, 3, 0.05), 0.001_158_125));
        assert!(close(tail_odds(8, 3, 0.05), 0.005_788_217_929_687_5));
        assert!(close(tail_odds(3, 4, 0.05), 0.0));
        // At 80 % that caused the check: the smallest handful per count.
        let least = |n: u32| (0..=n).find(|&k| judgeable(n, k, 0.8));
        let got: Vec<Option<u32>> = (1..=8).map(least).collect();
        assert_eq!(
            got,
            [
                None,
                Some(2),
                Some(3),
                Some(3),
                Some(3),
                Some(3),
                Some(3),
                Some(4)
            ]
        );
        // 8 and more: as before (half the loss that caused it, 3.2 of 8).
        assert!(judgeable(8, 4, 0.8) && !judgeable(8, 3, 0.8));
        // Loss that fell is only judged over 20.
        assert!(!judgeable(19, 0, 0.8) && judgeable(20, 0, 0.8));
    }
}
