//! Rooms and admission: the relay's room table, sans-IO.
//!
//! [`RoomTable`] is a plain struct: it is told who wants in ([`Admit`]) and
//! who left, and answers with a [`RoomHandle`] (or a [`Refusal`]) and the
//! `RoomUpdate`s to deliver. It holds no connection, channel or clock; the
//! shell around it ([`service`]) owns those. Admission resolves a room once
//! into its handle (forwarding shard, fan-out slot, tap flag): the media
//! path never looks a room up by name again.
//!
//! A member is [`Member::Local`] (a session on this relay) or
//! [`Member::Remote`] (a participant reached through another relay), so
//! federated members join the same lists without touching admission.

pub mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use wzp_proto::close::CloseCode;
use wzp_proto::federation::FederatedParticipant;
use wzp_proto::signal::{HangupReason, RoomParticipant, SignalMessage};
use wzp_proto::Fingerprint;
use wzp_stages::net::quic::PeerIoStats;
use wzp_stages::sfu::HandleAllocator;

/// Who may join which `call-*` room. Entries come from the config's
/// `[[calls]]` and from calls set up on the signal plane.
#[derive(Debug, Default)]
pub struct CallAcl {
    calls: HashMap<String, Vec<Fingerprint>>,
}

impl CallAcl {
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
                CloseCode::NotAuthorized,
                HangupReason::Declined,
                format!("no call is set up for {room}"),
            )),
            Some(list) if !list.contains(fp) => Err(Refusal::new(
                CloseCode::NotAuthorized,
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
    pub code: CloseCode,
    pub hangup: HangupReason,
    pub message: String,
}

impl Refusal {
    pub fn new(code: CloseCode, hangup: HangupReason, message: impl Into<String>) -> Self {
        Refusal {
            code,
            hangup,
            message: message.into(),
        }
    }

    /// A short label for metrics and the event log.
    pub fn label(&self) -> &'static str {
        self.code.label()
    }
}

/// A participant reached through another relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteMember {
    pub fingerprint: Fingerprint,
    pub alias: Option<String>,
    /// The label of the relay the participant is connected to.
    pub relay_label: String,
    /// It said its microphone is muted (as its relay announced).
    pub muted: bool,
    /// It said it records the call (as its relay announced).
    pub recording: bool,
    /// The media sender ids its relay bound to it.
    pub senders: Vec<u32>,
}

impl RemoteMember {
    /// The member `p` as relay `relay_label` announced it.
    pub fn of(p: FederatedParticipant, relay_label: String) -> Self {
        RemoteMember {
            fingerprint: p.fingerprint,
            alias: p.alias,
            relay_label,
            muted: p.muted,
            recording: p.recording,
            senders: p.senders,
        }
    }
}

/// Most sender ids listed for one local session (`sfu.fanout` binds at most
/// `max_ids_per_peer`, 2 in `graphs/relay.toml`, at most 16).
pub const MAX_SESSION_SENDERS: usize = wzp_proto::federation::MAX_PARTICIPANT_SENDERS;

/// A member of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Member {
    /// A session on this relay, by its handle.
    Local(u32),
    /// A participant on another relay.
    Remote(RemoteMember),
}

/// What a client last reported about its call (`loss_recovery_update`,
/// `quality_update` on its room stream): counters monotonic within the
/// session, gauges as last reported.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub reports: AtomicU64,
    pub frames_decoded: AtomicU64,
    pub dred_reconstructions: AtomicU64,
    pub lbrr_recoveries: AtomicU64,
    pub classical_plc_invocations: AtomicU64,
    /// Loss the client saw over its last interval, in 1/100 percent.
    pub loss_centipct: AtomicU64,
    pub rtt_ms: AtomicU64,
    pub jitter_ms: AtomicU64,
    /// The client's media goes straight to its direct call's peer, not
    /// through this relay (`media_path: "direct"`).
    pub direct: std::sync::atomic::AtomicBool,
}

