//! The relay's HTTP endpoint: Prometheus `/metrics` and JSON `/rooms`,
//! `/sessions`, `/stages`.
//!
//! The text exposition is written by hand: every figure already lives in an
//! atomic owned elsewhere (stage timings, counters, per-session stats), so a
//! metrics registry would only copy them once more per scrape.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::relay::Shared;

/// Binds the metrics address; returns the bound address and the server task.
pub async fn serve(
    shared: Arc<Shared>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/rooms", get(rooms))
        .route("/sessions", get(sessions))
        .route("/stages", get(stages))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok((local, task))
}

async fn rooms(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let v = s
        .rooms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .rooms_view();
    Json(v)
}

async fn sessions(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let v = s
        .rooms
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .sessions_view();
    Json(v)
}

async fn stages(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    // One report per forwarding shard, plus every shard's stages in one
    // list (each report names its graph: `relay`, or `relay-N` per shard).
    let reports: Vec<_> = s
        .shards
        .iter()
        .map(|sh| sh.graph_stats.report(&sh.graph_stats.snapshot(), None))
        .collect();
    let stages: Vec<_> = reports
        .iter()
        .flat_map(|r| r.stages.iter().cloned())
        .collect();
    Json(serde_json::json!({ "shards": reports, "stages": stages }))
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&s),
    )
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, ty: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {ty}");
}

/// Which stage counters are drops, and the reason label each gets in
/// `wzp_relay_drops_total`.
const DROP_COUNTERS: &[(&str, &str, &str)] = &[
    ("net.quic_ingress", "ring_full", "ingress_ring_full"),
    ("net.quic_ingress", "too_large", "ingress_too_large"),
    ("sfu.fanout", "malformed", "malformed"),
    ("sfu.fanout", "unknown_peer", "unknown_sender"),
    ("sfu.fanout", "out_full", "fanout_batch_full"),
    ("net.quic_egress", "ring_full", "egress_ring_full"),
    ("net.quic_egress", "too_large", "too_large"),
    ("net.quic_egress", "send_errors", "send_error"),
    ("net.quic_egress", "unknown_peer", "unknown_destination"),
];

