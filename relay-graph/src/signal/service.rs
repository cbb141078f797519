//! The `_signal` service's shell: one task owns the sans-IO [`SignalHub`]
//! and its timer; each connection has a reader task (frames in) and a
//! writer task (messages out). Everything the hub decides comes back as
//! [`Action`]s, carried out here: send, close, open or close a call room.
//!
//! ```text
//!  conn reader ──Input──┐                      ┌──► conn writer (bounded queue) ──Drained──┐
//!  conn reader ──Input──┼──► hub task: SignalHub ┤──► close connection                       │
//!  HTTP views ──Query───┘      (one timer)       └──► rooms: open / close call room          │
//!        ▲────────────────────────────────────────────────────────────────────────────────────┘
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use wzp_proto::close::CloseCode;
use wzp_proto::signal::SignalMessage;
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader, SignalStreamError};

use super::{Action, ConnId, Event, Frame, HubCounters, Input, SignalConfig, SignalHub};
use crate::endpoint::Services;
use crate::observe::events::{now_ms, Event as LogEvent};

/// Largest signal frame read from a client on `_signal`.
pub const MAX_SIGNAL_FRAME: usize = 64 * 1024;
/// Inputs queued to the hub task.
const HUB_QUEUE: usize = 4096;

enum Cmd {
    Attach {
        conn: ConnId,
        connection: quinn::Connection,
        writer: mpsc::Sender<SignalMessage>,
    },
    Input(Input),
    Query(oneshot::Sender<SignalViews>),
    /// A reload's ringing timeout ([`SignalHub::set_ringing_timeout`]).
    RingingTimeout(Duration),
}

/// What `/presence` and `/calls` show, and the hub's counters.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SignalViews {
    pub presence: Vec<PresenceView>,
    pub calls: Vec<CallView>,
    #[serde(skip)]
    pub counters: HubCounters,
    #[serde(skip)]
    pub transitions: Vec<(String, u64)>,
    /// Datagrams on the mapping port that were not probes.
    #[serde(skip)]
    pub mapping_not_probes: u64,
    /// Probes dropped over the rate.
    #[serde(skip)]
    pub mapping_rate_limited: u64,
    /// Probes with a token of no open connection, dropped before the hub.
    #[serde(skip)]
    pub mapping_unknown_tokens: u64,
    /// The voice messages kept.
    #[serde(skip)]
    pub mail: crate::voicemail::MailView,
}

