//! The NAT mapping test: does a client's NAT give its socket one public
//! address for every destination, or a new one per destination?
//!
//! A relay sees a client's signalling socket at one address (its observed
//! address). Whether that address is also where the client's packets to
//! *someone else* come from decides how a direct path can be made
//! (docs/WIRE.md §10): a NAT that keeps one mapping per socket
//! (endpoint-independent, RFC 4787; what RFC 6888 asks of carrier-grade
//! NATs) lets a peer reach the observed address even when it moved the
//! socket's port, while one that maps every destination anew (symmetric)
//! does not.
//!
//! The test: besides its QUIC port, a relay answers on a second UDP port,
//! its *mapping port*, given to the client with a token (in
//! `register_presence_ack` and `reflect_response`). The client sends a
//! [`MappingProbe`] datagram from its signalling socket to that port; the
//! relay answers on the signalling connection with `mapping_observed`, the
//! address the probe came from. The same address as the observed one: the
//! NAT kept the mapping for another destination. The answer never goes back
//! by UDP, so the port reflects nothing to a forged source address, and the
//! token, which only the connection's own client learned (over TLS), names
//! the connection: a probe with another token is dropped.
//!
//! Probe: `"wzp-map1" (8) | token (16)`, exactly [`PROBE_LEN`] bytes.
//! The token is the first 16 bytes of SHA-256(`"wzp-mapping-v1"` || the
//! connection's presence nonce), so a relay derives it without state of its
//! own and a client never needs the nonce for it.
//!
//! ```
//! use wzp_proto::mapping::{token_for, MappingProbe, PROBE_LEN};
//!
//! let token = token_for(&[7; 32]);
//! let wire = MappingProbe { token }.encode();
//! assert_eq!(wire.len(), PROBE_LEN);
//! assert_eq!(MappingProbe::parse(&wire), Some(MappingProbe { token }));
//! assert_eq!(MappingProbe::parse(&wire[..PROBE_LEN - 1]), None);
//! ```

use sha2::{Digest, Sha256};

/// First 8 bytes of a probe.
pub const PROBE_MAGIC: &[u8; 8] = b"wzp-map1";
/// Token length.
pub const TOKEN_LEN: usize = 16;
/// A probe's length: the magic and the token, nothing else.
pub const PROBE_LEN: usize = PROBE_MAGIC.len() + TOKEN_LEN;
/// Domain label of [`token_for`].
pub const TOKEN_LABEL: &[u8] = b"wzp-mapping-v1";
/// Most `mapping_observed` answers a relay gives one connection (a client
/// sends a few probes in case some are lost; more are dropped).
pub const MAX_ANSWERS: u8 = 4;

/// The token of the connection whose presence challenge was `nonce`.
pub fn token_for(nonce: &[u8; 32]) -> [u8; TOKEN_LEN] {
    let mut h = Sha256::new();
    h.update(TOKEN_LABEL);
    h.update(nonce);
    let d = h.finalize();
    let mut t = [0u8; TOKEN_LEN];
    t.copy_from_slice(&d[..TOKEN_LEN]);
    t
}

/// A mapping-test datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingProbe {
    /// The connection's token.
    pub token: [u8; TOKEN_LEN],
}

impl MappingProbe {
    /// The datagram.
    pub fn encode(&self) -> [u8; PROBE_LEN] {
        let mut b = [0u8; PROBE_LEN];
        b[..PROBE_MAGIC.len()].copy_from_slice(PROBE_MAGIC);
        b[PROBE_MAGIC.len()..].copy_from_slice(&self.token);
        b
    }

    /// Reads a datagram: `None` for anything but a probe of exactly
    /// [`PROBE_LEN`] bytes with the magic (never panics, never allocates).
    pub fn parse(b: &[u8]) -> Option<MappingProbe> {
        if b.len() != PROBE_LEN || !b.starts_with(PROBE_MAGIC) {
            return None;
        }
        let mut token = [0u8; TOKEN_LEN];
        token.copy_from_slice(&b[PROBE_MAGIC.len()..]);
        Some(MappingProbe { token })
    }
}

