//! When to hold a receiver's datagrams so several leave in one QUIC packet.
//!
//! quinn packs every DATAGRAM frame queued on a connection into as few
//! packets as fit, so datagrams handed to it together cost one UDP send
//! instead of one each. A relay can get that by holding a receiver's
//! datagrams for up to a window `W` and handing them over together. Holding
//! costs latency, so it only pays for a receiver that is expected to get at
//! least [`MIN_EXPECTED`] more datagrams within `W`: one in a busy room,
//! never one in a two-person call.
//!
//! [`Coalescer`] keeps, per receiver, a smoothed interval between its
//! datagrams and decides for each new one: send now, or hold until a due
//! time (the first held datagram's arrival + `W`). It holds no packets
//! itself; the egress pump does. Time is in nanoseconds of any monotonic
//! clock.

use std::collections::{HashMap, VecDeque};

/// Datagrams a receiver must be expected to get within the window for
/// holding to be worth its latency.
pub const MIN_EXPECTED: u64 = 2;

/// Weight of a new interval in the smoothed one (1/8).
const EWMA_SHIFT: u32 = 3;

#[derive(Debug, Clone, Copy)]
struct PeerRate {
    last_ns: u64,
    /// Smoothed interval between this receiver's datagrams.
    interval_ns: u64,
    /// Due time of what is held for it now, if anything.
    due_ns: Option<u64>,
}

/// What to do with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Hand it to the connection now.
    SendNow,
    /// Hold it; everything held for this receiver goes at `due_ns`.
    Hold,
}

/// The per-receiver hold policy (see the module docs).
#[derive(Debug)]
pub struct Coalescer {
    window_ns: u64,
    peers: HashMap<u32, PeerRate>,
    /// Receivers with held datagrams, by due time (due times only grow,
    /// since every hold lasts the same window).
    due: VecDeque<(u64, u32)>,
}

impl Coalescer {
    /// `window_ns` = 0 turns holding off.
    pub fn new(window_ns: u64) -> Self {
        Coalescer {
            window_ns,
            peers: HashMap::new(),
            due: VecDeque::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.window_ns > 0
    }

    /// A datagram for `peer` at `now_ns`.
    pub fn offer(&mut self, peer: u32, now_ns: u64) -> Decision {
        if self.window_ns == 0 {
            return Decision::SendNow;
        }
        let p = self.peers.entry(peer).or_insert(PeerRate {
            last_ns: now_ns,
            // Start slow: a new receiver is not held until its rate shows.
            interval_ns: self.window_ns,
            due_ns: None,
        });
        let gap = now_ns.saturating_sub(p.last_ns);
        p.last_ns = now_ns;
        // interval += (gap - interval) / 8, in integers.
        p.interval_ns = p.interval_ns - (p.interval_ns >> EWMA_SHIFT) + (gap >> EWMA_SHIFT);
        if p.due_ns.is_some() {
            return Decision::Hold;
        }
        let expected = self.window_ns / p.interval_ns.max(1);
        if expected < MIN_EXPECTED {
            return Decision::SendNow;
        }
        let due = now_ns + self.window_ns;
        p.due_ns = Some(due);
        self.due.push_back((due, peer));
        Decision::Hold
    }

    /// The next receiver whose held datagrams are due by `now_ns`; call
    /// until `None` and send what is held for each.
    pub fn pop_due(&mut self, now_ns: u64) -> Option<u32> {
        let &(due, peer) = self.due.front()?;
        if due > now_ns {
            return None;
        }
        self.due.pop_front();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.due_ns = None;
        }
        Some(peer)
    }

    /// When the earliest hold ends.
    pub fn next_due_ns(&self) -> Option<u64> {
        self.due.front().map(|&(d, _)| d)
    }

    /// Forgets a receiver that left (its held datagrams must be dropped).
    pub fn remove(&mut self, peer: u32) {
        self.peers.remove(&peer);
        self.due.retain(|&(_, p)| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Feeds `n` datagrams for `peer` every `every_ns`; returns how many
    /// were held.
    fn feed(c: &mut Coalescer, peer: u32, start: u64, every_ns: u64, n: u64) -> u64 {
        let mut held = 0;
        for i in 0..n {
            let now = start + i * every_ns;
            while c.pop_due(now).is_some() {}
            held += u64::from(c.offer(peer, now) == Decision::Hold);
        }
        held
    }

    #[test]
    fn a_two_person_call_is_never_held() {
        // One sender at 50 packets/s: 0.25 expected in a 5 ms window.
        let mut c = Coalescer::new(5 * MS);
        assert_eq!(feed(&mut c, 1, 0, 20 * MS, 500), 0);
        assert_eq!(c.next_due_ns(), None);
    }

    #[test]
    fn a_busy_receiver_is_held_and_released_on_time() {
        // Nine senders at 50 packets/s: a datagram every ~2.2 ms.
        let mut c = Coalescer::new(5 * MS);
        let held = feed(&mut c, 7, 0, 2_222_222, 450);
        assert!(held > 400, "held {held} of 450");
        // Whatever is held is due within one window of the last offer.
        let last = 449 * 2_222_222;
        let due = c.next_due_ns().expect("something held");
        assert!(due > last && due <= last + 5 * MS, "due {due}");
        assert_eq!(c.pop_due(due - 1), None);
        assert_eq!(c.pop_due(due), Some(7));
        assert_eq!(c.pop_due(due), None);
        // Right after a release the next datagram starts a new hold.
        assert_eq!(c.offer(7, due + 1), Decision::Hold);
    }

    #[test]
    fn the_rate_is_per_receiver_and_off_means_off() {
        let mut c = Coalescer::new(5 * MS);
        feed(&mut c, 1, 0, MS, 200);
        assert_eq!(c.offer(2, 200 * MS), Decision::SendNow, "a new receiver");
        c.remove(1);
        assert_eq!(c.next_due_ns(), None, "a removed receiver's hold is gone");
        let mut off = Coalescer::new(0);
        assert!(!off.enabled());
        assert_eq!(feed(&mut off, 1, 0, 100_000, 1000), 0);
    }

    #[test]
    fn a_receiver_that_slows_down_stops_being_held() {
        let mut c = Coalescer::new(5 * MS);
        assert!(feed(&mut c, 3, 0, MS, 300) > 250);
        // Its room empties to one talker: 50 packets/s.
        let start = 400 * MS;
        let mut held_late = 0;
        for i in 0..200 {
            let now = start + i * 20 * MS;
            while c.pop_due(now).is_some() {}
            if i >= 50 {
                held_late += u64::from(c.offer(3, now) == Decision::Hold);
            } else {
                c.offer(3, now);
            }
        }
        assert_eq!(held_late, 0);
    }
}
