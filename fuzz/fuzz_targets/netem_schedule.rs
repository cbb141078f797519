//! `wzp-netem --schedule` and `--trace` are outside input: any text must give
//! phases or an error, never a panic, and whatever parses must drive the
//! impairment core without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The parsers and the core as they are compiled into wzp-stages.
#[allow(dead_code)]
#[path = "../../stages/src/net/netem_core.rs"]
mod netem_core;
#[allow(dead_code)]
#[path = "../../stages/src/net/netem_schedule.rs"]
mod netem_schedule;

use netem_core::{parse_trace, NetemCore};
use netem_schedule::{parse_schedule, NetemSettings, MAX_RATE_KBPS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let trace = parse_trace(text, "fuzz").ok();
    if let Some(t) = &trace {
        assert!(!t.is_empty(), "a parsed trace holds entries");
    }
    let Ok(phases) = parse_schedule(text) else { return };
    assert!(!phases.is_empty(), "a parsed schedule holds phases");
    let base = NetemSettings::default();
    let mut core: Option<NetemCore<u8>> = None;
    let mut now = 0u64;
    for p in phases.iter().take(16) {
        assert!(!p.duration.is_zero());
        let s = base.with_phase(p);
        assert!((0.0..=100.0).contains(&s.loss));
        assert!((0.0..=MAX_RATE_KBPS).contains(&s.rate));
        let Ok(params) = s.impair_params() else { continue };
        let c = core.get_or_insert_with(|| {
            NetemCore::new(params.clone(), 1, trace.clone().unwrap_or_default(), 64)
        });
        c.set_params(params);
        for i in 0..32u8 {
            now = now.saturating_add(1_000_000);
            c.push(now, 200, |slot| *slot = i);
            while c.pop_before(now).is_some() {}
        }
    }
});
