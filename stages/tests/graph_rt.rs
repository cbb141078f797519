//! Whole-graph cycles of the shipped stages allocate nothing: the graph is
//! compiled from TOML with the real registry and stepped under the counting
//! allocator.

use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;

wzp_engine::install_alloc_checker!();

const GRAPH: &str = r#"
[graph]
name = "rt"
clock = { driver = "manual", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "speech"
kind = "audio.wav_source"
params = { path = "builtin:speech", rate = 16000, loop = true }
[[stage]]
id = "up"
kind = "audio.resample"
params = { from = 16000, to = 48000 }
[[stage]]
id = "tone"
kind = "audio.tone_source"
params = { freq = 300.0, level_db = -30.0 }
[[stage]]
id = "mix"
kind = "audio.mix"
params = { inputs = 2 }
[[stage]]
id = "gain"
kind = "audio.gain"
params = { gain_db = -3.0 }
[[stage]]
id = "split"
kind = "audio.split"
params = { outputs = 3 }
[[stage]]
id = "enc"
kind = "codec.opus_encode"
params = { profile = "good" }
[[stage]]
id = "dec"
kind = "codec.opus_decode"
params = { profile = "good" }
[[stage]]
id = "c2enc"
kind = "codec.codec2_encode"
params = { profile = "poor" }
[[stage]]
id = "c2dec"
kind = "codec.codec2_decode"
params = { profile = "poor" }
[[stage]]
id = "down"
kind = "audio.resample"
params = { from = 48000, to = 16000 }
[[stage]]
id = "wav"
kind = "audio.wav_sink"
params = { path = "${out}", rate = 16000 }
[[stage]]
id = "null"
kind = "audio.null_sink"
[[stage]]
id = "null2"
kind = "audio.null_sink"

[[link]]
from = "speech.out"
to = "up.in"
[[link]]
from = "up.out"
to = "mix.in0"
[[link]]
from = "tone.out"
to = "mix.in1"
[[link]]
from = "mix.out"
to = "gain.in"
[[link]]
from = "gain.out"
to = "split.in"
[[link]]
from = "split.out0"
to = "enc.in"
[[link]]
from = "enc.out"
to = "dec.in"
[[link]]
from = "dec.out"
to = "down.in"
[[link]]
from = "down.out"
to = "wav.in"
[[link]]
from = "split.out1"
to = "null.in"
[[link]]
from = "split.out2"
to = "c2enc.in"
[[link]]
from = "c2enc.out"
to = "c2dec.in"
[[link]]
from = "c2dec.out"
to = "null2.in"
"#;

#[test]
fn a_graph_of_shipped_stages_cycles_without_allocating() {
    let dir = std::env::temp_dir().join(format!("wzp-graph-rt-{}", std::process::id()));
    let out = dir.join("rt.wav");
    let vars = [("out".to_string(), out.display().to_string())]
        .into_iter()
        .collect();
    let spec = GraphSpec::parse(GRAPH, "rt.toml", &vars).unwrap();
    let registry = wzp_stages::registry();
    let mut graph = Graph::new(compile(&spec, &registry, &Resources::new()).unwrap());
    // Checked from the very first cycle.
    assert_rt_safe("shipped-stage graph cycle", 250, || {
        graph.step();
    });
    let stats = graph.stats();
    // The decoder holds one frame of lookahead for loss recovery.
    assert_eq!(
        stats.stage("dec").unwrap().counter("frames_decoded"),
        Some(249)
    );
    assert!(stats.stage("null").unwrap().counter("samples").unwrap() >= 250 * 960);
    drop(graph);
    assert!(std::fs::metadata(&out).unwrap().len() > 44);
    let _ = std::fs::remove_dir_all(dir);
}
