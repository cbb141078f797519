//! Owned, `Send` handles over libopus 1.6.1 (from `opusic-sys`, built with
//! DRED, hence deep PLC, and OSCE). The `opus` crate's types hide their raw pointers, and DRED needs the
//! decoder pointer, so the codec stages use these thin wrappers for both.
//!
//! Every call that runs codec arithmetic holds a [`FlushDenormals`] guard.
//! Creation and destruction allocate (through libopus's `malloc`) and happen
//! on the control side only; encode, decode, DRED parse/decode and the ctls
//! used on the real-time path do not allocate (libopus uses the stack for
//! scratch).

use std::ffi::{c_int, CStr};
use std::ptr::NonNull;

use opusic_sys as sys;

use super::denormals::FlushDenormals;

/// libopus's text for an error code.
pub fn strerror(code: i32) -> String {
    // SAFETY: opus_strerror returns a pointer to a static NUL-terminated
    // string for every input (unknown codes map to "unknown error").
    unsafe { CStr::from_ptr(sys::opus_strerror(code)) }
        .to_string_lossy()
        .into_owned()
}

/// Samples per channel in the largest Opus packet (120 ms at 48 kHz).
pub const MAX_FRAME_SAMPLES: usize = 5760;

/// A mono 48 kHz Opus encoder.
pub struct Encoder(NonNull<sys::OpusEncoder>);

// SAFETY: the encoder state is only touched through `&mut self`; libopus
// keeps no thread-local or global mutable state for it.
unsafe impl Send for Encoder {}

impl Encoder {
    pub fn new(application: c_int) -> Result<Self, String> {
        let mut err: c_int = 0;
        // SAFETY: valid rate/channels/application; `err` is a valid out pointer.
        let p = unsafe { sys::opus_encoder_create(48_000, 1, application, &mut err) };
        match NonNull::new(p) {
            Some(p) if err == sys::OPUS_OK => Ok(Encoder(p)),
            _ => Err(format!(
                "libopus refused to create an encoder: {}",
                strerror(err)
            )),
        }
    }

    /// Runs an `OPUS_SET_*` request with an integer argument.
    pub fn set(&mut self, request: c_int, value: i32) -> Result<(), String> {
        // SAFETY: SET requests take one opus_int32 vararg; the pointer is live.
        let r = unsafe { sys::opus_encoder_ctl(self.0.as_ptr(), request, value) };
        if r == sys::OPUS_OK {
            Ok(())
        } else {
            Err(format!(
                "libopus refused ctl {request} = {value}: {}",
                strerror(r)
            ))
        }
    }

    /// Runs an `OPUS_SET_*` request with an integer argument on the
    /// real-time path: no message on failure, just `false`.
    pub fn set_quiet(&mut self, request: c_int, value: i32) -> bool {
        // SAFETY: SET requests take one opus_int32 vararg; the pointer is live.
        unsafe { sys::opus_encoder_ctl(self.0.as_ptr(), request, value) == sys::OPUS_OK }
    }

    /// Runs an `OPUS_GET_*` request returning an integer.
    pub fn get(&mut self, request: c_int) -> Result<i32, String> {
        let mut v: i32 = 0;
        // SAFETY: GET requests take one opus_int32* vararg, which stays valid.
        let r = unsafe { sys::opus_encoder_ctl(self.0.as_ptr(), request, &mut v as *mut i32) };
        if r == sys::OPUS_OK {
            Ok(v)
        } else {
            Err(format!("libopus refused ctl {request}: {}", strerror(r)))
        }
    }

    /// Clears the coding state (not the settings), so the next frame starts
    /// afresh, as a decoder reset at the far end expects. Real-time safe.
    ///
    /// libopus's `OPUS_RESET_STATE` clears the DRED duration with the
    /// coding state (the field sits past the encoder's reset mark), so it
    /// is read first and set again after: a reset on the switch back from
    /// Codec2 left the stream without DRED until its setting next changed,
    /// and a listener at 70 % loss rebuilt nothing from it.
    pub fn reset(&mut self) {
        let mut dred: i32 = 0;
        // SAFETY: a GET request takes one opus_int32* vararg, which stays
        // valid for the call.
        let kept = unsafe {
            sys::opus_encoder_ctl(
                self.0.as_ptr(),
                sys::OPUS_GET_DRED_DURATION_REQUEST,
                &mut dred as *mut i32,
            )
        } == sys::OPUS_OK;
        // SAFETY: OPUS_RESET_STATE takes no argument.
        unsafe { sys::opus_encoder_ctl(self.0.as_ptr(), sys::OPUS_RESET_STATE) };
        if kept && dred > 0 {
            self.set_quiet(sys::OPUS_SET_DRED_DURATION_REQUEST, dred);
        }
    }

