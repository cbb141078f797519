//! `crypto.seal` / `crypto.open`: round trip through the whole wire path,
//! tampering, reordering, replays, epoch rollover, key sources, sender table.

mod wire_support;

use std::sync::Arc;

use proptest::prelude::*;
use wire_support::*;
use wzp_engine::prelude::*;
use wzp_proto::handshake::{EphemeralKey, Initiator, Responder, SessionKeys};
use wzp_proto::identity::Seed;
use wzp_proto::{CodecId, Flags, MediaHeader, MediaPacket, QualityReport, HEADER_LEN, TRAILER_LEN};
use wzp_stages::crypto::TAG_LEN;
use wzp_stages::wire::packetize::MAX_PAYLOAD;
use wzp_stages::wire::QualityCell;

wzp_engine::install_alloc_checker!();

/// Sealed packets of one sender for the given seqs, sealed in one stream.
fn sealed(sender: u32, seqs: &[u32], key: &[(&str, ParamValue)]) -> Vec<Vec<u8>> {
    let mut pack = build("wire.packetize", &[("sender_id", i(i64::from(sender)))]);
    let mut seal = build("crypto.seal", key);
    let mut out = Vec::new();
    for &seq in seqs {
        let plain = pack.run_frames(&[frame(seq, 30)]);
        out.extend(seal.run_packets(&plain));
    }
    out
}

/// A feedback report frame (codec 0x40) numbered `seq`.
fn report(seq: u32) -> (FrameMeta, Vec<u8>) {
    let (mut meta, payload) = frame(seq, 34);
    meta.codec = CodecId::FEEDBACK.0;
    (meta, payload)
}

/// Sealed feedback reports of one sender for the given report seqs.
fn report_packets(sender: u32, seqs: &[u32]) -> Vec<Vec<u8>> {
    let mut pack = build("wire.packetize", &[("sender_id", i(i64::from(sender)))]);
    let mut seal = build("crypto.seal", &test_key());
    seqs.iter()
        .flat_map(|&q| seal.run_packets(&pack.run_frames(&[report(q)])))
        .collect()
}

fn test_key() -> Vec<(&'static str, ParamValue)> {
    vec![("key", s(TEST_KEY))]
}

fn seq_of(packet: &[u8]) -> u32 {
    MediaHeader::parse(packet).unwrap().0.seq
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn round_trip_preserves_every_field(
        seq in any::<u32>(),
        timestamp in any::<u32>(),
        stream in any::<u32>(),
        codec in any::<u8>(),
        repair in any::<bool>(),
        start in any::<bool>(),
        block in any::<u16>(),
        symbol in any::<u16>(),
        ratio in any::<u8>(),
        epoch in any::<u8>(),
        responder in any::<bool>(),
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD - TRAILER_LEN),
        report in proptest::option::of((0u8..=100, any::<u8>(), any::<u8>(), any::<u8>())),
    ) {
        let cell = Arc::new(QualityCell::new());
        let report = report.map(|(l, r, j, c)| QualityReport {
            loss_pct: l, rtt_4ms: r, jitter_ms: j, bitrate_cap_kbps: c,
        });
        if let Some(r) = report {
            cell.set(r);
        }
        let mut res = Resources::new();
        res.insert("qr_out", cell);
        let received = Arc::new(QualityCell::new());
        res.insert("qr_in", received.clone());
        let mut pack = build_with("wire.packetize", &[
            ("sender_id", i(0)),
            ("key_epoch", i(i64::from(epoch))),
            ("direction", s(if responder { "responder" } else { "initiator" })),
            ("quality_report", s("qr_out")),
            ("quality_every", i(1)),
        ], &res);
        let mut seal = build("crypto.seal", &test_key());
        let mut open = build("crypto.open", &test_key());
        let mut depack = build_with("wire.depacketize", &[("quality_report", s("qr_in"))], &res);

        let flags = if repair { frame_flags::REPAIR } else { 0 }
            | if start { frame_flags::STREAM_START } else { 0 };
        let meta = FrameMeta {
            seq, timestamp, stream, codec, flags, duration_ms: 20,
            fec: FecTag { block, symbol, source_symbols: 0, ratio_percent: ratio },
            arrival_ns: 0,
        };
        let plain = pack.run_frames(&[(meta, payload.clone())]);
        if codec == CodecId::WITH_REPAIR.0 {
            // A packet's codec (a repair riding in a source packet), never
            // a frame's: not sent.
            prop_assert!(plain.is_empty());
            prop_assert_eq!(pack.counter("wire_codec_drops"), 1);
            return Ok(());
        }
        let wire = seal.run_packets(&plain);
        if codec == CodecId::FEEDBACK.0 && repair {
            // Reports are never FEC-protected: refused, not sealed.
            prop_assert!(wire.is_empty());
            prop_assert_eq!(seal.counter("malformed"), 1);
            return Ok(());
        }
        prop_assert_eq!(wire.len(), 1);
        let trailer_len = if report.is_some() { TRAILER_LEN } else { 0 };
        prop_assert_eq!(wire[0].len(), HEADER_LEN + payload.len() + TAG_LEN + trailer_len);
        // The header and trailer travel unchanged and in clear.
        prop_assert_eq!(&wire[0][..HEADER_LEN], &plain[0][..HEADER_LEN]);
        prop_assert_eq!(&wire[0][wire[0].len() - trailer_len..], &plain[0][plain[0].len() - trailer_len..]);
        let on_wire = MediaPacket::parse(&wire[0]).unwrap();
        prop_assert_eq!(on_wire.header.key_epoch, epoch);
        prop_assert_eq!(on_wire.header.flags.contains(Flags::FROM_RESPONDER), responder);
        if payload.len() >= 16 {
            prop_assert_ne!(&on_wire.payload[..payload.len()], &payload[..]);
        }

        open.cx.now_ns = 5_000;
        let opened = open.run_packets(&wire);
        prop_assert_eq!(&opened, &plain);
        depack.cx.now_ns = 5_000;
        let mut frames = depack.run_packets_to_frames(&opened);
        if codec == CodecId::FEEDBACK.0 {
            // Reports leave on their own output, never to a jitter buffer.
            prop_assert!(frames.is_empty());
            frames = depack
                .frames_out_at(1)
                .iter()
                .map(|s| (s.meta, s.bytes().to_vec()))
                .collect();
        }
        prop_assert_eq!(frames.len(), 1);
        let (got, got_payload) = &frames[0];
        // The depacketizer reads a frame's length from its payload (an Opus
        // TOC, a Codec2 mode), else it keeps its param's 20 ms.
        let want_ms = if repair { None } else { CodecId(codec).frame_samples(&payload) }
            .filter(|n| n % 48 == 0)
            .and_then(|n| u8::try_from(n / 48).ok())
            .unwrap_or(20);
        prop_assert_eq!(*got, FrameMeta { arrival_ns: 5_000, duration_ms: want_ms, ..meta });
        prop_assert_eq!(got_payload, &payload);
        prop_assert_eq!(received.get(), report);
        prop_assert_eq!(seal.counter("sealed"), 1);
        prop_assert_eq!(open.counter("opened"), 1);
    }
}

