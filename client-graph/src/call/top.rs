//! `--top`: once a second, what the graph sends and why, what it hears,
//! the quality controller's last decisions, then the per-stage table.
//! Calls (`join`, `call`, `listen`) and `wzp-client run` show it.
//!
//! Everything comes from the graph's own figures (the stages' counters and
//! gauges, as `--stats-json` writes them), so the view is the same for any
//! graph: the sending lines need a `quality.adapt` stage, the hearing lines
//! a `jitter.adaptive` one; a graph with neither shows the table alone.
//! In a room, the relay's room updates name who is there (who said they
//! muted) and which media sender ids are whose; `wire.stream_demux`'s
//! `senderK` gauges say whose voice chain K plays, and its decoder's
//! `voiced_frames` whether they are talking ([`TALKING_FRAMES`] of the last
//! second).
//!
//! ```text
//! wzp top — call — room standup — 12.0 s
//! sending    good: Opus 24 kb/s, 20 ms frames, LBRR (loss hint 13); 37 kb/s on the wire
//!            receivers: worst loss 8 %, longest run 1, RTT 53 ms, queue 0 ms, got 35 kb/s, hold up to 60 ms
//!            first hop: loss 0 %, queue 0 ms, carried 31 kb/s
//! room       3: ann (you), bob (talking), carol (muted)
//! hearing    1 sender
//!   jb0      bob: delay 82 ms (target 40, burst hold 20); last second: 50 played, 2 concealed (DRED 0, LBRR 2, PLC 0), 0 rebuilt by repair, 0 late
//! decisions  2.04 s: random_loss -> tier=good bitrate=24000 ...
//! ```

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};

use wzp_engine::stats::{GraphStats, Report, Snapshot, StageReport};
use wzp_stages::codec::profile::{Codec, Codec2Mode, Profile};
use wzp_stages::quality::controller::TIERS;

use super::roster::{display_name, Roster, SharedRoster};

/// Quanta of the last second (of 50) a member's voice must have been heard
/// in for the view to say they are talking.
pub const TALKING_FRAMES: u64 = 10;
/// Most members the room line names; the rest are counted.
const ROOM_NAMES_SHOWN: usize = 12;

/// Decision lines kept for the view.
pub const DECISIONS_SHOWN: usize = 3;

/// The call's `--top` view: keeps the last report (for per-second figures)
/// and the controller's last decision lines.
pub struct Top {
    title: String,
    before: Option<Report>,
    decisions: VecDeque<String>,
    /// The figures at the last screen (timings are per screen).
    last: Option<Snapshot>,
    /// Stdout is a terminal: each screen clears it first.
    tty: bool,
    /// The room's members, as the connection last heard (rooms and calls).
    roster: Option<SharedRoster>,
}

impl Top {
    /// A view titled `title` (e.g. `call — room standup`, or a graph's name).
    pub fn new(title: impl Into<String>) -> Top {
        Top {
            title: title.into(),
            before: None,
            decisions: VecDeque::new(),
            last: None,
            tty: std::io::stdout().is_terminal(),
            roster: None,
        }
    }

    /// Names the room's members and whose voice each chain plays from
    /// `roster`.
    pub fn with_roster(mut self, roster: SharedRoster) -> Top {
        self.roster = Some(roster);
        self
    }

    /// Prints a screen of `stats` to stdout (timings since the last screen),
    /// clearing the terminal first when stdout is one.
    pub fn show(&mut self, stats: &GraphStats, elapsed_s: f64) {
        let screen = self.render(stats, elapsed_s);
        self.print(&screen);
    }

    /// A screen of `stats` (timings since the last one), not printed.
    pub fn render(&mut self, stats: &GraphStats, elapsed_s: f64) -> String {
        let snap = stats.snapshot();
        let report = stats.report(&snap, self.last.as_ref());
        self.last = Some(snap);
        self.frame(report, elapsed_s)
    }

    /// Prints `screen` to stdout, clearing the terminal first when stdout
    /// is one.
    pub fn print(&self, screen: &str) {
        let mut o = std::io::stdout().lock();
        if self.tty {
            let _ = write!(o, "\x1b[2J\x1b[H");
        }
        let _ = writeln!(o, "{screen}");
        let _ = o.flush();
    }

    /// The title from the next screen on (a direct call says which path
    /// its media takes).
    pub fn set_title(&mut self, title: impl Into<String>) {
        self.title = title.into();
    }

