//! QUIC pieces shared by the relay and the client control planes.
//!
//! The engine's stages never touch quinn. A control plane owns the tokio
//! runtime and the connections, and joins them to the graph through two
//! rings, handed to the stages as [`Resources`](wzp_engine::prelude::Resources):
//!
//! ```text
//!  tokio tasks (one per connection)        packet or clocked domain           std thread
//!  conn.read_datagram() ─► IngressFeed ─ring─► net.quic_ingress ─► ... ─► net.quic_egress ─ring─► EgressPump
//!                          (peer = handle)                                      (peer = handle)   conn.send_datagram()
//! ```
//!
//! - Each connection gets a `u32` handle chosen by the control plane. It
//!   travels in [`PacketMeta::peer`] both ways: the source of an incoming
//!   datagram, the destination of an outgoing one.
//! - [`ingress_channel`] makes the ring into the graph: the tokio side keeps
//!   the [`IngressFeed`], the graph gets a [`QuicIngressPort`] under the
//!   resource name `"{endpoint}.ingress"`.
//! - [`egress_channel`] makes the ring out of the graph: the graph gets a
//!   [`QuicEgressPort`] under `"{endpoint}.egress"`, a plain thread runs the
//!   [`EgressPump`], and the control plane tells it which connection a
//!   handle means through [`EgressPeers`].
//! - A datagram that does not fit (larger than the path's
//!   `max_datagram_size`, or than a slot) or that meets a full ring is
//!   dropped and counted; it never ends the call.
//!
//! TLS: rustls with the `ring` provider only, TLS 1.3, ALPN [`ALPN`]. Relays
//! present the self-signed certificate derived from their seed
//! ([`server_config`]); clients pin its SHA-256 ([`client_config`]) and
//! never skip verification: the handshake signature is still checked with
//! the certificate's key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::coalesce::{Coalescer, Decision};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use wzp_engine::bridge::{from_io, to_io, DomainWaker, IoReceiver, IoSender, RtReceiver, RtSender};
use wzp_engine::prelude::{Counter, PacketMeta, Slot, MAX_ITEM_BYTES};
use wzp_proto::identity::RelayCertificate;
use wzp_proto::TlsFingerprint;

/// The ALPN protocol id of wzp over QUIC.
pub const ALPN: &[u8] = b"wzp";

/// How long an idle connection lives without keep-alives.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ack-eliciting packets a peer may receive before it must send an
/// ACK (QUIC ack-frequency extension; RFC 9000's default is 1).
pub const ACK_ELICITING_THRESHOLD: u32 = 15;
/// Longest a peer is asked to hold back an ACK (QUIC ack-frequency extension).
pub const MAX_ACK_DELAY: Duration = Duration::from_millis(25);
/// How often an idle side pings so NAT bindings and the idle timer stay up.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// Why QUIC could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("QUIC crypto configuration: {0}")]
    Crypto(String),
    #[error("cannot open the QUIC endpoint on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Largest signal frame payload a relay reads from a client (the relay's
/// `join::MAX_CLIENT_FRAME`); the stream windows below are sized from it.
pub const MAX_CLIENT_SIGNAL_FRAME: usize = 64 * 1024;

/// How much one connection may make its peer buffer, and which streams it
/// may open. QUIC flow control turns these into hard bounds: a peer cannot
/// send stream data past the receive window it was granted, nor open a
/// stream past the stream limit (its `open_bi`/`open_uni` waits), so unread
/// data never grows memory past [`StreamLimits::max_buffered_bytes`] per
/// connection however the peer behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Bidirectional streams the peer may have open at once.
    pub bidi_streams: u32,
    /// Unidirectional streams the peer may have open at once.
    pub uni_streams: u32,
    /// Unread bytes one stream may hold.
    pub stream_window: u32,
    /// Unread bytes all streams of the connection may hold together.
    pub connection_window: u32,
    /// Received datagrams held until the application reads them, bytes;
    /// past it quinn drops the oldest.
    pub datagram_buffer: usize,
}

/// quinn's default buffer of out-of-order TLS handshake data, per connection.
const CRYPTO_BUFFER: usize = 16 * 1024;

impl StreamLimits {
    /// Room connections (and every connection of today's protocol, all of
    /// which speak it): the client opens one bidirectional stream for its
    /// signal frames (join, room updates); media are datagrams. The stream
    /// window holds two whole client frames, so a frame can be in flight
    /// while the previous one is read; the connection window is the same
    /// (one stream). Datagrams: 256 KiB, about a second of the fan-out a
    /// client receives in a room of ten. Bound per connection: 128 KiB of
    /// stream data + 256 KiB of datagrams + 16 KiB of handshake data, about
    /// 400 KiB ([`StreamLimits::max_buffered_bytes`]).
    pub const ROOM: StreamLimits = StreamLimits {
        bidi_streams: 1,
        uni_streams: 0,
        stream_window: (2 * (wzp_proto::signal::FRAME_HEADER_LEN + MAX_CLIENT_SIGNAL_FRAME)) as u32,
        connection_window: (2 * (wzp_proto::signal::FRAME_HEADER_LEN + MAX_CLIENT_SIGNAL_FRAME))
            as u32,
        datagram_buffer: 256 * 1024,
    };

