//! Signaling: JSON messages in length-prefixed frames on a reliable stream.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of UTF-8
//! JSON, at most [`MAX_FRAME_LEN`]. Each message is a JSON object whose
//! `"type"` field names the variant in snake_case (`{"type":"ping",...}`).
//!
//! Compatibility rules (see `docs/WIRE.md`):
//! - the first frame each side sends is [`SignalMessage::Hello`]; the agreed
//!   version is the lower of the two `version`s, and if it is below either
//!   side's `min_version` the detecting side sends a `Hangup` with reason
//!   `error` and closes ([`negotiate_version`]);
//! - an unknown `"type"` decodes to [`Decoded::Unknown`] and is logged and
//!   skipped, never fatal;
//! - unknown fields are ignored; fields added after version 1 are optional
//!   (`#[serde(default, skip_serializing_if = ...)]`) so older peers parse
//!   newer messages and newer peers parse older ones.
//!
//! [`FrameDecoder`] is the incremental (push bytes, pull frames) decoder for
//! async transports; [`read_frame`] / [`write_frame`] are blocking helpers over
//! `std::io`.

use std::io::{Read, Write};
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::identity::{Fingerprint, TlsFingerprint};

/// The signaling protocol version this build speaks.
pub const SIGNAL_VERSION: u32 = 1;
/// The oldest signaling version this build still accepts.
pub const MIN_SIGNAL_VERSION: u32 = 1;
/// Maximum JSON body of one frame: 1 MiB.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Most own-network addresses a party shares for a direct path
/// (`caller_local_addrs`, `callee_local_addrs`, `peer_local_addrs`); a relay
/// passes on no more than these first ones.
pub const MAX_LOCAL_ADDRS: usize = 4;
/// Length of the frame length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Most bytes a [`FrameDecoder`] buffers before it refuses more: two full
/// frames. Pull frames after each push and this is never reached.
pub const MAX_BUFFERED: usize = 2 * (FRAME_HEADER_LEN + MAX_FRAME_LEN);

/// Errors from signal framing and decoding.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// A frame header announced a body above [`MAX_FRAME_LEN`]. Fatal: the
    /// stream can no longer be trusted to be in sync; close it.
    #[error("signal frame of {len} bytes exceeds the 1 MiB limit; closing the signal stream")]
    FrameTooLarge {
        /// The announced (or encoded) length.
        len: usize,
    },
    /// The frame was well delimited but is not a valid message (bad JSON,
    /// missing field, wrong type). Not fatal: the frame is consumed, count it
    /// and read the next one.
    #[error("malformed signal message: {0}")]
    Malformed(#[source] serde_json::Error),
    /// More than [`MAX_BUFFERED`] bytes were pushed without pulling frames.
    #[error("signal decoder buffer full ({buffered} bytes); pull frames between pushes")]
    BufferFull {
        /// Bytes that would have been buffered.
        buffered: usize,
    },
    /// The decoder hit a fatal error earlier and accepts nothing more.
    #[error("signal decoder is unusable after an earlier fatal error")]
    Poisoned,
    /// The stream ended inside a frame.
    #[error("signal stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes needed to finish the frame.
        need: usize,
        /// Bytes received.
        have: usize,
    },
    /// Reading or writing the stream failed.
    #[error("signal stream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding a message failed (only [`SignalMessage::Unrecognized`] cannot
    /// be encoded).
    #[error("cannot encode signal message: {0}")]
    Encode(String),
    /// The first message was not `Hello`.
    #[error("expected Hello as the first signal message, got {got}")]
    ExpectedHello {
        /// The type received instead.
        got: String,
    },
    /// The two peers share no signaling version.
    #[error("incompatible signaling versions: we speak {our_min}..={our_max}, peer speaks {their_min}..={their_max}; upgrade the older side")]
    VersionMismatch {
        /// Our oldest accepted version.
        our_min: u32,
        /// Our version.
        our_max: u32,
        /// Peer's oldest accepted version.
        their_min: u32,
        /// Peer's version.
        their_max: u32,
    },
}

impl SignalError {
    /// Whether the stream must be closed (otherwise drop the frame and go on).
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            SignalError::Malformed(_) | SignalError::Encode(_) | SignalError::BufferFull { .. }
        )
    }
}

/// Why a call ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum HangupReason {
    /// A party hung up.
    Normal,
    /// The callee is in another call.
    Busy,
    /// The callee declined.
    Declined,
    /// Nobody answered in time, or the peer went silent.
    Timeout,
    /// A protocol or internal error (see `message`).
    Error,
    /// The callee has no live registration on the relay.
    NotOnline,
    /// Told to the callee's other devices: one of them answered.
    AnsweredElsewhere,
    /// Told to the callee's other devices: one of them declined.
    DeclinedElsewhere,
    /// A reason added by a newer peer; treat as `normal`.
    #[serde(other)]
    Unknown,
}

/// How the callee answers a direct call.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AcceptMode {
    /// Decline the call.
    Reject,
    /// Accept and share the callee's reflexive address (peer-to-peer allowed).
    AcceptTrusted,
    /// Accept through the relay only, keeping the callee's address private.
    AcceptGeneric,
}

