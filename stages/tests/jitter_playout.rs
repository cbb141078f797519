//! `jitter.adaptive`: playout order and timing under in-order, reordered,
//! duplicated, late, wrapped and restarted streams; target delay adaptation;
//! real-time safety.

use std::time::Duration;

use wzp_engine::port::Buffer;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_proto::media::CodecId;
use wzp_stages::jitter::adaptive::Adaptive;

wzp_engine::install_alloc_checker!();

const Q_NS: u64 = 20_000_000;
const MS: u64 = 1_000_000;

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

struct Harness {
    proc: Box<dyn Processor>,
    pool: Vec<Buffer>,
    counters: Vec<(String, Counter)>,
    gauges: Vec<(String, Gauge)>,
    cycle: u64,
    quantum_ns: u64,
}

impl Harness {
    fn new(overrides: &[(&str, ParamValue)]) -> Self {
        Self::try_new(overrides).unwrap_or_else(|e| panic!("build failed: {e}"))
    }

    fn try_new(overrides: &[(&str, ParamValue)]) -> Result<Self, BuildError> {
        Self::try_with_quantum(overrides, Q_NS)
    }

    fn try_with_quantum(
        overrides: &[(&str, ParamValue)],
        quantum_ns: u64,
    ) -> Result<Self, BuildError> {
        let res = Resources::new();
        let mut cx = BuildContext::standalone(48_000, Duration::from_nanos(quantum_ns), &res);
        let built = Adaptive.build(&mut cx, &params_for(&Adaptive, overrides))?;
        let (counters, gauges) = cx.take_metrics();
        Ok(Harness {
            proc: built.processor,
            pool: vec![
                Buffer::for_type(PortType::Frame, quantum_ns, 64),
                Buffer::for_type(PortType::Frame, quantum_ns, 64),
            ],
            counters,
            gauges,
            cycle: 0,
            quantum_ns,
        })
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no counter {name}"))
            .1
            .get()
    }

    fn gauge(&self, name: &str) -> i64 {
        self.gauges
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no gauge {name}"))
            .1
            .get()
    }

    fn input(&mut self) -> &mut Batch<FrameMeta> {
        match &mut self.pool[0] {
            Buffer::Frames(b) => b,
            _ => unreachable!(),
        }
    }

    fn step(&mut self) {
        self.pool[1].reset();
        let cx = Cx {
            now_ns: self.cycle * self.quantum_ns,
            cycle: self.cycle,
            rate: 48_000,
            quantum_ns: self.quantum_ns,
        };
        let mut io = Io::checked(&mut self.pool, &[0], &[1]).expect("pool indices");
        self.proc.process(&mut io, &cx);
        self.pool[0].reset();
        self.cycle += 1;
    }

    fn output(&self) -> Vec<(FrameMeta, Vec<u8>)> {
        match &self.pool[1] {
            Buffer::Frames(b) => b.iter().map(|s| (s.meta, s.bytes().to_vec())).collect(),
            _ => unreachable!(),
        }
    }
}

/// A frame sent at media time `seq * 20 ms` (relative to `base`) that
/// arrives at `arrival_ns`.
fn frame(base: u32, k: u32, arrival_ns: u64) -> FrameMeta {
    let seq = base.wrapping_add(k);
    FrameMeta {
        seq,
        timestamp: seq.wrapping_mul(960),
        stream: 1,
        duration_ms: 20,
        arrival_ns,
        codec: CodecId::OPUS.0,
        ..Default::default()
    }
}

fn payload(seq: u32) -> [u8; 4] {
    seq.to_be_bytes()
}

/// What a frame carries: the seq alone.
fn body(m: &FrameMeta) -> Vec<u8> {
    payload(m.seq).to_vec()
}

/// An Opus packet shaped like one carrying DRED (code 3 with the padding
/// flag libopus's extensions need), then the seq.
fn dred_body(m: &FrameMeta) -> Vec<u8> {
    let mut b = vec![9 << 3 | 3, 0x40 | 1, 4];
    b.extend_from_slice(&payload(m.seq));
    b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    Played(u32),
    Missing(u32),
}

/// Runs `cycles` cycles; at each, pushes the frames whose arrival falls in
/// that quantum. Returns per cycle what came out.
fn run(h: &mut Harness, mut frames: Vec<FrameMeta>, cycles: u64) -> Vec<Vec<Out>> {
    frames.sort_by_key(|m| m.arrival_ns);
    let mut next = 0;
    let mut outs = Vec::new();
    for _ in 0..cycles {
        let end = (h.cycle + 1) * Q_NS;
        while next < frames.len() && frames[next].arrival_ns < end {
            let m = frames[next];
            h.input().push(m, &payload(m.seq)).unwrap();
            next += 1;
        }
        h.step();
        let mut this = Vec::new();
        for (m, bytes) in h.output() {
            if m.flags & frame_flags::MISSING != 0 {
                if m.flags & frame_flags::NEXT_ATTACHED != 0 {
                    assert_eq!(m.flags & frame_flags::INSERTED, 0, "{m:?}");
                    let ahead = u32::from(m.fec.symbol.max(1));
                    assert_eq!(bytes, payload(m.seq + ahead), "a later frame rides along");
                } else {
                    assert!(bytes.is_empty(), "missing frames carry no payload");
                }
                assert_eq!(m.timestamp, m.seq.wrapping_mul(960), "expected timestamp");
                assert_eq!(m.duration_ms, 20);
                this.push(Out::Missing(m.seq));
            } else {
                assert_eq!(bytes, payload(m.seq), "payload belongs to its seq");
                this.push(Out::Played(m.seq));
            }
        }
        outs.push(this);
    }
    outs
}

/// Like [`run`], but a cycle sees only what arrived up to its own time (a
/// receiver whose cycles lag arrivals), and returns each cycle's raw output.
fn run_seen(
    h: &mut Harness,
    frames: Vec<FrameMeta>,
    cycles: u64,
) -> Vec<Vec<(FrameMeta, Vec<u8>)>> {
    run_seen_with(h, frames, cycles, body)
}

/// [`run_seen`] with frames carrying `body_of(frame)`.
fn run_seen_with(
    h: &mut Harness,
    mut frames: Vec<FrameMeta>,
    cycles: u64,
    body_of: fn(&FrameMeta) -> Vec<u8>,
) -> Vec<Vec<(FrameMeta, Vec<u8>)>> {
    frames.sort_by_key(|m| m.arrival_ns);
    let mut next = 0;
    let mut outs = Vec::new();
    for _ in 0..cycles {
        let now = h.cycle * Q_NS;
        while next < frames.len() && frames[next].arrival_ns <= now {
            let m = frames[next];
            h.input().push(m, &body_of(&m)).unwrap();
            next += 1;
        }
        h.step();
        outs.push(h.output());
    }
    outs
}

/// The outputs after playout started; asserts exactly one per period.
fn after_start(outs: &[Vec<Out>]) -> Vec<Out> {
    let start = outs
        .iter()
        .position(|o| !o.is_empty())
        .expect("playout started");
    outs[start..]
        .iter()
        .map(|o| {
            assert_eq!(o.len(), 1, "exactly one frame per period: {o:?}");
            o[0]
        })
        .collect()
}

fn played(outs: &[Out]) -> Vec<u32> {
    outs.iter()
        .filter_map(|o| match o {
            Out::Played(s) => Some(*s),
            Out::Missing(_) => None,
        })
        .collect()
}

