//! Table tests of the hub's connection handling (the call flows are in
//! `tests/signal_plane.rs`).

use super::*;

fn hub() -> SignalHub {
    SignalHub::new(SignalConfig::new(TlsFingerprint([1; 32]), "r:1"))
}

fn remote() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9))
}

fn drain(h: &mut SignalHub) -> Vec<Action> {
    std::iter::from_fn(|| h.poll_action()).collect()
}

fn connect(h: &mut SignalHub, conn: u64, now: Instant) -> ConnId {
    let conn = ConnId(conn);
    h.handle(
        Input::Connected {
            conn,
            remote: remote(),
            nonce: [conn.0 as u8; 32],
        },
        now,
    );
    conn
}

fn msg(conn: ConnId, m: SignalMessage) -> Input {
    Input::Frame {
        conn,
        frame: Frame::Message(m),
    }
}

fn closes(actions: &[Action]) -> Vec<(ConnId, CloseCode)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Close { conn, code, .. } => Some((*conn, *code)),
            _ => None,
        })
        .collect()
}

#[test]
fn hello_gets_hello_and_a_challenge_with_the_connections_nonce() {
    let now = Instant::now();
    let mut h = hub();
    let c = connect(&mut h, 3, now);
    h.handle(msg(c, SignalMessage::hello(None)), now);
    let sent: Vec<_> = drain(&mut h)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect();
    assert!(matches!(sent[0], SignalMessage::Hello { .. }));
    assert_eq!(sent[1], SignalMessage::PresenceChallenge { nonce: [3; 32] });
    assert_eq!(h.session(c).unwrap().in_flight, 2);
    h.handle(Input::Drained { conn: c, count: 5 }, now);
    assert_eq!(h.session(c).unwrap().in_flight, 0);
}

#[test]
fn fatal_first_frames_and_broken_streams_close_with_the_right_code() {
    let now = Instant::now();
    let table: Vec<(&str, Input, CloseCode, Refusal)> = vec![
        (
            "version without overlap",
            msg(
                ConnId(1),
                SignalMessage::Hello {
                    version: 9,
                    min_version: 9,
                    software: None,
                    features: vec![],
                },
            ),
            CloseCode::BadJoin,
            Refusal::VersionMismatch,
        ),
        (
            "unknown type first",
            Input::Frame {
                conn: ConnId(1),
                frame: Frame::Unknown {
                    type_name: "x".into(),
                },
            },
            CloseCode::BadJoin,
            Refusal::NoHello,
        ),
        (
            "malformed first",
            Input::Frame {
                conn: ConnId(1),
                frame: Frame::Malformed {
                    detail: "bad json".into(),
                },
            },
            CloseCode::BadJoin,
            Refusal::NoHello,
        ),
        (
            "frame too large",
            Input::FrameTooLarge {
                conn: ConnId(1),
                len: 1 << 20,
            },
            CloseCode::Protocol,
            Refusal::FrameTooLarge,
        ),
        (
            "truncated stream",
            Input::StreamError {
                conn: ConnId(1),
                detail: "ended inside a frame".into(),
            },
            CloseCode::Protocol,
            Refusal::StreamError,
        ),
    ];
    for (what, input, code, refusal) in table {
        let mut h = hub();
        let c = connect(&mut h, 1, now);
        h.handle(input.clone(), now);
        let actions = drain(&mut h);
        assert_eq!(closes(&actions), vec![(c, code)], "{what}");
        assert_eq!(h.counters().refusals(refusal), 1, "{what}");
        assert_eq!(h.session_count(), 0, "{what}");
        // Anything later from the closed connection is ignored.
        h.handle(input, now);
        h.handle(msg(c, SignalMessage::Reflect), now);
        assert!(drain(&mut h).is_empty(), "{what}");
    }
}

#[test]
fn decoder_results_map_to_inputs() {
    let c = ConnId(4);
    let ping = SignalMessage::Ping { timestamp_ms: 1 };
    let cases: Vec<(Result<Decoded, SignalError>, &str)> = vec![
        (Ok(Decoded::Message(ping)), "Frame"),
        (
            Ok(Decoded::Unknown {
                type_name: "t".into(),
            }),
            "Frame",
        ),
        (wzp_proto::signal::decode_message(b"{"), "Frame"),
        (Err(SignalError::FrameTooLarge { len: 5 }), "FrameTooLarge"),
        (Err(SignalError::Poisoned), "StreamError"),
        (
            Err(SignalError::Truncated { need: 9, have: 3 }),
            "StreamError",
        ),
    ];
    for (r, want) in cases {
        let got = format!("{:?}", Input::from_decoder(c, r));
        assert!(got.starts_with(want), "{got}");
    }
}

#[test]
fn timers_are_armed_only_while_there_is_something_to_time() {
    let now = Instant::now();
    let mut h = hub();
    assert_eq!(h.poll_timeout(), None);
    let c = connect(&mut h, 1, now);
    assert_eq!(h.poll_timeout(), Some(now + Duration::from_secs(10)));
    h.handle(Input::Disconnected { conn: c }, now);
    h.handle_timeout(now + Duration::from_secs(10));
    assert!(
        drain(&mut h).is_empty(),
        "a gone connection is not closed again"
    );
    assert_eq!(h.poll_timeout(), None);
}