/// One admitted local session (what the table knows; its connection lives
/// in the shell).
#[derive(Debug)]
pub struct LocalSession {
    pub handle: u32,
    pub room: String,
    pub fingerprint: Fingerprint,
    pub alias: Option<String>,
    pub remote: SocketAddr,
    pub joined_unix_ms: u64,
    pub stats: Arc<PeerIoStats>,
    pub report: Arc<ClientReport>,
    /// It said its microphone is muted (`member_state`).
    pub muted: bool,
    /// It said it records the call (`member_state`).
    pub recording: bool,
    /// The media sender ids the fan-out bound to its connection, in order.
    pub senders: Vec<u32>,
}

/// A room with at least one member.
#[derive(Debug)]
pub struct Room {
    /// Index in `sfu.fanout`'s room table.
    pub slot: u32,
    /// The forwarding shard that carries the room's media.
    pub shard: usize,
    pub call: bool,
    /// Whether the debug tap logs this room (shared with its members'
    /// ingress tasks: a reload that changes the tap flips it).
    pub tapped: Arc<AtomicBool>,
    /// Members in join order.
    pub members: Vec<Member>,
    /// Local member count, readable without the table (debug tap fan-out).
    pub size: Arc<AtomicUsize>,
    /// The room's federation member in `sfu.fanout` (a bridged room): the
    /// handle other relays' packets enter by and its members' packets
    /// leave for them through.
    pub relay_member: Option<u32>,
}

/// Where an admitted session landed: everything the media path needs,
/// resolved once.
#[derive(Clone, Debug)]
pub struct RoomHandle {
    /// The session's peer handle (fan-out and egress key).
    pub handle: u32,
    /// The room's slot in `sfu.fanout`.
    pub slot: u32,
    /// The forwarding shard.
    pub shard: usize,
    /// Whether the debug tap logs this room (now: a reload may change it).
    pub tapped: Arc<AtomicBool>,
    /// Local members now.
    pub size: Arc<AtomicUsize>,
}

/// A join to admit.
#[derive(Debug)]
pub struct Admit {
    pub room: String,
    pub call: bool,
    pub fingerprint: Fingerprint,
    pub alias: Option<String>,
    pub remote: SocketAddr,
    pub joined_unix_ms: u64,
    pub stats: Arc<PeerIoStats>,
    pub report: Arc<ClientReport>,
}

/// Capacity and sharding of a [`RoomTable`].
#[derive(Clone, Debug)]
pub struct RoomLimits {
    pub max_peers: usize,
    pub max_rooms: usize,
    pub call_room_size: usize,
    /// Local members of any other room (0: no limit).
    pub max_room_size: usize,
    /// Forwarding shards rooms are spread over (at least 1).
    pub shards: usize,
    /// The debug tap filter: a room id, `*`, or none.
    pub tap: Option<String>,
}

/// A `RoomUpdate` for one local session.
pub type Updates = Vec<(u32, SignalMessage)>;

/// The relay's rooms and local sessions.
#[derive(Debug)]
pub struct RoomTable {
    handles: HandleAllocator,
    free_room_slots: Vec<u32>,
    rooms: HashMap<String, Room>,
    sessions: HashMap<u32, LocalSession>,
    /// Participants of global rooms on other relays, by room, as the
    /// federation last reported them; listed in the room while it has a
    /// local member.
    remote: HashMap<String, Vec<RemoteMember>>,
    pub calls: CallAcl,
    limits: RoomLimits,
    /// Federation members of rooms that emptied: (handle, shard), for the
    /// caller to send their `Leave` ([`RoomTable::take_orphaned_relay_members`]).
    orphaned: Vec<(u32, usize)>,
    /// Rooms whose members' state (mute, senders) changed since the last
    /// [`RoomTable::take_changed`]: their updates go out together.
    changed: std::collections::BTreeSet<String>,
}

/// [`shard_of`] the room's hex id names (a global room's name), without
/// building the string.
pub fn shard_of_id(room: &wzp_proto::federation::RoomId, shards: usize) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = room.0.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        let h = (h ^ u64::from(HEX[usize::from(b >> 4)])).wrapping_mul(0x0100_0000_01b3);
        (h ^ u64::from(HEX[usize::from(b & 15)])).wrapping_mul(0x0100_0000_01b3)
    });
    (h % shards.max(1) as u64) as usize
}

/// Whether the debug tap filter `tap` (a room id, `*`, or none) takes
/// `room`.
fn tap_matches(tap: Option<&str>, room: &str) -> bool {
    tap.is_some_and(|t| t == "*" || t == room)
}

