//! A cross-relay call in process: the signal hubs of relays 0 and 2 and an
//! in-memory mesh of three federation cores (chain 0–1–2), the clients'
//! sans-IO call machines (`OutgoingCall`, `IncomingCall`), one manual clock.
//! No sockets, no sleeps: the offer, ringing, answer, confirm and hangup
//! cross two links, the keys agree end to end, and every way a call ends
//! (busy, decline, no answer, a party gone) reaches the far party.

mod common;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;

use wzp_proto::direct_call::{CallEvent, CallReady, IncomingCall, OutgoingCall};
use wzp_proto::federation::{FederationMessage, MailEvent, MailSignal};
use wzp_proto::handshake::EphemeralKey;
use wzp_proto::path_addrs::PathAddrs;
use wzp_proto::presence::{PresenceClient, PresenceEvent, PresenceStep};
use wzp_proto::signal::{AcceptMode, HangupReason, SignalMessage};
use wzp_proto::voice_message::{open, seal, MessageKey};
use wzp_proto::{Fingerprint, Identity, Seed};
use wzp_relay::federation::mesh::{id_of, tls_of, Mesh};
use wzp_relay::federation::Input as FedInput;
use wzp_relay::signal::mail::{KEY_WAIT, KEY_WAIT_MAX};
use wzp_relay::signal::{Action, ConnId, Event, Frame, Input, Refusal, SignalConfig, SignalHub};

/// A relay's signal hub and the wires to its clients.
struct Relay {
    mesh_index: usize,
    hub: SignalHub,
    inbox: HashMap<ConnId, VecDeque<SignalMessage>>,
    rooms_opened: Vec<(String, Vec<Fingerprint>)>,
    rooms_closed: Vec<String>,
    next_conn: u64,
    /// Call signals from the federation already handed to the hub.
    taken: usize,
    /// Voice-message steps from the federation already handed to the hub.
    mail_taken: usize,
    /// People the federation said moved elsewhere, already handed over.
    reach_taken: usize,
}

/// Relays 0 and 2 with signal hubs, relay 1 only federating.
struct World {
    mesh: Mesh,
    relays: Vec<Relay>,
}

/// A client on one relay: registration and at most one call.
struct Client {
    relay: usize,
    identity: Identity,
    conn: ConnId,
    presence: PresenceClient,
    accept: Option<AcceptMode>,
    eph: u8,
    outgoing: Option<OutgoingCall>,
    incoming: Option<IncomingCall>,
    events: Vec<CallEvent>,
    received: Vec<SignalMessage>,
}

impl World {
    fn new() -> World {
        World::with(3, &[(0, 1), (1, 2)], &[0, 2])
    }

    /// Relays joined by `edges`, with signal hubs on `hubs` (the world's
    /// relays 0, 1, ... in that order).
    fn with(n: usize, edges: &[(usize, usize)], hubs: &[usize]) -> World {
        let mut mesh = Mesh::new(n, edges, &[], 5);
        mesh.settle(60).expect("links up");
        let relays = hubs
            .iter()
            .copied()
            .map(|i| Relay {
                mesh_index: i,
                hub: SignalHub::new(SignalConfig::new(tls_of(i), format!("relay{i}:4433"))),
                inbox: HashMap::new(),
                rooms_opened: Vec::new(),
                rooms_closed: Vec::new(),
                next_conn: 1,
                taken: 0,
                mail_taken: 0,
                reach_taken: 0,
            })
            .collect();
        World { mesh, relays }
    }

    fn input(&mut self, r: usize, input: Input) {
        let now = self.mesh.now;
        self.relays[r].hub.handle(input, now);
        self.pump(r);
    }

    fn pump(&mut self, r: usize) {
        while let Some(a) = self.relays[r].hub.poll_action() {
            let i = self.relays[r].mesh_index;
            match a {
                Action::Send { conn, msg } => {
                    self.relays[r].inbox.entry(conn).or_default().push_back(msg);
                }
                Action::Federate(s) => self.mesh.input(i, FedInput::LocalCall(s)),
                Action::FederateFork(s) => self.mesh.input(i, FedInput::LocalFork(s)),
                Action::DevicesRingHere { call_id } => {
                    self.mesh.input(i, FedInput::DevicesRingHere { call_id })
                }
                Action::FederateForkElsewhere(s) => {
                    self.mesh.input(i, FedInput::LocalForkElsewhere(s))
                }
                Action::FederateMail(s) => self.mesh.input(i, FedInput::LocalMail(s)),
                Action::CallRoomOpened { room, fingerprints } => {
                    self.relays[r].rooms_opened.push((room, fingerprints))
                }
                Action::CallRoomClosed { room } => self.relays[r].rooms_closed.push(room),
                Action::Event(Event::Registered { fingerprint, .. }) => self.mesh.input(
                    i,
                    FedInput::LocalPresence {
                        fingerprint,
                        online: true,
                    },
                ),
                Action::Event(Event::Unregistered { fingerprint, .. }) => self.mesh.input(
                    i,
                    FedInput::LocalPresence {
                        fingerprint,
                        online: false,
                    },
                ),
                Action::Close { .. } | Action::Event(_) => {}
            }
        }
    }

    /// One mesh round; what the federation delivered goes to the hubs.
    fn step(&mut self) {
        self.mesh.step();
        for r in 0..self.relays.len() {
            let i = self.relays[r].mesh_index;
            let fresh: Vec<_> = self.mesh.calls_delivered[i][self.relays[r].taken..].to_vec();
            self.relays[r].taken += fresh.len();
            for s in fresh {
                self.input(r, Input::Federated(s));
            }
            let mail: Vec<_> = self.mesh.mail_delivered[i][self.relays[r].mail_taken..].to_vec();
            self.relays[r].mail_taken += mail.len();
            for s in mail {
                self.input(r, Input::FederatedMail(s));
            }
            let moved: Vec<_> = self.mesh.reachable[i][self.relays[r].reach_taken..].to_vec();
            self.relays[r].reach_taken += moved.len();
            for (who, path) in moved {
                self.input(r, Input::Reachable { who, path });
            }
        }
    }

    /// Moves time on by `d`, running the hubs' timers.
    fn advance(&mut self, d: Duration) {
        let end = self.mesh.now + d;
        while self.mesh.now < end {
            self.step();
            for r in 0..self.relays.len() {
                let now = self.mesh.now;
                if self.relays[r].hub.poll_timeout().is_some_and(|t| t <= now) {
                    self.relays[r].hub.handle_timeout(now);
                    self.pump(r);
                }
            }
        }
    }

    fn frame(&mut self, c: &Client, msg: SignalMessage) {
        self.input(
            c.relay,
            Input::Frame {
                conn: c.conn,
                frame: Frame::Message(msg),
            },
        );
    }

    fn take(&mut self, c: &Client) -> Vec<SignalMessage> {
        let msgs: Vec<_> = self.relays[c.relay]
            .inbox
            .entry(c.conn)
            .or_default()
            .drain(..)
            .collect();
        if !msgs.is_empty() {
            self.input(
                c.relay,
                Input::Drained {
                    conn: c.conn,
                    count: msgs.len(),
                },
            );
        }
        msgs
    }

    /// Rounds of mesh and clients until nothing moves for a while.
    fn settle(&mut self, clients: &mut [&mut Client]) {
        let mut quiet = 0;
        for _ in 0..400 {
            self.step();
            let mut any = false;
            for c in clients.iter_mut() {
                any |= c.step(self);
            }
            quiet = if any { 0 } else { quiet + 1 };
            if quiet >= 10 {
                return;
            }
        }
        panic!("the calls did not settle");
    }
}

