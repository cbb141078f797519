//! `call-*` rooms hold the two allow-listed participants and nobody else.

mod common;

use common::*;
use wzp_proto::close::CloseCode;

fn call_config(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = dir.join("relay.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[calls]]\nroom = \"call-t1\"\nfingerprints = [\"{}\", \"{}\"]\n",
            fingerprint(1),
            fingerprint(2)
        ),
    )
    .unwrap();
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_is_refused_with_a_reason() {
    let dir = tempdir();
    let cfg = call_config(dir.path());
    let relay = RelayProc::start_in(dir.path(), &["-c", cfg.to_str().unwrap()]);
    let mut alice = join_heard(&relay, "call-t1", 1, &[])
        .await
        .expect("alice is allowed");
    let bob = join_heard(&relay, "call-t1", 2, &[&alice])
        .await
        .expect("bob is allowed");
    alice.wait_room_count(2).await.unwrap();

    let mallory = refused_join(&relay, "call-t1", 3, "mallory refused").await;
    assert_eq!(mallory.code, Some(CloseCode::NotAuthorized), "{mallory:?}");
    assert!(mallory.reason.contains("not authorized"), "{mallory:?}");

    // Even an allowed fingerprint cannot make a third member.
    let alice2 = refused_join(&relay, "call-t1", 1, "room full").await;
    assert_eq!(alice2.code, Some(CloseCode::RoomFull), "{alice2:?}");
    assert!(alice2.reason.contains("full"), "{alice2:?}");

    // A call room nobody set up is refused too.
    let stray = refused_join(&relay, "call-nobody", 1, "no such call").await;
    assert_eq!(stray.code, Some(CloseCode::NotAuthorized));

    // The two still talk.
    alice.send_datagram(alice.packet(1, b"hi bob"));
    let d = bob.recv_datagram(WAIT).await.expect("bob hears alice");
    assert_eq!(&d[..], &alice.packet(1, b"hi bob")[..]);
    relay.wait_metric("wzp_relay_refused_total{reason=\"not_authorized\"}", |v| {
        v == 2.0
    });
    relay.wait_metric("wzp_relay_refused_total{reason=\"room_full\"}", |v| {
        v == 1.0
    });

    // When bob leaves, alice's second device may take the seat.
    bob.conn.close(0u32.into(), b"bye");
    alice.wait_room_count(1).await.unwrap();
    join(&relay, "call-t1", 1).await.expect("a free seat again");
}