fn twenty() -> [(&'static str, ParamValue); 1] {
    [(
        "initial_delay",
        ParamValue::Duration(Duration::from_millis(20)),
    )]
}

#[test]
fn in_order_plays_every_frame_once_in_order() {
    let mut h = Harness::new(&twenty());
    let n = 200;
    let frames = (0..n).map(|k| frame(0, k, k as u64 * Q_NS + MS)).collect();
    let outs = run(&mut h, frames, n as u64 + 1);
    assert!(outs[0].is_empty(), "nothing before the target delay");
    let seq = after_start(&outs);
    assert_eq!(played(&seq), (0..n).collect::<Vec<_>>());
    assert_eq!(h.counter("played"), n as u64);
    assert_eq!(h.counter("concealed"), 0);
    assert_eq!(h.counter("late"), 0);
    assert_eq!(h.gauge("target_delay_ms"), 20);
    assert_eq!(h.gauge("current_delay_ms"), 19);
}

#[test]
fn reordered_pairs_come_out_in_order() {
    let mut h = Harness::new(&[]);
    let n = 200;
    // Odd frames overtake even ones: each pair arrives swapped.
    let frames = (0..n)
        .map(|k| {
            let slot = if k % 2 == 0 { k + 1 } else { k - 1 };
            frame(0, k, slot as u64 * Q_NS + MS)
        })
        .collect();
    let outs = run(&mut h, frames, n as u64 + 1);
    let seq = after_start(&outs);
    assert_eq!(played(&seq)[..], (0..n).collect::<Vec<_>>()[..]);
    assert_eq!(h.counter("concealed"), 0);
    assert_eq!(h.counter("late"), 0);
    assert!(h.gauge("target_delay_ms") >= 40, "covers the 40 ms spread");
}

#[test]
fn duplicates_are_dropped_and_counted() {
    let mut h = Harness::new(&twenty());
    let n = 100u32;
    let mut frames = Vec::new();
    for k in 0..n {
        frames.push(frame(0, k, k as u64 * Q_NS + MS));
        // Same quantum (still held) and five quanta later (already played).
        frames.push(frame(0, k, k as u64 * Q_NS + 2 * MS));
        frames.push(frame(0, k, (k as u64 + 5) * Q_NS + MS));
    }
    let outs = run(&mut h, frames, n as u64 + 6);
    let seq = after_start(&outs);
    assert_eq!(played(&seq), (0..n).collect::<Vec<_>>());
    assert_eq!(h.counter("dropped_duplicates"), 2 * n as u64);
    assert_eq!(h.counter("late"), 0);
    assert_eq!(h.counter("played"), n as u64);
}

#[test]
fn late_frame_is_concealed_in_place_then_counted_late() {
    let mut h = Harness::new(&twenty());
    let n = 60u32;
    let frames = (0..n)
        .map(|k| {
            let at = if k == 10 { 40 } else { k as u64 };
            frame(0, k, at * Q_NS + MS)
        })
        .collect();
    let outs = run(&mut h, frames, n as u64 + 1);
    let seq = after_start(&outs);
    let pos = seq
        .iter()
        .position(|o| *o == Out::Missing(10))
        .expect("seq 10 concealed");
    assert_eq!(seq[pos - 1], Out::Played(9));
    assert_eq!(seq[pos + 1], Out::Played(11));
    assert!(!played(&seq).contains(&10), "a late frame is never played");
    // A frame missing at its time raises the hold by one frame (so the
    // next packet, which may carry LBRR for it, is there in time): one
    // period inserted before 12, concealed as well, then every frame plays.
    assert_eq!(seq[pos + 2], Out::Missing(12), "{seq:?}");
    assert_eq!(seq[pos + 3], Out::Played(12), "{seq:?}");
    assert_eq!(h.counter("stretched"), 1);
    assert_eq!(h.gauge("burst_hold_ms"), 20);
    assert_eq!(h.counter("late"), 1);
    assert_eq!(h.counter("concealed"), 2);
    assert_eq!(h.counter("skipped"), 0);
    // One period went to the stretch: the last frame is still held.
    assert_eq!(h.counter("played"), n as u64 - 2);
}

#[test]
fn lost_frames_are_concealed_at_their_time() {
    // No burst hold: the burst below would grow the delay by stretching
    // (`a_burst_of_losses_is_held_for_and_rebuilt_from_the_frame_after_it`).
    let mut h = Harness::new(&[
        twenty()[0].clone(),
        ("burst_hold", ParamValue::Duration(Duration::ZERO)),
    ]);
    let n = 100u32;
    let lost = [5u32, 6, 7, 50];
    let frames = (0..n)
        .filter(|k| !lost.contains(k))
        .map(|k| frame(0, k, k as u64 * Q_NS + MS))
        .collect();
    let outs = run(&mut h, frames, n as u64 + 1);
    let seq = after_start(&outs);
    for (i, o) in seq.iter().take(n as usize).enumerate() {
        let want = if lost.contains(&(i as u32)) {
            Out::Missing(i as u32)
        } else {
            Out::Played(i as u32)
        };
        assert_eq!(*o, want);
    }
    assert_eq!(h.counter("concealed"), lost.len() as u64);
}

#[test]
fn sender_pause_dtx_is_followed_not_called_late() {
    let mut h = Harness::new(&twenty());
    // Sequence numbers continue across a 1 s pause; timestamps jump.
    let gap = 50u32;
    let frames: Vec<FrameMeta> = (0..60u32)
        .map(|k| {
            let media = if k < 20 { k } else { k + gap };
            let mut m = frame(0, k, media as u64 * Q_NS + MS);
            m.timestamp = media * 960;
            m
        })
        .collect();
    let mut outs = Vec::new();
    let mut next = 0;
    for c in 0..(60 + gap) as u64 + 1 {
        while next < frames.len() && frames[next].arrival_ns < (c + 1) * Q_NS {
            let m = frames[next];
            h.input().push(m, &payload(m.seq)).unwrap();
            next += 1;
        }
        h.step();
        for (m, _) in h.output() {
            outs.push((m.flags & frame_flags::MISSING != 0, m.seq, m.timestamp));
        }
    }
    let played: Vec<u32> = outs.iter().filter(|o| !o.0).map(|o| o.1).collect();
    assert_eq!(played, (0..60).collect::<Vec<_>>());
    assert_eq!(h.counter("late"), 0);
    let concealed = outs.iter().filter(|o| o.0).count();
    assert!(
        (gap as usize - 1..=gap as usize + 1).contains(&concealed),
        "{concealed}"
    );
    // Playout resumes on the sender's timeline: frame 20 plays a pause
    // later than frame 19 would have been followed.
    let i19 = outs.iter().position(|o| !o.0 && o.1 == 19).unwrap();
    let i20 = outs.iter().position(|o| !o.0 && o.1 == 20).unwrap();
    assert!((i20 - i19) as u32 >= gap, "{} periods apart", i20 - i19);
}

/// A sender that moves from 20 ms frames to 120 ms packets (Codec2 sent
/// three frames to a packet): each packet leaves once its last frame is
/// made, about 100 ms after its timestamp, so the first one is due before
/// it arrives and playout conceals its seq, and the ones after, at the old
/// 20 ms cadence. The buffer follows the sender back to the first packet
/// (longer than the periods it concealed, newer than anything played)
/// instead of calling every packet late: each packet plays, once, and the
/// time concealed is the delay the longer packets need.
#[test]
fn a_move_to_longer_packets_is_followed_not_called_late() {
    let mut h = Harness::new(&twenty());
    let mut frames: Vec<FrameMeta> = (0..40u32)
        .map(|k| frame(0, k, k as u64 * Q_NS + MS))
        .collect();
    for j in 0..20u32 {
        let ts = 40 * 960 + j * 5_760;
        let media_ns = ts as u64 * 1_000_000_000 / 48_000;
        frames.push(FrameMeta {
            seq: 40 + j,
            timestamp: ts,
            stream: 1,
            duration_ms: 120,
            arrival_ns: media_ns + 100 * MS,
            ..Default::default()
        });
    }
    let outs = run_seen(&mut h, frames, 40 + 20 * 6 + 20);
    let all: Vec<Out> = outs
        .into_iter()
        .flatten()
        .map(|(m, bytes)| {
            if m.flags & frame_flags::MISSING != 0 {
                Out::Missing(m.seq)
            } else {
                assert_eq!(bytes, payload(m.seq), "payload belongs to its seq");
                Out::Played(m.seq)
            }
        })
        .collect();
    assert_eq!(played(&all), (0..60).collect::<Vec<_>>(), "{all:?}");
    assert_eq!(h.counter("late"), 0);
    assert_eq!(h.counter("resets"), 0);
    // The move costs the periods concealed before the first packet came
    // (at most its 100 ms), not one per packet.
    let last = all.iter().rposition(|o| *o == Out::Played(59)).unwrap();
    let concealed = all[..last]
        .iter()
        .filter(|o| matches!(o, Out::Missing(_)))
        .count();
    assert!(
        (1..=6).contains(&concealed),
        "{concealed} periods concealed: {all:?}"
    );
}

/// A sender whose clock stalled (a starved CPU) sends nothing for 600 ms,
/// then carries on where it left off: sequence numbers and timestamps both
/// continue, so every frame from then on is 600 ms behind the playout
/// point, beyond any target delay `max_delay` (200 ms) allows. The buffer
/// follows the sender after a few late frames instead of calling the rest
/// of the stream late.
#[test]
fn a_sender_that_stalled_is_followed_after_a_few_late_frames() {
    let mut h = Harness::new(&twenty());
    let stall = 30u32;
    let n = 150u32;
    let frames: Vec<FrameMeta> = (0..n)
        .map(|k| {
            let sent = if k < 40 { k } else { k + stall };
            frame(0, k, sent as u64 * Q_NS + MS)
        })
        .collect();
    let outs = run(&mut h, frames, (n + stall) as u64 + 10);
    let all: Vec<Out> = outs.into_iter().flatten().collect();
    let p = played(&all);
    assert_eq!(h.counter("resets"), 1, "{p:?}");
    let follow = wzp_stages::jitter::adaptive::FOLLOW_AFTER;
    assert_eq!(h.counter("late"), u64::from(follow - 1));
    // Everything before the stall, then everything from the frame the
    // buffer followed, in order.
    let resumed = 40 + follow - 1;
    let want: Vec<u32> = (0..40).chain(resumed..n).collect();
    let got: Vec<u32> = p
        .iter()
        .copied()
        .filter(|&s| s < 40 || s >= resumed)
        .collect();
    assert_eq!(got, want);
    assert!(p.iter().all(|&s| s < 40 || s >= resumed), "{p:?}");
}

#[test]
fn sequence_and_timestamp_wrap_around() {
    let mut h = Harness::new(&twenty());
    let base = u32::MAX - 30;
    let n = 80u32;
    // seq 0 (k = 31) is lost exactly at the wrap.
    let frames = (0..n)
        .filter(|&k| k != 31)
        .map(|k| frame(base, k, k as u64 * Q_NS + MS))
        .collect();
    let outs = run(&mut h, frames, n as u64 + 1);
    let seq = after_start(&outs);
    let mut want: Vec<Out> = (0..n)
        .map(|k| {
            let s = base.wrapping_add(k);
            if k == 31 {
                Out::Missing(s)
            } else {
                Out::Played(s)
            }
        })
        .collect();
    // The loss raises the hold by one frame when seq 1 plays: a period is
    // inserted before seq 2 (counted across the wrap: one lost, not 2^32).
    want.insert(33, Out::Missing(2));
    want.truncate(n as usize);
    assert_eq!(&seq[..n as usize], &want[..]);
    assert_eq!(h.gauge("burst_hold_ms"), 20);
    assert_eq!(h.counter("stretched"), 1);
    assert_eq!(h.counter("resets"), 0);
    assert_eq!(h.counter("late"), 0);
}

#[test]
fn large_backward_jump_resets_small_one_is_late() {
    let mut h = Harness::new(&twenty());
    let mut frames: Vec<FrameMeta> = (0..50)
        .map(|k| frame(500, k, k as u64 * Q_NS + MS))
        .collect();
    // A stray old frame 20 back: late, no reset.
    frames.push(frame(500, 0, 30 * Q_NS + 2 * MS));
    // The sender restarted its counter 400 frames back.
    frames.extend((0..50).map(|k| frame(100, k, (50 + k) as u64 * Q_NS + MS)));
    let outs = run(&mut h, frames, 101);
    assert_eq!(h.counter("resets"), 1);
    let all: Vec<Out> = outs.into_iter().flatten().collect();
    let p = played(&all);
    let restart = p
        .iter()
        .position(|&s| s == 100)
        .expect("restarted stream plays");
    // The old stream plays until the restart; what it still held is dropped.
    assert!(restart >= 48, "old stream played: {restart}");
    assert_eq!(
        p[..restart],
        (500..500 + restart as u32).collect::<Vec<_>>()[..]
    );
    assert_eq!(
        p[restart..],
        (100..100 + p.len() as u32 - restart as u32).collect::<Vec<_>>()[..]
    );
    assert!(p.len() - restart >= 45, "the new stream plays on");
    // The first copy of seq 500 was played, so the stray one is a duplicate.
    assert_eq!(h.counter("dropped_duplicates") + h.counter("late"), 1);
}

#[test]
fn new_stream_id_or_stream_start_resets() {
    let mut h = Harness::new(&twenty());
    let mut frames: Vec<FrameMeta> = (0..30).map(|k| frame(0, k, k as u64 * Q_NS + MS)).collect();
    // The first frame of stream 1 again, flagged STREAM_START: a duplicate,
    // not a new stream.
    let mut first = frame(0, 0, 30 * Q_NS + 2 * MS);
    first.flags = frame_flags::STREAM_START;
    frames[0].flags = frame_flags::STREAM_START;
    frames.push(first);
    // Stream 2 starts at seq 7000 (a forward jump within reach, but a new id).
    frames.extend((0..30).map(|k| {
        let mut m = frame(7000, k, (31 + k) as u64 * Q_NS + MS);
        m.stream = 2;
        m
    }));
    // Stream 2 restarts with STREAM_START at seq 7010 (backward, small jump).
    frames.extend((0..30).map(|k| {
        let mut m = frame(7010, k, (62 + k) as u64 * Q_NS + MS);
        m.stream = 2;
        if k == 0 {
            m.flags = frame_flags::STREAM_START;
        }
        m
    }));
    let outs = run(&mut h, frames, 93);
    assert_eq!(h.counter("resets"), 2);
    assert_eq!(h.counter("dropped_duplicates"), 1);
    let all: Vec<Out> = outs.into_iter().flatten().collect();
    let p = played(&all);
    assert!(p.starts_with(&(0..30).collect::<Vec<_>>()));
    let s2 = p.iter().position(|&s| s == 7000).expect("stream 2 plays");
    // The restart is where the sequence steps back.
    let s3 = (s2 + 1..p.len())
        .find(|&i| p[i] < p[i - 1])
        .expect("restart plays");
    assert_eq!(p[s3], 7010);
    assert_eq!(
        p[s2..s3],
        (7000..7000 + (s3 - s2) as u32).collect::<Vec<_>>()[..]
    );
    assert!(s3 - s2 >= 25, "stream 2 played before its restart");
    assert_eq!(
        p[s3..],
        (7010..7010 + (p.len() - s3) as u32).collect::<Vec<_>>()[..]
    );
}

#[test]
fn repair_frames_are_dropped_and_counted() {
    let mut h = Harness::new(&twenty());
    let mut frames: Vec<FrameMeta> = (0..20).map(|k| frame(0, k, k as u64 * Q_NS + MS)).collect();
    for k in [4u32, 9, 14] {
        let mut r = frame(0, k, k as u64 * Q_NS + 2 * MS);
        r.flags = frame_flags::REPAIR;
        frames.push(r);
    }
    let outs = run(&mut h, frames, 21);
    assert_eq!(played(&after_start(&outs)), (0..20).collect::<Vec<_>>());
    assert_eq!(h.counter("repair_dropped"), 3);
    assert_eq!(h.counter("dropped_duplicates"), 0);
}

/// Deterministic pseudo-random delays in `0..max_ms`.
fn jitter_ms(k: u32, max_ms: u64) -> u64 {
    let mut x = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 29;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 32;
    x % max_ms
}

#[test]
fn target_delay_rises_with_jitter_then_decays() {
    let mut h = Harness::new(&[]);
    let noisy = 600u32;
    let calm = 1000u32;
    let frames: Vec<FrameMeta> = (0..noisy + calm)
        .map(|k| {
            let extra = if k < noisy { jitter_ms(k, 80) } else { 0 };
            frame(0, k, k as u64 * Q_NS + extra * MS)
        })
        .collect();
    let mut frames_sorted = frames;
    frames_sorted.sort_by_key(|m| m.arrival_ns);
    let mut next = 0;
    let mut peak_target = 0;
    let mut concealed_settled_noisy = 0;
    let mut end_of_noise_delay = 0;
    for c in 0..(noisy + calm) as u64 + 10 {
        let end = (c + 1) * Q_NS;
        while next < frames_sorted.len() && frames_sorted[next].arrival_ns < end {
            let m = frames_sorted[next];
            h.input().push(m, &payload(m.seq)).unwrap();
            next += 1;
        }
        h.step();
        peak_target = peak_target.max(h.gauge("target_delay_ms"));
        if c == 300 {
            concealed_settled_noisy = h.counter("concealed");
        }
        if c == noisy as u64 - 1 {
            end_of_noise_delay = h.gauge("current_delay_ms");
            let late_after_settling = h.counter("concealed") - concealed_settled_noisy;
            // p95 target: a few percent of frames may still miss.
            assert!(
                late_after_settling <= 25,
                "{late_after_settling} concealed in 300 frames"
            );
        }
    }
    assert!(
        peak_target >= 70,
        "target rose to cover 80 ms of jitter: {peak_target}"
    );
    assert!(
        end_of_noise_delay >= 60,
        "playout followed: {end_of_noise_delay} ms"
    );
    let final_target = h.gauge("target_delay_ms");
    assert!(final_target <= 25, "target decayed back: {final_target}");
    let final_delay = h.gauge("current_delay_ms");
    assert!(
        final_delay <= final_target + 20,
        "playout shrank: {final_delay} ms"
    );
    assert!(h.counter("skipped") > 0, "shrinking skipped frames");
    assert!(h.counter("stretched") > 0, "growing stretched");
}

#[test]
fn bad_params_fail_the_build() {
    let d = |ms| ParamValue::Duration(Duration::from_millis(ms));
    let cases: Vec<(Vec<(&str, ParamValue)>, &str)> = vec![
        (vec![("min_delay", d(300))], "min_delay"),
        (vec![("initial_delay", d(500))], "initial_delay"),
        (vec![("initial_delay", d(5))], "initial_delay"),
        (
            vec![("max_delay", d(60_000)), ("initial_delay", d(40))],
            "max_delay",
        ),
        (vec![("quantile", ParamValue::Float(1.5))], "quantile"),
        (vec![("half_life", d(10))], "half_life"),
        (vec![("capacity", ParamValue::Int(2))], "capacity"),
        (vec![("reset_jump", ParamValue::Int(0))], "reset_jump"),
    ];
    for (overrides, want) in cases {
        match Harness::try_new(&overrides) {
            Ok(_) => panic!("{overrides:?} should fail"),
            Err(e) => assert!(e.to_string().contains(want), "{e}"),
        }
    }
}

#[test]
fn process_is_real_time_safe() {
    let mut h = Harness::new(&[("capacity", ParamValue::Int(64))]);
    let mut k = 0u32;
    let mut cycle = 0u64;
    assert_rt_safe("jitter.adaptive", 2000, || {
        // Jitter, loss, duplicates, a restart and a flood beyond capacity.
        let burst = if cycle % 400 == 399 { 70 } else { 1 };
        for _ in 0..burst {
            if k % 13 != 0 {
                let extra = jitter_ms(k, 60);
                let m = frame(0, k, cycle * Q_NS + extra * MS);
                let _ = h.input().push(m, &[1; 160]);
                if k % 7 == 0 {
                    let _ = h.input().push(m, &[1; 160]);
                }
            }
            k = if cycle == 1000 { 5 } else { k + 1 };
        }
        h.step();
        cycle += 1;
    });
    assert!(h.counter("played") > 1000);
    assert!(h.counter("resets") >= 1);
}

/// The burst stretch and its outage drain allocate nothing either.
#[test]
fn stretching_is_real_time_safe() {
    let mut h = Harness::new(&[
        (
            "burst_stretch",
            ParamValue::Duration(Duration::from_millis(100)),
        ),
        ("capacity", ParamValue::Int(64)),
    ]);
    let mut cycle = 0u64;
    // Runs of 3 (the hold grows), of 6 (stretched for) and of 20 (an outage:
    // stretched, then drained), over and over.
    let lost = |k: u64| matches!(k % 200, 20..=22 | 60..=65 | 120..=139);
    assert_rt_safe("jitter.adaptive stretch", 2000, || {
        if !lost(cycle) {
            let m = FrameMeta {
                codec: CodecId::OPUS.0,
                ..frame(0, cycle as u32, cycle * Q_NS + MS)
            };
            let _ = h.input().push(m, &[9 << 3 | 3, 0x41, 4, 1, 2, 3, 4]);
        }
        h.step();
        cycle += 1;
    });
    assert!(h.counter("stretched") > 0);
    assert!(h.counter("stretch_drained") > 0);
    assert!(h.counter("played") > 1500);
}

#[test]
fn registered_in_the_stage_registry() {
    assert!(wzp_stages::registry().get("jitter.adaptive").is_some());
}

/// The first frames of a stream came a frame late (a slow first hop, a
/// sender that was still starting), then the path settled. Whatever the
/// phase between arrivals and this graph's cycles, the playout point comes
/// down to within `target - frame/2 ..= target + 3/4 frame` of the fastest
/// arrivals instead of staying one frame high for the whole call.
#[test]
fn playout_comes_down_after_a_late_start_at_every_phase() {
    let min20 = [
        (
            "initial_delay",
            ParamValue::Duration(Duration::from_millis(20)),
        ),
        ("min_delay", ParamValue::Duration(Duration::from_millis(20))),
        // Constant-size frames: none is quiet, the skip waits this long.
        ("quiet_wait", ParamValue::Duration(Duration::from_secs(2))),
    ];
    for lead_ms in [1u64, 4, 8, 11, 14, 17, 19] {
        let mut h = Harness::new(&min20);
        // Frame k is sent at k * 20 ms and read lead_ms later; the first
        // three are a frame (20 ms) later still.
        let frames: Vec<FrameMeta> = (0..150u32)
            .map(|k| {
                let late = if k < 3 { 20 } else { 0 };
                frame(1000, k, (k as u64 * 20 + lead_ms + late) * 1_000_000)
            })
            .collect();
        let outs: Vec<usize> = run_seen(&mut h, frames, 150).iter().map(Vec::len).collect();
        let cur = h.gauge("current_delay_ms");
        assert!(
            (10..=35).contains(&cur),
            "lead {lead_ms} ms: playing {cur} ms behind the fastest arrivals"
        );
        // Settled: the last 100 cycles each put out exactly one frame, and
        // nothing was concealed once the stream ran.
        assert!(
            outs[50..].iter().all(|&n| n == 1),
            "lead {lead_ms}: {outs:?}"
        );
        assert!(
            h.counter("skipped") <= 1,
            "lead {lead_ms}: one skip at most, got {}",
            h.counter("skipped")
        );
        assert_eq!(h.counter("late"), 0, "lead {lead_ms}");
    }
}

/// A lost frame whose successor is already held goes out with that
/// successor's payload (`NEXT_ATTACHED`), so the decoder can rebuild it from
/// in-band redundancy; a lost frame followed by another loss goes out empty.
/// A period inserted to grow the delay is `MISSING | INSERTED` and the frame
/// due still plays next.
#[test]
fn lost_frames_carry_the_next_one_and_stretches_are_marked_inserted() {
    // No burst hold here: it has its own test below.
    let forty = [
        (
            "initial_delay",
            ParamValue::Duration(Duration::from_millis(40)),
        ),
        ("burst_hold", ParamValue::Duration(Duration::ZERO)),
    ];
    let mut h = Harness::new(&forty);
    let lost = [5u32, 6, 7, 50];
    let mut missing = Vec::new();
    let mut played = Vec::new();
    for c in 0..120u64 {
        let k = c as u32;
        if k < 100 && !lost.contains(&k) {
            let m = frame(0, k, c * Q_NS + MS);
            h.input().push(m, &payload(m.seq)).unwrap();
        }
        h.step();
        for (m, bytes) in h.output() {
            if m.flags & frame_flags::MISSING != 0 {
                missing.push((m.seq, m.flags, bytes));
            } else {
                played.push(m.seq);
            }
        }
    }
    let flags_of = |seq: u32| {
        missing
            .iter()
            .find(|(s, _, _)| *s == seq)
            .map(|(_, f, b)| (*f, b.clone()))
            .unwrap_or_else(|| panic!("seq {seq} not concealed: {missing:?}"))
    };
    for seq in [5, 6] {
        let (f, b) = flags_of(seq);
        assert_eq!(f & frame_flags::NEXT_ATTACHED, 0, "seq {seq}");
        assert!(b.is_empty());
    }
    for seq in [7, 50] {
        let (f, b) = flags_of(seq);
        assert_ne!(f & frame_flags::NEXT_ATTACHED, 0, "seq {seq}: {f:#x}");
        assert_eq!(b, payload(seq + 1));
    }
    assert!(
        missing
            .iter()
            .all(|(_, f, _)| f & frame_flags::INSERTED == 0),
        "nothing stretched on a steady path"
    );
    // A steady path starts at its target (20 ms): nothing skipped, every
    // frame that arrived plays once.
    assert_eq!(h.counter("skipped"), 0);
    assert_eq!(played.len(), 96, "every frame that arrived played once");

    // Jitter that grows the target: the stretches are INSERTED, empty, and
    // every frame still plays exactly once, in order.
    let mut h = Harness::new(&twenty());
    let mut out = Vec::new();
    let n = 400u32;
    let frames: Vec<FrameMeta> = (0..n)
        .map(|k| {
            let extra = if k >= 100 { jitter_ms(k, 60) } else { 0 };
            frame(0, k, k as u64 * Q_NS + (1 + extra) * MS)
        })
        .collect();
    for cycle in run_seen(&mut h, frames, n as u64 + 40) {
        out.extend(cycle);
    }
    let inserted: Vec<_> = out
        .iter()
        .filter(|(m, _)| m.flags & frame_flags::INSERTED != 0)
        .collect();
    assert!(!inserted.is_empty(), "the buffer grew by stretching");
    for (m, bytes) in &inserted {
        assert_ne!(m.flags & frame_flags::MISSING, 0);
        assert!(bytes.is_empty());
    }
    assert_eq!(h.counter("stretched"), inserted.len() as u64);
    let seqs: Vec<u32> = out
        .iter()
        .filter(|(m, _)| m.flags & frame_flags::MISSING == 0)
        .map(|(m, _)| m.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order, once each");
}

/// A clean path (no loss, no jitter): from the first frame on, the buffer
/// neither stretches nor skips, whatever `initial_delay` says, at every
/// phase between arrivals and cycles, for 10 and 20 ms quanta and 20 and 40
/// ms frames. It plays every frame once, at `min_delay` (within the
/// `target - frame/2 ..= target + 3/4 frame` band), and declares no deeper
/// target than that once it runs.
#[test]
fn clean_path_neither_stretches_nor_skips_from_the_start() {
    // (quantum, frame, min_delay, initial_delay), ms.
    let cases: [(u64, u64, u64, u64); 8] = [
        (20, 20, 20, 40),
        (20, 20, 20, 20),
        (20, 20, 20, 100),
        (20, 20, 40, 60),
        (10, 20, 20, 40),
        (20, 40, 20, 40),
        (20, 40, 40, 80),
        (10, 10, 20, 40),
    ];
    let d = |ms| ParamValue::Duration(Duration::from_millis(ms));
    for &(quantum_ms, frame_ms, min_ms, initial_ms) in &cases {
        for lead_ms in [1u64, 3, 7, 9, 13, 17, 19] {
            let what = format!(
                "quantum {quantum_ms} ms, frames {frame_ms} ms, min {min_ms} ms, initial {initial_ms} ms, lead {lead_ms} ms"
            );
            let q_ns = quantum_ms * MS;
            let mut h = Harness::try_with_quantum(
                &[("min_delay", d(min_ms)), ("initial_delay", d(initial_ms))],
                q_ns,
            )
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            // 6 s of frames, each sent at k * frame and read lead_ms later.
            let n = (6_000 / frame_ms) as u32;
            let step = (frame_ms * 48) as u32;
            let frames: Vec<FrameMeta> = (0..n)
                .map(|k| FrameMeta {
                    seq: k,
                    timestamp: k * step,
                    stream: 1,
                    duration_ms: frame_ms as u8,
                    arrival_ns: (k as u64 * frame_ms + lead_ms) * MS,
                    ..Default::default()
                })
                .collect();
            let mut next = 0;
            let mut out = Vec::new();
            let cycles = (6_000 + 4 * initial_ms) / quantum_ms;
            let mut max_target = 0;
            for _ in 0..cycles {
                let now = h.cycle * q_ns;
                while next < frames.len() && frames[next].arrival_ns <= now {
                    let m = frames[next];
                    h.input().push(m, &payload(m.seq)).unwrap();
                    next += 1;
                }
                h.step();
                for (m, _) in h.output() {
                    out.push(m);
                }
                if !out.is_empty() {
                    max_target = max_target.max(h.gauge("target_delay_ms"));
                }
                // The stream ends here; what the buffer plays after its last
                // frame is concealment of frames never sent.
                if out.last().is_some_and(|m| m.seq == n - 1) {
                    break;
                }
            }
            for name in ["stretched", "skipped", "concealed", "late", "resets"] {
                assert_eq!(h.counter(name), 0, "{what}: {name}");
            }
            assert!(
                out.iter().all(|m| m.flags & frame_flags::MISSING == 0),
                "{what}: a MISSING frame went out"
            );
            let seqs: Vec<u32> = out.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "{what}");
            assert_eq!(max_target, min_ms as i64, "{what}: target while playing");
            let cur = h.gauge("current_delay_ms");
            let (lo, hi) = (
                min_ms as i64 - frame_ms as i64 / 2,
                min_ms as i64 + 3 * frame_ms as i64 / 4,
            );
            assert!((lo..=hi).contains(&cur), "{what}: playing {cur} ms behind");
        }
    }
}

/// Runs `n` frames of a steady path (each read 1 ms after it was sent)
/// except those in `lost`, plus 10 periods; returns every item out. The
/// frames are Opus carrying DRED (see [`dred_body`]).
fn steady_with_losses(
    h: &mut Harness,
    n: u32,
    lost: impl Fn(u32) -> bool,
) -> Vec<(FrameMeta, Vec<u8>)> {
    steady_stream(h, n, lost, true)
}

/// Opus frames `0..n` of a steady path (each read 1 ms after it was sent),
/// except those in `lost`.
fn steady_frames(n: u32, lost: impl Fn(u32) -> bool) -> Vec<FrameMeta> {
    (0..n)
        .filter(|&k| !lost(k))
        .map(|k| FrameMeta {
            codec: CodecId::OPUS.0,
            ..frame(0, k, k as u64 * Q_NS + MS)
        })
        .collect()
}

/// [`steady_with_losses`], the Opus frames carrying DRED or not.
fn steady_stream(
    h: &mut Harness,
    n: u32,
    lost: impl Fn(u32) -> bool,
    dred: bool,
) -> Vec<(FrameMeta, Vec<u8>)> {
    let frames = steady_frames(n, lost);
    run_seen_with(
        h,
        frames,
        n as u64 + 10,
        if dred { dred_body } else { body },
    )
    .into_iter()
    .flatten()
    .collect()
}

/// Bursts of three lost frames: after the first, the buffer holds three
/// frames more (60 ms, `burst_hold_ms`), so in every later burst each lost
/// frame goes out carrying the first frame after the burst (`fec.symbol`
/// frames ahead) for the decoder to rebuild it from DRED; every frame that
/// arrived still plays once, in order. Single losses (and bursts in a
/// stream without DRED) hold one frame, for LBRR; the hold decays back to
/// none once losses stop.
#[test]
fn a_burst_of_losses_is_held_for_and_rebuilt_from_the_frame_after_it() {
    let mut h = Harness::new(&twenty());
    let burst = |k: u32| (100..400).contains(&k) && k % 50 < 3;
    let n = 400;
    let out = steady_with_losses(&mut h, n, burst);
    assert_eq!(
        h.gauge("burst_hold_ms"),
        60,
        "three frames held for bursts of three"
    );
    assert!(
        h.gauge("target_delay_ms") >= 80,
        "{}",
        h.gauge("target_delay_ms")
    );
    for start in [200u32, 250, 300, 350] {
        for k in start..start + 3 {
            let (m, bytes) = out
                .iter()
                .find(|(m, _)| m.seq == k && m.flags & frame_flags::INSERTED == 0)
                .unwrap_or_else(|| panic!("seq {k} never came out"));
            assert_ne!(m.flags & frame_flags::MISSING, 0, "seq {k} was lost");
            assert_ne!(
                m.flags & frame_flags::NEXT_ATTACHED,
                0,
                "seq {k} carries the frame after the burst"
            );
            assert_eq!(u32::from(m.fec.symbol), start + 3 - k, "seq {k}: distance");
            assert_eq!(bytes[3..], payload(start + 3), "seq {k}");
        }
    }
    let played: Vec<u32> = out
        .iter()
        .filter(|(m, _)| m.flags & frame_flags::MISSING == 0)
        .map(|(m, _)| m.seq)
        .collect();
    let sent: Vec<u32> = (0..n).filter(|&k| !burst(k)).collect();
    assert_eq!(
        played, sent,
        "every frame that arrived plays once, in order"
    );

    // The same bursts in a stream without DRED: LBRR reaches one frame
    // back, so one frame is held (for the first loss of each burst), not
    // three; one stretch when it rose, none after.
    let mut h = Harness::new(&twenty());
    steady_stream(&mut h, n, burst, false);
    assert_eq!(h.gauge("burst_hold_ms"), 20, "no DRED, one frame for LBRR");
    assert_eq!(h.counter("stretched"), 1);

    // Single losses: one frame held, so the packet after each loss (its
    // LBRR) is there when the loss is due; every loss carries it.
    let mut h = Harness::new(&twenty());
    let single = |k: u32| k % 25 == 7;
    let out = steady_with_losses(&mut h, 400, single);
    assert_eq!(h.gauge("burst_hold_ms"), 20, "single losses hold one frame");
    assert_eq!(h.counter("stretched"), 1);
    for k in (57..390).filter(|&k| single(k)) {
        let (m, bytes) = out
            .iter()
            .find(|(m, _)| m.seq == k && m.flags & frame_flags::INSERTED == 0)
            .unwrap_or_else(|| panic!("seq {k} never came out"));
        assert_ne!(m.flags & frame_flags::NEXT_ATTACHED, 0, "seq {k}: {m:?}");
        assert_eq!(bytes[3..], payload(k + 1), "seq {k}");
    }

    // Codec2 has no LBRR: its single losses hold nothing.
    let mut h = Harness::new(&twenty());
    let frames: Vec<FrameMeta> = (0..400)
        .filter(|&k| !single(k))
        .map(|k| FrameMeta {
            codec: CodecId::CODEC2_3200.0,
            ..frame(0, k, k as u64 * Q_NS + MS)
        })
        .collect();
    run_seen(&mut h, frames, 410);
    assert_eq!(h.gauge("burst_hold_ms"), 0, "Codec2: no hold");
    assert_eq!(h.counter("stretched"), 0);
    assert!(h.counter("concealed") >= 15);

    // A single loss, then a clean path: the hold decays (a skip the
    // buffer makes to come down is not a loss and does not raise it again).
    let mut h = Harness::new(&twenty());
    steady_with_losses(&mut h, 1_000, |k| k == 100);
    assert_eq!(h.counter("stretched"), 1);
    assert_eq!(h.counter("skipped"), 1);
    assert_eq!(h.gauge("burst_hold_ms"), 0, "one frame held, then let go");

    // The hold decays once the bursts stop: 20 s later it is gone.
    let mut h = Harness::new(&twenty());
    steady_with_losses(&mut h, 1_400, |k| (100..160).contains(&k) && k % 20 < 3);
    assert_eq!(
        h.gauge("burst_hold_ms"),
        0,
        "the hold decays on a clean path"
    );

    // `burst_hold = 0` turns it off.
    let mut h = Harness::new(&[
        twenty()[0].clone(),
        ("burst_hold", ParamValue::Duration(Duration::ZERO)),
    ]);
    steady_with_losses(&mut h, 400, burst);
    assert_eq!(h.gauge("burst_hold_ms"), 0);
    assert_eq!(h.counter("stretched"), 0);
}

/// A 400 ms outage every 5 s (20 frames in one run) is beyond what any hold
/// within the 60 ms budget rebuilds: it holds nothing extra and stretches
/// nothing, while a run of 8 (the longest counted: twice the 4 frames the
/// hold plus the next frame cover) still raises the hold.
#[test]
fn an_outage_is_not_held_for_a_run_the_hold_reaches_is() {
    let mut h = Harness::new(&twenty());
    let outage = |k: u32| k >= 100 && k % 250 < 20;
    let n = 1_000;
    let out = steady_with_losses(&mut h, n, outage);
    assert_eq!(h.gauge("burst_hold_ms"), 0, "an outage holds nothing");
    assert_eq!(h.counter("stretched"), 0);
    let played: Vec<u32> = out
        .iter()
        .filter(|(m, _)| m.flags & frame_flags::MISSING == 0)
        .map(|(m, _)| m.seq)
        .collect();
    let sent: Vec<u32> = (0..n).filter(|&k| !outage(k)).collect();
    assert_eq!(
        played, sent,
        "every frame that arrived plays once, in order"
    );

    let mut h = Harness::new(&twenty());
    steady_with_losses(&mut h, 400, |k| (200..208).contains(&k));
    assert_eq!(
        h.gauge("burst_hold_ms"),
        60,
        "a run of 8 is a burst to hold for"
    );
}

/// Bursts of three (the hold grows to 60 ms), then runs of six: longer
/// than the hold reaches. With `burst_stretch` the buffer stretches
/// (INSERTED periods) while a run goes on and nothing is held, so every
/// frame of each run is still due when the packet after it comes, and goes
/// out carrying that packet for DRED; the delay it added comes back down at
/// quiet frames. Without it the first frames of each run pass concealed.
/// A stream without DRED is not stretched for (nothing would rebuild it).
#[test]
fn a_run_longer_than_the_hold_is_stretched_for_and_rebuilt() {
    let n = 1_200u32;
    let lost = |k: u32| {
        ((100..300).contains(&k) && k % 50 < 3) || ((300..900).contains(&k) && k % 100 < 6)
    };
    let frames = steady_frames(n, lost);
    let stretch = |ms: u64| {
        [
            twenty()[0].clone(),
            (
                "burst_stretch",
                ParamValue::Duration(Duration::from_millis(ms)),
            ),
        ]
    };
    // Which lost frames of the long runs went out rebuildable (carrying the
    // frame after their run), and which arrived frames played.
    let check = |outs: Vec<Vec<(FrameMeta, Vec<u8>)>>| -> (Vec<u32>, Vec<u32>) {
        let items: Vec<(FrameMeta, Vec<u8>)> = outs.into_iter().flatten().collect();
        let rebuilt = items
            .iter()
            .filter(|(m, b)| {
                (300..900).contains(&m.seq)
                    && m.flags & frame_flags::NEXT_ATTACHED != 0
                    && b.get(3..7) == Some(&payload(m.seq - m.seq % 100 + 6)[..])
            })
            .map(|(m, _)| m.seq)
            .collect();
        let played = items
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::MISSING == 0)
            .map(|(m, _)| m.seq)
            .collect();
        (rebuilt, played)
    };
    let sent: Vec<u32> = (0..n).filter(|&k| !lost(k)).collect();
    let runs: Vec<u32> = (300..900).filter(|&k| lost(k)).collect();

    let mut h = Harness::new(&stretch(100));
    let (rebuilt, played) = check(run_seen_with(
        &mut h,
        frames.clone(),
        n as u64 + 10,
        talk_body,
    ));
    assert_eq!(h.gauge("burst_hold_ms"), 60, "the hold is at its budget");
    assert_eq!(rebuilt, runs, "every frame of every run of six rebuildable");
    let not_played: Vec<u32> = sent
        .iter()
        .copied()
        .filter(|k| !played.contains(k))
        .collect();
    assert!(played.windows(2).all(|w| w[0] < w[1]), "in order, once");
    assert_eq!(not_played.len() as u64, h.counter("skipped"));
    assert!(
        not_played.iter().all(|k| k % 40 < 5),
        "every frame not played was skipped in a pause: {not_played:?}"
    );
    assert!(
        h.counter("stretched") >= 6 * 2,
        "stretched for the runs: {}",
        h.counter("stretched")
    );
    assert!(h.counter("skipped") >= 6, "and came back down");
    assert!(
        h.counter("quiet_changes") >= h.counter("skipped"),
        "in pauses"
    );

    // Without the stretch the first frames of each run pass concealed.
    let mut h = Harness::new(&stretch(0));
    let (rebuilt, played) = check(run_seen_with(
        &mut h,
        frames.clone(),
        n as u64 + 10,
        talk_body,
    ));
    assert!(
        rebuilt.len() < runs.len() * 5 / 6,
        "{} of {} rebuildable without the stretch",
        rebuilt.len(),
        runs.len()
    );
    assert_eq!(played, sent);

    // No DRED: the hold is one frame (LBRR), and nothing is stretched past it.
    let mut h = Harness::new(&stretch(100));
    let (_, played) = check(run_seen_with(&mut h, frames.clone(), n as u64 + 10, body));
    assert_eq!(played, sent);
    let mut plain = Harness::new(&stretch(0));
    run_seen_with(&mut plain, frames, n as u64 + 10, body);
    assert_eq!(h.counter("stretched"), plain.counter("stretched"));
    assert_eq!(h.counter("concealed"), plain.counter("concealed"));

    // A run that outlasts the stretch (20 frames, after bursts of three):
    // the periods stretched stand in for its first frames, which pass at
    // once, so no delay is left over to skip back down from.
    let outage = |k: u32| ((100..300).contains(&k) && k % 50 < 3) || (400..420).contains(&k);
    let frames = steady_frames(600, outage);
    let mut h = Harness::new(&stretch(100));
    let items: Vec<(FrameMeta, Vec<u8>)> = run_seen_with(&mut h, frames.clone(), 610, talk_body)
        .into_iter()
        .flatten()
        .collect();
    let periods = |items: &[(FrameMeta, Vec<u8>)]| {
        items
            .iter()
            .position(|(m, _)| m.seq == 599 && m.flags & frame_flags::MISSING == 0)
            .expect("the last frame played")
    };
    let mut plain = Harness::new(&stretch(0));
    let plain_items: Vec<(FrameMeta, Vec<u8>)> = run_seen_with(&mut plain, frames, 610, talk_body)
        .into_iter()
        .flatten()
        .collect();
    // Periods stretched before `seq` (the stream's end, seq 600, is a run
    // that goes on too).
    let inserted = |items: &[(FrameMeta, Vec<u8>)], before: u32| {
        items
            .iter()
            .filter(|(m, _)| m.flags & frame_flags::INSERTED != 0 && m.seq < before)
            .count()
    };
    assert_eq!(
        inserted(&items, 600),
        inserted(&plain_items, 600) + 5,
        "five more periods stretched, for the outage"
    );
    assert!(h.counter("stretch_drained") >= 5);
    assert_eq!(
        h.counter("skipped"),
        plain.counter("skipped"),
        "nothing left to skip"
    );
    assert_eq!(
        periods(&items),
        periods(&plain_items),
        "the last frame plays in the same period as without the stretch"
    );

    // `burst_hold = 0` turns the stretch off too.
    let mut h = Harness::new(&[
        stretch(100)[1].clone(),
        ("burst_hold", ParamValue::Duration(Duration::ZERO)),
    ]);
    run_seen_with(&mut h, steady_frames(n, lost), n as u64 + 10, talk_body);
    assert_eq!(h.counter("stretched"), 0);

    // Bad input: a stretch and hold past DRED's second fail the build.
    assert!(Harness::try_new(&stretch(1_000)).is_err());
}

