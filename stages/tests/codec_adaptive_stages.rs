//! `codec.adaptive_encode` alone: the stream it stamps across live codec
//! and frame-size switches (one seq and media clock, the codec id of each
//! frame), allocation-free; and the params it refuses.

wzp_engine::install_alloc_checker!();

mod codec_support;

use std::sync::Arc;

use codec_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::{checker_installed, count_allocs};
use wzp_proto::media::CodecId;
use wzp_stages::codec::adaptive_decode::AdaptiveDecodeFactory;
use wzp_stages::codec::adaptive_encode::AdaptiveEncodeFactory;
use wzp_stages::codec::live::{CodecLive, LiveCodecSettings, LiveOpusSettings, OpusLive};
use wzp_stages::codec::opus_ffi::{Dred, DredDecoder};
use wzp_stages::codec::profile::Profile;

#[test]
fn one_seq_and_media_clock_across_codec_and_frame_size_switches() {
    assert!(checker_installed());
    let cell = Arc::new(CodecLive::new());
    let mut res = Resources::new();
    res.insert("codec_live", cell.clone());
    let mut enc = Harness::try_with_resources(
        &AdaptiveEncodeFactory,
        &[("codec_live", str_("codec_live"))],
        &res,
    )
    .unwrap();
    // (tier, cycles of 20 ms, codec id, frame ms, payload bytes or 0 for
    // Opus's variable size).
    let plan: [(&str, u64, u8, u32, usize); 6] = [
        ("good", 10, CodecId::OPUS.0, 20, 0),
        ("poor", 10, CodecId::CODEC2_3200.0, 20, 8),
        ("catastrophic", 10, CodecId::CODEC2_1200.0, 40, 6),
        ("good", 10, CodecId::OPUS.0, 20, 0),
        ("degraded", 10, CodecId::OPUS.0, 40, 0),
        ("fair", 10, CodecId::OPUS.0, 20, 0),
    ];
    let x = speechlike(Q * 60);
    let mut frames: Vec<(usize, Captured)> = Vec::new();
    let mut cycle = 0usize;
    let mut allocations = 0;
    for (phase, &(tier, cycles, ..)) in plan.iter().enumerate() {
        cell.set(LiveCodecSettings::of(Profile::by_name(tier).unwrap()))
            .unwrap();
        for _ in 0..cycles {
            enc.set_pcm_in(&x[cycle * Q..(cycle + 1) * Q]);
            let ((), n) = count_allocs(|| enc.step());
            allocations += n;
            cycle += 1;
            // Both Codec2 modes: a 3200 frame each cycle, a 1200 frame
            // every other one; each leaves the cycle after it is made.
            enc.wait_counter("codec2_frames_encoded", (cycle + cycle / 2) as u64);
            frames.extend(capture(enc.frames_out()).into_iter().map(|f| (phase, f)));
        }
    }
    assert_eq!(allocations, 0);
    assert_eq!(enc.counter("codec_switches"), 3);
    assert_eq!(enc.counter("frame_size_switches"), 2);
    let mut ts = 0u32;
    for (i, (phase, f)) in frames.iter().enumerate() {
        let (tier, _, codec, ms, bytes) = plan[*phase];
        assert_eq!(f.meta.seq, i as u32, "frame {i} ({tier})");
        assert_eq!(f.meta.timestamp, ts, "frame {i} ({tier})");
        assert_eq!(f.meta.codec, codec, "frame {i} ({tier})");
        assert_eq!(u32::from(f.meta.duration_ms), ms, "frame {i} ({tier})");
        if bytes > 0 {
            assert_eq!(f.bytes.len(), bytes, "frame {i} ({tier})");
        } else {
            assert!(f.bytes.len() > 2, "frame {i} ({tier}): DTX-sized");
        }
        assert_eq!(f.meta.flags & frame_flags::STREAM_START != 0, i == 0);
        ts = ts.wrapping_add(ms * 48);
    }
    // Each phase sends its own share of the 200 ms: the switch takes
    // effect in its first cycle, no pause, no doubled frames (a 40 ms
    // phase may end with a frame half filled).
    for (phase, &(tier, cycles, _, ms, _)) in plan.iter().enumerate() {
        let n = frames.iter().filter(|(p, _)| *p == phase).count() as u64;
        let want = cycles * 20 / u64::from(ms);
        assert!(
            n == want || (ms == 40 && n + 1 >= want && n <= want + 1),
            "{tier}: {n} frames, want {want}"
        );
        let first = frames.iter().find(|(p, _)| *p == phase).unwrap();
        assert_eq!(
            first.1.meta.codec, plan[phase].2,
            "{tier} from its first frame"
        );
    }
}

