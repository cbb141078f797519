//! `wire.depacketize`: turns opened media packets back into frames.
//!
//! Runs after `crypto.open`, so its input is `header | payload | [trailer]`
//! in clear. The packet is parsed with `MediaPacket::parse`, which never
//! panics; a packet that does not parse (too short, unknown version, reserved
//! flag or byte set, truncated or out-of-range trailer) is dropped and counted
//! (`malformed`). Fields map back as `wire.packetize` wrote them:
//!
//! | `FrameMeta` | from |
//! |---|---|
//! | `seq`, `timestamp`, `codec` | header `seq`, `timestamp`, `codec` |
//! | `stream` | header `sender_id` |
//! | `fec.block`, `fec.symbol`, `fec.ratio_percent` | header `fec_block`, `fec_symbol`, `fec_ratio` |
//! | `fec.source_symbols` | header `fec_block_len` when `fec_ratio > 0` (the `fec_source_symbols` param if the header says 0), else 0 |
//! | flags `REPAIR`, `STREAM_START` | header flags `REPAIR`, `TALKSPURT` |
//! | flag `COMPACT_REPAIR` | header flag `COMPACT_REPAIR` on a `REPAIR` packet |
//! | `duration_ms` | the payload's own length: an Opus packet's TOC, a Codec2 payload's frames counted from its length (one to 120 ms of them, docs/WIRE.md §1) ([`CodecId::frame_samples`]); else the `duration_ms` param (not on the wire) |
//! | `arrival_ns` | `PacketMeta.arrival_ns`, or the cycle's `now_ns` when that is 0 |
//!
//! A packet with codec `0x41` (`with_repair`, docs/WIRE.md §1.7) carries a
//! source frame and a RaptorQ repair symbol riding with it: it becomes two
//! frames on `out`, the source frame (its codec and payload from inside,
//! the rest from the header) and then the repair frame (its `seq`,
//! `timestamp`, codec, FEC tag and `COMPACT_REPAIR` from inside), as if each
//! had come in a packet of its own, with the same `arrival_ns` (counter
//! `riding`; one whose payload does not parse is `malformed`, both frames
//! dropped).
//!
//! A quality report trailer is stored in the gauges below and, when
//! `quality_report` names a `QualityCell` resource, in that cell for the
//! control plane or the sending side.
//!
//! ## Ports
//! - `in` (Packet): plaintext media packets (from `crypto.open`).
//! - `out` (Frame): frames for the FEC decoder or the jitter buffer.
//! - `feedback` (Frame): feedback reports (codec `0x40`, docs/WIRE.md
//!   §1.5), for the sender's `quality.adapt`. They count their own `seq`,
//!   so they never go to `out` (a jitter buffer would take the report
//!   counter for frame numbers); unlinked, they are dropped (still counted).
//!
//! ## Params
//! - `duration_ms` (int, 20, 1..=255): frame duration written into a frame
//!   whose payload does not tell its own (FEC repair symbols, unknown codecs,
//!   a malformed Opus packet, less than a whole ms). Opus and Codec2 frames
//!   carry their own length, so a sender may change frame size mid-stream.
//! - `fec_source_symbols` (int, 0, 0..=255): source symbols per FEC block.
//! - `quality_report` (string, ""): name of an `Arc<QualityCell>` resource that
//!   receives the trailers.
//!
//! ## Stats
//! Counters `frames`, `riding`, `feedback` (reports sent to `feedback`), `malformed`,
//! `quality_reports`, `queue_full`; gauges
//! `qr_loss_pct`, `qr_rtt_ms`, `qr_jitter_ms`, `qr_bitrate_cap_kbps` (latest
//! report received).
//!
//! ## Latency
//! None (0 ms).
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "depack"
//! kind = "wire.depacketize"
//! params = { duration_ms = 20 }
//!
//! [[link]]
//! from = "open.out"
//! to = "depack.in"
//!
//! [[link]]
//! from = "depack.out"
//! to = "jb.in"
//! ```

use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_proto::riding::parse_riding;
use wzp_proto::{CodecId, Flags, MediaHeader, MediaPacket};

