//! libopus's own loss handling with a bounded wait: decodes an `opus_demo
//! -e` bitstream over a loss trace as `opus_demo` does (PLC, LBRR from the
//! packet after a loss, DRED from the first packet after a run), except that
//! a lost frame may only use a packet that arrives within `--wait` frames of
//! it, as a receiver that holds `--wait` frames back can. `opus_demo`
//! itself waits for the next packet however long a run is (a 400 ms outage
//! is rebuilt from the packet after it), so its DRED score is that of a
//! receiver with unbounded delay; this gives the same loop at a delay a
//! call can have (docs/QUALITY.md finding 29).
//!
//! ```text
//! opus_demo -e voip 16000 1 24000 -framesize 20 -dred 100 -loss 14 speech.raw enc.bit
//! cargo run --release -p wzp-benches --example opus_bounded_wait -- \
//!     enc.bit trace.txt 3 out.raw
//! ```
//!
//! Arguments: the bitstream (per frame: 4-byte big-endian length, 4-byte
//! final range, the packet), the trace (one 0/1 per frame, 1 = lost;
//! whitespace-separated; shorter than the stream: the rest arrives), the wait
//! in frames (`inf` for none: `opus_demo`'s own decoding) and the output
//! (16 kHz mono s16le). Optional fifth: the decoder complexity (default
//! libopus's).

use std::ffi::c_int;
use std::process::ExitCode;

use opusic_sys as sys;

const RATE: i32 = 16_000;
const MAX_FRAME: usize = 5760;

fn read_stream(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let mut packets = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 8)
            .ok_or_else(|| format!("{path}: cut inside a frame header at byte {at}"))?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        at += 8;
        let packet = bytes
            .get(at..at + len)
            .ok_or_else(|| format!("{path}: a {len}-byte packet runs past the end at {at}"))?;
        packets.push(packet.to_vec());
        at += len;
    }
    Ok(packets)
}

fn read_trace(path: &str) -> Result<Vec<bool>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.split_whitespace()
        .map(|t| match t {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(format!("{path}: {t:?} is not 0 or 1")),
        })
        .collect()
}

struct Decoder {
    dec: *mut sys::OpusDecoder,
    dred_dec: *mut sys::OpusDREDDecoder,
    dred: *mut sys::OpusDRED,
}

impl Decoder {
    fn new(complexity: Option<i32>) -> Result<Decoder, String> {
        let mut err: c_int = 0;
        // SAFETY: plain libopus constructors; the results are checked.
        unsafe {
            let dec = sys::opus_decoder_create(RATE, 1, &mut err);
            if dec.is_null() || err != 0 {
                return Err(format!("opus_decoder_create: {err}"));
            }
            if let Some(c) = complexity {
                sys::opus_decoder_ctl(dec, sys::OPUS_SET_COMPLEXITY_REQUEST, c as c_int);
            }
            let dred_dec = sys::opus_dred_decoder_create(&mut err);
            let dred = sys::opus_dred_alloc(&mut err);
            if dred_dec.is_null() || dred.is_null() {
                return Err(format!("DRED decoder: {err}"));
            }
            Ok(Decoder {
                dec,
                dred_dec,
                dred,
            })
        }
    }

    fn last_duration(&self) -> i32 {
        let mut n: i32 = 0;
        // SAFETY: the decoder is live; the request writes one opus_int32.
        unsafe {
            sys::opus_decoder_ctl(
                self.dec,
                sys::OPUS_GET_LAST_PACKET_DURATION_REQUEST,
                &mut n as *mut i32,
            );
        }
        n
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: each was created by its constructor above.
        unsafe {
            sys::opus_dred_free(self.dred);
            sys::opus_dred_decoder_destroy(self.dred_dec);
            sys::opus_decoder_destroy(self.dec);
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [stream, trace, wait, out, rest @ ..] = args else {
        return Err("usage: opus_bounded_wait STREAM TRACE WAIT|inf OUT.raw [COMPLEXITY]".into());
    };
    let packets = read_stream(stream)?;
    let lost = read_trace(trace)?;
    let wait = match wait.as_str() {
        "inf" => usize::MAX,
        w => w.parse::<usize>().map_err(|e| format!("wait {w:?}: {e}"))?,
    };
    let complexity = match rest.first() {
        Some(c) => Some(
            c.parse::<i32>()
                .map_err(|e| format!("complexity {c:?}: {e}"))?,
        ),
        None => None,
    };
    let d = Decoder::new(complexity)?;
    let mut pcm = vec![0i16; MAX_FRAME];
    let mut wav: Vec<u8> = Vec::new();
    let mut push = |pcm: &[i16], n: i32| {
        for s in &pcm[..n.max(0) as usize] {
            wav.extend_from_slice(&s.to_le_bytes());
        }
    };
    let mut run_len = 0usize;
    for (i, packet) in packets.iter().enumerate() {
        let is_lost = packet.is_empty() || lost.get(i).copied().unwrap_or(false);
        if is_lost {
            run_len += 1;
            continue;
        }
        let data = packet.as_ptr();
        let len = packet.len() as i32;
        // SAFETY: live decoder state; `pcm` holds MAX_FRAME samples, more
        // than any Opus frame at 16 kHz; `packet` outlives each call.
        unsafe {
            let mut dred_input = 0;
            if run_len > 0 {
                let frame = d.last_duration();
                let mut dred_end: c_int = 0;
                let ret = sys::opus_dred_parse(
                    d.dred_dec,
                    d.dred,
                    data,
                    len,
                    (run_len as i32 * frame).clamp(0, RATE),
                    RATE,
                    &mut dred_end,
                    0,
                );
                dred_input = ret.max(0);
            }
            for fr in 0..run_len {
                let frame = d.last_duration();
                if frame == 0 {
                    // Lost before any packet was decoded: no frame size to
                    // conceal; `opus_demo` writes nothing for it either.
                    continue;
                }
                // Frames further back than the wait were played before this
                // packet came: concealed.
                let reachable = run_len - fr <= wait;
                let n =
                    if reachable && fr == run_len - 1 && sys::opus_packet_has_lbrr(data, len) > 0 {
                        sys::opus_decode(d.dec, data, len, pcm.as_mut_ptr(), frame, 1)
                    } else if reachable && dred_input > 0 {
                        sys::opus_decoder_dred_decode(
                            d.dec,
                            d.dred,
                            (run_len - fr) as i32 * frame,
                            pcm.as_mut_ptr(),
                            frame,
                        )
                    } else {
                        sys::opus_decode(d.dec, std::ptr::null(), 0, pcm.as_mut_ptr(), frame, 0)
                    };
                if n < 0 {
                    return Err(format!(
                        "frame {i}: concealing {fr} of {run_len}: error {n}"
                    ));
                }
                push(&pcm, n);
            }
            run_len = 0;
            let n = sys::opus_decode(d.dec, data, len, pcm.as_mut_ptr(), MAX_FRAME as i32, 0);
            if n < 0 {
                return Err(format!("frame {i}: decode error {n}"));
            }
            push(&pcm, n);
        }
    }
    std::fs::write(out, &wav).map_err(|e| format!("{out}: {e}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opus_bounded_wait: {e}");
            ExitCode::FAILURE
        }
    }
}