/// What a client learned of its NAT's mapping. In JSON (`call_setup`'s
/// `peer_mapping`): `"untested"`, `"independent"`, `"per_destination"`;
/// a value this build does not know reads as untested.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mapping {
    /// The relay saw the probe from the observed address: one mapping for
    /// (at least) two destinations.
    #[serde(rename = "independent")]
    Independent,
    /// The probe came from another address: the NAT maps each destination
    /// anew.
    #[serde(rename = "per_destination")]
    Dependent,
    /// Not tested (an older relay or client, no mapping port, or no answer).
    #[default]
    #[serde(rename = "untested", other)]
    Unknown,
}

impl Mapping {
    /// Compares what the relay's mapping port saw with the observed address.
    pub fn from_observations(
        observed: std::net::SocketAddr,
        probe: std::net::SocketAddr,
    ) -> Mapping {
        if observed.ip().to_canonical() == probe.ip().to_canonical()
            && observed.port() == probe.port()
        {
            Mapping::Independent
        } else {
            Mapping::Dependent
        }
    }

    /// Whether tested at all.
    pub fn is_known(self) -> bool {
        self != Mapping::Unknown
    }

    /// Whether not tested (serde's `skip_serializing_if`).
    pub fn is_unknown(&self) -> bool {
        *self == Mapping::Unknown
    }

    /// For people and logs.
    pub fn label(self) -> &'static str {
        match self {
            Mapping::Unknown => "not tested",
            Mapping::Independent => "endpoint-independent",
            Mapping::Dependent => "per destination",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_probes_are_not_read() {
        let good = MappingProbe { token: [9; 16] }.encode();
        let mut wrong_magic = good;
        wrong_magic[0] ^= 1;
        let mut long = good.to_vec();
        long.push(0);
        let cases: &[(&str, &[u8])] = &[
            ("empty", &[]),
            ("magic only", PROBE_MAGIC),
            ("one byte short", &good[..PROBE_LEN - 1]),
            ("one byte long", &long),
            ("wrong magic", &wrong_magic),
            ("a QUIC long header", &[0xc0; PROBE_LEN]),
            ("zeros", &[0; PROBE_LEN]),
        ];
        for (what, b) in cases {
            assert_eq!(MappingProbe::parse(b), None, "{what}");
        }
        assert_eq!(
            MappingProbe::parse(&good),
            Some(MappingProbe { token: [9; 16] })
        );
    }

    #[test]
    fn the_mapping_reads_from_json_and_an_unknown_value_is_untested() {
        for (json, want) in [
            ("\"independent\"", Mapping::Independent),
            ("\"per_destination\"", Mapping::Dependent),
            ("\"untested\"", Mapping::Unknown),
            ("\"port_preserving\"", Mapping::Unknown),
        ] {
            assert_eq!(
                serde_json::from_str::<Mapping>(json).unwrap(),
                want,
                "{json}"
            );
        }
        for m in [Mapping::Independent, Mapping::Dependent, Mapping::Unknown] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Mapping>(&json).unwrap(), m);
        }
    }

    #[test]
    fn tokens_differ_per_nonce_and_are_stable() {
        assert_eq!(token_for(&[1; 32]), token_for(&[1; 32]));
        assert_ne!(token_for(&[1; 32]), token_for(&[2; 32]));
        // Not the nonce itself: a probe does not show the challenge.
        assert_ne!(&token_for(&[1; 32])[..], &[1u8; 16][..]);
    }

    #[test]
    fn the_mapping_compares_address_and_port() {
        let a = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        let cases = [
            (
                "198.51.100.7:40000",
                "198.51.100.7:40000",
                Mapping::Independent,
            ),
            (
                "198.51.100.7:40000",
                "198.51.100.7:40001",
                Mapping::Dependent,
            ),
            (
                "198.51.100.7:40000",
                "198.51.100.8:40000",
                Mapping::Dependent,
            ),
            // A dual-stack relay sees IPv4 as IPv4-mapped IPv6 on one socket
            // and plain on the other.
            (
                "[::ffff:198.51.100.7]:40000",
                "198.51.100.7:40000",
                Mapping::Independent,
            ),
        ];
        for (observed, probe, want) in cases {
            assert_eq!(
                Mapping::from_observations(a(observed), a(probe)),
                want,
                "{observed} {probe}"
            );
        }
    }
}
