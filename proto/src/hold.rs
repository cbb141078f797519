//! A party's hold notice, sealed for the other party (`call_hold`,
//! docs/WIRE.md §8.2).
//!
//! Holding a call is the holder's own silence; the notice only tells the
//! other party (it prints who holds the call and plays a beep). Sealed with
//! a key derived from the call's keys, as a party's addresses are
//! ([`crate::path_addrs`]), the relays on the way pass it on and can neither
//! forge one nor read it; each notice carries a sequence number that must
//! rise, so one a relay kept cannot be played again.
//!
//! Key: HKDF-SHA256 with the handshake transcript as salt, the direction's
//! media key as input and [`HOLD_LABEL`] as info. Cipher: ChaCha20-Poly1305
//! with a random 12-byte nonce, the call id as associated data. Sealed form:
//! `nonce (12) | ciphertext (5) | tag (16)`, [`SEALED_HOLD_LEN`] bytes;
//! plaintext `held (1: 0 or 1) | seq (4, BE)`.
//!
//! ```
//! use wzp_proto::hold;
//! # use wzp_proto::handshake::{EphemeralKey, Initiator, Responder};
//! # use wzp_proto::Seed;
//! # let alice = Seed::from_bytes([1; 32]).identity();
//! # let bob = Seed::from_bytes([2; 32]).identity();
//! # let (i, init) = Initiator::start(&alice, EphemeralKey::from_bytes([3; 32]), b"c", None);
//! # let (r, resp) = Responder::respond(&bob, EphemeralKey::from_bytes([4; 32]), b"c", &init, None).unwrap();
//! # let (caller_keys, fin) = i.finish(&resp).unwrap();
//! # let callee_keys = r.confirm(&fin).unwrap();
//! let sealed = hold::seal(&caller_keys, "abc123", true, 1, [9; 12]);
//! assert_eq!(hold::open(&callee_keys, "abc123", &sealed).unwrap(), (true, 1));
//! // Sent back to its sender, or read for another call, it does not open.
//! assert!(hold::open(&caller_keys, "abc123", &sealed).is_err());
//! assert!(hold::open(&callee_keys, "abc124", &sealed).is_err());
//! ```

use chacha20poly1305::{AeadInOut, Nonce, Tag};

use crate::handshake::SessionKeys;
use crate::path_addrs::call_cipher;

/// HKDF info of the key that seals a hold notice.
pub const HOLD_LABEL: &[u8] = b"wzp call hold v1";
/// Length of the nonce that starts a sealed notice.
pub const HOLD_NONCE_LEN: usize = 12;
/// Length of the plaintext: held, seq.
const PLAIN_LEN: usize = 5;
/// Length of the tag that ends a sealed notice.
const TAG_LEN: usize = 16;
/// Length of a sealed hold notice.
pub const SEALED_HOLD_LEN: usize = HOLD_NONCE_LEN + PLAIN_LEN + TAG_LEN;

/// Why a hold notice did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HoldError {
    /// Not [`SEALED_HOLD_LEN`] bytes.
    #[error("a sealed hold notice is {SEALED_HOLD_LEN} bytes, not {0}")]
    Length(usize),
    /// It does not open with this call's keys (forged, altered, another
    /// call's, or our own sent back).
    #[error("the hold notice does not open with this call's keys")]
    NotAuthentic,
    /// It opened but says neither held nor taken back.
    #[error("the hold notice says neither held nor taken back")]
    Malformed,
}

/// Notice number `seq` that the sender of `keys` holds call `call_id`
/// (`held`) or took it back, sealed for the other party.
pub fn seal(keys: &SessionKeys, call_id: &str, held: bool, seq: u32, nonce: [u8; 12]) -> Vec<u8> {
    let mut buf = [0u8; PLAIN_LEN];
    buf[0] = u8::from(held);
    buf[1..].copy_from_slice(&seq.to_be_bytes());
    let Ok(tag) = call_cipher(keys, keys.send_key(), HOLD_LABEL).encrypt_inout_detached(
        &Nonce::from(nonce),
        call_id.as_bytes(),
        buf.as_mut_slice().into(),
    ) else {
        unreachable!("ChaCha20-Poly1305 seals any message under 256 GiB");
    };
    let mut out = Vec::with_capacity(SEALED_HOLD_LEN);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out.extend_from_slice(&tag);
    out
}

/// Opens the other party's notice on call `call_id`: (held, seq).
pub fn open(keys: &SessionKeys, call_id: &str, sealed: &[u8]) -> Result<(bool, u32), HoldError> {
    if sealed.len() != SEALED_HOLD_LEN {
        return Err(HoldError::Length(sealed.len()));
    }
    let (nonce, rest) = sealed.split_at(HOLD_NONCE_LEN);
    let (ct, tag) = rest.split_at(PLAIN_LEN);
    let mut buf = [0u8; PLAIN_LEN];
    buf.copy_from_slice(ct);
    let nonce: [u8; HOLD_NONCE_LEN] = nonce.try_into().unwrap_or_default();
    let mut t = Tag::default();
    t.copy_from_slice(tag);
    call_cipher(keys, keys.recv_key(), HOLD_LABEL)
        .decrypt_inout_detached(
            &Nonce::from(nonce),
            call_id.as_bytes(),
            buf.as_mut_slice().into(),
            &t,
        )
        .map_err(|_| HoldError::NotAuthentic)?;
    let held = match buf[0] {
        0 => false,
        1 => true,
        _ => return Err(HoldError::Malformed),
    };
    Ok((held, u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::test_call_keys as keys;

    #[test]
    fn a_notice_opens_for_the_other_party_only_and_whole() {
        let (caller, callee) = keys();
        for (held, seq) in [(true, 1), (false, 2), (true, u32::MAX)] {
            let s = seal(&callee, "c1", held, seq, [5; 12]);
            assert_eq!(s.len(), SEALED_HOLD_LEN);
            assert_eq!(open(&caller, "c1", &s), Ok((held, seq)));
        }
        let s = seal(&caller, "c1", true, 7, [6; 12]);
        for n in [0, 1, SEALED_HOLD_LEN - 1, SEALED_HOLD_LEN + 1] {
            let mut b = s.clone();
            b.resize(n, 0);
            assert_eq!(open(&callee, "c1", &b), Err(HoldError::Length(n)));
        }
        // Any byte changed on the way: it does not open.
        for i in 0..SEALED_HOLD_LEN {
            let mut b = s.clone();
            b[i] ^= 0x40;
            assert_eq!(
                open(&callee, "c1", &b),
                Err(HoldError::NotAuthentic),
                "byte {i}"
            );
        }
    }
}
