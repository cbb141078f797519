//! `quality.adapt`: the sender's half of the feedback loop. Sits on the send
//! path right after the encoder (frames pass through unchanged), reads the
//! feedback reports its receivers send back (codec `0x40`), feeds this
//! sender's entry of each to the sans-IO [`Controller`], and writes every
//! decision into the encoder's live settings cell ([`OpusLive`]): bit rate,
//! DRED window, the loss hint that sizes DRED and LBRR, and LBRR on/off.
//! The encoder applies them before its next frame.
//!
//! The reports come back over the return path, so the link into `feedback`
//! closes a cycle through the send path: declare it `delay = 1` (one
//! quantum; docs/GRAPHS.md, feedback links).
//!
//! What the encoder cannot change live is counted, not applied: RaptorQ's
//! ratio unless `fec_live` names the ratio cell of a `fec.raptorq_encode`
//! (with it, the ratio applies from the encoder's next block), and, unless
//! `codec_live` names the codec cell of a `codec.adaptive_encode`, a frame
//! duration change and the Codec2 tiers (heavy loss, or a path too narrow
//! for Opus): without that cell the Opus encoder keeps the top tier's bit
//! rate with LBRR and the highest hint (30) instead of Codec2 for heavy
//! loss, and at the lowest Opus tier's rate (6 kb/s) for a narrow path. With it,
//! every decision's tier and frame duration go to the cell as well, and the
//! encoder switches codec and frame size at its next frame. The receiver
//! hold is the far jitter buffer's own (it measures the bursts it plays
//! through); the decision's `receiver_hold_frames` is shown, not sent.
//!
//! ## Ports
//! - `in` (Frame): this sender's encoded frames; passed on to `out`. Their
//!   timestamps give the round-trip time when a report echoes one.
//! - `feedback` (Frame, optional): received frames; only codec `0x40`
//!   (reports) are read, the rest ignored.
//! - `out` (Frame): `in`, unchanged.
//!
//! ## Params
//! - `live_settings` (string, "enc_live"): the `OpusLive` cell the encoder's
//!   `live_settings` param names.
//! - `enabled` (bool, true): apply decisions. False runs the controller and
//!   counts its decisions but leaves the encoder alone (a baseline).
//! - `top_tier` (string, "good"): the best tier (docs/PROFILES.md) the
//!   controller may use; the call starts there.
//! - `codec_live` (string, ""): the `CodecLive` cell the encoder's
//!   `codec_live` names (`codec.adaptive_encode`); empty: Opus only, as
//!   above.
//! - `fec_live` (string, ""): the `FecLive` cell a `fec.raptorq_encode`'s
//!   `live_ratio` names: the RaptorQ ratio goes live (Codec2 for heavy loss
//!   carries the tier's repair; random loss gets a repair symbol per two
//!   frames from a level of 3 %, one per frame from 13 %, with the block
//!   size published beside the ratio);
//!   empty: the ratio is counted `not_live`. The cell also says whether
//!   repair may ride in source packets (gauge `repair_rides` below).
//! - `path_live` (string, ""): the `PathLive` cell ([`super::path`]) the
//!   control plane publishes its first hop's transport samples to (lost
//!   packets, round-trip queue, what got through); the controller reads
//!   them as congestion only (`Controller::handle_path`). Empty, or no
//!   such resource inserted: reports only.
//! - `sender_id` (int, -1): the entry of each report to read; -1 = the id
//!   in `local_sender` (a call: `wire.packetize` draws a random id and
//!   publishes it there), or without one the `stream` of the frames passing
//!   through.
//! - `local_sender` (string, ""): name of an `Arc<LocalSender>` resource.
//! - `random_fec` (bool, true): RaptorQ repair for random loss from a
//!   level of 3 % (Opus at 15.6 of 24 kb/s with a repair symbol per two
//!   frames) and from 13 % (Opus at 11 of 24 kb/s with a repair symbol per
//!   frame), riding in the next frame's packet where the receivers take
//!   it, else a packet of its own; docs/PROFILES.md; false keeps LBRR
//!   there.
//!   Repair needs `fec_live` (the encoder's cell) to go out: without it
//!   this is off whatever it says.
//! - `rate_check` (bool, true): heavy loss with no queue first steps the
//!   rate down to what got through (decision `rate_check`): loss that falls
//!   was a rate limit that drops what it cannot carry (the step stands);
//!   loss that stays is random and keeps Opus with DRED and the hold
//!   (`heavy_random`), which scores above Codec2 up to 80 % loss
//!   (docs/QUALITY.md finding 31). False: Codec2 with RaptorQ for any heavy
//!   loss (`heavy_loss`), as on a tier with no DRED either way.
//! - `hold_budget` (duration, 60ms): the extra delay a receiver may hold
//!   to rebuild loss (its jitter buffers' `burst_hold`) when its reports do
//!   not say: a receiver's report states its own (`quality.feedback_report`
//!   param `hold_budget`, docs/WIRE.md §1.5), and the smallest among the
//!   receivers reporting lately is what the controller sizes to. It bounds
//!   the hold asked for bursts (none: LBRR for bursts, as DRED would
//!   rebuild nothing in time), sizes DRED's hint for it and the runs
//!   counted as outages (per receiver), and sizes the RaptorQ blocks for
//!   random loss so their hold fits it (`controller::fec_block`; none under
//!   a frame).
//! - `startup` (duration, 3s), `clean_settle` (duration, 4s), `hysteresis`
//!   (duration, 10s): the controller's timings (`ControllerConfig`).
//! - `journal` (string, "adapt_journal"): the [`DecisionJournal`] resource
//!   each decision is written to as it is taken ([`super::journal`]; the
//!   control plane inserts one and prints its entries); empty, or no such
//!   resource: none.
//! - `log_inputs` (bool, false): also write to the journal every input
//!   the controller is handed (its config when made, each report and early
//!   report about this sender, each first-hop sample), between the
//!   decisions, so a call's decisions can be replayed off line
//!   ([`super::inputs`], `wzp-client replay-adapt`). Off, nothing but the
//!   decisions is written.
//! - `heavy_loss` (int, 60): loss percent, in two reports in a row, from
//!   which Opus is given up for Codec2 (docs/QUALITY.md finding 12: up to
//!   60 % Opus with its redundancy still scores above Codec2 + RaptorQ).
//!
//! **Counters**: `reports` (entries about this sender), `reports_outage`
//! (those the controller read as an outage and set aside), `reports_early`
//! (entries of early reports, flag `early`: notices that loss began, not
//! counted in `reports` or the packet sums), `report_expected`
//! and `report_received` (their packet counts summed: two readings give the
//! loss between them), `report_errors`
//! (reports that did not parse), `decisions`, `applied` (decisions written
//! to the encoder), `decisions_<reason>` for each reason (`startup`,
//! `clean_path`, `random_loss`, `burst_loss`, `heavy_loss`, `loss_eased`,
//! `congestion`, `probe`, `dense_loss`, `long_runs`, `fec_loss`,
//! `random_loss_room`, `heavy_loss_room`, `path_delay`, `rate_check`,
//! `heavy_random`), `not_live` (decisions with a part the encoder
//! cannot take live), `rate_limits` (rate checks that found a rate limit:
//! the loss fell with the step, see `rate_check`), `path_samples` (first-hop samples read),
//! `path_congestion` (times they moved the tier down), `path_reordered`
//! (congested runs the reports showed to be reordering, not acted on), `path_unqueued`
//! (saturated runs the reports read no queue for: heavy random loss, not acted on), `journal_dropped`
//! (decisions, and inputs with `log_inputs`, the journal's ring had no room for). **Gauges** (the settings in force): `tier` (index in
//! `controller::TIERS`: 0 `studio_64k` .. 3 `good` .. 7 `catastrophic`), `dred_ms`,
//! `loss_hint`, `lbrr`, `bitrate`, `frame_ms`, `fec_ratio`,
//! `receiver_hold_frames`, `codec` (the wire codec id of the tier),
//! `hold_budget_ms` (the budget sized to, see `hold_budget`), `fec_withheld`
//! (1 while random loss that would get RaptorQ gets LBRR because another
//! receiver hears the stream unrepaired), `heavy_withheld` (1 while heavy
//! loss that would get Codec2 gets Opus with DRED and the hold for the same
//! reason), `repair_rides` (1 while every receiver reporting lately takes
//! repair riding in source packets, codec `0x41`: published in `fec_live`
//! for `wire.packetize`, with `enabled` off too), and the
//! latest report's `loss_pct`, `rtt_ms`, `queue_ms` (the queueing delay
//! the receiver measured), `recv_kbps` (its receive rate), `sent_kbps`
//! (what this sender sent over that report's interval, as the receiver
//! counts it, repair at the current ratio; the receive rate is short
//! against this) and `run_max`
//! (its longest run of lost packets), and the latest first-hop sample's
//! `path_loss_pct`, `path_queue_ms` and `path_kbps` (-1 until known).
//!
//! **Latency**: none.
//!
//! ```toml
//! [[stage]]
//! id = "enc"
//! kind = "codec.opus_encode"
//! params = { live_settings = "enc_live" }
//! [[stage]]
//! id = "adapt"
//! kind = "quality.adapt"
//! params = { live_settings = "enc_live" }
//! [[link]]
//! from = "enc.out"
//! to = "adapt.in"
//! [[link]]
//! from = "report_path.out"
//! to = "adapt.feedback"
//! delay = 1
//! ```

