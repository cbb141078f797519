//! The relay's QUIC endpoint: accept, handshake, and hand each connection
//! to the service its TLS server name asks for ([`wzp_proto::sni`]).
//!
//! ```text
//!   accept loop ──spawn──► one task per handshake ──SNI──► rooms::service (room id, call-*)
//!                                                    ├───► ping / version: closed at once
//!                                                    └───► refused with a reason
//! ```
//!
//! Every handshake runs in its own task, so a slow client never delays
//! another's accept. [`Services`] is what the connection tasks and the HTTP
//! handlers share: config, the room service, the media shards, counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use wzp_proto::close::CloseCode;
use wzp_proto::identity::RelayCertificate;
use wzp_proto::signal::{HangupReason, SignalMessage};
use wzp_proto::sni::{classify, Sni};
use wzp_proto::TlsFingerprint;
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream;

use crate::config::Config;
use crate::federation::shell::FederationService;
use crate::media::Media;
use crate::observe::events::{now_ms, Event, EventLog};
use crate::observe::log_limit::{echo, LogLimiter};
use crate::observe::{inc, RelayCounters};
use crate::rooms::service::RoomService;
use crate::rooms::{Refusal, RoomLimits};
use crate::signal::service::{serve_signal, SignalService};
use crate::signal::SignalConfig;

/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a shutting-down relay waits for its connection closes to leave.
/// The closes go out on the first driver turn; waiting for every peer's
/// acknowledgement (draining) is bounded so a lost peer never holds an exit.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

/// The close reason every connection gets when the relay stops.
pub const SHUTDOWN_REASON: &[u8] = b"relay shutting down";

/// What the connection tasks and the HTTP handlers share.
pub struct Services {
    pub cfg: Config,
    pub tls_fingerprint: TlsFingerprint,
    pub rooms: RoomService,
    pub media: Media,
    pub signal: SignalService,
    pub federation: FederationService,
    pub counters: RelayCounters,
    /// The QUIC endpoint (read for its open connection count).
    pub quic: quinn::Endpoint,
    events: EventLog,
    /// Settings read per join that a reload changes.
    pub live: LiveSettings,
    /// Refusal lines: at most one per reason per second ([`LogLimiter`]).
    refusal_log: std::sync::Mutex<LogLimiter>,
    pub started: Instant,
    /// The config's parts a reload changes, as last applied
    /// ([`crate::reload`]); `cfg` stays what the relay started with.
    pub applied: std::sync::Mutex<crate::reload::Applied>,
}

impl Services {
    /// Appends to the event log, when there is one.
    pub fn event(&self, ev: Event<'_>) {
        self.events.write(&ev);
    }

    /// Opens the event log anew at `path` (a reload; none: no log from
    /// now on); on error the log written so far stays.
    pub fn reopen_event_log(&self, path: Option<&std::path::Path>) -> std::io::Result<()> {
        self.events.reopen(path)
    }
}

/// The settings read at each join that a reload changes
/// ([`crate::reload`]); the rest of [`Services::cfg`] is what the relay
/// started with.
#[derive(Debug)]
pub struct LiveSettings {
    /// [`Config::join_timeout_ms`].
    pub join_timeout_ms: AtomicU64,
    /// [`Config::join_max_skew_s`].
    pub join_max_skew_s: AtomicU64,
}

impl LiveSettings {
    pub fn new(cfg: &Config) -> LiveSettings {
        LiveSettings {
            join_timeout_ms: AtomicU64::new(cfg.join_timeout_ms),
            join_max_skew_s: AtomicU64::new(cfg.join_max_skew_s),
        }
    }

    /// Takes `cfg`'s values.
    pub fn set(&self, cfg: &Config) {
        self.join_timeout_ms
            .store(cfg.join_timeout_ms, Ordering::Relaxed);
        self.join_max_skew_s
            .store(cfg.join_max_skew_s, Ordering::Relaxed);
    }
}

/// A running relay.
pub struct Relay {
    pub services: Arc<Services>,
    pub endpoint: quinn::Endpoint,
    pub local_addr: SocketAddr,
    /// Where the mapping port answers (none: off).
    pub mapping_addr: Option<SocketAddr>,
}

/// Binds the mapping port ([`crate::config::Config::mapping_port`]): the one
/// configured (an error if it cannot be had), else any free port (a fixed
/// default would collide with relays on adjacent ports of one machine).
/// `None` when turned off.
fn bind_mapping(cfg: &Config, quic: SocketAddr) -> anyhow::Result<Option<std::net::UdpSocket>> {
    if !cfg.mapping_test {
        return Ok(None);
    }
    let at = |port: u16| std::net::UdpSocket::bind(SocketAddr::new(quic.ip(), port));
    if let Some(port) = cfg.mapping_port {
        return at(port).map(Some).with_context(|| {
            format!(
                "cannot bind the mapping port {}:{port} (mapping_port); choose another or \
                 turn it off with --no-mapping-test",
                quic.ip()
            )
        });
    }
    match at(0) {
        Ok(s) => Ok(Some(s)),
        Err(e) => {
            tracing::warn!(error = %e, "no mapping port: clients cannot test their NAT's mapping");
            Ok(None)
        }
    }
}