#[test]
fn tampering_with_any_bit_fails_open() {
    let cell = Arc::new(QualityCell::new());
    cell.set(QualityReport {
        loss_pct: 3,
        rtt_4ms: 20,
        jitter_ms: 12,
        bitrate_cap_kbps: 32,
    });
    let mut res = Resources::new();
    res.insert("qr", cell);
    let mut pack = build_with(
        "wire.packetize",
        &[
            ("sender_id", i(42)),
            ("quality_report", s("qr")),
            ("quality_every", i(1)),
        ],
        &res,
    );
    let mut seal = build("crypto.seal", &test_key());
    let wire = seal.run_packets(&pack.run_frames(&[frame(7, 40)]));
    let good = wire[0].clone();
    assert_eq!(good.len(), HEADER_LEN + 40 + TAG_LEN + TRAILER_LEN);

    let mut open = build("crypto.open", &test_key());
    let mut malformed_bytes = std::collections::BTreeSet::new();
    let mut flips = 0u64;
    for byte in 0..good.len() {
        for bit in 0..8 {
            let mut bad = good.clone();
            bad[byte] ^= 1 << bit;
            let parses = MediaPacket::parse(&bad).is_ok();
            let (malformed, bad_tag) = (open.counter("malformed"), open.counter("bad_tag"));
            assert!(open.run_packets(&[bad]).is_empty(), "byte {byte} bit {bit}");
            if parses {
                assert_eq!(
                    open.counter("bad_tag"),
                    bad_tag + 1,
                    "byte {byte} bit {bit}"
                );
            } else {
                assert_eq!(
                    open.counter("malformed"),
                    malformed + 1,
                    "byte {byte} bit {bit}"
                );
                malformed_bytes.insert(byte);
            }
            flips += 1;
        }
    }
    // Only version, flags (reserved bits) and the trailer's loss (> 100 %)
    // are caught by parsing; every other flip fails the tag.
    let trailer_loss = good.len() - TRAILER_LEN;
    assert_eq!(
        malformed_bytes.into_iter().collect::<Vec<_>>(),
        [0, 1, trailer_loss]
    );
    assert_eq!(
        open.counter("bad_tag") + open.counter("malformed"),
        flips,
        "every flip refused"
    );
    assert_eq!(open.counter("opened"), 0);
    // The untouched packet still opens: the refusals left no state behind.
    assert_eq!(open.run_packets(&[good]).len(), 1);
}

