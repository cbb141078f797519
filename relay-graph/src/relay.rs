//! The relay control plane: the QUIC endpoint, admission, signaling, and the
//! engine graph that forwards media.
//!
//! ```text
//!            accept loop ──spawn──► one task per handshake (SNI routing)
//!                                        │ room/call: Hello + Join, admit
//!                                        ▼
//!   datagrams ─► pump_datagrams_in ─► IngressFeed ─ring─► [relay.toml: ingress -> fanout -> egress] ─ring─► EgressPump::flush ─► send_datagram
//!                                            │ notify          ▲                                                  (same task)
//!                                            ▼                 │
//!                          forward() task per shard: one cycle, then flush
//!                            Rooms (admit/leave) ── SfuCommand ring
//! ```
//!
//! Each shard's packet domain is hosted on a task of the I/O runtime
//! ([`Graph::take_runner`]): no thread hop between reading, forwarding and
//! sending (docs/DESIGN.md, "The relay's forwarding loop").

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use tokio::sync::mpsc;
use wzp_engine::compile::{compile_with, Existing, Wakers};
use wzp_engine::exec::DomainRunner;
use wzp_engine::prelude::*;
use wzp_engine::stats::GraphStats;
use wzp_proto::identity::RelayCertificate;
use wzp_proto::signal::{negotiate_version, Decoded, HangupReason, SignalMessage};
use wzp_proto::{MediaHeader, TlsFingerprint};
use wzp_stages::net::quic::{self, EgressPeer, EgressPeers, IngressFeed, Observer, PeerIoStats};
use wzp_stages::sfu::{membership_channel, SfuCommand, SfuControl};

use crate::config::Config;
use crate::events::{now_ms, Event, EventLog};
use crate::join::{self, close, decode_client_frame, read_frame, ClientFrame, FrameError};
use crate::rooms::{Admit, Refusal, Rooms, Updates};
use crate::sni::{classify, Sni};

/// The built-in relay graph.
pub const RELAY_GRAPH: &str = include_str!("../../graphs/relay.toml");

/// Datagrams the ring into the graph holds.
const INGRESS_RING: usize = 4096;
/// Packets the ring out of the graph holds (fan-out multiplies).
const EGRESS_RING: usize = 16384;
/// Membership commands in flight.
const SFU_RING: usize = 8192;
/// How long a QUIC handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Relay-wide counters (per-stage ones live in the graph's stats).
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub connections: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub pings: AtomicU64,
    pub joins: AtomicU64,
    pub leaves: AtomicU64,
    pub refused_room_full: AtomicU64,
    pub refused_not_authorized: AtomicU64,
    pub refused_bad_join: AtomicU64,
    pub refused_unknown_sni: AtomicU64,
    pub refused_capacity: AtomicU64,
    pub refused_protocol: AtomicU64,
    pub signal_frames: AtomicU64,
    pub signal_malformed: AtomicU64,
    pub signal_unknown: AtomicU64,
    pub signal_queue_full: AtomicU64,
    pub sfu_ring_full: AtomicU64,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// Everything the connection tasks and the HTTP handlers share.
pub struct Shared {
    pub cfg: Config,
    pub tls_fingerprint: TlsFingerprint,
    pub rooms: Mutex<Rooms>,
    /// Media forwarding shards; a room lives on `shards[hash(room) % len]`.
    pub shards: Vec<Shard>,
    pub counters: RelayCounters,
    events: Option<EventLog>,
    pub started: Instant,
}

/// One forwarding thread: its own relay graph (ingress -> fan-out -> egress),
/// rings and egress pump. No state is shared between shards, so no lock is
/// taken per packet and rooms scale over cores.
pub struct Shard {
    sfu: Mutex<SfuControl>,
    /// Wakes the shard's forwarding task (new datagrams, membership changes).
    wake: Arc<tokio::sync::Notify>,
    feed: Arc<IngressFeed>,
    egress: Mutex<EgressPeers>,
    pub graph_stats: Arc<GraphStats>,
}

