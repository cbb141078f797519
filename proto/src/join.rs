//! How a client joins a room on a relay: the signed `join` signal frame.
//!
//! On a room connection (TLS server name = the room hash, or `call-*`), the
//! client opens one bidirectional stream and sends `hello`, then `join`:
//! `{"type":"join","room":R,"identity_pub":hex32,"alias":opt,"timestamp_ms":T,"signature":hex64}`
//! where `signature` is the client's Ed25519 signature over
//! [`join_signed_bytes`]`(R, relay_tls_fingerprint, identity_pub, T)`.
//! Binding the relay's TLS fingerprint and the room stops a Join seen by one
//! relay or room from being replayed to another; the timestamp bounds replay
//! to the same one. See docs/WIRE.md and docs/OPERATIONS.md.

use serde::{Deserialize, Serialize};

use crate::identity::{verify_signature, Identity};
use crate::signal::SignalMessage;
use crate::{Fingerprint, TlsFingerprint};

/// A client's request to join the room its SNI names.
///
/// On the wire it is the signal message [`SignalMessage::Join`]
/// (`{"type":"join",...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The room as in the SNI (room hash or `call-*` name).
    pub room: String,
    /// The client's Ed25519 identity key; its fingerprint is derived from it.
    #[serde(with = "hex32")]
    pub identity_pub: [u8; 32],
    /// Display name shown to the room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The client's clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Ed25519 signature over [`join_signed_bytes`].
    #[serde(with = "hex64")]
    pub signature: [u8; 64],
}

/// What a Join signs:
/// `"wzp-join-v1" || len(room) (u8) || room || relay_tls_fp (32) || identity_pub (32) || timestamp_ms (u64 BE)`.
pub fn join_signed_bytes(
    room: &str,
    relay: &TlsFingerprint,
    identity_pub: &[u8; 32],
    timestamp_ms: u64,
) -> Vec<u8> {
    let room = &room.as_bytes()[..room.len().min(255)];
    let mut b = Vec::with_capacity(11 + 1 + room.len() + 32 + 32 + 8);
    b.extend_from_slice(b"wzp-join-v1");
    b.push(room.len() as u8);
    b.extend_from_slice(room);
    b.extend_from_slice(&relay.0);
    b.extend_from_slice(identity_pub);
    b.extend_from_slice(&timestamp_ms.to_be_bytes());
    b
}

/// Why a Join was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    /// The Join names another room than the connection's server name.
    #[error("join is for room {got}, but the connection's SNI names {want}")]
    WrongRoom {
        /// Room in the Join.
        got: String,
        /// Room the connection is for.
        want: String,
    },
    /// The signature does not verify.
    #[error("join signature does not verify (signed for another relay or room?)")]
    BadSignature,
    /// The timestamp is too far from the relay's clock.
    #[error("join timestamp is {skew_s} s away from the relay clock (max {max_s} s); fix the client clock")]
    Stale {
        /// Seconds between the Join's timestamp and the relay's clock.
        skew_s: u64,
        /// The most the relay accepts.
        max_s: u64,
    },
}

impl Join {
    /// A signed Join for `room` at `relay`.
    pub fn signed(
        identity: &Identity,
        room: &str,
        relay: &TlsFingerprint,
        alias: Option<String>,
        timestamp_ms: u64,
    ) -> Join {
        let identity_pub = identity.public_key();
        let signature = identity.sign(&join_signed_bytes(room, relay, &identity_pub, timestamp_ms));
        Join {
            room: room.to_string(),
            identity_pub,
            alias,
            timestamp_ms,
            signature,
        }
    }

    /// The joining user's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_public_key(&self.identity_pub)
    }

    /// Checks the room, the signature and the timestamp.
    pub fn verify(
        &self,
        room: &str,
        relay: &TlsFingerprint,
        now_ms: u64,
        max_skew_s: u64,
    ) -> Result<Fingerprint, JoinError> {
        if self.room != room {
            return Err(JoinError::WrongRoom {
                got: self.room.clone(),
                want: room.to_string(),
            });
        }
        let msg = join_signed_bytes(room, relay, &self.identity_pub, self.timestamp_ms);
        verify_signature(&self.identity_pub, &msg, &self.signature)
            .map_err(|_| JoinError::BadSignature)?;
        let skew_s = now_ms.abs_diff(self.timestamp_ms) / 1000;
        if skew_s > max_skew_s {
            return Err(JoinError::Stale {
                skew_s,
                max_s: max_skew_s,
            });
        }
        Ok(self.fingerprint())
    }

    /// The Join as one signal frame (`{"type":"join",...}`).
    pub fn to_frame(&self) -> Vec<u8> {
        crate::signal::encode_frame(&SignalMessage::Join(self.clone()))
            .expect("a Join is far below the frame limit")
    }
}

mod hex32 {
    //! Hex in JSON for 32-byte keys.
    use serde::{Deserialize, Deserializer, Serializer};
    /// Writes hex.
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    /// Reads hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod hex64 {
    //! Hex in JSON for 64-byte signatures.
    use serde::{Deserialize, Deserializer, Serializer};
    /// Writes hex.
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    /// Reads hex.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