#[test]
fn reordered_packets_within_the_window_open() {
    let seqs: Vec<u32> = (1000..1100).collect();
    let mut wire = sealed(3, &seqs, &test_key());
    // Reverse in chunks of 10, then swap the first and last packets.
    for chunk in wire.chunks_mut(10) {
        chunk.reverse();
    }
    let last = wire.len() - 1;
    wire.swap(0, last);
    let mut pipe = Pipeline::new(&[]);
    let mut frames = pipe.receive(&wire[..50]);
    frames.extend(pipe.receive(&wire[50..]));
    assert_eq!(frames.len(), 100);
    let got: Vec<u32> = frames.iter().map(|(m, _)| m.seq).collect();
    let want: Vec<u32> = wire.iter().map(|p| seq_of(p)).collect();
    assert_eq!(got, want, "frames leave in arrival order");
    for (m, payload) in &frames {
        assert_eq!(payload, &frame(m.seq, 30).1);
    }
    assert_eq!(pipe.open.counter("replays"), 0);
}

#[test]
fn window_edge_is_1024_packets() {
    let seqs: Vec<u32> = (0..2000).collect();
    let wire = sealed(3, &seqs, &test_key());
    let mut open = build("crypto.open", &test_key());
    assert_eq!(open.run_packets(&[wire[1999].clone()]).len(), 1);
    assert!(
        open.run_packets(&[wire[1999 - 1024].clone()]).is_empty(),
        "1024 behind"
    );
    assert_eq!(open.counter("replays"), 1);
    assert_eq!(
        open.run_packets(&[wire[1999 - 1023].clone()]).len(),
        1,
        "1023 behind"
    );
}

#[test]
fn replayed_packets_are_dropped() {
    let wire = sealed(3, &[1, 2, 3], &test_key());
    let mut open = build("crypto.open", &test_key());
    let out = open.run_packets(&[wire[0].clone(), wire[1].clone(), wire[0].clone()]);
    assert_eq!(out.len(), 2);
    assert_eq!(open.counter("replays"), 1);
    // In a later cycle too.
    let out = open.run_packets(&[wire[1].clone(), wire[2].clone()]);
    assert_eq!(out.len(), 1);
    assert_eq!(seq_of(&out[0]), 3);
    assert_eq!(open.counter("replays"), 2);
    assert_eq!(open.counter("opened"), 3);
}

#[test]
fn epoch_rolls_over_across_the_seq_wrap_and_old_epochs_are_refused() {
    // seq wraps after u32::MAX (epoch 0 -> 1); then the upstream restarts
    // its count (1 after 3: epoch 1 -> 2).
    let seqs = [
        u32::MAX - 3,
        u32::MAX - 2,
        u32::MAX - 1,
        u32::MAX,
        0,
        1,
        2,
        3,
        1,
        2,
    ];
    let mut pack = build("wire.packetize", &[("sender_id", i(9))]);
    let mut seal = build("crypto.seal", &test_key());
    let frames: Vec<_> = seqs.iter().map(|&q| frame(q, 25)).collect();
    let wire = seal.run_packets(&pack.run_frames(&frames));
    assert_eq!(wire.len(), seqs.len());
    let epochs: Vec<u8> = wire
        .iter()
        .map(|p| MediaHeader::parse(p).unwrap().0.key_epoch)
        .collect();
    assert_eq!(epochs, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]);
    assert_eq!(seal.counter("rekeys"), 2);
    assert_eq!(seal.gauge("key_epoch"), 2);

    let mut pipe = Pipeline::new(&[]);
    // Across the wrap, out of order: epoch 1 first, then late epoch-0 packets.
    let first = pipe.receive(&[
        wire[4].clone(),
        wire[5].clone(),
        wire[2].clone(),
        wire[3].clone(),
        wire[6].clone(),
        wire[0].clone(),
        wire[7].clone(),
    ]);
    let got: Vec<u32> = first.iter().map(|(m, _)| m.seq).collect();
    assert_eq!(got, [0, 1, u32::MAX - 1, u32::MAX, 2, u32::MAX - 3, 3]);
    for (m, payload) in &first {
        assert_eq!(payload, &frame(m.seq, 25).1, "seq {}", m.seq);
    }
    // Epoch 2 arrives; the held-back epoch-0 packet is now two epochs old.
    let second = pipe.receive(&[wire[8].clone(), wire[9].clone(), wire[1].clone()]);
    assert_eq!(second.len(), 2);
    assert_eq!(pipe.open.counter("old_epoch"), 1);
    assert_eq!(pipe.open.counter("opened"), 9);
    assert_eq!(pipe.open.counter("bad_tag"), 0);
}

