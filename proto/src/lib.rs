//! The wzp wire contract: everything two wzp peers (clients, relays) must agree
//! on byte for byte, and nothing else. No sockets, threads or clocks live here.
//!
//! - [`media`]: the 22-byte clear media header every datagram starts with, the
//!   optional 4-byte [`QualityReport`] trailer, the AEAD nonce and associated
//!   data. Parsing and encoding never allocate or panic (real-time path).
//! - [`signal`]: JSON signaling messages in 4-byte length-prefixed frames, an
//!   incremental decoder and blocking `std::io` helpers; unknown message types
//!   and fields are tolerated.
//! - [`identity`]: the 32-byte seed, Ed25519/X25519 keys derived from it,
//!   fingerprints, BIP39 backup, and a relay's deterministic TLS certificate.
//! - [`handshake`]: the sans-IO three-message authenticated key exchange with
//!   per-direction session keys and a 4-digit SAS, plus room keys and room hashes.
//! - [`join`]: the signed `join` frame a client sends to enter a relay room.
//! - [`room_client`]: the client side of entering a room (Hello, Join, RoomUpdate), sans-IO.
//! - [`presence`]: the challenged presence registration on `_signal`.
//! - [`mapping`]: the NAT mapping test (a probe to a relay's second port).
//! - [`direct_call`]: the caller's and callee's direct-call state machines,
//!   carrying the end-to-end call-key handshake.
//! - [`direct_path`]: the proof each party gives on a direct connection
//!   (the call's media straight between the two, not through the relay).
//! - [`federation`]: relay-to-relay link messages (hello, global rooms,
//!   presence routes, RTT probes) and the tag on forwarded media datagrams.
//! - [`close`]: QUIC application close codes and what they mean.
//! - [`sni`]: the TLS server names a relay serves (rooms, calls, signal, ...).
//! - [`feedback`]: the receiver feedback report (per-sender loss, bursts,
//!   jitter, queueing delay, receive rate, RTT echo), the sealed payload of a
//!   media packet with codec id `0x40`.
//! - [`riding`]: a RaptorQ repair symbol riding in a source frame's packet
//!   (codec id `0x41`), the sealed payload that carries both.
//!
//! The byte-exact specification is `docs/WIRE.md`; the constants in this crate
//! are its code form.
//!
//! ```
//! use wzp_proto::{MediaHeader, CodecId, Flags, HEADER_LEN};
//!
//! let header = MediaHeader { codec: CodecId::OPUS, seq: 7, flags: Flags::TALKSPURT, ..Default::default() };
//! let mut buf = [0u8; 64];
//! let n = header.encode_into(&mut buf).unwrap();
//! assert_eq!(n, HEADER_LEN);
//! let (parsed, rest) = MediaHeader::parse(&buf[..n + 3]).unwrap();
//! assert_eq!(parsed, header);
//! assert_eq!(rest.len(), 3);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
pub mod dedup;
pub mod direct_call;
pub mod direct_path;
pub mod error;
pub mod federation;
pub mod feedback;
pub mod handshake;
pub mod hold;
pub mod identity;
pub mod join;
pub mod mapping;
pub mod media;
pub mod path_addrs;
pub mod presence;
pub mod riding;
pub mod room_client;
pub mod signal;
pub mod sni;
pub mod voice_message;

pub use error::WireError;
pub use feedback::{
    encode_feedback, encode_feedback_flags, FeedbackEntry, FeedbackError, FeedbackReport,
    ReceiverInfo, RECEIVER_ENTRY_ID,
};
pub use handshake::{room_hash, room_id, room_key};
pub use identity::{Fingerprint, Identity, Seed, TlsFingerprint};
pub use media::{
    encode_packet, split_trailer, CodecId, Flags, MediaHeader, MediaPacket, QualityReport,
    HEADER_LEN, MEDIA_VERSION, NONCE_FEEDBACK, TRAILER_LEN,
};
pub use signal::{Decoded, FrameDecoder, SignalError, SignalMessage};