impl Client {
    /// Connects to relay `r` (0 or 1 of the world's hubs) and registers.
    fn online(w: &mut World, r: usize, n: u8, accept: Option<AcceptMode>) -> Client {
        Client::online_as(w, r, n, accept, None)
    }

    /// [`Client::online`] as device `device` of person `n`.
    fn online_as(
        w: &mut World,
        r: usize,
        n: u8,
        accept: Option<AcceptMode>,
        device: Option<u8>,
    ) -> Client {
        Client::online_full(w, r, n, accept, device, false)
    }

    /// [`Client::online_as`], taking waiting calls if `call_waiting`.
    fn online_full(
        w: &mut World,
        r: usize,
        n: u8,
        accept: Option<AcceptMode>,
        device: Option<u8>,
        call_waiting: bool,
    ) -> Client {
        let identity = Seed::from_bytes([n; 32]).identity();
        let relay = &mut w.relays[r];
        let conn = ConnId(relay.next_conn);
        relay.next_conn += 1;
        let tls = tls_of(relay.mesh_index);
        let remote = SocketAddr::from(([198, 51, 100, n], 40_000 + u16::from(device.unwrap_or(0))));
        w.input(
            r,
            Input::Connected {
                conn,
                remote,
                nonce: [n; 32],
            },
        );
        let mut c = Client {
            relay: r,
            presence: match device {
                Some(d) => PresenceClient::new(&identity, tls, Some(format!("user{n}")))
                    .with_device([d; wzp_proto::presence::DEVICE_ID_LEN]),
                None => PresenceClient::new(&identity, tls, Some(format!("user{n}"))),
            }
            .with_call_waiting(call_waiting),
            identity,
            conn,
            accept,
            eph: n.wrapping_mul(16),
            outgoing: None,
            incoming: None,
            events: Vec::new(),
            received: Vec::new(),
        };
        w.frame(&c, SignalMessage::hello(Some("test".into())));
        let mut registered = false;
        for _ in 0..10 {
            for m in w.take(&c) {
                match c.presence.handle(&m) {
                    PresenceStep::Send(reply) => w.frame(&c, reply),
                    PresenceStep::Event(PresenceEvent::Registered { .. }) => registered = true,
                    _ => {}
                }
            }
        }
        assert!(registered, "user {n} registered on hub {r}");
        // Its presence reaches every relay.
        w.mesh.settle(60).expect("presence spreads");
        c
    }

    fn fingerprint(&self) -> Fingerprint {
        self.identity.fingerprint()
    }

    fn ephemeral(&mut self) -> EphemeralKey {
        self.eph = self.eph.wrapping_add(1);
        EphemeralKey::from_bytes([self.eph; 32])
    }

    fn call(&mut self, w: &mut World, call_id: &str, target: Fingerprint) {
        let eph = self.ephemeral();
        self.outgoing =
            Some(OutgoingCall::start(&self.identity, eph, call_id.into(), target, None).unwrap());
        self.flush(w);
    }

    fn hangup(&mut self, w: &mut World) {
        if let Some(o) = self.outgoing.as_mut() {
            o.hangup();
        }
        if let Some(i) = self.incoming.as_mut() {
            i.hangup();
        }
        self.flush(w);
    }

    fn flush(&mut self, w: &mut World) {
        let mut out = Vec::new();
        if let Some(o) = self.outgoing.as_mut() {
            out.extend(std::iter::from_fn(|| o.poll_send()));
        }
        if let Some(i) = self.incoming.as_mut() {
            out.extend(std::iter::from_fn(|| i.poll_send()));
        }
        for m in out {
            w.frame(self, m);
        }
    }

    fn step(&mut self, w: &mut World) -> bool {
        let msgs = w.take(self);
        let any = !msgs.is_empty();
        for m in msgs {
            self.received.push(m.clone());
            if let SignalMessage::DirectCallOffer { .. } = &m {
                let mut inc = IncomingCall::from_offer(&m).expect("a well-formed offer");
                match self.accept {
                    Some(AcceptMode::Reject) => inc.reject(),
                    Some(mode) => {
                        let eph = self.ephemeral();
                        inc.accept(&self.identity, eph, mode, None).unwrap();
                    }
                    None => {}
                }
                self.incoming = Some(inc);
            }
            if let Some(o) = self.outgoing.as_mut() {
                self.events.extend(o.handle(&m));
            }
            if let Some(i) = self.incoming.as_mut() {
                self.events.extend(i.handle(&m));
            }
            self.flush(w);
        }
        any
    }

    fn answered(&self) -> Option<&CallReady> {
        self.events.iter().find_map(|e| match e {
            CallEvent::Answered(r) => Some(&**r),
            _ => None,
        })
    }

    /// Accepts the call ringing here, now.
    fn pick_up(&mut self, w: &mut World) {
        let eph = self.ephemeral();
        let inc = self.incoming.as_mut().expect("a call rings");
        inc.accept(&self.identity, eph, AcceptMode::AcceptGeneric, None)
            .unwrap();
        self.flush(w);
    }

    fn offers(&self) -> usize {
        self.received
            .iter()
            .filter(|m| matches!(m, SignalMessage::DirectCallOffer { .. }))
            .count()
    }

    fn hung_up(&self) -> Option<HangupReason> {
        self.events.iter().find_map(|e| match e {
            CallEvent::HungUp { reason, .. } => Some(*reason),
            _ => None,
        })
    }
}

#[test]
fn a_call_across_two_links_agrees_keys_end_to_end_and_a_disconnect_ends_it() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut b = Client::online(&mut w, 1, 2, Some(AcceptMode::AcceptTrusted));
    a.call(&mut w, "c1", b.fingerprint());
    w.settle(&mut [&mut a, &mut b]);
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Ringing)));
    let (ra, rb) = (
        a.answered().expect("a's call is up"),
        b.answered().expect("b's call is up"),
    );
    assert_eq!(ra.sas, rb.sas, "one key, agreed through two relays");
    assert_eq!(ra.keys.send_key(), rb.keys.recv_key());
    assert_eq!(ra.keys.recv_key(), rb.keys.send_key());
    assert_eq!((ra.peer, rb.peer), (b.fingerprint(), a.fingerprint()));
    assert_eq!(ra.room, "call-c1");
    // Each end relay is its own party's media relay, admits only it, and
    // no address crossed (b answered accept_trusted all the same).
    assert_eq!(
        (ra.relay_addr.as_str(), rb.relay_addr.as_str()),
        ("relay0:4433", "relay2:4433")
    );
    assert_eq!((ra.peer_direct_addr, rb.peer_direct_addr), (None, None));
    assert_eq!(
        w.relays[0].rooms_opened,
        [("call-c1".into(), vec![a.fingerprint()])]
    );
    assert_eq!(
        w.relays[1].rooms_opened,
        [("call-c1".into(), vec![b.fingerprint()])]
    );
    assert!(w.relays[0].hub.may_join("call-c1", &a.fingerprint()));
    assert!(w.relays[1].hub.may_join("call-c1", &b.fingerprint()));
    // The call room is bridged on the three relays.
    let room = wzp_proto::federation::call_room_id("c1");
    assert!((0..3).all(|i| w.mesh.call_bridges[i].contains(&room)));

    // B's signal connection ends: A is told, both rooms close, every relay
    // forgets the call.
    w.input(1, Input::Disconnected { conn: b.conn });
    w.settle(&mut [&mut a]);
    assert_eq!(a.hung_up(), Some(HangupReason::Normal));
    assert_eq!(w.relays[0].rooms_closed, ["call-c1"]);
    assert_eq!(w.relays[1].rooms_closed, ["call-c1"]);
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
    assert!((0..3).all(|i| w.mesh.cores[i].call_count() == 0));
}

