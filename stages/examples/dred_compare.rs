//! One Opus encoder as `codec.opus_encode` sets it up (24 kb/s, 20 ms,
//! voice, DRED 1 s at a loss hint), a loss trace, and two ways of decoding
//! the lost frames, to tell the decoder's part in a quality gap from the
//! rest of the chain (docs/QUALITY.md finding 22):
//!
//! - `demo`: libopus's own `opus_demo` loop. Nothing is decoded until the
//!   packet after a run of losses arrives; then every lost frame of the run
//!   is synthesised from that packet's DRED (`opus_decoder_dred_decode`),
//!   however long the run: unbounded look-ahead.
//! - `hold`: a receiver that holds DEPTH frames, as `jitter.adaptive` and
//!   `codec.opus_decode` do: a lost frame is rebuilt from the first packet
//!   received within DEPTH frames after it, else concealed when due.
//!
//! ```text
//! cargo run --release -p wzp-stages --example dred_compare -- \
//!     speech48.f32 trace.txt out.f32 hold --depth 4 --hint 14 --dec-complexity 7
//! ```
//!
//! IN is mono 48 kHz float32 little-endian PCM (`sox in.wav -t raw -r 48000
//! -e float -b 32 -c 1 in.f32`), TRACE one 0/1 per packet (1 = lost,
//! whitespace-separated; packets past its end arrive), OUT the decoded
//! audio in the same format. Prints how many lost frames each way rebuilt.

use std::process::ExitCode;

use opusic_sys as sys;
use wzp_stages::codec::opus_ffi::{Decoder, Dred, DredDecoder, Encoder};

const FRAME: usize = 960;

struct Args {
    input: String,
    trace: String,
    output: String,
    hold: Option<usize>,
    hint: i32,
    dec_complexity: i32,
}

fn usage() -> &'static str {
    "usage: dred_compare IN.f32 TRACE OUT.f32 demo|hold [--depth FRAMES (4)] [--hint PCT (14)] [--dec-complexity 0..10 (7)]"
}

fn parse() -> Result<Args, String> {
    let mut pos = Vec::new();
    let (mut depth, mut hint, mut dc) = (4i32, 14i32, 7i32);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (slot, range, what) = match a.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--depth" => (&mut depth, 1..=50, "a whole number of frames"),
            "--hint" => (&mut hint, 0..=100, "a loss percent"),
            "--dec-complexity" => (&mut dc, 0..=10, "a decoder complexity"),
            _ => {
                pos.push(a);
                continue;
            }
        };
        *slot = it
            .next()
            .and_then(|v| v.parse().ok())
            .filter(|v| range.contains(v))
            .ok_or(format!("{a}: {what}, {}..={}", range.start(), range.end()))?;
    }
    let [input, trace, output, mode] = <[String; 4]>::try_from(pos)
        .map_err(|p| format!("expected IN TRACE OUT MODE, got {} arguments", p.len()))?;
    let hold = match mode.as_str() {
        "demo" => None,
        "hold" => Some(depth as usize),
        m => return Err(format!("mode {m:?}: use demo or hold")),
    };
    Ok(Args {
        input,
        trace,
        output,
        hold,
        hint,
        dec_complexity: dc,
    })
}

