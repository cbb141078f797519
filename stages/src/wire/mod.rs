//! `wire.*` stages: frames to media packets and back (docs/WIRE.md §1).
//!
//! - [`packetize`] (`wire.packetize`): Frame -> Packet, writes the 22-byte
//!   media header (and optional quality report trailer) in place.
//! - [`depacketize`] (`wire.depacketize`): Packet -> Frame, parses the header
//!   (never panics), counts and drops malformed packets.
//! - [`stream_demux`] (`wire.stream_demux`): Frame -> one output per sender.
//!
//! On a call the order is `packetize -> crypto.seal -> transport` and
//! `transport -> crypto.open -> depacketize`: the header stays in clear (it
//! is the AEAD associated data), so every field survives sealing.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use wzp_engine::prelude::*;
use wzp_proto::QualityReport;

pub mod depacketize;
pub mod packetize;
pub mod stream_demux;

/// The latest [`QualityReport`], shared without locks between the control
/// plane and the wire stages (a `Resources` entry named by their
/// `quality_report` param).
///
/// `wire.packetize` reads it to fill the trailer it sends; `wire.depacketize`
/// stores the trailers it receives in it.
#[derive(Debug, Default)]
pub struct QualityCell(AtomicU64);

/// Bit set in the cell once a report has been stored.
const PRESENT: u64 = 1 << 32;

impl QualityCell {
    /// An empty cell: no report yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `report` (single writer or last writer wins; no lock).
    pub fn set(&self, report: QualityReport) {
        let v = u64::from(u32::from_be_bytes(report.to_bytes())) | PRESENT;
        self.0.store(v, Ordering::Relaxed);
    }

    /// The latest report, if one was stored.
    pub fn get(&self) -> Option<QualityReport> {
        let v = self.0.load(Ordering::Relaxed);
        if v & PRESENT == 0 {
            return None;
        }
        QualityReport::from_bytes((v as u32).to_be_bytes()).ok()
    }
}

/// The local media sender id, shared without locks by the send path's
/// `wire.packetize` (which publishes the id it sends with, random or not,
/// when it is built: param `publish_sender`) and the receive path's
/// `crypto.open` (which drops packets carrying it: param `local_sender`).
/// A `Resources` entry the control plane inserts once; it never copies the
/// number itself, and a rebuilt packetizer's new id reaches the receive path
/// at once.
#[derive(Debug, Default)]
pub struct LocalSender(AtomicU32);

impl LocalSender {
    /// An empty cell: no id yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `id` (0 is "none": packetize never sends with id 0).
    pub fn set(&self, id: u32) {
        self.0.store(id, Ordering::Release);
    }

    /// The published id, if any.
    pub fn get(&self) -> Option<u32> {
        Some(self.0.load(Ordering::Acquire)).filter(|&id| id != 0)
    }
}

/// Registers every `wire.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(packetize::Packetize)?;
    registry.register(depacketize::Depacketize)?;
    registry.register(stream_demux::StreamDemux)?;
    Ok(())
}