/// Speech-like sizes: frames 0-4 of every 40 are a pause (small payloads),
/// the rest voiced; all Opus carrying DRED.
fn talk_body(m: &FrameMeta) -> Vec<u8> {
    let mut b = dred_body(m);
    let len = if m.seq % 40 < 5 { 12 } else { 70 };
    b.resize(len, 0x55);
    b
}

/// Which arrived frames of `0..n - 10` were skipped: never played, never
/// concealed, not `lost` on the way.
fn skipped_frames(
    outs: &[Vec<(FrameMeta, Vec<u8>)>],
    n: u32,
    lost: impl Fn(u32) -> bool,
) -> Vec<u32> {
    let played: std::collections::HashSet<u32> = outs
        .iter()
        .flatten()
        .filter(|(m, _)| m.flags & frame_flags::MISSING == 0)
        .map(|(m, _)| m.seq)
        .collect();
    (0..n - 10)
        .filter(|&k| !lost(k) && !played.contains(&k))
        .collect()
}

/// Frames of the quiet-skip tests: 1000, Opus, losing `burst`'s frames.
const DECAY_FRAMES: u32 = 1_000;

/// `burst`'s losses (held for), then a clean path, through `h` with
/// payloads from `body`: the frames it skipped coming down, once the hold
/// had grown for the bursts (checked).
fn bursts_then_decay(
    h: &mut Harness,
    burst: fn(u32) -> bool,
    body: fn(&FrameMeta) -> Vec<u8>,
) -> Vec<u32> {
    let n = DECAY_FRAMES;
    let outs = run_seen_with(h, steady_frames(n, burst), n as u64 + 10, body);
    assert!(h.counter("stretched") >= 3, "the hold grew for the bursts");
    skipped_frames(&outs, n, burst)
}