/// The shard of a room: FNV-1a of its name, modulo the shard count.
pub fn shard_of(room: &str, shards: usize) -> usize {
    let h = room.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    (h % shards.max(1) as u64) as usize
}

impl RoomTable {
    pub fn new(limits: RoomLimits) -> Self {
        RoomTable {
            handles: HandleAllocator::new(limits.max_peers),
            free_room_slots: (0..limits.max_rooms as u32).rev().collect(),
            rooms: HashMap::new(),
            sessions: HashMap::new(),
            remote: HashMap::new(),
            calls: CallAcl::default(),
            limits,
            orphaned: Vec::new(),
            changed: Default::default(),
        }
    }

    /// Gives `room` (which has members) a federation member if it has none:
    /// returns (handle, room slot, shard) for the caller's `JoinRelay`, or
    /// `None` when it has one already, does not exist, or no handle is free.
    pub fn add_relay_member(&mut self, room: &str) -> Option<(u32, u32, usize)> {
        let r = self.rooms.get_mut(room)?;
        if r.relay_member.is_some() {
            return None;
        }
        let h = self.handles.alloc()?;
        r.relay_member = Some(h);
        Some((h, r.slot, r.shard))
    }

    /// Federation members of rooms that emptied since the last call.
    /// Takes `room`'s federation member away (the room is no longer
    /// bridged): its handle and shard, for the caller to send its `Leave`.
    pub fn remove_relay_member(&mut self, room: &str) -> Option<(u32, usize)> {
        let r = self.rooms.get_mut(room)?;
        let h = r.relay_member.take()?;
        self.handles.release(h);
        Some((h, r.shard))
    }

    pub fn take_orphaned_relay_members(&mut self) -> Vec<(u32, usize)> {
        std::mem::take(&mut self.orphaned)
    }

    /// A handle for a federation link (an egress destination and the
    /// `meta.peer` of its datagrams), from the same space as sessions', so
    /// it can never be mistaken for one. `None` when every slot is taken.
    pub fn alloc_link_handle(&mut self) -> Option<u32> {
        self.handles.alloc()
    }

    /// Returns a link handle.
    pub fn release_link_handle(&mut self, handle: u32) {
        self.handles.release(handle);
    }

    /// Takes a reload's room-size limits and debug tap filter: joins are
    /// admitted by them from now on (members already over a lowered limit
    /// stay), and every open room's tap flag follows the filter at once.
    /// Returns the local members of the rooms whose flag changed, with
    /// their room and its flag now, for their egress observers.
    pub fn set_limits(
        &mut self,
        call_room_size: usize,
        max_room_size: usize,
        tap: Option<String>,
    ) -> Vec<(u32, String, bool)> {
        self.limits.call_room_size = call_room_size;
        self.limits.max_room_size = max_room_size;
        self.limits.tap = tap;
        let mut flipped = Vec::new();
        for (name, room) in &self.rooms {
            let now = tap_matches(self.limits.tap.as_deref(), name);
            if room.tapped.swap(now, Ordering::Relaxed) != now {
                flipped.extend(room.members.iter().filter_map(|m| match m {
                    Member::Local(h) => Some((*h, name.clone(), now)),
                    Member::Remote(_) => None,
                }));
            }
        }
        flipped
    }

