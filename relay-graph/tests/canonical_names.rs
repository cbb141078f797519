//! Only the canonical form of a server name is admitted: an UPPER-CASE room
//! id (which rustls would lower-case into the member's room) fails the
//! handshake with a reason, and is counted as `unknown_sni`.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upper_case_room_id_is_refused_with_a_reason() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let sni = room_sni("canonical");
    let member = join(&relay, &sni, 1)
        .await
        .expect("the canonical name joins");

    let upper = sni.to_uppercase();
    assert_ne!(upper, sni, "the room id has letters to raise");
    let e = match connect(&relay, &upper).await {
        Ok(_) => panic!("the handshake for {upper} succeeded"),
        Err(e) => e,
    };
    let text = match &e {
        quinn::ConnectionError::ConnectionClosed(c) => {
            String::from_utf8_lossy(&c.reason).to_string()
        }
        other => panic!("expected a transport close with a reason, got {other}"),
    };
    assert!(text.contains("non-canonical server name"), "{text}");
    assert!(text.contains("lower case"), "{text}");
    relay.wait_metric("wzp_relay_refused_total{reason=\"unknown_sni\"}", |v| {
        v >= 1.0
    });
    assert!(member.conn.close_reason().is_none(), "the member stays");
    assert!(relay.log_text().contains("non-canonical server name"));
}