/// Reads the mapping port: each probe goes to the signal hub, which answers
/// on the probing client's signal connection. Ends with the relay.
async fn serve_mapping(socket: tokio::net::UdpSocket, services: std::sync::Weak<Services>) {
    let mut buf = [0u8; 64];
    // Probes with an open connection's token reach the hub at most at this
    // rate (a replayed token is all a flood could use): beyond it they are
    // counted and dropped.
    let mut bucket = crate::signal::TokenBucket::new(
        crate::signal::MAPPING_PROBES_PER_S,
        crate::signal::MAPPING_PROBES_PER_S,
        std::time::Instant::now(),
    );
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            // ICMP-caused errors on some systems; nothing to do but read on.
            tokio::task::yield_now().await;
            continue;
        };
        let Some(services) = services.upgrade() else {
            return;
        };
        match wzp_proto::mapping::MappingProbe::parse(&buf[..n]) {
            // A made-up token costs a set lookup, and no share of the rate.
            Some(p) if !services.signal.mapping_token_known(&p.token) => {}
            Some(_) if !bucket.take(std::time::Instant::now()) => {
                services.signal.mapping_rate_limited()
            }
            Some(p) => services.signal.mapping_probe(p.token, from),
            None => services.signal.mapping_not_a_probe(),
        }
    }
}

/// Says what the relay's UDP socket got against what `udp_buffer_kib`
/// asked (Linux reports twice the size set), and how to get the rest.
fn report_udp_buffers(asked: usize, granted: Option<quic::UdpBuffers>) {
    match granted {
        Some(g) if asked > 0 && (g.recv < asked || g.send < asked) => tracing::warn!(
            asked_kib = asked / 1024,
            recv_kib = g.recv / 1024,
            send_kib = g.send / 1024,
            "the UDP socket got less buffer than udp_buffer_kib asks: a burst of datagrams \
             while the relay is busy may be dropped; raise net.core.rmem_max and \
             net.core.wmem_max (sysctl) or run with CAP_NET_ADMIN"
        ),
        Some(g) => tracing::info!(
            recv_kib = g.recv / 1024,
            send_kib = g.send / 1024,
            "UDP socket buffers"
        ),
        None => tracing::warn!("cannot read the UDP socket's buffer sizes"),
    }
}

/// Loads the identity seed and derives the relay certificate.
pub fn load_identity(path: &std::path::Path) -> anyhow::Result<RelayCertificate> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the identity folder {}", dir.display()))?;
    }
    let seed = wzp_proto::Seed::load_or_create(path)
        .with_context(|| format!("identity {}", path.display()))?;
    seed.relay_certificate()
        .with_context(|| format!("cannot derive the TLS certificate from {}", path.display()))
}

/// How often members' state changes (mute, media sender bindings) reach
/// their rooms.
pub const ROSTER_INTERVAL: Duration = Duration::from_millis(250);

/// Brings members' state changes to their rooms every [`ROSTER_INTERVAL`]
/// while the relay runs.
async fn roster_ticks(services: std::sync::Weak<Services>) {
    let mut tick = tokio::time::interval(ROSTER_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(s) = services.upgrade() else {
            return;
        };
        s.rooms.flush_member_state(&s);
    }
}

