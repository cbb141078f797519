//! The `_signal` service core (sans-IO): presence registration, direct-call
//! routing, reflection.
//!
//! [`SignalHub`] owns the [`PresenceRegistry`], the [`CallRegistry`] and one
//! [`SignalSession`] per connection. The shell feeds it [`Input`]s with `now`
//! and drains [`Action`]s with [`SignalHub::poll_action`]; it arms one timer at
//! [`SignalHub::poll_timeout`] and calls [`SignalHub::handle_timeout`] when it
//! fires. The hub never touches a socket, a clock or an RNG: the challenge
//! nonce of a connection comes in with [`Input::Connected`].
//!
//! ```text
//! shell                                  SignalHub
//!  accept _signal conn  ── Connected{conn, remote, nonce} ──>
//!  decoded frame        ── Frame{conn, frame} ─────────────>  ── Send{conn, msg} ──> writer queue
//!  writer wrote n       ── Drained{conn, n} ───────────────>  ── Close{conn, code, reason}
//!  oversized frame      ── FrameTooLarge{conn, len} ───────>  ── CallRoomOpened{room, [fp; 2]}
//!  conn closed          ── Disconnected{conn} ─────────────>  ── CallRoomClosed{room}
//!  timer at poll_timeout() ── handle_timeout(now) ─────────>  ── Event(..) (log, count)
//! ```
//!
//! What the hub guarantees (each refusal is counted in [`HubCounters`] by
//! [`Refusal`] and leaves every other connection untouched):
//! - the first frame must be `hello`; the relay answers `hello` and a
//!   `presence_challenge`; a registration must sign that nonce and this
//!   relay's TLS fingerprint, or the connection is closed `BadRegistration`;
//! - one live registration per fingerprint (the older is closed `Replaced`);
//! - unknown, malformed or unexpected messages get an `error` answer and the
//!   session goes on; frames beyond the rate limit are dropped, sustained
//!   abuse is closed `RateLimited`; an oversized frame is closed `Protocol`;
//! - a connection that does not read its messages (more than
//!   `max_outbound` unwritten) is closed `Timeout`;
//! - offers are routed by fingerprint; the callee's address never leaves
//!   the relay unless it answers `accept_trusted`; the media key never
//!   passes through in a form the relay can use (only signed handshake halves).

pub mod mail;
pub mod service;
mod session;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wzp_proto::close::CloseCode;
use wzp_proto::federation::{CallEvent, CallSignal, MAX_CALL_CODECS, MAX_CODEC_CHARS};
use wzp_proto::handshake::{HandshakeFinish, HandshakeInit, HandshakeResponse};
use wzp_proto::path_addrs::MAX_SEALED_PATH;
use wzp_proto::presence::{verify_registration, RegistrationError, MAX_ALIAS_LEN};
use wzp_proto::signal::{
    negotiate_version, AcceptMode, Decoded, ErrorCode, HangupReason, SignalError, SignalMessage,
    MISSED_CALL_QUIET,
};
use wzp_proto::{Fingerprint, TlsFingerprint};

pub use self::session::{Phase, RateLimit, RateVerdict, SignalSession, TokenBucket};
use crate::calls::{
    Call, CallRegistry, CallState, EndReason, OfferRefusal, Party, Transition, MAX_CALL_PATHS,
};
pub use crate::presence::ConnId;
use crate::presence::{PresenceRegistry, Registered};

/// Mapping probes the relay passes to the hub per second (and at once):
/// a client sends three at registration, so this serves hundreds of
/// registrations a second; a flood beyond it is dropped before the hub.
pub const MAPPING_PROBES_PER_S: f64 = 2000.0;

/// Settings of the signal service.
#[derive(Clone, Debug)]
pub struct SignalConfig {
    /// This relay's TLS certificate fingerprint (bound into registrations).
    pub relay_tls_fingerprint: TlsFingerprint,
    /// Relay label sent in `register_presence_ack`.
    pub relay_label: Option<String>,
    /// Version string sent in `register_presence_ack` and `hello`.
    pub version: String,
    /// Where clients connect media for a call (`host:port`, in `call_setup`).
    pub relay_addr: String,
    /// How long a call may ring unanswered.
    pub ringing_timeout: Duration,
    /// How long a registered connection may stay silent.
    pub keepalive_timeout: Duration,
    /// How long a connection may take to register (or stay unregistered).
    pub register_timeout: Duration,
    /// Per-connection frame rate limit.
    pub rate: RateLimit,
    /// Most messages queued to one connection and not yet written.
    pub max_outbound: usize,
    /// The UDP port answering clients' NAT mapping tests
    /// ([`wzp_proto::mapping`]), given to them at registration and in
    /// `reflect_response`; none: no test.
    pub mapping_port: Option<u16>,
    /// What the relay keeps of voice messages (`total_bytes` 0: none).
    pub mail: crate::voicemail::MailLimits,
}

impl SignalConfig {
    /// Defaults: ringing 30 s, keep-alive 45 s, registration 10 s, 50 frames/s
    /// (burst 100), 256 queued messages per connection.
    pub fn new(
        relay_tls_fingerprint: TlsFingerprint,
        relay_addr: impl Into<String>,
    ) -> SignalConfig {
        SignalConfig {
            relay_tls_fingerprint,
            relay_label: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
            relay_addr: relay_addr.into(),
            ringing_timeout: crate::calls::DEFAULT_RINGING_TIMEOUT,
            keepalive_timeout: crate::presence::DEFAULT_KEEPALIVE_TIMEOUT,
            register_timeout: Duration::from_secs(10),
            rate: RateLimit::default(),
            max_outbound: 256,
            mapping_port: None,
            mail: crate::voicemail::MailLimits::default(),
        }
    }
}

/// A decoded frame from a client.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    /// A message this build knows.
    Message(SignalMessage),
    /// A well-formed message of a type this build does not know.
    Unknown {
        /// Its `"type"`.
        type_name: String,
    },
    /// A well-delimited frame that is not a valid message.
    Malformed {
        /// The decoder's complaint.
        detail: String,
    },
}

/// What happened on the shell's side.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A `_signal` connection arrived; `nonce` is 32 fresh random bytes.
    Connected {
        /// The shell's id for it.
        conn: ConnId,
        /// The client's address as seen by the relay.
        remote: SocketAddr,
        /// The presence challenge for this connection.
        nonce: [u8; 32],
    },
    /// A frame arrived.
    Frame {
        /// From which connection.
        conn: ConnId,
        /// What it decoded to.
        frame: Frame,
    },
    /// A frame header announced more than the limit; the stream is out of sync.
    FrameTooLarge {
        /// From which connection.
        conn: ConnId,
        /// The announced length.
        len: usize,
    },
    /// The stream broke in another fatal way (truncated, decoder poisoned).
    StreamError {
        /// Which connection.
        conn: ConnId,
        /// What went wrong.
        detail: String,
    },
    /// The shell wrote `count` of this connection's messages out.
    Drained {
        /// Which connection.
        conn: ConnId,
        /// How many.
        count: usize,
    },
    /// The connection is gone.
    Disconnected {
        /// Which connection.
        conn: ConnId,
    },
    /// The connection's client is at another address now (QUIC moved the
    /// connection: its NAT mapped it anew, or it changed networks).
    Moved {
        /// Which connection.
        conn: ConnId,
        /// Its address now.
        remote: SocketAddr,
    },
    /// A step of a cross-relay call from the federation: an offer for a
    /// user registered here, or the far party's ringing, answer, confirm or
    /// hangup.
    Federated(CallSignal),
    /// A voice message's step from the federation: another relay's key
    /// query, an answer to this relay's, a part for a mailbox here, the
    /// outcome of a message sent on from here ([`mail`]).
    FederatedMail(wzp_proto::federation::MailSignal),
    /// `who` is registered on another relay of the mesh now, along `path`
    /// (this relay first): voice messages kept here for them move there
    /// ([`mail`]).
    Reachable {
        /// The person.
        who: Fingerprint,
        /// The way to their relay.
        path: Vec<wzp_proto::federation::RelayId>,
    },
    /// A mapping probe ([`wzp_proto::mapping::MappingProbe`]) came to the
    /// mapping port.
    MappingProbe {
        /// Its token.
        token: [u8; wzp_proto::mapping::TOKEN_LEN],
        /// Its source address.
        from: SocketAddr,
    },
}

impl Input {
    /// The input for one result of `wzp_proto::FrameDecoder::next_frame`
    /// (`Ok(None)` is no input).
    pub fn from_decoder(conn: ConnId, r: Result<Decoded, SignalError>) -> Input {
        match r {
            Ok(Decoded::Message(m)) => Input::Frame {
                conn,
                frame: Frame::Message(m),
            },
            Ok(Decoded::Unknown { type_name }) => Input::Frame {
                conn,
                frame: Frame::Unknown { type_name },
            },
            Err(SignalError::FrameTooLarge { len }) => Input::FrameTooLarge { conn, len },
            Err(e) if !e.is_fatal() => Input::Frame {
                conn,
                frame: Frame::Malformed {
                    detail: e.to_string(),
                },
            },
            Err(e) => Input::StreamError {
                conn,
                detail: e.to_string(),
            },
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Write this message to the connection's signal stream; report
    /// [`Input::Drained`] once written.
    Send {
        /// To whom.
        conn: ConnId,
        /// What.
        msg: SignalMessage,
    },
    /// Close the connection with this application code and reason. The hub
    /// has already forgotten it.
    Close {
        /// Which connection.
        conn: ConnId,
        /// Why (the QUIC application close code).
        code: CloseCode,
        /// Why, for people.
        reason: String,
    },
    /// Admit exactly these fingerprints to call room `room`: both parties,
    /// or for a cross-relay call the one on this relay.
    CallRoomOpened {
        /// The `call-*` room.
        room: String,
        /// Caller and callee, or the local party.
        fingerprints: Vec<Fingerprint>,
    },
    /// A step of a cross-relay call for the far party: hand it to the
    /// federation, which carries it along the call's path.
    Federate(CallSignal),
    /// An offer whose callee's devices ring here: the federation rings the
    /// callee's other relays too (a fork each), and answers with a hangup
    /// when there are none or every fork ended.
    FederateFork(CallSignal),
    /// An offer whose callee is in another call here (nothing rings here):
    /// the federation rings the callee's other relays (a fork each), and
    /// answers with a hangup when there are none or every fork ended.
    FederateForkElsewhere(CallSignal),
    /// The callee's devices here ring now for a call forked to its other
    /// relays while it was busy here: the federation's forks wait for them.
    DevicesRingHere {
        /// The call's id.
        call_id: String,
    },
    /// A voice message's step for another relay: hand it to the
    /// federation ([`mail`]).
    FederateMail(wzp_proto::federation::MailSignal),
    /// The call is over: close room `room` and its members' connections.
    CallRoomClosed {
        /// The `call-*` room.
        room: String,
    },
    /// Something to log (already counted).
    Event(Event),
}

/// A loggable event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A fingerprint registered.
    Registered {
        /// On which connection.
        conn: ConnId,
        /// Who.
        fingerprint: Fingerprint,
        /// The connection it replaced, if any.
        replaced: Option<ConnId>,
        /// How many of the person's devices are registered now.
        devices: usize,
    },
    /// A device's registration ended.
    Unregistered {
        /// Which connection held it.
        conn: ConnId,
        /// Who.
        fingerprint: Fingerprint,
        /// Whether it was the person's last device (they are offline now).
        offline: bool,
    },
    /// A call changed state.
    Call {
        /// The call.
        call_id: String,
        /// Before.
        from: CallState,
        /// After.
        to: CallState,
        /// Why it ended ([`EndReason::label`]).
        reason: Option<&'static str>,
    },
    /// A request or connection was refused.
    Refused {
        /// From which connection.
        conn: ConnId,
        /// What kind of refusal.
        refusal: Refusal,
        /// Why, for people.
        detail: String,
    },
}

macro_rules! refusals {
    ($($variant:ident => $label:literal, $doc:literal;)*) => {
        /// Every reason the hub refuses something; each has a counter.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Refusal {
            $(#[doc = $doc] $variant,)*
        }

        impl Refusal {
            /// Every refusal, in counter order.
            pub const ALL: &'static [Refusal] = &[$(Refusal::$variant,)*];

            /// Snake_case label for metrics (`reason` label).
            pub fn label(self) -> &'static str {
                match self {
                    $(Refusal::$variant => $label,)*
                }
            }
        }
    };
}