use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_proto::feedback::FeedbackReport;
use wzp_proto::CodecId;

use super::controller::{
    Controller, ControllerConfig, Decision, Reason, Settings, PACKET_OVERHEAD_BYTES, TIERS,
};
use super::inputs::{Input, InputRecord};
use super::journal::{DecisionJournal, Entry, JournalWriter};
use super::path::PathLive;
use super::receive_stats::{SendClock, SentBytes};
use crate::cell::{control_cell, optional_cell};
use crate::codec::live::{CodecLive, LiveCodecSettings, LiveOpusSettings, OpusLive};
use crate::codec::profile::{Codec, Profile};
use crate::fec::live::FecLive;
use crate::wire::LocalSender;

/// `quality.adapt`; see the module docs.
pub struct AdaptFactory;

impl StageFactory for AdaptFactory {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "quality.adapt",
            summary:
                "feeds feedback reports to the quality controller and retunes the encoder live",
            inputs: vec![
                PortInfo {
                    name: "in",
                    ty: "Frame",
                    doc: "this sender's encoded frames, passed on",
                },
                PortInfo {
                    name: "feedback",
                    ty: "Frame",
                    doc: "feedback reports (codec 0x40); other frames are ignored",
                },
            ],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "the frames of `in`, unchanged",
            }],
            params: vec![
                ParamSpec::str(
                    "live_settings",
                    "enc_live",
                    "the OpusLive cell the encoder's live_settings names",
                ),
                ParamSpec::bool("enabled", true, "apply decisions (false: count them only)"),
                ParamSpec::str(
                    "codec_live",
                    "",
                    "the CodecLive cell of a codec.adaptive_encode: tier, codec and frame size go live",
                ),
                ParamSpec::str(
                    "fec_live",
                    "",
                    "the FecLive cell of a fec.raptorq_encode (its live_ratio): the RaptorQ ratio goes live",
                ),
                ParamSpec::str(
                    "path_live",
                    "",
                    "the PathLive cell the control plane publishes its first hop's samples to",
                ),
                ParamSpec::str("top_tier", "good", "best tier the controller may use"),
                ParamSpec::str(
                    "journal",
                    super::journal::DEFAULT_NAME,
                    "the DecisionJournal resource every decision is written to (empty: none)",
                ),
                ParamSpec::bool(
                    "log_inputs",
                    false,
                    "also journal every input the controller is handed, for replay (wzp-client replay-adapt)",
                ),
                ParamSpec::int(
                    "sender_id",
                    -1,
                    "report entry to read; -1 = local_sender's id, else the stream of the frames passing",
                ),
                ParamSpec::str(
                    "local_sender",
                    "",
                    "name of an Arc<LocalSender> resource holding this sender's id (wire.packetize publishes it)",
                ),
                ParamSpec::duration(
                    "startup",
                    Duration::from_secs(3),
                    "time on the profile's defaults",
                ),
                ParamSpec::duration(
                    "clean_settle",
                    Duration::from_secs(4),
                    "loss-free time before redundancy goes off",
                ),
                ParamSpec::duration(
                    "hysteresis",
                    Duration::from_secs(10),
                    "calm time before protection steps down",
                ),
                ParamSpec::int(
                    "heavy_loss",
                    60,
                    "loss percent (two reports in a row) from which Opus is given up for Codec2, 1..=100",
                ),
                ParamSpec::bool(
                    "random_fec",
                    true,
                    "RaptorQ repair for random loss of 3 % and more (false: LBRR, no extra packets)",
                ),
                ParamSpec::bool(
                    "rate_check",
                    true,
                    "heavy loss with no queue first steps the rate down: random heavy loss keeps Opus with DRED (false: Codec2 for any heavy loss)",
                ),
                ParamSpec::duration(
                    "hold_budget",
                    Duration::from_millis(60),
                    "extra delay a receiver may hold to rebuild loss (its burst_hold), assumed where its reports state none",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let name = p.str("live_settings")?;
        let live = cx.shared_resource::<OpusLive>(name).ok_or_else(|| {
            ParamError::new(
                "live_settings",
                format!("the resource named {name:?} is not an OpusLive cell; pick another name"),
            )
        })?;
        let codec_live = optional_cell::<CodecLive>(cx, p, "codec_live", "a CodecLive")?;
        let fec_live = optional_cell::<FecLive>(cx, p, "fec_live", "a FecLive")?;
        let path_live = control_cell::<PathLive>(cx, p, "path_live", "a PathLive")?;
        let journal_name = p.str("journal")?;
        // The journal is the control plane's to read: written only when it
        // put one there (a cell made here would have no reader).
        let journal = if journal_name.is_empty() || !cx.has_resource(journal_name) {
            None
        } else {
            let j = cx
                .resource::<DecisionJournal>(journal_name)
                .ok_or_else(|| {
                    ParamError::new(
                        "journal",
                        format!(
                            "the resource named {journal_name:?} is not a DecisionJournal; pick another name"
                        ),
                    )
                })?;
            Some(j.writer())
        };
        let top = p.str("top_tier")?;
        let Some(&top_tier) = TIERS.iter().find(|&&t| t == top) else {
            return Err(ParamError::new(
                "top_tier",
                format!("{top:?} is not a tier; use one of: {}", TIERS.join(", ")),
            )
            .into());
        };
        let sender = p.int_in("sender_id", -1, i64::from(u32::MAX))?;
        let cell = p.str("local_sender")?;
        let own_cell = if cell.is_empty() {
            None
        } else {
            Some(cx.resource::<LocalSender>(cell).ok_or_else(|| {
                ParamError::new(
                    "local_sender",
                    format!("no LocalSender resource named {cell:?}; insert one or leave it empty"),
                )
            })?)
        };
        let ns = |d: Duration| d.as_nanos() as u64;
        let cfg = ControllerConfig {
            top_tier,
            startup_ns: ns(p.duration("startup")?),
            clean_settle_ns: ns(p.duration("clean_settle")?),
            hysteresis_ns: ns(p.duration("hysteresis")?),
            heavy_loss: p.int_in("heavy_loss", 1, 100)? as f32 / 100.0,
            // Without the FEC encoder's cell the repair would not go out:
            // the lower Opus rate alone is no protection.
            random_fec: p.bool("random_fec")? && fec_live.is_some(),
            rate_check: p.bool("rate_check")?,
            hold_budget_ms: crate::jitter::hold_param(p, "hold_budget")?.as_millis() as u32,
            ..ControllerConfig::default()
        };
        let decisions_by: [Counter; Reason::ALL.len()] =
            Reason::ALL.map(|r| cx.counter(&format!("decisions_{}", r.name())));
        // Heavy loss asks for Codec2, which needs another stage: meanwhile
        // the encoder stays at the top tier's rate with LBRR at the highest
        // hint (measured on the loopback at 30 % random loss: the lowest
        // Opus tier with LBRR scored 0.66 correlation, the top tier 0.75
        // with DRED; see docs/QUALITY.md).
        let fallback = Profile::by_name(top_tier).map_or(24_000, |p| p.bitrate);
        let stage = Adapt {
            cfg,
            controller: None,
            live,
            codec_live,
            fec_live,
            path_live,
            path_seen: 0,
            path_samples: cx.counter("path_samples"),
            path_congestion: cx.counter("path_congestion"),
            path_reordered: cx.counter("path_reordered"),
            path_unqueued: cx.counter("path_unqueued"),
            enabled: p.bool("enabled")?,
            sender: u32::try_from(sender).ok(),
            own_cell,
            fb_expected: cx.counter("report_expected"),
            fb_received: cx.counter("report_received"),
            send_clock: SendClock::new(256),
            // A report interval plus any sane RTT.
            sent: SentBytes::new(5_000_000_000),
            fallback_bitrate: fallback,
            reports: cx.counter("reports"),
            reports_outage: cx.counter("reports_outage"),
            rate_limits: cx.counter("rate_limits"),
            reports_early: cx.counter("reports_early"),
            report_errors: cx.counter("report_errors"),
            decisions: cx.counter("decisions"),
            applied: cx.counter("applied"),
            not_live: cx.counter("not_live"),
            decisions_by,
            journal,
            log_inputs: p.bool("log_inputs")?,
            journal_dropped: cx.counter("journal_dropped"),
            last: Entry {
                applied: false,
                ..Entry::unread(
                    0,
                    Reason::Startup,
                    // Replaced by the first decision before it is written.
                    Settings::none(top_tier),
                )
            },
            g: Gauges {
                tier: cx.gauge("tier"),
                dred_ms: cx.gauge("dred_ms"),
                loss_hint: cx.gauge("loss_hint"),
                lbrr: cx.gauge("lbrr"),
                bitrate: cx.gauge("bitrate"),
                frame_ms: cx.gauge("frame_ms"),
                fec_ratio: cx.gauge("fec_ratio"),
                hold: cx.gauge("receiver_hold_frames"),
                budget_ms: cx.gauge("hold_budget_ms"),
                fec_withheld: cx.gauge("fec_withheld"),
                heavy_withheld: cx.gauge("heavy_withheld"),
                riding: cx.gauge("repair_rides"),
                codec: cx.gauge("codec"),
                loss_pct: cx.gauge("loss_pct"),
                rtt_ms: cx.gauge("rtt_ms"),
                queue_ms: cx.gauge("queue_ms"),
                recv_kbps: cx.gauge("recv_kbps"),
                sent_kbps: cx.gauge("sent_kbps"),
                run_max: cx.gauge("run_max"),
                path_loss_pct: cx.gauge("path_loss_pct"),
                path_queue_ms: cx.gauge("path_queue_ms"),
                path_kbps: cx.gauge("path_kbps"),
            },
        };
        stage.g.budget_ms.set(i64::from(stage.cfg.hold_budget_ms));
        stage.g.loss_pct.set(-1);
        stage.g.rtt_ms.set(-1);
        stage.g.queue_ms.set(-1);
        stage.g.recv_kbps.set(-1);
        stage.g.sent_kbps.set(-1);
        stage.g.run_max.set(-1);
        stage.g.path_loss_pct.set(-1);
        stage.g.path_queue_ms.set(-1);
        stage.g.path_kbps.set(-1);
        Ok(Built {
            inputs: vec![
                PortDecl::new("in", PortType::Frame),
                PortDecl::optional("feedback", PortType::Frame),
            ],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(stage),
        })
    }
}

