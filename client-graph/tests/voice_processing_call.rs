//! A call's microphone processing, end to end: real `wzp-relay` and
//! `wzp-client` processes on loopback, real QUIC, real libopus.
//!
//! Echo: member A's microphone hears its own speaker through a simulated
//! room: `graphs/call.toml` with an `audio.room` stage spliced in before
//! the echo canceller (what a sound card's speaker and microphone would
//! do). A hums a steady tone the whole call; B talks and records what comes
//! back: A's tone and the echo of its own voice. With A's echo canceller on
//! (the linear filter and the residual echo suppressor after it), B hears
//! far less of itself than with it off, and A's tone just as loud.
//!
//! Noise: A talks over a fan; with A's noise suppressor on, B hears the fan
//! in A's pauses far quieter, and A's voice as loud.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bin, stats_figure, tmp, write_wav_16k, Proc, Relay};
use wzp_stages::audio::signal::{goertzel_dbfs, rms_dbfs, speech_like};
use wzp_stages::audio::wav_source::read_wav_mono;

const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "a secret only the members hold";
/// How long each call lasts; the echo is measured over its last seconds.
const CALL: &str = "16s";

/// A's tone: 1 kHz, -24 dBFS.
const TONE_HZ: f64 = 1000.0;
const TONE_DBFS: f32 = -24.0;

/// `graphs/call.toml` with A's microphone hearing its speaker: the room's
/// `in` is what the microphone hears of A (its tone), its `speaker`
/// the room's mix as it goes to the speaker, 40 ms of buffering, the direct
/// path at -6 dB, six reflections.
fn room_graph(dir: &Path) -> PathBuf {
    let graph = include_str!("../../graphs/call.toml");
    let link = "from = \"up.out\"\nto = \"aec.mic\"\n";
    assert!(
        graph.contains(link),
        "graphs/call.toml no longer links up.out to aec.mic"
    );
    let graph = graph.replace(
        link,
        "from = \"up.out\"\nto = \"room.in\"\n\n[[link]]\nfrom = \"room.out\"\nto = \"aec.mic\"\n\n\
         [[link]]\nfrom = \"mix.out\"\nto = \"room.speaker\"\n",
    ) + "\n[[stage]]\nid = \"room\"\nkind = \"audio.room\"\n\
         params = { delay = \"40ms\", gain_db = -6, reflections = 6 }\n";
    let path = dir.join("room_call.toml");
    std::fs::write(&path, graph).unwrap();
    path
}

/// B's voice: noise in the rhythm of the built-in speech (its syllables and
/// pauses), so the canceller meets a voice-like on/off far end that it
/// learns from quickly.
fn voice() -> Vec<f32> {
    let shape = speech_like(16_000);
    let mut env = 0.0f32;
    let mut seed = 0x1234_5678u32;
    shape
        .iter()
        .map(|s| {
            env = env.max(s.abs()) * 0.999 + 0.001 * s.abs();
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let n = (seed as f32 / u32::MAX as f32) * 2.0 - 1.0;
            0.8 * env * n
        })
        .collect()
}

fn relay(dir: &Path) -> Relay {
    let seed = dir.join("relay.seed");
    Relay::start(
        "wzp-relay",
        &["-i", seed.to_str().unwrap(), "--listen", "127.0.0.1:0"],
        WAIT,
    )
}

fn join(dir: &Path, relay: &Relay, room: &str, name: &str, extra: &[&str]) -> Proc {
    Proc::spawn(
        name,
        Command::new(bin("wzp-client"))
            .args(["join", "--relay", &relay.addr.to_string(), "--room", room])
            .args(["--room-secret", SECRET])
            .args(["--relay-fingerprint", &relay.fingerprint])
            .args([
                "--identity",
                dir.join(format!("{name}.seed")).to_str().unwrap(),
            ])
            .args([
                "--known-relays",
                dir.join(format!("{name}.known")).to_str().unwrap(),
            ])
            .args([
                "--stats-json",
                dir.join(format!("{name}.json")).to_str().unwrap(),
            ])
            .args(["--alias", name, "--no-realtime", "--duration", CALL])
            .args(extra),
    )
}

/// A figure (`gauges` or `counters`) of `stage` in `name`'s last
/// `--stats-json`.
fn figure(dir: &Path, name: &str, stage: &str, kind: &str, key: &str) -> i64 {
    stats_figure(&dir.join(format!("{name}.json")), stage, kind, key)
        .unwrap_or_else(|| panic!("no {kind} {key} of {stage} in {name}.json"))
}

fn gauge(dir: &Path, name: &str, stage: &str, key: &str) -> i64 {
    figure(dir, name, stage, "gauges", key)
}

fn counter(dir: &Path, name: &str, stage: &str, key: &str) -> i64 {
    figure(dir, name, stage, "counters", key)
}

