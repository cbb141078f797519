//! Direct calls the relay is setting up or carrying (sans-IO).
//!
//! ```text
//!  offer ──> Pending ──(routed to callee)──> Ringing ──(accepted)──> Active
//!               │                              │                       │
//!               └──────── hangup / disconnect / reject / timeout ──────┴──> Ended
//! ```
//!
//! Every transition is returned as a [`Transition`] (for the event log) and
//! counted ([`CallRegistry::transitions`]). A fingerprint is in at most one
//! call: an offer to or from someone already in one is refused as busy,
//! except that a person in an Active call may have one more ringing as a
//! waiting call ([`CallRegistry::offer_waiting`]), and on answering it may
//! keep the call it was in ([`CallRegistry::keep_for`]): it is in two calls
//! until one ends. A ringing call ends after
//! the ringing timeout ([`CallRegistry::expire`]).
//! The call room `call-<id>` admits exactly the two fingerprints of an
//! Active call ([`CallRegistry::may_join`]). Ended calls leave the table.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;
use wzp_proto::signal::{AcceptMode, HangupReason};
use wzp_proto::sni::call_room;
use wzp_proto::Fingerprint;

use crate::presence::ConnId;

/// Default time a call may ring before it ends unanswered.
pub const DEFAULT_RINGING_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a call is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    /// Offered, not yet delivered to the callee.
    Pending,
    /// Delivered; the callee is being alerted.
    Ringing,
    /// Accepted; the call room is open to the two parties.
    Active,
    /// Over.
    Ended,
}

impl CallState {
    /// Snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            CallState::Pending => "pending",
            CallState::Ringing => "ringing",
            CallState::Active => "active",
            CallState::Ended => "ended",
        }
    }
}

/// One side of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// Who offered.
    Caller,
    /// Who was called.
    Callee,
}

impl Party {
    /// The other side.
    pub fn other(self) -> Party {
        match self {
            Party::Caller => Party::Callee,
            Party::Callee => Party::Caller,
        }
    }
}

/// Why a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// A party hung up (with this reason).
    Hangup(Party, HangupReason),
    /// The callee declined.
    Rejected,
    /// Nobody answered within the ringing timeout.
    RingingTimeout,
    /// A party's signal connection ended (closed, replaced, timed out).
    Disconnected(Party),
    /// The far side of a cross-relay call ended it (the far relay refused
    /// the offer, the far party hung up, or a federation link died).
    Federation(Party, HangupReason),
    /// A party sent a handshake half that is not one.
    BadHandshake(Party),
}

impl EndReason {
    /// Snake_case label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            EndReason::Hangup(..) => "hangup",
            EndReason::Rejected => "rejected",
            EndReason::RingingTimeout => "ringing_timeout",
            EndReason::Disconnected(_) => "disconnected",
            EndReason::BadHandshake(_) => "bad_handshake",
            EndReason::Federation(..) => "federation",
        }
    }

    /// The `hangup` reason the parties are told.
    pub fn hangup_reason(self) -> HangupReason {
        match self {
            EndReason::Hangup(_, r) => r,
            EndReason::Rejected => HangupReason::Declined,
            EndReason::RingingTimeout => HangupReason::Timeout,
            EndReason::Disconnected(_) => HangupReason::Normal,
            EndReason::BadHandshake(_) => HangupReason::Error,
            EndReason::Federation(_, r) => r,
        }
    }
}

/// A call in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The caller's call id.
    pub id: String,
    /// Its call room, `call-<id>`.
    pub room: String,
    /// Who offered.
    pub caller: Fingerprint,
    /// Who was called.
    pub callee: Fingerprint,
    /// The caller's signal connection.
    pub caller_conn: ConnId,
    /// The callee's signal connection: the device that answered, or
    /// while ringing the first of the devices rung.
    pub callee_conn: ConnId,
    /// The callee's other devices rung with the offer, until one answers
    /// ([`CallRegistry::answered_by`]) or goes ([`CallRegistry::drop_device`]).
    pub callee_forks: Vec<ConnId>,
    /// Where it is.
    pub state: CallState,
    /// When it was offered.
    pub since: Instant,
    /// When it entered its current state.
    pub state_since: Instant,
    /// How the callee accepted.
    pub accept_mode: Option<AcceptMode>,
    /// `call_path` messages carried from each party (caller, callee), at
    /// most [`MAX_CALL_PATHS`] each.
    pub paths: [u8; 2],
    /// The callee was in another call when this one came: it rings on the
    /// device in that call as a waiting call ([`CallRegistry::offer_waiting`])
    /// until that call ends (then it is an ordinary ringing call) or this
    /// one is answered (which ends that one, unless kept).
    pub waiting: bool,
    /// A person in it answered a waiting call keeping this one
    /// ([`CallRegistry::keep_for`]): it is that person's second call, on
    /// hold, until the other ends.
    pub kept: bool,
    /// While it rings on the callee's devices here, it rings on the
    /// callee's other relays too (the federation's forks), until one
    /// answers there ([`CallRegistry::callee_elsewhere`]), a device here
    /// answers, or every fork has ended.
    pub remote_forks: bool,
    /// The callee was in another call on this relay, taking no waiting
    /// call, when this one came ([`CallRegistry::offer_elsewhere`]): it
    /// rings on the callee's other relays only. Unanswered, the caller
    /// hears `busy` and the callee's devices here a missed call.
    pub busy_here: Option<BusyHere>,
}

