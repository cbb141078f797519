//! The peer handshake (sans-IO) and room key derivation.
//!
//! A three-message, SIGMA-style authenticated X25519 exchange. Each side signs
//! the transcript hash, which binds the context, both fingerprints, both
//! identity keys and both ephemeral keys, with a role label so a signature can
//! never be reflected back:
//!
//! ```text
//! Initiator                                         Responder
//!   Init     { id_pub_I, eph_I }              ---->
//!                                             <----  Response { id_pub_R, eph_R, sig_R(T) }
//!   Finish   { sig_I(T) }                     ---->
//! ```
//!
//! Both sides then hold per-direction 32-byte session keys and a 4-digit SAS
//! that the two users can read to each other to rule out a relay in the
//! middle. Nothing here touches a socket or the clock; randomness comes in as
//! [`EphemeralKey`]. Message layouts are in `docs/WIRE.md`.
//!
//! ```
//! use wzp_proto::handshake::{EphemeralKey, Initiator, Responder};
//! use wzp_proto::identity::Seed;
//!
//! let alice = Seed::from_bytes([1; 32]).identity();
//! let bob = Seed::from_bytes([2; 32]).identity();
//! let ctx = b"call-42";
//!
//! let (initiator, init) = Initiator::start(&alice, EphemeralKey::from_bytes([3; 32]), ctx, Some(bob.fingerprint()));
//! let (responder, response) = Responder::respond(&bob, EphemeralKey::from_bytes([4; 32]), ctx, &init, None).unwrap();
//! let (alice_keys, finish) = initiator.finish(&response).unwrap();
//! let bob_keys = responder.confirm(&finish).unwrap();
//!
//! assert_eq!(alice_keys.send_key(), bob_keys.recv_key());
//! assert_eq!(alice_keys.sas(), bob_keys.sas());
//! ```

use std::fmt;

use hkdf::Hkdf;
use sha2::{Digest as _, Sha256};
use zeroize::ZeroizeOnDrop;

use crate::identity::{hkdf32, verify_signature, Fingerprint, Identity};

/// Domain string: start of the transcript and of every handshake label.
pub const HANDSHAKE_DOMAIN: &[u8] = b"wzp-handshake-v1";
/// Signature label prefixed to the transcript hash by the responder.
pub const LABEL_SIG_RESPONDER: &[u8] = b"wzp-handshake-v1 responder signature";
/// Signature label prefixed to the transcript hash by the initiator.
pub const LABEL_SIG_INITIATOR: &[u8] = b"wzp-handshake-v1 initiator signature";
/// HKDF info for the initiator-to-responder session key.
pub const LABEL_KEY_I2R: &[u8] = b"wzp-handshake-v1 key i2r";
/// HKDF info for the responder-to-initiator session key.
pub const LABEL_KEY_R2I: &[u8] = b"wzp-handshake-v1 key r2i";
/// HKDF info for the short authentication string.
pub const LABEL_SAS: &[u8] = b"wzp-handshake-v1 sas";
/// HKDF salt for room keys.
pub const LABEL_ROOM_SALT: &[u8] = b"wzp-room-v1";
/// HKDF info prefix for room keys (the room name follows it).
pub const LABEL_ROOM_KEY: &[u8] = b"wzp room key v1:";
/// HKDF info prefix of a room's admission key (the room name follows); same
/// salt and IKM as the media key, so the two are independent keys of one
/// secret. See [`room_admission_seed`].
pub const LABEL_ROOM_ADMISSION: &[u8] = b"wzp room admission ed25519 v1:";
/// Domain prefix of the hash that turns a room's admission public key into
/// its server name ([`room_sni`]).
pub const LABEL_ROOM_SNI: &[u8] = b"wzp-room-sni-v1";

/// Handshake protocol version carried in byte 1 of every message.
pub const HANDSHAKE_VERSION: u8 = 1;

/// Message type bytes.
const TYPE_INIT: u8 = 0x01;
const TYPE_RESPONSE: u8 = 0x02;
const TYPE_FINISH: u8 = 0x03;

