//! Voice messages: a recording left for a person, sealed end to end to that
//! person, which their relay keeps until they fetch it.
//!
//! A person's **message key** is the X25519 public key of their identity
//! ([`Identity::x25519_public`]) signed by their Ed25519 identity key
//! ([`MessageKey`]). A client sends it with each registration; the relay
//! keeps it and hands it to anyone who asks (`message_key_query`), who
//! checks the signature and that the identity key is the fingerprint it
//! meant to reach. A relay can withhold a key, never substitute one.
//!
//! **Sealed form** (at most [`MAX_SEALED_MESSAGE`] bytes): `version (1 = 1)
//! | ephemeral X25519 public (32) | ciphertext | tag (16)`. Key: HKDF-SHA256
//! with `ephemeral public | recipient's X25519 public` as salt, the X25519
//! shared secret as input and [`VOICE_MESSAGE_LABEL`] as info; a fresh
//! ephemeral key per message, so the ChaCha20-Poly1305 nonce is zero. The
//! associated data is the header (version and ephemeral public) and the
//! recipient's fingerprint. `seal` takes the ephemeral secret as bytes
//! (sans-IO, as everywhere here): they must be fresh random bytes for each
//! message, or two messages to one person would share a key and nonce.
//!
//! **Plaintext**: `sender identity public (32) | sent_at_ms (8, BE) |
//! signature (64) | count (2, BE) | count x (length (2, BE) | Opus packet)`,
//! each packet one 20 ms frame of mono 48 kHz Opus, 1..=1275 bytes, at most
//! [`MAX_FRAMES`] of them. The signature is the sender's Ed25519 over
//! `VOICE_MESSAGE_LABEL | recipient fingerprint (16) | ephemeral public (32)
//! | sent_at_ms (8, BE) | SHA-256 of the count and packets`: it names who
//! left the message, for whom, and when, so a message opened by its
//! recipient is the sender's, whole, and meant for them (a relay that
//! re-addresses it to someone else, splices two, or claims another sender
//! is caught).
//!
//! ```
//! use wzp_proto::voice_message::{open, seal, MessageKey};
//! # use wzp_proto::Seed;
//! let alice = Seed::from_bytes([1; 32]).identity();
//! let bob = Seed::from_bytes([2; 32]).identity();
//! let key = MessageKey::of(&bob);
//! assert_eq!(key.verify().unwrap(), bob.fingerprint());
//! let frames = vec![vec![0xf8, 0xff, 0xfe]; 50];
//! let sealed = seal(&alice, &key, 1_700_000_000_000, &frames, [7; 32]).unwrap();
//! let m = open(&bob, &sealed).unwrap();
//! assert_eq!((m.sender, m.frames), (alice.fingerprint(), frames));
//! // Anyone else cannot open it.
//! assert!(open(&alice, &sealed).is_err());
//! ```

use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{verify_signature, Fingerprint, Identity};

/// What a message key's signature covers, before the X25519 key.
pub const MESSAGE_KEY_LABEL: &[u8] = b"wzp message key v1";
/// HKDF info of a voice message's key, and the first bytes its sender signs.
pub const VOICE_MESSAGE_LABEL: &[u8] = b"wzp voice message v1";
/// The sealed form's version byte.
pub const VOICE_MESSAGE_VERSION: u8 = 1;
/// The longest message: 120 s of 20 ms frames.
pub const MAX_FRAMES: usize = 6_000;
/// Opus's largest packet.
pub const MAX_OPUS_PACKET: usize = 1_275;
/// The largest sealed message, bytes (about 120 s at 16 kb/s).
pub const MAX_SEALED_MESSAGE: usize = 256 * 1024;
/// Bytes of a sealed message per `voice_message` part (hex in JSON: twice
/// as many characters, well within a relay's 64 KiB frame).
pub const MESSAGE_PART_LEN: usize = 24 * 1024;
/// The most parts one message takes.
pub const MAX_MESSAGE_PARTS: u32 = MAX_SEALED_MESSAGE.div_ceil(MESSAGE_PART_LEN) as u32;
/// The longest message id (`[a-z0-9-]`).
pub const MAX_MESSAGE_ID_LEN: usize = 32;

const HEADER_LEN: usize = 1 + 32;
const TAG_LEN: usize = 16;
const PLAIN_FIXED: usize = 32 + 8 + 64 + 2;