struct Gauges {
    tier: Gauge,
    dred_ms: Gauge,
    loss_hint: Gauge,
    lbrr: Gauge,
    bitrate: Gauge,
    frame_ms: Gauge,
    fec_ratio: Gauge,
    hold: Gauge,
    budget_ms: Gauge,
    /// 1 while random loss that would get RaptorQ gets LBRR because
    /// another receiver hears the stream unrepaired
    /// ([`Reason::RandomLossRoom`](super::controller::Reason::RandomLossRoom)).
    fec_withheld: Gauge,
    heavy_withheld: Gauge,
    /// 1 while repair may ride in source packets (`FecLive::riding`).
    riding: Gauge,
    codec: Gauge,
    loss_pct: Gauge,
    rtt_ms: Gauge,
    queue_ms: Gauge,
    recv_kbps: Gauge,
    sent_kbps: Gauge,
    run_max: Gauge,
    path_loss_pct: Gauge,
    path_queue_ms: Gauge,
    path_kbps: Gauge,
}

struct Adapt {
    cfg: ControllerConfig,
    /// Made in the first cycle, so its clock starts with the graph's.
    controller: Option<Controller>,
    live: Arc<OpusLive>,
    codec_live: Option<Arc<CodecLive>>,
    fec_live: Option<Arc<FecLive>>,
    /// The first hop's transport samples, and the last one read.
    path_live: Option<Arc<PathLive>>,
    path_seen: u8,
    path_samples: Counter,
    path_congestion: Counter,
    path_reordered: Counter,
    path_unqueued: Counter,
    enabled: bool,
    /// The entry to read; `None`: `own_cell`'s, else the stream of the
    /// frames passing.
    sender: Option<u32>,
    /// Where `wire.packetize` publishes the id it sends with.
    own_cell: Option<Arc<LocalSender>>,
    /// Sums of the entries about this sender: packets expected, received.
    fb_expected: Counter,
    fb_received: Counter,
    send_clock: SendClock,
    /// What left, to compare a report's receive rate with.
    sent: SentBytes,
    fallback_bitrate: u32,
    reports: Counter,
    reports_outage: Counter,
    rate_limits: Counter,
    reports_early: Counter,
    report_errors: Counter,
    decisions: Counter,
    applied: Counter,
    not_live: Counter,
    decisions_by: [Counter; Reason::ALL.len()],
    /// Where every decision is written, and the entries that did not fit.
    journal: Option<JournalWriter>,
    /// Journal the controller's inputs too (`log_inputs`).
    log_inputs: bool,
    journal_dropped: Counter,
    /// What the latest report and first-hop sample said (the journal
    /// entry's report part), and the last decision.
    last: Entry,
    g: Gauges,
}

