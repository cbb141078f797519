//! Direct calls by fingerprint, client side (sans-IO): [`OutgoingCall`] for
//! the caller, [`IncomingCall`] for the callee.
//!
//! The call key is the two clients' business. The caller's
//! [`HandshakeInit`] rides in `direct_call_offer`, the callee's
//! [`HandshakeResponse`] in `direct_call_answer`, the caller's
//! [`HandshakeFinish`] in `call_confirm` (docs/WIRE.md, "The signal plane").
//! The handshake context is [`call_context`]`(call_id)`, and the transcript
//! binds both fingerprints, so the keys belong to this call between these two
//! people; the relay only carries the halves and never holds the key. Both
//! sides end with the same [`Sas`] and matching per-direction [`SessionKeys`].
//!
//! Both machines are fed every message from the relay ([`OutgoingCall::handle`],
//! [`IncomingCall::handle`]); messages for other calls are ignored. Messages to
//! send are pulled with `poll_send`.
//!
//! ```
//! use wzp_proto::direct_call::{CallEvent, IncomingCall, OutgoingCall};
//! use wzp_proto::handshake::EphemeralKey;
//! use wzp_proto::signal::{AcceptMode, SignalMessage};
//! use wzp_proto::Seed;
//!
//! let alice = Seed::from_bytes([1; 32]).identity();
//! let bob = Seed::from_bytes([2; 32]).identity();
//! let mut out = OutgoingCall::start(&alice, EphemeralKey::from_bytes([3; 32]), "c1".into(), bob.fingerprint(), None).unwrap();
//! let offer = out.poll_send().unwrap();
//! let mut inc = IncomingCall::from_offer(&offer).unwrap();
//! inc.accept(&bob, EphemeralKey::from_bytes([4; 32]), AcceptMode::AcceptGeneric, None).unwrap();
//! let answer = inc.poll_send().unwrap();
//! // The relay forwards the answer and sends call_setup to both.
//! let setup = |peer| SignalMessage::CallSetup { call_id: "c1".into(), room: "call-c1".into(),
//!     relay_addr: "relay:4433".into(), peer_direct_addr: None, peer_local_addrs: vec![],
//!     peer_fingerprint: Some(peer), peer_mapping: wzp_proto::mapping::Mapping::Unknown,
//!     observed_addr: None };
//! assert!(out.handle(&answer).is_none());
//! let Some(CallEvent::Answered(a)) = out.handle(&setup(bob.fingerprint())) else { panic!() };
//! let confirm = out.poll_send().unwrap();
//! assert!(inc.handle(&setup(alice.fingerprint())).is_none());
//! let Some(CallEvent::Answered(b)) = inc.handle(&confirm) else { panic!() };
//! assert_eq!(a.sas, b.sas);
//! assert_eq!(a.keys.send_key(), b.keys.recv_key());
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::handshake::{
    EphemeralKey, HandshakeError, HandshakeFinish, HandshakeInit, HandshakeResponse, Initiator,
    Responder, Sas, SessionKeys,
};
use crate::identity::Identity;
use crate::path_addrs::PathAddrs;
use crate::signal::{AcceptMode, HangupReason, SignalMessage};
use crate::sni::call_room;
use crate::Fingerprint;

/// Label before the call id in the handshake context.
pub const CALL_CONTEXT_LABEL: &[u8] = b"wzp-direct-call-v1:";

/// The handshake context of a call: `"wzp-direct-call-v1:" || call_id`.
pub fn call_context(call_id: &str) -> Vec<u8> {
    let mut c = CALL_CONTEXT_LABEL.to_vec();
    c.extend_from_slice(call_id.as_bytes());
    c
}

/// A call id from 16 random bytes: 32 lowercase hex digits (a valid
/// `call-*` room suffix).
pub fn call_id_from_bytes(bytes: [u8; 16]) -> String {
    hex::encode(bytes)
}

/// A fresh call id from the operating system RNG.
pub fn random_call_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(call_id_from_bytes(b))
}