#[derive(Clone, Debug, Serialize)]
pub struct PresenceView {
    pub fingerprint: String,
    pub alias: Option<String>,
    /// Unix ms when it registered.
    pub since: u64,
    pub observed_addr: String,
    /// Which of the person's devices (hex), when the client said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// What its NAT mapping test showed: `"independent"` (one mapping for
    /// every destination), `"per_destination"`, or `"untested"`.
    pub mapping: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct CallView {
    pub call_id: String,
    pub state: &'static str,
    pub room: String,
    pub caller: String,
    pub callee: String,
    /// Unix ms when it was offered (on a relay between: when it first
    /// carried the call).
    pub since: u64,
    /// `"between"` on a relay that carries a cross-relay call for two
    /// others; absent where a party is on this relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// For a cross-relay call: the linked relay (its label) towards the
    /// caller, and towards the callee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toward_caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toward_callee: Option<String>,
    /// A cross-relay call whose path lost a link, while this relay looks
    /// for (the caller's) or waits for (the callee's) another.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub path_lost: bool,
    /// While it rings: how many of the callee's devices on this relay ring
    /// (the first to answer takes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringing_devices: Option<usize>,
    /// The callee is in another call here and this one rings there as a
    /// waiting call.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
    /// A party took a waiting call keeping this one, on hold: it is in two
    /// calls until one ends.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// The callee is in another call on this relay: this one rings on the
    /// callee's other relays only (the caller hears busy if none answers).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub busy_here: bool,
    /// A call ringing the callee on several relays: the relays (labels, or
    /// ids) this relay's forks of it go to (one row per fork on a relay
    /// between).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub forks: Vec<String>,
    /// Of those, the forks whose relay answered `busy` (every device of the
    /// callee there is in another call): nothing rings there, and each is
    /// ended with the call's outcome.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub busy_forks: Vec<String>,
}

impl CallView {
    /// Adds what the federation says of the call (neighbours, a lost path);
    /// rows for the calls it carries between two other relays.
    pub fn with_legs(
        mut calls: Vec<CallView>,
        legs: Vec<crate::federation::shell::LegView>,
    ) -> Vec<CallView> {
        let now = Instant::now();
        for l in legs {
            if let Some(c) = calls.iter_mut().find(|c| c.call_id == l.call_id) {
                if let Some(f) = l.fork {
                    if l.busy {
                        c.busy_forks.push(f.clone());
                    }
                    c.forks.push(f);
                    if !l.answered && c.toward_callee.is_some() {
                        // The answered fork, or the first, names the way.
                        continue;
                    }
                }
                c.toward_caller = l.toward_caller;
                c.toward_callee = l.toward_callee;
                c.path_lost = l.path_lost;
                continue;
            }
            if !l.between {
                continue;
            }
            calls.push(CallView {
                room: format!("{}{}", wzp_proto::sni::CALL_PREFIX, l.call_id),
                call_id: l.call_id,
                state: if l.answered { "active" } else { "pending" },
                caller: l.caller.to_string(),
                callee: l.callee.to_string(),
                since: unix_ms_at(l.since, now),
                role: Some("between"),
                toward_caller: l.toward_caller,
                toward_callee: l.toward_callee,
                path_lost: l.path_lost,
                ringing_devices: None,
                waiting: false,
                kept: false,
                busy_here: false,
                busy_forks: l.fork.clone().filter(|_| l.busy).into_iter().collect(),
                forks: l.fork.into_iter().collect(),
            });
        }
        calls
    }
}

/// The handle the endpoint and HTTP use.
pub struct SignalService {
    tx: mpsc::Sender<Cmd>,
    next_conn: AtomicU64,
    not_probes: AtomicU64,
    limited_probes: AtomicU64,
    unknown_tokens: AtomicU64,
    /// The mapping-probe tokens of the connections open now: the mapping
    /// port drops a probe with any other before it costs the hub anything
    /// (or a share of the rate).
    tokens: std::sync::Mutex<std::collections::HashSet<[u8; wzp_proto::mapping::TOKEN_LEN]>>,
}

impl SignalService {
    /// Starts the hub task. `services` is weak: the hub task ends with the
    /// relay.
    pub fn start(
        config: SignalConfig,
        services: Weak<Services>,
        disk: Option<(
            crate::voicemail::disk::MailDisk,
            crate::voicemail::disk::Restored,
        )>,
    ) -> SignalService {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let mut hub = SignalHub::new(config);
        let disk = disk.map(|(disk, restored)| {
            for why in &restored.skipped {
                tracing::warn!("voice_message_dir: left out {why}");
            }
            let (keys, messages) = hub.restore_mail(restored, Instant::now());
            tracing::info!(
                keys,
                messages,
                "voice messages read back from voice_message_dir"
            );
            disk.apply(hub.take_mail_changes());
            disk
        });
        tokio::spawn(run_hub(hub, rx, services, disk));
        SignalService {
            tx,
            next_conn: AtomicU64::new(1),
            not_probes: AtomicU64::new(0),
            limited_probes: AtomicU64::new(0),
            unknown_tokens: AtomicU64::new(0),
            tokens: Default::default(),
        }
    }

    /// A step of a cross-relay call from the federation (never blocks; a
    /// full queue drops it and the call times out).
    pub fn federated(&self, signal: wzp_proto::federation::CallSignal) {
        let call_id = signal.call_id.clone();
        if self
            .tx
            .try_send(Cmd::Input(Input::Federated(signal)))
            .is_err()
        {
            tracing::warn!(
                call_id,
                "signal queue full; a federated call signal is dropped"
            );
        }
    }

    /// A voice message's step from the federation (never blocks; a full
    /// queue drops it, and the client's wait for it ends the message).
    pub fn federated_mail(&self, signal: wzp_proto::federation::MailSignal) {
        let kind = signal.event.kind();
        if self
            .tx
            .try_send(Cmd::Input(Input::FederatedMail(signal)))
            .is_err()
        {
            tracing::warn!(kind, "signal queue full; a voice-message step is dropped");
        }
    }

