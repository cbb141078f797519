//! The `_signal` plane in process: one `SignalHub` and several clients'
//! sans-IO state machines (`PresenceClient`, `OutgoingCall`, `IncomingCall`)
//! wired through queues and stepped with a manual clock. No sockets, no sleeps.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wzp_proto::close::CloseCode;
use wzp_proto::direct_call::{call_context, CallEvent, CallReady, IncomingCall, OutgoingCall};
use wzp_proto::handshake::{
    EphemeralKey, HandshakeError, HandshakeFinish, HandshakeInit, HandshakeResponse, Initiator,
    Responder,
};
use wzp_proto::mapping::Mapping;
use wzp_proto::path_addrs::{PathAddrs, MAX_SEALED_PATH};
use wzp_proto::presence::{answer_challenge, PresenceClient, PresenceEvent, PresenceStep};
use wzp_proto::signal::{AcceptMode, ErrorCode, HangupReason, SignalMessage};
use wzp_proto::{Fingerprint, Identity, Seed, TlsFingerprint};
use wzp_relay::calls::CallState;
use wzp_relay::federation::{
    Action as FedAction, FederationConfig, FederationCore, Input as FedInput,
};
use wzp_relay::signal::{Action, ConnId, Event, Frame, Input, Refusal, SignalConfig, SignalHub};

const RELAY_TLS: TlsFingerprint = TlsFingerprint([0x77; 32]);

fn identity(n: u8) -> Identity {
    Seed::from_bytes([n; 32]).identity()
}

fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, n], 40_000 + u16::from(n)))
}

/// Rewrites messages on their way from the hub to a client (a relay that
/// tampers with what it forwards).
type Tamper = Box<dyn FnMut(ConnId, SignalMessage, &mut Vec<(ConnId, SignalMessage)>)>;

/// The hub and the wires to its clients.
struct Net {
    hub: SignalHub,
    now: Instant,
    inbox: HashMap<ConnId, VecDeque<SignalMessage>>,
    closed: HashMap<ConnId, (CloseCode, String)>,
    rooms_opened: Vec<(String, Vec<Fingerprint>)>,
    /// This relay's federation core, with no peer: an offer for someone
    /// not registered here is answered `not_online` through it, as in a relay.
    federation: FederationCore,
    rooms_closed: Vec<String>,
    events: Vec<Event>,
    tamper: Option<Tamper>,
    next_conn: u64,
}

impl Net {
    fn new(config: SignalConfig) -> Net {
        Net {
            hub: SignalHub::new(config),
            now: Instant::now(),
            inbox: HashMap::new(),
            closed: HashMap::new(),
            rooms_opened: Vec::new(),
            federation: FederationCore::new(
                FederationConfig {
                    me: RELAY_TLS,
                    label: "relay".into(),
                    peers: Vec::new(),
                    global_rooms: Vec::new(),
                    seed: 1,
                },
                Instant::now(),
            ),
            rooms_closed: Vec::new(),
            events: Vec::new(),
            tamper: None,
            next_conn: 1,
        }
    }

    fn default_config() -> SignalConfig {
        SignalConfig::new(RELAY_TLS, "relay.test:4433")
    }

    fn input(&mut self, input: Input) {
        self.hub.handle(input, self.now);
        self.pump();
    }

    fn frame(&mut self, conn: ConnId, msg: SignalMessage) {
        self.input(Input::Frame {
            conn,
            frame: Frame::Message(msg),
        });
    }

    fn pump(&mut self) {
        while let Some(a) = self.hub.poll_action() {
            match a {
                Action::Send { conn, msg } => {
                    let mut out = Vec::new();
                    match self.tamper.as_mut() {
                        Some(t) => t(conn, msg, &mut out),
                        None => out.push((conn, msg)),
                    }
                    for (conn, msg) in out {
                        self.inbox.entry(conn).or_default().push_back(msg);
                    }
                }
                Action::Close { conn, code, reason } => {
                    assert!(
                        self.closed.insert(conn, (code, reason)).is_none(),
                        "{conn} closed twice"
                    );
                }
                Action::CallRoomOpened { room, fingerprints } => {
                    self.rooms_opened.push((room, fingerprints))
                }
                Action::CallRoomClosed { room } => self.rooms_closed.push(room),
                Action::Event(e) => self.events.push(e),
                Action::Federate(signal) => {
                    self.federation
                        .handle(FedInput::LocalCall(signal), self.now);
                    self.take_federation();
                }
                Action::FederateMail(signal) => {
                    self.federation
                        .handle(FedInput::LocalMail(signal), self.now);
                    self.take_federation();
                }
                Action::FederateFork(signal) => {
                    self.federation
                        .handle(FedInput::LocalFork(signal), self.now);
                    self.take_federation();
                }
                Action::DevicesRingHere { call_id } => {
                    self.federation
                        .handle(FedInput::DevicesRingHere { call_id }, self.now);
                    self.take_federation();
                }
                Action::FederateForkElsewhere(signal) => {
                    self.federation
                        .handle(FedInput::LocalForkElsewhere(signal), self.now);
                    self.take_federation();
                }
            }
        }
    }