/// Why a call could not start or go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The call id cannot name a call room.
    #[error("call id {0:?} is not 1..=58 of [a-z0-9-]")]
    BadCallId(String),
    /// The message is not a `direct_call_offer`.
    #[error("expected direct_call_offer, got {0}")]
    NotAnOffer(&'static str),
    /// A handshake half is missing.
    #[error("{0} carries no handshake")]
    MissingHandshake(&'static str),
    /// A handshake half is malformed or does not verify.
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    /// The offer's handshake is signed by another identity than the caller
    /// it names.
    #[error("offer names caller {claimed} but its handshake is from {actual}")]
    CallerMismatch {
        /// The `caller_fingerprint` of the offer.
        claimed: Fingerprint,
        /// The fingerprint of the handshake's identity key.
        actual: Fingerprint,
    },
    /// The call was already answered or ended.
    #[error("the call was already answered or has ended")]
    NotRinging,
}

/// A call that is up: the media keys and where the media goes.
#[derive(Debug, Clone)]
pub struct CallReady {
    /// The call id.
    pub call_id: String,
    /// The peer's authenticated fingerprint.
    pub peer: Fingerprint,
    /// Per-direction media keys.
    pub keys: SessionKeys,
    /// The short authentication string both users should see.
    pub sas: Sas,
    /// The call room (TLS server name of the media connection).
    pub room: String,
    /// The relay to send media through.
    pub relay_addr: String,
    /// The peer's direct address, when both allowed it.
    pub peer_direct_addr: Option<SocketAddr>,
    /// The peer's own addresses on its network, when both allowed it.
    pub peer_local_addrs: Vec<SocketAddr>,
    /// What the relay's mapping test showed of the peer's NAT, for
    /// `peer_direct_addr` ([`crate::mapping`]; untested without it).
    pub peer_mapping: crate::mapping::Mapping,
    /// This party's own address as the relay saw it at the call's setup
    /// (`None` from a relay that does not say).
    pub observed_addr: Option<SocketAddr>,
    /// How the callee answered: with [`AcceptMode::AcceptTrusted`] the two
    /// parties may share their addresses for a direct path (through the
    /// relay on one relay, sealed in `call_path` across relays).
    pub accept_mode: AcceptMode,
}

/// What happened to a call.
#[derive(Debug, Clone)]
pub enum CallEvent {
    /// The callee is being alerted (caller only).
    Ringing,
    /// The call is up.
    Answered(Box<CallReady>),
    /// The callee declined.
    Rejected,
    /// The callee is in another call.
    Busy,
    /// Nobody is registered as the callee.
    NotOnline,
    /// Nobody answered in time.
    NoAnswer,
    /// The call ended (the peer or the relay hung up).
    HungUp {
        /// Why.
        reason: HangupReason,
        /// The relay's or peer's explanation.
        message: Option<String>,
    },
    /// The call failed on our side (a handshake half did not verify); a
    /// `hangup` with reason `error` is queued for the relay.
    Failed {
        /// What went wrong.
        error: CallError,
    },
    /// The peer's addresses for a direct path arrived sealed in a
    /// `call_path` and opened with the call's keys (answered calls only).
    PeerPath(PathAddrs),
    /// The peer put the call on hold (`true`) or took it back (answered
    /// calls only; its `call_hold` opened with the call's keys and is newer
    /// than the last: a relay can withhold a notice, not forge or replay
    /// one).
    Hold(bool),
}

#[derive(Debug, Clone)]
struct Setup {
    room: String,
    relay_addr: String,
    peer_direct_addr: Option<SocketAddr>,
    peer_local_addrs: Vec<SocketAddr>,
    peer_mapping: crate::mapping::Mapping,
    observed_addr: Option<SocketAddr>,
}

fn setup_of(msg: &SignalMessage) -> Setup {
    match msg {
        SignalMessage::CallSetup {
            room,
            relay_addr,
            peer_direct_addr,
            peer_local_addrs,
            peer_mapping,
            observed_addr,
            ..
        } => Setup {
            room: room.clone(),
            relay_addr: relay_addr.clone(),
            peer_direct_addr: *peer_direct_addr,
            peer_local_addrs: peer_local_addrs
                .iter()
                .copied()
                .take(crate::signal::MAX_LOCAL_ADDRS)
                .collect(),
            peer_mapping: if peer_direct_addr.is_some() {
                *peer_mapping
            } else {
                crate::mapping::Mapping::Unknown
            },
            observed_addr: *observed_addr,
        },
        _ => unreachable!("setup_of is only called on call_setup"),
    }
}

fn call_id_of(msg: &SignalMessage) -> Option<&str> {
    use SignalMessage as M;
    match msg {
        M::DirectCallOffer { call_id, .. }
        | M::DirectCallAnswer { call_id, .. }
        | M::CallRinging { call_id, .. }
        | M::CallSetup { call_id, .. } => Some(call_id),
        M::CallPath { call_id, .. } | M::CallHold { call_id, .. } => Some(call_id),
        M::CallConfirm { call_id, .. } | M::Hangup { call_id, .. } => call_id.as_deref(),
        _ => None,
    }
}

fn hangup(call_id: &str, reason: HangupReason, message: Option<String>) -> SignalMessage {
    SignalMessage::Hangup {
        reason,
        call_id: Some(call_id.to_string()),
        message,
    }
}

fn ready(call_id: &str, keys: &SessionKeys, setup: &Setup, accept_mode: AcceptMode) -> CallEvent {
    CallEvent::Answered(Box::new(CallReady {
        call_id: call_id.to_string(),
        peer: keys.peer_fingerprint(),
        keys: keys.clone(),
        sas: keys.sas(),
        room: setup.room.clone(),
        relay_addr: setup.relay_addr.clone(),
        peer_direct_addr: setup.peer_direct_addr,
        peer_local_addrs: setup.peer_local_addrs.clone(),
        peer_mapping: setup.peer_mapping,
        observed_addr: setup.observed_addr,
        accept_mode,
    }))
}

/// A `call_path` carrying `addrs` sealed for the peer.
fn call_path(
    call_id: &str,
    keys: &SessionKeys,
    addrs: &PathAddrs,
    nonce: [u8; 12],
) -> SignalMessage {
    SignalMessage::CallPath {
        call_id: call_id.to_string(),
        sealed: addrs.seal(keys, call_id, nonce),
    }
}

/// The hold notices of one call: how many this party sent, and the number
/// of the last one it took from the other (a notice must come with a higher
/// one: one a relay kept and sends again is dropped).
#[derive(Debug, Default)]
struct HoldSeq {
    sent: u32,
    heard: Option<u32>,
}

impl HoldSeq {
    /// The next `call_hold` of this party.
    fn notice(
        &mut self,
        call_id: &str,
        keys: &SessionKeys,
        held: bool,
        nonce: [u8; 12],
    ) -> SignalMessage {
        self.sent = self.sent.saturating_add(1);
        SignalMessage::CallHold {
            call_id: call_id.to_string(),
            sealed: crate::hold::seal(keys, call_id, held, self.sent, nonce),
        }
    }

    /// What the other party's `call_hold` says, if it opens with the
    /// call's keys and is newer than the last one taken.
    fn heard(&mut self, call_id: &str, keys: &SessionKeys, sealed: &[u8]) -> Option<CallEvent> {
        match crate::hold::open(keys, call_id, sealed) {
            Ok((held, seq)) if self.heard.is_none_or(|h| seq > h) => {
                self.heard = Some(seq);
                Some(CallEvent::Hold(held))
            }
            Ok(_) => {
                tracing::debug!(call_id, "call_hold dropped: an old notice again");
                None
            }
            Err(e) => {
                tracing::debug!(call_id, "call_hold dropped: {e}");
                None
            }
        }
    }
}

/// What a `call_path` for an answered call means: the peer's addresses,
/// or nothing when it does not open with the call's keys (forged or
/// altered on the way: dropped).
fn peer_path(call_id: &str, keys: &SessionKeys, sealed: &[u8]) -> Option<CallEvent> {
    match PathAddrs::open(sealed, keys, call_id) {
        Ok(addrs) => Some(CallEvent::PeerPath(addrs)),
        Err(e) => {
            tracing::debug!(call_id, "call_path dropped: {e}");
            None
        }
    }
}

enum OutState {
    Offered {
        initiator: Box<Initiator>,
        ringing: bool,
    },
    Keyed {
        keys: SessionKeys,
        mode: AcceptMode,
    },
    Ended,
}

/// The caller's side of a direct call.
pub struct OutgoingCall {
    call_id: String,
    target: Fingerprint,
    state: OutState,
    setup: Option<Setup>,
    outbox: VecDeque<SignalMessage>,
    /// The callee is in another call and this one rings there as waiting.
    waiting: bool,
    holds: HoldSeq,
}

impl std::fmt::Debug for OutgoingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingCall")
            .field("call_id", &self.call_id)
            .field("target", &self.target)
            .field("ended", &self.is_ended())
            .finish_non_exhaustive()
    }
}

