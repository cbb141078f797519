//! Presence registration on the `_signal` plane: the client proves it holds
//! the identity key behind its fingerprint (sans-IO, both sides).
//!
//! ```text
//! client                                                   relay
//!   hello                                          ---->
//!                                                  <----   hello, presence_challenge { nonce }
//!   register_presence { identity_pub, nonce,
//!     signature = sign("wzp-presence-v2" || nonce
//!                      || relay_tls_fp || identity_pub) } ---->
//!                                                  <----   register_presence_ack { success,
//!                                                            observed_addr, relay_label, version }
//! ```
//!
//! The nonce is fresh per connection, so a recorded registration is useless on
//! another connection; the relay's TLS fingerprint is signed, so a
//! registration seen by one relay cannot be replayed to another.
//!
//! ```
//! use wzp_proto::presence::{verify_registration, PresenceClient, PresenceStep};
//! use wzp_proto::signal::SignalMessage;
//! use wzp_proto::{Seed, TlsFingerprint};
//!
//! let relay = TlsFingerprint([7; 32]);
//! let id = Seed::from_bytes([1; 32]).identity();
//! let mut client = PresenceClient::new(&id, relay, Some("Alice".into()));
//! let nonce = [9; 32];
//! let PresenceStep::Send(register) = client.handle(&SignalMessage::PresenceChallenge { nonce }) else { panic!() };
//! let verified = verify_registration(&register, &relay, &nonce).unwrap();
//! assert_eq!(verified.fingerprint, id.fingerprint());
//! ```

use std::net::SocketAddr;

use crate::identity::{verify_signature, Identity};
use crate::signal::{presence_challenge_signed_bytes, SignalMessage};
use crate::{Fingerprint, TlsFingerprint};

/// Longest alias a relay accepts, in bytes.
pub const MAX_ALIAS_LEN: usize = 64;

/// Bytes of a device id (`register_presence`'s `device`): random per
/// installation, so one person's phone and laptop are told apart while the
/// same device registering again replaces its own older registration.
pub const DEVICE_ID_LEN: usize = 8;

/// Which of a person's devices a registration is.
pub type DeviceId = [u8; DEVICE_ID_LEN];

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The message is not a `register_presence`.
    #[error("expected register_presence, got {0}")]
    NotARegistration(&'static str),
    /// A version-1 registration without the relay's nonce.
    #[error(
        "registration carries no nonce: answer the relay's presence_challenge (upgrade the client)"
    )]
    NoNonce,
    /// The nonce is not the one this connection was challenged with: a
    /// replayed or stale registration.
    #[error("registration answers another challenge (replayed or stale); sign the nonce of this connection's presence_challenge")]
    WrongNonce,
    /// The claimed fingerprint is not the fingerprint of the signing key.
    #[error("claimed fingerprint {claimed} is not the fingerprint {actual} of identity_pub")]
    FingerprintMismatch {
        /// The fingerprint in the message.
        claimed: Fingerprint,
        /// The fingerprint of `identity_pub`.
        actual: Fingerprint,
    },
    /// The signature does not verify.
    #[error("registration signature does not verify (forged, or signed for another relay)")]
    BadSignature,
    /// The alias is too long.
    #[error("alias of {len} bytes exceeds {max}; choose a shorter name")]
    AliasTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A registration the relay has checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRegistration {
    /// The proven fingerprint.
    pub fingerprint: Fingerprint,
    /// The identity key it belongs to.
    pub identity_pub: [u8; 32],
    /// The display name, if any.
    pub alias: Option<String>,
    /// Which of the person's devices registered (none from a client
    /// older than devices).
    pub device: Option<DeviceId>,
    /// The device takes a waiting call while in a call
    /// ([`crate::signal::FEATURE_CALL_WAITING`]).
    pub call_waiting: bool,
    /// The person's message key, when it came naming this identity. Its
    /// signature is not checked here (a relay checks it only when the key
    /// is new to it: [`crate::voice_message::MessageKey::verify`]).
    pub message_key: Option<crate::voice_message::MessageKey>,
}

