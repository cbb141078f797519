//! What an operator sees: Prometheus metrics, JSON views, the debug tap and
//! the event log.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_views_tap_and_event_log_report_a_call() {
    let dir = tempdir();
    let events = dir.path().join("events.jsonl");
    let room = room_sni("watched");
    let relay = RelayProc::start_in(
        dir.path(),
        &[
            "--debug-tap",
            &room,
            "--event-log",
            events.to_str().unwrap(),
        ],
    );
    let health: serde_json::Value = serde_json::from_str(&relay.http_get("/healthz")).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["problems"], serde_json::json!([]));
    assert!(health["version"].as_str().is_some_and(|v| !v.is_empty()));
    // a and b announce themselves (a member gets media once it has been heard).
    let mut a = join_heard(&relay, &room, 1, &[]).await.unwrap();
    let b = join_heard(&relay, &room, 2, &[&a]).await.unwrap();
    let quiet = join(&relay, &room_sni("untapped"), 3).await.unwrap();
    a.wait_room_count(2).await.unwrap();
    for seq in 0..3 {
        a.send_datagram(a.packet(seq, b"tap me"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for _ in 0..3 {
        b.recv_datagram(WAIT).await.expect("b hears a");
    }
    quiet.send_datagram(quiet.packet(77, b"not tapped"));
    let _ = refused_join(&relay, "call-none", 4, "no call set up").await;
    b.conn.close(0u32.into(), b"bye");
    a.wait_room_count(1).await.unwrap();

    // Prometheus: stage timing, per-session traffic, rooms, drops.
    let text = relay.http_get("/metrics");
    for needle in [
        "# TYPE wzp_stage_busy_seconds summary",
        "wzp_stage_busy_seconds_count{graph=\"relay\",stage=\"fanout\",kind=\"sfu.fanout\"}",
        "wzp_stage_events_total{graph=\"relay\",stage=\"fanout\",name=\"forwarded\"}",
        "wzp_relay_drops_total{reason=\"malformed\"} 0",
        "wzp_relay_rooms 2",
        "wzp_relay_refused_total{reason=\"not_authorized\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let a_in = format!(
        "wzp_relay_session_packets_total{{session=\"{}\"",
        // a's handle is the first one the relay gave out.
        extract_handle(&relay, &a)
    );
    assert!(text.contains(&a_in), "{text}");
    let forwarded = relay
        .metric("wzp_stage_events_total{graph=\"relay\",stage=\"fanout\",name=\"forwarded\"}")
        .unwrap();
    assert!(forwarded >= 4.0, "3 from a + 1 from quiet, got {forwarded}");

    // JSON views.
    let stages: serde_json::Value = serde_json::from_str(&relay.http_get("/stages")).unwrap();
    let ids: Vec<&str> = stages["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    for id in ["ingress", "fanout", "egress"] {
        assert!(ids.contains(&id), "{ids:?}");
    }
    let sessions: serde_json::Value = serde_json::from_str(&relay.http_get("/sessions")).unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "a and quiet remain");
    let a_view = sessions
        .iter()
        .find(|s| s["fingerprint"] == a.fingerprint.to_string())
        .unwrap();
    assert!(a_view["packets_in"].as_u64().unwrap() >= 3);
    assert!(a_view["max_datagram_size"].as_u64().unwrap() >= 1000);
    let rooms: serde_json::Value = serde_json::from_str(&relay.http_get("/rooms")).unwrap();
    assert_eq!(rooms.as_array().unwrap().len(), 2);

    // The tap logged a's three packets in and out, and nothing of the other room.
    let deadline = Instant::now() + WAIT;
    loop {
        let log = relay.log_text();
        let taps: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("wzp_relay::tap"))
            .collect();
        let ins = taps.iter().filter(|l| l.contains("dir=\"in\"")).count();
        let outs = taps.iter().filter(|l| l.contains("dir=\"out\"")).count();
        if ins >= 3 && outs >= 3 {
            assert!(
                taps.iter().all(|l| !l.contains("seq=77")),
                "untapped room was logged"
            );
            assert!(
                taps.iter()
                    .any(|l| l.contains("seq=2") && l.contains("fanout=1")),
                "{taps:#?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "tap lines missing:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Event log: three joins, one refusal, one leave, each a JSON object.
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let evs: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        let n = |k: &str| evs.iter().filter(|e| e["event"] == k).count();
        if n("join") == 3 && n("refused") == 1 && n("leave") == 1 {
            let leave = evs.iter().find(|e| e["event"] == "leave").unwrap();
            assert_eq!(leave["fingerprint"], fingerprint(2).to_string());
            assert_eq!(leave["members"], 1);
            let refused = evs.iter().find(|e| e["event"] == "refused").unwrap();
            assert!(refused["reason"]
                .as_str()
                .unwrap()
                .contains("not_authorized"));
            break;
        }
        assert!(Instant::now() < deadline, "events so far:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn extract_handle(relay: &RelayProc, c: &Client) -> u64 {
    let sessions: serde_json::Value = serde_json::from_str(&relay.http_get("/sessions")).unwrap();
    sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["fingerprint"] == c.fingerprint.to_string())
        .unwrap()["handle"]
        .as_u64()
        .unwrap()
}