/// What was wrong with a request, in an [`SignalMessage::Error`] answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message type is unknown to the receiver; it was skipped.
    UnknownType,
    /// The frame was not a valid message (bad JSON, missing or mistyped field).
    Malformed,
    /// The request needs a presence registration first.
    NotRegistered,
    /// The connection is already registered.
    AlreadyRegistered,
    /// The message is valid but not one the receiver takes in this direction
    /// or state.
    UnexpectedMessage,
    /// The request names a call the sender is not part of.
    NotInCall,
    /// The request is well formed but invalid (see `message`).
    BadRequest,
    /// The sender exceeded its rate limit; the message was dropped.
    RateLimited,
    /// A code added by a newer peer.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The snake_case name, as on the wire (for metrics and logs).
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::Malformed => "malformed",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::AlreadyRegistered => "already_registered",
            ErrorCode::UnexpectedMessage => "unexpected_message",
            ErrorCode::NotInCall => "not_in_call",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unknown => "unknown",
        }
    }
}

/// One participant in a room, as listed in `RoomUpdate` and `GlobalRoomActive`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoomParticipant {
    /// The participant's user fingerprint.
    pub fingerprint: Fingerprint,
    /// Display name, if the participant set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Label of the relay the participant is connected to; `None` for local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_label: Option<String>,
    /// The participant said its microphone is muted ([`SignalMessage::MemberState`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    /// The participant said it records the call ([`SignalMessage::MemberState`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recording: bool,
    /// The media sender ids (header bytes 4..8) the participant's relay has
    /// seen its connection send with and bound to it (`sfu.fanout`): what a
    /// member labels a voice with. Empty until its first media packet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<u32>,
}

impl RoomParticipant {
    /// A participant with no alias, relay label, mute or sender.
    pub fn new(fingerprint: Fingerprint) -> Self {
        RoomParticipant {
            fingerprint,
            alias: None,
            relay_label: None,
            muted: false,
            recording: false,
            senders: Vec::new(),
        }
    }
}

/// The `hello` feature a relay lists when it takes
/// [`SignalMessage::MemberState`] on a room stream and shows it to the room.
pub const FEATURE_MEMBER_STATE: &str = "member_state";

/// The `hello` feature a relay lists when it also takes `member_state`'s
/// `recording` and shows it to the room (`recording` in each participant):
/// a member that records the call is told it to everyone in it.
pub const FEATURE_RECORDING: &str = "recording";

/// The `hello` feature a relay lists when its `room_update` says whether it
/// bridges the room across its federation (`bridged`): a client given
/// several relays can then tell one that would put it in another room of
/// the same name.
pub const FEATURE_BRIDGED: &str = "bridged";

/// How long a relay stays quiet about a caller to one callee after a
/// [`SignalMessage::MissedCall`] about it.
pub const MISSED_CALL_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// The `hello` feature a relay lists on `_signal` when it keeps a
/// registration per device (`register_presence`'s `device`): a call rings
/// every device of the person, the first to answer takes it, and the others
/// get a `hangup` with reason `answered_elsewhere` (or `declined_elsewhere`).
pub const FEATURE_DEVICES: &str = "devices";

/// The `hello` feature a relay lists on `_signal` when it rings a person who
/// is in a call with a second call (a *waiting* call) instead of answering
/// the caller `busy`, on the device in the call, when that device registered
/// with `register_presence`'s `call_waiting`. The caller's `call_ringing`
/// says `waiting`; answering the waiting call ends the call in progress.
pub const FEATURE_CALL_WAITING: &str = "call_waiting";

/// The `hello` feature a relay lists on `_signal` when it keeps voice
/// messages for the people registered there ([`crate::voice_message`]):
/// `message_key_query`, `voice_message`, `fetch_voice_messages`,
/// `delete_voice_message`.
pub const FEATURE_VOICE_MESSAGES: &str = "voice_messages";

/// The `hello` feature a relay lists on `_signal` when it passes
/// `call_hold` between the parties of an active direct call (a party that
/// puts the call on hold, or takes it off, tells the other).
pub const FEATURE_HOLD: &str = "hold";

/// The `hello` feature a relay lists on `_signal` when a person answering a
/// waiting call may keep the call in progress (`direct_call_answer`'s
/// `keep_current`): the person is in both calls, the kept one on hold, and
/// swaps between them; when one ends the other is the person's call again.
/// A person with a kept call gets no other waiting call (`busy`).
pub const FEATURE_KEEP_CALL: &str = "keep_call";

