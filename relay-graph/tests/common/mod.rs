//! Test harness: the real `wzp-relay` binary on loopback, and small quinn
//! clients that join rooms, send media datagrams and read signal frames.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wzp_proto::close::CloseCode;
use wzp_proto::identity::Identity;
use wzp_proto::join::RoomAdmissionKey;
use wzp_proto::room_client::{JoinEvent, JoinExchange};
use wzp_proto::signal::{Decoded, SignalMessage};
use wzp_proto::{Fingerprint, MediaHeader, Seed, TlsFingerprint};
use wzp_stages::net::quic;
use wzp_stages::net::signal_stream::{self, SignalFrame, SignalReader};

pub mod client_proc;
pub mod federation;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running relay process.
pub struct RelayProc {
    child: Child,
    pub quic: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// The mapping port (none: off).
    pub mapping: Option<SocketAddr>,
    pub fingerprint: TlsFingerprint,
    /// Every stdout line after the `listening` line, and all of stderr.
    pub log: Arc<Mutex<Vec<String>>>,
    pub stdout_head: Vec<String>,
}

impl RelayProc {
    /// Starts `wzp-relay` with `args` (add `--listen 127.0.0.1:0` yourself
    /// or use [`RelayProc::start_default`]) and waits for its `listening` line.
    pub fn start(args: &[&str]) -> RelayProc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wzp-relay"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wzp-relay starts");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        let mut head = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "wzp-relay printed no `listening` line within {WAIT:?}; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            };
            head.push(line.clone());
            if let Some(rest) = line.strip_prefix("listening ") {
                let field = |k: &str| {
                    rest.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .unwrap_or_else(|| panic!("no {k}= in {line:?}"))
                        .to_string()
                };
                let quic = field("quic").parse().unwrap();
                let metrics = field("metrics").parse().ok();
                let mapping = field("mapping").parse().ok();
                let fingerprint = field("fingerprint").parse().unwrap();
                return RelayProc {
                    child,
                    quic,
                    metrics,
                    mapping,
                    fingerprint,
                    log,
                    stdout_head: head,
                };
            }
        }
    }

    /// A relay on ephemeral loopback ports with its identity in `dir`, plus `extra` args.
    pub fn start_in(dir: &Path, extra: &[&str]) -> RelayProc {
        let id = dir.join("relay.seed");
        let mut args = vec![
            "-i",
            id.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        RelayProc::start(&args)
    }

    /// Sends the relay `SIGHUP` (reload its config file).
    pub fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -HUP: {status}");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET path` on the metrics address; the body.
    pub fn http_get(&self, path: &str) -> String {
        let addr = self.metrics.expect("relay started with --metrics-addr");
        let mut s = TcpStream::connect_timeout(&addr, WAIT).expect("metrics address accepts");
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).unwrap();
        let text = String::from_utf8_lossy(&resp).to_string();
        let (headers, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(headers.starts_with("HTTP/1.1 200"), "GET {path}: {headers}");
        body.to_string()
    }

    /// The value of the metric line that starts with `series` (name plus
    /// labels exactly as printed, e.g. `wzp_relay_drops_total{reason="malformed"}`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Polls `probe` until it yields a value, failing after [`WAIT`] with
    /// `what()`. The relay's counters live in another process, read over
    /// HTTP: there is nothing to block on, so this is the one poll loop
    /// every wait on them goes through (every 20 ms, bounded).
    fn poll<T>(&self, mut probe: impl FnMut() -> Option<T>, what: impl Fn() -> String) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = probe() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("not within {WAIT:?}: {}", what());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded by [`WAIT`]) until `cond` holds; `what` names it in
    /// the panic.
    pub fn wait(&self, what: &str, cond: impl Fn() -> bool) {
        self.poll(|| cond().then_some(()), || what.to_string())
    }

    /// Waits until `series` satisfies `pred`; returns the last value.
    pub fn wait_metric(&self, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
        let last = std::cell::Cell::new(None);
        self.poll(
            || {
                let v = self.metric(series);
                last.set(v);
                v.filter(|v| pred(*v))
            },
            || {
                format!(
                    "{series} never satisfied the condition (last {:?})",
                    last.get()
                )
            },
        )
    }

    /// Packets the fan-out has taken in (`forwarded`), summed over every
    /// forwarding shard's graph (`relay`, or `relay-0`, `relay-1`, ...).
    pub fn fanout_forwarded(&self) -> f64 {
        self.http_get("/metrics")
            .lines()
            .filter(|l| {
                l.starts_with("wzp_stage_events_total{graph=\"relay")
                    && l.contains(",stage=\"fanout\",name=\"forwarded\"} ")
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Stops the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test user's identity, one per small number.
pub fn identity(n: u8) -> Identity {
    Seed::from_bytes([n; 32]).identity()
}

pub fn fingerprint(n: u8) -> Fingerprint {
    identity(n).fingerprint()
}

/// A client endpoint and a connection to `relay` with server name `sni`,
/// pinning the relay's printed fingerprint.
pub async fn connect(
    relay: &RelayProc,
    sni: &str,
) -> Result<(quinn::Endpoint, quinn::Connection), quinn::ConnectionError> {
    connect_pinned(relay.quic, relay.fingerprint, sni).await
}

pub async fn connect_pinned(
    addr: SocketAddr,
    pinned: TlsFingerprint,
    sni: &str,
) -> Result<(quinn::Endpoint, quinn::Connection), quinn::ConnectionError> {
    let mut ep = quic::client_endpoint("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quic::client_config(pinned).unwrap());
    let connecting = ep.connect(addr, sni).expect("a valid server name");
    let conn = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("handshake within the wait")?;
    Ok((ep, conn))
}

/// A client in a room.
pub struct Client {
    pub endpoint: quinn::Endpoint,
    pub conn: quinn::Connection,
    pub send: quinn::SendStream,
    pub recv: SignalReader,
    pub fingerprint: Fingerprint,
    pub sender_id: u32,
}

/// Why a join failed: the relay's close code (`None`: not one of ours) and
/// reason.
#[derive(Debug)]
pub struct Refused {
    pub code: Option<CloseCode>,
    pub reason: String,
}

fn refused(e: &quinn::ConnectionError) -> Refused {
    match quic::peer_close(e) {
        Some((code, reason)) => Refused {
            code: Some(code),
            reason,
        },
        None => Refused {
            code: None,
            reason: e.to_string(),
        },
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The secret the tests' media room `name` is joined with.
pub fn room_secret(name: &str) -> String {
    format!("test room secret of {name}")
}

/// Admission keys of the rooms [`room_sni`] named, by server name, so
/// [`join`] can prove membership of a room it is handed by SNI.
fn room_keys() -> &'static Mutex<std::collections::HashMap<String, String>> {
    static KEYS: std::sync::OnceLock<Mutex<std::collections::HashMap<String, String>>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// The admission key of media room `name` (from [`room_secret`]).
pub fn room_key(name: &str) -> RoomAdmissionKey {
    RoomAdmissionKey::derive(room_secret(name).as_bytes(), name)
}

/// The SNI of a media room: the hash of its admission key.
pub fn room_sni(name: &str) -> String {
    let sni = room_key(name).sni();
    room_keys()
        .lock()
        .unwrap()
        .insert(sni.clone(), name.to_string());
    sni
}

/// Connects to room `sni` as user `user` and runs proto's [`JoinExchange`]
/// (Hello, signed Join) until the relay admits the user or refuses.
pub async fn join(relay: &RelayProc, sni: &str, user: u8) -> Result<Client, Refused> {
    let (endpoint, conn) = connect(relay, sni).await.map_err(|e| refused(&e))?;
    let (mut send, recv) = conn.open_bi().await.map_err(|e| refused(&e))?;
    let id = identity(user);
    let alias = Some(format!("user{user}"));
    // A room named through room_sni proves membership; any other SNI
    // (call rooms, names a test made up) goes without a proof.
    let name = room_keys().lock().unwrap().get(sni).cloned();
    let mut x = match (name, quic::join_nonce(&conn)) {
        (Some(name), Some(nonce)) => JoinExchange::start_with_room_proof(
            &id,
            sni,
            &relay.fingerprint,
            alias,
            "test",
            now_ms(),
            &room_key(&name),
            &nonce,
        ),
        _ => JoinExchange::start(&id, sni, &relay.fingerprint, alias, "test", now_ms()),
    };
    let frames = x.poll_transmit().expect("hello and join are queued");
    signal_stream::write_frames(&mut send, &frames)
        .await
        .map_err(|_| {
            let e = conn
                .close_reason()
                .unwrap_or(quinn::ConnectionError::LocallyClosed);
            refused(&e)
        })?;
    let mut recv = SignalReader::new(recv, 1 << 20);
    let deadline = Instant::now() + WAIT;
    let admitted = loop {
        if let Some(ev) = x.poll_event() {
            match ev {
                JoinEvent::Admitted { .. } => break true,
                JoinEvent::Refused { .. } | JoinEvent::Failed(_) => break false,
                _ => continue,
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, recv.next()).await {
            Ok(Ok(Some(SignalFrame::Message(m)))) => x.handle_message(m),
            Ok(Ok(Some(SignalFrame::Malformed(_)))) => {}
            _ => break false,
        }
    };
    if admitted {
        return Ok(Client {
            endpoint,
            conn,
            send,
            recv,
            fingerprint: id.fingerprint(),
            sender_id: user as u32,
        });
    }
    let e = tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("refused connections close");
    Err(refused(&e))
}

/// Payload of the packet [`announce`] sends.
pub const ANNOUNCE: &[u8] = b"announce: heard from here on";

/// Makes `c` heard by the relay's fan-out, as a real client is by the media
/// it sends from its admission on: `sfu.fanout` (`unheard_grace_ms` in
/// `graphs/relay.toml`) sends a member copies of the others' media only
/// once a packet of its own has arrived, or the grace after its join has
/// passed. `c` sends one packet (seq 0, payload [`ANNOUNCE`]); `heard` are
/// the members of its room already announced, and each of them receives
/// that packet (checked, and so taken out of what the test counts later);
/// with nobody to receive it, the wait is for the fan-out to count it.
///
/// Call it for each member in turn, right after its join, before the next
/// member joins: then every member present is heard when a packet is
/// announced, and its copies go to exactly `heard` (a member not yet
/// announced would get one only once its grace had passed, which a test
/// could not foresee).
pub async fn announce(relay: &RelayProc, c: &Client, heard: &[&Client]) {
    let before = if heard.is_empty() {
        relay.fanout_forwarded()
    } else {
        0.0
    };
    let p = c.packet(0, ANNOUNCE);
    c.send_datagram(p.clone());
    if heard.is_empty() {
        relay.wait(
            &format!("client {}'s announce forwarded", c.sender_id),
            || relay.fanout_forwarded() > before,
        );
        return;
    }
    for h in heard {
        let d = h.recv_datagram(WAIT).await.unwrap_or_else(|| {
            panic!(
                "client {} never got client {}'s announce",
                h.sender_id, c.sender_id
            )
        });
        assert_eq!(
            &d[..],
            &p[..],
            "client {} got something else than client {}'s announce",
            h.sender_id,
            c.sender_id
        );
    }
}

/// [`join`], then [`announce`] to `heard` (the room's members announced
/// before).
pub async fn join_heard(
    relay: &RelayProc,
    sni: &str,
    user: u8,
    heard: &[&Client],
) -> Result<Client, Refused> {
    let c = join(relay, sni, user).await?;
    announce(relay, &c, heard).await;
    Ok(c)
}

/// A join that must be refused; its close code and reason.
pub async fn refused_join(relay: &RelayProc, sni: &str, user: u8, what: &str) -> Refused {
    match join(relay, sni, user).await {
        Ok(_) => panic!("{what}: user {user} was admitted to {sni}"),
        Err(r) => r,
    }
}

impl Client {
    /// The next signal message, or `None` on end of stream or timeout.
    pub async fn next_signal(&mut self) -> Option<SignalMessage> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.recv.next())
                .await
                .ok()?
                .ok()??;
            if let SignalFrame::Message(Decoded::Message(m)) = frame {
                return Some(m);
            }
        }
    }

    /// Skips signal messages until one satisfies `pred`.
    pub async fn wait_signal(
        &mut self,
        pred: impl Fn(&SignalMessage) -> bool,
    ) -> Option<SignalMessage> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let m = self.next_signal().await?;
            if pred(&m) {
                return Some(m);
            }
        }
        None
    }

    /// Waits for a RoomUpdate with `count` participants.
    pub async fn wait_room_count(&mut self, count: u32) -> Option<SignalMessage> {
        self.wait_signal(|m| matches!(m, SignalMessage::RoomUpdate { count: c, .. } if *c == count))
            .await
    }

    /// A media packet: a valid clear header, then `payload`.
    pub fn packet(&self, seq: u32, payload: &[u8]) -> Vec<u8> {
        let h = MediaHeader {
            sender_id: self.sender_id,
            seq,
            timestamp: seq.wrapping_mul(960),
            ..Default::default()
        };
        let mut p = h.to_bytes().to_vec();
        p.extend_from_slice(payload);
        p
    }

    pub fn send_datagram(&self, bytes: Vec<u8>) {
        self.conn
            .send_datagram(Bytes::from(bytes))
            .expect("datagram accepted by quinn");
    }

    /// The next datagram within `within`.
    pub async fn recv_datagram(&self, within: Duration) -> Option<Bytes> {
        tokio::time::timeout(within, self.conn.read_datagram())
            .await
            .ok()?
            .ok()
    }
}

/// Deterministic pseudo-random payloads.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut r = rand::rngs::SmallRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    r.fill_bytes(&mut v);
    v
}

/// A temporary folder for a relay's files.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_str(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

pub fn join_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The `voice_message` frames that leave `sealed` for `to` as message `id`,
/// in its parts, as a client sends them.
pub fn voice_message_parts(id: &str, to: Fingerprint, sealed: &[u8]) -> Vec<SignalMessage> {
    let parts: Vec<&[u8]> = wzp_proto::voice_message::parts(sealed).collect();
    parts
        .iter()
        .enumerate()
        .map(|(i, p)| SignalMessage::VoiceMessage {
            id: id.into(),
            to: Some(to),
            from: None,
            age_ms: None,
            part: i as u32,
            parts: parts.len() as u32,
            data: p.to_vec(),
        })
        .collect()
}
