//! `wire.packetize` / `wire.depacketize` per packet (~100-byte payload),
//! beside the raw `MediaHeader` encode/parse calls they wrap.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use wzp_benches::Harness;
use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_proto::{encode_packet, MediaHeader, HEADER_LEN};

const PAYLOAD: usize = 100;

fn header() -> MediaHeader {
    MediaHeader {
        sender_id: 7,
        seq: 1234,
        timestamp: 960 * 1234,
        fec_block: 3,
        fec_symbol: 1,
        fec_ratio: 20,
        ..Default::default()
    }
}

fn wire(c: &mut Criterion) {
    let registry = wzp_stages::registry();
    let mut group = c.benchmark_group("wire");
    group.throughput(Throughput::Elements(1));

    group.bench_function("raw/MediaHeader::encode_into", |b| {
        let h = header();
        let mut out = [0u8; 64];
        b.iter(|| black_box(black_box(&h).encode_into(&mut out)).unwrap())
    });

    group.bench_function("stage/wire.packetize", |b| {
        let mut pack = Harness::new(
            &registry,
            "wire.packetize",
            &[("sender_id", ParamValue::Int(7))],
            48_000,
        );
        let meta = FrameMeta {
            seq: 1234,
            timestamp: 960 * 1234,
            codec: 1,
            duration_ms: 20,
            ..Default::default()
        };
        match pack.input(0) {
            Buffer::Frames(f) => f.push(meta, &[0x55; PAYLOAD]).unwrap(),
            _ => unreachable!(),
        }
        b.iter(|| pack.step())
    });

    let mut packet = [0u8; HEADER_LEN + PAYLOAD];
    encode_packet(&header(), &[0x55; PAYLOAD], None, &mut packet).unwrap();

    group.bench_function("raw/MediaHeader::parse", |b| {
        b.iter(|| black_box(MediaHeader::parse(black_box(&packet))).unwrap())
    });

    group.bench_function("stage/wire.depacketize", |b| {
        let mut depack = Harness::new(&registry, "wire.depacketize", &[], 48_000);
        match depack.input(0) {
            Buffer::Packets(p) => p.push(PacketMeta::default(), &packet).unwrap(),
            _ => unreachable!(),
        }
        b.iter(|| depack.step())
    });
    group.finish();
}

criterion_group!(benches, wire);
criterion_main!(benches);