/// Why a handshake failed. Every variant ends the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The message has the wrong length for its type.
    #[error("handshake message {kind}: expected {expected} bytes, got {got}")]
    BadLength {
        /// Which message.
        kind: &'static str,
        /// Required length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// The message type byte is not the one expected.
    #[error("expected handshake message type 0x{expected:02x}, got 0x{got:02x}")]
    WrongType {
        /// Expected type.
        expected: u8,
        /// Actual type.
        got: u8,
    },
    /// The peer speaks another handshake version.
    #[error("unsupported handshake version {0} (this build speaks 1)")]
    UnsupportedVersion(u8),
    /// The peer's signature does not verify over our transcript: a field was
    /// altered, the contexts differ, or the peer does not hold the identity key.
    #[error("handshake signature from peer does not verify (tampered message or different call context)")]
    BadSignature,
    /// The peer is authentic but not who we expected.
    #[error("peer identity {got} is not the expected {expected}")]
    UnexpectedPeer {
        /// The fingerprint we wanted.
        expected: Fingerprint,
        /// The fingerprint presented.
        got: Fingerprint,
    },
    /// The peer's ephemeral key is a low-order point (all-zero shared secret).
    #[error("peer ephemeral key is degenerate (low-order point)")]
    WeakEphemeral,
}

/// The ephemeral X25519 secret for one handshake, supplied by the caller.
#[derive(Clone, ZeroizeOnDrop)]
pub struct EphemeralKey([u8; 32]);

impl fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EphemeralKey(<redacted>)")
    }
}

impl EphemeralKey {
    /// Uses the given 32 bytes (from a seeded RNG in tests).
    pub fn from_bytes(bytes: [u8; 32]) -> EphemeralKey {
        EphemeralKey(bytes)
    }

    /// A fresh key from the operating system RNG.
    pub fn random() -> Result<EphemeralKey, getrandom::Error> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b)?;
        Ok(EphemeralKey(b))
    }

    fn secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(self.0)
    }

    fn public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.secret()).to_bytes()
    }
}

fn check_header(buf: &[u8], kind: &'static str, ty: u8, len: usize) -> Result<(), HandshakeError> {
    if buf.len() != len {
        return Err(HandshakeError::BadLength {
            kind,
            expected: len,
            got: buf.len(),
        });
    }
    if buf[0] != ty {
        return Err(HandshakeError::WrongType {
            expected: ty,
            got: buf[0],
        });
    }
    if buf[1] != HANDSHAKE_VERSION {
        return Err(HandshakeError::UnsupportedVersion(buf[1]));
    }
    Ok(())
}

fn arr<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&buf[at..at + N]);
    out
}

/// Message 1, initiator to responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeInit {
    /// Initiator's Ed25519 identity public key.
    pub identity: [u8; 32],
    /// Initiator's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
}

impl HandshakeInit {
    /// Encoded length.
    pub const LEN: usize = 66;

    /// Encodes: type 0x01, version, identity, ephemeral.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = TYPE_INIT;
        b[1] = HANDSHAKE_VERSION;
        b[2..34].copy_from_slice(&self.identity);
        b[34..66].copy_from_slice(&self.ephemeral);
        b
    }

    /// Parses exactly [`Self::LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, HandshakeError> {
        check_header(buf, "init", TYPE_INIT, Self::LEN)?;
        Ok(HandshakeInit {
            identity: arr(buf, 2),
            ephemeral: arr(buf, 34),
        })
    }
}

/// Message 2, responder to initiator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// Responder's Ed25519 identity public key.
    pub identity: [u8; 32],
    /// Responder's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// Responder's signature over the transcript.
    pub signature: [u8; 64],
}

impl HandshakeResponse {
    /// Encoded length.
    pub const LEN: usize = 130;

    /// Encodes: type 0x02, version, identity, ephemeral, signature.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = TYPE_RESPONSE;
        b[1] = HANDSHAKE_VERSION;
        b[2..34].copy_from_slice(&self.identity);
        b[34..66].copy_from_slice(&self.ephemeral);
        b[66..130].copy_from_slice(&self.signature);
        b
    }

    /// Parses exactly [`Self::LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, HandshakeError> {
        check_header(buf, "response", TYPE_RESPONSE, Self::LEN)?;
        Ok(HandshakeResponse {
            identity: arr(buf, 2),
            ephemeral: arr(buf, 34),
            signature: arr(buf, 66),
        })
    }
}

/// Message 3, initiator to responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeFinish {
    /// Initiator's signature over the transcript.
    pub signature: [u8; 64],
}