#[test]
fn a_call_from_another_relay_rings_each_device_and_the_one_that_answers_takes_it() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 1, 2, None, Some(1));
    let mut laptop = Client::online_as(&mut w, 1, 2, None, Some(2));
    a.call(&mut w, "f1", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert!(
        phone.incoming.is_some() && laptop.incoming.is_some(),
        "both ring"
    );
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Ringing)));
    let eph = laptop.ephemeral();
    laptop
        .incoming
        .as_mut()
        .unwrap()
        .accept(&laptop.identity, eph, AcceptMode::AcceptGeneric, None)
        .unwrap();
    laptop.flush(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    let (ra, rb) = (a.answered().unwrap(), laptop.answered().unwrap());
    assert_eq!(ra.sas, rb.sas);
    assert_eq!(ra.keys.send_key(), rb.keys.recv_key());
    assert_eq!(phone.hung_up(), Some(HangupReason::AnsweredElsewhere));
    assert!(phone.answered().is_none());
    assert_eq!(
        w.relays[1].hub.calls().get("f1").unwrap().callee_conn,
        laptop.conn
    );
    // The laptop hangs up: the caller hears it across the link.
    laptop.hangup(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert_eq!(a.hung_up(), Some(HangupReason::Normal));
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
}

#[test]
fn busy_declined_and_unanswered_calls_end_at_the_far_caller() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut b = Client::online(&mut w, 1, 2, Some(AcceptMode::Reject));
    let mut c = Client::online(&mut w, 1, 3, None);
    // Declined.
    a.call(&mut w, "c1", b.fingerprint());
    w.settle(&mut [&mut a, &mut b]);
    assert!(
        a.events.iter().any(|e| matches!(e, CallEvent::Rejected)),
        "{:?}",
        a.events
    );
    // Busy: c rings b on their relay, then a calls b.
    b.accept = None;
    c.call(&mut w, "local", b.fingerprint());
    w.settle(&mut [&mut b, &mut c]);
    a.call(&mut w, "c2", b.fingerprint());
    w.settle(&mut [&mut a, &mut b, &mut c]);
    assert!(
        a.events.iter().any(|e| matches!(e, CallEvent::Busy)),
        "{:?}",
        a.events
    );
    assert_eq!(
        w.relays[1].hub.counters().refusals(Refusal::CalleeBusy),
        1,
        "refused as busy by b's relay"
    );
    // b, ringing with c's call, is told a called from the other relay.
    assert!(
        b.received.iter().any(|m| matches!(m,
            SignalMessage::MissedCall { caller_fingerprint, .. } if *caller_fingerprint == a.fingerprint())),
        "{:?}",
        b.received
    );
    c.hangup(&mut w);
    w.settle(&mut [&mut b, &mut c]);
    // Unanswered: b's relay rings for 30 s, then both ends hear it.
    b.incoming = None;
    a.call(&mut w, "c3", b.fingerprint());
    w.settle(&mut [&mut a, &mut b]);
    assert!(b.incoming.is_some(), "b was offered the call");
    w.advance(Duration::from_secs(31));
    w.settle(&mut [&mut a, &mut b]);
    assert!(
        a.events.iter().any(|e| matches!(e, CallEvent::NoAnswer)),
        "{:?}",
        a.events
    );
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
    assert!((0..3).all(|i| w.mesh.cores[i].call_count() == 0));
    // Not online anywhere: answered at once by the caller's own relay.
    a.call(&mut w, "c4", Fingerprint([0x77; 16]));
    w.settle(&mut [&mut a]);
    assert!(
        a.events.iter().any(|e| matches!(e, CallEvent::NotOnline)),
        "{:?}",
        a.events
    );
}

