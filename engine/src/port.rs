//! Typed ports and the pre-allocated buffers that travel along links.
//!
//! Three port types exist:
//! - [`PortType::Pcm`]: one quantum of mono `f32` samples at a given rate. The
//!   rate is part of the type, so linking a 16 kHz output into a 48 kHz input is
//!   a compile error, not a pitch shift.
//! - [`PortType::Frame`]: encoded codec frames with [`FrameMeta`].
//! - [`PortType::Packet`]: wire bytes with [`PacketMeta`].
//!
//! Frame and packet ports carry a [`Batch`]: zero or more items per cycle, in
//! storage allocated when the graph is compiled. A stage pushes into a batch and
//! counts a drop when it is full; it never grows.

use std::fmt;

/// Largest payload one frame or packet item can hold, in bytes. Above the
/// largest QUIC datagram on any usual path, so a datagram always fits.
pub const MAX_ITEM_BYTES: usize = 1500;

/// The type of a port. Links are checked against it when a graph is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortType {
    /// One quantum of mono f32 samples at `rate` Hz.
    Pcm { rate: u32 },
    /// Encoded codec frames.
    Frame,
    /// Wire packets.
    Packet,
}

impl PortType {
    /// Whether items of this type may cross from one domain to another
    /// through a ring. PCM is bound to the clock that produced it.
    pub fn can_bridge(self) -> bool {
        !matches!(self, PortType::Pcm { .. })
    }
}

impl fmt::Display for PortType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortType::Pcm { rate } => write!(f, "Pcm@{rate}"),
            PortType::Frame => f.write_str("Frame"),
            PortType::Packet => f.write_str("Packet"),
        }
    }
}

/// A port a built stage exposes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortDecl {
    pub name: String,
    pub ty: PortType,
    /// An input that must be linked. Outputs ignore this flag.
    pub required: bool,
    /// A side input: read to shape the outputs, not carried into them (an
    /// echo canceller's reference). Latency paths do not run through it;
    /// the schedule still orders the stage after what feeds it.
    pub side: bool,
}

impl PortDecl {
    pub fn new(name: impl Into<String>, ty: PortType) -> Self {
        PortDecl {
            name: name.into(),
            ty,
            required: true,
            side: false,
        }
    }

    /// An input that may stay unlinked: it then reads silence or an empty batch.
    pub fn optional(name: impl Into<String>, ty: PortType) -> Self {
        PortDecl {
            name: name.into(),
            ty,
            required: false,
            side: false,
        }
    }

    /// This input as a side input (see [`PortDecl::side`]).
    pub fn as_side(mut self) -> Self {
        self.side = true;
        self
    }
}

/// Flags on a [`FrameMeta`].
pub mod frame_flags {
    /// No data: the frame was lost and the decoder should conceal it.
    pub const MISSING: u8 = 1 << 0;
    /// A FEC repair symbol rather than a source frame.
    pub const REPAIR: u8 = 1 << 1;
    /// Discontinuous transmission: the sender was silent.
    pub const DTX: u8 = 1 << 2;
    /// The first frame of a new stream; receivers reset their state.
    pub const STREAM_START: u8 = 1 << 3;
    /// With `MISSING`: an extra period a jitter buffer inserted to grow its
    /// delay. Nothing was lost: the decoder conceals one period and the
    /// frame with this `seq` still comes next (it must not count as late).
    pub const INSERTED: u8 = 1 << 4;
    /// With `MISSING`: the payload is a later frame of the stream, which a
    /// jitter buffer already holds: `fec.symbol` frames ahead (`seq +
    /// symbol`; 0 means 1, the next frame). A decoder can rebuild the lost
    /// frame from that packet's in-band redundancy (Opus LBRR from the next
    /// frame, DRED from any) without holding frames back itself.
    pub const NEXT_ATTACHED: u8 = 1 << 5;
    /// Rebuilt from FEC repair, not received: the packet was lost on the
    /// path (a jitter buffer counts it as a loss seen, and holds for the
    /// next one to be rebuilt in time).
    pub const RECOVERED: u8 = 1 << 6;
    /// With `REPAIR`: the block's source symbols are in the compact layout
    /// (the FEC stages' business; the wire carries it as a header flag).
    pub const COMPACT_REPAIR: u8 = 1 << 7;
}

