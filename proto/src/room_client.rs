//! The client side of entering a relay room, as a sans-IO state machine.
//!
//! On a room connection (SNI = room id or `call-*`) the client opens one
//! bidirectional stream and sends `Hello` then a signed `Join`; the relay
//! answers `Hello`, then a `RoomUpdate` to every member on every join and
//! leave (the first one listing the client means it is in), or refuses with
//! a `Hangup` and a close code ([`crate::close::CloseCode`]).
//!
//! [`JoinExchange`] holds that exchange's state. It owns no socket and reads
//! no clock: the caller passes the Unix time to sign with, writes the bytes
//! it queues ([`JoinExchange::poll_transmit`]) and feeds it the messages it
//! reads ([`JoinExchange::handle_message`]); framing is
//! [`crate::signal::FrameDecoder`]'s job. The client, the relay-load bench
//! and the relay's tests all drive this one machine.
//!
//! ```
//! use wzp_proto::room_client::{JoinEvent, JoinExchange};
//! use wzp_proto::signal::{RoomParticipant, SignalMessage};
//! use wzp_proto::{Decoded, Seed, TlsFingerprint};
//!
//! let me = Seed::from_bytes([1; 32]).identity();
//! let relay = TlsFingerprint([7; 32]);
//! let room = wzp_proto::room_hash("lobby");
//! let mut x = JoinExchange::start(&me, &room, &relay, Some("ann".into()), "wzp-client", 1_700_000_000_000);
//! let hello_and_join = x.poll_transmit().unwrap();
//! assert!(!hello_and_join.is_empty());
//!
//! x.handle_message(Decoded::Message(SignalMessage::hello(Some("wzp-relay".into()))));
//! x.handle_message(Decoded::Message(SignalMessage::RoomUpdate {
//!     room: Some(room.clone()),
//!     count: 1,
//!     participants: vec![RoomParticipant::new(me.fingerprint())],
//!     bridged: false,
//! }));
//! assert!(matches!(x.poll_event(), Some(JoinEvent::RelayHello { .. })));
//! assert!(matches!(x.poll_event(), Some(JoinEvent::Admitted { count: 1, .. })));
//! assert!(x.is_admitted());
//! ```

use std::collections::VecDeque;

use crate::identity::{Fingerprint, Identity, TlsFingerprint};
use crate::join::{Join, RoomAdmissionKey, JOIN_NONCE_LEN};
use crate::signal::{
    encode_frame_into, negotiate_version, Decoded, HangupReason, RoomParticipant, SignalError,
    SignalMessage,
};

/// Where the exchange stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinState {
    /// Hello and Join sent; waiting for the relay's Hello.
    AwaitingHello,
    /// The relay said Hello; waiting for the RoomUpdate that lists us.
    AwaitingAdmission,
    /// In the room.
    Admitted,
    /// The relay refused or ended the session, or spoke a protocol we do
    /// not (see the last [`JoinEvent::Refused`] / [`JoinEvent::Failed`]).
    Ended,
}

/// What the exchange tells its driver.
#[derive(Clone, Debug, PartialEq)]
pub enum JoinEvent {
    /// The relay's Hello, with the agreed signaling version.
    RelayHello {
        /// The version both sides speak.
        version: u32,
        /// The relay's software string.
        software: Option<String>,
        /// The optional features it lists (e.g.
        /// [`crate::signal::FEATURE_MEMBER_STATE`]).
        features: Vec<String>,
    },
    /// The first RoomUpdate listing us: we are in the room.
    Admitted {
        /// Members, us included.
        count: u32,
        /// Who is there.
        participants: Vec<RoomParticipant>,
        /// The relay said it bridges the room across its federation.
        bridged: bool,
    },
    /// A later RoomUpdate: someone joined or left.
    RoomUpdate {
        /// Members, us included.
        count: u32,
        /// Who is there.
        participants: Vec<RoomParticipant>,
    },
    /// The answer to a [`JoinExchange::ping`].
    Pong {
        /// The ping's timestamp.
        timestamp_ms: u64,
    },
    /// The relay refused us or ended the session (a `Hangup`). The close
    /// code that follows on the connection says the same.
    Refused {
        /// Why, as the relay put it.
        reason: HangupReason,
        /// The relay's words, for people.
        message: Option<String>,
    },
    /// The relay does not speak our protocol (no Hello first, or no shared
    /// version): close the connection.
    Failed(String),
    /// A message this client does not act on (an unknown type from a newer
    /// relay, or one that does not belong on a room stream). Never fatal.
    Ignored {
        /// Its `"type"`.
        type_name: String,
    },
}

