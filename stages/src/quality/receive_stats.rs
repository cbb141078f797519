//! What a receiver measures about each sender it hears, for the feedback
//! report (`wzp_proto::feedback`, docs/WIRE.md §1.5), and the sender's side
//! of the RTT measurement.
//!
//! Sans-IO: fed `(now, header, length)` for every packet that arrives, asked
//! for a report with `now`; no clock, socket or thread of its own. Every
//! method is allocation-free after construction, so the structs can live in a
//! real-time stage.
//!
//! - [`ReceiveStats`]: one sender. Loss is counted by `seq` (audio packets;
//!   FEC repair packets, which carry their block's last seq, count toward
//!   the receive rate only): a packet's fate is *settled* once the newest seq
//!   is `reorder_window` past it; a packet that arrives after that is `late`
//!   (it stays counted lost: it came too late to be of use). Runs of
//!   consecutive settled losses feed the burst histogram. Jitter follows
//!   RFC 3550 (`J += (|D| - J) / 16` on the transit-time differences of
//!   consecutive arrivals). Queueing delay is the interval's least
//!   transit, measured to the end of each packet's media, above the least
//!   of the last 10-20 s:
//!   - the least of the interval, not the mean: what stands in front of
//!     every packet is a queue, delay that varies from packet to packet is
//!     jitter (80 +- 30 ms per datagram read 30 ms of mean, over the
//!     controller's congestion threshold; its least reads 0-10 ms);
//!   - to the end of the packet's media (where the next seq's begins): a
//!     packet leaves when its media ends, so measured to its timestamp a
//!     sender that moved to 120 ms packets read as 100 ms of queue;
//!   - above the least of the last 10-20 s, not of all time: sender and
//!     receiver clocks need not agree, and their drift moves the floor (an
//!     all-time least made a sender whose clock runs 500 ppm slow read as a
//!     queue of 25 ms within a minute and 300 ms in ten; this floor trails
//!     it by 10 ms at most). A queue that stands longer than that becomes
//!     the floor: the sender acts on one within seconds (docs/PROFILES.md).
//!
//!   Jitter, queueing delay and the RTT echo come from audio packets only:
//!   their timestamps are media time; a sender that restarts its `seq`
//!   (a jump of more than 16384) restarts them too, since its media clock
//!   restarted from another base. Feedback reports (codec `0x40`) count
//!   their own `seq` (docs/WIRE.md §1.5): they only mark the sender as heard.
//! - [`ReceiverFeedback`]: a fixed table of [`ReceiveStats`], one per sender,
//!   that writes a whole report.
//! - [`SentBytes`]: the sender counts what it sent, to compare a report's
//!   receive rate with what left over the same interval.
//! - [`SendClock`]: the sender remembers when it sent each recent timestamp,
//!   so an echoed one gives the RTT: `now - sent(echo_ts) - echo_hold`.

use wzp_proto::feedback::{
    burst_bin, encode_feedback_flags, FeedbackEntry, FeedbackError, ReceiverInfo, BURST_BINS,
    FEEDBACK_FLAG_EARLY, MAX_FEEDBACK_ENTRIES, RECEIVER_ENTRY_ID,
};
use wzp_proto::MediaHeader;

use crate::delay_floor::DelayFloor;

/// Default packets past a seq before its loss is settled (160 ms at 20 ms
/// frames): reordering shallower than this is not loss.
pub const DEFAULT_REORDER_WINDOW: u32 = 8;

/// A seq jump (either way) larger than this restarts the sender's sequence
/// tracking instead of counting thousands of losses (a sender restart).
const RESTART_GAP: u32 = 1 << 14;

/// Each of the two windows the transit floor is the least of: a queue is
/// read as one for 10-20 s; a 1000 ppm clock drift adds at most 20 ms.
const TRANSIT_FLOOR_WINDOW_NS: u64 = 10_000_000_000;

/// Seqs tracked individually behind the newest one.
const BITMAP_BITS: u32 = 64;