/// Every signaling message. The JSON tag is `"type"` with the snake_case
/// variant name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SignalMessage {
    /// First message on every signal stream, both directions.
    Hello {
        /// Highest signaling version the sender speaks.
        version: u32,
        /// Oldest signaling version the sender accepts.
        #[serde(default = "default_min_version")]
        min_version: u32,
        /// Free-form software name and version, for logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        software: Option<String>,
        /// Optional features the sender supports (e.g. `"dred"`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        features: Vec<String>,
    },
    /// Client asks to join a room (or start a call) through a relay.
    CallOffer {
        /// Routing name of the room (its server name).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Call id, when this offer belongs to a signaled call.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// Encoded [`crate::handshake::HandshakeInit`], hex in JSON.
        #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
        handshake: Option<Vec<u8>>,
        /// Codec names the caller can send and receive, preferred first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        supported_codecs: Vec<String>,
        /// Caller's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
    },
    /// Answer to a `CallOffer`.
    CallAnswer {
        /// Call id of the offer, if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// Encoded [`crate::handshake::HandshakeResponse`], hex in JSON.
        #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
        handshake: Option<Vec<u8>>,
        /// Codec chosen from the offer's list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen_codec: Option<String>,
        /// Answerer's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
    },
    /// Third handshake message, initiator to responder.
    CallConfirm {
        /// Call id, if the call has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// Encoded [`crate::handshake::HandshakeFinish`], hex in JSON.
        #[serde(with = "hex_vec")]
        handshake: Vec<u8>,
    },
    /// Either party of an answered direct call to the other, through the
    /// relays: its own addresses for a direct path, sealed with the call's
    /// keys ([`crate::path_addrs`]; docs/WIRE.md §10.1). Relays forward it
    /// (a `path` call event across a link) and cannot read it.
    CallPath {
        /// The call.
        call_id: String,
        /// The sealed [`crate::path_addrs::PathAddrs`], hex in JSON.
        #[serde(with = "hex_vec")]
        sealed: Vec<u8>,
    },
    /// Either party of an active direct call to the other, through the
    /// relays: it put the call on hold (it neither hears nor sends until it
    /// takes the call back) or took it off hold, sealed with the call's keys
    /// ([`crate::hold`]). Relays pass it on unread (a `hold` call event
    /// across a link).
    CallHold {
        /// The call.
        call_id: String,
        /// The sealed notice ([`crate::hold::SEALED_HOLD_LEN`] bytes), hex
        /// in JSON.
        #[serde(with = "hex_vec")]
        sealed: Vec<u8>,
    },
    /// End a call, or refuse one.
    Hangup {
        /// Why.
        reason: HangupReason,
        /// Which call, when the stream carries several.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        call_id: Option<String>,
        /// Human-readable detail for logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Liveness probe; the peer answers `Pong` with the same timestamp.
    Ping {
        /// Sender's clock in ms, echoed back to measure RTT.
        timestamp_ms: u64,
    },
    /// Answer to `Ping`.
    Pong {
        /// The `Ping`'s timestamp.
        timestamp_ms: u64,
    },
    /// Relay to clients: who is in the room now.
    RoomUpdate {
        /// Routing name of the room.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        /// Number of participants (may exceed the list if it was truncated).
        count: u32,
        /// The participants, local and federated.
        #[serde(default)]
        participants: Vec<RoomParticipant>,
        /// The relay bridges this room across its federation
        /// (`[[global_rooms]]`): the room's members on other relays are in
        /// it. Said only by relays listing [`FEATURE_BRIDGED`] in `hello`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bridged: bool,
    },
    /// Client registers for direct calls on the `_signal` connection, in
    /// answer to the relay's [`SignalMessage::PresenceChallenge`].
    RegisterPresence {
        /// Client's Ed25519 identity public key, hex in JSON.
        #[serde(with = "hex_array")]
        identity_pub: [u8; 32],
        /// Ed25519 signature, hex in JSON: over
        /// [`presence_challenge_signed_bytes`] when `nonce` is present,
        /// otherwise over the version-1 [`presence_signed_bytes`].
        #[serde(with = "hex_array")]
        signature: [u8; 64],
        /// Client's clock in ms when signing (version-1 registrations only).
        #[serde(default)]
        timestamp_ms: u64,
        /// Display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alias: Option<String>,
        /// The relay's challenge nonce being answered, hex in JSON.
        #[serde(
            default,
            with = "hex_array_opt",
            skip_serializing_if = "Option::is_none"
        )]
        nonce: Option<[u8; 32]>,
        /// The fingerprint the client claims; when present it must be the
        /// fingerprint of `identity_pub`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
        /// Which of the person's devices this is (random per installation,
        /// hex in JSON, [`crate::presence::DEVICE_ID_LEN`] bytes). A relay
        /// whose `hello` lists [`FEATURE_DEVICES`] keeps one registration
        /// per device, rings them all and tells the others when one
        /// answers; the same device registering again replaces its older
        /// registration. Without it the registration is the person's one
        /// device (as before devices).
        #[serde(
            default,
            with = "hex_array_opt",
            skip_serializing_if = "Option::is_none"
        )]
        device: Option<[u8; crate::presence::DEVICE_ID_LEN]>,
        /// This device takes a second call while it is in one (a person
        /// asked, who may end the call in progress to answer it): a relay
        /// listing [`FEATURE_CALL_WAITING`] then offers it a call that would
        /// otherwise be refused `busy`. Not signed: it only says how the
        /// registered connection wants to be treated.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        call_waiting: bool,
        /// The person's message key, for voice messages left for them while
        /// away (relays listing [`FEATURE_VOICE_MESSAGES`] keep it and hand
        /// it out; it carries its own signature).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_key: Option<Box<crate::voice_message::MessageKey>>,
    },
    /// Relay's answer to `RegisterPresence`.
    RegisterPresenceAck {
        /// Whether registration succeeded.
        success: bool,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Relay's build or software version, for logs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay_build: Option<String>,
        /// The client's address as the relay sees it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed_addr: Option<SocketAddr>,
        /// The relay's human-readable label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        relay_label: Option<String>,
        /// The relay's version (`x.y.z` and build).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        /// The fingerprint now registered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fingerprint: Option<Fingerprint>,
        /// The relay's mapping port ([`crate::mapping`]): where the client
        /// sends a probe from its signalling socket; absent when the relay
        /// has none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mapping_port: Option<u16>,
        /// The probe's token for this connection (hex in JSON).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "hex_array_opt"
        )]
        mapping_token: Option<[u8; crate::mapping::TOKEN_LEN]>,
        /// How many of this person's devices are registered on the relay
        /// now, this one included (relays listing [`FEATURE_DEVICES`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        devices: Option<u32>,
    },
    /// Caller to relay to callee: a direct call by fingerprint.
    DirectCallOffer {
        /// Call id chosen by the caller (random, unique).
        call_id: String,
        /// Caller's fingerprint.
        caller_fingerprint: Fingerprint,
        /// Callee's fingerprint.
        target_fingerprint: Fingerprint,
        /// Caller's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller_alias: Option<String>,
        /// Encoded [`crate::handshake::HandshakeInit`], hex in JSON.
        #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
        handshake: Option<Vec<u8>>,
        /// Codec names the caller supports, preferred first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        supported_codecs: Vec<String>,
        /// Caller's server-reflexive address (from `Reflect`), for P2P.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller_reflexive_addr: Option<SocketAddr>,
        /// Caller's own addresses on its network (its signalling socket's
        /// port), for a direct path when both parties are behind one NAT;
        /// passed on as `caller_reflexive_addr` is (at most
        /// [`MAX_LOCAL_ADDRS`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        caller_local_addrs: Vec<SocketAddr>,
    },
    /// Callee to relay to caller: the answer to `DirectCallOffer`.
    DirectCallAnswer {
        /// The offer's call id.
        call_id: String,
        /// Reject, or accept with or without revealing the callee's address.
        accept_mode: AcceptMode,
        /// Encoded [`crate::handshake::HandshakeResponse`], hex in JSON.
        #[serde(default, with = "hex_opt", skip_serializing_if = "Option::is_none")]
        handshake: Option<Vec<u8>>,
        /// Codec chosen from the offer's list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen_codec: Option<String>,
        /// Callee's reflexive address; only with `accept_trusted`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        callee_reflexive_addr: Option<SocketAddr>,
        /// Callee's own addresses on its network; only with
        /// `accept_trusted` (at most [`MAX_LOCAL_ADDRS`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        callee_local_addrs: Vec<SocketAddr>,
        /// Answering a waiting call, the callee keeps the call it is in, on
        /// hold, instead of ending it (relays listing
        /// [`FEATURE_KEEP_CALL`]; an older relay ends it). Callee to relay
        /// only.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_current: bool,
    },
    /// Relay to caller: the callee is being alerted.
    CallRinging {
        /// The call.
        call_id: String,
        /// The callee is in another call: this one rings there as a
        /// waiting call (relays listing [`FEATURE_CALL_WAITING`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        waiting: bool,
    },
    /// Relay to both parties: where the call's media goes.
    CallSetup {
        /// The call.
        call_id: String,
        /// Routing name of the private call room.
        room: String,
        /// Relay address (`host:port`) to connect media to.
        relay_addr: String,
        /// The other party's direct address, when both allow P2P.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_direct_addr: Option<SocketAddr>,
        /// The other party's own addresses on its network, when both allow
        /// P2P (at most [`MAX_LOCAL_ADDRS`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        peer_local_addrs: Vec<SocketAddr>,
        /// The other party's fingerprint (the only two admitted to `room`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peer_fingerprint: Option<Fingerprint>,
        /// What the relay's mapping test ([`crate::mapping`]) showed of the
        /// other party's NAT, for the address in `peer_direct_addr`
        /// (absent: untested).
        #[serde(default, skip_serializing_if = "crate::mapping::Mapping::is_unknown")]
        peer_mapping: crate::mapping::Mapping,
        /// This party's own address as the relay sees it now (its
        /// registration's may be old: QUIC follows a client that moved).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        observed_addr: Option<SocketAddr>,
    },
    /// Client asks the relay for its server-reflexive address.
    Reflect,
    /// Relay's answer: the source address it sees.
    ReflectResponse {
        /// The client's address as observed by the relay.
        observed_addr: SocketAddr,
        /// The relay's mapping port, as in `register_presence_ack`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mapping_port: Option<u16>,
        /// The probe's token for this connection (hex in JSON).
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            with = "hex_array_opt"
        )]
        mapping_token: Option<[u8; crate::mapping::TOKEN_LEN]>,
    },
    /// Relay's answer to a mapping probe ([`crate::mapping`]): the address
    /// the probe came from.
    MappingObserved {
        /// The probe's source address as the relay's mapping port saw it.
        observed_addr: SocketAddr,
    },
    /// Relay to relay; kept in the grammar but unused: federation links
    /// open with [`crate::federation::FederationMessage::Hello`] instead.
    FederationHello {
        /// The sending relay's TLS fingerprint.
        tls_fingerprint: TlsFingerprint,
        /// Human-readable relay label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
    },
    /// A relay has local participants in a global room.
    GlobalRoomActive {
        /// Routing name of the room.
        room: String,
        /// The announcing relay's participants (tagged with relay labels).
        #[serde(default)]
        participants: Vec<RoomParticipant>,
    },
    /// A relay no longer has local participants in a global room.
    GlobalRoomInactive {
        /// Routing name of the room.
        room: String,
        /// Remaining participants known through the sender, if any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        participants: Vec<RoomParticipant>,
    },
    /// A signal message carried across a federation link.
    FederatedSignalForward {
        /// The carried message.
        inner: Box<SignalMessage>,
        /// TLS fingerprint of the relay that first forwarded it (loop guard).
        origin_relay_fp: TlsFingerprint,
    },
    /// Relay-to-relay gossip: who is connected at the sender.
    PresenceUpdate {
        /// Fingerprints of the sender's local users.
        fingerprints: Vec<Fingerprint>,
        /// The sender's address.
        relay_addr: String,
    },
    /// Relay-to-relay: where is this fingerprint?
    RouteQuery {
        /// Who is sought.
        fingerprint: Fingerprint,
        /// Remaining hops.
        ttl: u8,
    },
    /// Answer to `RouteQuery`.
    RouteResponse {
        /// Who was sought.
        fingerprint: Fingerprint,
        /// Whether a route exists.
        found: bool,
        /// Relay addresses from the answering relay to the user.
        #[serde(default)]
        relay_chain: Vec<String>,
    },
    /// Relay-to-relay: forward a session's media over a relay link.
    SessionForward {
        /// The session.
        session_id: String,
        /// The user the session is for.
        target_fingerprint: Fingerprint,
        /// Address of the relay that originates the session.
        source_relay: String,
    },
    /// Answer to `SessionForward`.
    SessionForwardAck {
        /// The session.
        session_id: String,
        /// The room the session's media is delivered in.
        room_name: String,
    },
    /// Receiver statistics, on the reliable stream (finer than the 4-byte
    /// media trailer).
    QualityUpdate {
        /// Loss over the last interval, percent.
        loss_pct: f32,
        /// Smoothed round-trip time, ms.
        rtt_ms: u32,
        /// Inter-arrival jitter, ms.
        jitter_ms: u32,
        /// Requested bitrate cap, kbit/s.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bitrate_cap_kbps: Option<u32>,
        /// Codec the receiver suggests the sender switch to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recommended_codec: Option<String>,
        /// Where the sender's media goes: `"relay"`, or `"direct"` while a
        /// direct call's media goes straight to the peer (docs/WIRE.md §10).
        /// Other values read as `"relay"`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media_path: Option<String>,
    },
    /// Loss-recovery counters, monotonic since call start.
    LossRecoveryUpdate {
        /// Frames rebuilt from Opus DRED.
        #[serde(default)]
        dred_reconstructions: u64,
        /// Frames concealed by classical PLC.
        #[serde(default)]
        classical_plc_invocations: u64,
        /// Frames decoded in total.
        #[serde(default)]
        frames_decoded: u64,
        /// Frames recovered from Opus in-band FEC (LBRR).
        #[serde(default)]
        lbrr_recoveries: u64,
    },
    /// Client to relay on a room connection, after `Hello`: the signed
    /// request to enter the room its SNI names ([`crate::join`]).
    Join(Box<crate::join::Join>),
    /// Client to relay on an admitted room stream: the member's own state,
    /// which the relay shows the room in its `RoomUpdate`s (relays whose
    /// `hello` lists [`FEATURE_MEMBER_STATE`]; older ones ignore it).
    MemberState {
        /// The member's microphone is muted.
        #[serde(default)]
        muted: bool,
        /// The member records the call (sent only to relays whose `hello`
        /// lists [`FEATURE_RECORDING`]).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        recording: bool,
    },
    /// Relay to each device of a callee that was in another call when
    /// someone called (the caller was answered `busy`): who it was. At most
    /// one per caller and callee every [`MISSED_CALL_QUIET`] (a caller
    /// that calls again at once is not told twice). Older clients skip it.
    MissedCall {
        /// The refused offer's call id.
        call_id: String,
        /// Who called (the relay checked it: the caller's registration).
        caller_fingerprint: Fingerprint,
        /// What the caller calls itself: its claim, as in an offer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller_alias: Option<String>,
    },
    /// Client to relay, on `_signal`: the message key of `fingerprint`, to
    /// seal a voice message to (relays listing [`FEATURE_VOICE_MESSAGES`]).
    MessageKeyQuery {
        /// Whose key.
        fingerprint: Fingerprint,
    },
    /// Relay to client: the answer to a `message_key_query`. `key` absent:
    /// this relay holds no message key for the person (they never
    /// registered here since it started), so it takes no message for them.
    MessageKey {
        /// Whose key was asked for.
        fingerprint: Fingerprint,
        /// The person's signed message key (check it: [`crate::voice_message::MessageKey::verify`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<Box<crate::voice_message::MessageKey>>,
    },
    /// One part of a sealed voice message ([`crate::voice_message`]): client
    /// to relay, leaving it for `to`; relay to client, handing over one left
    /// for it (`from`, `age_ms`), after a `fetch_voice_messages`.
    VoiceMessage {
        /// The message: 1..=32 of `[a-z0-9-]`, chosen by its sender.
        id: String,
        /// Client to relay: for whom.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<Fingerprint>,
        /// Relay to client: who left it (the relay saw them registered).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Fingerprint>,
        /// Relay to client: how long ago the relay took it, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        age_ms: Option<u64>,
        /// Which part, from 0.
        part: u32,
        /// How many parts, 1..=[`crate::voice_message::MAX_MESSAGE_PARTS`].
        parts: u32,
        /// The part's bytes (at most [`crate::voice_message::MESSAGE_PART_LEN`]), hex.
        #[serde(with = "hex_vec")]
        data: Vec<u8>,
    },
    /// Relay to client: the relay keeps voice message `id` for its recipient.
    VoiceMessageStored {
        /// The message.
        id: String,
    },
    /// Relay to client: how many voice messages wait for this person here;
    /// sent after a registration when any do, and after the parts of a
    /// `fetch_voice_messages`.
    VoiceMessages {
        /// How many.
        count: u32,
    },
    /// Client to relay: send me the voice messages left for me.
    FetchVoiceMessages,
    /// Client to relay: forget voice message `id` left for me (after
    /// keeping it).
    DeleteVoiceMessage {
        /// The message.
        id: String,
        /// Who left it (as `voice_message`'s `from` said): two senders may
        /// pick one id. Absent: the first with the id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<Fingerprint>,
    },
    /// Relay to client, right after `Hello` on `_signal`: a fresh nonce the
    /// client signs in `RegisterPresence` to prove its fingerprint.
    PresenceChallenge {
        /// 32 random bytes, hex in JSON.
        #[serde(with = "hex_array")]
        nonce: [u8; 32],
    },
    /// A request was refused or not understood. Never ends the session.
    Error {
        /// What was wrong.
        code: ErrorCode,
        /// What was wrong and what to do, for people and logs.
        #[serde(default)]
        message: String,
        /// The `type` (and call id, when there is one) of the refused request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        in_reply_to: Option<String>,
    },
    /// A variant this build does not know (only produced when decoding, e.g.
    /// as the `inner` of a forward from a newer relay). Cannot be encoded.
    #[serde(other)]
    Unrecognized,
}