impl HandshakeFinish {
    /// Encoded length.
    pub const LEN: usize = 66;

    /// Encodes: type 0x03, version, signature.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = TYPE_FINISH;
        b[1] = HANDSHAKE_VERSION;
        b[2..66].copy_from_slice(&self.signature);
        b
    }

    /// Parses exactly [`Self::LEN`] bytes.
    pub fn parse(buf: &[u8]) -> Result<Self, HandshakeError> {
        check_header(buf, "finish", TYPE_FINISH, Self::LEN)?;
        Ok(HandshakeFinish {
            signature: arr(buf, 2),
        })
    }
}

/// The transcript hash `T` both sides sign (layout in `docs/WIRE.md`).
pub fn transcript_hash(
    context: &[u8],
    initiator_identity: &[u8; 32],
    responder_identity: &[u8; 32],
    initiator_ephemeral: &[u8; 32],
    responder_ephemeral: &[u8; 32],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(HANDSHAKE_DOMAIN);
    // usize -> u64 never truncates on supported targets.
    h.update((context.len() as u64).to_be_bytes());
    h.update(context);
    h.update(Fingerprint::of_public_key(initiator_identity).as_bytes());
    h.update(Fingerprint::of_public_key(responder_identity).as_bytes());
    h.update(initiator_identity);
    h.update(responder_identity);
    h.update(initiator_ephemeral);
    h.update(responder_ephemeral);
    h.finalize().into()
}

fn signed_message(label: &[u8], transcript: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 32);
    m.extend_from_slice(label);
    m.extend_from_slice(transcript);
    m
}

fn check_expected(
    expected: Option<Fingerprint>,
    identity: &[u8; 32],
) -> Result<Fingerprint, HandshakeError> {
    let got = Fingerprint::of_public_key(identity);
    match expected {
        Some(expected) if expected != got => Err(HandshakeError::UnexpectedPeer { expected, got }),
        _ => Ok(got),
    }
}

/// Which side of the handshake we were.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent [`HandshakeInit`].
    Initiator,
    /// Sent [`HandshakeResponse`].
    Responder,
}

/// A 4-digit short authentication string (`0000`..=`9999`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sas(u16);

impl Sas {
    /// The numeric value, 0..=9999.
    pub fn value(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Sas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl fmt::Debug for Sas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sas({self})")
    }
}

/// The result of a completed handshake. Keys are zeroed on drop.
#[derive(Clone, ZeroizeOnDrop)]
pub struct SessionKeys {
    #[zeroize(skip)]
    role: Role,
    i2r: [u8; 32],
    r2i: [u8; 32],
    #[zeroize(skip)]
    sas: Sas,
    #[zeroize(skip)]
    peer: Fingerprint,
    #[zeroize(skip)]
    peer_identity: [u8; 32],
    #[zeroize(skip)]
    transcript: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("role", &self.role)
            .field("peer", &self.peer)
            .field("sas", &self.sas)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    fn derive(
        role: Role,
        shared: &x25519_dalek::SharedSecret,
        transcript: [u8; 32],
        peer_identity: [u8; 32],
    ) -> Result<SessionKeys, HandshakeError> {
        if !shared.was_contributory() {
            return Err(HandshakeError::WeakEphemeral);
        }
        let hk = Hkdf::<Sha256>::new(Some(&transcript), shared.as_bytes());
        let mut i2r = [0u8; 32];
        let mut r2i = [0u8; 32];
        let mut sas = [0u8; 4];
        for (info, out) in [
            (LABEL_KEY_I2R, &mut i2r[..]),
            (LABEL_KEY_R2I, &mut r2i[..]),
            (LABEL_SAS, &mut sas[..]),
        ] {
            if hk.expand(info, out).is_err() {
                unreachable!("HKDF-SHA256 output of at most 32 bytes is always valid");
            }
        }
        let sas = Sas((u32::from_be_bytes(sas) % 10_000) as u16);
        Ok(SessionKeys {
            role,
            i2r,
            r2i,
            sas,
            peer: Fingerprint::of_public_key(&peer_identity),
            peer_identity,
            transcript,
        })
    }

    /// Which side we were.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Initiator-to-responder key.
    pub fn initiator_to_responder(&self) -> &[u8; 32] {
        &self.i2r
    }