    /// What the peerless federation hands back to the hub.
    fn take_federation(&mut self) {
        for a in self.federation.drain_actions() {
            match a {
                FedAction::Call(back) => self.hub.handle(Input::Federated(back), self.now),
                FedAction::Mail(back) => self.hub.handle(Input::FederatedMail(back), self.now),
                _ => {}
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for _ in 0..16 {
            match self.hub.poll_timeout() {
                Some(t) if t <= self.now => {
                    self.hub.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
    }

    /// Everything queued for `conn`, reported as written.
    fn take(&mut self, conn: ConnId) -> Vec<SignalMessage> {
        let msgs: Vec<_> = self.inbox.entry(conn).or_default().drain(..).collect();
        if !msgs.is_empty() {
            self.input(Input::Drained {
                conn,
                count: msgs.len(),
            });
        }
        msgs
    }

    fn connect(&mut self, remote: SocketAddr) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&conn.0.to_be_bytes());
        nonce[8] = 0x5a;
        self.input(Input::Connected {
            conn,
            remote,
            nonce,
        });
        conn
    }

    fn refusals(&self, r: Refusal) -> u64 {
        self.hub.counters().refusals(r)
    }

    fn close_of(&self, conn: ConnId) -> Option<CloseCode> {
        self.closed.get(&conn).map(|(c, _)| *c)
    }
}

/// A client: registration plus at most one call at a time.
struct Client {
    identity: Identity,
    remote: SocketAddr,
    conn: ConnId,
    presence: PresenceClient,
    registered: Option<PresenceEvent>,
    accept: AcceptMode,
    eph_seed: u8,
    outgoing: Option<OutgoingCall>,
    incoming: Option<IncomingCall>,
    offers_seen: Vec<(String, Fingerprint)>,
    received: Vec<SignalMessage>,
    events: Vec<CallEvent>,
    errors: Vec<(ErrorCode, String)>,
    reflected: Option<SocketAddr>,
    /// Puts our address in every answer, whatever the mode (a careless client).
    leaks_addr: bool,
    /// Own-network addresses shared with a trusted caller (and leaked with
    /// `leaks_addr`).
    local: Vec<SocketAddr>,
    /// Lets an offer ring (no answer) until [`Client::pick_up`].
    rings: bool,
    /// An offer that came while this client was in a call (a waiting
    /// call): it rings, and its events go to `second_events`.
    second: Option<IncomingCall>,
    second_events: Vec<CallEvent>,
}

impl Client {
    fn new(net: &mut Net, n: u8, accept: AcceptMode) -> Client {
        let identity = identity(n);
        let remote = addr(n);
        let conn = net.connect(remote);
        Client {
            presence: PresenceClient::new(&identity, RELAY_TLS, Some(format!("user{n}"))),
            identity,
            remote,
            conn,
            registered: None,
            accept,
            eph_seed: n.wrapping_mul(16),
            outgoing: None,
            incoming: None,
            offers_seen: Vec::new(),
            received: Vec::new(),
            events: Vec::new(),
            errors: Vec::new(),
            reflected: None,
            leaks_addr: false,
            local: Vec::new(),
            rings: false,
            second: None,
            second_events: Vec::new(),
        }
    }

    /// Connects and registers as person `n` taking waiting calls (its first
    /// call is answered by `accept`; a call while in it rings in `second`).
    fn takes_waiting(net: &mut Net, n: u8, accept: AcceptMode) -> Client {
        let mut c = Client::new(net, n, accept);
        c.presence = PresenceClient::new(&c.identity, RELAY_TLS, Some(format!("user{n}")))
            .with_call_waiting(true);
        net.frame(c.conn, SignalMessage::hello(Some("test-client".into())));
        while c.step(net) {}
        assert!(matches!(
            c.registered,
            Some(PresenceEvent::Registered { .. })
        ));
        c
    }

    /// Whether a call of this client is under way.
    fn in_call(&self) -> bool {
        self.outgoing.as_ref().is_some_and(|o| !o.is_ended())
            || self.incoming.as_ref().is_some_and(|i| !i.is_ended())
    }

    /// Answers the waiting call (`Reject` declines it); answering hangs up
    /// the call in progress first, as a client does.
    fn pick_up_second(&mut self, net: &mut Net, mode: AcceptMode, hang_up_first: bool) {
        if hang_up_first && mode != AcceptMode::Reject {
            self.hangup(net);
        }
        let eph = self.ephemeral();
        let w = self.second.as_mut().expect("nothing waits");
        match mode {
            AcceptMode::Reject => w.reject(),
            mode => w.accept(&self.identity, eph, mode, None).unwrap(),
        }
        let out: Vec<_> = std::iter::from_fn(|| w.poll_send()).collect();
        for m in out {
            net.frame(self.conn, m);
        }
    }

    /// Puts the call in progress on hold (telling its party) and answers the
    /// waiting call keeping it (`keep_current`), as `s` does in a client.
    fn hold_and_pick_up_second(&mut self, net: &mut Net) {
        assert!(self
            .incoming
            .as_mut()
            .expect("in a call")
            .hold(true, [7; 12]));
        self.flush(net);
        let eph = self.ephemeral();
        let w = self.second.as_mut().expect("nothing waits");
        w.keep_current();
        w.accept(&self.identity, eph, AcceptMode::AcceptGeneric, None)
            .unwrap();
        self.flush_second(net);
    }

    fn flush_second(&mut self, net: &mut Net) {
        let w = self.second.as_mut().expect("no second call");
        let out: Vec<_> = std::iter::from_fn(|| w.poll_send()).collect();
        for m in out {
            net.frame(self.conn, m);
        }
    }

    /// Connects and registers as device `device` of person `n`; its offers
    /// ring until [`Client::pick_up`].
    fn device(net: &mut Net, n: u8, device: u8) -> Client {
        let mut c = Client::new(net, n, AcceptMode::AcceptGeneric);
        c.presence = PresenceClient::new(&c.identity, RELAY_TLS, Some(format!("user{n}")))
            .with_device([device; wzp_proto::presence::DEVICE_ID_LEN]);
        c.rings = true;
        net.frame(c.conn, SignalMessage::hello(Some("test-client".into())));
        while c.step(net) {}
        assert!(
            matches!(c.registered, Some(PresenceEvent::Registered { .. })),
            "device {device} of {n} not registered: {:?}",
            net.closed.get(&c.conn)
        );
        c
    }

    /// Answers the ringing call (`Reject` declines it).
    fn pick_up(&mut self, net: &mut Net, mode: AcceptMode) {
        let eph = self.ephemeral();
        let inc = self.incoming.as_mut().expect("nothing rings");
        match mode {
            AcceptMode::Reject => inc.reject(),
            mode => inc
                .accept(&self.identity, eph, mode, Some(self.remote))
                .unwrap(),
        }
        self.flush(net);
    }

    /// Connects and registers (challenge/response).
    fn online(net: &mut Net, n: u8, accept: AcceptMode) -> Client {
        let mut c = Client::new(net, n, accept);
        net.frame(c.conn, SignalMessage::hello(Some("test-client".into())));
        while c.step(net) {}
        assert!(
            matches!(c.registered, Some(PresenceEvent::Registered { .. })),
            "client {n} not registered: {:?} {:?}",
            c.registered,
            net.closed.get(&c.conn)
        );
        c
    }

    fn ephemeral(&mut self) -> EphemeralKey {
        self.eph_seed = self.eph_seed.wrapping_add(1);
        EphemeralKey::from_bytes([self.eph_seed; 32])
    }

    fn call(&mut self, net: &mut Net, call_id: &str, target: Fingerprint) {
        let eph = self.ephemeral();
        self.outgoing = Some(
            OutgoingCall::start(
                &self.identity,
                eph,
                call_id.into(),
                target,
                Some("caller".into()),
            )
            .unwrap(),
        );
        self.flush(net);
    }

    fn hangup(&mut self, net: &mut Net) {
        if let Some(o) = self.outgoing.as_mut() {
            o.hangup();
        }
        if let Some(i) = self.incoming.as_mut() {
            i.hangup();
        }
        self.flush(net);
    }

    fn flush(&mut self, net: &mut Net) {
        let mut out = Vec::new();
        if let Some(o) = self.outgoing.as_mut() {
            out.extend(std::iter::from_fn(|| o.poll_send()));
        }
        if let Some(i) = self.incoming.as_mut() {
            out.extend(std::iter::from_fn(|| i.poll_send()));
        }
        for mut m in out {
            if let SignalMessage::DirectCallAnswer {
                callee_reflexive_addr,
                callee_local_addrs,
                ..
            } = &mut m
            {
                if self.leaks_addr {
                    *callee_reflexive_addr = Some(self.remote);
                    *callee_local_addrs = self.local.clone();
                }
            }
            net.frame(self.conn, m);
        }
    }

    /// Reads everything queued; returns whether anything was read.
    fn step(&mut self, net: &mut Net) -> bool {
        let msgs = net.take(self.conn);
        let any = !msgs.is_empty();
        for m in msgs {
            self.received.push(m.clone());
            match self.presence.handle(&m) {
                PresenceStep::Send(reply) => net.frame(self.conn, reply),
                PresenceStep::Event(e) => self.registered = Some(e),
                PresenceStep::Ignored => {}
            }
            match &m {
                SignalMessage::DirectCallOffer {
                    call_id,
                    caller_fingerprint,
                    caller_reflexive_addr,
                    ..
                } => {
                    assert_eq!(
                        *caller_reflexive_addr, None,
                        "the relay leaked the caller's address"
                    );
                    self.offers_seen
                        .push((call_id.clone(), *caller_fingerprint));
                    let mut inc =
                        IncomingCall::from_offer(&m).expect("offer from the relay is well formed");
                    if self.in_call() {
                        self.second = Some(inc);
                        continue;
                    }
                    match self.accept {
                        _ if self.rings => {}
                        AcceptMode::Reject => inc.reject(),
                        mode => {
                            let eph = self.ephemeral();
                            inc.share_local(&self.local);
                            inc.accept(&self.identity, eph, mode, Some(self.remote))
                                .unwrap();
                        }
                    }
                    self.incoming = Some(inc);
                }
                SignalMessage::Error { code, message, .. } => {
                    self.errors.push((*code, message.clone()))
                }
                SignalMessage::ReflectResponse { observed_addr, .. } => {
                    self.reflected = Some(*observed_addr)
                }
                _ => {}
            }
            if let Some(o) = self.outgoing.as_mut() {
                self.events.extend(o.handle(&m));
            }
            if let Some(i) = self.incoming.as_mut() {
                self.events.extend(i.handle(&m));
            }
            if let Some(w) = self.second.as_mut() {
                self.second_events.extend(w.handle(&m));
                let out: Vec<_> = std::iter::from_fn(|| w.poll_send()).collect();
                for m in out {
                    net.frame(self.conn, m);
                }
            }
            self.flush(net);
        }
        any
    }

    fn answered(&self) -> Option<&CallReady> {
        self.events.iter().find_map(|e| match e {
            CallEvent::Answered(r) => Some(&**r),
            _ => None,
        })
    }

    fn has(&self, pred: impl Fn(&CallEvent) -> bool) -> bool {
        self.events.iter().any(pred)
    }
}

/// Steps every client until no messages move.
fn settle(net: &mut Net, clients: &mut [&mut Client]) {
    for _ in 0..100 {
        let mut any = false;
        for c in clients.iter_mut() {
            any |= c.step(net);
        }
        if !any {
            return;
        }
    }
    panic!("the plane did not settle");
}

fn assert_same_call_keys(a: &CallReady, b: &CallReady) {
    assert_eq!(a.sas, b.sas, "both users read the same SAS");
    assert_eq!(a.keys.send_key(), b.keys.recv_key());
    assert_eq!(a.keys.recv_key(), b.keys.send_key());
    assert_eq!(a.keys.transcript_hash(), b.keys.transcript_hash());
    assert_eq!(a.room, b.room);
}

#[test]
fn a_calls_b_by_fingerprint_and_both_derive_the_same_keys_and_sas() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptTrusted);
    // The ack carries the relay's view.
    assert_eq!(
        a.registered,
        Some(PresenceEvent::Registered {
            observed_addr: Some(a.remote),
            relay_label: None,
            version: Some(env!("CARGO_PKG_VERSION").into()),
            mapping: None,
            devices: Some(1),
        })
    );
    assert_eq!(net.hub.presence().len(), 2);

    a.call(&mut net, "abc123", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);

    assert!(a.has(|e| matches!(e, CallEvent::Ringing)));
    assert_eq!(
        b.offers_seen,
        vec![("abc123".to_string(), a.identity.fingerprint())]
    );
    let (ra, rb) = (
        a.answered().expect("A answered"),
        b.answered().expect("B answered"),
    );
    assert_same_call_keys(ra, rb);
    assert_eq!(ra.room, "call-abc123");
    assert_eq!(ra.relay_addr, "relay.test:4433");
    assert_eq!(ra.peer, b.identity.fingerprint());
    assert_eq!(rb.peer, a.identity.fingerprint());
    // B answered accept_trusted: A may learn B's address; A offered none, so B learns nothing.
    assert_eq!(ra.peer_direct_addr, Some(b.remote));
    assert_eq!(rb.peer_direct_addr, None);
    // The hub opened the room for exactly those two fingerprints.
    assert_eq!(
        net.rooms_opened,
        vec![(
            "call-abc123".to_string(),
            vec![a.identity.fingerprint(), b.identity.fingerprint()]
        )]
    );
    assert!(net.hub.may_join("call-abc123", &a.identity.fingerprint()));
    assert!(net.hub.may_join("call-abc123", &b.identity.fingerprint()));
    assert!(!net.hub.may_join("call-abc123", &identity(3).fingerprint()));
    let calls = net.hub.calls();
    assert_eq!(calls.get("abc123").unwrap().state, CallState::Active);
    assert_eq!(calls.transitions(CallState::Pending, CallState::Ringing), 1);
    assert_eq!(calls.transitions(CallState::Ringing, CallState::Active), 1);

    // Hang-up from B ends it for both and closes the room.
    b.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(a.has(|e| matches!(
        e,
        CallEvent::HungUp {
            reason: HangupReason::Normal,
            ..
        }
    )));
    assert_eq!(net.rooms_closed, vec!["call-abc123".to_string()]);
    assert!(!net.hub.may_join("call-abc123", &a.identity.fingerprint()));
    assert!(net.hub.calls().is_empty());
    assert_eq!(
        net.hub
            .calls()
            .transitions(CallState::Active, CallState::Ended),
        1
    );
    // Nobody was closed, nothing was refused.
    assert!(net.closed.is_empty(), "{:?}", net.closed);
    assert!(net.hub.counters().all_refusals().all(|(_, n)| n == 0));
}

/// A calls B offering its relay-observed address and `local` as its own
/// network's, written into the offer as they go on the wire (unbounded),
/// and runs the call to its answer.
fn call_sharing(net: &mut Net, a: &mut Client, b: &mut Client, id: &str, local: Vec<SocketAddr>) {
    let eph = a.ephemeral();
    let mut out =
        OutgoingCall::start(&a.identity, eph, id.into(), b.identity.fingerprint(), None).unwrap();
    let mut offer = out.poll_send().unwrap();
    if let SignalMessage::DirectCallOffer {
        caller_reflexive_addr,
        caller_local_addrs,
        ..
    } = &mut offer
    {
        *caller_reflexive_addr = Some(a.remote);
        *caller_local_addrs = local;
    }
    a.outgoing = Some(out);
    net.frame(a.conn, offer);
    settle(net, &mut [a, b]);
}

/// Own-network addresses (for two parties behind one NAT) go where the
/// relay-observed ones go, only with `accept_trusted`, at most four each.
#[test]
fn own_network_addresses_reach_only_a_trusted_peer_and_at_most_four() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptTrusted);
    b.local = (1..=6)
        .map(|k| SocketAddr::from(([10, 8, 0, k], 5000)))
        .collect();
    let a_local: Vec<SocketAddr> = (1..=6)
        .map(|k| SocketAddr::from(([10, 9, 0, k], 4000)))
        .collect();
    // Six on the wire (a client that does not bound them): four passed on.
    call_sharing(&mut net, &mut a, &mut b, "l1", a_local.clone());
    let (ra, rb) = (a.answered().unwrap(), b.answered().unwrap());
    assert_same_call_keys(ra, rb);
    assert_eq!(ra.peer_direct_addr, Some(b.remote));
    assert_eq!(ra.peer_local_addrs, b.local[..4]);
    assert_eq!(rb.peer_direct_addr, Some(a.remote));
    assert_eq!(rb.peer_local_addrs, a_local[..4]);
    // The offer B saw carried none of A's addresses.
    for m in &b.received {
        if let SignalMessage::DirectCallOffer {
            caller_reflexive_addr,
            caller_local_addrs,
            ..
        } = m
        {
            assert_eq!(
                (caller_reflexive_addr, caller_local_addrs.len()),
                (&None, 0)
            );
        }
    }
}

#[test]
fn accept_generic_never_reveals_the_callee_address() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    // B answers generic but its answer carries its addresses anyway.
    b.leaks_addr = true;
    b.local = vec!["10.8.0.2:5000".parse().unwrap()];
    // A volunteers its address in the offer: the relay keeps it from B
    // (checked in Client::step) and B answers generic.
    call_sharing(
        &mut net,
        &mut a,
        &mut b,
        "g1",
        vec!["10.9.0.2:4000".parse().unwrap()],
    );
    let (ra, rb) = (a.answered().unwrap(), b.answered().unwrap());
    assert_same_call_keys(ra, rb);
    assert_eq!(ra.peer_direct_addr, None);
    assert_eq!(rb.peer_direct_addr, None);
    assert_eq!(ra.peer_local_addrs, vec![]);
    assert_eq!(rb.peer_local_addrs, vec![]);
    for (who, leak) in [(&a, "10.8.0.2"), (&b, "10.9.0.2")] {
        for m in &who.received {
            assert!(!serde_json::to_string(m).unwrap().contains(leak), "{m:?}");
        }
    }
    // Nothing A received carries B's address, nothing B received carries A's.
    for (who, other) in [(&a, &b), (&b, &a)] {
        let leak = other.remote.ip().to_string();
        for m in &who.received {
            assert!(!serde_json::to_string(m).unwrap().contains(&leak), "{m:?}");
        }
    }
}

