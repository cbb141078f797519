//! A party's addresses for a direct path, sealed for the other party.
//!
//! On one relay the relay itself hands each party the other's addresses
//! (`call_setup.peer_direct_addr`, `peer_local_addrs`) when the callee
//! answered `accept_trusted`. A call that crosses relays has no relay that
//! knows both parties, and addresses never cross a federation link in the
//! clear. So once the call's handshake is done, each party sends its own
//! addresses to the other in a `call_path` signal message, sealed with a key
//! derived from the call's keys: the relays on the way forward it (a
//! `path` call event between them) and cannot read, alter or forge it. The
//! caller sends first, and only to a callee that answered `accept_trusted`;
//! the callee answers with its own (docs/WIRE.md §10.1).
//!
//! Key: HKDF-SHA256 with the handshake transcript as salt, the direction's
//! media key as input and [`PATH_ADDRS_LABEL`] as info (one key per
//! direction, so a party's own message sent back to it does not open).
//! Cipher: ChaCha20-Poly1305 with a random 12-byte nonce, the call id as
//! associated data. Sealed form: `nonce (12) | ciphertext | tag (16)`,
//! always [`MAX_SEALED_PATH`] bytes: the plaintext is padded with zeros to
//! [`MAX_PATH_ADDRS_PLAIN`], so a relay cannot tell from the length how
//! many addresses a party has, or of which family.
//! Plaintext: `version (1) | flags (1: bit 0, an observed address follows;
//! with bit 0 only, bit 1: the party's NAT keeps one mapping for every
//! destination, or bit 2: a mapping per destination, [`crate::mapping`])
//! | [observed] | count (1, at most MAX_LOCAL_ADDRS) | count x address |
//! zeros`,
//! each address `family (1: 4 or 6) | IP (4 or 16) | port (2, BE)`. An
//! IPv4 address is always family 4 (an IPv4-mapped IPv6 one is refused, so
//! each address has one encoding); an IPv6 scope id is not carried (the
//! peer's would not be ours anyway), nor flow info.
//!
//! ```
//! use wzp_proto::direct_call::{IncomingCall, OutgoingCall};
//! use wzp_proto::path_addrs::PathAddrs;
//! # use wzp_proto::handshake::{EphemeralKey, Initiator, Responder};
//! # use wzp_proto::Seed;
//! # let alice = Seed::from_bytes([1; 32]).identity();
//! # let bob = Seed::from_bytes([2; 32]).identity();
//! # let (i, init) = Initiator::start(&alice, EphemeralKey::from_bytes([3; 32]), b"c", None);
//! # let (r, resp) = Responder::respond(&bob, EphemeralKey::from_bytes([4; 32]), b"c", &init, None).unwrap();
//! # let (caller_keys, fin) = i.finish(&resp).unwrap();
//! # let callee_keys = r.confirm(&fin).unwrap();
//! let mine = PathAddrs { observed: Some("198.51.100.7:40000".parse().unwrap()), local: vec!["10.0.0.2:40000".parse().unwrap()], mapping: Default::default() };
//! let sealed = mine.seal(&caller_keys, "abc123", [9; 12]);
//! assert_eq!(PathAddrs::open(&sealed, &callee_keys, "abc123").unwrap(), mine);
//! // Sent back to its sender, or read for another call, it does not open.
//! assert!(PathAddrs::open(&sealed, &caller_keys, "abc123").is_err());
//! assert!(PathAddrs::open(&sealed, &callee_keys, "abc124").is_err());
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, Key, KeyInit, Nonce, Tag};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::handshake::SessionKeys;
use crate::signal::MAX_LOCAL_ADDRS;

/// HKDF info of the key that seals a party's addresses.
pub const PATH_ADDRS_LABEL: &[u8] = b"wzp direct path addrs v1";
/// Version byte of the plaintext.
pub const PATH_ADDRS_VERSION: u8 = 1;
/// Nonce length.
pub const PATH_ADDRS_NONCE_LEN: usize = 12;
/// Tag length.
pub const PATH_ADDRS_TAG_LEN: usize = 16;
/// Longest plaintext: version, flags, an IPv6 observed address, the count
/// and [`MAX_LOCAL_ADDRS`] IPv6 addresses.
pub const MAX_PATH_ADDRS_PLAIN: usize = 3 + (1 + MAX_LOCAL_ADDRS) * ADDR_V6_LEN;
/// The sealed form's length (126 bytes: the plaintext is padded to its
/// longest); relays refuse a longer `call_path`.
pub const MAX_SEALED_PATH: usize = PATH_ADDRS_NONCE_LEN + MAX_PATH_ADDRS_PLAIN + PATH_ADDRS_TAG_LEN;
/// Shortest sealed form [`PathAddrs::open`] reads: the same, every sealed
/// form is padded to one length.
pub const MIN_SEALED_PATH: usize = MAX_SEALED_PATH;