/// The client side of one room session's signal stream.
#[derive(Debug)]
pub struct JoinExchange {
    me: Fingerprint,
    state: JoinState,
    outbound: Vec<u8>,
    events: VecDeque<JoinEvent>,
}

impl JoinExchange {
    /// Starts the exchange: queues `Hello` (with `software`) and a `Join`
    /// for `room` at the relay whose TLS certificate is `relay`, signed by
    /// `identity` at `now_unix_ms`.
    pub fn start(
        identity: &Identity,
        room: &str,
        relay: &TlsFingerprint,
        alias: Option<String>,
        software: &str,
        now_unix_ms: u64,
    ) -> JoinExchange {
        let mut x = JoinExchange {
            me: identity.fingerprint(),
            state: JoinState::AwaitingHello,
            outbound: Vec::new(),
            events: VecDeque::new(),
        };
        let join = Join::signed(identity, room, relay, alias, now_unix_ms);
        x.queue_hello_join(software, join);
        x
    }

    /// [`JoinExchange::start`] for a room that admits only holders of its
    /// secret: the Join carries the proof by `room_key` over the
    /// connection's `nonce` (`wzp_stages::net::quic::join_nonce`, computed
    /// by the caller from the TLS session) and the relay's fingerprint.
    /// `room` is the room's server name, `room_key.sni()`.
    #[allow(clippy::too_many_arguments)]
    pub fn start_with_room_proof(
        identity: &Identity,
        room: &str,
        relay: &TlsFingerprint,
        alias: Option<String>,
        software: &str,
        now_unix_ms: u64,
        room_key: &RoomAdmissionKey,
        nonce: &[u8; JOIN_NONCE_LEN],
    ) -> JoinExchange {
        let mut x = JoinExchange {
            me: identity.fingerprint(),
            state: JoinState::AwaitingHello,
            outbound: Vec::new(),
            events: VecDeque::new(),
        };
        let join = Join::signed(identity, room, relay, alias, now_unix_ms)
            .with_room_proof(room_key, nonce, relay);
        x.queue_hello_join(software, join);
        x
    }

    fn queue_hello_join(&mut self, software: &str, join: Join) {
        self.queue(&SignalMessage::hello(Some(software.to_string())));
        self.queue(&SignalMessage::Join(Box::new(join)));
    }

    fn queue(&mut self, msg: &SignalMessage) {
        // Our own messages are small and never Unrecognized: encoding
        // cannot fail.
        if let Err(e) = encode_frame_into(msg, &mut self.outbound) {
            self.fail(format!("cannot encode {}: {e}", msg.type_name()));
        }
    }

    fn fail(&mut self, why: String) {
        self.state = JoinState::Ended;
        self.events.push_back(JoinEvent::Failed(why));
    }

    /// Bytes to write to the signal stream, if any are queued.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        (!self.outbound.is_empty()).then(|| std::mem::take(&mut self.outbound))
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<JoinEvent> {
        self.events.pop_front()
    }

    /// Where the exchange stands.
    pub fn state(&self) -> JoinState {
        self.state
    }

    /// Whether the relay has admitted us.
    pub fn is_admitted(&self) -> bool {
        self.state == JoinState::Admitted
    }

    /// Queues a `Ping` (answered by [`JoinEvent::Pong`]).
    pub fn ping(&mut self, timestamp_ms: u64) {
        self.queue(&SignalMessage::Ping { timestamp_ms });
    }

    /// Queues a `Hangup`: the relay ends the session.
    pub fn hangup(&mut self) {
        self.queue(&SignalMessage::Hangup {
            reason: HangupReason::Normal,
            call_id: None,
            message: None,
        });
    }

    /// Queues any other message on the room stream (telemetry such as
    /// `LossRecoveryUpdate`).
    pub fn send(&mut self, msg: &SignalMessage) {
        self.queue(msg);
    }

