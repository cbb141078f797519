//! Long-term identity: a 32-byte seed, the keys derived from it, fingerprints,
//! BIP39 backup, and a relay's deterministic TLS certificate.
//!
//! ```text
//! seed (32 B, hex file, mode 0600)
//!  |-- HKDF-SHA256(ikm=seed, salt=none, info="wzp identity ed25519 v1")  -> Ed25519 signing key
//!  |-- HKDF-SHA256(ikm=seed, salt=none, info="wzp identity x25519 v1")   -> X25519 static secret
//!  `-- HKDF-SHA256(ikm=seed, salt=none, info="wzp relay tls ed25519 v1") -> Ed25519 TLS key -> self-signed cert
//! ```
//!
//! The user fingerprint is `SHA-256(Ed25519 public key)[..16]`, shown as eight
//! colon-separated groups of four lowercase hex digits. The relay TLS
//! fingerprint is `SHA-256(certificate DER)`, shown as 32 colon-separated
//! lowercase hex bytes. Parsing either ignores case and colons.

use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

/// HKDF info string for the Ed25519 identity key.
pub const LABEL_ED25519: &[u8] = b"wzp identity ed25519 v1";
/// HKDF info string for the X25519 static key.
pub const LABEL_X25519: &[u8] = b"wzp identity x25519 v1";
/// HKDF info string for a relay's TLS certificate key.
pub const LABEL_TLS: &[u8] = b"wzp relay tls ed25519 v1";

/// Length of a seed in bytes.
pub const SEED_LEN: usize = 32;
/// Length of a user fingerprint in bytes.
pub const FINGERPRINT_LEN: usize = 16;

/// Errors from identity handling.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the seed file failed.
    #[error("seed file {path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The seed file does not hold 64 hex digits.
    #[error("seed file {path} is not 64 hex digits; restore it from your backup or move it away to make a new identity")]
    BadSeedFile {
        /// The file involved.
        path: String,
    },
    /// A hex seed string is malformed.
    #[error("seed must be 64 hex digits")]
    BadSeedHex,
    /// The operating system RNG failed.
    #[error("operating system random number generator failed: {0}")]
    Rng(String),
    /// The mnemonic is not a valid 24-word BIP39 English phrase.
    #[error("invalid recovery phrase: {0}")]
    Mnemonic(String),
    /// A fingerprint string is malformed.
    #[error("invalid fingerprint {0:?}: expected {1} hex digits (colons and case ignored)")]
    BadFingerprint(String, usize),
    /// Building the TLS certificate failed.
    #[error("building relay TLS certificate: {0}")]
    Certificate(String),
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
}

/// Derives 32 bytes from `ikm` with HKDF-SHA256 (no salt) and the given info.
pub(crate) fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[&[u8]]) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    let mut out = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    if hk.expand_multi_info(info, &mut out).is_err() {
        unreachable!("HKDF-SHA256 output of 32 bytes is always valid");
    }
    out
}

/// A 32-byte identity seed. Zeroed on drop; `Debug` does not print it.
#[derive(Clone)]
pub struct Seed([u8; SEED_LEN]);

impl Drop for Seed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(<redacted>)")
    }
}

impl Seed {
    /// Wraps raw seed bytes.
    pub fn from_bytes(bytes: [u8; SEED_LEN]) -> Seed {
        Seed(bytes)
    }

    /// The raw seed bytes.
    pub fn as_bytes(&self) -> &[u8; SEED_LEN] {
        &self.0
    }

