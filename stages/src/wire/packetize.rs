//! `wire.packetize`: turns encoded frames into media packets.
//!
//! For each frame it writes the 22-byte `MediaHeader` and the payload into the
//! output slot in place (no allocation), plus the 4-byte quality report
//! trailer when one is configured and due. Header fields come from
//! `FrameMeta`:
//!
//! | header | from |
//! |---|---|
//! | `seq`, `timestamp`, `codec` | `seq`, `timestamp`, `codec` (copied verbatim) |
//! | `sender_id` | the `sender_id` param, or `stream` when it is 0 |
//! | `fec_block`, `fec_symbol`, `fec_ratio`, `fec_block_len` | `fec.block`, `fec.symbol`, `fec.ratio_percent`, `fec.source_symbols` |
//! | flag `REPAIR` | `frame_flags::REPAIR` |
//! | flag `COMPACT_REPAIR` | `frame_flags::COMPACT_REPAIR`, on a `REPAIR` frame |
//! | flag `TALKSPURT` | `frame_flags::STREAM_START` |
//! | flag `FROM_RESPONDER` | `direction = "responder"` |
//! | `key_epoch` | the `key_epoch` param (`crypto.seal` takes it as its first epoch) |
//!
//! Not on the wire: `duration_ms`, `fec.source_symbols`, the `DTX` flag and
//! `arrival_ns` (`wire.depacketize` refills the first two from its params).
//! Frames flagged `MISSING` carry no data and are skipped (`skipped_missing`).
//! A packet must leave room for the 16-byte AEAD tag within the 1500-byte
//! slot, so a frame above 1458 bytes (1454 with a trailer) is dropped
//! (`oversize_drops`).
//!
//! ## Repair riding in source packets
//! While the `FecLive` cell named by `fec_live` says so (`quality.adapt`
//! sets it while every receiver reporting lately takes it), the cycle's
//! first repair frame (`REPAIR`) rides in the packet of the cycle's first
//! source frame: one packet with codec `0x41` and the source frame's
//! header, its payload the frame's codec and payload and the repair's
//! fields and symbol (`wzp_proto::riding`, docs/WIRE.md §1.7): 10 bytes a
//! repair instead of a 22-byte header and a 16-byte tag of its own, and one
//! datagram where there were two. A repair with no source frame in its
//! cycle, beyond the layout's reach (255 frames, 65535 ticks) or that would
//! not fit a slot goes in a packet of its own, as always without the cell.
//!
//! ## Sender ids
//! `sender_id` is part of the AEAD nonce: two senders sharing a key (a room)
//! must have different ids, and a sender must not reuse an id under the same
//! key after a restart (its `seq` starts again). The default, `-1`, draws a
//! random id when the stage is built, which gives both; with N senders in a
//! room two ids collide with probability about N²/2³³ (5·10⁻⁷ for 64).
//!
//! ## Ports
//! - `in` (Frame): encoded frames (from the encoder or the FEC encoder).
//! - `feedback` (Frame, optional): feedback reports (codec `0x40`, from
//!   `quality.feedback_report`), packed after `in` each cycle exactly like
//!   frames: same sender id, their `seq` (the report counter) copied as it
//!   is. `crypto.seal` keeps their nonces apart (docs/WIRE.md §1.5).
//! - `out` (Packet): media packets, `PacketMeta.stream` = sender id.
//!
//! ## Params
//! - `sender_id` (int, -1): -1 = random per build; 0 = use `FrameMeta.stream`;
//!   else this id (up to 4294967294: 4294967295 is no sender's, it names a
//!   receiver's entry about itself in feedback reports, docs/WIRE.md §1.5).
//! - `key_epoch` (int, 0, 0..=255): epoch written in the header.
//! - `direction` (string, "initiator"): "initiator" (also rooms) or
//!   "responder" (sets `FROM_RESPONDER`, part of the nonce).
//! - `quality_report` (string, ""): name of an `Arc<QualityCell>` resource; when
//!   set, the cell's report is sent as trailer on every `quality_every`-th packet.
//! - `quality_every` (int, 50, 1..=100000): packets between trailers.
//! - `publish_sender` (string, ""): name of an `Arc<LocalSender>` resource;
//!   when set, the id chosen at build is stored in it so the receive path's
//!   `crypto.open` (param `local_sender`) drops echoes of this sender. Needs a
//!   fixed or random id (not 0).
//! - `fec_live` (string, ""): name of the `fec::live::FecLive` cell
//!   (`quality.adapt`'s `fec_live`) whose `riding` flag lets repair ride
//!   (above); empty: every frame in a packet of its own.
//!
//! ## Stats
//! Counters `packets`, `riding` (packets that carried a repair riding),
//! `quality_reports`, `oversize_drops`, `skipped_missing`, `queue_full`,
//! `wire_codec_drops` (frames that claimed codec `0x41`, which only a packet
//! carries: dropped, for the receiver would read their payload as a riding
//! one); gauge `sender_id`.
//!
//! ## Latency
//! None (0 ms).
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "pack"
//! kind = "wire.packetize"
//! params = { direction = "initiator" }
//!
//! [[link]]
//! from = "enc.out"
//! to = "pack.in"
//!
//! [[link]]
//! from = "pack.out"
//! to = "seal.in"
//! ```

