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
//! `Join` itself is part of the wire contract and lives in
//! [`wzp_proto::join`]; it is re-exported here.

use serde::Deserialize;
pub use wzp_proto::join::{join_signed_bytes, Join, JoinError};
use wzp_proto::signal::{decode_message, Decoded, SignalError, SignalMessage, FRAME_HEADER_LEN};

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

#[cfg(test)]
mod tests {
    use super::*;
    use wzp_proto::identity::Identity;
    use wzp_proto::{Seed, TlsFingerprint};

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
