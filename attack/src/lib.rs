//! An attacker of our own, for issue #10's proof: a hostile QUIC client
//! run against a real `wzp-relay` process while a real two-client call
//! (two `wzp-client join` processes) goes through it, and measures on the
//! legit recordings.
//!
//! The attacker is written independently of the client: quinn on rustls
//! (ring) configured here ([`quic`]), signal frames and media headers
//! written byte by byte from docs/WIRE.md ([`wire`]). It never calls
//! `wzp-client`'s join code, the project's `net::quic` or its signal
//! codec, so a mistake shared by the client and the relay cannot hide an
//! attack. The one exception is the **malicious member** ([`member`]): a
//! member holds the room secret, so it computes its Join signature and
//! room admission proof with `wzp-proto`'s pure crypto helpers
//! (`RoomAdmissionKey`, `join_signed_bytes`, `Seed::identity`), which is
//! exactly what holding the secret allows. The handshake flood needs no
//! membership and uses no project code at all.
//!
//! [`attacks`] holds the attacks (datagram flood, capture and replay,
//! stream stuffing, handshake flood); [`procs`] starts the real processes
//! (built with `cargo build -p wzp-relay -p wzp-client`; `cargo test
//! --workspace` builds them); [`audio`] measures the recordings (dropout
//! windows, tone levels). The tests in `attack/tests/` run one at a time
//! ([`serial::serial`]).

pub mod attacks;
pub mod audio;
pub mod member;
pub mod procs;
pub mod quic;
pub mod scenario;
pub mod serial;
pub mod wire;
