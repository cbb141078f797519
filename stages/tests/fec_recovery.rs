//! `fec.raptorq_encode` -> loss -> `fec.raptorq_decode`: tagging, repair
//! timing, exact recovery under any loss within the repair budget
//! (proptest), a ratio changed live, bounded state, block id wrap,
//! malformed input, and real-time safety of both processors (the RaptorQ work runs on their worker threads).

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::fec::block::{encode_block, repair_count, Layout};
use wzp_stages::fec::live::FecLive;
use wzp_stages::fec::raptorq_decode::RaptorqDecode;
use wzp_stages::fec::raptorq_encode::RaptorqEncode;

wzp_engine::install_alloc_checker!();

const Q_NS: u64 = 20_000_000;

fn params_for(f: &dyn StageFactory, overrides: &[(&str, ParamValue)]) -> Params {
    let info = f.info();
    let mut p = Params::default();
    for s in &info.params {
        if let Some(d) = &s.default {
            p.insert(s.name, d.clone());
        }
    }
    for (k, v) in overrides {
        assert!(
            info.params.iter().any(|s| s.name == *k),
            "unknown param {k}"
        );
        p.insert(k, v.clone());
    }
    p
}

type Metrics = (Vec<(String, Counter)>, Vec<(String, Gauge)>);

fn build(
    f: &dyn StageFactory,
    overrides: &[(&str, ParamValue)],
) -> Result<(Box<dyn Processor>, Metrics), BuildError> {
    build_with(f, overrides, &Resources::new())
}

fn build_with(
    f: &dyn StageFactory,
    overrides: &[(&str, ParamValue)],
    res: &Resources,
) -> Result<(Box<dyn Processor>, Metrics), BuildError> {
    let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(Q_NS), res);
    let built = f.build(&mut cx, &params_for(f, overrides))?;
    Ok((built.processor, cx.take_metrics()))
}

fn counter(m: &Metrics, name: &str) -> u64 {
    m.0.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no counter {name}"))
        .1
        .get()
}

/// A generous hand-off wait, so outputs are exact even on a loaded machine.
fn patient() -> (&'static str, ParamValue) {
    (
        "worker_wait",
        ParamValue::Duration(Duration::from_millis(500)),
    )
}

/// Buffers: 0 encoder in, 1 encoder out, 2 decoder in, 3 decoder out.
struct Chain {
    enc: Box<dyn Processor>,
    dec: Box<dyn Processor>,
    enc_m: Metrics,
    dec_m: Metrics,
    pool: Vec<Buffer>,
    cycle: u64,
}

fn batch(b: &mut Buffer) -> &mut Batch<FrameMeta> {
    match b {
        Buffer::Frames(b) => b,
        _ => unreachable!(),
    }
}

fn cx(cycle: u64) -> Cx {
    Cx {
        now_ns: cycle * Q_NS,
        cycle,
        rate: 48_000,
        quantum_ns: Q_NS,
    }
}

impl Chain {
    fn new(enc: &[(&str, ParamValue)], dec: &[(&str, ParamValue)]) -> Self {
        Chain::with(enc, dec, &Resources::new())
    }

    fn with(enc: &[(&str, ParamValue)], dec: &[(&str, ParamValue)], res: &Resources) -> Self {
        let (enc, enc_m) = build_with(&RaptorqEncode, enc, res).unwrap();
        let (dec, dec_m) = build(&RaptorqDecode, dec).unwrap();
        Chain {
            enc,
            dec,
            enc_m,
            dec_m,
            pool: (0..4)
                .map(|_| Buffer::for_type(PortType::Frame, Q_NS, 64))
                .collect(),
            cycle: 0,
        }
    }

    fn input(&mut self) -> &mut Batch<FrameMeta> {
        batch(&mut self.pool[0])
    }