    /// `who` is on another relay now, along `path` (never blocks; a full
    /// queue drops it, and messages kept here for them wait for the next).
    pub fn reachable(
        &self,
        who: wzp_proto::Fingerprint,
        path: Vec<wzp_proto::federation::RelayId>,
    ) {
        let _ = self.tx.try_send(Cmd::Input(Input::Reachable { who, path }));
    }

    /// A mapping probe from `from` (never blocks; a full queue drops it,
    /// and the client, hearing nothing, sends another or goes without).
    pub fn mapping_probe(&self, token: [u8; wzp_proto::mapping::TOKEN_LEN], from: SocketAddr) {
        let _ = self
            .tx
            .try_send(Cmd::Input(Input::MappingProbe { token, from }));
    }

    /// A datagram on the mapping port that is not a probe (counted).
    pub fn mapping_not_a_probe(&self) {
        self.not_probes.fetch_add(1, Ordering::Relaxed);
    }

    /// Datagrams on the mapping port that were not probes.
    pub fn not_probes(&self) -> u64 {
        self.not_probes.load(Ordering::Relaxed)
    }

    /// Whether `token` is an open connection's; a probe with another is
    /// counted and dropped here.
    pub fn mapping_token_known(&self, token: &[u8; wzp_proto::mapping::TOKEN_LEN]) -> bool {
        let known = self.tokens.lock().is_ok_and(|t| t.contains(token));
        if !known {
            self.unknown_tokens.fetch_add(1, Ordering::Relaxed);
        }
        known
    }

    fn token_set(&self, token: [u8; wzp_proto::mapping::TOKEN_LEN], open: bool) {
        if let Ok(mut t) = self.tokens.lock() {
            if open {
                t.insert(token);
            } else {
                t.remove(&token);
            }
        }
    }

