//! Relay-to-relay federation: the control messages on a link's stream and the
//! tag in front of every forwarded media datagram (`docs/WIRE.md` §9).
//!
//! A federation link is a QUIC connection with SNI `_federation`, both ends
//! pinned by certificate. Control messages ([`FederationMessage`]) travel on
//! one bidirectional stream in the same framing as signaling: a 4-byte
//! big-endian length, then that many bytes of JSON with a `"type"` tag, at most
//! [`MAX_FEDERATION_FRAME`]. [`FederationDecoder`] is the incremental decoder;
//! every decoded message is checked against the bounds below
//! ([`FederationMessage::validate`]) before it is returned, so the federation
//! core never sees an unbounded list or string.
//!
//! Relays are named on the wire by a [`RelayId`]: the first 8 bytes of their
//! TLS certificate fingerprint, the identity the link's TLS handshake proved.
//! Announcements carry the path of relays they crossed (path-vector routing):
//! a relay drops an announcement whose path already holds its own id.
//!
//! Media crosses a link as a datagram: the [`ForwardTag`] ([`FORWARD_TAG_LEN`]
//! bytes: version, hop count, room id, origin relay) followed by the sealed
//! media packet exactly as the origin relay received it from its client. The
//! payload stays sealed; a relay reads only the clear media header.
//!
//! ```
//! use wzp_proto::federation::*;
//! let hello = FederationMessage::hello("relay-a");
//! let frame = encode_federation_frame(&hello).unwrap();
//! let mut dec = FederationDecoder::new();
//! dec.push(&frame).unwrap();
//! assert_eq!(dec.next_message().unwrap(), Some(hello));
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::handshake::ROOM_ID_LEN;
use crate::identity::{Fingerprint, TlsFingerprint};
use crate::media::{MediaHeader, HEADER_LEN};
use crate::signal::{AcceptMode, HangupReason};

/// The federation protocol version this build speaks. Version 2 adds the
/// call events `path_lost` and `reroute` (a call whose path loses a link
/// moves to another path); they are sent only on links agreed at 2.
/// Version 3 adds `path` (a party's sealed addresses for a direct path),
/// sent only on links agreed at 3. Version 4 adds `rooms` (the global rooms
/// a relay bridges changed while the link is up: a reloaded config), sent
/// only on links agreed at 4. Version 5 adds `mail` (voice messages for a
/// person whose mailbox is on another relay) and the `hold` call event,
/// sent only on links agreed at 5. Version 6 adds `presence_origins` (every
/// relay a person is registered on, not only the nearest) and the `fork` of
/// a `call_signal` (a call ringing a person's devices on several relays),
/// sent only on links agreed at 6. Version 7 adds the `busy` call event (a
/// fork whose relay's devices are all in other calls stays open for the
/// call's outcome), sent only on links agreed at 7.
pub const FEDERATION_VERSION: u32 = 7;
/// The first version with `path_lost` and `reroute`.
pub const REROUTE_VERSION: u32 = 2;
/// The first version with the `path` call event.
pub const PATH_VERSION: u32 = 3;
/// The first version with the `rooms` message.
pub const ROOMS_VERSION: u32 = 4;
/// The first version with the `mail` message.
pub const MAIL_VERSION: u32 = 5;
/// The first version with the `hold` call event.
pub const HOLD_VERSION: u32 = 5;
/// The first version with `presence_origins` and forked calls.
pub const FORK_VERSION: u32 = 6;
/// The first version with the `busy` call event.
pub const BUSY_VERSION: u32 = 7;
/// The oldest federation version this build accepts.
pub const MIN_FEDERATION_VERSION: u32 = 1;
/// Largest JSON body of one control frame: 256 KiB.
pub const MAX_FEDERATION_FRAME: usize = 256 * 1024;
/// Length of the frame length prefix.
pub const FRAME_HEADER_LEN: usize = 4;
/// Most relays an announcement's path may hold (its origin included): a
/// path longer than this is refused, which also bounds how far state spreads.
pub const MAX_PATH: usize = 16;
/// Most participants in one `GlobalRoomActive`.
pub const MAX_PARTICIPANTS: usize = 1024;
/// Most media sender ids one participant of a `GlobalRoomActive` lists
/// (`sfu.fanout` binds at most 16 to a connection).
pub const MAX_PARTICIPANT_SENDERS: usize = 16;
/// Most routes (announced plus withdrawn) in one `PresenceUpdate`.
pub const MAX_PRESENCE_ENTRIES: usize = 2048;
/// Longest relay label or alias, in characters.
pub const MAX_LABEL_CHARS: usize = 64;
/// Most rooms a `Hello` may say the sender bridges.
pub const MAX_GLOBAL_ROOMS: usize = 1024;
/// Most capabilities in a `Hello`.
pub const MAX_CAPABILITIES: usize = 32;
/// Longest capability name, in characters.
pub const MAX_CAPABILITY_CHARS: usize = 32;
/// Capabilities this build has.
pub const CAPABILITIES: &[&str] = &["global_rooms", "presence", "media_v1", "calls"];
/// Most relays a `call_signal`'s path may hold: a call crosses at most this
/// many links (its media stays within [`MAX_MEDIA_HOPS`]).
pub const MAX_CALL_PATH: usize = MAX_MEDIA_HOPS as usize;
/// Largest handshake half in a `call_signal` (the largest, a response, is 130).
pub const MAX_CALL_HANDSHAKE: usize = 256;
/// Most codec names an offer lists.
pub const MAX_CALL_CODECS: usize = 16;
/// Longest codec name, in characters.
pub const MAX_CODEC_CHARS: usize = 32;
/// Longest hangup message, in characters.
pub const MAX_HANGUP_MESSAGE_CHARS: usize = 256;

/// Version byte of the forwarded-media tag.
pub const FORWARD_TAG_VERSION: u8 = 1;
/// Length of the forwarded-media tag: version (1), hops (1), room id (16),
/// origin relay (8).
pub const FORWARD_TAG_LEN: usize = 2 + ROOM_ID_LEN + RELAY_ID_LEN;
/// Most federation links a media packet may cross. A packet arriving with
/// `hops >= MAX_MEDIA_HOPS` is dropped; one whose next hop would reach it is
/// delivered locally and not forwarded.
pub const MAX_MEDIA_HOPS: u8 = 8;

/// Length of a [`RelayId`].
pub const RELAY_ID_LEN: usize = 8;

/// A relay's name on the federation wire: the first 8 bytes of its TLS
/// certificate fingerprint. Printed and serialized as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RelayId(pub [u8; RELAY_ID_LEN]);

impl RelayId {
    /// The id of the relay whose certificate has this fingerprint.
    pub fn of(tls: &TlsFingerprint) -> RelayId {
        let mut id = [0u8; RELAY_ID_LEN];
        id.copy_from_slice(&tls.0[..RELAY_ID_LEN]);
        RelayId(id)
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({self})")
    }
}

impl FromStr for RelayId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut id = [0u8; RELAY_ID_LEN];
        if s.len() != 2 * RELAY_ID_LEN || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("relay id {s:?}: expected 16 lowercase hex digits"));
        }
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| format!("relay id {s:?}: expected 16 lowercase hex digits"))?;
        Ok(RelayId(id))
    }
}

impl Serialize for RelayId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RelayId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A room on the federation wire: [`crate::room_id`] of its name, the same
/// 16 bytes whose hex clients use as SNI. Serialized as 32 lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RoomId(pub [u8; ROOM_ID_LEN]);

impl RoomId {
    /// The id of a room given its SNI hash (32 lowercase hex digits).
    pub fn from_hash(hash: &str) -> Option<RoomId> {
        hash.parse().ok()
    }

    /// The id of a room given its plain name.
    pub fn of_name(name: &str) -> RoomId {
        RoomId(crate::handshake::room_id(name))
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomId({self})")
    }
}

impl FromStr for RoomId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut id = [0u8; ROOM_ID_LEN];
        if s.len() != 2 * ROOM_ID_LEN || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!("room id {s:?}: expected 32 lowercase hex digits"));
        }
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| format!("room id {s:?}: expected 32 lowercase hex digits"))?;
        Ok(RoomId(id))
    }
}