    /// The shard of `room` if it exists.
    pub fn shard_of_room(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).map(|r| r.shard)
    }

    /// Admits a session or says why not.
    pub fn admit(&mut self, a: Admit) -> Result<RoomHandle, Refusal> {
        let room = self.rooms.get(&a.room);
        let full = |why: String| Err(Refusal::new(CloseCode::RoomFull, HangupReason::Busy, why));
        if a.call {
            self.calls.check(&a.room, &a.fingerprint)?;
            if room.map_or(0, |r| r.members.len()) >= self.limits.call_room_size {
                return full(format!(
                    "{} is full: a call room holds {} participants",
                    a.room, self.limits.call_room_size
                ));
            }
        } else if self.limits.max_room_size > 0
            && room.map_or(0, |r| r.size.load(Ordering::Relaxed)) >= self.limits.max_room_size
        {
            return full(format!(
                "the room is full: this relay takes {} members in a room",
                self.limits.max_room_size
            ));
        }
        let capacity = || {
            Refusal::new(
                CloseCode::Capacity,
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
            let tapped = Arc::new(AtomicBool::new(tap_matches(
                self.limits.tap.as_deref(),
                &a.room,
            )));
            self.rooms.insert(
                a.room.clone(),
                Room {
                    slot,
                    shard: shard_of(&a.room, self.limits.shards),
                    call: a.call,
                    tapped,
                    members: self
                        .remote
                        .get(&a.room)
                        .into_iter()
                        .flatten()
                        .cloned()
                        .map(Member::Remote)
                        .collect(),
                    size: Arc::new(AtomicUsize::new(0)),
                    relay_member: None,
                },
            );
        }
        let room = self.rooms.get_mut(&a.room).expect("inserted above");
        room.members.push(Member::Local(handle));
        let locals = room
            .members
            .iter()
            .filter(|m| matches!(m, Member::Local(_)))
            .count();
        room.size.store(locals, Ordering::Relaxed);
        let admitted = RoomHandle {
            handle,
            slot: room.slot,
            shard: room.shard,
            tapped: room.tapped.clone(),
            size: room.size.clone(),
        };
        self.sessions.insert(
            handle,
            LocalSession {
                handle,
                room: a.room,
                fingerprint: a.fingerprint,
                alias: a.alias,
                remote: a.remote,
                joined_unix_ms: a.joined_unix_ms,
                stats: a.stats,
                report: a.report,
                muted: false,
                recording: false,
                senders: Vec::new(),
            },
        );
        Ok(admitted)
    }

    /// Removes a session; returns it and whether its room is now empty.
    pub fn leave(&mut self, handle: u32) -> Option<(LocalSession, bool)> {
        let s = self.sessions.remove(&handle)?;
        self.handles.release(handle);
        let mut emptied = false;
        if let Some(room) = self.rooms.get_mut(&s.room) {
            room.members.retain(|m| *m != Member::Local(handle));
            let locals = room
                .members
                .iter()
                .filter(|m| matches!(m, Member::Local(_)))
                .count();
            room.size.store(locals, Ordering::Relaxed);
            // Remote participants are listed only beside local ones; the
            // federation's roster stays in `remote` for the next joiner.
            if locals == 0 {
                let slot = room.slot;
                if let Some(h) = room.relay_member {
                    self.handles.release(h);
                    self.orphaned.push((h, room.shard));
                }
                self.rooms.remove(&s.room);
                self.free_room_slots.push(slot);
                emptied = true;
            }
        }
        Some((s, emptied))
    }

    /// Replaces the remote participants of `room` (reported by the
    /// federation); returns the RoomUpdates its local members need (none
    /// when it has no local member).
    pub fn set_remote_members(&mut self, room: &str, members: Vec<RemoteMember>) -> Updates {
        if let Some(r) = self.rooms.get_mut(room) {
            r.members.retain(|m| matches!(m, Member::Local(_)));
            r.members
                .extend(members.iter().cloned().map(Member::Remote));
        }
        if members.is_empty() {
            self.remote.remove(room);
        } else {
            self.remote.insert(room.to_string(), members);
        }
        self.room_updates(room)
    }

    /// The local members of `room` as the federation announces them, in
    /// join order.
    pub fn local_participants(&self, room: &str) -> Vec<FederatedParticipant> {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|m| match m {
                Member::Local(h) => self.sessions.get(h).map(|s| FederatedParticipant {
                    fingerprint: s.fingerprint,
                    alias: s.alias.clone(),
                    muted: s.muted,
                    recording: s.recording,
                    senders: s.senders.clone(),
                }),
                Member::Remote(_) => None,
            })
            .collect()
    }

    /// Session `handle` says its microphone is (`true`) or is not muted;
    /// returns whether that changed anything (its room's members then see
    /// it at the next [`RoomTable::take_changed`]).
    pub fn set_muted(&mut self, handle: u32, muted: bool) -> bool {
        let recording = self.sessions.get(&handle).is_some_and(|s| s.recording);
        self.set_state(handle, muted, recording)
    }

    /// Session `handle` says its microphone is muted or not, and whether it
    /// records the call (`member_state`); returns whether that changed
    /// anything, as [`RoomTable::set_muted`].
    pub fn set_state(&mut self, handle: u32, muted: bool, recording: bool) -> bool {
        let Some(s) = self.sessions.get_mut(&handle) else {
            return false;
        };
        if (s.muted, s.recording) == (muted, recording) {
            return false;
        }
        s.muted = muted;
        s.recording = recording;
        self.changed.insert(s.room.clone());
        true
    }

    /// The fan-out bound media sender id `sender` to session `handle`
    /// (a handle that has left since is ignored); returns whether it is
    /// new for the session.
    pub fn bind_sender(&mut self, handle: u32, sender: u32) -> bool {
        let Some(s) = self.sessions.get_mut(&handle) else {
            return false;
        };
        if s.senders.contains(&sender) || s.senders.len() >= MAX_SESSION_SENDERS {
            return false;
        }
        s.senders.push(sender);
        self.changed.insert(s.room.clone());
        true
    }

    /// The rooms whose members' state changed since the last call (and
    /// still exist), each once.
    pub fn take_changed(&mut self) -> Vec<String> {
        let changed = std::mem::take(&mut self.changed);
        changed
            .into_iter()
            .filter(|r| self.rooms.contains_key(r))
            .collect()
    }

    /// A RoomUpdate for every local member of `room`: local and remote
    /// participants once each, remote ones with their relay's label.
    pub fn room_updates(&self, room: &str) -> Updates {
        let Some(r) = self.rooms.get(room) else {
            return Vec::new();
        };
        let participants: Vec<RoomParticipant> = r
            .members
            .iter()
            .filter_map(|m| match m {
                Member::Local(h) => self.sessions.get(h).map(|s| RoomParticipant {
                    fingerprint: s.fingerprint,
                    alias: s.alias.clone(),
                    relay_label: None,
                    muted: s.muted,
                    recording: s.recording,
                    senders: s.senders.clone(),
                }),
                Member::Remote(rm) => Some(RoomParticipant {
                    fingerprint: rm.fingerprint,
                    alias: rm.alias.clone(),
                    relay_label: Some(rm.relay_label.clone()),
                    muted: rm.muted,
                    recording: rm.recording,
                    senders: rm.senders.clone(),
                }),
            })
            .collect();
        let msg = SignalMessage::RoomUpdate {
            room: Some(room.to_string()),
            count: participants.len() as u32,
            participants,
            bridged: r.relay_member.is_some(),
        };
        r.members
            .iter()
            .filter_map(|m| match m {
                Member::Local(h) => Some((*h, msg.clone())),
                Member::Remote(_) => None,
            })
            .collect()
    }

    /// Rooms with members.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// A room by name.
    pub fn room(&self, name: &str) -> Option<&Room> {
        self.rooms.get(name)
    }

    /// A local session by handle.
    pub fn session(&self, handle: u32) -> Option<&LocalSession> {
        self.sessions.get(&handle)
    }

    /// Every local session.
    pub fn sessions(&self) -> impl Iterator<Item = &LocalSession> {
        self.sessions.values()
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
                    .filter_map(|m| match m {
                        Member::Local(h) => self.sessions.get(h).map(|s| ParticipantView {
                            handle: Some(s.handle),
                            fingerprint: s.fingerprint.to_string(),
                            alias: s.alias.clone(),
                            relay_label: None,
                            muted: s.muted,
                            recording: s.recording,
                            senders: s.senders.clone(),
                        }),
                        Member::Remote(rm) => Some(ParticipantView {
                            handle: None,
                            fingerprint: rm.fingerprint.to_string(),
                            alias: rm.alias.clone(),
                            relay_label: Some(rm.relay_label.clone()),
                            muted: rm.muted,
                            recording: rm.recording,
                            senders: rm.senders.clone(),
                        }),
                    })
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| a.room.cmp(&b.room));
        v
    }
}