/// Whether a tier is sent with Opus (a name that is no profile counts as
/// Opus: the encoder keeps its own).
fn opus_tier(tier: &str) -> bool {
    Profile::by_name(tier).is_none_or(|p| p.codec == Codec::Opus)
}

impl Adapt {
    /// The encoder's part of `s`, and whether all of `s` could be applied.
    fn opus_settings(&self, s: &Settings, first: &Settings) -> (LiveOpusSettings, bool) {
        let opus = opus_tier(s.tier);
        let mut l = LiveOpusSettings::from(s);
        let fec_live = s.fec_ratio == 0 || self.fec_live.is_some();
        if self.codec_live.is_some() {
            // The adaptive encoder switches codec and frame size itself.
            return (l, fec_live);
        }
        let mut live = s.frame_ms == first.frame_ms && fec_live;
        if !opus && s.fec_ratio == 0 {
            // Codec2 for a path too narrow for Opus (no repair: bandwidth,
            // not loss): without the adaptive encoder, the cheapest Opus
            // rate is the nearest thing.
            l.bitrate = Profile::by_name("degraded").map_or(6_000, |p| p.bitrate);
            l.inband_fec = false;
            l.dred_ms = 0;
            live = false;
        } else if !opus {
            // Codec2 needs another stage: hold Opus at its most robust.
            l.bitrate = self.fallback_bitrate;
            l.inband_fec = true;
            l.dred_ms = 0;
            l.expected_loss = 30;
            live = false;
        }
        (l, live)
    }

