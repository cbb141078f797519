//! What the relay shows its operator: relay-wide counters, the HTTP JSON
//! views and Prometheus exposition ([`http`], [`prometheus`]), and the JSONL
//! event log ([`events`]), and heap accounting ([`heap`]).

pub mod bounded;
pub mod events;
pub mod heap;
pub mod http;
pub mod log_limit;
pub mod prometheus;

use std::sync::atomic::{AtomicU64, Ordering};

use wzp_proto::close::CloseCode;

/// Relay-wide counters (per-stage ones live in the graphs' stats).
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub connections: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub pings: AtomicU64,
    pub joins: AtomicU64,
    pub leaves: AtomicU64,
    pub refused_room_full: AtomicU64,
    pub refused_not_authorized: AtomicU64,
    pub refused_bad_join: AtomicU64,
    pub refused_unknown_sni: AtomicU64,
    pub refused_capacity: AtomicU64,
    pub refused_protocol: AtomicU64,
    pub signal_frames: AtomicU64,
    pub signal_malformed: AtomicU64,
    pub signal_unknown: AtomicU64,
    pub signal_queue_full: AtomicU64,
    /// `member_state` messages taken (a member muting or unmuting).
    pub member_state: AtomicU64,
    pub sfu_ring_full: AtomicU64,
    /// Config reloads applied (`SIGHUP`), and refused (the file did not
    /// read or validate; nothing changed).
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
    /// What the HTTP endpoint's listener turned away.
    pub http: std::sync::Arc<bounded::HttpLimits>,
}

/// Adds one.
pub fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl RelayCounters {
    /// Counts a refused connection under its close code.
    pub fn refused(&self, code: CloseCode) {
        inc(match code {
            CloseCode::RoomFull => &self.refused_room_full,
            CloseCode::NotAuthorized => &self.refused_not_authorized,
            CloseCode::UnknownSni => &self.refused_unknown_sni,
            CloseCode::Capacity => &self.refused_capacity,
            CloseCode::Protocol => &self.refused_protocol,
            _ => &self.refused_bad_join,
        });
    }

    /// `(reason, count)` of refused connections, for `/metrics`.
    pub fn refusals(&self) -> [(&'static str, u64); 6] {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("room_full", ld(&self.refused_room_full)),
            ("not_authorized", ld(&self.refused_not_authorized)),
            ("bad_join", ld(&self.refused_bad_join)),
            ("unknown_sni", ld(&self.refused_unknown_sni)),
            ("capacity", ld(&self.refused_capacity)),
            ("protocol", ld(&self.refused_protocol)),
        ]
    }
}
