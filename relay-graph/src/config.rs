//! The relay's configuration file (TOML) and command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wzp_proto::Fingerprint;

/// Everything a relay reads from its config file. Every field has a default,
/// so an empty file is a valid config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP address the QUIC endpoint listens on.
    pub listen: SocketAddr,
    /// HTTP address of `/metrics`, `/rooms`, `/sessions`, `/stages`; absent
    /// turns the HTTP server off.
    pub metrics_addr: Option<SocketAddr>,
    /// Seed file of the relay identity (created on first run, mode 0600).
    /// Relative paths are relative to the config file's folder.
    pub identity: Option<PathBuf>,
    /// Name of this relay shown to clients (`relay_label` in room updates) and
    /// in the `[[peers]]` snippet.
    pub label: String,
    /// Address other relays and clients should dial, for the printed
    /// `[[peers]]` snippet (defaults to the bound address, or to the
    /// outbound interface's address when bound to a wildcard; see
    /// [`crate::dial`]).
    pub public_addr: Option<String>,
    /// Connections the relay serves at once (1..=65536).
    pub max_peers: usize,
    /// Rooms with members at once (1..=65536).
    pub max_rooms: usize,
    /// Members of a `call-*` room (direct calls are two people; 2..=1024).
    pub call_room_size: usize,
    /// Media forwarding shards; each room is forwarded by one, chosen by its
    /// hash (1..=64; 0 = one per CPU core; default 1). A shard is a task on
    /// the I/O runtime, so shards share the `io_threads`.
    pub shards: usize,
    /// Threads of the I/O runtime that runs QUIC, handshakes and the
    /// shards' forwarding tasks (1..=64; 0 = one per CPU core; default 0).
    pub io_threads: usize,
    /// Hold a busy receiver's datagrams up to this long (0..=20000 µs) so
    /// they leave together in one QUIC packet: fewer UDP sends per forwarded
    /// packet. Only receivers expected to get two more datagrams within the
    /// window are held (never a two-person call); 0 turns it off. Default
    /// 5000.
    pub egress_coalesce_us: u64,
    /// How long a client has, after the QUIC handshake, to send Hello and
    /// Join ([`JOIN_TIMEOUT_MS`]).
    pub join_timeout_ms: u64,
    /// How far a Join's timestamp may be from the relay's clock
    /// ([`JOIN_MAX_SKEW_S`]).
    pub join_max_skew_s: u64,
    /// How long a direct call may ring unanswered (1..=600 s).
    pub ringing_timeout_s: u64,
    /// Log every media header of this room hash, or of every room with `*`.
    pub debug_tap: Option<String>,
    /// Append join/leave/refused events as JSON lines to this file.
    pub event_log: Option<PathBuf>,
    /// Graph file to run instead of the built-in `graphs/relay.toml`.
    pub graph: Option<PathBuf>,
    /// Direct-call rooms and the two fingerprints allowed in each.
    pub calls: Vec<CallEntry>,
    /// Other relays (federation; read and listed, not dialed yet).
    pub peers: Vec<PeerEntry>,
}

/// A `[[calls]]` entry: a `call-*` room and who may join it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallEntry {
    /// The room as the client's SNI names it, e.g. `call-7f3a`.
    pub room: String,
    /// Exactly the fingerprints allowed in (two for a direct call).
    pub fingerprints: Vec<Fingerprint>,
}

/// A `[[peers]]` entry: another relay.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    pub address: String,
    pub fingerprint: wzp_proto::TlsFingerprint,
    #[serde(default)]
    pub label: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:4433".parse().expect("literal address"),
            metrics_addr: None,
            identity: None,
            label: "relay".into(),
            public_addr: None,
            max_peers: 1024,
            max_rooms: 256,
            call_room_size: 2,
            shards: 1,
            io_threads: 0,
            egress_coalesce_us: 5000,
            join_timeout_ms: 10_000,
            join_max_skew_s: 600,
            ringing_timeout_s: 30,
            debug_tap: None,
            event_log: None,
            graph: None,
            calls: Vec::new(),
            peers: Vec::new(),
        }
    }
}