impl Serialize for RoomId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A participant of a global room as announced by the relay it is on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FederatedParticipant {
    /// The participant's user fingerprint.
    pub fingerprint: Fingerprint,
    /// Display name, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The participant said its microphone is muted (`member_state`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub muted: bool,
    /// The participant said it records the call (`member_state`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recording: bool,
    /// The media sender ids its relay bound to its connection (at most
    /// [`MAX_PARTICIPANT_SENDERS`]), as in a room update's participant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<u32>,
}

impl FederatedParticipant {
    /// A participant with no alias, mute or sender.
    pub fn new(fingerprint: Fingerprint) -> Self {
        FederatedParticipant {
            fingerprint,
            alias: None,
            muted: false,
            recording: false,
            senders: Vec::new(),
        }
    }
}

/// A presence route: `fingerprint` is registered on the last relay of `path`,
/// reached through the others. `path[0]` is the sender of the message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct PresenceRoute {
    /// The registered user.
    pub fingerprint: Fingerprint,
    /// Relays from the sender (first) to the one the user is on (last).
    pub path: Vec<RelayId>,
}

/// A person no longer reached on one relay (`presence_origins`' withdraw).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PresenceOrigin {
    /// The registered user.
    pub fingerprint: Fingerprint,
    /// The relay the user was registered on.
    pub origin: RelayId,
}

/// One step of a direct call's signaling, as it crosses federation links
/// (`call_signal`). JSON tag `"kind"`, snake_case. Handshake halves travel as
/// hex; the relays check their shape only, the key stays with the clients.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallEvent {
    /// Caller to callee: the offer (the caller's relay has verified that the
    /// handshake half is the registered caller's).
    Offer {
        /// The caller's display name.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caller_alias: Option<String>,
        /// Encoded `HandshakeInit`.
        #[serde(with = "hex_bytes")]
        handshake: Vec<u8>,
        /// Codec names the caller supports, preferred first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        supported_codecs: Vec<String>,
    },
    /// Callee to caller: the callee is being alerted; `waiting` when it is
    /// in another call and this one rings there as a waiting call (relays
    /// that predate it read a plain `ringing`).
    Ringing {
        /// It rings as a waiting call.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        waiting: bool,
    },
    /// Callee to caller: accepted (`accept_generic` or `accept_trusted`; a
    /// decline travels as a `hangup` with reason `declined`).
    Answer {
        /// How the callee accepted. Addresses never cross a link.
        accept_mode: AcceptMode,
        /// Encoded `HandshakeResponse`.
        #[serde(with = "hex_bytes")]
        handshake: Vec<u8>,
        /// The codec chosen from the offer's list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen_codec: Option<String>,
    },
    /// Caller to callee: the handshake's last half.
    Confirm {
        /// Encoded `HandshakeFinish`.
        #[serde(with = "hex_bytes")]
        handshake: Vec<u8>,
    },
    /// Either way: the call is over.
    Hangup {
        /// Why.
        reason: HangupReason,
        /// Why, for people.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Either way (federation version 2): a link of the call's path went
    /// down. Each relay it crosses forgets its leg; the caller's relay looks
    /// for another path (`reroute`), the callee's waits for one. Neither
    /// party is told unless none comes.
    PathLost {
        /// Which link, for people (the hangup's message if no path comes).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Either way (federation version 3): a party's addresses for a
    /// direct path, sealed with the call's keys for the other party
    /// (`call_path`, [`crate::path_addrs`]). Relays pass it on unread.
    Path {
        /// The sealed addresses, at most
        /// [`crate::path_addrs::MAX_SEALED_PATH`] bytes.
        #[serde(with = "hex_bytes")]
        sealed: Vec<u8>,
    },
    /// Caller to callee, on a call whose path was lost (federation version
    /// 2): the call's new path, hop by hop along the presence route. Every
    /// relay it crosses keeps the call with its neighbours on it (and
    /// bridges the call room, if `answered`); the callee's relay takes its
    /// sender as the call's neighbour.
    Reroute {
        /// The caller's relay had the answer: bridge the room at once (else
        /// the answer, when it comes, bridges it on its way back).
        answered: bool,
    },
    /// Callee to caller, on a fork ([`CallSignal::fork`]) only, on links
    /// agreed at [`BUSY_VERSION`]: the person's devices on the fork's relay
    /// are all in other calls, so nothing rings there. The fork stays open
    /// until the caller's relay ends it with the call's outcome, so that
    /// relay tells its devices of a missed call only when no other device
    /// answered or declined. A relay whose next hop predates it passes a
    /// `hangup` `busy` instead and ends the fork both ways.
    Busy {
        /// Why, for people.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A party of an answered call put it on hold or took it back (its
    /// `call_hold`, sealed for the other party: relays pass it on unread);
    /// either way, on links agreed at [`HOLD_VERSION`].
    Hold {
        /// The sealed notice ([`crate::hold::SEALED_HOLD_LEN`] bytes).
        #[serde(with = "hex_bytes")]
        sealed: Vec<u8>,
    },
}

impl CallEvent {
    /// The `"kind"` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            CallEvent::Offer { .. } => "offer",
            CallEvent::Ringing { .. } => "ringing",
            CallEvent::Answer { .. } => "answer",
            CallEvent::Confirm { .. } => "confirm",
            CallEvent::Hangup { .. } => "hangup",
            CallEvent::PathLost { .. } => "path_lost",
            CallEvent::Path { .. } => "path",
            CallEvent::Reroute { .. } => "reroute",
            CallEvent::Hold { .. } => "hold",
            CallEvent::Busy { .. } => "busy",
        }
    }

    /// Which way it travels: `true` from the caller towards the callee.
    pub fn towards_callee(&self) -> Option<bool> {
        match self {
            CallEvent::Offer { .. } | CallEvent::Confirm { .. } | CallEvent::Reroute { .. } => {
                Some(true)
            }
            CallEvent::Ringing { .. } | CallEvent::Answer { .. } | CallEvent::Busy { .. } => {
                Some(false)
            }
            CallEvent::Hangup { .. }
            | CallEvent::PathLost { .. }
            | CallEvent::Path { .. }
            | CallEvent::Hold { .. } => None,
        }
    }

    fn validate(&self) -> Result<(), String> {
        let handshake = |h: &[u8]| {
            if h.is_empty() || h.len() > MAX_CALL_HANDSHAKE {
                return Err(format!(
                    "call_signal handshake of {} bytes; 1..={MAX_CALL_HANDSHAKE}",
                    h.len()
                ));
            }
            Ok(())
        };
        let codec = |c: &str| {
            if c.is_empty()
                || c.chars().count() > MAX_CODEC_CHARS
                || c.chars().any(char::is_control)
            {
                return Err(format!(
                    "codec {c:?}: 1..={MAX_CODEC_CHARS} printable characters"
                ));
            }
            Ok(())
        };
        match self {
            CallEvent::Offer {
                caller_alias,
                handshake: h,
                supported_codecs,
            } => {
                if let Some(a) = caller_alias {
                    check_text("caller_alias", a, true)?;
                }
                handshake(h)?;
                if supported_codecs.len() > MAX_CALL_CODECS {
                    return Err(format!(
                        "offer lists {} codecs; at most {MAX_CALL_CODECS}",
                        supported_codecs.len()
                    ));
                }
                supported_codecs.iter().try_for_each(|c| codec(c))
            }
            CallEvent::Ringing { .. } => Ok(()),
            CallEvent::Answer {
                accept_mode,
                handshake: h,
                chosen_codec,
            } => {
                if *accept_mode == AcceptMode::Reject {
                    return Err(
                        "answer with accept_mode reject; a decline is a hangup (declined)".into(),
                    );
                }
                handshake(h)?;
                chosen_codec.as_deref().map_or(Ok(()), codec)
            }
            CallEvent::Confirm { handshake: h } => handshake(h),
            CallEvent::Reroute { .. } => Ok(()),
            CallEvent::Hold { sealed } => {
                let n = crate::hold::SEALED_HOLD_LEN;
                if sealed.len() != n {
                    return Err(format!("hold of {} sealed bytes; {n}", sealed.len()));
                }
                Ok(())
            }
            CallEvent::Path { sealed } => {
                let max = crate::path_addrs::MAX_SEALED_PATH;
                if sealed.is_empty() || sealed.len() > max {
                    return Err(format!("path of {} sealed bytes; 1..={max}", sealed.len()));
                }
                Ok(())
            }
            CallEvent::Hangup { message, .. }
            | CallEvent::PathLost { message }
            | CallEvent::Busy { message } => match message {
                Some(m)
                    if m.chars().count() > MAX_HANGUP_MESSAGE_CHARS
                        || m.chars().any(char::is_control) =>
                {
                    Err(format!(
                        "{} message: at most {MAX_HANGUP_MESSAGE_CHARS} printable characters",
                        self.kind()
                    ))
                }
                _ => Ok(()),
            },
        }
    }
}

