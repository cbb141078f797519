//! Repair riding in source packets (codec `0x41`, docs/WIRE.md §1.7):
//! `wire.packetize` puts a cycle's repair frame in its source frame's
//! packet while the `FecLive` cell says the receivers take it, and
//! `wire.depacketize` gives back the two frames as separate packets would
//! have.

mod wire_support;

use std::sync::Arc;

use wire_support::*;
use wzp_engine::prelude::*;
use wzp_proto::riding::parse_riding;
use wzp_proto::{CodecId, MediaPacket, HEADER_LEN};
use wzp_stages::fec::live::FecLive;

wzp_engine::install_alloc_checker!();

/// The first repair symbol of block 49 (frames 97 and 98: two source
/// frames, one repair each), sent before frame 100's.
fn repair() -> (FrameMeta, Vec<u8>) {
    let meta = FrameMeta {
        seq: 98,
        timestamp: 98 * 960,
        stream: 7,
        codec: 1,
        flags: frame_flags::REPAIR | frame_flags::COMPACT_REPAIR,
        duration_ms: 20,
        fec: FecTag {
            block: 49,
            symbol: 2,
            source_symbols: 2,
            ratio_percent: 100,
        },
        arrival_ns: 0,
    };
    (meta, (0..40u8).map(|k| k ^ 0x5a).collect())
}

fn source(seq: u32) -> (FrameMeta, Vec<u8>) {
    let (mut meta, payload) = frame(seq, 30);
    meta.flags = frame_flags::STREAM_START;
    meta.fec = FecTag {
        block: 50,
        symbol: 0,
        source_symbols: 2,
        ratio_percent: 100,
    };
    (meta, payload)
}

fn packetize(riding: bool) -> (Stage, Arc<FecLive>) {
    let cell = Arc::new(FecLive::new());
    cell.set_riding(riding);
    let mut res = Resources::new();
    res.insert("fec_live", cell.clone());
    let pack = build_with(
        "wire.packetize",
        &[("sender_id", i(7)), ("fec_live", s("fec_live"))],
        &res,
    );
    (pack, cell)
}

/// Frames as depacketize gives them, in a fixed order (source frames
/// first) to compare two ways of sending.
fn sorted(mut frames: Vec<(FrameMeta, Vec<u8>)>) -> Vec<(FrameMeta, Vec<u8>)> {
    frames.sort_by_key(|(m, _)| (m.flags & frame_flags::REPAIR, m.seq, m.fec.symbol));
    frames
}

#[test]
fn a_repair_rides_in_the_cycles_source_packet_while_the_cell_says_so() {
    let (mut pack, cell) = packetize(true);
    let out = pack.run_frames(&[repair(), source(100)]);
    assert_eq!(out.len(), 1, "one packet for both frames");
    assert_eq!(pack.counter("riding"), 1);
    let p = MediaPacket::parse(&out[0]).unwrap();
    assert_eq!(p.header.codec, CodecId::WITH_REPAIR);
    assert_eq!((p.header.seq, p.header.fec_block), (100, 50));
    assert!(!p.header.is_repair());
    let r = parse_riding(p.payload, p.header.seq, p.header.timestamp).unwrap();
    assert_eq!(r.codec, CodecId::OPUS);
    assert_eq!(r.payload, &source(100).1[..]);
    assert_eq!(
        (
            r.repair.seq,
            r.repair.timestamp,
            r.repair.fec_block,
            r.repair.fec_symbol
        ),
        (98, 98 * 960, 49, 2)
    );
    assert!(r.repair.compact);
    assert_eq!(r.repair.symbol, &repair().1[..]);
    // A riding repair costs its symbol and 10 bytes of fields, against a
    // 22-byte header (and a 16-byte tag) of its own; the source's codec
    // and length take 2.
    assert_eq!(out[0].len(), HEADER_LEN + 2 + 30 + 10 + 40);

    // The receivers stop saying so: packets of their own again.
    cell.set_riding(false);
    let out = pack.run_frames(&[repair(), source(101)]);
    assert_eq!(out.len(), 2);
    assert_eq!(pack.counter("riding"), 1);
    let codecs: Vec<_> = out
        .iter()
        .map(|b| MediaPacket::parse(b).unwrap().header.codec)
        .collect();
    assert_eq!(codecs, [CodecId::OPUS, CodecId::OPUS]);
}