    /// A fresh seed from the operating system RNG.
    pub fn generate() -> Result<Seed, IdentityError> {
        let mut b = [0u8; SEED_LEN];
        getrandom::fill(&mut b).map_err(|e| IdentityError::Rng(e.to_string()))?;
        Ok(Seed(b))
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Result<Seed, IdentityError> {
        let mut b = [0u8; SEED_LEN];
        hex::decode_to_slice(s.trim(), &mut b).map_err(|_| IdentityError::BadSeedHex)?;
        Ok(Seed(b))
    }

    /// The seed as 64 lowercase hex digits.
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.0))
    }

    /// Loads the seed stored as hex in `path`, or creates a new random one
    /// there (file mode 0600, parent directories created) if it does not exist.
    ///
    /// Creation uses `O_EXCL`, so two processes racing on first start end up
    /// with the same seed: the loser loads the winner's file.
    pub fn load_or_create(path: &Path) -> Result<Seed, IdentityError> {
        match Seed::load(path) {
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let seed = Seed::generate()?;
        match seed.save_new(path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "created new identity seed");
                Ok(seed)
            }
            Err(IdentityError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Seed::load(path)
            }
            Err(e) => Err(e),
        }
    }

    /// Loads a seed stored as hex in `path`. Warns if the file is readable by
    /// group or others.
    pub fn load(path: &Path) -> Result<Seed, IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        // A seed file is 65 bytes: a bound keeps `/dev/zero` (or a disk
        // image given by mistake) from being read until memory runs out.
        // A FIFO would block the open until something writes to it, a device
        // read forever: a seed is a regular file.
        if let Ok(meta) = std::fs::metadata(path) {
            if !meta.is_file() {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file",
                )));
            }
        }
        let text = {
            use std::io::Read as _;
            let mut raw = Zeroizing::new(Vec::new());
            std::fs::File::open(path)
                .and_then(|f| f.take(4097).read_to_end(&mut raw))
                .map_err(io)?;
            if raw.len() > 4096 {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "larger than 4 KiB: not an identity file",
                )));
            }
            Zeroizing::new(String::from_utf8(raw.to_vec()).map_err(|_| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "stream did not contain valid UTF-8",
                ))
            })?)
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        mode = format_args!("{mode:o}"),
                        "identity seed file is readable by others; run chmod 600 on it"
                    );
                }
            }
        }
        Seed::from_hex(&text).map_err(|_| IdentityError::BadSeedFile {
            path: path.display().to_string(),
        })
    }

    /// Writes the seed as hex to a file that must not exist yet, mode 0600.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        let io = |source| IdentityError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut file = opts.open(path).map_err(io)?;
        let mut text = self.to_hex();
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(())
    }

    /// The seed as a 24-word BIP39 English recovery phrase.
    pub fn to_mnemonic(&self) -> Zeroizing<String> {
        match bip39::Mnemonic::from_entropy(&self.0) {
            Ok(m) => Zeroizing::new(m.to_string()),
            // 32 bytes is a valid BIP39 entropy length, so this cannot happen.
            Err(e) => unreachable!("32-byte entropy is valid BIP39: {e}"),
        }
    }

    /// Restores a seed from a 24-word BIP39 English phrase (case, extra
    /// whitespace and Unicode normalization forgiven; checksum checked).
    pub fn from_mnemonic(phrase: &str) -> Result<Seed, IdentityError> {
        let normalized = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
        let lower = Zeroizing::new(normalized.to_lowercase());
        let m = bip39::Mnemonic::parse(lower.as_str())
            .map_err(|e| IdentityError::Mnemonic(e.to_string()))?;
        if m.word_count() != 24 {
            return Err(IdentityError::Mnemonic(format!(
                "expected 24 words, got {}",
                m.word_count()
            )));
        }
        let (entropy, len) = m.to_entropy_array();
        let mut b = [0u8; SEED_LEN];
        b.copy_from_slice(&entropy[..len.min(SEED_LEN)]);
        Ok(Seed(b))
    }

    /// The user identity keys derived from this seed.
    pub fn identity(&self) -> Identity {
        Identity::from_seed(self)
    }

    /// The relay's TLS certificate derived from this seed; byte-identical for
    /// the same seed.
    pub fn relay_certificate(&self) -> Result<RelayCertificate, IdentityError> {
        RelayCertificate::from_seed(self)
    }
}

/// The long-term keys of a user or relay.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
    x25519: x25519_dalek::StaticSecret,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Derives both keys from `seed` with HKDF-SHA256 and distinct labels.
    pub fn from_seed(seed: &Seed) -> Identity {
        let mut ed = hkdf32(None, seed.as_bytes(), &[LABEL_ED25519]);
        let mut x = hkdf32(None, seed.as_bytes(), &[LABEL_X25519]);
        let identity = Identity {
            signing: SigningKey::from_bytes(&ed),
            x25519: x25519_dalek::StaticSecret::from(x),
        };
        ed.zeroize();
        x.zeroize();
        identity
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The X25519 static public key.
    pub fn x25519_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&self.x25519).to_bytes()
    }

    /// The X25519 static secret (for control-plane key agreement).
    pub fn x25519_secret(&self) -> &x25519_dalek::StaticSecret {
        &self.x25519
    }

    /// The user fingerprint of this identity.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_public_key(&self.public_key())
    }

    /// Signs `msg` with the Ed25519 key (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }
}

/// Verifies an Ed25519 signature strictly (rejects small-order keys and
/// non-canonical signatures).
pub fn verify_signature(
    public_key: &[u8; 32],
    msg: &[u8],
    signature: &[u8; 64],
) -> Result<(), IdentityError> {
    let vk = VerifyingKey::from_bytes(public_key).map_err(|_| IdentityError::BadSignature)?;
    vk.verify_strict(msg, &Signature::from_bytes(signature))
        .map_err(|_| IdentityError::BadSignature)
}

