//! `crypto.open`: authenticates and decrypts media packets sealed by
//! `crypto.seal`, and drops replays.
//!
//! Each packet `header | ciphertext | tag | [trailer]` is checked in this
//! order, the cheap refusals first, and leaves as `header | payload |
//! [trailer]` (what `wire.depacketize` reads):
//!
//! 1. The header and trailer parse (`MediaHeader::parse`; never panics) and a
//!    full 16-byte tag is present, else `malformed`.
//! 2. Per sender id: a `key_epoch` more than one below the sender's current
//!    epoch is `old_epoch`. The current epoch, the one before (packets
//!    reordered across a rekey) and any later one are accepted: all 256
//!    epoch keys are derived at build, so following a sender's rekey costs
//!    nothing.
//! 3. The packet index `(key_epoch << 32) | seq` must be new to the sender's
//!    1024-packet sliding window, else `replays` (seen, or too old). An FEC
//!    repair symbol shares the `seq` of its block's last source frame: it
//!    must not be too old for the window, and its `(index, fec_symbol)` must
//!    not be among the sender's last [`REPAIR_MEMORY`] repair symbols; it
//!    does not mark the window (its source frame may still arrive).
//!    A feedback report (codec `0x40`) counts its own `seq` (docs/WIRE.md
//!    §1.5): it is checked in a second window of the sender's, kept for
//!    reports, and never moves the media window; one flagged `REPAIR` is
//!    `malformed`. The epoch check of step 2 takes the newer of the two
//!    windows' epochs.
//! 4. The tag must verify under the epoch's key, with the header (and
//!    trailer) as associated data and `MediaHeader::nonce()` as nonce, else
//!    `bad_tag`. Decryption is in place in the output slot.
//!
//! 0. A packet carrying the local sender id (params `local_sender_id`, or
//!    the `LocalSender` cell named by `local_sender` that `wire.packetize`
//!    publishes its id in) is dropped first (`own_sender`): one's own voice
//!    coming back (a relay's or an attacker's echo) must never play. It is
//!    authentic under a room key, so without this it would pass every later
//!    check, take a sender-table entry and move a window.
//!
//! Only an authentic packet changes state: it marks its index in the window
//! and may take a table entry. The sender table has `max_senders` entries,
//! allocated at build; an authentic packet of a new sender when it is full
//! evicts the least recently heard sender (`evictions`). So forged packets
//! can neither flush the table nor move a window.
//!
//! ## Ports
//! - `in` (Packet): sealed media packets (from the transport).
//! - `out` (Packet): opened packets, 16 bytes shorter; `PacketMeta` is kept.
//!
//! ## Params (exactly one key source, as `crypto.seal`)
//! - `room` + `room_secret`, `session` (opens with its receive key), or `key`.
//! - `max_senders` (int, 64, 1..=4096): senders tracked at once.
//! - `local_sender_id` (int, -1, -1..=4294967295): this client's own sender
//!   id; -1 or 0: none (unless `local_sender` gives it).
//! - `local_sender` (string, ""): name of an `Arc<LocalSender>` resource
//!   (`wzp_stages::wire::LocalSender`), read every cycle.
//!
//! ## Stats
//! Counters `opened`, `bad_tag`, `replays`, `old_epoch`, `malformed`,
//! `evictions`, `queue_full`, `own_sender`; gauge `senders`.
//!
//! ## Latency
//! None (0 ms).
//!
//! ## Example
//! ```toml
//! [[stage]]
//! id = "open"
//! kind = "crypto.open"
//! params = { room = "${room}", room_secret = "${room_secret}", max_senders = 64 }
//!
//! [[link]]
//! from = "ingress.out"
//! to = "open.in"
//!
//! [[link]]
//! from = "open.out"
//! to = "depack.in"
//! ```

use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::{AeadInOut, Nonce, Tag};
use wzp_engine::prelude::*;
use wzp_proto::media::{split_trailer, Aad};
use wzp_proto::{MediaHeader, HEADER_LEN, TRAILER_LEN};

use super::keys::{base_key, key_params, EpochCiphers, Side};
use super::replay::{Refusal, ReplayWindow};
use super::TAG_LEN;
use crate::wire::LocalSender;

/// `crypto.open` factory.
pub struct Open;