/// What a call that rang on the callee's other relays only, the callee
/// being busy here, keeps for the missed-call notice and for ringing the
/// callee's devices here once its call here ends ([`Call::busy_here`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusyHere {
    /// The name the caller gave.
    pub caller_alias: Option<String>,
    /// The caller's handshake half (encoded `HandshakeInit`).
    pub handshake: Option<Vec<u8>>,
    /// The codecs the caller offered.
    pub supported_codecs: Vec<String>,
}

pub use wzp_proto::path_addrs::MAX_CALL_PATHS;

impl Call {
    /// Which party `conn` is, if any.
    pub fn party_of_conn(&self, conn: ConnId) -> Option<Party> {
        if conn == self.caller_conn {
            Some(Party::Caller)
        } else if conn == self.callee_conn || self.callee_forks.contains(&conn) {
            Some(Party::Callee)
        } else {
            None
        }
    }

    /// The connection of `party`.
    pub fn conn(&self, party: Party) -> ConnId {
        match party {
            Party::Caller => self.caller_conn,
            Party::Callee => self.callee_conn,
        }
    }

    /// Whether `party` is on another relay, reached through federation
    /// (its connection is [`ConnId::FEDERATION`]).
    pub fn is_federated(&self, party: Party) -> bool {
        self.conn(party) == ConnId::FEDERATION
    }

    /// The party on another relay, if any.
    pub fn federated_party(&self) -> Option<Party> {
        [Party::Caller, Party::Callee]
            .into_iter()
            .find(|p| self.is_federated(*p))
    }

    /// The fingerprint of `party`.
    pub fn fingerprint(&self, party: Party) -> Fingerprint {
        match party {
            Party::Caller => self.caller,
            Party::Callee => self.callee,
        }
    }
}

/// One recorded state change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The call.
    pub call_id: String,
    /// State before.
    pub from: CallState,
    /// State after.
    pub to: CallState,
    /// Why it ended (only for `to == Ended`).
    pub reason: Option<EndReason>,
}

/// Why an offer did not become a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OfferRefusal {
    /// The id cannot name a call room.
    #[error("call id {0:?} must be 1..=58 of [a-z0-9-]")]
    BadCallId(String),
    /// Another call has this id.
    #[error("call id {0} is already in use; pick a fresh random id")]
    CallIdInUse(String),
    /// Caller and callee are the same.
    #[error("cannot call yourself")]
    ToSelf,
    /// The caller is already in a call.
    #[error("you are already in call {0}; hang it up first")]
    CallerBusy(String),
    /// The callee is already in a call.
    #[error("the callee is in another call")]
    CalleeBusy,
}

impl OfferRefusal {
    /// Snake_case label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            OfferRefusal::BadCallId(_) => "bad_call_id",
            OfferRefusal::CallIdInUse(_) => "call_id_in_use",
            OfferRefusal::ToSelf => "call_to_self",
            OfferRefusal::CallerBusy(_) => "caller_busy",
            OfferRefusal::CalleeBusy => "callee_busy",
        }
    }
}

/// The call table.
#[derive(Debug)]
pub struct CallRegistry {
    calls: HashMap<String, Call>,
    in_call: HashMap<Fingerprint, String>,
    /// The waiting call of a person in a call (at most one each).
    waiting: HashMap<Fingerprint, String>,
    /// The call a person kept when it answered its waiting call (at most
    /// one each): its second call, the one in `in_call` being the other.
    kept: HashMap<Fingerprint, String>,
    /// Call ids by party connection (a connection is in one call, and with
    /// a waiting call in two).
    by_conn: HashMap<ConnId, Vec<String>>,
    ringing_timeout: Duration,
    ring_deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    transitions: HashMap<(CallState, CallState), u64>,
    ended: HashMap<&'static str, u64>,
}

impl CallRegistry {
    /// An empty table.
    pub fn new(ringing_timeout: Duration) -> CallRegistry {
        CallRegistry {
            calls: HashMap::new(),
            in_call: HashMap::new(),
            waiting: HashMap::new(),
            kept: HashMap::new(),
            by_conn: HashMap::new(),
            ringing_timeout,
            ring_deadlines: BinaryHeap::new(),
            transitions: HashMap::new(),
            ended: HashMap::new(),
        }
    }

    /// Calls offered from now on ring at most `d`; a call ringing now keeps
    /// its deadline.
    pub fn set_ringing_timeout(&mut self, d: Duration) {
        self.ringing_timeout = d;
    }

    fn record(
        &mut self,
        call_id: &str,
        from: CallState,
        to: CallState,
        reason: Option<EndReason>,
    ) -> Transition {
        *self.transitions.entry((from, to)).or_default() += 1;
        if let Some(r) = reason {
            *self.ended.entry(r.label()).or_default() += 1;
        }
        Transition {
            call_id: call_id.to_string(),
            from,
            to,
            reason,
        }
    }

