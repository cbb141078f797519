//! One `_signal` connection's state: handshake progress, rate limit, and how
//! many messages the shell has not yet written out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wzp_proto::Fingerprint;

/// Frame rate limit per connection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained frames per second.
    pub per_second: f64,
    /// Frames that may arrive at once after a quiet period.
    pub burst: f64,
    /// Dropped frames within `abuse_window` after which the connection is
    /// closed with `CloseCode::RateLimited`.
    pub close_after_dropped: u32,
    /// The window `close_after_dropped` counts over.
    pub abuse_window: Duration,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit {
            per_second: 50.0,
            burst: 100.0,
            close_after_dropped: 500,
            abuse_window: Duration::from_secs(10),
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(per_second: f64, burst: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            per_second,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where a connection is in the signal exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the client's `hello`.
    AwaitHello,
    /// `hello` exchanged and challenge sent; registered once `fingerprint` is set.
    Open,
}

/// Per-connection state of the signal hub.
#[derive(Debug)]
pub struct SignalSession {
    /// The client's address as the relay sees it now (QUIC follows a
    /// client whose address changes: [`super::Input::Moved`]).
    pub remote: SocketAddr,
    /// The address the client was last told it has (its registration's
    /// or a reflection's `observed_addr`): what it says it is at until it
    /// asks again.
    pub told: SocketAddr,
    /// The presence challenge for this connection.
    pub nonce: [u8; 32],
    /// Exchange progress.
    pub phase: Phase,
    /// The proven fingerprint, once registered.
    pub fingerprint: Option<Fingerprint>,
    /// The device it registered as (`register_presence`'s `device`).
    pub device: Option<wzp_proto::presence::DeviceId>,
    /// It registered with `call_waiting`: while in a call it is offered a
    /// second one as a waiting call instead of the caller hearing busy.
    pub call_waiting: bool,
    /// Bytes of a voice-message fetch handed to the shell and not yet all
    /// written (0: none under way).
    pub fetch_bytes: usize,
    /// When the connection arrived.
    pub connected_at: Instant,
    bucket: TokenBucket,
    rate: RateLimit,
    drops_since: Instant,
    drops: u32,
    /// Messages handed to the shell and not yet reported written.
    pub in_flight: usize,
    /// `mapping_observed` answers given.
    pub mapping_answers: u8,
    /// What the last mapping probe showed of the client's NAT.
    pub mapping: wzp_proto::mapping::Mapping,
}

/// What the rate limiter says about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateVerdict {
    /// Take it.
    Accept,
    /// Drop it; `first` is the first drop of this abuse window (tell the client once).
    Drop {
        /// First drop in the window.
        first: bool,
    },
    /// Too many drops: close the connection.
    Close,
}

impl SignalSession {
    /// A new connection from `remote`, to be challenged with `nonce`.
    pub fn new(
        remote: SocketAddr,
        nonce: [u8; 32],
        rate: RateLimit,
        now: Instant,
    ) -> SignalSession {
        SignalSession {
            remote,
            told: remote,
            nonce,
            phase: Phase::AwaitHello,
            fingerprint: None,
            device: None,
            call_waiting: false,
            fetch_bytes: 0,
            connected_at: now,
            bucket: TokenBucket::new(rate.per_second, rate.burst, now),
            rate,
            drops_since: now,
            drops: 0,
            in_flight: 0,
            mapping_answers: 0,
            mapping: wzp_proto::mapping::Mapping::Unknown,
        }
    }

    /// Applies the rate limit to one arriving frame.
    pub fn admit_frame(&mut self, now: Instant) -> RateVerdict {
        if self.bucket.take(now) {
            return RateVerdict::Accept;
        }
        if now.saturating_duration_since(self.drops_since) >= self.rate.abuse_window {
            self.drops_since = now;
            self.drops = 0;
        }
        self.drops += 1;
        if self.drops >= self.rate.close_after_dropped {
            RateVerdict::Close
        } else {
            RateVerdict::Drop {
                first: self.drops == 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 100.0, t0);
        let taken = (0..150).filter(|_| b.take(t0)).count();
        assert_eq!(taken, 100);
        // 1 s later: 50 more.
        let t1 = t0 + Duration::from_secs(1);
        let taken = (0..150).filter(|_| b.take(t1)).count();
        assert_eq!(taken, 50);
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(100);
        let taken = (0..500).filter(|_| b.take(t2)).count();
        assert_eq!(taken, 100);
        // Time going backwards grants nothing.
        assert!(!b.take(t0));
    }

    #[test]
    fn sustained_abuse_closes_and_occasional_excess_does_not() {
        let t0 = Instant::now();
        let rate = RateLimit {
            per_second: 10.0,
            burst: 10.0,
            close_after_dropped: 20,
            abuse_window: Duration::from_secs(10),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 1));
        let mut s = SignalSession::new(addr, [0; 32], rate, t0);
        let verdicts: Vec<RateVerdict> = (0..40).map(|_| s.admit_frame(t0)).collect();
        assert!(verdicts[..10].iter().all(|v| *v == RateVerdict::Accept));
        assert_eq!(verdicts[10], RateVerdict::Drop { first: true });
        assert_eq!(verdicts[11], RateVerdict::Drop { first: false });
        assert_eq!(verdicts[29], RateVerdict::Close);

        // 15 drops per 10 s window never reach 20.
        let mut s = SignalSession::new(addr, [0; 32], rate, t0);
        for window in 0..5u64 {
            let t = t0 + Duration::from_secs(10 * window);
            let drops = (0..25)
                .map(|_| s.admit_frame(t))
                .filter(|v| matches!(v, RateVerdict::Drop { .. }))
                .count();
            assert_eq!(drops, 15, "window {window}");
        }
    }
}
