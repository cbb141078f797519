//! The client's signal connection (`_signal`): connect with the relay
//! pinned (or trusted on first use), say Hello, register the identity by
//! answering the relay's challenge (proto's `PresenceClient`), then carry
//! direct-call messages and keep-alive pings.

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use wzp_proto::identity::Identity;
use wzp_proto::mapping::{Mapping, MappingProbe, TOKEN_LEN};
use wzp_proto::presence::{PresenceClient, PresenceEvent, PresenceStep};
use wzp_proto::signal::{negotiate_version, Decoded, SignalMessage};
use wzp_proto::{Seed, TlsFingerprint};
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader};

use crate::trust::{KnownRelays, Trust};

/// How long one QUIC handshake may take.
pub const HANDSHAKE: Duration = Duration::from_secs(3);
/// How long the relay may take to answer a request (Hello, registration).
pub const ANSWER: Duration = Duration::from_secs(5);
/// Keep-alive ping interval (the relay drops registrations silent for 45 s).
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Longest wait for the answer to a NAT mapping test (the wait is three
/// round trips to the relay and a quarter second, at most this).
pub const MAPPING_WAIT: Duration = Duration::from_secs(1);
/// Probes a mapping test sends at most (spread over its wait).
pub const MAPPING_PROBES: u32 = 3;

/// How [`SignalConn::register`] runs the NAT mapping test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MappingTest {
    /// Not at all (a call kept on the relay has no use for it).
    Off,
    /// Sends the probes and goes on; the answer is taken in by
    /// [`SignalConn::recv`] when it comes (a caller: its call is offered at
    /// once, and the answer is in long before the callee's).
    Background,
    /// Waits for the answer (at most [`mapping_wait`]): a listener, whose
    /// mapping must be known before a call comes, and which says it.
    Wait,
}

/// How long a mapping test waits for its answer at a round trip of `rtt`.
pub fn mapping_wait(rtt: Duration) -> Duration {
    (rtt * 3 + Duration::from_millis(250)).min(MAPPING_WAIT)
}

/// Who we are and which relay, as every signal subcommand takes them.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// `HOST:PORT`.
    pub relay: String,
    /// Identity seed file (created when missing).
    pub identity: PathBuf,
    /// The relay's TLS fingerprint to pin.
    pub relay_fingerprint: Option<TlsFingerprint>,
    /// Known-relays file (trust on first use, pins after).
    pub known_relays: PathBuf,
}

/// A relay's address as given (`--relay`, or `version-check`'s argument):
/// HOST:PORT, resolved, with a port that can be dialed.
pub fn relay_addr(relay: &str) -> Result<SocketAddr> {
    let addr = relay
        .to_socket_addrs()
        .with_context(|| {
            format!("relay address {relay:?}: expected HOST:PORT (e.g. 203.0.113.7:4433)")
        })?
        .next()
        .ok_or_else(|| anyhow!("relay address {relay:?}: resolves to no address"))?;
    if addr.port() == 0 {
        bail!("relay address {relay:?}: port 0 cannot be dialed; give the relay's port");
    }
    Ok(addr)
}

impl RelayOptions {
    /// The relay's address.
    pub fn addr(&self) -> Result<SocketAddr> {
        relay_addr(&self.relay)
    }

    /// The identity (created on first use).
    pub fn identity(&self) -> Result<Identity> {
        let seed = Seed::load_or_create(&self.identity)
            .map_err(|e| anyhow!("identity {}: {e}", self.identity.display()))?;
        Ok(seed.identity())
    }
}

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The relay did not answer (not running, wrong address, blocked).
    #[error("cannot reach the relay at {relay} ({addr}): {why}; check the address and that the relay runs")]
    Unreachable {
        relay: String,
        addr: SocketAddr,
        why: String,
    },
    /// Anything else (pinning mismatch, local errors).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Connects to `opts.relay` with server name `sni`, checking its
/// certificate against the pin (or recording it on first use).
/// Also returns a [`quic::RawSender`] on the endpoint's socket (a direct
/// path's birthday probes leave from it).
pub async fn connect(
    opts: &RelayOptions,
    sni: &str,
) -> Result<
    (
        quinn::Endpoint,
        Option<quic::RawSender>,
        quinn::Connection,
        TlsFingerprint,
    ),
    ConnectError,