#[test]
fn seal_guards_its_nonce_space() {
    let mut pack = build(
        "wire.packetize",
        &[("sender_id", i(0)), ("key_epoch", i(255))],
    );
    let mut seal = build("crypto.seal", &test_key());
    let mut f = |seq: u32, stream: u32| {
        let mut fr = frame(seq, 10);
        fr.0.stream = stream;
        seal.run_packets(&pack.run_frames(&[fr]))
    };
    assert_eq!(f(10, 1).len(), 1);
    assert!(f(10, 1).is_empty(), "same seq again");
    assert!(f(5, 1).is_empty(), "needs epoch 256");
    assert!(f(11, 2).is_empty(), "another sender id");
    let last = f(11, 1);
    assert_eq!(last.len(), 1, "above the last seq, epoch 255 still fresh");
    assert_eq!(MediaHeader::parse(&last[0]).unwrap().0.key_epoch, 255);
    assert_eq!(seal.counter("seq_reuse"), 1);
    assert_eq!(seal.counter("key_exhausted"), 1);
    assert_eq!(seal.counter("wrong_sender"), 1);
    assert_eq!(seal.counter("sealed"), 2);
}

#[test]
fn open_bad_input_table() {
    let good = sealed(3, &[1], &test_key()).remove(0);
    let empty_payload = {
        let mut pack = build("wire.packetize", &[("sender_id", i(3))]);
        let mut seal = build("crypto.seal", &test_key());
        seal.run_packets(&pack.run_frames(&[frame(2, 0)])).remove(0)
    };
    assert_eq!(empty_payload.len(), HEADER_LEN + TAG_LEN);
    let with = |i: usize, v: u8| {
        let mut p = good.clone();
        p[i] = v;
        p
    };
    let mut trailer_flag = good.clone();
    trailer_flag[1] |= Flags::QUALITY_REPORT.bits();
    let n = trailer_flag.len();
    trailer_flag[n - 4] = 101;
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![1]),
        ("header minus one", good[..HEADER_LEN - 1].to_vec()),
        ("header only", good[..HEADER_LEN].to_vec()),
        (
            "truncated tag",
            empty_payload[..HEADER_LEN + TAG_LEN - 1].to_vec(),
        ),
        ("version 2", with(0, 2)),
        ("reserved flags", with(1, 0xf0)),
        ("trailer loss 101%", trailer_flag),
        ("feedback report flagged repair", {
            let mut p = report_packets(3, &[1]).remove(0);
            p[1] |= Flags::REPAIR.bits();
            p
        }),
    ];
    let bad_tag: Vec<(&str, Vec<u8>)> = vec![
        ("last byte cut", good[..good.len() - 1].to_vec()),
        ("empty payload, tag cut", {
            let mut p = empty_payload.clone();
            p.pop();
            p.insert(HEADER_LEN, 0);
            p
        }),
        ("all zero body", {
            let mut p = good.clone();
            p[HEADER_LEN..].fill(0);
            p
        }),
    ];
    let mut open = build("crypto.open", &test_key());
    for (name, bytes) in &malformed {
        let before = open.counter("malformed");
        assert!(
            open.run_packets(std::slice::from_ref(bytes)).is_empty(),
            "{name}"
        );
        assert_eq!(open.counter("malformed"), before + 1, "{name}");
    }
    for (name, bytes) in &bad_tag {
        let before = open.counter("bad_tag");
        assert!(
            open.run_packets(std::slice::from_ref(bytes)).is_empty(),
            "{name}"
        );
        assert_eq!(open.counter("bad_tag"), before + 1, "{name}");
    }
    assert_eq!(open.run_packets(&[good, empty_payload]).len(), 2);
}

proptest! {
    #[test]
    fn open_survives_arbitrary_bytes(
        packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 0..20)
    ) {
        let mut open = build("crypto.open", &test_key());
        let out = open.run_packets(&packets);
        prop_assert!(out.is_empty());
        prop_assert_eq!(
            open.counter("malformed") + open.counter("bad_tag"),
            packets.len() as u64
        );
    }
}

#[test]
fn sender_table_evicts_the_least_recently_heard_and_ignores_forgeries() {
    let key = test_key();
    let s1 = sealed(1, &[1, 2], &key);
    let s2 = sealed(2, &[1, 2], &key);
    let s3 = sealed(3, &[1], &key);
    let mut open = build(
        "crypto.open",
        &[("key", s(TEST_KEY)), ("max_senders", i(2))],
    );
    let out = open.run_packets(&[s1[0].clone(), s2[0].clone(), s2[1].clone(), s1[1].clone()]);
    assert_eq!(out.len(), 4);
    assert_eq!(open.gauge("senders"), 2);

    // Forged packets from 100 new sender ids: refused, and no entry moves.
    let forged: Vec<Vec<u8>> = (100..164u32)
        .map(|id| {
            let mut p = s3[0].clone();
            p[4..8].copy_from_slice(&id.to_be_bytes());
            p
        })
        .collect();
    assert!(open.run_packets(&forged).is_empty());
    assert_eq!(open.counter("bad_tag"), 64);
    assert_eq!(open.counter("evictions"), 0);

    // An authentic third sender evicts sender 2, heard least recently.
    assert_eq!(open.run_packets(&[s3[0].clone()]).len(), 1);
    assert_eq!(open.counter("evictions"), 1);
    assert_eq!(open.gauge("senders"), 2);
    // Sender 1 kept its window: its replay is refused.
    assert!(open.run_packets(&[s1[1].clone()]).is_empty());
    assert_eq!(open.counter("replays"), 1);
}

