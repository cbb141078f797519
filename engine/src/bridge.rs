//! Rings between domains and threads.
//!
//! - Domain bridges: the compiler turns a link between the clocked and packet
//!   domains into a `tx` stage in the producer's domain and an `rx` stage in
//!   the consumer's, joined by an `rtrb` SPSC ring of items.
//! - I/O bridges: [`to_io`] and [`from_io`] join a real-time stage to a
//!   control or I/O thread (sockets, files). The real-time side only pushes,
//!   pops and unparks a thread (a futex wake): no lock, no allocation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use std::mem::MaybeUninit;

use crate::port::{Batch, FrameMeta, PacketMeta, PortType, Slot, MAX_ITEM_BYTES};
use crate::stage::{Counter, Cx, Flow, Io, Processor};

/// Wakes one thread that waits for items: a domain's thread, or an I/O thread.
/// Waking sets a flag and unparks the thread (no lock, no allocation).
#[derive(Debug, Default)]
pub struct DomainWaker {
    thread: OnceLock<Thread>,
    pending: AtomicBool,
}

impl DomainWaker {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Makes the calling thread the one [`DomainWaker::wake`] unparks. The
    /// first caller wins.
    pub fn register_current(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Whether the calling thread is the registered one.
    pub fn is_current(&self) -> bool {
        self.thread
            .get()
            .is_some_and(|t| t.id() == std::thread::current().id())
    }

    /// Marks work pending and unparks the registered thread.
    #[inline]
    pub fn wake(&self) {
        self.pending.store(true, Ordering::Release);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// Waits until woken or `timeout` passes. Returns whether it was woken.
    pub fn wait(&self, timeout: Duration) -> bool {
        if self.pending.swap(false, Ordering::Acquire) {
            return true;
        }
        std::thread::park_timeout(timeout);
        self.pending.swap(false, Ordering::Acquire)
    }
}

/// Item metadata types that travel in batches, with their port accessors.
pub trait Meta: Default + Clone + Copy + Send + 'static {
    fn input<'a>(io: &'a Io<'_>, i: usize) -> Option<&'a Batch<Self>>;
    fn output<'a>(io: &'a mut Io<'_>, i: usize) -> Option<&'a mut Batch<Self>>;
}

impl Meta for FrameMeta {
    fn input<'a>(io: &'a Io<'_>, i: usize) -> Option<&'a Batch<Self>> {
        io.frames_in(i)
    }
    fn output<'a>(io: &'a mut Io<'_>, i: usize) -> Option<&'a mut Batch<Self>> {
        io.frames_out(i)
    }
}

impl Meta for PacketMeta {
    fn input<'a>(io: &'a Io<'_>, i: usize) -> Option<&'a Batch<Self>> {
        io.packets_in(i)
    }
    fn output<'a>(io: &'a mut Io<'_>, i: usize) -> Option<&'a mut Batch<Self>> {
        io.packets_out(i)
    }
}

/// What a ring holds: an item's metadata and its payload. Only the payload's
/// bytes are ever written or read, so passing an item through a ring costs
/// its length, not the [`MAX_ITEM_BYTES`] a whole [`Slot`] copy would (a
/// relay's forwarded voice packet is ~100 bytes of 1500).
struct RingItem<M> {
    meta: M,
    len: u16,
    data: [MaybeUninit<u8>; MAX_ITEM_BYTES],
}

impl<M: Meta> RingItem<M> {
    /// Writes an item into an unwritten ring slot: `bytes` beyond
    /// [`MAX_ITEM_BYTES`] are cut (callers check the length first).
    #[inline]
    fn write(dst: &mut MaybeUninit<RingItem<M>>, meta: M, bytes: &[u8]) {
        let n = bytes.len().min(MAX_ITEM_BYTES);
        let p = dst.as_mut_ptr();
        // SAFETY: `p` is valid for writing one `RingItem`. Each field is
        // written through a raw pointer, so no reference to unwritten memory
        // is made; `data` takes `n <= MAX_ITEM_BYTES` bytes from a slice
        // that cannot overlap the ring.
        unsafe {
            std::ptr::addr_of_mut!((*p).meta).write(meta);
            std::ptr::addr_of_mut!((*p).len).write(n as u16);
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                std::ptr::addr_of_mut!((*p).data).cast::<u8>(),
                n,
            );
        }
    }

