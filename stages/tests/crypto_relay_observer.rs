//! What a relay can learn: nothing about the audio.
//!
//! A member sends a known tone through `wire.packetize -> crypto.seal` with a
//! room key. An observer holds everything a relay holds: every packet on the
//! wire, the header fields, the room hash (even the plain room name), the
//! relay's identity seed, the keys derived from it and its TLS key. It tries
//! every key it could derive as the media key and as the room secret: every
//! packet fails authentication. The ciphertext does not correlate with the
//! PCM it hides, and identical frames encrypt differently.

mod wire_support;

use wire_support::*;
use wzp_engine::prelude::*;
use wzp_proto::identity::Seed;
use wzp_proto::{room_hash, room_id, room_key, CodecId, MediaPacket, HEADER_LEN};
use wzp_stages::crypto::TAG_LEN;

wzp_engine::install_alloc_checker!();

const ROOM: &str = "standup";
const ROOM_SECRET: &str = "c6f1e2d3a4b5968778695a4b3c2d1e0f";
const FRAMES: u32 = 50;
/// 10 ms at 48 kHz: 960 bytes of s16le, fits a packet.
const FRAME_SAMPLES: usize = 480;
/// 400 Hz: exactly 4 periods per frame, so every frame's PCM is identical.
const TONE_HZ: f64 = 400.0;

fn tone_frame() -> Vec<i16> {
    (0..FRAME_SAMPLES)
        .map(|n| {
            let t = n as f64 / 48_000.0;
            (12_000.0 * (2.0 * std::f64::consts::PI * TONE_HZ * t).sin()) as i16
        })
        .collect()
}

fn to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn to_samples(bytes: &[u8]) -> Vec<f64> {
    bytes
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    sab / (saa * sbb).sqrt()
}

/// The member's send path: the tone, packetized and sealed with the room key.
fn wire_packets() -> Vec<Vec<u8>> {
    let room = [("room", s(ROOM)), ("room_secret", s(ROOM_SECRET))];
    let mut pack = build("wire.packetize", &[]);
    let mut seal = build("crypto.seal", &room);
    let pcm = to_bytes(&tone_frame());
    let mut wire = Vec::new();
    for chunk in (0..FRAMES).collect::<Vec<_>>().chunks(10) {
        let frames: Vec<_> = chunk
            .iter()
            .map(|&seq| {
                let meta = FrameMeta {
                    seq,
                    timestamp: seq * FRAME_SAMPLES as u32,
                    codec: CodecId::PCM_S16LE.0,
                    duration_ms: 10,
                    ..Default::default()
                };
                (meta, pcm.clone())
            })
            .collect();
        wire.extend(seal.run_packets(&pack.run_frames(&frames)));
    }
    assert_eq!(wire.len(), FRAMES as usize);
    wire
}

/// Every 32-byte value the observer can compute from what a relay holds.
fn observer_candidates() -> Vec<(String, Vec<u8>)> {
    let relay_seed = Seed::from_bytes([0x42; 32]);
    let identity = relay_seed.identity();
    let cert = relay_seed.relay_certificate().unwrap();
    let tls_key_der = cert.key_der();
    let tls_secret = tls_key_der.secret_pkcs8_der();
    let hash = room_hash(ROOM);
    let mut materials: Vec<(String, Vec<u8>)> = vec![
        ("relay seed".into(), relay_seed.as_bytes().to_vec()),
        (
            "relay x25519 secret".into(),
            identity.x25519_secret().to_bytes().to_vec(),
        ),
        (
            "relay ed25519 public".into(),
            identity.public_key().to_vec(),
        ),
        (
            "relay x25519 public".into(),
            identity.x25519_public().to_vec(),
        ),
        (
            "relay TLS private key".into(),
            tls_secret[tls_secret.len() - 32..].to_vec(),
        ),
        (
            "relay TLS fingerprint".into(),
            cert.tls_fingerprint().0.to_vec(),
        ),
        ("room id".into(), room_id(ROOM).to_vec()),
        ("room hash (hex text)".into(), hash.as_bytes().to_vec()),
        ("all zero".into(), vec![0; 32]),
        ("all ones".into(), vec![0xff; 32]),
    ];
    // Room keys with those materials as the secret, for the hash and even the
    // plain room name.
    let mut derived = Vec::new();
    for (name, secret) in &materials {
        for room in [hash.as_str(), ROOM] {
            derived.push((
                format!("room_key({name}, {room})"),
                room_key(secret, room).to_vec(),
            ));
        }
    }
    materials.extend(derived);
    materials
}

