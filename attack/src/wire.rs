//! The bytes an attacker puts on the wire, written from docs/WIRE.md by
//! hand: signal frames (§2.1: `u32` big-endian length, then JSON) and media
//! headers (§1.1: 22 clear bytes). Nothing here comes from the project's
//! encoders, so a mistake in them cannot hide in both ends.

use std::time::Duration;

/// Bytes of the clear media header (docs/WIRE.md §1.1).
pub const MEDIA_HEADER_LEN: usize = 22;

/// The media header's version byte (offset 0).
pub const MEDIA_VERSION: u8 = 0x01;

/// Codec id of Opus (offset 2).
pub const CODEC_OPUS: u8 = 0x01;

/// One signal frame: length (u32 BE) then the JSON body.
pub fn signal_frame(body: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_vec(body).expect("a JSON value serialises");
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

/// `{"type":"hello","version":1,"min_version":1}` framed.
pub fn hello_frame() -> Vec<u8> {
    signal_frame(&serde_json::json!({
        "type": "hello",
        "version": 1,
        "min_version": 1,
        "software": "wzp-attack",
    }))
}

/// A media header as §1.1 lays it out: version 1, no flags, Opus, key
/// epoch `epoch`, `sender_id`, `seq`, `timestamp`, FEC off.
pub fn media_header(sender_id: u32, seq: u32, timestamp: u32, epoch: u8) -> [u8; MEDIA_HEADER_LEN] {
    let mut h = [0u8; MEDIA_HEADER_LEN];
    h[0] = MEDIA_VERSION;
    h[1] = 0;
    h[2] = CODEC_OPUS;
    h[3] = epoch;
    h[4..8].copy_from_slice(&sender_id.to_be_bytes());
    h[8..12].copy_from_slice(&seq.to_be_bytes());
    h[12..16].copy_from_slice(&timestamp.to_be_bytes());
    // fec_block, fec_symbol, fec_ratio, fec_block_len: zero (FEC off).
    h
}

/// The sender id of a media datagram (offset 4), if it is long enough and
/// has the version byte of §1.1.
pub fn sender_id(datagram: &[u8]) -> Option<u32> {
    if datagram.len() < MEDIA_HEADER_LEN || datagram[0] != MEDIA_VERSION {
        return None;
    }
    Some(u32::from_be_bytes(datagram[4..8].try_into().ok()?))
}

/// Reads one signal frame from `recv`: `Ok(None)` at the end of the
/// stream; an error if the stream breaks, the frame is above `max` or its
/// body is not JSON.
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<serde_json::Value>, String> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(format!("reading a frame header: {e}")),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(format!("frame of {len} bytes (max {max})"));
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading a {len}-byte frame: {e}"))?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("frame body is not JSON: {e}"))
}

/// Lowercase hex of `bytes` (binary fields of signal messages, §2.2).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Milliseconds since the Unix epoch (a Join's `timestamp_ms`).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// A small deterministic generator (xorshift64*) for payloads and ids: the
/// attacks are repeatable, and the crate needs no randomness dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; zero is moved off zero).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Fills `buf` with pseudo-random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    /// A value in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_header_matches_the_wire_example() {
        // docs/WIRE.md §1.4 without flags, FEC or epoch: the fields sit at
        // the documented offsets.
        let h = media_header(0x0a0b0c0d, 258, 0x0001e000, 2);
        assert_eq!(
            h,
            [
                0x01, 0x00, 0x01, 0x02, 0x0a, 0x0b, 0x0c, 0x0d, 0x00, 0x00, 0x01, 0x02, 0x00, 0x01,
                0xe0, 0x00, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(sender_id(&h), Some(0x0a0b0c0d));
        assert_eq!(sender_id(&h[..21]), None);
        let mut v = h;
        v[0] = 2;
        assert_eq!(sender_id(&v), None);
    }

    #[test]
    fn a_signal_frame_is_length_then_json() {
        let f = signal_frame(&serde_json::json!({"type": "ping", "timestamp_ms": 7}));
        assert_eq!(&f[..4], &[0, 0, 0, 0x20]);
        let back: serde_json::Value = serde_json::from_slice(&f[4..]).unwrap();
        assert_eq!(back["type"], "ping");
        assert_eq!(back["timestamp_ms"], 7);
    }
}