#[test]
fn reject_not_online_busy_and_ringing_timeout() {
    let mut config = Net::default_config();
    config.ringing_timeout = Duration::from_secs(20);
    let mut net = Net::new(config);
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::Reject);
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);

    // Reject.
    a.call(&mut net, "r1", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(
        a.has(|e| matches!(e, CallEvent::Rejected)),
        "{:?}",
        a.events
    );
    assert!(net.hub.calls().is_empty());
    assert_eq!(net.hub.calls().ended("rejected"), 1);
    assert!(net.rooms_opened.is_empty());

    // Not online.
    a.events.clear();
    a.call(&mut net, "n1", identity(9).fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(
        a.has(|e| matches!(e, CallEvent::NotOnline)),
        "{:?}",
        a.events
    );
    assert_eq!(net.refusals(Refusal::NotOnline), 1);

    // Busy: A calls C (accepts), then B calls C.
    a.events.clear();
    a.call(&mut net, "b1", c.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(a.answered().is_some());
    b.call(&mut net, "b2", c.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(b.has(|e| matches!(e, CallEvent::Busy)), "{:?}", b.events);
    assert_eq!(net.refusals(Refusal::CalleeBusy), 1);
    assert_eq!(c.offers_seen.len(), 1, "C was not disturbed");
    // And A, in a call, cannot start another.
    let eph = a.ephemeral();
    let mut second = OutgoingCall::start(
        &a.identity,
        eph,
        "b3".into(),
        b.identity.fingerprint(),
        None,
    )
    .unwrap();
    net.frame(a.conn, second.poll_send().unwrap());
    let answers = net.take(a.conn);
    assert!(
        answers.iter().any(|m| second
            .handle(m)
            .is_some_and(|e| matches!(e, CallEvent::Busy))),
        "{answers:?}"
    );
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(net.refusals(Refusal::CallerBusy), 1);
    a.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(c.has(|e| matches!(e, CallEvent::HungUp { .. })));

    // Ringing timeout: D never answers.
    let mut d = Client::online(&mut net, 4, AcceptMode::AcceptGeneric);
    let mut b2 = Client::online(&mut net, 5, AcceptMode::AcceptGeneric);
    // D reads the offer but its user does not pick up.
    let_ring(&mut net, &mut b2, &mut d, "t1");
    // Keep both alive past the ringing timeout.
    for _ in 0..4 {
        net.advance(Duration::from_secs(5));
        net.frame(b2.conn, SignalMessage::Ping { timestamp_ms: 1 });
        net.frame(d.conn, SignalMessage::Ping { timestamp_ms: 1 });
    }
    settle(&mut net, &mut [&mut b2, &mut d]);
    assert!(
        b2.has(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        b2.events
    );
    assert!(
        d.has(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        d.events
    );
    assert_eq!(net.hub.calls().ended("ringing_timeout"), 1);
    assert!(net.hub.calls().is_empty());
}

/// `caller` calls `callee`, whose user reads the offer and lets it ring.
fn let_ring(net: &mut Net, caller: &mut Client, callee: &mut Client, call_id: &str) {
    caller.call(net, call_id, callee.identity.fingerprint());
    caller.step(net);
    let offer = net.take(callee.conn);
    assert!(matches!(
        offer.as_slice(),
        [SignalMessage::DirectCallOffer { .. }]
    ));
    callee.incoming = Some(IncomingCall::from_offer(&offer[0]).unwrap());
    assert!(caller.has(|e| matches!(e, CallEvent::Ringing)));
}

#[test]
fn a_reloaded_ringing_timeout_rings_new_calls_and_leaves_ringing_ones_their_deadline() {
    let mut config = Net::default_config();
    config.ringing_timeout = Duration::from_secs(20);
    let mut net = Net::new(config);
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    let mut d = Client::online(&mut net, 4, AcceptMode::AcceptGeneric);
    let_ring(&mut net, &mut a, &mut b, "old");
    net.hub.set_ringing_timeout(Duration::from_secs(5));
    let_ring(&mut net, &mut c, &mut d, "new");
    let conns = [a.conn, b.conn, c.conn, d.conn];
    let keep_alive = |net: &mut Net, secs: u64| {
        for _ in 0..secs {
            net.advance(Duration::from_secs(1));
            for conn in conns {
                net.frame(conn, SignalMessage::Ping { timestamp_ms: 1 });
            }
        }
    };
    keep_alive(&mut net, 6);
    settle(&mut net, &mut [&mut a, &mut b, &mut c, &mut d]);
    assert!(
        c.has(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        c.events
    );
    assert!(
        !a.has(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        a.events
    );
    assert_eq!(net.hub.calls().ended("ringing_timeout"), 1);
    assert_eq!(net.hub.calls().len(), 1, "the older call still rings");
    keep_alive(&mut net, 15);
    settle(&mut net, &mut [&mut a, &mut b, &mut c, &mut d]);
    assert!(
        a.has(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        a.events
    );
    assert_eq!(net.hub.calls().ended("ringing_timeout"), 2);
    assert!(net.hub.calls().is_empty());
}

#[test]
fn a_disconnect_or_replacement_ends_the_call_for_the_other_party() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    a.call(&mut net, "d1", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(a.answered().is_some());
    net.input(Input::Disconnected { conn: b.conn });
    settle(&mut net, &mut [&mut a]);
    assert!(a.has(|e| matches!(e, CallEvent::HungUp { .. })));
    assert_eq!(net.rooms_closed, vec!["call-d1".to_string()]);
    assert!(net.hub.presence().get(&b.identity.fingerprint()).is_none());
    assert_eq!(net.hub.calls().ended("disconnected"), 1);

    // B comes back, is called, and registers again elsewhere: the older
    // connection is closed `Replaced` and its call ends.
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    a.events.clear();
    a.call(&mut net, "d2", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(a.answered().is_some());
    let old = b.conn;
    let b2 = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    assert_eq!(net.close_of(old), Some(CloseCode::Replaced));
    assert!(net.closed[&old].1.contains("replaced"));
    assert_eq!(
        net.hub
            .presence()
            .get(&b.identity.fingerprint())
            .unwrap()
            .conn,
        b2.conn
    );
    assert_eq!(net.hub.counters().replaced, 1);
    settle(&mut net, &mut [&mut a]);
    assert!(a.has(|e| matches!(e, CallEvent::HungUp { .. })));
    assert!(net.hub.calls().is_empty());
}

#[test]
fn keepalive_expiry_ends_presence_and_pings_keep_it() {
    let mut config = Net::default_config();
    config.keepalive_timeout = Duration::from_secs(30);
    let mut net = Net::new(config);
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    for _ in 0..5 {
        net.advance(Duration::from_secs(10));
        net.frame(a.conn, SignalMessage::Ping { timestamp_ms: 7 });
    }
    a.step(&mut net);
    assert!(net.hub.presence().get(&a.identity.fingerprint()).is_some());
    assert!(net.hub.presence().get(&b.identity.fingerprint()).is_none());
    assert_eq!(net.close_of(b.conn), Some(CloseCode::Timeout));
    assert_eq!(net.refusals(Refusal::KeepaliveTimeout), 1);
    assert!(net.close_of(a.conn).is_none());
}

/// A listener whose address changed since it registered (QUIC moved its
/// connection) answers with the address it was told; the relay gives the
/// caller where it sees the listener now, and tells the listener so when
/// it asks.
#[test]
fn a_callee_that_moved_since_it_registered_is_reached_where_it_is_now() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptTrusted);
    // The same address is no move.
    net.input(Input::Moved {
        conn: b.conn,
        remote: b.remote,
    });
    assert_eq!(net.hub.counters().moved, 0);
    let moved: SocketAddr = "198.51.100.9:40000".parse().unwrap();
    net.input(Input::Moved {
        conn: b.conn,
        remote: moved,
    });
    assert_eq!(net.hub.counters().moved, 1);
    a.call(&mut net, "mv1", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);
    assert_eq!(
        a.answered().expect("answered").peer_direct_addr,
        Some(moved)
    );
    // Each party's setup says where the relay sees it now.
    assert_eq!(b.answered().expect("answered").observed_addr, Some(moved));
    assert_eq!(a.answered().unwrap().observed_addr, Some(a.remote));
    // Asked, the relay tells B where it is now.
    net.frame(b.conn, SignalMessage::Reflect);
    assert!(net.take(b.conn).contains(&SignalMessage::ReflectResponse {
        observed_addr: moved,
        mapping_port: None,
        mapping_token: None,
    }));
    // A caller that moved is shared where it is now too.
    a.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut b]);
    let a_moved: SocketAddr = "203.0.113.5:50000".parse().unwrap();
    net.input(Input::Moved {
        conn: a.conn,
        remote: a_moved,
    });
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptTrusted);
    call_sharing(&mut net, &mut a, &mut c, "mv2", Vec::new());
    assert_eq!(
        c.answered().expect("answered").peer_direct_addr,
        Some(a_moved)
    );
}

#[test]
fn reflect_answers_with_the_observed_address_even_before_registration() {
    let mut net = Net::new(Net::default_config());
    let c = Client::new(&mut net, 8, AcceptMode::Reject);
    // No registration: hello then reflect.
    net.frame(c.conn, SignalMessage::hello(None));
    net.frame(c.conn, SignalMessage::Reflect);
    let msgs = net.take(c.conn);
    assert!(
        msgs.contains(&SignalMessage::ReflectResponse {
            observed_addr: addr(8),
            mapping_port: None,
            mapping_token: None,
        }),
        "{msgs:?}"
    );
    // It is closed if it never registers.
    net.advance(Duration::from_secs(11));
    assert_eq!(net.close_of(c.conn), Some(CloseCode::Timeout));
    assert_eq!(net.refusals(Refusal::RegisterTimeout), 1);
}

/// A relay in the middle (identity M) that answers A's handshake itself and
/// calls B as M: A's pinned handshake refuses it; B, who only sees M, gets
/// keys with M; an unpinned A would read another SAS than B, and media
/// sealed by A would not open at B.
#[test]
fn a_relay_that_substitutes_keys_is_caught_by_the_handshake_and_the_sas() {
    let mallory = identity(66);
    let (a_id, b_id) = (identity(1), identity(2));
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let (a_conn, b_conn) = (a.conn, b.conn);

    // What M learns, for the comparison after the call.
    type Shared =
        std::rc::Rc<std::cell::RefCell<Option<(HandshakeInit, HandshakeResponse, Responder)>>>;
    let seen: Shared = Default::default();
    let seen_in = seen.clone();
    let m = mallory.clone();
    let mut to_b: Option<Initiator> = None;
    net.tamper = Some(Box::new(move |conn, msg, out| match msg {
        SignalMessage::DirectCallOffer {
            call_id,
            target_fingerprint,
            handshake,
            ..
        } if conn == b_conn => {
            let a_init = HandshakeInit::parse(handshake.as_deref().unwrap()).unwrap();
            let ctx = call_context(&call_id);
            let (resp_state, resp) = Responder::respond(
                &m,
                EphemeralKey::from_bytes([0x66; 32]),
                &ctx,
                &a_init,
                None,
            )
            .unwrap();
            *seen_in.borrow_mut() = Some((a_init, resp, resp_state));
            let (init_state, m_init) =
                Initiator::start(&m, EphemeralKey::from_bytes([0x67; 32]), &ctx, None);
            to_b = Some(init_state);
            out.push((
                conn,
                SignalMessage::DirectCallOffer {
                    call_id,
                    caller_fingerprint: m.fingerprint(),
                    target_fingerprint,
                    caller_alias: Some("not mallory".into()),
                    handshake: Some(m_init.encode().to_vec()),
                    supported_codecs: vec![],
                    caller_reflexive_addr: None,
                    caller_local_addrs: vec![],
                },
            ));
        }
        SignalMessage::DirectCallAnswer {
            call_id,
            accept_mode,
            handshake,
            ..
        } if conn == a_conn => {
            let b_resp = HandshakeResponse::parse(handshake.as_deref().unwrap()).unwrap();
            let (_keys_mb, finish) = to_b.take().unwrap().finish(&b_resp).unwrap();
            let resp_to_a = seen_in.borrow().as_ref().unwrap().1;
            out.push((
                conn,
                SignalMessage::DirectCallAnswer {
                    call_id: call_id.clone(),
                    accept_mode,
                    handshake: Some(resp_to_a.encode().to_vec()),
                    chosen_codec: None,
                    callee_reflexive_addr: None,
                    callee_local_addrs: vec![],
                    keep_current: false,
                },
            ));
            out.push((
                b_conn,
                SignalMessage::CallConfirm {
                    call_id: Some(call_id),
                    handshake: finish.encode().to_vec(),
                },
            ));
        }
        other => out.push((conn, other)),
    }));

    // A's first ephemeral is reproducible: Client::ephemeral() would give it.
    let a_eph_bytes = [a.eph_seed.wrapping_add(1); 32];
    a.call(&mut net, "mitm1", b_id.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);

    // A pinned B's fingerprint: the substituted answer is refused, no keys, hangup sent.
    assert!(
        a.has(|e| matches!(
            e,
            CallEvent::Failed {
                error: wzp_proto::direct_call::CallError::Handshake(
                    HandshakeError::UnexpectedPeer { .. }
                )
            }
        )),
        "{:?}",
        a.events
    );
    assert!(a.answered().is_none());
    assert!(net.hub.calls().is_empty(), "A's hangup ended the call");
    // B was offered a call from M, not from A, and its keys are with M.
    assert_eq!(b.offers_seen[0].1, mallory.fingerprint());
    let rb = b.answered().expect("B completed a handshake with M");
    assert_eq!(rb.peer, mallory.fingerprint());

    // Had A not pinned B, it would have finished with M: the SAS differ and
    // the keys do not match, so A's media would not open at B.
    let (_, resp_to_a, m_responder) = seen.borrow_mut().take().unwrap();
    let (unpinned, _) = Initiator::start(
        &a_id,
        EphemeralKey::from_bytes(a_eph_bytes),
        &call_context("mitm1"),
        None,
    );
    let (a_keys, a_finish) = unpinned.finish(&resp_to_a).unwrap();
    let m_keys = m_responder.confirm(&a_finish).unwrap();
    assert_eq!(a_keys.send_key(), m_keys.recv_key(), "M can read A");
    assert_ne!(a_keys.sas(), rb.sas, "the users would read different SAS");
    assert_ne!(
        a_keys.send_key(),
        rb.keys.recv_key(),
        "A's media would not open at B"
    );
    assert_ne!(
        a_keys.recv_key(),
        rb.keys.send_key(),
        "B's media would not open at A"
    );
}

/// A relay that swaps only the ephemeral key in the offer cannot fix B's
/// signature: A refuses the answer.
#[test]
fn a_relay_that_swaps_the_ephemeral_key_breaks_the_signature() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let b_conn = b.conn;
    net.tamper = Some(Box::new(move |conn, mut msg, out| {
        if let SignalMessage::DirectCallOffer {
            handshake: Some(h), ..
        } = &mut msg
        {
            if conn == b_conn {
                let mut init = HandshakeInit::parse(h).unwrap();
                init.ephemeral = x_public([0x42; 32]);
                *h = init.encode().to_vec();
            }
        }
        out.push((conn, msg));
    }));
    a.call(&mut net, "swap1", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(
        a.has(|e| matches!(
            e,
            CallEvent::Failed {
                error: wzp_proto::direct_call::CallError::Handshake(HandshakeError::BadSignature)
            }
        )),
        "{:?}",
        a.events
    );
    assert!(a.answered().is_none() && b.answered().is_none());
    assert!(b.has(|e| matches!(e, CallEvent::HungUp { .. })));
}

fn x_public(secret: [u8; 32]) -> [u8; 32] {
    // Any valid X25519 public key will do: derive one through a handshake.
    let (_, init) = Initiator::start(&identity(200), EphemeralKey::from_bytes(secret), b"x", None);
    init.ephemeral
}

/// Each bad input is refused with a reason and counted, and the hub keeps
/// serving the others (A and B complete a call at the end).
#[test]
fn bad_input_is_refused_counted_and_others_are_served() {
    let mut config = Net::default_config();
    config.max_outbound = 16;
    let mut net = Net::new(config);
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let a_fp = a.identity.fingerprint();
    let b_fp = b.identity.fingerprint();

    // Registration attacks, each on a fresh connection.
    let eve = identity(5);
    let hello_then = |net: &mut Net, msg: SignalMessage| -> ConnId {
        let conn = net.connect(addr(50));
        net.frame(conn, SignalMessage::hello(None));
        net.frame(conn, msg);
        conn
    };
    let nonce_of = |conn: ConnId| {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&conn.0.to_be_bytes());
        nonce[8] = 0x5a;
        nonce
    };
    let next = ConnId(net.next_conn);
    let mut forged = answer_challenge(&eve, &RELAY_TLS, &nonce_of(next), None, None);
    if let SignalMessage::RegisterPresence { signature, .. } = &mut forged {
        signature[5] ^= 0x80;
    }
    // A's registration from its own connection, replayed on another.
    let replayed = answer_challenge(&a.identity, &RELAY_TLS, &nonce_of(a.conn), None, None);
    let next2 = ConnId(next.0 + 1);
    let mut claims_a =
        answer_challenge(&eve, &RELAY_TLS, &nonce_of(ConnId(next2.0 + 1)), None, None);
    if let SignalMessage::RegisterPresence { fingerprint, .. } = &mut claims_a {
        *fingerprint = Some(a_fp);
    }
    // Eve's key with A's fingerprint claimed: a fingerprint is its key's hash,
    // so a second identity cannot hold it.
    let table: Vec<(&str, SignalMessage, Refusal)> = vec![
        (
            "forged signature",
            forged,
            Refusal::RegistrationBadSignature,
        ),
        (
            "replayed registration",
            replayed,
            Refusal::RegistrationReplayed,
        ),
        (
            "another identity claiming A's fingerprint",
            claims_a,
            Refusal::RegistrationFingerprintMismatch,
        ),
    ];
    for (what, msg, refusal) in table {
        let conn = hello_then(&mut net, msg);
        assert_eq!(
            net.close_of(conn),
            Some(CloseCode::BadRegistration),
            "{what}"
        );
        assert_eq!(net.refusals(refusal), 1, "{what}");
        let msgs = net.take(conn);
        assert!(
            msgs.iter().any(|m| matches!(m, SignalMessage::RegisterPresenceAck { success: false, error: Some(e), .. } if !e.is_empty())),
            "{what}: {msgs:?}"
        );
    }
    // A is still A.
    assert_eq!(net.hub.presence().get(&a_fp).unwrap().conn, a.conn);

    // No hello first.
    let conn = net.connect(addr(51));
    net.frame(conn, SignalMessage::Reflect);
    assert_eq!(net.close_of(conn), Some(CloseCode::BadJoin));
    assert_eq!(net.refusals(Refusal::NoHello), 1);

    // Requests from a registered client that are refused with an answer,
    // the session going on.
    let eph = EphemeralKey::from_bytes([9; 32]);
    let mut self_call =
        OutgoingCall::start(&a.identity, eph.clone(), "self1".into(), a_fp, None).unwrap();
    let self_offer = self_call.poll_send().unwrap();
    let with_handshake = |h: Option<Vec<u8>>, id: &str| {
        let mut o = OutgoingCall::start(&a.identity, eph.clone(), id.into(), b_fp, None).unwrap();
        let mut m = o.poll_send().unwrap();
        if let SignalMessage::DirectCallOffer { handshake, .. } = &mut m {
            *handshake = h;
        }
        m
    };
    let mut bad_id_offer = with_handshake(None, "ok-id");
    if let SignalMessage::DirectCallOffer { call_id, .. } = &mut bad_id_offer {
        *call_id = "NOT VALID".into();
    }
    let eve_init = Initiator::start(&eve, eph.clone(), b"x", None)
        .1
        .encode()
        .to_vec();
    let bad_requests: Vec<(&str, SignalMessage, Refusal)> = vec![
        ("offer to oneself", self_offer, Refusal::CallToSelf),
        (
            "malformed handshake half",
            with_handshake(Some(vec![1, 1, 2, 3]), "h1"),
            Refusal::BadHandshake,
        ),
        (
            "no handshake half",
            with_handshake(None, "h2"),
            Refusal::BadHandshake,
        ),
        (
            "someone else's handshake half",
            with_handshake(Some(eve_init), "h3"),
            Refusal::BadHandshake,
        ),
        ("bad call id", bad_id_offer, Refusal::BadCallId),
        (
            "answer for a call one is not part of",
            SignalMessage::DirectCallAnswer {
                call_id: "nobodys".into(),
                accept_mode: AcceptMode::AcceptGeneric,
                handshake: None,
                chosen_codec: None,
                callee_reflexive_addr: None,
                callee_local_addrs: vec![],
                keep_current: false,
            },
            Refusal::NotInCall,
        ),
        (
            "hangup for a call one is not part of",
            SignalMessage::Hangup {
                reason: HangupReason::Normal,
                call_id: Some("nobodys".into()),
                message: None,
            },
            Refusal::NotInCall,
        ),
        (
            "confirm for a call one is not part of",
            SignalMessage::CallConfirm {
                call_id: Some("nobodys".into()),
                handshake: HandshakeFinish { signature: [1; 64] }.encode().to_vec(),
            },
            Refusal::NotInCall,
        ),
        (
            "a relay-only message",
            SignalMessage::CallRinging {
                call_id: "x".into(),
                waiting: true,
            },
            Refusal::UnexpectedMessage,
        ),
        (
            "registering twice on one connection",
            answer_challenge(&a.identity, &RELAY_TLS, &nonce_of(a.conn), None, None),
            Refusal::AlreadyRegistered,
        ),
    ];
    for (what, msg, refusal) in bad_requests {
        let before = net.refusals(refusal);
        net.frame(a.conn, msg);
        assert_eq!(net.refusals(refusal), before + 1, "{what}");
        let answers = net.take(a.conn);
        assert!(
            answers.iter().any(|m| matches!(m,
                SignalMessage::Error { message, .. } | SignalMessage::Hangup { message: Some(message), .. }
                    if !message.is_empty())),
            "{what}: {answers:?}"
        );
        assert!(net.close_of(a.conn).is_none(), "{what} closed A");
    }
    // Unknown type and a malformed frame (e.g. an offer to a malformed
    // fingerprint fails to decode) are answered with typed errors.
    let bad_fp = br#"{"type":"direct_call_offer","call_id":"f1","caller_fingerprint":"0101","target_fingerprint":"zz"}"#;
    let decoded = wzp_proto::signal::decode_message(bad_fp);
    net.input(Input::from_decoder(a.conn, decoded));
    net.input(Input::from_decoder(
        a.conn,
        wzp_proto::signal::decode_message(br#"{"type":"video_offer"}"#),
    ));
    let answers = net.take(a.conn);
    assert!(
        answers.iter().any(|m| matches!(
            m,
            SignalMessage::Error {
                code: ErrorCode::Malformed,
                ..
            }
        )),
        "{answers:?}"
    );
    assert!(answers.iter().any(|m| matches!(m, SignalMessage::Error { code: ErrorCode::UnknownType, in_reply_to: Some(t), .. } if t == "video_offer")), "{answers:?}");
    assert_eq!(net.refusals(Refusal::Malformed), 1);
    assert_eq!(net.refusals(Refusal::UnknownType), 1);

    // Before registering, calls are refused.
    let conn = net.connect(addr(52));
    net.frame(conn, SignalMessage::hello(None));
    net.frame(conn, with_handshake(None, "early"));
    assert_eq!(net.refusals(Refusal::NotRegistered), 1);
    assert!(net.close_of(conn).is_none());

    // A 1 MiB frame: closed Protocol.
    let big = net.connect(addr(53));
    net.frame(big, SignalMessage::hello(None));
    let mut dec = wzp_proto::FrameDecoder::new();
    dec.push(&((1u32 << 20) + 1).to_be_bytes()).unwrap();
    net.input(Input::from_decoder(
        big,
        dec.next_frame().map(|f| f.unwrap()),
    ));
    assert_eq!(net.close_of(big), Some(CloseCode::Protocol));
    assert_eq!(net.refusals(Refusal::FrameTooLarge), 1);

    // A client that never reads: its queue is bounded, overflow closes it.
    let deaf = Client::online(&mut net, 7, AcceptMode::AcceptGeneric);
    for i in 0..40 {
        net.frame(deaf.conn, SignalMessage::Ping { timestamp_ms: i });
    }
    assert_eq!(net.close_of(deaf.conn), Some(CloseCode::Timeout));
    assert!(net.closed[&deaf.conn].1.contains("unread"));
    assert_eq!(net.refusals(Refusal::OutboundOverflow), 1);
    assert!(net
        .hub
        .presence()
        .get(&deaf.identity.fingerprint())
        .is_none());

    // 10 000 offers per second from one connection.
    let flood = Client::online(&mut net, 8, AcceptMode::AcceptGeneric);
    let mut flood_call = OutgoingCall::start(
        &flood.identity,
        eph.clone(),
        "fl".into(),
        identity(100).fingerprint(),
        None,
    )
    .unwrap();
    let flood_offer = flood_call.poll_send().unwrap();
    let start = net.now;
    for i in 0..10_000u32 {
        net.now = start + Duration::from_micros(100 * u64::from(i));
        net.frame(flood.conn, flood_offer.clone());
        net.take(flood.conn);
        if i == 300 {
            // Meanwhile, A calls B and it works.
            a.call(&mut net, "during-flood", b_fp);
            settle(&mut net, &mut [&mut a, &mut b]);
        }
    }
    assert_eq!(net.close_of(flood.conn), Some(CloseCode::RateLimited));
    assert_eq!(net.refusals(Refusal::RateLimitClose), 1);
    assert!(
        net.refusals(Refusal::RateLimited) >= 499,
        "{}",
        net.refusals(Refusal::RateLimited)
    );
    // At most the burst (plus the refill) got through to routing.
    assert!(
        net.refusals(Refusal::NotOnline) <= 110,
        "{}",
        net.refusals(Refusal::NotOnline)
    );
    let (ra, rb) = (
        a.answered().expect("A's call during the flood"),
        b.answered().unwrap(),
    );
    assert_same_call_keys(ra, rb);
    assert!(net.close_of(a.conn).is_none() && net.close_of(b.conn).is_none());
    // Every refusal above was an event with a reason.
    assert!(net
        .events
        .iter()
        .any(|e| matches!(e, Event::Refused { detail, .. } if detail.contains("not online"))));
}

fn peer_paths(c: &Client) -> Vec<PathAddrs> {
    c.events
        .iter()
        .filter_map(|e| match e {
            CallEvent::PeerPath(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

fn raw_path(call_id: &str, len: usize) -> SignalMessage {
    SignalMessage::CallPath {
        call_id: call_id.into(),
        sealed: vec![7; len],
    }
}

/// `call_path` (sealed addresses, for calls across relays) passes between
/// the two parties of a call answered `accept_trusted`, unread; anyone
/// else, a call answered `accept_generic`, an oversize one and one past
/// the per-party limit are refused.
#[test]
fn sealed_addresses_pass_only_between_the_parties_of_a_trusted_call() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptTrusted);
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    a.call(&mut net, "p1", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(a.answered().is_some() && b.answered().is_some());
    let a_addrs = PathAddrs {
        mapping: Default::default(),
        observed: Some(a.remote),
        local: vec![SocketAddr::from(([10, 0, 0, 1], 5000))],
    };
    let b_addrs = PathAddrs {
        mapping: Default::default(),
        observed: Some(b.remote),
        local: Vec::new(),
    };
    assert!(a.outgoing.as_mut().unwrap().share_path(&a_addrs, [1; 12]));
    a.flush(&mut net);
    settle(&mut net, &mut [&mut a, &mut b]);
    assert_eq!(peer_paths(&b), std::slice::from_ref(&a_addrs));
    assert!(b.incoming.as_mut().unwrap().share_path(&b_addrs, [2; 12]));
    b.flush(&mut net);
    settle(&mut net, &mut [&mut a, &mut b]);
    assert_eq!(peer_paths(&a), [b_addrs]);
    assert_eq!(net.refusals(Refusal::BadCallPath), 0);

    // A stranger names the call: not a party.
    let not_in_call = net.refusals(Refusal::NotInCall);
    net.frame(c.conn, raw_path("p1", 40));
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(net.refusals(Refusal::NotInCall), not_in_call + 1);
    // Oversize, then past the limit (A sent one; three more pass).
    net.frame(a.conn, raw_path("p1", MAX_SEALED_PATH + 1));
    for _ in 0..4 {
        net.frame(a.conn, raw_path("p1", MAX_SEALED_PATH));
    }
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(net.refusals(Refusal::BadCallPath), 2);
    let carried = b
        .received
        .iter()
        .filter(|m| matches!(m, SignalMessage::CallPath { .. }))
        .count();
    assert_eq!(carried, 1 + 3);
    // None of those opened: B heard the one genuine path only.
    assert_eq!(peer_paths(&b).len(), 1);
    assert!(c
        .received
        .iter()
        .all(|m| !matches!(m, SignalMessage::CallPath { .. })));
    a.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut b]);

    // Answered accept_generic: the callee shares no address, so none pass.
    let mut d = Client::online(&mut net, 4, AcceptMode::AcceptGeneric);
    a.events.clear();
    a.call(&mut net, "p2", d.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut d]);
    assert!(a.answered().is_some());
    assert!(!a.outgoing.as_mut().unwrap().share_path(&a_addrs, [3; 12]));
    net.frame(a.conn, raw_path("p2", 40));
    settle(&mut net, &mut [&mut a, &mut d]);
    assert_eq!(net.refusals(Refusal::BadCallPath), 3);
    assert!(d
        .received
        .iter()
        .all(|m| !matches!(m, SignalMessage::CallPath { .. })));
}

/// The token a client got for its mapping probe, from its registration.
fn mapping_offer(c: &Client) -> (Option<u16>, Option<[u8; 16]>) {
    c.received
        .iter()
        .find_map(|m| match m {
            SignalMessage::RegisterPresenceAck {
                success: true,
                mapping_port,
                mapping_token,
                ..
            } => Some((*mapping_port, *mapping_token)),
            _ => None,
        })
        .expect("registered")
}

/// The NAT mapping test (`wzp_proto::mapping`): a probe's answer goes only
/// to the connection its token names, at most four times; a guessed or
/// stale token gets nothing; the peer of a call learns the mapping only
/// when the probe came from the address that party shared.
#[test]
fn mapping_probes_are_answered_on_their_own_connection_and_reach_the_peer_as_a_flag() {
    let mut cfg = Net::default_config();
    cfg.mapping_port = Some(4434);
    let mut net = Net::new(cfg);
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptTrusted);
    let (port, token_b) = mapping_offer(&b);
    assert_eq!(port, Some(4434));
    let token_b = token_b.expect("a token with the port");
    let (_, token_a) = mapping_offer(&a);
    assert_ne!(Some(token_b), token_a, "one token per connection");

    let answers = |net: &mut Net, c: &Client| -> Vec<SocketAddr> {
        net.take(c.conn)
            .into_iter()
            .filter_map(|m| match m {
                SignalMessage::MappingObserved { observed_addr } => Some(observed_addr),
                _ => None,
            })
            .collect()
    };
    // The attacker: tokens it guessed, or saw nowhere; nothing is sent.
    for guess in [
        [0u8; 16],
        [0xff; 16],
        wzp_proto::mapping::token_for(&[0; 32]),
    ] {
        net.input(Input::MappingProbe {
            token: guess,
            from: addr(66),
        });
    }
    assert_eq!(answers(&mut net, &a), vec![]);
    assert_eq!(answers(&mut net, &b), vec![]);
    assert_eq!(net.hub.counters().mapping_dropped, 3);
    // B's NAT kept its mapping: the probe comes from where its connection does.
    net.input(Input::MappingProbe {
        token: token_b,
        from: b.remote,
    });
    assert_eq!(answers(&mut net, &b), vec![b.remote]);
    assert_eq!(answers(&mut net, &a), vec![], "only on B's own connection");
    // A copy replayed from elsewhere (the token crossed the network in the
    // clear) is answered to B, but the first answer's mapping stands.
    net.input(Input::MappingProbe {
        token: token_b,
        from: addr(77),
    });
    assert_eq!(answers(&mut net, &b), vec![addr(77)]);
    // At most four answers a connection.
    for _ in 0..6 {
        net.input(Input::MappingProbe {
            token: token_b,
            from: b.remote,
        });
    }
    assert_eq!(answers(&mut net, &b).len(), 2);
    assert_eq!(net.hub.counters().mapping_answered, 4);
    assert_eq!(net.hub.counters().mapping_dropped, 7);

    // A calls B: A learns B's mapping is independent (B shared the address
    // its probe came from); B learns nothing of A's (A never probed).
    call_sharing(&mut net, &mut a, &mut b, "m1", Vec::new());
    let (ra, rb) = (a.answered().unwrap(), b.answered().unwrap());
    assert_eq!(ra.peer_direct_addr, Some(b.remote));
    assert_eq!(ra.peer_mapping, Mapping::Independent);
    assert_eq!(rb.peer_mapping, Mapping::Unknown);

    // A probe from another port than the connection's: a NAT that maps each
    // destination anew; the peer is told so.
    let mut net = Net::new({
        let mut c = Net::default_config();
        c.mapping_port = Some(4434);
        c
    });
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptTrusted);
    let moved = SocketAddr::new(b.remote.ip(), b.remote.port() + 1);
    net.input(Input::MappingProbe {
        token: mapping_offer(&b).1.unwrap(),
        from: moved,
    });
    assert_eq!(answers(&mut net, &b), vec![moved]);
    call_sharing(&mut net, &mut a, &mut b, "m2", Vec::new());
    assert_eq!(a.answered().unwrap().peer_mapping, Mapping::Dependent);

    // A closed connection's token is forgotten.
    let token = mapping_offer(&a).1.unwrap();
    net.input(Input::Disconnected { conn: a.conn });
    let dropped = net.hub.counters().mapping_dropped;
    net.input(Input::MappingProbe {
        token,
        from: a.remote,
    });
    assert_eq!(net.hub.counters().mapping_dropped, dropped + 1);

    // A relay with no mapping port offers none.
    let mut net = Net::new(Net::default_config());
    let c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    assert_eq!(mapping_offer(&c), (None, None));
}

fn hangups(c: &Client) -> Vec<(HangupReason, Option<String>)> {
    c.received
        .iter()
        .filter_map(|m| match m {
            SignalMessage::Hangup {
                reason, message, ..
            } => Some((*reason, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_call_rings_each_of_the_persons_devices_and_the_first_to_answer_takes_it() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut phone = Client::device(&mut net, 2, 1);
    let mut laptop = Client::device(&mut net, 2, 2);
    let mut eve = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    let bob = phone.identity.fingerprint();
    // Two devices, one person: nobody replaced, each told how many.
    assert_eq!(net.close_of(phone.conn), None);
    assert!(matches!(
        laptop.registered,
        Some(PresenceEvent::Registered {
            devices: Some(2),
            ..
        })
    ));
    assert_eq!(net.hub.presence().devices_of(&bob).len(), 2);
    assert_eq!(net.hub.presence().len(), 3);
    assert_eq!(net.hub.counters().devices_added, 1);
    assert_eq!(net.hub.counters().replaced, 0);
    // The relay says so in its hello.
    assert!(laptop.received.iter().any(|m| matches!(m,
        SignalMessage::Hello { features, .. } if features.iter().any(|f| f == "devices"))));

    a.call(&mut net, "fork1", bob);
    settle(&mut net, &mut [&mut a, &mut phone, &mut laptop]);
    assert_eq!(
        phone.offers_seen,
        [("fork1".to_string(), a.identity.fingerprint())]
    );
    assert_eq!(laptop.offers_seen, phone.offers_seen);
    let ringing = |c: &Client| {
        c.received
            .iter()
            .filter(|m| matches!(m, SignalMessage::CallRinging { .. }))
            .count()
    };
    assert_eq!(ringing(&a), 1, "the caller hears one ringing");
    assert_eq!(
        net.hub.calls().get("fork1").unwrap().state,
        CallState::Ringing
    );

    // Someone else cannot take the call for bob.
    let offer = phone
        .received
        .iter()
        .find(|m| matches!(m, SignalMessage::DirectCallOffer { .. }))
        .unwrap()
        .clone();
    eve.incoming = IncomingCall::from_offer(&offer).ok();
    eve.rings = true;
    eve.pick_up(&mut net, AcceptMode::AcceptGeneric);
    settle(&mut net, &mut [&mut eve]);
    assert!(
        eve.errors.iter().any(|(c, _)| *c == ErrorCode::NotInCall),
        "{:?}",
        eve.errors
    );
    assert_eq!(
        net.hub.calls().get("fork1").unwrap().state,
        CallState::Ringing
    );

    // The laptop answers: the call is the laptop's, the phone stops ringing.
    // The phone answers too, before the news reaches it: its answer
    // changes nothing and is no error (the person answered twice).
    let refused_before = net.refusals(Refusal::NotInCall);
    laptop.pick_up(&mut net, AcceptMode::AcceptGeneric);
    phone.pick_up(&mut net, AcceptMode::AcceptGeneric);
    settle(&mut net, &mut [&mut a, &mut phone, &mut laptop]);
    let (ra, rb) = (a.answered().unwrap(), laptop.answered().unwrap());
    assert_same_call_keys(ra, rb);
    assert_eq!(
        hangups(&phone),
        [(
            HangupReason::AnsweredElsewhere,
            Some("answered on another device".to_string())
        )]
    );
    assert!(phone.has(|e| matches!(
        e,
        CallEvent::HungUp {
            reason: HangupReason::AnsweredElsewhere,
            ..
        }
    )));
    assert!(hangups(&laptop).is_empty() && hangups(&a).is_empty());
    let call = net.hub.calls().get("fork1").unwrap();
    assert_eq!(
        (call.state, call.callee_conn),
        (CallState::Active, laptop.conn)
    );
    assert_eq!(net.hub.counters().answered_elsewhere, 1);

    assert!(phone.errors.is_empty(), "{:?}", phone.errors);
    assert_eq!(net.refusals(Refusal::NotInCall), refused_before);
    assert_eq!(
        net.hub.calls().get("fork1").unwrap().callee_conn,
        laptop.conn
    );
    // The phone going changes nothing either; the laptop hangs up.
    net.input(Input::Disconnected { conn: phone.conn });
    assert_eq!(
        net.hub.calls().get("fork1").unwrap().state,
        CallState::Active
    );
    laptop.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut laptop]);
    assert!(net.hub.calls().is_empty());
    assert_eq!(net.rooms_closed, ["call-fork1".to_string()]);
}

#[test]
fn a_decline_on_one_device_declines_the_call_on_every_device() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut phone = Client::device(&mut net, 2, 1);
    let mut laptop = Client::device(&mut net, 2, 2);
    a.call(&mut net, "fork2", phone.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut phone, &mut laptop]);
    phone.pick_up(&mut net, AcceptMode::Reject);
    settle(&mut net, &mut [&mut a, &mut phone, &mut laptop]);
    assert!(a.has(|e| matches!(e, CallEvent::Rejected)));
    assert_eq!(
        hangups(&laptop),
        [(
            HangupReason::DeclinedElsewhere,
            Some("declined on another device".to_string())
        )]
    );
    assert!(hangups(&phone).is_empty(), "the decliner is not told");
    assert!(net.hub.calls().is_empty());
    assert_eq!(net.hub.calls().ended("rejected"), 1);
}

#[test]
fn a_device_that_goes_while_ringing_leaves_the_call_ringing_on_the_others() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut phone = Client::device(&mut net, 2, 1);
    let mut laptop = Client::device(&mut net, 2, 2);
    let mut tablet = Client::device(&mut net, 2, 3);
    let bob = phone.identity.fingerprint();
    a.call(&mut net, "fork3", bob);
    settle(
        &mut net,
        &mut [&mut a, &mut phone, &mut laptop, &mut tablet],
    );
    // The first device rung goes: the others ring on.
    net.input(Input::Disconnected { conn: phone.conn });
    settle(&mut net, &mut [&mut a, &mut laptop, &mut tablet]);
    assert_eq!(
        net.hub.calls().get("fork3").unwrap().state,
        CallState::Ringing
    );
    assert!(hangups(&a).is_empty());
    // The person is still online; the phone's going is a device's.
    assert_eq!(net.hub.presence().devices_of(&bob).len(), 2);
    assert!(net.events.iter().any(|e| matches!(e,
        Event::Unregistered { conn, offline: false, .. } if *conn == phone.conn)));
    // Nobody answers: every device left is told the ringing timed out.
    let ringing = net.hub.config().ringing_timeout;
    net.advance(ringing + Duration::from_secs(1));
    settle(&mut net, &mut [&mut a, &mut laptop, &mut tablet]);
    assert!(a.has(|e| matches!(e, CallEvent::NoAnswer)));
    for c in [&laptop, &tablet] {
        assert_eq!(hangups(c).len(), 1);
        assert_eq!(hangups(c)[0].0, HangupReason::Timeout);
    }
    assert!(net.hub.calls().is_empty());

    // Caller hangs up while two ring: both told; and the last device going
    // takes the person offline.
    a.events.clear();
    a.call(&mut net, "fork4", bob);
    settle(&mut net, &mut [&mut a, &mut laptop, &mut tablet]);
    a.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut laptop, &mut tablet]);
    for c in [&laptop, &tablet] {
        assert_eq!(hangups(c).len(), 2, "{:?}", hangups(c));
        assert_eq!(hangups(c)[1].0, HangupReason::Normal);
    }
    net.input(Input::Disconnected { conn: laptop.conn });
    net.input(Input::Disconnected { conn: tablet.conn });
    assert!(net.events.iter().any(|e| matches!(e,
        Event::Unregistered { conn, offline: true, .. } if *conn == tablet.conn)));
    assert!(net.hub.presence().get(&bob).is_none());
}

