//! The attacker's own QUIC client: quinn on rustls (ring provider, TLS 1.3,
//! ALPN `wzp`), accepting whatever certificate the relay shows (an
//! attacker has no reason to pin), with datagrams on and quinn's default
//! windows. Written from docs/WIRE.md §7 and OPERATIONS.md, not from the
//! project's `net::quic`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// The ALPN id wzp relays accept.
pub const ALPN: &[u8] = b"wzp";

/// The TLS exporter label of the per-connection join nonce (WIRE.md §7.1).
pub const JOIN_NONCE_LABEL: &[u8] = b"EXPORTER-wzp-join-nonce-v1";

/// Accepts any certificate and any handshake signature.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The attacker's client config.
pub fn client_config() -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("ring supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("a TLS 1.3 config with an initial cipher suite");
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        Duration::from_secs(30)
            .try_into()
            .expect("30 s is a valid idle timeout"),
    ));
    t.keep_alive_interval(Some(Duration::from_secs(5)));
    // Room for a flood: datagrams wait here until congestion control lets
    // them out (`send_datagram_wait` waits for room instead of dropping).
    t.datagram_send_buffer_size(1 << 20);
    cfg.transport_config(Arc::new(t));
    cfg
}

/// A client endpoint on an ephemeral loopback port with [`client_config`].
pub fn endpoint() -> std::io::Result<quinn::Endpoint> {
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))?;
    ep.set_default_client_config(client_config());
    Ok(ep)
}

/// Connects `ep` to `relay` with server name `sni`.
pub async fn connect(
    ep: &quinn::Endpoint,
    relay: SocketAddr,
    sni: &str,
) -> Result<quinn::Connection, String> {
    let connecting = ep
        .connect(relay, sni)
        .map_err(|e| format!("connect to {relay} as {sni:?}: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(10), connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("handshake with {relay} as {sni:?}: {e}")),
        Err(_) => Err(format!("no handshake with {relay} as {sni:?} within 10 s")),
    }
}

/// The join nonce both ends export from the TLS session (WIRE.md §7.1).
pub fn join_nonce(conn: &quinn::Connection) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, JOIN_NONCE_LABEL, b"")
        .ok()?;
    Some(out)
}

/// The application close code and reason a connection ended with, if the
/// peer closed it.
pub fn peer_close(e: &quinn::ConnectionError) -> Option<(u64, String)> {
    match e {
        quinn::ConnectionError::ApplicationClosed(c) => Some((
            c.error_code.into_inner(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        )),
        _ => None,
    }
}