/// Accepted `join_timeout_ms`: a client on a slow path needs a few round
/// trips after the handshake (below 500 ms nobody far away could join);
/// above a minute a silent connection holds a slot for nothing.
pub const JOIN_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 500..=60_000;
/// Accepted `join_max_skew_s`: clocks of ordinary machines drift seconds
/// apart (below 10 s honest clients are refused); the skew is also how long
/// a captured Join stays usable, so at most an hour.
pub const JOIN_MAX_SKEW_S: std::ops::RangeInclusive<u64> = 10..=3600;
/// Accepted `call_room_size`: a call needs two; 1024 is a large conference.
pub const CALL_ROOM_SIZE: std::ops::RangeInclusive<usize> = 2..=1024;
/// Accepted `shards` and `io_threads` (0 = one per core).
pub const THREADS: std::ops::RangeInclusive<usize> = 0..=64;
/// Accepted `egress_coalesce_us` (0 = send at once): beyond 20 ms the
/// holding is audible.
pub const EGRESS_COALESCE_US: std::ops::RangeInclusive<u64> = 0..=20_000;

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the example config to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The config written on first run when `-c FILE` does not exist.
pub const EXAMPLE: &str = r#"# wzp-relay configuration. Every key is optional; the values shown are the
# defaults. Command-line flags override this file. See docs/OPERATIONS.md.

# UDP address of the QUIC endpoint (clients and relays connect here).
listen = "0.0.0.0:4433"

# HTTP endpoint for /metrics (Prometheus), /rooms, /sessions, /stages.
# Leave unset to turn it off. Keep it on a private address.
# metrics_addr = "127.0.0.1:9090"

# Seed file of this relay's identity, created on first run (mode 0600).
# Its TLS fingerprint is what clients and peers pin: keep the file.
# Relative paths are relative to this file's folder.
# identity = "relay-identity.seed"

# Label shown to clients for participants on this relay, and to peers.
label = "relay"

# Address to print in the [[peers]] snippet (defaults to the bound address,
# or the outbound interface's when bound to 0.0.0.0 or [::]).
# public_addr = "relay.example.org:4433"

# Capacity: connections and rooms at once (each 1..=65536).
max_peers = 1024
max_rooms = 256

# Members allowed in a direct-call room (SNI "call-..."; 2..=1024).
call_room_size = 2

# Media forwarding shards; rooms are spread over them by hash (0..=64; 0 = one
# per core).
shards = 1

# Threads for QUIC, handshakes and forwarding (0..=64; 0 = one per core). Each shard's
# forwarding runs on these threads, next to the sockets it reads and writes.
io_threads = 0

# Hold a busy receiver's datagrams up to this many microseconds so they share
# a QUIC packet: fewer sends, up to that much more latency, only for receivers
# that get a datagram at least every egress_coalesce_us / 2 (big, busy rooms;
# never a two-person call). 0..=20000; 0 = off.
egress_coalesce_us = 5000

# Time a client has after the QUIC handshake to send Hello and Join
# (500..=60000).
join_timeout_ms = 10000
# Largest accepted difference between a Join's timestamp and this clock, in
# seconds (10..=3600); it is also how long a captured Join stays usable.
join_max_skew_s = 600

# How long a direct call rings before the caller hears "no answer" (1..=600 s).
ringing_timeout_s = 30

# Log each media header of one room (its 32-hex hash) or of all rooms ("*").
# debug_tap = "*"

# Append join/leave/refused events as JSON lines.
# event_log = "relay-events.jsonl"

# Run another graph file instead of the built-in graphs/relay.toml.
# graph = "graphs/relay.toml"

# Direct-call rooms: only these fingerprints may join the room.
# [[calls]]
# room = "call-7f3a9c"
# fingerprints = ["xxxx:xxxx:xxxx:xxxx:xxxx:xxxx:xxxx:xxxx", "yyyy:yyyy:yyyy:yyyy:yyyy:yyyy:yyyy:yyyy"]