/// A direct call's signaling between a relay and the federation: which call,
/// its two parties, and the step.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSignal {
    /// The caller's call id (its room is `call-<id>`).
    pub call_id: String,
    /// Who offered.
    pub caller: Fingerprint,
    /// Who is called.
    pub callee: Fingerprint,
    /// Which of the call's forks this is: the relay of the callee's devices
    /// it rings ([`FORK_VERSION`]); `None`: the call's only leg, routed to
    /// the nearest relay the callee is on.
    pub fork: Option<RelayId>,
    /// The step.
    pub event: CallEvent,
}

impl CallSignal {
    /// The `call_signal` message carrying this step along `path`.
    pub fn message(self, path: Vec<RelayId>) -> FederationMessage {
        FederationMessage::CallSignal {
            call_id: self.call_id,
            caller: self.caller,
            callee: self.callee,
            path,
            fork: self.fork,
            event: self.event,
        }
    }

    /// The key a relay keeps this leg of the call under: the call id, and
    /// for a fork its relay (`<id>@<relay>`; a call id has no `@`).
    pub fn leg_key(&self) -> String {
        leg_key(&self.call_id, self.fork)
    }

    /// The call room's id on the federation wire: [`RoomId::of_name`] of
    /// `call-<id>`.
    pub fn room(&self) -> RoomId {
        call_room_id(&self.call_id)
    }
}

/// The key of leg `fork` of call `call_id` ([`CallSignal::leg_key`]).
pub fn leg_key(call_id: &str, fork: Option<RelayId>) -> String {
    match fork {
        None => call_id.to_string(),
        Some(r) => format!("{call_id}@{r}"),
    }
}

/// A voice message's signaling between relays (`mail`, docs/WIRE.md §8.5).
/// A key query floods the mesh; everything else travels along the `path`
/// a query's answer came back on, one hop at a time, relays in between
/// keeping nothing. JSON tag `"kind"`, snake_case.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MailEvent {
    /// Who holds `who`'s mailbox? Outwards from the asking relay to every
    /// relay of the mesh (`path`: the relays it crossed, the asking one
    /// first, the sender last).
    KeyQuery {
        /// The asking relay's number for the query (with `path[0]`, what
        /// relays tell repeats by).
        query: u64,
        /// The person.
        who: Fingerprint,
    },
    /// A relay holding `who`'s message key answers, back towards `path[0]`
    /// (`path`: the query's, this relay appended last).
    Key {
        /// The query's number.
        query: u64,
        /// The person.
        who: Fingerprint,
        /// Their message key (the sender's client checks its signature).
        key: crate::voice_message::MessageKey,
        /// Seconds since `who` was last registered on the answering relay;
        /// 0: registered now. The asking relay takes the freshest.
        seen_s: u64,
    },
    /// One part of a sealed voice message, from `path[0]` to the holder
    /// (`path.last()`).
    Part {
        /// The message's id (the sender's).
        id: String,
        /// Who sent it (registered on `path[0]`).
        from: Fingerprint,
        /// Whose mailbox.
        to: Fingerprint,
        /// This part's number, from 0.
        part: u32,
        /// How many parts.
        parts: u32,
        /// The sealed bytes of this part.
        #[serde(with = "hex_bytes")]
        data: Vec<u8>,
        /// How long ago the message was left, when a relay that kept it
        /// moves it to the one its recipient is on now (absent for a
        /// message being left).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        age_ms: Option<u64>,
    },
    /// The holder kept message `id` (after its last part), back to `path[0]`.
    Stored {
        /// The message's id.
        id: String,
        /// Who sent it.
        from: Fingerprint,
        /// Whose mailbox.
        to: Fingerprint,
    },
    /// Message `id` was not kept (the holder refused a part, or a relay on
    /// the way lost its next link), back to `path[0]`.
    Refused {
        /// The message's id.
        id: String,
        /// Who sent it.
        from: Fingerprint,
        /// Whose mailbox.
        to: Fingerprint,
        /// Why, for the sender (printable, at most
        /// [`MAX_HANGUP_MESSAGE_CHARS`] characters).
        reason: String,
    },
}