> {
    let addr = opts.addr()?;
    let mut known = KnownRelays::load(&opts.known_relays)?;
    let mut trust = Trust::for_relay(&opts.relay, opts.relay_fingerprint, &mut known)?;
    // One dual-stack socket where the host has IPv6: a direct path of a
    // call may then go over IPv6 while the relay is reached over IPv4.
    let (endpoint, raw) = quic::client_endpoint_dual_stack(addr).map_err(|e| anyhow!("{e}"))?;
    let dial = trust.dial()?;
    let connecting = endpoint
        .connect_with(dial.config.clone(), addr, sni)
        .map_err(|e| anyhow!("cannot connect to {addr}: {e}"))?;
    let conn = match tokio::time::timeout(HANDSHAKE, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let text = e.to_string();
            if let Some(e) = trust.pin_mismatch(&opts.relay, &known, &text) {
                return Err(e.into());
            }
            return Err(ConnectError::Unreachable {
                relay: opts.relay.clone(),
                addr,
                why: text,
            });
        }
        Err(_) => {
            return Err(ConnectError::Unreachable {
                relay: opts.relay.clone(),
                addr,
                why: format!("no QUIC handshake within {} s", HANDSHAKE.as_secs()),
            })
        }
    };
    let fp = trust.confirm(&dial, &opts.relay, &mut known, |line| eprintln!("{line}"))?;
    Ok((endpoint, raw, conn, fp))
}

/// What the relay said when we registered.
#[derive(Clone, Debug)]
pub struct Registration {
    /// Our address as the relay sees it.
    pub observed_addr: Option<SocketAddr>,
    /// The relay's label.
    pub relay_label: Option<String>,
    /// The relay's version.
    pub version: Option<String>,
    /// What the NAT mapping test showed of this socket's NAT
    /// ([`SignalConn::test_mapping`]); with [`MappingTest::Background`]
    /// `Unknown` here, and [`SignalConn::mapping`] once the answer came.
    pub mapping: Mapping,
    /// How many of this person's devices the relay has registered, this one
    /// included (a relay older than devices does not say).
    pub devices: Option<u32>,
}

/// An open `_signal` connection.
pub struct SignalConn {
    endpoint: quinn::Endpoint,
    raw: Option<quic::RawSender>,
    pub conn: quinn::Connection,
    send: quinn::SendStream,
    reader: SignalReader,
    last_sent: Instant,
    /// Messages read while waiting for something else (a mapping test's
    /// answer), handed out by [`SignalConn::recv`] first.
    pending: VecDeque<SignalMessage>,
    /// What the last mapping test showed.
    mapping: Mapping,
    /// The observed address a mapping test under way compares its answer
    /// with.
    mapping_of: Option<SocketAddr>,
    /// How [`SignalConn::register`] runs the mapping test.
    mapping_test: MappingTest,
    /// The relay ended the stream while a mapping test waited: the next
    /// [`SignalConn::recv`] says so once `pending` is empty.
    ended: bool,
    /// The features the relay's `hello` listed.
    relay_features: Vec<String>,
}

impl SignalConn {
    /// Connects to the relay's signal service and exchanges Hello.
    pub async fn open(opts: &RelayOptions) -> Result<(SignalConn, TlsFingerprint), ConnectError> {
        let (endpoint, raw, conn, fp) = connect(opts, wzp_proto::sni::SIGNAL).await?;
        let (send, recv) = conn
            .open_bi()
            .await
            .map_err(|e| anyhow!("opening the signal stream: {e}"))?;
        let mut s = SignalConn {
            endpoint,
            raw,
            conn,
            send,
            reader: SignalReader::new(recv, wzp_proto::signal::MAX_FRAME_LEN),
            last_sent: Instant::now(),
            pending: VecDeque::new(),
            mapping: Mapping::Unknown,
            mapping_of: None,
            mapping_test: MappingTest::Wait,
            ended: false,
            relay_features: Vec::new(),
        };
        s.send(&SignalMessage::hello(Some(format!(
            "wzp-client {}",
            env!("CARGO_PKG_VERSION")
        ))))
        .await?;
        let first = tokio::time::timeout(ANSWER, s.recv_decoded())
            .await
            .map_err(|_| anyhow!("the relay did not say hello within {} s", ANSWER.as_secs()))??;
        negotiate_version(&first).map_err(|e| anyhow!("the relay's hello: {e}"))?;
        if let Decoded::Message(SignalMessage::Hello { features, .. }) = first {
            s.relay_features = features;
        }
        Ok((s, fp))
    }