/// A person's message key: their identity's X25519 public key, signed by
/// their identity key. Hex in JSON.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageKey {
    /// The person's Ed25519 identity key (their fingerprint is its hash).
    #[serde(with = "crate::signal::hex_array")]
    pub identity_pub: [u8; 32],
    /// The X25519 key voice messages for them are sealed to.
    #[serde(with = "crate::signal::hex_array")]
    pub x25519_pub: [u8; 32],
    /// Ed25519 over [`MESSAGE_KEY_LABEL`] `| x25519_pub`.
    #[serde(with = "crate::signal::hex_array")]
    pub signature: [u8; 64],
}

impl MessageKey {
    /// `identity`'s message key.
    pub fn of(identity: &Identity) -> MessageKey {
        let x25519_pub = identity.x25519_public();
        MessageKey {
            identity_pub: identity.public_key(),
            x25519_pub,
            signature: identity.sign(&key_signed_bytes(&x25519_pub)),
        }
    }

    /// Checks the signature; returns whose key it is.
    pub fn verify(&self) -> Result<Fingerprint, VoiceMessageError> {
        verify_signature(
            &self.identity_pub,
            &key_signed_bytes(&self.x25519_pub),
            &self.signature,
        )
        .map_err(|_| VoiceMessageError::BadKeySignature)?;
        Ok(Fingerprint::of_public_key(&self.identity_pub))
    }
}

fn key_signed_bytes(x25519_pub: &[u8; 32]) -> Vec<u8> {
    let mut m = MESSAGE_KEY_LABEL.to_vec();
    m.extend_from_slice(x25519_pub);
    m
}

/// An opened voice message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoiceMessage {
    /// Who left it (proven by its signature).
    pub sender: Fingerprint,
    /// The sender's identity key.
    pub sender_pub: [u8; 32],
    /// When the sender says it left it (Unix ms; part of what it signed).
    pub sent_at_ms: u64,
    /// 20 ms Opus packets, mono 48 kHz.
    pub frames: Vec<Vec<u8>>,
}

impl VoiceMessage {
    /// How long it plays, ms.
    pub fn duration_ms(&self) -> u64 {
        self.frames.len() as u64 * 20
    }
}

/// Why a voice message could not be sealed or opened, or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoiceMessageError {
    /// The message key's signature does not verify.
    #[error("the message key is not signed by the identity it names")]
    BadKeySignature,
    /// No frames, too many, or a packet of a size Opus never makes.
    #[error("{0}")]
    BadFrames(String),
    /// The sealed bytes are too short, too long, or of another version.
    #[error("malformed voice message: {0}")]
    Malformed(&'static str),
    /// It does not open with this identity's key (another recipient's,
    /// or altered on the way).
    #[error("the voice message does not open with this identity (for someone else, or altered)")]
    NotForUs,
    /// It opened, but its sender's signature does not verify.
    #[error("the voice message's signature does not verify: not the sender's, or not for you")]
    BadSignature,
}

/// Seals `frames` (20 ms Opus packets) from `sender` to the holder of
/// `to` (verified here), left at `sent_at_ms`. `ephemeral`: 32 random bytes,
/// fresh for each message.
pub fn seal(
    sender: &Identity,
    to: &MessageKey,
    sent_at_ms: u64,
    frames: &[Vec<u8>],
    ephemeral: [u8; 32],
) -> Result<Vec<u8>, VoiceMessageError> {
    let recipient = to.verify()?;
    check_frames(frames)?;
    let eph = x25519_dalek::StaticSecret::from(ephemeral);
    let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
    let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(to.x25519_pub));
    if !shared.was_contributory() {
        return Err(VoiceMessageError::BadKeySignature);
    }
    let body = encode_frames(frames);
    let signature = sender.sign(&signed_bytes(&recipient, &eph_pub, sent_at_ms, &body));
    let mut plain = Vec::with_capacity(PLAIN_FIXED + body.len());
    plain.extend_from_slice(&sender.public_key());
    plain.extend_from_slice(&sent_at_ms.to_be_bytes());
    plain.extend_from_slice(&signature);
    plain.extend_from_slice(&body);
    if HEADER_LEN + plain.len() + TAG_LEN > MAX_SEALED_MESSAGE {
        return Err(VoiceMessageError::BadFrames(format!(
            "the message takes {} bytes sealed; at most {MAX_SEALED_MESSAGE} (shorter, or a lower bitrate)",
            HEADER_LEN + plain.len() + TAG_LEN
        )));
    }
    let cipher = cipher(shared.as_bytes(), &eph_pub, &to.x25519_pub);
    let Ok(tag) = cipher.encrypt_inout_detached(
        &Nonce::default(),
        &aad(&eph_pub, &recipient),
        plain.as_mut_slice().into(),
    ) else {
        unreachable!("ChaCha20-Poly1305 seals any message under 256 GiB");
    };
    let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
    out.push(VOICE_MESSAGE_VERSION);
    out.extend_from_slice(&eph_pub);
    out.extend_from_slice(&plain);
    out.extend_from_slice(&tag);
    Ok(out)
}

