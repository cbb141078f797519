//! Signal messages: every variant round-trips; old and new peers interoperate.

mod common;

use std::collections::BTreeSet;

use common::{fp, samples};
use wzp_proto::signal::{
    decode_message, encode_frame, negotiate_version, AcceptMode, HangupReason, MESSAGE_TYPES,
    SIGNAL_VERSION,
};
use wzp_proto::{Decoded, SignalError, SignalMessage};

fn decode_json(json: &str) -> Decoded {
    decode_message(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn msg(json: &str) -> SignalMessage {
    match decode_json(json) {
        Decoded::Message(m) => m,
        other => panic!("{json}: decoded as {other:?}"),
    }
}

#[test]
fn every_variant_round_trips_through_a_frame() {
    for m in samples() {
        let frame = encode_frame(&m).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(
            decode_message(&frame[4..]).unwrap(),
            Decoded::Message(m.clone()),
            "{}",
            String::from_utf8_lossy(&frame[4..])
        );
    }
}

#[test]
fn samples_cover_every_variant_and_type_names_match_json() {
    let mut seen = BTreeSet::new();
    for m in samples() {
        let json: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(json["type"], m.type_name());
        seen.insert(m.type_name());
    }
    let all: BTreeSet<&str> = MESSAGE_TYPES.iter().copied().collect();
    assert_eq!(seen, all);
}

#[test]
fn optional_fields_are_omitted_when_empty() {
    let json = String::from_utf8(
        encode_frame(&SignalMessage::DirectCallAnswer {
            call_id: "x".into(),
            accept_mode: AcceptMode::AcceptGeneric,
            handshake: None,
            chosen_codec: None,
            callee_reflexive_addr: None,
            callee_local_addrs: Vec::new(),
            keep_current: false,
        })
        .unwrap()[4..]
            .to_vec(),
    )
    .unwrap();
    assert_eq!(
        json,
        r#"{"type":"direct_call_answer","call_id":"x","accept_mode":"accept_generic"}"#
    );
}

#[test]
fn old_json_without_optional_fields_parses() {
    // As written by a peer that predates reflexive addresses, aliases, etc.
    assert_eq!(
        msg(r#"{"type":"direct_call_offer","call_id":"d1",
                "caller_fingerprint":"0101:0101:0101:0101:0101:0101:0101:0101",
                "target_fingerprint":"02020202020202020202020202020202"}"#),
        SignalMessage::DirectCallOffer {
            call_id: "d1".into(),
            caller_fingerprint: fp(1),
            target_fingerprint: fp(2),
            caller_alias: None,
            handshake: None,
            supported_codecs: vec![],
            caller_reflexive_addr: None,
            caller_local_addrs: vec![],
        }
    );
    assert_eq!(
        msg(r#"{"type":"call_setup","call_id":"d1","room":"call-d1","relay_addr":"1.2.3.4:4433"}"#),
        SignalMessage::CallSetup {
            peer_mapping: Default::default(),
            observed_addr: None,
            call_id: "d1".into(),
            room: "call-d1".into(),
            relay_addr: "1.2.3.4:4433".into(),
            peer_direct_addr: None,
            peer_local_addrs: vec![],
            peer_fingerprint: None,
        }
    );
    // Before member state: a bare member_state reads as unmuted; one from
    // before recording notices, as not recording.
    assert_eq!(
        msg(r#"{"type":"member_state"}"#),
        SignalMessage::MemberState {
            muted: false,
            recording: false
        }
    );
    assert_eq!(
        msg(r#"{"type":"member_state","muted":true}"#),
        SignalMessage::MemberState {
            muted: true,
            recording: false
        }
    );
    assert_eq!(
        msg(r#"{"type":"loss_recovery_update"}"#),
        SignalMessage::LossRecoveryUpdate {
            dred_reconstructions: 0,
            classical_plc_invocations: 0,
            frames_decoded: 0,
            lbrr_recoveries: 0,
        }
    );
    assert_eq!(
        msg(r#"{"type":"hello","version":1}"#),
        SignalMessage::hello(None)
    );
    assert_eq!(
        msg(r#"{"type":"call_offer"}"#),
        SignalMessage::CallOffer {
            room: None,
            call_id: None,
            handshake: None,
            supported_codecs: vec![],
            alias: None
        }
    );
    assert_eq!(
        msg(r#"{"type":"room_update","count":0}"#),
        SignalMessage::RoomUpdate {
            room: None,
            count: 0,
            participants: vec![],
            bridged: false
        }
    );
    assert_eq!(
        msg(r#"{"type":"hangup","reason":"normal"}"#),
        SignalMessage::Hangup {
            reason: HangupReason::Normal,
            call_id: None,
            message: None
        }
    );
}

#[test]
fn explicit_nulls_for_optional_fields_parse() {
    assert_eq!(
        msg(r#"{"type":"call_answer","call_id":null,"handshake":null,"alias":null}"#),
        SignalMessage::CallAnswer {
            call_id: None,
            handshake: None,
            chosen_codec: None,
            alias: None
        }
    );
}

#[test]
fn unknown_fields_are_ignored() {
    assert_eq!(
        msg(r#"{"type":"ping","timestamp_ms":5,"future_field":{"deep":[1,2,3]},"x":null}"#),
        SignalMessage::Ping { timestamp_ms: 5 }
    );
    assert_eq!(
        msg(r#"{"type":"room_update","count":1,"participants":[
            {"fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303","avatar":"x.png"}]}"#),
        SignalMessage::RoomUpdate {
            room: None,
            count: 1,
            participants: vec![wzp_proto::signal::RoomParticipant::new(fp(3))],
            bridged: false
        }
    );
}

#[test]
fn unknown_variant_is_reported_not_fatal() {
    assert_eq!(
        decode_json(r#"{"type":"video_offer","codec":"av1","n":1}"#),
        Decoded::Unknown {
            type_name: "video_offer".into()
        }
    );
    assert_eq!(
        decode_json(r#"{"type":"unit_thing"}"#),
        Decoded::Unknown {
            type_name: "unit_thing".into()
        }
    );
}

#[test]
fn unknown_inner_of_a_forward_decodes_as_unrecognized_and_cannot_be_reencoded() {
    let m = msg(
        r#"{"type":"federated_signal_forward","inner":{"type":"phase9_thing","a":1},
        "origin_relay_fp":"0101010101010101010101010101010101010101010101010101010101010101"}"#,
    );
    let SignalMessage::FederatedSignalForward { inner, .. } = &m else {
        panic!("{m:?}")
    };
    assert_eq!(**inner, SignalMessage::Unrecognized);
    assert!(matches!(encode_frame(&m), Err(SignalError::Encode(_))));
    assert!(matches!(
        encode_frame(&SignalMessage::Unrecognized),
        Err(SignalError::Encode(_))
    ));
}

#[test]
fn unknown_enum_values() {
    // A newer hangup reason degrades to Unknown rather than failing the frame.
    assert_eq!(
        msg(r#"{"type":"hangup","reason":"moved_to_other_device"}"#),
        SignalMessage::Hangup {
            reason: HangupReason::Unknown,
            call_id: None,
            message: None
        }
    );
}

#[test]
fn malformed_messages_are_errors() {
    for bad in [
        "",
        "null",
        "[]",
        "{}",
        r#"{"type":5}"#,
        r#"{"no_type":"ping"}"#,
        r#"{"type":"ping"}"#,
        r#"{"type":"ping","timestamp_ms":-1}"#,
        r#"{"type":"ping","timestamp_ms":"5"}"#,
        r#"{"type":"route_query","fingerprint":"zz","ttl":1}"#,
        r#"{"type":"route_query","fingerprint":"0101","ttl":1}"#,
        r#"{"type":"route_query","fingerprint":"01010101010101010101010101010101","ttl":300}"#,
        r#"{"type":"reflect_response","observed_addr":"not an addr"}"#,
        r#"{"type":"call_confirm","handshake":"xyz"}"#,
        r#"{"type":"register_presence","identity_pub":"00","signature":"00"}"#,
        r#"{"type":"direct_call_answer","call_id":"x","accept_mode":"maybe"}"#,
        "{\"type\":\"ping\",\"timestamp_ms\":1",
        "\u{feff}garbage",
    ] {
        let r = decode_message(bad.as_bytes());
        assert!(
            matches!(r, Err(SignalError::Malformed(_))),
            "{bad:?} gave {r:?}"
        );
        assert!(!r.unwrap_err().is_fatal());
    }
    assert!(matches!(
        decode_message(&[0xff, 0xfe, 0x00]),
        Err(SignalError::Malformed(_))
    ));
}

#[test]
fn fingerprints_in_json_accept_any_case_and_colons() {
    let upper = msg(
        r#"{"type":"route_query","fingerprint":"ABCD:EF01:2345:6789:ABCD:EF01:2345:6789","ttl":1}"#,
    );
    let bare =
        msg(r#"{"type":"route_query","fingerprint":"abcdef0123456789abcdef0123456789","ttl":1}"#);
    assert_eq!(upper, bare);
    let json = String::from_utf8(encode_frame(&bare).unwrap()[4..].to_vec()).unwrap();
    assert!(
        json.contains("abcd:ef01:2345:6789:abcd:ef01:2345:6789"),
        "{json}"
    );
}

#[test]
fn version_negotiation() {
    let hello = |version, min_version| {
        Decoded::Message(SignalMessage::Hello {
            version,
            min_version,
            software: None,
            features: vec![],
        })
    };
    assert_eq!(negotiate_version(&hello(1, 1)).unwrap(), 1);
    // A newer peer that still accepts v1 talks v1 with us.
    assert_eq!(negotiate_version(&hello(5, 1)).unwrap(), SIGNAL_VERSION);
    // A newer peer that dropped v1: mismatch, fatal.
    let e = negotiate_version(&hello(5, 3)).unwrap_err();
    assert!(matches!(
        e,
        SignalError::VersionMismatch {
            their_min: 3,
            their_max: 5,
            ..
        }
    ));
    assert!(e.is_fatal());
    assert!(e.to_string().contains("upgrade"));
    // Nonsense ranges.
    assert!(negotiate_version(&hello(0, 0)).is_err());
    assert!(negotiate_version(&hello(1, 2)).is_err());
    // First message must be Hello.
    assert!(matches!(
        negotiate_version(&Decoded::Message(SignalMessage::Ping { timestamp_ms: 1 })),
        Err(SignalError::ExpectedHello { got }) if got == "ping"
    ));
    assert!(matches!(
        negotiate_version(&Decoded::Unknown { type_name: "hello2".into() }),
        Err(SignalError::ExpectedHello { got }) if got == "hello2"
    ));
}

#[test]
fn presence_signature_round_trip() {
    let id = wzp_proto::Seed::from_bytes([4; 32]).identity();
    let bytes = wzp_proto::signal::presence_signed_bytes(&id.public_key(), 1234);
    assert!(bytes.starts_with(b"wzp-presence-v1"));
    let sig = id.sign(&bytes);
    wzp_proto::identity::verify_signature(&id.public_key(), &bytes, &sig).unwrap();
    let other = wzp_proto::signal::presence_signed_bytes(&id.public_key(), 1235);
    assert!(wzp_proto::identity::verify_signature(&id.public_key(), &other, &sig).is_err());
}

#[test]
fn registration_messages_from_older_peers_parse() {
    // A version-1 registration: no nonce, no claimed fingerprint.
    let old = format!(
        r#"{{"type":"register_presence","identity_pub":"{}","signature":"{}","timestamp_ms":5}}"#,
        "07".repeat(32),
        "08".repeat(64)
    );
    assert_eq!(
        msg(&old),
        SignalMessage::RegisterPresence {
            identity_pub: [7; 32],
            signature: [8; 64],
            timestamp_ms: 5,
            alias: None,
            nonce: None,
            fingerprint: None,
            device: None,
            call_waiting: false,
            message_key: None,
        }
    );
    // An ack from a relay that predates the relay's view fields.
    assert_eq!(
        msg(r#"{"type":"register_presence_ack","success":true}"#),
        SignalMessage::RegisterPresenceAck {
            mapping_port: None,
            mapping_token: None,
            success: true,
            error: None,
            relay_build: None,
            observed_addr: None,
            relay_label: None,
            version: None,
            fingerprint: None,
            devices: None,
        }
    );
    // An error with nothing but its code.
    assert_eq!(
        msg(r#"{"type":"error","code":"not_in_call"}"#),
        SignalMessage::Error {
            code: wzp_proto::signal::ErrorCode::NotInCall,
            message: String::new(),
            in_reply_to: None,
        }
    );
    // A newer error code or hangup reason degrades instead of failing.
    assert_eq!(
        msg(r#"{"type":"error","code":"quota_exceeded","message":"m"}"#),
        SignalMessage::Error {
            code: wzp_proto::signal::ErrorCode::Unknown,
            message: "m".into(),
            in_reply_to: None,
        }
    );
    assert_eq!(
        msg(r#"{"type":"hangup","reason":"not_online","call_id":"d1"}"#),
        SignalMessage::Hangup {
            reason: HangupReason::NotOnline,
            call_id: Some("d1".into()),
            message: None,
        }
    );
}

#[test]
fn new_messages_have_the_documented_json() {
    let json =
        |m: &SignalMessage| String::from_utf8(encode_frame(m).unwrap()[4..].to_vec()).unwrap();
    assert_eq!(
        json(&SignalMessage::PresenceChallenge { nonce: [0xab; 32] }),
        format!(
            r#"{{"type":"presence_challenge","nonce":"{}"}}"#,
            "ab".repeat(32)
        )
    );
    assert_eq!(
        json(&SignalMessage::Error {
            code: wzp_proto::signal::ErrorCode::UnknownType,
            message: "skipped".into(),
            in_reply_to: Some("video_offer".into()),
        }),
        r#"{"type":"error","code":"unknown_type","message":"skipped","in_reply_to":"video_offer"}"#
    );
    let reg = json(&SignalMessage::RegisterPresence {
        identity_pub: [1; 32],
        signature: [2; 64],
        timestamp_ms: 0,
        alias: None,
        nonce: Some([3; 32]),
        fingerprint: None,
        device: None,
        call_waiting: false,
        message_key: None,
    });
    assert!(
        reg.contains(&format!(r#""nonce":"{}""#, "03".repeat(32))),
        "{reg}"
    );
    assert!(!reg.contains("fingerprint"), "{reg}");
    assert!(!reg.contains("device"), "{reg}");
    // A newer client's device goes as hex; an older relay skips it.
    let with_device = json(&SignalMessage::RegisterPresence {
        identity_pub: [1; 32],
        signature: [2; 64],
        timestamp_ms: 0,
        alias: None,
        nonce: Some([3; 32]),
        fingerprint: None,
        device: Some([0x0f, 1, 2, 3, 4, 5, 6, 0xff]),
        call_waiting: false,
        message_key: None,
    });
    assert!(
        with_device.contains(r#""device":"0f010203040506ff""#),
        "{with_device}"
    );
    assert!(!with_device.contains("call_waiting"), "{with_device}");
    // Call waiting: absent means the older behaviour on both messages.
    assert_eq!(
        msg(r#"{"type":"call_ringing","call_id":"d1"}"#),
        SignalMessage::CallRinging {
            call_id: "d1".into(),
            waiting: false,
        }
    );
    assert_eq!(
        json(&SignalMessage::CallRinging {
            call_id: "d1".into(),
            waiting: true,
        }),
        r#"{"type":"call_ringing","call_id":"d1","waiting":true}"#
    );
    assert_eq!(
        msg(r#"{"type":"hangup","reason":"answered_elsewhere","call_id":"d1"}"#),
        SignalMessage::Hangup {
            reason: HangupReason::AnsweredElsewhere,
            call_id: Some("d1".into()),
            message: None,
        }
    );
}

#[test]
fn malformed_new_messages_are_errors() {
    // A registration whose device id is not 16 hex digits.
    let registration = |device: &str| {
        format!(
            r#"{{"type":"register_presence","identity_pub":"{}","signature":"{}","device":{device}}}"#,
            "07".repeat(32),
            "08".repeat(64)
        )
    };
    let bad_devices = [
        r#""0102""#,
        r#""0f010203040506ff00""#,
        r#""zz010203040506ff""#,
        r#""""#,
        "5",
        "[1,2,3,4,5,6,7,8]",
    ]
    .map(registration);
    for bad in bad_devices.into_iter().chain([
        r#"{"type":"presence_challenge"}"#.to_string(),
        r#"{"type":"presence_challenge","nonce":"00"}"#.to_string(),
        format!(
            r#"{{"type":"presence_challenge","nonce":"{}"}}"#,
            "zz".repeat(32)
        ),
        r#"{"type":"error"}"#.to_string(),
        r#"{"type":"error","code":5}"#.to_string(),
        format!(
            r#"{{"type":"register_presence","identity_pub":"{}","signature":"{}","nonce":"0102"}}"#,
            "07".repeat(32),
            "08".repeat(64)
        ),
        format!(
            r#"{{"type":"register_presence","identity_pub":"{}","signature":"{}","fingerprint":"0101"}}"#,
            "07".repeat(32),
            "08".repeat(64)
        ),
        r#"{"type":"register_presence_ack","success":true,"observed_addr":"nowhere"}"#.to_string(),
        r#"{"type":"register_presence_ack","success":true,"devices":-1}"#.to_string(),
        r#"{"type":"call_hold","call_id":"c1"}"#.to_string(),
        r#"{"type":"call_hold","sealed":"00"}"#.to_string(),
        r#"{"type":"call_hold","call_id":"c1","sealed":"zz"}"#.to_string(),
        r#"{"type":"register_presence_ack","success":true,"devices":"2"}"#.to_string(),
        r#"{"type":"member_state","muted":"yes"}"#.to_string(),
        r#"{"type":"member_state","muted":1}"#.to_string(),
        r#"{"type":"member_state","recording":"yes"}"#.to_string(),
        r#"{"type":"missed_call","caller_fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303"}"#.to_string(),
        r#"{"type":"missed_call","call_id":"k1"}"#.to_string(),
        r#"{"type":"missed_call","call_id":"k1","caller_fingerprint":"nobody"}"#.to_string(),
        r#"{"type":"missed_call","call_id":7,"caller_fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303"}"#.to_string(),
        r#"{"type":"member_state","recording":null}"#.to_string(),
        r#"{"type":"voice_message","id":"m1","part":0,"parts":1,"data":"zz"}"#.to_string(),
        r#"{"type":"voice_message","id":"m1","part":-1,"parts":1,"data":"00"}"#.to_string(),
        r#"{"type":"voice_message","id":"m1","part":0,"data":"00"}"#.to_string(),
        r#"{"type":"voice_message","id":"m1","part":0,"parts":1}"#.to_string(),
        r#"{"type":"voice_message","id":"m1","to":"nobody","part":0,"parts":1,"data":"00"}"#.to_string(),
        r#"{"type":"voice_messages","count":-1}"#.to_string(),
        r#"{"type":"delete_voice_message"}"#.to_string(),
        r#"{"type":"message_key_query"}"#.to_string(),
        r#"{"type":"message_key","fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303","key":{"identity_pub":"00"}}"#.to_string(),
        r#"{"type":"message_key","key":null}"#.to_string(),
        r#"{"type":"call_ringing","call_id":"d1","waiting":"yes"}"#.to_string(),
        r#"{"type":"call_ringing","call_id":"d1","waiting":1}"#.to_string(),
        r#"{"type":"call_ringing","waiting":true}"#.to_string(),
        format!(
            r#"{{"type":"register_presence","identity_pub":"{}","signature":"{}","call_waiting":"on"}}"#,
            "07".repeat(32),
            "08".repeat(64)
        ),
        r#"{"type":"room_update","count":1,"participants":[{"fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303","recording":1}]}"#.to_string(),
        r#"{"type":"room_update","count":1,"participants":[{"fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303","senders":[-1]}]}"#.to_string(),
        r#"{"type":"room_update","count":1,"participants":[{"fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303","senders":[4294967296]}]}"#.to_string(),
        r#"{"type":"room_update","count":1,"participants":[{"fingerprint":"0303:0303:0303:0303:0303:0303:0303:0303","muted":null}]}"#.to_string(),
    ]) {
        let r = decode_message(bad.as_bytes());
        assert!(
            matches!(r, Err(SignalError::Malformed(_))),
            "{bad:?} gave {r:?}"
        );
    }
}

#[test]
fn presence_challenge_signature_binds_nonce_relay_and_key() {
    use wzp_proto::identity::verify_signature;
    use wzp_proto::signal::presence_challenge_signed_bytes;
    let id = wzp_proto::Seed::from_bytes([4; 32]).identity();
    let relay = common::tls(1);
    let bytes = presence_challenge_signed_bytes(&[9; 32], &relay, &id.public_key());
    assert_eq!(&bytes[..15], b"wzp-presence-v2");
    assert_eq!(&bytes[15..47], &[9; 32]);
    assert_eq!(&bytes[47..79], &relay.0);
    assert_eq!(&bytes[79..], &id.public_key());
    let sig = id.sign(&bytes);
    verify_signature(&id.public_key(), &bytes, &sig).unwrap();
    for other in [
        presence_challenge_signed_bytes(&[8; 32], &relay, &id.public_key()),
        presence_challenge_signed_bytes(&[9; 32], &common::tls(2), &id.public_key()),
    ] {
        assert!(verify_signature(&id.public_key(), &other, &sig).is_err());
    }
}
