//! Cross-relay direct calls in the federation core: an offer for a user
//! registered on another relay travels hop by hop along the presence route;
//! every relay it crosses remembers the call's two neighbours (towards the
//! caller, towards the callee), so ringing, the answer, the confirm and the
//! hangup go back and forth along exactly that path.
//!
//! ```text
//!  caller A          relay 1             relay 2             relay 3          callee B
//!   offer ──────────> route(B)=Via[2,3]
//!                     leg (local, 2) ──> route(B)=Direct(3)
//!                                        leg (1, 3) ───────> route(B)=Local
//!                                                            leg (2, local) ─> offer
//!                                   <─ ringing, answer(accept) <──────────── <─ answer
//!   answer <───────── bridged with 2    bridged with 1 and 3  bridged with 2
//!   confirm ───────────────────────────────────────────────────────────────> confirm
//!   hangup ──────────────────────────────────────────────────────────────────> hangup
//! ```
//!
//! Once answered, the call room's [`RoomId`] (`call-<id>`) is bridged on each
//! relay of the path with exactly its neighbours on that path, through the
//! global-room machinery: the end relays announce their local party, and
//! [`FederationCore::forward_targets`] sends the call's media along the path
//! only. A `global_room_active` for a call room from any other peer is refused
//! like one for a room the relay does not bridge. The call ends (hangup,
//! decline, a link of the path dying, or no answer within
//! [`CALL_SETUP_TIMEOUT`]) and the bridge with it: what was learned about
//! the room is dropped at once.
//!
//! A link of a call's path going down (answered or still ringing) does not
//! end the call when
//! another path exists (federation version 2 on the links involved): the
//! relays of the broken path forget their legs as a `path_lost` passes them
//! towards each end, the caller's relay sends a `reroute` along its present
//! route to the callee, and every relay it crosses bridges the call room
//! with its neighbours on the new path; the callee's relay takes the
//! `reroute`'s sender as its neighbour. Neither party is told; their media
//! stops for the time the link took to be found dead and comes back. With
//! no path within [`REROUTE_WAIT`] both ends hang up as before.
//!
//! ```text
//!  before:  relay 0 ── relay 1 ──x── relay 3          (link 1–3 dies)
//!             path_lost <─┘         (relay 3 waits)
//!  after:   relay 0 ── relay 2 ── relay 3             (reroute 0 → 2 → 3)
//! ```
//!
//! Refusals answer the offer with a `hangup` back along the path it came
//! (`not_online`, or `error` with the reason) and are counted in
//! [`CallCounters`]: an offer whose path already holds this relay (a loop),
//! one that would exceed [`MAX_CALL_PATH`] relays, a route pointing back into
//! the path, a call id in use here, more than [`MAX_CALLS`] calls.

use std::time::{Duration, Instant};

use wzp_proto::federation::{
    CallEvent, CallSignal, RelayId, RoomId, BUSY_VERSION, FORK_VERSION, HOLD_VERSION,
    MAX_CALL_PATH, PATH_VERSION, REROUTE_VERSION,
};
use wzp_proto::path_addrs::MAX_CALL_PATHS;
use wzp_proto::signal::HangupReason;
use wzp_proto::Fingerprint;

use super::pathvec::Delta;
use super::{Action, FederationCore, Phase, Route};

/// An offer not answered within this is ended on every relay of its path
/// (the callee's relay rings for 30 s; this only bounds what a relay keeps
/// for a call whose ends went silent).
pub const CALL_SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Most calls a relay carries across federation at once.
pub const MAX_CALLS: usize = 4096;
/// How long the caller's relay looks for another path to the callee when an
/// call's path loses a link, before both ends hang up.
pub const REROUTE_WAIT: Duration = Duration::from_secs(5);
/// A `reroute` not refused within this (a round trip of the path, with
/// room for loaded relays) is taken as carried.
pub const REROUTE_CONFIRM: Duration = Duration::from_secs(2);
/// How long the callee's relay waits for the new path (the caller's
/// relay's search, and the hops of its `reroute`).
pub const REROUTE_ARRIVAL_WAIT: Duration = Duration::from_secs(10);
/// Most steps of its party an end relay holds while a call's path is lost
/// (ringing, the answer: two in a call's life).
pub const MAX_PENDING: usize = 4;
/// Between two tries of the caller's relay when a `reroute` came back as
/// `path_lost` (a relay on the way had no route yet).
pub const REROUTE_RETRY: Duration = Duration::from_millis(250);

/// Call signals refused or dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallCounters {
    /// Offers sent on towards the callee's relay.
    pub offers_forwarded: u64,
    /// Offers handed to a local callee.
    pub offers_delivered: u64,
    /// Offers whose path held this relay, or whose route led back into it.
    pub loops: u64,
    /// Signals that would cross more than [`MAX_CALL_PATH`] relays.
    pub hop_limit: u64,
    /// Offers for a user no relay announces.
    pub not_found: u64,
    /// Offers refused otherwise (call id in use, too many calls).
    pub refused: u64,
    /// Signals for a call not carried here, or from a relay not on its path,
    /// or going the wrong way.
    pub unknown_call: u64,
    /// Signals whose path does not end with the sending relay.
    pub path_not_from_sender: u64,
    /// Calls ended because a link of their path went down.
    pub ended_by_link: u64,
    /// Calls ended unanswered after [`CALL_SETUP_TIMEOUT`].
    pub setup_timeouts: u64,
    /// Answered calls whose path lost a link here, or told so (`path_lost`).
    pub paths_lost: u64,
    /// `reroute`s sent by the caller's relay.
    pub reroutes_sent: u64,
    /// Calls carried on a new path: the callee's relay took a `reroute`.
    pub rerouted: u64,
    /// Calls ended because no new path came within the wait.
    pub reroute_timeouts: u64,
    /// `reroute`s refused (no route on, a loop, the hop limit, a path that
    /// does not start at the call's caller relay, a call that ended).
    pub reroutes_refused: u64,
    /// `path` events (a party's sealed addresses) passed on.
    pub paths_forwarded: u64,
    /// `path` events not passed on: the next relay speaks a federation
    /// version below 3, the call is not answered, or the leg carried its
    /// [`MAX_LEG_PATHS`] already. The call's media stays on the relays.
    pub paths_dropped: u64,
    /// `hold` events passed on.
    pub holds_forwarded: u64,
    /// `hold` events not passed on: the next relay predates federation
    /// version 5, the call is not answered, or its path is lost.
    pub holds_dropped: u64,
    /// Offers sent as a fork: a leg to one of several relays the callee is
    /// on ([`ForkGroup`]).
    pub forks_sent: u64,
    /// Relays the callee is on that no fork went to: the link towards it
    /// predates [`FORK_VERSION`] or is down.
    pub forks_unsent: u64,
    /// Forks hung up by the caller's relay: another answered or declined.
    pub forks_cancelled: u64,
    /// Forks answered `busy` (the devices on the fork's relay are all in
    /// other calls), kept open for the call's outcome.
    pub forks_busy: u64,
    /// `busy` forks ended here because the next relay towards the caller
    /// predates [`BUSY_VERSION`]: it was passed as a `hangup` `busy`, and
    /// the busy relay tells its devices of a missed call at once.
    pub busy_ended_early: u64,
}

