//! `audio.*` stages: sources (tone, WAV file, built-in speech), sinks (WAV
//! file, null), PCM plumbing (gain, mix, split, resample), and the echo
//! canceller for calls on a speaker.
//!
//! Every port here is mono `Pcm` at one rate. Stages that take a `rate`
//! param (0 = the graph rate) can work at any rate that gives a whole number
//! of samples per quantum, so a 16 kHz branch of a 48 kHz graph can be
//! built from them; `audio.resample` is the only stage that changes rate.
//!
//! [`signal`] holds pure helpers (levels, cross-correlation, frequency
//! estimates, offline resampling, the built-in speech-like signal) used by
//! the stages and by tests that judge audio.

use wzp_engine::prelude::*;

pub mod aec;
pub mod agc;
pub mod bus;
pub mod denoise;
pub mod device;
pub mod device_capture;
pub mod device_playout;
pub mod drift;
pub mod echo_cancel;
pub mod gain;
pub mod gain_control;
pub mod mix;
pub mod mute;
pub mod ns;
pub mod null_sink;
pub mod res;
pub mod resample;
pub mod ring_source;
pub mod room;
pub mod signal;
pub mod split;
pub mod stft;
pub mod tone_source;
pub mod wav_sink;
pub mod wav_source;

pub use signal::{rms_dbfs, xcorr_peak};

/// Registers every `audio.*` stage kind.
pub fn register(registry: &mut Registry) -> Result<(), wzp_engine::registry::RegisterError> {
    registry.register(tone_source::ToneSource)?;
    registry.register(ring_source::RingSource)?;
    registry.register(wav_source::WavSource)?;
    registry.register(wav_sink::WavSink)?;
    registry.register(null_sink::NullSink)?;
    registry.register(bus::BusSink)?;
    registry.register(bus::BusSource)?;
    registry.register(gain::Gain)?;
    registry.register(mute::Mute)?;
    registry.register(mix::Mix)?;
    registry.register(split::Split)?;
    registry.register(resample::Resample)?;
    registry.register(device_capture::DeviceCapture)?;
    registry.register(device_playout::DevicePlayout)?;
    registry.register(echo_cancel::EchoCancel)?;
    registry.register(room::Room)?;
    registry.register(denoise::Denoise)?;
    registry.register(gain_control::Agc)?;
    Ok(())
}

/// Highest sample rate any audio stage accepts.
pub const MAX_RATE: u32 = 384_000;
/// Lowest sample rate any audio stage accepts.
pub const MIN_RATE: u32 = 1_000;

/// Reads a rate param: 0 means the graph rate. The rate must give a whole
/// number of samples per quantum, since a PCM port carries exactly one
/// quantum.
pub(crate) fn rate_param(cx: &BuildContext<'_>, p: &Params, name: &str) -> Result<u32, BuildError> {
    let raw = p.int_in(name, 0, MAX_RATE as i64)?;
    let rate = if raw == 0 { cx.rate } else { raw as u32 };
    check_rate(cx, name, rate)?;
    Ok(rate)
}

pub(crate) fn check_rate(cx: &BuildContext<'_>, name: &str, rate: u32) -> Result<(), BuildError> {
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(ParamError::new(
            name,
            format!("{rate} Hz is out of range; use 0 (the graph rate) or {MIN_RATE}..={MAX_RATE}"),
        )
        .into());
    }
    let qn = cx.quantum.as_nanos();
    if (rate as u128 * qn) % 1_000_000_000 != 0 {
        return Err(ParamError::new(
            name,
            format!(
                "{rate} Hz does not give a whole number of samples per {:?} quantum; \
                 pick a rate such as 8000, 16000, 24000 or 48000",
                cx.quantum
            ),
        )
        .into());
    }
    Ok(())
}

/// A PCM port description for listings.
pub(crate) fn pcm_port(name: &'static str, doc: &'static str) -> PortInfo {
    PortInfo {
        name,
        ty: "Pcm@rate",
        doc,
    }
}

/// The `rate` param every rate-generic stage declares.
pub(crate) fn rate_spec() -> ParamSpec {
    ParamSpec::int(
        "rate",
        0,
        "sample rate of the ports in Hz; 0 = the graph rate",
    )
}