    /// The graph was rebuilt: its stages' timings start again.
    pub fn restart(&mut self) {
        self.last = None;
    }

    /// A decision line of the quality controller (`adapt: ...`): the view
    /// shows the last [`DECISIONS_SHOWN`] instead of printing each.
    pub fn decision(&mut self, line: &str) {
        if self.decisions.len() == DECISIONS_SHOWN {
            self.decisions.pop_front();
        }
        self.decisions.push_back(line.to_string());
    }

    /// One screen: `now` is the report of the last second (timings since
    /// the previous screen; counters and gauges as they stand).
    pub fn frame(&mut self, now: Report, elapsed_s: f64) -> String {
        let decisions: Vec<&str> = self.decisions.iter().map(String::as_str).collect();
        let roster = self
            .roster
            .as_ref()
            .and_then(|r| r.lock().unwrap_or_else(|p| p.into_inner()).clone());
        let s = format!(
            "wzp top — {} — {:.1} s\n{}\n{}",
            self.title,
            elapsed_s,
            summary_with(&now, self.before.as_ref(), &decisions, roster.as_ref()),
            now.table()
        );
        self.before = Some(now);
        s
    }
}

fn stage<'a>(r: &'a Report, kind: &str) -> Option<&'a StageReport> {
    r.stages.iter().find(|s| s.kind == kind)
}

/// The microphone's mute switch (not one of the hold's `audio.mute`s).
fn mic_mute(r: &Report) -> Option<&StageReport> {
    r.stages
        .iter()
        .find(|s| s.kind == "audio.mute" && !super::controls::is_hold_stage(&s.id))
}

fn gauge(s: &StageReport, key: &str) -> Option<i64> {
    s.gauges.get(key).copied()
}

fn counter(s: &StageReport, key: &str) -> u64 {
    s.counters.get(key).copied().unwrap_or(0)
}

/// A gauge as text, `?` while unknown (absent or negative: the controller
/// sets -1 until a report has said).
fn known(s: &StageReport, key: &str) -> String {
    match gauge(s, key) {
        Some(v) if v >= 0 => v.to_string(),
        _ => "?".to_string(),
    }
}

/// How much `key` grew since `before` (its whole count without one).
fn grew(now: &StageReport, before: Option<&Report>, key: &str) -> u64 {
    let was = before
        .and_then(|b| b.stages.iter().find(|s| s.id == now.id))
        .map_or(0, |s| counter(s, key));
    counter(now, key).saturating_sub(was)
}

/// The trailing number of a stage id (`jb0` -> `0`): the call graph names
/// each receive chain's stages with its index.
fn chain_index(id: &str) -> &str {
    let digits = id.trim_start_matches(|c: char| !c.is_ascii_digit());
    if digits.chars().all(|c| c.is_ascii_digit()) {
        digits
    } else {
        ""
    }
}

/// The stage of `kind` in the same receive chain as `of`.
fn same_chain<'a>(r: &'a Report, kind: &str, of: &StageReport) -> Option<&'a StageReport> {
    let i = chain_index(&of.id);
    r.stages
        .iter()
        .find(|s| s.kind == kind && chain_index(&s.id) == i)
}

/// How the decoder of `jb`'s chain filled what it concealed since
/// `before` (all of it without one): rebuilt from DRED, from LBRR, or PLC.
fn concealed_kinds(r: &Report, jb: &StageReport, before: Option<&Report>) -> (u64, u64, u64) {
    same_chain(r, "codec.adaptive_decode", jb)
        .or_else(|| same_chain(r, "codec.opus_decode", jb))
        .map_or((0, 0, 0), |d| {
            (
                grew(d, before, "dred_reconstructions"),
                grew(d, before, "fec_recovered"),
                grew(d, before, "classical_plc_invocations"),
            )
        })
}

