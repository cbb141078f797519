//! Any byte stream on a federation link, pushed in fuzzer-chosen chunks: the
//! decoder never panics, every message it yields keeps the bounds and
//! re-encodes to itself, and the same bytes read as a forwarded media
//! datagram parse or are refused without panicking. Each chunk read as a
//! forwarded datagram goes through the exactly-once window: a packet it
//! called fresh is never fresh twice.
//!
//! Every decoded message is also fed to the relay's federation core (compiled
//! in from relay-graph/src/federation, which needs only wzp-proto) over an up
//! link: it must not panic, and whatever it sends in reply must be a message
//! its peer would accept. A user is registered on the core, so a `call_signal`
//! offer for it is delivered; the local side answers every delivered offer,
//! which bridges the call room, so the call paths and their teardown run too.
//! Every user a presence message announces is called by the local user (a
//! fork per relay the core knows them on), so offers and forks run as well.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wzp_proto::federation::{
    decode_federation_message, encode_federation_frame, parse_forwarded, CallEvent, CallSignal,
    FederationDecoder, FederationMessage, RoomId, FORWARD_TAG_LEN, MAX_MEDIA_HOPS,
};

#[allow(dead_code)]
#[path = "../../relay-graph/src/federation/mod.rs"]
mod federation;

use federation::mesh::tls_of;
use federation::{Action, FederationConfig, FederationCore, Input, LinkConn, PeerSpec};

/// A core whose link to relay 1 is up, both bridging `general`.
fn core_with_link(now: Instant) -> FederationCore {
    let general = RoomId::of_name("general");
    let mut c = FederationCore::new(
        FederationConfig {
            me: tls_of(0),
            label: "r0".into(),
            peers: vec![PeerSpec {
                tls: tls_of(1),
                label: "r1".into(),
                address: Some("x:1".into()),
            }],
            global_rooms: vec![general],
            seed: 1,
        },
        now,
    );
    c.handle(
        Input::LinkUp {
            conn: LinkConn(1),
            tls: tls_of(1),
            dialed_by_me: false,
        },
        now,
    );
    c.handle(
        Input::Message {
            conn: LinkConn(1),
            msg: FederationMessage::hello_with_rooms("r1", vec![general]),
        },
        now,
    );
    c.handle(
        Input::LocalPresence {
            fingerprint: wzp_proto::Fingerprint([1; 16]),
            online: true,
        },
        now,
    );
    c
}

fn core_replies_are_valid(c: &mut FederationCore, now: Instant) {
    let mut answers = Vec::new();
    for a in c.drain_actions() {
        match a {
            Action::Send { msg, .. } => {
                encode_federation_frame(&msg).expect("the core sends only valid messages");
            }
            Action::Call(s) => {
                if let CallEvent::Offer { .. } = s.event {
                    answers.push(CallSignal {
                        event: CallEvent::Answer {
                            accept_mode: wzp_proto::signal::AcceptMode::AcceptGeneric,
                            handshake: vec![0; 130],
                            chosen_codec: None,
                        },
                        ..s
                    });
                }
            }
            _ => {}
        }
    }
    for s in answers {
        c.handle(Input::LocalCall(s), now);
        for a in c.drain_actions() {
            if let Action::Send { msg, .. } = a {
                encode_federation_frame(&msg).expect("the core sends only valid messages");
            }
        }
    }
    assert!(c.call_count() <= federation::calls::MAX_CALLS);
}

fn check(m: &FederationMessage) {
    m.validate().expect("a decoded message keeps the bounds");
    let frame = encode_federation_frame(m).expect("a decoded message re-encodes");
    let again = decode_federation_message(&frame[4..]).expect("a re-encoded message decodes");
    assert_eq!(&again, m);
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut now = Instant::now();
    let mut core = core_with_link(now);
    let mut dec = FederationDecoder::new();
    let mut offers = 0u32;
    'outer: for piece in stream.chunks(chunk) {
        if dec.push(piece).is_err() {
            break;
        }
        loop {
            match dec.next_message() {
                Ok(Some(m)) => {
                    check(&m);
                    // Users the message announces: this relay's own user
                    // calls each (a fork per relay it learned them on, or
                    // with the user's devices here ringing too, or busy
                    // here), so fuzzed presence drives the offers and their
                    // forks.
                    let called: Vec<(wzp_proto::Fingerprint, usize)> = match &m {
                        FederationMessage::PresenceUpdate { announce, .. }
                        | FederationMessage::PresenceOrigins { announce, .. } => announce
                            .iter()
                            .take(4)
                            .enumerate()
                            .map(|(i, r)| (r.fingerprint, i % 3))
                            .collect(),
                        _ => Vec::new(),
                    };
                    core.handle(
                        Input::Message {
                            conn: LinkConn(1),
                            msg: m,
                        },
                        now,
                    );
                    for (n, (callee, here)) in called.into_iter().enumerate() {
                        offers += 1;
                        let offer = CallSignal {
                            call_id: format!("fz{offers}-{n}"),
                            caller: wzp_proto::Fingerprint([1; 16]),
                            callee,
                            fork: None,
                            event: CallEvent::Offer {
                                caller_alias: None,
                                handshake: vec![0; 66],
                                supported_codecs: vec!["opus".into()],
                            },
                        };
                        if callee == offer.caller {
                            continue;
                        }
                        core.handle(
                            match here {
                                1 => Input::LocalFork(offer),
                                2 => Input::LocalForkElsewhere(offer),
                                _ => Input::LocalCall(offer),
                            },
                            now,
                        );
                    }
                    now += Duration::from_millis(u64::from(chunk as u8) * 20);
                    core.tick(now);
                    core_replies_are_valid(&mut core, now);
                }
                Ok(None) => break,
                Err(e) if e.is_fatal() => break 'outer,
                Err(_) => {}
            }
        }
    }
    let _ = dec.finish();

    if let Ok(m) = decode_federation_message(stream) {
        check(&m);
    }

    if let Ok(f) = parse_forwarded(stream) {
        assert!(f.tag.hops < MAX_MEDIA_HOPS);
        assert_eq!(f.packet, &stream[FORWARD_TAG_LEN..]);
        let mut out = [0u8; FORWARD_TAG_LEN];
        f.tag.write(&mut out).expect("room for the tag");
        assert_eq!(&out[..], &stream[..FORWARD_TAG_LEN]);
    }

    let mut window = wzp_proto::dedup::DedupWindow::new(64, Duration::from_secs(10));
    let t0 = Instant::now();
    for (i, piece) in stream.chunks(chunk).enumerate() {
        let Ok(f) = parse_forwarded(piece) else {
            continue;
        };
        let at = t0 + Duration::from_millis(i as u64);
        let first = window.check_lane(f.tag.origin, f.sender_id, f.lane, f.seq, f.tag.hops, at);
        let again = window.check_lane(f.tag.origin, f.sender_id, f.lane, f.seq, f.tag.hops, at);
        assert_ne!(
            again,
            wzp_proto::dedup::Verdict::Fresh,
            "fresh twice ({first:?})"
        );
        assert!(window.len() <= 64);
    }
});