    /// Responder-to-initiator key.
    pub fn responder_to_initiator(&self) -> &[u8; 32] {
        &self.r2i
    }

    /// The key we seal our outgoing media with.
    pub fn send_key(&self) -> &[u8; 32] {
        match self.role {
            Role::Initiator => &self.i2r,
            Role::Responder => &self.r2i,
        }
    }

    /// The key we open the peer's media with.
    pub fn recv_key(&self) -> &[u8; 32] {
        match self.role {
            Role::Initiator => &self.r2i,
            Role::Responder => &self.i2r,
        }
    }

    /// The short authentication string to compare aloud.
    pub fn sas(&self) -> Sas {
        self.sas
    }

    /// The authenticated peer's fingerprint.
    pub fn peer_fingerprint(&self) -> Fingerprint {
        self.peer
    }

    /// The authenticated peer's Ed25519 public key.
    pub fn peer_identity(&self) -> &[u8; 32] {
        &self.peer_identity
    }

    /// The transcript hash (a unique session id, safe to log).
    pub fn transcript_hash(&self) -> &[u8; 32] {
        &self.transcript
    }
}

/// Initiator state after sending [`HandshakeInit`].
pub struct Initiator {
    identity: Identity,
    ephemeral: EphemeralKey,
    ephemeral_public: [u8; 32],
    context: Vec<u8>,
    expected_peer: Option<Fingerprint>,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator")
            .field("identity", &self.identity)
            .field("expected_peer", &self.expected_peer)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake. `context` names the call (e.g. the call id or room
    /// hash) and must be the same on both sides; `expected_peer` is the
    /// fingerprint we meant to reach, if known.
    pub fn start(
        identity: &Identity,
        ephemeral: EphemeralKey,
        context: &[u8],
        expected_peer: Option<Fingerprint>,
    ) -> (Initiator, HandshakeInit) {
        let ephemeral_public = ephemeral.public();
        let init = HandshakeInit {
            identity: identity.public_key(),
            ephemeral: ephemeral_public,
        };
        let state = Initiator {
            identity: identity.clone(),
            ephemeral,
            ephemeral_public,
            context: context.to_vec(),
            expected_peer,
        };
        (state, init)
    }

    /// Verifies the responder's message; on success returns the session keys
    /// and the [`HandshakeFinish`] to send.
    pub fn finish(
        self,
        response: &HandshakeResponse,
    ) -> Result<(SessionKeys, HandshakeFinish), HandshakeError> {
        check_expected(self.expected_peer, &response.identity)?;
        let my_identity = self.identity.public_key();
        let transcript = transcript_hash(
            &self.context,
            &my_identity,
            &response.identity,
            &self.ephemeral_public,
            &response.ephemeral,
        );
        verify_signature(
            &response.identity,
            &signed_message(LABEL_SIG_RESPONDER, &transcript),
            &response.signature,
        )
        .map_err(|_| HandshakeError::BadSignature)?;
        let shared = self
            .ephemeral
            .secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(response.ephemeral));
        let keys = SessionKeys::derive(Role::Initiator, &shared, transcript, response.identity)?;
        let signature = self
            .identity
            .sign(&signed_message(LABEL_SIG_INITIATOR, &transcript));
        Ok((keys, HandshakeFinish { signature }))
    }
}

/// Responder state after sending [`HandshakeResponse`], awaiting
/// [`HandshakeFinish`].
pub struct Responder {
    keys: SessionKeys,
    initiator_identity: [u8; 32],
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("peer", &self.keys.peer)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// Answers a [`HandshakeInit`]. The initiator is not authenticated until
    /// [`Responder::confirm`] succeeds; do not trust its media before that.
    pub fn respond(
        identity: &Identity,
        ephemeral: EphemeralKey,
        context: &[u8],
        init: &HandshakeInit,
        expected_peer: Option<Fingerprint>,
    ) -> Result<(Responder, HandshakeResponse), HandshakeError> {
        check_expected(expected_peer, &init.identity)?;
        let my_identity = identity.public_key();
        let ephemeral_public = ephemeral.public();
        let transcript = transcript_hash(
            context,
            &init.identity,
            &my_identity,
            &init.ephemeral,
            &ephemeral_public,
        );
        let shared = ephemeral
            .secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(init.ephemeral));
        let keys = SessionKeys::derive(Role::Responder, &shared, transcript, init.identity)?;
        let signature = identity.sign(&signed_message(LABEL_SIG_RESPONDER, &transcript));
        Ok((
            Responder {
                keys,
                initiator_identity: init.identity,
            },
            HandshakeResponse {
                identity: my_identity,
                ephemeral: ephemeral_public,
                signature,
            },
        ))
    }

    /// Verifies the initiator's [`HandshakeFinish`] and releases the keys.
    pub fn confirm(self, finish: &HandshakeFinish) -> Result<SessionKeys, HandshakeError> {
        verify_signature(
            &self.initiator_identity,
            &signed_message(LABEL_SIG_INITIATOR, &self.keys.transcript),
            &finish.signature,
        )
        .map_err(|_| HandshakeError::BadSignature)?;
        Ok(self.keys.clone())
    }
}