    /// The checks every offer passes (its call room, or why not): a good,
    /// free id, and a caller not calling itself nor in a call.
    fn check_offer(
        &self,
        id: &str,
        caller: &Fingerprint,
        callee: &Fingerprint,
    ) -> Result<String, OfferRefusal> {
        let room = call_room(id).ok_or_else(|| OfferRefusal::BadCallId(id.to_string()))?;
        if caller == callee {
            return Err(OfferRefusal::ToSelf);
        }
        if let Some(existing) = self.in_call.get(caller) {
            return Err(OfferRefusal::CallerBusy(existing.clone()));
        }
        if self.calls.contains_key(id) {
            return Err(OfferRefusal::CallIdInUse(id.to_string()));
        }
        Ok(room)
    }

    /// Puts a new Pending call in the table, indexed by its parties'
    /// connections; the caller is in it from now on.
    fn insert_call(
        &mut self,
        id: &str,
        room: String,
        caller: (Fingerprint, ConnId),
        callee: (Fingerprint, ConnId),
        waiting: bool,
        now: Instant,
    ) -> Transition {
        self.calls.insert(
            id.to_string(),
            Call {
                id: id.to_string(),
                room,
                caller: caller.0,
                callee: callee.0,
                caller_conn: caller.1,
                callee_conn: callee.1,
                callee_forks: Vec::new(),
                state: CallState::Pending,
                since: now,
                state_since: now,
                accept_mode: None,
                paths: [0; 2],
                waiting,
                kept: false,
                remote_forks: false,
                busy_here: None,
            },
        );
        self.in_call.insert(caller.0, id.to_string());
        for conn in [caller.1, callee.1] {
            if conn != ConnId::FEDERATION {
                self.by_conn.entry(conn).or_default().push(id.to_string());
            }
        }
        self.record(id, CallState::Ended, CallState::Pending, None)
    }

    /// A new call, Pending. Refused (and nothing recorded) when the id is bad
    /// or taken, the caller calls itself, or either party is in a call.
    pub fn offer(
        &mut self,
        id: &str,
        caller: (Fingerprint, ConnId),
        callee: (Fingerprint, ConnId),
        now: Instant,
    ) -> Result<Transition, OfferRefusal> {
        let room = self.check_offer(id, &caller.0, &callee.0)?;
        if self.in_call.contains_key(&callee.0) {
            return Err(OfferRefusal::CalleeBusy);
        }
        self.in_call.insert(callee.0, id.to_string());
        Ok(self.insert_call(id, room, caller, callee, false, now))
    }

    /// A new call, Pending, to a callee who is in an Active call on this
    /// relay: it rings as a waiting call on the connection the callee is in
    /// that call with, which is returned with the call's transition. Refused
    /// as [`CallRegistry::offer`] refuses, and `CalleeBusy` when the callee
    /// is in no call here, its call is not Active yet, it is in it through
    /// federation, or it already has a waiting call or a kept one.
    pub fn offer_waiting(
        &mut self,
        id: &str,
        caller: (Fingerprint, ConnId),
        callee: Fingerprint,
        now: Instant,
    ) -> Result<(Transition, ConnId), OfferRefusal> {
        let room = self.check_offer(id, &caller.0, &callee)?;
        let device = self
            .call_of(&callee)
            .filter(|c| c.state == CallState::Active)
            .map(|c| {
                let party = if c.caller == callee {
                    Party::Caller
                } else {
                    Party::Callee
                };
                c.conn(party)
            })
            .filter(|conn| *conn != ConnId::FEDERATION)
            .filter(|_| !self.waiting.contains_key(&callee) && !self.kept.contains_key(&callee))
            .ok_or(OfferRefusal::CalleeBusy)?;
        self.waiting.insert(callee, id.to_string());
        let t = self.insert_call(id, room, caller, (callee, device), true, now);
        Ok((t, device))
    }

    /// A new call, Pending, to a callee who is in another call on this
    /// relay and takes no waiting call there: it rings on the callee's
    /// other relays only (the callee is reached through federation), and
    /// the callee is not in it here, so the call it is in goes on whatever
    /// this one does ([`Call::busy_here`]). Refused as
    /// [`CallRegistry::offer`] refuses, but never `CalleeBusy`.
    pub fn offer_elsewhere(
        &mut self,
        id: &str,
        caller: (Fingerprint, ConnId),
        callee: Fingerprint,
        busy: BusyHere,
        now: Instant,
    ) -> Result<Transition, OfferRefusal> {
        let room = self.check_offer(id, &caller.0, &callee)?;
        let t = self.insert_call(id, room, caller, (callee, ConnId::FEDERATION), false, now);
        if let Some(call) = self.calls.get_mut(id) {
            call.busy_here = Some(busy);
        }
        Ok(t)
    }

    /// The oldest unanswered call rung elsewhere because `fp` was busy here
    /// ([`Call::busy_here`]).
    pub fn busy_here_of(&self, fp: &Fingerprint) -> Option<&Call> {
        self.calls
            .values()
            .filter(|c| c.callee == *fp && c.busy_here.is_some())
            .filter(|c| matches!(c.state, CallState::Pending | CallState::Ringing))
            .min_by_key(|c| c.since)
    }