    /// For signal or federation connections that come to need more than
    /// [`StreamLimits::ROOM`]: a few streams, each able to hold one whole
    /// frame of the largest size the signal codec accepts
    /// (`wzp_proto::signal::MAX_FRAME_LEN`, 1 MiB), and 2 MiB across the
    /// connection. Bound: 2 MiB + 256 KiB + 16 KiB per connection.
    pub const SIGNAL: StreamLimits = StreamLimits {
        bidi_streams: 4,
        uni_streams: 0,
        stream_window: (wzp_proto::signal::FRAME_HEADER_LEN + wzp_proto::signal::MAX_FRAME_LEN)
            as u32,
        connection_window: 2 * 1024 * 1024,
        datagram_buffer: 256 * 1024,
    };

    /// The most bytes a peer can make this side hold for it: stream data
    /// (bounded by the connection window, and by the stream windows of the
    /// streams it may open), datagrams, handshake data.
    pub const fn max_buffered_bytes(&self) -> usize {
        let streams =
            (self.bidi_streams as usize + self.uni_streams as usize) * self.stream_window as usize;
        let stream_data = if streams < self.connection_window as usize {
            streams
        } else {
            self.connection_window as usize
        };
        stream_data + self.datagram_buffer + CRYPTO_BUFFER
    }

    /// Raises (or lowers) the stream counts and connection window of a live
    /// connection, e.g. once its server name shows it is not a room
    /// connection. The per-stream window cannot change after the handshake:
    /// it stays the one of the config the connection was accepted with.
    pub fn apply(&self, conn: &quinn::Connection) {
        conn.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(self.bidi_streams));
        conn.set_max_concurrent_uni_streams(quinn::VarInt::from_u32(self.uni_streams));
        conn.set_receive_window(quinn::VarInt::from_u32(self.connection_window));
    }
}

/// Bytes of datagrams a connection queues while it cannot send: about 0.3 s
/// of what a relay forwards to a member of a room of ten, 3 s of one
/// 24 kb/s stream. Media older than that is worth nothing at the far end,
/// and a deeper queue turns a link that cannot carry the stream into
/// seconds of delay for everything behind it, quality reports included
/// (256 KiB held 48 s of a stream; calls through a 12 kb/s link saw report
/// round trips of 4-8 s). quinn drops the oldest datagrams past it.
const DATAGRAM_SEND_BUFFER: usize = 32 * 1024;

/// Transport settings for every wzp connection: [`StreamLimits::ROOM`],
/// datagrams on (media), a keep-alive well under the idle timeout.
pub fn transport_config() -> quinn::TransportConfig {
    transport_config_with(StreamLimits::ROOM)
}

/// [`transport_config`] with other stream and buffer limits.
pub fn transport_config_with(limits: StreamLimits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        IDLE_TIMEOUT
            .try_into()
            .expect("30 s fits a QUIC idle timeout"),
    ));
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.bidi_streams));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(limits.uni_streams));
    t.stream_receive_window(quinn::VarInt::from_u32(limits.stream_window));
    t.receive_window(quinn::VarInt::from_u32(limits.connection_window));
    // A slow reader loses the oldest datagrams past this.
    t.datagram_receive_buffer_size(Some(limits.datagram_buffer));
    t.datagram_send_buffer_size(DATAGRAM_SEND_BUFFER);
    // Media datagrams are never retransmitted, so an ACK only feeds loss
    // detection and congestion control. Ask the peer for one ACK per
    // ACK_ELICITING_THRESHOLD + 1 packets or per 25 ms instead of one per
    // two packets: a relay sending 450 datagrams/s to a client in a room of
    // ten otherwise receives ~225 ACK-only packets/s back from it, more than
    // the media it forwards (see docs/PERFORMANCE.md, relay-load).
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(ACK_ELICITING_THRESHOLD))
        .max_ack_delay(Some(MAX_ACK_DELAY));
    t.ack_frequency_config(Some(ack));
    // Media is rate-controlled by the quality controller from receiver
    // reports; QUIC must not hold it behind a window an outage collapsed
    // (super::media_window).
    t.congestion_controller_factory(Arc::new(super::media_window::MediaWindowConfig::default()));
    t
}

pub use super::canonical_sni::NON_CANONICAL_SNI;

/// The handshake-signature methods every certificate verifier here shares:
/// the signature is checked with the presented certificate's key by the
/// `ring` provider's algorithms (`self.provider`), whatever the verifier
/// decides about the certificate itself.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// A server config presenting `cert` (the relay's seed-derived certificate),
/// with [`StreamLimits::ROOM`]. Server names that are not canonical (upper
/// case, trailing dot) fail the handshake ([`super::canonical_sni`]).
/// A client may present a certificate (relays dialing a federation link
/// do); its fingerprint is then [`peer_certificate_fingerprint`].
pub fn server_config(cert: &RelayCertificate) -> Result<quinn::ServerConfig, QuicError> {
    server_config_with(cert, StreamLimits::ROOM)
}

/// [`server_config`] with other limits (for `quinn::Incoming::accept_with`
/// or a second endpoint).
pub fn server_config_with(
    cert: &RelayCertificate,
    limits: StreamLimits,
) -> Result<quinn::ServerConfig, QuicError> {
    let provider = provider();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(OptionalPeerCertificate { provider }))
        .with_single_cert(
            vec![cert.cert_der().clone()],
            PrivateKeyDer::Pkcs8(cert.key_der()),
        )?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| QuicError::Crypto(e.to_string()))?;
    // Non-canonical server names (upper case, trailing dot) are refused
    // before rustls normalises them away.
    let crypto = super::canonical_sni::CanonicalSni::new(Arc::new(crypto));
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config_with(limits)));
    Ok(cfg)
}

