//! WAV in and out: `audio.wav_source` reads every supported format at any
//! rate and channel count, refuses bad files with a useful message, and
//! `audio.wav_sink` leaves a complete file behind.

mod audio_support;

use std::path::{Path, PathBuf};

use audio_support::*;
use wzp_engine::prelude::*;
use wzp_stages::audio::signal::{rms_dbfs, speech_like, xcorr_peak};
use wzp_stages::audio::wav_sink::WavSink;
use wzp_stages::audio::wav_source::{read_wav_mono, WavSource, MAX_FRAMES};

const FILE_RATE: u32 = 44_100;

/// Left and right channels of the test file; their average is what the
/// stage must play.
fn stereo_frame(i: usize, rate: u32) -> (f64, f64) {
    let t = i as f64 / rate as f64;
    let a = (std::f64::consts::TAU * 440.0 * t).sin();
    let b = (std::f64::consts::TAU * 1250.0 * t).sin();
    (0.6 * a, 0.2 * a + 0.2 * b)
}

fn expected_mono(n: usize, rate: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let (l, r) = stereo_frame(i, rate);
            ((l + r) / 2.0) as f32
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Fmt {
    I8,
    I16,
    I24,
    I32,
    F32,
}

fn write_stereo(path: &Path, fmt: Fmt, frames: usize) {
    let (bits, sample_format) = match fmt {
        Fmt::I8 => (8, hound::SampleFormat::Int),
        Fmt::I16 => (16, hound::SampleFormat::Int),
        Fmt::I24 => (24, hound::SampleFormat::Int),
        Fmt::I32 => (32, hound::SampleFormat::Int),
        Fmt::F32 => (32, hound::SampleFormat::Float),
    };
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: FILE_RATE,
        bits_per_sample: bits,
        sample_format,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..frames {
        let (l, r) = stereo_frame(i, FILE_RATE);
        for v in [l, r] {
            match fmt {
                Fmt::I8 => w.write_sample((v * 127.0).round() as i8).unwrap(),
                Fmt::I16 => w.write_sample((v * 32767.0).round() as i16).unwrap(),
                Fmt::I24 => w.write_sample((v * 8_388_607.0).round() as i32).unwrap(),
                Fmt::I32 => w
                    .write_sample((v * 2_147_483_647.0).round() as i32)
                    .unwrap(),
                Fmt::F32 => w.write_sample(v as f32).unwrap(),
            }
        }
    }
    w.finalize().unwrap();
}

#[test]
fn every_format_round_trips_through_the_source_at_the_graph_rate() {
    let dir = temp_dir("roundtrip");
    // 1.51 s: 72480 samples at 48 kHz, 75.5 quanta, so the last one is padded.
    let frames = (1.51 * FILE_RATE as f64) as usize;
    let want_len = (frames as u64 * 48_000).div_ceil(FILE_RATE as u64) as usize;
    let expected = expected_mono(want_len, 48_000);
    for fmt in [Fmt::I8, Fmt::I16, Fmt::I24, Fmt::I32, Fmt::F32] {
        let path = dir.join(format!("{fmt:?}.wav"));
        write_stereo(&path, fmt, frames);
        let mut h = Harness::build(&WavSource, &[("path", text(path.to_str().unwrap()))]).unwrap();
        let (out, cycles) = h.collect_until_finished(1000);
        assert_eq!(cycles, want_len.div_ceil(960), "{fmt:?}: quanta played");
        assert!(
            out[want_len..].iter().all(|&s| s == 0.0),
            "{fmt:?}: the last quantum is padded with silence"
        );
        // Judge away from the edges, where the filter sees the file's start/end.
        let body = &out[500..want_len - 500];
        let (lag, r) = xcorr_peak(body, &expected[500..want_len - 500], 20);
        assert_eq!(lag, 0, "{fmt:?}: the audio is shifted");
        let floor = if matches!(fmt, Fmt::I8) {
            0.999
        } else {
            0.99999
        };
        assert!(r > floor, "{fmt:?}: correlation {r}");
        let level = rms_dbfs(body);
        let want_level = rms_dbfs(&expected[500..want_len - 500]);
        // 8-bit files are written with a peak of 127 and read back over 128:
        // 0.07 dB quieter, by the format's own asymmetry.
        let tolerance = if matches!(fmt, Fmt::I8) { 0.1 } else { 0.02 };
        assert!(
            (level - want_level).abs() < tolerance,
            "{fmt:?}: level {level} vs {want_level}"
        );
        assert_eq!(h.run(), Flow::Finished, "{fmt:?}: stays finished");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_file_at_the_graph_rate_is_played_bit_exact() {
    let dir = temp_dir("exact");
    let path = dir.join("mono48.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    let values: Vec<i16> = (0..1920)
        .map(|i| ((i * 37) % 65536 - 32768) as i16)
        .collect();
    for &v in &values {
        w.write_sample(v).unwrap();
    }
    w.finalize().unwrap();
    let mut h = Harness::build(&WavSource, &[("path", text(path.to_str().unwrap()))]).unwrap();
    let (out, cycles) = h.collect_until_finished(10);
    assert_eq!(cycles, 2);
    let want: Vec<f32> = values.iter().map(|&v| v as f32 / 32768.0).collect();
    assert_eq!(out, want);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_rate_param_converts_to_another_rate_and_looping_wraps() {
    let dir = temp_dir("rate");
    let path = dir.join("s.wav");
    write_stereo(&path, Fmt::I16, FILE_RATE as usize / 2);
    let mut h = Harness::build(
        &WavSource,
        &[
            ("path", text(path.to_str().unwrap())),
            ("rate", int(16_000)),
            ("loop", ParamValue::Bool(true)),
        ],
    )
    .unwrap();
    assert_eq!(h.built_outputs[0].ty, PortType::Pcm { rate: 16_000 });
    let mut out = Vec::new();
    for _ in 0..60 {
        assert_eq!(h.run(), Flow::Continue, "a looping source never finishes");
        out.extend_from_slice(h.output(0));
    }
    // 0.5 s = 8000 samples at 16 kHz; 60 quanta of 320 = 1.2 s: wrapped twice.
    assert_eq!(h.counter("loops"), 2);
    let first = &out[..8000];
    let second = &out[8000..16_000];
    assert_eq!(
        first, second,
        "each loop plays the same samples, seamlessly"
    );
    let expected = expected_mono(8000, 16_000);
    let (lag, r) = xcorr_peak(&first[300..7700], &expected[300..7700], 10);
    assert_eq!(lag, 0);
    assert!(r > 0.99999, "{r}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_builtin_speech_is_the_default_input() {
    for path in ["", "builtin", "builtin:speech"] {
        let mut h = Harness::build(&WavSource, &[("path", text(path))]).unwrap();
        let (out, cycles) = h.collect_until_finished(1000);
        assert_eq!(cycles, 200, "{path:?}: 4 s of 20 ms quanta");
        assert_eq!(out, speech_like(48_000), "{path:?}");
    }
    let mut h = Harness::build(&WavSource, &[("rate", int(16_000))]).unwrap();
    let (out, _) = h.collect_until_finished(1000);
    assert_eq!(out, speech_like(16_000), "generated at the port's rate");
    let err = Harness::build(&WavSource, &[("path", text("builtin:music"))])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("builtin:speech") && err.contains("path"),
        "{err}"
    );
}

/// A valid 16-bit stereo WAV, to corrupt.
fn valid_wav_bytes(dir: &Path) -> Vec<u8> {
    let p = dir.join("valid.wav");
    write_stereo(&p, Fmt::I16, 2000);
    std::fs::read(p).unwrap()
}

fn patch(mut bytes: Vec<u8>, at: usize, value: &[u8]) -> Vec<u8> {
    bytes[at..at + value.len()].copy_from_slice(value);
    bytes
}

#[test]
fn bad_files_are_refused_with_the_path_and_what_to_do() {
    let dir = temp_dir("bad");
    let valid = valid_wav_bytes(&dir);
    // Canonical 44-byte header from hound: fmt at 12, channels at 22, rate
    // at 24, byte rate at 28, block align at 32, bits at 34, data size at 40.
    assert_eq!(
        &valid[36..40],
        b"data",
        "test assumes hound's canonical header"
    );
    let data_len = valid.len() - 44;
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing.wav", None, "cannot open"),
        ("empty.wav", Some(vec![]), "is empty"),
        (
            "truncated_header.wav",
            Some(valid[..20].to_vec()),
            "WAV file",
        ),
        (
            "text.wav",
            Some(b"this is a text file, not audio\n".repeat(10)),
            "WAV",
        ),
        (
            "zero_channels.wav",
            Some(patch(valid.clone(), 22, &0u16.to_le_bytes())),
            "zero channels",
        ),
        (
            // 2 GiB of samples declared, a few KiB present.
            "huge_length.wav",
            Some(patch(valid.clone(), 40, &0x7FFF_FFF0u32.to_le_bytes())),
            "limit",
        ),
        (
            // Under the length limit but far more than the file holds.
            "long_length.wav",
            Some(patch(valid.clone(), 40, &40_000_000u32.to_le_bytes())),
            "truncated",
        ),
        (
            "cut_short.wav",
            Some(valid[..44 + data_len / 2].to_vec()),
            "truncated",
        ),
        (
            "adpcm.wav",
            Some(patch(valid.clone(), 20, &2u16.to_le_bytes())),
            "unsupported",
        ),
        (
            "rate_zero.wav",
            Some(patch(
                patch(valid.clone(), 24, &0u32.to_le_bytes()),
                28,
                &0u32.to_le_bytes(),
            )),
            "sample rate",
        ),
        (
            "no_samples.wav",
            Some(patch(valid[..44].to_vec(), 40, &0u32.to_le_bytes())),
            "no audio",
        ),
        ("a_directory", Some(Vec::new()), "WAV"),
    ];
    for (name, bytes, needle) in cases {
        let path: PathBuf = dir.join(name);
        match (name, bytes) {
            ("a_directory", _) => std::fs::create_dir_all(&path).unwrap(),
            (_, Some(b)) => std::fs::write(&path, b).unwrap(),
            (_, None) => {}
        }
        let shown = path.display().to_string();
        let err = read_wav_mono(&path).expect_err(name);
        assert!(err.contains(needle), "{name}: {err}");
        assert!(
            err.contains(&shown),
            "{name}: error does not name the file: {err}"
        );
        // And through the stage, as a build error.
        let built = Harness::build(&WavSource, &[("path", text(&shown))]);
        let msg = built
            .err()
            .unwrap_or_else(|| panic!("{name} built"))
            .to_string();
        assert!(
            msg.contains("audio.wav_source") && msg.contains(needle),
            "{msg}"
        );
        // Every message says what to do about it.
        let advice = ["check", "convert", "give", "export", "use", "cut"];
        assert!(
            advice.iter().any(|a| err.contains(a)),
            "{name}: no advice in: {err}"
        );
    }
    // The huge case (0x7FFF_FFF0 bytes of 16-bit stereo) must be over the limit.
    const _: () = assert!(MAX_FRAMES < 0x7FFF_FFF0 / 4);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn multichannel_and_8bit_mono_are_downmixed() {
    let dir = temp_dir("channels");
    let path = dir.join("six.wav");
    let spec = hound::WavSpec {
        channels: 6,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for _ in 0..960 {
        for ch in 0..6i16 {
            w.write_sample(ch * 1000).unwrap();
        }
    }
    w.finalize().unwrap();
    let wav = read_wav_mono(&path).unwrap();
    assert_eq!(wav.channels, 6);
    assert_eq!(wav.samples.len(), 960);
    let want = (0..6).map(|c| c as f32 * 1000.0 / 32768.0).sum::<f32>() / 6.0;
    assert!(wav.samples.iter().all(|&s| (s - want).abs() < 1e-6));
    let _ = std::fs::remove_dir_all(dir);
}

fn sink(path: &Path, set: &[(&str, ParamValue)]) -> Harness {
    let mut params = vec![("path", text(path.to_str().unwrap()))];
    params.extend(set.iter().cloned());
    Harness::build(&WavSink, &params).unwrap()
}

#[test]
fn the_sink_writes_a_complete_file_in_either_format() {
    let dir = temp_dir("sink");
    let signal: Vec<f32> = sine(700.0, 48_000, 48_000, 0.4)
        .into_iter()
        .chain([1.5, -2.0, f32::NAN, 0.25])
        .collect();
    for format in ["i16", "f32"] {
        let path = dir.join(format!("{format}.wav"));
        let mut h = sink(&path, &[("format", text(format)), ("buffer", dur("5s"))]);
        h.stream(&signal);
        let quanta = signal.len().div_ceil(960);
        assert_eq!(h.counter("dropped_samples"), 0);
        let written = h.clone_counter("samples_written");
        let finalized = h.clone_gauge("finalized");
        drop(h);
        // Dropping the stage joined the writer: everything is on disk.
        assert_eq!(written.get(), (quanta * 960) as u64);
        assert_eq!(finalized.get(), 1);
        let mut r = hound::WavReader::open(&path).unwrap();
        assert_eq!(r.spec().channels, 1);
        assert_eq!(r.spec().sample_rate, 48_000);
        assert_eq!(r.duration() as usize, quanta * 960);
        let got: Vec<f32> = if format == "f32" {
            assert_eq!(r.spec().sample_format, hound::SampleFormat::Float);
            r.samples::<f32>().map(Result::unwrap).collect()
        } else {
            assert_eq!(r.spec().bits_per_sample, 16);
            r.samples::<i16>()
                .map(|s| s.unwrap() as f32 / 32767.0)
                .collect()
        };
        let n = signal.len();
        let tol = if format == "f32" { 0.0 } else { 1.0 / 32767.0 };
        for (i, (&g, &w)) in got[..48_000].iter().zip(&signal).enumerate() {
            assert!((g - w).abs() <= tol, "{format} sample {i}: {g} vs {w}");
        }
        if format == "i16" {
            assert_eq!(
                &got[48_000..48_004],
                &[
                    1.0,
                    -1.0,
                    0.0,
                    0.25f32.mul_add(32767.0, 0.0).round() / 32767.0
                ]
            );
        } else {
            assert_eq!(got[48_000], 1.5);
            assert!(got[48_002].is_nan());
        }
        assert!(got[n..].iter().all(|&s| s == 0.0), "padding is silence");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_sink_that_cannot_keep_up_counts_every_sample_it_drops() {
    let dir = temp_dir("overflow");
    let path = dir.join("o.wav");
    let mut h = sink(&path, &[("buffer", dur("100ms"))]);
    let x = sine(100.0, 48_000, 960, 0.5);
    for _ in 0..2000 {
        h.input(0).copy_from_slice(&x);
        h.run();
    }
    let dropped = h.clone_counter("dropped_samples");
    let written = h.clone_counter("samples_written");
    drop(h);
    // Every sample is either in the file or counted as dropped.
    assert_eq!(dropped.get() + written.get(), 2000 * 960);
    let r = hound::WavReader::open(&path).unwrap();
    assert_eq!(r.duration() as u64, written.get());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sink_params_and_paths_are_checked() {
    let dir = temp_dir("sinkerr");
    // A missing folder is created, as a user writing `out/x.wav` expects.
    let nested = dir.join("new/folder/out.wav");
    let h = Harness::build(&WavSink, &[("path", text(nested.to_str().unwrap()))]).unwrap();
    assert!(nested.exists());
    // Never run: the empty file goes again, the folder stays.
    drop(h);
    assert!(!nested.exists() && nested.parent().unwrap().is_dir());
    // A folder that cannot be created (a file is in the way) is a clear error.
    let blocker = dir.join("a_file");
    std::fs::write(&blocker, b"x").unwrap();
    let blocked = blocker.join("out.wav");
    let err = Harness::build(&WavSink, &[("path", text(blocked.to_str().unwrap()))])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains(blocker.to_str().unwrap()) && err.contains("cannot create the folder"),
        "{err}"
    );
    let ok = dir.join("x.wav");
    for (set, needle) in [
        (vec![("format", text("mp3"))], "format"),
        (vec![("buffer", dur("10ms"))], "buffer"),
        (vec![("rate", int(44_100 + 1))], "rate"),
    ] {
        let mut p = vec![("path", text(ok.to_str().unwrap()))];
        p.extend(set);
        let err = Harness::build(&WavSink, &p).err().unwrap().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let err = Harness::build(&WavSink, &[("path", text(" "))])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("path"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The file is replaced only once the graph runs: a graph that fails to
/// compile after its sink was built (here a link to a stage that is not
/// there) leaves an earlier recording as it was, and one that never runs
/// leaves no empty file behind.
#[test]
fn a_graph_that_never_runs_leaves_the_recording_alone() {
    let dir = temp_dir("keep");
    let keep = dir.join("keep.wav");
    let before: Vec<u8> = b"RIFF an earlier recording".to_vec();
    std::fs::write(&keep, &before).unwrap();
    let graph = |path: &Path, link_from: &str| {
        format!(
            "[graph]\nname = \"k\"\nclock = {{ driver = \"fast\" }}\n\
             [[stage]]\nid = \"src\"\nkind = \"audio.tone_source\"\n\
             [[stage]]\nid = \"rec\"\nkind = \"audio.wav_sink\"\nparams = {{ path = {:?} }}\n\
             [[link]]\nfrom = \"{link_from}.out\"\nto = \"rec.in\"\n",
            path.to_str().unwrap()
        )
    };
    let compile_it = |text: &str| {
        let spec = GraphSpec::parse(text, "k.toml", &Default::default()).unwrap();
        compile(&spec, &wzp_stages::registry(), &Resources::new())
    };
    let errs = compile_it(&graph(&keep, "scr")).err().expect("a bad link");
    assert!(errs.to_string().contains("scr"), "{errs}");
    assert_eq!(
        std::fs::read(&keep).unwrap(),
        before,
        "the file is untouched"
    );

    // Compiled and made, but dropped before a cycle: untouched as well; a
    // file the build created is removed again.
    let fresh = dir.join("fresh.wav");
    for path in [&keep, &fresh] {
        let graph = Graph::new(compile_it(&graph(path, "src")).unwrap());
        drop(graph);
    }
    assert_eq!(std::fs::read(&keep).unwrap(), before);
    assert!(!fresh.exists(), "no empty file is left behind");

    // Run: the file is replaced by the recording.
    let mut graph = Graph::new(compile_it(&graph(&keep, "src")).unwrap());
    graph
        .start(RunOptions {
            driver: ClockDriver::Fast,
            duration: Some(std::time::Duration::from_millis(200)),
            ..Default::default()
        })
        .unwrap();
    assert!(graph.wait(std::time::Duration::from_secs(30)));
    drop(graph);
    let r = hound::WavReader::open(&keep).unwrap();
    assert!(r.duration() >= 9600, "{}", r.duration());
    let _ = std::fs::remove_dir_all(dir);
}