#[test]
fn the_same_device_registering_again_replaces_itself_and_no_other() {
    let mut net = Net::new(Net::default_config());
    let phone = Client::device(&mut net, 2, 1);
    let laptop = Client::device(&mut net, 2, 2);
    let phone_again = Client::device(&mut net, 2, 1);
    assert_eq!(net.close_of(phone.conn), Some(CloseCode::Replaced));
    assert!(
        net.closed[&phone.conn]
            .1
            .contains("as this device (0101010101010101)"),
        "{}",
        net.closed[&phone.conn].1
    );
    assert_eq!(net.close_of(laptop.conn), None);
    let conns: Vec<ConnId> = net
        .hub
        .presence()
        .devices_of(&phone.identity.fingerprint())
        .iter()
        .map(|p| p.conn)
        .collect();
    assert_eq!(conns, [laptop.conn, phone_again.conn]);
    assert_eq!(net.hub.counters().replaced, 1);
    // Past the device limit, the device silent longest goes.
    let max = wzp_relay::presence::MAX_DEVICES as u8;
    let mut more = Vec::new();
    for d in 3..=max {
        net.advance(Duration::from_millis(10));
        more.push(Client::device(&mut net, 2, d));
    }
    assert_eq!(net.close_of(laptop.conn), None);
    net.advance(Duration::from_millis(10));
    let _extra = Client::device(&mut net, 2, max + 1);
    assert_eq!(net.close_of(laptop.conn), Some(CloseCode::Replaced));
    assert!(net.closed[&laptop.conn].1.contains("beyond the 8"));
    assert_eq!(
        net.hub
            .presence()
            .devices_of(&phone.identity.fingerprint())
            .len(),
        usize::from(max)
    );
}

