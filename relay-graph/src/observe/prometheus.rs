//! Prometheus text exposition of every relay figure.
//!
//! Written by hand: every figure already lives in an atomic owned elsewhere
//! (stage timings, counters, per-session stats), so a metrics registry
//! would only copy them once more per scrape. Stage counters behind
//! `wzp_relay_drops_total` are read through handles resolved when the graph
//! was built ([`crate::media::DropCounters`]).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::endpoint::Services;
use crate::rooms::service::SessionView;
use crate::signal::service::SignalViews;

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

/// The Prometheus text exposition of every relay figure.
pub fn render(s: &Services, signal: &SignalViews) -> String {
    let mut out = String::with_capacity(8192);
    let shard_snaps: Vec<(String, wzp_engine::stats::Snapshot)> = s
        .media
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
    for (reason, v) in s.media.drop_totals() {
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
            "wzp_relay_member_state_total",
            "member_state messages taken: members muting or unmuting.",
            ld(&c.member_state),
        ),
        (
            "wzp_relay_sfu_ring_full_total",
            "Membership commands lost to a full ring.",
            ld(&c.sfu_ring_full),
        ),
        (
            "wzp_http_connections_refused_total",
            "HTTP connections closed at accept: the endpoint had its most open.",
            ld(&c.http.refused),
        ),
        (
            "wzp_relay_config_reloads_total",
            "Config reloads applied (SIGHUP).",
            ld(&c.config_reloads),
        ),
        (
            "wzp_relay_config_reload_failures_total",
            "Config reloads refused: the file did not read or validate, and nothing changed.",
            ld(&c.config_reload_failures),
        ),
        (
            "wzp_http_connections_timed_out_total",
            "HTTP connections closed: idle 5 s, a request unanswered for 30 s, or 60 s old.",
            ld(&c.http.timed_out),
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
    for (reason, v) in c.refusals() {
        let _ = writeln!(out, "wzp_relay_refused_total{{reason=\"{reason}\"}} {v}");
    }

    let rooms = s.rooms.room_count();
    let sessions = s.rooms.sessions_view();
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
        "wzp_relay_connections_open",
        "gauge",
        "QUIC connections the endpoint holds (any service, handshaking and draining included).",
    );
    let _ = writeln!(
        out,
        "wzp_relay_connections_open {}",
        s.quic.open_connections()
    );
    if let Some(h) = super::heap::stats() {
        for (name, ty, help, v) in [
            (
                "wzp_relay_heap_bytes",
                "gauge",
                "Heap bytes allocated and not freed (requested sizes; RSS is larger).",
                h.live_bytes,
            ),
            (
                "wzp_relay_heap_allocations",
                "gauge",
                "Heap allocations not freed.",
                h.live_allocations,
            ),
            (
                "wzp_relay_heap_allocations_total",
                "counter",
                "Heap allocations made (reallocations not counted).",
                h.total_allocations,
            ),
        ] {
            head(&mut out, name, ty, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }
    head(
        &mut out,
        "wzp_signal_registered",
        "gauge",
        "Fingerprints registered for direct calls on this relay.",
    );
    let people: std::collections::HashSet<&str> = signal
        .presence
        .iter()
        .map(|p| p.fingerprint.as_str())
        .collect();
    let _ = writeln!(out, "wzp_signal_registered {}", people.len());
    head(
        &mut out,
        "wzp_signal_devices",
        "gauge",
        "Devices registered for direct calls (a person's phone and laptop are two).",
    );
    let _ = writeln!(out, "wzp_signal_devices {}", signal.presence.len());
    head(
        &mut out,
        "wzp_signal_calls",
        "gauge",
        "Direct calls in the registry, by state.",
    );
    for state in ["pending", "ringing", "active"] {
        let n = signal.calls.iter().filter(|c| c.state == state).count();
        let _ = writeln!(out, "wzp_signal_calls{{state=\"{state}\"}} {n}");
    }
    let mv = &signal.mail;
    for (name, help, v) in [
        (
            "wzp_signal_voice_messages",
            "Voice messages kept for their recipients.",
            mv.messages,
        ),
        (
            "wzp_signal_voice_message_bytes",
            "Bytes of the voice messages kept.",
            mv.bytes,
        ),
        (
            "wzp_signal_message_keys",
            "People whose message key is kept (messages may be left for them).",
            mv.keys,
        ),
    ] {
        head(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {v}");
    }
    for (name, help, v) in [
        (
            "wzp_signal_voice_messages_stored_total",
            "Voice messages stored.",
            mv.counters.stored,
        ),
        (
            "wzp_signal_voice_messages_delivered_total",
            "Voice messages handed to their recipient (each fetch counts each).",
            mv.counters.delivered,
        ),
        (
            "wzp_signal_voice_messages_deleted_total",
            "Voice messages deleted by their recipient.",
            mv.counters.deleted,
        ),
        (
            "wzp_signal_voice_messages_expired_total",
            "Voice messages dropped for their age.",
            mv.counters.expired,
        ),
        (
            "wzp_signal_voice_messages_abandoned_total",
            "Voice message uploads dropped: their connection went, or they stalled.",
            mv.counters.abandoned,
        ),
    ] {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    let hc = &signal.counters;
    for (name, help, v) in [
        (
            "wzp_signal_connections_total",
            "Connections to the signal service.",
            hc.connections,
        ),
        (
            "wzp_signal_frames_total",
            "Signal frames accepted past the rate limit.",
            hc.frames,
        ),
        (
            "wzp_signal_registrations_total",
            "Successful presence registrations.",
            hc.registrations,
        ),
        (
            "wzp_signal_replaced_total",
            "Registrations that replaced an older one of the same device (or, past the device limit, the silent-longest).",
            hc.replaced,
        ),
        (
            "wzp_signal_devices_added_total",
            "Registrations of another device of a person already online.",
            hc.devices_added,
        ),
        (
            "wzp_signal_missed_calls_total",
            "Callees told that someone called while they were in another call (the caller heard busy).",
            hc.missed_calls,
        ),
        (
            "wzp_signal_calls_waiting_total",
            "Calls rung as a waiting call on the device of a person in another call (instead of busy).",
            hc.calls_waiting,
        ),
        (
            "wzp_signal_calls_kept_total",
            "Waiting calls answered keeping the call in progress on hold (the person swaps between the two).",
            hc.calls_kept,
        ),
        (
            "wzp_signal_holds_total",
            "call_hold messages passed on between the parties of a direct call (put on hold, taken back).",
            hc.holds,
        ),
        (
            "wzp_signal_voice_messages_moved_total",
            "Voice messages moved to the relay of the mesh their recipient registered on since (and gone from here).",
            hc.mail_moved,
        ),
        (
            "wzp_signal_answered_elsewhere_total",
            "Devices told that another device of theirs answered or declined the call they rang with.",
            hc.answered_elsewhere,
        ),
        (
            "wzp_signal_moved_total",
            "Signal connections whose client moved to another address (QUIC followed it).",
            hc.moved,
        ),
    ] {
        head(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {v}");
    }
    head(
        &mut out,
        "wzp_signal_mapping_probes_total",
        "counter",
        "Datagrams on the mapping port: probes answered on their client's signal connection, probes dropped (a token of no connection, or one answered 4 times), probes over the rate (2000 a second), and datagrams that are not probes.",
    );
    for (result, v) in [
        ("answered", hc.mapping_answered),
        (
            "dropped",
            hc.mapping_dropped + signal.mapping_unknown_tokens,
        ),
        ("rate_limited", signal.mapping_rate_limited),
        ("not_a_probe", signal.mapping_not_probes),
    ] {
        let _ = writeln!(
            out,
            "wzp_signal_mapping_probes_total{{result=\"{result}\"}} {v}"
        );
    }
    head(
        &mut out,
        "wzp_signal_call_transitions_total",
        "counter",
        "Direct-call state changes (a new call counts as ended -> pending).",
    );
    for (labels, v) in &signal.transitions {
        let _ = writeln!(out, "wzp_signal_call_transitions_total{{{labels}}} {v}");
    }
    head(
        &mut out,
        "wzp_signal_refusals_total",
        "counter",
        "Signal requests and connections refused, by reason.",
    );
    for (r, v) in hc.all_refusals() {
        let _ = writeln!(
            out,
            "wzp_signal_refusals_total{{reason=\"{}\"}} {v}",
            r.label()
        );
    }
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
    for (name, help, get) in [
        (
            "wzp_relay_session_frames_decoded_total",
            "Frames the session's client decoded (its own report).",
            (|v: &SessionView| v.frames_decoded) as fn(&SessionView) -> u64,
        ),
        (
            "wzp_relay_session_dred_reconstructions_total",
            "Frames the client rebuilt from Opus DRED (its own report).",
            |v: &SessionView| v.dred_reconstructions,
        ),
        (
            "wzp_relay_session_lbrr_recoveries_total",
            "Frames the client recovered from Opus in-band FEC (its own report).",
            |v: &SessionView| v.lbrr_recoveries,
        ),
        (
            "wzp_relay_session_classical_plc_total",
            "Frames the client concealed by classical PLC (its own report).",
            |v: &SessionView| v.classical_plc_invocations,
        ),
    ] {
        head(&mut out, name, "counter", help);
        for v in &sessions {
            let _ = writeln!(
                out,
                "{name}{{session=\"{}\",room=\"{}\",fingerprint=\"{}\"}} {}",
                v.handle,
                esc(&v.room),
                esc(&v.fingerprint),
                get(v)
            );
        }
    }
    for (name, help, get) in [
        (
            "wzp_relay_session_reported_loss_ratio",
            "Loss the client saw over its last report interval (0..1).",
            (|v: &SessionView| v.reported_loss_pct / 100.0) as fn(&SessionView) -> f64,
        ),
        (
            "wzp_relay_session_reported_jitter_ms",
            "The client's receive jitter buffer target (its jitter estimate).",
            |v: &SessionView| v.reported_jitter_ms as f64,
        ),
        (
            "wzp_relay_session_reported_rtt_ms",
            "Round-trip time the client measured on its connection.",
            |v: &SessionView| v.reported_rtt_ms as f64,
        ),
        (
            "wzp_relay_session_direct",
            "1 while the client says its media goes straight to its direct call's peer, not through this relay.",
            |v: &SessionView| f64::from(u8::from(v.media_path == "direct")),
        ),
    ] {
        head(&mut out, name, "gauge", help);
        for v in &sessions {
            let _ = writeln!(out, "{name}{{session=\"{}\"}} {}", v.handle, get(v));
        }
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
    federation(&mut out, &s.federation.view(), &s.media);
    out
}

/// The federation links: status and RTT per configured peer, refusals and
/// drops by reason.
fn federation(
    out: &mut String,
    v: &crate::federation::shell::FederationView,
    media: &crate::media::Media,
) {
    head(
        out,
        "wzp_federation_peer_status",
        "gauge",
        "Federation link per configured peer: 0 down, 1 handshaking, 2 up.",
    );
    for p in &v.peers {
        let _ = writeln!(
            out,
            "wzp_federation_peer_status{{peer=\"{}\"}} {}",
            esc(&p.label),
            p.status.gauge()
        );
    }
    head(
        out,
        "wzp_federation_peer_rtt_ms",
        "gauge",
        "Last round-trip time of a federation link's ping, milliseconds.",
    );
    for p in &v.peers {
        if let Some(rtt) = p.rtt {
            let _ = writeln!(
                out,
                "wzp_federation_peer_rtt_ms{{peer=\"{}\"}} {:.3}",
                esc(&p.label),
                rtt.as_secs_f64() * 1e3
            );
        }
    }
    head(
        out,
        "wzp_federation_refused_total",
        "counter",
        "Federation connections and messages refused or dropped, by reason.",
    );
    let c = &v.counters;
    for (reason, n) in [
        ("unknown_relay", c.unknown_relay),
        ("version", c.version_refused),
        ("duplicate_link", c.duplicate_link),
        ("dead_link", c.dead_links),
        ("media_stopped", c.media_stopped_links),
        ("room_not_bridged_here", c.room_not_bridged_here),
        ("room_not_bridged_by_peer", c.room_not_bridged_by_peer),
        ("path_not_from_sender", c.path_not_from_sender),
        ("loop", c.loops),
        ("garbage", c.garbage),
        ("stale_connection", c.stale_conn),
        ("unexpected", c.unexpected),
    ] {
        let _ = writeln!(
            out,
            "wzp_federation_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    head(
        out,
        "wzp_federation_calls_total",
        "counter",
        "Cross-relay call signals: offers carried, refusals and endings by reason, and paths lost and replaced.",
    );
    let c = &v.calls;
    for (event, n) in [
        ("offer_forwarded", c.offers_forwarded),
        ("offer_delivered", c.offers_delivered),
        ("loop", c.loops),
        ("hop_limit", c.hop_limit),
        ("not_found", c.not_found),
        ("refused", c.refused),
        ("unknown_call", c.unknown_call),
        ("path_not_from_sender", c.path_not_from_sender),
        ("ended_by_link", c.ended_by_link),
        ("setup_timeout", c.setup_timeouts),
        ("path_lost", c.paths_lost),
        ("reroute_sent", c.reroutes_sent),
        ("rerouted", c.rerouted),
        ("reroute_timeout", c.reroute_timeouts),
        ("reroute_refused", c.reroutes_refused),
        ("path_forwarded", c.paths_forwarded),
        ("path_dropped", c.paths_dropped),
        ("hold_forwarded", c.holds_forwarded),
        ("hold_dropped", c.holds_dropped),
        ("fork_sent", c.forks_sent),
        ("fork_unsent", c.forks_unsent),
        ("fork_cancelled", c.forks_cancelled),
        ("fork_busy", c.forks_busy),
        ("busy_ended_early", c.busy_ended_early),
    ] {
        let _ = writeln!(out, "wzp_federation_calls_total{{event=\"{event}\"}} {n}");
    }
    head(
        out,
        "wzp_federation_mail_total",
        "counter",
        "Voice-message steps between relays: key queries passed on or dropped as repeats, steps passed on along their path or handed to this relay's signal service, steps from the wrong neighbour, steps whose next link was down.",
    );
    let m = &v.mail;
    for (event, n) in [
        ("query_forwarded", m.queries_forwarded),
        ("query_dropped", m.queries_dropped),
        ("forwarded", m.forwarded),
        ("delivered", m.delivered),
        ("misrouted", m.misrouted),
        ("no_link", m.no_link),
    ] {
        let _ = writeln!(out, "wzp_federation_mail_total{{event=\"{event}\"}} {n}");
    }
    head(
        out,
        "wzp_federation_packets_forwarded_total",
        "counter",
        "Media datagrams on a federation link, per peer: received (in) and sent (out).",
    );
    for p in &v.peers {
        let (i, o) = v.packets.get(&p.id).copied().unwrap_or((0, 0));
        for (dir, n) in [("in", i), ("out", o)] {
            let _ = writeln!(
                out,
                "wzp_federation_packets_forwarded_total{{peer=\"{}\",direction=\"{dir}\"}} {n}",
                esc(&p.label)
            );
        }
    }
    let dedup = |name: &str| media.federation_counter("federation.dedup", name);
    head(
        out,
        "wzp_federation_packets_deduped_total",
        "counter",
        "Media from other relays dropped as already seen (it came over several paths).",
    );
    let _ = writeln!(
        out,
        "wzp_federation_packets_deduped_total {}",
        dedup("duplicates") + dedup("too_old")
    );
    head(
        out,
        "wzp_federation_packets_rate_limited_total",
        "counter",
        "Media from other relays dropped by the per link and room rate limit.",
    );
    let _ = writeln!(
        out,
        "wzp_federation_packets_rate_limited_total {}",
        dedup("rate_limited")
    );
    head(
        out,
        "wzp_federation_media_dropped_total",
        "counter",
        "Media from other relays dropped for another reason.",
    );
    let forward = |name: &str| media.federation_counter("federation.forward", name);
    for (reason, n) in [
        ("malformed", dedup("malformed")),
        ("bad_version", dedup("bad_version")),
        ("hop_limit", dedup("hop_limit") + forward("hop_limit")),
        ("looped", dedup("looped")),
        ("unknown_room", dedup("unknown_room")),
        ("too_large", forward("too_large")),
    ] {
        let _ = writeln!(
            out,
            "wzp_federation_media_dropped_total{{reason=\"{reason}\"}} {n}"
        );
    }
    head(
        out,
        "wzp_federation_active_rooms",
        "gauge",
        "Global rooms with participants anywhere in the mesh.",
    );
    let _ = writeln!(out, "wzp_federation_active_rooms {}", v.active_rooms);
}