/// Parses hex with colons ignored into exactly `N` bytes.
fn parse_colon_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let mut nibbles = s.bytes().filter(|&c| c != b':');
    for byte in out.iter_mut() {
        let hi = (nibbles.next()? as char).to_digit(16)?;
        let lo = (nibbles.next()? as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    if nibbles.next().is_some() {
        return None;
    }
    Some(out)
}

/// A user fingerprint: `SHA-256(Ed25519 public key)[..16]`.
///
/// Displays as `xxxx:xxxx:xxxx:xxxx:xxxx:xxxx:xxxx:xxxx` (lowercase). Parsing
/// and serde accept any case, with or without colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; FINGERPRINT_LEN]);

impl Fingerprint {
    /// The fingerprint of an Ed25519 public key.
    pub fn of_public_key(public_key: &[u8; 32]) -> Fingerprint {
        let digest = Sha256::digest(public_key);
        let mut fp = [0u8; FINGERPRINT_LEN];
        fp.copy_from_slice(&digest[..FINGERPRINT_LEN]);
        Fingerprint(fp)
    }

    /// The raw 16 bytes.
    pub fn as_bytes(&self) -> &[u8; FINGERPRINT_LEN] {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.0.chunks_exact(2).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{:02x}{:02x}", pair[0], pair[1])?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_colon_hex::<FINGERPRINT_LEN>(s)
            .map(Fingerprint)
            .ok_or_else(|| IdentityError::BadFingerprint(s.to_string(), FINGERPRINT_LEN * 2))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A relay TLS fingerprint: `SHA-256(certificate DER)`.
///
/// Displays as 32 colon-separated lowercase hex bytes (`ab:cd:...`). Parsing
/// and serde accept any case, with or without colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TlsFingerprint(pub [u8; 32]);

impl TlsFingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(cert_der: &[u8]) -> TlsFingerprint {
        TlsFingerprint(Sha256::digest(cert_der).into())
    }
}

impl fmt::Display for TlsFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for TlsFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsFingerprint({self})")
    }
}

impl FromStr for TlsFingerprint {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_colon_hex::<32>(s)
            .map(TlsFingerprint)
            .ok_or_else(|| IdentityError::BadFingerprint(s.to_string(), 64))
    }
}

impl serde::Serialize for TlsFingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TlsFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The RFC 8410 PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed
/// follows it.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// Subject alternative name and common name in every relay certificate. Peers
/// authenticate relays by [`TlsFingerprint`], not by name.
pub const RELAY_CERT_NAME: &str = "wzp-relay";

/// A relay's self-signed TLS certificate and key, derived from its seed.
///
/// Serial 1, valid from 2025-01-01 to 9999-12-31 (RFC 5280's "no expiry"),
/// subject and issuer `CN=wzp-relay`, SAN `wzp-relay`, Ed25519 signature.
/// Ed25519 signing is deterministic, so the DER is byte-identical per seed.
#[derive(Clone)]
pub struct RelayCertificate {
    cert: CertificateDer<'static>,
    key: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for RelayCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayCertificate")
            .field("tls_fingerprint", &self.tls_fingerprint())
            .finish_non_exhaustive()
    }
}

impl RelayCertificate {
    /// Derives the certificate from a relay seed.
    pub fn from_seed(seed: &Seed) -> Result<RelayCertificate, IdentityError> {
        let cert_err = |e: rcgen::Error| IdentityError::Certificate(e.to_string());
        let tls_seed = Zeroizing::new(hkdf32(None, seed.as_bytes(), &[LABEL_TLS]));
        let mut pkcs8 = Zeroizing::new(Vec::with_capacity(48));
        pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
        pkcs8.extend_from_slice(tls_seed.as_slice());
        let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_slice());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
            .map_err(cert_err)?;

        let mut params =
            rcgen::CertificateParams::new(vec![RELAY_CERT_NAME.to_string()]).map_err(cert_err)?;
        params.serial_number = Some(rcgen::SerialNumber::from(vec![0x01]));
        params.not_before = rcgen::date_time_ymd(2025, 1, 1);
        params.not_after = rcgen::date_time_ymd(9999, 12, 31);
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, RELAY_CERT_NAME);
        params.distinguished_name = dn;
        let cert = params.self_signed(&key_pair).map_err(cert_err)?;
        Ok(RelayCertificate {
            cert: cert.der().clone(),
            key: pkcs8,
        })
    }

    /// The certificate in DER, ready for rustls.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The private key as PKCS#8 DER, ready for rustls
    /// (`PrivateKeyDer::Pkcs8(cert.key_der())`).
    pub fn key_der(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.to_vec())
    }

    /// `SHA-256` of the certificate DER.
    pub fn tls_fingerprint(&self) -> TlsFingerprint {
        TlsFingerprint::of_der(&self.cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkcs8_prefix_matches_rfc8410_length() {
        // SEQUENCE of 46 bytes = 2 + 46 = 48 total = prefix + seed.
        assert_eq!(ED25519_PKCS8_PREFIX[1] as usize + 2, 16 + 32);
    }

    #[test]
    fn colon_hex_rejects_odd_and_long() {
        assert!(parse_colon_hex::<2>("abc").is_none());
        assert!(parse_colon_hex::<2>("abcdef").is_none());
        assert!(parse_colon_hex::<2>("ab:CD").is_some());
        assert!(parse_colon_hex::<2>("zz:zz").is_none());
        assert!(parse_colon_hex::<2>("é:ab").is_none());
    }
}