impl StageFactory for Open {
    fn info(&self) -> StageInfo {
        let mut params = key_params();
        params.push(ParamSpec::int(
            "max_senders",
            64,
            "senders whose replay windows are kept at once (1..=4096)",
        ));
        params.push(ParamSpec::int(
            "local_sender_id",
            -1,
            "own sender id: packets carrying it are dropped (-1 or 0: none)",
        ));
        params.push(ParamSpec::str(
            "local_sender",
            "",
            "name of an Arc<LocalSender> resource holding the own sender id",
        ));
        StageInfo {
            kind: "crypto.open",
            summary: "authenticates and decrypts media packets, drops replays and forgeries",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "sealed media packets",
            }],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "authentic plaintext media packets with header",
            }],
            params,
            default_domain: Domain::Clocked,
            domains: &[Domain::Clocked, Domain::Packet],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let max_senders = p.int_in("max_senders", 1, 4096)? as usize;
        let base = base_key(cx, p, Side::Recv)?;
        let fixed_own = match p.int_in("local_sender_id", -1, i64::from(u32::MAX))? {
            -1 | 0 => None,
            id => Some(id as u32),
        };
        let name = p.str("local_sender")?;
        let own_cell = if name.is_empty() {
            None
        } else {
            Some(cx.resource::<LocalSender>(name).ok_or_else(|| {
                ParamError::new(
                    "local_sender",
                    format!("no LocalSender resource named {name:?}; insert one or leave it empty"),
                )
            })?)
        };
        let processor = OpenProc {
            fixed_own,
            own_cell,
            own: None,
            own_sender: cx.counter("own_sender"),
            ciphers: EpochCiphers::derive(&base),
            senders: vec![SenderEntry::default(); max_senders].into_boxed_slice(),
            tick: 0,
            in_use: 0,
            opened: cx.counter("opened"),
            bad_tag: cx.counter("bad_tag"),
            replays: cx.counter("replays"),
            old_epoch: cx.counter("old_epoch"),
            malformed: cx.counter("malformed"),
            evictions: cx.counter("evictions"),
            queue_full: cx.counter("queue_full"),
            senders_gauge: cx.gauge("senders"),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(processor),
        })
    }
}

/// Repair symbols remembered per sender against replays: more than the
/// repair symbols of the blocks a 1024-packet window spans at the largest
/// FEC ratios in use would be needed for a full guarantee; this many covers
/// every block in flight, and an older replayed repair symbol only repeats
/// one the FEC decoder already used or dropped as stale.
pub const REPAIR_MEMORY: usize = 64;

#[derive(Clone, Copy)]
struct SenderEntry {
    in_use: bool,
    id: u32,
    last_heard: u64,
    window: ReplayWindow,
    /// Feedback reports count their own seq: their own window.
    reports: ReplayWindow,
    /// Recent repair symbols `(index, fec_symbol)`, a ring.
    repairs: [(u64, u16); REPAIR_MEMORY],
    next_repair: usize,
}

impl Default for SenderEntry {
    fn default() -> Self {
        SenderEntry {
            in_use: false,
            id: 0,
            last_heard: 0,
            window: ReplayWindow::new(),
            reports: ReplayWindow::new(),
            repairs: [(u64::MAX, 0); REPAIR_MEMORY],
            next_repair: 0,
        }
    }
}

impl SenderEntry {
    /// Whether this repair symbol is new: not too old for the window, not
    /// seen among the recent ones.
    fn repair_is_new(&self, index: u64, symbol: u16) -> bool {
        !matches!(self.window.check(index), Err(Refusal::TooOld))
            && !self.repairs.contains(&(index, symbol))
    }

    fn accept_repair(&mut self, index: u64, symbol: u16) {
        self.repairs[self.next_repair] = (index, symbol);
        self.next_repair = (self.next_repair + 1) % REPAIR_MEMORY;
    }
}

struct OpenProc {
    /// Own sender id from the params.
    fixed_own: Option<u32>,
    /// Own sender id published by the send path.
    own_cell: Option<Arc<LocalSender>>,
    /// The own id in force this cycle.
    own: Option<u32>,
    own_sender: Counter,
    ciphers: EpochCiphers,
    senders: Box<[SenderEntry]>,
    /// Counts authentic packets; orders senders for LRU eviction.
    tick: u64,
    /// Entries of `senders` in use.
    in_use: usize,
    opened: Counter,
    bad_tag: Counter,
    replays: Counter,
    old_epoch: Counter,
    malformed: Counter,
    evictions: Counter,
    queue_full: Counter,
    senders_gauge: Gauge,
}

