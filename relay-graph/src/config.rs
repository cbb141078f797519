//! The relay's configuration file (TOML) and command-line overrides.

use std::collections::{HashMap, HashSet};
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
    /// HTTP address of `/metrics`, `/healthz`, `/rooms`, `/sessions`, `/stages`,
    /// `/presence`, `/calls`, `/peers`, `/route/FP`; absent turns the HTTP
    /// server off.
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
    /// Members on this relay of any other room (0: no limit beyond
    /// `max_peers`; else 2..=65536).
    pub max_room_size: usize,
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
    /// Receive and send buffer of the relay's UDP socket, KiB each
    /// ([`UDP_BUFFER_KIB`]; 0 = the kernel's defaults). Default 8192.
    pub udp_buffer_kib: u64,
    /// How long a client has, after the QUIC handshake, to send Hello and
    /// Join ([`JOIN_TIMEOUT_MS`]).
    pub join_timeout_ms: u64,
    /// How far a Join's timestamp may be from the relay's clock
    /// ([`JOIN_MAX_SKEW_S`]).
    pub join_max_skew_s: u64,
    /// How long a direct call may ring unanswered (1..=600 s).
    pub ringing_timeout_s: u64,
    /// Memory for voice messages left for the people registered here, MiB
    /// (0..=65536; 0: none are taken). Default 64.
    pub voice_message_storage_mb: u64,
    /// Keep voice messages (and people's message keys) in this folder, so
    /// a restart loses none; absent: memory only.
    pub voice_message_dir: Option<PathBuf>,
    /// UDP port, on the listen address, answering clients' NAT mapping
    /// tests (`wzp_proto::mapping`); absent: any free port. Must differ from
    /// the listen port, and not be 0.
    pub mapping_port: Option<u16>,
    /// Whether the mapping port runs at all (default true).
    pub mapping_test: bool,
    /// Log every media header of this room (its server name: a room id or a
    /// `call-*` name), or of every room with `*`.
    pub debug_tap: Option<String>,
    /// Append join/leave/refused events as JSON lines to this file.
    pub event_log: Option<PathBuf>,
    /// Graph file to run instead of the built-in `graphs/relay.toml`.
    pub graph: Option<PathBuf>,
    /// Direct-call rooms and the two fingerprints allowed in each.
    pub calls: Vec<CallEntry>,
    /// Other relays this relay dials (federation links; also accepted when
    /// they dial in).
    pub peers: Vec<PeerEntry>,
    /// Relays accepted inbound by their TLS fingerprint, without an address.
    pub trusted: Vec<TrustedEntry>,
    /// Rooms bridged across the federation: open rooms by name, rooms with
    /// a secret by room id.
    pub global_rooms: Vec<GlobalRoomEntry>,
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

/// A `[[peers]]` entry: another relay, dialed at `address` and pinned by
/// its TLS certificate's fingerprint.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// `host:port` to dial (a name is resolved at each dial).
    pub address: String,
    /// SHA-256 of the peer's TLS certificate (`wzp-relay fingerprint`).
    pub fingerprint: wzp_proto::TlsFingerprint,
    /// The peer's name in logs, metrics and `relay_label`s.
    pub label: String,
}

/// A `[[trusted]]` entry: a relay accepted when it dials in, from any
/// address (the certificate is the identity, the address is not).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedEntry {
    /// SHA-256 of the relay's TLS certificate.
    pub fingerprint: wzp_proto::TlsFingerprint,
    /// The relay's name in logs, metrics and `relay_label`s.
    pub label: String,
}

/// A `[[global_rooms]]` entry: a room bridged across the federation,
/// matched by the server name its clients use; only that id travels between
/// relays. `name` is an open room's plain name (clients join it with no
/// `--room-secret`; its id is derived as theirs is), or, for a room with a
/// secret, the room id its clients use as server name (32 lowercase hex
/// digits; `wzp-client` prints it when joining).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalRoomEntry {
    /// An open room's name, as users type it, or a room id.
    pub name: String,
}