/// At the caller's relay, a call ringing the callee's devices on several
/// relays: one leg (a fork, [`CallSignal::fork`]) to each. The first answer
/// takes the call and the other forks are hung up (`answered_elsewhere`); a
/// decline declines it for the person (`declined_elsewhere` to the rest);
/// other refusals end their fork only, and the caller hears the most
/// telling one when none is left (busy before no answer before not online).
/// A fork answered `busy` stays open ([`ForkGroup::busy`]) and is ended
/// with the call's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct ForkGroup {
    /// Forks not ended yet, by the relay each rings.
    pub forks: Vec<RelayId>,
    /// Forks whose relay answered `busy` ([`CallEvent::Busy`]): nothing
    /// rings there; each is hung up with the call's outcome
    /// (`answered_elsewhere`, `declined_elsewhere`, or `busy` when no
    /// device took it), which tells that relay whether its devices missed
    /// a call.
    pub busy: Vec<RelayId>,
    /// The fork that answered.
    pub answered: Option<RelayId>,
    /// Ringing went to the caller's side.
    rung: bool,
    /// The callee's devices on this relay ring too: when every fork has
    /// ended the signal service decides whether the call has.
    pub also_here: bool,
    /// The most telling refusal of a fork that ended.
    refusal: Option<(HangupReason, Option<String>)>,
}

impl ForkGroup {
    /// Keeps `reason` if it says more than the refusal kept.
    fn note_refusal(&mut self, reason: HangupReason, message: Option<String>) {
        if self
            .refusal
            .as_ref()
            .is_none_or(|(r, _)| refusal_rank(reason) > refusal_rank(*r))
        {
            self.refusal = Some((reason, message));
        }
    }
}

/// The callee of a local offer on this relay ([`FederationCore::local_offer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Here {
    /// Not here: the federation rings it wherever it is.
    Nothing,
    /// Its devices here ring (the signal service's): the other relays ring
    /// too, and busy forks wait for the devices here.
    Ringing,
    /// In another call here: its other relays ring, nothing here.
    Busy,
}

/// How much a fork's refusal says, for the one the caller hears.
fn refusal_rank(r: HangupReason) -> u8 {
    match r {
        HangupReason::Busy => 3,
        HangupReason::Timeout => 2,
        HangupReason::NotOnline => 0,
        _ => 1,
    }
}

/// Most `path` events one relay passes on for a call, both ways together
/// (each end relay lets [`MAX_CALL_PATHS`] through from its party).
pub const MAX_LEG_PATHS: u8 = 2 * MAX_CALL_PATHS;

/// One call as a relay on its path sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct CallLeg {
    /// The caller's call id.
    pub call_id: String,
    /// Which fork of the call this is ([`CallSignal::fork`]).
    pub fork: Option<RelayId>,
    /// Who offered.
    pub caller: Fingerprint,
    /// Who is called.
    pub callee: Fingerprint,
    /// The call room's id.
    pub room: RoomId,
    /// The neighbour towards the caller; `None`: the caller is on this relay.
    pub toward_caller: Option<RelayId>,
    /// The neighbour towards the callee; `None`: the callee is on this relay.
    pub toward_callee: Option<RelayId>,
    /// Accepted: the call room is bridged with the neighbours.
    pub answered: bool,
    /// A fork whose relay answered `busy` ([`CallEvent::Busy`]): open,
    /// ringing nothing, until the caller's relay ends it.
    pub busy: bool,
    /// The caller's relay (the first of the offer's path).
    pub caller_relay: RelayId,
    /// The caller is on this relay.
    pub caller_here: bool,
    /// The callee is on this relay.
    pub callee_here: bool,
    /// On an end relay of a call: the path is lost and this relay
    /// waits for a new one (its side towards the far party is `None` then).
    pub lost: Option<LostPath>,
    /// When this relay first carried the call.
    pub since: Instant,
    /// The local party's steps (ringing, the answer) while the path is
    /// lost, sent on the new one when it comes.
    pending: Vec<CallSignal>,
    setup_deadline: Instant,
    /// `path` events passed on for this call.
    paths: u8,
}

/// An end relay's call whose path lost a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostPath {
    /// The call ends unless a new path is found (the caller's relay) or
    /// arrives (the callee's relay) by then.
    pub until: Instant,
    /// When the caller's relay tries a route again.
    retry_at: Option<Instant>,
    /// The caller's relay sent a `reroute`: unless it comes back refused
    /// (`path_lost`, within a round trip of the path) by then, the call is
    /// carried again (sooner when the callee's relay is heard on it).
    carried_at: Option<Instant>,
    /// What was lost, for the hangup if nothing comes.
    message: String,
}

/// What a lost path's timers say now.
enum LostDue {
    GiveUp,
    Retry,
    Carried,
}

impl LostPath {
    /// Its next timer: while a `reroute` is out, when it counts as carried
    /// (the wait does not end meanwhile); else the retry or the wait's end.
    fn next_due(&self) -> Option<Instant> {
        match self.carried_at {
            Some(c) => Some(c),
            None => Some(self.retry_at.map_or(self.until, |r| r.min(self.until))),
        }
    }

    fn due(&self, now: Instant) -> Option<LostDue> {
        if let Some(c) = self.carried_at {
            return (c <= now).then_some(LostDue::Carried);
        }
        if self.until <= now {
            Some(LostDue::GiveUp)
        } else if self.retry_at.is_some_and(|r| r <= now) {
            Some(LostDue::Retry)
        } else {
            None
        }
    }
}

impl CallLeg {
    fn neighbours(&self) -> impl Iterator<Item = RelayId> {
        self.toward_caller.into_iter().chain(self.toward_callee)
    }

    fn is_end(&self) -> bool {
        self.caller_here || self.callee_here
    }

    /// A step of this leg of the call.
    fn signal(&self, event: CallEvent) -> CallSignal {
        CallSignal {
            call_id: self.call_id.clone(),
            caller: self.caller,
            callee: self.callee,
            fork: self.fork,
            event,
        }
    }
}

/// The calls a core carries.
#[derive(Debug, Default)]
pub(super) struct CallTable {
    /// By leg key ([`CallSignal::leg_key`]).
    legs: std::collections::BTreeMap<String, CallLeg>,
    /// Forked calls offered from this relay, by call id.
    groups: std::collections::BTreeMap<String, ForkGroup>,
    /// Answered calls by room: the rooms bridged for calls.
    by_room: std::collections::HashMap<RoomId, String>,
    counters: CallCounters,
}

impl FederationCore {
    /// Call signal counts by reason.
    pub fn call_counters(&self) -> &CallCounters {
        &self.calls.counters
    }

    /// The leg `key` ([`CallSignal::leg_key`]: a call id, or for a fork
    /// `<id>@<relay>`) as this relay carries it.
    pub fn call_leg(&self, key: &str) -> Option<&CallLeg> {
        self.calls.legs.get(key)
    }

    /// The forks of call `call_id`, offered from this relay.
    pub fn fork_group(&self, call_id: &str) -> Option<&ForkGroup> {
        self.calls.groups.get(call_id)
    }

    /// Calls carried across federation.
    pub fn call_count(&self) -> usize {
        self.calls.legs.len()
    }

    /// Every call carried across federation, by id.
    pub fn call_legs(&self) -> impl Iterator<Item = (&String, &CallLeg)> {
        self.calls.legs.iter()
    }

    /// The room name (`call-<id>`) of an answered call's room id.
    pub fn call_room_name(&self, room: RoomId) -> Option<String> {
        self.calls
            .by_room
            .get(&room)
            .and_then(|key| self.calls.legs.get(key))
            .map(|l| format!("{}{}", wzp_proto::sni::CALL_PREFIX, l.call_id))
    }