/// `x` without the tone: a second-order FIR notch at [`TONE_HZ`] (its gain
/// elsewhere is not flat, the same for every recording compared).
fn without_tone(x: &[f32]) -> Vec<f32> {
    let c = 2.0 * (std::f64::consts::TAU * TONE_HZ / 16_000.0).cos() as f32;
    (2..x.len())
        .map(|n| x[n] - c * x[n - 1] + x[n - 2])
        .collect()
}

/// One call in `room`: B talks and records, A hums and its speaker leaks
/// into its microphone; A cancels the echo or not. Returns, over the
/// call's last 5 s of B's recording, the level of B's echo (all but the
/// tone) and of A's tone.
fn call(dir: &Path, relay: &Relay, room: &str, cancel: bool) -> (f32, f32) {
    let voice_wav = dir.join("b-says.wav");
    let silence_wav = dir.join("a-says.wav");
    let heard = dir.join(format!("b-heard-{room}.wav"));
    let graph = room_graph(dir);
    let mut b = join(
        dir,
        relay,
        room,
        &format!("b-{room}"),
        &[
            "--input",
            voice_wav.to_str().unwrap(),
            "--output",
            heard.to_str().unwrap(),
        ],
    );
    b.expect_line("joined", WAIT);
    let a_name = format!("a-{room}");
    let mut a = join(
        dir,
        relay,
        room,
        &a_name,
        &[
            "--input",
            silence_wav.to_str().unwrap(),
            "--output",
            "null",
            "--graph",
            graph.to_str().unwrap(),
            "--set",
            &format!("echo_cancel={cancel}"),
        ],
    );
    assert!(a.exit(WAIT * 2).success(), "A failed: {:?}", a.drain());
    assert!(b.exit(WAIT * 2).success(), "B failed: {:?}", b.drain());
    if cancel {
        assert!(counter(dir, &a_name, "aec", "filter_adopted") > 0);
        assert_eq!(gauge(dir, &a_name, "aec", "echo_found"), 1);
        let delay = gauge(dir, &a_name, "aec", "echo_delay_ms");
        assert!((39..=145).contains(&delay), "echo delay read as {delay} ms");
    } else {
        assert_eq!(gauge(dir, &a_name, "aec", "echo_found"), 0);
    }
    let rec = read_wav_mono(&heard).unwrap();
    assert_eq!(rec.rate, 16_000);
    assert!(
        rec.samples.len() > 10 * 16_000,
        "B recorded {} samples",
        rec.samples.len()
    );
    let tail = &rec.samples[rec.samples.len() - 5 * 16_000..];
    (
        rms_dbfs(&without_tone(tail)),
        goertzel_dbfs(tail, 16_000, TONE_HZ),
    )
}

