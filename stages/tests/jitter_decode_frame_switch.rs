//! A call's receive chain across Opus tier and frame-size switches, with
//! outages: speech -> `codec.adaptive_encode` (good 20 ms -> degraded 40 ms
//! -> fair 20 ms, switched live) -> 400 ms outages every 5 s -> the wire
//! (`wire.packetize` -> `wire.depacketize`, as graphs/call.toml carries
//! frames) -> seeded delay and jitter -> `jitter.adaptive` ->
//! `codec.adaptive_decode`. Real libopus, stepped by hand under the
//! counting allocator.
//!
//! What comes out must stay in step with the clock: the jitter buffer hands
//! the decoder as much media (frames played at their own length, MISSING
//! items at the length they conceal) as time went by, the decoder drops
//! nothing from its output FIFO, and the buffer does not keep stretching
//! once a stream's frame size changes.

wzp_engine::install_alloc_checker!();

mod frame_support;

use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_engine::rt_check::{checker_installed, count_allocs};
use wzp_stages::codec::live::{CodecLive, LiveCodecSettings, LiveOpusSettings, OpusLive};
use wzp_stages::codec::profile::Profile;

const QUANTUM_NS: u64 = 20_000_000;
/// An outage of `OUTAGE_NS` starts every `OUTAGE_EVERY_NS`, `OUTAGE_AT_NS`
/// into each period (as `benches/quality/live.sh`'s `outage` condition).
const OUTAGE_EVERY_NS: u64 = 5_000_000_000;
const OUTAGE_AT_NS: u64 = 2_500_000_000;
const OUTAGE_NS: u64 = 400_000_000;

/// `test.outage`: passes frames through, except while an outage is on.
struct Outage;
struct OutageProc {
    dropped: Counter,
}
impl Processor for OutageProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let (Some(input), Some(out)) = io.frames_in_out(0, 0) else {
            return Flow::Continue;
        };
        let phase = cx.now_ns % OUTAGE_EVERY_NS;
        let down = (OUTAGE_AT_NS..OUTAGE_AT_NS + OUTAGE_NS).contains(&phase);
        for slot in input.iter() {
            if down {
                self.dropped.inc();
            } else {
                let _ = out.push_copy(slot);
            }
        }
        Flow::Continue
    }
}
impl StageFactory for Outage {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "test.outage",
            summary: "drops every frame during periodic outages",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Frame",
                doc: "",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Frame",
                doc: "",
            }],
            params: vec![],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked],
        }
    }
    fn build(&self, cx: &mut BuildContext<'_>, _p: &Params) -> Result<Built, BuildError> {
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Frame)],
            outputs: vec![PortDecl::new("out", PortType::Frame)],
            latency: Duration::ZERO,
            processor: Box::new(OutageProc {
                dropped: cx.counter("dropped"),
            }),
        })
    }
}

const STAGES: &str = r#"
[graph]
name = "frame-switch"
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
id = "outage"
kind = "test.outage"
[[stage]]
id = "pack"
kind = "wire.packetize"
params = { sender_id = 7 }
[[stage]]
id = "depack"
kind = "wire.depacketize"
[[stage]]
id = "path"
kind = "net.netem_frames"
params = { seed = 3, delay = "30ms", jitter = "8ms" }
[[stage]]
id = "jb"
kind = "jitter.adaptive"
params = { min_delay = "20ms", max_delay = "300ms", initial_delay = "40ms" }
[[stage]]
id = "clock"
kind = "test.media_clock"
[[stage]]
id = "dec"
kind = "codec.adaptive_decode"
params = { profile = "good", lookahead_frames = 0, fill_gaps = false, complexity = 6 }
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
to = "outage.in"
[[link]]
from = "path.out"
to = "jb.in"
[[link]]
from = "jb.out"
to = "dec.in"
[[link]]
from = "jb.out"
to = "clock.in"
[[link]]
from = "dec.out"
to = "sink.in"
"#;

/// Frames cross the wire as a call carries them.
const VIA_WIRE: &str = r#"
[[link]]
from = "outage.out"
to = "pack.in"
[[link]]
from = "pack.out"
to = "depack.in"
[[link]]
from = "depack.out"
to = "path.in"
"#;

/// Frames go straight from the encoder to the path, their metadata intact.
const DIRECT: &str = r#"
[[link]]
from = "outage.out"
to = "path.in"
"#;

/// Cycles (20 ms) per phase: 10 s, two outages each.
const PHASE: u64 = 500;

/// (tier, Opus bit rate the controller publishes with it).
const PHASES: [(&str, u32); 3] = [("good", 24_000), ("degraded", 6_000), ("fair", 16_000)];

struct Outcome {
    counters: Vec<(String, u64)>,
    /// Media handed to the decoder minus elapsed time, in samples, sampled
    /// each cycle once playout runs: (min, max).
    drift: (i64, i64),
    allocations: u32,
}

impl Outcome {
    fn get(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
    }
}