/// Runs `x` through an encoder whose codec cell holds `plan` (settings,
/// cycles each), from the first cycle; returns each item sent with the
/// index of the phase it left in, and the encoder.
fn encode_plan(x: &[f32], plan: &[(LiveCodecSettings, u64)]) -> (Vec<(usize, Captured)>, Harness) {
    assert!(checker_installed());
    let cell = Arc::new(CodecLive::new());
    let mut res = Resources::new();
    res.insert("codec_live", cell.clone());
    let mut enc = Harness::try_with_resources(
        &AdaptiveEncodeFactory,
        &[("codec_live", str_("codec_live"))],
        &res,
    )
    .unwrap();
    let mut items = Vec::new();
    let mut cycle = 0usize;
    let mut allocations = 0;
    for (phase, &(settings, cycles)) in plan.iter().enumerate() {
        cell.set(settings).unwrap();
        for _ in 0..cycles {
            enc.set_pcm_in(&x[cycle * Q..(cycle + 1) * Q]);
            let ((), n) = count_allocs(|| enc.step());
            allocations += n;
            cycle += 1;
            enc.wait_counter("codec2_frames_encoded", (cycle + cycle / 2) as u64);
            items.extend(capture(enc.frames_out()).into_iter().map(|f| (phase, f)));
        }
    }
    assert_eq!(allocations, 0, "allocations in process");
    (items, enc)
}

/// DRED goes on through a switch to Codec2 and back. The Opus settings
/// (DRED 1 s) are set once, before the stream starts, and not touched again;
/// the encoder resets its Opus state on the switch back (the far decoder
/// does too), and the packets after it still carry DRED. libopus's reset
/// clears the DRED duration with the coding state: a call at 70 % loss
/// that went to Codec2 and back to Opus with DRED sent none, and its
/// listener rebuilt nothing from it.
#[test]
fn dred_goes_on_after_a_switch_to_codec2_and_back() {
    assert!(checker_installed());
    let opus = Arc::new(OpusLive::new());
    let codec = Arc::new(CodecLive::new());
    let mut res = Resources::new();
    res.insert("enc_live", opus.clone());
    res.insert("codec_live", codec.clone());
    let mut enc = Harness::try_with_resources(
        &AdaptiveEncodeFactory,
        &[
            ("live_settings", str_("enc_live")),
            ("codec_live", str_("codec_live")),
        ],
        &res,
    )
    .unwrap();
    opus.set(LiveOpusSettings {
        bitrate: 24_000,
        dred_ms: 1000,
        expected_loss: 14,
        inband_fec: false,
    })
    .unwrap();
    let good = LiveCodecSettings::of(Profile::by_name("good").unwrap());
    let plan = [
        (good, 60u64),
        (codec2_at("catastrophic", 40), 20),
        (good, 60),
    ];
    let x = speechlike(Q * 140);
    let mut dec = DredDecoder::new().unwrap();
    let mut dred = Dred::new().unwrap();
    // Per phase, the DRED reach (48 kHz samples) of each Opus packet sent.
    let mut reach: [Vec<usize>; 3] = Default::default();
    let mut cycle = 0usize;
    let mut allocations = 0;
    for (phase, &(settings, cycles)) in plan.iter().enumerate() {
        codec.set(settings).unwrap();
        for _ in 0..cycles {
            enc.set_pcm_in(&x[cycle * Q..(cycle + 1) * Q]);
            let ((), n) = count_allocs(|| enc.step());
            allocations += n;
            cycle += 1;
            enc.wait_counter("codec2_frames_encoded", (cycle + cycle / 2) as u64);
            for f in capture(enc.frames_out()) {
                if f.meta.codec == CodecId::OPUS.0 {
                    reach[phase].push(dred.parse(&mut dec, &f.bytes, 48_000).unwrap());
                }
            }
        }
    }
    assert_eq!(allocations, 0, "allocations in process");
    assert_eq!(enc.counter("codec_switches"), 2);
    assert!(
        reach[1].is_empty(),
        "no Opus while Codec2 is on: {:?}",
        reach[1]
    );
    for (phase, r) in [(0, &reach[0]), (2, &reach[2])] {
        assert_eq!(r.len(), 60, "phase {phase}");
        // DRED from the encoder's first second of history on: every packet
        // past the first quarter second carries it.
        assert!(
            r[12..].iter().all(|&n| n > 0),
            "phase {phase}: DRED reach per Opus packet {r:?}"
        );
    }
}

