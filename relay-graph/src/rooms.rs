//! Rooms, sessions and admission: the relay's control-side state.
//!
//! Everything here runs on the tokio side under one mutex, held for table
//! updates only (never across an await). The media path does not touch it:
//! `sfu.fanout` learns about membership through its command ring.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use wzp_proto::signal::{HangupReason, RoomParticipant, SignalMessage};
use wzp_proto::Fingerprint;
use wzp_stages::net::quic::PeerIoStats;
use wzp_stages::sfu::HandleAllocator;

use crate::join::close;

/// Who may join which `call-*` room. Entries come from the config's
/// `[[calls]]` and, once the `_signal` flow lands, from accepted
/// DirectCallOffer/Answer exchanges ([`CallRegistry::allow`]).
#[derive(Debug, Default)]
pub struct CallRegistry {
    calls: HashMap<String, Vec<Fingerprint>>,
}

impl CallRegistry {
    /// Allows exactly `fingerprints` into call room `room` (replacing any
    /// earlier list).
    pub fn allow(&mut self, room: &str, fingerprints: Vec<Fingerprint>) {
        self.calls.insert(room.to_string(), fingerprints);
    }

    /// Forgets a call room (the call ended).
    pub fn remove(&mut self, room: &str) {
        self.calls.remove(room);
    }

