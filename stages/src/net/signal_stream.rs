//! Signal frames over a QUIC stream: proto's [`FrameDecoder`] behind an
//! async reader, and a writer for single messages. Relays, clients, benches
//! and tests all read signal streams through this one type.
//!
//! The reader pulls what the stream has (at most [`READ_CHUNK`] bytes at a
//! time) into the decoder and hands out whole frames; a frame above the
//! reader's limit is refused from its 4-byte header, before its body is
//! buffered.

use quinn::{RecvStream, SendStream};
use wzp_proto::signal::{encode_frame, Decoded, FrameDecoder, SignalError, SignalMessage};

/// Bytes read from the stream per call.
pub const READ_CHUNK: usize = 4096;

/// Why reading a signal stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum SignalStreamError {
    /// A frame announced a body above the limit: the stream cannot be
    /// trusted to be in sync any more; close it.
    #[error("signal frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The reader's limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("signal stream ended inside a frame")]
    Truncated,
    /// The stream was reset or the connection was lost.
    #[error("signal stream: {0}")]
    Read(#[from] quinn::ReadError),
}

/// One frame from the peer: a message, or a frame that was well delimited
/// but not a valid message (count it and go on).
#[derive(Debug)]
pub enum SignalFrame {
    /// A decoded message (or an unknown type, see [`Decoded`]).
    Message(Decoded),
    /// Not a valid message; the session goes on.
    Malformed(String),
}

/// Reads signal frames from a QUIC stream.
pub struct SignalReader {
    recv: RecvStream,
    decoder: FrameDecoder,
    chunk: Box<[u8; READ_CHUNK]>,
    ended: bool,
}

impl SignalReader {
    /// A reader that refuses frames above `max_frame` bytes.
    pub fn new(recv: RecvStream, max_frame: usize) -> SignalReader {
        SignalReader {
            recv,
            decoder: FrameDecoder::with_max_frame(max_frame),
            chunk: Box::new([0; READ_CHUNK]),
            ended: false,
        }
    }

    /// The next frame; `Ok(None)` when the peer finished the stream between
    /// frames. Cancel-safe: a frame is only taken from the decoder when it
    /// is returned.
    pub async fn next(&mut self) -> Result<Option<SignalFrame>, SignalStreamError> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(d)) => return Ok(Some(SignalFrame::Message(d))),
                Ok(None) => {}
                Err(SignalError::Malformed(e)) => {
                    return Ok(Some(SignalFrame::Malformed(e.to_string())))
                }
                Err(SignalError::FrameTooLarge { len }) => {
                    return Err(SignalStreamError::TooLarge {
                        len,
                        max: self.decoder.max_frame(),
                    })
                }
                // Poisoned only follows a TooLarge we already returned.
                Err(_) => return Err(SignalStreamError::Truncated),
            }
            if self.ended {
                return match self.decoder.finish() {
                    Ok(()) => Ok(None),
                    Err(_) => Err(SignalStreamError::Truncated),
                };
            }
            match self.recv.read(&mut self.chunk[..]).await? {
                Some(n) => {
                    // The chunk is far below the decoder's buffer bound,
                    // and every complete frame is pulled before the next
                    // read, so the push cannot overflow.
                    if self.decoder.push(&self.chunk[..n]).is_err() {
                        return Err(SignalStreamError::TooLarge {
                            len: self.decoder.buffered() + n,
                            max: self.decoder.max_frame(),
                        });
                    }
                }
                None => self.ended = true,
            }
        }
    }

    /// The stream underneath (to stop it, or read its id).
    pub fn stream(&mut self) -> &mut RecvStream {
        &mut self.recv
    }
}

/// Writes one message as a frame.
pub async fn write_message(send: &mut SendStream, msg: &SignalMessage) -> Result<(), SignalError> {
    let frame = encode_frame(msg)?;
    send.write_all(&frame)
        .await
        .map_err(|e| SignalError::Io(std::io::Error::other(e)))
}

/// Writes bytes already framed (e.g. from
/// [`JoinExchange::poll_transmit`](wzp_proto::room_client::JoinExchange::poll_transmit)).
pub async fn write_frames(send: &mut SendStream, frames: &[u8]) -> Result<(), SignalError> {
    send.write_all(frames)
        .await
        .map_err(|e| SignalError::Io(std::io::Error::other(e)))
}
