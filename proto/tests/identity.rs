//! Identity: seed file, key derivation, BIP39, fingerprints, relay certificate.

use std::os::unix::fs::PermissionsExt as _;

use wzp_proto::identity::{IdentityError, RelayCertificate, LABEL_ED25519, LABEL_X25519};
use wzp_proto::{Fingerprint, Seed, TlsFingerprint};

#[test]
fn load_or_create_makes_a_0600_file_then_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/identity");
    let first = Seed::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64);
    assert!(text.trim().chars().all(|c| c.is_ascii_hexdigit()));

    let second = Seed::load_or_create(&path).unwrap();
    assert_eq!(first.as_bytes(), second.as_bytes());
    assert_eq!(
        first.identity().fingerprint(),
        second.identity().fingerprint()
    );
}

#[test]
fn load_accepts_uppercase_and_whitespace_and_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, format!("  {}\n\n", "AB".repeat(32))).unwrap();
    assert_eq!(Seed::load(&good).unwrap().as_bytes(), &[0xab; 32]);

    for (name, content) in [
        ("short", "abcd".to_string()),
        ("long", "ab".repeat(33)),
        ("nonhex", "zz".repeat(32)),
        ("empty", String::new()),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        let e = Seed::load_or_create(&p).unwrap_err();
        assert!(
            matches!(e, IdentityError::BadSeedFile { .. }),
            "{name}: {e}"
        );
        assert!(e.to_string().contains(name), "error names the file: {e}");
    }
    // An endless device, or a large file given by mistake: an error, not a
    // read until memory runs out.
    let e = Seed::load(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    // A FIFO nobody writes to: an error at once, not an open that blocks.
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let e = Seed::load(&fifo).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    let big = dir.path().join("big");
    std::fs::write(&big, "ab".repeat(4000)).unwrap();
    let e = Seed::load(&big).unwrap_err();
    assert!(e.to_string().contains("not an identity file"), "{e}");
}

#[test]
fn save_new_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("id");
    Seed::from_bytes([1; 32]).save_new(&p).unwrap();
    assert!(Seed::from_bytes([2; 32]).save_new(&p).is_err());
    assert_eq!(Seed::load(&p).unwrap().as_bytes(), &[1; 32]);
}

#[test]
fn generated_seeds_differ() {
    assert_ne!(
        Seed::generate().unwrap().as_bytes(),
        Seed::generate().unwrap().as_bytes()
    );
}

#[test]
fn keys_are_derived_deterministically_with_distinct_labels() {
    assert_ne!(LABEL_ED25519, LABEL_X25519);
    let a = Seed::from_bytes([9; 32]).identity();
    let b = Seed::from_bytes([9; 32]).identity();
    let c = Seed::from_bytes([10; 32]).identity();
    assert_eq!(a.public_key(), b.public_key());
    assert_eq!(a.x25519_public(), b.x25519_public());
    assert_ne!(a.public_key(), c.public_key());
    assert_ne!(a.x25519_public(), c.x25519_public());
    // The two keys are not the same bytes reused.
    assert_ne!(a.public_key(), a.x25519_public());
    // Signatures are deterministic and verify.
    let sig = a.sign(b"hello");
    assert_eq!(sig, b.sign(b"hello"));
    wzp_proto::identity::verify_signature(&a.public_key(), b"hello", &sig).unwrap();
    assert!(wzp_proto::identity::verify_signature(&c.public_key(), b"hello", &sig).is_err());
}

#[test]
fn known_answer_vector() {
    // Pins the derivation so a dependency or label change cannot slip by.
    let id = Seed::from_bytes([0; 32]).identity();
    let fp = id.fingerprint().to_string();
    assert_eq!(fp.len(), 39);
    assert_eq!(fp, Fingerprint::of_public_key(&id.public_key()).to_string());
    insta_like(&fp, &hex::encode(id.public_key()));
}

/// Values checked independently (Python hmac + cryptography): HKDF-SHA256 with
/// no salt and info "wzp identity ed25519 v1", then the RFC 8032 public key.
fn insta_like(fp: &str, pk: &str) {
    assert_eq!(
        pk, KNOWN_PK,
        "Ed25519 public key for the all-zero seed changed"
    );
    assert_eq!(fp, KNOWN_FP, "fingerprint for the all-zero seed changed");
}

const KNOWN_PK: &str = "f49f314b3bc4c13bc399c5ef3ce43adb515b4bd5ab49667078cdce60bf107eec";
const KNOWN_FP: &str = "2a6c:7b84:0720:ec21:04db:73fd:5fcf:6179";

#[test]
fn mnemonic_round_trips_24_words() {
    for seed in [
        Seed::from_bytes([0; 32]),
        Seed::from_bytes([0xff; 32]),
        Seed::generate().unwrap(),
    ] {
        let phrase = seed.to_mnemonic();
        assert_eq!(phrase.split(' ').count(), 24);
        let back = Seed::from_mnemonic(&phrase).unwrap();
        assert_eq!(back.as_bytes(), seed.as_bytes());
        // Case and whitespace are forgiven.
        let messy = format!("  {}\n", phrase.to_uppercase().replace(' ', "   "));
        assert_eq!(
            Seed::from_mnemonic(&messy).unwrap().as_bytes(),
            seed.as_bytes()
        );
    }
}

#[test]
fn bad_mnemonics_are_rejected() {
    let phrase = Seed::from_bytes([5; 32]).to_mnemonic();
    let words: Vec<&str> = phrase.split(' ').collect();
    // Wrong checksum: swap two words.
    let mut swapped = words.clone();
    swapped.swap(0, 1);
    // 12 valid words are a valid BIP39 phrase but not a wzp seed.
    let twelve = bip39_12();
    for bad in [
        String::new(),
        "hello world".to_string(),
        words[..23].join(" "),
        swapped.join(" "),
        format!("{} notaword", words[..23].join(" ")),
        twelve,
    ] {
        assert!(
            matches!(Seed::from_mnemonic(&bad), Err(IdentityError::Mnemonic(_))),
            "{bad:?}"
        );
    }
}

