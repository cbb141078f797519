//! Receiver feedback reports: what a receiver measured about each sender it
//! hears, sent back to them as an ordinary media packet with codec id
//! [`CodecId::FEEDBACK`](crate::CodecId::FEEDBACK) (`0x40`).
//!
//! The report is the packet's *payload*, so `crypto.seal` seals it end to end
//! like media and relays forward it blindly (they see only the clear header:
//! who reports, not what). One report covers every sender the reporter hears;
//! each sender picks its own entry by `sender_id`. Byte layout in
//! `docs/WIRE.md` §1.5.
//!
//! ```text
//! +---------+-------+-------------+-------+-----------------------+-----
//! | version | flags | interval_ms | count | entry 0 (29 bytes)    | ...
//! |   1 B   |  1 B  |  2 B (BE)   |  1 B  |                       |
//! +---------+-------+-------------+-------+-----------------------+-----
//! ```
//!
//! A receiver may add one entry about itself ([`ReceiverInfo`], under the
//! reserved `sender_id` [`RECEIVER_ENTRY_ID`]): the extra delay it may hold
//! to rebuild loss. It is an ordinary entry to a parser, so a sender of
//! any build reads its own entry as before and passes this one by.
//!
//! Encoding and parsing never allocate and never panic on any input.

/// Version byte of a feedback report.
pub const FEEDBACK_VERSION: u8 = 1;
/// Flag bit: an *early* report. The receiver sent it before its interval
/// ended because loss began on a path that had shown none: its entries
/// count the interval so far, and the interval's own report still follows
/// and counts them again. A sender reads it as a notice, not as an
/// interval (docs/WIRE.md §1.5). The only flag defined.
pub const FEEDBACK_FLAG_EARLY: u8 = 0x01;
/// Bytes before the first entry.
pub const FEEDBACK_HEAD_LEN: usize = 5;
/// Bytes per entry.
pub const FEEDBACK_ENTRY_LEN: usize = 29;
/// Most entries one report may carry (a room of 33): 933 bytes, well inside
/// one sealed datagram.
pub const MAX_FEEDBACK_ENTRIES: usize = 32;
/// Bins of the burst-length histogram.
pub const BURST_BINS: usize = 6;
/// Longest burst (in packets) each bin counts: 1, 2, 3-4, 5-8, 9-16, 17+.
pub const BURST_BIN_MAX: [u32; BURST_BINS] = [1, 2, 4, 8, 16, u32::MAX];

/// The histogram bin of a burst of `len` consecutive lost packets (`len >= 1`).
pub fn burst_bin(len: u32) -> usize {
    BURST_BIN_MAX
        .iter()
        .position(|&max| len <= max)
        .unwrap_or(BURST_BINS - 1)
}

/// `sender_id` of a receiver's entry about itself ([`ReceiverInfo`]). No
/// sender uses it: `wire.packetize` neither draws nor accepts it, and a
/// receiver does not track a sender by it.
pub const RECEIVER_ENTRY_ID: u32 = u32::MAX;

/// What a receiver says about itself in its reports: one entry with
/// `sender_id` [`RECEIVER_ENTRY_ID`], its bytes 4..6 the hold budget, byte
/// 16 what it takes ([`INFO_RIDING_REPAIR`]) and the rest zero when written
/// and ignored when read (docs/WIRE.md §1.5). Senders size the redundancy
/// that needs holding to it; a receiver whose reports carry none (an older
/// build, or a full report) is assumed to hold what the sender's own
/// `hold_budget` param says, and to take no riding repair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ReceiverInfo {
    /// Extra delay, ms, the receiver's jitter buffer may hold to rebuild
    /// loss (its `burst_hold`): what redundancy that arrives later than
    /// that (DRED beyond it, a RaptorQ block's repair) cannot be played.
    pub hold_budget_ms: u16,
    /// The receiver splits packets with codec `0x41` (a repair symbol
    /// riding in a source frame's packet, [`crate::riding`]).
    pub riding_repair: bool,
}

/// Bit of a receiver's entry's byte 16 ([`ReceiverInfo`]): it takes repair
/// riding in source packets (codec `0x41`). Other bits: zero when written,
/// ignored when read.
pub const INFO_RIDING_REPAIR: u8 = 0x01;

