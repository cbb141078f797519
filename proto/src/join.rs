//! How a client joins a room on a relay: the signed `join` signal frame.
//!
//! On a room connection (TLS server name = the room id, or `call-*`), the
//! client opens one bidirectional stream and sends `hello`, then `join`:
//! `{"type":"join","room":R,"identity_pub":hex32,"alias":opt,"timestamp_ms":T,"signature":hex64}`
//! where `signature` is the client's Ed25519 signature over
//! [`join_signed_bytes`]`(R, relay_tls_fingerprint, identity_pub, T)`.
//! Binding the relay's TLS fingerprint and the room stops a Join seen by one
//! relay or room from being replayed to another; the timestamp bounds replay
//! to the same one. See docs/WIRE.md and docs/OPERATIONS.md.
//!
//! ## Admission proof (room key)
//!
//! A room whose server name is [`room_sni`]`(room_pub)` admits only those who
//! hold the room secret. `room_pub` is the public half of an Ed25519 key
//! derived from the room secret and name ([`RoomAdmissionKey`],
//! [`crate::handshake::room_admission_seed`]). The Join then carries a
//! [`RoomProof`]: `room_pub` and a signature by the room key over
//! [`room_proof_signed_bytes`]`(nonce, relay_tls_fingerprint, identity_pub)`,
//! where `nonce` is the relay's per-connection nonce (the connection's TLS
//! exporter, `wzp_stages::net::quic::join_nonce`, which both ends compute
//! without a round trip). The relay checks that `room_pub` hashes to the
//! server name and that the signature verifies ([`Join::verify_room_proof`]);
//! it never holds the secret or the media key. The proof is optional on the
//! wire (older clients and relays ignore it); a relay that requires it for
//! a room refuses a Join without one.

use serde::{Deserialize, Serialize};

use crate::handshake::{room_admission_seed, room_sni};
use crate::identity::{verify_signature, Identity};
use crate::signal::SignalMessage;
use crate::{Fingerprint, TlsFingerprint};

/// A client's request to join the room its SNI names.
///
/// On the wire it is the signal message [`SignalMessage::Join`]
/// (`{"type":"join",...}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    /// The room as in the SNI (room id or `call-*` name).
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
    /// Proof that the joiner holds the room secret (absent: none offered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_proof: Option<RoomProof>,
}

/// The admission proof a Join may carry: `{"room_pub":hex32,"signature":hex64}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomProof {
    /// The room's admission public key; [`room_sni`] of it is the room's
    /// server name.
    #[serde(with = "hex32")]
    pub room_pub: [u8; 32],
    /// Ed25519 signature by the room key over [`room_proof_signed_bytes`].
    #[serde(with = "hex64")]
    pub signature: [u8; 64],
}

/// Length of the relay's per-connection nonce a room proof signs.
pub const JOIN_NONCE_LEN: usize = 32;

/// What a room proof signs:
/// `"wzp-room-proof-v1" || nonce (32) || relay_tls_fp (32) || identity_pub (32)`.
/// The nonce ties it to one connection, the fingerprint to one relay, the
/// identity key to the Join (whose own signature covers the same key).
pub fn room_proof_signed_bytes(
    nonce: &[u8; JOIN_NONCE_LEN],
    relay: &TlsFingerprint,
    identity_pub: &[u8; 32],
) -> [u8; 17 + 96] {
    let mut b = [0u8; 17 + 96];
    b[..17].copy_from_slice(b"wzp-room-proof-v1");
    b[17..49].copy_from_slice(nonce);
    b[49..81].copy_from_slice(&relay.0);
    b[81..].copy_from_slice(identity_pub);
    b
}

/// A room's admission key pair, derived from the room secret and name.
/// Held by members only; the relay sees [`RoomAdmissionKey::public_key`].
pub struct RoomAdmissionKey {
    signing: ed25519_dalek::SigningKey,
}