/// Longest media a packet carries (48 kHz ticks): 120 ms, Opus's longest
/// frame and three 40 ms Codec2 frames. A longer timestamp step between
/// packets is a pause (DTX), not one packet's duration.
const MAX_PACKET_TICKS: i64 = 120 * 48;

/// Media time of an extended 48 kHz timestamp, in nanoseconds.
fn media_ns(ts_ext: i64) -> i64 {
    ((ts_ext as i128 * 1_000_000_000) / 48_000) as i64
}

/// Receive statistics for one sender.
#[derive(Clone, Debug)]
pub struct ReceiveStats {
    sender_id: u32,
    reorder_window: u32,
    started: bool,
    /// Newest seq seen.
    highest: u32,
    /// Bit `i` set: seq `highest - i` arrived.
    seen: u64,
    /// Every seq before this one is settled.
    settle_next: u32,
    /// Current run of settled losses.
    run: u32,
    /// Some seq has been settled since tracking (re)started.
    settled_any: bool,
    // Interval counters.
    expected: u32,
    received: u32,
    late: u32,
    bursts: [u32; BURST_BINS],
    max_burst: u32,
    bytes: u64,
    interval_start_ns: u64,
    // Timing (audio packets only).
    have_transit: bool,
    last_transit: i64,
    jitter_ns: f64,
    /// The least end-of-media transit of the last 10-20 s
    /// (`crate::delay_floor`).
    transit_floor: DelayFloor,
    /// The least end-of-media transit above the floor in the interval
    /// (`i64::MAX`: none measured).
    queue_least_ns: i64,
    /// The queueing delay last reported from a measurement: an interval
    /// with no packet pair to measure (heavy loss of long packets) repeats it.
    queue_last_ns: u64,
    /// The last audio packet that arrived in order: seq, extended
    /// timestamp, arrival. Its media ends where the next seq's begins.
    have_prev: bool,
    prev_seq: u32,
    prev_ts_ext: i64,
    prev_arrival_ns: u64,
    /// Media per packet (ticks) the last two consecutive seqs showed; 0
    /// before any.
    packet_ticks: i64,
    last_ts: u32,
    last_ts_ext: i64,
    have_echo: bool,
    echo_ts_ext: i64,
    echo_ts: u32,
    echo_arrival_ns: u64,
    /// When the last packet of any kind arrived.
    last_heard_ns: u64,
    /// Restarts of sequence tracking (sender restarted its counter).
    pub restarts: u64,
    /// When the last report (early or not) that showed loss from this
    /// sender was written (tracking's start before the first).
    loss_reported_ns: u64,
}

impl ReceiveStats {
    /// Statistics for `sender_id`, settling losses `reorder_window` packets
    /// behind the newest (at least 1, at most 63).
    pub fn new(sender_id: u32, reorder_window: u32, now_ns: u64) -> ReceiveStats {
        ReceiveStats {
            sender_id,
            reorder_window: reorder_window.clamp(1, BITMAP_BITS - 1),
            started: false,
            highest: 0,
            seen: 0,
            settle_next: 0,
            run: 0,
            settled_any: false,
            expected: 0,
            received: 0,
            late: 0,
            bursts: [0; BURST_BINS],
            max_burst: 0,
            bytes: 0,
            interval_start_ns: now_ns,
            have_transit: false,
            last_transit: 0,
            jitter_ns: 0.0,
            transit_floor: DelayFloor::new(TRANSIT_FLOOR_WINDOW_NS),
            queue_least_ns: i64::MAX,
            queue_last_ns: 0,
            have_prev: false,
            prev_seq: 0,
            prev_ts_ext: 0,
            prev_arrival_ns: 0,
            packet_ticks: 0,
            last_ts: 0,
            last_ts_ext: 0,
            have_echo: false,
            echo_ts_ext: i64::MIN,
            echo_ts: 0,
            echo_arrival_ns: 0,
            last_heard_ns: now_ns,
            restarts: 0,
            loss_reported_ns: now_ns,
        }
    }

    /// The sender these statistics describe.
    pub fn sender_id(&self) -> u32 {
        self.sender_id
    }