fn default_min_version() -> u32 {
    1
}

/// Every variant's JSON `"type"` name, in declaration order (excluding
/// [`SignalMessage::Unrecognized`]).
pub const MESSAGE_TYPES: &[&str] = &[
    "hello",
    "call_offer",
    "call_answer",
    "call_confirm",
    "hangup",
    "ping",
    "pong",
    "room_update",
    "register_presence",
    "register_presence_ack",
    "direct_call_offer",
    "direct_call_answer",
    "call_ringing",
    "call_setup",
    "reflect",
    "reflect_response",
    "mapping_observed",
    "federation_hello",
    "global_room_active",
    "global_room_inactive",
    "federated_signal_forward",
    "presence_update",
    "route_query",
    "route_response",
    "session_forward",
    "session_forward_ack",
    "quality_update",
    "loss_recovery_update",
    "join",
    "member_state",
    "missed_call",
    "message_key_query",
    "message_key",
    "voice_message",
    "voice_message_stored",
    "voice_messages",
    "fetch_voice_messages",
    "delete_voice_message",
    "call_hold",
    "presence_challenge",
    "error",
];

impl SignalMessage {
    /// This build's `Hello`.
    pub fn hello(software: Option<String>) -> SignalMessage {
        SignalMessage::Hello {
            version: SIGNAL_VERSION,
            min_version: MIN_SIGNAL_VERSION,
            software,
            features: Vec::new(),
        }
    }

