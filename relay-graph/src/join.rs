//! How a client joins a room, and signal frames on a QUIC stream.
//!
//! On a room connection (SNI = room hash or `call-*`), the client opens one
//! bidirectional stream and sends, in proto framing (4-byte big-endian
//! length + JSON):
//!
//! 1. `{"type":"hello",...}` (as everywhere, `SignalMessage::Hello`);
//! 2. `{"type":"join","room":R,"identity_pub":hex32,"alias":opt,"timestamp_ms":T,"signature":hex64}`
//!    where `signature` is the client's Ed25519 signature over
//!    [`join_signed_bytes`]`(R, relay_tls_fingerprint, identity_pub, T)`.
//!    Binding the relay's TLS fingerprint and the room stops a Join seen by
//!    one relay or room from being replayed to another; the timestamp bounds
//!    replay to the same one.
//!
//! The relay answers `hello`, then `room_update` to every member on every
//! join and leave. A refusal is a `hangup` frame and a connection close whose
//! application code and reason say why (see [`close`]).
//!
//! `Join` lives here until it moves into `wzp-proto` (`SignalMessage::Join`);
//! its JSON is already in proto's style, so the move changes no bytes.

use serde::{Deserialize, Serialize};
use wzp_proto::identity::{verify_signature, Identity};
use wzp_proto::signal::{decode_message, Decoded, SignalError, SignalMessage, FRAME_HEADER_LEN};
use wzp_proto::{Fingerprint, TlsFingerprint};

/// Largest signal frame the relay reads from a client (JSON body bytes).
/// Far below proto's 1 MiB limit: nothing a client sends a relay is large.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Application close codes the relay uses.
pub mod close {
    /// Normal end (also the `ping` SNI close).
    pub const NORMAL: u32 = 0;
    /// The room is full (call rooms hold two).
    pub const ROOM_FULL: u32 = 0x10;
    /// The fingerprint is not allowed in this call room.
    pub const NOT_AUTHORIZED: u32 = 0x11;
    /// Bad first frames: no Hello/Join, a bad signature, a stale timestamp.
    pub const BAD_JOIN: u32 = 0x12;
    /// The SNI names nothing this relay serves.
    pub const UNKNOWN_SNI: u32 = 0x13;
    /// The relay is at `max_peers` or `max_rooms`.
    pub const CAPACITY: u32 = 0x14;
    /// A fatal signal stream error (frame too large).
    pub const PROTOCOL: u32 = 0x15;
    /// The relay is shutting down.
    pub const SHUTDOWN: u32 = 0x16;
}

/// A client's request to join the room its SNI names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "join")]
pub struct Join {
    /// The room as in the SNI (room hash or `call-*` name).
    pub room: String,
    /// The client's Ed25519 identity key; its fingerprint is derived from it.
    #[serde(with = "hex32")]
    pub identity_pub: [u8; 32],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The client's clock, ms since the Unix epoch.
    pub timestamp_ms: u64,
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
    #[error("join is for room {got}, but the connection's SNI names {want}")]
    WrongRoom { got: String, want: String },
    #[error("join signature does not verify (signed for another relay or room?)")]
    BadSignature,
    #[error("join timestamp is {skew_s} s away from the relay clock (max {max_s} s); fix the client clock")]
    Stale { skew_s: u64, max_s: u64 },
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

    /// The Join as one signal frame.
    pub fn to_frame(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("a Join always serializes");
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + json.len());
        out.extend_from_slice(&(json.len() as u32).to_be_bytes());
        out.extend_from_slice(&json);
        out
    }
}

/// A frame from a client, decoded.
#[derive(Debug)]
pub enum ClientFrame {
    Join(Join),
    Message(SignalMessage),
    Unknown(String),
    /// Well delimited but not a valid message: count it and go on.
    Malformed(String),
}