#[derive(Serialize, Debug)]
pub struct ParticipantView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u32>,
    pub fingerprint: String,
    pub alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_label: Option<String>,
    /// The member said its microphone is muted.
    pub muted: bool,
    /// The member said it records the call.
    pub recording: bool,
    /// The media sender ids bound to it, as numbers (media header bytes
    /// 4..8).
    pub senders: Vec<u32>,
}

#[derive(Serialize, Debug)]
pub struct RoomView {
    pub room: String,
    pub kind: &'static str,
    pub slot: u32,
    pub participants: Vec<ParticipantView>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use wzp_proto::Seed;

    fn fp(n: u8) -> Fingerprint {
        Seed::from_bytes([n; 32]).identity().fingerprint()
    }

    fn table(max_peers: usize, max_rooms: usize, shards: usize) -> RoomTable {
        RoomTable::new(RoomLimits {
            max_peers,
            max_rooms,
            call_room_size: 2,
            max_room_size: 0,
            shards,
            tap: None,
        })
    }

    fn admit(room: &str, n: u8) -> Admit {
        Admit {
            room: room.into(),
            call: room.starts_with("call-"),
            fingerprint: fp(n),
            alias: None,
            remote: "127.0.0.1:9".parse().unwrap(),
            joined_unix_ms: 0,
            stats: Arc::default(),
            report: Arc::default(),
        }
    }