    fn on_decision(&mut self, d: &Decision, first: &Settings) {
        self.decisions.inc();
        if let Some(i) = Reason::ALL.iter().position(|&r| r == d.reason) {
            self.decisions_by[i].inc();
        }
        let s = &d.settings;
        self.g.tier.set(
            TIERS
                .iter()
                .position(|&t| t == s.tier)
                .map_or(-1, |i| i as i64),
        );
        self.g.dred_ms.set(i64::from(s.dred_ms));
        self.g.loss_hint.set(i64::from(s.loss_hint));
        self.g.lbrr.set(i64::from(s.lbrr));
        self.g.bitrate.set(i64::from(s.bitrate));
        self.g.frame_ms.set(i64::from(s.frame_ms));
        self.g.fec_ratio.set(i64::from(s.fec_ratio));
        self.g.hold.set(i64::from(s.receiver_hold_frames));
        if let Some(p) = Profile::by_name(s.tier) {
            self.g.codec.set(i64::from(p.wire_codec()));
        }
        let (l, mut live) = self.opus_settings(s, first);
        let mut ok = self.enabled && self.live.set(l).is_ok();
        if let (Some(cell), true) = (self.codec_live.as_deref(), self.enabled) {
            // Published after the Opus cell: the encoder takes the profile's
            // bit rate on a tier change, then the Opus settings over it.
            match LiveCodecSettings::try_from(s) {
                Ok(c) => ok &= cell.set(c).is_ok(),
                Err(_) => {
                    ok = false;
                    live = false;
                }
            }
        }
        if let (Some(cell), true) = (self.fec_live.as_deref(), self.enabled) {
            // The repair goes with the tier it was chosen for: without the
            // codec cell a Codec2 tier is not sent, and neither is its
            // repair (the Opus fallback above is sized without it).
            let tier_sent = self.codec_live.is_some() || opus_tier(s.tier);
            let ratio = if tier_sent { s.fec_ratio } else { 0 };
            ok &= if s.fec_block > 0 {
                cell.set_block(ratio, s.fec_block)
            } else {
                cell.set(ratio)
            }
            .is_ok();
        }
        if !live {
            self.not_live.inc();
        }
        if ok {
            self.applied.inc();
        }
        self.last = Entry {
            at_ns: d.at_ns,
            reason: d.reason,
            settings: d.settings,
            applied: ok,
            live,
            codec_live: self.codec_live.is_some(),
            ..self.last
        };
        if let Some(j) = self.journal.as_mut() {
            if !j.push(self.last) {
                self.journal_dropped.inc();
            }
        }
    }
}