    /// Feeds one decoded message from the relay.
    pub fn handle_message(&mut self, msg: Decoded) {
        if self.state == JoinState::Ended {
            return;
        }
        if self.state == JoinState::AwaitingHello {
            match negotiate_version(&msg) {
                Ok(version) => {
                    let (software, features) = match msg {
                        Decoded::Message(SignalMessage::Hello {
                            software, features, ..
                        }) => (software, features),
                        _ => (None, Vec::new()),
                    };
                    self.state = JoinState::AwaitingAdmission;
                    self.events.push_back(JoinEvent::RelayHello {
                        version,
                        software,
                        features,
                    });
                }
                // A relay that refuses at once may send its Hangup before
                // anything else.
                Err(SignalError::ExpectedHello { .. }) if is_hangup(&msg) => {
                    self.handle_hangup(msg)
                }
                Err(e) => self.fail(e.to_string()),
            }
            return;
        }
        match msg {
            Decoded::Message(SignalMessage::RoomUpdate {
                count,
                participants,
                bridged,
                ..
            }) => {
                if self.state == JoinState::AwaitingAdmission
                    && participants.iter().any(|p| p.fingerprint == self.me)
                {
                    self.state = JoinState::Admitted;
                    self.events.push_back(JoinEvent::Admitted {
                        count,
                        participants,
                        bridged,
                    });
                } else {
                    self.events.push_back(JoinEvent::RoomUpdate {
                        count,
                        participants,
                    });
                }
            }
            Decoded::Message(SignalMessage::Pong { timestamp_ms }) => {
                self.events.push_back(JoinEvent::Pong { timestamp_ms })
            }
            m @ Decoded::Message(SignalMessage::Hangup { .. }) => self.handle_hangup(m),
            Decoded::Message(other) => self.events.push_back(JoinEvent::Ignored {
                type_name: other.type_name().to_string(),
            }),
            Decoded::Unknown { type_name } => {
                self.events.push_back(JoinEvent::Ignored { type_name })
            }
        }
    }

    fn handle_hangup(&mut self, msg: Decoded) {
        if let Decoded::Message(SignalMessage::Hangup {
            reason, message, ..
        }) = msg
        {
            self.state = JoinState::Ended;
            self.events
                .push_back(JoinEvent::Refused { reason, message });
        }
    }
}

