//! Adaptive call quality, sans-IO: what a receiver measures about each
//! sender and reports back ([`receive_stats`], wire format in
//! `wzp_proto::feedback`), and how a sender turns those reports into codec,
//! redundancy and tier decisions ([`controller`]). No stage kinds yet: these
//! are plain structs fed `now`, to be driven by the graphs' stages (see
//! docs/PROFILES.md, "Adaptation").

pub mod controller;
pub mod receive_stats;