/// Most `call_path` messages a relay carries from one party of a call (each
/// sends one; a few more cover a client that sends again).
pub const MAX_CALL_PATHS: u8 = 4;

const ADDR_V6_LEN: usize = 1 + 16 + 2;

/// Where a party can be reached directly.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PathAddrs {
    /// Its signalling socket as its relay saw it.
    pub observed: Option<SocketAddr>,
    /// Its own addresses on its network (at most [`MAX_LOCAL_ADDRS`]; more
    /// are not sealed).
    pub local: Vec<SocketAddr>,
    /// What its mapping test ([`crate::mapping`]) showed of its NAT, for
    /// `observed` (written only with `observed`): flag bit 1 independent,
    /// bit 2 per destination. A build that predates them refuses either,
    /// so a sender that sets one sends the same addresses without it
    /// right after ([`PathAddrs::without_mapping`]): the peer acts on the
    /// first that opens and reads.
    pub mapping: crate::mapping::Mapping,
}

/// Why a sealed `call_path` was not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathAddrsError {
    /// Shorter than [`MIN_SEALED_PATH`] or longer than [`MAX_SEALED_PATH`].
    #[error("sealed addresses of {0} bytes; {MIN_SEALED_PATH}..={MAX_SEALED_PATH}")]
    Length(usize),
    /// Not sealed by the call's peer for this call and direction (another
    /// key, altered on the way, another call's, or our own sent back).
    #[error("sealed addresses do not open with this call's key")]
    NotAuthentic,
    /// Opened, but the plaintext is not well formed.
    #[error("sealed addresses: {0}")]
    Malformed(&'static str),
}

impl PathAddrs {
    /// The same addresses with no mapping flag: what a peer of a build that
    /// predates the flags reads.
    pub fn without_mapping(&self) -> PathAddrs {
        PathAddrs {
            mapping: crate::mapping::Mapping::Unknown,
            ..self.clone()
        }
    }

    /// Whether there is nothing to share.
    pub fn is_empty(&self) -> bool {
        self.observed.is_none() && self.local.is_empty()
    }