    /// When a packet from this sender last arrived.
    pub fn last_heard_ns(&self) -> u64 {
        self.last_heard_ns
    }

    fn restart_seq(&mut self, seq: u32) {
        self.started = true;
        self.highest = seq;
        self.seen = 1;
        self.settle_next = seq;
        self.run = 0;
        self.settled_any = false;
        // A sender that restarted its counter restarted its media clock
        // too, from any base: timing against the old one is meaningless
        // (a base 100 s back read as 6.5 s of queue for the floor's 10-20 s).
        self.have_prev = false;
        self.have_transit = false;
        self.have_echo = false;
        self.echo_ts_ext = i64::MIN;
        self.transit_floor.reset();
        self.queue_last_ns = 0;
    }

    fn settle(&mut self, arrived: bool) {
        self.settled_any = true;
        self.expected += 1;
        if arrived {
            self.received += 1;
            if self.run > 0 {
                self.bursts[burst_bin(self.run)] += 1;
                self.run = 0;
            }
        } else {
            self.run += 1;
            self.max_burst = self.max_burst.max(self.run);
        }
    }

    /// Settles every seq at least `reorder_window` behind the newest.
    fn settle_behind(&mut self) {
        loop {
            let age = self.highest.wrapping_sub(self.settle_next);
            if age < self.reorder_window || age > RESTART_GAP {
                break;
            }
            if age >= BITMAP_BITS {
                // Fell off the bitmap unseen (a gap longer than it): lost,
                // in bulk, up to where the bitmap starts.
                let n = age - (BITMAP_BITS - 1);
                self.settled_any = true;
                self.expected += n;
                self.run += n;
                self.max_burst = self.max_burst.max(self.run);
                self.settle_next = self.settle_next.wrapping_add(n);
                continue;
            }
            let arrived = self.seen & (1u64 << age) != 0;
            self.settle(arrived);
            self.settle_next = self.settle_next.wrapping_add(1);
        }
    }

    /// One packet from this sender arrived at `now_ns` with `len` bytes.
    /// A feedback report (codec `0x40`) only shows the sender is alive: its
    /// `seq` counts reports, not this sender's packets (docs/WIRE.md §1.5).
    pub fn on_packet(&mut self, now_ns: u64, header: &MediaHeader, len: usize) {
        self.last_heard_ns = now_ns;
        if header.is_feedback() {
            return;
        }
        self.bytes += len as u64;
        if header.is_repair() {
            // A RaptorQ repair packet carries the seq of its block's last
            // source packet: counted by seq, it would hide that packet's
            // loss (at 40 % loss with 5-frame blocks the path read 33 %).
            // Its bytes count toward the receive rate.
            return;
        }
        let seq = header.seq;
        if !self.started {
            self.restart_seq(seq);
        } else {
            let ahead = seq.wrapping_sub(self.highest);
            let behind = self.highest.wrapping_sub(seq);
            if ahead == 0 {
                return; // duplicate of the newest
            } else if ahead <= RESTART_GAP {
                // Settle, from the bitmap as it is, what the shift would
                // push off it.
                let new_limit = seq.wrapping_sub(BITMAP_BITS - 1);
                while self.highest.wrapping_sub(self.settle_next) < BITMAP_BITS
                    && new_limit.wrapping_sub(self.settle_next).wrapping_sub(1) < RESTART_GAP
                {
                    let age = self.highest.wrapping_sub(self.settle_next);
                    self.settle(self.seen & (1u64 << age) != 0);
                    self.settle_next = self.settle_next.wrapping_add(1);
                }
                self.seen = if ahead >= BITMAP_BITS {
                    0
                } else {
                    self.seen << ahead
                };
                self.seen |= 1;
                self.highest = seq;
                self.settle_behind();
            } else if behind <= RESTART_GAP {
                let mut settled = seq.wrapping_sub(self.settle_next) > RESTART_GAP;
                if settled && !self.settled_any && behind < BITMAP_BITS {
                    // Before anything was settled, an earlier packet than
                    // the first one seen just moves the start back.
                    self.settle_next = seq;
                    settled = false;
                }
                if behind < BITMAP_BITS {
                    let bit = 1u64 << behind;
                    if self.seen & bit != 0 {
                        return; // duplicate
                    }
                    self.seen |= bit;
                }
                if settled {
                    self.late += 1;
                    return;
                }
            } else {
                self.restarts += 1;
                self.restart_seq(seq);
            }
        }
        self.on_media_time(now_ns, seq, header.timestamp);
    }