    /// Runs the encoder; its output stays in buffer 1.
    fn step_encoder(&mut self) {
        self.pool[1].reset();
        let mut io = Io::checked(&mut self.pool, &[0], &[1]).unwrap();
        self.enc.process(&mut io, &cx(self.cycle));
        self.pool[0].reset();
    }

    /// Copies the encoder's output to the decoder's input, except items
    /// `lose` refuses; then runs the decoder. Allocation-free.
    fn step_decoder(&mut self, mut lose: impl FnMut(&FrameMeta) -> bool) {
        let (a, b) = self.pool.split_at_mut(2);
        let (from, to) = (batch(&mut a[1]), batch(&mut b[0]));
        to.clear();
        for s in from.iter() {
            if !lose(&s.meta) {
                let _ = to.push_copy(s);
            }
        }
        self.pool[3].reset();
        let mut io = Io::checked(&mut self.pool, &[2], &[3]).unwrap();
        self.dec.process(&mut io, &cx(self.cycle));
        self.cycle += 1;
    }

    fn enc_out(&mut self) -> Vec<(FrameMeta, Vec<u8>)> {
        batch(&mut self.pool[1])
            .iter()
            .map(|s| (s.meta, s.bytes().to_vec()))
            .collect()
    }

    fn dec_out(&mut self) -> Vec<(FrameMeta, Vec<u8>)> {
        batch(&mut self.pool[3])
            .iter()
            .map(|s| (s.meta, s.bytes().to_vec()))
            .collect()
    }
}

/// Metadata bytes of a compact source symbol whose frame follows from its
/// block's last one (`fec::block`), for a payload of `len`.
fn compact_header(len: usize) -> usize {
    if len < 128 {
        3
    } else {
        4
    }
}

fn source(seq: u32, len: usize) -> (FrameMeta, Vec<u8>) {
    let meta = FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(960),
        stream: 77,
        codec: 2,
        flags: if seq == 0 {
            frame_flags::STREAM_START
        } else {
            0
        },
        duration_ms: 20,
        ..Default::default()
    };
    let payload = (0..len).map(|i| (i as u32 * 31 + seq * 7) as u8).collect();
    (meta, payload)
}

/// Source frames leave in their own cycle; a block's repair follows from
/// the next cycle on, paced one a cycle at ratios up to 100 % (so a
/// block's repair frames do not leave back to back and share their fate).
#[test]
fn encoder_passes_sources_at_once_and_paces_repair_one_a_cycle_after_each_block() {
    let mut c = Chain::new(&[patient()], &[patient()]);
    // 16 source frames (three whole blocks of 5), then three cycles with
    // none for the last block's repair.
    for cycle in 0..19u32 {
        let seq = cycle;
        let input = (seq < 16).then(|| source(seq, 20 + seq as usize * 10));
        if let Some((m, p)) = &input {
            c.input().push(*m, p).unwrap();
        }
        c.step_encoder();
        let out = c.enc_out();
        c.step_decoder(|_| false);
        let sources: Vec<_> = out
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::REPAIR == 0)
            .collect();
        if let Some((m, p)) = &input {
            assert_eq!(sources.len(), 1, "the source frame leaves in its own cycle");
            let (sm, sp) = sources[0];
            assert_eq!(sp, p);
            assert_eq!(
                (sm.seq, sm.timestamp, sm.flags),
                (m.seq, m.timestamp, m.flags)
            );
            assert_eq!(sm.fec.block, (seq / 5) as u16);
            assert_eq!(sm.fec.symbol, (seq % 5) as u16);
            assert_eq!((sm.fec.source_symbols, sm.fec.ratio_percent), (5, 50));
        } else {
            assert!(sources.is_empty());
        }
        let repairs: Vec<_> = out
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::REPAIR != 0)
            .collect();
        // Block b completes in cycle 5b + 4; its three repair frames leave
        // in cycles 5b + 5, 5b + 6 and 5b + 7, one each.
        let since_block = cycle % 5;
        if cycle >= 5 && since_block < 3 {
            let block = cycle / 5 - 1;
            assert_eq!(
                repairs.len(),
                1,
                "cycle {cycle}: one repair frame of block {block}"
            );
            let (rm, rp) = repairs[0];
            assert_eq!(rm.fec.block, block as u16);
            assert_eq!(rm.fec.symbol, 5 + since_block as u16);
            // The largest symbol of the block, in the compact layout: its
            // frames follow from the last one, so 3 bytes of metadata (4
            // with a length of 128 or more) + payload.
            let largest = 20 + (block as usize * 5 + 4) * 10;
            assert_eq!(rp.len(), compact_header(largest) + largest);
            assert_ne!(rm.flags & frame_flags::COMPACT_REPAIR, 0);
        } else {
            assert!(repairs.is_empty(), "cycle {cycle}: {repairs:?}");
        }
    }
    assert_eq!(counter(&c.enc_m, "blocks"), 3);
    assert_eq!(counter(&c.enc_m, "repair_sent"), 9);
    // Three repair symbols after each block, each as large as its largest
    // source symbol (metadata + 20 + 10 x the block's last seq).
    assert_eq!(
        counter(&c.enc_m, "repair_bytes"),
        3 * [4usize, 9, 14]
            .iter()
            .map(|&last| (compact_header(20 + last * 10) + 20 + last * 10) as u64)
            .sum::<u64>()
    );
    assert_eq!(counter(&c.dec_m, "repair_received"), 9);
    assert_eq!(counter(&c.dec_m, "recovered"), 0, "nothing was lost");
    assert_eq!(counter(&c.enc_m, "worker_late"), 0);
}

