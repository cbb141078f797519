//! Live codec and tier switching end to end: a loopback graph (speech ->
//! `codec.adaptive_encode` -> jitter buffer -> `codec.adaptive_decode` ->
//! WAV), real libopus and real Codec2, stepped by hand under the counting
//! allocator. The control side flips the live cells mid-stream: Opus good
//! -> Codec2 3200 -> Codec2 1200 -> Opus good -> Opus degraded (6 kb/s,
//! 40 ms frames) -> Opus fair. At the receiver each switch may cost at most
//! one concealed frame (counted by the decoder's and jitter buffer's
//! counters), and every phase's audio must follow the talker (loudness
//! contour, level; waveform for the Opus tiers).
//!
//! The Codec2 workers run beside the test: after each cycle the test waits
//! (bounded) on their counters, so results do not depend on scheduling.

wzp_engine::install_alloc_checker!();

use std::sync::Arc;

mod frame_support;

use frame_support::{counter, envelope, pearson, rms, wait_workers};
use wzp_engine::prelude::*;
use wzp_engine::rt_check::{checker_installed, count_allocs};
use wzp_stages::audio::signal::{speech_like, xcorr_peak};
use wzp_stages::audio::wav_source::read_wav_mono;
use wzp_stages::codec::live::{CodecLive, LiveCodecSettings, LiveOpusSettings, OpusLive};
use wzp_stages::codec::profile::Profile;

const GRAPH: &str = r#"
[graph]
name = "adaptive-switch"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "src"
kind = "audio.wav_source"
params = { path = "builtin:speech", rate = 16000, loop = true }
[[stage]]
id = "up"
kind = "audio.resample"
params = { from = 16000, to = 48000 }
[[stage]]
id = "enc"
kind = "codec.adaptive_encode"
params = { profile = "good", dred_ms = 0, expected_loss = 0, live_settings = "enc_live", codec_live = "codec_live" }
[[stage]]
id = "jb"
kind = "jitter.adaptive"
params = { min_delay = "20ms", max_delay = "200ms", initial_delay = "40ms" }
[[stage]]
id = "dec"
kind = "codec.adaptive_decode"
params = { profile = "good", lookahead_frames = "${lookahead}", fill_gaps = false, complexity = 6 }
[[stage]]
id = "down"
kind = "audio.resample"
params = { from = 48000, to = 16000 }
[[stage]]
id = "sink"
kind = "audio.wav_sink"
params = { path = "${out}", rate = 16000, buffer = "1m" }

[[link]]
from = "src.out"
to = "up.in"
[[link]]
from = "up.out"
to = "enc.in"
[[link]]
from = "enc.out"
to = "jb.in"
[[link]]
from = "jb.out"
to = "dec.in"
[[link]]
from = "dec.out"
to = "down.in"
[[link]]
from = "down.out"
to = "sink.in"
"#;

/// Cycles (20 ms) per phase: 3 s.
const PHASE: u64 = 150;

/// (tier, Opus bit rate to publish with it).
const PHASES: [(&str, u32); 6] = [
    ("good", 24_000),
    ("poor", 0),
    ("catastrophic", 0),
    ("good", 24_000),
    ("degraded", 6_000),
    ("fair", 16_000),
];

fn concealed(g: &Graph) -> u64 {
    [
        "classical_plc_invocations",
        "dred_reconstructions",
        "fec_recovered",
        "codec2_concealed",
    ]
    .iter()
    .map(|n| counter(g, "dec", n))
    .sum()
}

struct Phase {
    tier: &'static str,
    concealed: u64,
    jb_concealed: u64,
    /// Best envelope match over lags, and that lag (16 kHz samples).
    envelope: f64,
    lag: usize,
    level: f64,
    waveform: f32,
}

struct Outcome {
    phases: Vec<Phase>,
    enc_switches: u64,
    enc_frame_switches: u64,
    dec_switches: u64,
    switch_concealed: u64,
    codec2_decoded: u64,
    opus_decoded: u64,
    allocations: u32,
}