fn handshake() -> (SessionKeys, SessionKeys) {
    let alice = Seed::from_bytes([1; 32]).identity();
    let bob = Seed::from_bytes([2; 32]).identity();
    let ctx = b"call-1";
    let (initiator, init) = Initiator::start(
        &alice,
        EphemeralKey::from_bytes([3; 32]),
        ctx,
        Some(bob.fingerprint()),
    );
    let (responder, response) =
        Responder::respond(&bob, EphemeralKey::from_bytes([4; 32]), ctx, &init, None).unwrap();
    let (alice_keys, finish) = initiator.finish(&response).unwrap();
    let bob_keys = responder.confirm(&finish).unwrap();
    (alice_keys, bob_keys)
}

#[test]
fn session_keys_from_the_handshake_work_per_direction() {
    let (alice_keys, bob_keys) = handshake();
    let mut alice_res = Resources::new();
    alice_res.insert("call", Arc::new(alice_keys));
    let mut bob_res = Resources::new();
    bob_res.insert("call", Arc::new(bob_keys));
    let session = [("session", s("call"))];

    let mut alice_pack = build(
        "wire.packetize",
        &[("sender_id", i(1)), ("direction", s("initiator"))],
    );
    let mut alice_seal = build_with("crypto.seal", &session, &alice_res);
    let mut alice_open = build_with("crypto.open", &session, &alice_res);
    let mut bob_pack = build(
        "wire.packetize",
        &[("sender_id", i(2)), ("direction", s("responder"))],
    );
    let mut bob_seal = build_with("crypto.seal", &session, &bob_res);
    let mut bob_open = build_with("crypto.open", &session, &bob_res);

    let a2b = alice_seal.run_packets(&alice_pack.run_frames(&[frame(1, 50)]));
    let b2a = bob_seal.run_packets(&bob_pack.run_frames(&[frame(1, 50)]));
    assert_eq!(bob_open.run_packets(&a2b).len(), 1);
    assert_eq!(alice_open.run_packets(&b2a).len(), 1);
    // A relay reflecting Alice's packets back to her gains nothing.
    assert!(alice_open.run_packets(&a2b).is_empty());
    assert_eq!(alice_open.counter("bad_tag"), 1);
}

#[test]
fn room_members_share_the_key_outsiders_do_not() {
    let secret = "3f9a0c1d5e7b2a4c6d8e0f1a2b3c4d5e";
    let member = [("room", s("lobby")), ("room_secret", s(secret))];
    let wire = sealed(5, &[1, 2], &member);
    let mut other_member = build("crypto.open", &member);
    assert_eq!(other_member.run_packets(&wire).len(), 2);
    for (name, params) in [
        (
            "wrong secret",
            [
                ("room", s("lobby")),
                ("room_secret", s("3f9a0c1d5e7b2a4c6d8e0f1a2b3c4d5f")),
            ],
        ),
        (
            "other room",
            [("room", s("lobby2")), ("room_secret", s(secret))],
        ),
    ] {
        let mut outsider = build("crypto.open", &params);
        assert!(outsider.run_packets(&wire).is_empty(), "{name}");
        assert_eq!(outsider.counter("bad_tag"), 2, "{name}");
    }
}

