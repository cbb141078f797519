//! `ping` SNI: the relay completes the handshake and closes at once, so a
//! client can time the round trip.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_connections_close_promptly() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    for _ in 0..3 {
        let t = Instant::now();
        let (_ep, conn) = connect(&relay, "ping").await.expect("handshake");
        let e = tokio::time::timeout(Duration::from_secs(2), conn.closed())
            .await
            .expect("closed within 2 s");
        match e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code.into_inner(), 0);
                assert_eq!(&c.reason[..], b"pong");
            }
            other => panic!("ping closed with {other}"),
        }
        assert!(t.elapsed() < Duration::from_secs(2));
    }
    relay.wait_metric("wzp_relay_pings_total", |v| v == 3.0);
}
