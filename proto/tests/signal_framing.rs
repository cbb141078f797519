//! Signal framing: split reads at every byte boundary, limits, bad frames.

mod common;

use std::io::Cursor;

use common::samples;
use wzp_proto::signal::{
    encode_frame, encode_frame_into, read_frame, write_frame, FrameDecoder, MAX_BUFFERED,
    MAX_FRAME_LEN,
};
use wzp_proto::{Decoded, SignalError, SignalMessage};

fn stream() -> (Vec<u8>, Vec<SignalMessage>) {
    let msgs = samples();
    let mut bytes = Vec::new();
    for m in &msgs {
        encode_frame_into(m, &mut bytes).unwrap();
    }
    (bytes, msgs)
}

fn drain(dec: &mut FrameDecoder, out: &mut Vec<SignalMessage>) {
    while let Some(d) = dec.next_frame().unwrap() {
        match d {
            Decoded::Message(m) => out.push(m),
            Decoded::Unknown { type_name } => panic!("unknown {type_name}"),
        }
    }
}

#[test]
fn split_into_two_at_every_byte_boundary() {
    let (bytes, msgs) = stream();
    for cut in 0..=bytes.len() {
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        dec.push(&bytes[..cut]).unwrap();
        drain(&mut dec, &mut got);
        dec.push(&bytes[cut..]).unwrap();
        drain(&mut dec, &mut got);
        assert_eq!(got, msgs, "cut at {cut}");
        dec.finish().unwrap();
        assert_eq!(dec.buffered(), 0);
    }
}

#[test]
fn one_byte_at_a_time() {
    let (bytes, msgs) = stream();
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for b in &bytes {
        dec.push(std::slice::from_ref(b)).unwrap();
        drain(&mut dec, &mut got);
    }
    assert_eq!(got, msgs);
}

/// A reader that returns at most `chunk` bytes per read, to exercise partial reads.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn blocking_helpers_over_cursor_and_trickle() {
    let msgs = samples();
    let mut out = Vec::new();
    for m in &msgs {
        write_frame(&mut out, m).unwrap();
    }
    let mut cur = Cursor::new(&out);
    let mut got = Vec::new();
    while let Some(Decoded::Message(m)) = read_frame(&mut cur).unwrap() {
        got.push(m);
    }
    assert_eq!(got, msgs);

    for chunk in [1, 2, 3, 5, 7, 64] {
        let mut r = Trickle { data: &out, chunk };
        let mut got = Vec::new();
        while let Some(Decoded::Message(m)) = read_frame(&mut r).unwrap() {
            got.push(m);
        }
        assert_eq!(got, msgs, "chunk {chunk}");
    }
}

#[test]
fn read_frame_truncated_streams() {
    let frame = encode_frame(&SignalMessage::Ping { timestamp_ms: 1 }).unwrap();
    for cut in 1..frame.len() {
        let r = read_frame(&mut Cursor::new(&frame[..cut]));
        assert!(
            matches!(r, Err(SignalError::Truncated { .. })),
            "cut {cut}: {r:?}"
        );
    }
    assert!(read_frame(&mut Cursor::new(&[] as &[u8]))
        .unwrap()
        .is_none());
}

#[test]
fn decoder_finish_reports_partial_frame() {
    let frame = encode_frame(&SignalMessage::Reflect).unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&frame[..2]).unwrap();
    assert!(matches!(
        dec.finish(),
        Err(SignalError::Truncated { need: 4, have: 2 })
    ));
    dec.push(&frame[2..frame.len() - 1]).unwrap();
    assert!(dec.next_frame().unwrap().is_none());
    assert!(matches!(dec.finish(), Err(SignalError::Truncated { .. })));
}

/// A reader that fails the test if more than `limit` bytes are requested at once,
/// so an oversize length cannot make `read_frame` allocate the body.
struct Guard<'a>(&'a [u8]);

impl std::io::Read for Guard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(buf.len() <= 4, "read_frame allocated {} bytes", buf.len());
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn oversize_length_is_rejected_before_allocating() {
    for len in [MAX_FRAME_LEN as u32 + 1, u32::MAX] {
        let header = len.to_be_bytes();
        let r = read_frame(&mut Guard(&header));
        assert!(
            matches!(r, Err(SignalError::FrameTooLarge { len: l }) if l == len as usize),
            "{r:?}"
        );

        let mut dec = FrameDecoder::new();
        dec.push(&header).unwrap();
        let e = dec.next_frame().unwrap_err();
        assert!(e.is_fatal());
        assert!(matches!(e, SignalError::FrameTooLarge { .. }));
        assert_eq!(dec.buffered(), 0);
        assert!(matches!(dec.next_frame(), Err(SignalError::Poisoned)));
        assert!(matches!(dec.push(b"x"), Err(SignalError::Poisoned)));
    }
}

