//! The SNI grammar: what the TLS server name of a connection asks a relay for.
//!
//! Clients route by SNI so that one UDP port serves every purpose and the
//! relay never learns a room's name:
//!
//! | SNI | Meaning |
//! |---|---|
//! | 32 lowercase hex digits | a media room: its room id, `RoomAdmissionKey::sni` (docs/WIRE.md §4) |
//! | `call-` + 1..=58 of `[a-z0-9-]` | a direct-call room (at most two members, allow-listed) |
//! | `ping` | closed as soon as the handshake completes: clients time it as RTT |
//! | `_signal` | presence and direct-call signaling |
//! | `_federation` | relay-to-relay signaling |
//! | `_relay` | relay-to-relay media links |
//! | `version` | closed at once with the relay's version and build as the reason |
//! | anything else, or none | refused |

/// A classified server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sni {
    /// A media room by hash.
    Room(String),
    /// A direct-call room.
    Call(String),
    /// Closed as soon as the handshake completes (RTT probe).
    Ping,
    /// Presence and direct-call signaling.
    Signal,
    /// Relay-to-relay signaling.
    Federation,
    /// Relay-to-relay media.
    RelayLink,
    /// Version probe.
    Version,
    /// Not a name the relay serves.
    Unknown,
}

/// The `ping` server name.
pub const PING: &str = "ping";
/// The signal plane's server name.
pub const SIGNAL: &str = "_signal";
/// Relay-to-relay signaling.
pub const FEDERATION: &str = "_federation";
/// Relay-to-relay media links.
pub const RELAY_LINK: &str = "_relay";
/// The version probe: the relay closes with its version and build.
pub const VERSION: &str = "version";
/// Prefix of direct-call room names.
pub const CALL_PREFIX: &str = "call-";
/// Most characters after [`CALL_PREFIX`].
pub const MAX_CALL_ID: usize = 58;

/// Classifies a server name.
pub fn classify(name: &str) -> Sni {
    match name {
        PING => return Sni::Ping,
        SIGNAL => return Sni::Signal,
        FEDERATION => return Sni::Federation,
        RELAY_LINK => return Sni::RelayLink,
        VERSION => return Sni::Version,
        _ => {}
    }
    if name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Sni::Room(name.to_string());
    }
    if let Some(id) = name.strip_prefix(CALL_PREFIX) {
        if (1..=MAX_CALL_ID).contains(&id.len())
            && id
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return Sni::Call(name.to_string());
        }
    }
    Sni::Unknown
}

/// The call room of a call id: `call-` + the id, when the id is 1..=58 of
/// `[a-z0-9-]`.
pub fn call_room(call_id: &str) -> Option<String> {
    let name = format!("{CALL_PREFIX}{call_id}");
    matches!(classify(&name), Sni::Call(_)).then_some(name)
}

impl Sni {
    /// The room key (hash or call room name) when this SNI names a room.
    pub fn room(&self) -> Option<&str> {
        match self {
            Sni::Room(r) | Sni::Call(r) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_classified() {
        let h = crate::room_hash("lobby");
        let table: &[(&str, Sni)] = &[
            (&h, Sni::Room(h.clone())),
            ("ping", Sni::Ping),
            ("_signal", Sni::Signal),
            ("_federation", Sni::Federation),
            ("_relay", Sni::RelayLink),
            ("version", Sni::Version),
            ("VERSION", Sni::Unknown),
            ("call-7f3a", Sni::Call("call-7f3a".into())),
            ("call-", Sni::Unknown),
            ("call-ABC", Sni::Unknown),
            ("lobby", Sni::Unknown),
            ("", Sni::Unknown),
            (&h.to_uppercase(), Sni::Unknown),
            (&h[..31], Sni::Unknown),
            ("PING", Sni::Unknown),
        ];
        for (name, want) in table {
            assert_eq!(&classify(name), want, "{name:?}");
        }
        let long = format!("call-{}", "a".repeat(59));
        assert_eq!(classify(&long), Sni::Unknown);
    }
}