/// At ratios above 100 % the pace is the ratio's worth a cycle: a block of
/// 2 at 200 % sends its four repair frames two a cycle.
#[test]
fn repair_above_one_per_source_frame_leaves_its_ratio_worth_a_cycle() {
    let mut c = Chain::new(
        &[
            patient(),
            ("frames_per_block", ParamValue::Int(2)),
            ("fec_ratio", ParamValue::Int(200)),
        ],
        &[patient()],
    );
    let mut per_cycle = Vec::new();
    for seq in 0..6u32 {
        if seq < 4 {
            let (m, p) = source(seq, 60);
            c.input().push(m, &p).unwrap();
        }
        c.step_encoder();
        let repairs = c
            .enc_out()
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::REPAIR != 0)
            .count();
        per_cycle.push(repairs);
        c.step_decoder(|_| false);
    }
    // Blocks complete in cycles 1 and 3; four repair frames each, two a
    // cycle from the next cycle on.
    assert_eq!(per_cycle, [0, 0, 2, 2, 2, 2]);
    assert_eq!(counter(&c.enc_m, "repair_sent"), 8);
}

/// The ratio published live (the quality controller's `fec_live`) applies
/// from the next block, where it is above `fec_ratio` (the floor); each
/// block keeps the ratio it began with, its tags carry it, and the decoder
/// rebuilds at whatever ratio each block has.
#[test]
fn a_live_ratio_applies_from_the_next_block_above_the_floor() {
    let cell = Arc::new(FecLive::new());
    let mut res = Resources::new();
    res.insert("fec_live", cell.clone());
    let live = ("live_ratio", ParamValue::Str("fec_live".into()));
    let mut c = Chain::with(
        &[patient(), live.clone(), ("fec_ratio", ParamValue::Int(0))],
        &[patient()],
        &res,
    );
    let ratio = |c: &Chain| {
        c.enc_m
            .1
            .iter()
            .find(|(n, _)| n == "ratio")
            .unwrap()
            .1
            .get()
    };
    // (block, ratio in its tags, repair frames after it)
    let mut blocks: Vec<(u16, u8, usize)> = Vec::new();
    let mut lost = 0;
    for seq in 0..31u32 {
        match seq {
            // Mid-block 1: block 2 takes it, block 1 does not.
            7 => cell.set(100).unwrap(),
            // Mid-block 3: back to none from block 4.
            17 => cell.set(0).unwrap(),
            _ => {}
        }
        let (m, p) = source(seq, 40);
        c.input().push(m, &p).unwrap();
        c.step_encoder();
        for (m, _) in c.enc_out() {
            if m.flags & frame_flags::REPAIR != 0 {
                blocks.iter_mut().find(|b| b.0 == m.fec.block).unwrap().2 += 1;
            } else if m.fec.symbol == 0 {
                blocks.push((m.fec.block, m.fec.ratio_percent, 0));
            }
        }
        // Lose the first source of each block; repair rebuilds it.
        c.step_decoder(|m| {
            let l = m.flags & frame_flags::REPAIR == 0 && m.fec.symbol == 0;
            lost += usize::from(l);
            l
        });
        if seq == 14 {
            assert_eq!(ratio(&c), 100, "block 2 in flight at 100 %");
        }
    }
    assert_eq!(
        blocks[..6],
        [
            (0, 0, 0),
            (1, 0, 0),
            (2, 100, 5),
            (3, 100, 5),
            (4, 0, 0),
            (5, 0, 0)
        ],
        "ratio per block, and the repair that followed"
    );
    assert_eq!(ratio(&c), 0);
    assert_eq!(counter(&c.dec_m, "recovered"), 2, "blocks 2 and 3 rebuilt");
    assert_eq!(lost, 7);

    // A floor of 50 %: a live 0 does not take it away, a live 100 raises it.
    let cell = Arc::new(FecLive::new());
    let mut res = Resources::new();
    res.insert("fec_live", cell.clone());
    let mut c = Chain::with(
        &[patient(), live, ("fec_ratio", ParamValue::Int(50))],
        &[patient()],
        &res,
    );
    let mut tags = Vec::new();
    for seq in 0..15u32 {
        match seq {
            0 => cell.set(0).unwrap(),
            5 => cell.set(100).unwrap(),
            _ => {}
        }
        let (m, p) = source(seq, 40);
        c.input().push(m, &p).unwrap();
        c.step_encoder();
        for (m, _) in c.enc_out() {
            if m.flags & frame_flags::REPAIR == 0 && m.fec.symbol == 0 {
                tags.push(m.fec.ratio_percent);
            }
        }
        c.step_decoder(|_| false);
    }
    assert_eq!(tags, [50, 100, 100]);
}