    /// The JSON `"type"` name of this message.
    pub fn type_name(&self) -> &'static str {
        use SignalMessage as M;
        match self {
            M::Hello { .. } => "hello",
            M::CallOffer { .. } => "call_offer",
            M::CallAnswer { .. } => "call_answer",
            M::CallConfirm { .. } => "call_confirm",
            M::CallPath { .. } => "call_path",
            M::CallHold { .. } => "call_hold",
            M::Hangup { .. } => "hangup",
            M::Ping { .. } => "ping",
            M::Pong { .. } => "pong",
            M::RoomUpdate { .. } => "room_update",
            M::RegisterPresence { .. } => "register_presence",
            M::RegisterPresenceAck { .. } => "register_presence_ack",
            M::DirectCallOffer { .. } => "direct_call_offer",
            M::DirectCallAnswer { .. } => "direct_call_answer",
            M::CallRinging { .. } => "call_ringing",
            M::CallSetup { .. } => "call_setup",
            M::Reflect => "reflect",
            M::ReflectResponse { .. } => "reflect_response",
            M::MappingObserved { .. } => "mapping_observed",
            M::FederationHello { .. } => "federation_hello",
            M::GlobalRoomActive { .. } => "global_room_active",
            M::GlobalRoomInactive { .. } => "global_room_inactive",
            M::FederatedSignalForward { .. } => "federated_signal_forward",
            M::PresenceUpdate { .. } => "presence_update",
            M::RouteQuery { .. } => "route_query",
            M::RouteResponse { .. } => "route_response",
            M::SessionForward { .. } => "session_forward",
            M::SessionForwardAck { .. } => "session_forward_ack",
            M::QualityUpdate { .. } => "quality_update",
            M::LossRecoveryUpdate { .. } => "loss_recovery_update",
            M::Join(_) => "join",
            M::MemberState { .. } => "member_state",
            M::MissedCall { .. } => "missed_call",
            M::MessageKeyQuery { .. } => "message_key_query",
            M::MessageKey { .. } => "message_key",
            M::VoiceMessage { .. } => "voice_message",
            M::VoiceMessageStored { .. } => "voice_message_stored",
            M::VoiceMessages { .. } => "voice_messages",
            M::FetchVoiceMessages => "fetch_voice_messages",
            M::DeleteVoiceMessage { .. } => "delete_voice_message",
            M::PresenceChallenge { .. } => "presence_challenge",
            M::Error { .. } => "error",
            M::Unrecognized => "unrecognized",
        }
    }

    fn contains_unrecognized(&self) -> bool {
        match self {
            SignalMessage::Unrecognized => true,
            SignalMessage::FederatedSignalForward { inner, .. } => inner.contains_unrecognized(),
            _ => false,
        }
    }
}