/// Opens a message sealed to `recipient`, checking its sender's signature.
pub fn open(recipient: &Identity, sealed: &[u8]) -> Result<VoiceMessage, VoiceMessageError> {
    if sealed.len() < HEADER_LEN + PLAIN_FIXED + TAG_LEN {
        return Err(VoiceMessageError::Malformed("too short"));
    }
    if sealed.len() > MAX_SEALED_MESSAGE {
        return Err(VoiceMessageError::Malformed(
            "longer than a voice message may be",
        ));
    }
    if sealed[0] != VOICE_MESSAGE_VERSION {
        return Err(VoiceMessageError::Malformed("unknown version"));
    }
    let mut eph_pub = [0u8; 32];
    eph_pub.copy_from_slice(&sealed[1..HEADER_LEN]);
    let shared = recipient
        .x25519_secret()
        .diffie_hellman(&x25519_dalek::PublicKey::from(eph_pub));
    if !shared.was_contributory() {
        return Err(VoiceMessageError::NotForUs);
    }
    let (ct, tag) = sealed[HEADER_LEN..].split_at(sealed.len() - HEADER_LEN - TAG_LEN);
    let mut plain = ct.to_vec();
    let mut t = Tag::default();
    t.copy_from_slice(tag);
    let me = recipient.fingerprint();
    cipher(shared.as_bytes(), &eph_pub, &recipient.x25519_public())
        .decrypt_inout_detached(
            &Nonce::default(),
            &aad(&eph_pub, &me),
            plain.as_mut_slice().into(),
            &t,
        )
        .map_err(|_| VoiceMessageError::NotForUs)?;
    let mut sender_pub = [0u8; 32];
    sender_pub.copy_from_slice(&plain[..32]);
    let mut at = [0u8; 8];
    at.copy_from_slice(&plain[32..40]);
    let sent_at_ms = u64::from_be_bytes(at);
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&plain[40..104]);
    let body = &plain[104..];
    verify_signature(
        &sender_pub,
        &signed_bytes(&me, &eph_pub, sent_at_ms, body),
        &signature,
    )
    .map_err(|_| VoiceMessageError::BadSignature)?;
    let frames = decode_frames(body)?;
    Ok(VoiceMessage {
        sender: Fingerprint::of_public_key(&sender_pub),
        sender_pub,
        sent_at_ms,
        frames,
    })
}

/// Whether `id` may name a message: 1..=[`MAX_MESSAGE_ID_LEN`] of `[a-z0-9-]`.
pub fn valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_MESSAGE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `sealed` cut into `voice_message` parts of at most [`MESSAGE_PART_LEN`].
pub fn parts(sealed: &[u8]) -> impl Iterator<Item = &[u8]> {
    sealed.chunks(MESSAGE_PART_LEN)
}

fn check_frames(frames: &[Vec<u8>]) -> Result<(), VoiceMessageError> {
    if frames.is_empty() {
        return Err(VoiceMessageError::BadFrames(
            "a voice message of no audio".into(),
        ));
    }
    if frames.len() > MAX_FRAMES {
        return Err(VoiceMessageError::BadFrames(format!(
            "{} frames of 20 ms; at most {MAX_FRAMES} ({} s)",
            frames.len(),
            MAX_FRAMES / 50
        )));
    }
    if let Some(f) = frames
        .iter()
        .find(|f| f.is_empty() || f.len() > MAX_OPUS_PACKET)
    {
        return Err(VoiceMessageError::BadFrames(format!(
            "an Opus packet of {} bytes; 1..={MAX_OPUS_PACKET}",
            f.len()
        )));
    }
    Ok(())
}

fn encode_frames(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + frames.iter().map(|f| 2 + f.len()).sum::<usize>());
    out.extend_from_slice(&(frames.len() as u16).to_be_bytes());
    for f in frames {
        out.extend_from_slice(&(f.len() as u16).to_be_bytes());
        out.extend_from_slice(f);
    }
    out
}