/// A block size published with the ratio (`FecLive::set_block`) replaces
/// `frames_per_block` from the next block: the tags carry it, the repair
/// is sized to it, and the decoder rebuilds blocks of either size.
#[test]
fn a_live_block_size_applies_from_the_next_block() {
    let cell = Arc::new(FecLive::new());
    let mut res = Resources::new();
    res.insert("fec_live", cell.clone());
    let mut c = Chain::with(
        &[
            patient(),
            ("live_ratio", ParamValue::Str("fec_live".into())),
            ("fec_ratio", ParamValue::Int(0)),
        ],
        &[patient()],
        &res,
    );
    // (block, source frames tagged in it, K in its tags, repair after it)
    let mut blocks: Vec<(u16, usize, u8, usize)> = Vec::new();
    let mut lost = 0;
    for seq in 0..19u32 {
        match seq {
            // Mid-block 0 (five frames): 100 % in blocks of two from block 1.
            2 => cell.set_block(100, 2).unwrap(),
            // Mid-block 3: back to the encoder's own five, at 40 %.
            10 => cell.set(40).unwrap(),
            _ => {}
        }
        let (m, p) = source(seq, 30);
        c.input().push(m, &p).unwrap();
        c.step_encoder();
        for (m, _) in c.enc_out() {
            if m.flags & frame_flags::REPAIR != 0 {
                blocks.iter_mut().find(|b| b.0 == m.fec.block).unwrap().3 += 1;
            } else if m.fec.symbol == 0 {
                blocks.push((m.fec.block, 1, m.fec.source_symbols, 0));
            } else {
                let b = blocks.iter_mut().find(|b| b.0 == m.fec.block).unwrap();
                assert_eq!(m.fec.source_symbols, b.2, "one K per block");
                b.1 += 1;
            }
        }
        // Lose the last source of each block; repair rebuilds it.
        c.step_decoder(|m| {
            let l = m.flags & frame_flags::REPAIR == 0
                && m.fec.symbol + 1 == u16::from(m.fec.source_symbols);
            lost += usize::from(l);
            l
        });
    }
    assert_eq!(
        blocks[..5],
        [
            (0, 5, 5, 0),
            (1, 2, 2, 2),
            (2, 2, 2, 2),
            (3, 2, 2, 2),
            (4, 5, 5, 2)
        ],
        "size and repair per block"
    );
    assert_eq!(lost, 5);
    assert_eq!(
        counter(&c.dec_m, "recovered"),
        4,
        "blocks 1-4 rebuilt (block 0 had no repair)"
    );
}