fn codec2_at(tier: &str, frame_ms: u32) -> LiveCodecSettings {
    LiveCodecSettings {
        profile: Profile::by_name(tier).unwrap(),
        frame_ms,
    }
}

/// Codec2 1200 in 80 and 120 ms packets: each item carries two or three
/// 6-byte frames, the very frames a 40 ms stream of the same input sends
/// one by one; `seq` +1 and the timestamp + the whole packet per item.
#[test]
fn codec2_packets_carry_several_frames_on_one_seq_and_clock() {
    let x = speechlike(Q * 64);
    let (single, _) = encode_plan(&x, &[(codec2_at("catastrophic", 40), 60)]);
    let single: Vec<&Captured> = single.iter().map(|(_, f)| f).collect();
    assert!(single.len() >= 28, "{} frames at 40 ms", single.len());
    for (k, bytes) in [(2usize, 12usize), (3, 18)] {
        let ms = 40 * k as u32;
        let (packed, enc) = encode_plan(&x, &[(codec2_at("catastrophic", ms), 60)]);
        assert_eq!(enc.gauge("frame_ms"), i64::from(ms));
        assert_eq!(enc.gauge("codec"), i64::from(CodecId::CODEC2_1200.0));
        assert_eq!(packed.len(), single.len() / k, "{ms} ms: packets sent");
        for (i, (_, f)) in packed.iter().enumerate() {
            let what = format!("{ms} ms packet {i}");
            assert_eq!(f.meta.codec, CodecId::CODEC2_1200.0, "{what}");
            assert_eq!(f.bytes.len(), bytes, "{what}");
            assert_eq!(u32::from(f.meta.duration_ms), ms, "{what}");
            assert_eq!(f.meta.seq, i as u32, "{what}");
            assert_eq!(f.meta.timestamp, i as u32 * ms * 48, "{what}");
            assert_eq!(f.meta.flags & frame_flags::STREAM_START != 0, i == 0);
            // The receiver reads the same length from the payload.
            assert_eq!(
                CodecId(f.meta.codec).frame_samples(&f.bytes),
                Some(ms * 48),
                "{what}"
            );
            let want: Vec<u8> = single[i * k..(i + 1) * k]
                .iter()
                .flat_map(|s| s.bytes.iter().copied())
                .collect();
            assert_eq!(f.bytes, want, "{what}: the 40 ms frames, in order");
        }
        assert_eq!(enc.counter("codec2_packets_out"), packed.len() as u64);
        assert_eq!(enc.counter("codec2_frames_out"), (packed.len() * k) as u64);
    }
}