fn run(wire: bool) -> Outcome {
    assert!(checker_installed());
    let mut text = STAGES.to_string();
    text.push_str(if wire { VIA_WIRE } else { DIRECT });
    // Unlinked stages in the direct variant would be an error; drop them.
    if !wire {
        text = text.replace(
            "[[stage]]\nid = \"pack\"\nkind = \"wire.packetize\"\nparams = { sender_id = 7 }\n[[stage]]\nid = \"depack\"\nkind = \"wire.depacketize\"\n",
            "",
        );
    }
    let spec = GraphSpec::parse(&text, "frame-switch.toml", &Default::default()).unwrap();
    let mut registry = wzp_stages::registry();
    registry.register(Outage).unwrap();
    frame_support::register(&mut registry);
    let opus_cell = Arc::new(OpusLive::new());
    let codec_cell = Arc::new(CodecLive::new());
    let mut res = Resources::new();
    res.insert("enc_live", opus_cell.clone());
    res.insert("codec_live", codec_cell.clone());
    let mut graph = Graph::new(compile(&spec, &registry, &res).unwrap());
    let stat = |g: &Graph, stage: &str, name: &str| {
        g.stats()
            .stage(stage)
            .and_then(|s| s.counter(name))
            .unwrap_or_else(|| panic!("no counter {stage}.{name}"))
    };
    let mut allocations = 0;
    let mut cycle = 0u64;
    let mut first_out: Option<u64> = None;
    let mut drift = (i64::MAX, i64::MIN);
    for (tier, bitrate) in PHASES {
        opus_cell
            .set(LiveOpusSettings {
                bitrate,
                dred_ms: 100,
                expected_loss: 10,
                inband_fec: true,
            })
            .unwrap();
        codec_cell
            .set(LiveCodecSettings::of(Profile::by_name(tier).unwrap()))
            .unwrap();
        for _ in 0..PHASE {
            let ((), n) = count_allocs(|| {
                graph.step();
            });
            allocations += n;
            cycle += 1;
            let media = stat(&graph, "clock", "samples");
            if first_out.is_none() && media > 0 {
                first_out = Some(cycle);
            }
            if let Some(first) = first_out {
                // One quantum of media per cycle since playout began; a 40 ms
                // frame is handed over whole, so up to a quantum ahead.
                let elapsed = (cycle - first + 1) * (QUANTUM_NS / 1_000_000) * 48;
                let d = media as i64 - elapsed as i64;
                drift = (drift.0.min(d), drift.1.max(d));
            }
        }
    }
    let mut counters = Vec::new();
    for (stage, names) in [
        (
            "jb",
            &[
                "played",
                "concealed",
                "stretched",
                "skipped",
                "late",
                "resets",
            ][..],
        ),
        (
            "dec",
            &[
                "frames_decoded",
                "classical_plc_invocations",
                "dred_reconstructions",
                "fec_recovered",
                "late_dropped",
                "overflow_samples",
                "underruns",
            ][..],
        ),
        (
            "clock",
            &[
                "samples",
                "played_samples",
                "concealed_samples",
                "frames_40ms",
            ][..],
        ),
        ("outage", &["dropped"][..]),
        ("enc", &["frame_size_switches"][..]),
    ] {
        for name in names {
            counters.push((format!("{stage}.{name}"), stat(&graph, stage, name)));
        }
    }
    eprintln!(
        "wire {wire}: drift {drift:?} samples; {}",
        counters
            .iter()
            .map(|(n, v)| format!("{n} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Outcome {
        counters,
        drift,
        allocations,
    }
}

fn check(o: &Outcome) {
    assert_eq!(o.allocations, 0, "allocations on the real-time path");
    assert_eq!(o.get("enc.frame_size_switches"), 2, "20 -> 40 -> 20 ms");
    assert!(
        o.get("clock.frames_40ms") > 200,
        "{} 40 ms frames reached the decoder",
        o.get("clock.frames_40ms")
    );
    assert!(o.get("outage.dropped") >= 80, "the outages hit");
    // Nothing decoded is thrown away: the decoder's output FIFO never
    // overflows.
    assert_eq!(o.get("dec.overflow_samples"), 0, "decoded audio discarded");
    // The buffer stretches to grow its delay after an outage or as jitter
    // shows, a handful of times per outage; not once per frame.
    assert!(
        o.get("jb.stretched") <= 30,
        "{} stretches: the jitter buffer keeps growing its delay",
        o.get("jb.stretched")
    );
    // The media handed to the decoder follows the clock: at most the
    // stretches and skips of the run apart (each a frame), and never more
    // than 120 ms off at any time.
    let (lo, hi) = o.drift;
    assert!(
        lo >= -(120 * 48) && hi <= 120 * 48,
        "media handed to the decoder drifted from the clock by {lo}..={hi} samples"
    );
    // The decoder plays what it is handed: it neither runs dry for long.
    assert!(
        o.get("dec.underruns") <= 5,
        "{} underruns",
        o.get("dec.underruns")
    );
}

/// The metadata the encoder wrote reaches the jitter buffer as it is.
#[test]
fn frame_size_switches_with_outages_keep_playout_in_step() {
    check(&run(false));
}

/// As graphs/call.toml carries frames: through `wire.packetize` and
/// `wire.depacketize`, where the frame length is not on the wire.
#[test]
fn frame_size_switches_over_the_wire_keep_playout_in_step() {
    check(&run(true));
}
