//! The mapping port under attack: a flood of forged probes (anyone can
//! send 24 bytes with a made-up token) and of junk gets no answer anywhere,
//! is counted and dropped before the signal hub, takes no share of the
//! rate real probes pass at, and a real client's test works during it.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
    let flooding = Arc::new(AtomicBool::new(true));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (attacker, flooding, sent) = (
            attacker.try_clone().unwrap(),
            flooding.clone(),
            sent.clone(),
        );
        std::thread::spawn(move || {
            let mut i = 0u32;
            while flooding.load(Ordering::Relaxed) {
                let mut token = [0u8; 16];
                token[..4].copy_from_slice(&i.to_be_bytes());
                if attacker
                    .send_to(&MappingProbe { token }.encode(), to)
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                if i % 50 == 0 {
                    let _ = attacker.send_to(b"GET / HTTP/1.1\r\n\r\n", to);
                }
                i = i.wrapping_add(1);
                // About 10 000 a second, five times the rate real probes
                // pass at: pacing the traffic, not waiting for anything (a
                // faster flood only fills the kernel's buffer, where the
                // client's probe would be lost with the rest).
                if i % 20 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            }
        })
    };
    let series = |r: &str| format!("wzp_signal_mapping_probes_total{{result=\"{r}\"}}");
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
    flood.join().unwrap();
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