/// A client config that accepts exactly the server whose certificate hashes
/// to `pinned`.
pub fn client_config(pinned: TlsFingerprint) -> Result<quinn::ClientConfig, QuicError> {
    client_config_with(Pin::Fingerprint(pinned), None)
}

/// A TLS 1.3 client config for wzp's ALPN with the server checked by `pin`,
/// presenting `own` when given (client authentication), with
/// [`transport_config`].
fn client_config_with(
    pin: Pin,
    own: Option<&RelayCertificate>,
) -> Result<quinn::ClientConfig, QuicError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { pin, provider }));
    let mut tls = match own {
        Some(own) => builder.with_client_auth_cert(
            vec![own.cert_der().clone()],
            PrivateKeyDer::Pkcs8(own.key_der()),
        )?,
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Crypto(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    cfg.transport_config(Arc::new(transport_config()));
    Ok(cfg)
}

/// A client config for a relay dialing another relay (a federation link):
/// the server must present the certificate whose SHA-256 is `pinned`, and
/// this end presents its own relay certificate `own` (TLS client
/// authentication), so the dialed relay learns this relay's fingerprint
/// from the handshake itself, proven by the handshake signature, and never
/// from a claim in a message ([`peer_certificate_fingerprint`]).
pub fn federation_client_config(
    own: &RelayCertificate,
    pinned: TlsFingerprint,
) -> Result<quinn::ClientConfig, QuicError> {
    client_config_with(Pin::Fingerprint(pinned), Some(own))
}

/// The fingerprint of the certificate the peer presented in the handshake
/// and proved it holds the key of (the handshake signature is verified
/// before the connection is established): the relay end of a federation
/// link's dialer, or the server for a client. `None` when the peer
/// presented none (ordinary clients do not).
pub fn peer_certificate_fingerprint(conn: &quinn::Connection) -> Option<TlsFingerprint> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certs.first().map(|c| TlsFingerprint::of_der(c))
}

/// The relay's client-certificate policy: it asks every client for a
/// certificate but requires none (ordinary clients answer with none). A
/// certificate that is presented is accepted whatever it is, but only with
/// a valid handshake signature by its key, so
/// [`peer_certificate_fingerprint`] names a key the peer holds. Whether
/// that fingerprint may do anything (a `[[peers]]` or `[[trusted]]` entry)
/// is the relay's decision after the handshake, where it can answer with a
/// reason instead of a bare TLS alert.
#[derive(Debug)]
struct OptionalPeerCertificate {
    provider: Arc<CryptoProvider>,
}

impl rustls::server::danger::ClientCertVerifier for OptionalPeerCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// A client config for a relay seen for the first time (trust on first
/// use): any certificate is accepted, but the handshake signature is still
/// verified with its key, and the certificate's fingerprint is written to
/// `seen` so the caller can record it and pin it from then on.
pub fn client_config_first_use(
    seen: Arc<std::sync::Mutex<Option<TlsFingerprint>>>,
) -> Result<quinn::ClientConfig, QuicError> {
    client_config_with(Pin::FirstUse(seen), None)
}

/// Receive and send buffer a relay's UDP socket asks for (8 MiB each): the
/// kernel drops datagrams that arrive while the buffer is full and its
/// reader is not running, and a relay's one socket takes every client's
/// packets. Linux's default (`net.core.rmem_default`, 208 KiB) holds a few
/// milliseconds of a loaded relay's traffic; QUIC then sees loss, and a
/// young connection's loss recovery waits up to a second (the signal-load
/// bench's registration p99, docs/PERFORMANCE.md). A size is a ceiling,
/// not an allocation: memory is taken only by what waits in it.
pub const RELAY_UDP_BUFFER_BYTES: usize = 8 << 20;
/// Receive and send buffer a client's UDP socket asks for (2 MiB): one
/// call's media needs little, but a client endpoint may carry many
/// connections (benches, a federation link's dialer).
pub const CLIENT_UDP_BUFFER_BYTES: usize = 2 << 20;

/// The buffers the kernel granted a UDP socket, in bytes, as `getsockopt`
/// reports them (Linux reports twice the size set: the other half is its
/// own bookkeeping per datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpBuffers {
    /// `SO_RCVBUF`.
    pub recv: usize,
    /// `SO_SNDBUF`.
    pub send: usize,
}

/// Asks the kernel for `bytes` of receive and send buffer on `socket` (0:
/// leave its defaults) and returns what it granted. Beyond
/// `net.core.rmem_max` / `wmem_max` the size is granted only to a process
/// with `CAP_NET_ADMIN` (`SO_RCVBUFFORCE`); without it the request is
/// capped there, which the caller sees in the result (and should say: see
/// `sysctl net.core.rmem_max`).
#[cfg(unix)]
pub fn size_udp_buffers(socket: &std::net::UdpSocket, bytes: usize) -> std::io::Result<UdpBuffers> {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let set = |opt: libc::c_int, value: libc::c_int| -> std::io::Result<()> {
        // SAFETY: `fd` is an open socket borrowed for the call; the option
        // value is a c_int on the stack whose size is passed with it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let get = |opt: libc::c_int| -> std::io::Result<usize> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as above; the kernel writes at most `len` bytes to `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value.max(0) as usize)
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    if bytes > 0 {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        #[cfg(target_os = "linux")]
        let forced = [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ];
        #[cfg(not(target_os = "linux"))]
        let forced = [
            (libc::SO_RCVBUF, libc::SO_RCVBUF),
            (libc::SO_SNDBUF, libc::SO_SNDBUF),
        ];
        for (force, plain) in forced {
            if set(force, value).is_err() {
                set(plain, value)?;
            }
        }
    }
    Ok(UdpBuffers {
        recv: get(libc::SO_RCVBUF)?,
        send: get(libc::SO_SNDBUF)?,
    })
}

/// Binds a UDP socket on `addr` with `bytes` of buffer each way
/// ([`size_udp_buffers`]; a size the kernel refuses leaves its default).
fn bind_sized(
    addr: SocketAddr,
    bytes: usize,
) -> Result<(std::net::UdpSocket, Option<UdpBuffers>), QuicError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| QuicError::Bind { addr, source })?;
    #[cfg(unix)]
    let sizes = size_udp_buffers(&socket, bytes).ok();
    #[cfg(not(unix))]
    let sizes = {
        let _ = bytes;
        None
    };
    Ok((socket, sizes))
}