    /// Encodes one frame (`pcm.len()` must be a legal Opus frame size) into
    /// `out`; returns the packet length or a libopus error code.
    pub fn encode_float(&mut self, pcm: &[f32], out: &mut [u8]) -> Result<usize, i32> {
        let _ftz = FlushDenormals::new();
        // SAFETY: pointers and lengths come from live slices; libopus reads
        // pcm.len() samples (mono) and writes at most out.len() bytes.
        let n = unsafe {
            sys::opus_encode_float(
                self.0.as_ptr(),
                pcm.as_ptr(),
                pcm.len() as c_int,
                out.as_mut_ptr(),
                out.len().min(i32::MAX as usize) as i32,
            )
        };
        if n < 0 {
            Err(n)
        } else {
            Ok(n as usize)
        }
    }
}

/// A mono 48 kHz speech encoder (`OPUS_APPLICATION_VOIP`) at `bitrate`
/// b/s, for audio coded outside a graph (a voice message).
pub fn speech_encoder(bitrate: i32) -> Result<Encoder, String> {
    let mut e = Encoder::new(sys::OPUS_APPLICATION_VOIP)?;
    e.set(sys::OPUS_SET_BITRATE_REQUEST, bitrate)?;
    Ok(e)
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_encoder_create, destroyed exactly once.
        unsafe { sys::opus_encoder_destroy(self.0.as_ptr()) }
    }
}

/// A mono 48 kHz Opus decoder.
pub struct Decoder(NonNull<sys::OpusDecoder>);

// SAFETY: as for `Encoder`.
unsafe impl Send for Decoder {}

impl Decoder {
    pub fn new() -> Result<Self, String> {
        let mut err: c_int = 0;
        // SAFETY: valid rate/channels; `err` is a valid out pointer.
        let p = unsafe { sys::opus_decoder_create(48_000, 1, &mut err) };
        match NonNull::new(p) {
            Some(p) if err == sys::OPUS_OK => Ok(Decoder(p)),
            _ => Err(format!(
                "libopus refused to create a decoder: {}",
                strerror(err)
            )),
        }
    }

    /// Sets the decoder's complexity (0..=10). libopus 1.5+ uses its neural
    /// concealment (deep PLC) at 5 and above; 0 is classical PLC only. With
    /// OSCE compiled in (opusic-sys feature `osce`), 6 enhances every
    /// decoded SILK frame with LACE and 7 with NoLACE.
    pub fn set_complexity(&mut self, value: i32) -> Result<(), String> {
        // SAFETY: a SET request with one opus_int32 vararg on a live decoder.
        let r = unsafe {
            sys::opus_decoder_ctl(self.0.as_ptr(), sys::OPUS_SET_COMPLEXITY_REQUEST, value)
        };
        if r == sys::OPUS_OK {
            Ok(())
        } else {
            Err(format!(
                "libopus refused decoder complexity {value}: {}",
                strerror(r)
            ))
        }
    }

    /// The complexity libopus holds for this decoder (`OPUS_GET_COMPLEXITY`).
    pub fn complexity(&mut self) -> Result<i32, String> {
        let mut v: i32 = 0;
        // SAFETY: a GET request with one opus_int32* vararg, which stays valid.
        let r = unsafe {
            sys::opus_decoder_ctl(
                self.0.as_ptr(),
                sys::OPUS_GET_COMPLEXITY_REQUEST,
                &mut v as *mut i32,
            )
        };
        if r == sys::OPUS_OK {
            Ok(v)
        } else {
            Err(format!(
                "libopus refused to report the decoder complexity: {}",
                strerror(r)
            ))
        }
    }