/// Switching in and out of packed Codec2: every item's length is what its
/// payload says, one seq and media clock throughout, a packet duration
/// change applies at a packet boundary, and a packet partly filled when
/// the codec changes leaves at once, shorter: the audio a Codec2 phase
/// sent matches the phase's length.
#[test]
fn packed_codec2_switches_lose_no_audio() {
    let good = LiveCodecSettings::of(Profile::by_name("good").unwrap());
    // (settings, cycles of 20 ms)
    let plan = [
        (good, 10),
        (codec2_at("catastrophic", 120), 14),
        (codec2_at("poor", 60), 7),
        (codec2_at("poor", 100), 12),
        (codec2_at("catastrophic", 80), 9),
        (good, 10),
    ];
    let x = speechlike(Q * 64);
    let (items, enc) = encode_plan(&x, &plan);
    assert_eq!(enc.counter("codec_switches"), 4);
    // Frames per packet wanted: 1 -> 3 (catastrophic at 120), 3 (poor at
    // 60: no change), 5 (poor at 100), 2 (catastrophic at 80).
    assert_eq!(enc.counter("frame_size_switches"), 3);
    let mut ts = 0u32;
    for (i, (phase, f)) in items.iter().enumerate() {
        let ms = u32::from(f.meta.duration_ms);
        let what = format!("item {i} (phase {phase}, codec {:#x})", f.meta.codec);
        assert_eq!(f.meta.seq, i as u32, "{what}");
        assert_eq!(f.meta.timestamp, ts, "{what}");
        assert_eq!(
            CodecId(f.meta.codec).frame_samples(&f.bytes),
            Some(ms * 48),
            "{what}: the payload says another length"
        );
        ts = ts.wrapping_add(ms * 48);
    }
    // Each run of one codec: packets at the duration wanted (a change
    // applies at a packet boundary: 60 ms packets, then 100 ms ones), the
    // last one shorter when the codec changed under it, and the run's
    // audio within one frame of its length (the worker's frames finish at
    // their own pace; the first one may come from standby).
    // (codec, phases, packet durations in order, frame ms)
    let runs: [(u8, &[usize], &[u32], u32); 3] = [
        (CodecId::CODEC2_1200.0, &[1], &[120], 40),
        (CodecId::CODEC2_3200.0, &[2, 3], &[60, 100], 20),
        (CodecId::CODEC2_1200.0, &[4], &[80], 40),
    ];
    let mut partials = 0;
    for (codec, phases, durations, frame_ms) in runs {
        let first = items
            .iter()
            .position(|(p, f)| *p == phases[0] && f.meta.codec == codec)
            .unwrap();
        let run: Vec<&Captured> = items[first..]
            .iter()
            .take_while(|(_, f)| f.meta.codec == codec)
            .map(|(_, f)| f)
            .collect();
        let what = format!("phases {phases:?}");
        let ms: Vec<u32> = run.iter().map(|f| u32::from(f.meta.duration_ms)).collect();
        let (last, full) = ms.split_last().unwrap();
        // Full packets, in the order the durations were asked for.
        let mut want = durations.iter().peekable();
        for d in full {
            while want.peek().is_some_and(|w| *w != d) {
                want.next();
            }
            assert!(want.peek().is_some(), "{what}: packets of {ms:?}");
        }
        let wanted_last = *durations.last().unwrap();
        assert!(*last <= wanted_last, "{what}: packets of {ms:?}");
        if *last < wanted_last {
            // The partial packet left in the first cycle after the run.
            let idx = first + run.len() - 1;
            assert_eq!(items[idx].0, phases[phases.len() - 1] + 1, "{what}");
            partials += 1;
        }
        let sent: u32 = ms.iter().sum();
        let run_ms: u32 = phases.iter().map(|p| plan[*p].1 as u32 * 20).sum();
        assert!(
            sent + frame_ms >= run_ms && sent <= run_ms + frame_ms,
            "{what}: {sent} ms of Codec2 sent ({ms:?}) in a {run_ms} ms run"
        );
    }
    assert!(partials >= 1, "the plan leaves a packet partly filled");
}

