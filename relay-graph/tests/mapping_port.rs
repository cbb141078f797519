//! The mapping port under attack: a flood of forged probes (anyone can
//! send 24 bytes with a made-up token) and of junk gets no answer anywhere,
//! is counted and dropped before the signal hub, takes no share of the
//! rate real probes pass at, and a real client's test works during it.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::client_proc::client_bin;
use common::*;
use wzp_proto::mapping::MappingProbe;

#[test]
fn a_flood_of_forged_probes_is_answered_nowhere_and_a_client_is_served_during_it() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let to = relay.mapping.expect("a mapping port by default");
    assert_eq!(to.ip(), relay.quic.ip(), "on the listen address");
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    let series = |r: &str| format!("wzp_signal_mapping_probes_total{{result=\"{r}\"}}");
    let flooding = AtomicBool::new(true);
    let sent = AtomicU64::new(0);
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            // Bursts of 100 made-up probes and 2 of junk, each sent once the
            // relay has read the last (its counters say so): as fast as the
            // relay reads, several times the rate real probes pass at, and
            // never more than the socket's buffer holds, where the client's
            // probe would be lost with the rest.
            let mut i = 0u32;
            let mut datagrams = 0u64;
            while flooding.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    let mut token = [0u8; 16];
                    token[..4].copy_from_slice(&i.to_be_bytes());
                    attacker
                        .send_to(&MappingProbe { token }.encode(), to)
                        .expect("a probe sent");
                    i = i.wrapping_add(1);
                }
                for _ in 0..2 {
                    attacker
                        .send_to(b"GET / HTTP/1.1\r\n\r\n", to)
                        .expect("junk sent");
                }
                sent.fetch_add(100, Ordering::Relaxed);
                datagrams += 102;
                relay.wait("the relay read the burst", || {
                    let read = relay.metric(&series("dropped")).unwrap_or(0.0)
                        + relay.metric(&series("not_a_probe")).unwrap_or(0.0);
                    read >= datagrams as f64
                });
            }
        });
        // Well over the rate real probes pass at before the client starts.
        relay.wait_metric(&series("dropped"), |v| v > 4000.0);
        // A real client's test, in the middle of the flood.
        let out = Command::new(client_bin())
            .args(["reflect", "--nat", "--relay", &relay.quic.to_string()])
            .args(["--relay-fingerprint", &relay.fingerprint.to_string()])
            .arg("--known-relays")
            .arg(dir.path().join("known"))
            .arg("--identity")
            .arg(dir.path().join("id.seed"))
            .output()
            .expect("wzp-client runs");
        flooding.store(false, Ordering::Relaxed);
        out
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("one mapping for every destination"), "{text}");

    let dropped = relay.metric(&series("dropped")).unwrap();
    let answered = relay.metric(&series("answered")).unwrap();
    let limited = relay.metric(&series("rate_limited")).unwrap();
    let junk = relay.metric(&series("not_a_probe")).unwrap();
    eprintln!(
        "sent {}: dropped {dropped}, answered {answered}, over the rate {limited}, junk {junk}",
        sent.load(Ordering::Relaxed)
    );
    assert!((1.0..=4.0).contains(&answered), "{answered}");
    // Made-up tokens never reach the rate (or the hub).
    assert_eq!(limited, 0.0);
    assert!(junk > 0.0);
    assert!(dropped <= sent.load(Ordering::Relaxed) as f64);
    // Nothing came back to the attacker's socket.
    attacker
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        attacker.recv_from(&mut buf).is_err(),
        "the mapping port answered by UDP"
    );
}