fn decode_frames(mut b: &[u8]) -> Result<Vec<Vec<u8>>, VoiceMessageError> {
    let mut take = |n: usize| -> Result<&[u8], VoiceMessageError> {
        if b.len() < n {
            return Err(VoiceMessageError::Malformed("truncated frames"));
        }
        let (h, t) = b.split_at(n);
        b = t;
        Ok(h)
    };
    let count = u16::from_be_bytes([take(1)?[0], take(1)?[0]]) as usize;
    let mut frames = Vec::with_capacity(count.min(MAX_FRAMES));
    for _ in 0..count {
        let len = u16::from_be_bytes([take(1)?[0], take(1)?[0]]) as usize;
        frames.push(take(len)?.to_vec());
    }
    if !b.is_empty() {
        return Err(VoiceMessageError::Malformed("bytes after the frames"));
    }
    check_frames(&frames).map_err(|_| VoiceMessageError::Malformed("frames out of bounds"))?;
    Ok(frames)
}

/// The associated data: the sealed form's header and the recipient.
fn aad(eph_pub: &[u8; 32], recipient: &Fingerprint) -> [u8; 49] {
    let mut a = [0u8; 49];
    a[0] = VOICE_MESSAGE_VERSION;
    a[1..33].copy_from_slice(eph_pub);
    a[33..].copy_from_slice(recipient.as_bytes());
    a
}

fn signed_bytes(recipient: &Fingerprint, eph_pub: &[u8; 32], at: u64, body: &[u8]) -> Vec<u8> {
    let mut m = VOICE_MESSAGE_LABEL.to_vec();
    m.extend_from_slice(recipient.as_bytes());
    m.extend_from_slice(eph_pub);
    m.extend_from_slice(&at.to_be_bytes());
    m.extend_from_slice(&Sha256::digest(body));
    m
}

