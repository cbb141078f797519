//! `crypto.seal`: encrypts and authenticates media packets end to end.
//!
//! Each packet from `wire.packetize` (`header | payload | [trailer]`) leaves as
//! `header | ciphertext | tag (16) | [trailer]` (docs/WIRE.md §1). The payload
//! is encrypted in place in the output slot with ChaCha20-Poly1305; the 22
//! header bytes (and the 4 trailer bytes when present) are the associated
//! data, so a relay can read but not alter them. The nonce is
//! `MediaHeader::nonce()`: sender id, direction, key epoch and seq, so loss
//! and reordering never desynchronise sender and receiver.
//!
//! ## Nonce discipline and rekeying
//! A nonce must never repeat under one key. The stage seals the packets of
//! one sender id (the first it sees; others are dropped, `wrong_sender`) and
//! only with a `seq` strictly above the last one sealed in the current key
//! epoch. When `seq` goes backwards (the u32 wrapped, or the upstream
//! restarted its count), it moves to the next epoch, whose key is
//! independent, and writes the epoch into the header (byte 3) before sealing.
//! The first epoch is the one `wire.packetize` wrote. A repeated `seq` is
//! dropped (`seq_reuse`). FEC repair symbols are a nonce kind of their own
//! (docs/WIRE.md §1.3): a repair packet carries the `seq` of its block's
//! last source frame, sealed before it (not always just before:
//! `fec.raptorq_encode` paces a block's repair over the next cycles, among
//! the next block's source frames), and is told apart by its `fec_symbol`,
//! which is part of the nonce for repair. Within an epoch repair
//! `(seq, fec_symbol)` pairs must rise, and a repair `seq` must not be above
//! the last source `seq` sealed (such a symbol is from before the source
//! count restarted); anything else is `seq_reuse`. A new epoch starts the
//! repair pairs over. A repair packet numbered 0 (no encoder sends one) has
//! its source frame's nonce and is sealed as that source frame.
//!
//! Feedback reports (codec `0x40`, docs/WIRE.md §1.5) count their own `seq`
//! (the report counter, from `wire.packetize`): their nonce sets a bit no
//! media nonce has, so the two counters never meet. A report seq must rise
//! too; one that does not (the counter restarted) moves to the next epoch
//! like a media seq going backwards. A report flagged `REPAIR` is
//! `malformed` (reports are never FEC-protected). After epoch 255 there is no fresh key: packets that
//! would need one are dropped (`key_exhausted`) and the session must be
//! re-keyed by the control plane (new handshake or room secret). At 50
//! packets/s one epoch lasts 2.7 years.
//!
//! Key epochs: `K_e = HKDF-SHA256(salt "wzp-media-v1", base key,
//! "wzp media epoch key v1" || e)`, all 256 derived at build (docs/WIRE.md §6).
//!
//! ## Ports
//! - `in` (Packet): plaintext media packets with header.
//! - `out` (Packet): sealed packets, 16 bytes longer; `PacketMeta` is kept.
//!
//! ## Params (exactly one key source)
//! - `room` (string, "") + `room_secret` (string, "", at least 16 bytes): the
//!   room media key `room_key(room_secret, room)`.
//! - `session` (string, ""): name of an `Arc<SessionKeys>` resource; seals
//!   with its send key.
//! - `key` (string, ""): the base key as 64 hex digits (tests).
//!
//! ## Stats
//! Counters `sealed`, `rekeys`, `malformed`, `wrong_sender`, `seq_reuse`,
//! `key_exhausted`, `oversize_drops`, `queue_full`; gauge `key_epoch`.
//!
//! ## Latency
//! None (0 ms).
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "seal"
//! kind = "crypto.seal"
//! params = { room = "${room}", room_secret = "${room_secret}" }
//!
//! [[link]]
//! from = "pack.out"
//! to = "seal.in"
//! ```

use std::time::Duration;

use chacha20poly1305::{AeadInOut, Nonce};
use wzp_engine::prelude::*;
use wzp_proto::media::Aad;
use wzp_proto::{MediaHeader, MediaPacket, HEADER_LEN, TRAILER_LEN};

use super::keys::{base_key, key_params, EpochCiphers, Side};
use super::TAG_LEN;

/// `crypto.seal` factory.
pub struct Seal;

impl StageFactory for Seal {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "crypto.seal",
            summary: "encrypts media payloads end to end (ChaCha20-Poly1305, header as AD)",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "plaintext media packets from wire.packetize",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "sealed media packets (payload + 16-byte tag)",
            }],
            params: key_params(),
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let base = base_key(cx, p, Side::Send)?;
        let processor = SealProc {
            ciphers: EpochCiphers::derive(&base),
            sender: None,
            last_seq: None,
            last_repair: None,
            last_report: None,
            started: false,
            epoch: 0,
            sealed: cx.counter("sealed"),
            rekeys: cx.counter("rekeys"),
            malformed: cx.counter("malformed"),
            wrong_sender: cx.counter("wrong_sender"),
            seq_reuse: cx.counter("seq_reuse"),
            key_exhausted: cx.counter("key_exhausted"),
            oversize: cx.counter("oversize_drops"),
            queue_full: cx.counter("queue_full"),
            epoch_gauge: cx.gauge("key_epoch"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(processor),
        })
    }
}

/// Whether `header`'s nonce is of the repair kind: a repair symbol with a
/// symbol number. One numbered 0 has its source frame's nonce and is
/// sealed under the source rules.
fn is_repair_kind(header: &MediaHeader) -> bool {
    header.is_repair() && header.fec_symbol > 0
}