#[test]
fn exactly_max_frame_len_is_accepted() {
    // A Hello whose software string pads the JSON to exactly 1 MiB.
    let base = encode_frame(&SignalMessage::hello(Some(String::new())))
        .unwrap()
        .len()
        - 4;
    let pad = "a".repeat(MAX_FRAME_LEN - base);
    let m = SignalMessage::hello(Some(pad));
    let frame = encode_frame(&m).unwrap();
    assert_eq!(frame.len(), 4 + MAX_FRAME_LEN);
    let mut dec = FrameDecoder::new();
    dec.push(&frame).unwrap();
    assert_eq!(dec.next_frame().unwrap(), Some(Decoded::Message(m.clone())));
    assert_eq!(
        read_frame(&mut Cursor::new(&frame)).unwrap(),
        Some(Decoded::Message(m))
    );

    let too_big = SignalMessage::hello(Some("a".repeat(MAX_FRAME_LEN - base + 1)));
    let mut out = vec![1, 2, 3];
    assert!(matches!(
        encode_frame_into(&too_big, &mut out),
        Err(SignalError::FrameTooLarge { len }) if len == MAX_FRAME_LEN + 1
    ));
    assert_eq!(
        out,
        [1, 2, 3],
        "a failed encode leaves the buffer untouched"
    );
}

#[test]
fn malformed_frame_is_skipped_and_stream_continues() {
    let mut bytes = Vec::new();
    let junk = b"{not json";
    bytes.extend_from_slice(&(junk.len() as u32).to_be_bytes());
    bytes.extend_from_slice(junk);
    let unknown = br#"{"type":"from_the_future","x":1}"#;
    bytes.extend_from_slice(&(unknown.len() as u32).to_be_bytes());
    bytes.extend_from_slice(unknown);
    encode_frame_into(&SignalMessage::Ping { timestamp_ms: 9 }, &mut bytes).unwrap();

    let mut dec = FrameDecoder::new();
    dec.push(&bytes).unwrap();
    let e = dec.next_frame().unwrap_err();
    assert!(matches!(e, SignalError::Malformed(_)) && !e.is_fatal());
    assert_eq!(
        dec.next_frame().unwrap(),
        Some(Decoded::Unknown {
            type_name: "from_the_future".into()
        })
    );
    assert_eq!(
        dec.next_frame().unwrap(),
        Some(Decoded::Message(SignalMessage::Ping { timestamp_ms: 9 }))
    );
    assert_eq!(dec.next_frame().unwrap(), None);

    let mut cur = Cursor::new(&bytes);
    assert!(matches!(
        read_frame(&mut cur),
        Err(SignalError::Malformed(_))
    ));
    assert!(matches!(
        read_frame(&mut cur),
        Ok(Some(Decoded::Unknown { .. }))
    ));
    assert!(matches!(
        read_frame(&mut cur),
        Ok(Some(Decoded::Message(_)))
    ));
}

#[test]
fn zero_length_frame_is_malformed_not_fatal() {
    let mut dec = FrameDecoder::new();
    dec.push(&[0, 0, 0, 0]).unwrap();
    assert!(matches!(dec.next_frame(), Err(SignalError::Malformed(_))));
    assert_eq!(dec.buffered(), 0);
}

#[test]
fn push_beyond_buffer_cap_is_refused() {
    let mut dec = FrameDecoder::new();
    // A valid header for a max-size frame, then more bytes than the cap allows.
    dec.push(&(MAX_FRAME_LEN as u32).to_be_bytes()).unwrap();
    let chunk = vec![b' '; MAX_BUFFERED];
    let e = dec.push(&chunk).unwrap_err();
    assert!(matches!(e, SignalError::BufferFull { .. }) && !e.is_fatal());
    assert_eq!(dec.buffered(), 4, "refused bytes are not taken");
}

#[test]
fn many_frames_in_one_push_reuse_the_buffer() {
    let mut dec = FrameDecoder::new();
    let frame = encode_frame(&SignalMessage::Pong { timestamp_ms: 3 }).unwrap();
    for _ in 0..10_000 {
        dec.push(&frame).unwrap();
        dec.push(&frame[..5]).unwrap();
        assert!(dec.next_frame().unwrap().is_some());
        dec.push(&frame[5..]).unwrap();
        assert!(dec.next_frame().unwrap().is_some());
        assert_eq!(dec.buffered(), 0);
    }
}

#[test]
fn a_decoder_with_a_smaller_limit_refuses_larger_frames() {
    use wzp_proto::signal::{encode_frame, FrameDecoder};
    let ping = encode_frame(&SignalMessage::Ping { timestamp_ms: 1 }).unwrap();
    let mut dec = FrameDecoder::with_max_frame(ping.len() - 4);
    dec.push(&ping).unwrap();
    assert!(dec.next_frame().unwrap().is_some());
    let big = encode_frame(&SignalMessage::Hello {
        version: 1,
        min_version: 1,
        software: Some("x".repeat(100)),
        features: vec![],
    })
    .unwrap();
    // The header alone says it is too large: nothing more is read.
    dec.push(&big[..4]).unwrap();
    assert!(matches!(
        dec.next_frame(),
        Err(SignalError::FrameTooLarge { len }) if len == big.len() - 4
    ));
    assert!(matches!(dec.next_frame(), Err(SignalError::Poisoned)));
    // Never more than the decoder's own limit is buffered.
    let mut dec = FrameDecoder::with_max_frame(16);
    assert!(matches!(
        dec.push(&[0u8; 41]),
        Err(SignalError::BufferFull { .. })
    ));
}
