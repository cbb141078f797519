//! QUIC application close codes: why a peer closed a connection.
//!
//! Every connection a relay ends carries one of these codes and a reason
//! text for people. Clients, relays and tests name them through
//! [`CloseCode`]; nobody copies the numbers (docs/WIRE.md, "Close codes").
//!
//! ```
//! use wzp_proto::close::CloseCode;
//!
//! assert_eq!(CloseCode::NotAuthorized.code(), 0x11);
//! assert_eq!(CloseCode::from_code(0x11), Some(CloseCode::NotAuthorized));
//! assert!(CloseCode::NotAuthorized.is_refusal());
//! assert!(!CloseCode::Shutdown.is_refusal());
//! ```

use std::fmt;

/// An application close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CloseCode {
    /// Normal end: a hangup, the `ping` SNI's close, a client leaving.
    Normal = 0,
    /// The room is full (call rooms hold two).
    RoomFull = 0x10,
    /// The fingerprint is not allowed in this room or call.
    NotAuthorized = 0x11,
    /// Bad first frames: no Hello/Join, a bad signature, a stale timestamp.
    BadJoin = 0x12,
    /// The SNI names nothing this relay serves.
    UnknownSni = 0x13,
    /// The relay is at `max_peers` or `max_rooms`.
    Capacity = 0x14,
    /// A fatal signal stream error (frame too large, stream out of sync).
    Protocol = 0x15,
    /// The relay is shutting down; reconnect (to the same relay when it is back).
    Shutdown = 0x16,
    /// A newer registration of the same fingerprint replaced this one.
    Replaced = 0x17,
    /// The peer sent more than its rate limit allows.
    RateLimited = 0x18,
    /// A presence registration failed: bad or replayed signature.
    BadRegistration = 0x19,
    /// The peer stayed silent past a keep-alive or setup timeout.
    Timeout = 0x1a,
}

impl CloseCode {
    /// Every code, in numeric order.
    pub const ALL: [CloseCode; 12] = [
        CloseCode::Normal,
        CloseCode::RoomFull,
        CloseCode::NotAuthorized,
        CloseCode::BadJoin,
        CloseCode::UnknownSni,
        CloseCode::Capacity,
        CloseCode::Protocol,
        CloseCode::Shutdown,
        CloseCode::Replaced,
        CloseCode::RateLimited,
        CloseCode::BadRegistration,
        CloseCode::Timeout,
    ];

    /// The numeric code on the wire.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: u64) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() as u64 == code)
    }

    /// A short snake_case label for metrics and event logs.
    pub const fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::RoomFull => "room_full",
            CloseCode::NotAuthorized => "not_authorized",
            CloseCode::BadJoin => "bad_join",
            CloseCode::UnknownSni => "unknown_sni",
            CloseCode::Capacity => "capacity",
            CloseCode::Protocol => "protocol",
            CloseCode::Shutdown => "shutdown",
            CloseCode::Replaced => "replaced",
            CloseCode::RateLimited => "rate_limited",
            CloseCode::BadRegistration => "bad_registration",
            CloseCode::Timeout => "timeout",
        }
    }

    /// Whether the peer was refused: retrying the same request will fail
    /// again, so a client reports it instead of reconnecting.
    pub const fn is_refusal(self) -> bool {
        matches!(
            self,
            CloseCode::RoomFull
                | CloseCode::NotAuthorized
                | CloseCode::BadJoin
                | CloseCode::UnknownSni
                | CloseCode::Capacity
                | CloseCode::Protocol
                | CloseCode::BadRegistration
        )
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02x})", self.label(), self.code())
    }
}

impl From<CloseCode> for u32 {
    fn from(c: CloseCode) -> u32 {
        c.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code() as u64), Some(c));
        }
        let mut labels: Vec<_> = CloseCode::ALL.iter().map(|c| c.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), CloseCode::ALL.len());
        assert_eq!(CloseCode::from_code(0x0f), None);
        assert_eq!(CloseCode::from_code(u64::MAX), None);
    }

    #[test]
    fn the_numbers_are_the_wire_contract() {
        // These values are on the wire: changing one breaks older peers.
        let table = [
            (CloseCode::Normal, 0),
            (CloseCode::RoomFull, 0x10),
            (CloseCode::NotAuthorized, 0x11),
            (CloseCode::BadJoin, 0x12),
            (CloseCode::UnknownSni, 0x13),
            (CloseCode::Capacity, 0x14),
            (CloseCode::Protocol, 0x15),
            (CloseCode::Shutdown, 0x16),
            (CloseCode::Replaced, 0x17),
            (CloseCode::RateLimited, 0x18),
            (CloseCode::BadRegistration, 0x19),
            (CloseCode::Timeout, 0x1a),
        ];
        for (c, n) in table {
            assert_eq!(c.code(), n, "{c}");
        }
    }
}