#[test]
fn key_params_are_checked() {
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        ("no key", &[], "no media key"),
        (
            "two sources",
            &[("key", TEST_KEY), ("session", "x")],
            "more than one",
        ),
        ("room without secret", &[("room", "lobby")], "room_secret"),
        (
            "secret without room",
            &[("room_secret", "0123456789abcdef0123")],
            "room",
        ),
        (
            "short secret",
            &[("room", "lobby"), ("room_secret", "hunter2")],
            "too short",
        ),
        ("short key", &[("key", "0011")], "64 hex digits"),
        (
            "non-hex key",
            &[(
                "key",
                "zz0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            )],
            "64 hex digits",
        ),
        ("missing session", &[("session", "call")], "SessionKeys"),
    ];
    for kind in ["crypto.seal", "crypto.open"] {
        for (name, params, want) in cases {
            let params: Vec<(&str, ParamValue)> = params.iter().map(|(k, v)| (*k, s(v))).collect();
            let err = try_build(kind, &params, &Resources::new())
                .err()
                .unwrap_or_else(|| panic!("{kind} {name}: should fail"));
            assert!(err.to_string().contains(want), "{kind} {name}: {err}");
        }
    }
    let err = try_build(
        "crypto.open",
        &[("key", s(TEST_KEY)), ("max_senders", i(0))],
        &Resources::new(),
    )
    .err()
    .expect("max_senders 0");
    assert!(err.to_string().contains("max_senders"));
}

#[test]
fn seal_and_open_are_rt_safe() {
    let key = test_key();
    // Seal: every cycle re-seals the same batch; its first seq is below the
    // last one sealed, so each cycle rekeys (and later exhausts the epochs).
    let mut pack = build("wire.packetize", &[("sender_id", i(77))]);
    let frames: Vec<_> = (0..BATCH as u32).map(|n| frame(n, 100)).collect();
    let plain = pack.run_frames(&frames);
    let mut seal = build("crypto.seal", &key);
    let input = seal.packets_in();
    for p in &plain {
        input.push(PacketMeta::default(), p).unwrap();
    }
    wzp_engine::rt_check::assert_rt_safe("crypto.seal", 300, || seal.step());
    assert_eq!(seal.counter("rekeys"), 255);
    assert!(seal.counter("key_exhausted") > 0);
    assert!(seal.counter("sealed") > 0);

    // Open: new senders beyond capacity (eviction), an epoch change,
    // replays, forgeries and malformed packets.
    let mut packets = Vec::new();
    for sender in 1..=8u32 {
        packets.extend(sealed(sender, &[u32::MAX - 1, u32::MAX, 0, 1], &key));
    }
    let mut forged = packets[0].clone();
    forged[30] ^= 1;
    packets.push(forged);
    packets.push(vec![1, 2, 3]);
    packets.push(packets[1].clone());
    let mut open = build(
        "crypto.open",
        &[("key", s(TEST_KEY)), ("max_senders", i(4))],
    );
    let input = open.packets_in();
    for p in &packets {
        input.push(PacketMeta::default(), p).unwrap();
    }
    wzp_engine::rt_check::assert_rt_safe("crypto.open", 20, || open.step());
    assert!(open.counter("opened") >= 32);
    assert!(open.counter("evictions") > 0);
    assert!(open.counter("replays") > 0);
    assert!(open.counter("bad_tag") > 0);
    assert!(open.counter("malformed") > 0);
}

/// An FEC block as `fec.raptorq_encode` sends it: `k` source frames, then
/// `r` repair symbols carrying the last source frame's seq, symbols `k..`.
fn fec_block(first: u32, k: u32, r: u32) -> Vec<(FrameMeta, Vec<u8>)> {
    let mut out: Vec<_> = (0..k).map(|j| frame(first + j, 30)).collect();
    for j in 0..r {
        let (mut meta, bytes) = frame(first + k - 1, 40);
        meta.flags = frame_flags::REPAIR;
        meta.fec.symbol = (k + j) as u16;
        meta.fec.source_symbols = k as u8;
        out.push((meta, bytes));
    }
    out
}

/// Repair symbols share their block's last source seq: the nonce holds the
/// symbol number for them, so seal sends them (no `seq_reuse`) and open
/// opens them once, in any order against their source frame, while a
/// replayed repair symbol, a source seq sealed twice, or a repair symbol
/// whose number does not rise is still refused.
#[test]
fn fec_repair_symbols_share_their_blocks_seq_and_still_open_once() {
    let mut pack = build("wire.packetize", &[("sender_id", i(9))]);
    let mut seal = build("crypto.seal", &test_key());
    let mut wire = Vec::new();
    for b in 0..3u32 {
        wire.extend(seal.run_packets(&pack.run_frames(&fec_block(b * 5, 5, 2))));
    }
    assert_eq!(seal.counter("seq_reuse"), 0);
    assert_eq!(wire.len(), 21, "every source and repair packet sealed");
    let repair = |p: &Vec<u8>| MediaHeader::parse(p).unwrap().0.is_repair();
    assert_eq!(wire.iter().filter(|p| repair(p)).count(), 6);

    // Open them all, the repair symbols of the first block before its last
    // source frame (reordered), then replay one repair symbol.
    let mut order = wire.clone();
    order.swap(4, 6);
    let mut open = build("crypto.open", &test_key());
    let out = open.run_packets(&order);
    assert_eq!(out.len(), 21, "{}", open.counter("replays"));
    assert_eq!(open.counter("replays"), 0);
    assert_eq!(open.counter("bad_tag"), 0);
    let out = open.run_packets(&[wire[5].clone(), wire[4].clone()]);
    assert!(out.is_empty(), "a replayed repair symbol and source frame");
    assert_eq!(open.counter("replays"), 2);

    // A repair symbol's number must rise within its seq; a source seq
    // sealed twice is still refused.
    let mut pack = build("wire.packetize", &[("sender_id", i(9))]);
    let mut seal = build("crypto.seal", &test_key());
    let mut block = fec_block(0, 2, 2);
    block.push(block[2].clone());
    block.push(frame(1, 30));
    let sent = seal.run_packets(&pack.run_frames(&block));
    assert_eq!(sent.len(), 4);
    assert_eq!(seal.counter("seq_reuse"), 2);
}

/// A repair symbol of `block` (K = 2: last source seq `2 * block + 1`),
/// symbol `sym`.
fn paced_repair(block: u32, sym: u16) -> (FrameMeta, Vec<u8>) {
    let (mut meta, bytes) = frame(2 * block + 1, 40);
    meta.flags = frame_flags::REPAIR;
    meta.fec.symbol = sym;
    meta.fec.source_symbols = 2;
    meta.fec.ratio_percent = 100;
    (meta, bytes)
}

/// `fec.raptorq_encode` paces a block's repair over the next cycles, so a
/// repair symbol comes after later source frames: seal takes it in its own
/// nonce kind, with no rekey (each rekey had used up one of 256 epochs:
/// a paced call ran out in five seconds and dropped every repair symbol
/// after), and open opens every packet once. A repeated or falling repair
/// pair, or a repair symbol above the last source seq, is still refused;
/// a source count that restarts moves to a fresh epoch, where the repair
/// pairs start over.
#[test]
fn paced_repair_after_later_source_frames_seals_in_one_epoch() {
    let mut pack = build("wire.packetize", &[("sender_id", i(9))]);
    let mut seal = build("crypto.seal", &test_key());
    // Blocks of 2 at 100 %: cycle c sends source c and, from cycle 2, one
    // repair symbol of the block two frames back.
    let mut wire = Vec::new();
    let mut sent = 0;
    for c in 0..40u32 {
        let mut cycle = vec![frame(c, 30)];
        if c >= 2 {
            let block = (c - 2) / 2;
            cycle.push(paced_repair(block, 2 + (c % 2) as u16));
        }
        sent += cycle.len();
        wire.extend(seal.run_packets(&pack.run_frames(&cycle)));
    }
    assert_eq!(wire.len(), sent, "every packet sealed");
    assert_eq!(seal.counter("rekeys"), 0);
    assert_eq!(seal.counter("seq_reuse"), 0);
    let mut open = build("crypto.open", &test_key());
    let opened: usize = wire.chunks(8).map(|c| open.run_packets(c).len()).sum();
    assert_eq!(opened, wire.len());
    assert_eq!((open.counter("replays"), open.counter("bad_tag")), (0, 0));

    // Refused: a repeated pair, a falling one, and one above the last
    // source seq (39).
    let refused = [
        paced_repair(18, 3),
        paced_repair(17, 3),
        paced_repair(20, 2),
    ];
    assert!(seal.run_packets(&pack.run_frames(&refused)).is_empty());
    assert_eq!(seal.counter("seq_reuse"), 3);

    // The source count restarts: a fresh epoch, and the new stream's
    // repair pairs (far below the old ones) are sealed in it.
    let restarted = [
        frame(0, 30),
        frame(1, 30),
        paced_repair(0, 2),
        frame(2, 30),
        paced_repair(0, 3),
    ];
    let wire = seal.run_packets(&pack.run_frames(&restarted));
    assert_eq!(wire.len(), 5);
    assert_eq!(seal.counter("rekeys"), 1);
    let epochs: Vec<u8> = wire
        .iter()
        .map(|p| MediaHeader::parse(p).unwrap().0.key_epoch)
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] == w[1]), "{epochs:?}");
    assert_eq!(open.run_packets(&wire).len(), 5);
}