    /// The plaintext.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAX_PATH_ADDRS_PLAIN);
        out.push(PATH_ADDRS_VERSION);
        let mapping = match (self.observed, self.mapping) {
            (Some(_), crate::mapping::Mapping::Independent) => 0b010,
            (Some(_), crate::mapping::Mapping::Dependent) => 0b100,
            _ => 0,
        };
        out.push(u8::from(self.observed.is_some()) | mapping);
        if let Some(a) = self.observed {
            put_addr(&mut out, a);
        }
        let local = &self.local[..self.local.len().min(MAX_LOCAL_ADDRS)];
        out.push(local.len() as u8);
        for &a in local {
            put_addr(&mut out, a);
        }
        out
    }

    /// Reads a plaintext (without padding).
    pub fn decode(b: &[u8]) -> Result<PathAddrs, PathAddrsError> {
        let (addrs, rest) = PathAddrs::decode_prefix(b)?;
        if !rest.is_empty() {
            return Err(PathAddrsError::Malformed("bytes after the addresses"));
        }
        Ok(addrs)
    }

    /// Reads a padded plaintext: [`MAX_PATH_ADDRS_PLAIN`] bytes, zeros after
    /// the addresses.
    fn decode_padded(b: &[u8]) -> Result<PathAddrs, PathAddrsError> {
        if b.len() != MAX_PATH_ADDRS_PLAIN {
            return Err(PathAddrsError::Malformed("not padded to 98 bytes"));
        }
        let (addrs, rest) = PathAddrs::decode_prefix(b)?;
        if rest.iter().any(|&x| x != 0) {
            return Err(PathAddrsError::Malformed("padding that is not zeros"));
        }
        Ok(addrs)
    }

    fn decode_prefix(b: &[u8]) -> Result<(PathAddrs, &[u8]), PathAddrsError> {
        let mut r = Reader(b);
        if r.byte()? != PATH_ADDRS_VERSION {
            return Err(PathAddrsError::Malformed("unknown version"));
        }
        use crate::mapping::Mapping;
        let flags = r.byte()?;
        let mapping = match flags >> 1 {
            0 => Mapping::Unknown,
            1 => Mapping::Independent,
            2 => Mapping::Dependent,
            _ => return Err(PathAddrsError::Malformed("unknown flags")),
        };
        let observed = match flags & 1 {
            1 => Some(r.addr()?),
            _ if mapping.is_known() => {
                return Err(PathAddrsError::Malformed(
                    "a mapping flag without an observed address",
                ))
            }
            _ => None,
        };
        let n = r.byte()? as usize;
        if n > MAX_LOCAL_ADDRS {
            return Err(PathAddrsError::Malformed(
                "more own-network addresses than 4",
            ));
        }
        let local = (0..n).map(|_| r.addr()).collect::<Result<Vec<_>, _>>()?;
        Ok((
            PathAddrs {
                observed,
                local,
                mapping,
            },
            r.0,
        ))
    }

    /// Seals for the peer: with `keys`' sending direction, for `call_id`.
    /// `nonce`: 12 random bytes, fresh for each message.
    pub fn seal(&self, keys: &SessionKeys, call_id: &str, nonce: [u8; 12]) -> Vec<u8> {
        let cipher = cipher(keys, keys.send_key());
        let mut buf = self.encode();
        buf.resize(MAX_PATH_ADDRS_PLAIN, 0);
        let Ok(tag) = cipher.encrypt_inout_detached(
            &Nonce::from(nonce),
            call_id.as_bytes(),
            buf.as_mut_slice().into(),
        ) else {
            unreachable!("ChaCha20-Poly1305 seals any message under 256 GiB");
        };
        let mut out = Vec::with_capacity(PATH_ADDRS_NONCE_LEN + buf.len() + PATH_ADDRS_TAG_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        out.extend_from_slice(&tag);
        out
    }

    /// Opens what the peer sealed for us on this call.
    pub fn open(
        sealed: &[u8],
        keys: &SessionKeys,
        call_id: &str,
    ) -> Result<PathAddrs, PathAddrsError> {
        if !(MIN_SEALED_PATH..=MAX_SEALED_PATH).contains(&sealed.len()) {
            return Err(PathAddrsError::Length(sealed.len()));
        }
        let (nonce, rest) = sealed.split_at(PATH_ADDRS_NONCE_LEN);
        let (ct, tag) = rest.split_at(rest.len() - PATH_ADDRS_TAG_LEN);
        let mut buf = ct.to_vec();
        let nonce: [u8; PATH_ADDRS_NONCE_LEN] = nonce.try_into().unwrap_or_default();
        let mut t = Tag::default();
        t.copy_from_slice(tag);
        cipher(keys, keys.recv_key())
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                call_id.as_bytes(),
                buf.as_mut_slice().into(),
                &t,
            )
            .map_err(|_| PathAddrsError::NotAuthentic)?;
        PathAddrs::decode_padded(&buf)
    }
}

fn cipher(keys: &SessionKeys, direction: &[u8; 32]) -> ChaCha20Poly1305 {
    call_cipher(keys, direction, PATH_ADDRS_LABEL)
}

/// The cipher of what one party of a call seals for the other with the
/// call's keys: HKDF-SHA256 with the handshake transcript as salt, the
/// direction's media key as input and `label` as info.
pub(crate) fn call_cipher(
    keys: &SessionKeys,
    direction: &[u8; 32],
    label: &[u8],
) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(keys.transcript_hash()), direction);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if hk.expand(label, &mut key[..]).is_err() {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    ChaCha20Poly1305::new(&Key::from(*key))
}