/// The `register_presence` answering `nonce` from the relay whose TLS
/// certificate has fingerprint `relay`.
pub fn answer_challenge(
    identity: &Identity,
    relay: &TlsFingerprint,
    nonce: &[u8; 32],
    alias: Option<String>,
    device: Option<DeviceId>,
) -> SignalMessage {
    let identity_pub = identity.public_key();
    let signature = identity.sign(&presence_challenge_signed_bytes(
        nonce,
        relay,
        &identity_pub,
    ));
    SignalMessage::RegisterPresence {
        identity_pub,
        signature,
        timestamp_ms: 0,
        alias,
        nonce: Some(*nonce),
        fingerprint: Some(identity.fingerprint()),
        device,
        call_waiting: false,
        message_key: Some(Box::new(crate::voice_message::MessageKey::of(identity))),
    }
}

/// Relay side: checks a `register_presence` against the nonce this
/// connection was challenged with and this relay's TLS fingerprint.
pub fn verify_registration(
    msg: &SignalMessage,
    relay: &TlsFingerprint,
    nonce: &[u8; 32],
) -> Result<VerifiedRegistration, RegistrationError> {
    let SignalMessage::RegisterPresence {
        identity_pub,
        signature,
        alias,
        nonce: got_nonce,
        fingerprint,
        device,
        call_waiting,
        message_key,
        ..
    } = msg
    else {
        return Err(RegistrationError::NotARegistration(msg.type_name()));
    };
    let got_nonce = got_nonce.ok_or(RegistrationError::NoNonce)?;
    if &got_nonce != nonce {
        return Err(RegistrationError::WrongNonce);
    }
    let actual = Fingerprint::of_public_key(identity_pub);
    if let Some(claimed) = fingerprint {
        if *claimed != actual {
            return Err(RegistrationError::FingerprintMismatch {
                claimed: *claimed,
                actual,
            });
        }
    }
    if let Some(a) = alias {
        if a.len() > MAX_ALIAS_LEN {
            return Err(RegistrationError::AliasTooLong {
                len: a.len(),
                max: MAX_ALIAS_LEN,
            });
        }
    }
    verify_signature(
        identity_pub,
        &presence_challenge_signed_bytes(nonce, relay, identity_pub),
        signature,
    )
    .map_err(|_| RegistrationError::BadSignature)?;
    Ok(VerifiedRegistration {
        fingerprint: actual,
        identity_pub: *identity_pub,
        alias: alias.clone(),
        device: *device,
        call_waiting: *call_waiting,
        message_key: message_key
            .as_deref()
            .copied()
            .filter(|k| k.identity_pub == *identity_pub),
    })
}

/// What the relay told a registering client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceEvent {
    /// Registered: the relay routes calls for our fingerprint to this connection.
    Registered {
        /// Our address as the relay sees it.
        observed_addr: Option<SocketAddr>,
        /// The relay's label.
        relay_label: Option<String>,
        /// The relay's version.
        version: Option<String>,
        /// The relay's mapping port and this connection's token
        /// ([`crate::mapping`]); none from a relay without one.
        mapping: Option<(u16, [u8; crate::mapping::TOKEN_LEN])>,
        /// How many of this person's devices the relay now has registered
        /// (this one included); none from a relay older than devices.
        devices: Option<u32>,
    },
    /// Refused, with the relay's reason.
    Refused {
        /// Why.
        reason: String,
    },
}

/// What to do after feeding [`PresenceClient::handle`] a message.
#[derive(Debug, Clone, PartialEq)]
pub enum PresenceStep {
    /// Send this message to the relay.
    Send(SignalMessage),
    /// Registration finished.
    Event(PresenceEvent),
    /// The message is not about registration.
    Ignored,
}

/// Client side of registration: answers the challenge, reads the ack.
#[derive(Debug)]
pub struct PresenceClient {
    identity: Identity,
    relay: TlsFingerprint,
    alias: Option<String>,
    device: Option<DeviceId>,
    call_waiting: bool,
    registered: bool,
}

impl PresenceClient {
    /// A client that registers `identity` with the relay whose TLS
    /// fingerprint (pinned or learned) is `relay`.
    pub fn new(
        identity: &Identity,
        relay: TlsFingerprint,
        alias: Option<String>,
    ) -> PresenceClient {
        PresenceClient {
            identity: identity.clone(),
            relay,
            alias,
            device: None,
            call_waiting: false,
            registered: false,
        }
    }

    /// Registers as device `device` of the person (see [`DEVICE_ID_LEN`]).
    pub fn with_device(mut self, device: DeviceId) -> PresenceClient {
        self.device = Some(device);
        self
    }