    #[test]
    fn admission_resolves_a_room_once_into_its_handle() {
        let mut t = table(8, 4, 4);
        let a = t.admit(admit("room-a", 1)).unwrap();
        let b = t.admit(admit("room-a", 2)).unwrap();
        assert_eq!(
            (a.slot, a.shard),
            (b.slot, b.shard),
            "same room, same place"
        );
        assert_eq!(a.shard, shard_of("room-a", 4));
        let id = wzp_proto::federation::RoomId::of_name("general");
        for n in 1..8 {
            assert_eq!(shard_of_id(&id, n), shard_of(&id.to_string(), n));
        }
        assert_ne!(a.handle, b.handle);
        assert_eq!(a.size.load(Ordering::Relaxed), 2);
        let c = t.admit(admit("room-b", 3)).unwrap();
        assert_ne!(c.slot, a.slot);
        // Updates go to each local member and list everyone once.
        let ups = t.room_updates("room-a");
        assert_eq!(ups.len(), 2);
        let SignalMessage::RoomUpdate { count, .. } = &ups[0].1 else {
            panic!()
        };
        assert_eq!(*count, 2);
        // Leaving frees the handle and, with the last member, the slot.
        assert!(!t.leave(a.handle).unwrap().1);
        assert!(t.leave(b.handle).unwrap().1);
        assert!(t.room("room-a").is_none());
        assert!(t.leave(b.handle).is_none(), "a handle leaves once");
    }

    #[test]
    fn capacity_and_call_rooms_refuse_with_a_code() {
        let mut t = table(2, 1, 1);
        t.admit(admit("r", 1)).unwrap();
        // No free room slot.
        assert_eq!(
            t.admit(admit("other", 2)).unwrap_err().code,
            CloseCode::Capacity
        );
        t.admit(admit("r", 2)).unwrap();
        // No free handle.
        assert_eq!(
            t.admit(admit("r", 3)).unwrap_err().code,
            CloseCode::Capacity
        );

        let mut t = table(8, 4, 1);
        assert_eq!(
            t.admit(admit("call-x", 1)).unwrap_err().code,
            CloseCode::NotAuthorized
        );
        t.calls.allow("call-x", vec![fp(1), fp(2)]);
        t.admit(admit("call-x", 1)).unwrap();
        assert_eq!(
            t.admit(admit("call-x", 3)).unwrap_err().code,
            CloseCode::NotAuthorized
        );
        t.admit(admit("call-x", 2)).unwrap();
        assert_eq!(
            t.admit(admit("call-x", 1)).unwrap_err().code,
            CloseCode::RoomFull
        );
    }

    #[test]
    fn an_ordinary_room_takes_max_room_size_local_members() {
        let mut t = table(8, 4, 1);
        t.limits.max_room_size = 2;
        let first = t.admit(admit("g", 1)).unwrap();
        t.admit(admit("g", 2)).unwrap();
        // Members on other relays do not count against this relay's.
        t.rooms
            .get_mut("g")
            .unwrap()
            .members
            .push(Member::Remote(RemoteMember::of(
                FederatedParticipant::new(fp(9)),
                "relay-b".into(),
            )));
        let full = t.admit(admit("g", 3)).unwrap_err();
        assert_eq!(full.code, CloseCode::RoomFull);
        assert!(full.message.contains("takes 2 members"), "{}", full.message);
        // Other rooms are their own; one leaving makes room.
        t.admit(admit("h", 3)).unwrap();
        t.leave(first.handle).unwrap();
        t.admit(admit("g", 4)).unwrap();
        // 0: no limit.
        t.limits.max_room_size = 0;
        t.admit(admit("g", 5)).unwrap();
    }