/// Bursts (held for), then a clean path: the hold decays and the buffer
/// comes down to its target one skipped frame at a time. Each skip waits
/// for a quiet frame (a payload under half the running mean: a pause),
/// where a dropped frame is near inaudible, not a piece of a word; with
/// `quiet_wait = 0` skips fall on voiced frames too; and where no frame is
/// quiet (a constant-rate stream) the skip comes after `quiet_wait`.
#[test]
fn the_delay_comes_down_at_quiet_frames() {
    let burst: fn(u32) -> bool = |k| (100..200).contains(&k) && (10..13).contains(&(k % 30));
    let mut h = Harness::new(&twenty());
    let skipped = bursts_then_decay(&mut h, burst, talk_body);
    assert_eq!(h.gauge("burst_hold_ms"), 0, "and decayed");
    assert!(!skipped.is_empty(), "the buffer came down");
    assert_eq!(skipped.len() as u64, h.counter("skipped"));
    assert!(
        skipped.iter().all(|k| k % 40 < 5),
        "every skip fell in a pause: {skipped:?}"
    );
    assert!(h.counter("quiet_changes") >= h.counter("skipped"));

    // At once: skips fall where the delay is, voiced or not.
    let mut h = Harness::new(&[
        twenty()[0].clone(),
        ("quiet_wait", ParamValue::Duration(Duration::ZERO)),
    ]);
    let at_once = bursts_then_decay(&mut h, burst, talk_body);
    assert!(
        at_once.iter().any(|k| k % 40 >= 5),
        "with quiet_wait 0 a voiced frame is skipped: {at_once:?}"
    );

    // No quiet frame at all: each skip waits `quiet_wait` (here 2 s, 100
    // frames) at most, then goes.
    let mut h = Harness::new(&[
        twenty()[0].clone(),
        ("quiet_wait", ParamValue::Duration(Duration::from_secs(2))),
    ]);
    let forced = bursts_then_decay(&mut h, burst, dred_body);
    assert_eq!(forced.len(), skipped.len(), "as many skips: {forced:?}");
    assert_eq!(h.counter("quiet_changes"), 0);
    let waited = forced[0] - at_once[0];
    assert!(
        (98..=102).contains(&waited),
        "the first skip waited {waited} frames for a quiet frame (at once: {at_once:?}, \
         waited: {forced:?})"
    );
}