/// Sends datagrams that are not QUIC from a QUIC endpoint's own socket (its
/// address and NAT mapping), such as a direct path's birthday probes. It
/// only sends: what comes in is the endpoint's.
#[derive(Clone, Debug)]
pub struct RawSender {
    socket: Arc<std::net::UdpSocket>,
}

impl RawSender {
    /// Sends `bytes` to `to` without waiting (an IPv4 `to` from a
    /// dual-stack socket goes IPv4-mapped); a full buffer or an unreachable
    /// `to` is an error the caller may ignore.
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) -> std::io::Result<usize> {
        let to = match (to, self.socket.local_addr()) {
            (SocketAddr::V4(v4), Ok(SocketAddr::V6(_))) => {
                SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
            }
            _ => to,
        };
        self.socket.send_to(bytes, to)
    }
}

/// A client-only endpoint for reaching `peer`, on one dual-stack socket
/// (`[::]:0` with `IPV6_V6ONLY` off) where the host has IPv6: it reaches an
/// IPv4 `peer` as an IPv4-mapped address and can send and take IPv6 too, so
/// a direct path may go over IPv6 while the relay is reached over IPv4.
/// Without IPv6 it is a socket of `peer`'s family alone ([`client_endpoint`]).
/// Addresses quinn reports for IPv4 peers are then IPv4-mapped: compare and
/// print them canonical (`IpAddr::to_canonical`).
/// Also returns a [`RawSender`] on its socket (none where the socket cannot
/// be shared).
pub fn client_endpoint_dual_stack(
    peer: SocketAddr,
) -> Result<(quinn::Endpoint, Option<RawSender>), QuicError> {
    let any6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0));
    let dual = || -> std::io::Result<std::net::UdpSocket> {
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        s.set_only_v6(false)?;
        s.bind(&any6.into())?;
        Ok(s.into())
    };
    let (socket, bind) = match dual() {
        Ok(socket) => {
            #[cfg(unix)]
            let _ = size_udp_buffers(&socket, CLIENT_UDP_BUFFER_BYTES);
            (socket, any6)
        }
        Err(_) => {
            let any = if peer.is_ipv4() {
                SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
            } else {
                any6
            };
            (bind_sized(any, CLIENT_UDP_BUFFER_BYTES)?.0, any)
        }
    };
    let raw = socket.try_clone().ok().map(|s| RawSender {
        socket: Arc::new(s),
    });
    let endpoint = client_endpoint_on(socket).map_err(|e| match e {
        QuicError::Bind { source, .. } => QuicError::Bind { addr: bind, source },
        e => e,
    })?;
    Ok((endpoint, raw))
}

/// A client-only endpoint bound to `bind` (use `0.0.0.0:0` or `127.0.0.1:0`),
/// its socket asking for [`CLIENT_UDP_BUFFER_BYTES`].
pub fn client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, QuicError> {
    let (socket, _) = bind_sized(bind, CLIENT_UDP_BUFFER_BYTES)?;
    client_endpoint_on(socket).map_err(|e| match e {
        QuicError::Bind { source, .. } => QuicError::Bind { addr: bind, source },
        e => e,
    })
}

/// A client-only endpoint on a socket already bound (a direct path's
/// birthday search dials from the socket its probe came through on).
pub fn client_endpoint_on(socket: std::net::UdpSocket) -> Result<quinn::Endpoint, QuicError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0)));
    let runtime = quinn::default_runtime()
        .ok_or_else(|| QuicError::Crypto("no async runtime: call inside tokio".into()))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|source| QuicError::Bind { addr, source })
}

/// A server endpoint on `listen` presenting `cert`.
///
/// Its stateless-reset key and its connection-id check key are derived from
/// the relay's own key, so a relay restarted with the same identity
/// recognises the connection ids of its previous run and tells their
/// clients at once that the connection is gone (a stateless reset they
/// accept), instead of leaving them to wait for the idle timeout.
pub fn server_endpoint(
    listen: SocketAddr,
    cert: &RelayCertificate,
) -> Result<quinn::Endpoint, QuicError> {
    server_endpoint_sized(listen, cert, RELAY_UDP_BUFFER_BYTES).map(|(endpoint, _)| endpoint)
}