    #[test]
    fn remote_members_are_listed_once_with_their_relay() {
        let mut t = table(8, 4, 1);
        let a = t.admit(admit("g", 1)).unwrap();
        t.rooms
            .get_mut("g")
            .unwrap()
            .members
            .push(Member::Remote(RemoteMember::of(
                FederatedParticipant {
                    alias: Some("far".into()),
                    muted: true,
                    senders: vec![77],
                    ..FederatedParticipant::new(fp(9))
                },
                "relay-b".into(),
            )));
        let ups = t.room_updates("g");
        assert_eq!(ups.len(), 1, "updates go to local members only");
        assert_eq!(ups[0].0, a.handle);
        let SignalMessage::RoomUpdate { participants, .. } = &ups[0].1 else {
            panic!()
        };
        assert_eq!(participants.len(), 2);
        assert_eq!(participants[1].relay_label.as_deref(), Some("relay-b"));
        assert!(participants[1].muted, "a remote member's state is shown");
        assert_eq!(participants[1].senders, [77]);
        assert_eq!(
            a.size.load(Ordering::Relaxed),
            1,
            "size counts local members"
        );
    }

    #[test]
    fn a_federation_roster_is_listed_beside_local_members_and_kept_for_the_next() {
        let mut t = table(8, 4, 1);
        let far = |n: u8| RemoteMember::of(FederatedParticipant::new(fp(n)), "relay-b".into());
        // Reported before anyone here joined: nobody to tell yet.
        assert!(t.set_remote_members("g", vec![far(9)]).is_empty());
        let a = t.admit(admit("g", 1)).unwrap();
        let ups = t.room_updates("g");
        let SignalMessage::RoomUpdate { participants, .. } = &ups[0].1 else {
            panic!()
        };
        assert_eq!(participants.len(), 2, "the joiner sees the remote member");
        // A new roster replaces the old one, listed once each.
        let ups = t.set_remote_members("g", vec![far(9), far(10)]);
        assert_eq!(ups.len(), 1);
        let SignalMessage::RoomUpdate { count, .. } = &ups[0].1 else {
            panic!()
        };
        assert_eq!(*count, 3);
        assert_eq!(
            t.local_participants("g"),
            vec![FederatedParticipant::new(fp(1))]
        );
        // The last local member leaving ends the room here (the remote
        // members alone do not keep its slot), but not the roster.
        let (_, emptied) = t.leave(a.handle).unwrap();
        assert!(emptied);
        assert!(t.room("g").is_none());
        let b = t.admit(admit("g", 2)).unwrap();
        assert_eq!(t.room("g").unwrap().members.len(), 3);
        // An empty roster removes the remote members.
        let ups = t.set_remote_members("g", Vec::new());
        assert_eq!(ups[0].0, b.handle);
        assert_eq!(t.room("g").unwrap().members.len(), 1);
    }

