//! `sfu.*` stages: selective forwarding of media packets between the members
//! of a room. The relay never decrypts; it forwards payloads as received.
//!
//! Membership is decided by the control plane (signaling, admission) and
//! reaches the real-time stage as small fixed-size [`SfuCommand`]s through
//! an SPSC ring ([`membership_channel`]), applied at the start of each cycle.

use std::sync::Mutex;

use wzp_engine::prelude::*;

pub mod fanout;

/// Registers every `sfu.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(fanout::Fanout)?;
    Ok(())
}

/// A membership change, from the control plane to `sfu.fanout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SfuCommand {
    /// Connection `peer` is in room slot `room` (moving it if it was
    /// elsewhere). Packets it sends go to every other member of `room`.
    Join { peer: u32, room: u32 },
    /// Like `Join`, for a room's federation member: the handle through
    /// which other relays' packets enter the room (`federation.dedup`) and
    /// its members' packets leave for them (`federation.forward`). Its
    /// packets skip sender binding and the per-sender rate caps.
    JoinRelay { peer: u32, room: u32 },
    /// Connection `peer` left: it neither sends nor receives any more.
    Leave { peer: u32 },
}

/// A media sender id `sfu.fanout` bound to connection `peer` (its first
/// forwarded packet with that id), from the fan-out to the control plane,
/// which shows the room whose voice is whose (a participant's `senders`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SfuBinding {
    /// The connection's handle.
    pub peer: u32,
    /// The sender id (media header bytes 4..8).
    pub sender: u32,
}

/// Handles are `generation << 16 | slot`: the slot indexes the fan-out's
/// fixed tables, and the generation makes a reused slot a different handle,
/// so packets still in flight from a connection that left are never taken
/// for the new one's.
pub const SLOT_BITS: u32 = 16;
/// The most peers one fan-out table can hold.
pub const MAX_SLOTS: usize = 1 << SLOT_BITS;

/// The table slot of a handle.
#[inline]
pub fn slot_of(handle: u32) -> usize {
    (handle & (MAX_SLOTS as u32 - 1)) as usize
}

/// Hands out peer handles for `max_peers` slots (control side).
#[derive(Debug)]
pub struct HandleAllocator {
    free: Vec<u32>,
    generation: Vec<u16>,
}

impl HandleAllocator {
    /// Panics if `max_peers` is 0 or above [`MAX_SLOTS`] (a programming error:
    /// `sfu.fanout` refuses such a param at build).
    pub fn new(max_peers: usize) -> Self {
        assert!((1..=MAX_SLOTS).contains(&max_peers));
        HandleAllocator {
            free: (0..max_peers as u32).rev().collect(),
            generation: vec![0; max_peers],
        }
    }

    /// A fresh handle, or `None` when every slot is taken.
    pub fn alloc(&mut self) -> Option<u32> {
        let slot = self.free.pop()?;
        let g = &mut self.generation[slot as usize];
        *g = g.wrapping_add(1);
        Some(((*g as u32) << SLOT_BITS) | slot)
    }

    /// Returns a handle's slot for reuse.
    pub fn release(&mut self, handle: u32) {
        let slot = slot_of(handle);
        if slot < self.generation.len() && !self.free.contains(&(slot as u32)) {
            self.free.push(slot as u32);
        }
    }

    /// Handles in use.
    pub fn in_use(&self) -> usize {
        self.generation.len() - self.free.len()
    }
}

/// The control plane's end of the membership ring (and of the ring of
/// sender bindings coming back).
pub struct SfuControl {
    tx: rtrb::Producer<SfuCommand>,
    bindings: rtrb::Consumer<SfuBinding>,
}

/// The ring is full: the fan-out has not run for a while. Retry shortly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("sfu membership ring full; retry after the packet domain runs")]
pub struct CommandRingFull(pub SfuCommand);

impl SfuControl {
    pub fn send(&mut self, cmd: SfuCommand) -> Result<(), CommandRingFull> {
        self.tx.push(cmd).map_err(|_| CommandRingFull(cmd))
    }

    /// Moves the sender bindings the fan-out made since the last call into
    /// `out`, oldest first.
    pub fn take_bindings(&mut self, out: &mut Vec<SfuBinding>) {
        while let Ok(b) = self.bindings.pop() {
            out.push(b);
        }
    }

    /// Whether the fan-out's end is gone (graph stopped).
    pub fn is_abandoned(&self) -> bool {
        self.tx.is_abandoned()
    }
}

/// What `sfu.fanout` takes from Resources under its `membership` param.
pub struct SfuMembershipPort {
    pub rx: Mutex<Option<rtrb::Consumer<SfuCommand>>>,
    /// Where the fan-out reports the sender ids it binds.
    pub bindings: Mutex<Option<rtrb::Producer<SfuBinding>>>,
}

/// A membership ring of `capacity` commands, and a ring of as many sender
/// bindings back.
pub fn membership_channel(capacity: usize) -> (SfuControl, SfuMembershipPort) {
    let (tx, rx) = rtrb::RingBuffer::new(capacity);
    let (btx, brx) = rtrb::RingBuffer::new(capacity);
    (
        SfuControl { tx, bindings: brx },
        SfuMembershipPort {
            rx: Mutex::new(Some(rx)),
            bindings: Mutex::new(Some(btx)),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reused_slot_gets_a_new_handle() {
        let mut a = HandleAllocator::new(2);
        let h1 = a.alloc().unwrap();
        let h2 = a.alloc().unwrap();
        assert_ne!(slot_of(h1), slot_of(h2));
        assert_eq!(a.alloc(), None);
        a.release(h1);
        let h3 = a.alloc().unwrap();
        assert_eq!(slot_of(h3), slot_of(h1));
        assert_ne!(h3, h1);
        assert_eq!(a.in_use(), 2);
        // A double release does not hand the slot out twice.
        a.release(h2);
        a.release(h2);
        assert!(a.alloc().is_some());
        assert_eq!(a.alloc(), None);
    }
}
