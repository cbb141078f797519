//! Any feedback payload: parsing never panics, whatever parses re-encodes
//! to the same bytes, and the receiver's own entry reads as the entry under
//! its reserved id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wzp_proto::feedback::{ReceiverInfo, MAX_FEEDBACK_ENTRIES, RECEIVER_ENTRY_ID};
use wzp_proto::{encode_feedback_flags, FeedbackEntry, FeedbackReport};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = FeedbackReport::parse(data) else {
        return;
    };
    let mut entries = [FeedbackEntry::default(); MAX_FEEDBACK_ENTRIES];
    let mut n = 0;
    for e in report.entries() {
        entries[n] = e;
        n += 1;
    }
    assert_eq!(n, report.len());
    for e in &entries[..n] {
        assert!(e.loss_fraction() >= 0.0 && e.loss_fraction() <= 1.0);
        assert_eq!(report.entry_for(e.sender_id), Some(*e));
    }
    // The receiver's own entry reads from the entry under its id, and only.
    assert_eq!(
        report.receiver_info(),
        report
            .entry_for(RECEIVER_ENTRY_ID)
            .and_then(|e| ReceiverInfo::from_entry(&e))
    );
    let mut out = vec![0u8; data.len()];
    let len = encode_feedback_flags(report.flags, report.interval_ms, &entries[..n], &mut out)
        .expect("a parsed report re-encodes into the same length");
    assert_eq!(&out[..len], data);
});
