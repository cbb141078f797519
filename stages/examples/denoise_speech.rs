//! The noise suppressor on speech over a steady noise: writes the noisy
//! microphone and what `audio.denoise`'s core makes of it, to score (PESQ,
//! STOI) against the clean speech.
//!
//! ```text
//! cargo run --release -p wzp-stages --example denoise_speech -- SPEECH.wav NOISE SNR_DB DEPTH_DB OUT_DIR
//! ```
//!
//! SPEECH.wav: mono, 16 kHz. NOISE: `white`, `fan` (white noise through a
//! one-pole low-pass at ~1 kHz), or `hum` (50 Hz mains and its harmonics
//! over a -20 dB white floor). SNR_DB: the speech's level while it talks
//! over the noise's. Writes OUT_DIR/noisy.wav and OUT_DIR/denoised.wav (the
//! latency taken off), and prints the noise level it read and the
//! noise taken out.

use std::path::Path;

use wzp_stages::audio::ns::NoiseSuppressor;

fn noise(seed: &mut u32) -> f32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    (*seed as f32 / u32::MAX as f32) * 2.0 - 1.0
}

fn write(path: &Path, x: &[f32]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .unwrap_or_else(|e| exit(&format!("{}: {e}", path.display())));
    for &v in x {
        let s = (v.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        w.write_sample(s).unwrap_or_else(|e| exit(&e.to_string()));
    }
    w.finalize().unwrap_or_else(|e| exit(&e.to_string()));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [speech, kind, snr, depth, dir] = args.as_slice() else {
        exit("usage: denoise_speech SPEECH.wav white|fan|hum SNR_DB DEPTH_DB OUT_DIR");
    };
    let snr: f64 = snr.parse().unwrap_or_else(|_| exit("SNR_DB: a number"));
    let depth: f32 = depth.parse().unwrap_or_else(|_| exit("DEPTH_DB: a number"));
    let rec = wzp_stages::audio::wav_source::read_wav_mono(Path::new(speech))
        .unwrap_or_else(|e| exit(&format!("{speech}: {e}")));
    if rec.rate != 16_000 {
        exit(&format!("{speech}: {} Hz; give 16 kHz", rec.rate));
    }
    let speech = rec.samples;
    let mut seed = 7;
    let mut lp = 0.0f32;
    let mut nz: Vec<f32> = (0..speech.len())
        .map(|i| match kind.as_str() {
            "white" => noise(&mut seed),
            "fan" => {
                lp += 0.3 * (noise(&mut seed) - lp);
                lp
            }
            "hum" => {
                let t = i as f32 / 16_000.0;
                (1..=6)
                    .map(|h| (std::f32::consts::TAU * 50.0 * h as f32 * t).sin() / h as f32)
                    .sum::<f32>()
                    + 0.1 * noise(&mut seed)
            }
            _ => exit("NOISE: white, fan or hum"),
        })
        .collect();
    let ms =
        |x: &[f32]| x.iter().map(|v| *v as f64 * *v as f64).sum::<f64>() / x.len().max(1) as f64;
    let active: Vec<f32> = speech.iter().copied().filter(|v| v.abs() > 0.01).collect();
    let k = (ms(&active) / ms(&nz) / 10f64.powf(snr / 10.0)).sqrt() as f32;
    nz.iter_mut().for_each(|v| *v *= k);
    let noisy: Vec<f32> = speech.iter().zip(&nz).map(|(s, n)| s + n).collect();
    let hop = 80;
    let mut ns = NoiseSuppressor::new(16_000, hop, depth);
    let whole = noisy.len() / hop * hop;
    let mut out = vec![0.0f32; whole + hop];
    ns.process(&noisy[..whole], &mut out[..whole]);
    let tail = vec![0.0f32; hop];
    ns.process(&tail, &mut out[whole..]);
    out.drain(..hop);
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir).unwrap_or_else(|e| exit(&e.to_string()));
    write(&dir.join("noisy.wav"), &noisy[..whole]);
    write(&dir.join("denoised.wav"), &out[..whole]);
    println!(
        "noise {:.1} dBFS, read {:.1} dBFS; output {:.1} dB under the input (last second); {:?}",
        10.0 * ms(&nz).log10(),
        ns.noise_dbfs(),
        ns.removed_db(),
        ns.stats()
    );
}

fn exit(msg: &str) -> ! {
    eprintln!("denoise_speech: {msg}");
    std::process::exit(2)
}