impl OutgoingCall {
    /// Starts a call to `target`; the `direct_call_offer` is queued for
    /// [`OutgoingCall::poll_send`]. `call_id` comes from [`random_call_id`].
    pub fn start(
        identity: &Identity,
        ephemeral: EphemeralKey,
        call_id: String,
        target: Fingerprint,
        alias: Option<String>,
    ) -> Result<OutgoingCall, CallError> {
        if call_room(&call_id).is_none() {
            return Err(CallError::BadCallId(call_id));
        }
        let (initiator, init) =
            Initiator::start(identity, ephemeral, &call_context(&call_id), Some(target));
        let offer = SignalMessage::DirectCallOffer {
            call_id: call_id.clone(),
            caller_fingerprint: identity.fingerprint(),
            target_fingerprint: target,
            caller_alias: alias,
            handshake: Some(init.encode().to_vec()),
            supported_codecs: Vec::new(),
            caller_reflexive_addr: None,
            caller_local_addrs: Vec::new(),
        };
        Ok(OutgoingCall {
            call_id,
            target,
            state: OutState::Offered {
                initiator: Box::new(initiator),
                ringing: false,
            },
            setup: None,
            outbox: VecDeque::from([offer]),
            waiting: false,
            holds: HoldSeq::default(),
        })
    }

    /// Whether the callee is in another call and this one rings there as a
    /// waiting call (its `call_ringing` said so): the callee may end the
    /// other call to answer, or decline.
    pub fn rings_waiting(&self) -> bool {
        self.waiting
    }

    /// Shares `addr` (this side's address as the relay sees it) with the
    /// callee, for a direct path: the relay passes it on only if the callee
    /// answers `accept_trusted` (docs/WIRE.md §8.2, §10). Call before the
    /// offer is sent.
    ///
    /// `local`: this side's own addresses on its network, for a callee
    /// behind the same NAT (at most [`crate::signal::MAX_LOCAL_ADDRS`]).
    pub fn share_address(&mut self, addr: Option<SocketAddr>, local: &[SocketAddr]) {
        for m in &mut self.outbox {
            if let SignalMessage::DirectCallOffer {
                caller_reflexive_addr,
                caller_local_addrs,
                ..
            } = m
            {
                *caller_reflexive_addr = addr;
                *caller_local_addrs = local
                    .iter()
                    .copied()
                    .take(crate::signal::MAX_LOCAL_ADDRS)
                    .collect();
            }
        }
    }