/// What a call heard over its whole length, one line for the end of a
/// call: frames played, the share concealed and how (rebuilt from DRED or
/// LBRR, or PLC), frames rebuilt by RaptorQ repair, late ones, and the
/// jitter buffer's delay at the end. `None` when nothing was heard.
pub fn heard_line(r: &Report) -> Option<String> {
    let chains: Vec<&StageReport> = r
        .stages
        .iter()
        .filter(|s| s.kind == "jitter.adaptive" && counter(s, "played") > 0)
        .collect();
    if chains.is_empty() {
        return None;
    }
    let (mut played, mut concealed, mut late, mut repaired) = (0, 0, 0, 0);
    let (mut dred, mut lbrr, mut plc) = (0, 0, 0);
    let mut delay = Vec::new();
    for jb in &chains {
        played += counter(jb, "played");
        concealed += counter(jb, "concealed");
        late += counter(jb, "late");
        let (d, l, p) = concealed_kinds(r, jb, None);
        (dred, lbrr, plc) = (dred + d, lbrr + l, plc + p);
        repaired += same_chain(r, "fec.raptorq_decode", jb).map_or(0, |f| counter(f, "recovered"));
        delay.push(known(jb, "current_delay_ms"));
    }
    let share = 100.0 * concealed as f64 / (played + concealed).max(1) as f64;
    let senders = if chains.len() == 1 {
        String::new()
    } else {
        format!(" from {} senders", chains.len())
    };
    Some(format!(
        "heard {played} frames{senders} ({:.1} s), {share:.1} % concealed (rebuilt from DRED {dred}, \
         LBRR {lbrr}; PLC {plc}), {repaired} rebuilt by repair, {late} late; jitter buffer at {} ms",
        played as f64 / 50.0,
        delay.join("/")
    ))
}

/// The lines above the stage table.
#[cfg(test)]
pub fn summary(now: &Report, before: Option<&Report>, decisions: &[&str]) -> String {
    summary_with(now, before, decisions, None)
}

/// The lines above the stage table, naming the room's members from
/// `roster`.
pub fn summary_with(
    now: &Report,
    before: Option<&Report>,
    decisions: &[&str],
    roster: Option<&Roster>,
) -> String {
    let mut out = String::new();
    let muted_here = mic_mute(now).and_then(|m| gauge(m, "muted")) == Some(1);
    if muted_here {
        let talking = before.is_some()
            && mic_mute(now)
                .is_some_and(|m| grew(m, before, "voiced_muted_frames") >= TALKING_FRAMES);
        out.push_str(if talking {
            "MUTED      the others hear silence from this microphone, and you are talking\n"
        } else {
            "MUTED      the others hear silence from this microphone\n"
        });
    }
    let held = now
        .stages
        .iter()
        .find(|s| s.id == "hold_out" && s.kind == "audio.mute")
        .and_then(|h| gauge(h, "muted"))
        == Some(1);
    if held {
        out.push_str("ON HOLD    neither side hears the other; h takes the call back\n");
    }
    if let Some(a) = stage(now, "quality.adapt") {
        sending(&mut out, a);
    }
    if let Some(r) = roster {
        room(&mut out, now, before, r, muted_here);
    }
    hearing(&mut out, now, before, roster);
    for (i, d) in decisions.iter().enumerate() {
        let head = if i == 0 { "decisions" } else { "" };
        let d = d.strip_prefix("adapt: ").unwrap_or(d);
        out.push_str(&format!("{head:<10} {d}\n"));
    }
    out
}

fn sending(out: &mut String, a: &StageReport) {
    let tier = gauge(a, "tier")
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| TIERS.get(i).copied());
    let codec = match tier.and_then(Profile::by_name).map(|p| p.codec) {
        Some(Codec::Opus) => format!(
            "Opus {} kb/s",
            gauge(a, "bitrate").unwrap_or(0) as f64 / 1000.0
        ),
        Some(Codec::Codec2 { mode }) => match mode {
            Codec2Mode::M3200 => "Codec2 3200".to_string(),
            Codec2Mode::M1200 => "Codec2 1200".to_string(),
        },
        None => "no tier yet".to_string(),
    };
    let mut redundancy = Vec::new();
    if gauge(a, "lbrr").unwrap_or(0) > 0 {
        redundancy.push(format!("LBRR (loss hint {})", known(a, "loss_hint")));
    }
    if let Some(ms) = gauge(a, "dred_ms").filter(|&m| m > 0) {
        redundancy.push(format!(
            "DRED {ms} ms (loss hint {})",
            known(a, "loss_hint")
        ));
    }
    if let Some(r) = gauge(a, "fec_ratio").filter(|&r| r > 0) {
        let rides = if gauge(a, "repair_rides").unwrap_or(0) > 0 {
            ", riding in source packets"
        } else {
            ""
        };
        redundancy.push(format!("RaptorQ {r} %{rides}"));
    }
    let redundancy = if redundancy.is_empty() {
        "no redundancy".to_string()
    } else {
        redundancy.join(", ")
    };
    out.push_str(&format!(
        "{:<10} {}: {codec}, {} ms frames, {redundancy}; {} kb/s on the wire\n",
        "sending",
        tier.unwrap_or("?"),
        known(a, "frame_ms"),
        known(a, "sent_kbps"),
    ));
    out.push_str(&format!(
        "{:<10} receivers: worst loss {} %, longest run {}, RTT {} ms, queue {} ms, got {} kb/s, hold up to {} ms\n",
        "",
        known(a, "loss_pct"),
        known(a, "run_max"),
        known(a, "rtt_ms"),
        known(a, "queue_ms"),
        known(a, "recv_kbps"),
        known(a, "hold_budget_ms"),
    ));
    out.push_str(&format!(
        "{:<10} first hop: loss {} %, queue {} ms, carried {} kb/s\n",
        "",
        known(a, "path_loss_pct"),
        known(a, "path_queue_ms"),
        known(a, "path_kbps"),
    ));
}