fn bip39_12() -> String {
    // The BIP39 test vector for 16 zero bytes.
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about"
        .to_string()
}

#[test]
fn fingerprint_format_and_parsing() {
    let fp = Fingerprint([
        0xab, 0xcd, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44,
        0x55,
    ]);
    let s = fp.to_string();
    assert_eq!(s, "abcd:0123:4567:89ab:cdef:0011:2233:4455");
    for variant in [
        s.clone(),
        s.to_uppercase(),
        s.replace(':', ""),
        "ABCD0123:4567:89AB:cdef:0011:2233:4455".to_string(),
        "ab:cd:01:23:45:67:89:ab:cd:ef:00:11:22:33:44:55".to_string(),
    ] {
        assert_eq!(variant.parse::<Fingerprint>().unwrap(), fp, "{variant}");
    }
    for bad in [
        "",
        "abcd",
        "abcd:0123:4567:89ab:cdef:0011:2233:445",
        "abcd:0123:4567:89ab:cdef:0011:2233:44556",
        "abcd:0123:4567:89ab:cdef:0011:2233:445g",
        "abcd 0123 4567 89ab cdef 0011 2233 4455",
    ] {
        assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?}");
    }
    // Fingerprint is the first 16 bytes of SHA-256 of the public key.
    let id = Seed::from_bytes([3; 32]).identity();
    use sha2_check::first16;
    assert_eq!(id.fingerprint().0, first16(&id.public_key()));
}

mod sha2_check {
    /// SHA-256 via the TLS fingerprint type (which is plain SHA-256).
    pub fn first16(data: &[u8]) -> [u8; 16] {
        let full = wzp_proto::TlsFingerprint::of_der(data).0;
        full[..16].try_into().unwrap()
    }
}

#[test]
fn relay_certificate_is_deterministic_per_seed() {
    let a1 = RelayCertificate::from_seed(&Seed::from_bytes([1; 32])).unwrap();
    let a2 = Seed::from_bytes([1; 32]).relay_certificate().unwrap();
    let b = Seed::from_bytes([2; 32]).relay_certificate().unwrap();
    assert_eq!(a1.cert_der().as_ref(), a2.cert_der().as_ref());
    assert_eq!(
        a1.key_der().secret_pkcs8_der(),
        a2.key_der().secret_pkcs8_der()
    );
    assert_eq!(a1.tls_fingerprint(), a2.tls_fingerprint());
    assert_ne!(a1.cert_der().as_ref(), b.cert_der().as_ref());
    assert_ne!(a1.tls_fingerprint(), b.tls_fingerprint());
    // The TLS key is not the identity key.
    let pk = Seed::from_bytes([1; 32]).identity().public_key();
    assert!(!a1
        .cert_der()
        .as_ref()
        .windows(32)
        .any(|w| w == pk.as_slice()));
}

#[test]
fn relay_certificate_key_matches_and_is_ed25519_pkcs8() {
    let cert = Seed::from_bytes([7; 32]).relay_certificate().unwrap();
    let key = cert.key_der();
    let der = key.secret_pkcs8_der();
    assert_eq!(der.len(), 48);
    // rcgen (and so rustls' providers) accept the key, and its public key is in the cert.
    let kp = rcgen::KeyPair::try_from(der).unwrap();
    let public = kp.public_key_raw();
    assert_eq!(public.len(), 32);
    assert!(cert.cert_der().as_ref().windows(32).any(|w| w == public));
    // Ed25519 algorithm OID 1.3.101.112 appears (signature and key).
    let oid = [0x06, 0x03, 0x2b, 0x65, 0x70];
    assert!(
        cert.cert_der()
            .as_ref()
            .windows(5)
            .filter(|w| *w == oid)
            .count()
            >= 2
    );
}

#[test]
fn tls_fingerprint_format() {
    let cert = Seed::from_bytes([1; 32]).relay_certificate().unwrap();
    let fp = cert.tls_fingerprint();
    let s = fp.to_string();
    assert_eq!(s.len(), 32 * 3 - 1);
    assert!(s.split(':').all(|b| b.len() == 2
        && b.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())));
    assert_eq!(s.parse::<TlsFingerprint>().unwrap(), fp);
    assert_eq!(s.to_uppercase().parse::<TlsFingerprint>().unwrap(), fp);
    assert_eq!(s.replace(':', "").parse::<TlsFingerprint>().unwrap(), fp);
    assert!(s[3..].parse::<TlsFingerprint>().is_err());
    assert_eq!(TlsFingerprint::of_der(cert.cert_der()), fp);
}

#[test]
fn secrets_are_not_printed() {
    let seed = Seed::from_bytes([0x42; 32]);
    assert!(!format!("{seed:?}").contains("42"));
    let id = seed.identity();
    assert!(format!("{id:?}").contains(&id.fingerprint().to_string()));
}

#[test]
fn rustls_accepts_the_relay_certificate_and_key() {
    let cert = Seed::from_bytes([8; 32]).relay_certificate().unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert_der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der()),
        );
    assert!(config.is_ok(), "{:?}", config.err());

    // rustls checks that the key belongs to the certificate: a foreign key fails.
    let other = Seed::from_bytes([9; 32]).relay_certificate().unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mismatched = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert_der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(other.key_der()),
        );
    assert!(mismatched.is_err());
}