    /// The call id.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Whom we call.
    pub fn target(&self) -> Fingerprint {
        self.target
    }

    /// Whether the call is over (answered calls end with a hangup).
    pub fn is_ended(&self) -> bool {
        matches!(self.state, OutState::Ended)
    }

    /// The next message to send to the relay.
    pub fn poll_send(&mut self) -> Option<SignalMessage> {
        self.outbox.pop_front()
    }

    /// Hangs up (cancels a ringing call); queues the `hangup`.
    pub fn hangup(&mut self) {
        if !self.is_ended() {
            self.state = OutState::Ended;
            self.outbox
                .push_back(hangup(&self.call_id, HangupReason::Normal, None));
        }
    }

    /// Queues a `call_path` with this side's `addrs` sealed for the callee
    /// (`nonce`: 12 fresh random bytes). Only on an answered call whose
    /// callee answered `accept_trusted`; returns whether it was queued.
    pub fn share_path(&mut self, addrs: &PathAddrs, nonce: [u8; 12]) -> bool {
        match &self.state {
            OutState::Keyed {
                keys,
                mode: AcceptMode::AcceptTrusted,
            } => {
                let m = call_path(&self.call_id, keys, addrs, nonce);
                self.outbox.push_back(m);
                true
            }
            _ => false,
        }
    }

    /// Tells the callee the call is on hold (`held`) or taken back, sealed
    /// with the call's keys and a fresh `nonce`; `false` (nothing queued)
    /// unless the call is answered.
    pub fn hold(&mut self, held: bool, nonce: [u8; 12]) -> bool {
        let OutState::Keyed { keys, .. } = &self.state else {
            return false;
        };
        let m = self.holds.notice(&self.call_id, keys, held, nonce);
        self.outbox.push_back(m);
        true
    }

    fn fail(&mut self, error: CallError) -> Option<CallEvent> {
        self.state = OutState::Ended;
        self.outbox.push_back(hangup(
            &self.call_id,
            HangupReason::Error,
            Some(error.to_string()),
        ));
        Some(CallEvent::Failed { error })
    }

    /// Feeds one message from the relay; returns what it meant for this call.
    pub fn handle(&mut self, msg: &SignalMessage) -> Option<CallEvent> {
        if call_id_of(msg) != Some(self.call_id.as_str()) || self.is_ended() {
            return None;
        }
        match msg {
            SignalMessage::CallRinging { waiting, .. } => match &mut self.state {
                OutState::Offered { ringing, .. } if !*ringing => {
                    *ringing = true;
                    self.waiting = *waiting;
                    Some(CallEvent::Ringing)
                }
                _ => None,
            },
            SignalMessage::DirectCallAnswer {
                accept_mode: AcceptMode::Reject,
                ..
            } => {
                self.state = OutState::Ended;
                Some(CallEvent::Rejected)
            }
            SignalMessage::DirectCallAnswer {
                handshake,
                accept_mode,
                ..
            } => {
                if !matches!(self.state, OutState::Offered { .. }) {
                    return None;
                }
                let Some(bytes) = handshake else {
                    return self.fail(CallError::MissingHandshake("direct_call_answer"));
                };
                let response = match HandshakeResponse::parse(bytes) {
                    Ok(r) => r,
                    Err(e) => return self.fail(e.into()),
                };
                let OutState::Offered { initiator, .. } =
                    std::mem::replace(&mut self.state, OutState::Ended)
                else {
                    return None;
                };
                match initiator.finish(&response) {
                    Ok((keys, finish)) => {
                        self.outbox.push_back(SignalMessage::CallConfirm {
                            call_id: Some(self.call_id.clone()),
                            handshake: finish.encode().to_vec(),
                        });
                        let mode = *accept_mode;
                        let event = self
                            .setup
                            .as_ref()
                            .map(|s| ready(&self.call_id, &keys, s, mode));
                        self.state = OutState::Keyed { keys, mode };
                        event
                    }
                    Err(e) => self.fail(e.into()),
                }
            }
            SignalMessage::CallSetup { .. } => {
                if self.setup.is_some() {
                    return None;
                }
                let setup = setup_of(msg);
                let event = match &self.state {
                    OutState::Keyed { keys, mode } => {
                        Some(ready(&self.call_id, keys, &setup, *mode))
                    }
                    _ => None,
                };
                self.setup = Some(setup);
                event
            }
            SignalMessage::CallHold { sealed, .. } => match &self.state {
                OutState::Keyed { keys, .. } => self.holds.heard(&self.call_id, keys, sealed),
                _ => None,
            },
            // Addresses are for calls answered accept_trusted only.
            SignalMessage::CallPath { sealed, .. } => match &self.state {
                OutState::Keyed {
                    keys,
                    mode: AcceptMode::AcceptTrusted,
                } => peer_path(&self.call_id, keys, sealed),
                _ => None,
            },
            SignalMessage::Hangup {
                reason, message, ..
            } => {
                let answered = matches!(self.state, OutState::Keyed { .. });
                self.state = OutState::Ended;
                Some(match (reason, answered) {
                    (HangupReason::Busy, false) => CallEvent::Busy,
                    (HangupReason::Declined, false) => CallEvent::Rejected,
                    (HangupReason::NotOnline, false) => CallEvent::NotOnline,
                    (HangupReason::Timeout, false) => CallEvent::NoAnswer,
                    _ => CallEvent::HungUp {
                        reason: *reason,
                        message: message.clone(),
                    },
                })
            }
            _ => None,
        }
    }
}