/// The server name clients use for global room `name`: `name` itself when
/// it is a room id (32 lowercase hex digits), else the open room's id.
pub fn global_room_sni(name: &str) -> String {
    let is_id = name.len() == 32 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if is_id {
        return name.to_string();
    }
    let secret = wzp_stages::crypto::keys::open_room_secret(name);
    wzp_proto::join::RoomAdmissionKey::derive(secret.as_bytes(), name).sni()
}

/// Longest accepted relay label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

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
            max_room_size: 0,
            shards: 1,
            io_threads: 0,
            egress_coalesce_us: 5000,
            udp_buffer_kib: (wzp_stages::net::quic::RELAY_UDP_BUFFER_BYTES / 1024) as u64,
            join_timeout_ms: 10_000,
            join_max_skew_s: 600,
            ringing_timeout_s: 30,
            voice_message_storage_mb: 64,
            voice_message_dir: None,
            mapping_port: None,
            mapping_test: true,
            debug_tap: None,
            event_log: None,
            graph: None,
            calls: Vec::new(),
            peers: Vec::new(),
            trusted: Vec::new(),
            global_rooms: Vec::new(),
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
/// Accepted `udp_buffer_kib` (0 = the kernel's defaults): up to 1 GiB, a
/// ceiling the kernel fills only with datagrams that wait.
pub const UDP_BUFFER_KIB: std::ops::RangeInclusive<u64> = 0..=1_048_576;

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

# Members on this relay of any one room; one more is refused "room full"
# (0 = no limit beyond max_peers; else 2..=65536). A global room counts each
# relay's own members.
max_room_size = 0

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

# Receive and send buffer of the relay's UDP socket, KiB each (0..=1048576;
# 0 = the kernel's defaults). Datagrams that arrive while it is full are
# dropped; beyond net.core.rmem_max it takes CAP_NET_ADMIN (the relay logs
# what it got).
udp_buffer_kib = 8192

# Time a client has after the QUIC handshake to send Hello and Join
# (500..=60000).
join_timeout_ms = 10000
# Largest accepted difference between a Join's timestamp and this clock, in
# seconds (10..=3600); it is also how long a captured Join stays usable.
join_max_skew_s = 600

# How long a direct call rings before the caller hears "no answer" (1..=600 s).
ringing_timeout_s = 30

# Memory for voice messages left for the people registered here while they
# are away, MiB (0..=65536; 0: take none). Messages are sealed end to end (the
# relay cannot read them), at most 10 and 2 MiB a person, kept 7 days or until
# fetched and deleted; a restart loses them.
voice_message_storage_mb = 64
# Keep them (sealed, as they came) in this folder so a restart loses none;
# commented out: memory only.
# voice_message_dir = "/var/lib/wzp/voice-messages"

# A second UDP port, on the listen address, answering clients' NAT mapping
# tests: a client sends one small probe there from its signalling socket and
# learns (over its signal connection; nothing is sent back by UDP) whether its
# NAT gives that socket one address for every destination, which decides how
# its calls find a direct path. Default: any free port (the `listening` line
# names it); behind a firewall, fix it and open it where 4433 is open.
# mapping_port = 4443
# mapping_test = true

# Log each media header of one room (its room id, 32 hex digits, which
# wzp-client prints on joining, or a call-* name) or of all rooms ("*").
# debug_tap = "*"

# Append join/leave/refused events as JSON lines.
# event_log = "relay-events.jsonl"

# Run another graph file instead of the built-in graphs/relay.toml.
# graph = "graphs/relay.toml"

# Direct-call rooms: only these fingerprints may join the room.
# [[calls]]
# room = "call-7f3a9c"
# fingerprints = ["xxxx:xxxx:xxxx:xxxx:xxxx:xxxx:xxxx:xxxx", "yyyy:yyyy:yyyy:yyyy:yyyy:yyyy:yyyy:yyyy"]

