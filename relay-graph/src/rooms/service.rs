//! The room service's shell: a room connection's life (Hello and Join,
//! admission, the datagram pump, leaving) around the sans-IO
//! [`RoomTable`], and each session's connection and signal queue.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use wzp_proto::close::CloseCode;
use wzp_proto::join::{Join, JOIN_NONCE_LEN};
use wzp_proto::signal::{negotiate_version, Decoded, HangupReason, SignalMessage};
use wzp_stages::net::quic::{self, EgressPeer, Observer, PeerIoStats};
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader, SignalStreamError};
use wzp_stages::sfu::SfuCommand;

use super::{Admit, ClientReport, RoomHandle, RoomLimits, RoomTable, RoomView, Updates};
use crate::endpoint::{refuse, Services};
use crate::observe::events::{now_ms, Event};
use crate::observe::inc;
use crate::rooms::Refusal;

/// Largest signal frame the relay reads from a client (JSON body bytes).
/// Far below proto's 1 MiB limit: nothing a client sends a relay is large.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;

/// Signal messages queued to one client before it counts as not reading.
const SIGNAL_QUEUE: usize = 64;

/// A session's I/O, kept beside its table entry.
struct SessionIo {
    conn: quinn::Connection,
    signal: mpsc::Sender<SignalMessage>,
}

struct RoomState {
    table: RoomTable,
    io: HashMap<u32, SessionIo>,
}

/// The room table and the sessions' connections, behind one mutex held
/// for table updates only (never across an await; never per packet).
pub struct RoomService {
    state: Mutex<RoomState>,
}