/// Across relays no relay passes addresses: the parties of a call answered
/// `accept_trusted` seal theirs for each other (`call_path`), the relays
/// carry them as `path` events they cannot read, and each party opens the
/// other's exactly. A call answered `accept_generic` carries none.
#[test]
fn sealed_addresses_cross_two_links_between_the_parties_only() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut b = Client::online(&mut w, 1, 2, Some(AcceptMode::AcceptTrusted));
    a.call(&mut w, "c1", b.fingerprint());
    w.settle(&mut [&mut a, &mut b]);
    let ra = a.answered().expect("a's call is up");
    assert_eq!(ra.accept_mode, AcceptMode::AcceptTrusted);
    assert_eq!(ra.peer_direct_addr, None, "no relay passed an address");
    let a_addrs = PathAddrs {
        mapping: Default::default(),
        observed: Some(SocketAddr::from(([203, 0, 113, 9], 41_000))),
        local: vec![SocketAddr::from(([192, 168, 1, 20], 41_000))],
    };
    let b_addrs = PathAddrs {
        mapping: Default::default(),
        observed: Some("[2001:db8::2]:42000".parse().unwrap()),
        local: Vec::new(),
    };
    assert!(a.outgoing.as_mut().unwrap().share_path(&a_addrs, [5; 12]));
    a.flush(&mut w);
    w.settle(&mut [&mut a, &mut b]);
    assert!(b.incoming.as_mut().unwrap().share_path(&b_addrs, [6; 12]));
    b.flush(&mut w);
    w.settle(&mut [&mut a, &mut b]);
    let paths = |c: &Client| -> Vec<PathAddrs> {
        c.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::PeerPath(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(paths(&b), [a_addrs]);
    assert_eq!(paths(&a), [b_addrs]);
    // What crossed the links is sealed: the address bytes are not in it.
    let crossed: Vec<Vec<u8>> = w.mesh.calls_delivered[2]
        .iter()
        .filter_map(|s| match &s.event {
            wzp_proto::federation::CallEvent::Path { sealed } => Some(sealed.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(crossed.len(), 1);
    assert!(!crossed[0].windows(4).any(|x| x == [203, 0, 113, 9]));
    assert!(!crossed[0].windows(4).any(|x| x == [192, 168, 1, 20]));
    assert_eq!(w.mesh.cores[1].call_counters().paths_forwarded, 2);
    a.hangup(&mut w);
    w.settle(&mut [&mut a, &mut b]);

    // accept_generic: the caller's relay refuses a call_path; nothing
    // reaches the callee.
    b.accept = Some(AcceptMode::AcceptGeneric);
    b.events.clear();
    a.events.clear();
    a.call(&mut w, "c2", b.fingerprint());
    w.settle(&mut [&mut a, &mut b]);
    assert!(a.answered().is_some());
    w.frame(
        &a,
        SignalMessage::CallPath {
            call_id: "c2".into(),
            sealed: vec![1; 40],
        },
    );
    w.settle(&mut [&mut a, &mut b]);
    assert_eq!(w.relays[0].hub.counters().refusals(Refusal::BadCallPath), 1);
    assert!(b
        .received
        .iter()
        .all(|m| !matches!(m, SignalMessage::CallPath { call_id, .. } if call_id == "c2")));
}

#[test]
fn a_call_from_another_relay_to_someone_in_a_call_rings_as_waiting_and_can_take_over() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut b = Client::online_full(&mut w, 1, 2, None, None, true);
    let mut c = Client::online(&mut w, 1, 3, None);
    // c and b in a call on b's relay.
    c.call(&mut w, "local", b.fingerprint());
    w.settle(&mut [&mut b, &mut c]);
    let eph = b.ephemeral();
    b.incoming
        .as_mut()
        .unwrap()
        .accept(&b.identity, eph, AcceptMode::AcceptGeneric, None)
        .unwrap();
    b.flush(&mut w);
    w.settle(&mut [&mut b, &mut c]);
    assert!(c.answered().is_some());
    // The test client keeps one incoming call: the next offer takes its place.
    b.incoming = None;
    // a calls b from the other relay: it rings b as waiting, not busy.
    a.call(&mut w, "far", b.fingerprint());
    w.settle(&mut [&mut a, &mut b, &mut c]);
    assert!(
        a.events.iter().any(|e| matches!(e, CallEvent::Ringing)),
        "{:?}",
        a.events
    );
    assert!(!a.events.iter().any(|e| matches!(e, CallEvent::Busy)));
    // Told it waits, across the link.
    assert!(a.outgoing.as_ref().unwrap().rings_waiting());
    assert_eq!(w.relays[1].hub.counters().calls_waiting, 1);
    assert!(w.relays[1].hub.calls().get("far").unwrap().waiting);
    assert_eq!(
        b.incoming.as_ref().map(|i| i.caller()),
        Some(a.fingerprint())
    );
    // b answers it: the local call ends for c, a's call is answered across
    // the link with keys both ends agree on.
    let eph = b.ephemeral();
    b.incoming
        .as_mut()
        .unwrap()
        .accept(&b.identity, eph, AcceptMode::AcceptGeneric, None)
        .unwrap();
    b.flush(&mut w);
    w.settle(&mut [&mut a, &mut b, &mut c]);
    assert_eq!(c.hung_up(), Some(HangupReason::Normal));
    // b's last answered call is a's (its first was c's).
    let rb = b
        .events
        .iter()
        .rev()
        .find_map(|e| match e {
            CallEvent::Answered(r) => Some(&**r),
            _ => None,
        })
        .unwrap();
    let ra = a.answered().unwrap();
    assert_eq!(rb.call_id, "far");
    assert_eq!(ra.sas, rb.sas);
    assert_eq!(ra.keys.send_key(), rb.keys.recv_key());
    assert!(w.relays[1].hub.calls().get("local").is_none());
}

/// Person `n` registers on hub `r` (its key is kept there) and leaves;
/// their fingerprint and identity.
fn was_on(w: &mut World, r: usize, n: u8) -> (Fingerprint, Identity) {
    let c = Client::online(w, r, n, None);
    w.input(r, Input::Disconnected { conn: c.conn });
    w.mesh.settle(60).expect("presence withdrawn");
    (c.fingerprint(), c.identity)
}

/// `c` leaves `sealed` for `to` as message `id`, in its parts.
fn leave_message(w: &mut World, c: &Client, id: &str, to: Fingerprint, sealed: &[u8]) {
    for m in common::voice_message_parts(id, to, sealed) {
        w.frame(c, m);
    }
}

/// `c`'s relay's answer for `who`'s key, if it came within `wait`: `None`
/// if none came, `Some(None)` for "no key".
fn key_within(
    w: &mut World,
    c: &mut Client,
    who: Fingerprint,
    wait: Duration,
) -> Option<Option<MessageKey>> {
    let before = c.received.len();
    w.frame(c, SignalMessage::MessageKeyQuery { fingerprint: who });
    w.advance(wait);
    c.step(w);
    c.received[before..].iter().rev().find_map(|m| match m {
        SignalMessage::MessageKey { fingerprint, key } if *fingerprint == who => {
            Some(key.as_deref().copied())
        }
        _ => None,
    })
}

/// The key `c`'s relay gave it for `who` once another relay answered (the
/// wait is [`KEY_WAIT`] with an answer in hand).
fn key_for(w: &mut World, c: &mut Client, who: Fingerprint) -> Option<MessageKey> {
    key_within(w, c, who, KEY_WAIT + Duration::from_millis(100)).expect("an answer in time")
}

fn stored(c: &Client, id: &str) -> bool {
    c.received
        .iter()
        .any(|m| matches!(m, SignalMessage::VoiceMessageStored { id: i } if i == id))
}

#[test]
fn a_voice_message_for_someone_last_on_a_relay_two_links_away_is_kept_there_for_them() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let (bob, bob_identity) = was_on(&mut w, 1, 2);
    // Alice's relay has no key of bob's; the one two links away has.
    assert!(w.relays[0].hub.mail().key(&bob).is_none());
    let key = key_for(&mut w, &mut a, bob).expect("bob's key from relay 2");
    assert_eq!(key.verify(), Ok(bob));
    let frames: Vec<Vec<u8>> = (0..3000).map(|i| vec![(i % 200) as u8; 20]).collect();
    let sealed = seal(&a.identity, &key, 5, &frames, [3; 32]).unwrap();
    assert_eq!(wzp_proto::voice_message::parts(&sealed).count(), 3);
    leave_message(&mut w, &a, "m1", bob, &sealed);
    w.settle(&mut [&mut a]);
    assert!(stored(&a, "m1"), "{:?}", a.received.last());
    assert_eq!(w.relays[0].hub.mail().len(), 0);
    assert_eq!(w.relays[1].hub.mail().len(), 1);
    // Relay 1 passed the parts on and kept nothing.
    let between = w.mesh.cores[1].mail_counters().clone();
    assert_eq!(between.forwarded, 1 + 3 + 1, "{between:?}");
    // Bob comes back where he was and opens it.
    let mut b = Client::online(&mut w, 1, 2, None);
    assert_eq!(w.relays[1].hub.mail().waiting(&bob), 1);
    w.frame(&b, SignalMessage::FetchVoiceMessages);
    w.settle(&mut [&mut b]);
    let got: Vec<u8> = b
        .received
        .iter()
        .filter_map(|m| match m {
            SignalMessage::VoiceMessage { data, from, .. } => {
                assert_eq!(*from, Some(a.fingerprint()));
                Some(data.clone())
            }
            _ => None,
        })
        .flatten()
        .collect();
    let opened = open(&bob_identity, &got).unwrap();
    assert_eq!((opened.sender, opened.frames), (a.fingerprint(), frames));
}

#[test]
fn the_key_query_takes_the_relay_the_person_was_on_last_and_one_they_are_on_now_at_once() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    // Bob was on alice's relay long ago, then on relay 2.
    let b = Client::online(&mut w, 0, 2, None);
    let bob = b.fingerprint();
    w.input(0, Input::Disconnected { conn: b.conn });
    w.advance(Duration::from_secs(30));
    let b = Client::online(&mut w, 1, 2, None);
    w.input(1, Input::Disconnected { conn: b.conn });
    w.mesh.settle(60).expect("presence withdrawn");
    assert!(w.relays[0].hub.mail().key(&bob).is_some());
    let key = key_for(&mut w, &mut a, bob).expect("a key");
    let sealed = seal(&a.identity, &key, 5, &[vec![1; 20]], [3; 32]).unwrap();
    leave_message(&mut w, &a, "m1", bob, &sealed);
    w.settle(&mut [&mut a]);
    assert!(stored(&a, "m1"));
    assert_eq!(
        (w.relays[0].hub.mail().len(), w.relays[1].hub.mail().len()),
        (0, 1),
        "the message is where bob was last"
    );
    // Bob online on relay 2: the answer comes without the wait.
    let mut b = Client::online(&mut w, 1, 2, None);
    w.frame(&a, SignalMessage::MessageKeyQuery { fingerprint: bob });
    for _ in 0..6 {
        w.step();
    }
    a.step(&mut w);
    assert!(
        matches!(
            a.received.last(),
            Some(SignalMessage::MessageKey { key: Some(_), .. })
        ),
        "{:?}",
        a.received.last()
    );
    leave_message(&mut w, &a, "m2", bob, &sealed);
    w.settle(&mut [&mut a, &mut b]);
    assert!(stored(&a, "m2"));
    assert!(b
        .received
        .iter()
        .any(|m| matches!(m, SignalMessage::VoiceMessages { count: 2 })));
    // Someone no relay knows: no answer comes, so the relay waits its
    // longest for a slow relay, then says there is none.
    let nobody = Seed::from_bytes([9; 32]).identity().fingerprint();
    assert_eq!(
        key_within(
            &mut w,
            &mut a,
            nobody,
            KEY_WAIT + Duration::from_millis(100)
        ),
        None,
        "still waiting"
    );
    w.advance(KEY_WAIT_MAX);
    a.step(&mut w);
    assert!(matches!(
        a.received.last(),
        Some(SignalMessage::MessageKey { key: None, fingerprint }) if *fingerprint == nobody
    ));
}

#[test]
fn a_relay_answering_with_a_key_not_the_persons_is_not_believed() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let (bob, _) = was_on(&mut w, 1, 2);
    w.frame(&a, SignalMessage::MessageKeyQuery { fingerprint: bob });
    w.step();
    // Relay 1 saw the query pass and answers first, "online now", with
    // the key of someone else (eve's), then with bob's own key claiming to
    // hold his mailbox from a relay that is not on the path.
    let query = w.mesh.mail_delivered[1]
        .iter()
        .find_map(|s| match s.event {
            MailEvent::KeyQuery { query, who } if who == bob => Some(query),
            _ => None,
        })
        .expect("the query reached relay 1");
    let eve = Seed::from_bytes([66; 32]).identity();
    let forged = FederationMessage::Mail {
        path: vec![id_of(0), id_of(1)],
        event: MailEvent::Key {
            query,
            who: bob,
            key: MessageKey::of(&eve),
            seen_s: 0,
        },
    };
    assert!(w.mesh.send_as(1, 0, forged));
    let misrouted = FederationMessage::Mail {
        path: vec![id_of(0), id_of(2), id_of(1)],
        event: MailEvent::Key {
            query,
            who: bob,
            key: MessageKey::of(&eve),
            seen_s: 0,
        },
    };
    assert!(w.mesh.send_as(1, 0, misrouted));
    w.step();
    assert_eq!(w.mesh.cores[0].mail_counters().misrouted, 1);
    w.advance(KEY_WAIT + Duration::from_millis(100));
    a.step(&mut w);
    let keys: Vec<_> = a
        .received
        .iter()
        .filter_map(|m| match m {
            SignalMessage::MessageKey { key, .. } => Some(key.as_deref().copied()),
            _ => None,
        })
        .collect();
    let own = MessageKey::of(&Seed::from_bytes([2; 32]).identity());
    assert_eq!(keys, vec![Some(own)], "one answer: bob's own key");
}