    /// The callee of call `id`, rung elsewhere because it was busy here, is
    /// in no call here any more: it rings on its devices `devices` here
    /// too (the forks elsewhere go on), as an ordinary call whose callee
    /// has devices here and on other relays ([`Call::remote_forks`]).
    /// Returns whether it did.
    pub fn ring_here(&mut self, id: &str, devices: &[ConnId]) -> bool {
        let Some(call) = self.calls.get(id) else {
            return false;
        };
        let callee = call.callee;
        if call.busy_here.is_none() || self.in_call.contains_key(&callee) {
            return false;
        }
        let Some((&first, rest)) = devices.split_first() else {
            return false;
        };
        if let Some(call) = self.calls.get_mut(id) {
            call.busy_here = None;
            call.remote_forks = true;
            call.callee_conn = first;
        }
        self.in_call.insert(callee, id.to_string());
        self.by_conn.entry(first).or_default().push(id.to_string());
        self.add_forks(id, rest);
        true
    }

    /// The callee of waiting call `id` answers it keeping the call it is in:
    /// that call is its kept (second) call from now on, and `id` its call,
    /// an ordinary one. Returns the kept call's id; `None` (nothing
    /// changed) when `id` is not a waiting call.
    pub fn keep_for(&mut self, id: &str) -> Option<String> {
        let callee = self.calls.get(id).filter(|c| c.waiting)?.callee;
        if self.waiting.get(&callee).map(String::as_str) != Some(id)
            || self.kept.contains_key(&callee)
        {
            return None;
        }
        let current = self.in_call.get(&callee)?.clone();
        self.waiting.remove(&callee);
        if let Some(c) = self.calls.get_mut(&current) {
            c.kept = true;
        }
        if let Some(c) = self.calls.get_mut(id) {
            c.waiting = false;
        }
        self.in_call.insert(callee, id.to_string());
        self.kept.insert(callee, current.clone());
        Some(current)
    }

    /// The call `fp` kept when it answered its waiting call, if any.
    pub fn kept_of(&self, fp: &Fingerprint) -> Option<&Call> {
        self.kept.get(fp).and_then(|id| self.calls.get(id))
    }

    /// The waiting call of `fp`, if any.
    pub fn waiting_of(&self, fp: &Fingerprint) -> Option<&Call> {
        self.waiting.get(fp).and_then(|id| self.calls.get(id))
    }

    fn advance(
        &mut self,
        id: &str,
        from: CallState,
        to: CallState,
        now: Instant,
    ) -> Option<Transition> {
        let call = self.calls.get_mut(id).filter(|c| c.state == from)?;
        call.state = to;
        call.state_since = now;
        Some(self.record(id, from, to, None))
    }

    /// The callee's other devices `conns` are rung too (before
    /// [`CallRegistry::ringing`]); the first to answer takes the call.
    pub fn add_forks(&mut self, id: &str, conns: &[ConnId]) {
        let Some(call) = self.calls.get_mut(id) else {
            return;
        };
        for &conn in conns {
            if conn == call.callee_conn
                || conn == call.caller_conn
                || conn == ConnId::FEDERATION
                || call.callee_forks.contains(&conn)
            {
                continue;
            }
            call.callee_forks.push(conn);
            self.by_conn.entry(conn).or_default().push(id.to_string());
        }
    }

