//! A client never plays its own voice sent back to it. A relay that turns
//! against its clients (here a hand-written quinn server holding a relay
//! certificate, sharing no code with wzp-relay) admits the client and
//! returns every datagram the client sends, unchanged, as a replaying
//! member would if the relay let it. The client's `crypto.open` drops them
//! all as its own (`own_sender`) before they reach the decoder: nothing is
//! opened and its recording holds no trace of its own tone.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wzp_proto::signal::{Decoded, RoomParticipant, SignalMessage};
use wzp_proto::Seed;
use wzp_stages::audio::signal::{goertzel_dbfs, rms_dbfs};
use wzp_stages::audio::wav_source::read_wav_mono;
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader};

const WAIT: Duration = Duration::from_secs(20);

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wzp-echo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Admits one client (Hello, then a RoomUpdate listing the Join's
/// identity) and echoes its datagrams; counts them in `echoed`.
async fn echoing_relay(endpoint: quinn::Endpoint, echoed: Arc<AtomicU64>) {
    let Some(incoming) = endpoint.accept().await else {
        return;
    };
    let Ok(conn) = incoming.await else {
        return;
    };
    let Ok((mut send, recv)) = conn.accept_bi().await else {
        return;
    };
    let mut reader = SignalReader::new(recv, 1 << 20);
    let _ =
        signal_stream::write_message(&mut send, &SignalMessage::hello(Some("echo".into()))).await;
    let join = loop {
        match reader.next().await {
            Ok(Some(SignalFrame::Message(Decoded::Message(SignalMessage::Join(j))))) => break j,
            Ok(Some(_)) => continue,
            _ => return,
        }
    };
    let update = SignalMessage::RoomUpdate {
        room: None,
        count: 1,
        participants: vec![RoomParticipant {
            alias: join.alias.clone(),
            ..RoomParticipant::new(join.fingerprint())
        }],
        bridged: false,
    };
    let _ = signal_stream::write_message(&mut send, &update).await;
    // Keep reading the signal stream so the client's reports never block.
    tokio::spawn(async move { while let Ok(Some(_)) = reader.next().await {} });
    while let Ok(d) = conn.read_datagram().await {
        if conn.send_datagram(d).is_ok() {
            echoed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn a_client_drops_its_own_packets_sent_back_to_it() {
    let dir = tmp("own");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cert = Seed::from_bytes([0x5e; 32]).relay_certificate().unwrap();
    let fingerprint = cert.tls_fingerprint().to_string();
    let echoed = Arc::new(AtomicU64::new(0));
    let addr = {
        let _g = rt.enter();
        let endpoint = quic::server_endpoint("127.0.0.1:0".parse().unwrap(), &cert).unwrap();
        let addr = endpoint.local_addr().unwrap();
        rt.spawn(echoing_relay(endpoint, echoed.clone()));
        addr
    };

    let stats = dir.join("c.json");
    let wav = dir.join("c.wav");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wzp-client"))
        .args(["join", "--relay", &addr.to_string(), "--room", "echo"])
        .args(["--room-secret", "a secret only the members hold"])
        .args(["--input", "tone:440", "--output"])
        .arg(&wav)
        .arg("--identity")
        .arg(dir.join("c.seed"))
        .arg("--known-relays")
        .arg(dir.join("c.known"))
        .args(["--relay-fingerprint", &fingerprint])
        .args([
            "--duration",
            "3s",
            "--quiet",
            "--no-realtime",
            "--stats-json",
        ])
        .arg(&stats)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the client did not finish its 3 s call within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "client exit {status}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    let counter = |stage: &str, key: &str| -> u64 {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == stage)
            .unwrap_or_else(|| panic!("no stage {stage}"))["counters"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {stage}/{key}"))
    };
    let echoed = echoed.load(Ordering::Relaxed);
    let own = counter("open", "own_sender");
    println!("echoed {echoed} datagrams; open dropped {own} as own_sender");
    assert!(echoed > 50, "the relay echoed {echoed} datagrams");
    assert!(own > 50, "own_sender {own} of {echoed} echoed");
    assert_eq!(counter("open", "opened"), 0, "nothing was opened");
    let w = read_wav_mono(&wav).unwrap();
    let level = rms_dbfs(&w.samples);
    let tone = goertzel_dbfs(&w.samples, w.rate, 440.0);
    assert!(
        level < -60.0 && tone < -60.0,
        "the recording holds the client's own voice: {level} dBFS, 440 Hz at {tone} dBFS"
    );
    rt.shutdown_timeout(Duration::from_millis(200));
    let _ = std::fs::remove_dir_all(dir);
}