fn is_hangup(msg: &Decoded) -> bool {
    matches!(msg, Decoded::Message(SignalMessage::Hangup { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::{decode_message, FrameDecoder};
    use crate::Seed;

    fn start() -> (JoinExchange, Identity, TlsFingerprint, String) {
        let me = Seed::from_bytes([1; 32]).identity();
        let relay = TlsFingerprint([7; 32]);
        let room = crate::room_hash("lobby");
        let x = JoinExchange::start(&me, &room, &relay, None, "test", 1_000_000);
        (x, me, relay, room)
    }

    fn participant(fp: Fingerprint) -> RoomParticipant {
        RoomParticipant::new(fp)
    }

    fn update(fps: &[Fingerprint]) -> Decoded {
        Decoded::Message(SignalMessage::RoomUpdate {
            room: None,
            count: fps.len() as u32,
            participants: fps.iter().copied().map(participant).collect(),
            bridged: false,
        })
    }

    fn hello() -> Decoded {
        Decoded::Message(SignalMessage::hello(None))
    }

    #[test]
    fn hello_and_a_verifiable_join_go_out_first() {
        let (mut x, me, relay, room) = start();
        let bytes = x.poll_transmit().unwrap();
        assert!(x.poll_transmit().is_none(), "queued once");
        let mut dec = FrameDecoder::new();
        dec.push(&bytes).unwrap();
        assert!(matches!(
            dec.next_frame().unwrap(),
            Some(Decoded::Message(SignalMessage::Hello { .. }))
        ));
        let Some(Decoded::Message(SignalMessage::Join(j))) = dec.next_frame().unwrap() else {
            panic!("second frame is not a join");
        };
        assert_eq!(j.verify(&room, &relay, 1_000_000, 60), Ok(me.fingerprint()));
        assert!(dec.next_frame().unwrap().is_none());
    }

    #[test]
    fn a_room_proof_join_verifies_only_for_its_nonce() {
        let me = Seed::from_bytes([1; 32]).identity();
        let relay = TlsFingerprint([7; 32]);
        let key = RoomAdmissionKey::derive(b"a long enough room secret", "lobby");
        let room = key.sni();
        let nonce = [9u8; JOIN_NONCE_LEN];
        let mut x = JoinExchange::start_with_room_proof(
            &me, &room, &relay, None, "test", 1_000_000, &key, &nonce,
        );
        let mut dec = FrameDecoder::new();
        dec.push(&x.poll_transmit().unwrap()).unwrap();
        assert!(matches!(
            dec.next_frame().unwrap(),
            Some(Decoded::Message(SignalMessage::Hello { .. }))
        ));
        let Some(Decoded::Message(SignalMessage::Join(j))) = dec.next_frame().unwrap() else {
            panic!("second frame is not a join");
        };
        assert_eq!(
            j.verify_with_room_proof(&room, &relay, &nonce, 1_000_000, 60),
            Ok(me.fingerprint())
        );
        assert_eq!(
            j.verify_with_room_proof(&room, &relay, &[8u8; JOIN_NONCE_LEN], 1_000_000, 60),
            Err(crate::join::JoinError::BadRoomProof),
            "another connection's nonce"
        );
    }

    #[test]
    fn admitted_only_by_an_update_that_lists_us() {
        let (mut x, me, _, _) = start();
        let other = Seed::from_bytes([2; 32]).identity().fingerprint();
        x.handle_message(hello());
        x.handle_message(update(&[other]));
        assert_eq!(x.state(), JoinState::AwaitingAdmission);
        x.handle_message(update(&[other, me.fingerprint()]));
        assert!(x.is_admitted());
        x.handle_message(update(&[me.fingerprint()]));
        let events: Vec<_> = std::iter::from_fn(|| x.poll_event()).collect();
        assert!(matches!(
            events[0],
            JoinEvent::RelayHello { version: 1, .. }
        ));
        assert!(matches!(events[1], JoinEvent::RoomUpdate { count: 1, .. }));
        assert!(matches!(events[2], JoinEvent::Admitted { count: 2, .. }));
        assert!(matches!(events[3], JoinEvent::RoomUpdate { count: 1, .. }));
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn a_refusal_ends_the_exchange_even_before_hello() {
        let (mut x, ..) = start();
        x.handle_message(Decoded::Message(SignalMessage::Hangup {
            reason: HangupReason::Declined,
            call_id: None,
            message: Some("not authorized".into()),
        }));
        assert_eq!(x.state(), JoinState::Ended);
        assert_eq!(
            x.poll_event(),
            Some(JoinEvent::Refused {
                reason: HangupReason::Declined,
                message: Some("not authorized".into())
            })
        );
        x.handle_message(hello());
        assert_eq!(x.poll_event(), None, "nothing after the end");
    }

    #[test]
    fn bad_relay_input_is_refused_or_ignored_never_fatal_to_the_caller() {
        // (first message, expected state after, expected event kind)
        let table: Vec<(Decoded, JoinState, &str)> = vec![
            (
                Decoded::Message(SignalMessage::Ping { timestamp_ms: 1 }),
                JoinState::Ended,
                "failed",
            ),
            (
                Decoded::Unknown {
                    type_name: "x".into(),
                },
                JoinState::Ended,
                "failed",
            ),
            (
                Decoded::Message(SignalMessage::Hello {
                    version: 9,
                    min_version: 9,
                    software: None,
                    features: vec![],
                }),
                JoinState::Ended,
                "failed",
            ),
            (hello(), JoinState::AwaitingAdmission, "hello"),
        ];
        for (msg, state, kind) in table {
            let (mut x, ..) = start();
            let label = format!("{msg:?}");
            x.handle_message(msg);
            assert_eq!(x.state(), state, "{label}");
            let got = match x.poll_event() {
                Some(JoinEvent::Failed(_)) => "failed",
                Some(JoinEvent::RelayHello { .. }) => "hello",
                other => panic!("{label}: {other:?}"),
            };
            assert_eq!(got, kind, "{label}");
        }
        // After Hello, unknown and out-of-place messages are ignored.
        let (mut x, ..) = start();
        x.handle_message(hello());
        x.handle_message(Decoded::Unknown {
            type_name: "from_the_future".into(),
        });
        x.handle_message(decode_message(br#"{"type":"reflect"}"#).unwrap());
        let _ = x.poll_event();
        assert!(
            matches!(x.poll_event(), Some(JoinEvent::Ignored { type_name }) if type_name == "from_the_future")
        );
        assert!(
            matches!(x.poll_event(), Some(JoinEvent::Ignored { type_name }) if type_name == "reflect")
        );
        assert_eq!(x.state(), JoinState::AwaitingAdmission);
    }

    #[test]
    fn pings_and_hangups_are_queued_frames() {
        let (mut x, ..) = start();
        let _ = x.poll_transmit();
        x.ping(42);
        x.hangup();
        let mut dec = FrameDecoder::new();
        dec.push(&x.poll_transmit().unwrap()).unwrap();
        assert_eq!(
            dec.next_frame().unwrap(),
            Some(Decoded::Message(SignalMessage::Ping { timestamp_ms: 42 }))
        );
        assert!(matches!(
            dec.next_frame().unwrap(),
            Some(Decoded::Message(SignalMessage::Hangup { .. }))
        ));
        x.handle_message(hello());
        x.handle_message(Decoded::Message(SignalMessage::Pong { timestamp_ms: 42 }));
        let _ = x.poll_event();
        assert_eq!(x.poll_event(), Some(JoinEvent::Pong { timestamp_ms: 42 }));
    }
}