    /// The rooms of answered calls.
    pub(super) fn bridged_call_rooms(&self) -> impl Iterator<Item = &RoomId> {
        self.calls.by_room.keys()
    }

    /// Whether the call room `room` is bridged with `peer` (an answered call
    /// whose path has `peer` next to this relay).
    pub(super) fn call_bridges(&self, peer: RelayId, room: RoomId) -> bool {
        self.calls
            .by_room
            .get(&room)
            .and_then(|id| self.calls.legs.get(id))
            .is_some_and(|l| l.answered && l.neighbours().any(|n| n == peer))
    }

    /// Whether `room` is an answered call room with a party on this relay
    /// (its local members are announced along the path).
    pub(super) fn call_room_is_local(&self, room: RoomId) -> bool {
        self.calls
            .by_room
            .get(&room)
            .and_then(|id| self.calls.legs.get(id))
            .is_some_and(CallLeg::is_end)
    }

    /// Per up peer, the call rooms bridged with it (for the room table's
    /// eligibility).
    pub(super) fn call_bridged_rooms(&self) -> Vec<(RelayId, RoomId)> {
        self.calls
            .legs
            .iter()
            .filter(|(key, l)| self.holds_room(key, l))
            .flat_map(|(_, l)| l.neighbours().map(|n| (n, l.room)))
            .collect()
    }

    /// When the next unanswered call's setup runs out.
    pub(super) fn next_call_deadline(&self) -> Option<Instant> {
        let setup = self
            .calls
            .legs
            .values()
            .filter(|l| !l.answered)
            .map(|l| l.setup_deadline);
        let lost = self
            .calls
            .legs
            .values()
            .filter_map(|l| l.lost.as_ref())
            .filter_map(LostPath::next_due);
        setup.chain(lost).min()
    }

    /// Ends the calls unanswered past [`CALL_SETUP_TIMEOUT`].
    pub(super) fn expire_calls(&mut self, now: Instant) {
        let due: Vec<String> = self
            .calls
            .legs
            .iter()
            .filter(|(_, l)| !l.answered && l.setup_deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            self.calls.counters.setup_timeouts += 1;
            let msg = format!("no answer within {} s", CALL_SETUP_TIMEOUT.as_secs());
            self.end_call_both_ways(&id, HangupReason::Timeout, msg);
        }
        let lost: Vec<(String, LostDue)> = self
            .calls
            .legs
            .iter()
            .filter_map(|(id, l)| Some((id.clone(), l.lost.as_ref()?.due(now)?)))
            .collect();
        for (id, due) in lost {
            match due {
                LostDue::GiveUp => self.reroute_timed_out(&id),
                LostDue::Retry => self.try_reroute(&id, now),
                LostDue::Carried => {
                    if let Some(l) = self.calls.legs.get_mut(&id) {
                        l.lost = None;
                    }
                }
            }
        }
    }

    /// Whether `peer`'s link is up at a version that knows `path_lost` and
    /// `reroute`.
    fn speaks_reroute(&self, peer: RelayId) -> bool {
        self.link_version(peer)
            .is_some_and(|v| v >= REROUTE_VERSION)
    }

    /// Whether `peer`'s link is up at a version that carries forks.
    fn speaks_forks(&self, peer: RelayId) -> bool {
        self.link_version(peer).is_some_and(|v| v >= FORK_VERSION)
    }

    /// This end relay's call lost its path (or, at the caller's
    /// relay, a `reroute` came back refused): wait for (the callee's relay)
    /// or look for (the caller's relay) a new one. The wait runs from the
    /// first loss until a new path is confirmed, however many tries.
    fn path_lost_at_end(&mut self, call_id: &str, message: String, now: Instant) {
        let Some(leg) = self.calls.legs.get_mut(call_id) else {
            return;
        };
        let first = leg.lost.is_none();
        if first {
            self.calls.counters.paths_lost += 1;
            let wait = if leg.caller_here {
                REROUTE_WAIT
            } else {
                REROUTE_ARRIVAL_WAIT
            };
            leg.lost = Some(LostPath {
                until: now + wait,
                retry_at: None,
                carried_at: None,
                message,
            });
        } else if let Some(p) = leg.lost.as_mut() {
            // A relay on the way had no route yet: try again shortly.
            p.carried_at = None;
            p.retry_at = Some(now + REROUTE_RETRY);
        }
        let old = if leg.caller_here {
            leg.toward_callee.take()
        } else {
            leg.toward_caller.take()
        };
        // What the old neighbour said about the room is void (its link took
        // it along, or it forgot the call); what this relay announces now
        // goes to nobody.
        let room = leg.room;
        let caller_here = leg.caller_here;
        if let Some(old) = old {
            self.forget_call_room_from(room, old);
        }
        self.resync_call_room(room);
        if first && caller_here {
            self.try_reroute(call_id, now);
        }
    }

    /// The caller's relay sends the call along its present route to the
    /// callee, or tries again in [`REROUTE_RETRY`]. The path stays lost
    /// until the callee's relay is heard on the new one
    /// ([`FederationCore::call_room_heard`]).
    pub(super) fn try_reroute(&mut self, call_id: &str, now: Instant) {
        let Some(leg) = self.calls.legs.get(call_id) else {
            return;
        };
        if !leg.caller_here || leg.lost.is_none() || leg.toward_callee.is_some() {
            return;
        }
        let next = match self.fork_route(&leg.callee, leg.fork) {
            Route::DirectPeer(n) => Some(n),
            Route::Via(v) => v.first().copied(),
            _ => None,
        }
        .filter(|&n| self.speaks_reroute(n))
        .filter(|&n| leg.fork.is_none() || self.speaks_forks(n));
        let leg = self.calls.legs.get_mut(call_id).expect("leg checked above");
        let Some(p) = leg.lost.as_mut() else {
            return;
        };
        let Some(next) = next else {
            p.retry_at = Some(now + REROUTE_RETRY);
            return;
        };
        p.retry_at = None;
        p.carried_at = Some(now + REROUTE_CONFIRM);
        leg.toward_callee = Some(next);
        let signal = leg.signal(CallEvent::Reroute {
            answered: leg.answered,
        });
        let room = leg.room;
        self.calls.counters.reroutes_sent += 1;
        // Before the room's announcements: the next relay bridges the room
        // when the `reroute` reaches it.
        self.send(next, signal.message(vec![self.me]));
        self.resync_call_room(room);
    }

    /// `peer` announced participants of `room`: if it is the new neighbour
    /// of a call whose path this relay (the caller's) replaced, the callee's
    /// relay took the new path and the call is carried again.
    pub(super) fn call_room_heard(&mut self, peer: RelayId, room: RoomId) {
        let Some(id) = self.calls.by_room.get(&room) else {
            return;
        };
        if let Some(leg) = self.calls.legs.get_mut(id) {
            if leg.caller_here && leg.toward_callee == Some(peer) {
                leg.lost = None;
            }
        }
    }