fn try_open(params: &[(&str, ParamValue)], wire: &[Vec<u8>]) -> (u64, u64) {
    let mut open = build("crypto.open", params);
    for chunk in wire.chunks(BATCH) {
        assert!(open.run_packets(chunk).is_empty());
    }
    (open.counter("opened"), open.counter("bad_tag"))
}

#[test]
fn an_observer_with_everything_the_relay_holds_cannot_decrypt() {
    let wire = wire_packets();
    let n = wire.len() as u64;

    // Control: a member with the room secret recovers the tone exactly.
    let mut member = build(
        "crypto.open",
        &[("room", s(ROOM)), ("room_secret", s(ROOM_SECRET))],
    );
    let mut depack = build("wire.depacketize", &[("duration_ms", i(10))]);
    let frames = depack.run_packets_to_frames(&member.run_packets(&wire));
    assert_eq!(frames.len(), wire.len());
    let tone = to_bytes(&tone_frame());
    assert!(frames.iter().all(|(_, pcm)| *pcm == tone));

    let mut tried = 0;
    for (name, material) in observer_candidates() {
        if material.len() == 32 {
            let (opened, bad_tag) = try_open(&[("key", s(&hex::encode(&material)))], &wire);
            assert_eq!((opened, bad_tag), (0, n), "as media key: {name}");
            tried += 1;
        }
        // Also as the room secret, for both room names.
        if let Ok(secret) = std::str::from_utf8(&material) {
            if secret.len() >= 16 {
                for room in [room_hash(ROOM), ROOM.to_string()] {
                    let (opened, bad_tag) =
                        try_open(&[("room", s(&room)), ("room_secret", s(secret))], &wire);
                    assert_eq!((opened, bad_tag), (0, n), "as room secret: {name}");
                    tried += 1;
                }
            }
        }
        let hex_secret = hex::encode(&material);
        for room in [room_hash(ROOM), ROOM.to_string()] {
            let (opened, bad_tag) = try_open(
                &[("room", s(&room)), ("room_secret", s(&hex_secret))],
                &wire,
            );
            assert_eq!(
                (opened, bad_tag),
                (0, n),
                "hex as room secret: {name} in {room}"
            );
            tried += 1;
        }
    }
    assert!(tried >= 60, "tried {tried} keys");
}

#[test]
fn ciphertext_does_not_correlate_with_the_audio_and_identical_frames_differ() {
    let wire = wire_packets();
    let tone = tone_frame();
    let tone_bytes = to_bytes(&tone);
    let mut plain_samples = Vec::new();
    let mut cipher_samples = Vec::new();
    let mut equal_bytes = 0usize;
    let mut total_bytes = 0usize;
    let mut bodies: Vec<&[u8]> = Vec::new();
    for packet in &wire {
        let parsed = MediaPacket::parse(packet).unwrap();
        assert_eq!(parsed.payload.len(), tone_bytes.len() + TAG_LEN);
        let body = &parsed.payload[..tone_bytes.len()];
        equal_bytes += body.iter().zip(&tone_bytes).filter(|(a, b)| a == b).count();
        total_bytes += body.len();
        plain_samples.extend(tone.iter().map(|&x| f64::from(x)));
        cipher_samples.extend(to_samples(body));
        bodies.push(body);
        // What the relay legitimately reads: routing fields, in clear.
        assert_eq!(parsed.header.codec, CodecId::PCM_S16LE);
        assert_eq!(packet[..HEADER_LEN], parsed.header_bytes[..]);
    }
    // 24 000 samples: under no correlation r has a standard deviation of
    // about 0.0065, so 0.05 is over seven of them.
    let r = pearson(&plain_samples, &cipher_samples);
    assert!(
        r.abs() < 0.05,
        "ciphertext correlates with the tone: r = {r}"
    );
    // Sanity of the measure: the tone correlates perfectly with itself.
    assert!((pearson(&plain_samples, &plain_samples) - 1.0).abs() < 1e-9);
    // Byte agreement with the plaintext is chance level (1/256).
    let rate = equal_bytes as f64 / total_bytes as f64;
    assert!(
        rate < 0.01,
        "ciphertext equals plaintext on {rate:.4} of bytes"
    );
    // 50 identical PCM frames: 50 different ciphertexts, pairwise unrelated.
    for (a, x) in bodies.iter().enumerate() {
        for y in &bodies[a + 1..] {
            assert_ne!(x, y);
            let same = x.iter().zip(y.iter()).filter(|(p, q)| p == q).count();
            assert!(
                same < x.len() / 30,
                "two ciphertexts of one frame agree on {same} bytes"
            );
        }
    }
}