    /// Decodes `data` (or conceals one frame of `out.len()` samples when
    /// `data` is `None`); with `fec`, decodes the LBRR copy of the previous
    /// frame carried in `data`. Returns samples written or an error code.
    pub fn decode_float(
        &mut self,
        data: Option<&[u8]>,
        out: &mut [f32],
        fec: bool,
    ) -> Result<usize, i32> {
        let _ftz = FlushDenormals::new();
        let (ptr, len) = match data {
            Some(d) => (d.as_ptr(), d.len().min(i32::MAX as usize) as i32),
            None => (std::ptr::null(), 0),
        };
        // SAFETY: `ptr` is null (conceal) or points to `len` readable bytes;
        // libopus writes at most out.len() samples (mono) into `out`.
        let n = unsafe {
            sys::opus_decode_float(
                self.0.as_ptr(),
                ptr,
                len,
                out.as_mut_ptr(),
                out.len() as c_int,
                c_int::from(fec),
            )
        };
        if n < 0 {
            Err(n)
        } else {
            Ok(n as usize)
        }
    }

    /// Synthesises `out.len()` samples from DRED features `offset` samples
    /// before the start of the packet `dred` was parsed from.
    pub fn dred_decode_float(
        &mut self,
        dred: &Dred,
        offset: i32,
        out: &mut [f32],
    ) -> Result<usize, i32> {
        let _ftz = FlushDenormals::new();
        // SAFETY: both states are live; libopus writes out.len() samples.
        let n = unsafe {
            sys::opus_decoder_dred_decode_float(
                self.0.as_ptr(),
                dred.0.as_ptr(),
                offset,
                out.as_mut_ptr(),
                out.len() as i32,
            )
        };
        if n < 0 {
            Err(n)
        } else {
            Ok(n as usize)
        }
    }

    /// Forgets all history (a new stream starts).
    pub fn reset(&mut self) {
        // SAFETY: OPUS_RESET_STATE takes no argument.
        unsafe { sys::opus_decoder_ctl(self.0.as_ptr(), sys::OPUS_RESET_STATE) };
    }

    /// Duration of the last decoded or concealed packet, samples.
    pub fn last_packet_duration(&mut self) -> usize {
        let mut v: i32 = 0;
        // SAFETY: the request takes one opus_int32* vararg, which stays valid.
        unsafe {
            sys::opus_decoder_ctl(
                self.0.as_ptr(),
                sys::OPUS_GET_LAST_PACKET_DURATION_REQUEST,
                &mut v as *mut i32,
            )
        };
        v.max(0) as usize
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_decoder_create, destroyed exactly once.
        unsafe { sys::opus_decoder_destroy(self.0.as_ptr()) }
    }
}

/// The DRED feature decoder (holds the RDOVAE model).
pub struct DredDecoder(NonNull<sys::OpusDREDDecoder>);

// SAFETY: as for `Encoder`.
unsafe impl Send for DredDecoder {}

impl DredDecoder {
    pub fn new() -> Result<Self, String> {
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid out pointer.
        let p = unsafe { sys::opus_dred_decoder_create(&mut err) };
        match NonNull::new(p) {
            Some(p) if err == sys::OPUS_OK => Ok(DredDecoder(p)),
            _ => Err(format!(
                "libopus refused to create a DRED decoder (built without DRED?): {}",
                strerror(err)
            )),
        }
    }
}

impl Drop for DredDecoder {
    fn drop(&mut self) {
        // SAFETY: created by opus_dred_decoder_create, destroyed once.
        unsafe { sys::opus_dred_decoder_destroy(self.0.as_ptr()) }
    }
}

/// Parsed DRED redundancy of one packet.
pub struct Dred(NonNull<sys::OpusDRED>);

// SAFETY: as for `Encoder`.
unsafe impl Send for Dred {}

impl Dred {
    pub fn new() -> Result<Self, String> {
        let mut err: c_int = 0;
        // SAFETY: `err` is a valid out pointer.
        let p = unsafe { sys::opus_dred_alloc(&mut err) };
        match NonNull::new(p) {
            Some(p) if err == sys::OPUS_OK => Ok(Dred(p)),
            _ => Err(format!(
                "libopus refused to allocate DRED state: {}",
                strerror(err)
            )),
        }
    }

