//! The relay's HTTP endpoint: Prometheus `/metrics` ([`super::prometheus`]),
//! `/healthz`, and JSON `/rooms`, `/sessions`, `/stages`, `/presence`,
//! `/calls`, `/peers` (federation links), `/config` (the settings in force).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::endpoint::Services;

/// Binds the metrics address; returns the bound address and the server task.
pub async fn serve(
    services: Arc<Services>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/rooms", get(rooms))
        .route("/sessions", get(sessions))
        .route("/stages", get(stages))
        .route("/presence", get(presence))
        .route("/presence/{fingerprint}", get(presence_of))
        .route("/calls", get(calls))
        .route("/peers", get(peers))
        .route("/config", get(config))
        .route("/route/{fingerprint}", get(route_of))
        .with_state(services.clone());
    let listener = super::bounded::BoundedListener::new(listener, services.counters.http.clone());
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok((local, task))
}

/// For a load balancer or a supervisor: 200 and `"status": "ok"` while
/// every forwarding shard and the federation hub run, else 503 and
/// `"status": "failing"` with what stopped (the relay then needs a restart).
async fn healthz(State(s): State<Arc<Services>>) -> axum::response::Response {
    let mut problems = Vec::new();
    if let Some(i) = s.media.stopped_shard() {
        problems.push(format!("media forwarding shard {i} stopped"));
    }
    if !s.federation.is_running() {
        problems.push("the federation hub stopped".to_string());
    }
    let code = if problems.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if problems.is_empty() { "ok" } else { "failing" },
        "problems": problems,
        "version": crate::endpoint::version_string(),
        "uptime_s": s.started.elapsed().as_secs(),
        "connections": s.quic.open_connections(),
    });
    (code, Json(body)).into_response()
}

/// The settings in force, reloads included, and those of the file that
/// wait for a restart ([`crate::reload::in_force`]).
async fn config(State(s): State<Arc<Services>>) -> impl IntoResponse {
    Json(crate::reload::view(&s))
}

/// Where a user is registered, as the federation sees it: `local`, `peer`
/// (a linked relay), `via` (the relays in between, next hop first), or
/// `not_found`. 400 for a malformed fingerprint.
async fn route_of(
    State(s): State<Arc<Services>>,
    axum::extract::Path(fp): axum::extract::Path<String>,
) -> axum::response::Response {
    let fingerprint = match fp.parse::<wzp_proto::Fingerprint>() {
        Ok(f) => f,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                format!("{fp:?} is not a fingerprint: {e}\n"),
            )
                .into_response()
        }
    };
    // Shown as the relay writes fingerprints everywhere else, whatever form
    // the request used.
    let fp = fingerprint.to_string();
    use crate::federation::Route;
    let body = match s.federation.route(fingerprint).await {
        Route::Local => serde_json::json!({ "fingerprint": fp, "route": "local" }),
        Route::DirectPeer(id) => {
            serde_json::json!({ "fingerprint": fp, "route": "peer", "via": [id.to_string()] })
        }
        Route::Via(path) => serde_json::json!({
            "fingerprint": fp,
            "route": "via",
            "via": path.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        }),
        Route::NotFound => serde_json::json!({ "fingerprint": fp, "route": "not_found" }),
    };
    // Every relay they are on (a call rings each), with its label when a
    // linked peer's.
    let view = s.federation.view();
    let relays: Vec<serde_json::Value> = s
        .federation
        .origins(fingerprint)
        .await
        .into_iter()
        .map(|r| {
            let label = if r == view.id {
                Some("local".to_string())
            } else {
                view.peers
                    .iter()
                    .find(|p| p.id == r)
                    .map(|p| p.label.clone())
            };
            serde_json::json!({ "id": r.to_string(), "label": label })
        })
        .collect();
    let mut body = body;
    if let Some(o) = body.as_object_mut() {
        o.insert("relays".into(), relays.into());
    }
    Json(body).into_response()
}

