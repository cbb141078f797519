//! Running graphs/loopback.toml file to file and judging what came out:
//! lag-aligned correlation of the recording with what was sent.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_stages::audio::signal::{rms_dbfs, speech_like, xcorr_peak};
use wzp_stages::audio::wav_source::read_wav_mono;
use wzp_stages::quality::journal::{DecisionJournal, Entry, DEFAULT_NAME};

pub struct Run {
    /// `stage.counter` for every stage's counters and gauges.
    pub counters: BTreeMap<String, i64>,
    /// Median over 0.5 s segments of the lag-aligned normalised correlation
    /// of the recording with the input. Per segment, because the jitter
    /// buffer moves the playout point (it skips or stretches a frame to
    /// follow the network), so one lag does not fit a whole call.
    pub correlation: f32,
    /// Mean of the same per-segment correlations: losses hit a minority of
    /// segments, which the median hides.
    pub mean_correlation: f32,
    /// Correlation of the 10 ms loudness contours (dB), lag-aligned. DRED
    /// rebuilds speech with a neural vocoder: the waveform's phase is new,
    /// but the loudness follows the talker, which is what a listener hears
    /// and what PLC's fading extrapolation does not keep.
    pub contour: f32,
    /// Every decision `quality.adapt` wrote to its journal, in order.
    pub decisions: Vec<Entry>,
}

/// Per-segment correlations of `received` with `sent` at `lag` (voiced
/// segments only), sorted.
fn segment_correlations(received: &[f32], sent: &[f32], lag: usize) -> Vec<f32> {
    const SEG: usize = 8_000;
    const SLACK: usize = 1_600;
    let mut rs: Vec<f32> = Vec::new();
    for start in (0..sent.len().saturating_sub(SEG)).step_by(SEG) {
        let seg = &sent[start..start + SEG];
        if rms_dbfs(seg) < -50.0 {
            continue;
        }
        let from = (start + lag).saturating_sub(SLACK);
        let to = (start + lag + SEG + SLACK).min(received.len());
        if to <= from + SEG / 2 {
            continue;
        }
        rs.push(xcorr_peak(&received[from..to], seg, 2 * SLACK).1);
    }
    assert!(rs.len() >= 4, "too few voiced segments to judge");
    rs.sort_by(|a, b| a.total_cmp(b));
    rs
}

/// Loudness contour: RMS in dB of 10 ms blocks, floored at -60 dB.
fn contour(x: &[f32]) -> Vec<f32> {
    x.chunks(160)
        .map(|c| {
            let ms =
                c.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / c.len().max(1) as f64;
            (10.0 * ms.max(1e-6).log10()) as f32
        })
        .collect()
}

fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f32>() / n as f32;
    let mb = b.iter().sum::<f32>() / n as f32;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt().max(1e-12)
}

pub fn graph_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../graphs/loopback.toml")
}

/// The built-in speech sample `times` over, as a 16 kHz WAV in `dir`.
pub fn long_speech(dir: &Path, times: usize) -> (PathBuf, Vec<f32>) {
    let one = speech_like(16_000);
    let all: Vec<f32> = (0..times).flat_map(|_| one.iter().copied()).collect();
    let path = dir.join("speech.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for s in &all {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    (path, all)
}

/// Runs the loopback graph with `sets` on the built-in sample (or on
/// `input`, which holds `sent`), fast clock, and scores the recording.
pub fn run(name: &str, sets: &[(&str, &str)], input: Option<(&Path, &[f32])>) -> Run {
    let dir = std::env::temp_dir().join(format!("wzp-loopback-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("out.wav");
    let mut vars: BTreeMap<String, String> = sets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.insert("output".into(), out.display().to_string());
    if let Some((path, _)) = input {
        vars.insert("input".into(), path.display().to_string());
    }
    let spec = GraphSpec::load(&graph_file(), &vars).unwrap();
    let journal = Arc::new(DecisionJournal::default());
    let mut res = Resources::new();
    res.insert(DEFAULT_NAME, journal.clone());
    let mut graph = Graph::new(compile(&spec, &wzp_stages::registry(), &res).unwrap());
    graph
        .start(RunOptions {
            driver: ClockDriver::Fast,
            realtime: false,
            ..Default::default()
        })
        .unwrap();
    assert!(
        graph.wait(Duration::from_secs(300)),
        "{name}: the graph did not finish"
    );
    let stats = graph.stats();
    graph.stop();
    let mut counters = BTreeMap::new();
    for st in &stats.stages {
        for (k, c) in &st.counters {
            counters.insert(format!("{}.{k}", st.id), c.get() as i64);
        }
        for (k, g) in &st.gauges {
            counters.insert(format!("{}.{k}", st.id), g.get());
        }
    }
    drop(graph);
    let mut decisions = Vec::new();
    journal.drain(|r| decisions.extend(r.decision().copied()));
    let received = read_wav_mono(&out).unwrap();
    assert_eq!(received.rate, 16_000);
    let builtin;
    let sent: &[f32] = match input {
        Some((_, s)) => s,
        None => {
            builtin = speech_like(16_000);
            &builtin
        }
    };
    let (lag, _) = xcorr_peak(&received.samples, sent, 16_000 / 2);
    let segs = segment_correlations(&received.samples, sent, lag);
    let correlation = segs[segs.len() / 2];
    let mean_correlation = segs.iter().sum::<f32>() / segs.len() as f32;
    let aligned = &received.samples[lag.min(received.samples.len())..];
    let contour = pearson(&contour(aligned), &contour(sent));
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{name}: correlation median {correlation:.3} mean {mean_correlation:.3}, contour {contour:.3}, lag {lag}"
    );
    Run {
        counters,
        correlation,
        mean_correlation,
        contour,
        decisions,
    }
}

impl Run {
    pub fn c(&self, k: &str) -> i64 {
        *self
            .counters
            .get(k)
            .unwrap_or_else(|| panic!("no counter {k}: {:?}", self.counters))
    }
}