/// Pushes `frames` one per cycle through encoder -> loss -> decoder, then
/// idle cycles enough for the last block's paced repair (one a cycle);
/// returns everything the decoder emitted.
fn run_chain(
    c: &mut Chain,
    frames: &[(FrameMeta, Vec<u8>)],
    lost: impl Fn(&FrameMeta) -> bool,
) -> Vec<(FrameMeta, Vec<u8>)> {
    let mut got = Vec::new();
    for i in 0..frames.len() + 12 {
        if let Some((m, p)) = frames.get(i) {
            c.input().push(*m, p).unwrap();
        }
        c.step_encoder();
        c.step_decoder(&lost);
        got.extend(c.dec_out());
    }
    got
}

fn assert_all_delivered_exactly(frames: &[(FrameMeta, Vec<u8>)], got: &[(FrameMeta, Vec<u8>)]) {
    for (m, p) in frames {
        let matches: Vec<_> = got.iter().filter(|(g, _)| g.seq == m.seq).collect();
        assert_eq!(
            matches.len(),
            1,
            "seq {} delivered once: {matches:?}",
            m.seq
        );
        let (g, gp) = matches[0];
        assert_eq!(gp, p, "seq {} payload", m.seq);
        // A rebuilt frame drops STREAM_START (it would reset the jitter
        // buffer mid-stream) and is flagged RECOVERED (the callers check
        // which); every other field comes back exactly.
        let start = frame_flags::STREAM_START | frame_flags::RECOVERED;
        assert_eq!(
            (
                g.timestamp,
                g.stream,
                g.codec,
                g.flags & !start,
                g.duration_ms
            ),
            (
                m.timestamp,
                m.stream,
                m.codec,
                m.flags & !start,
                m.duration_ms
            ),
            "seq {} metadata",
            m.seq
        );
        assert_eq!(g.flags & frame_flags::REPAIR, 0);
    }
}