impl MailEvent {
    /// The `"kind"` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            MailEvent::KeyQuery { .. } => "key_query",
            MailEvent::Key { .. } => "key",
            MailEvent::Part { .. } => "part",
            MailEvent::Stored { .. } => "stored",
            MailEvent::Refused { .. } => "refused",
        }
    }

    /// Whether the event travels towards `path.last()` (a query, a part)
    /// rather than back towards `path[0]`.
    pub fn outwards(&self) -> bool {
        matches!(self, MailEvent::KeyQuery { .. } | MailEvent::Part { .. })
    }

    /// Checks the bounds a decoded event must keep.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            MailEvent::KeyQuery { .. } | MailEvent::Key { .. } => Ok(()),
            MailEvent::Part {
                id,
                from,
                to,
                part,
                parts,
                data,
                ..
            } => {
                check_mail_id(id, from, to)?;
                let max = crate::voice_message::MAX_MESSAGE_PARTS;
                if !(1..=max).contains(parts) || part >= parts {
                    return Err(format!(
                        "mail part {part} of {parts}; 1..={max} parts, numbered from 0"
                    ));
                }
                let len = crate::voice_message::MESSAGE_PART_LEN;
                if data.is_empty() || data.len() > len {
                    return Err(format!("mail part of {} bytes; 1..={len}", data.len()));
                }
                Ok(())
            }
            MailEvent::Stored { id, from, to } => check_mail_id(id, from, to),
            MailEvent::Refused {
                id,
                from,
                to,
                reason,
            } => {
                check_mail_id(id, from, to)?;
                if reason.chars().count() > MAX_HANGUP_MESSAGE_CHARS
                    || reason.chars().any(char::is_control)
                {
                    return Err(format!(
                        "mail refusal: at most {MAX_HANGUP_MESSAGE_CHARS} printable characters"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A [`MailEvent`] with the path it goes along, between a relay's
/// federation and its signal service.
#[derive(Clone, Debug, PartialEq)]
pub struct MailSignal {
    /// As in [`FederationMessage::Mail`]; the federation fills in this
    /// relay's own place: empty for a query this relay asks, the query's
    /// path (without this relay) for its answer.
    pub path: Vec<RelayId>,
    /// The step.
    pub event: MailEvent,
}

fn check_mail_id(id: &str, from: &Fingerprint, to: &Fingerprint) -> Result<(), String> {
    if !crate::voice_message::valid_message_id(id) {
        return Err(format!(
            "mail id {id:?}: 1..={} of [a-z0-9-]",
            crate::voice_message::MAX_MESSAGE_ID_LEN
        ));
    }
    if from == to {
        return Err("mail with the same sender and recipient".into());
    }
    Ok(())
}

/// The federation id of call `call_id`'s room `call-<id>`.
pub fn call_room_id(call_id: &str) -> RoomId {
    RoomId::of_name(&format!("{}{call_id}", crate::sni::CALL_PREFIX))
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(s.as_ref()).map_err(|_| serde::de::Error::custom("handshake: expected hex"))
    }
}

/// Every federation control message. JSON tag `"type"`, snake_case.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FederationMessage {
    /// First message each side sends on a new link.
    Hello {
        /// The sender's [`FEDERATION_VERSION`].
        version: u32,
        /// The oldest version the sender accepts.
        min_version: u32,
        /// What the sender supports ([`CAPABILITIES`]); unknown ones are ignored.
        #[serde(default)]
        capabilities: Vec<String>,
        /// The sender's own `label` (shown as participants' `relay_label`).
        label: String,
        /// The global rooms the sender bridges; announcements and media for
        /// any other room from this sender are refused.
        #[serde(default)]
        rooms: Vec<RoomId>,
    },
    /// The global rooms the sender bridges from now on, replacing its
    /// `Hello`'s list (its config was reloaded). Sent only on links agreed
    /// at [`ROOMS_VERSION`] or later.
    Rooms {
        /// Every room the sender bridges (not only the changes).
        rooms: Vec<RoomId>,
    },
    /// The relays of `path` reach participants of global room `room` on
    /// `path.last()` (the origin), whose label is `origin_label`. Replaces
    /// what the sender said before for (`room`, origin).
    GlobalRoomActive {
        /// The room (its id: a media room's server name, docs/WIRE.md §9.1).
        room: RoomId,
        /// From the sender (first) to the origin relay (last).
        path: Vec<RelayId>,
        /// The origin relay's own label.
        origin_label: String,
        /// The origin's local participants, each once.
        participants: Vec<FederatedParticipant>,
    },
    /// The sender no longer reaches participants of `room` on `origin`
    /// (they left, or the sender lost its route).
    GlobalRoomInactive {
        /// The room.
        room: RoomId,
        /// The relay whose participants are gone.
        origin: RelayId,
    },
    /// Incremental presence: routes added or changed, and fingerprints the
    /// sender no longer reaches.
    PresenceUpdate {
        /// New or changed routes.
        #[serde(default)]
        announce: Vec<PresenceRoute>,
        /// Fingerprints the sender no longer reaches.
        #[serde(default)]
        withdraw: Vec<Fingerprint>,
    },
    /// Incremental presence per relay a person is on (sent only on links
    /// agreed at [`FORK_VERSION`], beside `presence_update`): a route to
    /// each relay a user is registered on, where `presence_update` carries
    /// the nearest one only. A call rings every relay this lists.
    PresenceOrigins {
        /// New or changed routes; a path's last relay is the one the user
        /// is registered on.
        #[serde(default)]
        announce: Vec<PresenceRoute>,
        /// Users the sender no longer reaches on a relay.
        #[serde(default)]
        withdraw: Vec<PresenceOrigin>,
    },
    /// RTT probe; the peer echoes `id` and `sent_ms` in a `Pong`.
    Ping {
        /// Probe number.
        id: u64,
        /// The sender's clock, milliseconds (only the sender reads it back).
        sent_ms: u64,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The probe's number.
        id: u64,
        /// The probe's `sent_ms`, echoed.
        sent_ms: u64,
    },
    /// A direct call's signaling, hop by hop along the presence route (the
    /// offer) or back along the path the offer took (everything else).
    CallSignal {
        /// The caller's call id: 1..=58 of `[a-z0-9-]`.
        call_id: String,
        /// Who offered.
        caller: Fingerprint,
        /// Who is called.
        callee: Fingerprint,
        /// Relays this message crossed, the one it started on first and the
        /// sender last (1..=[`MAX_CALL_PATH`], no repeats): the loop check and
        /// the hop limit.
        path: Vec<RelayId>,
        /// The fork: the relay of the callee's devices this leg rings
        /// (sent only on links agreed at [`FORK_VERSION`]); absent for a
        /// call's only leg.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fork: Option<RelayId>,
        /// The step.
        event: CallEvent,
    },
    /// A voice message's signaling ([`MailEvent`]). Sent only on links
    /// agreed at [`MAIL_VERSION`] or later.
    Mail {
        /// A query: the relays it crossed, the asking one first, the sender
        /// last. Anything else: the whole way, the asking relay first and
        /// the mailbox's holder last (1..=[`MAX_PATH`], no repeats).
        path: Vec<RelayId>,
        /// The step.
        event: MailEvent,
    },
}

impl FederationMessage {
    /// This build's `Hello`, bridging no room.
    pub fn hello(label: &str) -> FederationMessage {
        FederationMessage::hello_with_rooms(label, Vec::new())
    }

    /// This build's `Hello`, bridging `rooms`.
    pub fn hello_with_rooms(label: &str, rooms: Vec<RoomId>) -> FederationMessage {
        FederationMessage::Hello {
            version: FEDERATION_VERSION,
            min_version: MIN_FEDERATION_VERSION,
            capabilities: CAPABILITIES.iter().map(|c| c.to_string()).collect(),
            label: label.to_string(),
            rooms,
        }
    }

    /// The `"type"` tag.
    pub fn type_name(&self) -> &'static str {
        match self {
            FederationMessage::Hello { .. } => "hello",
            FederationMessage::Rooms { .. } => "rooms",
            FederationMessage::GlobalRoomActive { .. } => "global_room_active",
            FederationMessage::GlobalRoomInactive { .. } => "global_room_inactive",
            FederationMessage::PresenceUpdate { .. } => "presence_update",
            FederationMessage::PresenceOrigins { .. } => "presence_origins",
            FederationMessage::Ping { .. } => "ping",
            FederationMessage::Pong { .. } => "pong",
            FederationMessage::CallSignal { .. } => "call_signal",
            FederationMessage::Mail { .. } => "mail",
        }
    }

    /// Checks the bounds a decoded message must keep; the reason names the
    /// field. Relations to the link (who sent it) are the core's to check.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            FederationMessage::Hello {
                capabilities,
                label,
                rooms,
                ..
            } => {
                check_text("label", label, false)?;
                if rooms.len() > MAX_GLOBAL_ROOMS {
                    return Err(format!(
                        "hello lists {} rooms; at most {MAX_GLOBAL_ROOMS}",
                        rooms.len()
                    ));
                }
                if capabilities.len() > MAX_CAPABILITIES {
                    return Err(format!(
                        "hello lists {} capabilities; at most {MAX_CAPABILITIES}",
                        capabilities.len()
                    ));
                }
                for c in capabilities {
                    if c.is_empty() || c.chars().count() > MAX_CAPABILITY_CHARS {
                        return Err(format!(
                            "capability {c:?}: 1..={MAX_CAPABILITY_CHARS} characters"
                        ));
                    }
                }
                Ok(())
            }
            FederationMessage::GlobalRoomActive {
                path,
                origin_label,
                participants,
                ..
            } => {
                check_path(path)?;
                check_text("origin_label", origin_label, false)?;
                if participants.len() > MAX_PARTICIPANTS {
                    return Err(format!(
                        "global_room_active lists {} participants; at most {MAX_PARTICIPANTS}",
                        participants.len()
                    ));
                }
                let mut seen = std::collections::HashSet::with_capacity(participants.len());
                for p in participants {
                    if let Some(a) = &p.alias {
                        check_text("alias", a, true)?;
                    }
                    if p.senders.len() > MAX_PARTICIPANT_SENDERS {
                        return Err(format!(
                            "participant {} lists {} senders; at most {MAX_PARTICIPANT_SENDERS}",
                            p.fingerprint,
                            p.senders.len()
                        ));
                    }
                    if !seen.insert(p.fingerprint) {
                        return Err(format!("participant {} is listed twice", p.fingerprint));
                    }
                }
                Ok(())
            }
            FederationMessage::Rooms { rooms } => {
                if rooms.len() > MAX_GLOBAL_ROOMS {
                    return Err(format!(
                        "rooms lists {} rooms; at most {MAX_GLOBAL_ROOMS}",
                        rooms.len()
                    ));
                }
                Ok(())
            }
            FederationMessage::GlobalRoomInactive { .. } => Ok(()),
            FederationMessage::PresenceUpdate { announce, withdraw } => {
                check_presence(self.type_name(), announce, withdraw.len())
            }
            FederationMessage::PresenceOrigins { announce, withdraw } => {
                check_presence(self.type_name(), announce, withdraw.len())
            }
            FederationMessage::Ping { .. } | FederationMessage::Pong { .. } => Ok(()),
            FederationMessage::CallSignal {
                call_id,
                caller,
                callee,
                path,
                event,
                fork,
            } => {
                if crate::sni::call_room(call_id).is_none() {
                    return Err(format!(
                        "call_id {call_id:?}: 1..={} of [a-z0-9-]",
                        crate::sni::MAX_CALL_ID
                    ));
                }
                if caller == callee {
                    return Err("call_signal with the same caller and callee".into());
                }
                check_path_within(path, MAX_CALL_PATH)?;
                if matches!(event, CallEvent::Busy { .. }) && fork.is_none() {
                    return Err(
                        "call_signal busy on a call's only leg; it travels on a fork".into(),
                    );
                }
                event.validate()
            }
            FederationMessage::Mail { path, event } => {
                check_path(path)?;
                event.validate()
            }
        }
    }
}

fn check_text(field: &str, s: &str, may_be_empty: bool) -> Result<(), String> {
    let n = s.chars().count();
    if (n == 0 && !may_be_empty) || n > MAX_LABEL_CHARS || s.chars().any(char::is_control) {
        return Err(format!(
            "{field}: {}..={MAX_LABEL_CHARS} printable characters",
            usize::from(!may_be_empty)
        ));
    }
    Ok(())
}