/// Decodes one frame body.
pub fn decode_client_frame(body: &[u8]) -> ClientFrame {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        type_name: std::borrow::Cow<'a, str>,
    }
    if let Ok(tag) = serde_json::from_slice::<Tag>(body) {
        if tag.type_name == "join" {
            return match serde_json::from_slice::<Join>(body) {
                Ok(j) => ClientFrame::Join(j),
                Err(e) => ClientFrame::Malformed(e.to_string()),
            };
        }
    }
    match decode_message(body) {
        Ok(Decoded::Message(m)) => ClientFrame::Message(m),
        Ok(Decoded::Unknown { type_name }) => ClientFrame::Unknown(type_name),
        Err(e) => ClientFrame::Malformed(e.to_string()),
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("signal frame of {len} bytes exceeds the relay's {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("signal stream ended inside a frame")]
    Truncated,
    #[error("signal stream: {0}")]
    Read(#[from] quinn::ReadError),
}

/// Reads one frame body; `Ok(None)` on a clean end of stream between frames.
/// The length is checked before the body buffer is allocated.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let mut filled = 0;
    while filled < header.len() {
        match recv.read(&mut header[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(None),
            None => return Err(FrameError::Truncated),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Read(e),
    })?;
    Ok(Some(body))
}

/// Writes one proto message as a frame.
pub async fn write_message(
    send: &mut quinn::SendStream,
    msg: &SignalMessage,
) -> Result<(), SignalError> {
    let frame = wzp_proto::signal::encode_frame(msg)?;
    send.write_all(&frame)
        .await
        .map_err(|e| SignalError::Io(std::io::Error::other(e)))
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

mod hex64 {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 64];
        hex::decode_to_slice(s.as_bytes(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wzp_proto::Seed;

    fn id(n: u8) -> Identity {
        Seed::from_bytes([n; 32]).identity()
    }

    #[test]
    fn a_signed_join_verifies_and_round_trips() {
        let relay = TlsFingerprint([9; 32]);
        let j = Join::signed(&id(1), "call-1", &relay, Some("ann".into()), 1_000_000);
        let frame = j.to_frame();
        let ClientFrame::Join(back) = decode_client_frame(&frame[4..]) else {
            panic!("not decoded as a join");
        };
        assert_eq!(back, j);
        assert_eq!(
            back.verify("call-1", &relay, 1_000_500, 60),
            Ok(id(1).fingerprint())
        );
    }

    #[test]
    fn bad_joins_are_refused() {
        let relay = TlsFingerprint([9; 32]);
        let other_relay = TlsFingerprint([8; 32]);
        let j = Join::signed(&id(1), "call-1", &relay, None, 1_000_000);
        assert!(matches!(
            j.verify("call-2", &relay, 1_000_000, 60),
            Err(JoinError::WrongRoom { .. })
        ));
        assert_eq!(
            j.verify("call-1", &other_relay, 1_000_000, 60),
            Err(JoinError::BadSignature)
        );
        assert!(matches!(
            j.verify("call-1", &relay, 1_000_000 + 61_000, 60),
            Err(JoinError::Stale { .. })
        ));
        let mut forged = j.clone();
        forged.identity_pub = id(2).public_key();
        assert_eq!(
            forged.verify("call-1", &relay, 1_000_000, 60),
            Err(JoinError::BadSignature)
        );
    }

    #[test]
    fn bad_frames_decode_as_malformed_or_unknown() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "malformed"),
            (b"\xff\xfe", "malformed"),
            (b"{}", "malformed"),
            (b"{\"type\":\"join\"}", "malformed"),
            (b"{\"type\":\"join\",\"room\":\"x\",\"identity_pub\":\"zz\",\"timestamp_ms\":1,\"signature\":\"00\"}", "malformed"),
            (b"{\"type\":\"ping\"}", "malformed"),
            (b"[1,2,3]", "malformed"),
            (b"{\"type\":\"from_the_future\"}", "unknown"),
            (b"{\"type\":\"ping\",\"timestamp_ms\":3}", "message"),
        ];
        for (body, want) in cases {
            let got = match decode_client_frame(body) {
                ClientFrame::Join(_) => "join",
                ClientFrame::Message(_) => "message",
                ClientFrame::Unknown(_) => "unknown",
                ClientFrame::Malformed(_) => "malformed",
            };
            assert_eq!(got, *want, "{:?}", String::from_utf8_lossy(body));
        }
    }
}