#[test]
fn a_message_whose_way_loses_a_link_is_refused_to_the_sender() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let (bob, _) = was_on(&mut w, 1, 2);
    let key = key_for(&mut w, &mut a, bob).expect("bob's key");
    w.mesh.cut(1, 2);
    // Found dead by its silence, well within alice's keep-alive.
    w.advance(Duration::from_secs(15));
    let sealed = seal(&a.identity, &key, 5, &[vec![1; 20]], [3; 32]).unwrap();
    leave_message(&mut w, &a, "m1", bob, &sealed);
    w.settle(&mut [&mut a]);
    assert!(!stored(&a, "m1"));
    assert!(
        a.received.iter().any(|m| matches!(m,
            SignalMessage::Error { message, .. } if message.contains("lost its link"))),
        "{:?}",
        a.received
    );
    assert_eq!(w.mesh.cores[1].mail_counters().no_link, 1);
}

#[test]
fn messages_kept_for_someone_move_to_the_relay_they_register_on_next() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    // Bob was on alice's relay; alice leaves him a message there.
    let (bob, bob_identity) = was_on(&mut w, 0, 2);
    let key = key_for(&mut w, &mut a, bob).expect("bob's key, here");
    let frames: Vec<Vec<u8>> = (0..1500).map(|i| vec![(i % 100) as u8; 20]).collect();
    let sealed = seal(&a.identity, &key, 5, &frames, [4; 32]).unwrap();
    assert_eq!(wzp_proto::voice_message::parts(&sealed).count(), 2);
    leave_message(&mut w, &a, "m1", bob, &sealed);
    w.settle(&mut [&mut a]);
    assert!(stored(&a, "m1"));
    assert_eq!(w.relays[0].hub.mail().len(), 1);
    w.advance(Duration::from_secs(10));
    // Bob registers on relay 2: the message follows him, and is gone from
    // relay 0 once relay 2 has it.
    let mut b = Client::online(&mut w, 1, 2, None);
    w.settle(&mut [&mut b]);
    assert_eq!(
        (w.relays[0].hub.mail().len(), w.relays[1].hub.mail().len()),
        (0, 1)
    );
    assert_eq!(w.relays[0].hub.counters().mail_moved, 1);
    assert!(b
        .received
        .iter()
        .any(|m| matches!(m, SignalMessage::VoiceMessages { count: 1 })));
    // Had relay 0 lost the `stored` and sent it again, relay 2 keeps one
    // copy and says stored again.
    let first = wzp_proto::voice_message::parts(&sealed)
        .next()
        .unwrap()
        .to_vec();
    w.input(
        1,
        Input::FederatedMail(MailSignal {
            path: vec![id_of(0), id_of(1), id_of(2)],
            event: MailEvent::Part {
                id: "m1".into(),
                from: a.fingerprint(),
                to: bob,
                part: 0,
                parts: 2,
                data: first,
                age_ms: Some(10_000),
            },
        }),
    );
    w.settle(&mut []);
    assert_eq!(w.relays[1].hub.mail().len(), 1);
    assert!(matches!(
        w.mesh.mail_delivered[0].last().map(|s| &s.event),
        Some(MailEvent::Stored { id, .. }) if id == "m1"
    ));
    w.frame(&b, SignalMessage::FetchVoiceMessages);
    w.settle(&mut [&mut b]);
    let mut got = Vec::new();
    for m in &b.received {
        if let SignalMessage::VoiceMessage {
            data, age_ms, from, ..
        } = m
        {
            assert!(
                age_ms.is_some_and(|a| a >= 10_000),
                "{age_ms:?}: kept as left then"
            );
            assert_eq!(*from, Some(a.fingerprint()));
            got.extend_from_slice(data);
        }
    }
    assert_eq!(open(&bob_identity, &got).unwrap().frames, frames);
    // Bob on both relays: nothing moves while he is on the one keeping it.
    let b0 = Client::online(&mut w, 0, 2, None);
    w.settle(&mut []);
    assert_eq!(w.relays[1].hub.mail().len(), 1);
    // He leaves relay 2: it follows him back to relay 0.
    w.input(1, Input::Disconnected { conn: b.conn });
    w.mesh.settle(60).expect("presence withdrawn");
    w.settle(&mut []);
    assert_eq!(
        (w.relays[0].hub.mail().len(), w.relays[1].hub.mail().len()),
        (1, 0)
    );
    assert_eq!(w.relays[1].hub.counters().mail_moved, 1);
    // Gone everywhere: it stays where it is.
    w.input(0, Input::Disconnected { conn: b0.conn });
    w.mesh.settle(60).expect("presence withdrawn");
    w.settle(&mut []);
    assert_eq!(w.relays[0].hub.mail().len(), 1);
}