    /// A probe dropped over [`super::MAPPING_PROBES_PER_S`] (counted).
    pub fn mapping_rate_limited(&self) {
        self.limited_probes.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls offered from now on ring at most `d` (a reload); calls ringing
    /// now keep the deadline they were given.
    pub async fn set_ringing_timeout(&self, d: Duration) {
        let _ = self.tx.send(Cmd::RingingTimeout(d)).await;
    }

    /// The hub's views (presence, calls, counters).
    pub async fn views(&self) -> SignalViews {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Query(tx)).await.is_err() {
            return SignalViews::default();
        }
        let mut v = rx.await.unwrap_or_default();
        v.mapping_not_probes = self.not_probes();
        v.mapping_rate_limited = self.limited_probes.load(Ordering::Relaxed);
        v.mapping_unknown_tokens = self.unknown_tokens.load(Ordering::Relaxed);
        v
    }
}

fn unix_ms_at(t: Instant, now: Instant) -> u64 {
    let ago = now.saturating_duration_since(t);
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|s| s.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run_hub(
    mut hub: SignalHub,
    mut rx: mpsc::Receiver<Cmd>,
    services: Weak<Services>,
    disk: Option<crate::voicemail::disk::MailDisk>,
) {
    let mut conns: HashMap<ConnId, (quinn::Connection, mpsc::Sender<SignalMessage>)> =
        HashMap::new();
    loop {
        let deadline = hub.poll_timeout();
        let cmd = tokio::select! {
            c = rx.recv() => match c { Some(c) => Some(c), None => return },
            _ = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        let now = Instant::now();
        match cmd {
            None => hub.handle_timeout(now),
            Some(Cmd::Attach {
                conn,
                connection,
                writer,
            }) => {
                conns.insert(conn, (connection, writer));
            }
            Some(Cmd::Input(input)) => {
                if let Input::Disconnected { conn } = &input {
                    conns.remove(conn);
                }
                hub.handle(input, now);
            }
            Some(Cmd::RingingTimeout(d)) => hub.set_ringing_timeout(d),
            Some(Cmd::Query(reply)) => {
                let presence = hub
                    .presence()
                    .iter()
                    .map(|(fp, p)| PresenceView {
                        fingerprint: fp.to_string(),
                        alias: p.alias.clone(),
                        since: unix_ms_at(p.since, now),
                        observed_addr: p.observed_addr.to_string(),
                        device: p.device.map(hex::encode),
                        mapping: match hub.session(p.conn).map(|s| s.mapping) {
                            Some(wzp_proto::mapping::Mapping::Independent) => "independent",
                            Some(wzp_proto::mapping::Mapping::Dependent) => "per_destination",
                            _ => "untested",
                        },
                    })
                    .collect();
                let calls = hub
                    .calls()
                    .iter()
                    .map(|c| CallView {
                        call_id: c.id.clone(),
                        state: c.state.label(),
                        room: c.room.clone(),
                        caller: c.caller.to_string(),
                        callee: c.callee.to_string(),
                        since: unix_ms_at(c.since, now),
                        role: None,
                        toward_caller: None,
                        toward_callee: None,
                        path_lost: false,
                        ringing_devices: (c.state == crate::calls::CallState::Ringing
                            && !c.is_federated(crate::calls::Party::Callee))
                        .then(|| 1 + c.callee_forks.len()),
                        waiting: c.waiting,
                        kept: c.kept,
                        busy_here: c.busy_here.is_some(),
                        forks: Vec::new(),
                        busy_forks: Vec::new(),
                    })
                    .collect();
                use crate::calls::CallState as S;
                let states = [S::Pending, S::Ringing, S::Active, S::Ended];
                let transitions = states
                    .iter()
                    .flat_map(|a| states.iter().map(move |b| (*a, *b)))
                    .map(|(a, b)| {
                        (
                            format!("from=\"{}\",to=\"{}\"", a.label(), b.label()),
                            hub.calls().transitions(a, b),
                        )
                    })
                    .filter(|(_, n)| *n > 0)
                    .collect();
                let _ = reply.send(SignalViews {
                    presence,
                    calls,
                    counters: hub.counters().clone(),
                    transitions,
                    mapping_not_probes: 0,
                    mapping_rate_limited: 0,
                    mapping_unknown_tokens: 0,
                    mail: hub.mail().view(),
                });
            }
        }
        let Some(services) = services.upgrade() else {
            return;
        };
        // The disk first: a message said stored is on it.
        if let Some(d) = &disk {
            d.apply(hub.take_mail_changes());
        }
        while let Some(action) = hub.poll_action() {
            apply(&services, &mut conns, action);
        }
    }
}

fn apply(
    services: &Services,
    conns: &mut HashMap<ConnId, (quinn::Connection, mpsc::Sender<SignalMessage>)>,
    action: Action,
) {
    match action {
        Action::Send { conn, msg } => {
            if let Some((_, w)) = conns.get(&conn) {
                // The hub bounds what a connection may have unwritten
                // (max_outbound, from Drained reports); this queue is larger.
                let _ = w.try_send(msg);
            }
        }
        Action::Close { conn, code, reason } => {
            if let Some((c, _)) = conns.remove(&conn) {
                quic::close(&c, code, reason.as_bytes());
            }
        }
        Action::CallRoomOpened { room, fingerprints } => {
            services.rooms.allow_call(&room, fingerprints.to_vec());
        }
        Action::Federate(signal) => services.federation.call_signal(signal),
        Action::FederateFork(signal) => services.federation.call_fork(signal, true),
        Action::FederateForkElsewhere(signal) => services.federation.call_fork(signal, false),
        Action::DevicesRingHere { call_id } => services.federation.devices_ring_here(call_id),
        Action::FederateMail(signal) => services.federation.mail(signal),
        Action::CallRoomClosed { room } => {
            services
                .rooms
                .close_call(&room, CloseCode::Normal, "the call ended");
        }
        Action::Event(ev) => log_event(services, ev),
    }
}

fn log_event(services: &Services, ev: Event) {
    match ev {
        Event::Registered {
            conn,
            fingerprint,
            replaced,
            devices,
        } => {
            tracing::info!(%conn, %fingerprint, replaced = ?replaced.map(|c| c.0), devices, "registered");
            services.federation.local_presence(fingerprint, true);
            services.event(LogEvent {
                ts_ms: now_ms(),
                event: "registered",
                fingerprint: Some(fingerprint.to_string()),
                ..Default::default()
            });
        }
        Event::Unregistered {
            conn,
            fingerprint,
            offline,
        } => {
            tracing::info!(%conn, %fingerprint, offline, "unregistered");
            if offline {
                services.federation.local_presence(fingerprint, false);
            }
            services.event(LogEvent {
                ts_ms: now_ms(),
                event: "unregistered",
                fingerprint: Some(fingerprint.to_string()),
                ..Default::default()
            });
        }
        Event::Call {
            call_id,
            from,
            to,
            reason,
        } => {
            tracing::info!(
                call_id,
                from = from.label(),
                to = to.label(),
                reason,
                "call"
            );
            services.event(LogEvent {
                ts_ms: now_ms(),
                event: "call",
                room: Some(&call_id),
                reason: Some(format!(
                    "{} -> {}{}",
                    from.label(),
                    to.label(),
                    reason.map(|r| format!(" ({r})")).unwrap_or_default()
                )),
                ..Default::default()
            });
        }
        Event::Refused {
            conn,
            refusal,
            detail,
        } => {
            tracing::info!(%conn, refusal = refusal.label(), detail, "signal refused");
        }
    }
}

/// A `_signal` connection's life: attach it to the hub, read frames into
/// it, write what it sends, report the end.
pub async fn serve_signal(services: Arc<Services>, conn: quinn::Connection) {
    let signal = &services.signal;
    let id = ConnId(signal.next_conn.fetch_add(1, Ordering::Relaxed));
    let remote: SocketAddr = conn.remote_address();
    let mut nonce = [0u8; 32];
    if getrandom::fill(&mut nonce).is_err() {
        quic::close(&conn, CloseCode::Capacity, b"no randomness for a challenge");
        return;
    }
    let (mut send, recv) = match conn.accept_bi().await {
        Ok(s) => s,
        Err(_) => return,
    };
    let token = wzp_proto::mapping::token_for(&nonce);
    signal.token_set(token, true);
    let (wtx, mut wrx) = mpsc::channel::<SignalMessage>(1024);
    let tx = signal.tx.clone();
    if tx
        .send(Cmd::Attach {
            conn: id,
            connection: conn.clone(),
            writer: wtx,
        })
        .await
        .is_err()
    {
        return;
    }
    let _ = tx
        .send(Cmd::Input(Input::Connected {
            conn: id,
            remote,
            nonce,
        }))
        .await;
    let writer = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = wrx.recv().await {
                if signal_stream::write_message(&mut send, &msg).await.is_err() {
                    break;
                }
                let _ = tx
                    .send(Cmd::Input(Input::Drained { conn: id, count: 1 }))
                    .await;
            }
            let _ = send.finish();
        })
    };
    let mut reader = SignalReader::new(recv, MAX_SIGNAL_FRAME);
    let mut last_remote = remote;
    loop {
        // Biased, the stream first: a client's last message (a `reject`, a
        // `hangup`) is often followed at once by its connection's close, and
        // with both ready an unbiased select dropped the message half the
        // time (the caller heard "the callee's signal connection ended"
        // instead of "rejected"). quinn hands out what it has buffered
        // before it reports the connection lost.
        let input = tokio::select! {
            biased;
            r = reader.next() => match r {
                Ok(Some(SignalFrame::Message(d))) => Input::from_decoder(id, Ok(d)),
                Ok(Some(SignalFrame::Malformed(detail))) => Input::Frame { conn: id, frame: Frame::Malformed { detail } },
                Ok(None) => break,
                Err(SignalStreamError::TooLarge { len, .. }) => {
                    let _ = tx.send(Cmd::Input(Input::FrameTooLarge { conn: id, len })).await;
                    break;
                }
                Err(SignalStreamError::Truncated) => {
                    let _ = tx.send(Cmd::Input(Input::StreamError { conn: id, detail: "stream ended inside a frame".into() })).await;
                    break;
                }
                Err(SignalStreamError::Read(_)) => break,
            },
            _ = conn.closed() => break,
        };
        // QUIC follows a client whose address changes; the hub hears of
        // it before the client's next message.
        let now = conn.remote_address();
        if now != last_remote {
            last_remote = now;
            if tx
                .send(Cmd::Input(Input::Moved {
                    conn: id,
                    remote: now,
                }))
                .await
                .is_err()
            {
                break;
            }
        }
        if tx.send(Cmd::Input(input)).await.is_err() {
            break;
        }
    }
    let _ = tx.send(Cmd::Input(Input::Disconnected { conn: id })).await;
    signal.token_set(token, false);
    // Let the writer flush what the hub queued last (a close reason, a
    // hangup), then stop it.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), writer).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::shell::LegView;
    use wzp_proto::Fingerprint;

