//! Media across federation links: `federation.dedup` (packets arriving from
//! other relays) and `federation.forward` (packets leaving for them), in the
//! relay graph around `sfu.fanout`.
//!
//! ```text
//!  net.quic_ingress -> federation.dedup --out--> sfu.fanout -> federation.forward -> net.quic_egress
//!                             \------------relay----------------------^
//! ```
//!
//! - A room bridged across the mesh (a global room, or a call room bridged
//!   between the two relays of a call) that has local members gets a
//!   **federation member** in `sfu.fanout` ([`crate::sfu::SfuCommand::JoinRelay`]).
//!   A local client's packet reaches it like any other member; `federation.forward`
//!   turns that copy into one tagged datagram per link that leads to the
//!   room's members on other relays (tag: docs/WIRE.md §9.3, hops 0).
//! - A tagged datagram from a link (its `meta.peer` is a link handle) is
//!   checked by `federation.dedup`: tag, hop limit, a packet of this relay
//!   coming back (`looped`), room bridged here, rate per (link, room),
//!   exactly-once window keyed by (origin, sender, lane, seq). A fresh one
//!   goes to the room's local members through the federation member (the
//!   tag removed; `sfu.fanout` copies it to every local member), and to
//!   `federation.forward` (port `relay`), which sends it on, with `hops + 1`,
//!   to every link towards other relays' members, never back where it came
//!   from. A relay with no local member in the room still forwards.
//!
//! Payloads are never opened: a relay forwards what it cannot read.
//!
//! The routes come from the control plane as an immutable
//! [`FederationTable`] snapshot ([`table_channel`]): published to every
//! stage through a ring, swapped in at the start of a cycle, the old one
//! handed back through a second ring so the real-time thread never frees
//! it. No lock is taken per packet.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use wzp_engine::prelude::*;
use wzp_proto::federation::{RelayId, RoomId};

pub mod dedup_stage;
pub mod forward;

/// Registers `federation.dedup` and `federation.forward`.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(dedup_stage::Dedup)?;
    registry.register(forward::Forward)?;
    Ok(())
}

/// Most links one packet is forwarded on (a relay's federation degree).
pub const MAX_TARGETS: usize = 64;

/// One up link that bridges a room, as the forwarding rule needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerRoute {
    /// The link's handle.
    pub link: u32,
    /// The relay at its other end.
    pub relay: RelayId,
    /// Relays whose participants in the room that peer announced here: it
    /// reaches them by its own way (not through this relay).
    pub origins: Vec<RelayId>,
}

/// How one bridged room leaves this relay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoomRoute {
    /// The room's federation member handle in `sfu.fanout` (the room has
    /// local members); `None` on a relay that only carries it.
    pub member: Option<u32>,
    /// The up links that bridge the room.
    pub peers: Vec<PeerRoute>,
}

/// What the federation stages route by: one immutable snapshot from the
/// control plane.
#[derive(Clone, Debug, Default)]
pub struct FederationTable {
    /// This relay's id.
    pub me: RelayId,
    /// Up links: handle -> the peer relay.
    pub links: HashMap<u32, RelayId>,
    /// Bridged rooms.
    pub rooms: HashMap<RoomId, RoomRoute>,
    /// Federation member handles -> their room.
    pub members: HashMap<u32, RoomId>,
}

impl FederationTable {
    /// The links a packet of `room` from `origin`, received over link `from`
    /// (`None`: from a local client), goes on: written into `out`, their
    /// number returned. Never allocates.
    ///
    /// The branches of `origin`'s shortest-path tree below this relay: a
    /// peer that did not announce `origin` here (so it reaches `origin`
    /// through this relay) and announced some other relay's participants
    /// (so it leads to members); never `from`, never `origin` itself. The
    /// control plane's `FederationCore::forward_targets` is the same rule.
    pub fn targets(
        &self,
        room: &RoomRoute,
        origin: RelayId,
        from: Option<u32>,
        out: &mut [u32; MAX_TARGETS],
    ) -> usize {
        let mut n = 0;
        for p in &room.peers {
            if p.relay == origin || Some(p.link) == from || n == MAX_TARGETS {
                continue;
            }
            if p.origins.contains(&origin) || !p.origins.iter().any(|o| *o != origin) {
                continue;
            }
            if out[..n].contains(&p.link) {
                continue;
            }
            out[n] = p.link;
            n += 1;
        }
        n
    }
}

/// The control plane's end: publishes snapshots to one stage.
pub struct TablePublisher {
    tx: rtrb::Producer<Arc<FederationTable>>,
    back: rtrb::Consumer<Arc<FederationTable>>,
    /// A snapshot that found the ring full (the graph has not run): sent
    /// with the next publish.
    pending: Option<Arc<FederationTable>>,
}

impl TablePublisher {
    /// Hands `table` to the stage (it takes it at its next cycle). Frees
    /// the snapshots the stage has finished with.
    pub fn publish(&mut self, table: Arc<FederationTable>) {
        while self.back.pop().is_ok() {}
        self.pending = None;
        if let Err(rtrb::PushError::Full(t)) = self.tx.push(table) {
            self.pending = Some(t);
        }
    }