    fn unindex(&mut self, id: &str, conn: ConnId) {
        if let Some(ids) = self.by_conn.get_mut(&conn) {
            ids.retain(|i| i != id);
            if ids.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
    }

    /// The callee's device on `conn` answered (accepted or declined): it is
    /// the callee's connection from now on. Returns the other devices that
    /// were rung (to be told), which leave the call.
    pub fn answered_by(&mut self, id: &str, conn: ConnId) -> Vec<ConnId> {
        let Some(call) = self.calls.get_mut(id) else {
            return Vec::new();
        };
        if conn != call.callee_conn && !call.callee_forks.contains(&conn) {
            return Vec::new();
        }
        let mut others = std::mem::take(&mut call.callee_forks);
        others.push(call.callee_conn);
        others.retain(|c| *c != conn);
        call.callee_conn = conn;
        for c in &others {
            self.unindex(id, *c);
        }
        others
    }

    /// Whether the call rings on the callee's other relays too
    /// ([`Call::remote_forks`]).
    pub fn set_remote_forks(&mut self, id: &str, on: bool) {
        if let Some(call) = self.calls.get_mut(id) {
            call.remote_forks = on;
        }
    }

    /// The callee is reached through federation from now on: it answered
    /// on another relay, or its last device here went while the call rings
    /// there too. Returns the devices here that were rung (to be told),
    /// which leave the call. A waiting call stops waiting: the call the
    /// callee is in here goes on beside it.
    pub fn callee_elsewhere(&mut self, id: &str) -> Vec<ConnId> {
        let Some(call) = self.calls.get_mut(id) else {
            return Vec::new();
        };
        if call.callee_conn == ConnId::FEDERATION {
            return Vec::new();
        }
        if std::mem::take(&mut call.waiting)
            && self.waiting.get(&call.callee).map(String::as_str) == Some(id)
        {
            self.waiting.remove(&call.callee);
        }
        let mut others = std::mem::take(&mut call.callee_forks);
        others.push(call.callee_conn);
        call.callee_conn = ConnId::FEDERATION;
        call.remote_forks = false;
        for c in &others {
            self.unindex(id, *c);
        }
        others
    }

    /// The callee's device on `conn` went while the call rings: the call
    /// goes on on its other devices. Returns whether any is left (when none
    /// is, the call is still in the table and `conn` its callee: end it).
    pub fn drop_device(&mut self, id: &str, conn: ConnId) -> bool {
        let Some(call) = self.calls.get_mut(id) else {
            return false;
        };
        if call.callee_forks.is_empty() {
            return false;
        }
        if conn == call.callee_conn {
            call.callee_conn = call.callee_forks.remove(0);
        } else if let Some(i) = call.callee_forks.iter().position(|c| *c == conn) {
            call.callee_forks.remove(i);
        } else {
            return false;
        }
        self.unindex(id, conn);
        true
    }

    /// Pending -> Ringing: the offer reached the callee. Arms the ringing
    /// timeout.
    pub fn ringing(&mut self, id: &str, now: Instant) -> Option<Transition> {
        let t = self.advance(id, CallState::Pending, CallState::Ringing, now)?;
        self.ring_deadlines
            .push(Reverse((now + self.ringing_timeout, id.to_string())));
        Some(t)
    }

    /// Ringing -> Active: the callee accepted.
    pub fn activate(&mut self, id: &str, mode: AcceptMode, now: Instant) -> Option<Transition> {
        let t = self.advance(id, CallState::Ringing, CallState::Active, now)?;
        if let Some(c) = self.calls.get_mut(id) {
            c.accept_mode = Some(mode);
        }
        Some(t)
    }

    /// Counts a `call_path` from `party` of call `id`: whether it is within
    /// [`MAX_CALL_PATHS`] (and the call is here).
    pub fn count_path(&mut self, id: &str, party: Party) -> bool {
        let Some(c) = self.calls.get_mut(id) else {
            return false;
        };
        let n = &mut c.paths[usize::from(party == Party::Callee)];
        if *n >= MAX_CALL_PATHS {
            return false;
        }
        *n += 1;
        true
    }

    /// Any state -> Ended; the call leaves the table and is returned as it was.
    pub fn end(&mut self, id: &str, reason: EndReason) -> Option<(Call, Transition)> {
        let call = self.calls.remove(id)?;
        if self.waiting.get(&call.callee).map(String::as_str) == Some(id) {
            self.waiting.remove(&call.callee);
        }
        for fp in [call.caller, call.callee] {
            if self.kept.get(&fp).map(String::as_str) == Some(id) {
                self.kept.remove(&fp);
            }
            if self.in_call.get(&fp).map(String::as_str) == Some(id) {
                self.in_call.remove(&fp);
                // The call that waited is the person's call now: it rings
                // on; or the call it kept is its only call again.
                let next = self.waiting.remove(&fp).or_else(|| self.kept.remove(&fp));
                if let Some(next) = next {
                    if let Some(c) = self.calls.get_mut(&next) {
                        c.waiting = false;
                        c.kept = false;
                    }
                    self.in_call.insert(fp, next);
                }
            }
        }
        for conn in [call.caller_conn, call.callee_conn]
            .into_iter()
            .chain(call.callee_forks.iter().copied())
        {
            self.unindex(id, conn);
        }
        let t = self.record(id, call.state, CallState::Ended, Some(reason));
        Some((call, t))
    }

    /// A call by id.
    pub fn get(&self, id: &str) -> Option<&Call> {
        self.calls.get(id)
    }

    /// The call `fp` is in.
    pub fn call_of(&self, fp: &Fingerprint) -> Option<&Call> {
        self.in_call.get(fp).and_then(|id| self.calls.get(id))
    }

    /// Ids of the calls `conn` is a party to.
    pub fn calls_of_conn(&self, conn: ConnId) -> Vec<String> {
        self.by_conn.get(&conn).cloned().unwrap_or_default()
    }

    /// Whether `fp` may join call room `room`: exactly the two parties of an
    /// Active call.
    pub fn may_join(&self, room: &str, fp: &Fingerprint) -> bool {
        room.strip_prefix(wzp_proto::sni::CALL_PREFIX)
            .and_then(|id| self.calls.get(id))
            .is_some_and(|c| c.state == CallState::Active && (c.caller == *fp || c.callee == *fp))
    }

    /// Every call, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    /// Calls in the table (not Ended).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Whether no call is in the table.
    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// How many times calls went `from` -> `to` (a new call counts as
    /// `Ended -> Pending`).
    pub fn transitions(&self, from: CallState, to: CallState) -> u64 {
        self.transitions.get(&(from, to)).copied().unwrap_or(0)
    }

    /// Calls ended, by [`EndReason::label`].
    pub fn ended(&self, reason: &str) -> u64 {
        self.ended.get(reason).copied().unwrap_or(0)
    }

    /// The earliest time [`CallRegistry::expire`] may have work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ring_deadlines.peek().map(|Reverse((t, _))| *t)
    }