impl OpenProc {
    fn find(&self, id: u32) -> Option<usize> {
        self.senders.iter().position(|s| s.in_use && s.id == id)
    }

    /// A free entry, else the least recently heard one.
    fn victim(&self) -> usize {
        if let Some(free) = self.senders.iter().position(|s| !s.in_use) {
            return free;
        }
        let mut best = 0;
        for (i, s) in self.senders.iter().enumerate() {
            if s.last_heard < self.senders[best].last_heard {
                best = i;
            }
        }
        best
    }

    fn open_one(&mut self, slot: &Slot<PacketMeta>, out: &mut Batch<PacketMeta>) {
        let bytes = slot.bytes();
        let Ok((header, rest)) = MediaHeader::parse(bytes) else {
            self.malformed.inc();
            return;
        };
        let Ok((body, trailer)) = split_trailer(&header, rest) else {
            self.malformed.inc();
            return;
        };
        let Some(ct_len) = body.len().checked_sub(TAG_LEN) else {
            self.malformed.inc();
            return;
        };
        let Some((header_bytes, _)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            self.malformed.inc();
            return;
        };

        if self.own == Some(header.sender_id) {
            self.own_sender.inc();
            return;
        }
        if header.is_feedback() && header.is_repair() {
            // Reports are never FEC-protected (docs/WIRE.md §1.5).
            self.malformed.inc();
            return;
        }

        let index = ReplayWindow::index(header.key_epoch, header.seq);
        let known = self.find(header.sender_id);
        if let Some(i) = known {
            let entry = &self.senders[i];
            let window = &entry.window;
            if let Some(current) = window.epoch().max(entry.reports.epoch()) {
                if u16::from(header.key_epoch) + 1 < u16::from(current) {
                    self.old_epoch.inc();
                    return;
                }
            }
            let fresh = if header.is_feedback() {
                entry.reports.check(index).is_ok()
            } else if header.is_repair() {
                self.senders[i].repair_is_new(index, header.fec_symbol)
            } else {
                window.check(index).is_ok()
            };
            if !fresh {
                self.replays.inc();
                return;
            }
        }

        let Some(dst) = out.push_slot() else {
            self.queue_full.inc();
            return;
        };
        dst.meta = slot.meta;
        let buf = dst.buf_mut();
        buf[..bytes.len()].copy_from_slice(bytes);
        let ct_end = HEADER_LEN + ct_len;
        let mut tag = Tag::default();
        tag.copy_from_slice(&buf[ct_end..ct_end + TAG_LEN]);
        let aad = Aad::new(header_bytes, trailer.as_ref());
        let nonce = Nonce::from(header.nonce());
        let opened = self.ciphers.get(header.key_epoch).decrypt_inout_detached(
            &nonce,
            aad.as_bytes(),
            (&mut buf[HEADER_LEN..ct_end]).into(),
            &tag,
        );
        if opened.is_err() {
            out.pop();
            self.bad_tag.inc();
            return;
        }
        if trailer.is_some() {
            buf.copy_within(ct_end + TAG_LEN..ct_end + TAG_LEN + TRAILER_LEN, ct_end);
        }
        dst.set_len(bytes.len() - TAG_LEN);

        self.tick += 1;
        let i = match known {
            Some(i) => i,
            None => {
                let i = self.victim();
                if self.senders[i].in_use {
                    self.evictions.inc();
                } else {
                    self.in_use += 1;
                    self.senders_gauge.set(self.in_use as i64);
                }
                self.senders[i] = SenderEntry {
                    in_use: true,
                    id: header.sender_id,
                    ..SenderEntry::default()
                };
                i
            }
        };
        let entry = &mut self.senders[i];
        entry.last_heard = self.tick;
        if header.is_feedback() {
            entry.reports.accept(index);
        } else if header.is_repair() {
            entry.accept_repair(index, header.fec_symbol);
        } else {
            entry.window.accept(index);
        }
        self.opened.inc();
    }
}

impl Processor for OpenProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        self.own = self
            .fixed_own
            .or_else(|| self.own_cell.as_ref().and_then(|c| c.get()));
        let (Some(input), Some(out)) = io.packets_in_out(0, 0) else {
            return Flow::Continue;
        };
        for slot in input.iter() {
            self.open_one(slot, out);
        }
        Flow::Continue
    }
}