/// The media sender id receive chain `chain` plays (`wire.stream_demux`'s
/// `senderK` gauge), if it has one.
fn chain_sender(now: &Report, chain: &str) -> Option<u32> {
    let demux = stage(now, "wire.stream_demux")?;
    let id = gauge(demux, &format!("sender{chain}"))?;
    u32::try_from(id).ok()
}

/// Whether the chain playing `sender` was heard in [`TALKING_FRAMES`] of
/// the last second.
fn talking(now: &Report, before: Option<&Report>, senders: &[u32]) -> bool {
    now.stages
        .iter()
        .filter(|s| s.kind == "codec.adaptive_decode")
        .any(|dec| {
            chain_sender(now, chain_index(&dec.id)).is_some_and(|id| senders.contains(&id))
                && before.is_some()
                && grew(dec, before, "voiced_frames") >= TALKING_FRAMES
        })
}

/// The room as `--stats-json` writes it (key `room`): each member with
/// its fingerprint, alias, relay label (on another relay), whether it is
/// this client, said it muted, or is talking (as `--top` reads it), and the
/// media sender ids the relay bound to it.
pub fn room_json(now: &Report, before: Option<&Report>, r: &Roster) -> serde_json::Value {
    let muted_here = mic_mute(now).and_then(|m| gauge(m, "muted")) == Some(1);
    let participants: Vec<serde_json::Value> = r
        .participants
        .iter()
        .map(|p| {
            let me = p.fingerprint == r.me;
            serde_json::json!({
                "fingerprint": p.fingerprint.to_string(),
                "alias": p.alias,
                "relay_label": p.relay_label,
                "you": me,
                "muted": p.muted || (me && muted_here),
                "recording": p.recording,
                "talking": !me && talking(now, before, &p.senders),
                "senders": p.senders,
            })
        })
        .collect();
    serde_json::json!({ "count": r.count, "participants": participants })
}

fn room(out: &mut String, now: &Report, before: Option<&Report>, r: &Roster, muted_here: bool) {
    let mut names: Vec<String> = r
        .participants
        .iter()
        .take(ROOM_NAMES_SHOWN)
        .map(|p| {
            let mut marks = Vec::new();
            let me = p.fingerprint == r.me;
            if me {
                marks.push("you");
            }
            if p.muted || (me && muted_here) {
                marks.push("muted");
            } else if !me && talking(now, before, &p.senders) {
                marks.push("talking");
            }
            if p.recording {
                marks.push("recording");
            }
            let name = display_name(p);
            if marks.is_empty() {
                name
            } else {
                format!("{name} ({})", marks.join(", "))
            }
        })
        .collect();
    let listed = r.participants.len().min(ROOM_NAMES_SHOWN);
    if (r.count as usize) > listed {
        names.push(format!("and {} more", r.count as usize - listed));
    }
    out.push_str(&format!(
        "{:<10} {}: {}\n",
        "room",
        r.count,
        names.join(", ")
    ));
}