impl Shared {
    fn lock_rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard that forwards `room`.
    pub fn shard(&self, room: &str) -> &Shard {
        let h = room.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    fn sfu_send(&self, room: &str, cmd: SfuCommand) {
        let mut sfu = self
            .shard(room)
            .sfu
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if sfu.send(cmd).is_err() {
            // Only when the packet thread has stalled for thousands of
            // membership changes. A lost Join refuses nothing (the client
            // just hears nobody); a lost Leave leaves a stale entry that the
            // slot's next Join replaces.
            inc(&self.counters.sfu_ring_full);
            tracing::error!(?cmd, "sfu membership ring full; command lost");
        }
        drop(sfu);
        self.shard(room).wake.notify_one();
    }

    fn event(&self, ev: Event<'_>) {
        if let Some(log) = &self.events {
            log.write(&ev);
        }
    }

    fn count_refusal(&self, r: &Refusal) {
        let c = &self.counters;
        inc(match r.code {
            close::ROOM_FULL => &c.refused_room_full,
            close::NOT_AUTHORIZED => &c.refused_not_authorized,
            close::UNKNOWN_SNI => &c.refused_unknown_sni,
            close::CAPACITY => &c.refused_capacity,
            close::PROTOCOL => &c.refused_protocol,
            _ => &c.refused_bad_join,
        });
    }

    fn tapped(&self, room: &str) -> bool {
        self.cfg
            .debug_tap
            .as_deref()
            .is_some_and(|t| t == "*" || t == room)
    }
}

fn deliver(shared: &Shared, updates: Updates) {
    for (tx, msg) in updates {
        if tx.try_send(msg).is_err() {
            inc(&shared.counters.signal_queue_full);
        }
    }
}

/// A running relay.
pub struct Relay {
    pub shared: Arc<Shared>,
    pub endpoint: quinn::Endpoint,
    pub local_addr: SocketAddr,
    graphs: Vec<Graph>,
    stop: Arc<AtomicBool>,
    forwarders: Vec<tokio::task::JoinHandle<()>>,
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

impl Relay {
    /// Binds the endpoint, compiles and starts the graph. Call inside a
    /// tokio runtime; then [`Relay::serve`].
    pub fn start(cfg: Config, cert: &RelayCertificate) -> anyhow::Result<Relay> {
        let tls_fingerprint = cert.tls_fingerprint();
        let endpoint = quic::server_endpoint(cfg.listen, cert)?;
        let local_addr = endpoint.local_addr()?;

        let (graph_text, graph_file) = match &cfg.graph {
            Some(p) => (
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read graph {}", p.display()))?,
                p.display().to_string(),
            ),
            None => (RELAY_GRAPH.to_string(), "graphs/relay.toml".to_string()),
        };
        let mut vars = std::collections::BTreeMap::new();
        vars.insert("max_peers".to_string(), cfg.max_peers.to_string());
        vars.insert("max_rooms".to_string(), cfg.max_rooms.to_string());
        let spec = GraphSpec::parse(&graph_text, &graph_file, &vars)
            .map_err(|e| anyhow!("{e}"))
            .context("relay graph")?;

        let n_shards = match cfg.shards {
            0 => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            n => n,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut shards = Vec::with_capacity(n_shards);
        let mut graphs = Vec::with_capacity(n_shards);
        let mut forwarders = Vec::with_capacity(n_shards);
        for i in 0..n_shards {
            let wakers = Wakers::default();
            let epoch = Instant::now();
            let (feed, ingress_port) =
                quic::ingress_channel(INGRESS_RING, wakers.packet.clone(), epoch);
            let wake = Arc::new(tokio::sync::Notify::new());
            feed.notify_on_push(wake.clone());
            let (egress_peers, pump, egress_port) = quic::egress_channel(EGRESS_RING);
            let (sfu, membership) = membership_channel(SFU_RING);
            let mut res = Resources::new();
            res.insert("relay.ingress", Arc::new(ingress_port));
            res.insert("relay.egress", Arc::new(egress_port));
            res.insert("relay.sfu", Arc::new(membership));
            let mut spec = spec.clone();
            if n_shards > 1 {
                spec.name = format!("{}-{i}", spec.name);
            }
            let compiled = compile_with(
                &spec,
                &wzp_stages::registry(),
                &res,
                &Existing::default(),
                wakers,
            )
            .map_err(|e| anyhow!("{e}"))
            .context("relay graph")?;
            let mut graph = Graph::new(compiled);
            let runner = graph.take_runner(Domain::Packet).ok_or_else(|| {
                anyhow!("relay graph: no packet-domain stages (ingress -> fanout -> egress)")
            })?;
            if let Some(d) = graph.domains_left().first() {
                return Err(anyhow!(
                    "relay graph: stages in the {d:?} domain; a relay graph runs in the packet domain only"
                ));
            }
            forwarders.push(tokio::spawn(forward(
                runner,
                pump,
                wake.clone(),
                stop.clone(),
                epoch,
                Duration::from_micros(cfg.egress_coalesce_us),
            )));
            shards.push(Shard {
                sfu: Mutex::new(sfu),
                wake,
                feed,
                egress: Mutex::new(egress_peers),
                graph_stats: graph.stats(),
            });
            graphs.push(graph);
        }
        let events = match &cfg.event_log {
            Some(p) => Some(
                EventLog::open(p)
                    .with_context(|| format!("cannot open the event log {}", p.display()))?,
            ),
            None => None,
        };
        let mut rooms = Rooms::new(cfg.max_peers, cfg.max_rooms, cfg.call_room_size, &cfg.label);
        for c in &cfg.calls {
            rooms.calls.allow(&c.room, c.fingerprints.clone());
        }
        let shared = Arc::new(Shared {
            tls_fingerprint,
            rooms: Mutex::new(rooms),
            shards,
            counters: RelayCounters::default(),
            events,
            started: Instant::now(),
            cfg,
        });
        Ok(Relay {
            shared,
            endpoint,
            local_addr,
            graphs,
            stop,
            forwarders,
        })
    }

    /// Accepts connections until the endpoint closes. Every handshake runs
    /// in its own task, so a slow client never delays another's accept.
    pub async fn serve(&self) {
        while let Some(incoming) = self.endpoint.accept().await {
            let shared = self.shared.clone();
            tokio::spawn(async move { handle_incoming(shared, incoming).await });
        }
    }

    /// Closes every connection and stops the forwarding tasks.
    pub fn shutdown(mut self) {
        self.endpoint
            .close(close::SHUTDOWN.into(), b"relay shutting down");
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.shared.shards {
            s.wake.notify_one();
        }
        for g in &mut self.graphs {
            g.stop();
        }
        for t in self.forwarders.drain(..) {
            t.abort();
        }
    }
}

/// How often a shard's forwarding task cycles with nothing to wake it.
const IDLE_CYCLE: Duration = Duration::from_millis(20);

/// One shard's forwarding loop, run to completion on the I/O runtime: wait
/// for datagrams (or a membership change), run one cycle of the relay graph
/// (ingress -> fan-out -> egress), then hand everything the cycle queued to
/// quinn. The datagrams are read, forwarded and sent on the same worker
/// thread, so a packet costs no thread hop and no futex wake-up; the graph's
/// stages are the same real-time code as anywhere else (no allocation, no
/// lock in `process`), the I/O around them is the task's. See
/// docs/DESIGN.md, "The relay's forwarding loop".
async fn forward(
    mut runner: DomainRunner,
    mut pump: quic::EgressPump,
    wake: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    coalesce: Duration,
) {
    let mut idle = tokio::time::interval(IDLE_CYCLE);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A busy receiver's datagrams may be held up to `coalesce` so they leave
    // in one QUIC packet (stages/src/net/coalesce.rs); wake for the release.
    pump.set_coalesce_window(coalesce);
    while !stop.load(Ordering::Relaxed) {
        let release = pump.next_release();
        tokio::select! {
            _ = wake.notified() => {}
            _ = idle.tick() => {}
            _ = async {
                if let Some(t) = release {
                    tokio::time::sleep_until(t.into()).await;
                }
            }, if release.is_some() => {}
        }
        let t = Instant::now();
        runner.run_cycle(t.duration_since(epoch).as_nanos() as u64, t, None);
        pump.flush();
    }
}

async fn handle_incoming(shared: Arc<Shared>, incoming: quinn::Incoming) {
    inc(&shared.counters.connections);
    let remote = incoming.remote_address();
    let mut connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            inc(&shared.counters.handshake_failures);
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
        Ok(Err(e)) => {
            inc(&shared.counters.handshake_failures);
            tracing::debug!(%remote, "QUIC handshake failed: {e}");
            return;
        }
        Err(_) => {
            inc(&shared.counters.handshake_failures);
            tracing::debug!(%remote, "QUIC handshake timed out");
            return;
        }
    };
    let sni = sni.unwrap_or_default();
    match classify(&sni) {
        Sni::Ping => {
            inc(&shared.counters.pings);
            conn.close(close::NORMAL.into(), b"pong");
        }
        Sni::Room(room) => serve_room(shared, conn, room, false).await,
        Sni::Call(room) => serve_room(shared, conn, room, true).await,
        Sni::Signal | Sni::Federation | Sni::RelayLink | Sni::Version => {
            let r = Refusal::new(
                close::UNKNOWN_SNI,
                HangupReason::Error,
                format!("{sni} is not served by this relay yet"),
            );
            refuse(&shared, &conn, None, &r, None).await;
        }
        Sni::Unknown => {
            let r = Refusal::new(
                close::UNKNOWN_SNI,
                HangupReason::Error,
                format!(
                    "unknown server name {sni:?}: use a room hash (32 hex digits), call-*, ping or _signal"
                ),
            );
            refuse(&shared, &conn, None, &r, None).await;
        }
    }
}

/// Tells the client why, closes the connection, counts and logs it.
async fn refuse(
    shared: &Shared,
    conn: &quinn::Connection,
    send: Option<&mut quinn::SendStream>,
    r: &Refusal,
    room: Option<&str>,
) {
    shared.count_refusal(r);
    shared.event(Event {
        ts_ms: now_ms(),
        event: "refused",
        room,
        remote: Some(conn.remote_address().to_string()),
        reason: Some(format!("{}: {}", r.label(), r.message)),
        ..Default::default()
    });
    tracing::info!(remote = %conn.remote_address(), room, reason = %r.message, "refused");
    if let Some(send) = send {
        let hangup = SignalMessage::Hangup {
            reason: r.hangup,
            call_id: None,
            message: Some(r.message.clone()),
        };
        // Best effort: the close below carries the same reason.
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            join::write_message(send, &hangup),
        )
        .await;
        let _ = send.finish();
    }
    conn.close(r.code.into(), r.message.as_bytes());
}

/// Hello then Join on the first bidirectional stream.
async fn read_join(
    shared: &Shared,
    recv: &mut quinn::RecvStream,
    room: &str,
) -> Result<join::Join, Refusal> {
    let bad = |m: String| Refusal::new(close::BAD_JOIN, HangupReason::Error, m);
    let first = read_frame(recv, join::MAX_CLIENT_FRAME)
        .await
        .map_err(|e| bad(format!("reading Hello: {e}")))?
        .ok_or_else(|| bad("signal stream closed before Hello".into()))?;
    let decoded = match decode_client_frame(&first) {
        ClientFrame::Message(m) => Decoded::Message(m),
        ClientFrame::Unknown(t) => Decoded::Unknown { type_name: t },
        ClientFrame::Join(_) => Decoded::Unknown {
            type_name: "join".into(),
        },
        ClientFrame::Malformed(e) => {
            inc(&shared.counters.signal_malformed);
            return Err(bad(format!("first signal frame is malformed: {e}")));
        }
    };
    negotiate_version(&decoded).map_err(|e| bad(e.to_string()))?;
    let second = read_frame(recv, join::MAX_CLIENT_FRAME)
        .await
        .map_err(|e| bad(format!("reading Join: {e}")))?
        .ok_or_else(|| bad("signal stream closed before Join".into()))?;
    let j = match decode_client_frame(&second) {
        ClientFrame::Join(j) => j,
        ClientFrame::Malformed(e) => {
            inc(&shared.counters.signal_malformed);
            return Err(bad(format!("Join is malformed: {e}")));
        }
        other => return Err(bad(format!("expected Join after Hello, got {other:?}"))),
    };
    j.verify(
        room,
        &shared.tls_fingerprint,
        now_ms(),
        shared.cfg.join_max_skew_s,
    )
    .map_err(|e| bad(e.to_string()))?;
    Ok(j)
}

async fn serve_room(shared: Arc<Shared>, conn: quinn::Connection, room: String, call: bool) {
    let join_timeout = Duration::from_millis(shared.cfg.join_timeout_ms);
    let remote = conn.remote_address();
    let (mut send, mut recv) = match tokio::time::timeout(join_timeout, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => {
            let r = Refusal::new(
                close::BAD_JOIN,
                HangupReason::Timeout,
                "no signal stream: open a bidirectional stream and send Hello and Join",
            );
            refuse(&shared, &conn, None, &r, Some(&room)).await;
            return;
        }
    };
    let hello = SignalMessage::hello(Some(format!("wzp-relay {}", env!("CARGO_PKG_VERSION"))));
    let _ = join::write_message(&mut send, &hello).await;
    let j = match tokio::time::timeout(join_timeout, read_join(&shared, &mut recv, &room)).await {
        Ok(Ok(j)) => j,
        Ok(Err(r)) => {
            refuse(&shared, &conn, Some(&mut send), &r, Some(&room)).await;
            return;
        }
        Err(_) => {
            let r = Refusal::new(
                close::BAD_JOIN,
                HangupReason::Timeout,
                format!("no Hello and Join within {} ms", shared.cfg.join_timeout_ms),
            );
            refuse(&shared, &conn, Some(&mut send), &r, Some(&room)).await;
            return;
        }
    };
    let fingerprint = j.fingerprint();
    let stats = Arc::new(PeerIoStats::default());
    let (signal_tx, mut signal_rx) = mpsc::channel::<SignalMessage>(64);

    // Admission, the egress route and the fan-out Join happen under the
    // rooms lock, so membership commands reach the ring in the order the
    // table changed (a reused slot never sees its old Leave after its Join).
    let admitted = {
        let mut rooms = shared.lock_rooms();
        match rooms.admit(Admit {
            room: room.clone(),
            call,
            fingerprint,
            alias: j.alias.clone(),
            remote,
            joined_unix_ms: now_ms(),
            stats: stats.clone(),
            conn: conn.clone(),
            signal: signal_tx.clone(),
        }) {
            Ok(a) => {
                let observer: Option<Observer> = shared.tapped(&room).then(|| {
                    let room = room.clone();
                    let handle = a.handle;
                    Arc::new(move |bytes: &[u8]| tap("out", &room, handle, bytes, None)) as Observer
                });
                shared
                    .shard(&room)
                    .egress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(
                        a.handle,
                        EgressPeer {
                            conn: conn.clone(),
                            stats: stats.clone(),
                            observer,
                        },
                    );
                shared.sfu_send(
                    &room,
                    SfuCommand::Join {
                        peer: a.handle,
                        room: a.room_slot,
                    },
                );
                let updates = rooms.room_updates(&room);
                Ok((a, updates))
            }
            Err(r) => Err(r),
        }
    };
    let (admitted, updates) = match admitted {
        Ok(x) => x,
        Err(r) => {
            refuse(&shared, &conn, Some(&mut send), &r, Some(&room)).await;
            return;
        }
    };
    let handle = admitted.handle;
    inc(&shared.counters.joins);
    let members = admitted.room_size.load(Ordering::Relaxed);
    tracing::info!(%remote, room, handle, %fingerprint, members, "joined");
    shared.event(Event {
        ts_ms: now_ms(),
        event: "join",
        room: Some(&room),
        handle: Some(handle),
        fingerprint: Some(fingerprint.to_string()),
        alias: j.alias.as_deref(),
        remote: Some(remote.to_string()),
        members: Some(members),
        ..Default::default()
    });

    // Signal writer: RoomUpdates, Pongs.
    let writer = tokio::spawn(async move {
        while let Some(msg) = signal_rx.recv().await {
            if join::write_message(&mut send, &msg).await.is_err() {
                break;
            }
        }
    });
    deliver(&shared, updates);

    // Signal reader: the client may ping, report quality, or hang up.
    let reader = {
        let shared = shared.clone();
        let conn = conn.clone();
        let signal_tx = signal_tx.clone();
        tokio::spawn(async move { read_signals(shared, conn, recv, signal_tx).await })
    };
    drop(signal_tx);

    let tapped = shared.tapped(&room);
    let room_size = admitted.room_size.clone();
    let tap_room = room.clone();
    let why = quic::pump_datagrams_in(
        conn.clone(),
        handle,
        shared.shard(&room).feed.clone(),
        stats,
        move |bytes| {
            if tapped {
                let fanout = room_size.load(Ordering::Relaxed).saturating_sub(1);
                tap("in", &tap_room, handle, bytes, Some(fanout));
            }
        },
    )
    .await;
    reader.abort();
    writer.abort();

    let (left, updates) = {
        let mut rooms = shared.lock_rooms();
        let left = rooms.leave(handle);
        if left.is_some() {
            shared.sfu_send(&room, SfuCommand::Leave { peer: handle });
            shared
                .shard(&room)
                .egress
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(handle);
        }
        (left, rooms.room_updates(&room))
    };
    if left.is_some() {
        inc(&shared.counters.leaves);
        let members = updates.len();
        tracing::info!(%remote, room, handle, %fingerprint, reason = %why, "left");
        shared.event(Event {
            ts_ms: now_ms(),
            event: "leave",
            room: Some(&room),
            handle: Some(handle),
            fingerprint: Some(fingerprint.to_string()),
            alias: j.alias.as_deref(),
            remote: Some(remote.to_string()),
            reason: Some(why.to_string()),
            members: Some(members),
        });
        deliver(&shared, updates);
    }
}

async fn read_signals(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    mut recv: quinn::RecvStream,
    signal_tx: mpsc::Sender<SignalMessage>,
) {
    loop {
        let body = match read_frame(&mut recv, join::MAX_CLIENT_FRAME).await {
            Ok(Some(b)) => b,
            // The client finished its stream: media goes on.
            Ok(None) => return,
            Err(FrameError::TooLarge { len, max }) => {
                inc(&shared.counters.signal_malformed);
                inc(&shared.counters.refused_protocol);
                let msg = format!("signal frame of {len} bytes exceeds {max}");
                conn.close(close::PROTOCOL.into(), msg.as_bytes());
                return;
            }
            Err(_) => return,
        };
        inc(&shared.counters.signal_frames);
        match decode_client_frame(&body) {
            ClientFrame::Message(SignalMessage::Ping { timestamp_ms }) => {
                if signal_tx
                    .try_send(SignalMessage::Pong { timestamp_ms })
                    .is_err()
                {
                    inc(&shared.counters.signal_queue_full);
                }
            }
            ClientFrame::Message(SignalMessage::Hangup { .. }) => {
                conn.close(close::NORMAL.into(), b"hangup");
                return;
            }
            ClientFrame::Message(m) => {
                tracing::debug!(remote = %conn.remote_address(), kind = m.type_name(), "signal message ignored on a room stream");
            }
            ClientFrame::Join(_) => {
                inc(&shared.counters.signal_unknown);
            }
            ClientFrame::Unknown(t) => {
                inc(&shared.counters.signal_unknown);
                tracing::debug!(type_name = %t, "unknown signal message");
            }
            ClientFrame::Malformed(e) => {
                inc(&shared.counters.signal_malformed);
                tracing::debug!(remote = %conn.remote_address(), "malformed signal frame: {e}");
            }
        }
    }
}

/// One debug tap line: every clear header field of a media packet.
fn tap(dir: &str, room: &str, peer: u32, bytes: &[u8], fanout: Option<usize>) {
    match MediaHeader::parse(bytes) {
        Ok((h, _)) => tracing::info!(
            target: "wzp_relay::tap",
            dir,
            room,
            peer,
            sender = h.sender_id,
            seq = h.seq,
            codec = ?h.codec,
            ts = h.timestamp,
            fec_block = h.fec_block,
            fec_symbol = h.fec_symbol,
            fec_ratio = h.fec_ratio,
            repair = h.is_repair(),
            epoch = h.key_epoch,
            len = bytes.len(),
            fanout,
            "media"
        ),
        Err(e) => tracing::info!(
            target: "wzp_relay::tap",
            dir,
            room,
            peer,
            len = bytes.len(),
            error = %e,
            "malformed"
        ),
    }
}