    /// Whether `fp` may join `room`.
    pub fn check(&self, room: &str, fp: &Fingerprint) -> Result<(), Refusal> {
        match self.calls.get(room) {
            None => Err(Refusal::new(
                close::NOT_AUTHORIZED,
                HangupReason::Declined,
                format!("no call is set up for {room}"),
            )),
            Some(list) if !list.contains(fp) => Err(Refusal::new(
                close::NOT_AUTHORIZED,
                HangupReason::Declined,
                format!("{fp} is not authorized in {room}"),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Why a connection was not admitted: the QUIC close code, the Hangup reason
/// and a message for people.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u32,
    pub hangup: HangupReason,
    pub message: String,
}

impl Refusal {
    pub fn new(code: u32, hangup: HangupReason, message: impl Into<String>) -> Self {
        Refusal {
            code,
            hangup,
            message: message.into(),
        }
    }

    /// A short label for metrics and the event log.
    pub fn label(&self) -> &'static str {
        match self.code {
            close::ROOM_FULL => "room_full",
            close::NOT_AUTHORIZED => "not_authorized",
            close::BAD_JOIN => "bad_join",
            close::UNKNOWN_SNI => "unknown_sni",
            close::CAPACITY => "capacity",
            close::PROTOCOL => "protocol",
            _ => "other",
        }
    }
}

/// One admitted connection.
pub struct Session {
    pub handle: u32,
    pub room: String,
    pub fingerprint: Fingerprint,
    pub alias: Option<String>,
    pub remote: SocketAddr,
    pub joined_unix_ms: u64,
    pub stats: Arc<PeerIoStats>,
    pub conn: quinn::Connection,
    /// Frames to the client's signal stream (a writer task drains it).
    pub signal: tokio::sync::mpsc::Sender<SignalMessage>,
}

/// A room with at least one member.
pub struct Room {
    /// Index in `sfu.fanout`'s room table.
    pub slot: u32,
    pub call: bool,
    /// Member handles in join order.
    pub members: Vec<u32>,
    /// Member count, readable without the lock (debug tap fan-out count).
    pub size: Arc<AtomicUsize>,
}

/// The relay's rooms and sessions.
pub struct Rooms {
    handles: HandleAllocator,
    free_room_slots: Vec<u32>,
    pub rooms: HashMap<String, Room>,
    pub sessions: HashMap<u32, Session>,
    pub calls: CallRegistry,
    call_room_size: usize,
    label: String,
}

/// A join to admit.
pub struct Admit {
    pub room: String,
    pub call: bool,
    pub fingerprint: Fingerprint,
    pub alias: Option<String>,
    pub remote: SocketAddr,
    pub joined_unix_ms: u64,
    pub stats: Arc<PeerIoStats>,
    pub conn: quinn::Connection,
    pub signal: tokio::sync::mpsc::Sender<SignalMessage>,
}

/// Where an admitted session landed.
#[derive(Clone, Debug)]
pub struct Admitted {
    pub handle: u32,
    pub room_slot: u32,
    pub room_size: Arc<AtomicUsize>,
}

/// Room updates to deliver after the lock is released.
pub type Updates = Vec<(tokio::sync::mpsc::Sender<SignalMessage>, SignalMessage)>;

impl Rooms {
    pub fn new(max_peers: usize, max_rooms: usize, call_room_size: usize, label: &str) -> Self {
        Rooms {
            handles: HandleAllocator::new(max_peers),
            free_room_slots: (0..max_rooms as u32).rev().collect(),
            rooms: HashMap::new(),
            sessions: HashMap::new(),
            calls: CallRegistry::default(),
            call_room_size,
            label: label.to_string(),
        }
    }

    /// Admits a session or says why not.
    pub fn admit(&mut self, a: Admit) -> Result<Admitted, Refusal> {
        if a.call {
            self.calls.check(&a.room, &a.fingerprint)?;
            let members = self.rooms.get(&a.room).map_or(0, |r| r.members.len());
            if members >= self.call_room_size {
                return Err(Refusal::new(
                    close::ROOM_FULL,
                    HangupReason::Busy,
                    format!(
                        "{} is full: a call room holds {} participants",
                        a.room, self.call_room_size
                    ),
                ));
            }
        }
        let capacity = || {
            Refusal::new(
                close::CAPACITY,
                HangupReason::Busy,
                "the relay is at capacity; try another relay or later",
            )
        };
        let handle = self.handles.alloc().ok_or_else(capacity)?;
        if !self.rooms.contains_key(&a.room) {
            let Some(slot) = self.free_room_slots.pop() else {
                self.handles.release(handle);
                return Err(capacity());
            };
            self.rooms.insert(
                a.room.clone(),
                Room {
                    slot,
                    call: a.call,
                    members: Vec::new(),
                    size: Arc::new(AtomicUsize::new(0)),
                },
            );
        }
        let room = self.rooms.get_mut(&a.room).expect("inserted above");
        room.members.push(handle);
        room.size.store(room.members.len(), Ordering::Relaxed);
        let admitted = Admitted {
            handle,
            room_slot: room.slot,
            room_size: room.size.clone(),
        };
        self.sessions.insert(
            handle,
            Session {
                handle,
                room: a.room,
                fingerprint: a.fingerprint,
                alias: a.alias,
                remote: a.remote,
                joined_unix_ms: a.joined_unix_ms,
                stats: a.stats,
                conn: a.conn,
                signal: a.signal,
            },
        );
        Ok(admitted)
    }

    /// Removes a session; returns it and whether its room is now empty.
    pub fn leave(&mut self, handle: u32) -> Option<(Session, bool)> {
        let s = self.sessions.remove(&handle)?;
        self.handles.release(handle);
        let mut emptied = false;
        if let Some(room) = self.rooms.get_mut(&s.room) {
            room.members.retain(|&h| h != handle);
            room.size.store(room.members.len(), Ordering::Relaxed);
            if room.members.is_empty() {
                let slot = room.slot;
                self.rooms.remove(&s.room);
                self.free_room_slots.push(slot);
                emptied = true;
            }
        }
        Some((s, emptied))
    }

    /// A RoomUpdate for every member of `room`.
    pub fn room_updates(&self, room: &str) -> Updates {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let participants: Vec<RoomParticipant> = r
            .members
            .iter()
            .filter_map(|h| self.sessions.get(h))
            .map(|s| RoomParticipant {
                fingerprint: s.fingerprint,
                alias: s.alias.clone(),
                relay_label: None,
            })
            .collect();
        let msg = SignalMessage::RoomUpdate {
            room: Some(room.to_string()),
            count: participants.len() as u32,
            participants,
        };
        r.members
            .iter()
            .filter_map(|h| self.sessions.get(h))
            .map(|s| (s.signal.clone(), msg.clone()))
            .collect()
    }

    /// This relay's label (for people; local participants carry no label).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// What `/rooms` shows.
    pub fn rooms_view(&self) -> Vec<RoomView> {
        let mut v: Vec<RoomView> = self
            .rooms
            .iter()
            .map(|(name, r)| RoomView {
                room: name.clone(),
                kind: if r.call { "call" } else { "room" },
                slot: r.slot,
                participants: r
                    .members
                    .iter()
                    .filter_map(|h| self.sessions.get(h))
                    .map(|s| ParticipantView {
                        handle: s.handle,
                        fingerprint: s.fingerprint.to_string(),
                        alias: s.alias.clone(),
                    })
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| a.room.cmp(&b.room));
        v
    }

    /// What `/sessions` shows.
    pub fn sessions_view(&self) -> Vec<SessionView> {
        let mut v: Vec<SessionView> = self
            .sessions
            .values()
            .map(|s| {
                let st = &s.stats;
                let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                SessionView {
                    handle: s.handle,
                    room: s.room.clone(),
                    fingerprint: s.fingerprint.to_string(),
                    alias: s.alias.clone(),
                    remote: s.remote.to_string(),
                    joined_unix_ms: s.joined_unix_ms,
                    max_datagram_size: wzp_stages::net::quic::max_datagram_size(&s.conn),
                    rtt_ms: s.conn.rtt().as_secs_f64() * 1e3,
                    packets_in: ld(&st.packets_in),
                    bytes_in: ld(&st.bytes_in),
                    packets_out: ld(&st.packets_out),
                    bytes_out: ld(&st.bytes_out),
                    dropped_in: ld(&st.dropped_in),
                    dropped_out: ld(&st.dropped_out),
                }
            })
            .collect();
        v.sort_by_key(|s| s.handle);
        v
    }
}

#[derive(Serialize, Debug)]
pub struct ParticipantView {
    pub handle: u32,
    pub fingerprint: String,
    pub alias: Option<String>,
}

#[derive(Serialize, Debug)]
pub struct RoomView {
    pub room: String,
    pub kind: &'static str,
    pub slot: u32,
    pub participants: Vec<ParticipantView>,
}

#[derive(Serialize, Debug, Clone)]
pub struct SessionView {
    pub handle: u32,
    pub room: String,
    pub fingerprint: String,
    pub alias: Option<String>,
    pub remote: String,
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
}