fn hearing(out: &mut String, now: &Report, before: Option<&Report>, roster: Option<&Roster>) {
    if stage(now, "jitter.adaptive").is_none() {
        return;
    }
    let chains: Vec<&StageReport> = now
        .stages
        .iter()
        .filter(|s| s.kind == "jitter.adaptive" && counter(s, "played") > 0)
        .collect();
    if chains.is_empty() {
        out.push_str(&format!("{:<10} nobody yet\n", "hearing"));
        return;
    }
    let n = chains.len();
    out.push_str(&format!(
        "{:<10} {n} sender{}\n",
        "hearing",
        if n == 1 { "" } else { "s" }
    ));
    for jb in chains {
        let (dred, lbrr, plc) = concealed_kinds(now, jb, before);
        let rebuilt =
            same_chain(now, "fec.raptorq_decode", jb).map_or(0, |f| grew(f, before, "recovered"));
        let who = roster
            .zip(chain_sender(now, chain_index(&jb.id)))
            .and_then(|(r, id)| r.by_sender(id))
            .map(|p| format!("{}: ", display_name(p)))
            .unwrap_or_default();
        out.push_str(&format!(
            "  {:<8} {who}delay {} ms (target {}, burst hold {}); last second: {} played, {} concealed (DRED {dred}, LBRR {lbrr}, PLC {plc}), {rebuilt} rebuilt by repair, {} late\n",
            jb.id,
            known(jb, "current_delay_ms"),
            known(jb, "target_delay_ms"),
            known(jb, "burst_hold_ms"),
            grew(jb, before, "played"),
            grew(jb, before, "concealed"),
            grew(jb, before, "late"),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn st(id: &str, kind: &str, counters: &[(&str, u64)], gauges: &[(&str, i64)]) -> StageReport {
        StageReport {
            id: id.into(),
            kind: kind.into(),
            domain: "clocked",
            cycles: 50,
            busy_p50_us: 1.0,
            busy_p99_us: 2.0,
            busy_max_us: 3.0,
            busy_mean_us: 1.0,
            wait_p99_us: 1.0,
            busy_ratio: 0.0,
            counters: counters
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            gauges: gauges
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn report(stages: Vec<StageReport>) -> Report {
        Report {
            graph: "call".into(),
            quantum_ms: 20.0,
            rate: 48_000,
            domains: vec![],
            stages,
        }
    }

    fn good_tier() -> i64 {
        TIERS.iter().position(|&t| t == "good").unwrap() as i64
    }

    fn adapt(extra: &[(&str, i64)]) -> StageReport {
        let mut g = vec![
            ("tier", good_tier()),
            ("bitrate", 24_000),
            ("frame_ms", 20),
            ("lbrr", 0),
            ("dred_ms", 0),
            ("fec_ratio", 0),
            ("loss_hint", 0),
            ("sent_kbps", 37),
            ("loss_pct", 8),
            ("run_max", 1),
            ("rtt_ms", 53),
            ("queue_ms", 0),
            ("recv_kbps", -1),
            ("hold_budget_ms", 60),
            ("path_loss_pct", 0),
            ("path_queue_ms", 0),
            ("path_kbps", 31),
        ];
        for (k, v) in extra {
            if let Some(e) = g.iter_mut().find(|(n, _)| n == k) {
                e.1 = *v;
            } else {
                g.push((k, *v));
            }
        }
        st("adapt", "quality.adapt", &[], &g)
    }

    fn chain(
        i: u32,
        played: u64,
        concealed: u64,
        dred: u64,
        lbrr: u64,
        plc: u64,
    ) -> Vec<StageReport> {
        vec![
            st(
                &format!("fec_dec{i}"),
                "fec.raptorq_decode",
                &[("recovered", 3 * u64::from(i))],
                &[],
            ),
            st(
                &format!("jb{i}"),
                "jitter.adaptive",
                &[("played", played), ("concealed", concealed), ("late", 0)],
                &[
                    ("current_delay_ms", 82),
                    ("target_delay_ms", 40),
                    ("burst_hold_ms", 20),
                ],
            ),
            st(
                &format!("dec{i}"),
                "codec.adaptive_decode",
                &[
                    ("dred_reconstructions", dred),
                    ("fec_recovered", lbrr),
                    ("classical_plc_invocations", plc),
                ],
                &[],
            ),
        ]
    }

    /// Two chains: chain 0 plays sender 70 (heard in `voiced0` quanta),
    /// chain 1 sender 90; a third output is free.
    fn room_call(voiced0: u64, voiced1: u64) -> Vec<StageReport> {
        let mut stages = vec![st(
            "demux",
            "wire.stream_demux",
            &[],
            &[("sender0", 70), ("sender1", 90), ("sender2", -1)],
        )];
        for (i, v) in [(0, voiced0), (1, voiced1)] {
            let mut c = chain(i, 50, 0, 0, 0, 0);
            c[2].counters.insert("voiced_frames".into(), v);
            stages.extend(c);
        }
        stages
    }

    fn member(
        n: u8,
        alias: &str,
        muted: bool,
        senders: &[u32],
    ) -> wzp_proto::signal::RoomParticipant {
        wzp_proto::signal::RoomParticipant {
            alias: Some(alias.into()),
            muted,
            senders: senders.to_vec(),
            ..wzp_proto::signal::RoomParticipant::new(wzp_proto::Fingerprint([n; 16]))
        }
    }

    /// Ann (this client, sender 50), bob (70), cy (muted, 90) and, when
    /// `dee`, dee, who has sent nothing yet.
    fn roster_of(dee: bool) -> Roster {
        let mut participants = vec![
            member(1, "ann", false, &[50]),
            member(2, "bob", false, &[70]),
            member(3, "cy", true, &[90]),
        ];
        if dee {
            participants.push(member(4, "dee", false, &[]));
        }
        Roster {
            me: wzp_proto::Fingerprint([1; 16]),
            count: participants.len() as u32,
            participants,
        }
    }

    #[test]
    fn the_room_line_names_who_talks_and_who_muted_and_each_chain_its_talker() {
        let roster = roster_of(true);
        // Bob's chain was voiced in 30 quanta of the last second, cy's
        // (muted) in none.
        let before = report(room_call(100, 40));
        let now = report(room_call(130, 40));
        let s = summary_with(&now, Some(&before), &[], Some(&roster));
        assert!(
            s.contains("room       4: ann (you), bob (talking), cy (muted), dee\n"),
            "{s}"
        );
        assert!(s.contains("  jb0      bob: delay 82 ms"), "{s}");
        assert!(s.contains("  jb1      cy: delay 82 ms"), "{s}");
        // Under TALKING_FRAMES is not talking; the first screen (nothing
        // before it) says nothing of talking.
        let quiet = report(room_call(100 + TALKING_FRAMES - 1, 40));
        let s = summary_with(&quiet, Some(&before), &[], Some(&roster));
        assert!(
            s.contains("room       4: ann (you), bob, cy (muted), dee\n"),
            "{s}"
        );
        let s = summary_with(&now, None, &[], Some(&roster));
        assert!(s.contains("bob, cy"), "{s}");
        // Muted here shows at once, before the relay's update says so; a
        // sender nobody owns plays unnamed.
        let mut stages = room_call(100, 40);
        stages.push(st("mute", "audio.mute", &[], &[("muted", 1)]));
        stages[0].gauges.insert("sender0".into(), 71);
        let s = summary_with(&report(stages), None, &[], Some(&roster));
        assert!(s.contains("4: ann (you, muted), bob"), "{s}");
        assert!(s.contains("  jb0      delay 82 ms"), "{s}");
    }

    #[test]
    fn the_room_in_stats_json_says_who_is_who_talks_and_muted() {
        let roster = roster_of(false);
        let before = report(room_call(100, 40));
        let mut now = room_call(130, 40);
        now.push(st("mute", "audio.mute", &[], &[("muted", 1)]));
        let v = room_json(&report(now), Some(&before), &roster);
        assert_eq!(v["count"], 3);
        let p = v["participants"].as_array().unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0]["alias"], "ann");
        assert_eq!(p[0]["you"], true);
        assert_eq!(p[0]["muted"], true, "muted here shows at once");
        assert_eq!(p[1]["talking"], true);
        assert_eq!(p[1]["muted"], false);
        assert_eq!(p[1]["senders"], serde_json::json!([70]));
        assert_eq!(p[2]["muted"], true);
        assert_eq!(p[2]["talking"], false);
        assert_eq!(
            p[2]["fingerprint"],
            wzp_proto::Fingerprint([3; 16]).to_string()
        );
    }

    #[test]
    fn who_records_the_call_is_marked_in_the_view_and_the_json() {
        let mut roster = roster_of(false);
        roster.participants[1].recording = true;
        roster.participants[2].recording = true;
        let before = report(room_call(100, 40));
        let now = report(room_call(130, 40));
        let s = summary_with(&now, Some(&before), &[], Some(&roster));
        assert!(
            s.contains(
                "room       3: ann (you), bob (talking, recording), cy (muted, recording)\n"
            ),
            "{s}"
        );
        let v = room_json(&now, Some(&before), &roster);
        let p = v["participants"].as_array().unwrap();
        let recording: Vec<bool> = p.iter().map(|m| m["recording"] == true).collect();
        assert_eq!(recording, [false, true, true]);
    }

    #[test]
    fn a_big_room_names_the_first_members_and_counts_the_rest() {
        let roster = Roster {
            me: wzp_proto::Fingerprint([1; 16]),
            participants: (1..=20)
                .map(|n| member(n, &format!("m{n}"), false, &[]))
                .collect(),
            count: 30,
        };
        let s = summary_with(&report(vec![]), None, &[], Some(&roster));
        assert!(s.contains("room       30: m1 (you), m2, "), "{s}");
        assert!(s.contains(", m12, and 18 more\n"), "{s}");
        assert!(!s.contains("m13"), "{s}");
    }

    #[test]
    fn the_sending_line_names_the_tier_codec_and_redundancy() {
        let s = summary(
            &report(vec![adapt(&[("lbrr", 1), ("loss_hint", 13)])]),
            None,
            &[],
        );
        assert!(
            s.contains("sending    good: Opus 24 kb/s, 20 ms frames, LBRR (loss hint 13); 37 kb/s on the wire"),
            "{s}"
        );
        // recv_kbps is -1 until a report says: shown as unknown.
        assert!(s.contains("worst loss 8 %, longest run 1, RTT 53 ms, queue 0 ms, got ? kb/s, hold up to 60 ms"), "{s}");
        assert!(
            s.contains("first hop: loss 0 %, queue 0 ms, carried 31 kb/s"),
            "{s}"
        );

        let s = summary(
            &report(vec![adapt(&[
                ("bitrate", 11_000),
                ("fec_ratio", 100),
                ("repair_rides", 1),
            ])]),
            None,
            &[],
        );
        assert!(
            s.contains("Opus 11 kb/s, 20 ms frames, RaptorQ 100 %, riding in source packets;"),
            "{s}"
        );
        let s = summary(
            &report(vec![adapt(&[("dred_ms", 1000), ("loss_hint", 14)])]),
            None,
            &[],
        );
        assert!(s.contains("DRED 1000 ms (loss hint 14)"), "{s}");
        assert!(!s.contains("no redundancy"), "{s}");
        let s = summary(&report(vec![adapt(&[])]), None, &[]);
        assert!(s.contains("no redundancy"), "{s}");

        let poor = TIERS.iter().position(|&t| t == "poor").unwrap() as i64;
        let s = summary(
            &report(vec![adapt(&[("tier", poor), ("frame_ms", 40)])]),
            None,
            &[],
        );
        assert!(
            s.contains("sending    poor: Codec2 3200, 40 ms frames"),
            "{s}"
        );
        // A tier index out of the table (or unset) says so rather than guess.
        let s = summary(&report(vec![adapt(&[("tier", -1)])]), None, &[]);
        assert!(s.contains("sending    ?: no tier yet"), "{s}");
    }

    #[test]
    fn a_muted_microphone_heads_the_view() {
        let muted = |m: i64| {
            summary(
                &report(vec![
                    st("mute", "audio.mute", &[], &[("muted", m)]),
                    adapt(&[]),
                ]),
                None,
                &[],
            )
        };
        assert!(muted(1).starts_with("MUTED "), "{}", muted(1));
        assert!(!muted(0).contains("MUTED"), "{}", muted(0));
        // Talking into it over the last second says so.
        let mute = |voiced: u64| {
            st(
                "mute",
                "audio.mute",
                &[("voiced_muted_frames", voiced)],
                &[("muted", 1)],
            )
        };
        let s = summary(&report(vec![mute(40)]), Some(&report(vec![mute(10)])), &[]);
        assert!(
            s.starts_with(
                "MUTED      the others hear silence from this microphone, and you are talking\n"
            ),
            "{s}"
        );
        let s = summary(&report(vec![mute(15)]), Some(&report(vec![mute(10)])), &[]);
        assert!(!s.contains("talking"), "{s}");
    }

    #[test]
    fn hearing_counts_the_last_second_per_receive_chain() {
        let mut before = chain(0, 100, 10, 2, 3, 5);
        before.extend(chain(1, 0, 0, 0, 0, 0));
        let mut now = chain(0, 150, 14, 3, 4, 7);
        now.extend(chain(1, 0, 0, 0, 0, 0));
        let s = summary(&report(now), Some(&report(before)), &[]);
        // Only the chain that played anything; figures since the last screen.
        assert!(s.contains("hearing    1 sender\n"), "{s}");
        assert!(
            s.contains("  jb0      delay 82 ms (target 40, burst hold 20); last second: 50 played, 4 concealed (DRED 1, LBRR 1, PLC 2), 0 rebuilt by repair, 0 late"),
            "{s}"
        );
        assert!(!s.contains("jb1"), "{s}");
        // No adapt stage in the graph: no sending lines.
        assert!(!s.contains("sending"), "{s}");

        // Two chains, the first screen: counts since the start.
        let mut now = chain(0, 150, 14, 3, 4, 7);
        now.extend(chain(1, 40, 1, 0, 0, 1));
        let s = summary(&report(now), None, &[]);
        assert!(s.contains("hearing    2 senders\n"), "{s}");
        assert!(s.contains("  jb1      delay 82 ms (target 40, burst hold 20); last second: 40 played, 1 concealed (DRED 0, LBRR 0, PLC 1), 3 rebuilt by repair"), "{s}");

        let s = summary(&report(chain(0, 0, 0, 0, 0, 0)), None, &[]);
        assert!(s.contains("hearing    nobody yet"), "{s}");
        // A graph with no jitter buffer and no controller: no lines.
        let s = summary(
            &report(vec![st("src", "audio.tone_source", &[], &[])]),
            None,
            &[],
        );
        assert_eq!(s, "");
    }

    #[test]
    fn the_view_keeps_the_last_decisions_and_counts_from_the_screen_before() {
        let mut top = Top::new("call — room standup");
        for i in 0..5 {
            top.decision(&format!("adapt: reason{i} -> tier=good at {i}.00 s"));
        }
        let first = top.frame(report(chain(0, 50, 2, 0, 0, 2)), 1.0);
        assert!(
            first.starts_with("wzp top — call — room standup — 1.0 s\n"),
            "{first}"
        );
        assert!(!first.contains("reason1"), "{first}");
        assert!(
            first.contains("decisions  reason2 -> tier=good at 2.00 s\n"),
            "{first}"
        );
        assert!(
            first.contains("           reason4 -> tier=good at 4.00 s\n"),
            "{first}"
        );
        // The stage table follows.
        assert!(first.contains("STAGE"), "{first}");
        let second = top.frame(report(chain(0, 100, 3, 0, 0, 3)), 2.0);
        assert!(
            second.contains("last second: 50 played, 1 concealed (DRED 0, LBRR 0, PLC 1)"),
            "{second}"
        );
    }

    #[test]
    fn the_end_of_a_call_says_what_it_heard_over_its_whole_length() {
        assert_eq!(heard_line(&report(vec![])), None);
        let r = report(vec![
            st(
                "jb0",
                "jitter.adaptive",
                &[("played", 950), ("concealed", 50), ("late", 2)],
                &[("current_delay_ms", 60)],
            ),
            st(
                "dec0",
                "codec.adaptive_decode",
                &[
                    ("dred_reconstructions", 20),
                    ("fec_recovered", 5),
                    ("classical_plc_invocations", 25),
                ],
                &[],
            ),
            st("rq0", "fec.raptorq_decode", &[("recovered", 7)], &[]),
            // A chain that never played (a sender that left at once).
            st("jb1", "jitter.adaptive", &[("played", 0)], &[]),
        ]);
        assert_eq!(
            heard_line(&r).unwrap(),
            "heard 950 frames (19.0 s), 5.0 % concealed (rebuilt from DRED 20, LBRR 5; PLC 25), \
             7 rebuilt by repair, 2 late; jitter buffer at 60 ms"
        );
        let two = report(vec![
            st(
                "jb0",
                "jitter.adaptive",
                &[("played", 100)],
                &[("current_delay_ms", 40)],
            ),
            st(
                "jb1",
                "jitter.adaptive",
                &[("played", 100)],
                &[("current_delay_ms", -1)],
            ),
        ]);
        assert!(
            heard_line(&two)
                .unwrap()
                .starts_with("heard 200 frames from 2 senders (4.0 s), 0.0 %")
                && heard_line(&two)
                    .unwrap()
                    .ends_with("jitter buffer at 40/? ms"),
            "{:?}",
            heard_line(&two)
        );
    }

    #[test]
    fn a_held_call_says_so_above_the_table() {
        let hold = |m: i64| report(vec![st("hold_out", "audio.mute", &[], &[("muted", m)])]);
        assert!(summary(&hold(1), None, &[]).starts_with("ON HOLD "));
        assert!(!summary(&hold(0), None, &[]).contains("ON HOLD"));
        // The microphone's own mute is another line.
        let muted = report(vec![st("mute", "audio.mute", &[], &[("muted", 1)])]);
        assert!(!summary(&muted, None, &[]).contains("ON HOLD"));
    }
}