impl Relay {
    /// Binds the endpoint, compiles and starts the forwarding graphs. Call
    /// inside a tokio runtime; then [`Relay::serve`].
    pub fn start(cfg: Config, cert: &RelayCertificate) -> anyhow::Result<Relay> {
        let tls_fingerprint = cert.tls_fingerprint();
        let asked = (cfg.udp_buffer_kib as usize).saturating_mul(1024);
        let (endpoint, granted) = quic::server_endpoint_sized(cfg.listen, cert, asked)?;
        let local_addr = endpoint.local_addr()?;
        report_udp_buffers(asked, granted);
        let mapping = bind_mapping(&cfg, local_addr)?;
        let mapping_addr = match &mapping {
            Some(s) => Some(s.local_addr()?),
            None => None,
        };
        let media = Media::start(&cfg)?;
        let events = match &cfg.event_log {
            Some(p) => EventLog::open(p)
                .with_context(|| format!("cannot open the event log {}", p.display()))?,
            None => EventLog::default(),
        };
        let rooms = RoomService::new(RoomLimits {
            max_peers: cfg.max_peers,
            max_rooms: cfg.max_rooms,
            call_room_size: cfg.call_room_size,
            max_room_size: cfg.max_room_size,
            shards: media.shards.len(),
            tap: cfg.debug_tap.clone(),
        });
        for c in &cfg.calls {
            rooms.allow_call(&c.room, c.fingerprints.clone());
        }
        let mut signal_cfg = SignalConfig::new(
            tls_fingerprint,
            cfg.public_addr
                .clone()
                .unwrap_or_else(|| local_addr.to_string()),
        );
        signal_cfg.relay_label = Some(cfg.label.clone());
        signal_cfg.version = version_string();
        signal_cfg.ringing_timeout = Duration::from_secs(cfg.ringing_timeout_s);
        signal_cfg.mail.total_bytes = (cfg.voice_message_storage_mb as usize) << 20;
        let mail_disk = match &cfg.voice_message_dir {
            Some(dir) if cfg.voice_message_storage_mb > 0 => {
                Some(crate::voicemail::disk::MailDisk::open(dir)?)
            }
            _ => None,
        };
        signal_cfg.mapping_port = mapping_addr.map(|a| a.port());
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let federation_cfg = cfg.federation(tls_fingerprint, u64::from_le_bytes(seed));
        let services = Arc::new_cyclic(|weak| Services {
            federation: FederationService::start(
                federation_cfg,
                endpoint.clone(),
                cert,
                weak.clone(),
            ),
            tls_fingerprint,
            rooms,
            media,
            signal: SignalService::start(signal_cfg, weak.clone(), mail_disk),
            counters: RelayCounters::default(),
            quic: endpoint.clone(),
            events,
            live: LiveSettings::new(&cfg),
            refusal_log: std::sync::Mutex::new(LogLimiter::new(Duration::from_secs(1))),
            started: Instant::now(),
            applied: crate::reload::Applied::new(&cfg),
            cfg,
        });
        tokio::spawn(roster_ticks(Arc::downgrade(&services)));
        if let Some(s) = mapping {
            s.set_nonblocking(true)?;
            let s = tokio::net::UdpSocket::from_std(s)?;
            tokio::spawn(serve_mapping(s, Arc::downgrade(&services)));
        }
        Ok(Relay {
            services,
            endpoint,
            local_addr,
            mapping_addr,
        })
    }

    /// Accepts connections until the endpoint closes.
    ///
    /// Under a handshake flood (more than [`RETRY_ABOVE_PENDING`]
    /// handshakes in progress), a new connection from an address not yet
    /// validated is answered with a QUIC Retry: a stateless packet that
    /// costs no TLS work and keeps no state. A real client repeats its
    /// Initial with the Retry's token (one round trip more) and is then
    /// accepted; a flood of ClientHellos whose answers are never read, or
    /// from spoofed addresses, then costs the relay almost nothing.
    pub async fn serve(&self) {
        let pending = Arc::new(AtomicUsize::new(0));
        while let Some(incoming) = self.endpoint.accept().await {
            if !incoming.remote_address_validated()
                && incoming.may_retry()
                && pending.load(Ordering::Relaxed) >= RETRY_ABOVE_PENDING
            {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().ignore();
                }
                continue;
            }
            let services = self.services.clone();
            let handshake = PendingHandshake::new(pending.clone());
            tokio::spawn(async move { handle_incoming(services, incoming, handshake).await });
        }
    }

    /// Closes every connection with [`CloseCode::Shutdown`] ("relay
    /// shutting down"), waits at most [`SHUTDOWN_DRAIN`] for the closes to
    /// leave, and stops the forwarding tasks. Clients read the code as
    /// "reconnect at once" instead of waiting out their idle timeout.
    pub async fn shutdown(self) {
        let open = self.endpoint.open_connections();
        self.endpoint.close(
            quinn::VarInt::from_u32(CloseCode::Shutdown.code()),
            SHUTDOWN_REASON,
        );
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN, self.endpoint.wait_idle())
            .await
            .is_ok();
        tracing::info!(connections = open, drained, "closed every connection");
        self.services.media.stop();
    }
}

/// This build's version and the git commit it was built from.
pub fn version_string() -> String {
    format!(
        "{} ({})",
        env!("CARGO_PKG_VERSION"),
        option_env!("WZP_GIT_HASH").unwrap_or("unknown")
    )
}

/// Handshakes in progress above which new, unvalidated addresses are sent
/// a QUIC Retry first ([`Relay::serve`]). Far above what legit clients
/// start at once (a handshake takes a round trip or two), so they never
/// see it but in a flood.
pub const RETRY_ABOVE_PENDING: usize = 64;

/// One handshake in progress, counted until dropped.
struct PendingHandshake(Arc<AtomicUsize>);

impl PendingHandshake {
    fn new(count: Arc<AtomicUsize>) -> PendingHandshake {
        count.fetch_add(1, Ordering::Relaxed);
        PendingHandshake(count)
    }
}