impl ReceiverInfo {
    /// The entry that carries it.
    pub fn to_entry(&self) -> FeedbackEntry {
        FeedbackEntry {
            sender_id: RECEIVER_ENTRY_ID,
            // Bytes 4..6; bytes 6..8 stay 0, which a parser checks is not
            // above them (`received <= expected`).
            expected: self.hold_budget_ms,
            // Byte 16.
            max_burst: if self.riding_repair {
                INFO_RIDING_REPAIR
            } else {
                0
            },
            ..FeedbackEntry::default()
        }
    }

    /// The receiver's info in `entry`, when it is the receiver's own entry.
    pub fn from_entry(entry: &FeedbackEntry) -> Option<ReceiverInfo> {
        (entry.sender_id == RECEIVER_ENTRY_ID).then_some(ReceiverInfo {
            hold_budget_ms: entry.expected,
            riding_repair: entry.max_burst & INFO_RIDING_REPAIR != 0,
        })
    }
}

/// Why a feedback report could not be encoded or parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// Fewer bytes than the report's fixed head.
    #[error("feedback report too short: need {need} bytes, have {have}")]
    TooShort {
        /// Bytes required.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The version byte is not one this build speaks.
    #[error("unsupported feedback report version {0} (this build speaks version 1)")]
    UnsupportedVersion(u8),
    /// The flags byte has bits set that version 1 does not define (only
    /// [`FEEDBACK_FLAG_EARLY`]).
    #[error("reserved feedback flag bits set in 0x{0:02x}")]
    ReservedFlags(u8),
    /// More entries than [`MAX_FEEDBACK_ENTRIES`].
    #[error("feedback report has {0} entries; at most 32 are allowed")]
    TooManyEntries(usize),
    /// The byte length does not match the entry count.
    #[error("feedback report announces {count} entries ({need} bytes) but has {have} bytes")]
    LengthMismatch {
        /// Entries announced.
        count: u8,
        /// Bytes those entries need, head included.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// An entry claims more packets received than expected.
    #[error("feedback entry {index} received {received} of {expected} expected packets")]
    ReceivedAboveExpected {
        /// Entry index.
        index: usize,
        /// `received` field.
        received: u16,
        /// `expected` field.
        expected: u16,
    },
    /// Two entries describe the same sender.
    #[error("feedback report has two entries for sender 0x{0:08x}")]
    DuplicateSender(u32),
    /// The output buffer cannot hold the report.
    #[error("output buffer too small for the feedback report: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
}

/// What one receiver measured about one sender over one report interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FeedbackEntry {
    /// The sender this entry is about.
    pub sender_id: u32,
    /// Packets (by `seq`, repair included) whose fate was settled in the
    /// interval: received, or counted lost.
    pub expected: u16,
    /// Of those, packets received in time (`<= expected`).
    pub received: u16,
    /// Packets that arrived after they had been counted lost.
    pub late: u16,
    /// Bursts of consecutive lost packets that ended in the interval, by
    /// length (bins in [`BURST_BIN_MAX`]), saturating at 255.
    pub bursts: [u8; BURST_BINS],
    /// Longest run of lost packets seen in the interval, including one still
    /// open at report time (saturating at 255).
    pub max_burst: u8,
    /// Inter-arrival jitter (RFC 3550 estimator), units of 100 us.
    pub jitter_100us: u16,
    /// Least one-way delay of the interval (to the end of each packet's
    /// media) above the least of the last 10-20 s from this sender:
    /// queueing on the path, units of 100 us (docs/WIRE.md §1.5).
    pub queue_delay_100us: u16,
    /// Bytes received from this sender over the interval, kbit/s.
    pub recv_kbps: u16,
    /// Media `timestamp` of the newest packet received from this sender.
    pub echo_ts: u32,
    /// Milliseconds between that packet's arrival and this report.
    pub echo_hold_ms: u16,
}

impl FeedbackEntry {
    /// Lost share of `expected`, 0.0..=1.0 (0 when nothing was expected).
    pub fn loss_fraction(&self) -> f32 {
        if self.expected == 0 {
            0.0
        } else {
            f32::from(self.expected.saturating_sub(self.received)) / f32::from(self.expected)
        }
    }

    /// Bursts that ended in the interval, all lengths.
    pub fn burst_count(&self) -> u32 {
        self.bursts.iter().map(|&b| u32::from(b)).sum()
    }

