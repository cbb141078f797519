//! Rate-limited logging of repeated events of one kind (refusals): at most
//! one line per kind per interval; the lines held back are counted and
//! reported with the next line of that kind ("N more since"). A flood of bad
//! handshakes then costs a line a second, not a line each.
//!
//! Sans-IO: fed `now`, it answers whether to log; the caller logs.

use std::time::{Duration, Instant};

/// How many kinds are tracked (the refusal codes); a kind index past it
/// shares the last slot.
pub const KINDS: usize = 8;

/// Most characters of outside input (a server name, a reason) a log line
/// echoes; longer ones are cut with `…` and their length.
pub const MAX_ECHO: usize = 80;

/// Per-kind windows.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    last: [Option<Instant>; KINDS],
    held: [u64; KINDS],
}

impl LogLimiter {
    /// At most one line per kind per `every`.
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            last: [None; KINDS],
            held: [0; KINDS],
        }
    }

    /// An event of `kind` at `now`: `Some(held)` to log it now (with the
    /// number of this kind's lines held back since its last line), `None`
    /// to hold it back (counted).
    pub fn admit(&mut self, kind: usize, now: Instant) -> Option<u64> {
        let k = kind.min(KINDS - 1);
        match self.last[k] {
            Some(t) if now.saturating_duration_since(t) < self.every => {
                self.held[k] += 1;
                None
            }
            _ => {
                self.last[k] = Some(now);
                Some(std::mem::take(&mut self.held[k]))
            }
        }
    }
}

/// `s` cut to at most [`MAX_ECHO`] characters, saying how long it was.
pub fn echo(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX_ECHO).collect();
    format!("{cut}… ({} bytes)", s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_then_the_count_held_back() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut l = LogLimiter::new(Duration::from_secs(1));
        assert_eq!(l.admit(0, ms(0)), Some(0));
        for i in 1..=500 {
            assert_eq!(l.admit(0, ms(i)), None, "held at {i} ms");
        }
        // Another kind has its own window.
        assert_eq!(l.admit(1, ms(10)), Some(0));
        assert_eq!(l.admit(0, ms(1000)), Some(500));
        assert_eq!(l.admit(0, ms(1001)), None);
        assert_eq!(l.admit(0, ms(2500)), Some(1));
        // Kinds past the table share the last slot, never panic.
        assert_eq!(l.admit(usize::MAX, ms(0)), Some(0));
        assert_eq!(l.admit(KINDS + 3, ms(1)), None);
    }

    #[test]
    fn echoed_input_is_cut_to_a_bound() {
        assert_eq!(echo("short"), "short");
        let long = "x".repeat(1024);
        let e = echo(&long);
        assert!(e.len() < 120, "{e}");
        assert!(e.ends_with("(1024 bytes)"), "{e}");
        let multibyte = "é".repeat(200);
        assert!(echo(&multibyte).starts_with(&"é".repeat(MAX_ECHO)));
    }
}