    #[test]
    fn mute_and_bound_senders_reach_the_room_once_per_change() {
        let mut t = table(8, 4, 1);
        let a = t.admit(admit("g", 1)).unwrap();
        let b = t.admit(admit("g", 2)).unwrap();
        let other = t.admit(admit("h", 3)).unwrap();
        assert!(t.take_changed().is_empty(), "joins are announced at once");
        assert!(t.set_muted(a.handle, true));
        assert!(!t.set_muted(a.handle, true), "no change, nothing to tell");
        assert!(t.bind_sender(a.handle, 0xA11CE));
        assert!(!t.bind_sender(a.handle, 0xA11CE));
        assert!(t.bind_sender(other.handle, 5));
        assert_eq!(t.take_changed(), ["g", "h"], "each changed room once");
        assert!(t.take_changed().is_empty());
        let ups = t.room_updates("g");
        assert_eq!(ups.len(), 2);
        let SignalMessage::RoomUpdate { participants, .. } = &ups[0].1 else {
            panic!()
        };
        assert!(participants[0].muted);
        assert_eq!(participants[0].senders, [0xA11CE]);
        assert!(!participants[1].muted);
        assert!(participants[1].senders.is_empty());
        let fed = t.local_participants("g");
        assert!(fed[0].muted && fed[0].senders == [0xA11CE]);
        // Unmuting is a change; a handle that left changes nothing, and a
        // room that emptied is not reported.
        assert!(t.set_muted(a.handle, false));
        // Recording is told the same way, and muting keeps it.
        assert!(t.set_state(b.handle, false, true));
        assert!(!t.set_state(b.handle, false, true));
        assert!(t.set_muted(b.handle, true));
        let ups = t.room_updates("g");
        let SignalMessage::RoomUpdate { participants, .. } = &ups[0].1 else {
            panic!()
        };
        assert!(participants[1].recording && participants[1].muted);
        assert!(!participants[0].recording);
        assert!(t.local_participants("g")[1].recording);
        t.leave(other.handle).unwrap();
        assert!(!t.set_muted(other.handle, true));
        assert!(!t.bind_sender(other.handle, 6));
        assert_eq!(t.take_changed(), ["g"]);
        // A session lists at most MAX_SESSION_SENDERS ids.
        for id in 0..40 {
            t.bind_sender(b.handle, id);
        }
        assert_eq!(
            t.session(b.handle).unwrap().senders.len(),
            MAX_SESSION_SENDERS
        );
    }

    #[test]
    fn the_tap_flag_is_resolved_at_admission() {
        let mut t = RoomTable::new(RoomLimits {
            max_peers: 4,
            max_rooms: 4,
            call_room_size: 2,
            max_room_size: 0,
            shards: 1,
            tap: Some("tapped".into()),
        });
        let on = |h: &RoomHandle| h.tapped.load(Ordering::Relaxed);
        let tapped = t.admit(admit("tapped", 1)).unwrap();
        let quiet = t.admit(admit("quiet", 2)).unwrap();
        assert!(on(&tapped));
        assert!(!on(&quiet));

        // A reload moves the tap: open rooms follow at once, and the
        // members of the rooms that changed are named for their egress.
        let quiet2 = t.admit(admit("quiet", 3)).unwrap();
        let mut flipped = t.set_limits(2, 0, Some("quiet".into()));
        flipped.sort();
        assert_eq!(
            flipped,
            [
                (tapped.handle, "tapped".to_string(), false),
                (quiet.handle, "quiet".to_string(), true),
                (quiet2.handle, "quiet".to_string(), true),
            ]
        );
        assert!(!on(&tapped) && on(&quiet) && on(&quiet2));
        // Every room, then none; nothing changed: nobody named.
        assert_eq!(t.set_limits(2, 0, Some("*".into())).len(), 1);
        assert!(on(&tapped));
        assert!(t.set_limits(2, 0, Some("*".into())).is_empty());
        assert_eq!(t.set_limits(2, 0, None).len(), 3);
        assert!(!on(&tapped) && !on(&quiet));
        assert!(!on(&t.admit(admit("new", 4)).unwrap()));
    }

    #[test]
    fn a_reload_sets_the_room_sizes_for_joins_to_come() {
        let mut t = table(8, 4, 1);
        t.admit(admit("g", 1)).unwrap();
        t.admit(admit("g", 2)).unwrap();
        // Lowered under the room's size: its members stay, a third is
        // refused with the new figure.
        t.set_limits(2, 1, None);
        assert_eq!(t.room_count(), 1);
        let full = t.admit(admit("g", 3)).unwrap_err();
        assert_eq!(full.code, CloseCode::RoomFull);
        assert!(full.message.contains("takes 1 members"), "{}", full.message);
        t.set_limits(2, 3, None);
        t.admit(admit("g", 3)).unwrap();
        // A call room's size too.
        t.calls.allow("call-x", vec![fp(1), fp(2), fp(3)]);
        t.set_limits(1, 3, None);
        t.admit(admit("call-x", 1)).unwrap();
        let full = t.admit(admit("call-x", 2)).unwrap_err();
        assert!(
            full.message.contains("holds 1 participants"),
            "{}",
            full.message
        );
        t.set_limits(3, 3, None);
        t.admit(admit("call-x", 2)).unwrap();
    }
}