    fn on_media_time(&mut self, now_ns: u64, seq: u32, ts: u32) {
        let ts_ext = if self.have_transit || self.have_echo {
            self.last_ts_ext + ts.wrapping_sub(self.last_ts) as i32 as i64
        } else {
            ts as i64
        };
        if !(self.have_transit || self.have_echo) || ts_ext > self.last_ts_ext {
            self.last_ts = ts;
            self.last_ts_ext = ts_ext;
        }
        let transit = now_ns as i64 - media_ns(ts_ext);
        if self.have_transit {
            let d = (transit - self.last_transit).unsigned_abs() as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.have_transit = true;
        self.last_transit = transit;
        self.on_queue_sample(now_ns, seq, ts_ext);
        if !self.have_echo || ts_ext >= self.echo_ts_ext {
            self.have_echo = true;
            self.echo_ts_ext = ts_ext;
            self.echo_ts = ts;
            self.echo_arrival_ns = now_ns;
        }
    }

    /// The queueing delay's sample: the transit of a packet to the *end*
    /// of its media, taken when the packet after it arrives (the end is
    /// where that one's media begins). Measured to the start, a sender that
    /// moved from 20 ms to 120 ms packets read as 100 ms of queue until the
    /// floor forgot the short packets (10-20 s), and the first loss in that
    /// time as congestion. Over a gap of lost seqs the packet's length is
    /// known only when the gap spans whole packets of the length the last
    /// consecutive pair showed: a length that changed inside the gap would
    /// put the end too late, the sample under the floor, and a false queue
    /// over everything after it.
    fn on_queue_sample(&mut self, now_ns: u64, seq: u32, ts_ext: i64) {
        let ahead = seq.wrapping_sub(self.prev_seq);
        if self.have_prev && ahead == 0 {
            return;
        }
        if self.have_prev && ahead <= self.reorder_window {
            let span = ts_ext - self.prev_ts_ext;
            let ticks = if ahead == 1 {
                span
            } else if self.packet_ticks > 0 && span == self.packet_ticks * i64::from(ahead) {
                self.packet_ticks
            } else {
                0
            };
            if ticks > 0 && ticks <= MAX_PACKET_TICKS {
                if ahead == 1 {
                    self.packet_ticks = ticks;
                }
                let end = media_ns(self.prev_ts_ext + ticks);
                let transit = self.prev_arrival_ns as i64 - end;
                let floor = self.transit_floor.observe(now_ns, transit);
                self.queue_least_ns = self.queue_least_ns.min(transit - floor);
            }
        }
        // A packet that came after a newer one (reordered) is not paired:
        // the next in order pairs with the newest.
        if !self.have_prev || ahead <= RESTART_GAP {
            self.have_prev = true;
            self.prev_seq = seq;
            self.prev_ts_ext = ts_ext;
            self.prev_arrival_ns = now_ns;
        }
    }

    /// Losses settled in the current interval.
    pub fn lost_in_interval(&self) -> u32 {
        self.expected.saturating_sub(self.received)
    }

    /// Loss has been settled in this interval after at least `quiet_ns`
    /// with none reported: the onset of loss on a path that was clean,
    /// which the sender should hear about now rather than at the end of the
    /// interval.
    pub fn loss_onset(&self, now_ns: u64, quiet_ns: u64) -> bool {
        self.lost_in_interval() > 0 && now_ns.saturating_sub(self.loss_reported_ns) >= quiet_ns
    }

    /// The entry for a report sent at `now_ns`; starts a new interval.
    pub fn take_report(&mut self, now_ns: u64) -> FeedbackEntry {
        let entry = self.entry(now_ns);
        self.expected = 0;
        self.received = 0;
        self.late = 0;
        self.bursts = [0; BURST_BINS];
        self.max_burst = self.run;
        self.bytes = 0;
        self.queue_least_ns = i64::MAX;
        self.interval_start_ns = now_ns;
        entry
    }

    /// The entry for the interval so far, at `now_ns`, leaving the interval
    /// running (an early report's: its counts come again in the interval's
    /// own report).
    pub fn entry(&mut self, now_ns: u64) -> FeedbackEntry {
        if self.lost_in_interval() > 0 {
            self.loss_reported_ns = now_ns;
        }
        let sat16 = |v: u64| v.min(u64::from(u16::MAX)) as u16;
        let sat8 = |v: u32| v.min(255) as u8;
        let interval_ns = now_ns.saturating_sub(self.interval_start_ns);
        let mut bursts = [0u8; BURST_BINS];
        for (b, &n) in bursts.iter_mut().zip(&self.bursts) {
            *b = sat8(n);
        }
        // Keep the counts consistent when `expected` saturates.
        let expected = sat16(u64::from(self.expected));
        let received = sat16(u64::from(self.received)).min(expected);
        if self.queue_least_ns != i64::MAX {
            self.queue_last_ns = self.queue_least_ns.max(0) as u64;
        }
        let queue_ns = self.queue_last_ns;
        FeedbackEntry {
            sender_id: self.sender_id,
            expected,
            received,
            late: sat16(u64::from(self.late)),
            bursts,
            max_burst: sat8(self.max_burst.max(self.run)),
            jitter_100us: sat16((self.jitter_ns / 100_000.0).round() as u64),
            queue_delay_100us: sat16(queue_ns / 100_000),
            recv_kbps: sat16(
                (self.bytes * 8 * 1_000_000)
                    .checked_div(interval_ns)
                    .unwrap_or(0),
            ),
            echo_ts: self.echo_ts,
            echo_hold_ms: if self.have_echo {
                sat16(now_ns.saturating_sub(self.echo_arrival_ns) / 1_000_000)
            } else {
                0
            },
        }
    }
}

/// Receive statistics for every sender heard, in a fixed table, and the
/// feedback report that describes them.
#[derive(Debug)]
pub struct ReceiverFeedback {
    slots: Box<[Option<ReceiveStats>]>,
    reorder_window: u32,
    forget_after_ns: u64,
    /// Senders dropped from a full table to make room.
    pub evicted: u64,
    /// What each report says about this receiver, in an entry of its own
    /// when there is room for one (a report of 32 senders has none).
    info: Option<ReceiverInfo>,
}

impl ReceiverFeedback {
    /// A table for up to `capacity` senders (at most 32, one report's worth);
    /// a sender silent for `forget_after_ns` leaves the report.
    pub fn new(capacity: usize, reorder_window: u32, forget_after_ns: u64) -> ReceiverFeedback {
        let capacity = capacity.clamp(1, MAX_FEEDBACK_ENTRIES);
        ReceiverFeedback {
            slots: vec![None; capacity].into_boxed_slice(),
            reorder_window,
            forget_after_ns,
            evicted: 0,
            info: None,
        }
    }

