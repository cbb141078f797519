//! `crypto.seal` + `crypto.open` on one ~100-byte payload packet, beside the
//! raw ChaCha20-Poly1305 calls they wrap (in place, detached tag).

use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, Key, KeyInit, Nonce};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use wzp_benches::Harness;
use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_proto::{MediaHeader, HEADER_LEN};

const PAYLOAD: usize = 100;
const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn packets(buf: &mut Buffer) -> &mut Batch<PacketMeta> {
    match buf {
        Buffer::Packets(b) => b,
        _ => panic!("not a packet port"),
    }
}

fn crypto(c: &mut Criterion) {
    let mut group = c.benchmark_group("crypto");
    group.throughput(Throughput::Elements(1));

    group.bench_function("raw/chacha20poly1305_seal_open_100B", |b| {
        let cipher = ChaCha20Poly1305::new(&Key::from([7u8; 32]));
        let header = [1u8; HEADER_LEN];
        let mut payload = [0x55u8; PAYLOAD];
        let mut seq = 0u32;
        b.iter(|| {
            seq = seq.wrapping_add(1);
            let h = MediaHeader {
                seq,
                ..Default::default()
            };
            let nonce = Nonce::from(h.nonce());
            let tag = cipher
                .encrypt_inout_detached(&nonce, &header, (&mut payload[..]).into())
                .unwrap();
            cipher
                .decrypt_inout_detached(&nonce, &header, (&mut payload[..]).into(), &tag)
                .unwrap();
            black_box(&payload);
        })
    });

    group.bench_function("stage/crypto.seal+open", |b| {
        let registry = wzp_stages::registry();
        let key = [("key", ParamValue::Str(KEY.into()))];
        let mut seal = Harness::new(&registry, "crypto.seal", &key, 48_000);
        let mut open = Harness::new(&registry, "crypto.open", &key, 48_000);
        let header = MediaHeader {
            sender_id: 1,
            ..Default::default()
        };
        let mut plain = [0x55u8; HEADER_LEN + PAYLOAD];
        header.encode_into(&mut plain).unwrap();
        packets(seal.input(0))
            .push(PacketMeta::default(), &plain)
            .unwrap();
        let mut seq = 0u32;
        b.iter(|| {
            // A fresh seq each time: seal refuses a repeat, open a replay.
            seq += 1;
            let slot = &mut packets(seal.input(0)).as_mut_slice()[0];
            slot.buf_mut()[8..12].copy_from_slice(&seq.to_be_bytes());
            seal.step();
            let sealed = match seal.output(0) {
                Buffer::Packets(b) => b.get(0).expect("sealed"),
                _ => unreachable!(),
            };
            let open_in = packets(open.input(0));
            open_in.clear();
            open_in.push_copy(sealed).unwrap();
            open.step();
            match open.output(0) {
                Buffer::Packets(b) => assert_eq!(b.len(), 1),
                _ => unreachable!(),
            }
        })
    });
    group.finish();
}

criterion_group!(benches, crypto);
criterion_main!(benches);