/// The media key of a room: `HKDF-SHA256(salt="wzp-room-v1", ikm=room_secret,
/// info="wzp room key v1:" || room_name)`.
pub fn room_key(room_secret: &[u8], room_name: &str) -> [u8; 32] {
    hkdf32(
        Some(LABEL_ROOM_SALT),
        room_secret,
        &[LABEL_ROOM_KEY, room_name.as_bytes()],
    )
}

/// The Ed25519 secret key that proves membership of a room to a relay:
/// `HKDF-SHA256(salt="wzp-room-v1", ikm=room_secret,
/// info="wzp room admission ed25519 v1:" || room_name)`. Whoever holds the
/// room secret can derive it; the relay only ever sees its public half
/// (`crate::join::RoomAdmissionKey`).
pub fn room_admission_seed(room_secret: &[u8], room_name: &str) -> zeroize::Zeroizing<[u8; 32]> {
    zeroize::Zeroizing::new(hkdf32(
        Some(LABEL_ROOM_SALT),
        room_secret,
        &[LABEL_ROOM_ADMISSION, room_name.as_bytes()],
    ))
}

/// The server name of a room with admission key `room_pub`: the first 16
/// bytes of `SHA-256("wzp-room-sni-v1" || room_pub)` as 32 lowercase hex
/// digits (the grammar of [`room_hash`]). A relay checks a Join's room key
/// against it; a stranger who sees it can neither derive the key nor the
/// room name from it.
pub fn room_sni(room_pub: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(LABEL_ROOM_SNI);
    h.update(room_pub);
    hex::encode(&h.finalize()[..ROOM_ID_LEN])
}

/// Length of [`room_id`] in bytes.
pub const ROOM_ID_LEN: usize = 16;

/// The routing id of a room: the first 16 bytes of `SHA-256(room_name)`.
pub fn room_id(room_name: &str) -> [u8; ROOM_ID_LEN] {
    let digest = Sha256::digest(room_name.as_bytes());
    let mut id = [0u8; ROOM_ID_LEN];
    id.copy_from_slice(&digest[..ROOM_ID_LEN]);
    id
}

/// The routing name of a room as 32 lowercase hex digits ([`room_id`] in hex).
///
/// Used as the TLS SNI and in signaling so relays never see the plain name.
/// Truncated to 128 bits because an SNI label may hold at most 63 characters
/// (RFC 1035), which the 64 hex digits of a full SHA-256 would exceed.
pub fn room_hash(room_name: &str) -> String {
    hex::encode(room_id(room_name))
}

/// The caller's and the callee's keys of one fixed handshake (alice, seed 1,
/// calls bob, seed 2; context `c`), for tests of what a party seals.
#[cfg(test)]
pub(crate) fn test_call_keys() -> (SessionKeys, SessionKeys) {
    let (a, b) = (
        crate::Seed::from_bytes([1; 32]).identity(),
        crate::Seed::from_bytes([2; 32]).identity(),
    );
    let (i, init) = Initiator::start(&a, EphemeralKey::from_bytes([3; 32]), b"c", None);
    let (r, resp) = Responder::respond(&b, EphemeralKey::from_bytes([4; 32]), b"c", &init, None)
        .expect("a fixed handshake verifies");
    let (caller, fin) = i.finish(&resp).expect("a fixed handshake finishes");
    (caller, r.confirm(&fin).expect("a fixed handshake confirms"))
}