refusals! {
    NoHello => "no_hello", "The first frame was not `hello`.";
    VersionMismatch => "version_mismatch", "No common signaling version.";
    RegistrationNoNonce => "registration_no_nonce", "A registration without the challenge nonce.";
    RegistrationReplayed => "registration_replayed", "A registration answering another connection's nonce.";
    RegistrationBadSignature => "registration_bad_signature", "A forged registration signature.";
    RegistrationFingerprintMismatch => "registration_fingerprint_mismatch", "A registration claiming a fingerprint that is not its key's.";
    AliasTooLong => "alias_too_long", "An alias above the limit.";
    AlreadyRegistered => "already_registered", "A second registration on one connection.";
    NotRegistered => "not_registered", "A call request before registration.";
    UnknownType => "unknown_type", "A message type the relay does not know.";
    Malformed => "malformed", "A frame that is not a valid message.";
    UnexpectedMessage => "unexpected_message", "A message clients do not send to relays.";
    BadCallId => "bad_call_id", "A call id that cannot name a call room.";
    CallIdInUse => "call_id_in_use", "An offer reusing a live call id.";
    CallToSelf => "call_to_self", "An offer to the caller's own fingerprint.";
    CallerMismatch => "caller_mismatch", "An offer naming another caller than the registered one.";
    CallerBusy => "caller_busy", "An offer from someone already in a call.";
    CalleeBusy => "callee_busy", "An offer to someone already in a call.";
    NotOnline => "not_online", "An offer to a fingerprint not registered here.";
    BadHandshake => "bad_handshake", "A missing or malformed handshake half, or one from another identity.";
    NotInCall => "not_in_call", "An answer, confirm or hangup for a call the sender is not part of.";
    WrongCallState => "wrong_call_state", "An answer or confirm in the wrong call state.";
    RateLimited => "rate_limited", "A frame dropped by the rate limit.";
    RateLimitClose => "rate_limit_close", "A connection closed for sustained excess.";
    FrameTooLarge => "frame_too_large", "A frame above the size limit.";
    StreamError => "stream_error", "A broken signal stream.";
    OutboundOverflow => "outbound_overflow", "A connection that does not read its messages.";
    RegisterTimeout => "register_timeout", "A connection that did not register in time.";
    FederatedOutOfPlace => "federated_out_of_place", "A cross-relay call step for a call not here, or out of order.";
    KeepaliveTimeout => "keepalive_timeout", "A registered connection silent past the keep-alive.";
    BadCallPath => "bad_call_path", "A `call_path` too large, on a call not active or not answered `accept_trusted`, or past the per-call limit.";
    BadVoiceMessage => "bad_voice_message", "A voice message part refused: a bad id or part, no recipient key here, a full mailbox or relay, voice messages off.";
}

/// The hub's counters (call transitions are in [`CallRegistry::transitions`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HubCounters {
    /// Connections seen.
    pub connections: u64,
    /// Frames accepted past the rate limit.
    pub frames: u64,
    /// Messages handed to the shell.
    pub sent: u64,
    /// Successful registrations.
    pub registrations: u64,
    /// Registrations that replaced an older one.
    pub replaced: u64,
    /// Registrations of another device of a person already online.
    pub devices_added: u64,
    /// Devices told that another device of theirs answered or declined a
    /// call they were rung with.
    pub answered_elsewhere: u64,
    /// Callees told (each device) that someone called while they were in
    /// another call.
    pub missed_calls: u64,
    /// Calls rung as a waiting call on the device of a person in another
    /// call (instead of the caller hearing busy).
    pub calls_waiting: u64,
    /// Waiting calls answered keeping the call in progress, on hold
    /// (`keep_current`).
    pub calls_kept: u64,
    /// Mapping probes answered (`mapping_observed` sent).
    pub mapping_answered: u64,
    /// Mapping probes dropped: a token no connection has, or a connection
    /// answered [`wzp_proto::mapping::MAX_ANSWERS`] times already.
    pub mapping_dropped: u64,
    /// Connections whose client moved to another address.
    pub moved: u64,
    /// Voice messages moved to the relay their recipient is on now (and
    /// gone from here).
    pub mail_moved: u64,
    /// `call_hold` messages passed on between the parties of a call.
    pub holds: u64,
    refusals: HashMap<&'static str, u64>,
}

impl HubCounters {
    /// How many times `r` happened.
    pub fn refusals(&self, r: Refusal) -> u64 {
        self.refusals.get(r.label()).copied().unwrap_or(0)
    }

    /// All refusal counters, in [`Refusal::ALL`] order.
    pub fn all_refusals(&self) -> impl Iterator<Item = (Refusal, u64)> + '_ {
        Refusal::ALL.iter().map(|r| (*r, self.refusals(*r)))
    }
}

/// What a party shares for a direct path: its address as the relay sees
/// it, and its own addresses on its network (at most
/// [`wzp_proto::signal::MAX_LOCAL_ADDRS`]).
type Shared = (Option<SocketAddr>, Vec<SocketAddr>);

/// At most [`wzp_proto::signal::MAX_LOCAL_ADDRS`] of a party's own
/// addresses: a relay passes on no more.
fn bounded(local: Vec<SocketAddr>) -> Vec<SocketAddr> {
    local
        .into_iter()
        .take(wzp_proto::signal::MAX_LOCAL_ADDRS)
        .collect()
}

/// The signal service core.
#[derive(Debug)]
pub struct SignalHub {
    config: SignalConfig,
    sessions: HashMap<ConnId, SignalSession>,
    presence: PresenceRegistry,
    calls: CallRegistry,
    /// Addresses callers offered for direct media, by call id.
    caller_addrs: HashMap<String, Shared>,
    register_deadlines: BinaryHeap<Reverse<(Instant, ConnId)>>,
    /// Each connection's mapping-probe token.
    mapping_tokens: HashMap<[u8; wzp_proto::mapping::TOKEN_LEN], ConnId>,
    actions: VecDeque<Action>,
    counters: HubCounters,
    /// When each (callee, caller) was last told of a missed call.
    missed_told: HashMap<(Fingerprint, Fingerprint), Instant>,
    /// Voice messages kept for the people registered here.
    mail: crate::voicemail::Mailboxes,
    /// Messages a disk kept past their time, to remove from it.
    late_mail: Vec<crate::voicemail::MailChange>,
    /// Bytes of voice-message fetches queued and not yet written, on all
    /// connections.
    fetching_bytes: usize,
    /// Voice messages for mailboxes on other relays.
    away: mail::AwayMail,
    /// The `now` of the latest input or timeout.
    last_now: Option<Instant>,
    /// Forks of calls from other relays answered `busy` here, by call id:
    /// the devices here are told of a missed call when the caller's relay
    /// ends the fork with no other device having answered or declined it.
    busy_forks: HashMap<String, BusyFork>,
    /// When each busy fork stops waiting, soonest first (entries whose
    /// fork ended already are skipped when they come due).
    busy_deadlines: BinaryHeap<Reverse<(Instant, String)>>,
}

/// A fork answered `busy` here, waiting for the call's outcome
/// ([`CallEvent::Busy`]).
#[derive(Clone, Debug)]
struct BusyFork {
    caller: Fingerprint,
    callee: Fingerprint,
    caller_alias: Option<String>,
    /// The offer, to ring the callee's devices here once they are free.
    offer: CallSignal,
    /// Told of a missed call by then whatever comes (the caller's relay
    /// went silent).
    until: Instant,
}

/// Most busy forks a hub waits on (counting, until their wait would have
/// ended, those that ended sooner); past it a busy fork is answered with a
/// `hangup` `busy` and the missed call told at once, as before forks.
const MAX_BUSY_FORKS: usize = 4096;

/// How long past the ringing timeout a busy fork waits for its outcome.
const BUSY_FORK_GRACE: Duration = Duration::from_secs(10);

/// Most (callee, caller) pairs a hub remembers telling of a missed call;
/// past it, the pairs told longer than [`MISSED_CALL_QUIET`] ago go.
const MAX_MISSED_TOLD: usize = 4096;

impl SignalHub {
    /// A hub with no connections.
    pub fn new(config: SignalConfig) -> SignalHub {
        SignalHub {
            presence: PresenceRegistry::new(config.keepalive_timeout),
            calls: CallRegistry::new(config.ringing_timeout),
            mail: crate::voicemail::Mailboxes::new(config.mail),
            late_mail: Vec::new(),
            fetching_bytes: 0,
            away: mail::AwayMail::default(),
            last_now: None,
            busy_forks: HashMap::new(),
            busy_deadlines: BinaryHeap::new(),
            config,
            sessions: HashMap::new(),
            caller_addrs: HashMap::new(),
            register_deadlines: BinaryHeap::new(),
            mapping_tokens: HashMap::new(),
            missed_told: HashMap::new(),
            actions: VecDeque::new(),
            counters: HubCounters::default(),
        }
    }

    /// Calls offered from now on ring at most `d` (a reload of the relay's
    /// config); calls ringing now keep their deadline.
    pub fn set_ringing_timeout(&mut self, d: Duration) {
        self.config.ringing_timeout = d;
        self.calls.set_ringing_timeout(d);
    }

    /// The voice messages kept here.
    pub fn mail(&self) -> &crate::voicemail::Mailboxes {
        &self.mail
    }

    /// Puts back the voice messages and keys a disk kept (before the first
    /// connection), and records every change from now on for
    /// [`SignalHub::take_mail_changes`]. Returns the keys and messages taken
    /// back (those past the limits or their time are not).
    pub fn restore_mail(
        &mut self,
        restored: crate::voicemail::disk::Restored,
        now: Instant,
    ) -> (usize, usize) {
        self.mail.persist();
        let keys = restored.keys.len();
        for (fp, key) in restored.keys {
            self.mail.restore_key(fp, key);
        }
        let keep = self.config.mail.keep_for;
        let mut messages = 0;
        let mut late = Vec::new();
        for (to, m) in restored.messages {
            if m.age >= keep {
                late.push(crate::voicemail::MailChange::Gone(to, m.id, m.from));
                continue;
            }
            messages += usize::from(self.mail.restore(to, m.stored(now)));
        }
        self.late_mail = late;
        (keys, messages)
    }

    /// What changed in the voice messages since the last call, for a disk
    /// to keep (nothing unless [`SignalHub::restore_mail`] ran).
    pub fn take_mail_changes(&mut self) -> Vec<crate::voicemail::MailChange> {
        let mut c = std::mem::take(&mut self.late_mail);
        c.extend(self.mail.take_changes());
        c
    }