use std::sync::Arc;
use std::time::Duration;

use wzp_engine::prelude::*;
use wzp_proto::riding::{encode_riding, riding_check, Riding, RidingRepair};
use wzp_proto::{
    CodecId, Flags, MediaHeader, QualityReport, HEADER_LEN, RECEIVER_ENTRY_ID, TRAILER_LEN,
};

use super::{LocalSender, QualityCell};
use crate::cell::optional_cell;
use crate::crypto::TAG_LEN;
use crate::fec::live::FecLive;

/// `wire.packetize` factory.
pub struct Packetize;

/// Largest frame payload that still fits a sealed packet without trailer.
pub const MAX_PAYLOAD: usize = MAX_ITEM_BYTES - HEADER_LEN - TAG_LEN;

impl StageFactory for Packetize {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "wire.packetize",
            summary: "frames to media packets: 22-byte header (+ quality trailer), in place",
            inputs: vec![
                PortInfo {
                    name: "in",
                    ty: "Frame",
                    doc: "encoded frames",
                },
                PortInfo {
                    name: "feedback",
                    ty: "Frame",
                    doc: "optional: feedback reports (codec 0x40) to send with this sender id",
                },
            ],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "plaintext media packets for crypto.seal",
            }],
            params: vec![
                ParamSpec::int(
                    "sender_id",
                    -1,
                    "-1 = random per build, 0 = FrameMeta.stream, else this id",
                ),
                ParamSpec::int("key_epoch", 0, "key epoch written in the header (0..=255)"),
                ParamSpec::str(
                    "direction",
                    "initiator",
                    "\"initiator\" (also rooms) or \"responder\" (sets FROM_RESPONDER)",
                ),
                ParamSpec::str(
                    "quality_report",
                    "",
                    "name of an Arc<QualityCell> resource whose report rides as trailer",
                ),
                ParamSpec::int("quality_every", 50, "packets between quality trailers"),
                ParamSpec::str(
                    "publish_sender",
                    "",
                    "name of an Arc<LocalSender> resource the chosen sender id is stored in",
                ),
                ParamSpec::str(
                    "fec_live",
                    "",
                    "FecLive cell (quality.adapt's fec_live): while it says so, a repair frame rides in the cycle's source packet",
                ),
            ],
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        // u32::MAX is no sender's: a feedback report's entry under it is
        // the receiver's own (`wzp_proto::feedback::RECEIVER_ENTRY_ID`).
        let sender = match p.int_in("sender_id", -1, i64::from(RECEIVER_ENTRY_ID) - 1)? {
            -1 => {
                let mut b = [0u8; 4];
                getrandom::fill(&mut b).map_err(|e| {
                    BuildError::Other(format!(
                        "param `sender_id`: no OS randomness for a random id ({e}); set an id"
                    ))
                })?;
                // 0 means "from the frame": keep a random id away from it.
                Some(u32::from_be_bytes(b).clamp(1, RECEIVER_ENTRY_ID - 1))
            }
            0 => None,
            id => Some(id as u32),
        };
        let key_epoch = p.int_in("key_epoch", 0, 255)? as u8;
        let responder = p.choice("direction", &["initiator", "responder"])? == "responder";
        let quality_every = p.int_in("quality_every", 1, 100_000)? as u64;
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
        let publish = p.str("publish_sender")?;
        if !publish.is_empty() {
            let cell = cx.resource::<LocalSender>(publish).ok_or_else(|| {
                ParamError::new(
                    "publish_sender",
                    format!(
                        "no LocalSender resource named {publish:?}; insert one or leave it empty"
                    ),
                )
            })?;
            let Some(id) = sender else {
                return Err(ParamError::new(
                    "publish_sender",
                    "sender_id = 0 takes each frame's stream as its id, so there is no one id \
                     to publish; set sender_id to -1 (random) or an id",
                )
                .into());
            };
            cell.set(id);
        }
        let sender_gauge = cx.gauge("sender_id");
        if let Some(id) = sender {
            sender_gauge.set(i64::from(id));
        }
        let fec_live = optional_cell::<FecLive>(cx, p, "fec_live", "a FecLive")?;
        let processor = PacketizeProc {
            fec_live,
            riding: cx.counter("riding"),
            wire_codec_drops: cx.counter("wire_codec_drops"),
            sender,
            key_epoch,
            direction: Flags::empty().with(Flags::FROM_RESPONDER, responder),
            quality,
            quality_every,
            count: 0,
            packets: cx.counter("packets"),
            quality_reports: cx.counter("quality_reports"),
            oversize: cx.counter("oversize_drops"),
            skipped_missing: cx.counter("skipped_missing"),
            queue_full: cx.counter("queue_full"),
        };
        Ok(Built {
            inputs: vec![
                PortDecl::new("in", PortType::Frame),
                PortDecl::optional("feedback", PortType::Frame),
            ],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(processor),
        })
    }
}

