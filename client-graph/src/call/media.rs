//! The call's media connection: connect to the relay (pinned or first
//! use), enter the room through proto's [`JoinExchange`], move datagrams
//! between the connection and the graph's rings, and reconnect when the
//! relay goes away.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use wzp_proto::identity::Identity;
use wzp_proto::join::RoomAdmissionKey;
use wzp_proto::room_client::{JoinEvent, JoinExchange};
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader};
use wzp_stages::quality::path::{PathCounters, PathLive, PathMeter, PATH_SAMPLE_INTERVAL};

use wzp_proto::close::CloseCode;
use wzp_proto::signal::SignalMessage;

use super::CallOptions;
use crate::nat::Route;

/// What the connection task keeps of the room for the rest of the client:
/// the roster it shares with `--top`, and the mute switch it tells the
/// relay about.
pub(crate) struct RoomState {
    /// The room's members, as last listed.
    pub roster: super::roster::SharedRoster,
    /// The switch whose position the room is told (`None`: a graph without
    /// a mute stage, or no controls: never muted).
    pub mute: Option<Arc<super::controls::Controls>>,
    /// The last room line printed.
    pub printed: Option<String>,
    /// A direct call's other party said it muted (as last printed).
    pub peer_muted: bool,
    /// This side records the call (`--record`): the room is told.
    pub recording: bool,
    /// A direct call's other party said it records the call (as last
    /// printed).
    pub peer_recording: bool,
}

impl RoomState {
    /// Says what a room update shows: in a room, its line (`room NAME:
    /// COUNT (ann, bob (muted))`), printed only when it changed (a
    /// member's first media, its sender binding, is an update too); in a
    /// direct call, whose room is the two parties, only when the other
    /// one mutes or unmutes.
    fn seen(
        &mut self,
        opts: &CallOptions,
        me: wzp_proto::Fingerprint,
        count: u32,
        participants: &[wzp_proto::signal::RoomParticipant],
    ) {
        if opts.direct.is_some() {
            return self.peer_state(opts, me, participants);
        }
        let line = super::roster::update_line(&opts.room, count, participants);
        if self.printed.as_deref() != Some(line.as_str()) {
            println!("{}{line}", opts.label);
            self.printed = Some(line);
        }
    }

    /// In a direct call, says when the other party mutes or unmutes.
    fn peer_state(
        &mut self,
        opts: &CallOptions,
        me: wzp_proto::Fingerprint,
        participants: &[wzp_proto::signal::RoomParticipant],
    ) {
        let Some(d) = &opts.direct else {
            return;
        };
        let Some(peer) = participants.iter().find(|p| p.fingerprint != me) else {
            return;
        };
        let changes = [
            (
                peer.recording,
                &mut self.peer_recording,
                "is recording this call",
                "stopped recording this call",
            ),
            (
                peer.muted,
                &mut self.peer_muted,
                "muted their microphone",
                "turned their microphone back on",
            ),
        ];
        for (now, told, on, off) in changes {
            if now != *told {
                *told = now;
                println!("{}{} {}", opts.label, d.with, if now { on } else { off });
            }
        }
    }

    fn listed(
        &self,
        me: wzp_proto::Fingerprint,
        count: u32,
        participants: Vec<wzp_proto::signal::RoomParticipant>,
    ) {
        *self.roster.lock().unwrap_or_else(|p| p.into_inner()) = Some(super::roster::Roster {
            me,
            participants,
            count,
        });
    }
}