    /// No new path came: the call ends here and the local party is told.
    fn reroute_timed_out(&mut self, call_id: &str) {
        let Some(leg) = self.end_leg(call_id) else {
            return;
        };
        self.calls.counters.reroute_timeouts += 1;
        if let Some(next) = leg.toward_callee {
            // A `reroute` went out but the callee's relay was never heard on
            // the new path: whatever of it stands is ended.
            let hangup = leg.signal(CallEvent::Hangup {
                reason: HangupReason::Error,
                message: Some("the call's new path did not come up".into()),
            });
            self.send(next, hangup.message(vec![self.me]));
        }
        let message = leg
            .lost
            .as_ref()
            .map(|p| p.message.clone())
            .unwrap_or_default();
        let far = if leg.caller_here { "callee" } else { "caller" };
        let wait = if leg.caller_here {
            REROUTE_WAIT
        } else {
            REROUTE_ARRIVAL_WAIT
        };
        self.deliver(leg.signal(CallEvent::Hangup {
            reason: HangupReason::Error,
            message: Some(format!(
                "{message}, and no other path to the {far} came within {} s",
                wait.as_secs()
            )),
        }));
    }

    /// Drops what `peer` announced about a call's room (it is no longer the
    /// call's neighbour).
    fn forget_call_room_from(&mut self, room: RoomId, peer: RelayId) {
        let elig = self.room_eligibility_for(room);
        let keys: Vec<_> = self
            .rooms
            .learned_from(peer)
            .filter(|((r, _), _)| *r == room)
            .map(|(k, _)| *k)
            .collect();
        let mut deltas = Vec::new();
        for k in keys {
            deltas.extend(self.rooms.learn(peer, k, None, &elig));
        }
        self.send_room_deltas(deltas);
    }

    /// Re-announces (or withdraws) what this relay tells its peers about an
    /// answered call's room after the call's neighbours changed.
    fn resync_call_room(&mut self, room: RoomId) {
        let elig = self.room_eligibility_for(room);
        let mut keys: Vec<_> = self
            .rooms
            .keys()
            .filter(|(r, _)| *r == room)
            .copied()
            .collect();
        if !keys.contains(&(room, self.me)) {
            keys.push((room, self.me));
        }
        let mut deltas = Vec::new();
        for k in keys {
            deltas.extend(self.rooms.sync_key(&k, &elig));
        }
        self.send_room_deltas(deltas);
        self.room_changed(room);
    }