/// The real chain a call sends through, `fec.raptorq_encode` (blocks of 2
/// at 100 %, its repair paced) -> `wire.packetize` -> `crypto.seal` ->
/// `crypto.open`: every packet sealed under one key epoch and opened once,
/// no more than one repair packet a cycle. (Seal's old rule, a repair only
/// right after its source, cost an epoch per paced repair symbol: this
/// chain ran out of epochs after 256 of them.)
#[test]
fn the_encoders_paced_repair_seals_in_one_epoch_through_the_real_chain() {
    let mut enc = build(
        "fec.raptorq_encode",
        &[
            ("frames_per_block", i(2)),
            ("fec_ratio", i(100)),
            (
                "worker_wait",
                ParamValue::Duration(std::time::Duration::from_millis(500)),
            ),
        ],
    );
    let mut pack = build("wire.packetize", &[("sender_id", i(9))]);
    let mut seal = build("crypto.seal", &test_key());
    let mut open = build("crypto.open", &test_key());
    let (mut sources, mut repairs, mut opened) = (0, 0, 0);
    for seq in 0..700u32 {
        let (meta, bytes) = frame(seq, 30);
        enc.frames_in().clear();
        enc.frames_in().push(meta, &bytes).unwrap();
        enc.step();
        let out: Vec<(FrameMeta, Vec<u8>)> = enc
            .frames_out()
            .iter()
            .map(|s| (s.meta, s.bytes().to_vec()))
            .collect();
        let r = out
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::REPAIR != 0)
            .count();
        assert!(r <= 1, "cycle {seq}: {r} repair packets");
        repairs += r;
        sources += out.len() - r;
        let wire = seal.run_packets(&pack.run_frames(&out));
        assert_eq!(wire.len(), out.len(), "cycle {seq}: every packet sealed");
        opened += open.run_packets(&wire).len();
    }
    assert_eq!(sources, 700);
    assert!(repairs >= 696, "{repairs} repair packets");
    assert_eq!(
        (
            seal.counter("rekeys"),
            seal.counter("key_exhausted"),
            seal.counter("seq_reuse")
        ),
        (0, 0, 0)
    );
    assert_eq!(opened, sources + repairs);
    assert_eq!(open.counter("replays"), 0);
}