#[test]
fn a_hold_crosses_two_links_both_ways() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut b = Client::online(&mut w, 1, 2, Some(AcceptMode::AcceptGeneric));
    a.call(&mut w, "h1", b.fingerprint());
    w.settle(&mut [&mut a, &mut b]);
    assert!(a.answered().is_some() && b.answered().is_some());
    let holds = |c: &Client| -> Vec<bool> {
        c.events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Hold(h) => Some(*h),
                _ => None,
            })
            .collect()
    };
    assert!(a.outgoing.as_mut().unwrap().hold(true, [1; 12]));
    a.flush(&mut w);
    w.settle(&mut [&mut a, &mut b]);
    assert!(b.incoming.as_mut().unwrap().hold(true, [2; 12]));
    b.flush(&mut w);
    assert!(b.incoming.as_mut().unwrap().hold(false, [3; 12]));
    b.flush(&mut w);
    w.settle(&mut [&mut a, &mut b]);
    assert_eq!((holds(&a), holds(&b)), (vec![true, false], vec![true]));
    assert_eq!(w.mesh.cores[1].call_counters().holds_forwarded, 3);
}

#[test]
fn a_client_asking_for_keys_faster_than_once_a_second_is_refused_and_floods_nothing() {
    let mut w = World::new();
    let mut a = Client::online(&mut w, 0, 1, None);
    let (bob, _) = was_on(&mut w, 1, 2);
    let flooded = |w: &World| w.mesh.cores[0].mail_counters().queries_forwarded;
    w.frame(&a, SignalMessage::MessageKeyQuery { fingerprint: bob });
    w.step();
    let once = flooded(&w);
    assert_eq!(once, 1, "one query, to relay 0's one peer");
    // Ten more at once: refused, nothing more floods, and the first query
    // is still answered.
    for n in 10..20u8 {
        let who = Seed::from_bytes([n; 32]).identity().fingerprint();
        w.frame(&a, SignalMessage::MessageKeyQuery { fingerprint: who });
    }
    w.advance(KEY_WAIT + Duration::from_millis(100));
    a.step(&mut w);
    assert_eq!(flooded(&w), once);
    assert_eq!(
        w.relays[0].hub.counters().refusals(Refusal::RateLimited),
        10
    );
    assert!(a.received.iter().any(|m| matches!(m,
        SignalMessage::MessageKey { fingerprint, key: Some(_) } if *fingerprint == bob)));
    // A second later it may ask again.
    w.advance(Duration::from_secs(1));
    assert_eq!(
        key_for(&mut w, &mut a, bob).map(|k| k.verify()),
        Some(Ok(bob))
    );
    assert_eq!(flooded(&w), once + 1);
}

/// Relays 0 - 1 - 2 and 1 - 3; hubs on 0, 2 and 3 (the world's relays 0, 1
/// and 2).
fn forked_world() -> World {
    World::with(4, &[(0, 1), (1, 2), (1, 3)], &[0, 2, 3])
}

fn agreed(a: &Client, b: &Client) {
    let (ra, rb) = (
        a.answered().expect("caller up"),
        b.answered().expect("callee up"),
    );
    assert_eq!(ra.sas, rb.sas);
    assert_eq!(ra.keys.send_key(), rb.keys.recv_key());
    assert_eq!(ra.keys.recv_key(), rb.keys.send_key());
}

#[test]
fn a_person_on_two_relays_rings_on_both_and_the_device_that_answers_takes_the_call() {
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 1, 2, None, Some(1));
    let mut laptop = Client::online_as(&mut w, 2, 2, None, Some(2));
    a.call(&mut w, "k1", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert_eq!((phone.offers(), laptop.offers()), (1, 1), "both ring");
    let ringing = a
        .events
        .iter()
        .filter(|e| matches!(e, CallEvent::Ringing))
        .count();
    assert_eq!(ringing, 1, "the caller hears ringing once");

    laptop.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    agreed(&a, &laptop);
    assert_eq!(phone.hung_up(), Some(HangupReason::AnsweredElsewhere));
    assert!(phone.answered().is_none());
    assert!(
        w.relays[1].hub.calls().is_empty(),
        "the phone's relay let go"
    );
    assert_eq!(w.mesh.cores[2].call_count(), 0);
    assert_eq!(
        w.relays[2].rooms_opened,
        [("call-k1".into(), vec![laptop.fingerprint()])]
    );

    a.hangup(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert_eq!(laptop.hung_up(), Some(HangupReason::Normal));
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
    assert!((0..4).all(|i| w.mesh.cores[i].call_count() == 0));
}

#[test]
fn a_device_on_the_callers_relay_rings_with_one_on_another_and_either_may_answer() {
    // The laptop (another relay) answers: the phone (the caller's relay)
    // stops ringing.
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 0, 2, None, Some(1));
    let mut laptop = Client::online_as(&mut w, 1, 2, None, Some(2));
    a.call(&mut w, "k2", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert_eq!((phone.offers(), laptop.offers()), (1, 1), "both ring");
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    agreed(&a, &laptop);
    assert_eq!(phone.hung_up(), Some(HangupReason::AnsweredElsewhere));
    let call = w.relays[0]
        .hub
        .calls()
        .get("k2")
        .cloned()
        .expect("the call");
    assert!(call.is_federated(wzp_relay::calls::Party::Callee));
    assert!(!call.remote_forks);

    // The phone answers: the laptop stops ringing, its relay lets go.
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 0, 2, None, Some(1));
    let mut laptop = Client::online_as(&mut w, 1, 2, None, Some(2));
    a.call(&mut w, "k3", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    phone.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    agreed(&a, &phone);
    assert_eq!(laptop.hung_up(), Some(HangupReason::AnsweredElsewhere));
    assert!(w.relays[1].hub.calls().is_empty());
    assert!((1..4).all(|i| w.mesh.cores[i].call_count() == 0));
    assert!(w.mesh.cores[0].fork_group("k3").is_none());
}

#[test]
fn declining_on_one_relay_declines_the_call_for_the_person() {
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 1, 2, Some(AcceptMode::Reject), Some(1));
    let mut laptop = Client::online_as(&mut w, 2, 2, None, Some(2));
    a.call(&mut w, "k4", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Rejected)));
    assert_eq!(laptop.hung_up(), Some(HangupReason::DeclinedElsewhere));
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
    assert!((0..4).all(|i| w.mesh.cores[i].call_count() == 0));

    // Declined on the caller's relay: the device on the other relay hears
    // it was declined elsewhere.
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 0, 2, Some(AcceptMode::Reject), Some(1));
    let mut laptop = Client::online_as(&mut w, 1, 2, None, Some(2));
    a.call(&mut w, "k5", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Rejected)));
    assert_eq!(laptop.hung_up(), Some(HangupReason::DeclinedElsewhere));
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
    assert!((0..4).all(|i| w.mesh.cores[i].call_count() == 0));
}

#[test]
fn the_last_device_on_the_callers_relay_going_leaves_the_call_ringing_on_the_other() {
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 0, 2, None, Some(1));
    let mut laptop = Client::online_as(&mut w, 1, 2, None, Some(2));
    a.call(&mut w, "k6", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    w.input(0, Input::Disconnected { conn: phone.conn });
    w.settle(&mut [&mut a, &mut laptop]);
    assert!(a.hung_up().is_none(), "still ringing: {:?}", a.events);
    assert!(laptop.hung_up().is_none());
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut laptop]);
    agreed(&a, &laptop);

    // The caller giving up while both ring ends both.
    let mut w = forked_world();
    let mut a = Client::online(&mut w, 0, 1, None);
    let mut phone = Client::online_as(&mut w, 0, 2, None, Some(1));
    let mut laptop = Client::online_as(&mut w, 1, 2, None, Some(2));
    a.call(&mut w, "k7", phone.fingerprint());
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    a.hangup(&mut w);
    w.settle(&mut [&mut a, &mut phone, &mut laptop]);
    assert!(phone.hung_up().is_some());
    assert!(laptop.hung_up().is_some());
    assert!(w.relays.iter().all(|r| r.hub.calls().is_empty()));
    assert!((0..4).all(|i| w.mesh.cores[i].call_count() == 0));
}