#[test]
fn bad_params_say_what_to_use() {
    let mut res = Resources::new();
    res.insert("opus_cell", Arc::new(OpusLive::new()));
    res.insert("codec_cell", Arc::new(CodecLive::new()));
    let enc_cases: [(&str, ParamValue, &str); 4] = [
        ("codec_live", str_("opus_cell"), "not a CodecLive cell"),
        ("live_settings", str_("codec_cell"), "not an OpusLive cell"),
        ("profile", str_("poor"), "Codec2 profile"),
        ("frame_ms", int(30), "10, 20, 40 or 60"),
    ];
    for (param, value, says) in enc_cases {
        let e = Harness::try_with_resources(&AdaptiveEncodeFactory, &[(param, value)], &res)
            .err()
            .unwrap_or_else(|| panic!("encoder took a bad {param}"))
            .to_string();
        assert!(e.contains(says), "{param}: {e}");
    }
    let dec_cases: [(&str, ParamValue, &str); 2] = [
        ("profile", str_("catastrophic"), "Codec2 profile"),
        ("lookahead_frames", int(200), "lookahead_frames"),
    ];
    for (param, value, says) in dec_cases {
        let e = Harness::try_new(&AdaptiveDecodeFactory, &[(param, value)])
            .err()
            .unwrap_or_else(|| panic!("decoder took a bad {param}"))
            .to_string();
        assert!(e.contains(says), "{param}: {e}");
    }
}

