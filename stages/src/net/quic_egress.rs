//! `net.quic_egress`: packets out of the graph as QUIC datagrams.
//!
//! Pushes each input packet into the ring that an
//! [`EgressPump`](crate::net::quic::EgressPump) thread drains; the pump
//! sends it on the connection whose handle is `PacketMeta.peer`. Pushing is
//! lock-free and never blocks: on a full ring the packet is dropped and
//! counted, and the pump drops (and counts) packets larger than the path's
//! `max_datagram_size` or refused by the connection. A drop never ends the
//! call.
//!
//! - Ports: input `in` (Packet; `meta.peer` = destination connection handle).
//! - Params: `endpoint` (string, default `"quic"`): the ring is the resource
//!   `"{endpoint}.egress"`, a [`QuicEgressPort`] made by
//!   [`crate::net::quic::egress_channel`].
//! - Counters: `packets`, `bytes` (handed to the ring); `ring_full`;
//!   `sent`, `too_large`, `send_errors`, `unknown_peer`, `held` (held to share
//!   a QUIC packet, see `net::coalesce`; from the pump, mirrored here each
//!   cycle).
//! - Latency: zero.
//!
//! ```toml
//! [[stage]]
//! id = "out"
//! kind = "net.quic_egress"
//! domain = "packet"
//! params = { endpoint = "relay" }
//! ```

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use wzp_engine::bridge::RtSender;
use wzp_engine::prelude::*;

use super::quic::{EgressIoStats, QuicEgressPort};
use super::quic_ingress::Mirror;

/// Factory of `net.quic_egress`.
pub struct QuicEgress;

/// The real-time half of `net.quic_egress`.
pub struct QuicEgressProc {
    tx: RtSender<PacketMeta>,
    io: Arc<EgressIoStats>,
    ring_full_src: Counter,
    packets: Counter,
    bytes: Counter,
    ring_full: Mirror,
    sent: Mirror,
    too_large: Mirror,
    send_errors: Mirror,
    unknown_peer: Mirror,
    held: Mirror,
}

impl Processor for QuicEgressProc {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(b) = io.packets_in(0) {
            if !b.is_empty() {
                self.packets.add(b.len() as u64);
                let n: usize = b.iter().map(|s| s.len()).sum();
                self.bytes.add(n as u64);
                self.tx.send_batch(b);
            }
        }
        self.ring_full.update(self.ring_full_src.get());
        self.sent.update(self.io.sent.load(Ordering::Relaxed));
        self.too_large
            .update(self.io.too_large.load(Ordering::Relaxed));
        self.send_errors
            .update(self.io.send_errors.load(Ordering::Relaxed));
        self.unknown_peer
            .update(self.io.unknown_peer.load(Ordering::Relaxed));
        self.held.update(self.io.held.load(Ordering::Relaxed));
        Flow::Continue
    }
}

impl StageFactory for QuicEgress {
    fn info(&self) -> StageInfo {
        StageInfo {
            kind: "net.quic_egress",
            summary: "packets out as QUIC datagrams to the connection named by meta.peer",
            inputs: vec![PortInfo {
                name: "in",
                ty: "Packet",
                doc: "packets to send; meta.peer = destination connection handle",
            }],
            outputs: vec![],
            params: vec![ParamSpec::str(
                "endpoint",
                "quic",
                "names the resource `{endpoint}.egress` the control plane provides",
            )],
            default_domain: Domain::Packet,
            domains: &[Domain::Packet, Domain::Clocked],
        }
    }

    fn build(&self, cx: &mut BuildContext<'_>, p: &Params) -> Result<Built, BuildError> {
        let endpoint = p.str("endpoint")?;
        let name = format!("{endpoint}.egress");
        if cx.dry_run {
            // Described only (`graph explain`): no rings exist outside a control plane.
            return Ok(Built {
                inputs: vec![PortDecl::new("in", PortType::Packet)],
                outputs: vec![],
                latency: std::time::Duration::ZERO,
                processor: Box::new(super::DryRun),
            });
        }
        let port = cx.resource::<QuicEgressPort>(&name).ok_or_else(|| {
            BuildError::Other(format!(
                "no resource `{name}`: this stage needs a control plane with a QUIC endpoint \
                 (wzp-relay, wzp-client join); check the `endpoint` param"
            ))
        })?;
        let tx = port
            .tx
            .lock()
            .map_err(|_| BuildError::Other(format!("resource `{name}` is poisoned")))?
            .take()
            .ok_or_else(|| {
                BuildError::Other(format!(
                    "resource `{name}` is already used by another net.quic_egress stage"
                ))
            })?;
        let proc = QuicEgressProc {
            tx,
            io: port.stats.clone(),
            ring_full_src: port.ring_full.clone(),
            packets: cx.counter("packets"),
            bytes: cx.counter("bytes"),
            ring_full: Mirror::new(cx.counter("ring_full")),
            sent: Mirror::new(cx.counter("sent")),
            too_large: Mirror::new(cx.counter("too_large")),
            send_errors: Mirror::new(cx.counter("send_errors")),
            unknown_peer: Mirror::new(cx.counter("unknown_peer")),
            held: Mirror::new(cx.counter("held")),
        };
        Ok(Built {
            inputs: vec![PortDecl::new("in", PortType::Packet)],
            outputs: vec![],
            latency: Duration::ZERO,
            processor: Box::new(proc),
        })
    }
}