/// FEC position of a frame: which block, which symbol, and the block's shape.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FecTag {
    pub block: u16,
    pub symbol: u16,
    /// Source symbols in the block (0 when the frame is not FEC-protected).
    pub source_symbols: u8,
    /// Repair symbols per 100 source symbols.
    pub ratio_percent: u8,
}

/// Metadata of an encoded frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameMeta {
    /// Frame sequence number; wraps at 2^32.
    pub seq: u32,
    /// Media timestamp in samples at 48 kHz; wraps at 2^32.
    pub timestamp: u32,
    /// Sender's stream id.
    pub stream: u32,
    /// Codec id (see the profile table in docs).
    pub codec: u8,
    /// Bit set of [`frame_flags`].
    pub flags: u8,
    /// Frame duration in milliseconds.
    pub duration_ms: u8,
    pub fec: FecTag,
    /// When the packet carrying the frame arrived, in the receiving domain's
    /// clock (nanoseconds since the graph started); 0 on the send side.
    pub arrival_ns: u64,
}

/// Metadata of a wire packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketMeta {
    /// Local handle of the peer (connection) the packet came from or goes to.
    pub peer: u32,
    /// Stream id, when known.
    pub stream: u32,
    /// Arrival time, nanoseconds since the graph started.
    pub arrival_ns: u64,
}

/// One item of a [`Batch`]: metadata plus up to [`MAX_ITEM_BYTES`] bytes.
#[derive(Clone)]
pub struct Slot<M> {
    pub meta: M,
    len: u16,
    data: [u8; MAX_ITEM_BYTES],
}

impl<M: Default> Default for Slot<M> {
    fn default() -> Self {
        Slot {
            meta: M::default(),
            len: 0,
            data: [0; MAX_ITEM_BYTES],
        }
    }
}

impl<M: fmt::Debug> fmt::Debug for Slot<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("meta", &self.meta)
            .field("len", &self.len)
            .finish()
    }
}

impl<M> Slot<M> {
    /// The payload.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    /// The whole backing array, to write a payload in place; follow with
    /// [`Slot::set_len`].
    pub fn buf_mut(&mut self) -> &mut [u8; MAX_ITEM_BYTES] {
        &mut self.data
    }

    /// Sets the payload length, clamped to [`MAX_ITEM_BYTES`].
    pub fn set_len(&mut self, len: usize) {
        self.len = len.min(MAX_ITEM_BYTES) as u16;
    }