impl Drop for PendingHandshake {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn handle_incoming(
    services: Arc<Services>,
    incoming: quinn::Incoming,
    handshake: PendingHandshake,
) {
    inc(&services.counters.connections);
    let remote = incoming.remote_address();
    let mut connecting = match incoming.accept() {
        Ok(c) => c,
        // The ClientHello usually arrives whole in the first packet, so the
        // canonical-name check refuses it here.
        Err(quinn::ConnectionError::TransportError(e))
            if e.reason.starts_with(quic::NON_CANONICAL_SNI) =>
        {
            let r = Refusal::new(CloseCode::UnknownSni, HangupReason::Error, e.reason);
            log_refusal(&services, remote, None, &r);
            return;
        }
        Err(e) => {
            inc(&services.counters.handshake_failures);
            tracing::debug!(%remote, "QUIC accept failed: {e}");
            return;
        }
    };
    let sni = tokio::time::timeout(HANDSHAKE_TIMEOUT, quic::server_name(&mut connecting))
        .await
        .ok()
        .flatten();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(quinn::ConnectionError::TransportError(e)))
            if e.reason.starts_with(quic::NON_CANONICAL_SNI) =>
        {
            // Refused by the handshake's canonical-name check (the client
            // got the reason in the transport close).
            let r = Refusal::new(CloseCode::UnknownSni, HangupReason::Error, e.reason);
            log_refusal(&services, remote, None, &r);
            return;
        }
        Ok(Err(e)) => {
            inc(&services.counters.handshake_failures);
            tracing::debug!(%remote, "QUIC handshake failed: {e}");
            return;
        }
        Err(_) => {
            inc(&services.counters.handshake_failures);
            tracing::debug!(%remote, "QUIC handshake timed out");
            return;
        }
    };
    drop(handshake);
    let sni = sni.unwrap_or_default();
    match classify(&sni) {
        Sni::Ping => {
            inc(&services.counters.pings);
            quic::close(&conn, CloseCode::Normal, b"pong");
        }
        Sni::Version => {
            quic::close(&conn, CloseCode::Normal, version_string().as_bytes());
        }
        Sni::Room(room) => crate::rooms::service::serve_room(services, conn, room, false).await,
        Sni::Call(room) => crate::rooms::service::serve_room(services, conn, room, true).await,
        Sni::Signal => serve_signal(services, conn).await,
        Sni::Federation => services.federation.accept(conn).await,
        Sni::RelayLink => {
            let r = Refusal::new(
                CloseCode::UnknownSni,
                HangupReason::Error,
                format!("{sni} is not served by this relay yet"),
            );
            refuse(&services, &conn, None, &r, None).await;
        }
        Sni::Unknown => {
            let r = Refusal::new(
                CloseCode::UnknownSni,
                HangupReason::Error,
                format!(
                    "unknown server name {:?}: use a room id (32 lowercase hex digits), call-*, ping or _signal",
                    echo(&sni)
                ),
            );
            refuse(&services, &conn, None, &r, None).await;
        }
    }
}

/// Tells the client why, closes the connection, counts and logs it.
pub async fn refuse(
    services: &Services,
    conn: &quinn::Connection,
    send: Option<&mut quinn::SendStream>,
    r: &Refusal,
    room: Option<&str>,
) {
    log_refusal(services, conn.remote_address(), room, r);
    if let Some(send) = send {
        let hangup = SignalMessage::Hangup {
            reason: r.hangup,
            call_id: None,
            message: Some(r.message.clone()),
        };
        // Best effort: the close below carries the same reason.
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            signal_stream::write_message(send, &hangup),
        )
        .await;
        let _ = send.finish();
    }
    quic::close(conn, r.code, r.message.as_bytes());
}

/// Counts a refusal, writes it to the event log, and logs it (at most a
/// line per reason per second).
fn log_refusal(services: &Services, remote: SocketAddr, room: Option<&str>, r: &Refusal) {
    services.counters.refused(r.code);
    services.event(Event {
        ts_ms: now_ms(),
        event: "refused",
        room,
        remote: Some(remote.to_string()),
        reason: Some(format!("{}: {}", r.label(), r.message)),
        ..Default::default()
    });
    // A flood of refusals of one kind logs a line a second, with the count
    // held back since the last.
    let kind = (r.code.code() as usize).saturating_sub(CloseCode::RoomFull.code() as usize);
    let admitted = services
        .refusal_log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .admit(kind, Instant::now());
    match admitted {
        Some(0) => tracing::info!(
            remote = %remote,
            room,
            reason = %r.message,
            "refused"
        ),
        Some(held) => tracing::info!(
            remote = %remote,
            room,
            reason = %r.message,
            "refused ({held} more {} refusals since the last line)",
            r.label()
        ),
        None => {}
    }
}