/// Speech with gaps between words: frames 10-11, 20-21 and 30-31 of every
/// 40 are small (a 40 ms gap), frames 0-7 a pause (160 ms); the rest voiced.
fn words_body(m: &FrameMeta) -> Vec<u8> {
    let mut b = dred_body(m);
    let k = m.seq % 40;
    let quiet = k < 8 || matches!(k, 10 | 11 | 20 | 21 | 30 | 31);
    b.resize(if quiet { 12 } else { 70 }, 0x55);
    b
}

/// Voiced until frame 210, then silence (small payloads) to the end.
fn then_silence_body(m: &FrameMeta) -> Vec<u8> {
    let mut b = dred_body(m);
    b.resize(if m.seq < 210 { 70 } else { 12 }, 0x55);
    b
}

/// A skip waits for a pause, not the short gap between two words: a frame
/// dropped there shortens the gap and shifts the rest of the utterance
/// (docs/QUALITY.md finding 34). And a long silence stays quiet: the
/// running mean that says what is quiet is not dragged down to the
/// silence's own size, so a skip due seconds into it still finds a pause
/// rather than waiting out `quiet_wait` (with the mean at full rate no
/// frame read as quiet after a second of silence).
#[test]
fn the_delay_comes_down_in_pauses_not_between_words() {
    let burst: fn(u32) -> bool = |k| (100..200).contains(&k) && (14..17).contains(&(k % 40));
    let mut h = Harness::new(&twenty());
    let skipped = bursts_then_decay(&mut h, burst, words_body);
    assert_eq!(h.gauge("burst_hold_ms"), 0, "and decayed");
    assert!(!skipped.is_empty(), "the buffer came down");
    assert!(
        skipped.iter().all(|k| (3..8).contains(&(k % 40))),
        "every skip fell in a pause, after 60 ms of it, none between words: {skipped:?}"
    );

    // Silence from frame 210 on: the bursts end at 200, the hold decays
    // seconds later (5 s half-life), and each skip still falls on a quiet
    // frame.
    let mut h = Harness::new(&twenty());
    let skipped = bursts_then_decay(&mut h, burst, then_silence_body);
    assert!(!skipped.is_empty(), "the buffer came down");
    assert!(
        skipped.iter().all(|&k| k >= 250),
        "the skips came with the hold's decay, well into the silence: {skipped:?}"
    );
    assert_eq!(
        h.counter("quiet_changes"),
        h.counter("skipped") + h.counter("stretched") - 3,
        "every skip fell on a frame read as quiet"
    );
}

