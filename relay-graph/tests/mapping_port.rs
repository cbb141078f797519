//! The mapping port under attack: a flood of forged probes (anyone can
//! send 24 bytes with a made-up token) and of junk gets no answer anywhere,
//! is counted, and reaches the signal hub only up to its rate; a real
//! client's test still works during it.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Instant;

use common::client_proc::client_bin;
use common::*;
use wzp_proto::mapping::MappingProbe;

#[test]
fn a_flood_of_forged_probes_is_answered_nowhere_bounded_and_a_client_is_still_served() {
    let dir = tempdir();
    let relay = RelayProc::start_in(dir.path(), &[]);
    let to = relay.mapping.expect("a mapping port by default");
    assert_eq!(to.ip(), relay.quic.ip(), "on the listen address");
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    for i in 0..20_000u32 {
        let mut token = [0u8; 16];
        token[..4].copy_from_slice(&i.to_be_bytes());
        if attacker
            .send_to(&MappingProbe { token }.encode(), to)
            .is_ok()
        {
            sent += 1;
        }
        if i % 50 == 0 {
            let _ = attacker.send_to(b"GET / HTTP/1.1\r\n\r\n", to);
        }
    }
    let series = |r: &str| format!("wzp_signal_mapping_probes_total{{result=\"{r}\"}}");
    relay.wait_metric(&series("not_a_probe"), |v| v > 0.0);
    relay.wait_metric(&series("dropped"), |v| v > 0.0);
    let dropped = relay.metric(&series("dropped")).unwrap();
    let limited = relay.metric(&series("rate_limited")).unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("sent {sent}: dropped {dropped}, over the rate {limited}, in {secs:.2} s");
    assert_eq!(relay.metric(&series("answered")), Some(0.0));
    assert!(
        dropped + limited <= sent as f64,
        "{dropped} + {limited} of {sent}"
    );
    // The hub took at most the rate's burst and what the seconds refilled.
    assert!(
        dropped <= 2000.0 * (secs + 1.0),
        "{dropped} forged probes reached the hub in {secs:.1} s"
    );
    // Nothing came back to the attacker's socket.
    attacker.set_nonblocking(false).unwrap();
    attacker
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        attacker.recv_from(&mut buf).is_err(),
        "the mapping port answered by UDP"
    );

    // A real client's test: answered on its own connection.
    let out = Command::new(client_bin())
        .args(["reflect", "--nat", "--relay", &relay.quic.to_string()])
        .args(["--relay-fingerprint", &relay.fingerprint.to_string()])
        .arg("--known-relays")
        .arg(dir.path().join("known"))
        .arg("--identity")
        .arg(dir.path().join("id.seed"))
        .output()
        .expect("wzp-client runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("one mapping for every destination"), "{text}");
    assert!(relay.metric(&series("answered")).unwrap() >= 1.0);
}
