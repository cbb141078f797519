//! Media keys: where the base key comes from (params or a handshake), and the
//! per-epoch AEAD keys derived from it.
//!
//! ```text
//! base    = room_key(room_secret, room)            rooms (docs/WIRE.md §4)
//!         | session send/recv key                  1:1 calls (WIRE.md §3.4)
//!         | `key` param (64 hex digits)            tests
//! K_epoch = HKDF-SHA256(salt = "wzp-media-v1", IKM = base,
//!                       info = "wzp media epoch key v1" || epoch (1 byte))
//! ```
//!
//! All 256 epoch keys are derived when the stage is built, so a rekey on the
//! real-time path is an index change, not a key derivation.

use std::sync::Arc;

use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit};
use hkdf::Hkdf;
use sha2::Sha256;
use wzp_engine::prelude::*;
use wzp_proto::handshake::SessionKeys;
use zeroize::Zeroizing;

/// HKDF salt of the epoch key derivation.
pub const LABEL_EPOCH_SALT: &[u8] = b"wzp-media-v1";
/// HKDF info prefix of the epoch key derivation (the epoch byte follows).
pub const LABEL_EPOCH_KEY: &[u8] = b"wzp media epoch key v1";
/// Number of key epochs: the header's `key_epoch` is one byte.
pub const EPOCHS: usize = 256;
/// Shortest `room_secret` accepted, in bytes.
pub const MIN_ROOM_SECRET: usize = 16;

/// The secret of a room joined without one (an open room):
/// `wzp-open-room:{room}`, padded with `~` to [`MIN_ROOM_SECRET`] bytes when
/// the name is that short, so every room name makes a usable secret (longer
/// names give the same secret as before, so clients of either kind meet).
/// A relay names an open global room by it too (`[[global_rooms]]`).
pub fn open_room_secret(room: &str) -> String {
    let mut s = format!("wzp-open-room:{room}");
    while s.len() < MIN_ROOM_SECRET {
        s.push('~');
    }
    s
}

/// The AEAD key for `epoch`, derived from `base`.
pub fn epoch_key(base: &[u8; 32], epoch: u8) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(Some(LABEL_EPOCH_SALT), base);
    let mut out = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit of 8160, so expand cannot fail.
    if hk
        .expand_multi_info(&[LABEL_EPOCH_KEY, &[epoch]], out.as_mut())
        .is_err()
    {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    out
}

/// The 256 epoch ciphers of one base key. A `ChaCha20Poly1305` holds only its
/// key (zeroed on drop), so 256 of them are 8 KiB.
pub(crate) struct EpochCiphers {
    ciphers: Box<[ChaCha20Poly1305; EPOCHS]>,
}

impl EpochCiphers {
    pub(crate) fn derive(base: &[u8; 32]) -> EpochCiphers {
        let all: Vec<ChaCha20Poly1305> = (0..=u8::MAX)
            .map(|e| ChaCha20Poly1305::new(&Key::from(*epoch_key(base, e))))
            .collect();
        let Ok(ciphers) = all.into_boxed_slice().try_into() else {
            unreachable!("0..=255 yields exactly EPOCHS ciphers");
        };
        EpochCiphers { ciphers }
    }

    /// The cipher of `epoch`; a u8 always indexes the 256-entry table.
    #[inline]
    pub(crate) fn get(&self, epoch: u8) -> &ChaCha20Poly1305 {
        &self.ciphers[usize::from(epoch)]
    }
}

/// Which half of a session's keys a stage uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Send,
    Recv,
}

/// The key params shared by `crypto.seal` and `crypto.open`.
pub(crate) fn key_params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::str(
            "room",
            "",
            "room name (with room_secret): the media key is room_key(room_secret, room)",
        ),
        ParamSpec::str(
            "room_secret",
            "",
            "secret only room members hold, at least 16 bytes (e.g. `openssl rand -hex 16`)",
        ),
        ParamSpec::str(
            "session",
            "",
            "name of an Arc<SessionKeys> resource from the call handshake",
        ),
        ParamSpec::str("key", "", "base key as 64 hex digits (tests)"),
    ]
}

/// Reads the one key source the params name and returns the base key.
pub(crate) fn base_key(
    cx: &BuildContext<'_>,
    p: &Params,
    side: Side,
) -> Result<Zeroizing<[u8; 32]>, BuildError> {
    let room = p.str("room")?;
    let secret = p.str("room_secret")?;
    let session = p.str("session")?;
    let hex_key = p.str("key")?;
    let sources = [
        !room.is_empty() || !secret.is_empty(),
        !session.is_empty(),
        !hex_key.is_empty(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => {
            return Err(BuildError::Other(
                "no media key: set `room` and `room_secret` (rooms), `session` (a call's \
                 handshake keys) or `key` (64 hex digits, tests)"
                    .into(),
            ))
        }
        1 => {}
        _ => {
            return Err(BuildError::Other(
                "more than one media key source: set only one of `room`+`room_secret`, \
                 `session` or `key`"
                    .into(),
            ))
        }
    }
    if sources[0] {
        if room.is_empty() {
            return Err(ParamError::new("room", "empty; a room key needs the room name").into());
        }
        if secret.len() < MIN_ROOM_SECRET {
            return Err(ParamError::new(
                "room_secret",
                format!(
                    "{} bytes is too short; use at least {MIN_ROOM_SECRET} random bytes \
                     (e.g. `openssl rand -hex 16`)",
                    secret.len()
                ),
            )
            .into());
        }
        return Ok(Zeroizing::new(wzp_proto::room_key(secret.as_bytes(), room)));
    }
    if sources[1] {
        let keys: Arc<SessionKeys> = cx.resource(session).ok_or_else(|| {
            ParamError::new(
                "session",
                format!(
                    "no SessionKeys resource named {session:?}; the control plane inserts it \
                     after the handshake"
                ),
            )
        })?;
        let key = match side {
            Side::Send => keys.send_key(),
            Side::Recv => keys.recv_key(),
        };
        return Ok(Zeroizing::new(*key));
    }
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_key.trim(), key.as_mut()).map_err(|e| {
        ParamError::new(
            "key",
            format!("not 64 hex digits ({e}); give the 32-byte key in hex"),
        )
    })?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_keys_differ_from_base_and_each_other() {
        let base = [7u8; 32];
        let k0 = epoch_key(&base, 0);
        let k1 = epoch_key(&base, 1);
        assert_ne!(*k0, base);
        assert_ne!(*k0, *k1);
        assert_eq!(*k0, *epoch_key(&base, 0), "deterministic");
    }
}