fn cipher(shared: &[u8; 32], eph_pub: &[u8; 32], recipient_x: &[u8; 32]) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(eph_pub);
    salt[32..].copy_from_slice(recipient_x);
    let hk = Hkdf::<Sha256>::new(Some(&salt), shared);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if hk.expand(VOICE_MESSAGE_LABEL, &mut key[..]).is_err() {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    ChaCha20Poly1305::new(&Key::from(*key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Seed;

    fn id(n: u8) -> Identity {
        Seed::from_bytes([n; 32]).identity()
    }

    fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| vec![(i % 251) as u8; 1 + i % 60]).collect()
    }

    #[test]
    fn a_sealed_message_opens_for_its_recipient_only_with_its_sender_and_time() {
        let (alice, bob, eve) = (id(1), id(2), id(3));
        let f = frames(250);
        let sealed = seal(&alice, &MessageKey::of(&bob), 42, &f, [9; 32]).unwrap();
        let m = open(&bob, &sealed).unwrap();
        assert_eq!(m.sender, alice.fingerprint());
        assert_eq!(m.sender_pub, alice.public_key());
        assert_eq!(m.sent_at_ms, 42);
        assert_eq!(m.frames, f);
        assert_eq!(m.duration_ms(), 5_000);
        assert_eq!(open(&eve, &sealed), Err(VoiceMessageError::NotForUs));
        assert_eq!(open(&alice, &sealed), Err(VoiceMessageError::NotForUs));
    }

    #[test]
    fn every_altered_byte_is_caught() {
        let (alice, bob) = (id(1), id(2));
        let sealed = seal(&alice, &MessageKey::of(&bob), 42, &frames(3), [9; 32]).unwrap();
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x20;
            assert!(open(&bob, &bad).is_err(), "byte {i} altered went unnoticed");
        }
    }

    #[test]
    fn a_key_that_is_not_its_identitys_is_refused_and_nothing_is_sealed_to_it() {
        let (alice, bob, eve) = (id(1), id(2), id(3));
        // The relay hands out bob's identity with eve's X25519 key.
        let mut swapped = MessageKey::of(&bob);
        swapped.x25519_pub = eve.x25519_public();
        assert_eq!(swapped.verify(), Err(VoiceMessageError::BadKeySignature));
        assert!(seal(&alice, &swapped, 1, &frames(1), [9; 32]).is_err());
        // Eve's own key is hers, not bob's: the caller checks the fingerprint.
        assert_eq!(MessageKey::of(&eve).verify(), Ok(eve.fingerprint()));
        // A low-order point for a key: nothing to seal to.
        let mut weak = MessageKey::of(&bob);
        weak.x25519_pub = [0; 32];
        assert!(seal(&alice, &weak, 1, &frames(1), [9; 32]).is_err());
    }

    #[test]
    fn a_sender_signature_from_someone_else_is_caught() {
        // Eve seals a message claiming to be alice: she signs with her key
        // but writes alice's identity into the plaintext.
        let (alice, bob, eve) = (id(1), id(2), id(3));
        let key = MessageKey::of(&bob);
        let eph = x25519_dalek::StaticSecret::from([5; 32]);
        let eph_pub = x25519_dalek::PublicKey::from(&eph).to_bytes();
        let shared = eph.diffie_hellman(&x25519_dalek::PublicKey::from(key.x25519_pub));
        let body = encode_frames(&frames(2));
        let sig = eve.sign(&signed_bytes(&bob.fingerprint(), &eph_pub, 7, &body));
        let mut plain = alice.public_key().to_vec();
        plain.extend_from_slice(&7u64.to_be_bytes());
        plain.extend_from_slice(&sig);
        plain.extend_from_slice(&body);
        let tag = cipher(shared.as_bytes(), &eph_pub, &key.x25519_pub)
            .encrypt_inout_detached(
                &Nonce::default(),
                &aad(&eph_pub, &bob.fingerprint()),
                plain.as_mut_slice().into(),
            )
            .unwrap();
        let mut sealed = vec![VOICE_MESSAGE_VERSION];
        sealed.extend_from_slice(&eph_pub);
        sealed.extend_from_slice(&plain);
        sealed.extend_from_slice(&tag);
        assert_eq!(open(&bob, &sealed), Err(VoiceMessageError::BadSignature));
    }

    #[test]
    fn bad_input_is_refused_with_why() {
        let (alice, bob) = (id(1), id(2));
        let key = MessageKey::of(&bob);
        let good = seal(&alice, &key, 1, &frames(2), [9; 32]).unwrap();
        let mut other_version = good.clone();
        other_version[0] = 2;
        let table: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("header only", good[..HEADER_LEN].to_vec()),
            (
                "one byte short of the smallest",
                vec![1; HEADER_LEN + PLAIN_FIXED + TAG_LEN - 1],
            ),
            ("another version", other_version),
            ("too long", vec![1; MAX_SEALED_MESSAGE + 1]),
            ("noise", vec![1; 400]),
            ("truncated", good[..good.len() - 1].to_vec()),
        ];
        for (what, bytes) in table {
            assert!(open(&bob, &bytes).is_err(), "{what} opened");
        }
        for (what, f) in [
            ("no frames", Vec::new()),
            ("an empty packet", vec![Vec::new()]),
            ("a packet too large", vec![vec![0; MAX_OPUS_PACKET + 1]]),
            ("too long", vec![vec![1]; MAX_FRAMES + 1]),
            ("too many bytes", vec![vec![1; 1000]; 300]),
        ] {
            assert!(
                matches!(
                    seal(&alice, &key, 1, &f, [9; 32]),
                    Err(VoiceMessageError::BadFrames(_))
                ),
                "{what} sealed"
            );
        }
    }

    #[test]
    fn frames_decode_only_whole_and_in_bounds() {
        assert_eq!(
            decode_frames(&encode_frames(&frames(4))).unwrap(),
            frames(4)
        );
        let mut trailing = encode_frames(&frames(1));
        trailing.push(0);
        for bad in [
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1, 0, 5, 1, 2],
            trailing,
            vec![0, 1, 0, 0],
        ] {
            assert!(decode_frames(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn message_ids_and_parts() {
        for ok in ["a", "0-9", &"z".repeat(MAX_MESSAGE_ID_LEN)] {
            assert!(valid_message_id(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a b",
            "a_b",
            "é",
            &"z".repeat(MAX_MESSAGE_ID_LEN + 1),
        ] {
            assert!(!valid_message_id(bad), "{bad}");
        }
        let sealed = vec![7u8; MESSAGE_PART_LEN * 2 + 1];
        let p: Vec<&[u8]> = parts(&sealed).collect();
        assert_eq!(
            p.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [MESSAGE_PART_LEN, MESSAGE_PART_LEN, 1]
        );
        assert_eq!(MAX_MESSAGE_PARTS, 11);
    }

    #[test]
    fn a_message_key_reads_as_hex_json() {
        let k = MessageKey::of(&id(2));
        let json = serde_json::to_string(&k).unwrap();
        assert!(
            json.contains(&format!(r#""x25519_pub":"{}""#, hex::encode(k.x25519_pub))),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<MessageKey>(&json).unwrap(), k);
        assert!(serde_json::from_str::<MessageKey>(r#"{"identity_pub":"00"}"#).is_err());
    }
}