    /// Every report from now on says `info` about this receiver
    /// (`wzp_proto::feedback::ReceiverInfo`); `None`: nothing.
    pub fn set_info(&mut self, info: Option<ReceiverInfo>) {
        self.info = info;
    }

    /// One packet arrived (any sender, any codec). A feedback report takes
    /// no entry: a member that only reports is not a sender.
    pub fn on_packet(&mut self, now_ns: u64, header: &MediaHeader, len: usize) {
        if header.sender_id == RECEIVER_ENTRY_ID {
            // No sender's id: its entry would be read as this receiver's
            // own (`RECEIVER_ENTRY_ID`).
            return;
        }
        if header.is_feedback() {
            if let Some(s) = self
                .slots
                .iter_mut()
                .flatten()
                .find(|s| s.sender_id == header.sender_id)
            {
                s.on_packet(now_ns, header, len);
            }
            return;
        }
        let id = header.sender_id;
        let idx = match self
            .slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|s| s.sender_id == id))
        {
            Some(i) => i,
            None => {
                let free = self.slots.iter().position(Option::is_none);
                let i = free.unwrap_or_else(|| {
                    self.evicted += 1;
                    self.stalest()
                });
                self.slots[i] = Some(ReceiveStats::new(id, self.reorder_window, now_ns));
                i
            }
        };
        if let Some(s) = self.slots[idx].as_mut() {
            s.on_packet(now_ns, header, len);
        }
    }

    fn stalest(&self) -> usize {
        let mut best = 0;
        let mut oldest = u64::MAX;
        for (i, s) in self.slots.iter().enumerate() {
            if let Some(s) = s {
                if s.last_heard_ns < oldest {
                    oldest = s.last_heard_ns;
                    best = i;
                }
            }
        }
        best
    }

    /// Some sender's loss has just begun after `quiet_ns` without
    /// ([`ReceiveStats::loss_onset`]).
    pub fn loss_onset(&self, now_ns: u64, quiet_ns: u64) -> bool {
        self.slots
            .iter()
            .flatten()
            .any(|s| s.loss_onset(now_ns, quiet_ns))
    }

    /// The statistics for `sender_id`, if it is being tracked.
    pub fn stats(&self, sender_id: u32) -> Option<&ReceiveStats> {
        self.slots
            .iter()
            .flatten()
            .find(|s| s.sender_id == sender_id)
    }

    /// Writes the report for the interval ending at `now_ns` into `out`
    /// (the plaintext payload of a `0x40` packet) and starts the next one.
    /// Senders silent for `forget_after_ns` are dropped first.
    pub fn write_report(
        &mut self,
        now_ns: u64,
        interval_ms: u16,
        out: &mut [u8],
    ) -> Result<usize, FeedbackError> {
        self.write(now_ns, interval_ms, false, out)
    }

    /// Writes an early report ([`FEEDBACK_FLAG_EARLY`]) into `out`: every
    /// sender's interval so far, the intervals left running (their report
    /// counts the same packets again). `interval_ms` is how long the
    /// interval has run.
    pub fn write_early_report(
        &mut self,
        now_ns: u64,
        interval_ms: u16,
        out: &mut [u8],
    ) -> Result<usize, FeedbackError> {
        self.write(now_ns, interval_ms, true, out)
    }

    fn write(
        &mut self,
        now_ns: u64,
        interval_ms: u16,
        early: bool,
        out: &mut [u8],
    ) -> Result<usize, FeedbackError> {
        let mut entries = [FeedbackEntry::default(); MAX_FEEDBACK_ENTRIES];
        let mut n = 0;
        for slot in self.slots.iter_mut() {
            let stale = slot
                .as_ref()
                .is_some_and(|s| now_ns.saturating_sub(s.last_heard_ns) > self.forget_after_ns);
            if stale {
                *slot = None;
            }
            if let Some(s) = slot.as_mut() {
                entries[n] = if early {
                    s.entry(now_ns)
                } else {
                    s.take_report(now_ns)
                };
                n += 1;
            }
        }
        if let Some(info) = self.info.filter(|_| n < MAX_FEEDBACK_ENTRIES) {
            entries[n] = info.to_entry();
            n += 1;
        }
        let flags = if early { FEEDBACK_FLAG_EARLY } else { 0 };
        encode_feedback_flags(flags, interval_ms, &entries[..n], out)
    }
}

