//! Typed errors for the media wire format.

/// Why a media packet could not be encoded or parsed.
///
/// Every variant is a property of the bytes, so a receiver counts and drops
/// the packet and carries on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the fixed header.
    #[error("media packet too short: need {need} bytes, have {have}")]
    TooShort {
        /// Bytes required.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// The output buffer cannot hold what is being written.
    #[error("output buffer too small: need {need} bytes, have {have}")]
    BufferTooSmall {
        /// Bytes required.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Byte 0 is not a media version this build speaks.
    #[error("unsupported media header version {0} (this build speaks version 1)")]
    UnsupportedVersion(u8),
    /// A reserved flag bit (4..=7) is set.
    #[error("reserved media flag bits set in 0x{0:02x}")]
    ReservedFlags(u8),
    /// The quality-report flag is set but fewer than 4 bytes follow the header.
    #[error("quality-report flag set but only {have} bytes follow the header (need 4)")]
    TrailerTooShort {
        /// Bytes after the header.
        have: usize,
    },
    /// The quality report claims more than 100 % loss.
    #[error("quality report loss {0}% is above 100%")]
    LossOutOfRange(u8),
}
