//! What the TLS server name (SNI) of a connection asks the relay for.
//!
//! Clients route by SNI so that one UDP port serves every purpose and the
//! relay never learns a room's name:
//!
//! | SNI | Meaning |
//! |---|---|
//! | 32 lowercase hex digits | a media room, `wzp_proto::room_hash(name)` |
//! | `call-` + 1..=58 of `[a-z0-9-]` | a direct-call room (at most two members, allow-listed) |
//! | `ping` | closed as soon as the handshake completes: clients time it as RTT |
//! | `_signal` | presence and direct-call signaling |
//! | `_federation` | relay-to-relay signaling |
//! | `_relay` | relay-to-relay media links |
//! | anything else, or none | refused |

/// A classified server name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sni {
    /// A media room by hash.
    Room(String),
    /// A direct-call room.
    Call(String),
    Ping,
    Signal,
    Federation,
    RelayLink,
    /// Not a name the relay serves.
    Unknown,
}

/// Classifies a server name.
pub fn classify(name: &str) -> Sni {
    match name {
        "ping" => return Sni::Ping,
        "_signal" => return Sni::Signal,
        "_federation" => return Sni::Federation,
        "_relay" => return Sni::RelayLink,
        _ => {}
    }
    if name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Sni::Room(name.to_string());
    }
    if let Some(id) = name.strip_prefix("call-") {
        if (1..=58).contains(&id.len())
            && id
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        {
            return Sni::Call(name.to_string());
        }
    }
    Sni::Unknown
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
        let h = wzp_proto::room_hash("lobby");
        let table: &[(&str, Sni)] = &[
            (&h, Sni::Room(h.clone())),
            ("ping", Sni::Ping),
            ("_signal", Sni::Signal),
            ("_federation", Sni::Federation),
            ("_relay", Sni::RelayLink),
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