    /// Ends every call still ringing past its deadline at `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<(Call, Transition)> {
        let mut out = Vec::new();
        while let Some(Reverse((due, _))) = self.ring_deadlines.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, id))) = self.ring_deadlines.pop() else {
                break;
            };
            if self
                .calls
                .get(&id)
                .is_some_and(|c| c.state == CallState::Ringing)
            {
                out.extend(self.end(&id, EndReason::RingingTimeout));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        Fingerprint([n; 16])
    }

    fn a() -> (Fingerprint, ConnId) {
        (fp(1), ConnId(1))
    }
    fn b() -> (Fingerprint, ConnId) {
        (fp(2), ConnId(2))
    }
    fn c() -> (Fingerprint, ConnId) {
        (fp(3), ConnId(3))
    }

    #[test]
    fn a_call_goes_pending_ringing_active_ended_and_every_step_is_counted() {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        use CallState::*;
        let steps: Vec<Transition> = vec![
            reg.offer("c1", a(), b(), t0).unwrap(),
            reg.ringing("c1", t0).unwrap(),
            reg.activate("c1", AcceptMode::AcceptGeneric, t0).unwrap(),
            reg.end("c1", EndReason::Hangup(Party::Callee, HangupReason::Normal))
                .unwrap()
                .1,
        ];
        let pairs: Vec<_> = steps.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            pairs,
            [
                (Ended, Pending),
                (Pending, Ringing),
                (Ringing, Active),
                (Active, Ended)
            ]
        );
        for (from, to) in pairs {
            assert_eq!(reg.transitions(from, to), 1);
        }
        assert_eq!(reg.ended("hangup"), 1);
        assert!(reg.is_empty());
        assert!(reg.call_of(&fp(1)).is_none());
    }

    fn d() -> (Fingerprint, ConnId) {
        (fp(4), ConnId(4))
    }

    /// a and b in an Active call "c1".
    fn in_call() -> CallRegistry {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("c1", a(), b(), t0).unwrap();
        reg.ringing("c1", t0).unwrap();
        reg.activate("c1", AcceptMode::AcceptGeneric, t0).unwrap();
        reg
    }

    #[test]
    fn a_waiting_call_rings_on_the_device_in_the_call_and_takes_over_when_that_ends() {
        let t0 = Instant::now();
        // b, the callee of c1, and a, its caller, can each have one waiting.
        for (busy, device) in [(b(), ConnId(2)), (a(), ConnId(1))] {
            let mut reg = in_call();
            let (t, conn) = reg.offer_waiting("w1", c(), busy.0, t0).unwrap();
            assert_eq!((t.from, t.to), (CallState::Ended, CallState::Pending));
            assert_eq!(conn, device);
            let w = reg.get("w1").unwrap();
            assert!(w.waiting);
            assert_eq!((w.callee, w.callee_conn), (busy.0, device));
            assert_eq!(reg.waiting_of(&busy.0).unwrap().id, "w1");
            // The person is still in c1; the caller is in w1.
            assert_eq!(reg.call_of(&busy.0).unwrap().id, "c1");
            assert_eq!(reg.call_of(&fp(3)).unwrap().id, "w1");
            assert!(reg.calls_of_conn(device).contains(&"w1".to_string()));
            // A second caller hears busy.
            assert_eq!(
                reg.offer_waiting("w2", d(), busy.0, t0).unwrap_err(),
                OfferRefusal::CalleeBusy
            );
            reg.ringing("w1", t0).unwrap();
            // c1 ends: w1 is the person's call and rings on.
            reg.end("c1", EndReason::Hangup(Party::Caller, HangupReason::Normal))
                .unwrap();
            let w = reg.get("w1").unwrap();
            assert!(!w.waiting);
            assert_eq!(w.state, CallState::Ringing);
            assert_eq!(reg.call_of(&busy.0).unwrap().id, "w1");
            assert!(reg.waiting_of(&busy.0).is_none());
            reg.activate("w1", AcceptMode::AcceptGeneric, t0).unwrap();
            // Someone else calling now can wait again.
            reg.offer_waiting("w3", d(), busy.0, t0).unwrap();
        }
    }

    #[test]
    fn a_kept_call_is_the_second_call_until_either_ends() {
        let t0 = Instant::now();
        // b takes w1 keeping c1; then either call ends first.
        for first in ["c1", "w1"] {
            let mut reg = in_call();
            reg.offer_waiting("w1", c(), fp(2), t0).unwrap();
            // Only a waiting call can be kept for, and only once.
            assert_eq!(reg.keep_for("c1"), None);
            assert_eq!(reg.keep_for("nope"), None);
            reg.ringing("w1", t0).unwrap();
            assert_eq!(reg.keep_for("w1").as_deref(), Some("c1"));
            assert_eq!(reg.keep_for("w1"), None);
            reg.activate("w1", AcceptMode::AcceptGeneric, t0).unwrap();
            assert_eq!(reg.call_of(&fp(2)).unwrap().id, "w1");
            assert_eq!(reg.kept_of(&fp(2)).unwrap().id, "c1");
            assert!(reg.get("c1").unwrap().kept);
            assert!(!reg.get("w1").unwrap().waiting);
            assert!(reg.waiting_of(&fp(2)).is_none());
            // Both stay joinable; a and c are each in theirs.
            assert!(reg.may_join("call-c1", &fp(2)) && reg.may_join("call-w1", &fp(2)));
            assert_eq!(reg.call_of(&fp(1)).unwrap().id, "c1");
            assert_eq!(reg.call_of(&fp(3)).unwrap().id, "w1");
            // In two calls, b takes no third: busy either way.
            assert_eq!(
                reg.offer_waiting("w2", d(), fp(2), t0).unwrap_err(),
                OfferRefusal::CalleeBusy
            );
            assert_eq!(
                reg.offer("w2", d(), b(), t0).unwrap_err(),
                OfferRefusal::CalleeBusy
            );
            reg.end(
                first,
                EndReason::Hangup(Party::Caller, HangupReason::Normal),
            )
            .unwrap();
            let left = if first == "c1" { "w1" } else { "c1" };
            assert_eq!(reg.call_of(&fp(2)).unwrap().id, left);
            assert!(reg.kept_of(&fp(2)).is_none());
            assert!(!reg.get(left).unwrap().kept);
            assert!(reg.calls_of_conn(ConnId(2)) == vec![left.to_string()]);
            // One call again: a waiting call may ring once more.
            reg.offer_waiting("w3", d(), fp(2), t0).unwrap();
        }
    }

    #[test]
    fn a_waiting_call_that_ends_leaves_the_call_in_progress_alone() {
        let t0 = Instant::now();
        for reason in [
            EndReason::Rejected,
            EndReason::RingingTimeout,
            EndReason::Hangup(Party::Caller, HangupReason::Normal),
        ] {
            let mut reg = in_call();
            reg.offer_waiting("w1", c(), fp(2), t0).unwrap();
            reg.end("w1", reason).unwrap();
            assert_eq!(reg.call_of(&fp(2)).unwrap().id, "c1");
            assert_eq!(reg.call_of(&fp(1)).unwrap().id, "c1");
            assert!(reg.call_of(&fp(3)).is_none());
            assert!(reg.waiting_of(&fp(2)).is_none());
            assert_eq!(reg.get("c1").unwrap().state, CallState::Active);
            // c can call again, and wait again.
            reg.offer_waiting("w2", c(), fp(2), t0).unwrap();
        }
    }

    #[test]
    fn waiting_offers_are_refused_as_offers_are_and_where_no_call_is_active() {
        let t0 = Instant::now();
        let mut reg = in_call();
        // c is ringing d (not Active): d is busy for a waiting call too.
        reg.offer("c2", c(), d(), t0).unwrap();
        let table = [
            ("w1", (fp(5), ConnId(5)), fp(4), OfferRefusal::CalleeBusy),
            ("w1", (fp(5), ConnId(5)), fp(6), OfferRefusal::CalleeBusy),
            ("w1", c(), fp(2), OfferRefusal::CallerBusy("c2".into())),
            (
                "c1",
                (fp(5), ConnId(5)),
                fp(2),
                OfferRefusal::CallIdInUse("c1".into()),
            ),
            ("w1", (fp(2), ConnId(9)), fp(2), OfferRefusal::ToSelf),
            (
                "BAD",
                (fp(5), ConnId(5)),
                fp(2),
                OfferRefusal::BadCallId("BAD".into()),
            ),
        ];
        for (id, caller, callee, want) in table {
            assert_eq!(
                reg.offer_waiting(id, caller, callee, t0).unwrap_err(),
                want,
                "{id} to {callee:?}"
            );
        }
        assert_eq!(reg.len(), 2);
        // A person in a call through federation is not rung here.
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("f1", (fp(1), ConnId::FEDERATION), b(), t0)
            .unwrap();
        reg.ringing("f1", t0).unwrap();
        reg.activate("f1", AcceptMode::AcceptGeneric, t0).unwrap();
        assert_eq!(
            reg.offer_waiting("w1", c(), fp(1), t0).unwrap_err(),
            OfferRefusal::CalleeBusy
        );
        reg.offer_waiting("w1", c(), fp(2), t0).unwrap();
    }

    #[test]
    fn transitions_out_of_order_are_refused() {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("c1", a(), b(), t0).unwrap();
        assert!(
            reg.activate("c1", AcceptMode::AcceptGeneric, t0).is_none(),
            "pending cannot be answered"
        );
        reg.ringing("c1", t0).unwrap();
        assert!(reg.ringing("c1", t0).is_none());
        assert!(reg.ringing("nope", t0).is_none());
        reg.activate("c1", AcceptMode::AcceptTrusted, t0).unwrap();
        assert!(reg.activate("c1", AcceptMode::AcceptTrusted, t0).is_none());
        assert_eq!(
            reg.get("c1").unwrap().accept_mode,
            Some(AcceptMode::AcceptTrusted)
        );
        assert!(reg.end("nope", EndReason::Rejected).is_none());
    }

    #[test]
    fn offers_are_refused_for_busy_self_and_bad_ids() {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("c1", a(), b(), t0).unwrap();
        let table = [
            ("c2", c(), b(), OfferRefusal::CalleeBusy),
            ("c2", c(), a(), OfferRefusal::CalleeBusy),
            ("c2", a(), c(), OfferRefusal::CallerBusy("c1".into())),
            (
                "c1",
                c(),
                (fp(4), ConnId(4)),
                OfferRefusal::CallIdInUse("c1".into()),
            ),
            ("c2", c(), c(), OfferRefusal::ToSelf),
            (
                "Bad!",
                c(),
                (fp(4), ConnId(4)),
                OfferRefusal::BadCallId("Bad!".into()),
            ),
            (
                "",
                c(),
                (fp(4), ConnId(4)),
                OfferRefusal::BadCallId(String::new()),
            ),
        ];
        for (id, from, to, want) in table {
            assert_eq!(
                reg.offer(id, from, to, t0),
                Err(want.clone()),
                "{id} {want}"
            );
        }
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.transitions(CallState::Ended, CallState::Pending), 1);
        // Once the call ends, both are free again.
        reg.end("c1", EndReason::Rejected).unwrap();
        reg.offer("c2", c(), b(), t0).unwrap();
        reg.offer("c3", a(), (fp(4), ConnId(4)), t0).unwrap();
    }

    #[test]
    fn ringing_times_out_and_answered_calls_do_not() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut reg = CallRegistry::new(s(30));
        reg.offer("c1", a(), b(), t0).unwrap();
        reg.ringing("c1", t0).unwrap();
        reg.offer("c2", c(), (fp(4), ConnId(4)), t0 + s(5)).unwrap();
        reg.ringing("c2", t0 + s(5)).unwrap();
        reg.activate("c2", AcceptMode::AcceptGeneric, t0 + s(6))
            .unwrap();
        assert_eq!(reg.poll_timeout(), Some(t0 + s(30)));
        assert!(reg.expire(t0 + s(29)).is_empty());
        let ended = reg.expire(t0 + s(30));
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].0.id, "c1");
        assert_eq!(ended[0].1.reason, Some(EndReason::RingingTimeout));
        assert_eq!(
            ended[0].1.reason.unwrap().hangup_reason(),
            HangupReason::Timeout
        );
        // c2 was answered: its deadline passes without effect.
        assert!(reg.expire(t0 + s(60)).is_empty());
        assert_eq!(reg.get("c2").unwrap().state, CallState::Active);
        assert_eq!(reg.ended("ringing_timeout"), 1);
    }

    #[test]
    fn the_call_room_admits_exactly_the_two_parties_of_an_active_call() {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("c1", a(), b(), t0).unwrap();
        reg.ringing("c1", t0).unwrap();
        assert!(!reg.may_join("call-c1", &fp(1)), "ringing is not active");
        reg.activate("c1", AcceptMode::AcceptGeneric, t0).unwrap();
        assert!(reg.may_join("call-c1", &fp(1)));
        assert!(reg.may_join("call-c1", &fp(2)));
        assert!(!reg.may_join("call-c1", &fp(3)));
        assert!(!reg.may_join("call-c2", &fp(1)));
        assert!(!reg.may_join("c1", &fp(1)));
        assert_eq!(reg.calls_of_conn(ConnId(2)), vec!["c1".to_string()]);
        reg.end("c1", EndReason::Disconnected(Party::Callee))
            .unwrap();
        assert!(!reg.may_join("call-c1", &fp(1)));
        assert!(reg.calls_of_conn(ConnId(2)).is_empty());
        assert_eq!(reg.ended("disconnected"), 1);
    }

    #[test]
    fn a_call_rings_every_device_and_the_one_that_answers_takes_it() {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("c1", a(), b(), t0).unwrap();
        reg.add_forks(
            "c1",
            &[ConnId(2), ConnId(20), ConnId(21), ConnId::FEDERATION],
        );
        assert_eq!(
            reg.get("c1").unwrap().callee_forks,
            [ConnId(20), ConnId(21)]
        );
        reg.ringing("c1", t0).unwrap();
        for conn in [2, 20, 21] {
            assert_eq!(
                reg.get("c1").unwrap().party_of_conn(ConnId(conn)),
                Some(Party::Callee)
            );
            assert_eq!(reg.calls_of_conn(ConnId(conn)), vec!["c1".to_string()]);
        }
        // One device goes while it rings: the others ring on.
        assert!(reg.drop_device("c1", ConnId(2)));
        assert_eq!(reg.get("c1").unwrap().callee_conn, ConnId(20));
        assert!(reg.calls_of_conn(ConnId(2)).is_empty());
        // A connection that is not one of them changes nothing.
        assert!(!reg.drop_device("c1", ConnId(99)));
        assert!(reg.answered_by("c1", ConnId(99)).is_empty());
        // The last-rung device answers: the first is told, and leaves.
        assert_eq!(reg.answered_by("c1", ConnId(21)), [ConnId(20)]);
        let call = reg.get("c1").unwrap();
        assert_eq!((call.callee_conn, call.callee_forks.len()), (ConnId(21), 0));
        assert_eq!(call.party_of_conn(ConnId(20)), None);
        assert!(reg.calls_of_conn(ConnId(20)).is_empty());
        // With one device left, its going is the callee's.
        assert!(!reg.drop_device("c1", ConnId(21)));
        reg.activate("c1", AcceptMode::AcceptGeneric, t0).unwrap();
        reg.end("c1", EndReason::Hangup(Party::Caller, HangupReason::Normal))
            .unwrap();
        assert!(reg.calls_of_conn(ConnId(21)).is_empty());
        assert!(reg.calls_of_conn(ConnId(1)).is_empty());
    }

    #[test]
    fn ending_a_ringing_call_unindexes_every_device() {
        let t0 = Instant::now();
        let mut reg = CallRegistry::new(DEFAULT_RINGING_TIMEOUT);
        reg.offer("c1", a(), b(), t0).unwrap();
        reg.add_forks("c1", &[ConnId(20)]);
        let (call, _) = reg.end("c1", EndReason::RingingTimeout).unwrap();
        assert_eq!(call.callee_forks, [ConnId(20)]);
        assert!(reg.calls_of_conn(ConnId(20)).is_empty());
        assert!(reg.calls_of_conn(ConnId(2)).is_empty());
    }
}