/// The sender's memory of when it sent recent timestamps, to turn an echoed
/// timestamp into a round-trip time.
#[derive(Clone, Debug)]
pub struct SendClock {
    ring: Box<[(u32, u64)]>,
    next: usize,
    len: usize,
}

impl SendClock {
    /// Remembers the last `capacity` sends (128 covers 2.5 s of 20 ms
    /// frames: a report interval plus any sane RTT).
    pub fn new(capacity: usize) -> SendClock {
        SendClock {
            ring: vec![(0, 0); capacity.max(1)].into_boxed_slice(),
            next: 0,
            len: 0,
        }
    }

    /// A packet with media timestamp `ts` left at `now_ns`.
    pub fn on_sent(&mut self, ts: u32, now_ns: u64) {
        self.ring[self.next] = (ts, now_ns);
        self.next = (self.next + 1) % self.ring.len();
        self.len = (self.len + 1).min(self.ring.len());
    }

    /// When the packet with media timestamp `ts` left, if remembered.
    pub fn sent_at(&self, ts: u32) -> Option<u64> {
        // Newest first: a timestamp repeated (after a wrap) matches the
        // recent send.
        (0..self.len)
            .map(|k| self.ring[(self.next + self.ring.len() - 1 - k) % self.ring.len()])
            .find(|&(t, _)| t == ts)
            .map(|(_, sent)| sent)
    }