    /// The endpoint the signalling connection runs on: the address the
    /// relay observes, which a direct call's callee accepts its direct path
    /// on and its caller dials from.
    pub fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }

    /// Sends datagrams that are not QUIC from the endpoint's socket (a
    /// direct path's birthday probes), where the socket can be shared.
    pub fn raw(&self) -> Option<&quic::RawSender> {
        self.raw.as_ref()
    }

    /// How [`SignalConn::register`] runs the NAT mapping test (default:
    /// [`MappingTest::Wait`]).
    pub fn set_mapping_test(&mut self, how: MappingTest) {
        self.mapping_test = how;
    }

    /// What the mapping test at registration showed of this socket's NAT.
    pub fn mapping(&self) -> Mapping {
        self.mapping
    }

    /// Whether the relay's `hello` listed `feature`.
    pub fn relay_has(&self, feature: &str) -> bool {
        self.relay_features.iter().any(|f| f == feature)
    }

    /// The relay's words, when it closed this connection because another
    /// registration replaced this one (`CloseCode::Replaced`).
    pub fn replaced(&self) -> Option<String> {
        let reason = self.conn.close_reason()?;
        match quic::peer_close(&reason)? {
            (wzp_proto::close::CloseCode::Replaced, text) => Some(text),
            _ => None,
        }
    }

    /// Registers `identity` as `device` (answers the relay's challenge);
    /// with `call_waiting`, a call that comes while this connection is in
    /// one is offered to it (a person decides) instead of the caller hearing
    /// busy, where the relay lists [`wzp_proto::signal::FEATURE_CALL_WAITING`].
    pub async fn register(
        &mut self,
        identity: &Identity,
        relay: TlsFingerprint,
        alias: Option<String>,
        device: Option<wzp_proto::presence::DeviceId>,
        call_waiting: bool,
    ) -> Result<Registration> {
        let mut client =
            PresenceClient::new(identity, relay, alias).with_call_waiting(call_waiting);
        if let Some(d) = device {
            client = client.with_device(d);
        }
        let deadline = tokio::time::Instant::now() + ANSWER;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.recv())
                .await
                .map_err(|_| {
                    anyhow!(
                        "the relay did not answer the registration within {} s",
                        ANSWER.as_secs()
                    )
                })??
                .ok_or_else(|| self.closed_why("registering"))?;
            match client.handle(&msg) {
                PresenceStep::Send(m) => self.send(&m).await?,
                PresenceStep::Event(PresenceEvent::Registered {
                    observed_addr,
                    relay_label,
                    version,
                    mapping,
                    devices,
                }) => {
                    let mapping = match (observed_addr, mapping, self.mapping_test) {
                        (Some(at), Some((port, token)), MappingTest::Wait) => {
                            self.test_mapping(at, port, token).await?
                        }
                        (Some(at), Some((port, token)), MappingTest::Background) => {
                            self.start_mapping_test(at, port, token);
                            Mapping::Unknown
                        }
                        _ => Mapping::Unknown,
                    };
                    self.mapping = mapping;
                    return Ok(Registration {
                        observed_addr,
                        relay_label,
                        version,
                        mapping,
                        devices,
                    });
                }
                PresenceStep::Event(PresenceEvent::Refused { reason }) => {
                    bail!("the relay refused the registration: {reason}")
                }
                PresenceStep::Ignored => {}
            }
        }
    }

    /// The NAT mapping test (`wzp_proto::mapping`): sends a probe with
    /// `token` from the signalling socket to the relay's mapping `port` (a
    /// few times, in case one is lost) and compares the address the relay
    /// saw it from with `observed`, the connection's. `Unknown` when no
    /// answer comes within [`mapping_wait`] (the port filtered on the way,
    /// or the probes lost) or the socket cannot send one. Messages that come
    /// meanwhile are kept for [`SignalConn::recv`].
    pub async fn test_mapping(
        &mut self,
        observed: SocketAddr,
        port: u16,
        token: [u8; TOKEN_LEN],
    ) -> Result<Mapping> {
        let Some(raw) = self.raw.clone() else {
            return Ok(Mapping::Unknown);
        };
        self.mapping_of = Some(observed);
        let to = SocketAddr::new(self.conn.remote_address().ip().to_canonical(), port);
        let probe = MappingProbe { token }.encode();
        let wait = mapping_wait(self.conn.rtt());
        let deadline = tokio::time::Instant::now() + wait;
        for k in 1..=MAPPING_PROBES {
            if let Err(e) = raw.send_to(&probe, to) {
                tracing::debug!(%to, error = %e, "mapping probe not sent");
            }
            let next = if k == MAPPING_PROBES {
                deadline
            } else {
                (tokio::time::Instant::now() + wait / MAPPING_PROBES).min(deadline)
            };
            loop {
                let msg = match tokio::time::timeout_at(next, self.recv_fresh()).await {
                    Err(_) => break,
                    Ok(m) => m?,
                };
                match msg {
                    Some(SignalMessage::MappingObserved { observed_addr }) => {
                        return Ok(Mapping::from_observations(observed, observed_addr));
                    }
                    Some(m) => self.pending.push_back(m),
                    None => {
                        self.ended = true;
                        return Ok(Mapping::Unknown);
                    }
                }
            }
        }
        Ok(Mapping::Unknown)
    }

    /// The mapping test without waiting: a task sends the probes (spread
    /// over [`mapping_wait`]), and [`SignalConn::recv`] takes the answer in
    /// when it comes ([`SignalConn::mapping`] is `Unknown` until then).
    pub fn start_mapping_test(&mut self, observed: SocketAddr, port: u16, token: [u8; TOKEN_LEN]) {
        let Some(raw) = self.raw.clone() else {
            return;
        };
        self.mapping_of = Some(observed);
        let to = SocketAddr::new(self.conn.remote_address().ip().to_canonical(), port);
        let probe = MappingProbe { token }.encode();
        let every = mapping_wait(self.conn.rtt()) / MAPPING_PROBES;
        tokio::spawn(async move {
            for k in 1..=MAPPING_PROBES {
                if let Err(e) = raw.send_to(&probe, to) {
                    tracing::debug!(%to, error = %e, "mapping probe not sent");
                }
                if k < MAPPING_PROBES {
                    // Pacing the probes, not waiting for anything: the
                    // answer is read by `recv`.
                    tokio::time::sleep(every).await;
                }
            }
        });
    }

    /// Why the relay closed the connection, for an error message.
    pub fn closed_why(&self, doing: &str) -> anyhow::Error {
        match self.conn.close_reason() {
            Some(r) => match quic::peer_close(&r) {
                Some((code, text)) => {
                    anyhow!("the relay closed the connection while {doing}: {text} ({code})")
                }
                None => anyhow!("the connection to the relay ended while {doing}: {r}"),
            },
            None => anyhow!("the relay ended the signal stream while {doing}"),
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &SignalMessage) -> Result<()> {
        self.last_sent = Instant::now();
        signal_stream::write_message(&mut self.send, msg)
            .await
            .map_err(|e| anyhow!("writing to the relay: {e}"))
    }

    async fn recv_decoded(&mut self) -> Result<Decoded> {
        loop {
            match self.reader.next().await {
                Ok(Some(SignalFrame::Message(d))) => return Ok(d),
                Ok(Some(SignalFrame::Malformed(e))) => {
                    tracing::debug!("malformed frame from the relay: {e}")
                }
                Ok(None) => return Err(self.closed_why("reading")),
                Err(e) => return Err(anyhow!("reading from the relay: {e}")),
            }
        }
    }

    /// The next message this build knows; `Ok(None)` when the relay ended
    /// the stream. Sends a keep-alive ping when the connection has been
    /// quiet for [`KEEPALIVE`]. Cancel-safe.
    /// A mapping test's answer is taken in here, not returned.
    /// Messages read but left for later: the next [`SignalConn::recv`]s
    /// return them first, in order.
    pub fn read_again(&mut self, msgs: Vec<SignalMessage>) {
        for m in msgs.into_iter().rev() {
            self.pending.push_front(m);
        }
    }

    pub async fn recv(&mut self) -> Result<Option<SignalMessage>> {
        loop {
            let m = match self.pending.pop_front() {
                Some(m) => Some(m),
                None if self.ended => None,
                None => self.recv_fresh().await?,
            };
            match m {
                Some(SignalMessage::MappingObserved { observed_addr }) => {
                    // The first answer stands (later ones answer the
                    // probes sent after it, or a replay of one).
                    if let (Some(at), false) = (self.mapping_of, self.mapping.is_known()) {
                        self.mapping = Mapping::from_observations(at, observed_addr);
                    }
                }
                other => return Ok(other),
            }
        }
    }

    /// [`SignalConn::recv`] without the messages kept aside.
    async fn recv_fresh(&mut self) -> Result<Option<SignalMessage>> {
        loop {
            let quiet = KEEPALIVE.saturating_sub(self.last_sent.elapsed());
            let frame = tokio::select! {
                f = self.reader.next() => f,
                _ = tokio::time::sleep(quiet) => {
                    let ts = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_millis() as u64)
                        .unwrap_or(0);
                    self.send(&SignalMessage::Ping { timestamp_ms: ts }).await?;
                    continue;
                }
            };
            match frame {
                Ok(Some(SignalFrame::Message(Decoded::Message(m)))) => return Ok(Some(m)),
                Ok(Some(SignalFrame::Message(Decoded::Unknown { type_name }))) => {
                    tracing::debug!(%type_name, "unknown message from the relay")
                }
                Ok(Some(SignalFrame::Malformed(e))) => {
                    tracing::debug!("malformed frame from the relay: {e}")
                }
                Ok(None) => return Ok(None),
                Err(e) => return Err(anyhow!("reading from the relay: {e}")),
            }
        }
    }

    /// Ends the session politely: finishes our stream, waits (bounded) until
    /// the relay has read everything we sent (a last `reject` or `hangup`
    /// must not be lost to the close), then closes the connection and lets
    /// the close leave.
    pub async fn close(mut self) {
        let _ = self.send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.send.stopped()).await;
        quic::close(&self.conn, wzp_proto::close::CloseCode::Normal, b"bye");
        let _ = tokio::time::timeout(Duration::from_millis(300), self.endpoint.wait_idle()).await;
    }
}