/// 600 frames of one codec in RaptorQ blocks of 5 at `ratio`, the first of
/// every fifth block from frame 50 on (4 % of the frames: too few for the
/// delay quantile, p95, to cover) lost and rebuilt by the FEC decoder once
/// its block is complete (flagged RECOVERED): at the latest, with the last
/// of its block's three repair frames, which the sender paces one a
/// quantum from the quantum after the block's last frame, so three quanta
/// after that frame, 140 ms after its time. Returns the harness after the
/// run and the rebuilt frames that played.
fn protected_stream(ratio: u8, codec: u8) -> (Harness, usize) {
    protected_stream_rebuilding(ratio, codec, |k| k >= 50 && k % 25 == 0)
}

/// As [`protected_stream`], with the frames `rebuilt` says lost and rebuilt.
fn protected_stream_rebuilding(ratio: u8, codec: u8, rebuilt: fn(u32) -> bool) -> (Harness, usize) {
    let mut h = Harness::new(&twenty());
    let frames: Vec<FrameMeta> = (0..600u32)
        .map(|k| {
            let arrival = if rebuilt(k) {
                (k + 4) as u64 * Q_NS + 3 * Q_NS + MS
            } else {
                k as u64 * Q_NS + MS
            };
            FrameMeta {
                codec,
                flags: if rebuilt(k) {
                    frame_flags::RECOVERED
                } else {
                    0
                },
                fec: FecTag {
                    block: (k / 5) as u16,
                    symbol: (k % 5) as u16,
                    source_symbols: 5,
                    ratio_percent: ratio,
                },
                ..frame(0, k, arrival)
            }
        })
        .collect();
    let outs = run_seen(&mut h, frames, 640);
    let played = outs
        .iter()
        .flatten()
        .filter(|(m, _)| m.flags & frame_flags::MISSING == 0 && rebuilt(m.seq))
        .count();
    (h, played)
}

