//! The floor under a stream's one-way transit times: the least `arrival -
//! media time` seen recently, which jitter and queueing delay are measured
//! above.
//!
//! Sender and receiver clocks are different crystals (sound devices) or the
//! same wall clock slewed differently (NTP moves a clock's rate by up to
//! 500 ppm): media time runs a little fast or slow against arrival time,
//! so the transit of a perfectly steady path creeps, up or down, by the
//! clocks' drift (0.5 ms a second at 500 ppm). An all-time minimum follows
//! a fast sender down (every new low is taken at once) but never a slow
//! one up: the transit climbs away from the old low, reads as a delay that
//! grows for the whole call (30 ms a minute at 500 ppm), and a jitter
//! buffer that measures against it ends with every frame "late" once that
//! passes its `max_delay`; a receiver that reports it tells the sender of a
//! standing queue that is not there.
//!
//! [`DelayFloor`] is the minimum over the last one to two windows of
//! `half` each (two running minima, the older dropped as a new one
//! starts): a new low is taken at once, and the floor rises to the lowest
//! transit of the last window once the older window's low ages out. It
//! trails a slow sender's clock by at most `2 x half x drift`. The price:
//! a delay that goes up and stays up (a route change, a standing queue)
//! counts as delay for one to two windows, then as the new floor.
//! Allocation-free; transits and times in nanoseconds.

/// The least transit of the last one to two windows (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DelayFloor {
    half_ns: u64,
    /// Least transit of the current window.
    cur: i64,
    /// Least transit of the window before it.
    prev: i64,
    /// When the current window began; `None` before the first transit.
    cur_start_ns: Option<u64>,
}

impl DelayFloor {
    /// A floor over windows of `half_ns` (at least 1 ns).
    pub(crate) const fn new(half_ns: u64) -> DelayFloor {
        DelayFloor {
            half_ns: if half_ns == 0 { 1 } else { half_ns },
            cur: i64::MAX,
            prev: i64::MAX,
            cur_start_ns: None,
        }
    }

    /// Forgets every transit (a new stream).
    pub(crate) fn reset(&mut self) {
        *self = DelayFloor::new(self.half_ns);
    }

    /// Takes the transit `transit_ns` of a packet that arrived at `now_ns`;
    /// returns the floor with it.
    pub(crate) fn observe(&mut self, now_ns: u64, transit_ns: i64) -> i64 {
        let start = *self.cur_start_ns.get_or_insert(now_ns);
        let elapsed = now_ns.saturating_sub(start);
        if elapsed >= self.half_ns.saturating_mul(2) {
            // Nothing came for a whole window: both lows are stale.
            self.prev = i64::MAX;
            self.cur = i64::MAX;
            self.cur_start_ns = Some(now_ns);
        } else if elapsed >= self.half_ns {
            self.prev = self.cur;
            self.cur = i64::MAX;
            self.cur_start_ns = Some(start.saturating_add(self.half_ns));
        }
        self.cur = self.cur.min(transit_ns);
        self.floor()
    }

    /// The floor now (`i64::MAX` before any transit).
    pub(crate) fn floor(&self) -> i64 {
        self.cur.min(self.prev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const MS: i64 = 1_000_000;

    #[test]
    fn a_new_low_is_taken_at_once() {
        let mut f = DelayFloor::new(5 * S);
        assert_eq!(f.floor(), i64::MAX);
        assert_eq!(f.observe(0, 40 * MS), 40 * MS);
        assert_eq!(f.observe(S / 50, 55 * MS), 40 * MS);
        assert_eq!(f.observe(S / 25, 31 * MS), 31 * MS);
    }

    #[test]
    fn the_floor_rises_once_the_old_low_ages_out_and_not_before() {
        let mut f = DelayFloor::new(5 * S);
        f.observe(0, 10 * MS);
        // Every later transit is 30 ms: the 10 ms low holds for its own
        // window and the next, then the floor is 30 ms.
        let mut risen_at = None;
        for k in 1..=1_000u64 {
            let now = k * S / 50;
            let floor = f.observe(now, 30 * MS);
            if floor == 30 * MS && risen_at.is_none() {
                risen_at = Some(now);
            }
            if risen_at.is_none() {
                assert_eq!(floor, 10 * MS, "at {now} ns");
            } else {
                assert_eq!(floor, 30 * MS, "at {now} ns");
            }
        }
        assert_eq!(risen_at, Some(10 * S));
    }

    #[test]
    fn a_slow_senders_creep_is_followed_within_two_windows() {
        // 500 ppm: transit climbs 10 us per 20 ms frame.
        let mut f = DelayFloor::new(5 * S);
        let mut worst = 0;
        for k in 0..90_000u64 {
            let now = k * S / 50;
            let transit = 3 * MS + (k as i64) * 10_000;
            let floor = f.observe(now, transit);
            worst = worst.max(transit - floor);
        }
        // At most two windows of drift (10 s x 0.5 ms/s), however long.
        assert!(worst <= 5 * MS, "floor trailed by {worst} ns");
        assert!(worst >= 2 * MS, "floor trailed by only {worst} ns");
    }

    #[test]
    fn a_pause_longer_than_both_windows_starts_afresh() {
        let mut f = DelayFloor::new(5 * S);
        f.observe(0, 10 * MS);
        assert_eq!(f.observe(11 * S, 25 * MS), 25 * MS);
        f.reset();
        assert_eq!(f.floor(), i64::MAX);
        assert_eq!(f.observe(12 * S, 70 * MS), 70 * MS);
    }

    #[test]
    fn extreme_inputs_do_not_overflow() {
        let mut f = DelayFloor::new(0);
        f.observe(u64::MAX, i64::MIN);
        f.observe(0, i64::MAX);
        f.observe(u64::MAX, 0);
        assert!(f.floor() <= 0);
    }
}