impl RoomAdmissionKey {
    /// The room's key for `room_secret` and the plain `room_name`.
    pub fn derive(room_secret: &[u8], room_name: &str) -> RoomAdmissionKey {
        let seed = room_admission_seed(room_secret, room_name);
        RoomAdmissionKey {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The public key a relay checks proofs against.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The room's server name: [`room_sni`] of the public key.
    pub fn sni(&self) -> String {
        room_sni(&self.public_key())
    }

    /// A proof for the connection with `nonce` to `relay`, by `identity_pub`.
    pub fn prove(
        &self,
        nonce: &[u8; JOIN_NONCE_LEN],
        relay: &TlsFingerprint,
        identity_pub: &[u8; 32],
    ) -> RoomProof {
        use ed25519_dalek::Signer as _;
        let msg = room_proof_signed_bytes(nonce, relay, identity_pub);
        RoomProof {
            room_pub: self.public_key(),
            signature: self.signing.sign(&msg).to_bytes(),
        }
    }
}

impl std::fmt::Debug for RoomAdmissionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomAdmissionKey({})", self.sni())
    }
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
    /// The Join carries no room proof, and the room requires one.
    #[error("join carries no room proof; this room admits only holders of its secret (update the client, or check the room secret)")]
    NoRoomProof,
    /// The proof's room key does not hash to the connection's server name.
    #[error("join's room key hashes to {got}, but the connection's SNI names {want}; the room secret or name is wrong")]
    RoomKeyMismatch {
        /// [`room_sni`] of the key in the proof.
        got: String,
        /// The connection's server name.
        want: String,
    },
    /// The room proof's signature does not verify.
    #[error(
        "room proof does not verify (made for another connection or relay, or by another identity)"
    )]
    BadRoomProof,
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
            room_proof: None,
        }
    }

    /// This Join with a room proof for the connection with `nonce` to `relay`.
    #[must_use]
    pub fn with_room_proof(
        mut self,
        key: &RoomAdmissionKey,
        nonce: &[u8; JOIN_NONCE_LEN],
        relay: &TlsFingerprint,
    ) -> Join {
        self.room_proof = Some(key.prove(nonce, relay, &self.identity_pub));
        self
    }

    /// Checks the room proof against the connection's server name `sni`,
    /// its `nonce` and the relay's own TLS fingerprint. Independent of
    /// [`Join::verify`] (call both).
    pub fn verify_room_proof(
        &self,
        sni: &str,
        nonce: &[u8; JOIN_NONCE_LEN],
        relay: &TlsFingerprint,
    ) -> Result<(), JoinError> {
        let proof = self.room_proof.as_ref().ok_or(JoinError::NoRoomProof)?;
        let got = room_sni(&proof.room_pub);
        if got != sni {
            return Err(JoinError::RoomKeyMismatch {
                got,
                want: sni.to_string(),
            });
        }
        let msg = room_proof_signed_bytes(nonce, relay, &self.identity_pub);
        verify_signature(&proof.room_pub, &msg, &proof.signature)
            .map_err(|_| JoinError::BadRoomProof)
    }

    /// Whether the Join carries a room proof valid for this connection.
    pub fn has_valid_room_proof(
        &self,
        sni: &str,
        nonce: &[u8; JOIN_NONCE_LEN],
        relay: &TlsFingerprint,
    ) -> bool {
        self.verify_room_proof(sni, nonce, relay).is_ok()
    }

    /// [`Join::verify`] and [`Join::verify_room_proof`] together: what a
    /// relay runs for a room that admits only holders of its secret.
    pub fn verify_with_room_proof(
        &self,
        room: &str,
        relay: &TlsFingerprint,
        nonce: &[u8; JOIN_NONCE_LEN],
        now_ms: u64,
        max_skew_s: u64,
    ) -> Result<Fingerprint, JoinError> {
        let fingerprint = self.verify(room, relay, now_ms, max_skew_s)?;
        self.verify_room_proof(room, nonce, relay)?;
        Ok(fingerprint)
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
        crate::signal::encode_frame(&SignalMessage::Join(Box::new(self.clone())))
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