fn missed_calls(c: &Client) -> Vec<(Fingerprint, Option<String>)> {
    c.received
        .iter()
        .filter_map(|m| match m {
            SignalMessage::MissedCall {
                caller_fingerprint,
                caller_alias,
                ..
            } => Some((*caller_fingerprint, caller_alias.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_callee_in_a_call_is_told_who_called_and_heard_busy_once_a_while() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let mut b_laptop = Client::device(&mut net, 2, 9);
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    let bob = b.identity.fingerprint();
    a.call(&mut net, "busy1", bob);
    settle(&mut net, &mut [&mut a, &mut b, &mut b_laptop]);
    // The phone (auto-accepting, id-less) takes it before the laptop can.
    assert!(a.answered().is_some());
    // Carol calls bob: she hears busy, and each of bob's devices is told
    // who called.
    c.call(&mut net, "busy2", bob);
    settle(&mut net, &mut [&mut a, &mut b, &mut b_laptop, &mut c]);
    assert!(c.has(|e| matches!(e, CallEvent::Busy)));
    let carol = (c.identity.fingerprint(), Some("caller".to_string()));
    assert_eq!(missed_calls(&b), std::slice::from_ref(&carol));
    assert_eq!(missed_calls(&b_laptop), std::slice::from_ref(&carol));
    assert!(missed_calls(&a).is_empty() && missed_calls(&c).is_empty());
    assert_eq!(net.hub.counters().missed_calls, 1);
    // Calling again at once is busy again, and not told twice.
    c.events.clear();
    c.call(&mut net, "busy3", bob);
    settle(&mut net, &mut [&mut b, &mut b_laptop, &mut c]);
    assert!(c.has(|e| matches!(e, CallEvent::Busy)));
    assert_eq!(missed_calls(&b).len(), 1);
    // A while later it is told again; a call to someone not in a call
    // tells nobody.
    net.advance(wzp_proto::signal::MISSED_CALL_QUIET);
    c.events.clear();
    c.call(&mut net, "busy4", bob);
    settle(&mut net, &mut [&mut b, &mut b_laptop, &mut c]);
    assert_eq!(missed_calls(&b).len(), 2);
    assert_eq!(net.hub.counters().missed_calls, 2);
    // The call in progress was not touched.
    assert_eq!(
        net.hub.calls().get("busy1").unwrap().state,
        CallState::Active
    );
}

/// a calls bob (who takes waiting calls, and answers his first call at
/// once); then c calls bob while that call is Active.
fn bob_in_a_call_and_c_waiting(net: &mut Net) -> (Client, Client, Client) {
    let mut a = Client::online(net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::takes_waiting(net, 2, AcceptMode::AcceptGeneric);
    let mut c = Client::online(net, 3, AcceptMode::AcceptGeneric);
    let bob = b.identity.fingerprint();
    a.call(net, "first", bob);
    settle(net, &mut [&mut a, &mut b, &mut c]);
    assert!(a.answered().is_some());
    c.call(net, "waits", bob);
    settle(net, &mut [&mut a, &mut b, &mut c]);
    (a, b, c)
}

#[test]
fn a_person_in_a_call_is_rung_with_a_second_as_waiting_and_answering_it_ends_the_first() {
    let mut net = Net::new(Net::default_config());
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    // c hears ringing, told it waits; bob's device in the call is offered it.
    assert!(c.has(|e| matches!(e, CallEvent::Ringing)), "{:?}", c.events);
    assert!(c.outgoing.as_ref().unwrap().rings_waiting());
    assert!(!c.has(|e| matches!(e, CallEvent::Busy)));
    assert_eq!(
        b.second.as_ref().map(|w| w.caller()),
        Some(c.identity.fingerprint())
    );
    assert!(
        missed_calls(&b).is_empty(),
        "a waiting call is not a missed one"
    );
    let w = net.hub.calls().get("waits").unwrap();
    assert!(w.waiting);
    assert_eq!(w.state, CallState::Ringing);
    assert_eq!(net.hub.counters().calls_waiting, 1);
    assert_eq!(net.refusals(Refusal::CalleeBusy), 0);
    // The call in progress is untouched.
    assert_eq!(
        net.hub.calls().get("first").unwrap().state,
        CallState::Active
    );
    assert!(hangups(&a).is_empty());
    // Bob answers it without hanging up first (a client that skips that):
    // the relay ends the first call for him; a hears that bob hung up.
    b.pick_up_second(&mut net, AcceptMode::AcceptGeneric, false);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(
        a.has(|e| matches!(e, CallEvent::HungUp { .. })),
        "{:?}",
        a.events
    );
    assert_eq!(
        hangups(&a),
        [(HangupReason::Normal, Some("the callee hung up".into()))]
    );
    assert!(net.rooms_closed.contains(&"call-first".to_string()));
    assert!(net.hub.calls().get("first").is_none());
    let got = c.answered().expect("c's waiting call is answered");
    assert_same_call_keys(got, &second_answered(&b));
    let w = net.hub.calls().get("waits").unwrap();
    assert_eq!(w.state, CallState::Active);
    assert!(!w.waiting);
    assert!(net.hub.may_join("call-waits", &b.identity.fingerprint()));
    assert!(!net.hub.may_join("call-first", &a.identity.fingerprint()));
}

/// The keys `c`'s second (waiting) call was answered with.
fn second_answered(c: &Client) -> CallReady {
    c.second_events
        .iter()
        .find_map(|e| match e {
            CallEvent::Answered(r) => Some((**r).clone()),
            _ => None,
        })
        .expect("the second call is answered")
}

/// The holds `c` was told, in order.
fn holds_told(events: &[CallEvent]) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Hold(h) => Some(*h),
            _ => None,
        })
        .collect()
}

#[test]
fn a_waiting_call_answered_keeping_the_first_leaves_both_up_until_one_ends() {
    for ends in ["first", "waits"] {
        let mut net = Net::new(Net::default_config());
        let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
        assert!(b.received.iter().any(|m| matches!(m,
            SignalMessage::Hello { features, .. }
                if features.iter().any(|f| f == wzp_proto::signal::FEATURE_KEEP_CALL))));
        b.hold_and_pick_up_second(&mut net);
        settle(&mut net, &mut [&mut a, &mut b, &mut c]);
        // a is held, not hung up; c's call is answered with the same keys.
        assert!(hangups(&a).is_empty(), "{:?}", hangups(&a));
        assert_eq!(holds_told(&a.events), [true]);
        let got = c.answered().expect("c's waiting call is answered");
        assert_same_call_keys(got, &second_answered(&b));
        let bob = b.identity.fingerprint();
        for (id, kept) in [("first", true), ("waits", false)] {
            let call = net.hub.calls().get(id).unwrap();
            assert_eq!((call.state, call.kept), (CallState::Active, kept), "{id}");
            assert!(net.hub.may_join(&format!("call-{id}"), &bob), "{id}");
        }
        assert_eq!(net.hub.counters().calls_kept, 1);
        assert!(!net.rooms_closed.contains(&"call-first".to_string()));
        // Bob swaps: holds c, takes a back. Each is told by the relay.
        assert!(b.second.as_mut().unwrap().hold(true, [8; 12]));
        b.flush_second(&mut net);
        assert!(b.incoming.as_mut().unwrap().hold(false, [9; 12]));
        b.flush(&mut net);
        settle(&mut net, &mut [&mut a, &mut b, &mut c]);
        assert_eq!(holds_told(&a.events), [true, false]);
        assert_eq!(holds_told(&c.events), [true]);
        // A third caller: bob is in two calls, so busy.
        let mut d = Client::online(&mut net, 4, AcceptMode::AcceptGeneric);
        d.call(&mut net, "third", bob);
        settle(&mut net, &mut [&mut a, &mut b, &mut c, &mut d]);
        assert!(d.has(|e| matches!(e, CallEvent::Busy)), "{:?}", d.events);
        // One ends (its other party hangs up): the other is bob's call,
        // no longer kept, and a new caller waits again.
        if ends == "first" {
            a.hangup(&mut net);
        } else {
            c.hangup(&mut net);
        }
        settle(&mut net, &mut [&mut a, &mut b, &mut c, &mut d]);
        let left = if ends == "first" { "waits" } else { "first" };
        assert!(net.hub.calls().get(ends).is_none());
        let call = net.hub.calls().get(left).unwrap();
        assert_eq!((call.state, call.kept), (CallState::Active, false));
        let other = if ends == "first" { &c } else { &a };
        assert!(hangups(other).is_empty(), "{ends}: {:?}", hangups(other));
        let mut e = Client::online(&mut net, 5, AcceptMode::AcceptGeneric);
        e.call(&mut net, "fourth", bob);
        settle(&mut net, &mut [&mut a, &mut b, &mut c, &mut e]);
        assert!(e.outgoing.as_ref().unwrap().rings_waiting(), "{ends}");
    }
}

#[test]
fn answering_a_waiting_call_after_hanging_up_the_first_is_the_same_call() {
    let mut net = Net::new(Net::default_config());
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    b.pick_up_second(&mut net, AcceptMode::AcceptGeneric, true);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(hangups(&a).len(), 1, "a is told once: {:?}", hangups(&a));
    assert!(c.answered().is_some());
    assert_eq!(
        net.hub.calls().get("waits").unwrap().state,
        CallState::Active
    );
    assert_eq!(net.hub.calls().len(), 1);
}

#[test]
fn a_declined_timed_out_or_abandoned_waiting_call_leaves_the_call_in_progress() {
    // Declined: c hears declined.
    let mut net = Net::new(Net::default_config());
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    b.pick_up_second(&mut net, AcceptMode::Reject, true);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(
        c.has(|e| matches!(e, CallEvent::Rejected)),
        "{:?}",
        c.events
    );
    assert_eq!(
        net.hub.calls().get("first").unwrap().state,
        CallState::Active
    );
    assert!(hangups(&a).is_empty());
    // c gave up: bob's waiting call ends, the first goes on.
    let mut net = Net::new(Net::default_config());
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    c.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(b
        .second_events
        .iter()
        .any(|e| matches!(e, CallEvent::HungUp { .. })));
    assert_eq!(
        net.hub.calls().get("first").unwrap().state,
        CallState::Active
    );
    assert!(hangups(&a).is_empty());
    // Nobody answers within the ringing time.
    let mut config = Net::default_config();
    config.ringing_timeout = Duration::from_secs(20);
    let mut net = Net::new(config);
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    for _ in 0..5 {
        net.advance(Duration::from_secs(5));
        for x in [&a, &b, &c] {
            net.frame(x.conn, SignalMessage::Ping { timestamp_ms: 1 });
        }
    }
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(
        c.has(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        c.events
    );
    assert!(b
        .second_events
        .iter()
        .any(|e| matches!(e, CallEvent::NoAnswer)));
    assert_eq!(
        net.hub.calls().get("first").unwrap().state,
        CallState::Active
    );
    assert!(hangups(&a).is_empty());
}

#[test]
fn when_the_call_in_progress_ends_the_waiting_call_rings_on_and_can_be_answered() {
    let mut net = Net::new(Net::default_config());
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    a.hangup(&mut net);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(b.has(|e| matches!(e, CallEvent::HungUp { .. })));
    let w = net.hub.calls().get("waits").unwrap();
    assert_eq!(w.state, CallState::Ringing);
    assert!(!w.waiting);
    assert!(!c.has(|e| matches!(e, CallEvent::HungUp { .. } | CallEvent::Busy)));
    b.pick_up_second(&mut net, AcceptMode::AcceptGeneric, false);
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(c.answered().is_some());
    assert_eq!(net.hub.calls().len(), 1);
}

#[test]
fn only_a_device_that_takes_waiting_calls_is_rung_and_a_third_caller_hears_busy() {
    let mut net = Net::new(Net::default_config());
    let (mut a, mut b, mut c) = bob_in_a_call_and_c_waiting(&mut net);
    let bob = b.identity.fingerprint();
    // A third caller while c waits: busy, and bob is told who called.
    let mut d = Client::online(&mut net, 4, AcceptMode::AcceptGeneric);
    d.call(&mut net, "third", bob);
    settle(&mut net, &mut [&mut a, &mut b, &mut c, &mut d]);
    assert!(d.has(|e| matches!(e, CallEvent::Busy)), "{:?}", d.events);
    assert_eq!(missed_calls(&b).len(), 1);
    assert_eq!(b.offers_seen.len(), 2, "the third call did not ring bob");
    // Someone whose device in the call did not ask for waiting calls (an
    // older client, a service): busy, as before.
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    a.call(&mut net, "first", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    c.call(&mut net, "waits", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(c.has(|e| matches!(e, CallEvent::Busy)));
    assert!(b.second.is_none());
    assert_eq!(net.hub.counters().calls_waiting, 0);
    // A call still ringing is not a call to wait behind: busy.
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::takes_waiting(&mut net, 2, AcceptMode::AcceptGeneric);
    b.rings = true;
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    a.call(&mut net, "first", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    c.call(&mut net, "waits", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert!(c.has(|e| matches!(e, CallEvent::Busy)));
}

#[test]
fn the_relay_lists_call_waiting_in_its_hello() {
    let mut net = Net::new(Net::default_config());
    let c = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    assert!(c.received.iter().any(|m| matches!(m,
        SignalMessage::Hello { features, .. }
            if features.iter().any(|f| f == wzp_proto::signal::FEATURE_CALL_WAITING))));
}

/// The voice-message replies `c` received, in order.
fn voice(c: &Client) -> Vec<SignalMessage> {
    c.received
        .iter()
        .filter(|m| {
            matches!(
                m,
                SignalMessage::MessageKey { .. }
                    | SignalMessage::VoiceMessage { .. }
                    | SignalMessage::VoiceMessageStored { .. }
                    | SignalMessage::VoiceMessages { .. }
            )
        })
        .cloned()
        .collect()
}

/// `c` leaves `sealed` for `to` as message `id`, in its parts.
fn leave_message(net: &mut Net, c: &Client, id: &str, to: Fingerprint, sealed: &[u8]) {
    for m in common::voice_message_parts(id, to, sealed) {
        net.frame(c.conn, m);
    }
}

#[test]
fn a_voice_message_left_for_someone_away_reaches_them_sealed_and_is_deleted_by_them() {
    use wzp_proto::voice_message::{open, seal};
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let bob = b.identity.fingerprint();
    let bob_identity = b.identity.clone();
    // The relay lists voice messages; bob's key stays once he is gone.
    assert!(a.received.iter().any(|m| matches!(m,
        SignalMessage::Hello { features, .. }
            if features.iter().any(|f| f == wzp_proto::signal::FEATURE_VOICE_MESSAGES))));
    net.input(Input::Disconnected { conn: b.conn });
    // Alice asks for bob's key; it is his, signed.
    net.frame(a.conn, SignalMessage::MessageKeyQuery { fingerprint: bob });
    a.step(&mut net);
    let key = match voice(&a).as_slice() {
        [SignalMessage::MessageKey {
            fingerprint,
            key: Some(key),
        }] if *fingerprint == bob => **key,
        other => panic!("{other:?}"),
    };
    assert_eq!(key.verify(), Ok(bob));
    // Someone never registered here has none.
    net.frame(
        a.conn,
        SignalMessage::MessageKeyQuery {
            fingerprint: identity(9).fingerprint(),
        },
    );
    a.step(&mut net);
    assert!(matches!(
        voice(&a).last(),
        Some(SignalMessage::MessageKey { key: None, .. })
    ));
    // Alice leaves 60 s of frames (three parts).
    let frames: Vec<Vec<u8>> = (0..3000).map(|i| vec![(i % 200) as u8; 20]).collect();
    let sealed = seal(&a.identity, &key, 5, &frames, [3; 32]).unwrap();
    assert_eq!(wzp_proto::voice_message::parts(&sealed).count(), 3);
    leave_message(&mut net, &a, "m1", bob, &sealed);
    a.step(&mut net);
    assert!(
        matches!(voice(&a).last(), Some(SignalMessage::VoiceMessageStored { id }) if id == "m1")
    );
    assert_eq!(net.hub.mail().len(), 1);
    assert_eq!(net.hub.mail().counters().stored, 1);
    // Bob comes back: told one waits; he fetches it, whole, from alice.
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    assert!(matches!(
        voice(&b).as_slice(),
        [SignalMessage::VoiceMessages { count: 1 }]
    ));
    net.advance(Duration::from_secs(2));
    net.frame(b.conn, SignalMessage::FetchVoiceMessages);
    // A second before the first is read is refused (the relay holds one
    // copy per connection at most).
    net.frame(b.conn, SignalMessage::FetchVoiceMessages);
    b.step(&mut net);
    assert!(
        b.errors.iter().any(|(_, e)| e.contains("still being sent")),
        "{:?}",
        b.errors
    );
    let mut got = Vec::new();
    let mut from = None;
    for m in voice(&b) {
        if let SignalMessage::VoiceMessage {
            id,
            from: f,
            age_ms,
            data,
            ..
        } = m
        {
            assert_eq!(id, "m1");
            assert_eq!(age_ms, Some(2_000));
            from = f;
            got.extend(data);
        }
    }
    assert_eq!(from, Some(a.identity.fingerprint()));
    assert_eq!(got, sealed);
    let opened = open(&bob_identity, &got).unwrap();
    assert_eq!(
        (opened.sender, opened.frames),
        (a.identity.fingerprint(), frames)
    );
    assert!(matches!(
        voice(&b).last(),
        Some(SignalMessage::VoiceMessages { count: 1 })
    ));
    // Deleted by bob, not by alice.
    net.frame(
        a.conn,
        SignalMessage::DeleteVoiceMessage {
            id: "m1".into(),
            from: None,
        },
    );
    assert_eq!(net.hub.mail().len(), 1);
    net.frame(
        b.conn,
        SignalMessage::DeleteVoiceMessage {
            id: "m1".into(),
            from: None,
        },
    );
    b.step(&mut net);
    assert!(matches!(
        voice(&b).last(),
        Some(SignalMessage::VoiceMessages { count: 0 })
    ));
    assert!(net.hub.mail().is_empty());
    // While bob is online a new message is said at once.
    leave_message(&mut net, &a, "m2", bob, &sealed);
    b.step(&mut net);
    assert!(matches!(
        voice(&b).last(),
        Some(SignalMessage::VoiceMessages { count: 1 })
    ));
}

#[test]
fn voice_messages_are_refused_without_a_registration_a_key_or_in_order_and_a_foreign_key_is_not_kept(
) {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let bob = b.identity.fingerprint();
    let part = |id: &str, to: Option<Fingerprint>, p: u32, n: u32| SignalMessage::VoiceMessage {
        id: id.into(),
        to,
        from: None,
        age_ms: None,
        part: p,
        parts: n,
        data: vec![1; 10],
    };
    // Not registered: refused.
    let stranger = net.connect(addr(40));
    net.frame(stranger, SignalMessage::hello(None));
    net.frame(stranger, part("m", Some(bob), 0, 1));
    net.frame(stranger, SignalMessage::FetchVoiceMessages);
    assert_eq!(net.refusals(Refusal::NotRegistered), 2);
    // No recipient, no key here, out of order, a bad id.
    for m in [
        part("m", None, 0, 1),
        part("m", Some(identity(9).fingerprint()), 0, 1),
        part("m", Some(bob), 1, 2),
        part("NO", Some(bob), 0, 1),
    ] {
        net.frame(a.conn, m);
    }
    a.step(&mut net);
    assert_eq!(net.refusals(Refusal::BadVoiceMessage), 4);
    assert_eq!(a.errors.len(), 4, "{:?}", a.errors);
    assert!(a
        .errors
        .iter()
        .any(|(_, e)| e.contains("no message key at this relay")));
    assert!(net.hub.mail().is_empty());
    // Eve registers with bob's message key as hers: it is not kept for
    // her, and bob's stays his.
    let eve = identity(3);
    let conn = net.connect(addr(3));
    net.frame(conn, SignalMessage::hello(None));
    let nonce = net
        .take(conn)
        .into_iter()
        .find_map(|m| match m {
            SignalMessage::PresenceChallenge { nonce } => Some(nonce),
            _ => None,
        })
        .unwrap();
    let mut reg = answer_challenge(&eve, &RELAY_TLS, &nonce, None, None);
    if let SignalMessage::RegisterPresence { message_key, .. } = &mut reg {
        *message_key = Some(Box::new(wzp_proto::voice_message::MessageKey::of(
            &b.identity,
        )));
    }
    net.frame(conn, reg);
    assert!(net
        .take(conn)
        .iter()
        .any(|m| matches!(m, SignalMessage::RegisterPresenceAck { success: true, .. })));
    assert!(net.hub.mail().key(&eve.fingerprint()).is_none());
    assert_eq!(net.hub.mail().key(&bob).map(|k| k.verify()), Some(Ok(bob)));
    // A relay with voice messages off lists no feature and keeps no key.
    let mut config = Net::default_config();
    config.mail.total_bytes = 0;
    let mut net = Net::new(config);
    let c = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    assert!(!c.received.iter().any(|m| matches!(m,
        SignalMessage::Hello { features, .. }
            if features.iter().any(|f| f == wzp_proto::signal::FEATURE_VOICE_MESSAGES))));
    assert!(net.hub.mail().key(&c.identity.fingerprint()).is_none());
}

#[test]
fn a_hold_reaches_the_other_party_of_an_active_call_only() {
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let mut c = Client::online(&mut net, 3, AcceptMode::AcceptGeneric);
    assert!(a.received.iter().any(|m| matches!(m,
        SignalMessage::Hello { features, .. }
            if features.iter().any(|f| f == wzp_proto::signal::FEATURE_HOLD))));
    // Before an answer there is nothing to hold.
    b.rings = true;
    a.call(&mut net, "h1", b.identity.fingerprint());
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(
        !a.outgoing.as_mut().unwrap().hold(true, [1; 12]),
        "not answered yet"
    );
    net.frame(
        a.conn,
        SignalMessage::CallHold {
            call_id: "h1".into(),
            sealed: vec![0; wzp_proto::hold::SEALED_HOLD_LEN],
        },
    );
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(
        a.errors.iter().any(|(_, e)| e.contains("not active")),
        "{:?}",
        a.errors
    );
    b.pick_up(&mut net, AcceptMode::AcceptGeneric);
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(b.answered().is_some());
    // B holds, then takes it back: A is told both, in order.
    assert!(b.incoming.as_mut().unwrap().hold(true, [2; 12]));
    b.flush(&mut net);
    assert!(b.incoming.as_mut().unwrap().hold(false, [3; 12]));
    b.flush(&mut net);
    settle(&mut net, &mut [&mut a, &mut b]);
    let holds: Vec<bool> = a
        .events
        .iter()
        .filter_map(|e| match e {
            CallEvent::Hold(h) => Some(*h),
            _ => None,
        })
        .collect();
    assert_eq!(holds, vec![true, false]);
    assert_eq!(net.hub.counters().holds, 2);
    // The relay cannot forge a notice, nor play b's first one again to
    // make a believe the call is held: neither opens as new.
    let first = a
        .received
        .iter()
        .find_map(|m| match m {
            SignalMessage::CallHold { sealed, .. } => Some(sealed.clone()),
            _ => None,
        })
        .expect("a got b's notices");
    let out = a.outgoing.as_mut().unwrap();
    for sealed in [first, vec![9; wzp_proto::hold::SEALED_HOLD_LEN]] {
        let m = SignalMessage::CallHold {
            call_id: "h1".into(),
            sealed,
        };
        assert!(out.handle(&m).is_none());
    }
    // A notice of the wrong length does not pass the relay.
    net.frame(
        b.conn,
        SignalMessage::CallHold {
            call_id: "h1".into(),
            sealed: vec![0; 5],
        },
    );
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(
        b.errors.iter().any(|(_, e)| e.contains("sealed bytes")),
        "{:?}",
        b.errors
    );
    assert_eq!(net.hub.counters().holds, 2);
    // Someone not in the call cannot put it on hold for them.
    net.frame(
        c.conn,
        SignalMessage::CallHold {
            call_id: "h1".into(),
            sealed: vec![0; wzp_proto::hold::SEALED_HOLD_LEN],
        },
    );
    settle(&mut net, &mut [&mut a, &mut b, &mut c]);
    assert_eq!(
        a.events
            .iter()
            .filter(|e| matches!(e, CallEvent::Hold(_)))
            .count(),
        2
    );
    assert!(!c.errors.is_empty());
}

/// A fork of a call from another relay finds bob in a call here: it is
/// answered `busy` and kept open, and bob's devices are told of the missed
/// call when the caller's relay ends it with no other device having taken
/// it; when nothing ever comes, after the ringing time and its grace.
#[test]
fn a_busy_fork_whose_outcome_never_comes_is_told_as_missed_after_the_ringing_time() {
    use wzp_proto::federation::{CallEvent as Step, CallSignal, RelayId};
    let mut net = Net::new(Net::default_config());
    let mut a = Client::online(&mut net, 1, AcceptMode::AcceptGeneric);
    let mut b = Client::online(&mut net, 2, AcceptMode::AcceptGeneric);
    let bob = b.identity.fingerprint();
    a.call(&mut net, "first", bob);
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(a.answered().is_some());
    let carol = identity(3);
    let offer = |call_id: &str| {
        let eph = EphemeralKey::from_bytes([9; 32]);
        let mut out = OutgoingCall::start(&carol, eph, call_id.into(), bob, None).unwrap();
        let Some(SignalMessage::DirectCallOffer {
            handshake: Some(h), ..
        }) = out.poll_send()
        else {
            panic!("an offer");
        };
        CallSignal {
            call_id: call_id.into(),
            caller: carol.fingerprint(),
            callee: bob,
            fork: Some(RelayId([5; 8])),
            event: Step::Offer {
                caller_alias: Some("carol".into()),
                handshake: h,
                supported_codecs: Vec::new(),
            },
        }
    };
    net.input(Input::Federated(offer("far1")));
    settle(&mut net, &mut [&mut a, &mut b]);
    assert_eq!(net.refusals(Refusal::CalleeBusy), 1);
    assert!(
        missed_calls(&b).is_empty(),
        "not while its outcome may come"
    );
    net.advance(Duration::from_secs(39));
    settle(&mut net, &mut [&mut a, &mut b]);
    assert!(missed_calls(&b).is_empty());
    net.advance(Duration::from_secs(2));
    settle(&mut net, &mut [&mut a, &mut b]);
    let told = (carol.fingerprint(), Some("carol".to_string()));
    assert_eq!(missed_calls(&b), std::slice::from_ref(&told));
    // Its end coming after that tells nothing more.
    net.input(Input::Federated(CallSignal {
        event: Step::Hangup {
            reason: HangupReason::Busy,
            message: None,
        },
        ..offer("far1")
    }));
    settle(&mut net, &mut [&mut a, &mut b]);
    assert_eq!(missed_calls(&b).len(), 1);
    assert_eq!(
        net.hub.calls().get("first").map(|c| c.state),
        Some(CallState::Active)
    );
}
