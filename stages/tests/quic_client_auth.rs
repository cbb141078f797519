//! Relays know each other by certificate, proven in the handshake: a relay
//! dialing another presents its own relay certificate (TLS client
//! authentication) and the dialed relay reads the fingerprint from the
//! connection ([`quic::peer_certificate_fingerprint`]), never from a claim.
//! Ordinary clients present no certificate and still connect. An attacker
//! that presents another relay's certificate without its key, or dials with
//! the wrong pin, gets no connection.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::PrivateKeyDer;
use rustls::sign::CertifiedKey;
use wzp_proto::{Seed, TlsFingerprint};
use wzp_stages::net::quic;

const WAIT: Duration = Duration::from_secs(10);

fn cert(byte: u8) -> wzp_proto::identity::RelayCertificate {
    Seed::from_bytes([byte; 32]).relay_certificate().unwrap()
}

/// A server endpoint with relay certificate `byte`, and its fingerprint.
fn server(byte: u8) -> (quinn::Endpoint, TlsFingerprint) {
    let c = cert(byte);
    let ep = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &c).unwrap();
    (ep, c.tls_fingerprint())
}

/// Dials `server` with `cfg`; returns what each side saw: the client's
/// connection result and the fingerprint the server read from the
/// connection (or the server's handshake error).
async fn dial(
    server: &quinn::Endpoint,
    cfg: quinn::ClientConfig,
) -> (
    Result<quinn::Connection, String>,
    Result<Option<TlsFingerprint>, String>,
) {
    let addr = server.local_addr().unwrap();
    let client = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    let accept = async {
        let incoming = server.accept().await.expect("an incoming connection");
        match incoming.await {
            Ok(conn) => Ok(quic::peer_certificate_fingerprint(&conn)),
            Err(e) => Err(e.to_string()),
        }
    };
    let connect = async {
        match client.connect_with(cfg, addr, "_federation") {
            Ok(c) => c.await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    let (c, s) = tokio::time::timeout(WAIT, async { tokio::join!(connect, accept) })
        .await
        .expect("the handshake ends within the deadline");
    (c, s)
}

#[tokio::test]
async fn a_relay_dialing_with_its_certificate_is_known_by_its_fingerprint() {
    let (b, b_fp) = server(2);
    let a = cert(1);
    let cfg = quic::federation_client_config(&a, b_fp).unwrap();
    let (conn, seen) = dial(&b, cfg).await;
    let conn = conn.expect("the dialing relay connects");
    assert_eq!(
        seen.expect("the dialed relay accepts the handshake"),
        Some(a.tls_fingerprint()),
        "the dialed relay reads the dialer's own certificate fingerprint"
    );
    // And the dialer sees the relay it pinned.
    assert_eq!(quic::peer_certificate_fingerprint(&conn), Some(b_fp));
}

#[tokio::test]
async fn an_ordinary_client_presents_no_certificate_and_still_connects() {
    let (b, b_fp) = server(2);
    let cfg = quic::client_config(b_fp).unwrap();
    let (conn, seen) = dial(&b, cfg).await;
    conn.expect("a client without a certificate connects");
    assert_eq!(seen.expect("handshake accepted"), None);
}

#[tokio::test]
async fn a_dialer_pinning_another_fingerprint_gets_no_connection() {
    let (b, _) = server(2);
    let wrong = cert(9).tls_fingerprint();
    let cfg = quic::federation_client_config(&cert(1), wrong).unwrap();
    let (conn, _) = dial(&b, cfg).await;
    let err = conn.expect_err("a wrong pin fails the handshake");
    assert!(err.contains("not the pinned"), "{err}");
}

/// Presents `cert`'s certificate but signs with `key`'s private key.
#[derive(Debug)]
struct StolenCertificate(Arc<CertifiedKey>);

impl ResolvesClientCert for StolenCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_certificate_presented_without_its_key_is_refused_in_the_handshake() {
    let (b, b_fp) = server(2);
    let victim = cert(1);
    let attacker = cert(66);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(attacker.key_der()))
        .unwrap();
    let stolen = CertifiedKey::new(vec![victim.cert_der().clone()], key);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(quic::PinnedServerVerifier::new(b_fp)))
        .with_client_cert_resolver(Arc::new(StolenCertificate(Arc::new(stolen))));
    tls.alpn_protocols = vec![quic::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let (conn, seen) = dial(&b, cfg).await;
    // The server refuses the handshake signature: it never hands out a
    // connection naming the victim's fingerprint.
    let seen = seen.expect_err("the dialed relay refuses the handshake");
    assert!(!seen.is_empty());
    if let Ok(c) = conn {
        // The client may count its side done before the server's alert
        // lands; the connection then closes without ever carrying data.
        let e = tokio::time::timeout(WAIT, c.closed())
            .await
            .expect("the connection is closed");
        assert!(!e.to_string().is_empty());
    }
}