enum InState {
    Offered,
    Accepted { responder: Responder },
    Confirmed { keys: SessionKeys },
    Ended,
}

/// The callee's side of a direct call.
pub struct IncomingCall {
    call_id: String,
    caller: Fingerprint,
    caller_alias: Option<String>,
    init: HandshakeInit,
    state: InState,
    setup: Option<Setup>,
    outbox: VecDeque<SignalMessage>,
    /// Own-network addresses for a trusted caller ([`Self::share_local`]).
    local: Vec<SocketAddr>,
    /// How we answered.
    mode: AcceptMode,
    holds: HoldSeq,
    /// Answer keeping the call in progress ([`Self::keep_current`]).
    keep_current: bool,
}

impl std::fmt::Debug for IncomingCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingCall")
            .field("call_id", &self.call_id)
            .field("caller", &self.caller)
            .field("ended", &self.is_ended())
            .finish_non_exhaustive()
    }
}

impl IncomingCall {
    /// Reads a `direct_call_offer`. Fails if the call id cannot name a room,
    /// the handshake half is missing or malformed, or it was signed by
    /// another identity than `caller_fingerprint` (answer such an offer with
    /// [`refusal`]).
    pub fn from_offer(msg: &SignalMessage) -> Result<IncomingCall, CallError> {
        let SignalMessage::DirectCallOffer {
            call_id,
            caller_fingerprint,
            caller_alias,
            handshake,
            ..
        } = msg
        else {
            return Err(CallError::NotAnOffer(msg.type_name()));
        };
        if call_room(call_id).is_none() {
            return Err(CallError::BadCallId(call_id.clone()));
        }
        let bytes = handshake
            .as_deref()
            .ok_or(CallError::MissingHandshake("direct_call_offer"))?;
        let init = HandshakeInit::parse(bytes)?;
        let actual = Fingerprint::of_public_key(&init.identity);
        if actual != *caller_fingerprint {
            return Err(CallError::CallerMismatch {
                claimed: *caller_fingerprint,
                actual,
            });
        }
        Ok(IncomingCall {
            call_id: call_id.clone(),
            caller: actual,
            caller_alias: caller_alias.clone(),
            init,
            state: InState::Offered,
            setup: None,
            outbox: VecDeque::new(),
            local: Vec::new(),
            mode: AcceptMode::AcceptGeneric,
            holds: HoldSeq::default(),
            keep_current: false,
        })
    }

    /// The call id.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// Who calls (proven by the handshake only once the call is answered).
    pub fn caller(&self) -> Fingerprint {
        self.caller
    }

    /// The caller's display name, as the caller set it.
    pub fn caller_alias(&self) -> Option<&str> {
        self.caller_alias.as_deref()
    }

    /// Whether the call is over.
    pub fn is_ended(&self) -> bool {
        matches!(self.state, InState::Ended)
    }

    /// The next message to send to the relay.
    pub fn poll_send(&mut self) -> Option<SignalMessage> {
        self.outbox.pop_front()
    }

    /// Shares this side's own addresses on its network with a trusted
    /// caller (in the answer, only with [`AcceptMode::AcceptTrusted`]), for
    /// a caller behind the same NAT. Call before [`Self::accept`].
    pub fn share_local(&mut self, local: &[SocketAddr]) {
        self.local = local
            .iter()
            .copied()
            .take(crate::signal::MAX_LOCAL_ADDRS)
            .collect();
    }

    /// This call rings as a waiting call: answering it keeps the call in
    /// progress, on hold, instead of ending it (only with a relay listing
    /// [`crate::signal::FEATURE_KEEP_CALL`]). Call before [`Self::accept`].
    pub fn keep_current(&mut self) {
        self.keep_current = true;
    }

    /// Accepts: queues the `direct_call_answer` carrying our handshake half.
    /// `reflexive_addr` is shared only with [`AcceptMode::AcceptTrusted`].
    pub fn accept(
        &mut self,
        identity: &Identity,
        ephemeral: EphemeralKey,
        mode: AcceptMode,
        reflexive_addr: Option<SocketAddr>,
    ) -> Result<(), CallError> {
        if mode == AcceptMode::Reject {
            self.reject();
            return Ok(());
        }
        if !matches!(self.state, InState::Offered) {
            return Err(CallError::NotRinging);
        }
        let (responder, response) = Responder::respond(
            identity,
            ephemeral,
            &call_context(&self.call_id),
            &self.init,
            Some(self.caller),
        )?;
        self.outbox.push_back(SignalMessage::DirectCallAnswer {
            call_id: self.call_id.clone(),
            accept_mode: mode,
            handshake: Some(response.encode().to_vec()),
            chosen_codec: None,
            callee_reflexive_addr: if mode == AcceptMode::AcceptTrusted {
                reflexive_addr
            } else {
                None
            },
            callee_local_addrs: if mode == AcceptMode::AcceptTrusted {
                std::mem::take(&mut self.local)
            } else {
                Vec::new()
            },
            keep_current: self.keep_current,
        });
        self.state = InState::Accepted { responder };
        self.mode = mode;
        Ok(())
    }