    /// Registers a device that takes a waiting call while it is in a call
    /// (a person is asked; see [`crate::signal::FEATURE_CALL_WAITING`]).
    pub fn with_call_waiting(mut self, on: bool) -> PresenceClient {
        self.call_waiting = on;
        self
    }

    /// Whether the relay acknowledged the registration.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Feeds one message from the relay.
    pub fn handle(&mut self, msg: &SignalMessage) -> PresenceStep {
        match msg {
            SignalMessage::PresenceChallenge { nonce } => {
                let mut m = answer_challenge(
                    &self.identity,
                    &self.relay,
                    nonce,
                    self.alias.clone(),
                    self.device,
                );
                if let SignalMessage::RegisterPresence { call_waiting, .. } = &mut m {
                    *call_waiting = self.call_waiting;
                }
                PresenceStep::Send(m)
            }
            SignalMessage::RegisterPresenceAck {
                success: true,
                observed_addr,
                relay_label,
                version,
                mapping_port,
                mapping_token,
                devices,
                ..
            } => {
                self.registered = true;
                PresenceStep::Event(PresenceEvent::Registered {
                    observed_addr: *observed_addr,
                    relay_label: relay_label.clone(),
                    version: version.clone(),
                    mapping: mapping_port.zip(*mapping_token),
                    devices: *devices,
                })
            }
            SignalMessage::RegisterPresenceAck {
                success: false,
                error,
                ..
            } => {
                self.registered = false;
                PresenceStep::Event(PresenceEvent::Refused {
                    reason: error
                        .clone()
                        .unwrap_or_else(|| "the relay gave no reason".into()),
                })
            }
            _ => PresenceStep::Ignored,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Seed;

    fn id(n: u8) -> Identity {
        Seed::from_bytes([n; 32]).identity()
    }

    #[test]
    fn a_good_answer_verifies() {
        let relay = TlsFingerprint([1; 32]);
        let m = answer_challenge(&id(1), &relay, &[5; 32], Some("A".into()), Some([3; 8]));
        let v = verify_registration(&m, &relay, &[5; 32]).unwrap();
        assert_eq!(v.fingerprint, id(1).fingerprint());
        assert_eq!(v.alias.as_deref(), Some("A"));
        assert_eq!(v.device, Some([3; 8]));
    }

    #[test]
    fn bad_registrations_are_refused_with_a_reason() {
        let relay = TlsFingerprint([1; 32]);
        let nonce = [5; 32];
        let good = answer_challenge(&id(1), &relay, &nonce, None, None);
        let with = |f: &dyn Fn(&mut SignalMessage)| {
            let mut m = good.clone();
            f(&mut m);
            m
        };
        let table: Vec<(&str, SignalMessage, RegistrationError)> = vec![
            (
                "not a registration",
                SignalMessage::Reflect,
                RegistrationError::NotARegistration("reflect"),
            ),
            (
                "forged signature",
                with(&|m| {
                    if let SignalMessage::RegisterPresence { signature, .. } = m {
                        signature[0] ^= 1;
                    }
                }),
                RegistrationError::BadSignature,
            ),
            (
                "someone else's key with this signature",
                with(&|m| {
                    if let SignalMessage::RegisterPresence {
                        identity_pub,
                        fingerprint,
                        ..
                    } = m
                    {
                        *identity_pub = id(2).public_key();
                        *fingerprint = None;
                    }
                }),
                RegistrationError::BadSignature,
            ),
            (
                "replayed (another connection's nonce)",
                answer_challenge(&id(1), &relay, &[6; 32], None, None),
                RegistrationError::WrongNonce,
            ),
            (
                "signed for another relay",
                answer_challenge(&id(1), &TlsFingerprint([2; 32]), &nonce, None, None),
                RegistrationError::BadSignature,
            ),
            (
                "no nonce (version 1)",
                with(&|m| {
                    if let SignalMessage::RegisterPresence { nonce, .. } = m {
                        *nonce = None;
                    }
                }),
                RegistrationError::NoNonce,
            ),
            (
                "claims another fingerprint",
                with(&|m| {
                    if let SignalMessage::RegisterPresence { fingerprint, .. } = m {
                        *fingerprint = Some(id(2).fingerprint());
                    }
                }),
                RegistrationError::FingerprintMismatch {
                    claimed: id(2).fingerprint(),
                    actual: id(1).fingerprint(),
                },
            ),
            (
                "alias too long",
                answer_challenge(&id(1), &relay, &nonce, Some("x".repeat(65)), None),
                RegistrationError::AliasTooLong { len: 65, max: 64 },
            ),
        ];
        for (what, m, want) in table {
            assert_eq!(verify_registration(&m, &relay, &nonce), Err(want), "{what}");
        }
    }

    #[test]
    fn the_client_answers_the_challenge_and_reads_the_ack() {
        let relay = TlsFingerprint([1; 32]);
        let mut c = PresenceClient::new(&id(3), relay, None);
        assert_eq!(c.handle(&SignalMessage::Reflect), PresenceStep::Ignored);
        let PresenceStep::Send(m) = c.handle(&SignalMessage::PresenceChallenge { nonce: [4; 32] })
        else {
            panic!("no answer")
        };
        verify_registration(&m, &relay, &[4; 32]).unwrap();
        assert!(!c.is_registered());
        let addr: SocketAddr = "192.0.2.1:5".parse().unwrap();
        assert_eq!(
            c.handle(&SignalMessage::RegisterPresenceAck {
                mapping_port: Some(4434),
                mapping_token: Some([6; 16]),
                success: true,
                error: None,
                relay_build: None,
                observed_addr: Some(addr),
                relay_label: Some("R".into()),
                version: Some("1".into()),
                fingerprint: None,
                devices: Some(2),
            }),
            PresenceStep::Event(PresenceEvent::Registered {
                observed_addr: Some(addr),
                relay_label: Some("R".into()),
                version: Some("1".into()),
                mapping: Some((4434, [6; 16])),
                devices: Some(2),
            })
        );
        assert!(c.is_registered());
    }

    #[test]
    fn a_device_id_goes_into_the_registration_and_out_of_the_verification() {
        let relay = TlsFingerprint([1; 32]);
        let mut c = PresenceClient::new(&id(3), relay, None).with_device([0xab; DEVICE_ID_LEN]);
        let PresenceStep::Send(m) = c.handle(&SignalMessage::PresenceChallenge { nonce: [4; 32] })
        else {
            panic!("no answer")
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""device":"abababababababab""#), "{json}");
        let v = verify_registration(&m, &relay, &[4; 32]).unwrap();
        assert_eq!(v.device, Some([0xab; DEVICE_ID_LEN]));
        // Without one, the field is absent (what a relay older than devices
        // reads, and what it sent before).
        let m = answer_challenge(&id(3), &relay, &[4; 32], None, None);
        assert!(!serde_json::to_string(&m).unwrap().contains("device"));
    }

    #[test]
    fn call_waiting_goes_into_the_registration_and_out_of_the_verification() {
        let relay = TlsFingerprint([1; 32]);
        for on in [false, true] {
            let mut c = PresenceClient::new(&id(3), relay, None).with_call_waiting(on);
            let PresenceStep::Send(m) =
                c.handle(&SignalMessage::PresenceChallenge { nonce: [4; 32] })
            else {
                panic!("no answer")
            };
            let json = serde_json::to_string(&m).unwrap();
            // Absent unless on: what a relay older than call waiting reads.
            assert_eq!(json.contains(r#""call_waiting":true"#), on, "{json}");
            assert_eq!(json.contains("call_waiting"), on, "{json}");
            let v = verify_registration(&m, &relay, &[4; 32]).unwrap();
            assert_eq!(v.call_waiting, on);
        }
    }

    #[test]
    fn a_registration_carries_its_identitys_message_key_and_drops_another() {
        let relay = TlsFingerprint([1; 32]);
        let m = answer_challenge(&id(3), &relay, &[4; 32], None, None);
        let v = verify_registration(&m, &relay, &[4; 32]).unwrap();
        let key = v.message_key.expect("a key");
        assert_eq!(key.verify(), Ok(id(3).fingerprint()));
        // Another identity's key in the registration is left out.
        let mut m = m;
        if let SignalMessage::RegisterPresence { message_key, .. } = &mut m {
            *message_key = Some(Box::new(crate::voice_message::MessageKey::of(&id(5))));
        }
        let v = verify_registration(&m, &relay, &[4; 32]).unwrap();
        assert!(v.message_key.is_none());
    }
}