#[test]
fn decoder_rebuilds_lost_frames_exactly_in_the_cycle_their_block_completes() {
    let mut c = Chain::new(&[patient()], &[patient()]);
    let frames: Vec<_> = (0..10)
        .map(|s| source(s, 40 + (s as usize * 53) % 300))
        .collect();
    // Block 0 loses seq 1 and 3 (and one repair); block 1 loses seq 9.
    let lost = |m: &FrameMeta| {
        let repair = m.flags & frame_flags::REPAIR != 0;
        (!repair && [1, 3, 9].contains(&m.seq)) || (repair && m.fec.block == 0 && m.fec.symbol == 6)
    };
    let mut emitted_at = Vec::new();
    let mut got = Vec::new();
    for i in 0..13 {
        if let Some((m, p)) = frames.get(i) {
            c.input().push(*m, p).unwrap();
        }
        c.step_encoder();
        c.step_decoder(lost);
        for (m, p) in c.dec_out() {
            emitted_at.push((i, m.seq, m.arrival_ns));
            got.push((m, p));
        }
    }
    assert_all_delivered_exactly(&frames, &got);
    // The rebuilt frames, and only they, are flagged RECOVERED.
    let flagged: Vec<u32> = got
        .iter()
        .filter(|(m, _)| m.flags & frame_flags::RECOVERED != 0)
        .map(|(m, _)| m.seq)
        .collect();
    assert_eq!(flagged, [1, 3, 9]);
    // Block 0's repair comes paced in cycles 5, 6 (lost) and 7: with three
    // sources it has five symbols in cycle 7, and its frames are rebuilt
    // in that cycle. Block 1 needs only its first repair (cycle 10).
    for seq in [1, 3] {
        let (cycle, _, arrival) = emitted_at.iter().find(|e| e.1 == seq).copied().unwrap();
        assert_eq!(cycle, 7, "seq {seq}");
        assert_eq!(arrival, 7 * Q_NS, "arrival is when it left the decoder");
    }
    let (cycle, _, _) = emitted_at.iter().find(|e| e.1 == 9).copied().unwrap();
    assert_eq!(cycle, 10);
    assert_eq!(counter(&c.dec_m, "recovered"), 3);
    assert_eq!(counter(&c.dec_m, "unrecoverable_blocks"), 0);
    assert_eq!(counter(&c.dec_m, "repair_received"), 5);
}

#[test]
fn too_much_loss_is_counted_unrecoverable_and_state_stays_bounded() {
    let mut c = Chain::new(
        &[patient()],
        &[patient(), ("blocks_in_flight", ParamValue::Int(4))],
    );
    let frames: Vec<_> = (0..200).map(|s| source(s, 100)).collect();
    // Block 2 loses 4 of 8 symbols (3 sources); blocks 5 and 6 vanish whole.
    let lost = |m: &FrameMeta| {
        let b = m.fec.block;
        (b == 2 && [0, 1, 2, 6].contains(&m.fec.symbol)) || b == 5 || b == 6
    };
    let got = run_chain(&mut c, &frames, lost);
    assert_eq!(counter(&c.dec_m, "unrecoverable_blocks"), 3);
    assert_eq!(counter(&c.dec_m, "recovered"), 0);
    let delivered: Vec<u32> = got.iter().map(|(m, _)| m.seq).collect();
    let want: Vec<u32> = (0..200)
        .filter(|s| !(10..13).contains(s) && !(25..35).contains(s))
        .collect();
    assert_eq!(
        delivered, want,
        "every surviving source frame passed at once, in order"
    );
}

#[test]
fn block_ids_wrap_around() {
    // Hand-made blocks 65534, 65535, 0, 1 with one source lost in each.
    let (dec, m) = build(&RaptorqDecode, &[patient()]).unwrap();
    let mut dec = dec;
    let mut pool: Vec<Buffer> = (0..2)
        .map(|_| Buffer::for_type(PortType::Frame, Q_NS, 64))
        .collect();
    let mut got = Vec::new();
    let mut all = Vec::new();
    for (n, block) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
        let frames: Vec<_> = (0..5)
            .map(|i| source(n as u32 * 5 + i + 1, 30 + i as usize))
            .collect();
        let refs: Vec<(FrameMeta, &[u8])> = frames.iter().map(|(m, p)| (*m, &p[..])).collect();
        // In the full layout, as builds before the compact one sent it: a
        // receiver still rebuilds their blocks.
        let repairs = encode_block(&refs, repair_count(5, 50), None, Layout::Full);
        let tag = |symbol: u16| FecTag {
            block,
            symbol,
            source_symbols: 5,
            ratio_percent: 50,
        };
        let input = batch(&mut pool[0]);
        for (i, (meta, p)) in frames.iter().enumerate() {
            all.push((*meta, p.clone()));
            if i != n {
                input
                    .push(
                        FrameMeta {
                            fec: tag(i as u16),
                            ..*meta
                        },
                        p,
                    )
                    .unwrap();
            }
        }
        for (esi, data) in &repairs {
            let meta = FrameMeta {
                flags: frame_flags::REPAIR,
                fec: tag(*esi),
                ..frames[4].0
            };
            input.push(meta, data).unwrap();
        }
        for step in 0..2 {
            pool[1].reset();
            let mut io = Io::checked(&mut pool, &[0], &[1]).unwrap();
            dec.process(&mut io, &cx(n as u64 * 2 + step));
            pool[0].reset();
            got.extend(
                batch(&mut pool[1])
                    .iter()
                    .map(|s| (s.meta, s.bytes().to_vec())),
            );
        }
    }
    assert_all_delivered_exactly(&all, &got);
    assert_eq!(counter(&m, "recovered"), 4);
    assert_eq!(counter(&m, "unrecoverable_blocks"), 0);
    assert_eq!(counter(&m, "stale"), 0);
}