    /// Declines: queues a `direct_call_answer` with `reject`.
    pub fn reject(&mut self) {
        if matches!(self.state, InState::Offered) {
            self.state = InState::Ended;
            self.outbox.push_back(SignalMessage::DirectCallAnswer {
                call_id: self.call_id.clone(),
                accept_mode: AcceptMode::Reject,
                handshake: None,
                chosen_codec: None,
                callee_reflexive_addr: None,
                callee_local_addrs: Vec::new(),
                keep_current: false,
            });
        }
    }

    /// Hangs up; queues the `hangup`.
    pub fn hangup(&mut self) {
        if !self.is_ended() {
            self.state = InState::Ended;
            self.outbox
                .push_back(hangup(&self.call_id, HangupReason::Normal, None));
        }
    }

    /// Queues a `call_path` with this side's `addrs` sealed for the caller
    /// (`nonce`: 12 fresh random bytes). Only once the caller's
    /// `call_confirm` verified, and only if we answered `accept_trusted`;
    /// returns whether it was queued.
    pub fn share_path(&mut self, addrs: &PathAddrs, nonce: [u8; 12]) -> bool {
        match &self.state {
            InState::Confirmed { keys } if self.mode == AcceptMode::AcceptTrusted => {
                let m = call_path(&self.call_id, keys, addrs, nonce);
                self.outbox.push_back(m);
                true
            }
            _ => false,
        }
    }

    /// Tells the caller the call is on hold (`held`) or taken back, sealed
    /// with the call's keys and a fresh `nonce`; `false` (nothing queued)
    /// unless the call is confirmed.
    pub fn hold(&mut self, held: bool, nonce: [u8; 12]) -> bool {
        let InState::Confirmed { keys } = &self.state else {
            return false;
        };
        let m = self.holds.notice(&self.call_id, keys, held, nonce);
        self.outbox.push_back(m);
        true
    }

    fn fail(&mut self, error: CallError) -> Option<CallEvent> {
        self.state = InState::Ended;
        self.outbox.push_back(hangup(
            &self.call_id,
            HangupReason::Error,
            Some(error.to_string()),
        ));
        Some(CallEvent::Failed { error })
    }

    /// Feeds one message from the relay; returns what it meant for this call.
    pub fn handle(&mut self, msg: &SignalMessage) -> Option<CallEvent> {
        if call_id_of(msg) != Some(self.call_id.as_str()) || self.is_ended() {
            return None;
        }
        match msg {
            SignalMessage::CallConfirm { handshake, .. } => {
                if !matches!(self.state, InState::Accepted { .. }) {
                    return None;
                }
                let finish = match HandshakeFinish::parse(handshake) {
                    Ok(f) => f,
                    Err(e) => return self.fail(e.into()),
                };
                let InState::Accepted { responder } =
                    std::mem::replace(&mut self.state, InState::Ended)
                else {
                    return None;
                };
                match responder.confirm(&finish) {
                    Ok(keys) => {
                        let mode = self.mode;
                        let event = self
                            .setup
                            .as_ref()
                            .map(|s| ready(&self.call_id, &keys, s, mode));
                        self.state = InState::Confirmed { keys };
                        event
                    }
                    Err(e) => self.fail(e.into()),
                }
            }
            SignalMessage::CallSetup { .. } => {
                if self.setup.is_some() {
                    return None;
                }
                let setup = setup_of(msg);
                let event = match &self.state {
                    InState::Confirmed { keys } => {
                        Some(ready(&self.call_id, keys, &setup, self.mode))
                    }
                    _ => None,
                };
                self.setup = Some(setup);
                event
            }
            SignalMessage::CallHold { sealed, .. } => match &self.state {
                InState::Confirmed { keys } => self.holds.heard(&self.call_id, keys, sealed),
                _ => None,
            },
            // A callee that answered accept_generic takes no addresses (and
            // shares none).
            SignalMessage::CallPath { sealed, .. } => match &self.state {
                InState::Confirmed { keys } if self.mode == AcceptMode::AcceptTrusted => {
                    peer_path(&self.call_id, keys, sealed)
                }
                _ => None,
            },
            SignalMessage::Hangup {
                reason, message, ..
            } => {
                let ringing = matches!(self.state, InState::Offered);
                self.state = InState::Ended;
                Some(match (reason, ringing) {
                    (HangupReason::Timeout, true) => CallEvent::NoAnswer,
                    _ => CallEvent::HungUp {
                        reason: *reason,
                        message: message.clone(),
                    },
                })
            }
            _ => None,
        }
    }
}