/// A rebuilt frame's lateness is the FEC's, covered by the block hold, not
/// path jitter: with a fifth of the frames rebuilt (the first of every
/// block of 5, 140 ms after its time) the target is the jitter floor plus
/// the hold, 160 ms, and every rebuilt frame plays. Counted as delay
/// samples they had raised the target to 241 ms (at a 120 ms lateness).
#[test]
fn rebuilt_frames_do_not_count_as_path_jitter() {
    let (h, played) = protected_stream_rebuilding(50, CodecId::OPUS.0, |k| k >= 50 && k % 5 == 0);
    assert_eq!(h.gauge("burst_hold_ms"), 140);
    assert_eq!(h.gauge("target_delay_ms"), 160, "jitter floor + block hold");
    assert!(played >= 108, "{played} of 110 rebuilt frames played");
}

/// A RaptorQ-protected stream losing packets holds what a rebuilt frame
/// needs ((K - 1) frames + R quanta of paced repair: 140 ms here), so the
/// frames the FEC
/// decoder rebuilds play instead of arriving late: all but the first one
/// or two, before a loss was seen. The same arrivals on a stream without
/// repair (ratio 0) are late and dropped (Opus holds one frame for LBRR,
/// not a block), and Codec2, which has no LBRR, is held for too.
#[test]
fn a_protected_stream_holds_a_block_so_rebuilt_frames_play() {
    for codec in [CodecId::OPUS.0, CodecId::CODEC2_3200.0] {
        let (h, played) = protected_stream(50, codec);
        assert_eq!(h.gauge("burst_hold_ms"), 140, "codec {codec}");
        assert!(
            played >= 20,
            "codec {codec}: {played} of 22 rebuilt frames played"
        );
        assert!(
            h.counter("late") <= 2,
            "codec {codec}: {}",
            h.counter("late")
        );
    }
    let (h, played) = protected_stream(0, CodecId::OPUS.0);
    assert!(
        h.gauge("burst_hold_ms") <= 20,
        "{}",
        h.gauge("burst_hold_ms")
    );
    assert!(
        played <= 2,
        "unprotected: {played} of 22 late frames played"
    );
    assert!(h.counter("late") >= 20, "{}", h.counter("late"));
}