#[test]
fn a_call_on_a_speaker_sends_back_far_less_echo_with_the_canceller() {
    let dir = tmp("wzp-aec", "call");
    write_wav_16k(&dir.join("b-says.wav"), &voice());
    let amp = 10f32.powf((TONE_DBFS + 3.01) / 20.0);
    let tone: Vec<f32> = (0..16_000 * 4)
        .map(|i| amp * (std::f64::consts::TAU * TONE_HZ * i as f64 / 16_000.0).sin() as f32)
        .collect();
    write_wav_16k(&dir.join("a-says.wav"), &tone);
    let relay = relay(&dir);
    let (echo_off, tone_off) = call(&dir, &relay, "off", false);
    let (echo_on, tone_on) = call(&dir, &relay, "on", true);
    let own = rms_dbfs(&without_tone(&voice()));
    eprintln!(
        "B's own voice {own:.1} dBFS (notched); its echo {echo_off:.1} without cancelling, \
         {echo_on:.1} with; A's tone {tone_off:.1} / {tone_on:.1}"
    );
    // A's tone reaches B either way, cancelling or not: the canceller
    // leaves the near end's voice alone.
    for t in [tone_off, tone_on] {
        assert!((t - TONE_DBFS).abs() < 3.0, "A's tone heard at {t:.1} dBFS");
    }
    assert!(
        (tone_on - tone_off).abs() < 1.5,
        "tone {tone_on:.1} with, {tone_off:.1} without"
    );
    // Without: B hears itself through A's room (-6 dB and reflections,
    // two Opus encodings): loud.
    assert!(
        echo_off > own - 15.0,
        "no echo to cancel? {echo_off:.1} against {own:.1}"
    );
    // With: far less of it. The linear filter alone took 29 dB off
    // (-20.8 -> -49.6 dBFS), with the residual echo suppressor after it 42
    // (-62.8).
    assert!(
        echo_on < echo_off - 35.0,
        "echo {echo_on:.1} dBFS with the canceller against {echo_off:.1} without"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A's voice for the noise call: the same 2 s of the built-in speech, then
/// 2 s of pause, four times (16 s): any stretch of the call holds the same
/// voice, however late B's recording starts.
fn talk_and_pause() -> Vec<f32> {
    let speech = speech_like(16_000);
    let mut out = Vec::new();
    for _ in 0..4 {
        out.extend_from_slice(&speech[..2 * 16_000]);
        out.extend(std::iter::repeat_n(0.0f32, 2 * 16_000));
    }
    out
}

/// A fan at -40 dBFS: noise through a one-pole low-pass at ~1 kHz.
fn fan(n: usize) -> Vec<f32> {
    let mut seed = 0x9e37_79b9u32;
    let mut lp = 0.0f32;
    let raw: Vec<f32> = (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            lp += 0.3 * ((seed as f32 / u32::MAX as f32) * 2.0 - 1.0 - lp);
            lp
        })
        .collect();
    let ms = raw.iter().map(|v| v * v).sum::<f32>() / n as f32;
    let k = (1e-4 / ms).sqrt();
    raw.iter().map(|v| v * k).collect()
}

/// The pauses' and the voice's levels (dBFS) in `x`: the 10th percentile
/// of its 100 ms levels, and the mean power of its loudest 40 % of them
/// (the voice is on half the time; one percentile of it moved 2 dB from
/// call to call).
fn quiet_and_loud(x: &[f32]) -> (f32, f32) {
    let mut levels: Vec<f32> = x.chunks_exact(1600).map(rms_dbfs).collect();
    levels.sort_by(|a, b| a.total_cmp(b));
    let loud = &levels[levels.len() * 6 / 10..];
    let power = loud.iter().map(|l| 10f32.powf(l / 10.0)).sum::<f32>() / loud.len() as f32;
    (levels[levels.len() / 10], 10.0 * power.log10())
}

/// One call: A talks over the fan with noise suppression on or off; B
/// records. Returns B's recording's (pause, voice) levels over its last
/// 10 s.
fn noise_call(dir: &Path, relay: &Relay, suppress: bool) -> (f32, f32) {
    let room = format!("noise-{suppress}");
    let heard = dir.join(format!("b-heard-{room}.wav"));
    let mut b = join(
        dir,
        relay,
        &room,
        &format!("b-{room}"),
        &[
            "--input",
            dir.join("b-quiet.wav").to_str().unwrap(),
            "--output",
            heard.to_str().unwrap(),
        ],
    );
    b.expect_line("joined", WAIT);
    let a_name = format!("a-{room}");
    let mut a = join(
        dir,
        relay,
        &room,
        &a_name,
        &[
            "--input",
            dir.join("a-over-fan.wav").to_str().unwrap(),
            "--output",
            "null",
            "--set",
            &format!("noise_suppress={suppress}"),
        ],
    );
    assert!(a.exit(WAIT * 2).success(), "A failed: {:?}", a.drain());
    assert!(b.exit(WAIT * 2).success(), "B failed: {:?}", b.drain());
    if suppress {
        // The fan is at -40 dBFS (A's 16 kHz WAV, resampled to 48 kHz).
        let heard = gauge(dir, &a_name, "ns", "noise_dbfs") as f32 / 10.0;
        assert!(
            (heard + 40.0).abs() < 4.0,
            "A's suppressor heard the fan at {heard} dBFS"
        );
        assert!(gauge(dir, &a_name, "ns", "removed_db") > 0);
    }
    let rec = read_wav_mono(&heard).unwrap();
    assert!(
        rec.samples.len() > 12 * 16_000,
        "B recorded {} samples",
        rec.samples.len()
    );
    quiet_and_loud(&rec.samples[rec.samples.len() - 10 * 16_000..])
}

#[test]
fn a_call_over_a_fan_sends_the_fan_far_quieter_with_noise_suppression() {
    let dir = tmp("wzp-ns", "call");
    let voice = talk_and_pause();
    let noise = fan(voice.len());
    let mic: Vec<f32> = voice.iter().zip(&noise).map(|(v, f)| v + f).collect();
    write_wav_16k(&dir.join("a-over-fan.wav"), &mic);
    write_wav_16k(&dir.join("b-quiet.wav"), &vec![0.0; 16_000]);
    let relay = relay(&dir);
    let (pause_off, voice_off) = noise_call(&dir, &relay, false);
    let (pause_on, voice_on) = noise_call(&dir, &relay, true);
    eprintln!(
        "B heard A's pauses at {pause_off:.1} dBFS without noise suppression, {pause_on:.1} with; \
         A's voice at {voice_off:.1} / {voice_on:.1}"
    );
    // Without: the fan, through Opus, near its -40 dBFS.
    assert!(
        (pause_off + 40.0).abs() < 5.0,
        "the fan heard at {pause_off:.1} dBFS"
    );
    // With: the fan down by most of the 15 dB depth, the voice as loud.
    assert!(
        pause_on < pause_off - 10.0,
        "pauses at {pause_on:.1} dBFS with, {pause_off:.1} without"
    );
    assert!(
        (voice_on - voice_off).abs() < 2.0,
        "the voice at {voice_on:.1} dBFS with, {voice_off:.1} without"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