    /// Inter-arrival jitter in milliseconds.
    pub fn jitter_ms(&self) -> f32 {
        f32::from(self.jitter_100us) / 10.0
    }

    /// The entry's wire bytes.
    pub fn to_bytes(&self) -> [u8; FEEDBACK_ENTRY_LEN] {
        let mut b = [0u8; FEEDBACK_ENTRY_LEN];
        b[0..4].copy_from_slice(&self.sender_id.to_be_bytes());
        b[4..6].copy_from_slice(&self.expected.to_be_bytes());
        b[6..8].copy_from_slice(&self.received.to_be_bytes());
        b[8..10].copy_from_slice(&self.late.to_be_bytes());
        b[10..16].copy_from_slice(&self.bursts);
        b[16] = self.max_burst;
        b[17..19].copy_from_slice(&self.jitter_100us.to_be_bytes());
        b[19..21].copy_from_slice(&self.queue_delay_100us.to_be_bytes());
        b[21..23].copy_from_slice(&self.recv_kbps.to_be_bytes());
        b[23..27].copy_from_slice(&self.echo_ts.to_be_bytes());
        b[27..29].copy_from_slice(&self.echo_hold_ms.to_be_bytes());
        b
    }

    /// An entry from its wire bytes (not validated; see [`FeedbackReport::parse`]).
    pub fn from_bytes(b: &[u8; FEEDBACK_ENTRY_LEN]) -> FeedbackEntry {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut bursts = [0u8; BURST_BINS];
        bursts.copy_from_slice(&b[10..16]);
        FeedbackEntry {
            sender_id: u32_at(0),
            expected: u16_at(4),
            received: u16_at(6),
            late: u16_at(8),
            bursts,
            max_burst: b[16],
            jitter_100us: u16_at(17),
            queue_delay_100us: u16_at(19),
            recv_kbps: u16_at(21),
            echo_ts: u32_at(23),
            echo_hold_ms: u16_at(27),
        }
    }
}

/// A parsed feedback report borrowing the payload it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedbackReport<'a> {
    /// Flag bits: [`FEEDBACK_FLAG_EARLY`] or none.
    pub flags: u8,
    /// Length of the interval the entries cover, milliseconds.
    pub interval_ms: u16,
    entries: &'a [u8],
}

impl<'a> FeedbackReport<'a> {
    /// Parses and validates a report (the opened payload of a `0x40`
    /// packet). Never panics or allocates.
    pub fn parse(payload: &'a [u8]) -> Result<FeedbackReport<'a>, FeedbackError> {
        let Some((head, rest)) = payload.split_first_chunk::<FEEDBACK_HEAD_LEN>() else {
            return Err(FeedbackError::TooShort {
                need: FEEDBACK_HEAD_LEN,
                have: payload.len(),
            });
        };
        if head[0] != FEEDBACK_VERSION {
            return Err(FeedbackError::UnsupportedVersion(head[0]));
        }
        if head[1] & !FEEDBACK_FLAG_EARLY != 0 {
            return Err(FeedbackError::ReservedFlags(head[1]));
        }
        let interval_ms = u16::from_be_bytes([head[2], head[3]]);
        let count = head[4];
        if usize::from(count) > MAX_FEEDBACK_ENTRIES {
            return Err(FeedbackError::TooManyEntries(usize::from(count)));
        }
        let need = usize::from(count) * FEEDBACK_ENTRY_LEN;
        if rest.len() != need {
            return Err(FeedbackError::LengthMismatch {
                count,
                need: FEEDBACK_HEAD_LEN + need,
                have: payload.len(),
            });
        }
        let report = FeedbackReport {
            flags: head[1],
            interval_ms,
            entries: rest,
        };
        for (index, e) in report.entries().enumerate() {
            if e.received > e.expected {
                return Err(FeedbackError::ReceivedAboveExpected {
                    index,
                    received: e.received,
                    expected: e.expected,
                });
            }
            if report
                .entries()
                .take(index)
                .any(|o| o.sender_id == e.sender_id)
            {
                return Err(FeedbackError::DuplicateSender(e.sender_id));
            }
        }
        Ok(report)
    }

    /// An early report ([`FEEDBACK_FLAG_EARLY`]): a notice that loss began,
    /// counting the interval so far.
    pub fn is_early(&self) -> bool {
        self.flags & FEEDBACK_FLAG_EARLY != 0
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len() / FEEDBACK_ENTRY_LEN
    }

    /// Whether the report has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in wire order.
    pub fn entries(&self) -> impl Iterator<Item = FeedbackEntry> + 'a {
        self.entries
            .chunks_exact(FEEDBACK_ENTRY_LEN)
            .filter_map(|c| c.first_chunk::<FEEDBACK_ENTRY_LEN>())
            .map(FeedbackEntry::from_bytes)
    }