fn heard_busy(c: &Client) -> bool {
    c.events.iter().any(|e| matches!(e, CallEvent::Busy))
}

/// No relay of the mesh carries a call leg any more.
fn no_legs(w: &World) {
    assert!((0..4).all(|i| w.mesh.cores[i].call_count() == 0));
}

/// Bob's phone on the caller's relay (the world's relay 0), in a call with
/// carol there (taking waiting calls if `waiting`); his laptop on relay 1,
/// idle. Returns carol, the phone and the laptop, their slates clean.
fn bob_busy_on_the_callers_relay(w: &mut World, waiting: bool) -> (Client, Client, Client) {
    bob_busy_on(w, 0, 1, waiting)
}

/// Bob's phone on the world's relay `phone_at`, in a call with carol there
/// (taking waiting calls if `waiting`); his laptop on `laptop_at`, idle.
fn bob_busy_on(
    w: &mut World,
    phone_at: usize,
    laptop_at: usize,
    waiting: bool,
) -> (Client, Client, Client) {
    let mut carol = Client::online(w, phone_at, 3, None);
    let mut phone = Client::online_full(w, phone_at, 2, None, Some(1), waiting);
    let mut laptop = Client::online_as(w, laptop_at, 2, None, Some(2));
    carol.call(w, "first", phone.fingerprint());
    w.settle(&mut [&mut carol, &mut phone, &mut laptop]);
    phone.pick_up(w);
    w.settle(&mut [&mut carol, &mut phone, &mut laptop]);
    agreed(&carol, &phone);
    for c in [&mut phone, &mut laptop] {
        c.incoming = None;
        c.events.clear();
        c.received.clear();
    }
    (carol, phone, laptop)
}

fn missed_calls(c: &Client) -> Vec<Fingerprint> {
    c.received
        .iter()
        .filter_map(|m| match m {
            SignalMessage::MissedCall {
                caller_fingerprint, ..
            } => Some(*caller_fingerprint),
            _ => None,
        })
        .collect()
}

fn first_call_goes_on(w: &World) {
    first_call_goes_on_at(w, 0);
}

fn first_call_goes_on_at(w: &World, r: usize) {
    let first = w.relays[r]
        .hub
        .calls()
        .get("first")
        .expect("the first call");
    assert_eq!(first.state, wzp_relay::calls::CallState::Active);
}

#[test]
fn busy_on_the_callers_relay_the_person_rings_on_another_and_the_laptop_takes_it() {
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "b1", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!(
        (phone.offers(), laptop.offers()),
        (0, 1),
        "the laptop rings"
    );
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Ringing)));
    assert!(a.hung_up().is_none(), "{:?}", a.events);
    assert!(
        w.relays[0]
            .hub
            .calls()
            .get("b1")
            .unwrap()
            .busy_here
            .is_some(),
        "the call knows the person is busy here"
    );
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &laptop);
    first_call_goes_on(&w);
    // Bob took it: nothing was missed, however it ends.
    a.hangup(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!(laptop.hung_up(), Some(HangupReason::Normal));
    assert!(missed_calls(&phone).is_empty() && missed_calls(&laptop).is_empty());
    assert_eq!(w.relays[0].hub.counters().missed_calls, 0);
    assert_eq!(w.relays[0].hub.counters().refusals(Refusal::CalleeBusy), 0);
    first_call_goes_on(&w);
    assert!(carol.hung_up().is_none() && phone.hung_up().is_none());
    assert!((1..4).all(|i| w.mesh.cores[i].call_count() == 0));
}

#[test]
fn busy_on_the_callers_relay_and_unanswered_elsewhere_the_caller_hears_busy_and_bob_a_missed_call()
{
    // The laptop lets it ring out: busy for the caller (the most telling),
    // a missed call on the phone.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "b2", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(missed_calls(&phone).is_empty(), "not missed while it rings");
    w.advance(Duration::from_secs(31));
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(heard_busy(&a), "{:?}", a.events);
    assert_eq!(missed_calls(&phone), [a.fingerprint()]);
    assert_eq!(w.relays[0].hub.counters().missed_calls, 1);
    assert_eq!(w.relays[0].hub.counters().refusals(Refusal::CalleeBusy), 1);
    assert!(w.relays[0].hub.calls().get("b2").is_none());
    no_legs(&w);
    first_call_goes_on(&w);

    // Declined on the laptop: the person chose; no missed call.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    laptop.accept = Some(AcceptMode::Reject);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "b3", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Rejected)));
    assert!(missed_calls(&phone).is_empty());
    first_call_goes_on(&w);

    // The caller gives up while the laptop rings: the phone is told.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "b4", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    a.hangup(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(laptop.hung_up().is_some());
    assert_eq!(missed_calls(&phone), [a.fingerprint()]);
    no_legs(&w);
    first_call_goes_on(&w);

    // No other device anywhere: busy at once, as on one relay.
    let mut w = forked_world();
    let (mut carol, mut phone, laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    w.input(1, Input::Disconnected { conn: laptop.conn });
    w.settle(&mut [&mut carol, &mut phone]);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "b5", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone]);
    assert!(heard_busy(&a), "{:?}", a.events);
    assert!(!a.events.iter().any(|e| matches!(e, CallEvent::Ringing)));
    assert_eq!(missed_calls(&phone), [a.fingerprint()]);
    assert_eq!(w.relays[0].hub.counters().refusals(Refusal::NotOnline), 0);
    first_call_goes_on(&w);
}

#[test]
fn a_waiting_call_on_the_callers_relay_rings_on_the_persons_other_relay_too() {
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, true);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "w1", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!((phone.offers(), laptop.offers()), (1, 1), "both ring");
    assert!(a.outgoing.as_ref().unwrap().rings_waiting());
    // The laptop takes it: the phone's waiting call stops, its call with
    // carol goes on, and bob has no waiting call left here.
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &laptop);
    assert_eq!(phone.hung_up(), Some(HangupReason::AnsweredElsewhere));
    first_call_goes_on(&w);
    let hub = &w.relays[0].hub;
    assert!(hub.calls().waiting_of(&phone.fingerprint()).is_none());
    assert!(!hub.calls().get("w1").unwrap().waiting);
    assert!(carol.hung_up().is_none());
    // Carol's call ending leaves a's call with the laptop as it is.
    carol.hangup(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(w.relays[0].hub.calls().get("first").is_none());
    assert_eq!(
        w.relays[0].hub.calls().get("w1").map(|c| c.state),
        Some(wzp_relay::calls::CallState::Active)
    );
    assert!(a.hung_up().is_none() && laptop.hung_up().is_none());
    assert!(missed_calls(&phone).is_empty());

    // The phone takes the waiting call instead: the laptop stops ringing.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, true);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "w2", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    phone.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &phone);
    assert_eq!(laptop.hung_up(), Some(HangupReason::AnsweredElsewhere));
    assert!((1..4).all(|i| w.mesh.cores[i].call_count() == 0));
}