/// [`server_endpoint`] with `udp_buffer_bytes` of socket buffer each way
/// (0: the kernel's defaults), and what the kernel granted (`None` where
/// it cannot be read).
pub fn server_endpoint_sized(
    listen: SocketAddr,
    cert: &RelayCertificate,
    udp_buffer_bytes: usize,
) -> Result<(quinn::Endpoint, Option<UdpBuffers>), QuicError> {
    use sha2::Digest;
    let cfg = server_config(cert)?;
    let mut h = sha2::Sha256::new();
    h.update(b"wzp stateless reset key v1");
    h.update(cert.key_der().secret_pkcs8_der());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &h.finalize());
    let mut endpoint_cfg = quinn::EndpointConfig::new(Arc::new(key));
    // The endpoint answers a packet for an unknown connection with a reset
    // only when its connection id passes the id generator's check, whose
    // key is random per run by default: a restarted relay would drop its
    // old clients' packets silently and they would wait out their idle
    // timeout. Derive that key from the identity too.
    let mut h = sha2::Sha256::new();
    h.update(b"wzp connection id key v1");
    h.update(cert.key_der().secret_pkcs8_der());
    let digest = h.finalize();
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&digest[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint_cfg.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let (socket, sizes) = bind_sized(listen, udp_buffer_bytes)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| QuicError::Crypto("no async runtime: call inside tokio".into()))?;
    let endpoint =
        quinn::Endpoint::new(endpoint_cfg, Some(cfg), socket, runtime).map_err(|source| {
            QuicError::Bind {
                addr: listen,
                source,
            }
        })?;
    Ok((endpoint, sizes))
}

/// TLS exporter label of the per-connection nonce a Join's room proof signs.
pub const JOIN_NONCE_LABEL: &[u8] = b"EXPORTER-wzp-join-nonce-v1";

/// The relay's per-connection nonce for a room proof
/// (`wzp_proto::join::RoomProof`): 32 bytes of the connection's TLS 1.3
/// exporter (RFC 8446 §7.5) under [`JOIN_NONCE_LABEL`]. Client and relay
/// compute the same value with no message exchanged; it is unique to this
/// TLS session, so a proof made on one connection (or passed on by a relay
/// to another relay, whose session differs) is worthless on any other.
/// `None` only before the handshake completes.
pub fn join_nonce(conn: &quinn::Connection) -> Option<[u8; wzp_proto::join::JOIN_NONCE_LEN]> {
    let mut out = [0u8; wzp_proto::join::JOIN_NONCE_LEN];
    conn.export_keying_material(&mut out, JOIN_NONCE_LABEL, b"")
        .ok()?;
    Some(out)
}

/// TLS exporter label of the per-connection nonce a direct path's hellos
/// sign (`wzp_proto::direct_path`).
pub const DIRECT_NONCE_LABEL: &[u8] = b"EXPORTER-wzp-direct-path-v1";

/// How long a direct connection may hear nothing before it counts as gone
/// (its media goes back to the relay, which stays connected): a working
/// path carries 50 media packets a second each way and a keep-alive every
/// [`DIRECT_KEEP_ALIVE`] when quiet, so 1.5 s of nothing is a broken path,
/// not loss (75 packets in a row lost). Every second of it is heard as a
/// gap, so it is short.
pub const DIRECT_IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Keep-alive interval of a direct connection.
pub const DIRECT_KEEP_ALIVE: Duration = Duration::from_millis(500);

/// The nonce a direct path's hellos sign: 32 bytes of the connection's TLS
/// 1.3 exporter under [`DIRECT_NONCE_LABEL`], the same at both ends and
/// unique to this TLS session (see [`join_nonce`]). `None` only before the
/// handshake completes.
pub fn direct_nonce(
    conn: &quinn::Connection,
) -> Option<[u8; wzp_proto::direct_path::PATH_NONCE_LEN]> {
    let mut out = [0u8; wzp_proto::direct_path::PATH_NONCE_LEN];
    conn.export_keying_material(&mut out, DIRECT_NONCE_LABEL, b"")
        .ok()?;
    Some(out)
}

/// [`transport_config`] for a direct connection between two clients: gone
/// after [`DIRECT_IDLE_TIMEOUT`] of silence instead of 30 s, so a call
/// whose direct path breaks is back on the relay within seconds.
pub fn direct_transport_config() -> quinn::TransportConfig {
    let mut t = transport_config();
    t.max_idle_timeout(Some(
        DIRECT_IDLE_TIMEOUT
            .try_into()
            .expect("1.5 s fits a QUIC idle timeout"),
    ));
    t.keep_alive_interval(Some(DIRECT_KEEP_ALIVE));
    t
}

/// The dialer's config for a direct connection: any certificate (each
/// side makes a throwaway one; who is at the other end is proven on the
/// connection by `wzp_proto::direct_path`, bound to [`direct_nonce`]), the
/// handshake signature still verified with its key.
pub fn direct_client_config() -> Result<quinn::ClientConfig, QuicError> {
    let mut cfg = client_config_with(Pin::FirstUse(Arc::default()), None)?;
    cfg.transport_config(Arc::new(direct_transport_config()));
    Ok(cfg)
}

/// The acceptor's server config for direct connections, presenting `cert`
/// (a throwaway one), with [`direct_transport_config`].
pub fn direct_server_config(cert: &RelayCertificate) -> Result<quinn::ServerConfig, QuicError> {
    let mut cfg = server_config(cert)?;
    cfg.transport_config(Arc::new(direct_transport_config()));
    Ok(cfg)
}

/// Accepts the one certificate whose SHA-256 is the pinned fingerprint.
///
/// The server name is not checked against the certificate: wzp uses it to
/// route (room hashes, `_signal`, `ping`), and relays are known by
/// fingerprint, not by name. The handshake signature is verified with the
/// certificate's key as usual, so only the holder of the pinned key passes.
///
/// On first use ([`client_config_first_use`]) any certificate passes and its
/// fingerprint is recorded for the caller to pin from then on; the
/// handshake signature is verified in both cases.
#[derive(Debug)]
pub struct PinnedServerVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Pin {
    Fingerprint(TlsFingerprint),
    FirstUse(Arc<std::sync::Mutex<Option<TlsFingerprint>>>),
}