/// A presence message's bounds: at most [`MAX_PRESENCE_ENTRIES`] entries
/// together, each announced path well formed.
fn check_presence(kind: &str, announce: &[PresenceRoute], withdrawn: usize) -> Result<(), String> {
    let n = announce.len() + withdrawn;
    if n > MAX_PRESENCE_ENTRIES {
        return Err(format!(
            "{kind} holds {n} entries; at most {MAX_PRESENCE_ENTRIES}"
        ));
    }
    for r in announce {
        check_path(&r.path)?;
    }
    Ok(())
}

fn check_path(path: &[RelayId]) -> Result<(), String> {
    check_path_within(path, MAX_PATH)
}

fn check_path_within(path: &[RelayId], max: usize) -> Result<(), String> {
    if path.is_empty() {
        return Err("path is empty; it starts with the sender and ends with the origin".into());
    }
    if path.len() > max {
        return Err(format!("path of {} relays; at most {max}", path.len()));
    }
    for (i, r) in path.iter().enumerate() {
        if path[..i].contains(r) {
            return Err(format!("path names relay {r} twice (a loop)"));
        }
    }
    Ok(())
}

/// Why a federation frame or message was refused.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The length prefix announced more than [`MAX_FEDERATION_FRAME`]. Fatal:
    /// the stream is out of sync; close the link.
    #[error("federation frame of {len} bytes exceeds the {MAX_FEDERATION_FRAME}-byte limit; closing the link")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
    },
    /// The frame is not a message this build knows (bad JSON, unknown type,
    /// missing field). Not fatal: count it and read on.
    #[error("malformed federation message: {0}")]
    Malformed(String),
    /// The message decoded but breaks a bound. Not fatal.
    #[error("invalid federation message: {0}")]
    Invalid(String),
    /// More bytes were pushed than two full frames without pulling messages.
    #[error("federation decoder buffer full ({buffered} bytes); pull messages between pushes")]
    BufferFull {
        /// Bytes that would have been buffered.
        buffered: usize,
    },
    /// A fatal error happened earlier.
    #[error("federation decoder is unusable after an earlier fatal error")]
    Poisoned,
    /// The stream ended inside a frame.
    #[error("federation stream ended inside a frame ({have} bytes pending)")]
    Truncated {
        /// Bytes pending.
        have: usize,
    },
    /// Encoding failed or the encoded frame is too large.
    #[error("cannot encode federation message: {0}")]
    Encode(String),
}

impl FederationError {
    /// Whether the link's stream must be closed.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            FederationError::FrameTooLarge { .. }
                | FederationError::Poisoned
                | FederationError::Truncated { .. }
        )
    }
}

/// Decodes and checks one frame body (the JSON without the length prefix).
pub fn decode_federation_message(json: &[u8]) -> Result<FederationMessage, FederationError> {
    let msg: FederationMessage =
        serde_json::from_slice(json).map_err(|e| FederationError::Malformed(e.to_string()))?;
    msg.validate().map_err(FederationError::Invalid)?;
    Ok(msg)
}

/// Encodes one frame (length prefix and JSON). Refuses a message that breaks
/// a bound, so a relay never sends what its peer would refuse.
pub fn encode_federation_frame(msg: &FederationMessage) -> Result<Vec<u8>, FederationError> {
    msg.validate().map_err(FederationError::Encode)?;
    let mut out = vec![0u8; FRAME_HEADER_LEN];
    serde_json::to_writer(&mut out, msg).map_err(|e| FederationError::Encode(e.to_string()))?;
    let len = out.len() - FRAME_HEADER_LEN;
    if len > MAX_FEDERATION_FRAME {
        return Err(FederationError::Encode(format!(
            "{} of {len} bytes exceeds the {MAX_FEDERATION_FRAME}-byte frame limit; split it",
            msg.type_name()
        )));
    }
    out[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Incremental decoder of a link's control stream: push bytes, pull checked
/// messages. Buffers at most two full frames.
#[derive(Debug, Default)]
pub struct FederationDecoder {
    buf: Vec<u8>,
    start: usize,
    poisoned: bool,
}

impl FederationDecoder {
    /// An empty decoder.
    pub fn new() -> FederationDecoder {
        FederationDecoder::default()
    }

    /// Appends received bytes; fails (taking nothing) past two full frames.
    pub fn push(&mut self, data: &[u8]) -> Result<(), FederationError> {
        if self.poisoned {
            return Err(FederationError::Poisoned);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let buffered = self.buf.len() + data.len();
        if buffered > 2 * (FRAME_HEADER_LEN + MAX_FEDERATION_FRAME) {
            return Err(FederationError::BufferFull { buffered });
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Bytes received and not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next message, `Ok(None)` if more bytes are needed. A malformed or
    /// invalid frame is consumed (decode on); a too-large one poisons.
    pub fn next_message(&mut self) -> Result<Option<FederationMessage>, FederationError> {
        if self.poisoned {
            return Err(FederationError::Poisoned);
        }
        let pending = &self.buf[self.start..];
        let Some((header, body)) = pending.split_first_chunk::<FRAME_HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header) as usize;
        if len > MAX_FEDERATION_FRAME {
            self.poisoned = true;
            self.buf = Vec::new();
            self.start = 0;
            return Err(FederationError::FrameTooLarge { len });
        }
        let Some(json) = body.get(..len) else {
            return Ok(None);
        };
        let decoded = decode_federation_message(json);
        self.start += FRAME_HEADER_LEN + len;
        decoded.map(Some)
    }

    /// Call at end of stream: fails if a partial frame is pending.
    pub fn finish(&self) -> Result<(), FederationError> {
        match self.buffered() {
            0 => Ok(()),
            have => Err(FederationError::Truncated { have }),
        }
    }
}

/// The tag in front of a forwarded media datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardTag {
    /// Federation links crossed before this one (the origin sends 0).
    pub hops: u8,
    /// The global room.
    pub room: RoomId,
    /// The relay whose client sent the packet.
    pub origin: RelayId,
}

/// Why a forwarded datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForwardError {
    /// Shorter than the tag plus a media header.
    #[error(
        "forwarded datagram of {have} bytes is shorter than the {need}-byte tag and media header"
    )]
    TooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes received.
        have: usize,
    },
    /// Unknown tag version.
    #[error("forwarded datagram tag version {0}; this build reads version 1")]
    Version(u8),
    /// The packet already crossed [`MAX_MEDIA_HOPS`] links.
    #[error("forwarded datagram crossed {0} links; the limit is {MAX_MEDIA_HOPS}")]
    HopLimit(u8),
    /// The media header inside does not parse.
    #[error("forwarded datagram holds a bad media header")]
    BadMedia,
}

/// A parsed forwarded datagram, borrowing the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardedMedia<'a> {
    /// The tag.
    pub tag: ForwardTag,
    /// The media header's sender id (clear).
    pub sender_id: u32,
    /// The media header's sequence number (clear).
    pub seq: u32,
    /// The packet's dedup lane ([`crate::dedup::lane_of`]): repair symbols,
    /// key epochs and directions each number their own `seq`s.
    pub lane: u32,
    /// The sealed media packet, header included, as the origin received it.
    pub packet: &'a [u8],
}

impl ForwardTag {
    /// Writes the tag into the first [`FORWARD_TAG_LEN`] bytes of `out`;
    /// `None` if `out` is shorter. Never allocates.
    pub fn write(&self, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..FORWARD_TAG_LEN)?;
        out[0] = FORWARD_TAG_VERSION;
        out[1] = self.hops;
        out[2..2 + ROOM_ID_LEN].copy_from_slice(&self.room.0);
        out[2 + ROOM_ID_LEN..].copy_from_slice(&self.origin.0);
        Some(())
    }

    /// The tag as bytes.
    pub fn to_bytes(&self) -> [u8; FORWARD_TAG_LEN] {
        let mut b = [0u8; FORWARD_TAG_LEN];
        // FORWARD_TAG_LEN bytes always fit.
        let _ = self.write(&mut b);
        b
    }
}