struct SealProc {
    ciphers: EpochCiphers,
    /// The one sender id whose nonce space this stage owns.
    sender: Option<u32>,
    /// Last source seq sealed in `epoch`; `None` before the first packet.
    last_seq: Option<u32>,
    /// `(seq, fec_symbol)` of the last repair symbol sealed in `epoch`.
    last_repair: Option<(u32, u16)>,
    /// Last feedback report seq sealed (reports count their own seq).
    last_report: Option<u32>,
    /// Something has been sealed: `epoch` is in force.
    started: bool,
    epoch: u8,
    sealed: Counter,
    rekeys: Counter,
    malformed: Counter,
    wrong_sender: Counter,
    seq_reuse: Counter,
    key_exhausted: Counter,
    oversize: Counter,
    queue_full: Counter,
    epoch_gauge: Gauge,
}

impl SealProc {
    fn seal_one(&mut self, slot: &Slot<PacketMeta>, out: &mut Batch<PacketMeta>) {
        let bytes = slot.bytes();
        let Ok(packet) = MediaPacket::parse(bytes) else {
            self.malformed.inc();
            return;
        };
        let header = packet.header;
        match self.sender {
            None => {}
            Some(id) if id == header.sender_id => {}
            Some(_) => {
                self.wrong_sender.inc();
                return;
            }
        }
        // The epoch in force: the header's until something was sealed.
        let current = if self.started {
            self.epoch
        } else {
            header.key_epoch
        };
        let epoch = if header.is_feedback() {
            // Reports count their own seq (a nonce space of their own,
            // docs/WIRE.md §1.5) and are never FEC-protected.
            if header.is_repair() {
                self.malformed.inc();
                return;
            }
            match self.last_report {
                Some(last) if header.seq <= last => match self.epoch.checked_add(1) {
                    Some(next) => next,
                    None => {
                        self.key_exhausted.inc();
                        return;
                    }
                },
                _ => current,
            }
        } else if is_repair_kind(&header) {
            // Repair symbols: their own nonce kind, `(seq, fec_symbol)`
            // rising within the epoch, none above the last source `seq`
            // (one would be from before the source count restarted).
            let fresh = self.last_seq.is_none_or(|last| header.seq <= last)
                && self
                    .last_repair
                    .is_none_or(|last| (header.seq, header.fec_symbol) > last);
            if !fresh {
                self.seq_reuse.inc();
                return;
            }
            current
        } else {
            match self.last_seq {
                None => current,
                Some(last) if header.seq > last => self.epoch,
                Some(last) if header.seq == last => {
                    self.seq_reuse.inc();
                    return;
                }
                Some(_) => match self.epoch.checked_add(1) {
                    Some(next) => next,
                    None => {
                        self.key_exhausted.inc();
                        return;
                    }
                },
            }
        };
        let sealed_len = bytes.len() + TAG_LEN;
        if sealed_len > MAX_ITEM_BYTES {
            self.oversize.inc();
            return;
        }
        let Some(dst) = out.push_slot() else {
            self.queue_full.inc();
            return;
        };
        dst.meta = slot.meta;
        let buf = dst.buf_mut();
        buf[..bytes.len()].copy_from_slice(bytes);
        buf[3] = epoch;
        let mut sealed_header = header;
        sealed_header.key_epoch = epoch;
        let mut header_bytes = [0u8; HEADER_LEN];
        header_bytes.copy_from_slice(&buf[..HEADER_LEN]);
        let aad = Aad::new(&header_bytes, packet.trailer.as_ref());
        let trailer_len = if packet.trailer.is_some() {
            TRAILER_LEN
        } else {
            0
        };
        let payload_end = bytes.len() - trailer_len;
        let nonce = Nonce::from(sealed_header.nonce());
        let sealed = self.ciphers.get(epoch).encrypt_inout_detached(
            &nonce,
            aad.as_bytes(),
            (&mut buf[HEADER_LEN..payload_end]).into(),
        );
        let Ok(tag) = sealed else {
            // Only a payload beyond ChaCha20's 256 GiB limit fails; a slot cannot hold one.
            out.pop();
            self.oversize.inc();
            return;
        };
        // Trailer first: the tag overwrites where it was.
        buf.copy_within(payload_end..bytes.len(), payload_end + TAG_LEN);
        buf[payload_end..payload_end + TAG_LEN].copy_from_slice(&tag);
        dst.set_len(sealed_len);

        if self.sender.is_none() {
            self.sender = Some(header.sender_id);
        }
        let moved = epoch != self.epoch;
        if self.started && moved {
            self.rekeys.inc();
        }
        self.started = true;
        self.epoch = epoch;
        if header.is_feedback() {
            self.last_report = Some(header.seq);
        } else if is_repair_kind(&header) {
            self.last_repair = Some((header.seq, header.fec_symbol));
        } else {
            if moved {
                // A fresh key: its repair nonces start over too.
                self.last_repair = None;
            }
            self.last_seq = Some(header.seq);
        }
        self.epoch_gauge.set(i64::from(epoch));
        self.sealed.inc();
    }
}

impl Processor for SealProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let (Some(input), Some(out)) = io.packets_in_out(0, 0) else {
            return Flow::Continue;
        };
        for slot in input.iter() {
            self.seal_one(slot, out);
        }
        Flow::Continue
    }
}