    /// The payload.
    #[inline]
    fn bytes(&self) -> &[u8] {
        // SAFETY: a `RingItem` exists only through `write`, which
        // initialised the first `len` bytes of `data` (`len` is at most
        // MAX_ITEM_BYTES).
        unsafe { std::slice::from_raw_parts(self.data.as_ptr().cast::<u8>(), self.len as usize) }
    }

    /// As a [`Slot`] (a copy: for control paths).
    fn to_slot(&self) -> Slot<M> {
        let mut s = Slot::<M>::default();
        s.meta = self.meta;
        s.set_bytes(self.bytes());
        s
    }
}

/// The real-time end that pushes into a ring.
pub struct RtSender<M> {
    prod: rtrb::Producer<RingItem<M>>,
    waker: Arc<DomainWaker>,
    dropped: Counter,
}

impl<M: Meta> RtSender<M> {
    /// Pushes a copy of `slot` (its used bytes). On a full ring the item is
    /// dropped and counted.
    #[inline]
    pub fn send(&mut self, slot: &Slot<M>) -> bool {
        match self.prod.write_chunk_uninit(1) {
            Ok(mut chunk) => {
                let (a, _) = chunk.as_mut_slices();
                RingItem::write(&mut a[0], slot.meta, slot.bytes());
                // SAFETY: the one slot of the chunk was just initialised.
                unsafe { chunk.commit_all() };
                true
            }
            Err(_) => {
                self.dropped.inc();
                false
            }
        }
    }

    /// Pushes every item of `batch`, then wakes the consumer once.
    pub fn send_batch(&mut self, batch: &Batch<M>) {
        if batch.is_empty() {
            return;
        }
        for s in batch.iter() {
            self.send(s);
        }
        self.waker.wake();
    }

    /// Items dropped because the ring was full.
    pub fn dropped(&self) -> &Counter {
        &self.dropped
    }
}

/// The real-time end that pops from a ring.
pub struct RtReceiver<M> {
    cons: rtrb::Consumer<RingItem<M>>,
}

impl<M: Meta> RtReceiver<M> {
    /// Moves queued items into `out` until it is full or the ring is empty.
    #[inline]
    pub fn drain_into(&mut self, out: &mut Batch<M>) -> usize {
        let n = self.cons.slots().min(out.capacity() - out.len());
        // Read in place: only each item's used bytes are copied, not the
        // whole slot (popping would move all MAX_ITEM_BYTES of it out).
        let Ok(chunk) = self.cons.read_chunk(n) else {
            return 0;
        };
        let (a, b) = chunk.as_slices();
        for item in a.iter().chain(b) {
            let _ = out.push(item.meta, item.bytes());
        }
        // Committing drops plain-data slots in place: no allocation.
        chunk.commit_all();
        n
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.cons.slots()
    }

    pub fn is_empty(&self) -> bool {
        self.cons.is_empty()
    }
}

/// The control or I/O end that pops items a real-time stage sent.
pub struct IoReceiver<M> {
    cons: rtrb::Consumer<RingItem<M>>,
    waker: Arc<DomainWaker>,
}

impl<M: Meta> IoReceiver<M> {
    /// Makes the calling thread the one that sends wake up.
    pub fn register_current_thread(&self) {
        self.waker.register_current();
    }

    /// The next item, copied out as a [`Slot`].
    pub fn try_recv(&mut self) -> Option<Slot<M>> {
        let chunk = self.cons.read_chunk(1).ok()?;
        let (a, _) = chunk.as_slices();
        let slot = a[0].to_slot();
        chunk.commit_all();
        Some(slot)
    }

    /// Hands every queued item's metadata and payload to `f` in place, then
    /// frees their slots; returns how many. Cheaper than `try_recv` in a
    /// loop: nothing is moved out of the ring, `f` reads what it needs.
    pub fn drain_with(&mut self, mut f: impl FnMut(M, &[u8])) -> usize {
        let n = self.cons.slots();
        let Ok(chunk) = self.cons.read_chunk(n) else {
            return 0;
        };
        let (a, b) = chunk.as_slices();
        for item in a.iter().chain(b) {
            f(item.meta, item.bytes());
        }
        chunk.commit_all();
        n
    }