/// The bytes a client signs in `RegisterPresence`:
/// `"wzp-presence-v1" || identity_pub (32) || timestamp_ms (u64 BE)`.
pub fn presence_signed_bytes(identity_pub: &[u8; 32], timestamp_ms: u64) -> [u8; 55] {
    let mut b = [0u8; 55];
    b[..15].copy_from_slice(b"wzp-presence-v1");
    b[15..47].copy_from_slice(identity_pub);
    b[47..].copy_from_slice(&timestamp_ms.to_be_bytes());
    b
}

/// Domain label of [`presence_challenge_signed_bytes`].
pub const PRESENCE_CHALLENGE_LABEL: &[u8] = b"wzp-presence-v2";

/// The bytes a client signs in a challenged `RegisterPresence`:
/// `"wzp-presence-v2" || nonce (32) || relay_tls_fingerprint (32) || identity_pub (32)`
/// (111 bytes). The nonce makes a signature good for one connection only; the
/// relay's TLS fingerprint makes it good for one relay only.
pub fn presence_challenge_signed_bytes(
    nonce: &[u8; 32],
    relay: &TlsFingerprint,
    identity_pub: &[u8; 32],
) -> [u8; 111] {
    let mut b = [0u8; 111];
    b[..15].copy_from_slice(PRESENCE_CHALLENGE_LABEL);
    b[15..47].copy_from_slice(nonce);
    b[47..79].copy_from_slice(&relay.0);
    b[79..].copy_from_slice(identity_pub);
    b
}

