//! # wzp-relay
//!
//! The relay control plane, one module per service:
//!
//! - [`endpoint`]: the QUIC endpoint; accepts connections and hands each to
//!   the service its TLS server name asks for ([`wzp_proto::sni`]).
//! - [`rooms`]: the room table (sans-IO: admission, members local or
//!   remote, room updates) and its shell, a room connection's life.
//! - [`media`]: forwarding shards running `graphs/relay.toml`, where
//!   `sfu.fanout` forwards each media datagram to the other members of the
//!   sender's room without decrypting it; the debug tap.
//! - [`signal`], [`presence`], [`calls`]: the `_signal` plane's sans-IO
//!   core (sessions, rate limits, registration, call routing), the presence
//!   registry and the direct-call registry.
//! - [`federation`]: the sans-IO federation core (links to other relays,
//!   global rooms, presence routes, media dedup, cross-relay calls) and
//!   its shell, the links' QUIC connections.
//! - [`observe`]: counters, Prometheus and JSON over HTTP, the event log.
//! - [`config`]: the config file and its checks; [`reload`]: applying a
//!   changed one (peers, trusted relays, call rooms, global rooms) with
//!   no restart.
//!
//! The wire contract (close codes, SNI grammar, Join, signal messages) is
//! in `wzp-proto`. The operator's guide is `docs/OPERATIONS.md`.

pub mod calls;
pub mod config;
pub mod dial;
pub mod endpoint;
pub mod federation;
pub mod media;
pub mod observe;
pub mod presence;
pub mod reload;
pub mod rooms;
pub mod signal;
pub mod voicemail;