#[test]
fn malformed_frames_are_counted_and_sources_still_pass() {
    let (mut dec, m) = build(&RaptorqDecode, &[patient()]).unwrap();
    let mut pool: Vec<Buffer> = (0..2)
        .map(|_| Buffer::for_type(PortType::Frame, Q_NS, 64))
        .collect();
    let tag = |block, symbol, k| FecTag {
        block,
        symbol,
        source_symbols: k,
        ratio_percent: 50,
    };
    let repair = |fec| FrameMeta {
        flags: frame_flags::REPAIR,
        fec,
        stream: 77,
        ..Default::default()
    };
    let cases: Vec<(FrameMeta, Vec<u8>)> = vec![
        (
            FrameMeta {
                seq: 1,
                stream: 77,
                fec: tag(0, 0, 5),
                ..Default::default()
            },
            vec![1; 10],
        ),
        (repair(tag(0, 2, 5)), vec![0; 30]), // repair id inside the source range
        (repair(tag(0, 5, 4)), vec![0; 30]), // K differs from the block's
        (repair(tag(0, 6, 5)), vec![0; 5]),  // shorter than a symbol header
        (repair(tag(0, 7, 5)), vec![0; 30]),
        (repair(tag(0, 8, 5)), vec![0; 31]), // size differs from the block's
        (repair(tag(0, 9, 200)), vec![0; 30]), // K beyond the maximum
        (
            FrameMeta {
                seq: 2,
                stream: 77,
                fec: tag(0, 9, 5),
                ..Default::default()
            },
            vec![2; 10],
        ),
        (repair(tag(0, 5, 0)), vec![0; 30]), // repair without a block shape
    ];
    for (meta, bytes) in &cases {
        batch(&mut pool[0]).push(*meta, bytes).unwrap();
    }
    let mut passed = Vec::new();
    for cycle in 0..2 {
        pool[1].reset();
        let mut io = Io::checked(&mut pool, &[0], &[1]).unwrap();
        dec.process(&mut io, &cx(cycle));
        pool[0].reset();
        passed.extend(batch(&mut pool[1]).iter().map(|s| s.meta.seq));
    }
    assert_eq!(passed, vec![1, 2], "source frames pass whatever their tags");
    assert_eq!(counter(&m, "malformed"), 6);
    assert_eq!(counter(&m, "repair_received"), 7);
    assert_eq!(counter(&m, "recovered"), 0);
}

#[test]
fn bad_params_fail_the_build() {
    let cases: Vec<(&dyn StageFactory, &str, ParamValue)> = vec![
        (&RaptorqEncode, "frames_per_block", ParamValue::Int(0)),
        (&RaptorqEncode, "frames_per_block", ParamValue::Int(65)),
        (&RaptorqEncode, "fec_ratio", ParamValue::Int(-1)),
        (&RaptorqEncode, "fec_ratio", ParamValue::Int(201)),
        (
            &RaptorqEncode,
            "live_ratio",
            ParamValue::Str("taken".into()),
        ),
        (
            &RaptorqEncode,
            "worker_wait",
            ParamValue::Duration(Duration::from_secs(5)),
        ),
        (&RaptorqDecode, "blocks_in_flight", ParamValue::Int(1)),
        (&RaptorqDecode, "blocks_in_flight", ParamValue::Int(1000)),
    ];
    // A resource of another type under the name `live_ratio` gives.
    let mut res = Resources::new();
    res.insert("taken", Arc::new(7u32));
    for (f, name, value) in cases {
        match build_with(f, &[(name, value.clone())], &res) {
            Ok(_) => panic!("{name}={value} should fail"),
            Err(e) => assert!(e.to_string().contains(name), "{e}"),
        }
    }
}