use super::QualityCell;

/// `wire.depacketize` factory.
pub struct Depacketize;

impl StageFactory for Depacketize {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "wire.depacketize",
            summary: "media packets to frames: parses the header, drops malformed packets",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "plaintext media packets from crypto.open",
            }],
            outputs: vec![
                PortInfo {
                    name: "out",
                    ty: "Frame",
                    doc: "frames with seq, timestamp, codec, stream, FEC tag, arrival_ns",
                },
                PortInfo {
                    name: "feedback",
                    ty: "Frame",
                    doc: "feedback reports (codec 0x40), kept away from `out`",
                },
            ],
            params: vec![
                ParamSpec::int(
                    "duration_ms",
                    20,
                    "frame duration for payloads that do not tell their own (Opus and Codec2 do)",
                ),
                ParamSpec::int(
                    "fec_source_symbols",
                    0,
                    "source symbols per FEC block (not carried on the wire)",
                ),
                ParamSpec::str(
                    "quality_report",
                    "",
                    "name of an Arc<QualityCell> resource that receives trailers",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let duration_ms = p.int_in("duration_ms", 1, 255)? as u8;
        let source_symbols = p.int_in("fec_source_symbols", 0, 255)? as u8;
        let name = p.str("quality_report")?;
        let quality = if name.is_empty() {
            None
        } else {
            Some(cx.resource::<QualityCell>(name).ok_or_else(|| {
                ParamError::new(
                    "quality_report",
                    format!("no QualityCell resource named {name:?}; insert one or leave it empty"),
                )
            })?)
        };
        let processor = DepacketizeProc {
            riding: cx.counter("riding"),
            feedback: cx.counter("feedback"),
            duration_ms,
            source_symbols,
            quality,
            frames: cx.counter("frames"),
            malformed: cx.counter("malformed"),
            quality_reports: cx.counter("quality_reports"),
            queue_full: cx.counter("queue_full"),
            qr_loss: cx.gauge("qr_loss_pct"),
            qr_rtt: cx.gauge("qr_rtt_ms"),
            qr_jitter: cx.gauge("qr_jitter_ms"),
            qr_cap: cx.gauge("qr_bitrate_cap_kbps"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![
                PortDecl::new("out", PortType::Frame),
                PortDecl::new("feedback", PortType::Frame),
            ],
            latency: Duration::ZERO,
            processor: Box::new(processor),
        })
    }
}

struct DepacketizeProc {
    /// Packets that carried a repair riding with their source frame.
    riding: Counter,
    feedback: Counter,
    duration_ms: u8,
    source_symbols: u8,
    quality: Option<Arc<QualityCell>>,
    frames: Counter,
    malformed: Counter,
    quality_reports: Counter,
    queue_full: Counter,
    qr_loss: Gauge,
    qr_rtt: Gauge,
    qr_jitter: Gauge,
    qr_cap: Gauge,
}

impl DepacketizeProc {
    /// The frame's own length, from its payload (an Opus TOC, a Codec2
    /// payload's frame count): a sender changes frame size at any packet, and a jitter buffer
    /// playing a 40 ms frame per 20 ms period would hand its decoder twice
    /// the audio the clock plays. The param covers what does not say (FEC
    /// repair symbols, unknown codecs, lengths that are no whole ms).
    fn duration_of(&self, h: &MediaHeader, payload: &[u8]) -> u8 {
        if h.flags.contains(Flags::REPAIR) {
            return self.duration_ms;
        }
        h.codec
            .frame_samples(payload)
            .filter(|n| n % 48 == 0)
            .and_then(|n| u8::try_from(n / 48).ok())
            .unwrap_or(self.duration_ms)
    }