    /// Waits up to `timeout` for an item (call `register_current_thread` first).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Slot<M>> {
        if let Some(s) = self.try_recv() {
            return Some(s);
        }
        self.waker.wait(timeout);
        self.try_recv()
    }

    /// Whether the real-time end is gone.
    pub fn is_abandoned(&self) -> bool {
        self.cons.is_abandoned()
    }

    /// Items waiting to be taken.
    pub fn len(&self) -> usize {
        self.cons.slots()
    }

    pub fn is_empty(&self) -> bool {
        self.cons.is_empty()
    }
}

/// The control or I/O end that pushes items to a real-time stage.
pub struct IoSender<M> {
    prod: rtrb::Producer<RingItem<M>>,
    waker: Arc<DomainWaker>,
}

/// The ring toward the real-time side is full; the item was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring full")]
pub struct RingFull;

impl<M: Meta> IoSender<M> {
    /// Queues one item and wakes the domain that reads it.
    pub fn send(&mut self, meta: M, bytes: &[u8]) -> Result<(), RingFull> {
        if bytes.len() > MAX_ITEM_BYTES {
            return Err(RingFull);
        }
        let mut chunk = self.prod.write_chunk_uninit(1).map_err(|_| RingFull)?;
        let (a, _) = chunk.as_mut_slices();
        RingItem::write(&mut a[0], meta, bytes);
        // SAFETY: the one slot of the chunk was just written.
        unsafe { chunk.commit_all() };
        self.waker.wake();
        Ok(())
    }

    /// Whether the real-time end is gone.
    pub fn is_abandoned(&self) -> bool {
        self.prod.is_abandoned()
    }
}

/// A ring from a real-time stage to an I/O thread.
pub fn to_io<M: Meta>(capacity: usize, dropped: Counter) -> (RtSender<M>, IoReceiver<M>) {
    let (prod, cons) = rtrb::RingBuffer::new(capacity);
    let waker = DomainWaker::new();
    (
        RtSender {
            prod,
            waker: waker.clone(),
            dropped,
        },
        IoReceiver { cons, waker },
    )
}

/// A ring from an I/O thread to a real-time stage in the domain `waker` wakes.
pub fn from_io<M: Meta>(capacity: usize, waker: Arc<DomainWaker>) -> (IoSender<M>, RtReceiver<M>) {
    let (prod, cons) = rtrb::RingBuffer::new(capacity);
    (IoSender { prod, waker }, RtReceiver { cons })
}

struct BridgeTx<M> {
    tx: RtSender<M>,
}

impl<M: Meta> Processor for BridgeTx<M> {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(b) = M::input(io, 0) {
            self.tx.send_batch(b);
        }
        Flow::Continue
    }
}

struct BridgeRx<M> {
    rx: RtReceiver<M>,
}

impl<M: Meta> Processor for BridgeRx<M> {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(out) = M::output(io, 0) {
            self.rx.drain_into(out);
        }
        Flow::Continue
    }
}

pub(crate) struct BridgeEnd {
    pub processor: Box<dyn Processor>,
    pub counters: Vec<(String, Counter)>,
}

/// The two stages of a domain bridge for items of type `ty`.
pub(crate) fn bridge_pair(
    ty: PortType,
    capacity: usize,
    _batch: usize,
    waker: Arc<DomainWaker>,
) -> (BridgeEnd, BridgeEnd) {
    fn pair<M: Meta>(capacity: usize, waker: Arc<DomainWaker>) -> (BridgeEnd, BridgeEnd) {
        let dropped = Counter::default();
        let (prod, cons) = rtrb::RingBuffer::<RingItem<M>>::new(capacity);
        let tx = RtSender {
            prod,
            waker,
            dropped: dropped.clone(),
        };
        (
            BridgeEnd {
                processor: Box::new(BridgeTx { tx }),
                counters: vec![("ring_full_drops".into(), dropped)],
            },
            BridgeEnd {
                processor: Box::new(BridgeRx {
                    rx: RtReceiver { cons },
                }),
                counters: Vec::new(),
            },
        )
    }
    match ty {
        PortType::Frame => pair::<FrameMeta>(capacity, waker),
        // PCM never bridges (the compiler refuses it); packets are the rest.
        _ => pair::<PacketMeta>(capacity, waker),
    }
}