#[test]
fn busy_on_another_relay_the_phone_hears_of_a_missed_call_only_if_no_device_took_it() {
    // Bob's phone busy on relay 1, his laptop on relay 2, alice calls from
    // relay 0: the laptop answers, and the phone is told nothing.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on(&mut w, 1, 2, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "m1", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!((phone.offers(), laptop.offers()), (0, 1));
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Ringing)));
    assert_eq!(
        w.relays[1].hub.counters().refusals(Refusal::CalleeBusy),
        1,
        "the phone's relay answered its fork busy"
    );
    assert_eq!(w.mesh.cores[2].call_count(), 1, "and kept it open");
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &laptop);
    assert_eq!(w.mesh.cores[2].call_count(), 0, "the busy fork ended");
    a.hangup(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    // Long past any wait for the fork's outcome.
    w.advance(Duration::from_secs(41));
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(missed_calls(&phone).is_empty(), "{:?}", phone.received);
    assert_eq!(w.relays[1].hub.counters().missed_calls, 0);
    first_call_goes_on_at(&w, 1);

    // The laptop lets it ring out: alice hears busy, the phone of the
    // missed call.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on(&mut w, 1, 2, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "m2", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(
        missed_calls(&phone).is_empty(),
        "not while the laptop rings"
    );
    w.advance(Duration::from_secs(31));
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(heard_busy(&a), "{:?}", a.events);
    assert_eq!(missed_calls(&phone), [a.fingerprint()]);
    assert_eq!(w.relays[1].hub.counters().missed_calls, 1);
    no_legs(&w);
    first_call_goes_on_at(&w, 1);

    // Declined on the laptop: nothing missed.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on(&mut w, 1, 2, false);
    laptop.accept = Some(AcceptMode::Reject);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "m3", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(a.events.iter().any(|e| matches!(e, CallEvent::Rejected)));
    w.advance(Duration::from_secs(41));
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(missed_calls(&phone).is_empty());
    no_legs(&w);
}

#[test]
fn busy_on_the_callers_relay_and_on_the_other_the_caller_hears_busy_at_once() {
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    // Dave, on the laptop's relay, calls bob: the phone is busy, the
    // laptop takes it.
    let mut dave = Client::online(&mut w, 1, 4, None);
    dave.call(&mut w, "second", phone.fingerprint());
    w.settle(&mut [&mut dave, &mut carol, &mut phone, &mut laptop]);
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut dave, &mut carol, &mut phone, &mut laptop]);
    agreed(&dave, &laptop);
    for c in [&mut phone, &mut laptop] {
        c.received.clear();
    }
    // Alice calls bob, busy on both relays: busy at once, no ringing, and
    // both devices told of the missed call.
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "b6", phone.fingerprint());
    w.settle(&mut [&mut a, &mut dave, &mut carol, &mut phone, &mut laptop]);
    assert!(heard_busy(&a), "{:?}", a.events);
    assert!(!a.events.iter().any(|e| matches!(e, CallEvent::Ringing)));
    assert_eq!(missed_calls(&phone), [a.fingerprint()]);
    assert_eq!(missed_calls(&laptop), [a.fingerprint()]);
    assert!(w.relays[0].hub.calls().get("b6").is_none());
    first_call_goes_on(&w);
    assert!(dave.hung_up().is_none() && laptop.hung_up().is_none());
}

#[test]
fn a_call_rung_elsewhere_because_the_phone_was_busy_rings_the_phone_once_its_call_ends() {
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "f1", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!((phone.offers(), laptop.offers()), (0, 1));
    // Carol hangs up: the phone is free and rings too.
    carol.hangup(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!(phone.offers(), 1, "the phone rings now");
    let call = w.relays[0].hub.calls().get("f1").unwrap().clone();
    assert!(call.busy_here.is_none() && call.remote_forks);
    assert!(!call.is_federated(wzp_relay::calls::Party::Callee));
    // The phone takes it: the laptop stops ringing, nothing was missed.
    phone.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &phone);
    assert_eq!(laptop.hung_up(), Some(HangupReason::AnsweredElsewhere));
    assert!(missed_calls(&phone).is_empty());
    assert_eq!(w.relays[0].hub.counters().missed_calls, 0);
    for i in 1..4 {
        assert_eq!(w.mesh.cores[i].call_count(), 0, "relay {i}");
    }
    let ringing = a
        .events
        .iter()
        .filter(|e| matches!(e, CallEvent::Ringing))
        .count();
    assert_eq!(ringing, 1, "the caller heard ringing once");
}

#[test]
fn a_phone_busy_on_another_relay_rings_once_its_call_ends_and_may_take_the_call() {
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on(&mut w, 1, 2, false);
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "f2", phone.fingerprint());
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!((phone.offers(), laptop.offers()), (0, 1));
    assert_eq!(
        w.mesh.cores[0].fork_group("f2").map(|g| g.busy.len()),
        Some(1)
    );
    // Carol hangs up: the phone's relay delivers the offer again, the
    // fork rings, and the caller's relay counts it ringing.
    carol.hangup(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert_eq!(phone.offers(), 1, "the phone rings now");
    let g = w.mesh.cores[0].fork_group("f2").unwrap();
    assert!(g.busy.is_empty() && g.forks.len() == 2, "{g:?}");
    phone.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &phone);
    assert_eq!(laptop.hung_up(), Some(HangupReason::AnsweredElsewhere));
    w.advance(Duration::from_secs(41));
    w.settle(&mut [&mut a, &mut carol, &mut phone, &mut laptop]);
    assert!(missed_calls(&phone).is_empty(), "{:?}", phone.received);
    assert_eq!(w.relays[1].hub.counters().missed_calls, 0);
}

#[test]
fn a_busy_fork_elsewhere_waits_for_the_freed_phone_when_the_last_other_fork_ends() {
    // Bob's phone on relay 0 (the caller's) in a call with carol, his
    // laptop on relay 1 in a call with dave, his tablet on relay 2 idle.
    let mut w = forked_world();
    let (mut carol, mut phone, mut laptop) = bob_busy_on_the_callers_relay(&mut w, false);
    let mut tablet = Client::online_as(&mut w, 2, 2, None, Some(3));
    let mut dave = Client::online(&mut w, 1, 4, None);
    dave.call(&mut w, "second", phone.fingerprint());
    w.settle(&mut [&mut dave, &mut carol, &mut phone, &mut laptop, &mut tablet]);
    laptop.pick_up(&mut w);
    w.settle(&mut [&mut dave, &mut carol, &mut phone, &mut laptop, &mut tablet]);
    agreed(&dave, &laptop);
    for c in [&mut phone, &mut laptop, &mut tablet] {
        c.incoming = None;
        c.events.clear();
        c.received.clear();
    }
    // Alice calls: the laptop's relay answers busy, the tablet rings.
    let mut a = Client::online(&mut w, 0, 1, None);
    a.call(&mut w, "f3", phone.fingerprint());
    w.settle(&mut [
        &mut a,
        &mut dave,
        &mut carol,
        &mut phone,
        &mut laptop,
        &mut tablet,
    ]);
    assert_eq!(tablet.offers(), 1);
    // Carol hangs up: the phone rings too; then the tablet goes.
    carol.hangup(&mut w);
    w.settle(&mut [
        &mut a,
        &mut dave,
        &mut carol,
        &mut phone,
        &mut laptop,
        &mut tablet,
    ]);
    assert_eq!(phone.offers(), 1);
    w.input(2, Input::Disconnected { conn: tablet.conn });
    w.settle(&mut [&mut a, &mut dave, &mut carol, &mut phone, &mut laptop]);
    // The laptop's busy fork waits for the phone rather than hearing the
    // call went unanswered.
    let g = w.mesh.cores[0].fork_group("f3").expect("the forks wait");
    assert_eq!(g.busy.len(), 1, "{g:?}");
    assert!(missed_calls(&laptop).is_empty());
    phone.pick_up(&mut w);
    w.settle(&mut [&mut a, &mut dave, &mut carol, &mut phone, &mut laptop]);
    agreed(&a, &phone);
    w.advance(Duration::from_secs(41));
    w.settle(&mut [&mut a, &mut dave, &mut carol, &mut phone, &mut laptop]);
    assert!(missed_calls(&laptop).is_empty(), "{:?}", laptop.received);
    assert!(
        dave.hung_up().is_none(),
        "dave's call with the laptop goes on"
    );
}