#[test]
fn the_receiver_gets_the_frames_separate_packets_give_it() {
    // Two frames on; 68 frames on, near the timestamp's reach (65535 ticks).
    for seq in [100, 98 + 68] {
        let frames = [repair(), source(seq)];
        let mut alone = Pipeline::new(&[("sender_id", i(7))]);
        let sent = alone.send(&frames);
        assert_eq!(sent.len(), 2);
        let want = sorted(alone.receive(&sent));
        assert_eq!(want.len(), 2);

        let (pack, _cell) = packetize(true);
        let mut riding = Pipeline::new(&[("sender_id", i(7))]);
        riding.pack = pack;
        let wire = riding.send(&frames);
        assert_eq!(wire.len(), 1, "seq {seq}");
        let got = riding.receive(&wire);
        // Source frame first, then its rider, as separate packets would
        // come (the FEC decoder takes either order).
        assert_eq!(got[0].0.flags & frame_flags::REPAIR, 0);
        assert_eq!(sorted(got), want, "seq {seq}");
        assert_eq!(riding.depack.counter("riding"), 1);
        assert_eq!(riding.depack.counter("frames"), 2);
    }
}

#[test]
fn repair_with_nothing_to_ride_in_goes_alone() {
    let cases: Vec<(&str, Vec<(FrameMeta, Vec<u8>)>)> = vec![
        ("no source frame this cycle", vec![repair()]),
        // 256 frames after the block's end: past the seq-back byte.
        ("too far after its block", vec![repair(), source(98 + 256)]),
        (
            "a source frame before its block's end",
            vec![repair(), source(97)],
        ),
        ("a timestamp past the reach", {
            let mut m = source(100);
            m.0.timestamp = 98 * 960 + 65_536;
            vec![repair(), m]
        }),
        ("only a lost frame", {
            let mut m = source(100);
            m.0.flags = frame_flags::MISSING;
            vec![repair(), m]
        }),
        ("a feedback report is no source", {
            let mut m = source(100);
            m.0.codec = CodecId::FEEDBACK.0;
            vec![repair(), m]
        }),
        ("the two would not fit one packet", {
            let (m, _) = source(100);
            vec![repair(), (m, vec![1; 1420])]
        }),
    ];
    for (what, frames) in cases {
        let (mut pack, _cell) = packetize(true);
        let want = frames
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::MISSING == 0)
            .count();
        let out = pack.run_frames(&frames);
        assert_eq!(out.len(), want, "{what}");
        assert_eq!(pack.counter("riding"), 0, "{what}");
        for b in &out {
            assert_ne!(
                MediaPacket::parse(b).unwrap().header.codec,
                CodecId::WITH_REPAIR,
                "{what}"
            );
        }
    }
}

#[test]
fn a_riding_payload_that_does_not_parse_drops_both_frames() {
    let (mut pack, _cell) = packetize(true);
    let good = pack.run_frames(&[repair(), source(100)]).remove(0);
    let mut depack = build("wire.depacketize", &[]);
    // Cut inside the repair's fields; a form bit no build defines; a
    // symbol id below the block's source symbols.
    let form_at = HEADER_LEN + 2 + 30;
    let mut reserved = good.clone();
    reserved[form_at] |= 0x40;
    let mut not_repair = good.clone();
    not_repair[form_at + 7] = 1;
    for (n, bad) in [good[..form_at + 4].to_vec(), reserved, not_repair]
        .into_iter()
        .enumerate()
    {
        let frames = depack.run_packets_to_frames(&[bad]);
        assert!(frames.is_empty(), "case {n}: {frames:?}");
        assert_eq!(depack.counter("malformed"), n as u64 + 1);
    }
    assert_eq!(depack.counter("riding"), 0);
    assert_eq!(depack.run_packets_to_frames(&[good]).len(), 2);
}

#[test]
fn riding_is_rt_safe_both_ways() {
    let (mut pack, _cell) = packetize(true);
    let mut depack = build("wire.depacketize", &[]);
    let wire = pack.run_frames(&[repair(), source(100)]);
    let input = pack.frames_in();
    input.clear();
    for (m, p) in [repair(), source(101)] {
        input.push(m, &p).unwrap();
    }
    wzp_engine::rt_check::assert_rt_safe("wire.packetize", 20, || pack.step());
    assert!(pack.counter("riding") > 1);
    let input = depack.packets_in();
    input.clear();
    input.push(PacketMeta::default(), &wire[0]).unwrap();
    wzp_engine::rt_check::assert_rt_safe("wire.depacketize", 20, || depack.step());
    assert!(depack.counter("riding") > 1);
}
