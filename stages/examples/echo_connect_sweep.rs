//! The echo canceller at the start of a call on a speaker, with and without
//! the `"connected"` sweep (`audio.ring_source`) the speaker plays as the
//! call starts: how much of the far end's echo is taken out of the first
//! words, in a simulated room (40 ms of buffering, the direct path at -6 dB,
//! 150 ms of reverberation), the far end starting to talk 1 s in.
//!
//! ```text
//! cargo run --release -p wzp-stages --example echo_connect_sweep
//! ```
//!
//! docs/DESIGN.md, decision 26, has its figures.

use wzp_stages::audio::aec::EchoCanceller;
use wzp_stages::audio::res::EchoSuppressor;
use wzp_stages::audio::ring_source::connected_sweep;
use wzp_stages::audio::signal::{db_to_gain, speech_like};

const FS: usize = 16_000;

fn noise(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
}

fn room(delay_ms: usize, gain: f32, seed: u32) -> Vec<f32> {
    let mut s = seed;
    let d = FS * delay_ms / 1000;
    let mut h = vec![0.0f32; d + FS * 150 / 1000];
    h[d] = gain;
    for (i, v) in h.iter_mut().enumerate().skip(d + 1) {
        let t = (i - d) as f32 / FS as f32;
        *v = gain * 0.3 * noise(&mut s) * (-6.9 * t / 0.2).exp();
    }
    h
}

fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for (k, &hk) in h.iter().enumerate().filter(|(_, h)| **h != 0.0) {
        for n in k..x.len() {
            y[n] += hk * x[n - k];
        }
    }
    y
}

fn energy(x: impl Iterator<Item = f32>) -> f64 {
    x.map(|v| v as f64 * v as f64).sum()
}

/// Echo removed (linear filter, then with the suppressor) over each span of
/// the far end's speech, seconds from its first word.
fn run(sweep_db: Option<f32>, spans: &[(f32, f32)]) -> Vec<(f64, f64)> {
    let secs = 8;
    let start = FS;
    let mut far = vec![0.0f32; FS * secs];
    if let Some(db) = sweep_db {
        let g = db_to_gain(db as f64);
        for (i, v) in far.iter_mut().enumerate() {
            *v = g * connected_sweep(i as f64 / FS as f64) as f32;
        }
    }
    for (v, s) in far[start..]
        .iter_mut()
        .zip(speech_like(FS as u32).iter().cycle())
    {
        *v = *s;
    }
    let echo = convolve(&far, &room(40, 0.5, 1));
    let mut seed = 9;
    let near: Vec<f32> = (0..far.len()).map(|_| 0.0003 * noise(&mut seed)).collect();
    let mic: Vec<f32> = echo.iter().zip(&near).map(|(a, b)| a + b).collect();
    let block = FS / 100;
    let mut aec = EchoCanceller::new(FS as u32, block, 25);
    let hop = block / 2;
    let mut res = EchoSuppressor::new(FS as u32, hop);
    let mut linear = vec![0.0f32; far.len()];
    let mut sup = vec![0.0f32; far.len() + hop];
    for (((m, f), o), so) in mic
        .chunks_exact(block)
        .zip(far.chunks_exact(block))
        .zip(linear.chunks_exact_mut(block))
        .zip(sup.chunks_exact_mut(block))
    {
        aec.process(m, f, o);
        let (estimate, reference, active) = (
            aec.echo_estimate().to_vec(),
            aec.reference_at_echo_delay().to_vec(),
            aec.echo_active(),
        );
        res.process(o, &estimate, &reference, active, so);
    }
    sup.drain(..hop);
    spans
        .iter()
        .map(|&(a, b)| {
            let r = start + (FS as f32 * a) as usize..start + (FS as f32 * b) as usize;
            let left = |out: &[f32]| {
                energy(
                    out[r.clone()]
                        .iter()
                        .zip(&near[r.clone()])
                        .map(|(a, b)| a - b),
                )
            };
            let e = energy(echo[r.clone()].iter().copied());
            (
                10.0 * (e / left(&linear).max(1e-30)).log10(),
                10.0 * (e / left(&sup).max(1e-30)).log10(),
            )
        })
        .collect()
}

fn main() {
    let spans = [
        (0.0, 0.25),
        (0.25, 0.5),
        (0.5, 1.0),
        (1.0, 2.0),
        (2.0, 3.0),
        (3.0, 5.0),
    ];
    println!(
        "echo removed (linear / with the suppressor), dB, seconds from the far end's first word"
    );
    print!("{:24}", "");
    for (a, b) in spans {
        print!("  {a:>4}-{b:<4}     ");
    }
    println!();
    for (what, sweep) in [
        ("no sweep", None),
        ("sweep at -20 dBFS", Some(-20.0)),
        ("sweep at -26 dBFS", Some(-26.0)),
        ("sweep at -30 dBFS", Some(-30.0)),
    ] {
        print!("{what:24}");
        for (l, s) in run(sweep, &spans) {
            print!("  {l:5.1} / {s:5.1}");
        }
        println!();
    }
}