fn put_addr(out: &mut Vec<u8>, a: SocketAddr) {
    match a.ip().to_canonical() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], PathAddrsError> {
        if self.0.len() < n {
            return Err(PathAddrsError::Malformed("truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }

    fn byte(&mut self) -> Result<u8, PathAddrsError> {
        Ok(self.take(1)?[0])
    }

    fn addr(&mut self) -> Result<SocketAddr, PathAddrsError> {
        let ip = match self.byte()? {
            4 => {
                let b: [u8; 4] = self.take(4)?.try_into().unwrap_or_default();
                IpAddr::V4(Ipv4Addr::from(b))
            }
            6 => {
                let b: [u8; 16] = self.take(16)?.try_into().unwrap_or_default();
                let ip = Ipv6Addr::from(b);
                // One encoding per address: an IPv4 one is family 4.
                if ip.to_ipv4_mapped().is_some() {
                    return Err(PathAddrsError::Malformed("an IPv4 address written as IPv6"));
                }
                IpAddr::V6(ip)
            }
            _ => return Err(PathAddrsError::Malformed("unknown address family")),
        };
        let p = self.take(2)?;
        let port = u16::from_be_bytes([p[0], p[1]]);
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if port == 0 || ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(PathAddrsError::Malformed("an address no one can dial"));
        }
        Ok(SocketAddr::new(ip, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `plain` sealed as a peer would, for checks of what opens.
    fn sealed_plain(plain: &[u8]) -> (Vec<u8>, SessionKeys) {
        let (ik, rk) = crate::handshake::test_call_keys();
        let mut buf = plain.to_vec();
        let tag = cipher(&ik, ik.send_key())
            .encrypt_inout_detached(&Nonce::from([5; 12]), b"c1", buf.as_mut_slice().into())
            .unwrap();
        ([&[5u8; 12][..], &buf, &tag].concat(), rk)
    }

    #[test]
    fn only_zero_padding_to_the_full_length_opens() {
        let mut plain = PathAddrs::default().encode();
        plain.resize(MAX_PATH_ADDRS_PLAIN, 0);
        let (s, rk) = sealed_plain(&plain);
        assert_eq!(PathAddrs::open(&s, &rk, "c1"), Ok(PathAddrs::default()));
        *plain.last_mut().unwrap() = 1;
        let (s, rk) = sealed_plain(&plain);
        assert_eq!(
            PathAddrs::open(&s, &rk, "c1"),
            Err(PathAddrsError::Malformed("padding that is not zeros"))
        );
        // A shorter plaintext is a shorter sealed form: refused by length.
        let (s, rk) = sealed_plain(&plain[..MAX_PATH_ADDRS_PLAIN - 1]);
        assert_eq!(
            PathAddrs::open(&s, &rk, "c1"),
            Err(PathAddrsError::Length(s.len()))
        );
    }

    #[test]
    fn the_mapping_flags_travel_only_with_an_observed_address() {
        use crate::mapping::Mapping;
        let obs: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        for (mapping, flags) in [
            (Mapping::Independent, 0b011),
            (Mapping::Dependent, 0b101),
            (Mapping::Unknown, 0b001),
        ] {
            let with = PathAddrs {
                observed: Some(obs),
                local: vec!["10.0.0.2:5000".parse().unwrap()],
                mapping,
            };
            assert_eq!(with.encode()[1], flags, "{mapping:?}");
            assert_eq!(PathAddrs::decode(&with.encode()), Ok(with.clone()));
            // Without the flag, the plaintext a build that predates it writes.
            assert_eq!(with.without_mapping().encode()[1], 1);
            assert_eq!(with.without_mapping().mapping, Mapping::Unknown);
        }
        // With no observed address the flag means nothing and is not written.
        let none = PathAddrs {
            observed: None,
            local: Vec::new(),
            mapping: Mapping::Independent,
        };
        assert_eq!(none.encode(), [PATH_ADDRS_VERSION, 0, 0]);
        let cases: &[(&[u8], &str)] = &[
            (
                &[PATH_ADDRS_VERSION, 2, 0],
                "a mapping flag without an observed address",
            ),
            (
                &[PATH_ADDRS_VERSION, 4, 0],
                "a mapping flag without an observed address",
            ),
            (
                &[PATH_ADDRS_VERSION, 7, 4, 1, 2, 3, 4, 0, 1, 0],
                "unknown flags",
            ),
            (&[PATH_ADDRS_VERSION, 8, 0], "unknown flags"),
            (
                &[PATH_ADDRS_VERSION, 0x83, 4, 1, 2, 3, 4, 0, 1, 0],
                "unknown flags",
            ),
        ];
        for (plain, why) in cases {
            assert_eq!(
                PathAddrs::decode(plain),
                Err(PathAddrsError::Malformed(why)),
                "{plain:?}"
            );
        }
    }

    #[test]
    fn the_longest_plaintext_fits_the_bound() {
        let v6: SocketAddr = "[2001:db8::1]:4433".parse().unwrap();
        let a = PathAddrs {
            observed: Some(v6),
            local: vec![v6; MAX_LOCAL_ADDRS + 2],
            mapping: crate::mapping::Mapping::Dependent,
        };
        assert_eq!(a.encode().len(), MAX_PATH_ADDRS_PLAIN);
        assert_eq!(
            PathAddrs::decode(&a.encode()).unwrap().local.len(),
            MAX_LOCAL_ADDRS
        );
    }
}