/// What a 30-minute steady stream from a sender whose clock runs `ppm`
/// parts per million fast (positive) or slow (negative) against this one
/// leaves: the counters named, the largest target and playout delay once
/// playing (ms). Every frame arrives 1 ms after its sender's clock sent it.
fn drift_run(ppm: i64) -> (Vec<(&'static str, u64)>, i64, i64) {
    let mut h = Harness::new(&twenty());
    let n: u32 = 30 * 60 * 50;
    let frames: Vec<FrameMeta> = (0..n)
        .map(|k| {
            // Frame k leaves at k x 20 ms of the sender's clock, which is
            // k x 20 ms x 1e6 / (1e6 + ppm) of this one.
            let sent = (k as i128 * Q_NS as i128 * 1_000_000 / (1_000_000 + ppm as i128)) as u64;
            frame(0, k, sent + MS)
        })
        .collect();
    let mut next = 0;
    let (mut max_target, mut max_cur) = (0, 0);
    let cycles = u64::from(n) * (1_000_000 + ppm.unsigned_abs()) / 1_000_000 + 50;
    for _ in 0..cycles {
        let now = h.cycle * Q_NS;
        while next < frames.len() && frames[next].arrival_ns <= now {
            let m = frames[next];
            h.input().push(m, &payload(m.seq)).unwrap();
            next += 1;
        }
        h.step();
        if h.counter("played") > 0 {
            max_target = max_target.max(h.gauge("target_delay_ms"));
            max_cur = max_cur.max(h.gauge("current_delay_ms"));
        }
        if next == frames.len() && h.output().iter().any(|(m, _)| m.seq == n - 1) {
            break;
        }
    }
    let names = [
        "played",
        "stretched",
        "skipped",
        "concealed",
        "late",
        "resets",
    ];
    (
        names.iter().map(|&c| (c, h.counter(c))).collect(),
        max_target,
        max_cur,
    )
}

/// Sender and receiver clocks differ (sound devices' crystals; NTP slews
/// a clock's rate by up to 500 ppm). A slow sender's frames arrive ever
/// later against this clock: the buffer follows with a stretch per frame
/// of drift and loses nothing; a fast sender's pile up and are skipped, one
/// per frame of drift. The delay stays where it was: measured from an
/// all-time low, a 500 ppm slow sender's delay passed `max_delay` within
/// minutes and every frame after was late (played 29 k of 90 k).
#[test]
fn sender_clock_drift_is_followed_and_loses_no_frame() {
    let n = 30 * 60 * 50u64;
    for ppm in [-2000i64, -1000, -500, -100, 100, 500, 1000, 2000] {
        let (c, max_target, max_cur) = drift_run(ppm);
        let get = |name| c.iter().find(|(k, _)| *k == name).unwrap().1;
        // Frames of drift over the stream.
        let drift = n * ppm.unsigned_abs() / 1_000_000;
        let what =
            format!("{ppm} ppm: {c:?}, target up to {max_target} ms, delay up to {max_cur} ms");
        assert_eq!(get("late"), 0, "{what}");
        assert_eq!(get("resets"), 0, "{what}");
        if ppm < 0 {
            assert_eq!(get("played"), n, "{what}");
            assert_eq!(get("skipped"), 0, "{what}");
            assert_eq!(get("concealed"), get("stretched"), "{what}");
            assert!(get("stretched").abs_diff(drift) <= 2, "{what}");
        } else {
            assert_eq!(get("played") + get("skipped"), n, "{what}");
            assert_eq!(get("concealed"), 0, "{what}");
            assert!(get("skipped").abs_diff(drift) <= 2, "{what}");
        }
        assert!(max_target <= 25, "{what}");
        assert!(max_cur <= 40, "{what}");
    }
}