/// The write end of a one-cycle delay (a `delay = 1` link): runs after the
/// link's producer and queues this cycle's items.
struct DelayIn<M> {
    tx: RtSender<M>,
}

impl<M: Meta> Processor for DelayIn<M> {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(b) = M::input(io, 0) {
            for s in b.iter() {
                self.tx.send(s);
            }
        }
        Flow::Continue
    }
}

/// The read end of a one-cycle delay: runs first in its domain's cycle, so
/// what it hands on is what the write end queued in the cycle before.
struct DelayOut<M> {
    rx: RtReceiver<M>,
}

impl<M: Meta> Processor for DelayOut<M> {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        if let Some(out) = M::output(io, 0) {
            self.rx.drain_into(out);
        }
        Flow::Continue
    }
}

/// PCM variant of [`DelayIn`]: queues the quantum's samples.
struct PcmDelayIn {
    prod: rtrb::Producer<f32>,
    dropped: Counter,
}

impl Processor for PcmDelayIn {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let x = io.pcm_in(0);
        match self.prod.write_chunk_uninit(x.len()) {
            Ok(chunk) => {
                chunk.fill_from_iter(x.iter().copied());
            }
            Err(_) => self.dropped.inc(),
        }
        Flow::Continue
    }
}

/// PCM variant of [`DelayOut`]: hands on one queued quantum, or silence in
/// the first cycle.
struct PcmDelayOut {
    cons: rtrb::Consumer<f32>,
}

impl Processor for PcmDelayOut {
    fn process(&mut self, io: &mut Io<'_>, _cx: &Cx) -> Flow {
        let out = io.pcm_out(0);
        if let Ok(chunk) = self.cons.read_chunk(out.len()) {
            let (a, b) = chunk.as_slices();
            out[..a.len()].copy_from_slice(a);
            out[a.len()..].copy_from_slice(b);
            chunk.commit_all();
        }
        Flow::Continue
    }
}

/// The two stages of a one-cycle delay in one domain, for items of type
/// `ty`: `(write end, read end)`. The ring holds two cycles' worth, so the
/// write end never finds it full while the read end keeps up.
pub(crate) fn delay_pair(
    ty: PortType,
    quantum_samples: usize,
    batch: usize,
) -> (BridgeEnd, BridgeEnd) {
    fn pair<M: Meta>(capacity: usize) -> (BridgeEnd, BridgeEnd) {
        let dropped = Counter::default();
        let (prod, cons) = rtrb::RingBuffer::<RingItem<M>>::new(capacity);
        let tx = RtSender {
            prod,
            // Nothing waits on a delay: its reader runs every cycle anyway.
            waker: DomainWaker::new(),
            dropped: dropped.clone(),
        };
        (
            BridgeEnd {
                processor: Box::new(DelayIn { tx }),
                counters: vec![("ring_full_drops".into(), dropped)],
            },
            BridgeEnd {
                processor: Box::new(DelayOut {
                    rx: RtReceiver { cons },
                }),
                counters: Vec::new(),
            },
        )
    }
    match ty {
        PortType::Pcm { .. } => {
            let dropped = Counter::default();
            let (prod, cons) = rtrb::RingBuffer::<f32>::new(quantum_samples.max(1) * 2);
            (
                BridgeEnd {
                    processor: Box::new(PcmDelayIn {
                        prod,
                        dropped: dropped.clone(),
                    }),
                    counters: vec![("ring_full_drops".into(), dropped)],
                },
                BridgeEnd {
                    processor: Box::new(PcmDelayOut { cons }),
                    counters: Vec::new(),
                },
            )
        }
        PortType::Frame => pair::<FrameMeta>(batch.max(1) * 2),
        PortType::Packet => pair::<PacketMeta>(batch.max(1) * 2),
    }
}