/// Parses a forwarded datagram: tag, then a sealed media packet whose clear
/// header gives the sender and sequence (the dedup key). Never allocates or
/// panics.
pub fn parse_forwarded(buf: &[u8]) -> Result<ForwardedMedia<'_>, ForwardError> {
    let need = FORWARD_TAG_LEN + HEADER_LEN;
    if buf.len() < need {
        return Err(ForwardError::TooShort {
            need,
            have: buf.len(),
        });
    }
    let (tag, packet) = buf.split_at(FORWARD_TAG_LEN);
    if tag[0] != FORWARD_TAG_VERSION {
        return Err(ForwardError::Version(tag[0]));
    }
    let hops = tag[1];
    if hops >= MAX_MEDIA_HOPS {
        return Err(ForwardError::HopLimit(hops));
    }
    let mut room = [0u8; ROOM_ID_LEN];
    room.copy_from_slice(&tag[2..2 + ROOM_ID_LEN]);
    let mut origin = [0u8; RELAY_ID_LEN];
    origin.copy_from_slice(&tag[2 + ROOM_ID_LEN..]);
    let (header, _) = MediaHeader::parse(packet).map_err(|_| ForwardError::BadMedia)?;
    Ok(ForwardedMedia {
        tag: ForwardTag {
            hops,
            room: RoomId(room),
            origin: RelayId(origin),
        },
        sender_id: header.sender_id,
        seq: header.seq,
        lane: crate::dedup::lane_of(&header),
        packet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::MediaHeader;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint([n; crate::identity::FINGERPRINT_LEN])
    }

    fn rid(n: u8) -> RelayId {
        RelayId([n; RELAY_ID_LEN])
    }

    fn examples() -> Vec<FederationMessage> {
        vec![
            FederationMessage::hello("relay-a"),
            FederationMessage::hello_with_rooms("relay-b", vec![RoomId::of_name("general")]),
            FederationMessage::Rooms {
                rooms: vec![RoomId::of_name("general"), RoomId::of_name("lobby")],
            },
            FederationMessage::GlobalRoomActive {
                room: RoomId::of_name("general"),
                path: vec![rid(1), rid(2)],
                origin_label: "relay-b".into(),
                participants: vec![
                    FederatedParticipant {
                        fingerprint: fp(1),
                        alias: Some("ann".into()),
                        muted: true,
                        recording: true,
                        senders: vec![7, u32::MAX],
                    },
                    FederatedParticipant::new(fp(2)),
                ],
            },
            FederationMessage::GlobalRoomInactive {
                room: RoomId::of_name("general"),
                origin: rid(2),
            },
            FederationMessage::PresenceUpdate {
                announce: vec![PresenceRoute {
                    fingerprint: fp(3),
                    path: vec![rid(1)],
                }],
                withdraw: vec![fp(4)],
            },
            FederationMessage::PresenceOrigins {
                announce: vec![PresenceRoute {
                    fingerprint: fp(3),
                    path: vec![rid(1), rid(2)],
                }],
                withdraw: vec![PresenceOrigin {
                    fingerprint: fp(4),
                    origin: rid(5),
                }],
            },
            FederationMessage::Ping { id: 9, sent_ms: 1 },
            FederationMessage::Pong { id: 9, sent_ms: 1 },
            call(CallEvent::Offer {
                caller_alias: Some("ann".into()),
                handshake: vec![7; 66],
                supported_codecs: vec!["opus".into()],
            }),
            call(CallEvent::Ringing { waiting: false }),
            call(CallEvent::Ringing { waiting: true }),
            call(CallEvent::Answer {
                accept_mode: AcceptMode::AcceptGeneric,
                handshake: vec![8; 130],
                chosen_codec: Some("opus".into()),
            }),
            call(CallEvent::Confirm {
                handshake: vec![9; 66],
            }),
            call(CallEvent::Hangup {
                reason: HangupReason::Declined,
                message: Some("the callee declined".into()),
            }),
            call(CallEvent::PathLost {
                message: Some("the federation link between relays 1 and 2 was lost".into()),
            }),
            call(CallEvent::PathLost { message: None }),
            call(CallEvent::Reroute { answered: true }),
            call(CallEvent::Reroute { answered: false }),
            CallSignal {
                call_id: "c0ffee-2".into(),
                caller: fp(1),
                callee: fp(2),
                fork: Some(rid(7)),
                event: CallEvent::Ringing { waiting: false },
            }
            .message(vec![rid(1)]),
        ]
    }

    fn call(event: CallEvent) -> FederationMessage {
        CallSignal {
            call_id: "c0ffee-1".into(),
            caller: fp(1),
            callee: fp(2),
            fork: None,
            event,
        }
        .message(vec![rid(1), rid(2)])
    }

    #[test]
    fn a_call_signal_reads_as_documented() {
        let json = format!(
            r#"{{"type":"call_signal","call_id":"abc","caller":"{}","callee":"{}","path":["{}"],"event":{{"kind":"ringing"}}}}"#,
            fp(1),
            fp(2),
            rid(3)
        );
        let m = decode_federation_message(json.as_bytes()).unwrap();
        assert_eq!(
            m,
            CallSignal {
                call_id: "abc".into(),
                caller: fp(1),
                callee: fp(2),
                fork: None,
                event: CallEvent::Ringing { waiting: false }
            }
            .message(vec![rid(3)])
        );
        // A fork names the relay whose devices it rings; older relays never
        // see one (it travels only on links agreed at FORK_VERSION).
        let forked = json.replace(r#""path":"#, &format!(r#""fork":"{}","path":"#, rid(4)));
        let m = decode_federation_message(forked.as_bytes()).unwrap();
        assert!(
            matches!(&m, FederationMessage::CallSignal { fork: Some(r), .. } if *r == rid(4)),
            "{m:?}"
        );
        assert!(
            !String::from_utf8(
                encode_federation_frame(&call(CallEvent::Ringing { waiting: false })).unwrap()[4..]
                    .to_vec()
            )
            .unwrap()
            .contains("fork"),
            "a call's only leg carries no fork"
        );
        assert_eq!(leg_key("abc", None), "abc");
        assert_eq!(leg_key("abc", Some(rid(4))), format!("abc@{}", rid(4)));
        assert_eq!(m.type_name(), "call_signal");
        // A fork whose relay's devices are busy (version 7).
        let busy = forked.replace(r#"{"kind":"ringing"}"#, r#"{"kind":"busy"}"#);
        assert!(matches!(
            decode_federation_message(busy.as_bytes()).unwrap(),
            FederationMessage::CallSignal {
                event: CallEvent::Busy { message: None },
                fork: Some(_),
                ..
            }
        ));
        let waiting = json.replace(
            r#"{"kind":"ringing"}"#,
            r#"{"kind":"ringing","waiting":true}"#,
        );
        assert!(matches!(
            decode_federation_message(waiting.as_bytes()).unwrap(),
            FederationMessage::CallSignal {
                event: CallEvent::Ringing { waiting: true },
                ..
            }
        ));
        assert_eq!(
            call_room_id("abc"),
            RoomId::of_name("call-abc"),
            "the call room's id is its room name's"
        );
    }

    #[test]
    fn messages_round_trip_through_split_frames() {
        let mut stream = Vec::new();
        for m in examples() {
            stream.extend(encode_federation_frame(&m).unwrap());
        }
        for chunk in [1, 3, 7, 64, stream.len()] {
            let mut dec = FederationDecoder::new();
            let mut out = Vec::new();
            for piece in stream.chunks(chunk) {
                dec.push(piece).unwrap();
                while let Some(m) = dec.next_message().unwrap() {
                    out.push(m);
                }
            }
            dec.finish().unwrap();
            assert_eq!(out, examples(), "chunk {chunk}");
        }
    }

    #[test]
    fn room_id_matches_the_sni_hash() {
        let id = RoomId::of_name("general");
        assert_eq!(id.to_string(), crate::room_hash("general"));
        assert_eq!(RoomId::from_hash(&crate::room_hash("general")), Some(id));
    }

    fn frame(json: &str) -> Vec<u8> {
        let mut f = (json.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(json.as_bytes());
        f
    }

    #[test]
    fn bad_frames_are_refused_with_the_reason() {
        let room = crate::room_hash("general");
        let r1 = rid(1).to_string();
        let long = "x".repeat(65);
        let f = fp(1).to_string();
        let many_caps = format!(
            "[{}]",
            (0..33)
                .map(|i| format!("\"c{i}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        let f2 = fp(2).to_string();
        let ring = r#"{"kind":"ringing"}"#;
        let call_path9 = format!(
            "[{}]",
            (0..9u8)
                .map(|i| format!("\"{}\"", rid(i)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let long_path = format!(
            "[{}]",
            (0..17u8)
                .map(|i| format!("\"{}\"", rid(i)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let cases: Vec<(String, &str)> = vec![
            ("not json".into(), "malformed"),
            ("{}".into(), "malformed"),
            (r#"{"type":"gossip"}"#.into(), "unknown variant"),
            (r#"{"type":"hello","version":1}"#.into(), "missing field"),
            (
                r#"{"type":"hello","version":1,"min_version":1,"label":""}"#.into(),
                "label: 1..=64",
            ),
            (
                format!(r#"{{"type":"hello","version":1,"min_version":1,"label":"{long}"}}"#),
                "label: 1..=64",
            ),
            (
                r#"{"type":"hello","version":1,"min_version":1,"label":"a\u0007"}"#.into(),
                "printable",
            ),
            (
                format!(
                    r#"{{"type":"hello","version":1,"min_version":1,"label":"a","capabilities":{many_caps}}}"#
                ),
                "at most 32",
            ),
            (
                format!(
                    r#"{{"type":"hello","version":1,"min_version":1,"label":"a","rooms":[{}]}}"#,
                    vec![format!("\"{room}\""); 1025].join(",")
                ),
                "at most 1024",
            ),
            (
                format!(
                    r#"{{"type":"rooms","rooms":[{}]}}"#,
                    vec![format!("\"{room}\""); 1025].join(",")
                ),
                "at most 1024",
            ),
            (r#"{"type":"rooms"}"#.into(), "missing field"),
            (
                r#"{"type":"rooms","rooms":["ABC"]}"#.into(),
                "32 lowercase hex",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":[],"origin_label":"b","participants":[]}}"#
                ),
                "path is empty",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}","{r1}"],"origin_label":"b","participants":[]}}"#
                ),
                "twice (a loop)",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":{long_path},"origin_label":"b","participants":[]}}"#
                ),
                "at most 16",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"ABC","path":["{r1}"],"origin_label":"b","participants":[]}}"#
                ),
                "32 lowercase hex",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{}","path":["{r1}"],"origin_label":"b","participants":[]}}"#,
                    room.to_uppercase()
                ),
                "32 lowercase hex",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["12"],"origin_label":"b","participants":[]}}"#
                ),
                "16 lowercase hex",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}"],"origin_label":"b","participants":[{{"fingerprint":"{f}"}},{{"fingerprint":"{f}"}}]}}"#
                ),
                "listed twice",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}"],"origin_label":"b","participants":[{{"fingerprint":"{f}","alias":"{long}"}}]}}"#
                ),
                "alias",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}"],"origin_label":"b","participants":[{{"fingerprint":"{f}","senders":[{many}]}}]}}"#,
                    many = vec!["1"; MAX_PARTICIPANT_SENDERS + 1].join(",")
                ),
                "senders",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}"],"origin_label":"b","participants":[{{"fingerprint":"{f}","senders":[-1]}}]}}"#
                ),
                "malformed",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}"],"origin_label":"b","participants":[{{"fingerprint":"{f}","muted":"yes"}}]}}"#
                ),
                "malformed",
            ),
            (
                format!(
                    r#"{{"type":"global_room_active","room":"{room}","path":["{r1}"],"origin_label":"b","participants":[{{"fingerprint":"zz"}}]}}"#
                ),
                "fingerprint",
            ),
            (
                format!(
                    r#"{{"type":"presence_update","announce":[{{"fingerprint":"{f}","path":[]}}]}}"#
                ),
                "path is empty",
            ),
            (
                format!(
                    r#"{{"type":"presence_origins","announce":[{{"fingerprint":"{f}","path":[]}}]}}"#
                ),
                "path is empty",
            ),
            (
                format!(
                    r#"{{"type":"presence_origins","announce":[{{"fingerprint":"{f}","path":["{r1}","{r1}"]}}]}}"#
                ),
                "twice (a loop)",
            ),
            (
                format!(r#"{{"type":"presence_origins","withdraw":[{{"fingerprint":"{f}"}}]}}"#),
                "missing field",
            ),
            (
                format!(
                    r#"{{"type":"presence_origins","withdraw":[{{"fingerprint":"{f}","origin":"12"}}]}}"#
                ),
                "16 lowercase hex",
            ),
            (
                format!(
                    r#"{{"type":"call_signal","call_id":"abc","caller":"{f}","callee":"{f2}","path":["{r1}"],"fork":"xyz","event":{ring}}}"#
                ),
                "16 lowercase hex",
            ),
            (
                call_json("c1", &f, &f2, &format!("[\"{r1}\"]"), r#"{"kind":"busy"}"#),
                "travels on a fork",
            ),
            (
                format!(
                    r#"{{"type":"call_signal","call_id":"abc","caller":"{f}","callee":"{f2}","path":["{r1}"],"fork":"{r1}","event":{{"kind":"busy","message":"a\u0007b"}}}}"#
                ),
                "busy message",
            ),
            (r#"{"type":"ping","id":-1,"sent_ms":0}"#.into(), "malformed"),
            (
                call_json("Bad", &f, &f2, &format!("[\"{r1}\"]"), ring),
                "call_id",
            ),
            (
                call_json("", &f, &f2, &format!("[\"{r1}\"]"), ring),
                "call_id",
            ),
            (
                call_json(&"a".repeat(59), &f, &f2, &format!("[\"{r1}\"]"), ring),
                "call_id",
            ),
            (
                call_json("c1", &f, &f, &format!("[\"{r1}\"]"), ring),
                "same caller and callee",
            ),
            (call_json("c1", &f, &f2, "[]", ring), "path is empty"),
            (
                call_json("c1", &f, &f2, &format!("[\"{r1}\",\"{r1}\"]"), ring),
                "twice (a loop)",
            ),
            (call_json("c1", &f, &f2, &call_path9, ring), "at most 8"),
            (
                call_json("c1", &f, &f2, &format!("[\"{r1}\"]"), r#"{"kind":"dial"}"#),
                "unknown variant",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"offer","handshake":""}"#,
                ),
                "handshake of 0 bytes",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    &format!(r#"{{"kind":"offer","handshake":"{}"}}"#, "ab".repeat(257)),
                ),
                "handshake of 257 bytes",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"offer","handshake":"zz"}"#,
                ),
                "expected hex",
            ),
            (
                call_json("c1", &f, &f2, &format!("[\"{r1}\"]"), r#"{"kind":"offer"}"#),
                "missing field",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    &format!(r#"{{"kind":"offer","handshake":"ab","caller_alias":"{long}"}}"#),
                ),
                "caller_alias",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    &format!(
                        r#"{{"kind":"offer","handshake":"ab","supported_codecs":[{}]}}"#,
                        vec!["\"opus\""; 17].join(",")
                    ),
                ),
                "at most 16",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"offer","handshake":"ab","supported_codecs":[""]}"#,
                ),
                "codec",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"answer","accept_mode":"reject","handshake":"ab"}"#,
                ),
                "a decline is a hangup",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"answer","accept_mode":"maybe","handshake":"ab"}"#,
                ),
                "unknown variant",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    &format!(
                        r#"{{"kind":"answer","accept_mode":"accept_generic","handshake":"ab","chosen_codec":"{long}"}}"#
                    ),
                ),
                "codec",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"confirm","handshake":""}"#,
                ),
                "handshake of 0 bytes",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    &format!(
                        r#"{{"kind":"hangup","reason":"normal","message":"{}"}}"#,
                        "x".repeat(257)
                    ),
                ),
                "hangup message",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"hangup","reason":"normal","message":"a\u0000"}"#,
                ),
                "hangup message",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    &format!(r#"{{"kind":"path_lost","message":"{}"}}"#, "x".repeat(257)),
                ),
                "path_lost message",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"path_lost","message":7}"#,
                ),
                "invalid type",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"reroute_now"}"#,
                ),
                "unknown variant",
            ),
            (
                call_json(
                    "c1",
                    &f,
                    &f2,
                    &format!("[\"{r1}\"]"),
                    r#"{"kind":"reroute"}"#,
                ),
                "missing field `answered`",
            ),
        ];
        for (json, needle) in cases {
            let mut dec = refused(&json, needle);
            // The stream goes on after a refused frame.
            dec.push(
                &encode_federation_frame(&FederationMessage::Ping { id: 1, sent_ms: 2 }).unwrap(),
            )
            .unwrap();
            assert_eq!(
                dec.next_message().unwrap(),
                Some(FederationMessage::Ping { id: 1, sent_ms: 2 })
            );
        }
    }

    /// `json` in a frame is refused, not fatally, saying `needle`; the
    /// decoder, to read on.
    fn refused(json: &str, needle: &str) -> FederationDecoder {
        let mut dec = FederationDecoder::new();
        dec.push(&frame(json)).unwrap();
        let err = dec.next_message().unwrap_err();
        let shown = &json[..json.len().min(200)];
        assert!(!err.is_fatal(), "{shown}: {err} is not fatal");
        assert!(
            err.to_string().contains(needle),
            "{shown}: {err} should say {needle}"
        );
        dec
    }

    #[test]
    fn bad_mail_is_refused_with_the_reason_and_good_mail_reads_back() {
        let (a, b) = (fp(1).to_string(), fp(2).to_string());
        let p1 = format!("[\"{}\"]", rid(1));
        let long_path = format!(
            "[{}]",
            (0..17u8)
                .map(|i| format!("\"{}\"", rid(i)))
                .collect::<Vec<_>>()
                .join(",")
        );
        let mail = |path: &str, event: String| {
            format!(r#"{{"type":"mail","path":{path},"event":{event}}}"#)
        };
        let part = |id: &str, from: &str, part: u32, parts: u32, data: &str| {
            format!(
                r#"{{"kind":"part","id":"{id}","from":"{from}","to":"{b}","part":{part},"parts":{parts},"data":"{data}"}}"#
            )
        };
        let big = "ab".repeat(24 * 1024 + 1);
        let cases: Vec<(String, &str)> = vec![
            (mail("[]", part("m1", &a, 0, 1, "ab")), "path is empty"),
            (mail(&long_path, part("m1", &a, 0, 1, "ab")), "at most 16"),
            (mail(&p1, part("M1", &a, 0, 1, "ab")), "mail id"),
            (mail(&p1, part("", &a, 0, 1, "ab")), "mail id"),
            (
                mail(&p1, part("m1", &b, 0, 1, "ab")),
                "same sender and recipient",
            ),
            (mail(&p1, part("m1", &a, 1, 1, "ab")), "part 1 of 1"),
            (mail(&p1, part("m1", &a, 0, 12, "ab")), "1..=11 parts"),
            (mail(&p1, part("m1", &a, 0, 1, "")), "mail part of 0 bytes"),
            (
                mail(&p1, part("m1", &a, 0, 1, &big)),
                "mail part of 24577 bytes",
            ),
            (mail(&p1, part("m1", &a, 0, 1, "zz")), "hex"),
            (
                mail(
                    &p1,
                    format!(
                        r#"{{"kind":"refused","id":"m1","from":"{a}","to":"{b}","reason":"a\u0007"}}"#
                    ),
                ),
                "printable",
            ),
            (mail(&p1, r#"{"kind":"gossip"}"#.into()), "unknown variant"),
            (
                mail(&p1, r#"{"kind":"key_query","query":1}"#.into()),
                "missing field",
            ),
        ];
        for (json, needle) in cases {
            refused(&json, needle);
        }
        let good = FederationMessage::Mail {
            path: vec![rid(1), rid(2)],
            event: MailEvent::Part {
                id: "m1".into(),
                from: fp(1),
                to: fp(2),
                part: 10,
                parts: 11,
                data: vec![7; crate::voice_message::MESSAGE_PART_LEN],
                age_ms: Some(86_400_000),
            },
        };
        let mut dec = FederationDecoder::new();
        dec.push(&encode_federation_frame(&good).unwrap()).unwrap();
        assert_eq!(dec.next_message().unwrap(), Some(good));
    }

    fn call_json(call_id: &str, caller: &str, callee: &str, path: &str, event: &str) -> String {
        format!(
            r#"{{"type":"call_signal","call_id":"{call_id}","caller":"{caller}","callee":"{callee}","path":{path},"event":{event}}}"#
        )
    }

    #[test]
    fn an_oversized_presence_update_is_refused() {
        let announce = (0..MAX_PRESENCE_ENTRIES as u32 + 1)
            .map(|i| {
                let mut f = [0u8; crate::identity::FINGERPRINT_LEN];
                f[..4].copy_from_slice(&i.to_be_bytes());
                PresenceRoute {
                    fingerprint: Fingerprint(f),
                    path: vec![rid(1)],
                }
            })
            .collect();
        let m = FederationMessage::PresenceUpdate {
            announce,
            withdraw: vec![],
        };
        assert!(m.validate().unwrap_err().contains("at most 2048"));
        assert!(encode_federation_frame(&m).is_err(), "never sent");
        let FederationMessage::PresenceUpdate { announce, .. } = m else {
            unreachable!()
        };
        let m = FederationMessage::PresenceOrigins {
            announce,
            withdraw: vec![],
        };
        assert!(m.validate().unwrap_err().contains("at most 2048"));
        assert!(encode_federation_frame(&m).is_err(), "never sent");
    }

    #[test]
    fn an_oversized_frame_poisons_the_decoder() {
        let mut dec = FederationDecoder::new();
        dec.push(&((MAX_FEDERATION_FRAME as u32 + 1).to_be_bytes()))
            .unwrap();
        let e = dec.next_message().unwrap_err();
        assert!(e.is_fatal(), "{e}");
        assert!(e.to_string().contains("closing the link"), "{e}");
        assert!(matches!(dec.push(b"x"), Err(FederationError::Poisoned)));
        let mut dec = FederationDecoder::new();
        dec.push(&frame("{")[..3]).unwrap();
        assert!(dec.finish().unwrap_err().is_fatal());
        let mut dec = FederationDecoder::new();
        let big = vec![0u8; 2 * (FRAME_HEADER_LEN + MAX_FEDERATION_FRAME) + 1];
        assert!(matches!(
            dec.push(&big),
            Err(FederationError::BufferFull { .. })
        ));
    }

    fn media(sender_id: u32, seq: u32) -> Vec<u8> {
        let h = MediaHeader {
            sender_id,
            seq,
            ..Default::default()
        };
        let mut b = vec![0u8; HEADER_LEN + 5];
        h.encode_into(&mut b).unwrap();
        b[HEADER_LEN..].copy_from_slice(b"seal!");
        b
    }

    #[test]
    fn forwarded_media_round_trips_and_keeps_the_payload() {
        let tag = ForwardTag {
            hops: 3,
            room: RoomId::of_name("general"),
            origin: rid(7),
        };
        let pkt = media(42, 1000);
        let mut dgram = tag.to_bytes().to_vec();
        dgram.extend_from_slice(&pkt);
        let f = parse_forwarded(&dgram).unwrap();
        assert_eq!(f.tag, tag);
        assert_eq!((f.sender_id, f.seq), (42, 1000));
        assert_eq!(f.packet, &pkt[..], "the sealed packet is untouched");
        let mut short = [0u8; FORWARD_TAG_LEN - 1];
        assert!(tag.write(&mut short).is_none());
    }

    #[test]
    fn bad_forwarded_datagrams_are_refused() {
        let good = {
            let mut d = ForwardTag {
                hops: 0,
                room: RoomId::of_name("r"),
                origin: rid(1),
            }
            .to_bytes()
            .to_vec();
            d.extend_from_slice(&media(1, 1));
            d
        };
        let with = |i: usize, v: u8| {
            let mut d = good.clone();
            d[i] = v;
            d
        };
        let cases: Vec<(Vec<u8>, ForwardError)> = vec![
            (vec![], ForwardError::TooShort { need: 48, have: 0 }),
            (
                good[..FORWARD_TAG_LEN + HEADER_LEN - 1].to_vec(),
                ForwardError::TooShort { need: 48, have: 47 },
            ),
            (with(0, 2), ForwardError::Version(2)),
            (
                with(1, MAX_MEDIA_HOPS),
                ForwardError::HopLimit(MAX_MEDIA_HOPS),
            ),
            (with(1, 255), ForwardError::HopLimit(255)),
            // The media header's version bits live in its first byte.
            (with(FORWARD_TAG_LEN, 0xff), ForwardError::BadMedia),
        ];
        for (d, want) in cases {
            assert_eq!(parse_forwarded(&d).unwrap_err(), want, "{d:?}");
        }
        assert!(parse_forwarded(&good).is_ok());
        assert_eq!(FORWARD_TAG_LEN, 26);
    }
}