    /// RTT from a report received at `now_ns` that echoes `echo_ts`, held
    /// `echo_hold_ms` at the receiver; `None` when the timestamp is no
    /// longer (or never was) remembered, or the result would be negative.
    pub fn rtt_ns(&self, echo_ts: u32, echo_hold_ms: u16, now_ns: u64) -> Option<u64> {
        self.sent_at(echo_ts).and_then(|sent| {
            now_ns
                .checked_sub(sent)?
                .checked_sub(u64::from(echo_hold_ms) * 1_000_000)
        })
    }
}

/// The sender's count of the bytes it sent, in 10 ms buckets, to read what
/// it sent over the interval a report's `recv_kbps` describes: the
/// receiver's rate compared with the encoder's real output, not with the
/// tier's nominal rate (variable-rate speech sends a quarter under it in
/// its quieter seconds, which read as a path that lost a quarter of the
/// bytes).
#[derive(Clone, Debug)]
pub struct SentBytes {
    buckets: Box<[u32]>,
    /// Absolute index (`now / BUCKET_NS`) of the newest bucket written.
    newest: u64,
    started: bool,
}

impl SentBytes {
    const BUCKET_NS: u64 = 10_000_000;

    /// Remembers `history_ns` of sends (whole buckets; at least one).
    pub fn new(history_ns: u64) -> SentBytes {
        let n = history_ns.div_ceil(Self::BUCKET_NS).max(1) as usize;
        SentBytes {
            buckets: vec![0; n].into_boxed_slice(),
            newest: 0,
            started: false,
        }
    }

    fn slot(&self, idx: u64) -> usize {
        (idx % self.buckets.len() as u64) as usize
    }

    /// `bytes` left at `now_ns` (times never go back: an earlier `now`
    /// counts in the newest bucket).
    pub fn on_sent(&mut self, bytes: usize, now_ns: u64) {
        let idx = now_ns / Self::BUCKET_NS;
        let n = self.buckets.len() as u64;
        if !self.started {
            self.started = true;
            self.newest = idx;
            self.buckets.fill(0);
        } else if idx > self.newest {
            // Clear the buckets skipped since the newest (all, after a
            // silence longer than the history).
            let from = self.newest + 1;
            for i in from..=idx.min(from + n - 1) {
                let s = self.slot(i);
                self.buckets[s] = 0;
            }
            self.newest = idx;
        }
        let s = self.slot(self.newest);
        self.buckets[s] = self.buckets[s].saturating_add(bytes.min(u32::MAX as usize) as u32);
    }

    /// Kbit/s sent from `from_ns` to `to_ns` (whole buckets), or `None`
    /// when that span is empty, not yet begun, or older than the history.
    pub fn kbps(&self, from_ns: u64, to_ns: u64) -> Option<f32> {
        let (a, b) = (from_ns / Self::BUCKET_NS, to_ns / Self::BUCKET_NS);
        let n = self.buckets.len() as u64;
        if !self.started || b <= a || a + n <= self.newest {
            return None;
        }
        let bytes: u64 = (a..b.min(self.newest + 1))
            .map(|i| u64::from(self.buckets[self.slot(i)]))
            .sum();
        let ms = (b - a) * (Self::BUCKET_NS / 1_000_000);
        Some((bytes * 8) as f32 / ms as f32)
    }
}