/// Negotiates the signaling version from the peer's first message.
///
/// Returns the agreed version (the lower of both `version`s). Fails with
/// [`SignalError::ExpectedHello`] if `peer_first` is not `Hello`, and with
/// [`SignalError::VersionMismatch`] if the agreed version is below either
/// side's `min_version`; then send `Hangup { reason: error }` and close.
pub fn negotiate_version(peer_first: &Decoded) -> Result<u32, SignalError> {
    let (their_max, their_min) = match peer_first {
        Decoded::Message(SignalMessage::Hello {
            version,
            min_version,
            ..
        }) => (*version, *min_version),
        Decoded::Message(other) => {
            return Err(SignalError::ExpectedHello {
                got: other.type_name().to_string(),
            })
        }
        Decoded::Unknown { type_name } => {
            return Err(SignalError::ExpectedHello {
                got: type_name.clone(),
            })
        }
    };
    let agreed = SIGNAL_VERSION.min(their_max);
    if agreed < MIN_SIGNAL_VERSION.max(their_min) || their_min > their_max {
        return Err(SignalError::VersionMismatch {
            our_min: MIN_SIGNAL_VERSION,
            our_max: SIGNAL_VERSION,
            their_min,
            their_max,
        });
    }
    Ok(agreed)
}

/// A decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    /// A message this build knows.
    Message(SignalMessage),
    /// A message type this build does not know; log it and go on.
    Unknown {
        /// The frame's `"type"` value.
        type_name: String,
    },
}

/// Decodes one frame body (the JSON, without the length prefix).
pub fn decode_message(json: &[u8]) -> Result<Decoded, SignalError> {
    match serde_json::from_slice::<SignalMessage>(json) {
        Ok(SignalMessage::Unrecognized) => {
            #[derive(Deserialize)]
            struct Tag {
                #[serde(rename = "type")]
                type_name: String,
            }
            let tag: Tag = serde_json::from_slice(json).map_err(SignalError::Malformed)?;
            tracing::debug!(type_name = %tag.type_name, "ignoring unknown signal message type");
            Ok(Decoded::Unknown {
                type_name: tag.type_name,
            })
        }
        Ok(msg) => Ok(Decoded::Message(msg)),
        Err(e) => Err(SignalError::Malformed(e)),
    }
}

/// Appends one frame (length prefix and JSON) to `out`.
pub fn encode_frame_into(msg: &SignalMessage, out: &mut Vec<u8>) -> Result<(), SignalError> {
    if msg.contains_unrecognized() {
        return Err(SignalError::Encode(
            "an unrecognized message cannot be re-encoded".into(),
        ));
    }
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    if let Err(e) = serde_json::to_writer(&mut *out, msg) {
        out.truncate(start);
        return Err(SignalError::Encode(e.to_string()));
    }
    let len = out.len() - start - FRAME_HEADER_LEN;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(SignalError::FrameTooLarge { len });
    }
    // len <= 1 MiB, so it fits in u32.
    out[start..start + FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Encodes one frame (length prefix and JSON).
pub fn encode_frame(msg: &SignalMessage) -> Result<Vec<u8>, SignalError> {
    let mut out = Vec::new();
    encode_frame_into(msg, &mut out)?;
    Ok(out)
}

/// Reads and checks a frame header.
fn frame_len(header: [u8; FRAME_HEADER_LEN]) -> Result<usize, SignalError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME_LEN {
        return Err(SignalError::FrameTooLarge { len });
    }
    Ok(len)
}