struct PacketizeProc {
    /// Says whether repair may ride in source packets.
    fec_live: Option<Arc<FecLive>>,
    /// Packets that carried a repair riding in them.
    riding: Counter,
    /// Frames that claimed codec `0x41` (dropped).
    wire_codec_drops: Counter,
    sender: Option<u32>,
    key_epoch: u8,
    direction: Flags,
    quality: Option<Arc<QualityCell>>,
    quality_every: u64,
    /// Packets sent, to space the trailers.
    count: u64,
    packets: Counter,
    quality_reports: Counter,
    oversize: Counter,
    skipped_missing: Counter,
    queue_full: Counter,
}

impl PacketizeProc {
    fn header_for(&self, meta: &FrameMeta) -> MediaHeader {
        let flags = self
            .direction
            .with(Flags::REPAIR, meta.flags & frame_flags::REPAIR != 0)
            .with(
                Flags::COMPACT_REPAIR,
                meta.flags & frame_flags::REPAIR != 0
                    && meta.flags & frame_flags::COMPACT_REPAIR != 0,
            )
            .with(
                Flags::TALKSPURT,
                meta.flags & frame_flags::STREAM_START != 0,
            );
        MediaHeader {
            flags,
            codec: CodecId(meta.codec),
            key_epoch: self.key_epoch,
            sender_id: self.sender.unwrap_or(meta.stream),
            seq: meta.seq,
            timestamp: meta.timestamp,
            fec_block: meta.fec.block,
            fec_symbol: meta.fec.symbol,
            fec_ratio: meta.fec.ratio_percent,
            fec_block_len: meta.fec.source_symbols,
        }
    }

    fn due_report(&self) -> Option<QualityReport> {
        if self.count % self.quality_every != 0 {
            return None;
        }
        self.quality.as_ref()?.get()
    }