/// Frames off the network that are wrong in every way the decoder can
/// meet: unknown codec ids, Codec2 payloads of the wrong size, empty or
/// garbage Opus, seq going back or leaping, markers while on Codec2. Each
/// row is one cycle's input; the decoder must count it where the row says,
/// never panic or allocate, and keep playing finite audio.
#[test]
fn malformed_frames_are_counted_and_concealed_not_fatal() {
    assert!(checker_installed());
    let mut dec = Harness::new(&AdaptiveDecodeFactory, &[("lookahead_frames", int(0))]);
    // A real Codec2 3200 frame's worth of bits and an Opus-looking TOC.
    let c2 = [0x5au8; 8];
    let c2_long = [0x5au8; 56];
    let garbage_opus = [0x78u8, 0xff, 0x00, 0x13, 0x37];
    let missing = frame_flags::MISSING;
    // (what, codec, payload, flags, seq, counter that must move)
    let rows: Vec<(&str, u8, &[u8], u8, u32, &str)> = vec![
        (
            "codec2 frame",
            CodecId::CODEC2_3200.0,
            &c2,
            0,
            0,
            "codec2_jobs",
        ),
        (
            "codec2, 5 bytes",
            CodecId::CODEC2_3200.0,
            &c2[..5],
            0,
            1,
            "codec2_errors",
        ),
        (
            "codec2 1200, 8 bytes",
            CodecId::CODEC2_1200.0,
            &c2,
            0,
            2,
            "codec2_errors",
        ),
        (
            "codec2 1200, three frames",
            CodecId::CODEC2_1200.0,
            &c2_long[..18],
            0,
            3,
            "codec2_frames_decoded",
        ),
        (
            "codec2 1200, four frames: 160 ms",
            CodecId::CODEC2_1200.0,
            &c2_long[..24],
            0,
            4,
            "codec2_errors",
        ),
        (
            "codec2 3200, seven frames: 140 ms",
            CodecId::CODEC2_3200.0,
            &c2_long,
            0,
            5,
            "codec2_errors",
        ),
        (
            "marker on codec2",
            CodecId::CODEC2_3200.0,
            &[],
            missing,
            6,
            "codec2_concealed",
        ),
        ("unknown codec 0x33", 0x33, &c2, 0, 7, "codec2_concealed"),
        ("unknown codec 0x34", 0x34, &c2, 0, 8, "foreign_frames"),
        (
            "seq back",
            CodecId::CODEC2_3200.0,
            &c2,
            0,
            2,
            "codec2_late_dropped",
        ),
        (
            "seq leaps",
            CodecId::CODEC2_3200.0,
            &c2,
            0,
            100_000,
            "codec2_resyncs",
        ),
        (
            "garbage opus",
            CodecId::OPUS.0,
            &garbage_opus,
            0,
            100_001,
            "codec_switches",
        ),
        (
            "empty opus",
            CodecId::OPUS.0,
            &[],
            0,
            100_002,
            "classical_plc_invocations",
        ),
        (
            "unknown codec on opus",
            0x7f,
            &garbage_opus,
            0,
            100_003,
            "foreign_frames",
        ),
        (
            "opus seq back",
            CodecId::OPUS.0,
            &garbage_opus,
            0,
            5,
            "late_dropped",
        ),
        (
            "opus marker",
            CodecId::OPUS.0,
            &[],
            missing,
            100_004,
            "classical_plc_invocations",
        ),
    ];
    let mut allocations = 0;
    for (what, codec, payload, flags, seq, moves) in rows {
        let before = dec.counter(moves);
        let meta = FrameMeta {
            seq,
            timestamp: seq.wrapping_mul(960),
            codec,
            flags,
            duration_ms: 20,
            ..Default::default()
        };
        dec.frames_in().clear();
        dec.frames_in().push(meta, payload).unwrap();
        let ((), n) = count_allocs(|| dec.step());
        allocations += n;
        // The worker answers every job it was given.
        let jobs = dec.counter("codec2_jobs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dec.counter("codec2_frames_decoded")
            + dec.counter("codec2_concealed")
            + dec.counter("codec2_errors")
            < jobs
        {
            assert!(std::time::Instant::now() < deadline, "{what}: worker stuck");
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        assert!(dec.counter(moves) > before, "{what}: {moves} did not move");
        assert!(dec.pcm_out().iter().all(|s| s.is_finite()), "{what}");
    }
    for _ in 0..5 {
        dec.frames_in().clear();
        let ((), n) = count_allocs(|| dec.step());
        allocations += n;
    }
    assert_eq!(allocations, 0);
}

/// `voiced_frames` counts the quanta played at -45 dBFS RMS or louder: a
/// talker's speech, never their silence or a whisper 60 dB down.
#[test]
fn voiced_frames_count_the_quanta_a_talker_is_heard() {
    use wzp_stages::codec::adaptive_decode::VOICED_MEAN_SQUARE;
    let mut enc = Harness::new(&AdaptiveEncodeFactory, &[]);
    let mut dec = Harness::new(&AdaptiveDecodeFactory, &[]);
    let speech = speechlike(Q * 50);
    let quiet: Vec<f32> = speech.iter().map(|v| v * 0.001).collect();
    let silence = vec![0.0f32; Q * 50];
    let mut heard = [0u64; 3];
    let mut expected = 0u64;
    for (part, x) in [&speech, &silence, &quiet].into_iter().enumerate() {
        for chunk in x.chunks_exact(Q) {
            let before = dec.counter("voiced_frames");
            enc.set_pcm_in(chunk);
            enc.step();
            forward(&enc, &mut dec, |_| false);
            dec.step();
            let out = dec.pcm_out();
            let ms = out.iter().map(|v| v * v).sum::<f32>() / out.len() as f32;
            expected += u64::from(!out.is_empty() && ms >= VOICED_MEAN_SQUARE);
            heard[part] += dec.counter("voiced_frames") - before;
        }
    }
    assert_eq!(dec.counter("voiced_frames"), expected);
    assert!(heard[0] >= 25, "speech heard in {} of 50 quanta", heard[0]);
    // The silence's first quanta still play the speech's tail (the codec's
    // and the decoder's delay).
    assert!(heard[1] <= 4, "silence heard in {} quanta", heard[1]);
    assert_eq!(heard[2], 0, "speech 60 dB down is not talking");
}
