//! `audio.mute` driven by hand: the switch the control plane throws takes
//! the signal to silence at the next quantum, fading over it, and back.
//! Every `process` runs under `assert_no_alloc`.

wzp_engine::install_alloc_checker!();

mod audio_support;

use std::sync::Arc;

use audio_support::*;
use wzp_engine::prelude::*;
use wzp_engine::rt_check::assert_rt_safe;
use wzp_stages::audio::mute::{Mute, MuteSwitch};

const N: usize = 960;

/// One quantum of a constant `x` in; what came out.
fn step(h: &mut Harness, x: f32) -> Vec<f32> {
    h.input(0).fill(x);
    assert_rt_safe("audio.mute process", 1, || {
        h.run();
    });
    h.output(0).to_vec()
}

fn build(set: &[(&str, ParamValue)], res: &Resources) -> Result<Harness, BuildError> {
    Harness::build_with(&Mute, set, RATE, QUANTUM, res)
}

fn with_switch(switch: &Arc<MuteSwitch>) -> Harness {
    let mut res = Resources::new();
    res.insert("call.mute", switch.clone());
    build(&[("switch", text("call.mute"))], &res).unwrap()
}

#[test]
fn the_switch_silences_the_next_quantum_with_a_fade_and_opens_it_again() {
    let switch = Arc::new(MuteSwitch::new(false));
    let mut st = with_switch(&switch);
    // Open: the signal passes bit for bit.
    assert!(step(&mut st, 0.5).iter().all(|&v| v == 0.5));
    assert_eq!(st.gauge("muted"), 0);

    switch.set(true);
    let fade = step(&mut st, 0.5);
    // The quantum after the switch fades down, never up, to silence.
    assert!(fade[0] > 0.49 && fade[0] <= 0.5, "{}", fade[0]);
    assert!(fade.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(fade[N - 1], 0.0);
    assert_eq!(st.gauge("muted"), 1);
    for _ in 0..5 {
        assert!(step(&mut st, 0.5).iter().all(|&v| v == 0.0));
    }
    assert_eq!(st.counter("muted_frames"), 6);

    switch.set(false);
    let fade = step(&mut st, 0.5);
    assert!(fade[0] < 0.01, "{}", fade[0]);
    assert!(fade.windows(2).all(|w| w[1] >= w[0]));
    assert_eq!(fade[N - 1], 0.5);
    assert!(step(&mut st, 0.5).iter().all(|&v| v == 0.5));
    assert_eq!(st.gauge("muted"), 0);
    assert_eq!(st.counter("muted_frames"), 6);
}

#[test]
fn a_switch_thrown_before_the_start_starts_silent_with_no_fade() {
    let switch = Arc::new(MuteSwitch::new(true));
    let mut st = with_switch(&switch);
    assert!(step(&mut st, 0.5).iter().all(|&v| v == 0.0));
    assert_eq!(st.gauge("muted"), 1);
}

#[test]
fn with_no_switch_inserted_the_param_holds() {
    let res = Resources::new();
    let mut open = build(&[("switch", text("call.mute"))], &res).unwrap();
    assert!(step(&mut open, 0.25).iter().all(|&v| v == 0.25));
    let muted = [
        ("switch", text("call.mute")),
        ("muted", ParamValue::Bool(true)),
    ];
    let mut shut = build(&muted, &res).unwrap();
    assert!(step(&mut shut, 0.25).iter().all(|&v| v == 0.0));
}

#[test]
fn a_switch_name_taken_by_another_kind_of_cell_is_refused_by_name() {
    let mut res = Resources::new();
    res.insert("call.mute", Arc::new(42u32));
    let err = build(&[("switch", text("call.mute"))], &res)
        .err()
        .expect("a u32 is no MuteSwitch");
    let text = err.to_string();
    assert!(
        text.contains("switch") && text.contains("MuteSwitch"),
        "{text}"
    );
}

/// Someone talking into a muted microphone is counted (so the client can
/// say so); a quiet room is not, and nothing is counted while open.
#[test]
fn talking_into_a_muted_microphone_is_counted() {
    let switch = Arc::new(MuteSwitch::new(false));
    let mut st = with_switch(&switch);
    // Open and loud: not counted.
    step(&mut st, 0.3);
    assert_eq!(st.counter("voiced_muted_frames"), 0);
    switch.set(true);
    // Muted: a voice-level signal (-10 dBFS) counts, a quiet room's level
    // (-66 dBFS) does not.
    for _ in 0..3 {
        step(&mut st, 0.3);
    }
    for _ in 0..4 {
        step(&mut st, 0.0005);
    }
    assert_eq!(st.counter("voiced_muted_frames"), 3);
    assert_eq!(st.counter("muted_frames"), 7);
    switch.set(false);
    step(&mut st, 0.3);
    assert_eq!(st.counter("voiced_muted_frames"), 3);
}