# Other relays (federation). `wzp-relay` prints this relay's own snippet.
# [[peers]]
# address = "203.0.113.7:4433"
# fingerprint = "ab:cd:..."
# label = "relay-b"
"#;

impl Config {
    /// Parses config text; `path` is for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if let Some(dir) = path.parent() {
            for p in [&mut cfg.identity, &mut cfg.event_log, &mut cfg.graph]
                .into_iter()
                .flatten()
            {
                if p.is_relative() && !dir.as_os_str().is_empty() {
                    *p = dir.join(&*p);
                }
            }
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Reads `path`, or writes [`EXAMPLE`] there and reads that when it does
    /// not exist yet. Returns the config and whether it was just created.
    pub fn load_or_create(path: &Path) -> Result<(Config, bool), ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Config::parse(&text, path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Write {
                        path: path.to_path_buf(),
                        source,
                    })?;
                }
                std::fs::write(path, EXAMPLE).map_err(|source| ConfigError::Write {
                    path: path.to_path_buf(),
                    source,
                })?;
                Ok((Config::parse(EXAMPLE, path)?, true))
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Checks ranges and entries; says which key is wrong and what to write.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let max = wzp_stages::sfu::MAX_SLOTS;
        let ranges: [(&str, u64, u64, u64, &str); 9] = [
            ("max_peers", self.max_peers as u64, 1, max as u64, ""),
            ("max_rooms", self.max_rooms as u64, 1, max as u64, ""),
            (
                "shards",
                self.shards as u64,
                *THREADS.start() as u64,
                *THREADS.end() as u64,
                " (0 = one per core)",
            ),
            (
                "io_threads",
                self.io_threads as u64,
                *THREADS.start() as u64,
                *THREADS.end() as u64,
                " (0 = one per core)",
            ),
            (
                "egress_coalesce_us",
                self.egress_coalesce_us,
                *EGRESS_COALESCE_US.start(),
                *EGRESS_COALESCE_US.end(),
                " (0 = send at once)",
            ),
            (
                "call_room_size",
                self.call_room_size as u64,
                *CALL_ROOM_SIZE.start() as u64,
                *CALL_ROOM_SIZE.end() as u64,
                " (a direct call needs 2)",
            ),
            (
                "join_timeout_ms",
                self.join_timeout_ms,
                *JOIN_TIMEOUT_MS.start(),
                *JOIN_TIMEOUT_MS.end(),
                " (below it nobody could join in time)",
            ),
            (
                "ringing_timeout_s",
                self.ringing_timeout_s,
                1,
                600,
                " (how long a direct call rings)",
            ),
            (
                "join_max_skew_s",
                self.join_max_skew_s,
                *JOIN_MAX_SKEW_S.start(),
                *JOIN_MAX_SKEW_S.end(),
                " (below it honest clients with a drifting clock are refused)",
            ),
        ];
        for (key, value, lo, hi, why) in ranges {
            if !(lo..=hi).contains(&value) {
                return Err(bad(format!(
                    "{key} = {value} is out of range; use {lo}..={hi}{why}"
                )));
            }
        }
        if let Some(t) = &self.debug_tap {
            if t != "*" && wzp_proto::sni::classify(t) != wzp_proto::sni::Sni::Room(t.clone()) {
                return Err(bad(format!(
                    "debug_tap = {t:?}: use \"*\" or a room hash (32 lowercase hex digits, \
                     `room_hash(name)`) or a call room name"
                )));
            }
        }
        for c in &self.calls {
            if !matches!(
                wzp_proto::sni::classify(&c.room),
                wzp_proto::sni::Sni::Call(_)
            ) {
                return Err(bad(format!(
                    "[[calls]] room = {:?}: a call room is `call-` followed by up to 58 of \
                     [a-z0-9-]",
                    c.room
                )));
            }
            if c.fingerprints.is_empty() {
                return Err(bad(format!(
                    "[[calls]] room = {:?} lists no fingerprints",
                    c.room
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_the_defaults() {
        let cfg = Config::parse(EXAMPLE, Path::new("relay.toml")).unwrap();
        let d = Config::default();
        assert_eq!(cfg.listen, d.listen);
        assert_eq!(cfg.max_peers, d.max_peers);
        assert_eq!(cfg.label, d.label);
        assert_eq!(cfg.shards, d.shards);
        assert_eq!(cfg.io_threads, d.io_threads);
        assert_eq!(cfg.egress_coalesce_us, d.egress_coalesce_us);
        assert!(cfg.calls.is_empty());
    }

    #[test]
    fn bad_configs_are_refused_with_the_key() {
        let cases = [
            ("max_peers = 0", "max_peers"),
            ("max_rooms = 70000", "max_rooms"),
            ("shards = 65", "shards"),
            ("io_threads = 65", "io_threads"),
            ("io_threads = -1", "io_threads"),
            ("egress_coalesce_us = 20001", "egress_coalesce_us"),
            ("lisen = \"1.2.3.4:5\"", "lisen"),
            ("listen = \"nope\"", "listen"),
            ("debug_tap = \"lobby\"", "debug_tap"),
            (
                "[[calls]]\nroom = \"lobby\"\nfingerprints = []",
                "call room",
            ),
            (
                "[[calls]]\nroom = \"call-1\"\nfingerprints = [\"zz\"]",
                "fingerprints",
            ),
            ("call_room_size = 0", "call_room_size"),
            ("ringing_timeout_s = 0", "ringing_timeout_s"),
            ("ringing_timeout_s = 601", "1..=600"),
            (
                "call_room_size = 1",
                "call_room_size = 1 is out of range; use 2..=1024",
            ),
            ("call_room_size = 5000", "2..=1024"),
            (
                "join_timeout_ms = 0",
                "join_timeout_ms = 0 is out of range; use 500..=60000",
            ),
            ("join_timeout_ms = 499", "500..=60000"),
            ("join_timeout_ms = 3600000", "500..=60000"),
            ("join_timeout_ms = -1", "join_timeout_ms"),
            (
                "join_max_skew_s = 0",
                "join_max_skew_s = 0 is out of range; use 10..=3600",
            ),
            ("join_max_skew_s = 86400", "10..=3600"),
            ("max_peers = 65537", "use 1..=65536"),
            ("max_rooms = 0", "use 1..=65536"),
            ("egress_coalesce_us = 1000000", "use 0..=20000"),
        ];
        for (text, needle) in cases {
            let err = Config::parse(text, Path::new("r.toml")).unwrap_err();
            assert!(
                err.to_string().contains(needle),
                "{text:?}: {err} should mention {needle}"
            );
        }
    }

    #[test]
    fn the_ends_of_every_range_are_accepted() {
        for text in [
            "join_timeout_ms = 500",
            "join_timeout_ms = 60000",
            "join_max_skew_s = 10",
            "join_max_skew_s = 3600",
            "call_room_size = 2",
            "call_room_size = 1024",
            "max_peers = 1\nmax_rooms = 1",
            "max_peers = 65536\nmax_rooms = 65536",
            "shards = 0\nio_threads = 64",
            "egress_coalesce_us = 0",
            "egress_coalesce_us = 20000",
        ] {
            if let Err(e) = Config::parse(text, Path::new("r.toml")) {
                panic!("{text:?} refused: {e}");
            }
        }
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let cfg = Config::parse(
            "identity = \"id.seed\"\nevent_log = \"/abs/ev.jsonl\"",
            Path::new("/etc/wzp/relay.toml"),
        )
        .unwrap();
        assert_eq!(cfg.identity.unwrap(), Path::new("/etc/wzp/id.seed"));
        assert_eq!(cfg.event_log.unwrap(), Path::new("/abs/ev.jsonl"));
    }
}