/// The federation links, one row per configured peer.
async fn peers(State(s): State<Arc<Services>>) -> impl IntoResponse {
    // Calls whose path crosses each link (what moves, or ends, if it goes).
    let mut calls: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for l in s.federation.legs().await {
        for n in [l.toward_caller, l.toward_callee].into_iter().flatten() {
            *calls.entry(n).or_default() += 1;
        }
    }
    let v = s.federation.view();
    let peers: Vec<_> = v
        .peers
        .iter()
        .map(|p| {
            serde_json::json!({
                "label": p.label,
                "own_label": p.own_label,
                "id": p.id.to_string(),
                "fingerprint": p.tls.to_string(),
                "address": p.address,
                "status": p.status.name(),
                "version": p.version,
                "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1e3),
                "rooms": p.rooms,
                "messages_in": p.messages_in,
                "messages_out": p.messages_out,
                "packets_in": v.packets.get(&p.id).map_or(0, |x| x.0),
                "packets_out": v.packets.get(&p.id).map_or(0, |x| x.1),
                "calls": calls.get(&p.label).copied().unwrap_or(0),
            })
        })
        .collect();
    Json(serde_json::json!({ "id": v.id.to_string(), "peers": peers }))
}

async fn rooms(State(s): State<Arc<Services>>) -> impl IntoResponse {
    Json(s.rooms.rooms_view())
}

async fn sessions(State(s): State<Arc<Services>>) -> impl IntoResponse {
    Json(s.rooms.sessions_view())
}

/// Every fingerprint this relay knows a route to: its own registrations
/// (`"relay": "local"`), then users on other relays with the relay they are
/// on (its id and, for a direct peer, its label).
async fn presence(State(s): State<Arc<Services>>) -> impl IntoResponse {
    let mut v = s.signal.views().await.presence;
    v.sort_by(|a, b| (&a.fingerprint, a.since).cmp(&(&b.fingerprint, b.since)));
    let mut out: Vec<serde_json::Value> = v
        .iter()
        .map(|p| {
            let mut j = serde_json::to_value(p).unwrap_or_default();
            if let Some(o) = j.as_object_mut() {
                o.insert("relay".into(), "local".into());
            }
            j
        })
        .collect();
    let view = s.federation.view();
    for (fp, relay) in s.federation.presence().await {
        if relay == view.id {
            continue;
        }
        let label = view
            .peers
            .iter()
            .find(|p| p.id == relay)
            .map(|p| p.label.clone());
        out.push(serde_json::json!({
            "fingerprint": fp.to_string(),
            "relay": relay.to_string(),
            "relay_label": label,
        }));
    }
    Json(out)
}

/// One fingerprint's registration (its newest device's, with `devices`
/// listing each), in any accepted fingerprint form; 404
/// when it is not online here, 400 when it is not a fingerprint.
async fn presence_of(
    State(s): State<Arc<Services>>,
    axum::extract::Path(fp): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::http::StatusCode;
    let fp: wzp_proto::Fingerprint = match fp.parse() {
        Ok(f) => f,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("{fp:?} is not a fingerprint: {e}\n"),
            )
                .into_response()
        }
    };
    let want = fp.to_string();
    let mut devices: Vec<_> = s
        .signal
        .views()
        .await
        .presence
        .into_iter()
        .filter(|p| p.fingerprint == want)
        .collect();
    devices.sort_by_key(|p| p.since);
    // The newest registration, as before devices, with every device of the
    // person listed (oldest first).
    match devices.last() {
        Some(p) => {
            let mut j = serde_json::to_value(p).unwrap_or_default();
            if let Some(o) = j.as_object_mut() {
                o.insert(
                    "devices".into(),
                    serde_json::to_value(&devices).unwrap_or_default(),
                );
            }
            Json(j).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            format!("{want} is not online on this relay\n"),
        )
            .into_response(),
    }
}

async fn calls(State(s): State<Arc<Services>>) -> impl IntoResponse {
    let calls = s.signal.views().await.calls;
    let mut v = crate::signal::service::CallView::with_legs(calls, s.federation.legs().await);
    v.sort_by(|a, b| a.call_id.cmp(&b.call_id));
    Json(v)
}

async fn stages(State(s): State<Arc<Services>>) -> impl IntoResponse {
    // One report per forwarding shard, plus every shard's stages in one
    // list (each report names its graph: `relay`, or `relay-N` per shard).
    let reports: Vec<_> = s
        .media
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

async fn metrics(State(s): State<Arc<Services>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::prometheus::render(&s, &s.signal.views().await),
    )
}
