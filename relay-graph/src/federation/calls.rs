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
//! Refusals answer the offer with a `hangup` back along the path it came
//! (`not_online`, or `error` with the reason) and are counted in
//! [`CallCounters`]: an offer whose path already holds this relay (a loop),
//! one that would exceed [`MAX_CALL_PATH`] relays, a route pointing back into
//! the path, a call id in use here, more than [`MAX_CALLS`] calls.

use std::time::{Duration, Instant};

use wzp_proto::federation::{CallEvent, CallSignal, RelayId, RoomId, MAX_CALL_PATH};
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
}

/// One call as a relay on its path sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallLeg {
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
    setup_deadline: Instant,
}

impl CallLeg {
    fn neighbours(&self) -> impl Iterator<Item = RelayId> {
        self.toward_caller.into_iter().chain(self.toward_callee)
    }
}

/// The calls a core carries.
#[derive(Debug, Default)]
pub(super) struct CallTable {
    legs: std::collections::BTreeMap<String, CallLeg>,
    /// Answered calls by room: the rooms bridged for calls.
    by_room: std::collections::HashMap<RoomId, String>,
    counters: CallCounters,
}

impl FederationCore {
    /// Call signal counts by reason.
    pub fn call_counters(&self) -> &CallCounters {
        &self.calls.counters
    }

    /// The call `call_id` as this relay carries it.
    pub fn call_leg(&self, call_id: &str) -> Option<&CallLeg> {
        self.calls.legs.get(call_id)
    }

    /// Calls carried across federation.
    pub fn call_count(&self) -> usize {
        self.calls.legs.len()
    }

    /// The room name (`call-<id>`) of an answered call's room id.
    pub fn call_room_name(&self, room: RoomId) -> Option<String> {
        self.calls
            .by_room
            .get(&room)
            .map(|id| format!("{}{id}", wzp_proto::sni::CALL_PREFIX))
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
            .is_some_and(|l| l.toward_caller.is_none() || l.toward_callee.is_none())
    }

    /// Per up peer, the call rooms bridged with it (for the room table's
    /// eligibility).
    pub(super) fn call_bridged_rooms(&self) -> Vec<(RelayId, RoomId)> {
        self.calls
            .legs
            .values()
            .filter(|l| l.answered)
            .flat_map(|l| l.neighbours().map(|n| (n, l.room)))
            .collect()
    }

    /// When the next unanswered call's setup runs out.
    pub(super) fn next_call_deadline(&self) -> Option<Instant> {
        self.calls
            .legs
            .values()
            .filter(|l| !l.answered)
            .map(|l| l.setup_deadline)
            .min()
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
    }

    /// The link to `peer` is gone: every call across it ends, and both ends
    /// are told (the side beyond the dead link by its own neighbour).
    pub(super) fn end_calls_via(&mut self, peer: RelayId) {
        let ids: Vec<String> = self
            .calls
            .legs
            .iter()
            .filter(|(_, l)| l.neighbours().any(|n| n == peer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.calls.counters.ended_by_link += 1;
            let msg = format!(
                "the federation link between relays {} and {peer} was lost",
                self.me
            );
            self.end_call_both_ways(&id, HangupReason::Error, msg);
        }
    }

    /// Ends `call_id` here and sends a hangup to each side still reachable.
    fn end_call_both_ways(&mut self, call_id: &str, reason: HangupReason, message: String) {
        let Some(leg) = self.end_leg(call_id) else {
            return;
        };
        let signal = |leg: &CallLeg| CallSignal {
            call_id: call_id.to_string(),
            caller: leg.caller,
            callee: leg.callee,
            event: CallEvent::Hangup {
                reason,
                message: Some(message.clone()),
            },
        };
        for side in [leg.toward_caller, leg.toward_callee] {
            match side {
                Some(peer) => self.send(peer, signal(&leg).message(vec![self.me])),
                None => self.actions.push(Action::Call(signal(&leg))),
            }
        }
    }

    /// A call signal from this relay's signal service (a local party).
    pub(super) fn local_call(&mut self, s: CallSignal, now: Instant) {
        if let CallEvent::Offer { .. } = s.event {
            return self.local_offer(s, now);
        }
        let Some(leg) = self.calls.legs.get(&s.call_id) else {
            self.calls.counters.unknown_call += 1;
            return;
        };
        if (leg.caller, leg.callee) != (s.caller, s.callee) {
            self.calls.counters.unknown_call += 1;
            return;
        }
        // The local party's side is the one with no neighbour.
        let target = match s.event.towards_callee() {
            Some(true) if leg.toward_caller.is_none() => leg.toward_callee,
            Some(false) if leg.toward_callee.is_none() => leg.toward_caller,
            None if leg.toward_caller.is_none() => leg.toward_callee,
            None if leg.toward_callee.is_none() => leg.toward_caller,
            _ => None,
        };
        let Some(target) = target else {
            self.calls.counters.unknown_call += 1;
            return;
        };
        self.advance(&s);
        self.send(target, s.message(vec![self.me]));
    }

    fn local_offer(&mut self, s: CallSignal, now: Instant) {
        let refuse = |core: &mut FederationCore, reason, message: String| {
            core.actions.push(Action::Call(CallSignal {
                event: CallEvent::Hangup {
                    reason,
                    message: Some(message),
                },
                ..s.clone()
            }));
        };
        if let Some(why) = self.offer_refusal(&s) {
            self.calls.counters.refused += 1;
            return refuse(self, HangupReason::Error, why);
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
                return refuse(self, HangupReason::NotOnline, msg);
            }
        };
        if !self.is_up(next) {
            self.calls.counters.not_found += 1;
            let msg = format!("the federation link towards {} is down", s.callee);
            return refuse(self, HangupReason::NotOnline, msg);
        }
        self.insert_leg(&s, None, Some(next), now);
        self.calls.counters.offers_forwarded += 1;
        self.send(next, s.message(vec![self.me]));
    }

