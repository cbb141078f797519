//! The echo canceller in a simulated room, second by second: how much of
//! the far end's echo it takes out, and how much of the near end's voice it
//! keeps, while the far end talks alone (0-8 s), both talk (8-12 s), the far
//! end alone again, and after the speaker moves (a new room from 16 s);
//! the linear canceller alone, and with the residual echo suppressor after
//! it (what `audio.echo_cancel` runs by default).
//!
//! ```text
//! cargo run --release -p wzp-stages --example echo_cancel_room [-- FAR.wav NEAR.wav]
//! ```
//!
//! With no files it uses the built-in speech-like signal (far) and the same
//! backwards (near); with two WAV files (mono, any rate: the first's rate is
//! used, the second is read as if at it) it uses them, looped. docs/DESIGN.md
//! (decision 17) has its figures on synthesised speech
//! (`espeak-ng`, benches/quality/speech.sh's sentences).

use wzp_stages::audio::aec::EchoCanceller;
use wzp_stages::audio::res::EchoSuppressor;
use wzp_stages::audio::signal::speech_like;

fn noise(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
}

/// `delay_ms` of buffering, a direct path of `gain`, reverberation decaying
/// 60 dB in 200 ms for 150 ms.
fn room(rate: usize, delay_ms: usize, gain: f32, seed: u32) -> Vec<f32> {
    let mut s = seed;
    let d = rate * delay_ms / 1000;
    let n = d + rate * 150 / 1000;
    let mut h = vec![0.0f32; n];
    h[d] = gain;
    for (i, v) in h.iter_mut().enumerate().skip(d + 1) {
        let t = (i - d) as f32 / rate as f32;
        *v = gain * 0.3 * noise(&mut s) * (-6.9 * t / 0.2).exp();
    }
    h
}

fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; x.len()];
    for (k, &hk) in h.iter().enumerate() {
        if hk != 0.0 {
            for n in k..x.len() {
                y[n] += hk * x[n - k];
            }
        }
    }
    y
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|v| *v as f64 * *v as f64).sum()
}

fn read(path: &str) -> Result<(u32, Vec<f32>), String> {
    let mut r = hound::WavReader::open(path).map_err(|e| format!("{path}: {e}"))?;
    let spec = r.spec();
    if spec.channels != 1 {
        return Err(format!(
            "{path}: {} channels; give a mono file",
            spec.channels
        ));
    }
    let x: Result<Vec<f32>, _> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect(),
        hound::SampleFormat::Int => {
            let full = (1i64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 / full))
                .collect()
        }
    };
    let x = x.map_err(|e| format!("{path}: {e}"))?;
    if x.is_empty() {
        return Err(format!("{path}: no samples"));
    }
    Ok((spec.sample_rate, x))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (rate, far_src, near_src) = match args.as_slice() {
        [] => {
            let far = speech_like(16_000);
            let mut near = far.clone();
            near.reverse();
            (16_000u32, far, near)
        }
        [far, near] => {
            let (rate, f) = read(far).unwrap_or_else(|e| exit(&e));
            let (_, n) = read(near).unwrap_or_else(|e| exit(&e));
            (rate, f, n)
        }
        _ => exit("usage: echo_cancel_room [FAR.wav NEAR.wav]"),
    };
    if rate % 100 != 0 {
        exit(&format!(
            "{rate} Hz: the canceller needs a multiple of 100 Hz"
        ));
    }
    let fs = rate as usize;
    let secs = 24;
    let far: Vec<f32> = far_src.iter().cycle().take(fs * secs).copied().collect();
    let near_voice: Vec<f32> = near_src
        .iter()
        .cycle()
        .skip(fs / 3)
        .take(fs * secs)
        .map(|v| 0.7 * v)
        .collect();
    let first = convolve(&far, &room(fs, 40, 0.5, 1));
    let moved = convolve(&far, &room(fs, 70, 0.4, 2));
    let mut seed = 9;
    let mut echo = vec![0.0f32; far.len()];
    let mut near = vec![0.0f32; far.len()];
    for i in 0..far.len() {
        echo[i] = if i < fs * 16 { first[i] } else { moved[i] };
        if (fs * 8..fs * 12).contains(&i) {
            near[i] = near_voice[i];
        }
        near[i] += 0.0003 * noise(&mut seed);
    }
    let mic: Vec<f32> = echo.iter().zip(&near).map(|(a, b)| a + b).collect();
    let block = fs / 100;
    let mut aec = EchoCanceller::new(rate, block, 25);
    let hop = block / 2;
    let mut res = EchoSuppressor::new(rate, hop);
    let mut linear = vec![0.0f32; far.len()];
    let mut suppressed = vec![0.0f32; far.len() + hop];
    let t = std::time::Instant::now();
    for (((m, f), o), so) in mic
        .chunks_exact(block)
        .zip(far.chunks_exact(block))
        .zip(linear.chunks_exact_mut(block))
        .zip(suppressed.chunks_exact_mut(block))
    {
        aec.process(m, f, o);
        res.process(
            o,
            aec.echo_estimate(),
            aec.reference_at_echo_delay(),
            aec.echo_active(),
            so,
        );
    }
    // The suppressor's output is a hop late.
    suppressed.drain(..hop);
    println!(
        "{secs} s at {rate} Hz in {:?}; {:?}; {:?}",
        t.elapsed(),
        aec.stats(),
        res.stats()
    );
    println!("                          echo removed            near voice over what is left   near voice level");
    println!("second  what             linear   + suppressor   linear   + suppressor          + suppressor");
    let whole = fs * secs - block;
    for s in 0..secs {
        let r = s * fs..((s + 1) * fs).min(whole);
        let score = |out: &[f32]| {
            let left: Vec<f32> = out[r.clone()]
                .iter()
                .zip(&near[r.clone()])
                .map(|(a, b)| a - b)
                .collect();
            let removed = 10.0 * (energy(&echo[r.clone()]) / energy(&left).max(1e-30)).log10();
            let kept = 10.0 * (energy(&near[r.clone()]) / energy(&left).max(1e-30)).log10();
            (removed, kept)
        };
        // The near voice's level in the output: its projection on the
        // near voice, against the voice (0 dB: kept whole).
        let level = |out: &[f32]| {
            let dot: f64 = out[r.clone()]
                .iter()
                .zip(&near[r.clone()])
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum();
            20.0 * (dot.max(1e-30) / energy(&near[r.clone()]).max(1e-30)).log10()
        };
        let (lin, lin_kept) = score(&linear);
        let (sup, sup_kept) = score(&suppressed);
        let what = match s {
            8..=11 => "both talk",
            16..=23 => "speaker moved",
            _ => "far end alone",
        };
        if (8..12).contains(&s) {
            println!(
                "{s:6}  {what:15}  {lin:5.1} dB  {sup:9.1} dB    {lin_kept:5.1} dB  {sup_kept:9.1} dB    {:5.1} dB",
                level(&suppressed)
            );
        } else {
            println!("{s:6}  {what:15}  {lin:5.1} dB  {sup:9.1} dB");
        }
    }
}

fn exit(msg: &str) -> ! {
    eprintln!("echo_cancel_room: {msg}");
    std::process::exit(2)
}