    /// Copies `bytes` in. Returns false (and leaves the slot empty) when they
    /// do not fit.
    pub fn set_bytes(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > MAX_ITEM_BYTES {
            self.len = 0;
            return false;
        }
        self.data[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len() as u16;
        true
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why a push into a batch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// The batch already holds its capacity of items.
    Full,
    /// The payload is larger than [`MAX_ITEM_BYTES`].
    TooLarge,
}

/// A bounded list of items, allocated once. Pushing never allocates.
pub struct Batch<M> {
    slots: Box<[Slot<M>]>,
    len: usize,
}

impl<M: fmt::Debug> fmt::Debug for Batch<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<M: Default + Clone> Batch<M> {
    /// A batch that holds up to `capacity` items.
    pub fn with_capacity(capacity: usize) -> Self {
        let slots = (0..capacity)
            .map(|_| Slot::default())
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Batch { slots, len: 0 }
    }
}

impl<M> Batch<M> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn is_full(&self) -> bool {
        self.len == self.slots.len()
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Slot<M>> {
        self.slots[..self.len].iter()
    }

    pub fn as_slice(&self) -> &[Slot<M>] {
        &self.slots[..self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [Slot<M>] {
        &mut self.slots[..self.len]
    }

    pub fn get(&self, i: usize) -> Option<&Slot<M>> {
        self.as_slice().get(i)
    }

    /// Appends an item.
    pub fn push(&mut self, meta: M, bytes: &[u8]) -> Result<(), PushError> {
        if bytes.len() > MAX_ITEM_BYTES {
            return Err(PushError::TooLarge);
        }
        let slot = self.slots.get_mut(self.len).ok_or(PushError::Full)?;
        slot.meta = meta;
        slot.set_bytes(bytes);
        self.len += 1;
        Ok(())
    }

    /// Reserves the next slot for writing in place; `None` when full. The slot
    /// keeps whatever it held before: set its meta and payload.
    pub fn push_slot(&mut self) -> Option<&mut Slot<M>> {
        let slot = self.slots.get_mut(self.len)?;
        self.len += 1;
        Some(slot)
    }

    /// Removes the last item (undoes a [`Batch::push_slot`] that was not filled).
    pub fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }
}

impl<M: Clone> Batch<M> {
    /// Appends a copy of `slot`.
    pub fn push_copy(&mut self, slot: &Slot<M>) -> Result<(), PushError> {
        let dst = self.slots.get_mut(self.len).ok_or(PushError::Full)?;
        dst.meta = slot.meta.clone();
        dst.len = slot.len;
        dst.data[..slot.len as usize].copy_from_slice(slot.bytes());
        self.len += 1;
        Ok(())
    }
}

/// A buffer in a schedule's pool.
#[derive(Debug)]
pub enum Buffer {
    Pcm(Box<[f32]>),
    Frames(Batch<FrameMeta>),
    Packets(Batch<PacketMeta>),
}

impl Buffer {
    /// A fresh buffer for a port of type `ty`.
    pub fn for_type(ty: PortType, quantum_ns: u64, batch_capacity: usize) -> Buffer {
        match ty {
            PortType::Pcm { rate } => {
                Buffer::Pcm(vec![0.0; samples_per_quantum(rate, quantum_ns)].into_boxed_slice())
            }
            PortType::Frame => Buffer::Frames(Batch::with_capacity(batch_capacity)),
            PortType::Packet => Buffer::Packets(Batch::with_capacity(batch_capacity)),
        }
    }

    /// Empties the buffer before a stage writes it: silence or no items.
    pub fn reset(&mut self) {
        match self {
            Buffer::Pcm(s) => s.fill(0.0),
            Buffer::Frames(b) => b.clear(),
            Buffer::Packets(b) => b.clear(),
        }
    }
}

/// Samples in one quantum at `rate`. The compiler checks that this is whole.
pub fn samples_per_quantum(rate: u32, quantum_ns: u64) -> usize {
    (rate as u64 * quantum_ns / 1_000_000_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_push_until_full_then_refuses() {
        let mut b: Batch<PacketMeta> = Batch::with_capacity(2);
        assert!(b.push(PacketMeta::default(), b"one").is_ok());
        assert!(b
            .push(
                PacketMeta {
                    peer: 7,
                    ..Default::default()
                },
                b"two"
            )
            .is_ok());
        assert_eq!(
            b.push(PacketMeta::default(), b"three"),
            Err(PushError::Full)
        );
        assert_eq!(b.len(), 2);
        assert_eq!(b.get(1).unwrap().bytes(), b"two");
        assert_eq!(b.get(1).unwrap().meta.peer, 7);
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn oversized_payload_is_refused() {
        let mut b: Batch<FrameMeta> = Batch::with_capacity(1);
        let big = vec![0u8; MAX_ITEM_BYTES + 1];
        assert_eq!(b.push(FrameMeta::default(), &big), Err(PushError::TooLarge));
        assert!(b.is_empty());
    }

    #[test]
    fn pcm_quantum_sizes() {
        assert_eq!(samples_per_quantum(48_000, 20_000_000), 960);
        assert_eq!(samples_per_quantum(44_100, 20_000_000), 882);
        assert_eq!(samples_per_quantum(8_000, 10_000_000), 80);
    }
}