impl Adapt {
    /// Journals an input handed to the controller (`log_inputs`).
    fn log(&mut self, at_ns: u64, input: Input) {
        if !self.log_inputs {
            return;
        }
        if let Some(j) = self.journal.as_mut() {
            if !j.push_input(InputRecord { at_ns, input }) {
                self.journal_dropped.inc();
            }
        }
    }
}

impl Processor for Adapt {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let now = cx.now_ns;
        let mut ctl = match self.controller.take() {
            Some(c) => c,
            None => {
                let input = Input::Start {
                    cfg: self.cfg,
                    quantum_ns: cx.quantum_ns,
                };
                self.log(now, input);
                Controller::new(self.cfg, now)
            }
        };
        let first = {
            // The start-up settings are the profile's: what the encoder was
            // built with, so a frame size that differs from them is not live.
            let p = Profile::by_name(self.cfg.top_tier);
            Settings {
                frame_ms: p.map_or(20, |p| p.frame_ms),
                ..ctl.settings()
            }
        };
        if self.sender.is_none() {
            self.sender = self.own_cell.as_ref().and_then(|c| c.get());
        }
        let (input, out) = io.frames_in_out(0, 0);
        if let (Some(input), Some(out)) = (input, out) {
            for f in input.iter() {
                if self.sender.is_none() && self.own_cell.is_none() {
                    self.sender = Some(f.meta.stream);
                }
                self.send_clock.on_sent(f.meta.timestamp, now);
                self.sent
                    .on_sent(f.len() + PACKET_OVERHEAD_BYTES as usize, now);
                let _ = out.push_copy(f);
            }
        }
        if let (Some(fb), Some(me)) = (io.frames_in(1), self.sender) {
            for f in fb.iter() {
                if f.meta.codec != CodecId::FEEDBACK.0 {
                    continue;
                }
                let Ok(report) = FeedbackReport::parse(f.bytes()) else {
                    self.report_errors.inc();
                    continue;
                };
                if report.is_early() {
                    // A notice that loss began; the interval's own report
                    // counts these packets again.
                    for e in report.entries().filter(|e| e.sender_id == me) {
                        self.reports_early.inc();
                        // What the journal shows for a decision it moves:
                        // the loss so far in the interval, not the last
                        // full report's (the gauges keep those).
                        self.last.loss_pct = (e.loss_fraction() * 100.0).round() as i32;
                        self.last.run_max = i32::from(e.max_burst);
                        self.log(
                            now,
                            Input::Early {
                                reporter: f.meta.stream,
                                entry: e,
                            },
                        );
                        ctl.handle_early_report(f.meta.stream, &e, now);
                    }
                    continue;
                }
                for e in report.entries().filter(|e| e.sender_id == me) {
                    ctl.handle_receiver_info(f.meta.stream, report.receiver_info(), now);
                    self.reports.inc();
                    self.fb_expected.add(u64::from(e.expected));
                    self.fb_received.add(u64::from(e.received));
                    let l = &mut self.last;
                    l.loss_pct = (e.loss_fraction() * 100.0).round() as i32;
                    l.queue_ms = i32::from(e.queue_delay_100us) / 10;
                    l.recv_kbps = i32::from(e.recv_kbps);
                    l.run_max = i32::from(e.max_burst);
                    if let Some(rtt) = self.send_clock.rtt_ns(e.echo_ts, e.echo_hold_ms, now) {
                        l.rtt_ms = i32::try_from(rtt / 1_000_000).unwrap_or(i32::MAX);
                    }
                    self.g.loss_pct.set(i64::from(l.loss_pct));
                    self.g.queue_ms.set(i64::from(l.queue_ms));
                    self.g.recv_kbps.set(i64::from(l.recv_kbps));
                    self.g.run_max.set(i64::from(l.run_max));
                    self.g.rtt_ms.set(i64::from(l.rtt_ms));
                    let (outages, limits) = (ctl.outages(), ctl.rate_limits());
                    // The receiver's interval, in this sender's time: it
                    // ends where the echoed packet left plus the time the
                    // receiver held it.
                    let sent_kbps = self.send_clock.sent_at(e.echo_ts).and_then(|at| {
                        let end = at + u64::from(e.echo_hold_ms) * 1_000_000;
                        let start = end.saturating_sub(u64::from(report.interval_ms) * 1_000_000);
                        self.sent.kbps(start, end)
                    });
                    self.last.sent_kbps =
                        sent_kbps.map_or(-1, |k| ctl.with_repair(k).round() as i32);
                    self.g.sent_kbps.set(i64::from(self.last.sent_kbps));
                    self.log(
                        now,
                        Input::Report {
                            reporter: f.meta.stream,
                            entry: e,
                            info: report.receiver_info(),
                            sent_kbps,
                        },
                    );
                    ctl.handle_report_sent(f.meta.stream, &e, sent_kbps, now);
                    self.g.budget_ms.set(i64::from(ctl.hold_budget_ms()));
                    if ctl.outages() > outages {
                        self.reports_outage.inc();
                    }
                    self.rate_limits.add(ctl.rate_limits() - limits);
                }
            }
        }
        if let Some(cell) = self.fec_live.as_deref() {
            // Not a decision but what the receivers take: published with
            // `enabled` off too (the repair's bytes change, not its frames).
            let riding = ctl.repair_may_ride(now);
            if riding != cell.riding() {
                cell.set_riding(riding);
                self.g.riding.set(i64::from(riding));
            }
        }
        if let Some(s) = self
            .path_live
            .as_deref()
            .and_then(|c| c.take_new(&mut self.path_seen))
        {
            let (read, moved, reordered, unqueued) = (
                ctl.path_samples(),
                ctl.path_congestions(),
                ctl.path_reordered(),
                ctl.path_unqueued(),
            );
            self.log(now, Input::Path(s));
            ctl.handle_path(&s, now);
            self.g.budget_ms.set(i64::from(ctl.hold_budget_ms()));
            self.path_samples.add(ctl.path_samples() - read);
            self.path_congestion.add(ctl.path_congestions() - moved);
            self.path_reordered.add(ctl.path_reordered() - reordered);
            self.path_unqueued.add(ctl.path_unqueued() - unqueued);
            let l = &mut self.last;
            l.path_loss_pct = (s.loss_fraction() * 100.0).round() as i32;
            l.path_queue_ms = i32::from(s.queue_ms);
            l.path_kbps = i32::from(s.delivered_kbps);
            self.g.path_loss_pct.set(i64::from(l.path_loss_pct));
            self.g.path_queue_ms.set(i64::from(l.path_queue_ms));
            self.g.path_kbps.set(i64::from(l.path_kbps));
        }
        while let Some(d) = ctl.poll(now) {
            self.on_decision(&d, &first);
        }
        self.g.fec_withheld.set(i64::from(ctl.fec_withheld()));
        self.g.heavy_withheld.set(i64::from(ctl.heavy_withheld()));
        self.controller = Some(ctl);
        Flow::Continue
    }
}
