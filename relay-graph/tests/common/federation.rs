//! Federated relays for tests: identities made with `wzp-relay
//! fingerprint`, configs written with each other's fingerprints and
//! addresses, relays started in an order that lets every dialer know its
//! peer's address, and waits on link status and log lines.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use wzp_proto::TlsFingerprint;

use super::{RelayProc, WAIT};

/// `wzp-relay fingerprint -i FILE`: creates the identity, prints its
/// fingerprint.
pub fn fingerprint_of(seed: &Path) -> TlsFingerprint {
    let out = Command::new(env!("CARGO_BIN_EXE_wzp-relay"))
        .args(["fingerprint", "-i"])
        .arg(seed)
        .output()
        .expect("wzp-relay fingerprint runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .expect("a fingerprint on its own line")
}

/// Starts relay `name` in `dir` with `config` (TOML) as its config file.
pub fn relay(dir: &Path, name: &str, config: &str) -> RelayProc {
    std::fs::write(dir.join(format!("{name}.toml")), config).unwrap();
    relay_on(dir, name, "127.0.0.1:0")
}

/// Starts relay `name` from its config and identity in `dir`, on `listen`
/// (a restarted relay: same identity, same config).
pub fn relay_on(dir: &Path, name: &str, listen: &str) -> RelayProc {
    let cfg = dir.join(format!("{name}.toml"));
    let seed = dir.join(format!("{name}.seed"));
    RelayProc::start(&[
        "-c",
        cfg.to_str().unwrap(),
        "-i",
        seed.to_str().unwrap(),
        "--listen",
        listen,
        "--metrics-addr",
        "127.0.0.1:0",
        "--label",
        name,
    ])
}

pub fn status(r: &RelayProc, peer: &str) -> Option<f64> {
    r.metric(&format!("wzp_federation_peer_status{{peer=\"{peer}\"}}"))
}

/// Waits until `r`'s link to `peer` has status `want` (0 down, 2 up).
pub fn wait_status(r: &RelayProc, peer: &str, want: f64) -> Duration {
    let start = Instant::now();
    r.wait_metric(
        &format!("wzp_federation_peer_status{{peer=\"{peer}\"}}"),
        |v| v == want,
    );
    start.elapsed()
}

/// Waits until `r`'s log holds a line containing every one of `parts`.
pub fn wait_log(r: &RelayProc, parts: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = r.log_text();
        if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}; log:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The participants a RoomUpdate lists: (fingerprint, relay label).
pub fn roster(
    m: &wzp_proto::signal::SignalMessage,
) -> Vec<(wzp_proto::Fingerprint, Option<String>)> {
    match m {
        wzp_proto::signal::SignalMessage::RoomUpdate { participants, .. } => participants
            .iter()
            .map(|p| (p.fingerprint, p.relay_label.clone()))
            .collect(),
        other => panic!("not a RoomUpdate: {other:?}"),
    }
}

/// Relays linked as a test asks: `links` are (dialer, acceptor) pairs of
/// relay names; the dialer lists the acceptor in `[[peers]]` (with its
/// address), the acceptor lists the dialer in `[[trusted]]`. Every relay
/// also gets `shared` (e.g. its `[[global_rooms]]`).
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub relays: BTreeMap<String, RelayProc>,
    pub links: Vec<(String, String)>,
}

impl Mesh {
    /// Writes identities and configs and starts every relay, each after the
    /// relays it dials (so their addresses are known); waits until every
    /// link is up at both ends.
    pub fn start(names: &[&str], links: &[(&str, &str)], shared: &str) -> Mesh {
        let dir = super::tempdir();
        let fps: BTreeMap<&str, TlsFingerprint> = names
            .iter()
            .map(|n| (*n, fingerprint_of(&dir.path().join(format!("{n}.seed")))))
            .collect();
        let mut relays: BTreeMap<String, RelayProc> = BTreeMap::new();
        while relays.len() < names.len() {
            let ready = names.iter().find(|n| {
                !relays.contains_key(**n)
                    && links
                        .iter()
                        .filter(|(d, _)| d == *n)
                        .all(|(_, a)| relays.contains_key(*a))
            });
            let name = *ready.expect("the links have no cycle of dialers");
            let mut config = String::new();
            for (d, a) in links {
                if *d == name {
                    let peer = &relays[*a];
                    config.push_str(&format!(
                        "[[peers]]\naddress = \"{}\"\nfingerprint = \"{}\"\nlabel = \"{a}\"\n\n",
                        peer.quic, peer.fingerprint
                    ));
                } else if *a == name {
                    config.push_str(&format!(
                        "[[trusted]]\nfingerprint = \"{}\"\nlabel = \"{d}\"\n\n",
                        fps[d]
                    ));
                }
            }
            config.push_str(shared);
            let r = relay(dir.path(), name, &config);
            assert_eq!(
                r.fingerprint, fps[name],
                "the printed fingerprint is the relay's"
            );
            relays.insert(name.to_string(), r);
        }
        let mesh = Mesh {
            dir,
            relays,
            links: links
                .iter()
                .map(|(d, a)| (d.to_string(), a.to_string()))
                .collect(),
        };
        mesh.wait_links_up();
        mesh
    }

    pub fn relay(&self, name: &str) -> &RelayProc {
        &self.relays[name]
    }

    /// Waits until every link is up at both ends.
    pub fn wait_links_up(&self) {
        for (d, a) in &self.links {
            wait_status(&self.relays[d], a, 2.0);
            wait_status(&self.relays[a], d, 2.0);
        }
    }

    /// Kills relay `name` (SIGKILL); its address, to restart it on.
    pub fn kill(&mut self, name: &str) -> std::net::SocketAddr {
        let r = self.relays.get_mut(name).unwrap();
        r.kill();
        r.quic
    }

    /// Starts relay `name` again from its identity and config, on the
    /// address it had; returns once it printed its `listening` line.
    pub fn restart(&mut self, name: &str) -> &RelayProc {
        let addr = self.relays[name].quic.to_string();
        let r = relay_on(self.dir.path(), name, &addr);
        self.relays.insert(name.to_string(), r);
        &self.relays[name]
    }
}

/// The `[[global_rooms]]` entry for a room joined by server name `sni`.
pub fn global_room(sni: &str) -> String {
    format!("[[global_rooms]]\nname = \"{sni}\"\n")
}