    fn depacketize_one(&mut self, io: &mut Io<'_>, i: usize, now: u64) {
        // Reports count their own seq: a jitter buffer or decoder must never
        // see one (docs/WIRE.md §1.5). The codec byte picks the output; the
        // parse below checks the rest.
        let port = io.packets_in(0).and_then(|b| b.get(i)).map_or(0, |slot| {
            usize::from(slot.bytes().get(2) == Some(&CodecId::FEEDBACK.0))
        });
        let (Some(input), out) = io.packets_in_frames_out(0, port) else {
            return;
        };
        let Some(slot) = input.get(i) else {
            return;
        };
        let Ok(packet) = MediaPacket::parse(slot.bytes()) else {
            self.malformed.inc();
            return;
        };
        let h = packet.header;
        let arrival_ns = slot.meta.arrival_ns;
        let mut flags = 0;
        if h.flags.contains(Flags::REPAIR) {
            flags |= frame_flags::REPAIR;
            if h.flags.contains(Flags::COMPACT_REPAIR) {
                flags |= frame_flags::COMPACT_REPAIR;
            }
        }
        if h.flags.contains(Flags::TALKSPURT) {
            flags |= frame_flags::STREAM_START;
        }
        let meta = FrameMeta {
            seq: h.seq,
            timestamp: h.timestamp,
            stream: h.sender_id,
            codec: h.codec.0,
            flags,
            duration_ms: self.duration_of(&h, packet.payload),
            fec: FecTag {
                block: h.fec_block,
                symbol: h.fec_symbol,
                // The header says the block length; the param covers
                // senders that leave it 0 while FEC is on.
                source_symbols: match (h.fec_ratio, h.fec_block_len) {
                    (0, _) => 0,
                    (_, 0) => self.source_symbols,
                    (_, n) => n,
                },
                ratio_percent: h.fec_ratio,
            },
            arrival_ns: if arrival_ns != 0 { arrival_ns } else { now },
        };
        let Some(out) = out else {
            // An output without a buffer: nobody reads it.
            if h.is_feedback() {
                self.feedback.inc();
            }
            return;
        };
        if h.codec == CodecId::WITH_REPAIR {
            // A source frame with a repair symbol riding in its packet: two
            // frames, as if each had come in a packet of its own.
            let Ok(r) = parse_riding(packet.payload, h.seq, h.timestamp) else {
                self.malformed.inc();
                return;
            };
            let source_header = MediaHeader {
                codec: r.codec,
                ..h
            };
            let source = FrameMeta {
                codec: r.codec.0,
                duration_ms: self.duration_of(&source_header, r.payload),
                ..meta
            };
            let rp = &r.repair;
            let repair = FrameMeta {
                seq: rp.seq,
                timestamp: rp.timestamp,
                codec: rp.codec.0,
                flags: frame_flags::REPAIR
                    | if rp.compact {
                        frame_flags::COMPACT_REPAIR
                    } else {
                        0
                    },
                duration_ms: self.duration_ms,
                fec: FecTag {
                    block: rp.fec_block,
                    symbol: rp.fec_symbol,
                    source_symbols: rp.fec_block_len,
                    ratio_percent: rp.fec_ratio,
                },
                ..meta
            };
            if out.push(source, r.payload).is_err() {
                self.queue_full.inc();
                return;
            }
            self.frames.inc();
            self.riding.inc();
            if out.push(repair, rp.symbol).is_err() {
                self.queue_full.inc();
            } else {
                self.frames.inc();
            }
        } else if out.push(meta, packet.payload).is_err() {
            // A payload is shorter than the packet that carried it, so it
            // fits a slot.
            self.queue_full.inc();
            return;
        }
        if let Some(report) = packet.trailer {
            self.qr_loss.set(i64::from(report.loss_pct));
            self.qr_rtt.set(i64::from(report.rtt_ms()));
            self.qr_jitter.set(i64::from(report.jitter_ms));
            self.qr_cap.set(i64::from(report.bitrate_cap_kbps));
            if let Some(cell) = &self.quality {
                cell.set(report);
            }
            self.quality_reports.inc();
        }
        if h.is_feedback() {
            self.feedback.inc();
        } else if h.codec != CodecId::WITH_REPAIR {
            self.frames.inc();
        }
    }
}

impl Processor for DepacketizeProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        let n = io.packets_in(0).map_or(0, |b| b.len());
        for i in 0..n {
            self.depacketize_one(io, i, cx.now_ns);
        }
        Flow::Continue
    }
}