    /// The link to `peer` is gone. A call across it looks for another
    /// path: an end relay waits for or looks for one, a relay between tells
    /// the end beyond it (`path_lost`, after its route changes) and forgets
    /// the call. A call whose other neighbour predates rerouting ends, and
    /// both ends are told (the side beyond the dead link by its own
    /// neighbour).
    pub(super) fn end_calls_via(&mut self, peer: RelayId, now: Instant) {
        let ids: Vec<String> = self
            .calls
            .legs
            .iter()
            .filter(|(_, l)| l.neighbours().any(|n| n == peer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            let msg = format!(
                "the federation link between relays {} and {peer} was lost",
                self.me
            );
            let Some(leg) = self.calls.legs.get(&id) else {
                continue;
            };
            if leg.is_end() {
                self.path_lost_at_end(&id, msg, now);
                continue;
            }
            let other = leg.neighbours().find(|&n| n != peer);
            if other.is_some_and(|o| self.speaks_reroute(o)) {
                self.calls.counters.paths_lost += 1;
                self.pass_path_lost(&id, peer, msg);
                continue;
            }
            self.calls.counters.ended_by_link += 1;
            self.end_call_both_ways(&id, HangupReason::Error, msg);
        }
    }

    /// A relay between the call's ends: the path is lost on `from`'s side;
    /// the other side is told (after this relay's route changes) and the
    /// call is forgotten here.
    fn pass_path_lost(&mut self, call_id: &str, from: RelayId, message: String) {
        let Some(leg) = self.end_leg(call_id) else {
            return;
        };
        let Some(other) = leg.neighbours().find(|&n| n != from) else {
            return;
        };
        let signal = leg.signal(CallEvent::PathLost {
            message: Some(message),
        });
        if self.speaks_reroute(other) {
            self.send_after_flush(other, signal.message(vec![self.me]));
        }
    }

    /// Ends `call_id` here and sends a hangup to each side still reachable.
    fn end_call_both_ways(&mut self, call_id: &str, reason: HangupReason, message: String) {
        let Some(leg) = self.end_leg(call_id) else {
            return;
        };
        let signal = |leg: &CallLeg| {
            leg.signal(CallEvent::Hangup {
                reason,
                message: Some(message.clone()),
            })
        };
        for (side, here) in [
            (leg.toward_caller, leg.caller_here),
            (leg.toward_callee, leg.callee_here),
        ] {
            match side {
                Some(peer) => self.send(peer, signal(&leg).message(vec![self.me])),
                None if here => self.deliver(signal(&leg)),
                None => {}
            }
        }
    }

    /// A call signal from this relay's signal service (a local party).
    pub(super) fn local_call(&mut self, s: CallSignal, now: Instant) {
        if let CallEvent::Offer { .. } = s.event {
            return self.local_offer(s, now, Here::Nothing);
        }
        let mut s = s;
        if let Some(g) = self.calls.groups.get(&s.call_id) {
            // The caller's step of a forked call: to the fork that
            // answered; before an answer only a hangup, to every fork.
            match g.answered {
                Some(f) => s.fork = Some(f),
                None => {
                    if let CallEvent::Hangup { reason, message } = &s.event {
                        let forks = self
                            .calls
                            .groups
                            .remove(&s.call_id)
                            .map(|g| [g.forks, g.busy].concat())
                            .unwrap_or_default();
                        let message = message.clone().unwrap_or_default();
                        for f in forks {
                            self.hang_up_fork(&s.call_id, f, *reason, message.clone());
                        }
                    } else {
                        self.calls.counters.unknown_call += 1;
                    }
                    return;
                }
            }
        } else if !self.calls.legs.contains_key(&s.call_id) {
            // The callee's step of a fork that rang here.
            s.fork = Some(self.me);
        }
        if matches!(s.event, CallEvent::Hangup { .. }) {
            self.calls.groups.remove(&s.call_id);
        }
        let Some(leg) = self.calls.legs.get(&s.leg_key()) else {
            // A hangup for a call no longer carried here is the ordinary
            // crossing of two endings (or of a call whose callee was on no
            // other relay with its devices here answering): not counted.
            if !matches!(s.event, CallEvent::Hangup { .. }) {
                self.calls.counters.unknown_call += 1;
            }
            return;
        };
        if (leg.caller, leg.callee) != (s.caller, s.callee) {
            self.calls.counters.unknown_call += 1;
            return;
        }
        if matches!(
            s.event,
            CallEvent::PathLost { .. } | CallEvent::Reroute { .. }
        ) {
            // Only relays send these.
            self.calls.counters.unknown_call += 1;
            return;
        }
        // The local party's side is the one with no neighbour.
        let target = match s.event.towards_callee() {
            Some(true) if leg.caller_here => leg.toward_callee,
            Some(false) if leg.callee_here => leg.toward_caller,
            None if leg.caller_here => leg.toward_callee,
            None if leg.callee_here => leg.toward_caller,
            _ => {
                self.calls.counters.unknown_call += 1;
                return;
            }
        };
        let Some(target) = target else {
            if leg.lost.is_none() {
                self.calls.counters.unknown_call += 1;
            } else if matches!(s.event, CallEvent::Path { .. }) {
                // Addresses are not kept for a path to come: the parties'
                // media stays on the relays.
                self.calls.counters.paths_dropped += 1;
            } else if matches!(s.event, CallEvent::Hold { .. }) {
                // A hold notice is not kept for a path to come either.
                self.calls.counters.holds_dropped += 1;
            } else if matches!(s.event, CallEvent::Hangup { .. }) {
                // The party hung up while the path was lost: the call ends
                // here; the far end's wait ends it there.
                self.end_leg(&s.leg_key());
            } else if leg.pending.len() < MAX_PENDING {
                // Ringing or the answer while the path is lost: sent on the
                // new path when it comes (the answer bridges the room here
                // now, as it would on its way out).
                self.advance(&s);
                if let Some(leg) = self.calls.legs.get_mut(&s.leg_key()) {
                    leg.pending.push(s);
                }
            } else {
                self.calls.counters.unknown_call += 1;
            }
            return;
        };
        if matches!(s.event, CallEvent::Path { .. })
            && !self.path_may_pass(&s.leg_key(), Some(target))
        {
            return;
        }
        if matches!(s.event, CallEvent::Hold { .. }) && !self.hold_may_pass(&s.leg_key(), target) {
            return;
        }
        if let CallEvent::Busy { .. } = &s.event {
            if self.busy_may_come(&s) {
                self.pass_busy(s, target, Vec::new());
            }
            return;
        }
        self.advance(&s);
        self.send(target, s.message(vec![self.me]));
    }

    /// An offer from a caller on this relay. The callee on one relay: a
    /// leg to it, as ever. On several (or on this one too, `also_here`: the
    /// signal service rings the devices here): a fork to each relay that
    /// the link towards it can carry one to ([`FORK_VERSION`]).
    pub(super) fn local_offer(&mut self, s: CallSignal, now: Instant, here: Here) {
        let origins: Vec<RelayId> = self
            .origins_of(&s.callee)
            .into_iter()
            .filter(|o| *o != self.me)
            .collect();
        let others_only = here != Here::Nothing;
        if !others_only && origins.len() <= 1 {
            return self.local_offer_one(s, now);
        }
        if let Some(why) = self.offer_refusal(&s) {
            self.calls.counters.refused += 1;
            return self.refuse_local_offer(&s, HangupReason::Error, why);
        }
        let mut forks = Vec::new();
        for origin in origins {
            let next = match self.fork_route(&s.callee, Some(origin)) {
                Route::DirectPeer(n) => n,
                Route::Via(v) if !v.is_empty() => v[0],
                _ => continue,
            };
            let fork = CallSignal {
                fork: Some(origin),
                ..s.clone()
            };
            if !self.is_up(next)
                || self.link_version(next).is_none_or(|v| v < FORK_VERSION)
                || self.offer_refusal(&fork).is_some()
            {
                self.calls.counters.forks_unsent += 1;
                continue;
            }
            self.insert_leg(&fork, self.me, None, Some(next), now);
            self.calls.counters.offers_forwarded += 1;
            self.calls.counters.forks_sent += 1;
            self.send(next, fork.message(vec![self.me]));
            forks.push(origin);
        }
        if forks.is_empty() {
            if others_only {
                // No other relay will ring (the devices here ring, or the
                // callee is busy here).
                let msg = format!("{} is on no other relay a fork reaches", s.callee);
                return self.refuse_local_offer(&s, HangupReason::NotOnline, msg);
            }
            // No link towards them carries forks: the nearest relay alone.
            return self.local_offer_one(s, now);
        }
        self.calls.groups.insert(
            s.call_id.clone(),
            ForkGroup {
                forks,
                busy: Vec::new(),
                answered: None,
                rung: false,
                also_here: here == Here::Ringing,
                refusal: None,
            },
        );
    }

    /// The callee's devices here ring now for `call_id` (its call here
    /// ended while its other relays rang): busy forks wait for them.
    pub(super) fn devices_ring_here(&mut self, call_id: &str) {
        if let Some(g) = self.calls.groups.get_mut(call_id) {
            g.also_here = true;
        }
    }

    /// A step for the local party. At the caller's relay of a forked call
    /// the forks' steps are merged first ([`ForkGroup`]).
    fn deliver(&mut self, s: CallSignal) {
        match s.fork {
            Some(fork) if self.calls.groups.contains_key(&s.call_id) => self.fork_step(s, fork),
            _ => self.actions.push(Action::Call(s)),
        }
    }

    fn fork_step(&mut self, s: CallSignal, fork: RelayId) {
        let call_id = s.call_id.clone();
        let Some(g) = self.calls.groups.get_mut(&call_id) else {
            return;
        };
        let busy_fork = g.busy.contains(&fork);
        let hangup = matches!(s.event, CallEvent::Hangup { .. });
        let ringing = matches!(s.event, CallEvent::Ringing { .. });
        // A busy fork's steps: its own end, or ringing once the device
        // there is free.
        let known = g.forks.contains(&fork) || (busy_fork && (hangup || ringing));
        if !known {
            self.calls.counters.unknown_call += 1;
            return;
        }
        match &s.event {
            CallEvent::Ringing { .. } => {
                if busy_fork {
                    g.busy.retain(|f| *f != fork);
                    g.forks.push(fork);
                }
                if g.answered.is_none() && !g.rung {
                    g.rung = true;
                    self.actions.push(Action::Call(s));
                }
            }
            CallEvent::Answer { .. } => {
                if g.answered.is_none() {
                    g.answered = Some(fork);
                    let others: Vec<RelayId> = g
                        .forks
                        .iter()
                        .chain(&g.busy)
                        .copied()
                        .filter(|f| *f != fork)
                        .collect();
                    g.forks = vec![fork];
                    g.busy.clear();
                    self.actions.push(Action::Call(s));
                    for f in others {
                        let why = "answered on another device".to_string();
                        self.hang_up_fork(&call_id, f, HangupReason::AnsweredElsewhere, why);
                    }
                } else if g.answered != Some(fork) {
                    // Crossed the answer that took the call.
                    g.forks.retain(|f| *f != fork);
                    let why = "answered on another device".to_string();
                    self.hang_up_fork(&call_id, fork, HangupReason::AnsweredElsewhere, why);
                }
            }
            CallEvent::Busy { message } => {
                g.forks.retain(|f| *f != fork);
                if g.answered.is_some() {
                    // Crossed the answer that took the call.
                    let why = "answered on another device".to_string();
                    self.hang_up_fork(&call_id, fork, HangupReason::AnsweredElsewhere, why);
                    return;
                }
                self.calls.counters.forks_busy += 1;
                g.busy.push(fork);
                g.note_refusal(HangupReason::Busy, message.clone());
                self.fork_group_settle(s);
            }
            CallEvent::Hangup { reason, message } => {
                // The fork's leg ended as the hangup passed.
                if g.answered == Some(fork) {
                    self.calls.groups.remove(&call_id);
                    self.actions.push(Action::Call(s));
                    return;
                }
                g.forks.retain(|f| *f != fork);
                g.busy.retain(|f| *f != fork);
                if g.answered.is_some() || busy_fork {
                    // A busy fork that ended on its own told its refusal
                    // already.
                    if busy_fork && g.answered.is_none() {
                        self.fork_group_settle(s);
                    }
                    return;
                }
                if *reason == HangupReason::Declined {
                    // Declined on one device: declined for the person.
                    let others =
                        [std::mem::take(&mut g.forks), std::mem::take(&mut g.busy)].concat();
                    self.calls.groups.remove(&call_id);
                    self.actions.push(Action::Call(s));
                    for f in others {
                        let why = "declined on another device".to_string();
                        self.hang_up_fork(&call_id, f, HangupReason::DeclinedElsewhere, why);
                    }
                    return;
                }
                g.note_refusal(*reason, message.clone());
                self.fork_group_settle(s);
            }
            CallEvent::Path { .. } | CallEvent::Hold { .. } if g.answered == Some(fork) => {
                self.actions.push(Action::Call(s));
            }
            _ => self.calls.counters.unknown_call += 1,
        }
    }

    /// A fork of an unanswered call refused or went `busy` (`s`, its step):
    /// when nothing rings any more, the caller's side hears the most
    /// telling refusal and the busy forks that nobody took it. With the
    /// callee's devices here ringing too, busy forks wait for the signal
    /// service's outcome instead (it hangs them up with the call).
    fn fork_group_settle(&mut self, s: CallSignal) {
        let call_id = s.call_id.clone();
        let Some(g) = self.calls.groups.get_mut(&call_id) else {
            return;
        };
        if !g.forks.is_empty() || (g.also_here && !g.busy.is_empty()) {
            return;
        }
        let refusal = g.refusal.take();
        let busy = std::mem::take(&mut g.busy);
        self.calls.groups.remove(&call_id);
        let (reason, message) = refusal.unwrap_or((HangupReason::Normal, None));
        self.actions.push(Action::Call(CallSignal {
            event: CallEvent::Hangup { reason, message },
            ..s
        }));
        for f in busy {
            let why = "no other device answered".to_string();
            self.hang_up_fork(&call_id, f, HangupReason::Busy, why);
        }
    }

    /// The caller's relay ends fork `fork` of `call_id` (another device
    /// answered or declined, or the caller hung up).
    fn hang_up_fork(&mut self, call_id: &str, fork: RelayId, reason: HangupReason, why: String) {
        let key = wzp_proto::federation::leg_key(call_id, Some(fork));
        let Some(leg) = self.end_leg(&key) else {
            return;
        };
        self.calls.counters.forks_cancelled += 1;
        if let Some(next) = leg.toward_callee {
            let hangup = leg.signal(CallEvent::Hangup {
                reason,
                message: Some(why),
            });
            self.send(next, hangup.message(vec![self.me]));
        }
    }

    /// Answers the local caller's offer with a hangup.
    fn refuse_local_offer(&mut self, s: &CallSignal, reason: HangupReason, message: String) {
        self.actions.push(Action::Call(CallSignal {
            event: CallEvent::Hangup {
                reason,
                message: Some(message),
            },
            ..s.clone()
        }));
    }

    fn local_offer_one(&mut self, s: CallSignal, now: Instant) {
        if let Some(why) = self.offer_refusal(&s) {
            self.calls.counters.refused += 1;
            return self.refuse_local_offer(&s, HangupReason::Error, why);
        }
        let next = match self.route(&s.callee) {
            Route::DirectPeer(n) => n,
            Route::Via(v) if !v.is_empty() => v[0],
            _ => {
                self.calls.counters.not_found += 1;
                let msg = format!(
                    "{} is not online at this relay or any linked relay",
                    s.callee
                );
                return self.refuse_local_offer(&s, HangupReason::NotOnline, msg);
            }
        };
        if !self.is_up(next) {
            self.calls.counters.not_found += 1;
            let msg = format!("the federation link towards {} is down", s.callee);
            return self.refuse_local_offer(&s, HangupReason::NotOnline, msg);
        }
        self.insert_leg(&s, self.me, None, Some(next), now);
        self.calls.counters.offers_forwarded += 1;
        self.send(next, s.message(vec![self.me]));
    }

    /// Why an offer cannot be carried here, if it cannot.
    fn offer_refusal(&self, s: &CallSignal) -> Option<String> {
        if self.calls.legs.contains_key(&s.leg_key())
            || self.calls.groups.contains_key(&s.leg_key())
        {
            return Some(format!(
                "call id {} is already in use on relay {}; pick a fresh random id",
                s.call_id, self.label
            ));
        }
        if self.calls.legs.len() >= MAX_CALLS {
            return Some(format!(
                "relay {} carries {MAX_CALLS} federated calls already; try later",
                self.label
            ));
        }
        if self.global_rooms.contains(&s.room()) {
            return Some(format!(
                "call id {} names a global room on relay {}; pick a fresh random id",
                s.call_id, self.label
            ));
        }
        None
    }

    fn insert_leg(
        &mut self,
        s: &CallSignal,
        caller_relay: RelayId,
        toward_caller: Option<RelayId>,
        toward_callee: Option<RelayId>,
        now: Instant,
    ) {
        self.calls.legs.insert(
            s.leg_key(),
            CallLeg {
                call_id: s.call_id.clone(),
                fork: s.fork,
                caller: s.caller,
                callee: s.callee,
                room: s.room(),
                toward_caller,
                toward_callee,
                answered: false,
                busy: false,
                caller_relay,
                caller_here: toward_caller.is_none(),
                callee_here: toward_callee.is_none(),
                lost: None,
                since: now,
                pending: Vec::new(),
                setup_deadline: now + CALL_SETUP_TIMEOUT,
                paths: 0,
            },
        );
    }

    /// Whether a `path` event of `call_id` goes on to `next`: an answered
    /// call, a neighbour at federation version 3 or later, and within
    /// [`MAX_LEG_PATHS`]; counted either way.
    fn path_may_pass(&mut self, call_id: &str, next: Option<RelayId>) -> bool {
        let speaks = next.is_some_and(|n| self.link_version(n).is_some_and(|v| v >= PATH_VERSION));
        let Some(leg) = self.calls.legs.get_mut(call_id) else {
            return false;
        };
        if !speaks || !leg.answered || leg.paths >= MAX_LEG_PATHS {
            self.calls.counters.paths_dropped += 1;
            return false;
        }
        leg.paths += 1;
        self.calls.counters.paths_forwarded += 1;
        true
    }

    /// Whether a `hold` for `call_id` goes on to `next`: the call is
    /// answered and the link speaks [`HOLD_VERSION`] (else it is dropped and
    /// counted: the far party is not told, the hold itself stands).
    fn hold_may_pass(&mut self, call_id: &str, next: RelayId) -> bool {
        let speaks = self.link_version(next).is_some_and(|v| v >= HOLD_VERSION);
        let answered = self.calls.legs.get(call_id).is_some_and(|l| l.answered);
        if speaks && answered {
            self.calls.counters.holds_forwarded += 1;
            true
        } else {
            self.calls.counters.holds_dropped += 1;
            false
        }
    }

    fn is_up(&self, peer: RelayId) -> bool {
        matches!(
            self.links.get(&peer).map(|l| &l.phase),
            Some(Phase::Up { .. })
        )
    }

    /// A `call_signal` from `peer`.
    pub(super) fn call_message(
        &mut self,
        peer: RelayId,
        s: CallSignal,
        path: Vec<RelayId>,
        now: Instant,
    ) {
        if path.last() != Some(&peer) {
            self.calls.counters.path_not_from_sender += 1;
            return;
        }
        let offer = matches!(s.event, CallEvent::Offer { .. });
        if path.contains(&self.me) {
            self.calls.counters.loops += 1;
            if offer {
                let msg = format!("the offer looped back to relay {}", self.label);
                self.refuse_remote_offer(peer, &s, HangupReason::Error, msg);
            }
            return;
        }
        if offer {
            return self.remote_offer(peer, s, path, now);
        }
        if matches!(s.event, CallEvent::Reroute { .. }) {
            return self.reroute_message(peer, s, path, now);
        }
        let Some(leg) = self.calls.legs.get(&s.leg_key()) else {
            self.calls.counters.unknown_call += 1;
            return;
        };
        if (leg.caller, leg.callee) != (s.caller, s.callee) {
            self.calls.counters.unknown_call += 1;
            return;
        }
        let from_caller_side = leg.toward_caller == Some(peer);
        let from_callee_side = leg.toward_callee == Some(peer);
        if let CallEvent::PathLost { message } = &s.event {
            if !(from_caller_side || from_callee_side) {
                self.calls.counters.unknown_call += 1;
                return;
            }
            let message = message
                .clone()
                .unwrap_or_else(|| format!("the call's path through relay {peer} was lost"));
            if leg.is_end() {
                self.path_lost_at_end(&s.leg_key(), message, now);
            } else {
                self.calls.counters.paths_lost += 1;
                self.pass_path_lost(&s.leg_key(), peer, message);
            }
            return;
        }
        let target = match s.event.towards_callee() {
            Some(true) if from_caller_side => leg.toward_callee,
            Some(false) if from_callee_side => leg.toward_caller,
            None if from_caller_side => leg.toward_callee,
            None if from_callee_side => leg.toward_caller,
            _ => {
                self.calls.counters.unknown_call += 1;
                return;
            }
        };
        if target.is_some() && path.len() >= MAX_CALL_PATH {
            self.calls.counters.hop_limit += 1;
            return;
        }
        if matches!(s.event, CallEvent::Path { .. })
            && target.is_some()
            && !self.path_may_pass(&s.leg_key(), target)
        {
            return;
        }
        if let (CallEvent::Hold { .. }, Some(next)) = (&s.event, target) {
            if !self.hold_may_pass(&s.leg_key(), next) {
                return;
            }
        }
        if let CallEvent::Busy { .. } = &s.event {
            if !self.busy_may_come(&s) {
                return;
            }
            if let Some(next) = target {
                return self.pass_busy(s, next, path);
            }
        }
        self.advance(&s);
        match target {
            Some(next) => {
                let mut path = path;
                path.push(self.me);
                self.send(next, s.message(path));
            }
            None => self.deliver(s),
        }
    }

    /// Whether a `busy` fits its leg: a fork, not answered (counted when
    /// not).
    fn busy_may_come(&mut self, s: &CallSignal) -> bool {
        let fits = self
            .calls
            .legs
            .get(&s.leg_key())
            .is_some_and(|l| l.fork.is_some() && !l.answered);
        if !fits {
            self.calls.counters.unknown_call += 1;
        }
        fits
    }

    /// Passes a fork's `busy` on to `next`, towards the caller. A `next`
    /// that predates [`BUSY_VERSION`] gets a `hangup` `busy` instead, and
    /// the fork ends here and towards the callee, whose relay then tells
    /// its devices of a missed call at once.
    fn pass_busy(&mut self, s: CallSignal, next: RelayId, path: Vec<RelayId>) {
        if self.link_version(next).is_some_and(|v| v >= BUSY_VERSION) {
            self.advance(&s);
            let mut path = path;
            path.push(self.me);
            return self.send(next, s.message(path));
        }
        let Some(leg) = self.end_leg(&s.leg_key()) else {
            return;
        };
        self.calls.counters.busy_ended_early += 1;
        let message = match s.event {
            CallEvent::Busy { message } => message,
            _ => None,
        };
        let up = leg.signal(CallEvent::Hangup {
            reason: HangupReason::Busy,
            message,
        });
        self.send(next, up.message(vec![self.me]));
        let down = leg.signal(CallEvent::Hangup {
            reason: HangupReason::Busy,
            message: Some(format!(
                "relay {} keeps no busy fork open towards the caller",
                self.label
            )),
        });
        match leg.toward_callee {
            Some(n) => self.send(n, down.message(vec![self.me])),
            None => self.deliver(down),
        }
    }

    fn remote_offer(&mut self, peer: RelayId, s: CallSignal, path: Vec<RelayId>, now: Instant) {
        if let Some(why) = self.offer_refusal(&s) {
            self.calls.counters.refused += 1;
            return self.refuse_remote_offer(peer, &s, HangupReason::Error, why);
        }
        let next = match self.fork_route(&s.callee, s.fork) {
            Route::Local => {
                self.insert_leg(&s, path[0], Some(peer), None, now);
                self.calls.counters.offers_delivered += 1;
                self.actions.push(Action::Call(s));
                return;
            }
            Route::DirectPeer(n) => n,
            Route::Via(v) if !v.is_empty() => v[0],
            _ => {
                self.calls.counters.not_found += 1;
                let msg = format!("{} is not online at any relay reached from here", s.callee);
                return self.refuse_remote_offer(peer, &s, HangupReason::NotOnline, msg);
            }
        };
        if next == peer || path.contains(&next) {
            self.calls.counters.loops += 1;
            let msg = format!(
                "relay {}'s route to {} leads back into the call's path",
                self.label, s.callee
            );
            return self.refuse_remote_offer(peer, &s, HangupReason::NotOnline, msg);
        }
        if path.len() >= MAX_CALL_PATH {
            self.calls.counters.hop_limit += 1;
            let msg = format!("{} is more than {MAX_CALL_PATH} relays away", s.callee);
            return self.refuse_remote_offer(peer, &s, HangupReason::NotOnline, msg);
        }
        if !self.is_up(next) {
            self.calls.counters.not_found += 1;
            let msg = format!("the federation link towards {} is down", s.callee);
            return self.refuse_remote_offer(peer, &s, HangupReason::NotOnline, msg);
        }
        if s.fork.is_some() && !self.speaks_forks(next) {
            self.calls.counters.forks_unsent += 1;
            let msg = format!(
                "relay {}'s link towards {} predates forked calls",
                self.label, s.callee
            );
            return self.refuse_remote_offer(peer, &s, HangupReason::NotOnline, msg);
        }
        self.insert_leg(&s, path[0], Some(peer), Some(next), now);
        self.calls.counters.offers_forwarded += 1;
        let mut path = path;
        path.push(self.me);
        self.send(next, s.message(path));
    }

    /// A `reroute` from `peer`: the call's new path. The callee's relay
    /// takes `peer` as the call's neighbour; a relay between bridges the
    /// call room with `peer` and its next hop towards the callee (a new leg,
    /// or its old one with `peer` on the caller's side) and sends it on. A
    /// relay that cannot answers `path_lost` (the caller's relay tries
    /// again); a callee's relay that no longer has the call, `hangup`.
    fn reroute_message(&mut self, peer: RelayId, s: CallSignal, path: Vec<RelayId>, now: Instant) {
        let answered = matches!(s.event, CallEvent::Reroute { answered: true });
        let refuse = |core: &mut FederationCore, why: String| {
            core.calls.counters.reroutes_refused += 1;
            let lost = CallSignal {
                event: CallEvent::PathLost { message: Some(why) },
                ..s.clone()
            };
            core.send(peer, lost.message(vec![core.me]));
        };
        let mut path = path;
        if let Some(leg) = self.calls.legs.get(&s.leg_key()) {
            if (leg.caller, leg.callee) != (s.caller, s.callee)
                || leg.caller_here
                || path.first() != Some(&leg.caller_relay)
            {
                self.calls.counters.unknown_call += 1;
                self.calls.counters.reroutes_refused += 1;
                return;
            }
            if leg.toward_callee == Some(peer) {
                self.calls.counters.loops += 1;
                let msg = format!("the new path came back to relay {}", self.label);
                return refuse(self, msg);
            }
            let old = leg.toward_caller.filter(|&o| o != peer);
            let next = leg.toward_callee;
            if next.is_some() && path.len() >= MAX_CALL_PATH {
                self.calls.counters.hop_limit += 1;
                let msg = format!("{} is more than {MAX_CALL_PATH} relays away", s.callee);
                return refuse(self, msg);
            }
            let leg = self
                .calls
                .legs
                .get_mut(&s.leg_key())
                .expect("leg checked above");
            leg.toward_caller = Some(peer);
            leg.lost = None;
            let room = leg.room;
            let held = std::mem::take(&mut leg.pending);
            let bridge = answered && !leg.answered;
            if leg.callee_here {
                self.calls.counters.rerouted += 1;
            }
            if bridge {
                self.bridge_leg(&s.leg_key());
            }
            if let Some(old) = old {
                self.forget_call_room_from(room, old);
            }
            if let Some(old) = old.filter(|&o| self.speaks_reroute(o)) {
                // The old path towards the caller, if still there, is
                // forgotten relay by relay.
                let lost = CallSignal {
                    event: CallEvent::PathLost {
                        message: Some(format!("the call moved to a path through relay {peer}")),
                    },
                    ..s.clone()
                };
                self.send_after_flush(old, lost.message(vec![self.me]));
            }
            if let Some(next) = next {
                path.push(self.me);
                self.send(next, s.message(path));
            }
            // What the callee did while the path was lost (ringing, the
            // answer) goes back along the new one.
            for step in held {
                if let CallEvent::Busy { .. } = step.event {
                    self.pass_busy(step, peer, Vec::new());
                } else {
                    self.send(peer, step.message(vec![self.me]));
                }
            }
            self.resync_call_room(room);
            return;
        }
        // No leg here: a relay on the new path, or the callee's relay whose
        // call ended.
        if path.first() == Some(&self.me) {
            self.calls.counters.loops += 1;
            return;
        }
        let next = match self.fork_route(&s.callee, s.fork) {
            Route::Local => {
                self.calls.counters.reroutes_refused += 1;
                let hangup = CallSignal {
                    event: CallEvent::Hangup {
                        reason: HangupReason::Error,
                        message: Some(format!(
                            "the call had already ended at relay {}",
                            self.label
                        )),
                    },
                    ..s.clone()
                };
                self.send(peer, hangup.message(vec![self.me]));
                return;
            }
            Route::DirectPeer(n) => n,
            Route::Via(v) if !v.is_empty() => v[0],
            _ => {
                let msg = format!("relay {} has no route to {} now", self.label, s.callee);
                return refuse(self, msg);
            }
        };
        if next == peer || path.contains(&next) {
            self.calls.counters.loops += 1;
            let msg = format!(
                "relay {}'s route to {} leads back into the new path",
                self.label, s.callee
            );
            return refuse(self, msg);
        }
        if path.len() >= MAX_CALL_PATH {
            self.calls.counters.hop_limit += 1;
            let msg = format!("{} is more than {MAX_CALL_PATH} relays away", s.callee);
            return refuse(self, msg);
        }
        if !self.speaks_reroute(next) || (s.fork.is_some() && !self.speaks_forks(next)) {
            let msg = format!(
                "relay {}'s link towards {} is down or predates rerouting",
                self.label, s.callee
            );
            return refuse(self, msg);
        }
        if let Some(why) = self.offer_refusal(&s) {
            return refuse(self, why);
        }
        self.insert_leg(&s, path[0], Some(peer), Some(next), now);
        if answered {
            self.bridge_leg(&s.leg_key());
        }
        path.push(self.me);
        self.send(next, s.message(path));
    }

    /// Answers an offer from `peer` with a hangup (the peer, next to this
    /// relay towards the callee, passes it back to the caller).
    fn refuse_remote_offer(
        &mut self,
        peer: RelayId,
        s: &CallSignal,
        reason: HangupReason,
        message: String,
    ) {
        let hangup = CallSignal {
            event: CallEvent::Hangup {
                reason,
                message: Some(message),
            },
            ..s.clone()
        };
        self.send(peer, hangup.message(vec![self.me]));
    }

    /// What a signal passing this relay does to the call: an answer bridges
    /// the call room with the neighbours, a hangup ends the call here.
    fn advance(&mut self, s: &CallSignal) {
        match &s.event {
            CallEvent::Answer { .. }
                if self
                    .calls
                    .legs
                    .get(&s.leg_key())
                    .is_some_and(|l| !l.answered) =>
            {
                self.bridge_leg(&s.leg_key());
            }
            CallEvent::Hangup { .. } => {
                self.end_leg(&s.leg_key());
            }
            CallEvent::Busy { .. } | CallEvent::Ringing { .. } => {
                if let Some(leg) = self.calls.legs.get_mut(&s.leg_key()) {
                    leg.busy = matches!(s.event, CallEvent::Busy { .. });
                }
            }
            _ => {}
        }
    }

    /// The call is answered: its room is bridged with its neighbours here.
    fn bridge_leg(&mut self, key: &str) {
        let Some(leg) = self.calls.legs.get_mut(key) else {
            return;
        };
        leg.answered = true;
        let room = leg.room;
        let name = format!("{}{}", wzp_proto::sni::CALL_PREFIX, leg.call_id);
        if self.calls.by_room.get(&room).is_some_and(|k| k != key) {
            // Another fork of the call was answered first and holds the
            // room; this one is being hung up by the caller's relay.
            return;
        }
        self.calls.by_room.insert(room, key.to_string());
        self.actions.push(Action::CallBridge {
            room,
            name,
            up: true,
        });
    }

    /// Whether leg `key` is the one its call room is bridged for.
    fn holds_room(&self, key: &str, leg: &CallLeg) -> bool {
        leg.answered && self.calls.by_room.get(&leg.room).is_some_and(|k| k == key)
    }

    /// Forgets a call here. An answered call's room stops being bridged and
    /// what was learned about it is dropped; the neighbours do the same when
    /// the hangup reaches them, so nothing about the room is sent to them.
    fn end_leg(&mut self, key: &str) -> Option<CallLeg> {
        let leg = self.calls.legs.get(key)?;
        let holds = self.holds_room(key, leg);
        let leg = self.calls.legs.remove(key)?;
        if !holds {
            return Some(leg);
        }
        self.calls.by_room.remove(&leg.room);
        let room = leg.room;
        let elig = self.room_eligibility_for(room);
        let keys: Vec<(RoomId, RelayId)> = self
            .rooms
            .keys()
            .filter(|(r, _)| *r == room)
            .copied()
            .collect();
        for key in keys {
            for n in leg.neighbours() {
                // Nobody is told: the room is bridged with no one now.
                let _ = self.rooms.learn(n, key, None, &elig);
            }
        }
        let _ = self.rooms.set_local((room, self.me), None, &elig);
        self.pending_rooms.retain(|_, d| match d {
            Delta::Announce((r, _), _) | Delta::Withdraw((r, _)) => *r != room,
        });
        let name = format!("{}{}", wzp_proto::sni::CALL_PREFIX, leg.call_id);
        self.actions.push(Action::CallRoomChanged {
            room,
            name: name.clone(),
        });
        self.actions.push(Action::CallBridge {
            room,
            name,
            up: false,
        });
        Some(leg)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fork_tests;