/// The Prometheus text exposition of every relay figure.
pub fn render(s: &Shared) -> String {
    let mut out = String::with_capacity(8192);
    let shard_snaps: Vec<(String, wzp_engine::stats::Snapshot)> = s
        .shards
        .iter()
        .map(|sh| (esc(&sh.graph_stats.graph), sh.graph_stats.snapshot()))
        .collect();
    let all_stages: Vec<(&str, &wzp_engine::stats::StageSnapshot)> = shard_snaps
        .iter()
        .flat_map(|(g, sn)| sn.stages.iter().map(move |st| (g.as_str(), st)))
        .collect();
    let all_domains: Vec<(&str, &wzp_engine::stats::DomainSnapshot)> = shard_snaps
        .iter()
        .flat_map(|(g, sn)| sn.domains.iter().map(move |d| (g.as_str(), d)))
        .collect();

    head(
        &mut out,
        "wzp_stage_busy_seconds",
        "summary",
        "Time each stage spends in process() per cycle.",
    );
    for &(g, st) in &all_stages {
        let l = format!(
            "graph=\"{g}\",stage=\"{}\",kind=\"{}\"",
            esc(&st.id),
            esc(&st.kind)
        );
        for q in [0.5, 0.9, 0.99] {
            let _ = writeln!(
                out,
                "wzp_stage_busy_seconds{{{l},quantile=\"{q}\"}} {:e}",
                st.busy.quantile(q) as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "wzp_stage_busy_seconds_sum{{{l}}} {:e}",
            st.busy.sum as f64 / 1e9
        );
        let _ = writeln!(out, "wzp_stage_busy_seconds_count{{{l}}} {}", st.busy.count);
    }
    head(
        &mut out,
        "wzp_stage_wait_seconds",
        "summary",
        "Time from a cycle's start to each stage's start.",
    );
    for &(g, st) in &all_stages {
        let l = format!(
            "graph=\"{g}\",stage=\"{}\",kind=\"{}\"",
            esc(&st.id),
            esc(&st.kind)
        );
        for q in [0.5, 0.99] {
            let _ = writeln!(
                out,
                "wzp_stage_wait_seconds{{{l},quantile=\"{q}\"}} {:e}",
                st.wait.quantile(q) as f64 / 1e9
            );
        }
        let _ = writeln!(
            out,
            "wzp_stage_wait_seconds_sum{{{l}}} {:e}",
            st.wait.sum as f64 / 1e9
        );
        let _ = writeln!(out, "wzp_stage_wait_seconds_count{{{l}}} {}", st.wait.count);
    }
    head(
        &mut out,
        "wzp_stage_events_total",
        "counter",
        "Each stage's own counters (name = counter).",
    );
    for &(g, st) in &all_stages {
        for (name, v) in &st.counters {
            let _ = writeln!(
                out,
                "wzp_stage_events_total{{graph=\"{g}\",stage=\"{}\",name=\"{}\"}} {v}",
                esc(&st.id),
                esc(name)
            );
        }
    }
    head(
        &mut out,
        "wzp_stage_gauge",
        "gauge",
        "Each stage's own gauges.",
    );
    for &(g, st) in &all_stages {
        for (name, v) in &st.gauges {
            let _ = writeln!(
                out,
                "wzp_stage_gauge{{graph=\"{g}\",stage=\"{}\",name=\"{}\"}} {v}",
                esc(&st.id),
                esc(name)
            );
        }
    }
    head(
        &mut out,
        "wzp_domain_cycles_total",
        "counter",
        "Cycles run per domain.",
    );
    for &(g, d) in &all_domains {
        let _ = writeln!(
            out,
            "wzp_domain_cycles_total{{graph=\"{g}\",domain=\"{}\"}} {}",
            d.domain.name(),
            d.cycles
        );
    }
    head(
        &mut out,
        "wzp_domain_xruns_total",
        "counter",
        "Cycles that missed their deadline.",
    );
    for &(g, d) in &all_domains {
        let _ = writeln!(
            out,
            "wzp_domain_xruns_total{{graph=\"{g}\",domain=\"{}\"}} {}",
            d.domain.name(),
            d.xruns
        );
    }

    head(
        &mut out,
        "wzp_relay_drops_total",
        "counter",
        "Media packets dropped, by reason.",
    );
    for (kind, counter, reason) in DROP_COUNTERS {
        let v: u64 = all_stages
            .iter()
            .map(|(_, st)| *st)
            .filter(|st| st.kind == *kind)
            .filter_map(|st| st.counters.get(*counter))
            .sum();
        let _ = writeln!(out, "wzp_relay_drops_total{{reason=\"{reason}\"}} {v}");
    }

    let c = &s.counters;
    let ld = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let simple: &[(&str, &str, u64)] = &[
        (
            "wzp_relay_connections_total",
            "QUIC connections offered.",
            ld(&c.connections),
        ),
        (
            "wzp_relay_handshake_failures_total",
            "QUIC handshakes that failed or timed out.",
            ld(&c.handshake_failures),
        ),
        (
            "wzp_relay_pings_total",
            "Connections with SNI `ping` (closed at once).",
            ld(&c.pings),
        ),
        (
            "wzp_relay_joins_total",
            "Sessions admitted to a room.",
            ld(&c.joins),
        ),
        (
            "wzp_relay_leaves_total",
            "Sessions that left a room.",
            ld(&c.leaves),
        ),
        (
            "wzp_relay_signal_frames_total",
            "Signal frames read after Join.",
            ld(&c.signal_frames),
        ),
        (
            "wzp_relay_signal_malformed_total",
            "Signal frames that were not valid messages.",
            ld(&c.signal_malformed),
        ),
        (
            "wzp_relay_signal_unknown_total",
            "Signal frames of an unknown or unexpected type.",
            ld(&c.signal_unknown),
        ),
        (
            "wzp_relay_signal_queue_full_total",
            "Signal messages dropped: the client's queue was full.",
            ld(&c.signal_queue_full),
        ),
        (
            "wzp_relay_sfu_ring_full_total",
            "Membership commands lost to a full ring.",
            ld(&c.sfu_ring_full),
        ),
    ];
    for (name, help, v) in simple {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    head(
        &mut out,
        "wzp_relay_refused_total",
        "counter",
        "Connections refused, by reason.",
    );
    for (reason, v) in [
        ("room_full", ld(&c.refused_room_full)),
        ("not_authorized", ld(&c.refused_not_authorized)),
        ("bad_join", ld(&c.refused_bad_join)),
        ("unknown_sni", ld(&c.refused_unknown_sni)),
        ("capacity", ld(&c.refused_capacity)),
        ("protocol", ld(&c.refused_protocol)),
    ] {
        let _ = writeln!(out, "wzp_relay_refused_total{{reason=\"{reason}\"}} {v}");
    }

    let (rooms, sessions) = {
        let r = s.rooms.lock().unwrap_or_else(|p| p.into_inner());
        (r.rooms.len(), r.sessions_view())
    };
    head(
        &mut out,
        "wzp_relay_rooms",
        "gauge",
        "Rooms with at least one member.",
    );
    let _ = writeln!(out, "wzp_relay_rooms {rooms}");
    head(
        &mut out,
        "wzp_relay_participants",
        "gauge",
        "Sessions in rooms.",
    );
    let _ = writeln!(out, "wzp_relay_participants {}", sessions.len());
    head(
        &mut out,
        "wzp_relay_uptime_seconds",
        "gauge",
        "Seconds since the relay started.",
    );
    let _ = writeln!(
        out,
        "wzp_relay_uptime_seconds {:.3}",
        s.started.elapsed().as_secs_f64()
    );

    head(
        &mut out,
        "wzp_relay_session_packets_total",
        "counter",
        "Datagrams per session and direction.",
    );
    for v in &sessions {
        let l = format!(
            "session=\"{}\",room=\"{}\",fingerprint=\"{}\"",
            v.handle,
            esc(&v.room),
            esc(&v.fingerprint)
        );
        let _ = writeln!(
            out,
            "wzp_relay_session_packets_total{{{l},direction=\"in\"}} {}",
            v.packets_in
        );
        let _ = writeln!(
            out,
            "wzp_relay_session_packets_total{{{l},direction=\"out\"}} {}",
            v.packets_out
        );
    }
    head(
        &mut out,
        "wzp_relay_session_bytes_total",
        "counter",
        "Datagram bytes per session and direction.",
    );
    for v in &sessions {
        let l = format!(
            "session=\"{}\",room=\"{}\",fingerprint=\"{}\"",
            v.handle,
            esc(&v.room),
            esc(&v.fingerprint)
        );
        let _ = writeln!(
            out,
            "wzp_relay_session_bytes_total{{{l},direction=\"in\"}} {}",
            v.bytes_in
        );
        let _ = writeln!(
            out,
            "wzp_relay_session_bytes_total{{{l},direction=\"out\"}} {}",
            v.bytes_out
        );
    }
    head(
        &mut out,
        "wzp_relay_session_dropped_total",
        "counter",
        "Datagrams of a session dropped on the I/O side, by direction.",
    );
    for v in &sessions {
        let l = format!(
            "session=\"{}\",room=\"{}\",fingerprint=\"{}\"",
            v.handle,
            esc(&v.room),
            esc(&v.fingerprint)
        );
        let _ = writeln!(
            out,
            "wzp_relay_session_dropped_total{{{l},direction=\"in\"}} {}",
            v.dropped_in
        );
        let _ = writeln!(
            out,
            "wzp_relay_session_dropped_total{{{l},direction=\"out\"}} {}",
            v.dropped_out
        );
    }
    head(
        &mut out,
        "wzp_relay_session_max_datagram_bytes",
        "gauge",
        "Largest datagram each session's path takes now.",
    );
    for v in &sessions {
        let _ = writeln!(
            out,
            "wzp_relay_session_max_datagram_bytes{{session=\"{}\"}} {}",
            v.handle,
            v.max_datagram_size.unwrap_or(0)
        );
    }
    head(
        &mut out,
        "wzp_relay_session_rtt_seconds",
        "gauge",
        "Smoothed RTT per session.",
    );
    for v in &sessions {
        let _ = writeln!(
            out,
            "wzp_relay_session_rtt_seconds{{session=\"{}\"}} {:e}",
            v.handle,
            v.rtt_ms / 1e3
        );
    }
    out
}