impl RoomService {
    pub fn new(limits: RoomLimits) -> RoomService {
        RoomService {
            state: Mutex::new(RoomState {
                table: RoomTable::new(limits),
                io: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The federation's roster of `room`'s remote participants changed:
    /// every local member gets a RoomUpdate listing them.
    pub fn set_remote_members(
        &self,
        services: &Services,
        room: &str,
        members: Vec<crate::rooms::RemoteMember>,
    ) {
        let mut st = self.lock();
        let updates = st.table.set_remote_members(room, members);
        deliver(services, &st, updates);
    }

    /// Brings members' state changes to their rooms: the sender ids every
    /// shard's fan-out bound since the last call, and the mutes reported
    /// ([`RoomService::member_state`]). Each changed room's local members
    /// get one RoomUpdate, and a bridged room is announced again. The relay
    /// calls it four times a second ([`crate::endpoint::ROSTER_INTERVAL`]), so a member who
    /// toggles mute as fast as it can costs its room four updates a second.
    pub fn flush_member_state(&self, services: &Services) {
        let mut bound = Vec::new();
        for shard in &services.media.shards {
            shard.take_bindings(&mut bound);
        }
        let mut st = self.lock();
        for b in bound {
            st.table.bind_sender(b.peer, b.sender);
        }
        for room in st.table.take_changed() {
            announce(services, &st, &room);
        }
    }

    /// Session `handle` said (`member_state`) whether its microphone is
    /// muted and whether it records the call; its room hears at the next
    /// [`RoomService::flush_member_state`].
    pub fn member_state(&self, handle: u32, muted: bool, recording: bool) -> bool {
        self.lock().table.set_state(handle, muted, recording)
    }

    /// `room` became bridged while it may already have members (a
    /// cross-relay call's room, answered after its local party joined):
    /// gives it its federation member as a join would, and returns its
    /// local members for the federation to announce.
    pub fn federate_existing(
        &self,
        services: &Services,
        room: &str,
    ) -> Vec<wzp_proto::federation::FederatedParticipant> {
        let mut st = self.lock();
        let participants = st.table.local_participants(room);
        if participants.is_empty() {
            return participants;
        }
        if let Some((member, slot, shard)) = st.table.add_relay_member(room) {
            membership(
                services,
                shard,
                SfuCommand::JoinRelay {
                    peer: member,
                    room: slot,
                },
            );
            services.federation.room_member(room, Some(member), shard);
            // Its members learn it is bridged now.
            announce(services, &st, room);
        }
        participants
    }

    /// `room` is no longer bridged (a reloaded config dropped it): its
    /// federation member leaves the fan-out, and its local members get a
    /// RoomUpdate without the remote ones.
    pub fn unfederate(&self, services: &Services, room: &str) {
        let mut st = self.lock();
        if let Some((member, shard)) = st.table.remove_relay_member(room) {
            membership(services, shard, SfuCommand::Leave { peer: member });
            services.federation.room_member(room, None, shard);
        }
        let updates = st.table.set_remote_members(room, Vec::new());
        deliver(services, &st, updates);
    }

    /// A handle for a federation link's media ([`RoomTable::alloc_link_handle`]).
    pub fn alloc_link_handle(&self) -> Option<u32> {
        self.lock().table.alloc_link_handle()
    }

    /// Returns a link handle.
    pub fn release_link_handle(&self, handle: u32) {
        self.lock().table.release_link_handle(handle);
    }

    /// Allows exactly `fingerprints` into call room `room`.
    pub fn allow_call(&self, room: &str, fingerprints: Vec<wzp_proto::Fingerprint>) {
        self.lock().table.calls.allow(room, fingerprints);
    }

    /// Ends call room `room`: nobody new is admitted, and its members'
    /// connections are closed with `code` and `reason`.
    pub fn close_call(&self, room: &str, code: CloseCode, reason: &str) {
        let mut st = self.lock();
        st.table.calls.remove(room);
        Self::close_members(&st, room, |_| true, code, reason);
    }

    /// Call room `room` admits exactly `fingerprints` from now on; a member
    /// no longer among them has its connection closed with `code` and
    /// `reason` (the others stay).
    pub fn restrict_call(
        &self,
        room: &str,
        fingerprints: Vec<wzp_proto::Fingerprint>,
        code: CloseCode,
        reason: &str,
    ) {
        let mut st = self.lock();
        let admitted = fingerprints.clone();
        st.table.calls.allow(room, fingerprints);
        Self::close_members(&st, room, |fp| !admitted.contains(fp), code, reason);
    }

    fn close_members(
        st: &RoomState,
        room: &str,
        which: impl Fn(&wzp_proto::Fingerprint) -> bool,
        code: CloseCode,
        reason: &str,
    ) {
        let members: Vec<u32> = st
            .table
            .sessions()
            .filter(|s| s.room == room && which(&s.fingerprint))
            .map(|s| s.handle)
            .collect();
        for h in members {
            if let Some(io) = st.io.get(&h) {
                quic::close(&io.conn, code, reason.as_bytes());
            }
        }
    }

    /// A reload's room-size limits and debug tap filter
    /// ([`RoomTable::set_limits`]): the rooms whose tap flag changed log
    /// (or stop logging) their members' packets both ways from now on.
    pub fn set_limits(
        &self,
        services: &Services,
        call_room_size: usize,
        max_room_size: usize,
        tap: Option<String>,
    ) {
        let mut st = self.lock();
        let flipped = st.table.set_limits(call_room_size, max_room_size, tap);
        for (handle, room, tapped) in flipped {
            let (Some(io), Some(session)) = (st.io.get(&handle), st.table.session(handle)) else {
                continue;
            };
            let Some(shard) = st.table.shard_of_room(&room) else {
                continue;
            };
            // Re-adding a peer replaces its egress entry (same connection
            // and counters, the observer as the flag now says).
            services.media.shard(shard).add_egress(
                handle,
                EgressPeer {
                    conn: io.conn.clone(),
                    stats: session.stats.clone(),
                    observer: tapped.then(|| tap_out(&room, handle)),
                },
            );
        }
    }

    /// Rooms with members.
    pub fn room_count(&self) -> usize {
        self.lock().table.room_count()
    }

    /// What `/rooms` shows.
    pub fn rooms_view(&self) -> Vec<RoomView> {
        self.lock().table.rooms_view()
    }

    /// What `/sessions` shows.
    pub fn sessions_view(&self) -> Vec<SessionView> {
        let st = self.lock();
        let mut v: Vec<SessionView> = st
            .table
            .sessions()
            .map(|s| {
                let io = st.io.get(&s.handle);
                let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let stats = &s.stats;
                SessionView {
                    handle: s.handle,
                    room: s.room.clone(),
                    fingerprint: s.fingerprint.to_string(),
                    alias: s.alias.clone(),
                    // Where the connection is now: QUIC follows a client
                    // whose address changes (a NAT that maps it anew, a
                    // move between networks).
                    remote: io
                        .map_or(s.remote, |io| io.conn.remote_address())
                        .to_string(),
                    joined_from: s.remote.to_string(),
                    joined_unix_ms: s.joined_unix_ms,
                    max_datagram_size: io.and_then(|io| quic::max_datagram_size(&io.conn)),
                    rtt_ms: io.map_or(0.0, |io| io.conn.rtt().as_secs_f64() * 1e3),
                    packets_in: ld(&stats.packets_in),
                    bytes_in: ld(&stats.bytes_in),
                    packets_out: ld(&stats.packets_out),
                    bytes_out: ld(&stats.bytes_out),
                    dropped_in: ld(&stats.dropped_in),
                    dropped_out: ld(&stats.dropped_out),
                    client_reports: ld(&s.report.reports),
                    frames_decoded: ld(&s.report.frames_decoded),
                    dred_reconstructions: ld(&s.report.dred_reconstructions),
                    lbrr_recoveries: ld(&s.report.lbrr_recoveries),
                    classical_plc_invocations: ld(&s.report.classical_plc_invocations),
                    reported_loss_pct: ld(&s.report.loss_centipct) as f64 / 100.0,
                    reported_rtt_ms: ld(&s.report.rtt_ms),
                    reported_jitter_ms: ld(&s.report.jitter_ms),
                    media_path: if s.report.direct.load(Ordering::Relaxed) {
                        "direct"
                    } else {
                        "relay"
                    },
                }
            })
            .collect();
        v.sort_by_key(|s| s.handle);
        v
    }
}

#[derive(Serialize, Debug, Clone)]
pub struct SessionView {
    pub handle: u32,
    pub room: String,
    pub fingerprint: String,
    pub alias: Option<String>,
    /// The client's address now.
    pub remote: String,
    /// Its address when it joined.
    pub joined_from: String,
    pub joined_unix_ms: u64,
    /// Largest datagram the path takes now (profile choice must fit it).
    pub max_datagram_size: Option<usize>,
    pub rtt_ms: f64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub dropped_in: u64,
    pub dropped_out: u64,
    /// Reports the client sent (`loss_recovery_update`, `quality_update`).
    pub client_reports: u64,
    pub frames_decoded: u64,
    pub dred_reconstructions: u64,
    pub lbrr_recoveries: u64,
    pub classical_plc_invocations: u64,
    /// Loss the client saw over its last report interval.
    pub reported_loss_pct: f64,
    pub reported_rtt_ms: u64,
    /// The client's receive jitter buffer target (its jitter estimate).
    pub reported_jitter_ms: u64,
    /// Where the client says its media goes: `relay`, or `direct` while a
    /// direct call's media goes straight to the peer (this relay then
    /// carries next to nothing for it).
    pub media_path: &'static str,
}

/// Tells `room`'s members who is in it (a room update each) and, for a
/// global room, the federation its local members; returns how many members
/// were told. What a join, a leave and the roster tick each say.
fn announce(services: &Services, st: &RoomState, room: &str) -> usize {
    let updates = st.table.room_updates(room);
    let told = updates.len();
    deliver(services, st, updates);
    if services.federation.is_global(room) {
        services
            .federation
            .local_room(room, st.table.local_participants(room));
    }
    told
}

fn deliver(services: &Services, st: &RoomState, updates: Updates) {
    for (handle, msg) in updates {
        let Some(io) = st.io.get(&handle) else {
            continue;
        };
        if io.signal.try_send(msg).is_err() {
            inc(&services.counters.signal_queue_full);
        }
    }
}

/// Hello then Join on the first bidirectional stream.
async fn read_join(
    services: &Services,
    reader: &mut SignalReader,
    room: &str,
    room_nonce: Option<&[u8; JOIN_NONCE_LEN]>,
) -> Result<Join, Refusal> {
    let bad = |m: String| Refusal::new(CloseCode::BadJoin, HangupReason::Error, m);
    let mut next = async |what: &str| -> Result<Decoded, Refusal> {
        match reader.next().await {
            Ok(Some(SignalFrame::Message(d))) => Ok(d),
            Ok(Some(SignalFrame::Malformed(e))) => {
                inc(&services.counters.signal_malformed);
                Err(bad(format!("{what} is malformed: {e}")))
            }
            Ok(None) => Err(bad(format!("signal stream closed before {what}"))),
            Err(e) => Err(bad(format!("reading {what}: {e}"))),
        }
    };
    let first = next("Hello").await?;
    negotiate_version(&first).map_err(|e| bad(e.to_string()))?;
    let j = match next("Join").await? {
        Decoded::Message(SignalMessage::Join(j)) => *j,
        Decoded::Message(other) => {
            return Err(bad(format!(
                "expected Join after Hello, got {}",
                other.type_name()
            )))
        }
        Decoded::Unknown { type_name } => {
            return Err(bad(format!("expected Join after Hello, got {type_name}")))
        }
    };
    j.verify(
        room,
        &services.tls_fingerprint,
        now_ms(),
        services.live.join_max_skew_s.load(Ordering::Relaxed),
    )
    .map_err(|e| bad(e.to_string()))?;
    if let Some(nonce) = room_nonce {
        j.verify_room_proof(room, nonce, &services.tls_fingerprint)
            .map_err(|e| not_authorized_room(&e.to_string()))?;
    }
    Ok(j)
}

/// The refusal of a Join to a media room without a valid room proof.
fn not_authorized_room(why: &str) -> Refusal {
    Refusal::new(
        CloseCode::NotAuthorized,
        HangupReason::Error,
        format!("{why}; this room needs its secret: join with the room's name and --room-secret"),
    )
}

/// A room connection from handshake to leaving. `call`: the SNI named a
/// `call-*` room (allow-listed, at most `call_room_size` members).
pub async fn serve_room(
    services: Arc<Services>,
    conn: quinn::Connection,
    room: String,
    call: bool,
) {
    // One deadline from the handshake for the stream, Hello and Join.
    let join_timeout = Duration::from_millis(services.live.join_timeout_ms.load(Ordering::Relaxed));
    let deadline = tokio::time::Instant::now() + join_timeout;
    let remote = conn.remote_address();
    // Media rooms admit only holders of the room secret: the Join carries
    // a proof over this connection's TLS exporter nonce. Call rooms are
    // admitted by the registry's ACL instead.
    let room_nonce = if call {
        None
    } else {
        match quic::join_nonce(&conn) {
            Some(n) => Some(n),
            None => {
                let r = Refusal::new(
                    CloseCode::Protocol,
                    HangupReason::Error,
                    "the TLS session exports no join nonce; update the client",
                );
                refuse(&services, &conn, None, &r, Some(&room)).await;
                return;
            }
        }
    };
    let (mut send, recv) = match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok(s)) => s,
        _ => {
            let r = Refusal::new(
                CloseCode::BadJoin,
                HangupReason::Timeout,
                "no signal stream: open a bidirectional stream and send Hello and Join",
            );
            refuse(&services, &conn, None, &r, Some(&room)).await;
            return;
        }
    };
    let mut reader = SignalReader::new(recv, MAX_CLIENT_FRAME);
    let mut hello = SignalMessage::hello(Some(format!("wzp-relay {}", env!("CARGO_PKG_VERSION"))));
    if let SignalMessage::Hello { features, .. } = &mut hello {
        features.push(wzp_proto::signal::FEATURE_MEMBER_STATE.to_string());
        features.push(wzp_proto::signal::FEATURE_RECORDING.to_string());
        features.push(wzp_proto::signal::FEATURE_BRIDGED.to_string());
    }
    let _ = signal_stream::write_message(&mut send, &hello).await;
    let j = match tokio::time::timeout_at(
        deadline,
        read_join(&services, &mut reader, &room, room_nonce.as_ref()),
    )
    .await
    {
        Ok(Ok(j)) => j,
        Ok(Err(r)) => {
            refuse(&services, &conn, Some(&mut send), &r, Some(&room)).await;
            return;
        }
        Err(_) => {
            let r = Refusal::new(
                CloseCode::BadJoin,
                HangupReason::Timeout,
                format!("no Hello and Join within {} ms", join_timeout.as_millis()),
            );
            refuse(&services, &conn, Some(&mut send), &r, Some(&room)).await;
            return;
        }
    };
    let fingerprint = j.fingerprint();
    let stats = Arc::new(PeerIoStats::default());
    let report = Arc::new(ClientReport::default());
    let (signal_tx, mut signal_rx) = mpsc::channel::<SignalMessage>(SIGNAL_QUEUE);

    // Admission, the egress route and the fan-out Join happen under the
    // rooms lock, so membership commands reach the ring in the order the
    // table changed (a reused slot never sees its old Leave after its Join).
    let admitted: Result<RoomHandle, Refusal> = {
        let mut st = services.rooms.lock();
        match st.table.admit(Admit {
            room: room.clone(),
            call,
            fingerprint,
            alias: j.alias.clone(),
            remote,
            joined_unix_ms: now_ms(),
            stats: stats.clone(),
            report: report.clone(),
        }) {
            Ok(h) => {
                st.io.insert(
                    h.handle,
                    SessionIo {
                        conn: conn.clone(),
                        signal: signal_tx.clone(),
                    },
                );
                let observer = h
                    .tapped
                    .load(Ordering::Relaxed)
                    .then(|| tap_out(&room, h.handle));
                let shard = services.media.shard(h.shard);
                shard.add_egress(
                    h.handle,
                    EgressPeer {
                        conn: conn.clone(),
                        stats: stats.clone(),
                        observer,
                    },
                );
                membership(
                    &services,
                    h.shard,
                    SfuCommand::Join {
                        peer: h.handle,
                        room: h.slot,
                    },
                );
                if services.federation.is_global(&room) {
                    if let Some((member, slot, shard)) = st.table.add_relay_member(&room) {
                        membership(
                            &services,
                            shard,
                            SfuCommand::JoinRelay {
                                peer: member,
                                room: slot,
                            },
                        );
                        services.federation.room_member(&room, Some(member), shard);
                    }
                }
                // After the federation member: the update says the room is
                // bridged.
                announce(&services, &st, &room);
                Ok(h)
            }
            Err(r) => Err(r),
        }
    };
    let h = match admitted {
        Ok(h) => h,
        Err(r) => {
            refuse(&services, &conn, Some(&mut send), &r, Some(&room)).await;
            return;
        }
    };
    inc(&services.counters.joins);
    let members = h.size.load(Ordering::Relaxed);
    tracing::info!(%remote, room, handle = h.handle, %fingerprint, members, "joined");
    services.event(Event {
        ts_ms: now_ms(),
        event: "join",
        room: Some(&room),
        handle: Some(h.handle),
        fingerprint: Some(fingerprint.to_string()),
        alias: j.alias.as_deref(),
        remote: Some(remote.to_string()),
        members: Some(members),
        ..Default::default()
    });

    // Signal writer: RoomUpdates, Pongs.
    let writer = tokio::spawn(async move {
        while let Some(msg) = signal_rx.recv().await {
            if signal_stream::write_message(&mut send, &msg).await.is_err() {
                break;
            }
        }
    });

    // Signal reader: the client may ping, report quality, or hang up.
    let reader_task = {
        let services = services.clone();
        let conn = conn.clone();
        let signal_tx = signal_tx.clone();
        let handle = h.handle;
        tokio::spawn(async move {
            read_signals(services, conn, reader, signal_tx, report, handle).await
        })
    };
    drop(signal_tx);

    let tapped = h.tapped;
    let room_size = h.size.clone();
    let tap_room = room.clone();
    let handle = h.handle;
    let why = quic::pump_datagrams_in(
        conn.clone(),
        handle,
        services.media.shard(h.shard).feed().clone(),
        stats,
        move |bytes| {
            if tapped.load(Ordering::Relaxed) {
                let fanout = room_size.load(Ordering::Relaxed).saturating_sub(1);
                crate::media::tap("in", &tap_room, handle, bytes, Some(fanout));
            }
        },
    )
    .await;
    reader_task.abort();
    writer.abort();

    let left = {
        let mut st = services.rooms.lock();
        let left = st.table.leave(handle);
        st.io.remove(&handle);
        if left.is_some() {
            membership(&services, h.shard, SfuCommand::Leave { peer: handle });
            services.media.shard(h.shard).remove_egress(handle);
            let members = announce(&services, &st, &room);
            for (member, shard) in st.table.take_orphaned_relay_members() {
                membership(&services, shard, SfuCommand::Leave { peer: member });
                services.federation.room_member(&room, None, shard);
            }
            Some(members)
        } else {
            None
        }
    };
    if let Some(members) = left {
        inc(&services.counters.leaves);
        tracing::info!(%remote, room, handle, %fingerprint, reason = %why, "left");
        services.event(Event {
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
    }
}

fn membership(services: &Services, shard: usize, cmd: SfuCommand) {
    if services.media.shard(shard).membership(cmd).is_err() {
        // Only when the packet thread has stalled for thousands of
        // membership changes. A lost Join refuses nothing (the client just
        // hears nobody); a lost Leave leaves a stale entry that the slot's
        // next Join replaces.
        inc(&services.counters.sfu_ring_full);
        tracing::error!(?cmd, "sfu membership ring full; command lost");
    }
}

async fn read_signals(
    services: Arc<Services>,
    conn: quinn::Connection,
    mut reader: SignalReader,
    signal_tx: mpsc::Sender<SignalMessage>,
    report: Arc<ClientReport>,
    handle: u32,
) {
    loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            // The client finished its stream: media goes on.
            Ok(None) => return,
            Err(SignalStreamError::TooLarge { len, max }) => {
                inc(&services.counters.signal_malformed);
                inc(&services.counters.refused_protocol);
                let msg = format!("signal frame of {len} bytes exceeds {max}");
                quic::close(&conn, CloseCode::Protocol, msg.as_bytes());
                return;
            }
            Err(_) => return,
        };
        inc(&services.counters.signal_frames);
        match frame {
            SignalFrame::Message(Decoded::Message(SignalMessage::Ping { timestamp_ms })) => {
                if signal_tx
                    .try_send(SignalMessage::Pong { timestamp_ms })
                    .is_err()
                {
                    inc(&services.counters.signal_queue_full);
                }
            }
            SignalFrame::Message(Decoded::Message(SignalMessage::Hangup { .. })) => {
                quic::close(&conn, CloseCode::Normal, b"hangup");
                return;
            }
            SignalFrame::Message(Decoded::Message(SignalMessage::LossRecoveryUpdate {
                dred_reconstructions,
                classical_plc_invocations,
                frames_decoded,
                lbrr_recoveries,
            })) => {
                let set = |a: &std::sync::atomic::AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
                set(&report.frames_decoded, frames_decoded);
                set(&report.dred_reconstructions, dred_reconstructions);
                set(&report.lbrr_recoveries, lbrr_recoveries);
                set(&report.classical_plc_invocations, classical_plc_invocations);
                report.reports.fetch_add(1, Ordering::Relaxed);
            }
            SignalFrame::Message(Decoded::Message(SignalMessage::QualityUpdate {
                loss_pct,
                rtt_ms,
                jitter_ms,
                media_path,
                ..
            })) => {
                report
                    .direct
                    .store(media_path.as_deref() == Some("direct"), Ordering::Relaxed);
                let loss = if loss_pct.is_finite() {
                    (loss_pct.clamp(0.0, 100.0) * 100.0).round() as u64
                } else {
                    0
                };
                report.loss_centipct.store(loss, Ordering::Relaxed);
                report.rtt_ms.store(rtt_ms as u64, Ordering::Relaxed);
                report.jitter_ms.store(jitter_ms as u64, Ordering::Relaxed);
                report.reports.fetch_add(1, Ordering::Relaxed);
            }
            SignalFrame::Message(Decoded::Message(SignalMessage::MemberState {
                muted,
                recording,
            })) => {
                inc(&services.counters.member_state);
                services.rooms.member_state(handle, muted, recording);
            }
            SignalFrame::Message(Decoded::Message(SignalMessage::Join(_))) => {
                inc(&services.counters.signal_unknown);
            }
            SignalFrame::Message(Decoded::Message(m)) => {
                tracing::debug!(remote = %conn.remote_address(), kind = m.type_name(), "signal message ignored on a room stream");
            }
            SignalFrame::Message(Decoded::Unknown { type_name }) => {
                inc(&services.counters.signal_unknown);
                tracing::debug!(%type_name, "unknown signal message");
            }
            SignalFrame::Malformed(e) => {
                inc(&services.counters.signal_malformed);
                tracing::debug!(remote = %conn.remote_address(), "malformed signal frame: {e}");
            }
        }
    }
}

/// The debug tap's observer of what goes out to `handle` of `room`.
fn tap_out(room: &str, handle: u32) -> Observer {
    let room = room.to_string();
    Arc::new(move |bytes: &[u8]| crate::media::tap("out", &room, handle, bytes, None))
}
