//! Sample messages shared by the signaling tests.
#![allow(dead_code)]

use wzp_proto::signal::{AcceptMode, ErrorCode, HangupReason, RoomParticipant, SignalMessage};
use wzp_proto::{Fingerprint, TlsFingerprint};

pub fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 16])
}

pub fn tls(n: u8) -> TlsFingerprint {
    TlsFingerprint([n; 32])
}

pub fn participant(n: u8) -> RoomParticipant {
    RoomParticipant {
        fingerprint: fp(n),
        alias: Some(format!("user {n}")),
        relay_label: if n % 2 == 0 {
            Some("Relay B".into())
        } else {
            None
        },
        muted: n % 3 == 0,
        recording: n % 3 == 1,
        senders: if n % 2 == 0 {
            vec![u32::from(n) << 24 | 7]
        } else {
            Vec::new()
        },
    }
}

/// One fully populated sample of every variant, plus minimal ones.
pub fn samples() -> Vec<SignalMessage> {
    use SignalMessage as M;
    vec![
        M::Hello {
            version: 1,
            min_version: 1,
            software: Some("wzp-client 0.1".into()),
            features: vec!["dred".into()],
        },
        M::hello(None),
        M::CallOffer {
            room: Some(wzp_proto::room_hash("lobby")),
            call_id: Some("c1".into()),
            handshake: Some(vec![1, 2, 3, 0xff]),
            supported_codecs: vec!["opus".into(), "codec2_1200".into()],
            alias: Some("Swift Wolf".into()),
        },
        M::CallOffer {
            room: None,
            call_id: None,
            handshake: None,
            supported_codecs: vec![],
            alias: None,
        },
        M::CallAnswer {
            call_id: Some("c1".into()),
            handshake: Some(vec![9; 130]),
            chosen_codec: Some("opus".into()),
            alias: Some("Bob".into()),
        },
        M::CallConfirm {
            call_id: Some("c1".into()),
            handshake: vec![3; 66],
        },
        M::Hangup {
            reason: HangupReason::Busy,
            call_id: Some("c1".into()),
            message: Some("in another call".into()),
        },
        M::Hangup {
            reason: HangupReason::Normal,
            call_id: None,
            message: None,
        },
        M::Hangup {
            reason: HangupReason::Declined,
            call_id: None,
            message: None,
        },
        M::Hangup {
            reason: HangupReason::Timeout,
            call_id: None,
            message: None,
        },
        M::Hangup {
            reason: HangupReason::Error,
            call_id: None,
            message: None,
        },
        M::Hangup {
            reason: HangupReason::NotOnline,
            call_id: Some("d1".into()),
            message: Some("nobody is registered as that fingerprint".into()),
        },
        M::Ping {
            timestamp_ms: u64::MAX,
        },
        M::Pong { timestamp_ms: 0 },
        M::RoomUpdate {
            room: Some("abc".into()),
            count: 3,
            participants: vec![participant(1), participant(2), participant(3)],
            bridged: true,
        },
        M::RegisterPresence {
            identity_pub: [7; 32],
            signature: [8; 64],
            timestamp_ms: 1_700_000_000_000,
            alias: Some("Alice".into()),
            nonce: Some([9; 32]),
            fingerprint: Some(fp(7)),
            device: Some([0x5e; 8]),
            call_waiting: true,
            message_key: Some(Box::new(message_key())),
        },
        M::RegisterPresence {
            identity_pub: [7; 32],
            signature: [8; 64],
            timestamp_ms: 0,
            alias: None,
            nonce: None,
            fingerprint: None,
            device: None,
            call_waiting: false,
            message_key: None,
        },
        M::RegisterPresenceAck {
            success: false,
            error: Some("bad signature".into()),
            relay_build: Some("abc1234".into()),
            observed_addr: None,
            relay_label: None,
            version: None,
            fingerprint: None,
            mapping_port: None,
            mapping_token: None,
            devices: None,
        },
        M::RegisterPresenceAck {
            success: true,
            error: None,
            relay_build: None,
            observed_addr: Some("203.0.113.9:51000".parse().unwrap()),
            relay_label: Some("Relay A".into()),
            version: Some("0.1.0 (abc1234)".into()),
            fingerprint: Some(fp(7)),
            mapping_port: Some(4434),
            mapping_token: Some([0x3c; 16]),
            devices: Some(2),
        },
        M::PresenceChallenge { nonce: [0xa5; 32] },
        M::Error {
            code: ErrorCode::UnknownType,
            message: "unknown message type video_offer; skipped".into(),
            in_reply_to: Some("video_offer".into()),
        },
        M::Error {
            code: ErrorCode::NotInCall,
            message: String::new(),
            in_reply_to: None,
        },
        M::DirectCallOffer {
            call_id: "d1".into(),
            caller_fingerprint: fp(1),
            target_fingerprint: fp(2),
            caller_alias: Some("Alice".into()),
            handshake: Some(vec![1; 66]),
            supported_codecs: vec!["opus".into()],
            caller_reflexive_addr: Some("203.0.113.5:40000".parse().unwrap()),
            caller_local_addrs: vec!["192.168.1.20:40000".parse().unwrap()],
        },
        M::DirectCallAnswer {
            call_id: "d1".into(),
            accept_mode: AcceptMode::AcceptTrusted,
            handshake: Some(vec![2; 130]),
            chosen_codec: Some("opus".into()),
            callee_reflexive_addr: Some("[2001:db8::1]:5000".parse().unwrap()),
            callee_local_addrs: vec![
                "10.1.2.3:5000".parse().unwrap(),
                "[fd00::3]:5000".parse().unwrap(),
            ],
            keep_current: false,
        },
        M::DirectCallAnswer {
            call_id: "d1".into(),
            accept_mode: AcceptMode::AcceptGeneric,
            handshake: None,
            chosen_codec: None,
            callee_reflexive_addr: None,
            callee_local_addrs: Vec::new(),
            keep_current: true,
        },
        M::DirectCallAnswer {
            call_id: "d1".into(),
            accept_mode: AcceptMode::Reject,
            handshake: None,
            chosen_codec: None,
            callee_reflexive_addr: None,
            callee_local_addrs: Vec::new(),
            keep_current: false,
        },
        M::CallRinging {
            call_id: "d1".into(),
            waiting: false,
        },
        M::CallRinging {
            call_id: "d2".into(),
            waiting: true,
        },
        M::CallSetup {
            call_id: "d1".into(),
            room: "call-d1".into(),
            relay_addr: "relay.example:4433".into(),
            peer_direct_addr: Some("198.51.100.7:1234".parse().unwrap()),
            peer_local_addrs: vec!["192.168.1.20:1234".parse().unwrap()],
            peer_fingerprint: Some(fp(2)),
            peer_mapping: wzp_proto::mapping::Mapping::Independent,
            observed_addr: Some("198.51.100.7:5000".parse().unwrap()),
        },
        M::Reflect,
        M::ReflectResponse {
            observed_addr: "127.0.0.1:5555".parse().unwrap(),
            mapping_port: None,
            mapping_token: None,
        },
        M::ReflectResponse {
            observed_addr: "127.0.0.1:5555".parse().unwrap(),
            mapping_port: Some(5556),
            mapping_token: Some([0x11; 16]),
        },
        M::MappingObserved {
            observed_addr: "203.0.113.9:40001".parse().unwrap(),
        },
        M::FederationHello {
            tls_fingerprint: tls(0xab),
            label: Some("Pangolin EU".into()),
        },
        M::GlobalRoomActive {
            room: "r".into(),
            participants: vec![participant(4)],
        },
        M::GlobalRoomInactive {
            room: "r".into(),
            participants: vec![],
        },
        M::FederatedSignalForward {
            inner: Box::new(M::DirectCallOffer {
                call_id: "d2".into(),
                caller_fingerprint: fp(3),
                target_fingerprint: fp(4),
                caller_alias: None,
                handshake: None,
                supported_codecs: vec![],
                caller_reflexive_addr: None,
                caller_local_addrs: vec![],
            }),
            origin_relay_fp: tls(1),
        },
        M::FederatedSignalForward {
            inner: Box::new(M::FederatedSignalForward {
                inner: Box::new(M::Reflect),
                origin_relay_fp: tls(2),
            }),
            origin_relay_fp: tls(3),
        },
        M::PresenceUpdate {
            fingerprints: vec![fp(5), fp(6)],
            relay_addr: "10.0.0.1:4433".into(),
        },
        M::RouteQuery {
            fingerprint: fp(5),
            ttl: 3,
        },
        M::RouteResponse {
            fingerprint: fp(5),
            found: true,
            relay_chain: vec!["10.0.0.1:4433".into(), "10.0.0.2:4433".into()],
        },
        M::SessionForward {
            session_id: "s1".into(),
            target_fingerprint: fp(9),
            source_relay: "10.0.0.1:4433".into(),
        },
        M::SessionForwardAck {
            session_id: "s1".into(),
            room_name: "call-s1".into(),
        },
        M::QualityUpdate {
            loss_pct: 2.5,
            rtt_ms: 84,
            jitter_ms: 12,
            bitrate_cap_kbps: Some(24),
            recommended_codec: Some("codec2_3200".into()),
            media_path: Some("direct".into()),
        },
        M::LossRecoveryUpdate {
            dred_reconstructions: 10,
            classical_plc_invocations: 2,
            frames_decoded: u64::MAX,
            lbrr_recoveries: 3,
        },
        M::Join(Box::new(wzp_proto::join::Join::signed(
            &wzp_proto::Seed::from_bytes([5; 32]).identity(),
            &wzp_proto::room_hash("lobby"),
            &wzp_proto::TlsFingerprint([9; 32]),
            Some("ann".into()),
            1_700_000_000_000,
        ))),
        M::MemberState {
            muted: true,
            recording: false,
        },
        M::MemberState {
            muted: false,
            recording: true,
        },
        M::MissedCall {
            call_id: "k7".into(),
            caller_fingerprint: fp(3),
            caller_alias: Some("carol".into()),
        },
        M::MissedCall {
            call_id: "k8".into(),
            caller_fingerprint: fp(4),
            caller_alias: None,
        },
        M::MessageKeyQuery { fingerprint: fp(5) },
        M::MessageKey {
            fingerprint: fp(5),
            key: Some(Box::new(message_key())),
        },
        M::MessageKey {
            fingerprint: fp(6),
            key: None,
        },
        M::VoiceMessage {
            id: "m1".into(),
            to: Some(fp(5)),
            from: None,
            age_ms: None,
            part: 0,
            parts: 2,
            data: vec![1, 2, 0xff],
        },
        M::VoiceMessage {
            id: "m1".into(),
            to: None,
            from: Some(fp(4)),
            age_ms: Some(90_000),
            part: 1,
            parts: 2,
            data: vec![0],
        },
        M::VoiceMessageStored { id: "m1".into() },
        M::VoiceMessages { count: 3 },
        M::FetchVoiceMessages,
        M::CallHold {
            call_id: "c1".into(),
            sealed: vec![7; wzp_proto::hold::SEALED_HOLD_LEN],
        },
        M::DeleteVoiceMessage {
            id: "m1".into(),
            from: Some(fp(4)),
        },
        M::DeleteVoiceMessage {
            id: "m2".into(),
            from: None,
        },
    ]
}

/// A person's signed message key.
pub fn message_key() -> wzp_proto::voice_message::MessageKey {
    wzp_proto::voice_message::MessageKey::of(&wzp_proto::Seed::from_bytes([5; 32]).identity())
}