/// Incremental frame decoder: push bytes as they arrive, pull frames.
///
/// ```
/// use wzp_proto::signal::{encode_frame, Decoded, FrameDecoder, SignalMessage};
/// let bytes = encode_frame(&SignalMessage::Ping { timestamp_ms: 7 }).unwrap();
/// let mut dec = FrameDecoder::new();
/// dec.push(&bytes[..3]).unwrap();
/// assert!(dec.next_frame().unwrap().is_none());
/// dec.push(&bytes[3..]).unwrap();
/// assert_eq!(dec.next_frame().unwrap(), Some(Decoded::Message(SignalMessage::Ping { timestamp_ms: 7 })));
/// ```
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    poisoned: bool,
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// An empty decoder that takes frames up to [`MAX_FRAME_LEN`].
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_max_frame(MAX_FRAME_LEN)
    }

    /// An empty decoder that refuses (and is poisoned by) any frame whose
    /// body exceeds `max_frame` bytes (at most [`MAX_FRAME_LEN`]): a relay
    /// reads small client frames and need not buffer a megabyte for each.
    pub fn with_max_frame(max_frame: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            poisoned: false,
            max_frame: max_frame.min(MAX_FRAME_LEN),
        }
    }

    /// The largest frame body this decoder accepts.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Appends received bytes. Fails if more than [`MAX_BUFFERED`] bytes would
    /// be pending (the bytes are then not taken).
    pub fn push(&mut self, data: &[u8]) -> Result<(), SignalError> {
        if self.poisoned {
            return Err(SignalError::Poisoned);
        }
        if self.start > 0 && (self.start >= self.buf.len() / 2 || self.start > 64 * 1024) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let buffered = self.buffered() + data.len();
        if buffered > 2 * (FRAME_HEADER_LEN + self.max_frame) {
            return Err(SignalError::BufferFull { buffered });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Pulls the next complete frame, or `Ok(None)` if more bytes are needed.
    ///
    /// A [`SignalError::Malformed`] frame is consumed and decoding can go on;
    /// [`SignalError::FrameTooLarge`] poisons the decoder.
    pub fn next_frame(&mut self) -> Result<Option<Decoded>, SignalError> {
        if self.poisoned {
            return Err(SignalError::Poisoned);
        }
        let pending = &self.buf[self.start..];
        let Some((header, body)) = pending.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = match frame_len(*header).and_then(|len| {
            if len > self.max_frame {
                Err(SignalError::FrameTooLarge { len })
            } else {
                Ok(len)
            }
        }) {
            Ok(len) => len,
            Err(e) => {
                self.poisoned = true;
                self.buf = Vec::new();
                self.start = 0;
                return Err(e);
            }
        };
        let Some(json) = body.get(..len) else {
            return Ok(None);
        };
        let decoded = decode_message(json);
        self.start += FRAME_HEADER_LEN + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        decoded.map(Some)
    }

    /// Call at end of stream: fails if a partial frame is pending.
    pub fn finish(&self) -> Result<(), SignalError> {
        let have = self.buffered();
        if have == 0 {
            return Ok(());
        }
        let need = match self.buf[self.start..].split_first_chunk::<FRAME_HEADER_LEN>() {
            Some((header, _)) => FRAME_HEADER_LEN + u32::from_be_bytes(*header) as usize,
            None => FRAME_HEADER_LEN,
        };
        Err(SignalError::Truncated { need, have })
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on EOF before the first byte.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8], total: usize) -> Result<bool, SignalError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 && total == 0 => return Ok(false),
            Ok(0) => {
                return Err(SignalError::Truncated {
                    need: total + buf.len(),
                    have: total + filled,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SignalError::Io(e)),
        }
    }
    Ok(true)
}

/// Blocking read of one frame. `Ok(None)` on a clean end of stream between
/// frames. The length is checked before the body buffer is allocated.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Decoded>, SignalError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    if !read_full(r, &mut header, 0)? {
        return Ok(None);
    }
    let len = frame_len(header)?;
    let mut body = vec![0u8; len];
    read_full(r, &mut body, FRAME_HEADER_LEN)?;
    decode_message(&body).map(Some)
}

/// Blocking write of one frame.
pub fn write_frame<W: Write>(w: &mut W, msg: &SignalMessage) -> Result<(), SignalError> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)?;
    Ok(())
}

/// Serde helpers: bytes as lowercase hex strings.
mod hex_vec {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(s.as_ref()).map_err(serde::de::Error::custom)
    }
}

mod hex_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex_vec::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| hex::decode(s.as_ref()).map_err(serde::de::Error::custom))
            .transpose()
    }
}

mod hex_array_opt {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(
        v: &Option<[u8; N]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::hex_array::serialize(v, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<Option<[u8; N]>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| {
            let mut out = [0u8; N];
            hex::decode_to_slice(s.as_ref(), &mut out).map_err(serde::de::Error::custom)?;
            Ok(out)
        })
        .transpose()
    }
}

pub(crate) mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(s.as_ref(), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}
