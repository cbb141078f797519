//! Attacks on room admission, by a hand-written quinn client that shares no
//! join code with wzp-client: it writes the signal frames itself
//! (`u32` big-endian length + JSON) and reads only the close it gets.
//!
//! - a stranger who knows a room's server name (it travels in clear) but
//!   not its secret is refused, with a reason that says the room needs it;
//! - a member's Join, captured and replayed on another connection, is
//!   refused (the proof signs the first connection's nonce);
//! - each refusal is counted as `not_authorized`.

mod common;

use common::*;
use wzp_proto::close::CloseCode;
use wzp_proto::join::Join;
use wzp_stages::net::quic;

/// One signal frame as the wire has it: length (u32 BE) then JSON.
fn frame(json: &serde_json::Value) -> Vec<u8> {
    let body = serde_json::to_vec(json).unwrap();
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&body);
    f
}

fn hello() -> Vec<u8> {
    frame(&serde_json::json!({"type": "hello", "version": 1}))
}

fn join_frame(j: &Join) -> Vec<u8> {
    let mut v = serde_json::to_value(j).unwrap();
    v["type"] = "join".into();
    frame(&v)
}

/// Connects to `sni`, writes `bytes` on a fresh stream and returns the
/// connection's close (code and reason).
async fn attempt(relay: &RelayProc, sni: &str, bytes: &[u8]) -> (Option<CloseCode>, String) {
    let (_ep, conn) = connect(relay, sni).await.expect("the handshake succeeds");
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let e = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("the relay closes the connection");
    match quic::peer_close(&e) {
        Some((code, reason)) => (Some(code), reason),
        None => (None, e.to_string()),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_with_only_the_sni_is_refused_with_the_reason() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let sni = room_sni("members only");
    let member = join(&relay, &sni, 1).await.expect("a member is admitted");

    // A stranger signs a perfectly good Join with its own identity: no proof.
    let stranger = identity(66);
    let j = Join::signed(&stranger, &sni, &relay.fingerprint, None, now_ms());
    let (code, reason) = attempt(&relay, &sni, &[hello(), join_frame(&j)].concat()).await;
    assert_eq!(code, Some(CloseCode::NotAuthorized), "{reason}");
    assert!(reason.contains("needs its secret"), "{reason}");

    // A proof by a key the stranger made up hashes to another server name.
    let made_up = wzp_proto::join::RoomAdmissionKey::derive(b"a guessed room secret!", "guess");
    let nonce = [0u8; wzp_proto::join::JOIN_NONCE_LEN];
    let j = Join::signed(&stranger, &sni, &relay.fingerprint, None, now_ms()).with_room_proof(
        &made_up,
        &nonce,
        &relay.fingerprint,
    );
    let (code, reason) = attempt(&relay, &sni, &[hello(), join_frame(&j)].concat()).await;
    assert_eq!(code, Some(CloseCode::NotAuthorized), "{reason}");
    assert!(reason.contains("needs its secret"), "{reason}");

    relay.wait_metric("wzp_relay_refused_total{reason=\"not_authorized\"}", |v| {
        v >= 2.0
    });
    assert!(
        member.conn.close_reason().is_none(),
        "the member stays in the room"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_join_replayed_on_another_connection_is_refused() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let name = "replayed";
    let sni = room_sni(name);

    // The member's own connection: its Join proves the room key over this
    // connection's nonce, and the relay admits it.
    let (_ep, conn) = connect(&relay, &sni).await.unwrap();
    let nonce = quic::join_nonce(&conn).expect("the TLS session exports a nonce");
    let j = Join::signed(&identity(1), &sni, &relay.fingerprint, None, now_ms()).with_room_proof(
        &room_key(name),
        &nonce,
        &relay.fingerprint,
    );
    let captured = [hello(), join_frame(&j)].concat();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&captured).await.unwrap();
    let mut reader = wzp_stages::net::signal_stream::SignalReader::new(recv, 1 << 20);
    let admitted = tokio::time::timeout(WAIT, async {
        while let Ok(Some(f)) = reader.next().await {
            if let wzp_stages::net::signal_stream::SignalFrame::Message(
                wzp_proto::signal::Decoded::Message(wzp_proto::signal::SignalMessage::RoomUpdate {
                    count,
                    ..
                }),
            ) = f
            {
                return count == 1;
            }
        }
        false
    })
    .await;
    assert_eq!(admitted, Ok(true), "the member is admitted");

    // The same bytes, replayed by an observer on its own connection: the
    // nonce differs, so the proof does not verify.
    let (code, reason) = attempt(&relay, &sni, &captured).await;
    assert_eq!(code, Some(CloseCode::NotAuthorized), "{reason}");
    assert!(reason.contains("room proof does not verify"), "{reason}");
    assert!(reason.contains("needs its secret"), "{reason}");
    relay.wait_metric("wzp_relay_refused_total{reason=\"not_authorized\"}", |v| {
        v >= 1.0
    });
    assert!(
        conn.close_reason().is_none(),
        "the member stays in the room"
    );
}