    /// Why an offer cannot be carried here, if it cannot.
    fn offer_refusal(&self, s: &CallSignal) -> Option<String> {
        if self.calls.legs.contains_key(&s.call_id) {
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
        toward_caller: Option<RelayId>,
        toward_callee: Option<RelayId>,
        now: Instant,
    ) {
        self.calls.legs.insert(
            s.call_id.clone(),
            CallLeg {
                caller: s.caller,
                callee: s.callee,
                room: s.room(),
                toward_caller,
                toward_callee,
                answered: false,
                setup_deadline: now + CALL_SETUP_TIMEOUT,
            },
        );
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
        let Some(leg) = self.calls.legs.get(&s.call_id) else {
            self.calls.counters.unknown_call += 1;
            return;
        };
        if (leg.caller, leg.callee) != (s.caller, s.callee) {
            self.calls.counters.unknown_call += 1;
            return;
        }
        let from_caller_side = leg.toward_caller == Some(peer);
        let from_callee_side = leg.toward_callee == Some(peer);
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
        self.advance(&s);
        match target {
            Some(next) => {
                let mut path = path;
                path.push(self.me);
                self.send(next, s.message(path));
            }
            None => self.actions.push(Action::Call(s)),
        }
    }

    fn remote_offer(&mut self, peer: RelayId, s: CallSignal, path: Vec<RelayId>, now: Instant) {
        if let Some(why) = self.offer_refusal(&s) {
            self.calls.counters.refused += 1;
            return self.refuse_remote_offer(peer, &s, HangupReason::Error, why);
        }
        let next = match self.route(&s.callee) {
            Route::Local => {
                self.insert_leg(&s, Some(peer), None, now);
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
        self.insert_leg(&s, Some(peer), Some(next), now);
        self.calls.counters.offers_forwarded += 1;
        let mut path = path;
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
            CallEvent::Answer { .. } => {
                let Some(leg) = self.calls.legs.get_mut(&s.call_id) else {
                    return;
                };
                if leg.answered {
                    return;
                }
                leg.answered = true;
                let room = leg.room;
                self.calls.by_room.insert(room, s.call_id.clone());
                self.actions.push(Action::CallBridge {
                    room,
                    name: format!("{}{}", wzp_proto::sni::CALL_PREFIX, s.call_id),
                    up: true,
                });
            }
            CallEvent::Hangup { .. } => {
                self.end_leg(&s.call_id);
            }
            _ => {}
        }
    }

    /// Forgets a call here. An answered call's room stops being bridged and
    /// what was learned about it is dropped; the neighbours do the same when
    /// the hangup reaches them, so nothing about the room is sent to them.
    fn end_leg(&mut self, call_id: &str) -> Option<CallLeg> {
        let leg = self.calls.legs.remove(call_id)?;
        if !leg.answered {
            return Some(leg);
        }
        self.calls.by_room.remove(&leg.room);
        let room = leg.room;
        let elig = self.room_eligibility();
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
        let name = format!("{}{call_id}", wzp_proto::sni::CALL_PREFIX);
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
