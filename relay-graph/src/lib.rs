//! # wzp-relay
//!
//! The relay control plane: a QUIC endpoint that routes connections by TLS
//! server name ([`sni`]), admits clients into rooms after a signed Join
//! ([`join`], [`rooms`]), and runs `graphs/relay.toml` on the engine, where
//! `sfu.fanout` forwards each media datagram to the other members of the
//! sender's room without decrypting it ([`relay`]). Prometheus and JSON
//! views live in [`metrics`], the JSONL event log in [`events`]. The
//! operator's guide is `docs/OPERATIONS.md`.

pub mod calls;
pub mod config;
pub mod events;
pub mod join;
pub mod metrics;
pub mod presence;
pub mod relay;
pub mod rooms;
pub mod signal;
pub use wzp_proto::sni;