    /// The entry about `sender_id`, if the report has one.
    pub fn entry_for(&self, sender_id: u32) -> Option<FeedbackEntry> {
        self.entries().find(|e| e.sender_id == sender_id)
    }

    /// What the reporter says about itself ([`ReceiverInfo`]), if anything.
    pub fn receiver_info(&self) -> Option<ReceiverInfo> {
        self.entry_for(RECEIVER_ENTRY_ID)
            .as_ref()
            .and_then(ReceiverInfo::from_entry)
    }
}

/// Bytes a report with `entries` entries takes.
pub const fn feedback_len(entries: usize) -> usize {
    FEEDBACK_HEAD_LEN + entries * FEEDBACK_ENTRY_LEN
}

/// Writes a report into `out`; returns its length. Validates what
/// [`FeedbackReport::parse`] would reject, so whatever encodes parses.
/// Never allocates.
pub fn encode_feedback(
    interval_ms: u16,
    entries: &[FeedbackEntry],
    out: &mut [u8],
) -> Result<usize, FeedbackError> {
    encode_feedback_flags(0, interval_ms, entries, out)
}

/// [`encode_feedback`] with flag bits ([`FEEDBACK_FLAG_EARLY`]); any other
/// bit is refused ([`FeedbackError::ReservedFlags`]).
pub fn encode_feedback_flags(
    flags: u8,
    interval_ms: u16,
    entries: &[FeedbackEntry],
    out: &mut [u8],
) -> Result<usize, FeedbackError> {
    if flags & !FEEDBACK_FLAG_EARLY != 0 {
        return Err(FeedbackError::ReservedFlags(flags));
    }
    if entries.len() > MAX_FEEDBACK_ENTRIES {
        return Err(FeedbackError::TooManyEntries(entries.len()));
    }
    for (index, e) in entries.iter().enumerate() {
        if e.received > e.expected {
            return Err(FeedbackError::ReceivedAboveExpected {
                index,
                received: e.received,
                expected: e.expected,
            });
        }
        if entries[..index].iter().any(|o| o.sender_id == e.sender_id) {
            return Err(FeedbackError::DuplicateSender(e.sender_id));
        }
    }
    let need = feedback_len(entries.len());
    let Some(out) = out.get_mut(..need) else {
        return Err(FeedbackError::BufferTooSmall {
            need,
            have: out.len(),
        });
    };
    out[0] = FEEDBACK_VERSION;
    out[1] = flags;
    out[2..4].copy_from_slice(&interval_ms.to_be_bytes());
    out[4] = entries.len() as u8;
    for (e, dst) in entries
        .iter()
        .zip(out[FEEDBACK_HEAD_LEN..].chunks_exact_mut(FEEDBACK_ENTRY_LEN))
    {
        dst.copy_from_slice(&e.to_bytes());
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sender_id: u32) -> FeedbackEntry {
        FeedbackEntry {
            sender_id,
            expected: 50,
            received: 40,
            late: 1,
            bursts: [4, 1, 1, 0, 0, 0],
            max_burst: 3,
            jitter_100us: 123,
            queue_delay_100us: 45,
            recv_kbps: 27,
            echo_ts: 0x0001_e000,
            echo_hold_ms: 7,
        }
    }

    #[test]
    fn wire_example_matches_docs() {
        let mut out = [0u8; 64];
        let n = encode_feedback(1000, &[entry(0x0a0b_0c0d)], &mut out).unwrap();
        assert_eq!(
            hex::encode(&out[..n]),
            "010003e8010a0b0c0d00320028000104010100000003007b002d001b0001e0000007"
        );
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let entries: Vec<FeedbackEntry> = (0..MAX_FEEDBACK_ENTRIES as u32)
            .map(|i| FeedbackEntry {
                echo_ts: u32::MAX - i,
                jitter_100us: u16::MAX - i as u16,
                ..entry(i * 7919)
            })
            .collect();
        let mut out = [0u8; feedback_len(MAX_FEEDBACK_ENTRIES)];
        let n = encode_feedback(987, &entries, &mut out).unwrap();
        assert_eq!(n, out.len());
        let r = FeedbackReport::parse(&out).unwrap();
        assert_eq!(r.interval_ms, 987);
        assert_eq!(r.len(), entries.len());
        assert_eq!(r.entries().collect::<Vec<_>>(), entries);
        assert_eq!(r.entry_for(7919 * 3), Some(entries[3]));
        assert_eq!(r.entry_for(1), None);
        let empty = encode_feedback(5, &[], &mut out).unwrap();
        assert!(FeedbackReport::parse(&out[..empty]).unwrap().is_empty());
        assert!(!FeedbackReport::parse(&out[..empty]).unwrap().is_early());
    }

    #[test]
    fn an_early_report_carries_its_flag_and_nothing_else_is_encoded() {
        let mut out = [0u8; 64];
        let n = encode_feedback_flags(FEEDBACK_FLAG_EARLY, 180, &[entry(9)], &mut out).unwrap();
        assert_eq!(out[1], FEEDBACK_FLAG_EARLY);
        let r = FeedbackReport::parse(&out[..n]).unwrap();
        assert!(r.is_early());
        assert_eq!((r.flags, r.interval_ms), (FEEDBACK_FLAG_EARLY, 180));
        assert_eq!(r.entry_for(9), Some(entry(9)));
        for bad in [0x02, 0x80, 0xff] {
            assert_eq!(
                encode_feedback_flags(bad, 180, &[entry(9)], &mut out),
                Err(FeedbackError::ReservedFlags(bad))
            );
        }
    }

    #[test]
    fn a_receivers_entry_about_itself_is_an_entry_other_senders_pass_by() {
        let info = ReceiverInfo {
            hold_budget_ms: 120,
            riding_repair: false,
        };
        let mut out = [0u8; 128];
        let n = encode_feedback(1000, &[entry(0x0a0b_0c0d), info.to_entry()], &mut out).unwrap();
        // Its bytes: the reserved id, the budget, zeros (docs/WIRE.md §1.5).
        assert_eq!(
            hex::encode(&out[FEEDBACK_HEAD_LEN + FEEDBACK_ENTRY_LEN..n]),
            format!("ffffffff0078{}", "00".repeat(FEEDBACK_ENTRY_LEN - 6))
        );
        let r = FeedbackReport::parse(&out[..n]).unwrap();
        assert_eq!(r.receiver_info(), Some(info));
        // A sender reads its own entry as from a report without it.
        assert_eq!(r.entry_for(0x0a0b_0c0d), Some(entry(0x0a0b_0c0d)));
        assert_eq!(ReceiverInfo::from_entry(&entry(5)), None);
        // Without it, none; with other bytes set (a later build's fields),
        // the budget still reads.
        let n1 = encode_feedback(1000, &[entry(3)], &mut out).unwrap();
        assert_eq!(
            FeedbackReport::parse(&out[..n1]).unwrap().receiver_info(),
            None
        );
        let later = FeedbackEntry {
            jitter_100us: 7,
            echo_ts: 9,
            ..info.to_entry()
        };
        let n2 = encode_feedback(1000, &[later], &mut out).unwrap();
        assert_eq!(
            FeedbackReport::parse(&out[..n2]).unwrap().receiver_info(),
            Some(info)
        );
        // Riding repair taken: byte 16's low bit (docs/WIRE.md §1.5); its
        // other bits, a later build's, are passed by.
        let rides = ReceiverInfo {
            riding_repair: true,
            ..info
        };
        let n3 = encode_feedback(1000, &[rides.to_entry()], &mut out).unwrap();
        assert_eq!(
            hex::encode(&out[FEEDBACK_HEAD_LEN..n3]),
            format!("ffffffff0078{}01{}", "00".repeat(10), "00".repeat(12))
        );
        assert_eq!(
            FeedbackReport::parse(&out[..n3]).unwrap().receiver_info(),
            Some(rides)
        );
        let other_bits = FeedbackEntry {
            max_burst: 0xfe,
            ..info.to_entry()
        };
        let n4 = encode_feedback(1000, &[other_bits], &mut out).unwrap();
        assert_eq!(
            FeedbackReport::parse(&out[..n4]).unwrap().receiver_info(),
            Some(info)
        );
    }

    #[test]
    fn derived_values() {
        let e = entry(1);
        assert!((e.loss_fraction() - 0.2).abs() < 1e-6);
        assert_eq!(e.burst_count(), 6);
        assert!((e.jitter_ms() - 12.3).abs() < 1e-4);
        assert_eq!(FeedbackEntry::default().loss_fraction(), 0.0);
        let bins: Vec<usize> = [1, 2, 3, 4, 5, 8, 9, 16, 17, 1000]
            .iter()
            .map(|&l| burst_bin(l))
            .collect();
        assert_eq!(bins, [0, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn bad_input_is_rejected_with_its_reason() {
        let mut good = [0u8; feedback_len(2)];
        encode_feedback(1000, &[entry(1), entry(2)], &mut good).unwrap();
        let with = |i: usize, v: u8| {
            let mut b = good;
            b[i] = v;
            b
        };
        let dup = {
            let mut b = good;
            b[FEEDBACK_HEAD_LEN + FEEDBACK_ENTRY_LEN + 3] = 1;
            b
        };
        let too_many_received = {
            let mut b = good;
            // entry 1: received (offset 6..8) = 51 > expected 50
            b[FEEDBACK_HEAD_LEN + FEEDBACK_ENTRY_LEN + 7] = 51;
            b
        };
        let cases: Vec<(&str, Vec<u8>, FeedbackError)> = vec![
            (
                "empty",
                vec![],
                FeedbackError::TooShort { need: 5, have: 0 },
            ),
            (
                "head cut",
                good[..4].to_vec(),
                FeedbackError::TooShort { need: 5, have: 4 },
            ),
            (
                "version 2",
                with(0, 2).to_vec(),
                FeedbackError::UnsupportedVersion(2),
            ),
            (
                "flags",
                with(1, 0x80).to_vec(),
                FeedbackError::ReservedFlags(0x80),
            ),
            (
                "early and a reserved flag",
                with(1, 0x03).to_vec(),
                FeedbackError::ReservedFlags(0x03),
            ),
            (
                "count 33",
                with(4, 33).to_vec(),
                FeedbackError::TooManyEntries(33),
            ),
            (
                "count 3, two present",
                with(4, 3).to_vec(),
                FeedbackError::LengthMismatch {
                    count: 3,
                    need: feedback_len(3),
                    have: feedback_len(2),
                },
            ),
            (
                "entry cut short",
                good[..good.len() - 1].to_vec(),
                FeedbackError::LengthMismatch {
                    count: 2,
                    need: feedback_len(2),
                    have: feedback_len(2) - 1,
                },
            ),
            (
                "trailing byte",
                [&good[..], &[0]].concat(),
                FeedbackError::LengthMismatch {
                    count: 2,
                    need: feedback_len(2),
                    have: feedback_len(2) + 1,
                },
            ),
            (
                "received above expected",
                too_many_received.to_vec(),
                FeedbackError::ReceivedAboveExpected {
                    index: 1,
                    received: 51,
                    expected: 50,
                },
            ),
            (
                "same sender twice",
                dup.to_vec(),
                FeedbackError::DuplicateSender(1),
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(FeedbackReport::parse(&bytes), Err(want), "{what}");
            // The message names the problem for a human.
            assert!(!want.to_string().is_empty());
        }
        // Encoding refuses what parsing would refuse.
        let mut out = [0u8; 2048];
        let bad = FeedbackEntry {
            received: 51,
            ..entry(1)
        };
        assert!(matches!(
            encode_feedback(1, &[bad], &mut out),
            Err(FeedbackError::ReceivedAboveExpected { index: 0, .. })
        ));
        assert_eq!(
            encode_feedback(1, &[entry(1), entry(1)], &mut out),
            Err(FeedbackError::DuplicateSender(1))
        );
        assert_eq!(
            encode_feedback(1, &[entry(1); 33], &mut out),
            Err(FeedbackError::TooManyEntries(33))
        );
        assert_eq!(
            encode_feedback(1, &[entry(1)], &mut out[..10]),
            Err(FeedbackError::BufferTooSmall {
                need: feedback_len(1),
                have: 10
            })
        );
    }
}