    /// Parses (and fully decodes) the DRED extension of `packet`, asking for
    /// up to `max_samples` of history at 48 kHz. Returns how many samples
    /// before the packet's start the redundancy reaches back (0: none).
    pub fn parse(
        &mut self,
        dec: &mut DredDecoder,
        packet: &[u8],
        max_samples: i32,
    ) -> Result<usize, i32> {
        let _ftz = FlushDenormals::new();
        let mut dred_end: c_int = 0;
        // SAFETY: states are live, `packet` is readable for its length,
        // `dred_end` is a valid out pointer; processing is not deferred.
        let r = unsafe {
            sys::opus_dred_parse(
                dec.0.as_ptr(),
                self.0.as_ptr(),
                packet.as_ptr(),
                packet.len().min(i32::MAX as usize) as i32,
                max_samples,
                48_000,
                &mut dred_end,
                0,
            )
        };
        if r < 0 {
            Err(r)
        } else {
            Ok(r as usize)
        }
    }
}

impl Drop for Dred {
    fn drop(&mut self) {
        // SAFETY: allocated by opus_dred_alloc, freed once.
        unsafe { sys::opus_dred_free(self.0.as_ptr()) }
    }
}

/// Whether `packet` carries an LBRR (in-band FEC) copy of the previous frame.
pub fn packet_has_lbrr(packet: &[u8]) -> bool {
    if packet.is_empty() {
        return false;
    }
    // SAFETY: `packet` is readable for its (non-zero) length; the function
    // parses within `len` and returns <0 on malformed input.
    unsafe {
        sys::opus_packet_has_lbrr(packet.as_ptr(), packet.len().min(i32::MAX as usize) as i32) > 0
    }
}

/// Samples per frame (at 48 kHz) that `packet`'s TOC byte announces; 0 for
/// an empty packet.
pub fn packet_samples_per_frame(packet: &[u8]) -> usize {
    if packet.is_empty() {
        return 0;
    }
    // SAFETY: the function reads only the first byte, which exists.
    let n = unsafe { sys::opus_packet_get_samples_per_frame(packet.as_ptr(), 48_000) };
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of DRED history each of `frames` 20 ms packets of speech
    /// carries, in order.
    fn dred_reach(enc: &mut Encoder, x: &[f32], frames: std::ops::Range<usize>) -> Vec<usize> {
        let mut dec = DredDecoder::new().unwrap();
        let mut dred = Dred::new().unwrap();
        let mut packet = [0u8; 1500];
        frames
            .map(|i| {
                let len = enc
                    .encode_float(&x[i * 960..(i + 1) * 960], &mut packet)
                    .unwrap();
                dred.parse(&mut dec, &packet[..len], 48_000).unwrap()
            })
            .collect()
    }

    #[test]
    fn a_reset_keeps_the_dred_duration() {
        let x: Vec<f32> = crate::audio::signal::speech_like(48_000)
            .iter()
            .cycle()
            .take(48_000 * 4)
            .copied()
            .collect();
        let mut enc = Encoder::new(sys::OPUS_APPLICATION_VOIP).unwrap();
        enc.set(sys::OPUS_SET_BITRATE_REQUEST, 24_000).unwrap();
        enc.set(sys::OPUS_SET_PACKET_LOSS_PERC_REQUEST, 14).unwrap();
        enc.set(sys::OPUS_SET_DRED_DURATION_REQUEST, 100).unwrap();
        let before = dred_reach(&mut enc, &x, 0..100);
        assert!(
            before[50..].iter().all(|&n| n > 0),
            "DRED in every packet once the encoder has history: {before:?}"
        );
        enc.reset();
        assert_eq!(enc.get(sys::OPUS_GET_DRED_DURATION_REQUEST).unwrap(), 100);
        let after = dred_reach(&mut enc, &x, 100..200);
        assert!(
            after[50..].iter().all(|&n| n > 0),
            "DRED after the reset: {after:?}"
        );
        // A stream without DRED stays without it.
        enc.set(sys::OPUS_SET_DRED_DURATION_REQUEST, 0).unwrap();
        enc.reset();
        assert_eq!(enc.get(sys::OPUS_GET_DRED_DURATION_REQUEST).unwrap(), 0);
        assert!(dred_reach(&mut enc, &x, 0..50).iter().all(|&n| n == 0));
    }
}