    /// The settings.
    pub fn config(&self) -> &SignalConfig {
        &self.config
    }

    /// Who is online.
    pub fn presence(&self) -> &PresenceRegistry {
        &self.presence
    }

    /// The calls.
    pub fn calls(&self) -> &CallRegistry {
        &self.calls
    }

    /// The counters.
    pub fn counters(&self) -> &HubCounters {
        &self.counters
    }

    /// Open connections.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// A connection's state.
    pub fn session(&self, conn: ConnId) -> Option<&SignalSession> {
        self.sessions.get(&conn)
    }

    /// Whether `fp` may join call room `room` (the two parties of an Active
    /// call).
    pub fn may_join(&self, room: &str, fp: &Fingerprint) -> bool {
        self.calls.may_join(room, fp)
    }

    /// The next action for the shell.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`SignalHub::handle_timeout`] should next run (it may be early).
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.presence.poll_timeout(),
            self.calls.poll_timeout(),
            self.mail.poll_timeout(),
            self.away.poll_timeout(),
            self.register_deadlines.peek().map(|Reverse((t, _))| *t),
            self.busy_deadlines.peek().map(|Reverse((t, _))| *t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: keep-alive expiry, ringing timeouts,
    /// registration deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        for (fp, conn, offline) in self.presence.expire(now) {
            self.push(Action::Event(Event::Unregistered {
                conn,
                fingerprint: fp,
                offline,
            }));
            let secs = self.config.keepalive_timeout.as_secs();
            self.refuse_and_close(
                conn,
                Refusal::KeepaliveTimeout,
                CloseCode::Timeout,
                format!(
                    "no signal frame for {secs} s; send ping at least every {} s",
                    (secs / 3).max(1)
                ),
            );
        }
        self.last_now = Some(now);
        for (call, t) in self.calls.expire(now) {
            self.call_ended(call, t, None);
        }
        while let Some(Reverse((due, _))) = self.busy_deadlines.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((due, id))) = self.busy_deadlines.pop() else {
                break;
            };
            // Told already if its fork ended (or a later fork of the same
            // id waits longer).
            if self.busy_forks.get(&id).is_some_and(|b| b.until == due) {
                if let Some(b) = self.busy_forks.remove(&id) {
                    self.tell_missed(b.callee, b.caller, b.caller_alias, &id, now);
                }
            }
        }
        for fp in self.mail.expire(now) {
            self.tell_mail(fp);
        }
        self.mail_timeouts(now);
        while let Some(Reverse((due, conn))) = self.register_deadlines.peek().copied() {
            if due > now {
                break;
            }
            self.register_deadlines.pop();
            let unregistered = self
                .sessions
                .get(&conn)
                .is_some_and(|s| s.fingerprint.is_none());
            if unregistered {
                let secs = self.config.register_timeout.as_secs();
                self.refuse_and_close(
                    conn,
                    Refusal::RegisterTimeout,
                    CloseCode::Timeout,
                    format!("not registered within {secs} s of connecting; answer the presence_challenge"),
                );
            }
        }
    }

    /// Feeds one input.
    pub fn handle(&mut self, input: Input, now: Instant) {
        self.last_now = Some(now);
        match input {
            Input::Connected {
                conn,
                remote,
                nonce,
            } => {
                self.counters.connections += 1;
                self.mapping_tokens
                    .insert(wzp_proto::mapping::token_for(&nonce), conn);
                self.sessions.insert(
                    conn,
                    SignalSession::new(remote, nonce, self.config.rate, now),
                );
                self.register_deadlines
                    .push(Reverse((now + self.config.register_timeout, conn)));
            }
            Input::Frame { conn, frame } => self.frame(conn, frame, now),
            Input::FrameTooLarge { conn, len } => {
                if self.sessions.contains_key(&conn) {
                    self.refuse_and_close(
                        conn,
                        Refusal::FrameTooLarge,
                        CloseCode::Protocol,
                        format!("signal frame of {len} bytes is above the limit; closing the out-of-sync stream"),
                    );
                }
            }
            Input::StreamError { conn, detail } => {
                if self.sessions.contains_key(&conn) {
                    self.refuse_and_close(conn, Refusal::StreamError, CloseCode::Protocol, detail);
                }
            }
            Input::Drained { conn, count } => {
                if let Some(s) = self.sessions.get_mut(&conn) {
                    s.in_flight = s.in_flight.saturating_sub(count);
                    // Everything queued is written: a fetch under way is done.
                    if s.in_flight == 0 && s.fetch_bytes > 0 {
                        self.fetching_bytes -= s.fetch_bytes;
                        s.fetch_bytes = 0;
                    }
                }
            }
            Input::Disconnected { conn } => self.forget(conn),
            Input::Moved { conn, remote } => {
                if let Some(s) = self.sessions.get_mut(&conn).filter(|s| s.remote != remote) {
                    tracing::debug!(%conn, from = %s.remote, to = %remote, "signal client moved");
                    s.remote = remote;
                    // What the mapping test showed was of the old network's
                    // NAT.
                    s.mapping = wzp_proto::mapping::Mapping::Unknown;
                    self.counters.moved += 1;
                }
            }
            Input::Federated(s) => self.federated(s, now),
            Input::FederatedMail(s) => self.federated_mail(s, now),
            Input::Reachable { who, path } => self.move_mail(who, path, now),
            Input::MappingProbe { token, from } => self.mapping_probe(token, from),
        }
    }

    /// Answers a mapping probe on its connection, at most
    /// [`wzp_proto::mapping::MAX_ANSWERS`] times a connection; a token of
    /// no live connection is dropped (counted, nothing sent anywhere).
    fn mapping_probe(&mut self, token: [u8; wzp_proto::mapping::TOKEN_LEN], from: SocketAddr) {
        let Some(&conn) = self.mapping_tokens.get(&token) else {
            self.counters.mapping_dropped += 1;
            return;
        };
        let Some(s) = self.sessions.get_mut(&conn) else {
            self.counters.mapping_dropped += 1;
            return;
        };
        if s.mapping_answers >= wzp_proto::mapping::MAX_ANSWERS {
            self.counters.mapping_dropped += 1;
            return;
        }
        s.mapping_answers += 1;
        // The first answer stands: a copy of the probe replayed later from
        // elsewhere (its token crossed the network in the clear) changes
        // nothing.
        if !s.mapping.is_known() {
            s.mapping = wzp_proto::mapping::Mapping::from_observations(s.remote, from);
        }
        self.counters.mapping_answered += 1;
        self.send(
            conn,
            SignalMessage::MappingObserved {
                observed_addr: from,
            },
        );
    }

    /// The mapping port and this connection's token, to give its client.
    fn mapping_offer(
        &self,
        conn: ConnId,
    ) -> (Option<u16>, Option<[u8; wzp_proto::mapping::TOKEN_LEN]>) {
        match (self.config.mapping_port, self.sessions.get(&conn)) {
            (Some(port), Some(s)) => (Some(port), Some(wzp_proto::mapping::token_for(&s.nonce))),
            _ => (None, None),
        }
    }

    fn push(&mut self, a: Action) {
        // The moment a person's last device leaves is when a key query
        // says they were last seen here.
        if let (
            Action::Event(Event::Unregistered {
                fingerprint,
                offline: true,
                ..
            }),
            Some(now),
        ) = (&a, self.last_now)
        {
            if self.mail.key(fingerprint).is_some() {
                self.away.last_seen.insert(*fingerprint, now);
            }
        }
        self.actions.push_back(a);
    }

    fn count(&mut self, r: Refusal) {
        *self.counters.refusals.entry(r.label()).or_default() += 1;
    }

    fn refused(&mut self, conn: ConnId, refusal: Refusal, detail: String) {
        self.count(refusal);
        self.push(Action::Event(Event::Refused {
            conn,
            refusal,
            detail,
        }));
    }

    fn send(&mut self, conn: ConnId, msg: SignalMessage) {
        let max = self.config.max_outbound;
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        if s.in_flight >= max {
            self.refuse_and_close(
                conn,
                Refusal::OutboundOverflow,
                CloseCode::Timeout,
                format!("{max} signal messages unread; read your signal stream"),
            );
            return;
        }
        s.in_flight += 1;
        self.counters.sent += 1;
        self.push(Action::Send { conn, msg });
    }

    fn error(
        &mut self,
        conn: ConnId,
        code: ErrorCode,
        message: String,
        in_reply_to: Option<String>,
    ) {
        self.send(
            conn,
            SignalMessage::Error {
                code,
                message,
                in_reply_to,
            },
        );
    }

    /// Refuses with an `error` answer; the session goes on.
    fn refuse(
        &mut self,
        conn: ConnId,
        refusal: Refusal,
        code: ErrorCode,
        message: String,
        in_reply_to: &str,
    ) {
        self.refused(conn, refusal, message.clone());
        self.error(conn, code, message, Some(in_reply_to.to_string()));
    }

    /// Refuses an offer with a `hangup` for its call id.
    fn refuse_offer(
        &mut self,
        conn: ConnId,
        refusal: Refusal,
        call_id: &str,
        reason: HangupReason,
        message: String,
    ) {
        self.refused(conn, refusal, message.clone());
        self.send(
            conn,
            SignalMessage::Hangup {
                reason,
                call_id: Some(call_id.to_string()),
                message: Some(message),
            },
        );
    }

    fn refuse_and_close(
        &mut self,
        conn: ConnId,
        refusal: Refusal,
        code: CloseCode,
        reason: String,
    ) {
        self.refused(conn, refusal, reason.clone());
        self.close(conn, code, reason);
    }

    fn close(&mut self, conn: ConnId, code: CloseCode, reason: String) {
        if self.sessions.contains_key(&conn) {
            self.push(Action::Close { conn, code, reason });
            self.forget(conn);
        }
    }

    /// Drops every trace of a connection: its session, its registration,
    /// its calls (the other parties are told).
    fn forget(&mut self, conn: ConnId) {
        let Some(s) = self.sessions.remove(&conn) else {
            return;
        };
        self.mapping_tokens
            .remove(&wzp_proto::mapping::token_for(&s.nonce));
        self.mail.forget_conn(conn);
        self.away.forget_conn(conn);
        self.fetching_bytes -= s.fetch_bytes;
        if let Some((fp, offline)) = self.presence.remove_conn(conn) {
            self.push(Action::Event(Event::Unregistered {
                conn,
                fingerprint: fp,
                offline,
            }));
        }
        for id in self.calls.calls_of_conn(conn) {
            let Some(party) = self.calls.get(&id).and_then(|c| c.party_of_conn(conn)) else {
                continue;
            };
            // One of the callee's devices going while the call rings leaves
            // it ringing on the others.
            let ringing = self
                .calls
                .get(&id)
                .is_some_and(|c| matches!(c.state, CallState::Pending | CallState::Ringing));
            if party == Party::Callee && ringing && self.calls.drop_device(&id, conn) {
                continue;
            }
            if party == Party::Callee
                && ringing
                && self.calls.get(&id).is_some_and(|c| c.remote_forks)
            {
                // The last device here went: the call rings on the callee's
                // other relays alone.
                self.calls.callee_elsewhere(&id);
                continue;
            }
            if let Some((call, t)) = self.calls.end(&id, EndReason::Disconnected(party)) {
                self.call_ended(call, t, Some(party));
            }
        }
    }

    fn transition(&mut self, t: &Transition) {
        self.push(Action::Event(Event::Call {
            call_id: t.call_id.clone(),
            from: t.from,
            to: t.to,
            reason: t.reason.map(EndReason::label),
        }));
    }

    /// Tells the parties (except `quiet`, who ended it) and closes the room.
    fn call_ended(&mut self, call: Call, t: Transition, quiet: Option<Party>) {
        self.call_ended_saying(call, t, quiet, None);
    }

    /// [`SignalHub::call_ended`], with the far relay's words when it ended
    /// a cross-relay call.
    fn call_ended_saying(
        &mut self,
        call: Call,
        t: Transition,
        quiet: Option<Party>,
        far_message: Option<String>,
    ) {
        self.transition(&t);
        self.caller_addrs.remove(&call.id);
        let reason = t.reason.unwrap_or(EndReason::RingingTimeout);
        // Rung on the callee's other relays only, the callee being busy
        // here: unless a device there answered or declined it, the caller
        // hears `busy` and the devices here that they missed a call.
        let busy_missed = call.busy_here.clone().filter(|_| {
            t.from != CallState::Active
                && !matches!(
                    reason,
                    EndReason::Rejected | EndReason::Federation(_, HangupReason::Declined)
                )
        });
        let busy_to_caller = busy_missed.is_some()
            && matches!(
                reason,
                EndReason::RingingTimeout | EndReason::Federation(Party::Callee, _)
            );
        if let (Some(busy), Some(now)) = (busy_missed, self.last_now) {
            self.tell_missed(call.callee, call.caller, busy.caller_alias, &call.id, now);
        }
        if busy_to_caller {
            self.count(Refusal::CalleeBusy);
        }
        if call.remote_forks {
            // Still ringing on the callee's other relays: they stop too.
            let why = match reason {
                EndReason::Rejected => HangupReason::DeclinedElsewhere,
                r => r.hangup_reason(),
            };
            self.hang_up_forks(&call, why);
        }
        let message = match reason {
            EndReason::Hangup(p, _) => format!("the {} hung up", party_name(p)),
            EndReason::Rejected => "the callee declined".to_string(),
            EndReason::RingingTimeout => format!(
                "no answer within {} s",
                self.config.ringing_timeout.as_secs()
            ),
            EndReason::Disconnected(p) => {
                format!("the {}'s signal connection ended", party_name(p))
            }
            EndReason::BadHandshake(p) => {
                format!("the {} sent a malformed handshake", party_name(p))
            }
            EndReason::Federation(p, _) => far_message
                .unwrap_or_else(|| format!("the {}'s relay ended the call", party_name(p))),
        };
        // The callee's other devices, still ringing, hear the same.
        if t.from != CallState::Pending {
            for conn in call.callee_forks.iter().copied() {
                self.send(
                    conn,
                    SignalMessage::Hangup {
                        reason: reason.hangup_reason(),
                        call_id: Some(call.id.clone()),
                        message: Some(message.clone()),
                    },
                );
            }
        }
        let busy_message = format!(
            "{} is in another call; no other device answered",
            call.callee
        );
        for party in [Party::Caller, Party::Callee] {
            if Some(party) == quiet {
                continue;
            }
            let (hangup_reason, message) = if busy_to_caller && party == Party::Caller {
                (HangupReason::Busy, &busy_message)
            } else {
                (reason.hangup_reason(), &message)
            };
            // The far party's relay has the call since the offer left.
            if call.is_federated(party) {
                self.federate(
                    &call,
                    CallEvent::Hangup {
                        reason: hangup_reason,
                        message: Some(message.clone()),
                    },
                );
                continue;
            }
            // A callee never told about the call (still Pending) is not told it ended.
            if party == Party::Callee && t.from == CallState::Pending {
                continue;
            }
            self.send(
                call.conn(party),
                SignalMessage::Hangup {
                    reason: hangup_reason,
                    call_id: Some(call.id.clone()),
                    message: Some(message.clone()),
                },
            );
        }
        if t.from == CallState::Active {
            self.push(Action::CallRoomClosed { room: call.room });
        }
        // A party free now may have a call rung elsewhere because it was
        // busy: its devices here ring too.
        for fp in [call.caller, call.callee] {
            self.ring_freed(fp);
        }
    }

    /// `fp` is in no call here: the oldest unanswered call rung on its
    /// other relays because it was busy here rings on its devices here too
    /// (as a waiting call goes on ringing once the call it waited behind
    /// ends), and the caller hears ringing if it did not yet.
    fn ring_freed(&mut self, fp: Fingerprint) {
        if self.calls.call_of(&fp).is_some() {
            return;
        }
        let Some(call) = self.calls.busy_here_of(&fp).cloned() else {
            return self.ring_busy_fork(fp);
        };
        let Some(busy) = call.busy_here.clone() else {
            return;
        };
        let devices = self.presence.conns_of(&fp);
        if !self.calls.ring_here(&call.id, &devices) {
            return;
        }
        self.push(Action::DevicesRingHere {
            call_id: call.id.clone(),
        });
        let offer = SignalMessage::DirectCallOffer {
            call_id: call.id.clone(),
            caller_fingerprint: call.caller,
            target_fingerprint: fp,
            caller_alias: busy.caller_alias,
            handshake: busy.handshake,
            supported_codecs: busy.supported_codecs,
            caller_reflexive_addr: None,
            caller_local_addrs: Vec::new(),
        };
        for device in devices {
            self.send(device, offer.clone());
        }
        if let Some(now) = self.last_now {
            self.rings(&call.id, call.caller_conn, false, now);
        }
    }

    /// Call `call_id` rings (if it did not yet): the caller, on `caller`,
    /// hears so. Returns whether it did.
    fn rings(&mut self, call_id: &str, caller: ConnId, waiting: bool, now: Instant) -> bool {
        let Some(t) = self.calls.ringing(call_id, now) else {
            return false;
        };
        self.transition(&t);
        let call_id = call_id.to_string();
        self.send(caller, SignalMessage::CallRinging { call_id, waiting });
        true
    }

    /// `fp` is in no call here, and a fork of a call from another relay
    /// that found it busy waits for its outcome ([`BusyFork`]): the offer
    /// is delivered again, so the devices here ring and the fork rings
    /// (the caller's relay takes it back among the ringing forks).
    fn ring_busy_fork(&mut self, fp: Fingerprint) {
        let Some(now) = self.last_now else {
            return;
        };
        let Some(id) = self
            .busy_forks
            .iter()
            .filter(|(_, b)| b.callee == fp)
            .min_by_key(|(_, b)| b.until)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        if let Some(b) = self.busy_forks.remove(&id) {
            self.federated_offer(b.offer, now);
        }
    }

    fn frame(&mut self, conn: ConnId, frame: Frame, now: Instant) {
        let Some(s) = self.sessions.get_mut(&conn) else {
            return;
        };
        match s.admit_frame(now) {
            RateVerdict::Accept => {}
            RateVerdict::Drop { first } => {
                self.refused(conn, Refusal::RateLimited, "frame dropped".into());
                if first {
                    let per_s = self.config.rate.per_second;
                    self.error(
                        conn,
                        ErrorCode::RateLimited,
                        format!(
                            "more than {per_s} signal frames per second; frames are being dropped"
                        ),
                        None,
                    );
                }
                return;
            }
            RateVerdict::Close => {
                let n = self.config.rate.close_after_dropped;
                self.refuse_and_close(
                    conn,
                    Refusal::RateLimitClose,
                    CloseCode::RateLimited,
                    format!("{n} signal frames over the rate limit; slow down"),
                );
                return;
            }
        }
        self.counters.frames += 1;
        self.presence.touch(conn, now);
        let phase = s.phase;
        match (phase, frame) {
            (Phase::AwaitHello, Frame::Message(m @ SignalMessage::Hello { .. })) => {
                match negotiate_version(&Decoded::Message(m)) {
                    Ok(_) => {
                        let nonce = s.nonce;
                        s.phase = Phase::Open;
                        let software = Some(format!("wzp-relay {}", self.config.version));
                        let mut hello = SignalMessage::hello(software);
                        if let SignalMessage::Hello { features, .. } = &mut hello {
                            features.push(wzp_proto::signal::FEATURE_DEVICES.to_string());
                            features.push(wzp_proto::signal::FEATURE_CALL_WAITING.to_string());
                            features.push(wzp_proto::signal::FEATURE_HOLD.to_string());
                            features.push(wzp_proto::signal::FEATURE_KEEP_CALL.to_string());
                            if self.mail.is_on() {
                                features
                                    .push(wzp_proto::signal::FEATURE_VOICE_MESSAGES.to_string());
                            }
                        }
                        self.send(conn, hello);
                        self.send(conn, SignalMessage::PresenceChallenge { nonce });
                    }
                    Err(e) => self.fatal_first(conn, Refusal::VersionMismatch, e.to_string()),
                }
            }
            (Phase::AwaitHello, other) => {
                let got = match &other {
                    Frame::Message(m) => m.type_name().to_string(),
                    Frame::Unknown { type_name } => type_name.clone(),
                    Frame::Malformed { .. } => "a malformed frame".into(),
                };
                self.fatal_first(
                    conn,
                    Refusal::NoHello,
                    format!("expected hello as the first signal message, got {got}"),
                );
            }
            (Phase::Open, Frame::Unknown { type_name }) => self.refuse(
                conn,
                Refusal::UnknownType,
                ErrorCode::UnknownType,
                format!("unknown message type {type_name:?}; skipped"),
                &type_name,
            ),
            (Phase::Open, Frame::Malformed { detail }) => {
                self.refused(conn, Refusal::Malformed, detail.clone());
                self.error(conn, ErrorCode::Malformed, detail, None);
            }
            (Phase::Open, Frame::Message(m)) => self.message(conn, m, now),
        }
    }

    fn fatal_first(&mut self, conn: ConnId, refusal: Refusal, reason: String) {
        self.refused(conn, refusal, reason.clone());
        self.send(
            conn,
            SignalMessage::Hangup {
                reason: HangupReason::Error,
                call_id: None,
                message: Some(reason.clone()),
            },
        );
        self.close(conn, CloseCode::BadJoin, reason);
    }

    fn registered(&mut self, conn: ConnId, in_reply_to: &str) -> Option<Fingerprint> {
        let fp = self.sessions.get(&conn).and_then(|s| s.fingerprint);
        if fp.is_none() {
            self.refuse(
                conn,
                Refusal::NotRegistered,
                ErrorCode::NotRegistered,
                "register_presence first (answer the presence_challenge)".into(),
                in_reply_to,
            );
        }
        fp
    }

    fn message(&mut self, conn: ConnId, m: SignalMessage, now: Instant) {
        use SignalMessage as M;
        match m {
            M::RegisterPresence { .. } => self.register(conn, &m, now),
            M::Reflect => {
                if let Some(remote) = self.sessions.get_mut(&conn).map(|s| {
                    s.told = s.remote;
                    s.remote
                }) {
                    let (mapping_port, mapping_token) = self.mapping_offer(conn);
                    self.send(
                        conn,
                        M::ReflectResponse {
                            observed_addr: remote,
                            mapping_port,
                            mapping_token,
                        },
                    );
                }
            }
            M::Ping { timestamp_ms } => self.send(conn, M::Pong { timestamp_ms }),
            M::Pong { .. }
            | M::QualityUpdate { .. }
            | M::LossRecoveryUpdate { .. }
            | M::Error { .. } => {}
            M::DirectCallOffer { .. } => self.offer(conn, m, now),
            M::DirectCallAnswer { .. } => self.answer(conn, m, now),
            M::CallConfirm { call_id, handshake } => self.confirm(conn, call_id, handshake),
            M::CallPath { call_id, sealed } => self.call_path(conn, call_id, sealed),
            M::CallHold { call_id, sealed } => self.call_hold(conn, call_id, sealed),
            M::Hangup {
                reason,
                call_id,
                message,
            } => self.hangup(conn, reason, call_id, message),
            M::MessageKeyQuery { fingerprint } => {
                if self.registered(conn, "message_key_query").is_some() {
                    self.message_key_query(conn, fingerprint, now);
                }
            }
            M::VoiceMessage { .. } => self.voice_message(conn, m, now),
            M::FetchVoiceMessages => self.fetch_voice_messages(conn, now),
            M::DeleteVoiceMessage { id, from } => {
                if let Some(me) = self.registered(conn, "delete_voice_message") {
                    self.mail.delete(&me, &id, from.as_ref());
                    self.tell_mail(me);
                }
            }
            other => {
                let t = other.type_name();
                self.refuse(
                    conn,
                    Refusal::UnexpectedMessage,
                    ErrorCode::UnexpectedMessage,
                    format!("{t} is not a message a client sends on _signal; skipped"),
                    t,
                );
            }
        }
    }

    fn register(&mut self, conn: ConnId, m: &SignalMessage, now: Instant) {
        let Some(s) = self.sessions.get(&conn) else {
            return;
        };
        if s.fingerprint.is_some() {
            self.refuse(
                conn,
                Refusal::AlreadyRegistered,
                ErrorCode::AlreadyRegistered,
                "this connection is already registered; open a new connection to register again"
                    .into(),
                "register_presence",
            );
            return;
        }
        let (remote, nonce) = (s.remote, s.nonce);
        let verified = match verify_registration(m, &self.config.relay_tls_fingerprint, &nonce) {
            Ok(v) => v,
            Err(e) => {
                let refusal = match e {
                    RegistrationError::NoNonce => Refusal::RegistrationNoNonce,
                    RegistrationError::WrongNonce => Refusal::RegistrationReplayed,
                    RegistrationError::FingerprintMismatch { .. } => {
                        Refusal::RegistrationFingerprintMismatch
                    }
                    RegistrationError::AliasTooLong { .. } => Refusal::AliasTooLong,
                    RegistrationError::BadSignature | RegistrationError::NotARegistration(_) => {
                        Refusal::RegistrationBadSignature
                    }
                };
                let reason = e.to_string();
                self.send(
                    conn,
                    SignalMessage::RegisterPresenceAck {
                        success: false,
                        error: Some(reason.clone()),
                        relay_build: None,
                        observed_addr: None,
                        relay_label: None,
                        version: None,
                        fingerprint: None,
                        mapping_port: None,
                        mapping_token: None,
                        devices: None,
                    },
                );
                self.refuse_and_close(conn, refusal, CloseCode::BadRegistration, reason);
                return;
            }
        };
        let fp = verified.fingerprint;
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.fingerprint = Some(fp);
        }
        let device = verified.device;
        let outcome = self
            .presence
            .register(fp, conn, device, verified.alias, remote, now);
        self.counters.registrations += 1;
        let replaced = match outcome {
            Registered::Replaced(old) => Some(old),
            _ => None,
        };
        if outcome == Registered::Added {
            self.counters.devices_added += 1;
        }
        let devices = self.presence.devices_of(&fp).len();
        self.push(Action::Event(Event::Registered {
            conn,
            fingerprint: fp,
            replaced,
            devices,
        }));
        if let Some(old) = replaced {
            self.counters.replaced += 1;
            // The old connection no longer holds the fingerprint; forget it
            // (ending its calls) without unregistering the new one.
            let same_device = self.sessions.get(&old).is_some_and(|s| s.device == device);
            if let Some(s) = self.sessions.get_mut(&old) {
                s.fingerprint = None;
            }
            let reason = if same_device {
                match device {
                    Some(d) => format!(
                        "{fp} registered again as this device ({}) from {remote}; \
                         this registration is replaced",
                        hex::encode(d)
                    ),
                    None => format!(
                        "{fp} registered again from {remote}; this registration is replaced"
                    ),
                }
            } else {
                format!(
                    "{fp} registered a device from {remote} beyond the {} a person may \
                     have here; this one, silent longest, is replaced",
                    crate::presence::MAX_DEVICES
                )
            };
            self.close(old, CloseCode::Replaced, reason);
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.device = device;
            s.call_waiting = verified.call_waiting;
        }
        // A key new to this relay is checked (a registration repeating the
        // one kept costs no second signature check).
        if let Some(key) = verified
            .message_key
            .filter(|k| self.mail.key(&fp) != Some(k) && k.verify() == Ok(fp))
        {
            let presence = &self.presence;
            self.mail
                .set_key(fp, key, |f| !presence.devices_of(f).is_empty());
        }
        if let Some(s) = self.sessions.get_mut(&conn) {
            s.told = remote;
        }
        let (mapping_port, mapping_token) = self.mapping_offer(conn);
        self.send(
            conn,
            SignalMessage::RegisterPresenceAck {
                success: true,
                error: None,
                relay_build: None,
                observed_addr: Some(remote),
                relay_label: self.config.relay_label.clone(),
                version: Some(self.config.version.clone()),
                fingerprint: Some(fp),
                mapping_port,
                mapping_token,
                devices: u32::try_from(devices).ok(),
            },
        );
        let waiting = self.mail.waiting(&fp);
        if waiting > 0 {
            self.send(
                conn,
                SignalMessage::VoiceMessages {
                    count: u32::try_from(waiting).unwrap_or(u32::MAX),
                },
            );
        }
    }

    /// One part of a voice message left here for someone.
    fn voice_message(&mut self, conn: ConnId, m: SignalMessage, now: Instant) {
        let SignalMessage::VoiceMessage {
            id,
            to,
            part,
            parts,
            data,
            ..
        } = m
        else {
            return;
        };
        let Some(me) = self.registered(conn, "voice_message") else {
            return;
        };
        let Some(to) = to else {
            self.mail.abandon(conn, &id);
            return self.refuse(
                conn,
                Refusal::BadVoiceMessage,
                ErrorCode::BadRequest,
                format!("voice_message {id} names no recipient (`to`)"),
                "voice_message",
            );
        };
        if self.part_away(conn, me, &id, to, part, parts, &data) {
            return;
        }
        match self
            .mail
            .put_part(conn, me, &id, to, part, parts, &data, now)
        {
            Ok(false) => {}
            Ok(true) => {
                self.send(conn, SignalMessage::VoiceMessageStored { id });
                self.tell_mail(to);
            }
            Err(e) => self.refuse(
                conn,
                Refusal::BadVoiceMessage,
                ErrorCode::BadRequest,
                e.to_string(),
                "voice_message",
            ),
        }
    }

    /// Hands the messages kept for the person on `conn` over, each in its
    /// parts, then says how many there are.
    fn fetch_voice_messages(&mut self, conn: ConnId, now: Instant) {
        let Some(me) = self.registered(conn, "fetch_voice_messages") else {
            return;
        };
        // One fetch at a time per connection, and a bound on what all of
        // them hold queued: a client that asks and does not read cannot
        // make the relay hold copies of mailboxes without end.
        let bytes: usize = self.mail.messages(&me).iter().map(|m| m.sealed.len()).sum();
        let refusal = if self.sessions.get(&conn).is_some_and(|s| s.fetch_bytes > 0) {
            Some("a fetch of yours is still being sent; read it first".to_string())
        } else if self.fetching_bytes + bytes > self.config.mail.fetch_budget {
            Some(
                "the relay is handing over as many voice messages as it can; fetch again shortly"
                    .into(),
            )
        } else {
            None
        };
        if let Some(why) = refusal {
            return self.refuse(
                conn,
                Refusal::BadVoiceMessage,
                ErrorCode::BadRequest,
                why,
                "fetch_voice_messages",
            );
        }
        if bytes > 0 {
            if let Some(s) = self.sessions.get_mut(&conn) {
                s.fetch_bytes = bytes;
                self.fetching_bytes += bytes;
            }
        }
        let out: Vec<SignalMessage> = self
            .mail
            .messages(&me)
            .iter()
            .flat_map(|m| {
                let parts: Vec<&[u8]> = wzp_proto::voice_message::parts(&m.sealed).collect();
                let n = parts.len() as u32;
                let age = now.saturating_duration_since(m.at).as_millis() as u64;
                parts
                    .into_iter()
                    .enumerate()
                    .map(move |(i, p)| SignalMessage::VoiceMessage {
                        id: m.id.clone(),
                        to: None,
                        from: Some(m.from),
                        age_ms: Some(age),
                        part: i as u32,
                        parts: n,
                        data: p.to_vec(),
                    })
            })
            .collect();
        let count = self.mail.waiting(&me);
        self.mail.delivered(count);
        for m in out {
            self.send(conn, m);
        }
        self.send(
            conn,
            SignalMessage::VoiceMessages {
                count: u32::try_from(count).unwrap_or(u32::MAX),
            },
        );
    }

    /// Tells each device of `fp` here how many voice messages wait.
    fn tell_mail(&mut self, fp: Fingerprint) {
        let count = u32::try_from(self.mail.waiting(&fp)).unwrap_or(u32::MAX);
        for conn in self.presence.conns_of(&fp) {
            self.send(conn, SignalMessage::VoiceMessages { count });
        }
    }

    /// The address a party shares for a direct path: the one it claims,
    /// unless that is the one it was told and it has moved since (its NAT
    /// mapped it anew, it changed networks: QUIC followed it), when the
    /// relay gives where it sees it now. A claim the relay never told
    /// stands as it is (the relay passes it on, as always, only to a
    /// trusted peer).
    fn current_addr(&self, conn: ConnId, claimed: Option<SocketAddr>) -> Option<SocketAddr> {
        match (claimed, self.sessions.get(&conn)) {
            (Some(c), Some(s)) if c == s.told && s.remote != s.told => Some(s.remote),
            _ => claimed,
        }
    }

    fn offer(&mut self, conn: ConnId, m: SignalMessage, now: Instant) {
        let SignalMessage::DirectCallOffer {
            call_id,
            caller_fingerprint,
            target_fingerprint,
            caller_alias,
            handshake,
            supported_codecs,
            caller_reflexive_addr,
            caller_local_addrs,
        } = m
        else {
            return;
        };
        let Some(me) = self.registered(conn, "direct_call_offer") else {
            return;
        };
        let caller_reflexive_addr = self.current_addr(conn, caller_reflexive_addr);
        let err = HangupReason::Error;
        if wzp_proto::sni::call_room(&call_id).is_none() {
            let msg = OfferRefusal::BadCallId(call_id.clone()).to_string();
            return self.refuse_offer(conn, Refusal::BadCallId, &call_id, err, msg);
        }
        if caller_fingerprint != me {
            let msg = format!(
                "caller_fingerprint {caller_fingerprint} is not your registered fingerprint {me}"
            );
            return self.refuse_offer(conn, Refusal::CallerMismatch, &call_id, err, msg);
        }
        if target_fingerprint == me {
            let msg = OfferRefusal::ToSelf.to_string();
            return self.refuse_offer(conn, Refusal::CallToSelf, &call_id, err, msg);
        }
        let init_ok = handshake
            .as_deref()
            .map(HandshakeInit::parse)
            .map(|r| r.map(|init| Fingerprint::of_public_key(&init.identity) == me));
        match init_ok {
            Some(Ok(true)) => {}
            Some(Ok(false)) => {
                let msg = "the handshake half is signed by another identity than yours".to_string();
                return self.refuse_offer(conn, Refusal::BadHandshake, &call_id, err, msg);
            }
            Some(Err(e)) => {
                let msg = format!("malformed handshake half: {e}");
                return self.refuse_offer(conn, Refusal::BadHandshake, &call_id, err, msg);
            }
            None => {
                let msg =
                    "direct_call_offer carries no handshake; the call key needs it".to_string();
                return self.refuse_offer(conn, Refusal::BadHandshake, &call_id, err, msg);
            }
        }
        let alias = caller_alias
            .filter(|a| a.len() <= MAX_ALIAS_LEN)
            .or_else(|| self.presence.get(&me).and_then(|p| p.alias.clone()));
        // Not here: the federation routes it to the callee's relay, or
        // answers not_online. Here: every device of the callee rings.
        let mut devices = self.presence.conns_of(&target_fingerprint);
        let callee_conn = devices.first().copied().unwrap_or(ConnId::FEDERATION);
        let mut waiting = false;
        match self
            .calls
            .offer(&call_id, (me, conn), (target_fingerprint, callee_conn), now)
        {
            Ok(t) => self.transition(&t),
            Err(OfferRefusal::CalleeBusy)
                if self
                    .offer_waiting(&call_id, (me, conn), target_fingerprint, now)
                    .is_some_and(|device| {
                        devices = vec![device];
                        true
                    }) =>
            {
                waiting = true;
            }
            Err(OfferRefusal::CalleeBusy) => {
                // In another call here, taking no waiting call: the
                // callee's devices on other relays ring (a fork each). The
                // caller hears `busy`, and the devices here of a missed
                // call, only if none answers ([`Call::busy_here`]); the
                // devices here ring once their call ends.
                let busy = crate::calls::BusyHere {
                    caller_alias: alias.clone(),
                    handshake: handshake.clone(),
                    supported_codecs: supported_codecs.clone(),
                };
                match self.calls.offer_elsewhere(
                    &call_id,
                    (me, conn),
                    target_fingerprint,
                    busy,
                    now,
                ) {
                    Ok(t) => self.transition(&t),
                    Err(refusal) => {
                        let msg = refusal.to_string();
                        return self.refuse_offer(conn, Refusal::CalleeBusy, &call_id, err, msg);
                    }
                }
                if caller_reflexive_addr.is_some() || !caller_local_addrs.is_empty() {
                    self.caller_addrs.insert(
                        call_id.clone(),
                        (caller_reflexive_addr, bounded(caller_local_addrs)),
                    );
                }
                let offer = federated_offer_event(alias, handshake, supported_codecs);
                self.fork_offer(&call_id, offer, false);
                return;
            }
            Err(refusal) => {
                let (kind, reason) = match &refusal {
                    OfferRefusal::BadCallId(_) => (Refusal::BadCallId, err),
                    OfferRefusal::CallIdInUse(_) => (Refusal::CallIdInUse, err),
                    OfferRefusal::ToSelf => (Refusal::CallToSelf, err),
                    OfferRefusal::CallerBusy(_) => (Refusal::CallerBusy, HangupReason::Busy),
                    OfferRefusal::CalleeBusy => (Refusal::CalleeBusy, HangupReason::Busy),
                };
                return self.refuse_offer(conn, kind, &call_id, reason, refusal.to_string());
            }
        }
        if callee_conn == ConnId::FEDERATION {
            // Addresses never cross a federation link.
            let offer = federated_offer_event(alias, handshake, supported_codecs);
            if let Some(call) = self.calls.get(&call_id).cloned() {
                self.federate(&call, offer);
            }
            return;
        }
        if caller_reflexive_addr.is_some() || !caller_local_addrs.is_empty() {
            self.caller_addrs.insert(
                call_id.clone(),
                (caller_reflexive_addr, bounded(caller_local_addrs)),
            );
        }
        // The callee sees the proven caller, never the caller's address.
        self.calls.add_forks(&call_id, &devices);
        // The callee's devices on other relays ring too (a fork each; none
        // when it is on this relay alone, which the federation says at
        // once), a waiting call on the device here or not.
        self.calls.set_remote_forks(&call_id, true);
        let fork =
            federated_offer_event(alias.clone(), handshake.clone(), supported_codecs.clone());
        self.fork_offer(&call_id, fork, true);
        let offer = SignalMessage::DirectCallOffer {
            call_id: call_id.clone(),
            caller_fingerprint: me,
            target_fingerprint,
            caller_alias: alias,
            handshake,
            supported_codecs,
            caller_reflexive_addr: None,
            caller_local_addrs: Vec::new(),
        };
        for device in devices {
            self.send(device, offer.clone());
        }
        self.rings(&call_id, conn, waiting, now);
    }

    /// The callee of an offer refused `busy` here is in an Active call on a
    /// device that takes a waiting call: the offer becomes one, ringing on
    /// that device only. Returns the device, or None (the caller hears busy).
    fn offer_waiting(
        &mut self,
        call_id: &str,
        caller: (Fingerprint, ConnId),
        callee: Fingerprint,
        now: Instant,
    ) -> Option<ConnId> {
        let takes_waiting = |c: &Call| {
            let conn = if c.caller == callee {
                c.caller_conn
            } else {
                c.callee_conn
            };
            self.sessions.get(&conn).is_some_and(|s| s.call_waiting)
        };
        if !self.calls.call_of(&callee).is_some_and(takes_waiting) {
            return None;
        }
        let (t, device) = self
            .calls
            .offer_waiting(call_id, caller, callee, now)
            .ok()?;
        self.transition(&t);
        self.counters.calls_waiting += 1;
        Some(device)
    }

    /// The call `call_id` if `conn` is `want` in it; refuses otherwise.
    fn party_call(
        &mut self,
        conn: ConnId,
        call_id: &str,
        want: Option<Party>,
        what: &str,
    ) -> Option<(Call, Party)> {
        let found = self
            .calls
            .get(call_id)
            .and_then(|c| c.party_of_conn(conn).map(|p| (c.clone(), p)))
            .filter(|(_, p)| want.is_none_or(|w| w == *p));
        if found.is_none() {
            let role = match want {
                Some(p) => format!("the {}", party_name(p)),
                None => "a party".into(),
            };
            self.refuse(
                conn,
                Refusal::NotInCall,
                ErrorCode::NotInCall,
                format!("{what} for call {call_id:?}, of which you are not {role}"),
                what,
            );
        }
        found
    }

    fn answer(&mut self, conn: ConnId, m: SignalMessage, now: Instant) {
        let SignalMessage::DirectCallAnswer {
            call_id,
            accept_mode,
            handshake,
            chosen_codec,
            callee_reflexive_addr,
            callee_local_addrs,
            keep_current,
        } = m
        else {
            return;
        };
        let Some(me) = self.registered(conn, "direct_call_answer") else {
            return;
        };
        // Another device of the callee answered first: this one was told
        // (`answered_elsewhere`) and its answer crossed that on the way.
        if self
            .calls
            .get(&call_id)
            .is_some_and(|c| c.callee == me && c.party_of_conn(conn).is_none())
        {
            return;
        }
        let callee_reflexive_addr = self.current_addr(conn, callee_reflexive_addr);
        let Some((call, _)) =
            self.party_call(conn, &call_id, Some(Party::Callee), "direct_call_answer")
        else {
            return;
        };
        if call.state != CallState::Ringing {
            return self.refuse(
                conn,
                Refusal::WrongCallState,
                ErrorCode::BadRequest,
                format!("call {call_id} is {}, not ringing", call.state.label()),
                "direct_call_answer",
            );
        }
        if accept_mode == AcceptMode::Reject {
            // A person who declines on one device declines the call.
            self.end_remote_forks(&call, HangupReason::DeclinedElsewhere);
            let others = self.calls.answered_by(&call_id, conn);
            if let Some((call, t)) = self.calls.end(&call_id, EndReason::Rejected) {
                self.call_ended(call, t, Some(Party::Callee));
            }
            self.tell_elsewhere(&others, &call_id, HangupReason::DeclinedElsewhere);
            return;
        }
        let response_ok = handshake
            .as_deref()
            .and_then(|h| HandshakeResponse::parse(h).ok())
            .is_some_and(|r| Fingerprint::of_public_key(&r.identity) == call.callee);
        if !response_ok {
            self.refused(
                conn,
                Refusal::BadHandshake,
                "direct_call_answer with a missing, malformed or foreign handshake half".into(),
            );
            if let Some((call, t)) = self
                .calls
                .end(&call_id, EndReason::BadHandshake(Party::Callee))
            {
                self.call_ended(call, t, None);
            }
            return;
        }
        // Answering a waiting call keeping the call in progress: the person
        // is in both (that one on hold, which the client told its party).
        let kept = call.waiting && keep_current && self.calls.keep_for(&call_id).is_some();
        if kept {
            self.counters.calls_kept += 1;
        } else if call.waiting {
            // Answering a waiting call ends the call in progress, as if the
            // person hung it up first (a client does so before answering).
            if let Some(current) = self.calls.call_of(&call.callee).cloned() {
                let party = if current.caller == call.callee {
                    Party::Caller
                } else {
                    Party::Callee
                };
                if let Some((ended, t)) = self
                    .calls
                    .end(&current.id, EndReason::Hangup(party, HangupReason::Normal))
                {
                    self.call_ended(ended, t, Some(party));
                }
            }
        }
        let others = self.calls.answered_by(&call_id, conn);
        self.tell_elsewhere(&others, &call_id, HangupReason::AnsweredElsewhere);
        self.end_remote_forks(&call, HangupReason::AnsweredElsewhere);
        let Some(t) = self.calls.activate(&call_id, accept_mode, now) else {
            return;
        };
        self.transition(&t);
        let Some(call) = self.calls.get(&call_id).cloned() else {
            return;
        };
        if call.is_federated(Party::Caller) {
            self.federate(
                &call,
                CallEvent::Answer {
                    accept_mode,
                    handshake: handshake.unwrap_or_default(),
                    chosen_codec: chosen_codec.filter(|c| federable_codec(c)),
                },
            );
            return self.call_active(&call, Shared::default(), Shared::default());
        }
        let trusted = accept_mode == AcceptMode::AcceptTrusted;
        let callee: Shared = if trusted {
            (callee_reflexive_addr, bounded(callee_local_addrs))
        } else {
            Shared::default()
        };
        self.send(
            call.caller_conn,
            SignalMessage::DirectCallAnswer {
                call_id: call_id.clone(),
                accept_mode,
                handshake,
                chosen_codec,
                callee_reflexive_addr: callee.0,
                callee_local_addrs: callee.1.clone(),
                keep_current: false,
            },
        );
        let caller = self
            .caller_addrs
            .get(&call_id)
            .cloned()
            .filter(|_| trusted)
            .unwrap_or_default();
        self.call_active(&call, callee, caller);
    }

    /// Tells every device of `callee` here that `caller` called while the
    /// callee was in another call (the caller was answered `busy`): once per
    /// pair every [`MISSED_CALL_QUIET`].
    fn tell_missed(
        &mut self,
        callee: Fingerprint,
        caller: Fingerprint,
        caller_alias: Option<String>,
        call_id: &str,
        now: Instant,
    ) {
        let devices = self.presence.conns_of(&callee);
        if devices.is_empty() {
            return;
        }
        let quiet = |t: &Instant| now.saturating_duration_since(*t) < MISSED_CALL_QUIET;
        if self.missed_told.get(&(callee, caller)).is_some_and(quiet) {
            return;
        }
        if self.missed_told.len() >= MAX_MISSED_TOLD {
            self.missed_told.retain(|_, t| quiet(t));
            if self.missed_told.len() >= MAX_MISSED_TOLD {
                return;
            }
        }
        self.missed_told.insert((callee, caller), now);
        self.counters.missed_calls += 1;
        let msg = SignalMessage::MissedCall {
            call_id: call_id.to_string(),
            caller_fingerprint: caller,
            caller_alias: caller_alias.filter(|a| a.len() <= MAX_ALIAS_LEN),
        };
        for conn in devices {
            self.send(conn, msg.clone());
        }
    }

    /// Tells the callee's devices `others`, rung with call `call_id`, that
    /// another of its devices answered (or declined) it.
    fn tell_elsewhere(&mut self, others: &[ConnId], call_id: &str, reason: HangupReason) {
        let message = match reason {
            HangupReason::DeclinedElsewhere => "declined on another device",
            _ => "answered on another device",
        };
        for conn in others {
            self.counters.answered_elsewhere += 1;
            self.send(
                *conn,
                SignalMessage::Hangup {
                    reason,
                    call_id: Some(call_id.to_string()),
                    message: Some(message.into()),
                },
            );
        }
    }

    /// The call is accepted: its room admits the parties on this relay and
    /// each of them gets `call_setup` (the peer's address only when given).
    fn call_active(&mut self, call: &Call, callee: Shared, caller: Shared) {
        let local: Vec<Fingerprint> = [Party::Caller, Party::Callee]
            .into_iter()
            .filter(|p| !call.is_federated(*p))
            .map(|p| call.fingerprint(p))
            .collect();
        self.push(Action::CallRoomOpened {
            room: call.room.clone(),
            fingerprints: local,
        });
        let call_id = &call.id;
        for (to, (peer_addr, peer_local), peer, peer_conn) in [
            (call.caller_conn, callee, call.callee, call.callee_conn),
            (call.callee_conn, caller, call.caller, call.caller_conn),
        ] {
            if to == ConnId::FEDERATION {
                continue;
            }
            let peer_mapping = self.mapping_of(peer_conn, peer_addr);
            self.send(
                to,
                SignalMessage::CallSetup {
                    call_id: call_id.clone(),
                    room: call.room.clone(),
                    relay_addr: self.config.relay_addr.clone(),
                    peer_direct_addr: peer_addr,
                    peer_local_addrs: peer_local,
                    peer_fingerprint: Some(peer),
                    peer_mapping,
                    observed_addr: self.sessions.get(&to).map(|s| s.remote),
                },
            );
        }
    }

    /// What the mapping probe of the client on `conn` showed of its NAT,
    /// for the address it shared (`addr`): untested unless that is where
    /// its connection comes from.
    fn mapping_of(&self, conn: ConnId, addr: Option<SocketAddr>) -> wzp_proto::mapping::Mapping {
        let canon = |a: SocketAddr| (a.ip().to_canonical(), a.port());
        match (self.sessions.get(&conn), addr) {
            (Some(s), Some(a)) if canon(s.remote) == canon(a) => s.mapping,
            _ => wzp_proto::mapping::Mapping::Unknown,
        }
    }

    fn confirm(&mut self, conn: ConnId, call_id: Option<String>, handshake: Vec<u8>) {
        if self.registered(conn, "call_confirm").is_none() {
            return;
        }
        let call_id = call_id.unwrap_or_default();
        let Some((call, _)) = self.party_call(conn, &call_id, Some(Party::Caller), "call_confirm")
        else {
            return;
        };
        if call.state != CallState::Active {
            return self.refuse(
                conn,
                Refusal::WrongCallState,
                ErrorCode::BadRequest,
                format!("call {call_id} is {}, not active", call.state.label()),
                "call_confirm",
            );
        }
        if HandshakeFinish::parse(&handshake).is_err() {
            self.refused(
                conn,
                Refusal::BadHandshake,
                "call_confirm with a malformed handshake half".into(),
            );
            if let Some((call, t)) = self
                .calls
                .end(&call_id, EndReason::BadHandshake(Party::Caller))
            {
                self.call_ended(call, t, None);
            }
            return;
        }
        if call.is_federated(Party::Callee) {
            return self.federate(&call, CallEvent::Confirm { handshake });
        }
        self.send(
            call.callee_conn,
            SignalMessage::CallConfirm {
                call_id: Some(call_id),
                handshake,
            },
        );
    }

    /// A party's sealed addresses for the other: passed on unread, on an
    /// active call the callee answered `accept_trusted` (the calls whose
    /// addresses the relay shares itself), at most [`MAX_CALL_PATHS`] from
    /// each party.
    fn call_path(&mut self, conn: ConnId, call_id: String, sealed: Vec<u8>) {
        if self.registered(conn, "call_path").is_none() {
            return;
        }
        let Some((call, party)) = self.party_call(conn, &call_id, None, "call_path") else {
            return;
        };
        let why = if sealed.is_empty() || sealed.len() > MAX_SEALED_PATH {
            Some(format!(
                "call_path of {} sealed bytes; 1..={MAX_SEALED_PATH}",
                sealed.len()
            ))
        } else if call.state != CallState::Active {
            Some(format!(
                "call {call_id} is {}, not active",
                call.state.label()
            ))
        } else if call.accept_mode != Some(AcceptMode::AcceptTrusted) {
            Some(format!(
                "call {call_id} was not answered accept_trusted: its parties share no addresses"
            ))
        } else if !self.calls.count_path(&call_id, party) {
            Some(format!(
                "more than {MAX_CALL_PATHS} call_path messages from one party of call {call_id}"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return self.refuse(
                conn,
                Refusal::BadCallPath,
                ErrorCode::BadRequest,
                why,
                "call_path",
            );
        }
        let to = party.other();
        if call.is_federated(to) {
            return self.federate(&call, CallEvent::Path { sealed });
        }
        self.send(call.conn(to), SignalMessage::CallPath { call_id, sealed });
    }

    /// A party put its active call on hold or took it back: the other is
    /// told (through the federation when it is on another relay).
    fn call_hold(&mut self, conn: ConnId, call_id: String, sealed: Vec<u8>) {
        if self.registered(conn, "call_hold").is_none() {
            return;
        }
        let Some((call, party)) = self.party_call(conn, &call_id, None, "call_hold") else {
            return;
        };
        let why = if sealed.len() != wzp_proto::hold::SEALED_HOLD_LEN {
            Some(format!(
                "call_hold of {} sealed bytes; {}",
                sealed.len(),
                wzp_proto::hold::SEALED_HOLD_LEN
            ))
        } else if call.state != CallState::Active {
            Some(format!(
                "call {call_id} is {}, not active: nothing to hold",
                call.state.label()
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return self.refuse(
                conn,
                Refusal::WrongCallState,
                ErrorCode::BadRequest,
                why,
                "call_hold",
            );
        }
        self.counters.holds += 1;
        let to = party.other();
        if call.is_federated(to) {
            return self.federate(&call, CallEvent::Hold { sealed });
        }
        self.send(call.conn(to), SignalMessage::CallHold { call_id, sealed });
    }

    fn hangup(
        &mut self,
        conn: ConnId,
        reason: HangupReason,
        call_id: Option<String>,
        _message: Option<String>,
    ) {
        let Some(call_id) = call_id else {
            return self.refuse(
                conn,
                Refusal::NotInCall,
                ErrorCode::BadRequest,
                "hangup without a call_id; name the call to end".into(),
                "hangup",
            );
        };
        let Some((_, party)) = self.party_call(conn, &call_id, None, "hangup") else {
            return;
        };
        let reason = match reason {
            HangupReason::Unknown => HangupReason::Normal,
            r => r,
        };
        if let Some((call, t)) = self.calls.end(&call_id, EndReason::Hangup(party, reason)) {
            self.call_ended(call, t, Some(party));
        }
    }

    /// The call stops ringing on the callee's other relays (a device here
    /// answered or declined it, or it ended).
    fn end_remote_forks(&mut self, call: &Call, reason: HangupReason) {
        if self.calls.get(&call.id).is_some_and(|c| c.remote_forks) {
            self.hang_up_forks(call, reason);
        }
    }

    /// Hangs up the forks of `call` ringing on the callee's other relays.
    fn hang_up_forks(&mut self, call: &Call, reason: HangupReason) {
        self.calls.set_remote_forks(&call.id, false);
        let message = match reason {
            HangupReason::AnsweredElsewhere => "answered on another device",
            HangupReason::DeclinedElsewhere => "declined on another device",
            _ => "the call ended before it was answered",
        };
        self.federate(
            call,
            CallEvent::Hangup {
                reason,
                message: Some(message.into()),
            },
        );
    }

    /// The caller's relay ended a fork answered `busy` here: the devices
    /// here missed a call unless another device answered or declined it.
    /// Returns whether `s` was that.
    fn busy_fork_ended(&mut self, s: &CallSignal, now: Instant) -> bool {
        let CallEvent::Hangup { reason, .. } = &s.event else {
            return false;
        };
        let ours = self
            .busy_forks
            .get(&s.call_id)
            .is_some_and(|b| (b.caller, b.callee) == (s.caller, s.callee));
        if !ours {
            return false;
        }
        let Some(b) = self.busy_forks.remove(&s.call_id) else {
            return false;
        };
        if !matches!(
            reason,
            HangupReason::AnsweredElsewhere | HangupReason::DeclinedElsewhere
        ) {
            self.tell_missed(b.callee, b.caller, b.caller_alias, &s.call_id, now);
        }
        true
    }

    /// A step from the forks ringing the callee's devices on other relays
    /// while its devices here ring too ([`Call::remote_forks`]). Returns
    /// whether it was taken here; an answer is taken by the ordinary path
    /// once the callee is reached through the federation.
    fn remote_fork_step(&mut self, s: &CallSignal) -> bool {
        let Some(call) = self
            .calls
            .get(&s.call_id)
            .filter(|c| c.remote_forks && (c.caller, c.callee) == (s.caller, s.callee))
            .filter(|c| !c.is_federated(Party::Callee))
            .cloned()
        else {
            return false;
        };
        match &s.event {
            // The devices here ring already.
            CallEvent::Ringing { .. } => true,
            CallEvent::Answer { .. } if call.state == CallState::Ringing => {
                // Answered on another relay: the devices here stop ringing.
                let others = self.calls.callee_elsewhere(&call.id);
                self.tell_elsewhere(&others, &call.id, HangupReason::AnsweredElsewhere);
                false
            }
            CallEvent::Hangup {
                reason: HangupReason::Declined,
                message,
            } => {
                // Declined on another relay: declined for the person.
                let others = self.calls.callee_elsewhere(&call.id);
                if let Some((ended, t)) = self.calls.end(
                    &call.id,
                    EndReason::Federation(Party::Callee, HangupReason::Declined),
                ) {
                    self.call_ended_saying(ended, t, Some(Party::Callee), message.clone());
                }
                self.tell_elsewhere(&others, &call.id, HangupReason::DeclinedElsewhere);
                true
            }
            CallEvent::Hangup { .. } => {
                // Every fork ended (or none went): the devices here ring on.
                self.calls.set_remote_forks(&call.id, false);
                true
            }
            _ => {
                self.count(Refusal::FederatedOutOfPlace);
                true
            }
        }
    }

    /// Hands the offer of call `call_id` to the federation to ring the
    /// callee's devices on its other relays, while its devices here ring
    /// (`ringing_here`, [`Action::FederateFork`]) or it is busy here
    /// ([`Action::FederateForkElsewhere`]).
    fn fork_offer(&mut self, call_id: &str, offer: CallEvent, ringing_here: bool) {
        if let Some(call) = self.calls.get(call_id) {
            let fork = CallSignal {
                call_id: call.id.clone(),
                caller: call.caller,
                callee: call.callee,
                fork: None,
                event: offer,
            };
            self.push(if ringing_here {
                Action::FederateFork(fork)
            } else {
                Action::FederateForkElsewhere(fork)
            });
        }
    }

    /// Hands a step of `call` to the federation, for the far party.
    fn federate(&mut self, call: &Call, event: CallEvent) {
        self.push(Action::Federate(CallSignal {
            call_id: call.id.clone(),
            caller: call.caller,
            callee: call.callee,
            fork: None,
            event,
        }));
    }

    /// Answers a far relay's offer with a hangup (no call here).
    fn refuse_federated_offer(&mut self, s: &CallSignal, reason: HangupReason, message: String) {
        self.push(Action::Federate(CallSignal {
            event: CallEvent::Hangup {
                reason,
                message: Some(message),
            },
            ..s.clone()
        }));
    }

    /// A step of a cross-relay call from the federation.
    fn federated(&mut self, s: CallSignal, now: Instant) {
        if let CallEvent::Offer { .. } = s.event {
            return self.federated_offer(s, now);
        }
        if self.busy_fork_ended(&s, now) || self.remote_fork_step(&s) {
            return;
        }
        // The call must be here with the far party on the side the step
        // comes from.
        let far = match s.event.towards_callee() {
            Some(true) => Some(Party::Caller),
            Some(false) => Some(Party::Callee),
            None => None,
        };
        let call = self
            .calls
            .get(&s.call_id)
            .filter(|c| (c.caller, c.callee) == (s.caller, s.callee))
            .filter(|c| c.federated_party().is_some() && far.is_none_or(|p| c.is_federated(p)))
            .cloned();
        let Some(call) = call else {
            self.count(Refusal::FederatedOutOfPlace);
            return;
        };
        let Some(far) = call.federated_party() else {
            return;
        };
        match s.event {
            // Offers come through `federated_offer`; a lost path and its
            // reroute stay between relays (the core never hands them here).
            CallEvent::Offer { .. } | CallEvent::PathLost { .. } | CallEvent::Reroute { .. } => {}
            // A busy fork is the caller's relay's federation core's to
            // merge; it never reaches a call here.
            CallEvent::Busy { .. } => self.count(Refusal::FederatedOutOfPlace),
            CallEvent::Ringing { waiting } => {
                if !self.rings(&call.id, call.caller_conn, waiting, now) {
                    self.count(Refusal::FederatedOutOfPlace);
                }
            }
            CallEvent::Answer {
                accept_mode,
                handshake,
                chosen_codec,
            } => {
                if call.state != CallState::Ringing {
                    return self.count(Refusal::FederatedOutOfPlace);
                }
                let response_ok = HandshakeResponse::parse(&handshake)
                    .is_ok_and(|r| Fingerprint::of_public_key(&r.identity) == call.callee);
                if !response_ok {
                    self.count(Refusal::BadHandshake);
                    if let Some((call, t)) = self
                        .calls
                        .end(&call.id, EndReason::BadHandshake(Party::Callee))
                    {
                        self.call_ended(call, t, None);
                    }
                    return;
                }
                let Some(t) = self.calls.activate(&call.id, accept_mode, now) else {
                    return;
                };
                self.transition(&t);
                self.send(
                    call.caller_conn,
                    SignalMessage::DirectCallAnswer {
                        call_id: call.id.clone(),
                        accept_mode,
                        handshake: Some(handshake),
                        chosen_codec,
                        callee_reflexive_addr: None,
                        callee_local_addrs: Vec::new(),
                        keep_current: false,
                    },
                );
                self.call_active(&call, Shared::default(), Shared::default());
            }
            CallEvent::Hold { sealed } => {
                if call.state != CallState::Active {
                    return self.count(Refusal::FederatedOutOfPlace);
                }
                self.send(
                    call.conn(far.other()),
                    SignalMessage::CallHold {
                        call_id: call.id.clone(),
                        sealed,
                    },
                );
            }
            CallEvent::Path { sealed } => {
                // As from a local party: the far end relay checked the
                // same, but this relay's client gets no more than this.
                let ok = call.state == CallState::Active
                    && call.accept_mode == Some(AcceptMode::AcceptTrusted)
                    && !sealed.is_empty()
                    && sealed.len() <= MAX_SEALED_PATH
                    && self.calls.count_path(&call.id, far);
                if !ok {
                    return self.count(Refusal::FederatedOutOfPlace);
                }
                self.send(
                    call.conn(far.other()),
                    SignalMessage::CallPath {
                        call_id: call.id.clone(),
                        sealed,
                    },
                );
            }
            CallEvent::Confirm { handshake } => {
                if call.state != CallState::Active || HandshakeFinish::parse(&handshake).is_err() {
                    return self.count(Refusal::FederatedOutOfPlace);
                }
                self.send(
                    call.callee_conn,
                    SignalMessage::CallConfirm {
                        call_id: Some(call.id.clone()),
                        handshake,
                    },
                );
            }
            CallEvent::Hangup { reason, message } => {
                let reason = match reason {
                    HangupReason::Unknown => HangupReason::Normal,
                    r => r,
                };
                if reason == HangupReason::NotOnline
                    && call.state == CallState::Pending
                    && call.busy_here.is_none()
                {
                    let detail = message.clone().unwrap_or_default();
                    self.refused(call.caller_conn, Refusal::NotOnline, detail);
                }
                if let Some((call, t)) =
                    self.calls.end(&call.id, EndReason::Federation(far, reason))
                {
                    self.call_ended_saying(call, t, Some(far), message);
                }
            }
        }
    }

    /// A far relay's offer for a user registered here: delivered like a
    /// local one, ringing and refusals go back through the federation.
    fn federated_offer(&mut self, s: CallSignal, now: Instant) {
        let CallEvent::Offer {
            caller_alias,
            handshake,
            supported_codecs,
        } = s.event.clone()
        else {
            return;
        };
        let devices = self.presence.conns_of(&s.callee);
        let Some(callee_conn) = devices.first().copied() else {
            let msg = format!("{} is not online at its relay", s.callee);
            return self.refuse_federated_offer(&s, HangupReason::NotOnline, msg);
        };
        let init_ok = HandshakeInit::parse(&handshake)
            .is_ok_and(|init| Fingerprint::of_public_key(&init.identity) == s.caller);
        if !init_ok {
            self.count(Refusal::BadHandshake);
            let msg = "the offer's handshake half is not the caller's".to_string();
            return self.refuse_federated_offer(&s, HangupReason::Error, msg);
        }
        let mut devices = devices;
        match self.calls.offer(
            &s.call_id,
            (s.caller, ConnId::FEDERATION),
            (s.callee, callee_conn),
            now,
        ) {
            Ok(t) => self.transition(&t),
            Err(OfferRefusal::CalleeBusy)
                if self
                    .offer_waiting(&s.call_id, (s.caller, ConnId::FEDERATION), s.callee, now)
                    .is_some_and(|device| {
                        devices = vec![device];
                        true
                    }) => {}
            Err(refusal) => {
                let reason = match refusal {
                    OfferRefusal::CallerBusy(_) | OfferRefusal::CalleeBusy => HangupReason::Busy,
                    _ => HangupReason::Error,
                };
                if refusal == OfferRefusal::CalleeBusy {
                    let alias = caller_alias
                        .clone()
                        .filter(|a| !a.chars().any(char::is_control));
                    if s.fork.is_some()
                        && self.busy_deadlines.len() < MAX_BUSY_FORKS
                        && !self.busy_forks.contains_key(&s.call_id)
                    {
                        // One of several relays the callee is on: the
                        // fork stays open, and the devices here learn of
                        // a missed call only if no other device takes it.
                        self.count(Refusal::CalleeBusy);
                        let until = now + self.config.ringing_timeout + BUSY_FORK_GRACE;
                        self.busy_deadlines
                            .push(Reverse((until, s.call_id.clone())));
                        self.busy_forks.insert(
                            s.call_id.clone(),
                            BusyFork {
                                caller: s.caller,
                                callee: s.callee,
                                caller_alias: alias,
                                offer: s.clone(),
                                until,
                            },
                        );
                        self.push(Action::Federate(CallSignal {
                            event: CallEvent::Busy {
                                message: Some(refusal.to_string()),
                            },
                            ..s.clone()
                        }));
                        return;
                    }
                    self.tell_missed(s.callee, s.caller, alias, &s.call_id, now);
                }
                self.count(match refusal {
                    OfferRefusal::BadCallId(_) => Refusal::BadCallId,
                    OfferRefusal::CallIdInUse(_) => Refusal::CallIdInUse,
                    OfferRefusal::ToSelf => Refusal::CallToSelf,
                    OfferRefusal::CallerBusy(_) => Refusal::CallerBusy,
                    OfferRefusal::CalleeBusy => Refusal::CalleeBusy,
                });
                return self.refuse_federated_offer(&s, reason, refusal.to_string());
            }
        }
        self.calls.add_forks(&s.call_id, &devices);
        let offer = SignalMessage::DirectCallOffer {
            call_id: s.call_id.clone(),
            caller_fingerprint: s.caller,
            target_fingerprint: s.callee,
            caller_alias,
            handshake: Some(handshake),
            supported_codecs,
            caller_reflexive_addr: None,
            caller_local_addrs: Vec::new(),
        };
        for device in devices {
            self.send(device, offer.clone());
        }
        if let Some(t) = self.calls.ringing(&s.call_id, now) {
            self.transition(&t);
            if let Some(call) = self.calls.get(&s.call_id).cloned() {
                let waiting = call.waiting;
                self.federate(&call, CallEvent::Ringing { waiting });
            }
        }
    }
}

/// A local caller's offer as it crosses a federation link: no control
/// characters in the name, only codecs every relay carries, and never an
/// address.
fn federated_offer_event(
    alias: Option<String>,
    handshake: Option<Vec<u8>>,
    supported_codecs: Vec<String>,
) -> CallEvent {
    CallEvent::Offer {
        caller_alias: alias.filter(|a| !a.chars().any(char::is_control)),
        handshake: handshake.unwrap_or_default(),
        supported_codecs: federable_codecs(supported_codecs),
    }
}

/// The codec names an offer may carry across a link (the bounds of
/// `call_signal`); others are left out.
fn federable_codecs(codecs: Vec<String>) -> Vec<String> {
    codecs
        .into_iter()
        .filter(|c| federable_codec(c))
        .take(MAX_CALL_CODECS)
        .collect()
}

fn federable_codec(c: &str) -> bool {
    !c.is_empty() && c.chars().count() <= MAX_CODEC_CHARS && !c.chars().any(char::is_control)
}

fn party_name(p: Party) -> &'static str {
    match p {
        Party::Caller => "caller",
        Party::Callee => "callee",
    }
}

#[cfg(test)]
mod tests;