/// The `hangup` a callee sends for an offer it cannot take
/// ([`IncomingCall::from_offer`] failed), when the offer has a call id.
pub fn refusal(offer: &SignalMessage, error: &CallError) -> Option<SignalMessage> {
    match offer {
        SignalMessage::DirectCallOffer { call_id, .. } => Some(hangup(
            call_id,
            HangupReason::Error,
            Some(error.to_string()),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Seed;

    fn id(n: u8) -> Identity {
        Seed::from_bytes([n; 32]).identity()
    }

    fn eph(n: u8) -> EphemeralKey {
        EphemeralKey::from_bytes([n; 32])
    }

    fn setup(call_id: &str) -> SignalMessage {
        SignalMessage::CallSetup {
            peer_mapping: crate::mapping::Mapping::Unknown,
            observed_addr: None,
            call_id: call_id.into(),
            room: format!("call-{call_id}"),
            relay_addr: "r:1".into(),
            peer_direct_addr: None,
            peer_local_addrs: Vec::new(),
            peer_fingerprint: None,
        }
    }

    fn pair() -> (OutgoingCall, IncomingCall, SignalMessage) {
        let mut out =
            OutgoingCall::start(&id(1), eph(11), "k1".into(), id(2).fingerprint(), None).unwrap();
        let offer = out.poll_send().unwrap();
        let inc = IncomingCall::from_offer(&offer).unwrap();
        (out, inc, offer)
    }

    #[test]
    fn both_orders_of_setup_and_handshake_give_the_same_keys() {
        for setup_first in [false, true] {
            let (mut out, mut inc, _) = pair();
            assert!(matches!(
                out.handle(&SignalMessage::CallRinging {
                    call_id: "k1".into(),
                    waiting: setup_first,
                }),
                Some(CallEvent::Ringing)
            ));
            assert_eq!(out.rings_waiting(), setup_first);
            inc.accept(&id(2), eph(12), AcceptMode::AcceptTrusted, None)
                .unwrap();
            let answer = inc.poll_send().unwrap();
            let (a, b) = if setup_first {
                assert!(out.handle(&setup("k1")).is_none());
                assert!(inc.handle(&setup("k1")).is_none());
                let a = out.handle(&answer);
                let confirm = out.poll_send().unwrap();
                (a, inc.handle(&confirm))
            } else {
                assert!(out.handle(&answer).is_none());
                let confirm = out.poll_send().unwrap();
                assert!(inc.handle(&confirm).is_none());
                (out.handle(&setup("k1")), inc.handle(&setup("k1")))
            };
            let (Some(CallEvent::Answered(a)), Some(CallEvent::Answered(b))) = (a, b) else {
                panic!("not answered")
            };
            assert_eq!(a.sas, b.sas);
            assert_eq!(a.keys.send_key(), b.keys.recv_key());
            assert_eq!(a.keys.recv_key(), b.keys.send_key());
            assert_ne!(a.keys.send_key(), a.keys.recv_key());
            assert_eq!(a.peer, id(2).fingerprint());
            assert_eq!(b.peer, id(1).fingerprint());
            assert_eq!(a.room, "call-k1");
        }
    }

    #[test]
    fn a_caller_shares_its_address_only_when_asked() {
        let (_, _, offer) = pair();
        assert!(matches!(
            offer,
            SignalMessage::DirectCallOffer {
                caller_reflexive_addr: None,
                ..
            }
        ));
        let mut out =
            OutgoingCall::start(&id(1), eph(11), "k1".into(), id(2).fingerprint(), None).unwrap();
        let addr: SocketAddr = "198.51.100.9:40000".parse().unwrap();
        // Five own addresses offered: four shared.
        let local: Vec<SocketAddr> = (1..=5)
            .map(|k| SocketAddr::from(([10, 0, 0, k], 40000)))
            .collect();
        out.share_address(Some(addr), &local);
        let SignalMessage::DirectCallOffer {
            caller_reflexive_addr,
            caller_local_addrs,
            ..
        } = out.poll_send().unwrap()
        else {
            panic!("not an offer")
        };
        assert_eq!(caller_reflexive_addr, Some(addr));
        assert_eq!(caller_local_addrs, local[..crate::signal::MAX_LOCAL_ADDRS]);
    }

    #[test]
    fn relay_hangup_reasons_map_to_caller_events() {
        let table = [
            (HangupReason::Busy, "Busy"),
            (HangupReason::Declined, "Rejected"),
            (HangupReason::NotOnline, "NotOnline"),
            (HangupReason::Timeout, "NoAnswer"),
            (HangupReason::Normal, "HungUp"),
            (HangupReason::Error, "HungUp"),
        ];
        for (reason, want) in table {
            let (mut out, _, _) = pair();
            let ev = out.handle(&hangup("k1", reason, None)).unwrap();
            assert!(format!("{ev:?}").starts_with(want), "{reason:?} -> {ev:?}");
            assert!(out.is_ended());
            // Nothing more happens to an ended call.
            assert!(out.handle(&setup("k1")).is_none());
        }
    }

    #[test]
    fn messages_for_other_calls_are_ignored() {
        let (mut out, mut inc, _) = pair();
        for m in [
            SignalMessage::CallRinging {
                call_id: "other".into(),
                waiting: true,
            },
            hangup("other", HangupReason::Normal, None),
            setup("other"),
            SignalMessage::Reflect,
        ] {
            assert!(out.handle(&m).is_none());
            assert!(inc.handle(&m).is_none());
        }
        assert!(!out.is_ended() && !inc.is_ended());
    }

    #[test]
    fn bad_offers_are_refused_with_a_reason() {
        let (_, _, offer) = pair();
        let with = |f: &dyn Fn(&mut SignalMessage)| {
            let mut m = offer.clone();
            f(&mut m);
            m
        };
        let edit = |f: fn(&mut String, &mut Fingerprint, &mut Option<Vec<u8>>)| {
            with(&move |m| {
                if let SignalMessage::DirectCallOffer {
                    call_id,
                    caller_fingerprint,
                    handshake,
                    ..
                } = m
                {
                    f(call_id, caller_fingerprint, handshake)
                }
            })
        };
        let table: Vec<(&str, SignalMessage, &str)> = vec![
            (
                "not an offer",
                SignalMessage::Reflect,
                "expected direct_call_offer",
            ),
            (
                "no handshake",
                edit(|_, _, h| *h = None),
                "carries no handshake",
            ),
            (
                "short handshake",
                edit(|_, _, h| *h = Some(vec![1, 1, 0])),
                "expected 66 bytes",
            ),
            (
                "response in place of init",
                edit(|_, _, h| *h = Some(vec![2; 66])),
                "type",
            ),
            (
                "another caller's handshake",
                edit(|_, fp, _| *fp = Fingerprint([9; 16])),
                "but its handshake is from",
            ),
            ("bad call id", edit(|c, _, _| *c = "A B".into()), "call id"),
        ];
        for (what, m, want) in table {
            let e = IncomingCall::from_offer(&m).unwrap_err();
            assert!(e.to_string().contains(want), "{what}: {e}");
            if let Some(SignalMessage::Hangup { reason, .. }) = refusal(&m, &e) {
                assert_eq!(reason, HangupReason::Error);
            }
        }
    }

    #[test]
    fn a_tampered_answer_or_confirm_fails_and_hangs_up() {
        // Answer with one bit of the signature flipped.
        let (mut out, mut inc, _) = pair();
        inc.accept(&id(2), eph(12), AcceptMode::AcceptGeneric, None)
            .unwrap();
        let mut answer = inc.poll_send().unwrap();
        if let SignalMessage::DirectCallAnswer {
            handshake: Some(h), ..
        } = &mut answer
        {
            h[100] ^= 1;
        }
        assert!(matches!(
            out.handle(&answer),
            Some(CallEvent::Failed {
                error: CallError::Handshake(HandshakeError::BadSignature)
            })
        ));
        assert!(matches!(
            out.poll_send(),
            Some(SignalMessage::Hangup {
                reason: HangupReason::Error,
                ..
            })
        ));
        // A confirm that does not verify.
        let (_, mut inc, _) = pair();
        inc.accept(&id(2), eph(12), AcceptMode::AcceptGeneric, None)
            .unwrap();
        let _ = inc.poll_send();
        let bad = SignalMessage::CallConfirm {
            call_id: Some("k1".into()),
            handshake: HandshakeFinish { signature: [7; 64] }.encode().to_vec(),
        };
        assert!(matches!(inc.handle(&bad), Some(CallEvent::Failed { .. })));
        assert!(inc.is_ended());
    }

    #[test]
    fn accept_generic_never_carries_the_address_and_reject_ends() {
        let addr: SocketAddr = "192.0.2.9:4000".parse().unwrap();
        let (_, mut inc, _) = pair();
        inc.accept(&id(2), eph(12), AcceptMode::AcceptGeneric, Some(addr))
            .unwrap();
        let SignalMessage::DirectCallAnswer {
            callee_reflexive_addr,
            ..
        } = inc.poll_send().unwrap()
        else {
            panic!()
        };
        assert_eq!(callee_reflexive_addr, None);
        assert_eq!(
            inc.accept(&id(2), eph(12), AcceptMode::AcceptGeneric, None),
            Err(CallError::NotRinging)
        );
        let (_, mut inc, _) = pair();
        inc.reject();
        assert!(inc.is_ended());
        assert!(matches!(
            inc.poll_send(),
            Some(SignalMessage::DirectCallAnswer {
                accept_mode: AcceptMode::Reject,
                ..
            })
        ));
    }

    #[test]
    fn start_refuses_a_call_id_that_cannot_name_a_room() {
        assert!(matches!(
            OutgoingCall::start(&id(1), eph(1), "Bad Id".into(), id(2).fingerprint(), None),
            Err(CallError::BadCallId(_))
        ));
        assert_eq!(call_id_from_bytes([0xab; 16]).len(), 32);
        assert!(call_room(&random_call_id().unwrap()).is_some());
    }
}