/// docs/WIRE.md §1.5: a report counts its own seq; its nonce differs from
/// the media packet with the same seq, both seal and open, each in its own
/// replay window, and a restarted report counter moves to a fresh epoch.
#[test]
fn feedback_reports_count_their_own_seq_in_their_own_nonce_space() {
    let mut pack = build("wire.packetize", &[("sender_id", i(5))]);
    let mut seal = build("crypto.seal", &test_key());
    // Media 1..=4 with reports 1, 2 between them: the same seqs.
    let mut send = |f: (FrameMeta, Vec<u8>)| {
        let mut out = seal.run_packets(&pack.run_frames(&[f]));
        assert_eq!(out.len(), 1, "sealed");
        out.remove(0)
    };
    let media1 = send(frame(1, 34));
    let report1 = send(report(1));
    let media2 = send(frame(2, 34));
    let report2 = send(report(2));
    let media3 = send(frame(3, 34));
    // Same seq, same plaintext, same header but the codec byte: a reused
    // nonce would give the same keystream, so the same ciphertext XOR.
    let (m, r) = (&media1[HEADER_LEN..], &report1[HEADER_LEN..]);
    let plain = frame(1, 34).1;
    let keystream_m: Vec<u8> = m.iter().zip(&plain).map(|(a, b)| a ^ b).collect();
    let keystream_r: Vec<u8> = r.iter().zip(&plain).map(|(a, b)| a ^ b).collect();
    assert_ne!(keystream_m, keystream_r, "reports have nonces of their own");
    // The counter restarts (a rebuilt report stage): next epoch.
    let report1_again = send(report(1));
    let media4 = send(frame(4, 34));
    let epoch = |p: &[u8]| MediaHeader::parse(p).unwrap().0.key_epoch;
    assert_eq!(
        [&media3, &report2, &report1_again, &media4].map(|p| epoch(p)),
        [0, 0, 1, 1]
    );
    assert_eq!(seal.counter("seq_reuse"), 0);
    assert_eq!(seal.counter("rekeys"), 1);

    let mut pipe = Pipeline::new(&[]);
    let got = pipe.receive(&[
        report1.clone(),
        media1.clone(),
        media2.clone(),
        report2.clone(),
        media3.clone(),
        report1_again.clone(),
        media4.clone(),
    ]);
    assert_eq!(pipe.open.counter("opened"), 7, "every packet opens once");
    // Reports leave depacketize on its `feedback` output, not to the
    // jitter buffer.
    let media: Vec<u32> = got.iter().map(|(m, _)| m.seq).collect();
    assert_eq!(media, [1, 2, 3, 4]);
    let reports: Vec<u32> = pipe
        .depack
        .frames_out_at(1)
        .iter()
        .map(|f| f.meta.seq)
        .collect();
    assert_eq!(reports, [1, 2, 1]);
    assert_eq!(pipe.depack.counter("feedback"), 3);
    // Replays are caught in each window; a media replay is not mistaken
    // for a fresh report or the other way round.
    assert!(pipe.receive(&[report1, media1, report2, media2]).is_empty());
    assert_eq!(pipe.open.counter("replays"), 4);
    assert_eq!(pipe.open.counter("bad_tag"), 0);
    // A report flagged REPAIR is refused by seal.
    let mut bad = report(9);
    bad.0.flags |= frame_flags::REPAIR;
    assert!(seal.run_packets(&pack.run_frames(&[bad])).is_empty());
    assert_eq!(seal.counter("malformed"), 1);
}

/// `wire.packetize` packs its optional `feedback` input after `in`, with
/// the same sender id.
#[test]
fn packetize_sends_reports_from_its_feedback_input() {
    let mut pack = build("wire.packetize", &[("sender_id", i(77))]);
    pack.frames_in_at(1).clear();
    let (m, p) = report(3);
    pack.frames_in_at(1).push(m, &p).unwrap();
    let out = pack.run_frames(&[frame(10, 20)]);
    assert_eq!(out.len(), 2);
    let h: Vec<MediaHeader> = out
        .iter()
        .map(|p| MediaHeader::parse(p).unwrap().0)
        .collect();
    assert_eq!((h[0].seq, h[0].codec), (10, CodecId::OPUS));
    assert_eq!(
        (h[1].seq, h[1].codec, h[1].sender_id),
        (3, CodecId::FEEDBACK, 77)
    );
    assert_eq!(
        h[1].nonce()[4] & wzp_proto::NONCE_FEEDBACK,
        wzp_proto::NONCE_FEEDBACK
    );
}
