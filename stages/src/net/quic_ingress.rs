//! `net.quic_ingress`: QUIC datagrams into the graph.
//!
//! Drains the ring that the control plane's tokio tasks fill with every
//! connection's datagrams (see [`crate::net::quic`]). Each packet's
//! `PacketMeta.peer` is the handle of the connection it came from and
//! `arrival_ns` when the tokio side read it, in graph time. A jitter buffer
//! downstream compares arrivals with its cycle's `now_ns`, so the two must
//! share a time base whenever the graph started and however its clock ran.
//! The stage keeps the offset between the read stamps' clock and graph time
//! (wall time minus `now_ns`, the smallest seen: a cycle on time) and maps
//! each stamp through it. A cycle that runs late, as the timer driver's
//! do when it catches up after a short stall, therefore does not move
//! arrivals earlier by its lateness, which would make every later frame
//! look late to the jitter buffer. When the offset jumps by more than the
//! driver catches up ([`wzp_engine::exec::MAX_CATCH_UP`] plus
//! [`MAX_LAG_QUANTA`] quanta: the driver skipped quanta after a long stall,
//! or a manually stepped graph fell behind), graph time has moved for good
//! and the stage adopts the new offset. Payloads are exactly the datagram
//! bytes.
//!
//! - Ports: output `out` (Packet).
//! - Params: `endpoint` (string, default `"quic"`): the ring is the resource
//!   `"{endpoint}.ingress"`, a [`QuicIngressPort`] made by
//!   [`crate::net::quic::ingress_channel`].
//! - Counters: `packets`, `bytes` (drained into the graph); `ring_full`,
//!   `too_large` (dropped on the I/O side before the graph, mirrored here
//!   each cycle).
//! - Latency: zero.
//!
//! ```toml
//! [[stage]]
//! id = "in"
//! kind = "net.quic_ingress"
//! domain = "packet"
//! params = { endpoint = "relay" }
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::bridge::RtReceiver;
use wzp_engine::prelude::*;

use super::quic::{IngressIoStats, QuicIngressPort};

/// Factory of `net.quic_ingress`.
pub struct QuicIngress;

/// How many quanta beyond [`wzp_engine::exec::MAX_CATCH_UP`] (within which
/// the timer driver catches up) graph time may lag before the stage takes
/// it as moved for good: one, for wake-up latency.
pub const MAX_LAG_QUANTA: u64 = 1;

/// The real-time half of `net.quic_ingress`.
pub struct QuicIngressProc {
    rx: RtReceiver<PacketMeta>,
    epoch: std::time::Instant,
    /// Wall time since `epoch` minus graph time, in a cycle on time.
    offset: Option<i64>,
    io: Arc<IngressIoStats>,
    packets: Counter,
    bytes: Counter,
    ring_full: Mirror,
    too_large: Mirror,
}

/// Copies a count kept by another thread into a stage counter.
pub(crate) struct Mirror {
    counter: Counter,
    seen: u64,
}

impl Mirror {
    pub(crate) fn new(counter: Counter) -> Self {
        Mirror { counter, seen: 0 }
    }

    #[inline]
    pub(crate) fn update(&mut self, now: u64) {
        if now > self.seen {
            self.counter.add(now - self.seen);
            self.seen = now;
        }
    }
}

impl Processor for QuicIngressProc {
    fn process(&mut self, io: &mut Io<'_>, cx: &Cx) -> Flow {
        self.ring_full
            .update(self.io.ring_full.load(Ordering::Relaxed));
        self.too_large
            .update(self.io.too_large.load(Ordering::Relaxed));
        let wall = self.epoch.elapsed().as_nanos() as i64;
        let now_offset = wall - cx.now_ns as i64;
        let max_lag = (wzp_engine::exec::MAX_CATCH_UP.as_nanos() as u64
            + MAX_LAG_QUANTA * cx.quantum_ns) as i64;
        let offset = match self.offset {
            // This cycle runs late by `now_offset - o`: keep the on-time offset.
            Some(o) if now_offset >= o && now_offset - o <= max_lag => o,
            // Earlier than ever (a cycle more on time), or graph time moved.
            _ => now_offset,
        };
        self.offset = Some(offset);
        let Some(out) = io.packets_out(0) else {
            return Flow::Continue;
        };
        let n = self.rx.drain_into(out);
        if n > 0 {
            // I/O stamps (since the port's epoch) -> graph time.
            for s in out.as_mut_slice() {
                s.meta.arrival_ns = (s.meta.arrival_ns as i64 - offset).max(1) as u64;
            }
            self.packets.add(n as u64);
            let b: usize = out.iter().map(|s| s.len()).sum();
            self.bytes.add(b as u64);
        }
        Flow::Continue
    }
}

impl StageFactory for QuicIngress {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "net.quic_ingress",
            summary: "QUIC datagrams of every connection into the graph (peer = connection handle)",
            inputs: vec![],
            outputs: vec![PortInfo {
                name: "out",
                ty: "Packet",
                doc: "one item per datagram; meta.peer = connection handle",
            }],
            params: vec![ParamSpec::str(
                "endpoint",
                "quic",
                "names the resource `{endpoint}.ingress` the control plane provides",
            )],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet, Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let endpoint = p.str("endpoint")?;
        let name = format!("{endpoint}.ingress");
        if cx.dry_run {
            // Described only (`graph explain`): no rings exist outside a control plane.
            return Ok(Built {
                outputs: vec![PortDecl::new("out", PortType::Packet)],
                inputs: vec![],
                latency: std::time::Duration::ZERO,
                processor: Box::new(super::DryRun),
            });
        }
        let port = cx.resource::<QuicIngressPort>(&name).ok_or_else(|| {
            BuildError::Other(format!(
                "no resource `{name}`: this stage needs a control plane with a QUIC endpoint \
                 (wzp-relay, wzp-client join); check the `endpoint` param"
            ))
        })?;
        let rx = port
            .rx
            .lock()
            .map_err(|_| BuildError::Other(format!("resource `{name}` is poisoned")))?
            .take()
            .ok_or_else(|| {
                BuildError::Other(format!(
                    "resource `{name}` is already used by another net.quic_ingress stage"
                ))
            })?;
        let proc = QuicIngressProc {
            rx,
            epoch: port.epoch,
            offset: None,
            io: port.stats.clone(),
            packets: cx.counter("packets"),
            bytes: cx.counter("bytes"),
            ring_full: Mirror::new(cx.counter("ring_full")),
            too_large: Mirror::new(cx.counter("too_large")),
        };
        Ok(Built {
            inputs: vec![],
            outputs: vec![PortDecl::new("out", PortType::Packet)],
            latency: Duration::ZERO,
            processor: Box::new(proc),
        })
    }
}