/// How long one QUIC handshake with the relay may take.
const HANDSHAKE: Duration = Duration::from_secs(3);
/// Before the first admission, how long to keep retrying a relay that
/// answers with errors before giving up with a clear message. (A relay that
/// does not answer at all fails after one [`HANDSHAKE`].)
const FIRST_CONTACT: Duration = Duration::from_secs(3);
use crate::trust::{KnownRelays, Trust};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Publishes what the connection's own statistics say about this side's
/// first hop (sent and lost packets, the round trip above its smallest,
/// what got through) every [`PATH_SAMPLE_INTERVAL`], for the quality
/// controller (`quality.adapt`'s `path_live`). Runs until aborted.
///
/// Publishes only while `active()`: the relay connection's samples pause
/// while the media goes on a direct path, whose own sampler publishes then.
pub(crate) async fn sample_path(
    conn: quinn::Connection,
    cell: Arc<PathLive>,
    active: impl Fn() -> bool + Send + 'static,
) {
    let mut meter = PathMeter::new();
    let start = Instant::now();
    let mut tick = tokio::time::interval(PATH_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = conn.stats();
        let reading = PathCounters {
            at_ms: start.elapsed().as_millis() as u64,
            sent_packets: st.path.sent_packets,
            lost_packets: st.path.lost_packets,
            sent_bytes: st.udp_tx.bytes,
            lost_bytes: st.path.lost_bytes,
            rtt_ms: st.path.rtt.as_millis() as u64,
            min_rtt_ms: st.path.min_rtt.as_millis() as u64,
        };
        if let Some(s) = meter.sample(reading) {
            if active() {
                tracing::trace!(?s, "first hop");
                cell.publish(s);
            }
        }
    }
}

/// A relay the call may go through: its name as given, its address, and
/// how its certificate is checked.
pub(crate) struct RelayChoice {
    pub name: String,
    pub addr: SocketAddr,
    pub trust: Trust,
}

/// A QUIC endpoint for each address family the relays need, bound on
/// first use.
#[derive(Default)]
struct Endpoints {
    v4: Option<quinn::Endpoint>,
    v6: Option<quinn::Endpoint>,
}

impl Endpoints {
    fn for_addr(&mut self, addr: SocketAddr) -> Result<quinn::Endpoint> {
        let (slot, bind) = if addr.is_ipv4() {
            (&mut self.v4, "0.0.0.0:0")
        } else {
            (&mut self.v6, "[::]:0")
        };
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let e = quic::client_endpoint(bind.parse().expect("a bind address"))?;
        *slot = Some(e.clone());
        Ok(e)
    }

    /// Lets the last closes leave (bounded; see the caller).
    async fn wait_idle(&self) {
        for e in self.v4.iter().chain(self.v6.iter()) {
            let _ = tokio::time::timeout(Duration::from_millis(500), e.wait_idle()).await;
        }
    }
}

/// Which relay of several a call goes through, and what the ones that
/// could not take it said before it was first admitted.
struct RelayCursor {
    at: usize,
    count: usize,
    /// Before the first admission: each relay that failed, with why.
    failed: Vec<String>,
    /// When the attempts on the current relay began.
    since: Instant,
}

impl RelayCursor {
    fn new(count: usize) -> RelayCursor {
        RelayCursor {
            at: 0,
            count,
            failed: Vec::new(),
            since: Instant::now(),
        }
    }

    /// Moves to the next relay (round the list).
    fn advance(&mut self) {
        self.at = (self.at + 1) % self.count;
        self.since = Instant::now();
    }

    /// Before the first admission, relay `name` failed with `why`: the
    /// error that ends the call when every relay has (the one relay's own
    /// message when there is one), else `None` and the next is tried.
    fn give_up(&mut self, name: &str, why: String) -> Option<anyhow::Error> {
        if self.count == 1 {
            return Some(anyhow::anyhow!(why));
        }
        self.failed.push(format!("{name}: {why}"));
        if self.failed.len() >= self.count {
            return Some(anyhow::anyhow!(
                "no relay took the call:\n  {}",
                self.failed.join("\n  ")
            ));
        }
        self.advance();
        None
    }
}