# Other relays (federation). `wzp-relay` prints this relay's own snippet;
# `wzp-relay fingerprint -i SEED` prints just the fingerprint.
# [[peers]]
# address = "203.0.113.7:4433"
# fingerprint = "ab:cd:..."
# label = "relay-b"

# Relays accepted when they dial in, from any address (no address here).
# [[trusted]]
# fingerprint = "ef:01:..."
# label = "relay-c"

# Rooms bridged across the federation, by the name users type.
# [[global_rooms]]
# name = "general"
"#;

impl Config {
    /// Parses config text; `path` is for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: with_suggestion(e.to_string()),
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
        match wzp_engine::files::read_text(path, wzp_engine::files::MAX_TEXT) {
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
        let ranges: [(&str, u64, u64, u64, &str); 12] = [
            (
                "max_room_size",
                self.max_room_size as u64,
                0,
                max as u64,
                " (0 = no limit beyond max_peers)",
            ),
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
                "udp_buffer_kib",
                self.udp_buffer_kib,
                *UDP_BUFFER_KIB.start(),
                *UDP_BUFFER_KIB.end(),
                " (0 = the kernel's defaults)",
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
                "voice_message_storage_mb",
                self.voice_message_storage_mb,
                0,
                65536,
                " (MiB for voice messages; 0 takes none)",
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
        if self.max_room_size == 1 {
            return Err(bad(
                "max_room_size = 1 leaves nobody to talk to; use 0 (no limit beyond max_peers) \
                 or 2..=65536"
                    .into(),
            ));
        }
        if self.mapping_port == Some(0) {
            return Err(bad(
                "mapping_port = 0: leave it unset for any free port, or set mapping_test = false \
                 to run none"
                    .into(),
            ));
        }
        if self.mapping_port.is_some_and(|p| p == self.listen.port()) {
            return Err(bad(format!(
                "mapping_port = {} is the listen port; use another port (unset: any free \
                 port) or mapping_test = false",
                self.listen.port()
            )));
        }
        if let Some(t) = &self.debug_tap {
            if t != "*" && wzp_proto::sni::classify(t) != wzp_proto::sni::Sni::Room(t.clone()) {
                return Err(bad(format!(
                    "debug_tap = {t:?}: use \"*\", a room id (32 lowercase hex digits, \
                     printed by wzp-client on joining) or a call room name"
                )));
            }
        }
        let mut call_rooms = HashSet::new();
        for c in &self.calls {
            if !call_rooms.insert(c.room.as_str()) {
                return Err(bad(format!(
                    "[[calls]] room = {:?} is listed twice; list each call room once, \
                     with every fingerprint it admits",
                    c.room
                )));
            }
            let mut seen = HashSet::new();
            if let Some(dup) = c.fingerprints.iter().find(|f| !seen.insert(**f)) {
                return Err(bad(format!(
                    "[[calls]] room = {:?} lists {dup} twice",
                    c.room
                )));
            }
            if c.fingerprints.len() > self.call_room_size {
                return Err(bad(format!(
                    "[[calls]] room = {:?} lists {} fingerprints, more than call_room_size = {} \
                     lets in; raise call_room_size or list fewer",
                    c.room,
                    c.fingerprints.len(),
                    self.call_room_size
                )));
            }
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
        self.validate_federation().map_err(bad)
    }

    /// `[[peers]]`, `[[trusted]]` and `[[global_rooms]]`: labels usable in
    /// logs and metrics, each relay listed once, each room once.
    fn validate_federation(&self) -> Result<(), String> {
        check_label("label", &self.label)?;
        let mut labels: HashMap<&str, &str> = HashMap::new();
        let mut fingerprints: HashMap<wzp_proto::TlsFingerprint, &str> = HashMap::new();
        let entries = self
            .peers
            .iter()
            .map(|p| ("[[peers]]", &p.label, p.fingerprint))
            .chain(
                self.trusted
                    .iter()
                    .map(|t| ("[[trusted]]", &t.label, t.fingerprint)),
            );
        for (table, label, fp) in entries {
            check_label(&format!("{table} label"), label)?;
            if *label == self.label {
                return Err(format!(
                    "{table} label = {label:?} is this relay's own `label`; give each relay \
                     its own name"
                ));
            }
            if let Some(first) = labels.insert(label, table) {
                return Err(format!(
                    "{table} label = {label:?} is already used by a {first} entry; labels \
                     name relays in logs and metrics, so each must be unique"
                ));
            }
            if let Some(first) = fingerprints.insert(fp, table) {
                return Err(format!(
                    "{table} label = {label:?}: fingerprint {fp} is already listed in a \
                     {first} entry; list each relay once (a [[peers]] entry is also \
                     accepted inbound, so it needs no [[trusted]] entry)"
                ));
            }
        }
        for p in &self.peers {
            if let Err(why) = check_host_port(&p.address) {
                return Err(format!(
                    "[[peers]] label = {:?}: address = {:?} is not host:port ({why}), e.g. \
                     \"relay-b.example.org:4433\" or \"[2001:db8::1]:4433\"",
                    p.label, p.address
                ));
            }
        }
        if let Some(a) = &self.public_addr {
            if let Err(why) = check_host_port(a) {
                return Err(format!(
                    "public_addr = {a:?} is not host:port ({why}), e.g. \
                     \"relay.example.org:4433\" or \"[2001:db8::1]:4433\""
                ));
            }
        }
        let mut rooms = HashSet::new();
        for g in &self.global_rooms {
            if g.name.is_empty() {
                return Err(
                    "[[global_rooms]] name = \"\": give the room's name as users type it".into(),
                );
            }
            if !rooms.insert(g.name.as_str()) {
                return Err(format!(
                    "[[global_rooms]] name = {:?} is listed twice; remove one",
                    g.name
                ));
            }
        }
        Ok(())
    }

    /// The room ids (the server names clients use) of `[[global_rooms]]`.
    pub fn global_room_hashes(&self) -> Vec<String> {
        self.global_rooms
            .iter()
            .map(|g| global_room_sni(&g.name))
            .collect()
    }

    /// The federation core's configuration: `[[peers]]` (dialed) and
    /// `[[trusted]]` (inbound only), the bridged rooms by id. `me` is this
    /// relay's certificate fingerprint; `seed` drives the redial jitter.
    pub fn federation(
        &self,
        me: wzp_proto::TlsFingerprint,
        seed: u64,
    ) -> crate::federation::FederationConfig {
        use crate::federation::PeerSpec;
        let peers = self
            .peers
            .iter()
            .map(|p| PeerSpec {
                tls: p.fingerprint,
                label: p.label.clone(),
                address: Some(p.address.clone()),
            })
            .chain(self.trusted.iter().map(|t| PeerSpec {
                tls: t.fingerprint,
                label: t.label.clone(),
                address: None,
            }))
            .collect();
        crate::federation::FederationConfig {
            me,
            label: self.label.clone(),
            peers,
            global_rooms: self
                .global_room_hashes()
                .iter()
                .filter_map(|h| wzp_proto::federation::RoomId::from_hash(h))
                .collect(),
            seed,
        }
    }
}

/// A relay label: 1..=64 printable characters, since it appears in logs,
/// Prometheus labels and clients' participant lists.
fn check_label(key: &str, label: &str) -> Result<(), String> {
    let n = label.chars().count();
    if n == 0 || n > MAX_LABEL_CHARS || label.chars().any(char::is_control) {
        return Err(format!(
            "{key} = {label:?}: a relay label is 1..={MAX_LABEL_CHARS} printable characters, \
             e.g. \"relay-b\""
        ));
    }
    Ok(())
}

/// Adds "did you mean `x`?" to a parse error naming an unknown key, picking
/// from the keys the error lists as expected.
fn with_suggestion(message: String) -> String {
    let Some(at) = message.find("unknown field `") else {
        return message;
    };
    let rest = &message[at + "unknown field `".len()..];
    let Some(end) = rest.find('`') else {
        return message;
    };
    let word = &rest[..end];
    let expected: Vec<&str> = rest[end..].split('`').skip(2).step_by(2).collect();
    match wzp_engine::error::did_you_mean(word, expected.iter().copied()) {
        Some(m) => format!("{message} (did you mean `{m}`?)"),
        None => message,
    }
}

/// Whether `s` is `host:port` as a relay dials it: a host (a name, an IPv4
/// address, or an IPv6 address in brackets) and a port 1..=65535. Checked
/// at start, so a typo is not found by a redial failing every 5 s.
pub fn check_host_port(s: &str) -> Result<(), &'static str> {
    let s = s.trim();
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("no port");
    };
    match port.parse::<u16>() {
        Ok(0) => return Err("port 0"),
        Ok(_) => {}
        Err(_) => return Err("the port is not a number 1..=65535"),
    }
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']').ok_or("an unclosed `[`")?,
        None if host.contains(':') => return Err("an IPv6 address needs brackets"),
        None => host,
    };
    if host.is_empty() {
        return Err("no host");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c.is_control())
    {
        return Err("the host has a space, quote or control character");
    }
    Ok(())
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
        assert_eq!(cfg.udp_buffer_kib, d.udp_buffer_kib);
        assert_eq!((cfg.mapping_port, cfg.mapping_test), (None, true));
        assert!(cfg.calls.is_empty());
    }

    #[test]
    fn bad_configs_are_refused_with_the_key() {
        const F1: &str = "00000000000000000000000000000001";
        const F2: &str = "00000000000000000000000000000002";
        const F3: &str = "00000000000000000000000000000003";
        let cases = [
            ("max_peers = 0", "max_peers"),
            ("max_rooms = 70000", "max_rooms"),
            ("shards = 65", "shards"),
            ("io_threads = 65", "io_threads"),
            ("io_threads = -1", "io_threads"),
            ("egress_coalesce_us = 20001", "egress_coalesce_us"),
            ("udp_buffer_kib = 1048577", "udp_buffer_kib"),
            ("udp_buffer_kib = -1", "udp_buffer_kib"),
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
            (
                &format!(
                    "[[calls]]\nroom = \"call-1\"\nfingerprints = [\"{F1}\"]\n\
                     [[calls]]\nroom = \"call-1\"\nfingerprints = [\"{F2}\"]"
                ),
                "is listed twice",
            ),
            (
                &format!("[[calls]]\nroom = \"call-1\"\nfingerprints = [\"{F1}\", \"{F1}\"]"),
                "twice",
            ),
            (
                &format!(
                    "[[calls]]\nroom = \"call-1\"\nfingerprints = [\"{F1}\", \"{F2}\", \"{F3}\"]"
                ),
                "more than call_room_size = 2",
            ),
            ("ringing_timeout_s = 0", "ringing_timeout_s"),
            ("ringing_timeout_s = 601", "1..=600"),
            ("voice_message_storage_mb = 65537", "0..=65536"),
            ("voice_message_storage_mb = -1", "voice_message_storage_mb"),
            (
                "mapping_port = 4433",
                "mapping_port = 4433 is the listen port",
            ),
            ("mapping_port = 70000", "mapping_port"),
            ("mapping_port = 0", "leave it unset for any free port"),
            ("mapping_test = 1", "mapping_test"),
            (
                "call_room_size = 1",
                "call_room_size = 1 is out of range; use 2..=1024",
            ),
            ("call_room_size = 5000", "2..=1024"),
            ("max_room_size = 1", "leaves nobody to talk to"),
            (
                "max_room_size = 70000",
                "max_room_size = 70000 is out of range",
            ),
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

    const FP_A: &str = "aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:\
                        aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa";
    const FP_B: &str = "bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:\
                        bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb:bb";

    fn peer(label: &str, fp: &str) -> String {
        format!(
            "[[peers]]\naddress = \"10.0.0.1:4433\"\nfingerprint = \"{fp}\"\nlabel = \"{label}\"\n"
        )
    }

    fn trusted(label: &str, fp: &str) -> String {
        format!("[[trusted]]\nfingerprint = \"{fp}\"\nlabel = \"{label}\"\n")
    }

    #[test]
    fn a_federation_config_parses() {
        let text = format!(
            "label = \"a\"\n{}{}[[global_rooms]]\nname = \"general\"\n[[global_rooms]]\nname = \"ops\"\n",
            peer("b", FP_A),
            trusted("c", FP_B)
        );
        let cfg = Config::parse(&text, Path::new("r.toml")).unwrap();
        assert_eq!(cfg.peers[0].label, "b");
        assert_eq!(cfg.peers[0].address, "10.0.0.1:4433");
        assert_eq!(cfg.peers[0].fingerprint.to_string(), FP_A);
        assert_eq!(cfg.trusted[0].label, "c");
        assert_eq!(cfg.trusted[0].fingerprint.to_string(), FP_B);
        // An open room's id is the one its clients derive (no secret).
        let open = |name: &str| {
            let secret = wzp_stages::crypto::keys::open_room_secret(name);
            wzp_proto::join::RoomAdmissionKey::derive(secret.as_bytes(), name).sni()
        };
        assert_eq!(cfg.global_room_hashes(), vec![open("general"), open("ops")]);
        let me = wzp_proto::TlsFingerprint([9; 32]);
        let fed = cfg.federation(me, 5);
        assert_eq!(fed.me, me);
        assert_eq!(fed.label, "a");
        let peers: Vec<(String, Option<String>, String)> = fed
            .peers
            .iter()
            .map(|p| (p.label.clone(), p.address.clone(), p.tls.to_string()))
            .collect();
        assert_eq!(
            peers,
            vec![
                ("b".into(), Some("10.0.0.1:4433".into()), FP_A.to_string()),
                ("c".into(), None, FP_B.to_string()),
            ]
        );
        // The ids the core matches are the rooms' SNI hashes.
        let hashes: Vec<String> = fed.global_rooms.iter().map(|r| r.to_string()).collect();
        assert_eq!(hashes, cfg.global_room_hashes());
        // A room with a secret is named by its id, kept as it is.
        let id = open("private");
        let cfg = Config::parse(
            &format!("[[global_rooms]]\nname = \"{id}\"\n"),
            Path::new("r.toml"),
        )
        .unwrap();
        assert_eq!(cfg.global_room_hashes(), vec![id]);
    }

    #[test]
    fn bad_federation_entries_are_refused_with_what_to_do() {
        let short_fp = "aa:bb:cc";
        let cases: Vec<(String, &[&str])> = vec![
            (peer("b", short_fp), &["fingerprint", "aa:bb:cc"]),
            (trusted("b", "zz"), &["fingerprint", "zz"]),
            (
                format!("{}{}", peer("b", FP_A), peer("b", FP_B)),
                &["label = \"b\" is already used", "unique"],
            ),
            (
                format!("{}{}", peer("b", FP_A), trusted("b", FP_B)),
                &["[[trusted]] label = \"b\" is already used by a [[peers]] entry"],
            ),
            (
                format!("{}{}", peer("b", FP_A), peer("c", FP_A)),
                &[
                    "already listed in a [[peers]] entry",
                    "list each relay once",
                ],
            ),
            (
                format!("{}{}", peer("b", FP_A), trusted("c", FP_A)),
                &[
                    "[[trusted]]",
                    "already listed",
                    "needs no [[trusted]] entry",
                ],
            ),
            (peer("relay", FP_A), &["this relay's own `label`"]),
            (peer("", FP_A), &["[[peers]] label = \"\"", "1..=64"]),
            (
                trusted(&"x".repeat(65), FP_A),
                &["[[trusted]] label", "1..=64"],
            ),
            (
                "[[peers]]\naddress = \"nowhere\"\nfingerprint = \"".to_string()
                    + FP_A
                    + "\"\nlabel = \"b\"\n",
                &["address = \"nowhere\" is not host:port"],
            ),
            (
                format!("[[peers]]\naddress = \"127.0.0.1:99999\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "not a number 1..=65535"],
            ),
            (
                format!("[[peers]]\naddress = \"relay-b:abc\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "not a number"],
            ),
            (
                format!("[[peers]]\naddress = \"127.0.0.1:0\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "port 0"],
            ),
            (
                format!("[[peers]]\naddress = \"::1:4433\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "needs brackets"],
            ),
            (
                format!("[[peers]]\naddress = \"[::1:4433\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "unclosed"],
            ),
            (
                format!("[[peers]]\naddress = \":4433\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "no host"],
            ),
            (
                format!("[[peers]]\naddress = \"a b:1\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["is not host:port", "space"],
            ),
            (
                "public_addr = \"not an address at all\"\n".into(),
                &["public_addr = \"not an address at all\" is not host:port"],
            ),
            ("public_addr = \"\"\n".into(), &["public_addr = \"\"", "no port"]),
            (
                format!("[[peers]]\naddress = \"10.0.0.1:1\"\nfingerprint = \"{FP_A}\"\n"),
                &["missing field `label`"],
            ),
            (
                format!(
                    "[[trusted]]\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\naddress = \"x:1\"\n"
                ),
                &["unknown field `address`"],
            ),
            (
                format!(
                    "[[peers]]\nadress = \"10.0.0.1:1\"\nfingerprint = \"{FP_A}\"\nlabel = \"b\"\n"
                ),
                &["unknown field `adress`", "did you mean `address`?"],
            ),
            (
                format!("[[trusted]]\nfingerprnt = \"{FP_A}\"\nlabel = \"b\"\n"),
                &["did you mean `fingerprint`?"],
            ),
            (
                "[[global_room]]\nname = \"general\"\n".into(),
                &["did you mean `global_rooms`?"],
            ),
            (
                "[[global_rooms]]\nroom = \"general\"\n".into(),
                &["unknown field `room`, expected `name`"],
            ),
            (
                "[[global_rooms]]\nnmae = \"general\"\n".into(),
                &["did you mean `name`?"],
            ),
            (
                "[[global_rooms]]\nname = \"\"\n".into(),
                &["[[global_rooms]] name = \"\""],
            ),
            (
                "[[global_rooms]]\nname = \"g\"\n[[global_rooms]]\nname = \"g\"\n".into(),
                &["name = \"g\" is listed twice"],
            ),
            ("lable = \"x\"".into(), &["did you mean `label`?"]),
            ("label = \"\"".into(), &["label = \"\"", "1..=64"]),
        ];
        for (text, needles) in cases {
            let err = Config::parse(&text, Path::new("r.toml")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.starts_with("r.toml"), "{text:?}: {msg}");
            for n in needles {
                assert!(msg.contains(n), "{text:?}: {msg}\nshould mention {n}");
            }
        }
    }

    #[test]
    fn host_port_forms_a_relay_dials_are_accepted() {
        for ok in [
            "relay.example.org:4433",
            "10.0.0.1:1",
            "[2001:db8::1]:4433",
            "[::1]:65535",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn no_suggestion_for_a_key_unlike_any() {
        let err = Config::parse("zzzzzzzzzz = 1", Path::new("r.toml")).unwrap_err();
        assert!(err.to_string().contains("zzzzzzzzzz"), "{err}");
        assert!(!err.to_string().contains("did you mean"), "{err}");
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
            "max_room_size = 0",
            "max_room_size = 2",
            "max_room_size = 65536",
            "max_peers = 1\nmax_rooms = 1",
            "max_peers = 65536\nmax_rooms = 65536",
            "shards = 0\nio_threads = 64",
            "egress_coalesce_us = 0",
            "egress_coalesce_us = 20000",
            "udp_buffer_kib = 0",
            "udp_buffer_kib = 1048576",
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