    fn leg(id: &str, between: bool, lost: bool) -> LegView {
        LegView {
            call_id: id.into(),
            fork: None,
            caller: Fingerprint([1; 16]),
            callee: Fingerprint([2; 16]),
            answered: true,
            busy: false,
            between,
            toward_caller: between.then(|| "r1".to_string()),
            toward_callee: Some("r3".into()),
            path_lost: lost,
            since: Instant::now(),
        }
    }

    fn local(id: &str) -> CallView {
        CallView {
            call_id: id.into(),
            state: "active",
            room: format!("call-{id}"),
            caller: Fingerprint([1; 16]).to_string(),
            callee: Fingerprint([2; 16]).to_string(),
            since: 5,
            role: None,
            toward_caller: None,
            toward_callee: None,
            path_lost: false,
            ringing_devices: None,
            waiting: false,
            kept: false,
            busy_here: false,
            forks: Vec::new(),
            busy_forks: Vec::new(),
        }
    }

    #[test]
    fn a_call_ringing_on_several_relays_lists_its_forks() {
        let fork = |to: &str, answered: bool| LegView {
            fork: Some(to.into()),
            toward_callee: Some(format!("via-{to}")),
            answered,
            ..leg("f", false, false)
        };
        // Ringing: both forks listed, the first names the way.
        let v = CallView::with_legs(vec![local("f")], vec![fork("r2", false), fork("r3", false)]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].forks, ["r2", "r3"]);
        assert_eq!(v[0].toward_callee.as_deref(), Some("via-r2"));
        // Answered on r3: its way is the call's.
        let v = CallView::with_legs(vec![local("f")], vec![fork("r2", false), fork("r3", true)]);
        assert_eq!(v[0].toward_callee.as_deref(), Some("via-r3"));
        // r2 answered busy: listed as such until the call's outcome.
        let busy = LegView {
            busy: true,
            ..fork("r2", false)
        };
        let v = CallView::with_legs(vec![local("f")], vec![busy, fork("r3", false)]);
        let j = serde_json::to_value(&v[0]).unwrap();
        assert_eq!(j["busy_forks"], serde_json::json!(["r2"]));
        assert_eq!(j["forks"], serde_json::json!(["r2", "r3"]));
        // On a relay between, each fork is a row that says which it is.
        let between = LegView {
            between: true,
            ..fork("r3", false)
        };
        let v = CallView::with_legs(Vec::new(), vec![between]);
        let j = serde_json::to_value(&v[0]).unwrap();
        assert_eq!(j["forks"], serde_json::json!(["r3"]));
        assert_eq!(j["call_id"], "f");
    }

    #[test]
    fn calls_show_their_federation_neighbours_and_the_calls_carried_between() {
        let calls = vec![local("a"), local("b")];
        let legs = vec![leg("a", false, true), leg("c", true, false)];
        let v = CallView::with_legs(calls, legs);
        assert_eq!(v.len(), 3, "{v:?}");
        // A call with a party here keeps its row and gains the neighbour.
        let a = &v[0];
        assert_eq!(
            (a.role, a.toward_callee.as_deref(), a.path_lost),
            (None, Some("r3"), true)
        );
        assert_eq!(a.since, 5);
        // A local call stays as it was.
        let b = serde_json::to_value(&v[1]).unwrap();
        assert_eq!(
            b.as_object().unwrap().keys().cloned().collect::<Vec<_>>(),
            ["call_id", "callee", "caller", "room", "since", "state"]
        );
        // A call carried between two other relays gets a row of its own.
        let c = serde_json::to_value(&v[2]).unwrap();
        assert_eq!(c["role"], "between");
        assert_eq!(c["room"], "call-c");
        assert_eq!(c["toward_caller"], "r1");
        assert_eq!(c["state"], "active");
        assert!(c.get("path_lost").is_none(), "{c}");
    }
}