#[test]
fn both_processors_are_real_time_safe() {
    let mut c = Chain::new(&[patient()], &[patient()]);
    let mut seq = 0u32;
    let mut frame = [0u8; 320];
    assert_rt_safe("fec encode + decode", 300, || {
        for (i, b) in frame.iter_mut().enumerate() {
            *b = (seq as usize * 3 + i) as u8;
        }
        let len = 40 + (seq as usize * 37) % 280;
        let meta = FrameMeta {
            seq,
            timestamp: seq * 960,
            duration_ms: 20,
            ..Default::default()
        };
        let _ = c.input().push(meta, &frame[..len]);
        seq += 1;
        c.step_encoder();
        // Lose one source per block, and a whole block now and then.
        c.step_decoder(|m| {
            (m.flags & frame_flags::REPAIR == 0 && m.fec.symbol == (m.fec.block % 5))
                || m.fec.block % 17 == 16
        });
    });
    assert!(counter(&c.dec_m, "recovered") > 40);
    assert!(counter(&c.dec_m, "unrecoverable_blocks") >= 2);
    assert_eq!(counter(&c.dec_m, "worker_late"), 0);
}

#[test]
fn registered_in_the_stage_registry() {
    let r = wzp_stages::registry();
    assert!(r.get("fec.raptorq_encode").is_some());
    assert!(r.get("fec.raptorq_decode").is_some());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any loss of at most R of a block's K + R frames, in every block,
    /// delivers every source frame byte-equal.
    #[test]
    fn any_loss_within_the_repair_budget_recovers_every_frame(
        k in 1usize..=8,
        ratio in prop::sample::select(vec![20u32, 25, 50]),
        sizes in prop::collection::vec(0usize..600, 40),
        loss_seeds in prop::collection::vec(any::<u64>(), 8),
    ) {
        let r = repair_count(k, ratio);
        let blocks = 40 / k;
        let n = blocks * k;
        let frames: Vec<_> = (0..n as u32).map(|s| source(s, sizes[s as usize])).collect();
        // Per block, a set of at most R lost symbol ids out of K + R.
        let lost_sets: Vec<Vec<u16>> = (0..blocks)
            .map(|b| {
                let mut x = loss_seeds[b % loss_seeds.len()] ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x };
                let count = (next() % (r as u64 + 1)) as usize;
                let mut ids: Vec<u16> = (0..(k + r) as u16).collect();
                for i in 0..count {
                    let j = i + (next() as usize % (ids.len() - i));
                    ids.swap(i, j);
                }
                ids.truncate(count);
                ids
            })
            .collect();
        let mut c = Chain::new(
            &[("frames_per_block", ParamValue::Int(k as i64)), ("fec_ratio", ParamValue::Int(ratio as i64)), patient()],
            &[patient()],
        );
        let got = run_chain(&mut c, &frames, |m| {
            lost_sets[m.fec.block as usize].contains(&m.fec.symbol)
        });
        assert_all_delivered_exactly(&frames, &got);
        let lost_sources: usize = lost_sets.iter().map(|s| s.iter().filter(|&&i| (i as usize) < k).count()).sum();
        prop_assert_eq!(counter(&c.dec_m, "recovered") as usize, lost_sources);
        prop_assert_eq!(counter(&c.dec_m, "unrecoverable_blocks"), 0);
    }
}