/// Before the first admission, relay `name` failed with `why`: says so and
/// moves to the next relay of several, or returns the error that ends the
/// call ([`RelayCursor::give_up`]).
fn try_next(
    cursor: &mut RelayCursor,
    relays: &[RelayChoice],
    label: &str,
    name: &str,
    why: String,
) -> Result<()> {
    match cursor.give_up(name, why.clone()) {
        Some(e) => Err(e),
        None => {
            println!("{label}{why}; trying {}", relays[cursor.at].name);
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn connection_loop(
    opts: &CallOptions,
    identity: &Identity,
    mut relays: Vec<RelayChoice>,
    known: &mut KnownRelays,
    feed: Arc<quic::IngressFeed>,
    route: Arc<Route>,
    done: Arc<AtomicBool>,
    path_live: Arc<PathLive>,
    mut telemetry: tokio::sync::mpsc::Receiver<Telemetry>,
    mut room_state: RoomState,
) -> Result<u32> {
    if relays.is_empty() {
        bail!("no relay to call through");
    }
    let mut endpoints = Endpoints::default();
    let mut cursor = RelayCursor::new(relays.len());
    // The relay of the last admission (a rejoin through another says so).
    let mut admitted_at: Option<usize> = None;
    // A media room's server name is the hash of its admission key, which
    // only holders of the room secret can derive; the Join proves it over
    // each connection's nonce. A direct call's room is admitted by the
    // relay's registry instead.
    let (sni, room_key) = match &opts.direct {
        Some(d) => (d.room.clone(), None),
        None => {
            let secret = opts
                .room_secret
                .clone()
                .unwrap_or_else(|| super::graph::open_room_secret(&opts.room));
            let key = RoomAdmissionKey::derive(secret.as_bytes(), &opts.room);
            (key.sni(), Some(key))
        }
    };
    let mut joins = 0u32;
    let mut lost_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(100);
    let finished = || done.load(Ordering::Relaxed) || opts.stop.load(Ordering::Relaxed);
    while !finished() {
        let at = cursor.at;
        let RelayChoice {
            name: relay_name,
            addr,
            trust,
        } = &mut relays[at];
        let (relay_name, addr) = (relay_name.clone(), *addr);
        let endpoint = endpoints.for_addr(addr)?;
        let dial = trust.dial()?;
        let connecting = match endpoint.connect_with(dial.config.clone(), addr, &sni) {
            Ok(c) => c,
            Err(e) => bail!("cannot connect to {addr}: {e}"),
        };
        // A hang-up while the relay is away (stopped, not yet back) ends
        // the attempt at once instead of after the handshake timeout.
        let stopped = async {
            while !finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let conn = tokio::select! {
            c = tokio::time::timeout(HANDSHAKE, connecting) => c,
            () = stopped => break,
        };
        let conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let text = e.to_string();
                if let Some(e) = trust.pin_mismatch(&relay_name, known, &text) {
                    // Never through a relay that is not the one pinned;
                    // another of the list may take the call.
                    if joins > 0 && cursor.count > 1 {
                        println!("{}{e}; moving to the next relay", opts.label);
                        cursor.advance();
                        continue;
                    }
                    try_next(
                        &mut cursor,
                        &relays,
                        &opts.label,
                        &relay_name,
                        e.to_string(),
                    )?;
                    continue;
                }
                if joins == 0 && cursor.since.elapsed() >= FIRST_CONTACT {
                    let why = format!(
                        "cannot reach the relay at {relay_name} ({addr}): {text}; check the address and that the relay runs"
                    );
                    try_next(&mut cursor, &relays, &opts.label, &relay_name, why)?;
                    continue;
                }
                tracing::debug!("connecting to {addr}: {text}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                if joins > 0 && cursor.count > 1 {
                    cursor.advance();
                }
                continue;
            }
            Err(_) => {
                if joins == 0 {
                    let why = format!(
                        "cannot reach the relay at {relay_name} ({addr}): no QUIC handshake within {} s; \
                         check the address and that the relay runs",
                        HANDSHAKE.as_secs()
                    );
                    try_next(&mut cursor, &relays, &opts.label, &relay_name, why)?;
                    continue;
                }
                if cursor.count > 1 {
                    println!(
                        "{}relay {relay_name} does not answer; moving to {}",
                        opts.label,
                        relays[(at + 1) % relays.len()].name
                    );
                    cursor.advance();
                    continue;
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let label = opts.label.clone();
        let relay_fp =
            trust.confirm(&dial, &relay_name, known, |line| println!("{label}{line}"))?;
        backoff = Duration::from_millis(100);
        let (mut send, recv) = match conn.open_bi().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let software = format!("wzp-client {}", env!("CARGO_PKG_VERSION"));
        let mut exchange = match &room_key {
            Some(key) => {
                let Some(nonce) = quic::join_nonce(&conn) else {
                    bail!("the TLS session with {addr} exports no join nonce; cannot prove room membership");
                };
                JoinExchange::start_with_room_proof(
                    identity,
                    &sni,
                    &relay_fp,
                    opts.alias.clone(),
                    &software,
                    now_ms(),
                    key,
                    &nonce,
                )
            }
            None => JoinExchange::start(
                identity,
                &sni,
                &relay_fp,
                opts.alias.clone(),
                &software,
                now_ms(),
            ),
        };
        let mut reader = SignalReader::new(recv, wzp_proto::signal::MAX_FRAME_LEN);
        let mut admitted = false;
        // Whether this relay shows the room a member's mute, and what it
        // was last told (a new session starts unmuted on the relay's side).
        let mut relay_shows_mute = false;
        let mut relay_shows_recording = false;
        // Whether its room updates say if it bridges the room.
        let mut relay_says_bridged = false;
        let mut told = (false, false);
        let mut refusal: Option<String> = None;
        let stats = Arc::new(quic::PeerIoStats::default());
        let mut pump_in: Option<tokio::task::JoinHandle<()>> = None;
        let mut path_task: Option<tokio::task::JoinHandle<()>> = None;
        // With relays to move to: when the last datagram came from this one
        // (media, or the acknowledgements of ours and of the keep-alives),
        // so a relay gone silent is left before QUIC's idle timeout.
        let mut heard_relay = (conn.stats().udp_rx.datagrams, Instant::now());
        let mut silent = false;
        'session: loop {
            if let Some(bytes) = exchange.poll_transmit() {
                if signal_stream::write_frames(&mut send, &bytes)
                    .await
                    .is_err()
                {
                    break;
                }
            }
            while let Some(ev) = exchange.poll_event() {
                match ev {
                    JoinEvent::Admitted {
                        count,
                        participants,
                        bridged,
                    } => {
                        if cursor.count > 1 && relay_says_bridged && !bridged {
                            println!(
                                "{}warning: relay {relay_name} does not bridge room {} to other relays: \
                                 the members on the other relays given are not in it here",
                                opts.label, opts.room
                            );
                        }
                        let who = participants.clone();
                        room_state.listed(identity.fingerprint(), count, participants);
                        admitted = true;
                        joins += 1;
                        let limit = quic::max_datagram_size(&conn).unwrap_or(0);
                        tracing::debug!(limit, "path datagram limit");
                        route.set_relay(Some((
                            quic::EgressPeer {
                                conn: conn.clone(),
                                stats: stats.clone(),
                                observer: None,
                            },
                            limit,
                        )));
                        let c = conn.clone();
                        let f = feed.clone();
                        let s = stats.clone();
                        pump_in = Some(tokio::spawn(async move {
                            let _ = quic::pump_datagrams_in(c, 0, f, s, |_| {}).await;
                        }));
                        if let Some(h) = path_task.take() {
                            h.abort();
                        }
                        let on_relay = route.clone();
                        path_task = Some(tokio::spawn(sample_path(
                            conn.clone(),
                            path_live.clone(),
                            move || !on_relay.direct_up(),
                        )));
                        cursor.failed.clear();
                        let moved = admitted_at.is_some_and(|a| a != at);
                        admitted_at = Some(at);
                        match lost_at.take() {
                            Some(t) => println!(
                                "{}rejoined room {} after {} ms{}",
                                opts.label,
                                opts.room,
                                t.elapsed().as_millis(),
                                if moved {
                                    format!(" via {relay_name}")
                                } else {
                                    String::new()
                                }
                            ),
                            // The room id is what a relay operator bridges
                            // a room with a secret by (`[[global_rooms]]`)
                            // and taps it by: the relay never sees the name.
                            None if room_key.is_some() => println!(
                                "{}joined room {} (room id {}) via {} ({} in the room)",
                                opts.label, opts.room, sni, relay_name, count
                            ),
                            None => println!(
                                "{}joined room {} via {} ({} in the room)",
                                opts.label, opts.room, relay_name, count
                            ),
                        }
                        // Who is there, as the join found them.
                        room_state.seen(opts, identity.fingerprint(), count, &who);
                    }
                    JoinEvent::RoomUpdate {
                        count,
                        participants,
                    } => {
                        room_state.seen(opts, identity.fingerprint(), count, &participants);
                        room_state.listed(identity.fingerprint(), count, participants);
                    }
                    JoinEvent::Refused { message, .. } => {
                        refusal = message;
                        break 'session;
                    }
                    JoinEvent::Failed(why) => {
                        refusal = Some(why);
                        break 'session;
                    }
                    JoinEvent::RelayHello { features, .. } => {
                        let has = |want: &str| features.iter().any(|f| f == want);
                        relay_shows_mute = has(wzp_proto::signal::FEATURE_MEMBER_STATE);
                        relay_shows_recording = has(wzp_proto::signal::FEATURE_RECORDING);
                        relay_says_bridged = has(wzp_proto::signal::FEATURE_BRIDGED);
                        if room_state.recording && !relay_shows_recording {
                            println!(
                                "{}warning: this relay does not tell the others that you record \
                                 (it is older than recording notices): tell them yourself",
                                opts.label
                            );
                        }
                    }
                    JoinEvent::Pong { .. } | JoinEvent::Ignored { .. } => {}
                }
            }
            if admitted && relay_shows_mute {
                let muted = room_state.mute.as_ref().is_some_and(|c| c.is_muted());
                let recording = room_state.recording && relay_shows_recording;
                if (muted, recording) != told {
                    exchange.send(&SignalMessage::MemberState { muted, recording });
                    told = (muted, recording);
                    // Sent at the top of the loop, at once.
                    continue 'session;
                }
            }
            if admitted && cursor.count > 1 {
                let rx = conn.stats().udp_rx.datagrams;
                if rx != heard_relay.0 {
                    heard_relay = (rx, Instant::now());
                } else if heard_relay.1.elapsed() >= SILENT_RELAY {
                    silent = true;
                    break;
                }
            }
            tokio::select! {
                frame = reader.next() => {
                    match frame {
                        Ok(Some(SignalFrame::Message(m))) => exchange.handle_message(m),
                        Ok(Some(SignalFrame::Malformed(e))) => tracing::debug!("malformed signal frame from the relay: {e}"),
                        _ => break,
                    }
                }
                Some(t) = telemetry.recv() => {
                    if admitted {
                        for m in t.messages(conn.rtt()) {
                            exchange.send(&m);
                        }
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if finished() { break; }
                }
            }
        }
        route.set_relay(None);
        if let Some(h) = path_task {
            h.abort();
        }
        if let Some(h) = pump_in {
            h.abort();
        }
        if finished() {
            quic::close(&conn, CloseCode::Normal, b"bye");
            break;
        }
        if silent {
            quic::close(&conn, CloseCode::Normal, b"moving to another relay");
            cursor.advance();
            println!(
                "{}relay {relay_name} silent for {} ms; moving to {}",
                opts.label,
                heard_relay.1.elapsed().as_millis(),
                relays[cursor.at].name
            );
            lost_at.get_or_insert(heard_relay.1);
            continue;
        }
        let closed = match conn.close_reason() {
            Some(r) => Some(r),
            None if refusal.is_some() => {
                tokio::time::timeout(Duration::from_secs(1), conn.closed())
                    .await
                    .ok()
            }
            None => None,
        };
        let next = (cursor.count > 1).then(|| relays[(at + 1) % relays.len()].name.clone());
        // Refused: the next relay of several is asked (the call ends when
        // each has refused or failed before any admitted it).
        let refused = |cursor: &mut RelayCursor, why: String| -> Result<()> {
            if joins == 0 {
                return try_next(cursor, &relays, &opts.label, &relay_name, why);
            }
            match &next {
                Some(n) => {
                    println!("{}{why}; moving to {n}", opts.label);
                    cursor.advance();
                    Ok(())
                }
                None => Err(anyhow::anyhow!(why)),
            }
        };
        if let Some(reason) = closed {
            let peer = quic::peer_close(&reason);
            if let Some((code, text)) = &peer {
                if code.is_refusal() && !admitted {
                    refused(
                        &mut cursor,
                        format!(
                            "the relay refused to let us into `{}`: {text} ({code})",
                            opts.room
                        ),
                    )?;
                    continue;
                }
            }
            match peer {
                // The relay ended the session on purpose: the call ended
                // (it closes the call room's connections as it sends the
                // hang-up on the signal stream, and either may arrive
                // first), or it answers our own hang-up. Rejoining would
                // be refused; wait for the hang-up to stop this side, then
                // end the session (bounded: a hang-up that never comes).
                Some((CloseCode::Normal, text)) => {
                    let deadline = Instant::now() + NORMAL_CLOSE_WAIT;
                    while !finished() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if !finished() {
                        println!("{}relay {relay_name} ended the session: {text}", opts.label);
                    }
                    break;
                }
                // The relay is stopping (or restarting): try again at once,
                // with no backoff, so the call is back as soon as it is;
                // with several relays, through the next (up now).
                Some((CloseCode::Shutdown, text)) => {
                    backoff = Duration::from_millis(100);
                    match &next {
                        Some(n) => {
                            println!(
                                "{}relay {relay_name} closed the connection: {text} ({}); moving to {n}",
                                opts.label,
                                CloseCode::Shutdown
                            );
                            cursor.advance();
                        }
                        None => println!(
                            "{}relay {relay_name} closed the connection: {text} ({}); reconnecting at once",
                            opts.label,
                            CloseCode::Shutdown
                        ),
                    }
                }
                _ => match &next {
                    Some(n) if admitted => {
                        println!(
                            "{}connection to {relay_name} lost ({reason}); moving to {n}",
                            opts.label
                        );
                        cursor.advance();
                    }
                    _ => println!(
                        "{}connection to {relay_name} lost ({reason}); reconnecting",
                        opts.label
                    ),
                },
            }
        } else if let Some(why) = refusal {
            if !admitted {
                refused(
                    &mut cursor,
                    format!("the relay refused to let us into `{}`: {why}", opts.room),
                )?;
                continue;
            }
        }
        lost_at.get_or_insert_with(Instant::now);
    }
    // Lets the last close leave; bounded, because an attempt abandoned
    // mid-handshake to a relay that is gone drains for three probe
    // timeouts (seconds), and the caller waits for this task only so long.
    endpoints.wait_idle().await;
    Ok(joins)
}

/// How long a relay may send nothing at all before a call with other
/// relays to go to leaves it: a live relay acknowledges the call's packets
/// within tens of milliseconds, and its keep-alives' every 500 ms, so
/// this is two missed keep-alive rounds, well under QUIC's 3 s idle
/// timeout (which a call with one relay waits for).
const SILENT_RELAY: Duration = Duration::from_millis(1200);

/// How long a session the relay closed on purpose (`CloseCode::Normal`)
/// waits for the hang-up that stops this side before it ends by itself.
const NORMAL_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How often a call reports its loss recovery and link figures to the relay.
pub const TELEMETRY_INTERVAL: Duration = Duration::from_secs(2);

/// One report of the call graph's receive side: the decoders' recovery
/// counters (monotonic) and the loss and jitter-buffer target over the last
/// interval.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    pub frames_decoded: u64,
    pub dred_reconstructions: u64,
    pub lbrr_recoveries: u64,
    pub classical_plc_invocations: u64,
    pub loss_pct: f32,
    pub jitter_ms: u32,
    /// The media goes straight to a direct call's peer now.
    pub direct: bool,
}

impl Telemetry {
    /// The signal messages carrying it (`rtt` from the QUIC connection).
    pub fn messages(&self, rtt: Duration) -> [SignalMessage; 2] {
        [
            SignalMessage::LossRecoveryUpdate {
                dred_reconstructions: self.dred_reconstructions,
                classical_plc_invocations: self.classical_plc_invocations,
                frames_decoded: self.frames_decoded,
                lbrr_recoveries: self.lbrr_recoveries,
            },
            SignalMessage::QualityUpdate {
                loss_pct: self.loss_pct,
                rtt_ms: rtt.as_millis().min(u32::MAX as u128) as u32,
                jitter_ms: self.jitter_ms,
                bitrate_cap_kbps: None,
                recommended_codec: None,
                media_path: Some(if self.direct { "direct" } else { "relay" }.into()),
            },
        ]
    }
}

/// Reads a call graph's figures into [`Telemetry`], keeping what the loss
/// fraction needs between samples.
#[derive(Debug, Default)]
pub struct TelemetrySampler {
    played: u64,
    concealed: u64,
}

impl TelemetrySampler {
    pub fn sample(&mut self, stats: &wzp_engine::stats::GraphStats) -> Telemetry {
        let sum = |kind: &str, name: &str| -> u64 {
            stats
                .stages_of_kind(kind)
                .filter_map(|s| s.counter(name))
                .sum()
        };
        // The decoders' counters, whichever decoder stage the graph runs.
        let dec = |name: &str| -> u64 {
            crate::call::graph::DECODERS
                .iter()
                .map(|k| sum(k, name))
                .sum()
        };
        let played = sum("jitter.adaptive", "played");
        let concealed = sum("jitter.adaptive", "concealed");
        let (dp, dc) = (
            played.saturating_sub(self.played),
            concealed.saturating_sub(self.concealed),
        );
        self.played = played;
        self.concealed = concealed;
        let loss_pct = if dp + dc == 0 {
            0.0
        } else {
            100.0 * dc as f32 / (dp + dc) as f32
        };
        let jitter_ms = stats
            .stages_of_kind("jitter.adaptive")
            .filter(|s| s.counter("played").unwrap_or(0) > 0)
            .filter_map(|s| s.gauge("target_delay_ms"))
            .max()
            .unwrap_or(0)
            .max(0) as u32;
        Telemetry {
            frames_decoded: dec("frames_decoded"),
            dred_reconstructions: dec("dred_reconstructions"),
            lbrr_recoveries: dec("fec_recovered"),
            classical_plc_invocations: dec("classical_plc_invocations"),
            loss_pct,
            jitter_ms,
            direct: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_relay_fails_with_its_own_message_and_several_fail_when_each_has() {
        let mut one = RelayCursor::new(1);
        let e = one.give_up("a:1", "cannot reach the relay at a:1".into());
        assert_eq!(e.unwrap().to_string(), "cannot reach the relay at a:1");

        let mut three = RelayCursor::new(3);
        assert!(three.give_up("a:1", "down".into()).is_none());
        assert_eq!(three.at, 1, "the next is tried");
        assert!(three.give_up("b:2", "refused".into()).is_none());
        assert_eq!(three.at, 2);
        let e = three.give_up("c:3", "wrong certificate".into()).unwrap();
        assert_eq!(
            e.to_string(),
            "no relay took the call:\n  a:1: down\n  b:2: refused\n  c:3: wrong certificate"
        );
        // Past the last, the list starts over (a call that lost its relay).
        three.advance();
        assert_eq!(three.at, 0);
    }
}