    fn packetize_one(&mut self, frame: &Slot<FrameMeta>, out: &mut Batch<PacketMeta>) {
        if frame.meta.flags & frame_flags::MISSING != 0 {
            self.skipped_missing.inc();
            return;
        }
        if frame.meta.codec == CodecId::WITH_REPAIR.0 {
            // A packet's codec, never a frame's: its payload would not be
            // what the receiver splits.
            self.wire_codec_drops.inc();
            return;
        }
        let mut header = self.header_for(&frame.meta);
        let report = self.due_report();
        header.flags = header.flags.with(Flags::QUALITY_REPORT, report.is_some());
        let payload = frame.bytes();
        let trailer_len = if report.is_some() { TRAILER_LEN } else { 0 };
        let len = HEADER_LEN + payload.len() + trailer_len;
        if len + TAG_LEN > MAX_ITEM_BYTES {
            self.oversize.inc();
            return;
        }
        let Some(dst) = out.push_slot() else {
            self.queue_full.inc();
            return;
        };
        dst.meta = PacketMeta {
            peer: 0,
            stream: header.sender_id,
            arrival_ns: 0,
        };
        let buf = dst.buf_mut();
        buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        buf[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        if let Some(r) = report {
            buf[len - TRAILER_LEN..len].copy_from_slice(&r.to_bytes());
            self.quality_reports.inc();
        }
        dst.set_len(len);
        self.count += 1;
        self.packets.inc();
    }
}

/// `carrier` (a source frame) with `rider` (a repair frame) riding in its
/// packet, as `wzp_proto::riding` writes it.
fn riding_of<'a>(carrier: &'a Slot<FrameMeta>, rider: &'a Slot<FrameMeta>) -> Riding<'a> {
    let r = &rider.meta;
    Riding {
        codec: CodecId(carrier.meta.codec),
        payload: carrier.bytes(),
        repair: RidingRepair {
            seq: r.seq,
            timestamp: r.timestamp,
            codec: CodecId(r.codec),
            fec_block: r.fec.block,
            fec_symbol: r.fec.symbol,
            fec_ratio: r.fec.ratio_percent,
            fec_block_len: r.fec.source_symbols,
            compact: r.flags & frame_flags::COMPACT_REPAIR != 0,
            symbol: rider.bytes(),
        },
    }
}

/// Whether `rider` (a repair frame) can ride in `carrier`'s packet: a
/// source frame sent, a repair the layout can say (`riding_check`,
/// docs/WIRE.md §1.7), the packet within a slot with a trailer and tag.
fn can_ride(carrier: &Slot<FrameMeta>, rider: &Slot<FrameMeta>) -> bool {
    let (c, r) = (&carrier.meta, &rider.meta);
    r.flags & (frame_flags::REPAIR | frame_flags::MISSING) == frame_flags::REPAIR
        && c.flags & (frame_flags::REPAIR | frame_flags::MISSING) == 0
        && riding_check(&riding_of(carrier, rider), c.seq, c.timestamp)
            .is_ok_and(|n| HEADER_LEN + n + TRAILER_LEN + TAG_LEN <= MAX_ITEM_BYTES)
}

impl PacketizeProc {
    /// `carrier`'s packet with `rider`'s repair symbol in it (codec `0x41`,
    /// `wzp_proto::riding`); `false`, and nothing written, if it cannot be.
    fn packetize_riding(
        &mut self,
        carrier: &Slot<FrameMeta>,
        rider: &Slot<FrameMeta>,
        out: &mut Batch<PacketMeta>,
    ) -> bool {
        let mut header = self.header_for(&carrier.meta);
        header.codec = CodecId::WITH_REPAIR;
        let report = self.due_report();
        header.flags = header.flags.with(Flags::QUALITY_REPORT, report.is_some());
        let riding = riding_of(carrier, rider);
        let Some(dst) = out.push_slot() else {
            self.queue_full.inc();
            // Both frames are lost here, as the packet would have been.
            return true;
        };
        let buf = dst.buf_mut();
        let room = MAX_ITEM_BYTES - TAG_LEN - if report.is_some() { TRAILER_LEN } else { 0 };
        let Ok(n) = encode_riding(
            &riding,
            header.seq,
            header.timestamp,
            &mut buf[HEADER_LEN..room],
        ) else {
            // `can_ride` said it fits: not reached. The slot goes back.
            out.pop();
            return false;
        };
        buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        let mut len = HEADER_LEN + n;
        if let Some(q) = report {
            buf[len..len + TRAILER_LEN].copy_from_slice(&q.to_bytes());
            len += TRAILER_LEN;
            self.quality_reports.inc();
        }
        dst.meta = PacketMeta {
            peer: 0,
            stream: header.sender_id,
            arrival_ns: 0,
        };
        dst.set_len(len);
        self.count += 1;
        self.packets.inc();
        self.riding.inc();
        true
    }
}

impl Processor for PacketizeProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let riding = self.fec_live.as_deref().is_some_and(FecLive::riding);
        for port in 0..io.num_inputs().min(2) {
            let (Some(input), Some(out)) = io.frames_in_packets_out(port, 0) else {
                continue;
            };
            // The cycle's first repair frame rides in its first source
            // frame's packet (the FEC encoder sends a block's repair paced,
            // one a cycle, before the cycle's frame), when both can.
            let pair = if riding && port == 0 {
                let rider = input
                    .iter()
                    .position(|f| f.meta.flags & frame_flags::REPAIR != 0);
                let carrier = input
                    .iter()
                    .position(|f| f.meta.flags & (frame_flags::REPAIR | frame_flags::MISSING) == 0);
                match (rider, carrier) {
                    (Some(r), Some(c)) => match (input.get(c), input.get(r)) {
                        (Some(cf), Some(rf)) if can_ride(cf, rf) => Some((r, c)),
                        _ => None,
                    },
                    _ => None,
                }
            } else {
                None
            };
            for (i, frame) in input.iter().enumerate() {
                match pair {
                    Some((r, _)) if r == i => continue,
                    Some((r, c)) if c == i => {
                        let Some(rider) = input.get(r) else {
                            continue;
                        };
                        if !self.packetize_riding(frame, rider, out) {
                            self.packetize_one(frame, out);
                            self.packetize_one(rider, out);
                        }
                    }
                    _ => self.packetize_one(frame, out),
                }
            }
        }
        Flow::Continue
    }
}
