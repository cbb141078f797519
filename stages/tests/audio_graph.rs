//! Whole graphs of audio stages, compiled from TOML and run by the engine.

mod audio_support;

use std::collections::BTreeMap;
use std::time::Duration;

use audio_support::temp_dir;
use wzp_engine::prelude::*;
use wzp_stages::audio::signal::{
    goertzel_dbfs, rms_dbfs, speech_like, xcorr_peak, zero_crossing_hz,
};
use wzp_stages::audio::wav_source::read_wav_mono;

const CHAIN: &str = r#"
[graph]
name = "audio_chain"
clock = { driver = "fast", quantum_ms = 20, rate = 48000 }

[[stage]]
id = "tone"
kind = "audio.tone_source"
params = { freq = 1000, level_db = -12, duration = "2s" }

[[stage]]
id = "down"
kind = "audio.resample"
params = { from = 48000, to = 16000 }

[[stage]]
id = "up"
kind = "audio.resample"
params = { from = 16000, to = 48000 }

[[stage]]
id = "gain"
kind = "audio.gain"
params = { gain_db = -6 }

[[stage]]
id = "rec"
kind = "audio.wav_sink"
params = { path = "${out}", buffer = "10s" }

[[link]]
from = "tone.out"
to = "down.in"
[[link]]
from = "down.out"
to = "up.in"
[[link]]
from = "up.out"
to = "gain.in"
[[link]]
from = "gain.out"
to = "rec.in"
"#;

fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn tone_through_16k_and_back_is_recorded_at_the_right_level_and_pitch() {
    let dir = temp_dir("graph");
    let out = dir.join("chain.wav");
    let spec = GraphSpec::parse(
        CHAIN,
        "chain.toml",
        &vars(&[("out", out.to_str().unwrap())]),
    )
    .unwrap();
    let registry = wzp_stages::registry();
    let compiled = compile(&spec, &registry, &Resources::new()).unwrap();
    // The declared path latency is the two resamplers'.
    let declared = compiled.paths[0].total;
    assert!(
        declared > Duration::from_millis(3) && declared < Duration::from_millis(10),
        "{declared:?}"
    );
    let mut graph = Graph::new(compiled);
    graph
        .start(RunOptions {
            driver: ClockDriver::Fast,
            ..Default::default()
        })
        .unwrap();
    assert!(graph.wait(Duration::from_secs(30)), "the graph did not end");
    let stats = graph.stats();
    graph.stop();
    drop(graph);

    let rec = stats.stage("rec").unwrap();
    assert_eq!(
        rec.gauge("finalized"),
        Some(1),
        "file finalized once stopped"
    );
    assert_eq!(rec.counter("dropped_samples"), Some(0));
    assert_eq!(rec.counter("write_errors"), Some(0));
    for id in ["down", "up"] {
        let s = stats.stage(id).unwrap();
        assert_eq!(s.counter("fifo_underruns"), Some(0), "{id}");
        assert_eq!(s.counter("fifo_overruns"), Some(0), "{id}");
    }

    let wav = read_wav_mono(&out).unwrap();
    assert_eq!(wav.rate, 48_000);
    assert_eq!(
        wav.samples.len() as u64,
        rec.counter("samples_written").unwrap()
    );
    // 2 s of tone plus the drain cycles that flush the resamplers.
    assert!(
        wav.samples.len() >= 96_000 && wav.samples.len() <= 96_000 + 10 * 960,
        "{} samples",
        wav.samples.len()
    );
    // The tone starts where the declared latency says.
    let onset = wav.samples.iter().position(|s| s.abs() > 0.05).unwrap();
    let declared_samples = declared.as_secs_f64() * 48_000.0;
    assert!(
        (onset as f64 - declared_samples).abs() < 10.0,
        "tone starts at {onset}, declared latency is {declared_samples} samples"
    );
    let steady = &wav.samples[4_800..90_000];
    let f = zero_crossing_hz(steady, 48_000).unwrap();
    assert!((f - 1000.0).abs() < 0.5, "recorded {f} Hz");
    // -12 dBFS peak, -6 dB gain: -18 dBFS peak, -21.03 dBFS RMS.
    let level = rms_dbfs(steady);
    assert!((level + 21.03).abs() < 0.2, "recorded level {level} dBFS");
    let at_1k = goertzel_dbfs(steady, 48_000, 1000.0);
    assert!((at_1k + 21.03).abs() < 0.2, "1 kHz at {at_1k} dBFS");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn builtin_speech_runs_with_no_file_and_correlates_after_a_round_trip() {
    let dir = temp_dir("speech");
    let out = dir.join("speech.wav");
    let text = format!(
        r#"
[graph]
name = "speech"
clock = {{ driver = "fast", quantum_ms = 20, rate = 48000 }}
[[stage]]
id = "src"
kind = "audio.wav_source"
[[stage]]
id = "tee"
kind = "audio.split"
[[stage]]
id = "down"
kind = "audio.resample"
params = {{ to = 16000 }}
[[stage]]
id = "up"
kind = "audio.resample"
params = {{ from = 16000 }}
[[stage]]
id = "rec"
kind = "audio.wav_sink"
params = {{ path = "{}", format = "f32", buffer = "10s" }}
[[stage]]
id = "meter"
kind = "audio.null_sink"
[[link]]
from = "src.out"
to = "tee.in"
[[link]]
from = "tee.out0"
to = "down.in"
[[link]]
from = "down.out"
to = "up.in"
[[link]]
from = "up.out"
to = "rec.in"
[[link]]
from = "tee.out1"
to = "meter.in"
"#,
        out.display()
    );
    let spec = GraphSpec::parse(&text, "speech.toml", &BTreeMap::new()).unwrap();
    let compiled = compile(&spec, &wzp_stages::registry(), &Resources::new()).unwrap();
    let declared = compiled
        .paths
        .iter()
        .find(|p| p.stages.last().map(String::as_str) == Some("rec"))
        .unwrap()
        .total;
    let mut graph = Graph::new(compiled);
    graph
        .start(RunOptions {
            driver: ClockDriver::Fast,
            ..Default::default()
        })
        .unwrap();
    assert!(graph.wait(Duration::from_secs(30)));
    let stats = graph.stats();
    graph.stop();
    drop(graph);

    let sent = speech_like(48_000);
    let meter = stats.stage("meter").unwrap();
    assert!(meter.counter("samples").unwrap() >= sent.len() as u64);
    let received = read_wav_mono(&out).unwrap().samples;
    let (lag, r) = xcorr_peak(&received, &sent, 4_800);
    let declared_samples = (declared.as_secs_f64() * 48_000.0).round() as usize;
    assert_eq!(lag, declared_samples, "lag vs declared latency");
    // Speech-like energy sits below 8 kHz, so the 16 kHz leg keeps it.
    assert!(r > 0.99, "correlation {r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn mixing_two_tones_and_splitting_in_a_graph() {
    let text = r#"
[graph]
name = "mixsplit"
clock = { driver = "manual", quantum_ms = 10, rate = 16000 }
[[stage]]
id = "a"
kind = "audio.tone_source"
params = { freq = 500, level_db = -6 }
[[stage]]
id = "b"
kind = "audio.tone_source"
params = { freq = 1500, level_db = -6 }
[[stage]]
id = "mix"
kind = "audio.mix"
params = { inputs = 3 }
[[stage]]
id = "tee"
kind = "audio.split"
params = { outputs = 3 }
[[stage]]
id = "m0"
kind = "audio.null_sink"
[[stage]]
id = "m2"
kind = "audio.null_sink"
[[link]]
from = "a.out"
to = "mix.in0"
[[link]]
from = "b.out"
to = "mix.in2"
[[link]]
from = "mix.out"
to = "tee.in"
[[link]]
from = "tee.out0"
to = "m0.in"
[[link]]
from = "tee.out2"
to = "m2.in"
"#;
    let spec = GraphSpec::parse(text, "mixsplit.toml", &BTreeMap::new()).unwrap();
    let mut graph = Graph::new(compile(&spec, &wzp_stages::registry(), &Resources::new()).unwrap());
    for _ in 0..150 {
        graph.step();
    }
    let stats = graph.stats();
    // Two sines of peak 0.5 each (-6 dBFS): the sum's RMS is 0.5, -6.02 dBFS;
    // peaks reach 1.0 at most, so nothing clips.
    for id in ["m0", "m2"] {
        let level = stats.stage(id).unwrap().gauge("level_dbfs_x100").unwrap();
        assert!((level + 602).abs() <= 5, "{id}: {level}");
        assert_eq!(stats.stage(id).unwrap().counter("samples"), Some(150 * 160));
    }
    assert_eq!(
        stats.stage("mix").unwrap().counter("clipped_samples"),
        Some(0)
    );
}

#[test]
fn bad_params_fail_compilation_with_the_stage_named() {
    for (params, needle) in [
        ("{ gain_db = 30 }", "gain_db"),
        ("{ gain_db = -6, rate = 11025 }", "whole number"),
    ] {
        let text = format!(
            r#"
[graph]
name = "bad"
clock = {{ driver = "manual", quantum_ms = 20, rate = 48000 }}
[[stage]]
id = "src"
kind = "audio.tone_source"
[[stage]]
id = "loud"
kind = "audio.gain"
params = {params}
[[stage]]
id = "sink"
kind = "audio.null_sink"
[[link]]
from = "src.out"
to = "loud.in"
[[link]]
from = "loud.out"
to = "sink.in"
"#
        );
        let spec = GraphSpec::parse(&text, "bad.toml", &BTreeMap::new()).unwrap();
        let err = compile(&spec, &wzp_stages::registry(), &Resources::new())
            .err()
            .unwrap_or_else(|| panic!("{params} compiled"))
            .to_string();
        assert!(err.contains("loud") && err.contains(needle), "{err}");
    }
}