fn run(lookahead: u32) -> Outcome {
    assert!(checker_installed());
    let dir = std::env::temp_dir().join(format!(
        "wzp-adaptive-switch-{}-{lookahead}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.wav");
    let vars = [
        ("out".to_string(), out.display().to_string()),
        ("lookahead".to_string(), lookahead.to_string()),
    ]
    .into_iter()
    .collect();
    let spec = GraphSpec::parse(GRAPH, "adaptive-switch.toml", &vars).unwrap();
    let opus_cell = Arc::new(OpusLive::new());
    let codec_cell = Arc::new(CodecLive::new());
    let mut res = Resources::new();
    res.insert("enc_live", opus_cell.clone());
    res.insert("codec_live", codec_cell.clone());
    let mut graph = Graph::new(compile(&spec, &wzp_stages::registry(), &res).unwrap());
    let mut allocations = 0;
    let mut marks = Vec::new();
    let mut cycle = 0u64;
    for (tier, bitrate) in PHASES {
        let profile = Profile::by_name(tier).unwrap();
        if bitrate > 0 {
            opus_cell
                .set(LiveOpusSettings {
                    bitrate,
                    dred_ms: 0,
                    expected_loss: 0,
                    inband_fec: false,
                })
                .unwrap();
        }
        codec_cell.set(LiveCodecSettings::of(profile)).unwrap();
        marks.push((concealed(&graph), counter(&graph, "jb", "concealed")));
        for _ in 0..PHASE {
            let ((), n) = count_allocs(|| {
                graph.step();
            });
            allocations += n;
            cycle += 1;
            // The encoder's worker makes a 3200 frame per cycle and a 1200
            // frame every other one; the decoder's answers every job.
            let want = cycle + cycle / 2;
            wait_workers(&graph, want);
        }
    }
    marks.push((concealed(&graph), counter(&graph, "jb", "concealed")));
    let o = Outcome {
        phases: Vec::new(),
        enc_switches: counter(&graph, "enc", "codec_switches"),
        enc_frame_switches: counter(&graph, "enc", "frame_size_switches"),
        dec_switches: counter(&graph, "dec", "codec_switches"),
        switch_concealed: counter(&graph, "dec", "switch_concealed"),
        codec2_decoded: counter(&graph, "dec", "codec2_frames_decoded"),
        opus_decoded: counter(&graph, "dec", "frames_decoded"),
        allocations,
    };
    drop(graph);
    let received = read_wav_mono(&out).unwrap().samples;
    let _ = std::fs::remove_dir_all(&dir);
    let one = speech_like(16_000);
    let sent: Vec<f32> = one.iter().cycle().take(received.len()).copied().collect();
    let per_phase = PHASE as usize * 320;
    let mut phases = Vec::new();
    for (i, (tier, _)) in PHASES.iter().enumerate() {
        // The phase's speech, leaving out the switch itself and the
        // first 0.3 s after it (the jitter buffer and codecs settle).
        let from = i * per_phase + 4_800;
        let to = (i + 1) * per_phase - 4_800;
        let ref_env = envelope(&sent[from..to]);
        let (mut envelope_best, mut lag) = (f64::MIN, 0);
        for l in (0..4_800).step_by(40) {
            let e = pearson(&ref_env, &envelope(&received[from + l..to + l]));
            if e > envelope_best {
                (envelope_best, lag) = (e, l);
            }
        }
        let level = rms(&received[from + lag..to + lag]) / rms(&sent[from..to]);
        let (_, waveform) = xcorr_peak(
            &received[from + lag - 160..to + lag + 160],
            &sent[from..to],
            320,
        );
        phases.push(Phase {
            tier,
            concealed: marks[i + 1].0 - marks[i].0,
            jb_concealed: marks[i + 1].1 - marks[i].1,
            envelope: envelope_best,
            lag,
            level,
            waveform,
        });
    }
    for p in &phases {
        eprintln!(
            "lookahead {lookahead} {:>12}: concealed {} (jb {}), envelope {:.3} at lag {}, level {:.2}, waveform {:.3}",
            p.tier, p.concealed, p.jb_concealed, p.envelope, p.lag, p.level, p.waveform
        );
    }
    Outcome { phases, ..o }
}

fn check(o: &Outcome) {
    assert_eq!(o.allocations, 0, "allocations on the real-time path");
    // Sender: Opus -> 3200 -> 1200 -> Opus are codec switches; good ->
    // degraded -> fair change the Opus frame size twice.
    assert_eq!(o.enc_switches, 3);
    assert_eq!(o.enc_frame_switches, 2);
    // Receiver: it followed the codec ids, with no reconfiguration.
    assert_eq!(o.dec_switches, 2);
    // 3 s of 3200 (20 ms) and 3 s of 1200 (40 ms) frames, give or take
    // the frames in flight at the switches.
    assert!(
        (215..=230).contains(&o.codec2_decoded),
        "{} Codec2 frames decoded",
        o.codec2_decoded
    );
    assert!(o.opus_decoded > 500, "{} Opus frames", o.opus_decoded);
    for (i, p) in o.phases.iter().enumerate() {
        // At most one frame concealed per switch, by any means: the phase
        // starts with the switch into its tier (none before the first).
        let budget = u64::from(i > 0);
        assert!(
            p.concealed + p.jb_concealed <= budget,
            "{}: {} concealed by the decoder, {} by the jitter buffer",
            p.tier,
            p.concealed,
            p.jb_concealed
        );
        // Codec2 1200 interpolates its parameters over 40 ms frames: the
        // plain codec.codec2_* stages score 0.70-0.81 on these phases
        // (measured); Opus and Codec2 3200 above 0.96.
        let floor = if p.tier == "catastrophic" { 0.65 } else { 0.9 };
        assert!(
            p.envelope > floor,
            "{}: loudness contour match {:.3}",
            p.tier,
            p.envelope
        );
        assert!(
            (0.4..2.5).contains(&p.level),
            "{}: output level {:.2} of the input",
            p.tier,
            p.level
        );
        // Opus keeps the waveform; Codec2 synthesises its own phases.
        if Profile::by_name(p.tier).unwrap().is_opus() {
            assert!(
                p.waveform > 0.6,
                "{}: waveform correlation {:.3}",
                p.tier,
                p.waveform
            );
        }
    }
}

/// As graphs/call.toml runs its decoders: no look-ahead of their own, the
/// jitter buffer attaching the next frame. Opus -> Codec2 costs one quantum
/// of Opus PLC while the first Codec2 frame is with the worker.
#[test]
fn switching_opus_codec2_and_tiers_mid_stream_conceals_at_most_one_frame_per_switch() {
    let o = run(0);
    check(&o);
    assert_eq!(o.switch_concealed, 1, "into Codec2 once");
}

/// With one frame of decoder look-ahead (graphs/loopback.toml), the held
/// Opus frame covers the Codec2 worker's hop: no switch conceals anything.
#[test]
fn with_decoder_look_ahead_the_switches_conceal_nothing() {
    let o = run(1);
    check(&o);
    assert_eq!(o.switch_concealed, 0);
    for p in &o.phases {
        assert_eq!(p.concealed + p.jb_concealed, 0, "{}", p.tier);
    }
}

/// The whole loop as a call runs it: `quality.adapt` with `codec_live`
/// writes the controller's tier into the adaptive encoder's codec cell.
/// 4 s clean, 8 s of 40 % loss (beyond what Opus holds with the threshold
/// lowered to 35 % here; the default is 60 %), then clean: the
/// controller moves the stream to Codec2 3200 within a couple of reports,
/// the receiver decodes it by its codec id, and the stream returns to Opus
/// after the hysteresis period (4 s here).
const LOOP_GRAPH: &str = r#"
[graph]
name = "adaptive-loop"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "src"
kind = "audio.wav_source"
params = { path = "builtin:speech", rate = 16000, loop = true }
[[stage]]
id = "up"
kind = "audio.resample"
params = { from = 16000, to = 48000 }
[[stage]]
id = "enc"
kind = "codec.adaptive_encode"
params = { profile = "good", live_settings = "enc_live", codec_live = "codec_live" }
[[stage]]
id = "adapt"
kind = "quality.adapt"
params = { live_settings = "enc_live", codec_live = "codec_live", fec_live = "fec_live", hysteresis = "4s", heavy_loss = 35, rate_check = false }
[[stage]]
id = "fec_enc"
kind = "fec.raptorq_encode"
params = { fec_ratio = 0, live_ratio = "fec_live" }
[[stage]]
id = "fec_dec"
kind = "fec.raptorq_decode"
[[stage]]
id = "net"
kind = "test.loss_window"
params = { from_ms = 4000, to_ms = 12000, percent = 40 }
[[stage]]
id = "report"
kind = "quality.feedback_report"
params = { interval = "1s" }
[[stage]]
id = "ret"
kind = "net.netem_frames"
params = { delay = "40ms" }
[[stage]]
id = "jb"
kind = "jitter.adaptive"
[[stage]]
id = "dec"
kind = "codec.adaptive_decode"
params = { profile = "good", lookahead_frames = 0, fill_gaps = false }
[[stage]]
id = "sink"
kind = "audio.null_sink"

[[link]]
from = "src.out"
to = "up.in"
[[link]]
from = "up.out"
to = "enc.in"
[[link]]
from = "enc.out"
to = "adapt.in"
[[link]]
from = "adapt.out"
to = "fec_enc.in"
[[link]]
from = "fec_enc.out"
to = "net.in"
[[link]]
from = "net.out"
to = "fec_dec.in"
[[link]]
from = "fec_dec.out"
to = "jb.in"
[[link]]
from = "net.out"
to = "report.in"
[[link]]
from = "report.out"
to = "ret.in"
[[link]]
from = "ret.out"
to = "adapt.feedback"
delay = 1
[[link]]
from = "jb.out"
to = "dec.in"
[[link]]
from = "dec.out"
to = "sink.in"
"#;

#[test]
fn the_controller_moves_a_call_beyond_opus_to_codec2_and_back() {
    assert!(checker_installed());
    // 40 % loss (a fixed LCG draw per packet, repair included) from 4 s to
    // 12 s of graph time (cycles 200 to 600), clean before and after: a
    // window in time, since the repair packets of the Codec2 phase would
    // run a per-packet trace out early. The graph's `adapt` runs with
    // `rate_check = false`: Codec2 for any heavy loss, the switch this
    // test is about (with the check, random loss keeps Opus).
    let spec = GraphSpec::parse(LOOP_GRAPH, "adaptive-loop.toml", &Default::default()).unwrap();
    let mut registry = wzp_stages::registry();
    frame_support::register(&mut registry);
    let mut graph = Graph::new(compile(&spec, &registry, &Resources::new()).unwrap());
    let mut allocations = 0;
    let mut into_codec2_at = None;
    let mut back_at = None;
    for cycle in 1..=1_100u64 {
        let ((), n) = count_allocs(|| {
            graph.step();
        });
        allocations += n;
        wait_workers(&graph, cycle + cycle / 2);
        let codec = graph.stats().stage("enc").unwrap().gauge("codec").unwrap();
        if codec != 1 && into_codec2_at.is_none() {
            into_codec2_at = Some(cycle);
        }
        if codec == 1 && into_codec2_at.is_some() && back_at.is_none() {
            back_at = Some(cycle);
        }
    }
    let c = |stage: &str, name: &str| counter(&graph, stage, name);
    let into = into_codec2_at.expect("the encoder never left Opus");
    let back = back_at.expect("the encoder never came back to Opus");
    eprintln!(
        "into Codec2 at cycle {into}, back at {back}; Codec2 frames sent {}, decoded {}",
        c("enc", "codec2_frames_out"),
        c("dec", "codec2_frames_decoded")
    );
    assert_eq!(allocations, 0);
    // Loss starts at cycle 200; Codec2 takes HEAVY_REPORTS reports in a row
    // that show it (one a second, plus the return path): one bad interval
    // is an outage or a burst, not a path Opus cannot hold.
    assert_eq!(wzp_stages::quality::controller::HEAVY_REPORTS, 2);
    assert!((250..=350).contains(&into), "into Codec2 at cycle {into}");
    assert!(c("adapt", "decisions_heavy_loss") >= 1);
    // Loss ends at cycle 600: back after the 4 s hysteresis, measured from
    // the first calm report, within a report or two.
    assert!((800..=950).contains(&back), "back to Opus at cycle {back}");
    assert_eq!(c("enc", "codec_switches"), 2);
    assert_eq!(c("dec", "codec_switches"), 2);
    // Codec2 ran the whole time in between, and the receiver decoded what
    // got through.
    let sent = c("enc", "codec2_frames_out");
    assert!(
        sent + 5 >= back - into,
        "{sent} Codec2 frames in {} cycles",
        back - into
    );
    assert!(c("dec", "codec2_frames_decoded") * 10 >= sent * 4);
    assert_eq!(c("dec", "foreign_frames"), 0);
    // Codec, frame size and the RaptorQ ratio all went live: Codec2 for
    // heavy loss carried its tier's repair (poor: 50 %), which rebuilt
    // frames the path lost, and the repair stopped with Opus.
    assert_eq!(c("adapt", "not_live"), 0, "everything is live");
    assert_eq!(c("adapt", "applied"), c("adapt", "decisions"));
    let repair = c("fec_enc", "repair_sent");
    eprintln!(
        "repair sent {repair}, recovered {}, unrecoverable blocks {}",
        c("fec_dec", "recovered"),
        c("fec_dec", "unrecoverable_blocks")
    );
    assert!(
        repair * 10 >= sent * 5,
        "{repair} repair frames for {sent} Codec2 frames at 50 %"
    );
    assert!(
        c("fec_dec", "recovered") >= 20,
        "RaptorQ rebuilt lost frames"
    );
    // The jitter buffer held for a block (`jitter.adaptive`'s RaptorQ hold),
    // so the rebuilt frames played instead of coming too late (about half
    // did before it held).
    assert!(
        c("jb", "late") * 10 <= c("fec_dec", "recovered"),
        "{} of {} rebuilt frames late",
        c("jb", "late"),
        c("fec_dec", "recovered")
    );
    let ratio = graph
        .stats()
        .stage("fec_enc")
        .unwrap()
        .gauge("ratio")
        .unwrap();
    assert_eq!(ratio, 0, "no repair on Opus again");
}