    /// Retries a snapshot that found the ring full; frees returned ones.
    pub fn flush(&mut self) {
        while self.back.pop().is_ok() {}
        if let Some(t) = self.pending.take() {
            if let Err(rtrb::PushError::Full(t)) = self.tx.push(t) {
                self.pending = Some(t);
            }
        }
    }
}

/// The stage's end, taken from Resources at build.
pub struct TableSubscriber {
    rx: rtrb::Consumer<Arc<FederationTable>>,
    back: rtrb::Producer<Arc<FederationTable>>,
    current: Arc<FederationTable>,
}

impl TableSubscriber {
    /// Swaps in the newest snapshot, if any. The replaced ones go back to
    /// the publisher (never dropped here, so never freed on this thread).
    pub fn refresh(&mut self) {
        while let Ok(next) = self.rx.pop() {
            let old = std::mem::replace(&mut self.current, next);
            // The back ring is as large as the forward one and the
            // publisher drains it before each push, so it has room.
            if let Err(rtrb::PushError::Full(old)) = self.back.push(old) {
                // Unreachable by construction; keep the Arc alive rather
                // than free it on the real-time thread.
                std::mem::forget(old);
            }
        }
    }

    /// The current snapshot.
    pub fn table(&self) -> &FederationTable {
        &self.current
    }
}

/// What a federation stage takes from Resources under its `table` param.
pub struct FederationPort {
    pub sub: Mutex<Option<TableSubscriber>>,
}

/// Snapshots in flight per stage.
const TABLE_RING: usize = 16;

/// A snapshot channel for one stage, starting with an empty table for a
/// relay with id `me`.
pub fn table_channel(me: RelayId) -> (TablePublisher, FederationPort) {
    let (tx, rx) = rtrb::RingBuffer::new(TABLE_RING);
    let (back_tx, back_rx) = rtrb::RingBuffer::new(TABLE_RING + 1);
    (
        TablePublisher {
            tx,
            back: back_rx,
            pending: None,
        },
        FederationPort {
            sub: Mutex::new(Some(TableSubscriber {
                rx,
                back: back_tx,
                current: Arc::new(FederationTable {
                    me,
                    ..Default::default()
                }),
            })),
        },
    )
}

/// Takes the subscriber a stage's `table` param names.
fn take_subscriber(
    cx: &BuildContext<'_>,
    kind: &str,
    name: &str,
) -> Result<TableSubscriber, BuildError> {
    let port = cx.resource::<FederationPort>(name).ok_or_else(|| {
        BuildError::Other(format!(
            "no resource `{name}`: {kind} needs the relay's federation table; run this graph \
             with wzp-relay, or check the `table` param"
        ))
    })?;
    let sub = port
        .sub
        .lock()
        .map_err(|_| BuildError::Other(format!("resource `{name}` is poisoned")))?
        .take()
        .ok_or_else(|| {
            BuildError::Other(format!(
                "resource `{name}` is already used by another federation stage"
            ))
        })?;
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u8) -> RelayId {
        RelayId([n; 8])
    }

    #[test]
    fn targets_follow_the_origins_tree() {
        let t = FederationTable {
            me: r(1),
            ..Default::default()
        };
        let peer = |link, relay, origins: &[u8]| PeerRoute {
            link,
            relay: r(relay),
            origins: origins.iter().map(|&o| r(o)).collect(),
        };
        let room = RoomRoute {
            member: None,
            peers: vec![
                // Peer 2 has members; it reaches relay 5 by its own way.
                peer(10, 2, &[2, 5]),
                // Peer 3 leads to relays 3 and 4.
                peer(20, 3, &[3, 4]),
                // Peer 6 announced nothing: no members behind it.
                peer(30, 6, &[]),
            ],
        };
        let mut out = [0u32; MAX_TARGETS];
        // A local client's packet (origin = me): every peer with members.
        let n = t.targets(&room, r(1), None, &mut out);
        assert_eq!(&out[..n], &[10, 20]);
        // From relay 2 over link 10: not back; peer 3 reaches 2 through us.
        let n = t.targets(&room, r(2), Some(10), &mut out);
        assert_eq!(&out[..n], &[20]);
        // From relay 5 (peer 2 reaches it by its own way): only peer 3.
        let n = t.targets(&room, r(5), Some(20), &mut out);
        assert_eq!(&out[..n], &[] as &[u32]);
        let n = t.targets(&room, r(5), Some(30), &mut out);
        assert_eq!(&out[..n], &[20]);
        // From relay 4, which peer 3 announced: not back towards it.
        let n = t.targets(&room, r(4), Some(20), &mut out);
        assert_eq!(&out[..n], &[10]);
    }

    #[test]
    fn snapshots_swap_without_freeing_on_the_stage() {
        let (mut publisher, port) = table_channel(r(1));
        let mut sub = port.sub.lock().unwrap().take().unwrap();
        assert!(sub.table().rooms.is_empty());
        for i in 0..100u8 {
            let mut t = FederationTable {
                me: r(1),
                ..Default::default()
            };
            t.links.insert(u32::from(i), r(i));
            publisher.publish(Arc::new(t));
            if i % 3 == 0 {
                sub.refresh();
            }
        }
        publisher.flush();
        sub.refresh();
        assert_eq!(sub.table().links.keys().copied().collect::<Vec<_>>(), [99]);
    }
}