fn main() -> ExitCode {
    match parse().and_then(|a| run(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_empty() => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dred_compare: {e}\n{}", usage());
            ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), String> {
    let raw = std::fs::read(&a.input).map_err(|e| format!("{}: {e}", a.input))?;
    if raw.len() % 4 != 0 {
        return Err(format!(
            "{}: not float32 samples (length {})",
            a.input,
            raw.len()
        ));
    }
    let pcm: Vec<f32> = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let text = std::fs::read_to_string(&a.trace).map_err(|e| format!("{}: {e}", a.trace))?;
    let trace = text
        .split_whitespace()
        .map(|t| match t {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("{}: {t:?} is not 0 or 1", a.trace)),
        })
        .collect::<Result<Vec<bool>, String>>()?;
    let lost = |i: usize| trace.get(i).copied().unwrap_or(false);

    let mut enc = Encoder::new(sys::OPUS_APPLICATION_VOIP)?;
    for (req, v) in [
        (sys::OPUS_SET_BITRATE_REQUEST, 24_000),
        (sys::OPUS_SET_COMPLEXITY_REQUEST, 9),
        (sys::OPUS_SET_PACKET_LOSS_PERC_REQUEST, a.hint),
        (sys::OPUS_SET_SIGNAL_REQUEST, sys::OPUS_SIGNAL_VOICE),
        (sys::OPUS_SET_LSB_DEPTH_REQUEST, 16),
        (sys::OPUS_SET_DRED_DURATION_REQUEST, 100),
    ] {
        enc.set(req, v)?;
    }
    let mut packets = Vec::new();
    let mut buf = [0u8; 1500];
    for f in pcm.chunks_exact(FRAME) {
        let len = enc
            .encode_float(f, &mut buf)
            .map_err(|e| format!("encode: {e}"))?;
        packets.push(buf[..len].to_vec());
    }

    let mut dec = Decoder::new()?;
    dec.set_complexity(a.dec_complexity)?;
    let mut dred_dec = DredDecoder::new()?;
    let mut dred = Dred::new()?;
    let mut out: Vec<f32> = Vec::with_capacity(pcm.len());
    let mut frame = vec![0f32; FRAME];
    // Lost frames rebuilt from DRED, concealed.
    let mut counts = (0u32, 0u32);
    let mut parsed_for = None;
    let mut has_dred = false;
    let mut lost_run = 0usize;
    for (i, p) in packets.iter().enumerate() {
        if lost(i) {
            let Some(depth) = a.hold else {
                lost_run += 1;
                continue;
            };
            // Held: the first packet received within `depth` frames.
            let next = (i + 1..=(i + depth).min(packets.len() - 1)).find(|&j| !lost(j));
            let mut from = None;
            if let Some(j) = next {
                let offset = (j - i) * FRAME;
                if parsed_for != Some(j) {
                    let want = (offset + FRAME).min(48_000) as i32;
                    has_dred = dred.parse(&mut dred_dec, &packets[j], want).unwrap_or(0) > 0;
                    parsed_for = Some(j);
                }
                from = has_dred.then_some((&dred, offset));
            }
            rebuild(&mut dec, from, &mut frame, &mut counts)?;
            out.extend_from_slice(&frame);
            continue;
        }
        if lost_run > 0 {
            // `demo`: the whole run from this packet's DRED, oldest first.
            let want = (lost_run * FRAME).min(48_000) as i32;
            let any = dred.parse(&mut dred_dec, p, want).unwrap_or(0) > 0;
            for k in (1..=lost_run).rev() {
                let from = any.then_some((&dred, k * FRAME));
                rebuild(&mut dec, from, &mut frame, &mut counts)?;
                out.extend_from_slice(&frame);
            }
            lost_run = 0;
        }
        let n = dec
            .decode_float(Some(p), &mut frame, false)
            .map_err(|e| format!("decode: {e}"))?;
        out.extend_from_slice(&frame[..n]);
    }
    let (rebuilt, concealed) = counts;
    println!(
        "{} lost frames: {rebuilt} rebuilt from DRED, {concealed} concealed",
        rebuilt + concealed
    );
    let bytes: Vec<u8> = out.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&a.output, bytes).map_err(|e| format!("{}: {e}", a.output))
}

/// One lost frame into `frame`: from `from`'s DRED at its offset (samples
/// before that packet) when given, else concealment; counted in `counts`.
fn rebuild(
    dec: &mut Decoder,
    from: Option<(&Dred, usize)>,
    frame: &mut [f32],
    counts: &mut (u32, u32),
) -> Result<(), String> {
    match from {
        Some((dred, offset)) => {
            dec.dred_decode_float(dred, offset as i32, frame)
                .map_err(|e| format!("DRED decode: {e}"))?;
            counts.0 += 1;
        }
        None => {
            dec.decode_float(None, frame, false)
                .map_err(|e| format!("PLC: {e}"))?;
            counts.1 += 1;
        }
    }
    Ok(())
}