impl PinnedServerVerifier {
    pub fn new(pinned: TlsFingerprint) -> Self {
        PinnedServerVerifier {
            pin: Pin::Fingerprint(pinned),
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = TlsFingerprint::of_der(end_entity);
        match &self.pin {
            Pin::Fingerprint(pinned) if got == *pinned => Ok(ServerCertVerified::assertion()),
            Pin::Fingerprint(pinned) => Err(rustls::Error::General(format!(
                "relay certificate fingerprint {got} is not the pinned {pinned}; check the relay address and fingerprint"
            ))),
            Pin::FirstUse(seen) => {
                if let Ok(mut s) = seen.lock() {
                    *s = Some(got);
                }
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    handshake_signatures!();
}

/// The TLS server name (SNI) the client asked for, once the handshake data is
/// in. `None` when the client sent none.
pub async fn server_name(connecting: &mut quinn::Connecting) -> Option<String> {
    let data = connecting.handshake_data().await.ok()?;
    data.downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .server_name
}

/// Largest datagram the path takes now, or `None` when the peer does not
/// accept datagrams. Media profiles must fit their packets under it.
pub fn max_datagram_size(conn: &quinn::Connection) -> Option<usize> {
    conn.max_datagram_size()
}

/// Per-connection traffic figures, written by the pump tasks and threads,
/// read by metrics.
#[derive(Debug, Default)]
pub struct PeerIoStats {
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Incoming datagrams dropped before the graph (ring full, oversize).
    pub dropped_in: AtomicU64,
    /// Outgoing packets dropped (too large, send error).
    pub dropped_out: AtomicU64,
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Drop counts of the I/O side of an ingress ring.
#[derive(Debug, Default)]
pub struct IngressIoStats {
    /// Datagrams that met a full ring.
    pub ring_full: AtomicU64,
    /// Datagrams above [`MAX_ITEM_BYTES`].
    pub too_large: AtomicU64,
}

/// The tokio side of the ring into the graph. Shared by every connection's
/// reader task; the lock is held for one ring push.
pub struct IngressFeed {
    tx: Mutex<IoSender<PacketMeta>>,
    epoch: Instant,
    stats: Arc<IngressIoStats>,
    notify: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
}

impl IngressFeed {
    /// Queues one datagram from connection `peer`. Returns false when it was
    /// dropped (counted).
    pub fn push(&self, peer: u32, bytes: &[u8]) -> bool {
        if bytes.len() > MAX_ITEM_BYTES {
            bump(&self.stats.too_large, 1);
            return false;
        }
        let meta = PacketMeta {
            peer,
            stream: 0,
            arrival_ns: self.epoch.elapsed().as_nanos() as u64,
        };
        let mut tx = match self.tx.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if tx.send(meta, bytes).is_err() {
            bump(&self.stats.ring_full, 1);
            return false;
        }
        drop(tx);
        if let Some(n) = self.notify.get() {
            n.notify_one();
        }
        true
    }

    /// Also wakes `notify` on every queued datagram: for a packet domain
    /// hosted on a tokio task ([`wzp_engine::exec::Graph::take_runner`])
    /// rather than a thread the domain waker unparks. The first call wins.
    pub fn notify_on_push(&self, notify: Arc<tokio::sync::Notify>) {
        let _ = self.notify.set(notify);
    }

    /// Whether the graph side of the ring is gone.
    pub fn is_closed(&self) -> bool {
        match self.tx.lock() {
            Ok(g) => g.is_abandoned(),
            Err(p) => p.into_inner().is_abandoned(),
        }
    }

    pub fn stats(&self) -> &Arc<IngressIoStats> {
        &self.stats
    }
}

/// What `net.quic_ingress` takes from [`Resources`](wzp_engine::prelude::Resources)
/// under `"{endpoint}.ingress"`.
pub struct QuicIngressPort {
    pub rx: Mutex<Option<RtReceiver<PacketMeta>>>,
    pub stats: Arc<IngressIoStats>,
    /// The instant the I/O side's arrival stamps count from.
    pub epoch: Instant,
}

/// A ring of `capacity` datagrams into the domain `waker` wakes (the
/// packet domain's waker from `compile::Wakers`, made before compiling).
/// The I/O side stamps each datagram with the time since `epoch` it was
/// read; `net.quic_ingress` turns that into graph time (its cycle's
/// `now_ns` minus the datagram's age), so `epoch` can be any instant and the
/// graph may start at any time after it.
pub fn ingress_channel(
    capacity: usize,
    waker: Arc<DomainWaker>,
    epoch: Instant,
) -> (Arc<IngressFeed>, QuicIngressPort) {
    let (tx, rx) = from_io(capacity, waker);
    let stats = Arc::new(IngressIoStats::default());
    (
        Arc::new(IngressFeed {
            tx: Mutex::new(tx),
            epoch,
            stats: stats.clone(),
            notify: std::sync::OnceLock::new(),
        }),
        QuicIngressPort {
            rx: Mutex::new(Some(rx)),
            stats,
            epoch,
        },
    )
}

/// Reads `conn`'s datagrams into `feed` as peer `peer` until the connection
/// ends; `inspect` sees each datagram first (stats, debug tap). Returns why
/// the connection ended.
pub async fn pump_datagrams_in(
    conn: quinn::Connection,
    peer: u32,
    feed: Arc<IngressFeed>,
    stats: Arc<PeerIoStats>,
    mut inspect: impl FnMut(&[u8]),
) -> quinn::ConnectionError {
    loop {
        match conn.read_datagram().await {
            Ok(d) => {
                bump(&stats.packets_in, 1);
                bump(&stats.bytes_in, d.len() as u64);
                inspect(&d);
                if !feed.push(peer, &d) {
                    bump(&stats.dropped_in, 1);
                }
            }
            Err(e) => return e,
        }
    }
}

/// Drop counts of the I/O side of an egress ring.
#[derive(Debug, Default)]
pub struct EgressIoStats {
    pub sent: AtomicU64,
    /// Larger than the path's `max_datagram_size` (or datagrams unsupported).
    pub too_large: AtomicU64,
    /// The connection refused the datagram (lost, datagrams disabled).
    pub send_errors: AtomicU64,
    /// No connection for the handle (it left while packets were in flight).
    pub unknown_peer: AtomicU64,
    /// Held for a moment to share a QUIC packet (sent later, also in `sent`).
    pub held: AtomicU64,
}

/// What `net.quic_egress` takes from [`Resources`](wzp_engine::prelude::Resources)
/// under `"{endpoint}.egress"`.
pub struct QuicEgressPort {
    pub tx: Mutex<Option<RtSender<PacketMeta>>>,
    /// The ring-full count the sender keeps.
    pub ring_full: Counter,
    pub stats: Arc<EgressIoStats>,
}

/// Something the control plane wants to see of each packet sent to a peer
/// (the debug tap).
pub type Observer = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// A destination of the egress pump.
#[derive(Clone)]
pub struct EgressPeer {
    pub conn: quinn::Connection,
    pub stats: Arc<PeerIoStats>,
    pub observer: Option<Observer>,
}

enum EgressUpdate {
    Add(u32, EgressPeer),
    Remove(u32),
}

/// The control plane's handle on the egress pump's peer table.
#[derive(Clone)]
pub struct EgressPeers {
    tx: mpsc::Sender<EgressUpdate>,
}

impl EgressPeers {
    /// Packets for `handle` go to `peer.conn` from now on. Add a peer before
    /// anything can route packets to it.
    pub fn add(&self, handle: u32, peer: EgressPeer) {
        let _ = self.tx.send(EgressUpdate::Add(handle, peer));
    }

    /// Packets for `handle` are dropped (counted as `unknown_peer`) from now on.
    pub fn remove(&self, handle: u32) {
        let _ = self.tx.send(EgressUpdate::Remove(handle));
    }
}

/// The thread end of the ring out of the graph: sends each packet as a
/// datagram on its peer's connection. `Connection::send_datagram` does not
/// block (quinn drops the oldest queued datagram when its buffer is full),
/// so a slow peer never holds up the others.
pub struct EgressPump {
    rx: IoReceiver<PacketMeta>,
    out: EgressSender,
}

/// The pump's peer table and counters: sends one packet to its connection,
/// or holds it for a moment so it shares a QUIC packet with the next ones
/// for the same receiver ([`super::coalesce`]).
struct EgressSender {
    updates: mpsc::Receiver<EgressUpdate>,
    peers: HashMap<u32, EgressPeer>,
    stats: Arc<EgressIoStats>,
    coalescer: Coalescer,
    held: HashMap<u32, Vec<Bytes>>,
    epoch: Instant,
}

/// A ring of `capacity` packets out of the graph, the pump that drains it,
/// and the handle to its peer table.
pub fn egress_channel(capacity: usize) -> (EgressPeers, EgressPump, QuicEgressPort) {
    let ring_full = Counter::default();
    let (tx, rx) = to_io(capacity, ring_full.clone());
    let (utx, urx) = mpsc::channel();
    let stats = Arc::new(EgressIoStats::default());
    (
        EgressPeers { tx: utx },
        EgressPump {
            rx,
            out: EgressSender {
                updates: urx,
                peers: HashMap::new(),
                stats: stats.clone(),
                coalescer: Coalescer::new(0),
                held: HashMap::new(),
                epoch: Instant::now(),
            },
        },
        QuicEgressPort {
            tx: Mutex::new(Some(tx)),
            ring_full,
            stats,
        },
    )
}

impl EgressSender {
    fn apply_updates(&mut self) {
        while let Ok(u) = self.updates.try_recv() {
            match u {
                EgressUpdate::Add(h, p) => {
                    self.peers.insert(h, p);
                }
                EgressUpdate::Remove(h) => {
                    self.peers.remove(&h);
                    self.coalescer.remove(h);
                    self.held.remove(&h);
                }
            }
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Sends `bytes` to `peer` now, or holds a copy (counted `held`).
    fn offer(&mut self, peer: u32, bytes: &[u8], now_ns: u64) {
        match self.coalescer.offer(peer, now_ns) {
            Decision::SendNow => {
                self.send(peer, Bytes::copy_from_slice(bytes));
            }
            Decision::Hold => {
                bump(&self.stats.held, 1);
                self.held
                    .entry(peer)
                    .or_default()
                    .push(Bytes::copy_from_slice(bytes));
            }
        }
    }

    /// Sends what was held for every receiver whose hold has ended.
    fn release_due(&mut self, now_ns: u64) {
        while let Some(peer) = self.coalescer.pop_due(now_ns) {
            let Some(mut held) = self.held.remove(&peer) else {
                continue;
            };
            for b in held.drain(..) {
                self.send(peer, b);
            }
            // Keep the Vec's capacity for the next hold.
            self.held.insert(peer, held);
        }
    }

    fn send(&mut self, peer: u32, bytes: Bytes) -> bool {
        if !self.peers.contains_key(&peer) {
            // The Add may still be in the channel.
            self.apply_updates();
        }
        let Some(p) = self.peers.get(&peer) else {
            bump(&self.stats.unknown_peer, 1);
            return false;
        };
        // quinn checks the size against the path (and whether the peer takes
        // datagrams at all) under the connection's lock: no second look here.
        let len = bytes.len() as u64;
        // The observer sees the datagram as sent (a cheap clone of `Bytes`).
        let seen = p.observer.as_ref().map(|_| bytes.clone());
        match p.conn.send_datagram(bytes) {
            Ok(()) => {
                bump(&self.stats.sent, 1);
                bump(&p.stats.packets_out, 1);
                bump(&p.stats.bytes_out, len);
                if let (Some(o), Some(b)) = (&p.observer, seen) {
                    o(&b);
                }
                true
            }
            Err(
                quinn::SendDatagramError::TooLarge
                | quinn::SendDatagramError::UnsupportedByPeer
                | quinn::SendDatagramError::Disabled,
            ) => {
                bump(&self.stats.too_large, 1);
                bump(&p.stats.dropped_out, 1);
                false
            }
            Err(_) => {
                bump(&self.stats.send_errors, 1);
                bump(&p.stats.dropped_out, 1);
                false
            }
        }
    }
}

impl EgressPump {
    /// Takes one queued packet without sending it (tests, custom pumps).
    pub fn try_recv(&mut self) -> Option<Slot<PacketMeta>> {
        self.rx.try_recv()
    }

    /// Sends one packet; returns whether it went out.
    pub fn send_one(&mut self, peer: u32, bytes: &[u8]) -> bool {
        self.out.send(peer, Bytes::copy_from_slice(bytes))
    }

    /// Holds a receiver's datagrams up to `window` when it is expected to
    /// get at least [`coalesce::MIN_EXPECTED`](super::coalesce::MIN_EXPECTED)
    /// more in that time, so they leave in one QUIC packet; zero (the
    /// default) sends everything at once. Call [`EgressPump::flush`] again
    /// by [`EgressPump::next_release`] to send what is held.
    pub fn set_coalesce_window(&mut self, window: Duration) {
        self.out.coalescer = Coalescer::new(window.as_nanos() as u64);
    }

    /// When the earliest held datagrams are due.
    pub fn next_release(&self) -> Option<Instant> {
        self.out
            .coalescer
            .next_due_ns()
            .map(|ns| self.out.epoch + Duration::from_nanos(ns))
    }

    /// Packets queued by the graph and not sent yet.
    pub fn pending(&self) -> usize {
        self.rx.len()
    }

    /// Sends everything queued now; returns how many packets it took. A
    /// packet domain hosted on the I/O task calls this after each cycle
    /// instead of running the pump on a thread of its own.
    pub fn flush(&mut self) -> usize {
        let out = &mut self.out;
        // Apply peer-table changes first: a removed peer's connection (and
        // what it holds) is released on the next flush, not when a packet
        // next goes to a peer the table lacks.
        out.apply_updates();
        let now = out.now_ns();
        let n = self
            .rx
            .drain_with(|meta, bytes| out.offer(meta.peer, bytes, now));
        out.release_due(now);
        n
    }

    /// Runs on the calling thread until `stop` is set or the graph's end of
    /// the ring is gone.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        self.rx.register_current_thread();
        while !stop.load(Ordering::Relaxed) {
            self.out.apply_updates();
            match self.rx.recv_timeout(Duration::from_millis(50)) {
                Some(slot) => {
                    self.send_one(slot.meta.peer, slot.bytes());
                    self.flush();
                }
                None => {
                    if self.rx.is_abandoned() {
                        break;
                    }
                }
            }
        }
    }

    /// Runs the pump on a new thread named `wzp-egress`.
    pub fn spawn(self, stop: Arc<AtomicBool>) -> std::io::Result<std::thread::JoinHandle<()>> {
        self.spawn_with_priority(stop, None)
    }

    /// [`EgressPump::spawn`], the thread asking for SCHED_FIFO at `fifo`
    /// first (a real-time graph's packets: see
    /// `wzp_engine::rt::NETWORK_FIFO_PRIORITY`; refused, it runs at normal
    /// priority).
    pub fn spawn_with_priority(
        self,
        stop: Arc<AtomicBool>,
        fifo: Option<i32>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("wzp-egress".into())
            .spawn(move || {
                if let Some(p) = fifo {
                    wzp_engine::rt::promote_current_thread_to(p);
                }
                self.run(stop)
            })
    }
}

/// Closes `conn` with a protocol close code and a reason for people.
pub fn close(conn: &quinn::Connection, code: wzp_proto::close::CloseCode, reason: &[u8]) {
    conn.close(quinn::VarInt::from_u32(code.code()), reason);
}

/// The close code and reason a peer closed `conn` with, when it was one of
/// ours ([`wzp_proto::close::CloseCode`]).
pub fn peer_close(err: &quinn::ConnectionError) -> Option<(wzp_proto::close::CloseCode, String)> {
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            let code = wzp_proto::close::CloseCode::from_code(c.error_code.into_inner())?;
            Some((code, String::from_utf8_lossy(&c.reason).into_owned()))
        }
        _ => None,
    }
}
